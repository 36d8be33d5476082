//! The ETT benchmark under the standard protocol (`../shared/data/README.md`): splits by rows,
//! standardised with training statistics, MSE and MAE on standardised values, forecasting test
//! windows at stride 1, imputation with random point masks on look-back-96 windows.

use std::path::Path;

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use crate::baselines::{LinearForecaster, interpolate, seasonal_naive};
use crate::data::{Normalizer, ReadOptions, Recording, read_recording};
use crate::error::{ModelError, Result};
use crate::model::ModelConfig;
use crate::store::ModelCard;
use crate::tasks;
use crate::train::{TrainConfig, pretrain};

/// One result row, as written to the JSON output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchRow {
    pub dataset: String,
    pub task: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub horizon: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ratio: Option<f64>,
    pub model: String,
    pub mse: f64,
    pub mae: f64,
}

#[derive(Debug, Clone)]
pub struct EttOptions {
    pub datasets: Vec<String>,
    pub horizons: Vec<usize>,
    pub mask_ratios: Vec<f64>,
    /// Look-back of the linear forecaster.
    pub lookback: usize,
    /// Pretraining steps of the sensor model used for imputation.
    pub pretrain_steps: usize,
    /// Pretraining settings of the sensor model used for imputation.
    pub point_mask_ratio: f64,
    pub instance_norm: bool,
    pub seed: u64,
}

impl Default for EttOptions {
    fn default() -> Self {
        EttOptions {
            datasets: vec![
                "ETTh1".into(),
                "ETTh2".into(),
                "ETTm1".into(),
                "ETTm2".into(),
            ],
            horizons: vec![96, 192, 336, 720],
            mask_ratios: vec![0.125, 0.25, 0.375, 0.5],
            lookback: 336,
            pretrain_steps: 1000,
            point_mask_ratio: 0.25,
            instance_norm: true,
            seed: 0,
        }
    }
}

/// Published figures to print next to ours: (dataset, task, horizon or mask, model, mse, mae).
pub const PUBLISHED: [(&str, &str, &str, f64, f64); 10] = [
    ("ETTh1", "forecast 96", "PatchTST/64", 0.370, 0.400),
    ("ETTh2", "forecast 96", "PatchTST/64", 0.274, 0.337),
    ("ETTm1", "forecast 96", "PatchTST/64", 0.293, 0.346),
    ("ETTm2", "forecast 96", "PatchTST/64", 0.166, 0.256),
    ("ETTh1", "forecast 96", "iTransformer", 0.386, 0.405),
    ("ETTh2", "forecast 96", "iTransformer", 0.297, 0.349),
    ("ETTm1", "forecast 96", "iTransformer", 0.334, 0.368),
    ("ETTm2", "forecast 96", "iTransformer", 0.180, 0.264),
    (
        "ETTh1",
        "impute (mean of 4 ratios)",
        "TimesNet",
        0.078,
        0.187,
    ),
    (
        "ETTm1",
        "impute (mean of 4 ratios)",
        "TimesNet",
        0.027,
        0.107,
    ),
];

#[derive(Default)]
struct Errors {
    se: f64,
    ae: f64,
    n: usize,
}

impl Errors {
    fn add(&mut self, predicted: f32, truth: f32) {
        let d = (predicted - truth) as f64;
        self.se += d * d;
        self.ae += d.abs();
        self.n += 1;
    }
    fn row(
        &self,
        dataset: &str,
        task: &'static str,
        horizon: Option<usize>,
        mask_ratio: Option<f64>,
        model: &str,
    ) -> BenchRow {
        let n = self.n.max(1) as f64;
        BenchRow {
            dataset: dataset.into(),
            task,
            horizon,
            mask_ratio,
            model: model.into(),
            mse: self.se / n,
            mae: self.ae / n,
        }
    }
}

/// Runs the benchmark; `log` hears what is being done.
// Windows, channels and steps index several parallel arrays; plain indices read clearest.
#[allow(clippy::needless_range_loop)]
pub fn ett(dir: &Path, options: &EttOptions, mut log: impl FnMut(&str)) -> Result<Vec<BenchRow>> {
    let mut rows = Vec::new();
    for name in &options.datasets {
        let path = dir.join(format!("{name}.csv"));
        if !path.exists() {
            return Err(ModelError::Input {
                path,
                message: "not found: --data-dir should hold ETTh1.csv ... ETTm2.csv".into(),
            });
        }
        let raw = read_recording(&path, &ReadOptions::default())?;
        let scale = if name.starts_with("ETTm") { 4 } else { 1 };
        let (train_end, val_end, test_end) = (8640 * scale, 11520 * scale, 14400 * scale);
        if raw.len() < test_end {
            return Err(ModelError::Input {
                path,
                message: format!("{} rows; the protocol needs {test_end}", raw.len()),
            });
        }
        let normalizer = Normalizer::fit(
            std::slice::from_ref(&raw),
            train_end as f64 / raw.len() as f64,
        );
        let data = normalizer.apply(&raw);
        let channels = data.channels.len();
        let period = 24 * scale;

        for &horizon in &options.horizons {
            let l = options.lookback;
            log(&format!(
                "{name}: forecasting {horizon} steps (linear fit on the training split)"
            ));
            let train: Vec<&[f32]> = data.values.iter().map(|v| &v[..train_end]).collect();
            let linear = LinearForecaster::fit(&train, l, horizon, 1.0);
            let (mut naive_err, mut linear_err) = (Errors::default(), Errors::default());
            for t in (val_end - l)..=(test_end - l - horizon) {
                for c in 0..channels {
                    let history = &data.values[c][..t + l];
                    let truth = &data.values[c][t + l..t + l + horizon];
                    for (p, y) in seasonal_naive(history, period, horizon).iter().zip(truth) {
                        naive_err.add(*p, *y);
                    }
                    for (p, y) in linear.predict(history).iter().zip(truth) {
                        linear_err.add(*p, *y);
                    }
                }
            }
            rows.push(naive_err.row(name, "forecast", Some(horizon), None, "seasonal_naive"));
            rows.push(linear_err.row(
                name,
                "forecast",
                Some(horizon),
                None,
                &format!("linear_{l}"),
            ));
        }

        if !options.mask_ratios.is_empty() {
            log(&format!(
                "{name}: pretraining the sensor model for imputation ({} steps)",
                options.pretrain_steps
            ));
            let card_and_model =
                pretrain_for_imputation(&raw, &normalizer, train_end, val_end, options)?;
            let (model, card) = card_and_model;
            if let Some(last) = card.curve.last() {
                log(&format!(
                    "{name}: pretrained; validation loss {:.3} (train {:.3})",
                    last.validation_loss, last.train_loss
                ));
            }
            let device = Device::flex();
            for &ratio in &options.mask_ratios {
                let mut rng =
                    Xoshiro256PlusPlus::seed_from_u64(options.seed ^ (ratio * 1000.0) as u64);
                let (mut interp_err, mut model_err) = (Errors::default(), Errors::default());
                let mut start = val_end;
                while start + 96 <= test_end {
                    // The window, with random points hidden.
                    let mut window = slice(&raw, start, 96);
                    let truth = slice(&data, start, 96);
                    let mut hidden = vec![vec![false; 96]; channels];
                    for c in 0..channels {
                        for t in 0..96 {
                            if rng.random::<f64>() < ratio {
                                hidden[c][t] = true;
                                window.observed[c][t] = false;
                            }
                        }
                    }
                    let (filled, _) = tasks::impute(&model, &card, &window, &device)?;
                    for c in 0..channels {
                        let std_window: Vec<f32> = window.values[c]
                            .iter()
                            .map(|v| (v - normalizer.mean[c]) / normalizer.std[c])
                            .collect();
                        let interp = interpolate(&std_window, &window.observed[c]);
                        for t in 0..96 {
                            if hidden[c][t] {
                                let y = truth.values[c][t];
                                interp_err.add(interp[t], y);
                                model_err.add(
                                    (filled.values[c][t] - normalizer.mean[c]) / normalizer.std[c],
                                    y,
                                );
                            }
                        }
                    }
                    start += 96;
                }
                rows.push(interp_err.row(name, "impute", None, Some(ratio), "interpolation"));
                rows.push(model_err.row(name, "impute", None, Some(ratio), "doppel_mae_tiny"));
            }
        }
    }
    Ok(rows)
}

fn slice(rec: &Recording, start: usize, len: usize) -> Recording {
    let mut out = rec.clone();
    out.start_ns = rec.time_ns(start);
    for c in 0..rec.channels.len() {
        out.values[c] = rec.values[c][start..start + len].to_vec();
        out.observed[c] = rec.observed[c][start..start + len].to_vec();
    }
    out
}

/// A tiny model pretrained on the training split (windows of 96 = 12 patches of 8).
fn pretrain_for_imputation(
    raw: &Recording,
    normalizer: &Normalizer,
    train_end: usize,
    val_end: usize,
    options: &EttOptions,
) -> Result<(crate::model::SensorModel, ModelCard)> {
    // Train on the training split; the validation curve uses the validation split.
    let data = normalizer.apply(&slice(raw, 0, val_end));
    let mut config = ModelConfig::sized("tiny", raw.channels.len(), 8, 12).expect("tiny is a size");
    config.point_mask_ratio = options.point_mask_ratio;
    config.instance_norm = options.instance_norm;
    let train = TrainConfig {
        steps: options.pretrain_steps,
        batch_size: 32,
        warmup_steps: (options.pretrain_steps / 10).max(1),
        seed: options.seed,
        validation_fraction: (val_end - train_end) as f64 / val_end as f64,
        ..TrainConfig::default()
    };
    let device = Device::flex().autodiff();
    let (model, curve) = pretrain(
        std::slice::from_ref(&data),
        &config,
        &train,
        &device,
        |_| {},
    )?;
    let model = model.valid();
    let card = ModelCard::new(
        config,
        normalizer.clone(),
        raw.step_ns,
        model.num_params(),
        vec![],
        train,
        curve,
    );
    Ok((model, card))
}
