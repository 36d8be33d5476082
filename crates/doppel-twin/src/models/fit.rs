//! How a twin's model is made, from the lake or from files alike: pretrained on the twin's
//! sensors as minute means (LSM's masked patches, 2-D tokens of about a tenth of the
//! sensors), calibrated on the rows it never trained on with its detector chosen there
//! (`choice`), and, when the rules read forecasts, a forecasting head fine-tuned for them
//! with the encoder frozen. Writes only where [`save`] is told to.

use std::path::Path;

use doppel_core::spec::TwinSpec;
use doppel_model::card::DataRange;
use doppel_model::forecaster::Forecaster;
use doppel_model::train::{TrainConfig, pretrain_with_checkpoints};
use doppel_model::{ModelCard, ModelConfig, Recording, SensorModel, store};

use super::choice::{self, AssetChannels};
use super::{STEP_NS, forecasts};

/// A twin's model, ready to save or to put to work.
pub struct TwinModel {
    pub model: SensorModel,
    /// The head for the rules' forecasts, when they read any.
    pub forecaster: Option<Forecaster>,
    /// With `live_scoring` set (and `forecast_head` with a forecaster).
    pub card: ModelCard,
}

/// Where a fit is, for progress.
pub enum Stage {
    Pretraining { step: usize, loss: f64 },
    Choosing,
    FineTuning { horizon: usize },
}

/// Fits the twin's model to `rec` (its sensors, a row a minute, in raw units), its assets
/// from `spec`, with a head for `wanted` forecasts (sensor, horizon ns).
pub fn fit(
    rec: &Recording,
    spec: &TwinSpec,
    wanted: &[(String, i64)],
    steps: usize,
    mut report: impl FnMut(Stage) + Send,
) -> Result<TwinModel, String> {
    if rec.step_ns != STEP_NS {
        return Err(format!(
            "{}: rows are {} s apart; a twin's model reads one row a minute (minute means)",
            rec.source.display(),
            rec.step_ns as f64 / 1e9
        ));
    }
    let channels = rec.channels.len();
    // LSM's 2-D tokens keep a plant's many sensors to about 120 tokens a window.
    let Some(mut config) = ModelConfig::sized("tiny", channels, 8, 12) else {
        return Err("no tiny model size".into());
    };
    config.channels_per_token = channels.div_ceil(10).max(1);
    let one = std::slice::from_ref(rec);
    let (train, _) = TrainConfig {
        keep_best: true,
        ..TrainConfig::new(steps, 16, 1e-3, 0)
    }
    .fitted_to(one, config.window());
    let split = train.training_ends(one).map_err(|e| e.to_string())?[0];
    let mut normalizer = train.normalizer(one).map_err(|e| e.to_string())?;
    floor_spreads(&mut normalizer, rec);
    let device = doppel_model::device::training(Default::default()).map_err(|e| e.to_string())?;
    let pretrained = pretrain_with_checkpoints(
        &[normalizer.apply(rec)],
        &config,
        &train,
        None,
        &device,
        |p| {
            report(Stage::Pretraining {
                step: p.step,
                loss: p.loss,
            })
        },
    )
    .map_err(|e| e.to_string())?;
    let parameters = config.parameter_count();
    let data = DataRange::of(one, &train);
    let mut card = ModelCard::new(
        config,
        normalizer,
        STEP_NS,
        parameters,
        data,
        train,
        pretrained.curve,
    );
    let trained = pretrained.model;
    let model = trained.clone().for_inference();
    report(Stage::Choosing);
    let assets = asset_channels(spec, &card.channels);
    let scoring = choice::calibrate_and_choose(
        &model,
        &card,
        &rec.slice(0, split),
        &rec.slice(split, rec.len()),
        &assets,
    )?;
    card.live_scoring = Some(scoring);
    let mut forecaster = None;
    if let Some(horizon) = forecasts::horizon_steps(wanted) {
        report(Stage::FineTuning { horizon });
        match forecasts::fine_tune(
            trained,
            &card.config,
            &card.normalizer.apply(rec),
            horizon,
            steps,
        ) {
            Ok((f, head)) => {
                card.forecast_head = Some(head);
                forecaster = Some(f);
            }
            Err(e) => {
                tracing::warn!(error = %e, "no forecasts for the rules: fine-tuning a head failed")
            }
        }
    }
    Ok(TwinModel {
        model,
        forecaster,
        card,
    })
}

/// A sensor nearly still while the model trained (a pump off, a status that seldom
/// changes) would have a spread so small that its first ordinary move later reads as
/// thousands of standard deviations: every error and score on it explodes. Each spread is
/// kept at least a quarter of the sensor's spread over the whole history (held-out rows
/// too: only their spread, never their values, reaches the model) and a thousandth of its
/// level.
fn floor_spreads(normalizer: &mut doppel_model::data::Normalizer, rec: &Recording) {
    for (c, std) in normalizer.std.iter_mut().enumerate() {
        let seen: Vec<f64> = (0..rec.len())
            .filter(|&t| rec.observed[c][t])
            .map(|t| rec.values[c][t] as f64)
            .collect();
        if seen.is_empty() {
            continue;
        }
        let mean = seen.iter().sum::<f64>() / seen.len() as f64;
        let all = (seen.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / seen.len() as f64).sqrt();
        let floor = (0.25 * all).max(1e-3 * (1.0 + mean.abs()));
        *std = std.max(floor as f32);
    }
}

/// Writes the model folder (weights, head and card).
pub fn save(dir: &Path, fitted: &TwinModel) -> doppel_model::Result<()> {
    match &fitted.forecaster {
        Some(f) => store::save_forecaster(dir, f, &fitted.card),
        None => store::save(dir, &fitted.model, &fitted.card),
    }
}

/// Each asset's channels among `channels` (sensor ids).
pub fn asset_channels(spec: &TwinSpec, channels: &[String]) -> AssetChannels {
    let mut assets = AssetChannels::new();
    for (c, id) in channels.iter().enumerate() {
        if let Some(sensor) = spec.sensors.iter().find(|s| &s.id == id) {
            assets.entry(sensor.asset.clone()).or_default().push(c);
        }
    }
    assets
}
