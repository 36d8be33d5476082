//! The forward pass of the sensor model's transformer stacks (encoder and decoder): pre-norm
//! blocks of multi-head self-attention and a GELU feed-forward, over burn's
//! `TransformerEncoder` weights.
//!
//! Why not `TransformerEncoder::forward`: under autodiff its softmax and layer norm are
//! chains of small ops, each with its own backward, and its GELU is burn's
//! one-element-at-a-time kernel; this pass calls the fused kernels of `fused.rs`,
//! `attention.rs` and `dense.rs` instead. The weights stay burn's modules,
//! initialised by burn's config, so parameter names (and the PyTorch loader), seeds and saved
//! models are unchanged; the tests hold this pass to burn's own.

use burn::nn::transformer::TransformerEncoder;
use burn::prelude::*;

use doppel_kernels::{attention, dense, fused};

/// Runs every block: [B, L, d] → [B, L, d]. Only pre-norm stacks (`norm_first`), the only
/// kind the sensor model builds.
pub fn forward(stack: &TransformerEncoder, mut x: Tensor<3>) -> Tensor<3> {
    debug_assert!(stack.norm_first, "the sensor model's stacks are pre-norm");
    for layer in &stack.layers {
        // burn's pre-norm block normalises with norm_2 before attention, norm_1 before the
        // feed-forward; the names are kept as burn has them.
        let h = self_attention(&layer.mha, fused::layer_norm(&layer.norm_2, x.clone()));
        x = x + layer.dropout.forward(h);
        let ff = &layer.pwff;
        let h = dense::forward_gelu(
            &ff.linear_inner,
            fused::layer_norm(&layer.norm_1, x.clone()),
        ); // [B, L, 4d]
        let h = dense::forward(&ff.linear_outer, ff.dropout.forward(h)); // [B, L, d]
        x = x + layer.dropout.forward(h);
    }
    x
}

/// Multi-head self-attention without masks: [B, L, d] → [B, L, d]. The heads' core is one
/// fused op; while dropout on the attention weights is live (fine-tuning may ask for it),
/// burn's ops, as the fused op has none.
fn self_attention(mha: &burn::nn::attention::MultiHeadAttention, x: Tensor<3>) -> Tensor<3> {
    if drops_out(&mha.dropout, &x) {
        return self_attention_by_ops(mha, x);
    }
    // Q, K and V side by side from one product, each with its heads side by side, as
    // PyTorch's packed in-projection gives them.
    let qkv = dense::forward_side_by_side(&[&mha.query, &mha.key, &mha.value], x); // [B, L, 3d]
    dense::forward(&mha.output, attention::attention(qkv, mha.n_heads))
}

/// Whether `dropout` changes `x`: burn's own test in `Dropout::forward` (a rate above zero,
/// a layer in training, a device that keeps gradients). Anywhere else it is the identity, and
/// the fused attention gives what burn's ops give.
fn drops_out(dropout: &burn::nn::Dropout, x: &Tensor<3>) -> bool {
    dropout.prob > 0.0 && dropout.training.is_enabled() && x.device().is_autodiff()
}

/// The same attention through burn's ops, with dropout on the weights.
fn self_attention_by_ops(mha: &burn::nn::attention::MultiHeadAttention, x: Tensor<3>) -> Tensor<3> {
    let [b, l, d] = x.dims();
    let (heads, dk) = (mha.n_heads, mha.d_k);
    let split = |linear: &burn::nn::Linear| {
        dense::forward(linear, x.clone())
            .reshape([b, l, heads, dk])
            .swap_dims(1, 2) // [B, H, L, dk]
    };
    let (q, k, v) = (split(&mha.query), split(&mha.key), split(&mha.value));
    let scores = q.matmul(k.transpose()).div_scalar((dk as f32).sqrt()); // [B, H, L, L]
    let weights = mha.dropout.forward(fused::softmax(scores));
    let context = weights.matmul(v).swap_dims(1, 2).reshape([b, l, d]); // [B, L, d]
    dense::forward(&mha.output, context)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::transformer::{TransformerEncoderConfig, TransformerEncoderInput};

    /// Our gradient agrees with burn's to 1e-4 of burn's largest entry.
    fn assert_close<const D: usize>(
        name: &str,
        ours: Option<Tensor<D>>,
        theirs: Option<Tensor<D>>,
    ) {
        let name = format!("{name} gradient");
        doppel_kernels::testing::assert_tensors_close(&name, ours.unwrap(), theirs.unwrap(), 1e-4);
    }

    #[test]
    fn the_pass_matches_burns_transformer_encoder_and_its_gradients() {
        let device = Device::flex().autodiff();
        device.seed(7);
        let stack = TransformerEncoderConfig::new(16, 64, 4, 2)
            .with_dropout(0.0)
            .with_norm_first(true)
            .init(&device);
        let x = Tensor::<3>::random(
            [3, 10, 16],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad();
        let ours = forward(&stack, x.clone());
        let theirs = stack.forward(TransformerEncoderInput::new(x.clone()));
        let diff = (ours.clone() - theirs.clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert!(diff < 1e-5, "outputs differ by {diff}");

        // Without autodiff (inference: the kernels' untracked paths), the same output.
        let plain = stack.valid();
        let x_plain = x.clone().inner();
        let ours_plain = forward(&plain, x_plain.clone());
        let theirs_plain = plain.forward(TransformerEncoderInput::new(x_plain));
        doppel_kernels::testing::assert_tensors_close(
            "inference output",
            ours_plain,
            theirs_plain,
            1e-5,
        );

        let grads_ours = (ours.clone() * ours).sum().backward();
        let grads_theirs = (theirs.clone() * theirs).sum().backward();
        assert_close("input", x.grad(&grads_ours), x.grad(&grads_theirs));
        let w = &stack.layers[0].pwff.linear_inner.weight;
        assert_close("weight", w.grad(&grads_ours), w.grad(&grads_theirs));
        // Q, K and V run as one product with their weights side by side: each layer's
        // gradients must still come back to its own weights.
        for (name, layer) in [
            ("query", &stack.layers[0].mha.query),
            ("key", &stack.layers[1].mha.key),
            ("value", &stack.layers[1].mha.value),
        ] {
            let w = &layer.weight;
            assert_close(name, w.grad(&grads_ours), w.grad(&grads_theirs));
            if name == "key" {
                // A key bias shifts every score of a query's row alike, which the softmax
                // ignores: its gradient is zero but for rounding, on both sides.
                continue;
            }
            let b = layer.bias.as_ref().unwrap();
            let name = format!("{name} bias");
            assert_close(&name, b.grad(&grads_ours), b.grad(&grads_theirs));
        }
    }
}
