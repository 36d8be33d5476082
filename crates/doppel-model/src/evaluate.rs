//! How good a fine-tuned forecaster is on files it never saw: its errors over every window
//! of held-out recordings (rolling origin), next to persistence (the last value carried on).
//!
//! It only measures: it never fits, chooses or changes anything, so whatever it reads stays
//! a fair test set.

use burn::prelude::*;
use serde::Serialize;

use crate::bands::{self, BandScore, CoverageByActivity, IntervalSums, Recalibrator};
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::finetune::{ForecastHeadCard, Forecaster, predict};
use crate::model::ModelConfig;
use crate::train::cut;

/// Sums of forecast errors, standardised units; observed truth only.
#[derive(Debug, Clone, Default)]
pub struct ErrorSums {
    squared: f64,
    absolute: f64,
    count: usize,
}

impl ErrorSums {
    pub fn add(&mut self, predicted: f32, truth: f32) {
        let d = (predicted - truth) as f64;
        self.squared += d * d;
        self.absolute += d.abs();
        self.count += 1;
    }
    pub fn mse(&self) -> f64 {
        self.squared / self.count.max(1) as f64
    }
    pub fn mae(&self) -> f64 {
        self.absolute / self.count.max(1) as f64
    }
}

/// A forecaster's errors on held-out recordings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ForecastEvaluation {
    pub horizon: usize,
    pub windows: usize,
    /// Standardised MSE and MAE over every forecast value whose truth was observed.
    pub mse: f64,
    pub mae: f64,
    /// The same for persistence: each channel's last look-back value, held.
    pub persistence_mse: f64,
    pub persistence_mae: f64,
    /// Standardised MSE and MAE per channel, in the model's channel order.
    pub channel_mse: Vec<f64>,
    pub channel_mae: Vec<f64>,
    /// The 80 % band forecasts use, then (when they differ) the constant one: coverage,
    /// width and interval score over the same values.
    pub bands: Vec<BandScore>,
}

/// Runs `forecaster` on every window (look-back + horizon, every `stride` steps) of each
/// standardised recording. Recordings shorter than a window are skipped; none long enough is
/// an error. With `recalibrate` (steps), the bands are also measured recalibrated as a
/// deployed forecaster would recalibrate them: on the forecasts of the last `recalibrate`
/// steps of the same recording whose truth had all arrived (`bands::Recalibrator`).
pub fn evaluate_forecaster(
    forecaster: &Forecaster,
    config: &ModelConfig,
    head: &ForecastHeadCard,
    recordings: &[Recording],
    stride: usize,
    recalibrate: Option<usize>,
    device: &Device,
) -> Result<ForecastEvaluation> {
    if stride == 0 {
        return Err(ModelError::Settings("--stride must be at least 1".into()));
    }
    let (lookback, horizon, channels) = (config.window(), head.horizon, config.channels);
    let ids: Vec<usize> = (0..channels).collect();
    let (mut model, mut persistence) = (ErrorSums::default(), ErrorSums::default());
    let mut per_channel = vec![ErrorSums::default(); channels];
    let chosen = head.chosen_bands();
    let mut band_sets = vec![(chosen.name(), chosen.clone())];
    if chosen.name() != "constant" {
        let constant = bands::ScaledBands::constant(head.bands.clone());
        band_sets.push(("constant", constant));
    }
    // The recalibrated bands are the chosen ones, widened or narrowed as they go.
    let mut recalibrator = recalibrate.map(|steps| Recalibrator::new(steps, channels, horizon));
    let recalibrated_name = format!("{}, recalibrated", chosen.name());
    let sets = band_sets.len() + usize::from(recalibrator.is_some());
    let mut band_sums = vec![IntervalSums::default(); sets];
    let mut by_activity = vec![CoverageByActivity::default(); sets];
    let mut windows = 0;
    for rec in recordings {
        if let Some(r) = &mut recalibrator {
            r.reset();
        }
        let Some(last_start) = rec.len().checked_sub(lookback + horizon) else {
            continue;
        };
        let starts: Vec<usize> = (0..=last_start).step_by(stride).collect();
        for chunk in starts.chunks(512) {
            let cuts: Vec<_> = chunk.iter().map(|&t| cut(rec, t, lookback, &ids)).collect();
            let predicted = predict(forecaster, config, head.channel_independent, &cuts, device);
            for ((&t, p), window) in chunk.iter().zip(&predicted).zip(&cuts) {
                let mut offsets: Vec<_> = band_sets
                    .iter()
                    .map(|(_, bands)| bands.offsets(window, horizon))
                    .collect();
                let origin = t + lookback;
                if let Some(r) = &mut recalibrator {
                    let factors = r.factors_at(origin);
                    offsets.push(bands::widened(&offsets[0], factors, horizon));
                }
                let mut errors = vec![f32::NAN; channels * horizon];
                for c in 0..channels {
                    let mut inside = vec![0; sets];
                    let mut observed = 0;
                    let last = rec.values[c][t + lookback - 1];
                    for k in 0..horizon {
                        let at = t + lookback + k;
                        if rec.observed[c][at] {
                            let truth = rec.values[c][at];
                            model.add(p[c * horizon + k], truth);
                            per_channel[c].add(p[c * horizon + k], truth);
                            persistence.add(last, truth);
                            let (i, error) = (c * horizon + k, truth - p[c * horizon + k]);
                            errors[i] = error;
                            observed += 1;
                            for (set, o) in offsets.iter().enumerate() {
                                let (low, high) = (o[0][i], o[o.len() - 1][i]);
                                band_sums[set].add(error, low, high);
                                inside[set] += u32::from(low <= error && error <= high);
                            }
                        }
                    }
                    let activity = bands::activity(window, c, lookback);
                    for (set, counts) in by_activity.iter_mut().enumerate() {
                        counts.add(c, activity, inside[set], observed);
                    }
                }
                if let Some(r) = &mut recalibrator {
                    r.record(origin, &offsets[0], &errors);
                }
            }
            windows += chunk.len();
        }
    }
    if windows == 0 {
        let longest = recordings.iter().map(Recording::len).max().unwrap_or(0);
        return Err(ModelError::Settings(format!(
            "a look-back of {lookback} steps plus the head's horizon of {horizon} is longer \
             than every file (the longest has {longest} steps)"
        )));
    }
    Ok(ForecastEvaluation {
        horizon,
        windows,
        mse: model.mse(),
        mae: model.mae(),
        persistence_mse: persistence.mse(),
        persistence_mae: persistence.mae(),
        channel_mse: per_channel.iter().map(ErrorSums::mse).collect(),
        channel_mae: per_channel.iter().map(ErrorSums::mae).collect(),
        bands: band_sets
            .iter()
            .map(|(name, _)| *name)
            .chain(recalibrator.is_some().then_some(recalibrated_name.as_str()))
            .zip(&band_sums)
            .zip(&mut by_activity)
            .map(|((name, sums), counts)| {
                let (calm, restless) = counts.thirds();
                BandScore {
                    calm: Some(calm),
                    restless: Some(restless),
                    ..sums.score(name)
                }
            })
            .collect(),
    })
}
