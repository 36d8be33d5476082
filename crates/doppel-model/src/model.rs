//! The sensor model: a masked-autoencoder transformer over patch tokens (the recipe of LSM,
//! arXiv 2410.13638, with LSM-2's inherited masking).
//!
//! A window is C channels × T steps. Each channel is cut into N = T / P patches of P steps; a
//! token is one patch of one channel (its values and its observed-mask), embedded linearly,
//! plus a learned channel embedding and a patch-position embedding. With LSM's 2-D patches
//! (`channels_per_token` K > 1) a token is one patch of K neighbouring channels instead, with
//! one embedding per channel group; the output is unfolded back to one row per channel, so
//! every task reads it the same way. The encoder sees only the
//! visible tokens; a lighter decoder gets them back in place among learned mask tokens and
//! reconstructs every patch. The loss is the MSE over masked patches, counted only where a
//! value was really observed. Reads top to bottom: config, then the network, then `forward`.

use burn::module::{Module, Param};
use burn::nn::transformer::{TransformerEncoder, TransformerEncoderConfig};
use burn::nn::{
    Embedding, EmbeddingConfig, Initializer, LayerNorm, LayerNormConfig, Linear, LinearConfig,
};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::channel_map::{ChannelMapInputs, channel_map};
use crate::readout::{ChannelReadout, ReadoutStart, Untrained};
use crate::transformer;
use doppel_kernels::{dense, fused};

/// Everything that shapes the network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Steps per patch (P).
    pub patch_len: usize,
    /// Patches per window (N); a window is N × P steps.
    pub patches: usize,
    /// Channels the model knows (the channel embedding has one row per group of
    /// `channels_per_token` of them).
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
    /// In pretraining, the share of batches whose mask hides one whole channel of every
    /// window (drawn per batch), the rest of the window shown, instead of a random share of
    /// tokens: the dead-sensor task (a virtual sensor rebuilt from its neighbours). Random
    /// masks at 80 % hide a whole channel often, but almost never with its neighbours in
    /// view.
    #[serde(default)]
    pub channel_mask_share: f64,
    /// Reconstruct the difference from linear interpolation of the values the encoder is
    /// shown, instead of the values themselves: the model starts from what interpolation
    /// would answer and learns only what it gets wrong (a skip connection around the whole
    /// network, with no weights of its own).
    #[serde(default)]
    pub interpolation_prior: bool,
    /// Over the interpolation prior, also add what the other channels say at the same
    /// moment: a learned C × C map from each shown value's departure from its own
    /// neighbours' line to the hidden values of the other channels at that step (starts at
    /// zero). One channel a token sees its neighbours only patch by patch; this gives the
    /// point-level tie between sensors that move together (ETTm1's HUFL and MUFL). The map
    /// learns at the network's rate: stepped faster, it settled on a worse validation loss.
    #[serde(default)]
    pub cross_channel_prior: bool,
    /// Add to a value not shown, at a step where every other channel of the window is shown,
    /// a learned linear read-out of those channels (a C × C map on training-standardised
    /// levels): the point-level tie a virtual sensor needs, which tokens of one channel do
    /// not carry from one channel to another.
    /// Pretraining starts the map at each channel's least-squares fit on the others over the
    /// training rows (`readout::least_squares_start`). Where the read-out fills, the answer
    /// is a blend, s · the network's + (1 − s) · the read-out's, with a learned share s per
    /// channel starting at e_fit / e_untrained (at most 1), from the validation MSEs of the
    /// fit and of the untrained model's answer (the mean, or interpolation with the
    /// interpolation prior): near 0 for a channel the others read almost exactly. A channel without a fit (it lost to the
    /// channel's mean on validation) keeps a zero row and is never filled. A blend, not a
    /// sum: the network learns the same target whether or not the read-out fills.
    #[serde(default)]
    pub channel_readout: bool,
    /// Dropout inside the transformer blocks while training (none in pretraining; a
    /// fine-tune on little data may set it). It does nothing at inference.
    #[serde(default)]
    pub dropout: f64,
    /// Channels per token (K): 1 cuts each channel on its own (tokens for any channel set);
    /// more gives LSM's 2-D patches, K neighbouring channels × P steps a token, for a model
    /// that always reads the same channels in the same order.
    #[serde(default = "one")]
    pub channels_per_token: usize,
}

fn one() -> usize {
    1
}

impl ModelConfig {
    /// What a model of this config answers before training: interpolation with the
    /// interpolation prior, else each channel's mean (the read-out's start weighs its fit
    /// against it).
    pub fn untrained(&self) -> Untrained {
        if self.interpolation_prior {
            Untrained::Interpolation
        } else {
            Untrained::Mean
        }
    }

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
            channel_mask_share: 0.0,
            interpolation_prior: false,
            cross_channel_prior: false,
            channel_readout: false,
            dropout: 0.0,
            channels_per_token: 1,
        })
    }

    /// Channel groups a window of `channels` channels is cut into (tokens per patch position).
    pub fn groups(&self, channels: usize) -> usize {
        channels.div_ceil(self.channels_per_token)
    }

    /// Tokens in a window of `channels` channels.
    pub fn tokens_per_window(&self, channels: usize) -> usize {
        self.groups(channels) * self.patches
    }

    pub fn window(&self) -> usize {
        self.patch_len * self.patches
    }

    /// How many numbers a model of this config holds.
    pub fn parameter_count(&self) -> usize {
        self.init_seeded(0, &Device::flex()).num_params()
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
        let k = self.channels_per_token;
        let groups = self.groups(self.channels);
        let head = LinearConfig::new(self.decoder_d_model, k * self.patch_len);
        SensorModel {
            patch_embed: LinearConfig::new(2 * k * self.patch_len, self.d_model).init(device),
            channel_embed: EmbeddingConfig::new(groups, self.d_model).init(device),
            position_embed: EmbeddingConfig::new(self.patches, self.d_model).init(device),
            encoder: block(self.d_model, self.encoder_layers),
            encoder_norm: LayerNormConfig::new(self.d_model).init(device),
            decoder_embed: LinearConfig::new(self.d_model, self.decoder_d_model).init(device),
            mask_token: Initializer::Normal {
                mean: 0.0,
                std: 0.02,
            }
            .init([1, 1, self.decoder_d_model], device),
            decoder_channel_embed: EmbeddingConfig::new(groups, self.decoder_d_model).init(device),
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
            cross_channel: (self.interpolation_prior && self.cross_channel_prior)
                .then(|| Initializer::Zeros.init([self.channels, self.channels], device)),
            readout: self
                .channel_readout
                .then(|| ChannelReadout::unstarted(self.channels, device)),
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
    /// The cross-channel prior's map, model channel to model channel: [M, M].
    cross_channel: Option<Param<Tensor<2>>>,
    /// The channel read-out, when configured.
    readout: Option<ChannelReadout>,
}

/// One batch, already patched and ordered (see `batch.rs`). L = G × N tokens, G = ⌈C / K⌉
/// channel groups of K channels (G = C for one channel a token).
#[derive(Debug, Clone)]
pub struct Tokens {
    /// Patch values (0 where unobserved) and observed-masks side by side, K channel rows of P
    /// steps each: [B, L, 2KP].
    pub features: Tensor<3>,
    /// Each token's channel (group) and patch position: [B, L].
    pub channel: Tensor<2, Int>,
    pub position: Tensor<2, Int>,
    /// Token indices, visible ones first: [B, L]; the first K are shown to the encoder.
    pub order: Tensor<2, Int>,
    /// Where each token went in `order` (its inverse): [B, L].
    pub restore: Tensor<2, Int>,
    pub visible: usize,
    /// Each window's channels, as the model numbers them: [B, C].
    pub channel_ids: Tensor<2, Int>,
    /// The window's channels (C) and channels per token (K), to unfold the output.
    pub channels: usize,
    pub channels_per_token: usize,
    /// Linear interpolation of the shown values, added to the output when the model was
    /// configured with `interpolation_prior`: [B, C·N, P].
    pub prior: Option<Tensor<3>>,
    /// Inputs of the cross-channel prior, when the model has one. Its `read` is each shown
    /// value minus the line through its channel's other shown values (its own neighbours'
    /// guess); it fills every value not shown, with no shift (a departure has no level).
    pub cross: Option<ChannelMapInputs>,
    /// Inputs of the channel read-out, when the model has one. Its `read` is each shown
    /// value; it fills values not shown at steps where every other channel is shown.
    pub readout: Option<ChannelMapInputs>,
}

impl SensorModel {
    /// The trained model as inference uses it: no gradients kept, dropout off.
    pub fn for_inference(self) -> SensorModel {
        self.valid()
    }

    /// The model with its read-out started from `start` (see [`ChannelReadout::started`]).
    /// A model without a read-out is returned as it is.
    pub fn with_readout_start(mut self, start: &ReadoutStart, device: &Device) -> Self {
        if self.readout.is_some() {
            self.readout = Some(ChannelReadout::started(start, device));
        }
        self
    }

    /// The network's share of the answer where the read-out fills, per model channel (none
    /// without a read-out).
    pub fn network_shares(&self) -> Option<Vec<f32>> {
        Some(self.readout.as_ref()?.network_shares())
    }

    /// The model with its read-out's network share per model channel set to `shares`
    /// (`train::calibrated_shares`). A model without a read-out is returned as it is.
    pub fn with_network_shares(mut self, shares: &[f32]) -> Self {
        self.readout = self.readout.map(|r| r.with_network_shares(shares));
        self
    }

    /// Embeds tokens from their patches [B, L, 2KP], channels and positions [B, L] → [B, L, d].
    fn embed(
        &self,
        features: Tensor<3>,
        channel: Tensor<2, Int>,
        position: Tensor<2, Int>,
    ) -> Tensor<3> {
        dense::forward(&self.patch_embed, features)
            + self.channel_embed.forward(channel)
            + self.position_embed.forward(position)
    }

    /// The encoder over the visible tokens: [B, K, d]. Only those are embedded: picking
    /// them out of the inputs, which carry no gradient, saves the backward a scatter of
    /// every token's embedding gradient.
    pub fn encode(&self, t: &Tokens) -> Tensor<3> {
        let [b, _, width] = t.features.dims();
        let keep = t.order.clone().slice([0..b, 0..t.visible]); // [B, K]
        let features = t
            .features
            .clone()
            .gather(1, keep.clone().unsqueeze_dim::<3>(2).repeat_dim(2, width)); // [B, K, 2KP]
        let x = self.embed(
            features,
            t.channel.clone().gather(1, keep.clone()),
            t.position.clone().gather(1, keep),
        ); // [B, K, d]
        let x = transformer::forward(&self.encoder, x);
        fused::layer_norm(&self.encoder_norm, x)
    }

    /// The encoder over every token, in token order: [B, L, d]. For heads that read a
    /// whole look-back (forecasting); tokens with no data come in as empty patches.
    pub fn encode_all(&self, t: &Tokens) -> Tensor<3> {
        let x = self.embed(t.features.clone(), t.channel.clone(), t.position.clone()); // [B, L, d]
        let x = transformer::forward(&self.encoder, x);
        fused::layer_norm(&self.encoder_norm, x)
    }

    /// Encodes and reconstructs every patch of every channel: [B, C·N, P], channel-major.
    pub fn forward(&self, t: &Tokens) -> Tensor<3> {
        let encoded = dense::forward(&self.decoder_embed, self.encode(t)); // [B, K, dd]
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
        let x = transformer::forward(&self.decoder, x);
        let out = dense::forward(&self.head, fused::layer_norm(&self.decoder_norm, x)); // [B, L, K·P]
        let out = unfold_channels(out, t.channels, t.channels_per_token); // [B, C·N, P]
        let out = match &t.prior {
            Some(prior) => out + prior.clone(),
            None => out,
        };
        let shape = out.dims();
        let [b, c] = t.channel_ids.dims();
        let out = out.reshape([b, c, shape[1] / c * shape[2]]); // [B, C, T]
        let out = match (&self.cross_channel, &t.cross) {
            (Some(map), Some(inputs)) => {
                out + channel_map(map.val(), &inputs.read, &t.channel_ids) * inputs.fill.clone()
            }
            _ => out,
        };
        let out = match (&self.readout, &t.readout) {
            (Some(readout), Some(inputs)) => readout.blend(out, inputs, &t.channel_ids),
            _ => out,
        };
        out.reshape(shape)
    }
}

/// From one row per token of K channels to one row per channel's patch:
/// [B, G·N, K·P] → [B, C·N, P], dropping the padding channels of the last group.
pub(crate) fn unfold_channels(out: Tensor<3>, channels: usize, k: usize) -> Tensor<3> {
    if k == 1 {
        return out;
    }
    let [b, l, kp] = out.dims();
    let p = kp / k;
    let groups = channels.div_ceil(k);
    let n = l / groups;
    out.reshape([b, groups, n, k, p])
        .swap_dims(2, 3) // [B, G, K, N, P]
        .reshape([b, groups * k, n * p])
        .slice([0..b, 0..channels, 0..n * p]) // [B, C, N·P]
        .reshape([b, channels * n, p])
}

/// Mean squared error over the `weight`ed entries (1 = a masked, observed value): the
/// pretraining loss. Unmasked or unobserved entries have weight 0 and cannot move it.
pub fn masked_mse(prediction: Tensor<3>, target: Tensor<3>, weight: Tensor<3>) -> Tensor<1> {
    let diff = prediction - target;
    let total = weight.clone().sum().clamp_min(1.0);
    (diff.clone() * diff * weight).sum() / total
}

/// Mean absolute error over the `weight`ed entries, as `masked_mse`: a forecasting head
/// trained on it aims at the median rather than the mean.
pub fn masked_mae(prediction: Tensor<3>, target: Tensor<3>, weight: Tensor<3>) -> Tensor<1> {
    let total = weight.clone().sum().clamp_min(1.0);
    ((prediction - target).abs() * weight).sum() / total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One forecast fitted by gradient descent to five outcomes of which two are a switch
    /// (0, 0, 0, 1, 1; a sixth, weighted 0, would pull hard): squared error settles on the
    /// mean, 0.4, absolute error on the median, 0. The weight-0 entry moves neither.
    #[test]
    fn squared_error_fits_the_mean_and_absolute_error_the_median() {
        let device = Device::flex().autodiff();
        let target = Tensor::<3>::from_data(
            TensorData::new(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 50.0], [1, 1, 6]),
            &device,
        );
        let weight = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 1.0, 1.0, 1.0, 0.0], [1, 1, 6]),
            &device,
        );
        let fit = |loss: fn(Tensor<3>, Tensor<3>, Tensor<3>) -> Tensor<1>| {
            let mut forecast = 0.7f32;
            for step in 0..2000 {
                let x = Tensor::<3>::full([1, 1, 6], forecast, &device).require_grad();
                let grads = loss(x.clone(), target.clone(), weight.clone()).backward();
                let slope: f32 = x.grad(&grads).unwrap().sum().into_scalar();
                // A step that shrinks, so absolute error's constant slope settles too.
                forecast -= 0.5 * slope / (1.0 + step as f32).sqrt();
            }
            forecast
        };
        let mean = fit(masked_mse);
        let median = fit(masked_mae);
        assert!((mean - 0.4).abs() < 1e-3, "squared error fitted {mean}");
        assert!(median.abs() < 0.02, "absolute error fitted {median}");
    }

    /// Each output value names where it came from: group, patch, row in the group, step.
    fn code(g: usize, patch: usize, row: usize, i: usize) -> f32 {
        (g * 1000 + patch * 100 + row * 10 + i) as f32
    }

    #[test]
    fn a_card_written_before_two_d_patches_reads_as_one_channel_a_token() {
        let config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
        let mut json = serde_json::to_value(&config).unwrap();
        json.as_object_mut().unwrap().remove("channels_per_token");
        let read: ModelConfig = serde_json::from_value(json).unwrap();
        assert_eq!(read, config);
        assert_eq!(read.channels_per_token, 1);
    }

    #[test]
    fn unfolding_gives_each_channel_its_own_rows_and_drops_the_padding() {
        let (b, c, k, n, p) = (2, 5usize, 2, 3, 4); // groups {0,1} {2,3} {4,pad}
        let groups = c.div_ceil(k);
        let mut flat = Vec::new();
        for _ in 0..b {
            for g in 0..groups {
                for patch in 0..n {
                    for row in 0..k {
                        flat.extend((0..p).map(|i| code(g, patch, row, i)));
                    }
                }
            }
        }
        let device = Device::flex();
        let out = Tensor::<3>::from_data(TensorData::new(flat, [b, groups * n, k * p]), &device);
        let unfolded = unfold_channels(out, c, k);
        assert_eq!(unfolded.dims(), [b, c * n, p]);
        let values = unfolded.into_data().try_into_vec::<f32>().unwrap();
        for w in 0..b {
            for ch in 0..c {
                for patch in 0..n {
                    for i in 0..p {
                        let at = ((w * c + ch) * n + patch) * p + i;
                        assert_eq!(
                            values[at],
                            code(ch / k, patch, ch % k, i),
                            "{w} {ch} {patch} {i}"
                        );
                    }
                }
            }
        }
    }
}
