//! Fused CPU kernels for the sensor model's element-wise hot spots, as a burn backend
//! extension: on burn's CPU backend (flex) they run vectorised over every core; on any other
//! backend (wgpu) the same calls are burn's own ops.
//!
//! Why by hand: flex computes GELU one element at a time through libm's `erff`, on one core,
//! forward and backward, and a profile of pretraining found `erf` among its largest costs.
//! No crate offers a vectorised GELU for burn. Here
//! GELU and its derivative are branch-free arithmetic that the compiler vectorises, compiled
//! for AVX2 and FMA where the CPU has them (`widest_simd`, a run-time check), split across
//! cores by `rayon`, with
//! one exponential per element serving both the normal CDF and its density.
//!
//! Must never change what the model computes beyond float rounding: the tests hold these
//! kernels to burn's own GELU and gradient.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::{ActivationOps, FloatTensorOps, ModuleOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, DType, Dispatch, Flex, TensorData, TensorMetadata};
use burn::nn::LayerNorm;
use burn::prelude::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

#[burn::backend::backend_extension(Flex, Autodiff, Cube: cfg(feature = "gpu"))]
pub trait FusedOps: Backend {
    /// GELU, exact form x·Φ(x) (Φ the standard normal CDF), as PyTorch's default.
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }

    /// GELU and its derivative Φ(x) + x·φ(x) at every point, for the backward to keep: the
    /// forward has both at hand, and the backward is then one product.
    fn fused_gelu_with_derivative(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        gelu_with_derivative_by_ops::<Self>(x)
    }

    /// The gradient through GELU, grad ⊙ GELU'(x), from the derivative its forward kept.
    fn fused_gelu_backward(
        derivative: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        Self::float_mul(derivative, grad)
    }

    /// Softmax along the last dimension.
    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
    }

    /// The gradient through a softmax whose output was `y`: y ⊙ (grad − Σ grad ⊙ y), the sum
    /// along the last dimension.
    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_backward_by_ops::<Self>(y, grad)
    }

    /// Layer norm over the last dimension: (x − mean) / √(var + ε) · gamma + beta.
    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        Self::layer_norm(x, gamma, Some(beta), epsilon)
    }

    /// The gradients of layer norm with respect to x, gamma and beta, given the output's.
    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        layer_norm_backward_by_ops::<Self>(x, gamma, grad, epsilon)
    }
}

/// The softmax gradient from the backend's own ops (for backends without a fused kernel).
fn softmax_backward_by_ops<B: Backend>(y: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let dot = B::float_sum_dim(B::float_mul(grad.clone(), y.clone()), last);
    B::float_mul(y, B::float_sub(grad, dot))
}

/// GELU and its derivative from the backend's own ops (for backends without a fused
/// kernel): the derivative is GELU's gradient at a gradient of ones.
pub(crate) fn gelu_with_derivative_by_ops<B: Backend>(
    x: FloatTensor<B>,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let ones = B::float_ones(x.shape(), &x.device(), x.dtype().into());
    (B::gelu(x.clone()), B::gelu_backward(x, ones))
}

/// The layer norm gradients from the backend's own ops (for backends without a fused kernel):
/// with x̂ the normalised input and g = grad·gamma, dx = (g − mean(g) − x̂·mean(g·x̂)) / σ,
/// dgamma = Σ grad·x̂ and dbeta = Σ grad over every row.
fn layer_norm_backward_by_ops<B: Backend>(
    x: FloatTensor<B>,
    gamma: FloatTensor<B>,
    grad: FloatTensor<B>,
    epsilon: f64,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let shape = x.shape();
    let last = shape.num_dims() - 1;
    let d = shape[last];
    let rows = shape.num_elements() / d;
    let centered = B::float_sub(x.clone(), B::float_mean_dim(x, last));
    let variance = B::float_mean_dim(B::float_mul(centered.clone(), centered.clone()), last);
    let inv_std = B::float_recip(B::float_sqrt(B::float_add_scalar(variance, epsilon.into())));
    let normalised = B::float_mul(centered, inv_std.clone());
    let mut broadcast = vec![1; shape.num_dims()];
    broadcast[last] = d;
    let g = B::float_mul(grad.clone(), B::float_reshape(gamma, broadcast.into()));
    let mean_g = B::float_mean_dim(g.clone(), last);
    let mean_gx = B::float_mean_dim(B::float_mul(g.clone(), normalised.clone()), last);
    let dx = B::float_mul(
        B::float_sub(
            B::float_sub(g, mean_g),
            B::float_mul(normalised.clone(), mean_gx),
        ),
        inv_std,
    );
    let per_feature = |t: FloatTensor<B>| {
        B::float_reshape(
            B::float_sum_dim(B::float_reshape(t, [rows, d].into()), 0),
            [d].into(),
        )
    };
    let dgamma = per_feature(B::float_mul(grad.clone(), normalised));
    (dx, dgamma, per_feature(grad))
}

/// GELU through the fused kernels where the backend has them.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(Dispatch::fused_gelu(x.into_dispatch()))
}

/// Softmax along the last dimension, through the fused kernels where the backend has them.
pub fn softmax<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(Dispatch::fused_softmax(x.into_dispatch()))
}

/// The ε of every layer norm the sensor model builds (burn's default, which its configs use).
pub const LAYER_NORM_EPSILON: f64 = 1e-5;

/// `norm`'s layer norm through the fused kernels where the backend has them.
pub fn layer_norm<const D: usize>(norm: &LayerNorm, x: Tensor<D>) -> Tensor<D> {
    match &norm.beta {
        Some(beta) => layer_norm_with(x, norm.gamma.val(), beta.val()),
        None => norm.forward(x),
    }
}

fn layer_norm_with<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Tensor<1>) -> Tensor<D> {
    Tensor::from_dispatch(Dispatch::fused_layer_norm(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        LAYER_NORM_EPSILON,
    ))
}

#[cfg(feature = "gpu")]
impl FusedOps for burn::backend::Cube {}

impl FusedOps for Flex {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&x]) {
            return Flex::gelu(x);
        }
        let shape = x.shape();
        let x = contiguous(x);
        let input = x.as_slice::<f32>().expect("contiguous");
        let out = in_parallel(
            input,
            None,
            1,
            #[inline(always)]
            |out, x, _| {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o = x * normal(x).cdf;
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn fused_gelu_with_derivative(x: FloatTensor<Self>) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x]) {
            return gelu_with_derivative_by_ops::<Flex>(x);
        }
        let shape = x.shape();
        let x = contiguous(x);
        let input = x.as_slice::<f32>().expect("contiguous");
        let (mut y, mut derivative) = (vec![0.0f32; input.len()], vec![0.0f32; input.len()]);
        y.par_chunks_mut(CHUNK)
            .zip(derivative.par_chunks_mut(CHUNK))
            .zip(input.par_chunks(CHUNK))
            .for_each(|((y, derivative), x)| {
                widest_simd(
                    #[inline(always)]
                    || {
                        for ((y, d), &x) in y.iter_mut().zip(derivative.iter_mut()).zip(x) {
                            (*y, *d) = gelu_and_slope(x);
                        }
                    },
                )
            });
        (
            FlexTensor::from_data(TensorData::new(y, shape.clone())),
            FlexTensor::from_data(TensorData::new(derivative, shape)),
        )
    }

    fn fused_gelu_backward(
        derivative: FloatTensor<Self>,
        grad: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&derivative, &grad]) || derivative.shape() != grad.shape() {
            return Flex::float_mul(derivative, grad);
        }
        let shape = grad.shape();
        let (derivative, grad) = (contiguous(derivative), contiguous(grad));
        let derivative = derivative.as_slice::<f32>().expect("contiguous");
        let grad = grad.as_slice::<f32>().expect("contiguous");
        let out = in_parallel(
            derivative,
            Some(grad),
            1,
            #[inline(always)]
            |out, derivative, grad| {
                for ((o, &d), &g) in out.iter_mut().zip(derivative).zip(grad) {
                    *o = d * g;
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&x]) {
            let last = x.shape().num_dims() - 1;
            return Flex::softmax(x, last);
        }
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let x = contiguous(x);
        let input = x.as_slice::<f32>().expect("contiguous");
        let out = in_parallel(
            input,
            None,
            d,
            #[inline(always)]
            |out, input, _| {
                for (y, x) in out.chunks_exact_mut(d).zip(input.chunks_exact(d)) {
                    y.copy_from_slice(x);
                    softmax_row(y);
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn fused_softmax_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        if !all_f32(&[&y, &grad]) {
            return softmax_backward_by_ops::<Flex>(y, grad);
        }
        let shape = y.shape();
        let d = shape[shape.num_dims() - 1];
        let (y, grad) = (contiguous(y), contiguous(grad));
        let y = y.as_slice::<f32>().expect("contiguous");
        let grad = grad.as_slice::<f32>().expect("contiguous");
        let out = in_parallel(
            y,
            Some(grad),
            d,
            #[inline(always)]
            |out, y, grad| {
                for ((dx, y), g) in out
                    .chunks_exact_mut(d)
                    .zip(y.chunks_exact(d))
                    .zip(grad.chunks_exact(d))
                {
                    dx.copy_from_slice(g);
                    softmax_row_backward(y, dx);
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&x, &gamma, &beta]) {
            return Flex::layer_norm(x, gamma, Some(beta), epsilon);
        }
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (x, gamma, beta) = (contiguous(x), contiguous(gamma), contiguous(beta));
        let input = x.as_slice::<f32>().expect("contiguous");
        let gamma = gamma.as_slice::<f32>().expect("contiguous");
        let beta = beta.as_slice::<f32>().expect("contiguous");
        let out = in_parallel(
            input,
            None,
            d,
            #[inline(always)]
            |out, input, _| {
                for (y, x) in out.chunks_exact_mut(d).zip(input.chunks_exact(d)) {
                    let (mean, inv_std) = moments(x, epsilon as f32);
                    for (((y, &x), &g), &b) in y.iter_mut().zip(x).zip(gamma).zip(beta) {
                        *y = (x - mean) * inv_std * g + b;
                    }
                }
            },
        );
        FlexTensor::from_data(TensorData::new(out, shape))
    }

    fn fused_layer_norm_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        epsilon: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&x, &gamma, &grad]) {
            return layer_norm_backward_by_ops::<Flex>(x, gamma, grad, epsilon);
        }
        let shape = x.shape();
        let d = shape[shape.num_dims() - 1];
        let (x, gamma, grad) = (contiguous(x), contiguous(gamma), contiguous(grad));
        let input = x.as_slice::<f32>().expect("contiguous");
        let gamma = gamma.as_slice::<f32>().expect("contiguous");
        let grad = grad.as_slice::<f32>().expect("contiguous");
        let mut dx = vec![0.0f32; input.len()];
        let rows = rows_per_task(d);
        // Each task sums its rows' share of dgamma and dbeta; the shares are added after.
        let (dgamma, dbeta) = dx
            .par_chunks_mut(rows * d)
            .zip(input.par_chunks(rows * d).zip(grad.par_chunks(rows * d)))
            .map(|(dx, (x, dy))| {
                let (mut dgamma, mut dbeta) = (vec![0.0f32; d], vec![0.0f32; d]);
                widest_simd(
                    #[inline(always)]
                    || {
                        for ((dx, x), dy) in dx
                            .chunks_exact_mut(d)
                            .zip(x.chunks_exact(d))
                            .zip(dy.chunks_exact(d))
                        {
                            let (mean, inv_std) = moments(x, epsilon as f32);
                            let (mut mean_g, mut mean_gx) = (0.0f32, 0.0f32);
                            for i in 0..d {
                                let normalised = (x[i] - mean) * inv_std;
                                let g = dy[i] * gamma[i];
                                mean_g += g;
                                mean_gx += g * normalised;
                                dgamma[i] += dy[i] * normalised;
                                dbeta[i] += dy[i];
                            }
                            let (mean_g, mean_gx) = (mean_g / d as f32, mean_gx / d as f32);
                            for i in 0..d {
                                let normalised = (x[i] - mean) * inv_std;
                                dx[i] =
                                    (dy[i] * gamma[i] - mean_g - normalised * mean_gx) * inv_std;
                            }
                        }
                    },
                );
                (dgamma, dbeta)
            })
            .unzip::<_, _, Vec<_>, Vec<_>>(); // in task order
        let (dgamma, dbeta) = (sum_in_order(dgamma, d), sum_in_order(dbeta, d));
        (
            FlexTensor::from_data(TensorData::new(dx, shape)),
            FlexTensor::from_data(TensorData::new(dgamma, [d])),
            FlexTensor::from_data(TensorData::new(dbeta, [d])),
        )
    }
}

/// A one-input op whose backward needs one saved tensor, its input or its output.
struct OneInput<B: Backend> {
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> std::fmt::Debug for OneInput<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("fused one-input op")
    }
}

impl<B: Backend> Backward<B, 1> for OneInput<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.backward)(saved, grad)
        });
    }
}

/// The backward step of an op with `N` inputs: `gradients(state, output's gradient)` gives
/// one gradient per input, and each input that autodiff tracks receives its own.
pub(crate) fn register_gradients<B: Backend, S, const N: usize>(
    ops: Ops<S, N>,
    grads: &mut Gradients,
    gradients: impl FnOnce(S, FloatTensor<B>) -> [FloatTensor<B>; N],
) {
    let grad = grads.consume::<B>(&ops.node);
    for (parent, grad) in ops.parents.into_iter().zip(gradients(ops.state, grad)) {
        if let Some(parent) = parent {
            grads.register::<B>(parent.id, grad);
        }
    }
}

/// Runs an op of `N` inputs on the inner backend and records it for autodiff as `op`:
/// `tracked` gives the output and the state its backward keeps, `untracked` (when no input
/// needs a gradient) the output alone.
pub(crate) fn record<B, C, O, const N: usize>(
    op: O,
    inputs: [FloatTensor<Autodiff<B, C>>; N],
    tracked: impl FnOnce([FloatTensor<B>; N]) -> (O::State, FloatTensor<B>),
    untracked: impl FnOnce([FloatTensor<B>; N]) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>>
where
    B: Backend,
    C: CheckpointStrategy,
    O: Backward<B, N>,
{
    let (values, nodes): (Vec<_>, Vec<_>) = inputs.into_iter().map(|t| t.into_parts()).unzip();
    let (Ok(values), Ok(nodes)) = (<[_; N]>::try_from(values), <[_; N]>::try_from(nodes)) else {
        unreachable!("N inputs give N values and N nodes")
    };
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let (state, out) = tracked(values);
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(untracked(values)),
    }
}

/// The sum of per-task partial sums, added in task order: rayon's `reduce` groups them by
/// which thread stole what, and float addition is not associative, so the same seed would
/// not always give the same weights.
pub(crate) fn sum_in_order(partials: Vec<Vec<f32>>, width: usize) -> Vec<f32> {
    partials
        .into_iter()
        .fold(vec![0.0f32; width], |mut sum, part| {
            sum.iter_mut().zip(&part).for_each(|(s, p)| *s += p);
            sum
        })
}

/// Runs a one-input op on the inner backend and records it for autodiff: `forward` gives
/// the output and what the backward keeps, `backward(kept, grad)` the input's gradient.
fn record_one_input<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: impl FnOnce(FloatTensor<B>) -> (FloatTensor<B>, FloatTensor<B>),
    untracked: fn(FloatTensor<B>) -> FloatTensor<B>,
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    record::<B, C, _, 1>(
        OneInput { backward },
        [x],
        |[x]| {
            let (y, kept) = forward(x);
            (kept, y)
        },
        |[x]| untracked(x),
    )
}

impl<B: FusedOps, C: CheckpointStrategy> FusedOps for Autodiff<B, C> {
    fn fused_gelu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        // The derivative is kept rather than the input: the backward is then one product
        // instead of the normal CDF and density computed again.
        record_one_input::<B, C>(
            x,
            B::fused_gelu_with_derivative,
            B::fused_gelu,
            B::fused_gelu_backward,
        )
    }

    fn fused_softmax(x: FloatTensor<Self>) -> FloatTensor<Self> {
        record_one_input::<B, C>(
            x,
            |x| {
                let y = B::fused_softmax(x);
                (y.clone(), y)
            },
            B::fused_softmax,
            B::fused_softmax_backward,
        )
    }

    fn fused_layer_norm(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct LayerNormOp;

        impl<B: FusedOps> Backward<B, 3> for LayerNormOp {
            /// The input, gamma and ε: the statistics are cheaper to recompute than to keep.
            type State = (FloatTensor<B>, FloatTensor<B>, f64);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                register_gradients::<B, _, 3>(ops, grads, |(x, gamma, epsilon), grad| {
                    let (dx, dgamma, dbeta) = B::fused_layer_norm_backward(x, gamma, grad, epsilon);
                    [dx, dgamma, dbeta]
                });
            }
        }

        record::<B, C, _, 3>(
            LayerNormOp,
            [x, gamma, beta],
            |[x, gamma, beta]| {
                let out = B::fused_layer_norm(x.clone(), gamma.clone(), beta, epsilon);
                ((x, gamma, epsilon), out)
            },
            |[x, gamma, beta]| B::fused_layer_norm(x, gamma, beta, epsilon),
        )
    }
}

/// A new buffer the size of `a`, filled by `fill(out, a, b)` over tasks of whole rows of `d`
/// values (about `CHUNK` values a task), in parallel, each under the widest SIMD the CPU has.
/// `b`, when given, is cut like `a` (an empty slice when not).
#[inline(always)]
fn in_parallel(
    a: &[f32],
    b: Option<&[f32]>,
    d: usize,
    fill: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> Vec<f32> {
    let mut out = vec![0.0f32; a.len()];
    let task = rows_per_task(d) * d;
    let run = |(out, (a, b)): (&mut [f32], (&[f32], &[f32]))| {
        widest_simd(
            #[inline(always)]
            || fill(out, a, b),
        )
    };
    match b {
        Some(b) => out
            .par_chunks_mut(task)
            .zip(a.par_chunks(task).zip(b.par_chunks(task)))
            .for_each(run),
        None => out
            .par_chunks_mut(task)
            .zip(a.par_chunks(task).map(|a| (a, &[][..])))
            .for_each(run),
    }
    out
}

/// GELU in place over `h` (pre-activations), and GELU's derivative there into `derivative`
/// unless it is empty (else it has h's length): the dense layer's epilogue
/// (`dense::forward_gelu`). Inline, so that `widest_simd` reaches it.
#[inline(always)]
pub(crate) fn gelu_in_place(h: &mut [f32], derivative: &mut [MaybeUninit<f32>]) {
    if derivative.is_empty() {
        h.iter_mut().for_each(|x| *x *= normal(*x).cdf);
        return;
    }
    for (x, d) in h.iter_mut().zip(derivative) {
        let slope;
        (*x, slope) = gelu_and_slope(*x);
        d.write(slope);
    }
}

/// GELU x·Φ(x) and its derivative Φ(x) + x·φ(x) at one point, from one exponential.
#[inline(always)]
fn gelu_and_slope(x: f32) -> (f32, f32) {
    let n = normal(x);
    (x * n.cdf, n.cdf + x * n.pdf)
}

/// Runs `f` compiled for AVX2 and FMA where the CPU has them (a cached run-time check),
/// for the baseline (SSE2) elsewhere. The wider instructions reach only code inlined into
/// `f`: its body, and what it calls, must be `#[inline(always)]`.
#[inline(always)]
pub(crate) fn widest_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        #[target_feature(enable = "avx2,fma")]
        fn with_avx2_fma<R>(f: impl FnOnce() -> R) -> R {
            f()
        }
        // SAFETY: the CPU has both features (checked just above).
        return unsafe { with_avx2_fma(f) };
    }
    f()
}

/// Rows of `d` values per parallel task, about `CHUNK` values in all.
fn rows_per_task(d: usize) -> usize {
    (CHUNK / d.max(1)).max(1)
}

/// A row's mean and 1 / √(variance + ε), the variance over the centred values (two passes,
/// as burn's layer norm, so large offsets do not cancel).
#[inline(always)]
fn moments(x: &[f32], epsilon: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let variance = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (variance + epsilon).sqrt())
}

/// The flex kernels read f32 only; anything else takes burn's ops.
pub(crate) fn all_f32(tensors: &[&FlexTensor]) -> bool {
    tensors.iter().all(|t| t.dtype() == DType::F32)
}

/// Softmax of one row, in place; returns the row's log-sum-exp.
#[inline(always)]
pub(crate) fn softmax_row(row: &mut [f32]) -> f32 {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    row.iter_mut().for_each(|v| *v = exp(*v - max));
    let sum: f32 = row.iter().sum();
    let scale = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= scale);
    max + sum.ln()
}

/// The gradient through one softmax row whose output was `y`, in place over the output's
/// gradient `g`: g ← y ⊙ (g − Σ y·g).
#[inline(always)]
pub(crate) fn softmax_row_backward(y: &[f32], g: &mut [f32]) {
    let dot: f32 = y.iter().zip(g.iter()).map(|(y, g)| y * g).sum();
    for (g, &y) in g.iter_mut().zip(y) {
        *g = y * (*g - dot);
    }
}

/// Elements per parallel task: large enough that rayon's overhead vanishes, small enough
/// that both cores get work on the model's smallest activations.
const CHUNK: usize = 1 << 13;

pub(crate) fn contiguous(x: FlexTensor) -> FlexTensor {
    if x.as_slice::<f32>().is_some() {
        x
    } else {
        x.to_contiguous()
    }
}

/// The standard normal's CDF Φ(x) and density φ(x) at one point.
struct Normal {
    cdf: f32,
    pdf: f32,
}

/// Φ from Abramowitz & Stegun 7.1.26 (erfc(z) ≈ poly(t)·e^(−z²), t = 1/(1 + p·z), absolute
/// error under 1.5e-7), evaluated on |x| and reflected, so the left tail is computed
/// directly instead of as 1 − (almost 1). φ shares the exponential. Branch-free, so loops
/// over it vectorise.
#[inline(always)]
fn normal(x: f32) -> Normal {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_72,
        1.421_413_8,
        -1.453_152,
        1.061_405_4,
    ];
    const FRAC_1_SQRT_2PI: f32 = 0.398_942_3;
    let z = x.abs() * std::f32::consts::FRAC_1_SQRT_2;
    let e = exp(-0.5 * x * x); // e^(−z²)
    let t = 1.0 / (1.0 + P * z);
    let poly = t * (A[0] + t * (A[1] + t * (A[2] + t * (A[3] + t * A[4]))));
    let tail = 0.5 * poly * e; // Φ(−|x|)
    Normal {
        cdf: if x < 0.0 { tail } else { 1.0 - tail },
        pdf: FRAC_1_SQRT_2PI * e,
    }
}

/// e^x for f32, branch-free (Cephes' `expf`): e^x = 2^n · e^r with n = round(x / ln 2) and
/// |r| ≤ ln 2 / 2, e^r by a degree-6 polynomial, 2^n put straight into the exponent bits.
/// Inputs are clamped to [−87, 88], where the result stays a normal float.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    // Adding 1.5·2^23 rounds to an integer, which then sits in the low mantissa bits.
    const ROUNDER: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUNDER;
    let n = shifted - ROUNDER;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = ((((1.987_569_1e-4 * r + 1.398_199_9e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2) * r
        + 1.666_666_5e-1)
        * r
        + 0.5;
    let er = p * r * r + r + 1.0;
    let exponent = (shifted.to_bits() as i32 - ROUNDER.to_bits() as i32 + 127) << 23;
    er * f32::from_bits(exponent as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use burn::tensor::activation;

    #[test]
    fn the_fast_exponential_is_within_two_ulps_of_std() {
        let mut worst = 0.0f32;
        for i in -87_000..=88_000 {
            let x = i as f32 / 1000.0;
            let (ours, std) = (exp(x), x.exp());
            worst = worst.max(((ours - std) / std).abs());
        }
        assert!(worst < 2.5e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn the_normal_cdf_and_density_match_the_series() {
        // A&S bound Φ's error by 7.5e-8; evaluating the polynomial in f32 adds a few ulps.
        let (mut worst_cdf, mut worst_pdf) = (0.0f64, 0.0f64);
        for i in -8000..=8000 {
            let x = i as f32 / 1000.0;
            let n = normal(x);
            let cdf = 0.5 * erfc(-(x as f64) / std::f64::consts::SQRT_2);
            let pdf = (-(x as f64) * (x as f64) / 2.0).exp() / (2.0 * std::f64::consts::PI).sqrt();
            worst_cdf = worst_cdf.max((n.cdf as f64 - cdf).abs());
            worst_pdf = worst_pdf.max((n.pdf as f64 - pdf).abs());
        }
        assert!(worst_cdf < 3e-7, "Φ off by up to {worst_cdf:e}");
        assert!(worst_pdf < 1e-7, "φ off by up to {worst_pdf:e}");
    }

    /// erfc in f64 (std has none): 1 − erf's Taylor series, accurate to about 1e-8 on
    /// |z| ≤ 4.5 (the terms' cancellation costs digits), and 0 or 2 beyond, where erfc is
    /// under 1e-9.
    fn erfc(z: f64) -> f64 {
        // erf(z) = 2/√π Σ (−1)^n z^(2n+1) / (n! (2n+1)), summed until terms vanish.
        if z.abs() > 4.5 {
            return if z > 0.0 { 0.0 } else { 2.0 };
        }
        let (mut term, mut sum, mut n) = (z, z, 0.0f64);
        while term.abs() > 1e-17 {
            n += 1.0;
            term *= -z * z / n;
            sum += term / (2.0 * n + 1.0);
        }
        1.0 - sum * 2.0 / std::f64::consts::PI.sqrt()
    }

    fn values() -> Vec<f32> {
        (-600..=600).map(|i| i as f32 / 50.0).collect()
    }

    #[test]
    fn fused_gelu_matches_burns_gelu_and_its_gradient() {
        let device = Device::flex().autodiff();
        let data = values();
        let n = data.len();
        let x = Tensor::<1>::from_data(TensorData::new(data.clone(), [n]), &device).require_grad();
        // A weight per element, so the gradient is not the same at every point.
        let w: Vec<f32> = (0..n).map(|i| 1.0 + (i % 7) as f32 / 7.0).collect();
        let w = Tensor::<1>::from_data(TensorData::new(w, [n]), &device);

        let ours = gelu(x.clone());
        let theirs = activation::gelu(x.clone());
        let (a, b) = (
            ours.clone().into_data().try_into_vec::<f32>().unwrap(),
            theirs.clone().into_data().try_into_vec::<f32>().unwrap(),
        );
        for ((x, a), b) in data.iter().zip(&a).zip(&b) {
            assert!(
                (a - b).abs() <= 2e-7 * (1.0 + x.abs()),
                "gelu({x}): {a} vs {b}"
            );
        }

        let grads_ours = (ours * w.clone()).sum().backward();
        let grads_theirs = (theirs * w).sum().backward();
        let (ga, gb) = (
            x.grad(&grads_ours)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
            x.grad(&grads_theirs)
                .unwrap()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
        );
        for ((x, a), b) in data.iter().zip(&ga).zip(&gb) {
            assert!(
                (a - b).abs() <= 1e-6 * (1.0 + x.abs()),
                "gelu'({x}): {a} vs {b}"
            );
        }
    }

    fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 2.0), device)
    }

    fn max_abs<const D: usize>(t: Tensor<D>) -> f32 {
        t.abs().max().into_scalar::<f32>()
    }

    #[test]
    fn fused_softmax_matches_burns_softmax_and_its_gradient() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let x = random([3, 4, 17, 23], &device).require_grad();
        let w = random([3, 4, 17, 23], &device);
        let ours = softmax(x.clone());
        let theirs = activation::softmax(x.clone(), 3);
        assert!(max_abs(ours.clone() - theirs.clone()) < 1e-6);
        let rows = ours.clone().sum_dim(3);
        assert!(max_abs(rows - 1.0) < 1e-6);
        let g_ours = x.grad(&(ours * w.clone()).sum().backward()).unwrap();
        let g_theirs = x.grad(&(theirs * w).sum().backward()).unwrap();
        assert!(max_abs(g_ours - g_theirs) < 1e-5);
    }

    #[test]
    fn fused_layer_norm_matches_burns_and_its_three_gradients() {
        let device = Device::flex().autodiff();
        device.seed(5);
        // An offset far from zero, as activations drift: the two-pass variance keeps it.
        let x = (random([4, 9, 48], &device) + 30.0).require_grad();
        let gamma = random([48], &device).require_grad();
        let beta = random([48], &device).require_grad();
        let w = random([4, 9, 48], &device);
        let ours = layer_norm_with(x.clone(), gamma.clone(), beta.clone());
        let theirs = burn::tensor::module::layer_norm(
            x.clone(),
            gamma.clone(),
            Some(beta.clone()),
            LAYER_NORM_EPSILON,
        );
        assert!(max_abs(ours.clone() - theirs.clone()) < 2e-5);
        let grads_ours = (ours * w.clone()).sum().backward();
        let grads_theirs = (theirs * w).sum().backward();
        fn close<const D: usize>(name: &str, a: Option<Tensor<D>>, b: Option<Tensor<D>>) {
            let (a, b) = (a.unwrap(), b.unwrap());
            let scale = max_abs(b.clone());
            let diff = max_abs(a - b);
            assert!(
                diff < 1e-4 * scale,
                "d{name}: differs by {diff} (scale {scale})"
            );
        }
        close("x", x.grad(&grads_ours), x.grad(&grads_theirs));
        close("gamma", gamma.grad(&grads_ours), gamma.grad(&grads_theirs));
        close("beta", beta.grad(&grads_ours), beta.grad(&grads_theirs));
    }

    #[test]
    fn the_gelu_kernels_agree_with_burns_gelu_and_derivative() {
        // What the other backends' default bodies compute: burn's GELU, its gradient at a
        // gradient of ones (the derivative), and the product that makes the backward.
        let x = crate::testing::wave(&[3, 5, 37], 0.61);
        let grad = crate::testing::wave(&[3, 5, 37], 1.7);
        let ones = Flex::float_ones(x.shape(), &x.device(), x.dtype().into());
        let (y, derivative) = Flex::fused_gelu_with_derivative(x.clone());
        let dx = Flex::fused_gelu_backward(derivative.clone(), grad.clone());
        crate::testing::assert_all_close(
            vec![
                ("GELU", y, Flex::gelu(x.clone())),
                (
                    "derivative",
                    derivative,
                    Flex::gelu_backward(x.clone(), ones),
                ),
                ("gradient", dx, Flex::gelu_backward(x, grad)),
            ],
            2e-6,
        );
    }

    #[test]
    fn the_fallback_layer_norm_gradients_agree_with_the_fused_kernel() {
        // Other backends (wgpu) take the gradients from their own ops: same numbers.
        let wave = |n: usize, k: f32| -> Vec<f32> {
            (0..n)
                .map(|i| (i as f32 * k).sin() * 2.0 + (i % 5) as f32)
                .collect()
        };
        let flex = |values: Vec<f32>, shape: &[usize]| {
            FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
        };
        let (x, grad, gamma) = (
            flex(wave(5 * 7 * 32, 0.37), &[5, 7, 32]),
            flex(wave(5 * 7 * 32, 1.13), &[5, 7, 32]),
            flex(wave(32, 0.71), &[32]),
        );
        let fused = Flex::fused_layer_norm_backward(x.clone(), gamma.clone(), grad.clone(), 1e-5);
        let by_ops = layer_norm_backward_by_ops::<Flex>(x, gamma, grad, 1e-5);
        crate::testing::assert_all_close(
            vec![
                ("dx", fused.0, by_ops.0),
                ("dgamma", fused.1, by_ops.1),
                ("dbeta", fused.2, by_ops.2),
            ],
            1e-4,
        );
    }

    #[test]
    fn fused_gelu_reads_strided_tensors_and_keeps_the_shape() {
        let device = Device::flex();
        let data = values();
        let x = Tensor::<2>::from_data(TensorData::new(data[..1200].to_vec(), [40, 30]), &device)
            .transpose(); // [30, 40], not contiguous
        let ours = gelu(x.clone());
        assert_eq!(ours.dims(), [30, 40]);
        let theirs = activation::gelu(x);
        let diff = (ours - theirs).abs().max().into_scalar::<f32>();
        assert!(diff < 3e-6, "{diff}");
    }
}
