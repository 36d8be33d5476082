//! Multi-head attention's core, softmax(Q·Kᵀ/√dk)·V per head, as one fused op with its own
//! backward: a burn backend extension, vectorised over every core on burn's CPU backend
//! (flex), burn's own ops on any other backend (wgpu).
//!
//! Why by hand: through burn's ops one attention is a split of the heads (a copy each for
//! Q, K and V), a batch of small [L, dk] × [dk, L] products, a scale, a softmax, another
//! batch of products and a merge of the heads (one more copy); autodiff keeps the L × L
//! weights and runs a backward for each of those steps. Here one task per window runs the
//! products through `gemm` (the crate under burn's own matmul) on the heads in place in the
//! projections' [B, L, H·dk] layout, with the softmax in between, and keeps only each row's
//! log-sum-exp for the backward, which rebuilds the weights from it (FlashAttention's
//! trade: one L × dk × L product recomputed instead of the weights kept). A first version
//! with hand-written loops instead of `gemm` was slower than burn's path (docs/BENCHMARKS.md).
//!
//! Must never change what the model computes beyond float rounding: the tests hold the op
//! and its gradients to burn's attention.

use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorData, TensorMetadata};
use burn::prelude::Tensor;
use rayon::prelude::*;

use crate::fused::{
    all_f32, contiguous, exp, record, register_gradients, softmax_row, softmax_row_backward,
    widest_simd,
};
use crate::matmul::{View, product, product_into_uninit};

#[burn::backend::backend_extension(Flex, Autodiff, Cube: cfg(feature = "gpu"))]
pub trait AttentionOps: Backend {
    /// softmax(Q·Kᵀ/√dk)·V for each of `heads` heads, over queries, keys and values laid out
    /// [B, L, H·dk] (the heads side by side, as the projections give them) → [B, L, H·dk].
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        attention_by_ops::<Self>(q, k, v, heads).0
    }

    /// The same output, and each query row's log-sum-exp of its scaled scores [B, H, L],
    /// which is all the backward needs to rebuild the weights.
    fn fused_attention_keeping_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention_by_ops::<Self>(q, k, v, heads)
    }

    /// The gradients of Q, K and V given the output's.
    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        attention_backward_by_ops::<Self>(q, k, v, lse, grad, heads)
    }
}

/// The attention of `heads` heads over projections [B, L, H·dk] → [B, L, H·dk], fused where
/// the backend has the kernel.
pub fn attention(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(Dispatch::fused_attention(
        q.into_dispatch(),
        k.into_dispatch(),
        v.into_dispatch(),
        heads,
    ))
}

/// The shapes every path shares: [B, L, d] with d = H·dk.
fn dims(q: &impl TensorMetadata, heads: usize) -> [usize; 4] {
    let shape = q.shape();
    let (b, l, d) = (shape[0], shape[1], shape[2]);
    assert!(
        heads > 0 && d.is_multiple_of(heads),
        "attention: width {d} does not split into {heads} heads"
    );
    [b, l, d, d / heads]
}

/// [B, L, H·dk] → [B, H, L, dk].
fn split_heads<B: Backend>(x: FloatTensor<B>, [b, l, _, dk]: [usize; 4]) -> FloatTensor<B> {
    let heads = x.shape()[2] / dk;
    B::float_swap_dims(B::float_reshape(x, [b, l, heads, dk].into()), 1, 2)
}

/// [B, H, L, dk] → [B, L, H·dk].
fn merge_heads<B: Backend>(x: FloatTensor<B>, [b, l, d, _]: [usize; 4]) -> FloatTensor<B> {
    B::float_reshape(B::float_swap_dims(x, 1, 2), [b, l, d].into())
}

/// The weights softmax(S) from scores S [B, H, L, L] and their log-sum-exp [B, H, L, 1].
fn weights_from_lse<B: Backend>(scores: FloatTensor<B>, lse: FloatTensor<B>) -> FloatTensor<B> {
    B::float_exp(B::float_sub(scores, lse))
}

/// Q·Kᵀ/√dk per head: [B, H, L, L].
fn scores_by_ops<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    dims: [usize; 4],
) -> FloatTensor<B> {
    let scale = 1.0 / (dims[3] as f64).sqrt();
    let product = B::float_matmul(
        split_heads::<B>(q, dims),
        B::float_transpose(split_heads::<B>(k, dims)),
    );
    B::float_mul_scalar(product, scale.into())
}

/// The attention and its log-sum-exp from the backend's own ops (backends without a kernel).
fn attention_by_ops<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = dims(&q, heads);
    let scores = scores_by_ops::<B>(q, k, dims);
    let max = B::float_max_dim(scores.clone(), 3); // [B, H, L, 1]
    let sum = B::float_sum_dim(B::float_exp(B::float_sub(scores.clone(), max.clone())), 3);
    let lse = B::float_add(max, B::float_log(sum)); // [B, H, L, 1]
    let weights = weights_from_lse::<B>(scores, lse.clone());
    let out = merge_heads::<B>(B::float_matmul(weights, split_heads::<B>(v, dims)), dims);
    let [b, l, _, _] = dims;
    (out, B::float_reshape(lse, [b, heads, l].into()))
}

/// The attention's gradients from the backend's own ops: with P the weights and dO the
/// output's gradient per head, dV = Pᵀ·dO, dP = dO·Vᵀ, dS = P ⊙ (dP − Σ P ⊙ dP) along each
/// row, dQ = dS·K/√dk and dK = dSᵀ·Q/√dk.
fn attention_backward_by_ops<B: Backend>(
    q: FloatTensor<B>,
    k: FloatTensor<B>,
    v: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) {
    let dims = dims(&q, heads);
    let [b, l, _, dk] = dims;
    let scale = 1.0 / (dk as f64).sqrt();
    let scores = scores_by_ops::<B>(q.clone(), k.clone(), dims);
    let lse = B::float_reshape(lse, [b, heads, l, 1].into());
    let weights = weights_from_lse::<B>(scores, lse); // [B, H, L, L]
    let d_out = split_heads::<B>(grad, dims); // [B, H, L, dk]
    let (q, k, v) = (
        split_heads::<B>(q, dims),
        split_heads::<B>(k, dims),
        split_heads::<B>(v, dims),
    );
    let dv = B::float_matmul(B::float_transpose(weights.clone()), d_out.clone());
    let dp = B::float_matmul(d_out, B::float_transpose(v));
    let row_dot = B::float_sum_dim(B::float_mul(weights.clone(), dp.clone()), 3);
    let ds = B::float_mul_scalar(
        B::float_mul(weights, B::float_sub(dp, row_dot)),
        scale.into(),
    );
    let dq = B::float_matmul(ds.clone(), k);
    let dk = B::float_matmul(B::float_transpose(ds), q);
    (
        merge_heads::<B>(dq, dims),
        merge_heads::<B>(dk, dims),
        merge_heads::<B>(dv, dims),
    )
}

#[cfg(feature = "gpu")]
impl AttentionOps for burn::backend::Cube {}

impl View {
    /// Head `h` of a window's [L, H·dk] projection, as an [L, dk] matrix.
    fn head(h: usize, at: &Layout) -> Self {
        View {
            offset: h * at.dk,
            ..View::rows_of(at.d)
        }
    }

    /// A dense [L, L] matrix.
    fn square(at: &Layout) -> Self {
        View::rows_of(at.l)
    }
}

/// Window `w` of a batch whose windows are `n` values each.
fn window(t: &[f32], w: usize, n: usize) -> &[f32] {
    &t[w * n..][..n]
}

fn f32_slice(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("contiguous f32")
}

/// The sizes a window's kernels read: L tokens of d = H·dk values, and the scores' scale.
#[derive(Clone, Copy)]
struct Layout {
    l: usize,
    d: usize,
    dk: usize,
    heads: usize,
    scale: f32,
}

impl Layout {
    /// The batch size and the window layout of projections `q` [B, L, H·dk].
    fn of(q: &FlexTensor, heads: usize) -> (usize, Self) {
        let [b, l, d, dk] = dims(q, heads);
        let scale = 1.0 / (dk as f32).sqrt();
        (
            b,
            Layout {
                l,
                d,
                dk,
                heads,
                scale,
            },
        )
    }

    /// Values in one window of a projection.
    fn window_len(&self) -> usize {
        self.l * self.d
    }
}

/// Head `h`'s scores Q·Kᵀ/√dk [L, L] into `p`.
fn scores(at: Layout, h: usize, q: &[f32], k: &[f32], p: &mut [f32]) {
    let head = View::head(h, &at);
    let (l, dk) = (at.l, at.dk);
    product(
        [l, dk, l],
        at.scale,
        (q, head),
        (k, head.transposed()),
        (p, View::square(&at)),
    );
}

/// One window's attention, every head: `out` [L, d] and each row's log-sum-exp `lse` [H, L].
/// Inlined, so that `widest_simd` reaches its softmax.
#[inline(always)]
fn forward_window(at: Layout, q: &[f32], k: &[f32], v: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let Layout { l, dk, .. } = at;
    let mut p = vec![0.0f32; l * l]; // scores, then weights, of one head
    for h in 0..at.heads {
        let head = View::head(h, &at);
        let square = View::square(&at);
        scores(at, h, q, k, &mut p);
        for (i, row) in p.chunks_exact_mut(l).enumerate() {
            lse[h * l + i] = softmax_row(row);
        }
        product([l, l, dk], 1.0, (&p, square), (v, head), (out, head));
    }
}

/// One window's gradients, every head, into `dq`, `dkey` and `dv` [L, d]. With P the
/// weights and dO the output's gradient: dS = P ⊙ (dO·Vᵀ − Σ P ⊙ dO·Vᵀ) along each row,
/// dQ = dS·K/√dk, dK = dSᵀ·Q/√dk and dV = Pᵀ·dO.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_window(
    at: Layout,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    lse: &[f32],
    grad: &[f32],
    dq: &mut [MaybeUninit<f32>],
    dkey: &mut [MaybeUninit<f32>],
    dv: &mut [MaybeUninit<f32>],
) {
    let Layout { l, dk, scale, .. } = at;
    let (mut p, mut ds) = (vec![0.0f32; l * l], vec![0.0f32; l * l]);
    for h in 0..at.heads {
        let head = View::head(h, &at);
        let square = View::square(&at);
        scores(at, h, q, k, &mut p);
        product(
            [l, dk, l],
            1.0,
            (grad, head),
            (v, head.transposed()),
            (&mut ds, square),
        ); // dP
        for (i, (p, ds)) in p
            .chunks_exact_mut(l)
            .zip(ds.chunks_exact_mut(l))
            .enumerate()
        {
            // the weights, rebuilt from the row's log-sum-exp; then dS = P ⊙ (dP − Σ P ⊙ dP)
            let lse = lse[h * l + i];
            p.iter_mut().for_each(|s| *s = exp(*s - lse));
            softmax_row_backward(p, ds);
        }
        // Each head's dk columns of every row: the heads together write all of dQ, dK, dV.
        product_into_uninit(
            [l, l, dk],
            scale,
            (&ds, square),
            (k, head),
            (dq, head),
            false,
        );
        product_into_uninit(
            [l, l, dk],
            scale,
            (&ds, square.transposed()),
            (q, head),
            (dkey, head),
            false,
        );
        product_into_uninit(
            [l, l, dk],
            1.0,
            (&p, square.transposed()),
            (grad, head),
            (dv, head),
            false,
        );
    }
}

impl AttentionOps for Flex {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        Self::fused_attention_keeping_lse(q, k, v, heads).0
    }

    fn fused_attention_keeping_lse(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v]) {
            return attention_by_ops::<Flex>(q, k, v, heads);
        }
        let (b, at) = Layout::of(&q, heads);
        let (q, k, v) = (contiguous(q), contiguous(k), contiguous(v));
        let (q, k, v) = (f32_slice(&q), f32_slice(&k), f32_slice(&v));
        let n = at.window_len();
        let mut out = vec![0.0f32; b * n];
        let mut lse = vec![0.0f32; b * heads * at.l];
        // One task a window: its heads' rows are contiguous in `out` and `lse`.
        out.par_chunks_mut(n)
            .zip(lse.par_chunks_mut(heads * at.l))
            .enumerate()
            .for_each(|(w, (out, lse))| {
                let (q, k, v) = (window(q, w, n), window(k, w, n), window(v, w, n));
                widest_simd(
                    #[inline(always)]
                    || forward_window(at, q, k, v, out, lse),
                );
            });
        let [l, d] = [at.l, at.d];
        (
            FlexTensor::from_data(TensorData::new(out, [b, l, d])),
            FlexTensor::from_data(TensorData::new(lse, [b, heads, l])),
        )
    }

    fn fused_attention_backward(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&q, &k, &v, &lse, &grad]) {
            return attention_backward_by_ops::<Flex>(q, k, v, lse, grad, heads);
        }
        let (b, at) = Layout::of(&q, heads);
        let (q, k, v, lse, grad) = (
            contiguous(q),
            contiguous(k),
            contiguous(v),
            contiguous(lse),
            contiguous(grad),
        );
        let (q, k, v, lse, grad) = (
            f32_slice(&q),
            f32_slice(&k),
            f32_slice(&v),
            f32_slice(&lse),
            f32_slice(&grad),
        );
        let n = at.window_len();
        assert_eq!(at.heads * at.dk, at.d, "the heads cover the width");
        // Never zero-filled: every value is written by a product that reads none (as the
        // dense layers' backward, where dropping the fill made training ~8 % faster).
        let (mut dq, mut dkey, mut dv): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            Vec::with_capacity(b * n),
            Vec::with_capacity(b * n),
            Vec::with_capacity(b * n),
        );
        dq.spare_capacity_mut()[..b * n]
            .par_chunks_mut(n)
            .zip(
                dkey.spare_capacity_mut()[..b * n]
                    .par_chunks_mut(n)
                    .zip(dv.spare_capacity_mut()[..b * n].par_chunks_mut(n)),
            )
            .enumerate()
            .for_each(|(w, (dq, (dkey, dv)))| {
                let (q, k, v, grad) = (
                    window(q, w, n),
                    window(k, w, n),
                    window(v, w, n),
                    window(grad, w, n),
                );
                let lse = window(lse, w, heads * at.l);
                widest_simd(
                    #[inline(always)]
                    || backward_window(at, q, k, v, lse, grad, dq, dkey, dv),
                );
            });
        // SAFETY: each window's heads wrote all of its L rows × (heads × dk = d) columns of
        // the three buffers, so their first b × n values are initialised.
        unsafe {
            dq.set_len(b * n);
            dkey.set_len(b * n);
            dv.set_len(b * n);
        }
        let shape = [b, at.l, at.d];
        (
            FlexTensor::from_data(TensorData::new(dq, shape)),
            FlexTensor::from_data(TensorData::new(dkey, shape)),
            FlexTensor::from_data(TensorData::new(dv, shape)),
        )
    }
}

impl<B: AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn fused_attention(
        q: FloatTensor<Self>,
        k: FloatTensor<Self>,
        v: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionOp;

        impl<B: AttentionOps> Backward<B, 3> for AttentionOp {
            /// Q, K, V, the log-sum-exp of each row and the head count.
            type State = (
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                FloatTensor<B>,
                usize,
            );

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                register_gradients::<B, _, 3>(ops, grads, |(q, k, v, lse, heads), grad| {
                    let (dq, dk, dv) = B::fused_attention_backward(q, k, v, lse, grad, heads);
                    [dq, dk, dv]
                });
            }
        }

        record::<B, C, _, 3>(
            AttentionOp,
            [q, k, v],
            |[q, k, v]| {
                let (out, lse) =
                    B::fused_attention_keeping_lse(q.clone(), k.clone(), v.clone(), heads);
                ((q, k, v, lse, heads), out)
            },
            |[q, k, v]| B::fused_attention(q, k, v, heads),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{assert_all_close, wave};
    use burn::prelude::*;
    use burn::tensor::activation;

    /// Attention written with burn's tensor API, as burn's `MultiHeadAttention` computes it.
    pub(super) fn reference(q: Tensor<3>, k: Tensor<3>, v: Tensor<3>, heads: usize) -> Tensor<3> {
        let [b, l, d] = q.dims();
        let dk = d / heads;
        let split = |t: Tensor<3>| t.reshape([b, l, heads, dk]).swap_dims(1, 2);
        let scores = split(q)
            .matmul(split(k).transpose())
            .div_scalar((dk as f32).sqrt());
        let weights = activation::softmax(scores, 3);
        weights.matmul(split(v)).swap_dims(1, 2).reshape([b, l, d])
    }

    fn random(shape: [usize; 3], device: &Device) -> Tensor<3> {
        Tensor::random(shape, burn::tensor::Distribution::Normal(0.0, 1.5), device)
    }

    fn max_abs(t: Tensor<3>) -> f32 {
        t.abs().max().into_scalar::<f32>()
    }

    fn assert_close(name: &str, ours: Tensor<3>, theirs: Tensor<3>, tolerance: f32) {
        let scale = max_abs(theirs.clone()).max(1e-6);
        let diff = max_abs(ours - theirs);
        assert!(
            diff < tolerance * scale,
            "{name} differs by {diff} (scale {scale})"
        );
    }

    #[test]
    fn fused_attention_matches_burns_attention_and_its_three_gradients() {
        let device = Device::flex().autodiff();
        device.seed(11);
        // Lengths that are not a multiple of the SIMD width, and the model's head widths
        // (8 in tiny's decoder, 16, 32).
        for (b, l, heads, dk) in [(3, 17, 4, 16), (2, 84, 4, 8), (2, 9, 2, 32), (1, 1, 1, 4)] {
            let d = heads * dk;
            let (q, k, v) = (
                random([b, l, d], &device).require_grad(),
                random([b, l, d], &device).require_grad(),
                random([b, l, d], &device).require_grad(),
            );
            let w = random([b, l, d], &device);
            let ours = attention(q.clone(), k.clone(), v.clone(), heads);
            let theirs = reference(q.clone(), k.clone(), v.clone(), heads);
            assert_eq!(ours.dims(), [b, l, d]);
            assert_close("output", ours.clone(), theirs.clone(), 1e-5);
            let grads_ours = (ours * w.clone()).sum().backward();
            let grads_theirs = (theirs * w).sum().backward();
            for (name, x) in [("dQ", &q), ("dK", &k), ("dV", &v)] {
                let (a, b) = (x.grad(&grads_ours).unwrap(), x.grad(&grads_theirs).unwrap());
                assert_close(&format!("{name} at L = {l}, dk = {dk}"), a, b, 1e-4);
            }
        }
    }

    #[test]
    fn the_fallback_attention_agrees_with_the_fused_kernel_forward_and_backward() {
        // Other backends (wgpu) run the trait's default bodies, built from their own ops.
        let (b, l, heads, dk) = (2, 13, 3, 8);
        let flex = |k: f32| wave(&[b, l, heads * dk], k);
        let (q, k, v, grad) = (flex(0.37), flex(1.13), flex(0.71), flex(0.29));
        let fused = Flex::fused_attention_keeping_lse(q.clone(), k.clone(), v.clone(), heads);
        let by_ops = attention_by_ops::<Flex>(q.clone(), k.clone(), v.clone(), heads);
        let fused_grads = Flex::fused_attention_backward(
            q.clone(),
            k.clone(),
            v.clone(),
            fused.1.clone(),
            grad.clone(),
            heads,
        );
        let by_ops_grads =
            attention_backward_by_ops::<Flex>(q, k, v, by_ops.1.clone(), grad, heads);
        assert_all_close(
            vec![
                ("output", fused.0, by_ops.0),
                ("log-sum-exp", fused.1, by_ops.1),
                ("dQ", fused_grads.0, by_ops_grads.0),
                ("dK", fused_grads.1, by_ops_grads.1),
                ("dV", fused_grads.2, by_ops_grads.2),
            ],
            1e-4,
        );
    }

    #[test]
    #[should_panic(expected = "width 10 does not split into 3 heads")]
    fn heads_that_do_not_divide_the_width_are_refused_clearly() {
        let q = FlexTensor::from_data(TensorData::new(vec![0.0f32; 10], [1, 1, 10]));
        Flex::fused_attention(q.clone(), q.clone(), q, 3);
    }
}
