//! The sensor model: a masked-autoencoder transformer over patch tokens (the recipe of LSM,
//! arXiv 2410.13638, with LSM-2's inherited masking).
//!
//! A window is C channels × T steps. Each channel is cut into N = T / P patches of P steps; a
//! token is one patch of one channel (its values and its observed-mask), embedded linearly,
//! plus a learned channel embedding and a patch-position embedding. The encoder sees only the
//! visible tokens; a lighter decoder gets them back in place among learned mask tokens and
//! reconstructs every patch. The loss is the MSE over masked patches, counted only where a
//! value was really observed. Reads top to bottom: config, then the network, then `forward`.

use burn::module::{Module, Param};
use burn::nn::transformer::{
    TransformerEncoder, TransformerEncoderConfig, TransformerEncoderInput,
};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Everything that shapes the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Steps per patch (P).
    pub patch_len: usize,
    /// Patches per window (N); a window is N × P steps.
    pub patches: usize,
    /// Channels the model knows (the channel embedding's size).
    pub channels: usize,
    pub d_model: usize,
    pub heads: usize,
    pub encoder_layers: usize,
    pub decoder_d_model: usize,
    pub decoder_layers: usize,
    /// Share of tokens hidden from the encoder in pretraining (LSM found 0.8 best).
    pub mask_ratio: f64,
    /// Normalise each window by its own visible values (RevIN-style) before the network:
    /// for data whose level drifts away from the training period.
    #[serde(default)]
    pub instance_norm: bool,
    /// In pretraining, the share of observed points also hidden inside the tokens the
    /// encoder sees (and scored): it teaches the model to fill single missing points from
    /// their own patch, so imputation can keep partly observed patches visible.
    #[serde(default)]
    pub point_mask_ratio: f64,
    /// Reconstruct the difference from linear interpolation of the values the encoder is
    /// shown, instead of the values themselves: the model starts from what interpolation
    /// would answer and learns only what it gets wrong (a skip connection around the whole
    /// network, with no weights of its own).
    #[serde(default)]
    pub interpolation_prior: bool,
    /// Dropout inside the transformer blocks while training (none in pretraining; a
    /// fine-tune on little data may set it). It does nothing at inference.
    #[serde(default)]
    pub dropout: f64,
}

impl ModelConfig {
    /// A named size: `tiny` trains on a 2-core CPU in minutes; `small`, `base`, `large` are
    /// for bigger machines.
    pub fn sized(size: &str, channels: usize, patch_len: usize, patches: usize) -> Option<Self> {
        let (d, heads, enc, dd, dec) = match size {
            "tiny" => (64, 4, 2, 32, 1),
            "small" => (128, 4, 4, 64, 2),
            "base" => (256, 8, 8, 128, 4),
            "large" => (512, 8, 16, 256, 4),
            _ => return None,
        };
        Some(ModelConfig {
            patch_len,
            patches,
            channels,
            d_model: d,
            heads,
            encoder_layers: enc,
            decoder_d_model: dd,
            decoder_layers: dec,
            mask_ratio: 0.8,
            instance_norm: false,
            point_mask_ratio: 0.0,
            interpolation_prior: false,
            dropout: 0.0,
        })
    }

    pub fn window(&self) -> usize {
        self.patch_len * self.patches
    }

    /// Initial weights drawn from `seed`, the same whatever else runs at the same time.
    /// burn draws from one generator per device; seeding it and drawing the weights happen
    /// under one process-wide lock, so parallel trainings (tests, a server) cannot interleave.
    pub fn init_seeded(&self, seed: u64, device: &Device) -> SensorModel {
        static DEVICE_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = DEVICE_RNG.lock().unwrap_or_else(|e| e.into_inner());
        device.seed(seed);
        self.init(device)
    }

    pub fn init(&self, device: &Device) -> SensorModel {
        let block = |d: usize, layers: usize| {
            TransformerEncoderConfig::new(d, 4 * d, self.heads, layers)
                .with_dropout(self.dropout)
                .with_norm_first(true)
                .init(device)
        };
        let head = LinearConfig::new(self.decoder_d_model, self.patch_len);
        SensorModel {
            patch_embed: LinearConfig::new(2 * self.patch_len, self.d_model).init(device),
            channel_embed: EmbeddingConfig::new(self.channels, self.d_model).init(device),
            position_embed: EmbeddingConfig::new(self.patches, self.d_model).init(device),
            encoder: block(self.d_model, self.encoder_layers),
            encoder_norm: LayerNormConfig::new(self.d_model).init(device),
            decoder_embed: LinearConfig::new(self.d_model, self.decoder_d_model).init(device),
            mask_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, self.decoder_d_model], device),
            decoder_channel_embed: EmbeddingConfig::new(self.channels, self.decoder_d_model)
                .init(device),
            decoder_position_embed: EmbeddingConfig::new(self.patches, self.decoder_d_model)
                .init(device),
            decoder: block(self.decoder_d_model, self.decoder_layers),
            decoder_norm: LayerNormConfig::new(self.decoder_d_model).init(device),
            // Over an interpolation prior the head starts at zero: an untrained model
            // answers exactly what interpolation answers, and training only improves on it.
            head: if self.interpolation_prior {
                head.with_initializer(Initializer::Zeros)
            } else {
                head
            }
            .init(device),
        }
    }
}

#[derive(Module, Debug)]
pub struct SensorModel {
    patch_embed: Linear,
    channel_embed: Embedding,
    position_embed: Embedding,
    encoder: TransformerEncoder,
    encoder_norm: LayerNorm,
    decoder_embed: Linear,
    mask_token: Param<Tensor<3>>,
    decoder_channel_embed: Embedding,
    decoder_position_embed: Embedding,
    decoder: TransformerEncoder,
    decoder_norm: LayerNorm,
    head: Linear,
}

/// One batch, already patched and ordered (see `batch.rs`). L = C × N tokens.
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Patch values (0 where unobserved) and observed-masks side by side: [B, L, 2P].
    pub features: Tensor<3>,
    /// Each token's channel and patch position: [B, L].
    pub channel: Tensor<2, Int>,
    pub position: Tensor<2, Int>,
    /// Token indices, visible ones first: [B, L]; the first K are shown to the encoder.
    pub order: Tensor<2, Int>,
    /// Where each token went in `order` (its inverse): [B, L].
    pub restore: Tensor<2, Int>,
    pub visible: usize,
    /// Linear interpolation of the shown values, added to the output when the model was
    /// configured with `interpolation_prior`: [B, L, P].
    pub prior: Option<Tensor<3>>,
}

impl SensorModel {
    /// Embeds every token: [B, L, 2P] → [B, L, d].
    fn embed(&self, t: &Tokens) -> Tensor<3> {
        self.patch_embed.forward(t.features.clone())
            + self.channel_embed.forward(t.channel.clone())
            + self.position_embed.forward(t.position.clone())
    }

    /// The encoder over the visible tokens: [B, K, d].
    pub fn encode(&self, t: &Tokens) -> Tensor<3> {
        let x = self.embed(t); // [B, L, d]
        let [b, _, d] = x.dims();
        let keep = t.order.clone().slice([0..b, 0..t.visible]); // [B, K]
        let x = x.gather(1, keep.unsqueeze_dim::<3>(2).repeat_dim(2, d)); // [B, K, d]
        let x = self.encoder.forward(TransformerEncoderInput::new(x));
        self.encoder_norm.forward(x)
    }

    /// The encoder over every token, in token order: [B, L, d]. For heads that read a
    /// whole look-back (forecasting); tokens with no data come in as empty patches.
    pub fn encode_all(&self, t: &Tokens) -> Tensor<3> {
        let x = self.embed(t); // [B, L, d]
        let x = self.encoder.forward(TransformerEncoderInput::new(x));
        self.encoder_norm.forward(x)
    }

    /// Encodes and reconstructs every patch: [B, L, P].
    pub fn forward(&self, t: &Tokens) -> Tensor<3> {
        let encoded = self.decoder_embed.forward(self.encode(t)); // [B, K, dd]
        let [b, k, dd] = encoded.dims();
        let l = t.order.dims()[1];
        let shuffled = if l > k {
            let masked = self.mask_token.val().expand([b, l - k, dd]); // [B, L-K, dd]
            Tensor::cat(vec![encoded, masked], 1) // [B, L, dd], in `order`
        } else {
            encoded // nothing hidden (imputation of a window with no empty patch)
        };
        let index = t.restore.clone().unsqueeze_dim::<3>(2).repeat_dim(2, dd);
        let x = shuffled.gather(1, index) // back in token order: [B, L, dd]
            + self.decoder_channel_embed.forward(t.channel.clone())
            + self.decoder_position_embed.forward(t.position.clone());
        let x = self.decoder.forward(TransformerEncoderInput::new(x));
        let out = self.head.forward(self.decoder_norm.forward(x)); // [B, L, P]
        match &t.prior {
            Some(prior) => out + prior.clone(),
            None => out,
        }
    }
}

/// Mean squared error over the `weight`ed entries (1 = a masked, observed value): the
/// pretraining loss. Unmasked or unobserved entries have weight 0 and cannot move it.
pub fn masked_mse(prediction: Tensor<3>, target: Tensor<3>, weight: Tensor<3>) -> Tensor<1> {
    let diff = prediction - target;
    let total = weight.clone().sum().clamp_min(1.0);
    (diff.clone() * diff * weight).sum() / total
}
