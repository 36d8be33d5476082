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
    /// softmax(Q·Kᵀ/√dk)·V for each of `heads` heads, over the packed projections `qkv`
    /// [B, L, 3·H·dk] (Q, K and V side by side, each with its heads side by side, as one
    /// product of the three projections gives them) → [B, L, H·dk].
    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        attention_by_ops::<Self>(qkv, heads).0
    }

    /// The same output, and each query row's log-sum-exp of its scaled scores [B, H, L],
    /// which is all the backward needs to rebuild the weights.
    fn fused_attention_keeping_lse(
        qkv: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        attention_by_ops::<Self>(qkv, heads)
    }

    /// The gradient of the packed projections [B, L, 3·H·dk] given the output's.
    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        attention_backward_by_ops::<Self>(qkv, lse, grad, heads)
    }
}

/// The attention of `heads` heads over packed projections [B, L, 3·H·dk] → [B, L, H·dk],
/// fused where the backend has the kernel.
pub fn attention(qkv: Tensor<3>, heads: usize) -> Tensor<3> {
    Tensor::from_dispatch(Dispatch::fused_attention(qkv.into_dispatch(), heads))
}

/// The shapes every path shares: packed projections [B, L, 3·d] with d = H·dk.
fn dims(qkv: &impl TensorMetadata, heads: usize) -> [usize; 4] {
    let shape = qkv.shape();
    let (b, l, packed) = (shape[0], shape[1], shape[2]);
    assert!(
        packed.is_multiple_of(3),
        "attention: packed width {packed} is not three projections (Q, K, V) side by side"
    );
    let d = packed / 3;
    assert!(
        heads > 0 && d.is_multiple_of(heads),
        "attention: width {d} does not split into {heads} heads"
    );
    [b, l, d, d / heads]
}

/// Packed [B, L, 3·d] → Q, K and V [B, L, d] each (backends without a kernel).
fn unpack<B: Backend>(qkv: FloatTensor<B>, [b, l, d, _]: [usize; 4]) -> [FloatTensor<B>; 3] {
    let parts = B::float_reshape(qkv, [b, l, 3, d].into());
    [0, 1, 2].map(|part| {
        let slices = [
            (..).into(),
            (..).into(),
            (part..part + 1).into(),
            (..).into(),
        ];
        B::float_reshape(B::float_slice(parts.clone(), &slices), [b, l, d].into())
    })
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
    qkv: FloatTensor<B>,
    heads: usize,
) -> (FloatTensor<B>, FloatTensor<B>) {
    let dims = dims(&qkv, heads);
    let [q, k, v] = unpack::<B>(qkv, dims);
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
    qkv: FloatTensor<B>,
    lse: FloatTensor<B>,
    grad: FloatTensor<B>,
    heads: usize,
) -> FloatTensor<B> {
    let dims = dims(&qkv, heads);
    let [q, k, v] = unpack::<B>(qkv, dims);
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
    let [dq, dk, dv] = [dq, dk, dv].map(|g| merge_heads::<B>(g, dims));
    B::float_cat(vec![dq, dk, dv], 2)
}

#[cfg(feature = "gpu")]
impl AttentionOps for burn::backend::Cube {}

/// Where Q, K and V sit side by side in a packed projection row.
#[derive(Clone, Copy)]
enum Part {
    Query = 0,
    Key = 1,
    Value = 2,
}

impl View {
    /// Head `h` of `part` in a window's packed [L, 3·H·dk] projections, as an [L, dk] matrix.
    fn projection(part: Part, h: usize, at: &Layout) -> Self {
        View {
            offset: part as usize * at.d + h * at.dk,
            ..View::rows_of(3 * at.d)
        }
    }

    /// Head `h` of a window's [L, H·dk] output (or of its gradient), as an [L, dk] matrix.
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

/// The sizes a window's kernels read: L tokens of d = H·dk values (3·d in the packed
/// projections), and the scores' scale.
#[derive(Clone, Copy)]
struct Layout {
    l: usize,
    d: usize,
    dk: usize,
    heads: usize,
    scale: f32,
}

impl Layout {
    /// The batch size and the window layout of packed projections `qkv` [B, L, 3·H·dk].
    fn of(qkv: &FlexTensor, heads: usize) -> (usize, Self) {
        let [b, l, d, dk] = dims(qkv, heads);
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

    /// Values in one window of the output (or of its gradient).
    fn window_len(&self) -> usize {
        self.l * self.d
    }

    /// Values in one window of the packed projections.
    fn packed_len(&self) -> usize {
        3 * self.window_len()
    }
}

/// Head `h`'s scores Q·Kᵀ/√dk [L, L] into `p`, from a window's packed projections.
fn scores(at: Layout, h: usize, qkv: &[f32], p: &mut [f32]) {
    let (l, dk) = (at.l, at.dk);
    product(
        [l, dk, l],
        at.scale,
        (qkv, View::projection(Part::Query, h, &at)),
        (qkv, View::projection(Part::Key, h, &at).transposed()),
        (p, View::square(&at)),
    );
}

/// One window's attention, every head: `out` [L, d] and each row's log-sum-exp `lse` [H, L].
/// Inlined, so that `widest_simd` reaches its softmax.
#[inline(always)]
fn forward_window(at: Layout, qkv: &[f32], out: &mut [f32], lse: &mut [f32]) {
    let Layout { l, dk, .. } = at;
    let mut p = vec![0.0f32; l * l]; // scores, then weights, of one head
    for h in 0..at.heads {
        scores(at, h, qkv, &mut p);
        for (i, row) in p.chunks_exact_mut(l).enumerate() {
            lse[h * l + i] = softmax_row(row);
        }
        product(
            [l, l, dk],
            1.0,
            (&p, View::square(&at)),
            (qkv, View::projection(Part::Value, h, &at)),
            (out, View::head(h, &at)),
        );
    }
}

/// One window's gradients, every head, into `dqkv` [L, 3·d]. With P the weights and dO the
/// output's gradient: dS = P ⊙ (dO·Vᵀ − Σ P ⊙ dO·Vᵀ) along each row, dQ = dS·K/√dk,
/// dK = dSᵀ·Q/√dk and dV = Pᵀ·dO.
#[inline(always)]
fn backward_window(
    at: Layout,
    qkv: &[f32],
    lse: &[f32],
    grad: &[f32],
    dqkv: &mut [MaybeUninit<f32>],
) {
    let Layout { l, dk, scale, .. } = at;
    let (mut p, mut ds) = (vec![0.0f32; l * l], vec![0.0f32; l * l]);
    let square = View::square(&at);
    for h in 0..at.heads {
        let [query, key, value] =
            [Part::Query, Part::Key, Part::Value].map(|part| View::projection(part, h, &at));
        scores(at, h, qkv, &mut p);
        product(
            [l, dk, l],
            1.0,
            (grad, View::head(h, &at)),
            (qkv, value.transposed()),
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
        // Each head's dk columns of every row of each part: the heads together write all of
        // dQ, dK and dV, so all of `dqkv`.
        product_into_uninit(
            [l, l, dk],
            scale,
            (&ds, square),
            (qkv, key),
            (&mut *dqkv, query),
            false,
        );
        product_into_uninit(
            [l, l, dk],
            scale,
            (&ds, square.transposed()),
            (qkv, query),
            (&mut *dqkv, key),
            false,
        );
        product_into_uninit(
            [l, l, dk],
            1.0,
            (&p, square.transposed()),
            (grad, View::head(h, &at)),
            (&mut *dqkv, value),
            false,
        );
    }
}

impl AttentionOps for Flex {
    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        Self::fused_attention_keeping_lse(qkv, heads).0
    }

    fn fused_attention_keeping_lse(
        qkv: FloatTensor<Self>,
        heads: usize,
    ) -> (FloatTensor<Self>, FloatTensor<Self>) {
        if !all_f32(&[&qkv]) {
            return attention_by_ops::<Flex>(qkv, heads);
        }
        let (b, at) = Layout::of(&qkv, heads);
        let qkv = contiguous(qkv);
        let qkv = f32_slice(&qkv);
        let (n, packed) = (at.window_len(), at.packed_len());
        let mut out = vec![0.0f32; b * n];
        let mut lse = vec![0.0f32; b * heads * at.l];
        // One task a window: its heads' rows are contiguous in `out` and `lse`.
        out.par_chunks_mut(n)
            .zip(lse.par_chunks_mut(heads * at.l))
            .enumerate()
            .for_each(|(w, (out, lse))| {
                let qkv = window(qkv, w, packed);
                widest_simd(
                    #[inline(always)]
                    || forward_window(at, qkv, out, lse),
                );
            });
        let [l, d] = [at.l, at.d];
        (
            FlexTensor::from_data(TensorData::new(out, [b, l, d])),
            FlexTensor::from_data(TensorData::new(lse, [b, heads, l])),
        )
    }

    fn fused_attention_backward(
        qkv: FloatTensor<Self>,
        lse: FloatTensor<Self>,
        grad: FloatTensor<Self>,
        heads: usize,
    ) -> FloatTensor<Self> {
        if !all_f32(&[&qkv, &lse, &grad]) {
            return attention_backward_by_ops::<Flex>(qkv, lse, grad, heads);
        }
        let (b, at) = Layout::of(&qkv, heads);
        let (qkv, lse, grad) = (contiguous(qkv), contiguous(lse), contiguous(grad));
        let (qkv, lse, grad) = (f32_slice(&qkv), f32_slice(&lse), f32_slice(&grad));
        let (n, packed) = (at.window_len(), at.packed_len());
        assert_eq!(at.heads * at.dk, at.d, "the heads cover the width");
        // Never zero-filled: every value is written by a product that reads none (as the
        // dense layers' backward, where dropping the fill made training ~8 % faster).
        let mut dqkv: Vec<f32> = Vec::with_capacity(b * packed);
        dqkv.spare_capacity_mut()[..b * packed]
            .par_chunks_mut(packed)
            .enumerate()
            .for_each(|(w, dqkv)| {
                let (qkv, grad) = (window(qkv, w, packed), window(grad, w, n));
                let lse = window(lse, w, heads * at.l);
                widest_simd(
                    #[inline(always)]
                    || backward_window(at, qkv, lse, grad, dqkv),
                );
            });
        // SAFETY: each window's heads wrote all of its L rows × (3 parts × heads × dk = 3·d)
        // columns, so the first b × packed values are initialised.
        unsafe { dqkv.set_len(b * packed) };
        FlexTensor::from_data(TensorData::new(dqkv, [b, at.l, 3 * at.d]))
    }
}

impl<B: AttentionOps, C: CheckpointStrategy> AttentionOps for Autodiff<B, C> {
    fn fused_attention(qkv: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct AttentionOp;

        impl<B: AttentionOps> Backward<B, 1> for AttentionOp {
            /// The packed projections, the log-sum-exp of each row and the head count.
            type State = (FloatTensor<B>, FloatTensor<B>, usize);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _: &mut Checkpointer,
            ) {
                register_gradients::<B, _, 1>(ops, grads, |(qkv, lse, heads), grad| {
                    [B::fused_attention_backward(qkv, lse, grad, heads)]
                });
            }
        }

        record::<B, C, _, 1>(
            AttentionOp,
            [qkv],
            |[qkv]| {
                let (out, lse) = B::fused_attention_keeping_lse(qkv.clone(), heads);
                ((qkv, lse, heads), out)
            },
            |[qkv]| B::fused_attention(qkv, heads),
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
            let qkv = Tensor::cat(vec![q.clone(), k.clone(), v.clone()], 2);
            let ours = attention(qkv, heads);
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
        let qkv = wave(&[b, l, 3 * heads * dk], 0.37);
        let grad = wave(&[b, l, heads * dk], 0.29);
        let fused = Flex::fused_attention_keeping_lse(qkv.clone(), heads);
        let by_ops = attention_by_ops::<Flex>(qkv.clone(), heads);
        let fused_grad =
            Flex::fused_attention_backward(qkv.clone(), fused.1.clone(), grad.clone(), heads);
        let by_ops_grad = attention_backward_by_ops::<Flex>(qkv, by_ops.1.clone(), grad, heads);
        assert_all_close(
            vec![
                ("output", fused.0, by_ops.0),
                ("log-sum-exp", fused.1, by_ops.1),
                ("dQKV", fused_grad, by_ops_grad),
            ],
            1e-4,
        );
    }

    #[test]
    #[should_panic(expected = "width 10 does not split into 3 heads")]
    fn heads_that_do_not_divide_the_width_are_refused_clearly() {
        let qkv = FlexTensor::from_data(TensorData::new(vec![0.0f32; 30], [1, 1, 30]));
        Flex::fused_attention(qkv, 3);
    }
}
