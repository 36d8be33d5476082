//! A forecaster: the pretrained encoder with PatchTST's linear head on top, beside the
//! closed-form linear start (NLinear) as a skip path, and how it forecasts windows.
//!
//! This is what a forecaster is and computes; how its head is fine-tuned, and what the card
//! keeps about it, live in `finetune.rs`. It must never choose or fit anything.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::batch::{Mask, Window, make_batch};
use crate::linear::LinearForecaster;
use crate::model::{ModelConfig, SensorModel};

/// The head: two linear maps whose sum is the forecast.
#[derive(Module, Debug)]
pub struct ForecastHead {
    /// One token row's encoded patches side by side [N·d] → H steps for each of its K
    /// channels (K = 1 but for 2-D tokens); starts at zero.
    from_encoder: Linear,
    /// NLinear: the look-back relative to its last value [T] → H steps, for each of G
    /// weight groups side by side: [T, G·H] (G = 1 when channels share the weights, else
    /// one group per channel). The closed-form ridge fit, never trained further.
    from_lookback: Param<Tensor<2>>,
}

impl ForecastHead {
    /// A head whose forecasts are exactly `linear`'s.
    pub fn new(config: &ModelConfig, linear: &LinearForecaster, device: &Device) -> Self {
        let (t, h) = (linear.lookback, linear.horizon);
        assert_eq!(
            t,
            config.window(),
            "the linear start reads the model's window"
        );
        let g = linear.groups();
        let mut weights = Vec::with_capacity(t * g * h);
        for i in 0..t {
            for group in 0..g {
                let w = &linear.weights(group)[i * h..(i + 1) * h];
                weights.extend(w.iter().map(|&w| w as f32));
            }
        }
        let mut head = ForecastHead::empty(config, h, g, device);
        head.from_lookback = Param::from_tensor(Tensor::from_data(
            TensorData::new(weights, [t, g * h]),
            device,
        ))
        .set_require_grad(false);
        head
    }

    /// A head of the right shapes, to load saved weights into (`groups` of linear weights).
    pub fn empty(config: &ModelConfig, horizon: usize, groups: usize, device: &Device) -> Self {
        let zeros = |i: usize, o: usize| {
            LinearConfig::new(i, o)
                .with_initializer(Initializer::Zeros)
                .init(device)
        };
        ForecastHead {
            from_encoder: zeros(
                config.patches * config.d_model,
                config.channels_per_token * horizon,
            ),
            from_lookback: Param::from_tensor(Tensor::zeros(
                [config.window(), groups * horizon],
                device,
            ))
            .set_require_grad(false),
        }
    }
}

/// The pretrained model with a forecasting head.
#[derive(Module, Debug)]
pub struct Forecaster {
    pub model: SensorModel,
    pub head: ForecastHead,
}

impl Forecaster {
    /// Forecasts from look-back tokens, every patch visible: [B·C, H], in the window's
    /// (instance-normalised) units. `patches` is N. Tokens of K channels (2-D patches) hold
    /// K channels' look-backs, and their encoded row forecasts all K.
    pub fn forward(&self, tokens: &crate::model::Tokens, patches: usize) -> Tensor<2> {
        let (c, k) = (tokens.channels, tokens.channels_per_token);
        let encoded = self.model.encode_all(tokens); // [B, G·N, d]
        let [b, lg, d] = encoded.dims();
        let rows = b * lg / patches; // B·G
        let series = b * c; // B·C
        let kp = tokens.features.dims()[2] / 2;
        let p = kp / k;
        let t = patches * p;
        let lookback = crate::model::unfold_channels(
            tokens.features.clone().slice([0..b, 0..lg, 0..kp]),
            c,
            k,
        )
        .reshape([series, t]); // [B·C, T]
        let last = lookback.clone().slice([0..series, t - 1..t]); // [B·C, 1]
        let h = self.head.from_encoder.weight.dims()[1] / k;
        let from_encoder = self
            .head
            .from_encoder
            .forward(encoded.reshape([rows, patches * d])) // [B·G, K·H]
            .reshape([b, lg / patches, k * h]);
        // Each token row's K forecasts, one row per channel: [B·C, H].
        let from_encoder = crate::model::unfold_channels(from_encoder, c, k).reshape([series, h]);
        let groups = self.head.from_lookback.dims()[1] / h;
        let every_group =
            (lookback - last.clone().expand([series, t])).matmul(self.head.from_lookback.val()); // [B·C, G·H]
        let linear = if groups == 1 {
            every_group
        } else {
            // Each series reads its own channel's group.
            let channel = tokens
                .channel_ids
                .clone()
                .reshape([series, 1, 1])
                .expand([series, 1, h]);
            every_group
                .reshape([series, groups, h])
                .gather(1, channel)
                .reshape([series, h])
        };
        let skip = linear + last.expand([series, h]); // [B·C, H]
        skip + from_encoder
    }
}

/// Runs the forecaster on windows of every channel; returns per window and channel the H
/// forecast steps, in the recording's standardised units: `out[window][c * H + h]`.
/// A channel-independent forecaster reads each channel of a window on its own.
pub fn predict(
    forecaster: &Forecaster,
    config: &ModelConfig,
    channel_independent: bool,
    windows: &[Window],
    device: &Device,
) -> Vec<Vec<f32>> {
    if channel_independent && windows.first().is_some_and(|w| w.channels.len() > 1) {
        let c = windows[0].channels.len();
        let t = config.window();
        let single: Vec<Window> = windows
            .iter()
            .flat_map(|w| {
                (0..c).map(move |ch| Window {
                    values: w.values[ch * t..(ch + 1) * t].to_vec(),
                    observed: w.observed[ch * t..(ch + 1) * t].to_vec(),
                    channels: vec![w.channels[ch]],
                })
            })
            .collect();
        let out = predict(forecaster, config, true, &single, device);
        return out
            .chunks(c)
            .map(|per_channel| per_channel.concat())
            .collect();
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut out = Vec::with_capacity(windows.len());
    for chunk in windows.chunks(256) {
        let batch = make_batch(chunk, config, &Mask::Holes, &mut rng, device);
        let y = forecaster.forward(&batch.tokens, config.patches); // [B·C, H]
        let h = y.dims()[1];
        let flat = y
            .into_data()
            .try_into_vec::<f32>()
            .expect("the model outputs f32");
        let c = chunk[0].channels.len();
        for (wi, scale) in batch.scale.iter().enumerate() {
            let mut v = flat[wi * c * h..(wi + 1) * c * h].to_vec();
            for (ch, (mean, sd)) in scale.iter().enumerate() {
                for x in &mut v[ch * h..(ch + 1) * h] {
                    *x = *x * sd + mean;
                }
            }
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// With 2-D tokens one encoded row forecasts K channels: each channel must get its own
    /// row's share. A head whose only non-zero part is the encoder map's bias, set to
    /// 100·(row in the token) + step, tells which share each channel got.
    #[test]
    fn each_channel_of_a_two_d_token_gets_its_own_forecast() {
        let device = Device::flex();
        let (c, k, h) = (3, 2, 4); // tokens {0, 1} and {2, padding}
        let config = ModelConfig {
            channels_per_token: k,
            ..ModelConfig::sized("tiny", c, 8, 6).unwrap()
        };
        let mut head = ForecastHead::empty(&config, h, 1, &device);
        let bias: Vec<f32> = (0..k)
            .flat_map(|row| (0..h).map(move |step| (100 * row + step) as f32))
            .collect();
        head.from_encoder.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(bias, [k * h]),
            &device,
        )));
        let forecaster = Forecaster {
            model: config.init_seeded(0, &device),
            head,
        };
        let t = config.window();
        let window = Window {
            values: (0..c * t).map(|i| (i % 17) as f32 * 0.1).collect(),
            observed: vec![true; c * t],
            channels: (0..c).collect(),
        };
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let batch = make_batch(
            std::slice::from_ref(&window),
            &config,
            &Mask::Holes,
            &mut rng,
            &device,
        );
        let out: Vec<f32> = forecaster
            .forward(&batch.tokens, config.patches)
            .into_data()
            .try_into_vec()
            .unwrap();
        assert_eq!(out.len(), c * h);
        for ch in 0..c {
            // The skip path adds the channel's last look-back value (no instance norm here).
            let last = window.values[ch * t + t - 1];
            for step in 0..h {
                let expected = last + (100 * (ch % k) + step) as f32;
                assert_eq!(out[ch * h + step], expected, "channel {ch}, step {step}");
            }
        }
    }
}
