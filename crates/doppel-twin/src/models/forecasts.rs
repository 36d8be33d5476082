//! Forecasts the rules read (`forecast(sensor, 30m).p90`): a forecasting head fine-tuned on
//! the twin's model with its encoder frozen (so the anomaly scores the model was calibrated
//! for stay as they were), for the longest horizon the rules name; each minute its band for
//! every (sensor, horizon) the rules read. Never writes.

use doppel_model::finetune::{ForecastHeadCard, ForecastLoss, ForecastTuning, finetune_forecast};
use doppel_model::forecaster::Forecaster;
use doppel_model::linear::Search;
use doppel_model::tasks::Forecast;
use doppel_model::{ModelCard, ModelConfig, Recording, SensorModel, TrainConfig};
use serde::Serialize;

use super::STEP_NS;

/// The forecast the rules read for one sensor and horizon, as the views show it.
#[derive(Debug, Clone, Serialize)]
pub struct Band {
    pub sensor: String,
    /// How far ahead, in minutes.
    pub horizon_minutes: i64,
    /// The time it forecasts.
    pub time: String,
    pub p10: f64,
    pub p50: f64,
    pub p90: f64,
}

/// The head's horizon, in steps of the twin's grid, for the forecasts the rules want.
pub fn horizon_steps(wanted: &[(String, i64)]) -> Option<usize> {
    wanted.iter().map(|(_, h)| minutes(*h) as usize).max()
}

/// A rule's horizon (ns) in whole steps of the twin's grid, at least one.
pub fn minutes(horizon_ns: i64) -> i64 {
    ((horizon_ns + STEP_NS - 1) / STEP_NS).max(1)
}

/// Fine-tunes a head for `horizon` steps on the standardised history, the encoder frozen.
pub fn fine_tune(
    model: SensorModel,
    config: &ModelConfig,
    standardised: &Recording,
    horizon: usize,
    steps: usize,
) -> Result<(Forecaster, ForecastHeadCard), String> {
    let device = doppel_model::device::training(Default::default()).map_err(|e| e.to_string())?;
    let tuning = ForecastTuning {
        horizon,
        // 2-D tokens read a window's channels together.
        channel_independent: false,
        linear: Search::default(),
        freeze_encoder: true,
        dropout: 0.0,
        loss: ForecastLoss::Squared,
        band_coverage: doppel_model::bands::DEFAULT_COVERAGE,
    };
    let train = TrainConfig {
        patience: 8,
        ..TrainConfig::new(steps, 32, 3e-4, 0)
    };
    finetune_forecast(
        model,
        config,
        std::slice::from_ref(standardised),
        &tuning,
        &train,
        &device,
        |_| {},
    )
    .map_err(|e| e.to_string())
}

/// The bands the rules want out of one forecast made at the end of minute `minute`.
pub fn bands(
    forecast: &Forecast,
    card: &ModelCard,
    wanted: &[(String, i64)],
    minute: i64,
) -> Vec<Band> {
    let lowest = forecast.bands.iter().min_by(|a, b| a.0.total_cmp(&b.0));
    let highest = forecast.bands.iter().max_by(|a, b| a.0.total_cmp(&b.0));
    let (Some((_, low)), Some((_, high))) = (lowest, highest) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (sensor, horizon) in wanted {
        let Some(c) = card.channels.iter().position(|x| x == sensor) else {
            continue;
        };
        let steps = minutes(*horizon);
        let k = steps as usize - 1;
        if k >= forecast.values[c].len() {
            continue;
        }
        out.push(Band {
            sensor: sensor.clone(),
            horizon_minutes: steps,
            time: doppel_core::time::format_rfc3339((minute + 1 + k as i64) * STEP_NS),
            p10: low[c][k] as f64,
            p50: forecast.values[c][k] as f64,
            p90: high[c][k] as f64,
        });
    }
    out
}
