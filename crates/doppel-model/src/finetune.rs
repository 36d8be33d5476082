//! Fine-tuned forecasting on top of the pretrained encoder (PatchTST's linear head).
//!
//! The encoder reads a whole look-back window (every patch visible); a linear head maps one
//! channel's encoded patches, side by side, to the next H steps. Beside it runs NLinear, the
//! closed-form linear forecaster of `linear.rs` (its ridge penalty, and one weight matrix for
//! all channels or one each, chosen on the validation windows), as a skip path: the head
//! starts at zero, so the forecaster starts exactly at that baseline and fine-tuning has to
//! earn every improvement on held-out windows. The weights kept are the ones with the lowest
//! validation error among those that beat the linear start by more than chance (a paired
//! test over the validation windows), so a forecaster is never worse on validation than the
//! linear start and a noise-sized gain keeps the start; the card records both numbers.
//!
//! The loss is squared error by default, whose minimiser is the conditional mean; absolute
//! error (`ForecastLoss::Absolute`) aims at the conditional median, and then also chooses
//! the weights kept, so a switching signal is forecast at its likelier level rather than
//! at a blend of both.
//!
//! The forecaster itself (head, skip path, `predict`) is in `forecaster.rs`; its error bands,
//! calibrated here on the validation windows, in `bands.rs`. This module must never look at
//! test data: callers hand it training recordings only.

use burn::grad_clipping::GradientClippingConfig;
use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::bands::{self, BandScore, ErrorBand, Residuals, ScaledBands};
use crate::batch::{Mask, Window, make_batch};
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::forecaster::{ForecastHead, Forecaster, predict};
use crate::linear::{self, Candidate, Search, Series};
use crate::model::{ModelConfig, SensorModel, masked_mae, masked_mse};
use crate::train::{
    CurvePoint, Start, Throughput, TrainConfig, learning_rate, stalled, window_starts,
};

/// What fine-tuning minimises, and so what chooses the weights kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForecastLoss {
    /// Squared error: the forecast tends to the conditional mean.
    #[default]
    Squared,
    /// Absolute error: the forecast tends to the conditional median.
    Absolute,
}

impl ForecastLoss {
    /// Every loss, the default first.
    pub const ALL: [ForecastLoss; 2] = [ForecastLoss::Squared, ForecastLoss::Absolute];

    /// The name options and model cards use.
    pub fn name(self) -> &'static str {
        match self {
            ForecastLoss::Squared => "squared",
            ForecastLoss::Absolute => "absolute",
        }
    }

    /// The measure's short name, as reports print it.
    pub fn measure(self) -> &'static str {
        match self {
            ForecastLoss::Squared => "MSE",
            ForecastLoss::Absolute => "MAE",
        }
    }

    /// What a name gains to tell a head trained on this loss apart: nothing for the
    /// default, else the loss's name after `separator`.
    pub fn suffix(self, separator: &str) -> String {
        if self == ForecastLoss::default() {
            String::new()
        } else {
            format!("{separator}{}", self.name())
        }
    }

    /// The weight of an error in a window of standard deviation `sd`, in that window's
    /// units, that makes the loss the error in standardised units.
    fn window_weight(self, sd: f32) -> f32 {
        match self {
            ForecastLoss::Squared => sd * sd,
            ForecastLoss::Absolute => sd,
        }
    }

    /// The loss over the `weight`ed entries.
    fn masked(self, prediction: Tensor<3>, target: Tensor<3>, weight: Tensor<3>) -> Tensor<1> {
        match self {
            ForecastLoss::Squared => masked_mse(prediction, target, weight),
            ForecastLoss::Absolute => masked_mae(prediction, target, weight),
        }
    }
}

/// What the model card keeps about a fine-tuned forecasting head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForecastHeadCard {
    pub horizon: usize,
    /// Each channel forecast on its own (PatchTST) or all channels in one window.
    pub channel_independent: bool,
    pub train: TrainConfig,
    /// The validation loss in the curve is the standardised error in `loss`'s measure.
    pub curve: Vec<CurvePoint>,
    /// What fine-tuning minimised (absent in cards written before the choice: squared).
    #[serde(default)]
    pub loss: ForecastLoss,
    /// Standardised validation MSE of the linear start and of the weights kept.
    pub linear_validation_mse: f64,
    pub validation_mse: f64,
    /// The same in MAE (absent in cards written before it was recorded).
    #[serde(default)]
    pub linear_validation_mae: Option<f64>,
    #[serde(default)]
    pub validation_mae: Option<f64>,
    /// The step whose weights were kept (0: the linear start was never clearly beaten).
    pub best_step: usize,
    /// The linear start's settings, chosen on validation (absent in cards written before
    /// the choice existed: one shared matrix).
    #[serde(default)]
    pub linear_start: Option<Candidate>,
    /// Split-conformal error quantiles from the validation windows, one width for every
    /// window (standardised units).
    pub bands: Vec<ErrorBand>,
    /// The bands forecasts use: each channel's scale chosen on validation (absent in cards
    /// written before the choice: the constant `bands`).
    #[serde(default)]
    pub scaled_bands: Option<ScaledBands>,
    /// Each scale's band on the second half of the validation windows, calibrated on
    /// the first, and the per-channel choice's.
    #[serde(default)]
    pub band_scores: Vec<BandScore>,
}

impl ForecastHeadCard {
    /// The bands forecasts use.
    pub fn chosen_bands(&self) -> ScaledBands {
        self.scaled_bands
            .clone()
            .unwrap_or_else(|| ScaledBands::constant(self.bands.clone()))
    }
}

/// A look-back window and the `horizon` steps after it.
struct Sample {
    window: Window,
    /// `future[c * H + h]`, meaningful where `future_observed`.
    future: Vec<f32>,
    future_observed: Vec<bool>,
}

/// Cuts sample `start` of a recording; `channel` picks one channel (channel-independent).
fn sample(rec: &Recording, start: usize, t: usize, h: usize, channel: Option<usize>) -> Sample {
    let channels: Vec<usize> = match channel {
        Some(c) => vec![c],
        None => (0..rec.channels.len()).collect(),
    };
    let mut s = Sample {
        window: Window {
            values: Vec::with_capacity(channels.len() * t),
            observed: Vec::with_capacity(channels.len() * t),
            channels: channels.clone(),
        },
        future: Vec::with_capacity(channels.len() * h),
        future_observed: Vec::with_capacity(channels.len() * h),
    };
    for &c in &channels {
        s.window
            .values
            .extend_from_slice(&rec.values[c][start..start + t]);
        s.window
            .observed
            .extend_from_slice(&rec.observed[c][start..start + t]);
        s.future
            .extend_from_slice(&rec.values[c][start + t..start + t + h]);
        s.future_observed
            .extend_from_slice(&rec.observed[c][start + t..start + t + h]);
    }
    s
}

/// One sample's standardised errors over its observed future values.
#[derive(Debug, Clone, Copy, Default)]
struct SampleErrors {
    squared: f64,
    absolute: f64,
    count: usize,
}

impl SampleErrors {
    fn sum(&self, loss: ForecastLoss) -> f64 {
        match loss {
            ForecastLoss::Squared => self.squared,
            ForecastLoss::Absolute => self.absolute,
        }
    }
}

/// The forecaster's errors on samples (observed future values only), one entry a sample.
fn evaluate(
    forecaster: &Forecaster,
    config: &ModelConfig,
    channel_independent: bool,
    samples: &[Sample],
    device: &Device,
) -> Vec<SampleErrors> {
    let windows: Vec<Window> = samples.iter().map(|s| s.window.clone()).collect();
    let predicted = predict(forecaster, config, channel_independent, &windows, device);
    samples
        .iter()
        .zip(&predicted)
        .map(|(s, p)| {
            let mut e = SampleErrors::default();
            for ((&predicted, &truth), &seen) in p.iter().zip(&s.future).zip(&s.future_observed) {
                if seen {
                    let d = (predicted - truth) as f64;
                    e.squared += d * d;
                    e.absolute += d.abs();
                    e.count += 1;
                }
            }
            e
        })
        .collect()
}

/// The mean error over all samples' values, in `loss`'s measure.
fn mean_error(errors: &[SampleErrors], loss: ForecastLoss) -> f64 {
    let (sum, n) = errors
        .iter()
        .fold((0.0, 0), |(sum, n), e| (sum + e.sum(loss), n + e.count));
    sum / n.max(1) as f64
}

/// Whether `errors` beat `baseline`'s on the same samples by more than chance: a paired
/// test, the mean gain in `loss`'s measure above twice its standard error. The samples are in time order
/// and overlap (each spans the look-back and the horizon), so neighbours' errors move
/// together and would pass for independent evidence: the gains are first averaged over
/// blocks of `block` consecutive samples (about one window's span), and the test is on the
/// block means. A head is kept only then, so a gain the size of the noise is not shipped.
fn clearly_better(
    errors: &[SampleErrors],
    baseline: &[SampleErrors],
    block: usize,
    loss: ForecastLoss,
) -> bool {
    let gains: Vec<f64> = errors
        .iter()
        .zip(baseline)
        .filter(|(e, _)| e.count > 0)
        .map(|(e, b)| (b.sum(loss) - e.sum(loss)) / e.count as f64)
        .collect();
    let means: Vec<f64> = gains
        .chunks(block.max(1))
        .map(|c| c.iter().sum::<f64>() / c.len() as f64)
        .collect();
    let m = means.len() as f64;
    if m < 2.0 {
        return false;
    }
    let mean = means.iter().sum::<f64>() / m;
    let var = means.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (m - 1.0);
    mean > 2.0 * (var / m).sqrt()
}

/// Settings of a forecasting fine-tune beyond the optimiser's.
#[derive(Debug, Clone, PartialEq)]
pub struct ForecastTuning {
    pub horizon: usize,
    pub channel_independent: bool,
    /// The settings tried for the linear start (the best on validation is kept).
    pub linear: Search,
    /// Train the head only (a linear probe of the pretrained encoder).
    pub freeze_encoder: bool,
    /// Dropout in the encoder's blocks while fine-tuning (PatchTST uses 0.2–0.3 on ETT).
    pub dropout: f64,
    /// What training minimises and validation compares.
    pub loss: ForecastLoss,
    /// The share of truth the error bands are to hold (`bands::DEFAULT_COVERAGE`: 0.8).
    pub band_coverage: f64,
}

/// Fine-tunes a forecasting head (and the encoder under it) on standardised recordings,
/// keeping the weights with the lowest validation error. `progress` hears each step.
pub fn finetune_forecast(
    model: SensorModel,
    config: &ModelConfig,
    recordings: &[Recording],
    tuning: &ForecastTuning,
    train: &TrainConfig,
    device: &Device,
    mut progress: impl FnMut(&crate::train::Progress),
) -> Result<(Forecaster, ForecastHeadCard)> {
    let (t, h) = (config.window(), tuning.horizon);
    if config.channels_per_token > 1 && tuning.channel_independent {
        return Err(ModelError::Settings(format!(
            "this model's tokens hold {} channels each (2-D patches), so its head reads every \
             channel of a window together: fine-tune with --channels-together",
            config.channels_per_token
        )));
    }
    if h == 0 {
        return Err(ModelError::Settings(
            "the horizon must be at least 1 step".into(),
        ));
    }
    if !(tuning.band_coverage > 0.0 && tuning.band_coverage < 1.0) {
        return Err(ModelError::Settings(format!(
            "the bands' coverage must be above 0 and below 1 (0.8: an 80 % band), not {}",
            tuning.band_coverage
        )));
    }
    let training_ends = train.training_ends(recordings)?;
    let (train_starts, val_starts) = window_starts(recordings, t + h, &training_ends);
    if train_starts.is_empty() || val_starts.is_empty() {
        let longest = recordings.iter().map(Recording::len).max().unwrap_or(0);
        return Err(ModelError::Settings(format!(
            "a look-back of {t} steps plus a horizon of {h} does not fit in both the training \
             part and the validation part ({}) of the files (the longest has {longest} steps)",
            train.validation_part()
        )));
    }
    // The linear start: ridge regression on the training part of every channel, its
    // settings chosen on the validation part. It stays the closed-form fit; what is
    // learned is the residual the encoder can explain.
    let series: Vec<Series> = recordings
        .iter()
        .zip(&training_ends)
        .flat_map(|(r, &cut)| {
            r.values
                .iter()
                .enumerate()
                .map(move |(channel, values)| Series {
                    channel,
                    values,
                    cut,
                })
        })
        .collect();
    let (linear, candidates) = linear::choose(&series, config.channels, &[t], h, &tuning.linear)?;
    let head = ForecastHead::new(config, &linear, device);
    let model = if tuning.dropout > 0.0 {
        // The same weights in blocks that drop out; dropout has no weights of its own.
        let dropping = ModelConfig {
            dropout: tuning.dropout,
            ..config.clone()
        };
        dropping.init(device).load_record(model.into_record())
    } else {
        model
    };
    let model = if tuning.freeze_encoder {
        model.no_grad()
    } else {
        model
    };
    let mut forecaster = Forecaster { model, head };

    let channels = recordings[0].channels.len();
    let pick = |rng: &mut Xoshiro256PlusPlus, (r, s): Start| {
        let channel = tuning
            .channel_independent
            .then(|| rng.random_range(0..channels));
        sample(&recordings[r], s, t, h, channel)
    };
    // Fixed validation samples (every channel), spread evenly over the validation part.
    let spread = |count: usize| -> Vec<Sample> {
        let count = val_starts.len().min(count);
        (0..count)
            .map(|i| {
                let (r, s) = val_starts[(i * val_starts.len()) / count];
                sample(&recordings[r], s, t, h, None)
            })
            .collect()
    };
    let val_samples = spread(256);
    // Validation samples per window span (look-back and horizon): the paired test's block.
    let spacing = (val_starts.len() / val_samples.len().max(1)).max(1);
    let block = (t + h).div_ceil(spacing);
    let (ci, loss) = (tuning.channel_independent, tuning.loss);
    let linear_errors = evaluate(&forecaster.valid(), config, ci, &val_samples, device);
    let linear_validation_loss = mean_error(&linear_errors, loss);
    // The weights with the lowest validation loss so far: (step, weights, their errors).
    let mut best = (0usize, forecaster.valid(), linear_errors.clone());

    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(train.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(train.clip_norm)))
        .init();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(train.seed);
    let mut curve = Vec::new();
    let mut recent = Vec::new();
    let per_window = if tuning.channel_independent {
        1
    } else {
        channels
    };
    let mut throughput =
        Throughput::new((train.batch_size * config.tokens_per_window(per_window)) as f64);
    for step in 0..train.steps {
        throughput.step_begins();
        let samples: Vec<Sample> = (0..train.batch_size)
            .map(|_| {
                let start = train_starts[rng.random_range(0..train_starts.len())];
                pick(&mut rng, start)
            })
            .collect();
        let windows: Vec<Window> = samples.iter().map(|s| s.window.clone()).collect();
        let batch = make_batch(&windows, config, &Mask::Holes, &mut rng, device);
        // Targets in each window's own units, like the inputs; each error weighed by the
        // window's scale (its variance for squared error), so the loss is the error in
        // standardised units, the measure the forecaster is judged by (calm windows would
        // otherwise dominate).
        let (mut target, mut weight) = (Vec::new(), Vec::new());
        for (s, scale) in samples.iter().zip(&batch.scale) {
            for (ch, &(mean, sd)) in scale.iter().enumerate() {
                let seen_weight = loss.window_weight(sd);
                for i in ch * h..(ch + 1) * h {
                    target.push((s.future[i] - mean) / sd);
                    weight.push(if s.future_observed[i] {
                        seen_weight
                    } else {
                        0.0
                    });
                }
            }
        }
        let shape = [1, target.len() / h, h];
        let target = Tensor::<3>::from_data(TensorData::new(target, shape), device);
        let weight = Tensor::<3>::from_data(TensorData::new(weight, shape), device);
        let prediction = forecaster
            .forward(&batch.tokens, config.patches)
            .unsqueeze_dim::<3>(0);
        let objective = loss.masked(prediction, target, weight);
        let loss_value = objective.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(objective.backward(), &forecaster);
        let lr = learning_rate(train, step);
        forecaster = optimizer.step(lr, forecaster, grads);
        throughput.step_ends();
        recent.push(loss_value);
        progress(&throughput.progress(step + 1, loss_value));
        if (step + 1) % train.eval_every == 0 || step + 1 == train.steps {
            let valid = forecaster.valid();
            let errors = evaluate(&valid, config, ci, &val_samples, device);
            let validation_loss = mean_error(&errors, loss);
            if validation_loss < mean_error(&best.2, loss)
                && clearly_better(&errors, &linear_errors, block, loss)
            {
                best = (step + 1, valid, errors);
            }
            curve.push(CurvePoint::closing(
                step + 1,
                &mut recent,
                validation_loss,
                lr,
            ));
            if stalled(train, linear_validation_loss, &curve) {
                break;
            }
        }
    }
    let (best_step, chosen, chosen_errors) = best;

    // Error quantiles of the chosen weights on (up to 2,000) validation windows.
    let calibration = calibrate_bands(&chosen, config, &spread(2000), tuning, channels, device);
    let card = ForecastHeadCard {
        horizon: h,
        channel_independent: tuning.channel_independent,
        train: train.clone(),
        curve,
        loss,
        linear_validation_mse: mean_error(&linear_errors, ForecastLoss::Squared),
        validation_mse: mean_error(&chosen_errors, ForecastLoss::Squared),
        linear_validation_mae: Some(mean_error(&linear_errors, ForecastLoss::Absolute)),
        validation_mae: Some(mean_error(&chosen_errors, ForecastLoss::Absolute)),
        best_step,
        bands: calibration.constant.bands,
        scaled_bands: Some(calibration.chosen),
        band_scores: calibration.validation,
        linear_start: candidates.into_iter().next(),
    };
    Ok((chosen, card))
}

/// Bands from the chosen weights' errors on `samples` (every channel), each channel's
/// scale chosen on them (`bands::calibrate`).
fn calibrate_bands(
    forecaster: &Forecaster,
    config: &ModelConfig,
    samples: &[Sample],
    tuning: &ForecastTuning,
    channels: usize,
    device: &Device,
) -> bands::Calibration {
    let h = tuning.horizon;
    let windows: Vec<Window> = samples.iter().map(|s| s.window.clone()).collect();
    let predicted = predict(
        forecaster,
        config,
        tuning.channel_independent,
        &windows,
        device,
    );
    let errors: Vec<Vec<f32>> = samples
        .iter()
        .zip(&predicted)
        .map(|(s, p)| {
            (0..channels * h)
                .map(|i| {
                    if s.future_observed[i] {
                        s.future[i] - p[i]
                    } else {
                        f32::NAN
                    }
                })
                .collect()
        })
        .collect();
    bands::calibrate(&Residuals {
        windows: &windows,
        errors: &errors,
        channels,
        horizon: h,
        coverage: tuning.band_coverage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Samples of squared errors only: (sum, count).
    fn squared(errors: &[(f64, usize)]) -> Vec<SampleErrors> {
        errors
            .iter()
            .map(|&(squared, count)| SampleErrors {
                squared,
                absolute: f64::NAN,
                count,
            })
            .collect()
    }

    fn better(errors: &[(f64, usize)], baseline: &[(f64, usize)], block: usize) -> bool {
        clearly_better(
            &squared(errors),
            &squared(baseline),
            block,
            ForecastLoss::Squared,
        )
    }

    fn mean(errors: &[(f64, usize)]) -> f64 {
        mean_error(&squared(errors), ForecastLoss::Squared)
    }

    /// A head that trims the large errors and adds small ones is better in squared error and
    /// worse in absolute error: each loss judges by its own measure.
    #[test]
    fn each_loss_judges_the_weights_by_its_own_measure() {
        let errors = |squared: f64, absolute: f64| -> Vec<SampleErrors> {
            (0..40)
                .map(|i| SampleErrors {
                    squared: squared + (i % 3) as f64,
                    absolute: absolute + (i % 5) as f64 * 0.1,
                    count: 10,
                })
                .collect()
        };
        let (start, head) = (errors(400.0, 60.0), errors(350.0, 65.0));
        assert!(clearly_better(&head, &start, 1, ForecastLoss::Squared));
        assert!(!clearly_better(&head, &start, 1, ForecastLoss::Absolute));
        assert!(clearly_better(&start, &head, 1, ForecastLoss::Absolute));
        assert!((mean_error(&head, ForecastLoss::Absolute) - 6.52).abs() < 1e-12);
    }

    #[test]
    fn only_a_gain_larger_than_the_noise_is_clearly_better() {
        let baseline: Vec<(f64, usize)> = (0..100).map(|i| (400.0 + (i % 7) as f64, 10)).collect();
        // Every window a little better: clearly better.
        let steady: Vec<(f64, usize)> = baseline.iter().map(|&(se, n)| (se - 5.0, n)).collect();
        assert!(better(&steady, &baseline, 1));
        // The same mean gain from one lucky window among noisy ones: not.
        let lucky: Vec<(f64, usize)> = baseline
            .iter()
            .enumerate()
            .map(|(i, &(se, n))| {
                let swing = if i % 2 == 0 { 30.0 } else { -30.0 };
                (se + swing - if i == 0 { 300.0 } else { 0.0 }, n)
            })
            .collect();
        assert!(mean(&lucky) < mean(&baseline));
        assert!(!better(&lucky, &baseline, 1));
        // No change, or worse: not.
        assert!(!better(&baseline, &baseline, 1));
        let worse: Vec<(f64, usize)> = baseline.iter().map(|&(se, n)| (se + 5.0, n)).collect();
        assert!(!better(&worse, &baseline, 1));
        // Overlapping windows: a gain shared by runs of ten neighbours is one piece of
        // evidence a run, not ten. Four runs of +20, one of -40 (mean gain +8 a window)
        // pass as 50 independent samples, and fail once each run is one block.
        let runs: Vec<(f64, usize)> = baseline
            .iter()
            .take(50)
            .enumerate()
            .map(|(i, &(se, n))| (se - if i / 10 == 2 { -400.0 } else { 200.0 }, n))
            .collect();
        let base = &baseline[..50];
        assert!(better(&runs, base, 1));
        assert!(!better(&runs, base, 10));
    }
}
