//! How good a fine-tuned forecaster is on files it never saw: its errors over every window
//! of held-out recordings (rolling origin), next to persistence (the last value carried on).
//!
//! It only measures: it never fits, chooses or changes anything, so whatever it reads stays
//! a fair test set.

use burn::prelude::*;
use serde::Serialize;

use crate::bands::{BandScore, BandTally};
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::finetune::ForecastHeadCard;
use crate::forecaster::{Forecaster, predict};
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
    /// The band forecasts use, then (when they differ) the constant one, then (when
    /// asked) the first recalibrated, adapted, and both: coverage, width and interval score
    /// over the same values.
    pub bands: Vec<BandScore>,
}

/// Runs `forecaster` on every window (look-back + horizon, every `stride` steps) of each
/// standardised recording. Recordings shorter than a window are skipped; none long enough is
/// an error. With `recalibrate` (steps), the bands are also measured recalibrated as a
/// deployed forecaster would make them follow drift: on the forecasts of the last
/// `recalibrate` steps of the same recording whose truth had all arrived
/// (`bands::Recalibrator`), by adaptation (`bands::Adapter`), and both.
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
    let mut bands = BandTally::new(
        head.chosen_bands(),
        head.bands.clone(),
        recalibrate,
        horizon,
    );
    let mut windows = 0;
    for rec in recordings {
        bands.new_recording();
        let Some(last_start) = rec.len().checked_sub(lookback + horizon) else {
            continue;
        };
        let starts: Vec<usize> = (0..=last_start).step_by(stride).collect();
        for chunk in starts.chunks(512) {
            let cuts: Vec<_> = chunk.iter().map(|&t| cut(rec, t, lookback, &ids)).collect();
            let predicted = predict(forecaster, config, head.channel_independent, &cuts, device);
            for ((&t, p), window) in chunk.iter().zip(&predicted).zip(&cuts) {
                let mut errors = vec![f32::NAN; channels * horizon];
                for (c, channel_sums) in per_channel.iter_mut().enumerate() {
                    let last = rec.values[c][t + lookback - 1];
                    for k in 0..horizon {
                        let at = t + lookback + k;
                        if rec.observed[c][at] {
                            let (i, truth) = (c * horizon + k, rec.values[c][at]);
                            model.add(p[i], truth);
                            channel_sums.add(p[i], truth);
                            persistence.add(last, truth);
                            errors[i] = truth - p[i];
                        }
                    }
                }
                bands.add(window, t + lookback, &errors);
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
        bands: bands.scores(),
    })
}
