//! The ETT benchmark under the standard protocol (`../shared/data/README.md`): splits by rows,
//! standardised with training statistics, MSE and MAE on standardised values, forecasting test
//! windows at stride 1, imputation with random point masks on look-back-96 windows.

use std::path::Path;

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;

use doppel_model::bands::BandScore;
use doppel_model::baselines::{interpolate, seasonal_naive};
use doppel_model::card::ModelCard;
use doppel_model::data::{Normalizer, ReadOptions, Recording, read_recording};
use doppel_model::error::{ModelError, Result};
use doppel_model::evaluate::{ErrorSums, ForecastEvaluation, evaluate_forecaster};
use doppel_model::linear::{self, Layout, LinearForecaster, Search, Series};
use doppel_model::model::ModelConfig;
use doppel_model::tasks;
use doppel_model::train::{DEFAULT_LEARNING_RATE, TrainConfig, pretrain};

use super::model_name;

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
    /// What was chosen on validation (the linear start's settings, the step kept).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub settings: Option<String>,
    /// A fine-tuned forecaster's bands on test: the ones it uses, then the constant.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bands: Vec<BandScore>,
}

/// The look-back of the fixed linear setting (`linear_336`), kept for comparison with
/// earlier runs.
const FIXED_LOOKBACK: usize = 336;

#[derive(Debug, Clone)]
pub struct EttOptions {
    pub datasets: Vec<String>,
    pub horizons: Vec<usize>,
    pub mask_ratios: Vec<f64>,
    /// Look-backs the linear forecaster chooses among on validation (multiples of the
    /// forecasting model's patch, 16); the sensor model reads the one with the lowest
    /// validation error summed over the horizons.
    pub lookbacks: Vec<usize>,
    /// Pretraining steps of the sensor model used for imputation (the weights kept are
    /// those with the lowest validation loss).
    pub pretrain_steps: usize,
    /// Pretraining settings of the sensor model used for imputation.
    pub point_mask_ratio: f64,
    pub instance_norm: bool,
    pub interpolation_prior: bool,
    /// Over it, the learned cross-channel prior (`ModelConfig::cross_channel_prior`).
    pub cross_channel_prior: bool,
    /// The channel read-out, started at least squares (`ModelConfig::channel_readout`).
    pub channel_readout: bool,
    /// Share of whole patches hidden in that pretraining (points are hidden besides).
    pub impute_mask_ratio: f64,
    /// Steps between test windows of the imputation (1 as TimesNet; larger is quicker).
    pub impute_stride: usize,
    /// Channels per token of the imputation model (1: one channel a token; more: LSM's
    /// 2-D patches).
    pub impute_channels_per_token: usize,
    /// Size of the imputation model (tiny, small, base, large).
    pub impute_size: String,
    /// Steps per patch of the imputation model; its windows stay 96 steps, as TimesNet's.
    pub impute_patch: usize,
    /// Fine-tuning steps of the forecasting head per horizon (0: no model forecasts).
    pub finetune_steps: usize,
    pub finetune_learning_rate: f64,
    /// Dropout in the encoder while fine-tuning.
    pub finetune_dropout: f64,
    /// What fine-tuning minimises and what chooses the head kept.
    pub finetune_loss: doppel_model::finetune::ForecastLoss,
    /// Train the forecasting head only (the pretrained encoder stays as it is).
    pub freeze_encoder: bool,
    /// Also measure the bands recalibrated on the last this many steps' forecasts, adapted
    /// (`bands::Adapter`), and both.
    pub recalibrate_steps: Option<usize>,
    /// The share of truth the heads' error bands are to hold.
    pub band_coverage: f64,
    /// Pretraining steps of the sensor model the forecasting heads start from.
    pub forecast_pretrain_steps: usize,
    /// Share of patches that pretraining hides (LSM's 0.8; PatchTST pretrains with 0.4).
    pub forecast_mask_ratio: f64,
    /// Pretrain it on one channel a window (as the heads read), 32 × C windows a batch.
    pub forecast_channel_independent: bool,
    /// Its size (`tiny`, `small`, ...).
    pub forecast_size: String,
    /// Its channels per token (above 1: 2-D patches; not with channel independence).
    pub forecast_channels_per_token: usize,
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
            lookbacks: vec![336, 512],
            pretrain_steps: 3000,
            point_mask_ratio: 0.4,
            instance_norm: true,
            interpolation_prior: true,
            cross_channel_prior: true,
            channel_readout: false,
            impute_mask_ratio: 0.0,
            impute_stride: 1,
            impute_channels_per_token: 1,
            impute_size: "tiny".into(),
            impute_patch: 8,
            finetune_steps: 600,
            finetune_learning_rate: 3e-4,
            finetune_dropout: 0.0,
            finetune_loss: Default::default(),
            recalibrate_steps: None,
            band_coverage: doppel_model::bands::DEFAULT_COVERAGE,
            freeze_encoder: false,
            forecast_pretrain_steps: 1000,
            forecast_mask_ratio: 0.8,
            forecast_channel_independent: false,
            forecast_size: "tiny".into(),
            forecast_channels_per_token: 1,
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

/// A row of the table from summed errors.
fn row(
    err: &ErrorSums,
    dataset: &str,
    task: &'static str,
    horizon: Option<usize>,
    mask_ratio: Option<f64>,
    model: &str,
) -> BenchRow {
    BenchRow {
        dataset: dataset.into(),
        task,
        horizon,
        mask_ratio,
        model: model.into(),
        mse: err.mse(),
        mae: err.mae(),
        settings: None,
        bands: Vec::new(),
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

        // Baselines first: seasonal naive, the fixed linear setting of earlier runs
        // (look-back FIXED_LOOKBACK, one matrix, ridge 1), and the setting chosen on validation.
        let mut chosen = Vec::new();
        for &horizon in &options.horizons {
            log(&format!(
                "{name}: forecasting {horizon} steps (linear fits on the training split, \
                 settings chosen on validation)"
            ));
            let train: Vec<&[f32]> = data.values.iter().map(|v| &v[..train_end]).collect();
            let fixed = LinearForecaster::fit(&train, FIXED_LOOKBACK, horizon, 1.0);
            let series: Vec<Series> = (0..channels)
                .map(|channel| Series {
                    channel,
                    values: &data.values[channel][..val_end],
                    cut: train_end,
                })
                .collect();
            let (best, candidates) = linear::choose(
                &series,
                channels,
                &options.lookbacks,
                horizon,
                &Search::default(),
            )?;
            log(&format!(
                "  chose {} (validation MSE {:.4}; look-back 336, shared, ridge 1: {:.4})",
                linear_settings(&candidates[0]),
                candidates[0].validation_mse,
                candidates
                    .iter()
                    .find(|c| {
                        c.lookback == FIXED_LOOKBACK && c.ridge == 1.0 && c.layout == Layout::Shared
                    })
                    .map_or(f64::NAN, |c| c.validation_mse)
            ));
            let mut errors: [ErrorSums; 3] = Default::default();
            let longest = options
                .lookbacks
                .iter()
                .copied()
                .fold(FIXED_LOOKBACK, usize::max);
            for t in (val_end - longest)..=(test_end - longest - horizon) {
                // Every forecaster forecasts the same steps, whatever its look-back.
                let end = t + longest;
                for c in 0..channels {
                    let history = &data.values[c][..end];
                    let truth = &data.values[c][end..end + horizon];
                    let forecasts = [
                        seasonal_naive(history, period, horizon),
                        fixed.predict(c, history),
                        best.predict(c, history),
                    ];
                    for (e, forecast) in errors.iter_mut().zip(&forecasts) {
                        for (p, y) in forecast.iter().zip(truth) {
                            e.add(*p, *y);
                        }
                    }
                }
            }
            let [naive_err, fixed_err, best_err] = errors;
            rows.push(row(
                &naive_err,
                name,
                "forecast",
                Some(horizon),
                None,
                "seasonal_naive",
            ));
            let fixed_name = format!("linear_{FIXED_LOOKBACK}");
            rows.push(row(
                &fixed_err,
                name,
                "forecast",
                Some(horizon),
                None,
                &fixed_name,
            ));
            rows.push(BenchRow {
                settings: Some(linear_settings(&candidates[0])),
                ..row(
                    &best_err,
                    name,
                    "forecast",
                    Some(horizon),
                    None,
                    "linear_val",
                )
            });
            chosen.push(candidates);
        }

        if options.finetune_steps > 0 && !options.horizons.is_empty() {
            // The model's look-back: the lowest validation error summed over the horizons
            // (each horizon's candidates are sorted, so `find` gives a look-back's best).
            let total = |l: usize| -> f64 {
                chosen
                    .iter()
                    .map(|c| {
                        c.iter()
                            .find(|c| c.lookback == l)
                            .map_or(f64::INFINITY, |c| c.validation_mse)
                    })
                    .sum()
            };
            let lookback = options
                .lookbacks
                .iter()
                .copied()
                .min_by(|&a, &b| total(a).total_cmp(&total(b)))
                .expect("look-backs were given");
            log(&format!(
                "{name}: pretraining the sensor model for forecasting ({} steps, look-back {lookback})",
                options.forecast_pretrain_steps
            ));
            let (model, config) =
                pretrain_for_forecasting(&data, train_end, val_end, lookback, options, &mut log)?;
            for &horizon in &options.horizons {
                log(&format!(
                    "{name}: fine-tuning a forecasting head for {horizon} steps ({} steps)",
                    options.finetune_steps
                ));
                let (tested, settings) = finetune_and_test(
                    model.clone(),
                    &config,
                    &data,
                    (train_end, val_end, test_end),
                    horizon,
                    options,
                    &mut log,
                )?;
                rows.push(BenchRow {
                    dataset: name.into(),
                    task: "forecast",
                    horizon: Some(horizon),
                    mask_ratio: None,
                    model: model_name(
                        &format!(
                            "doppel_mae_{}_ft{}",
                            options.forecast_size,
                            options.finetune_loss.suffix("_")
                        ),
                        options.forecast_channels_per_token,
                    ),
                    mse: tested.mse,
                    mae: tested.mae,
                    settings: Some(settings),
                    bands: tested.bands,
                });
            }
        }

        if !options.mask_ratios.is_empty() {
            log(&format!(
                "{name}: pretraining the sensor model for imputation ({} steps)",
                options.pretrain_steps
            ));
            let (model, card) =
                pretrain_for_imputation(&raw, &normalizer, train_end, val_end, options)?;
            if let (Some(last), Some(kept)) = (card.curve.last(), card.kept_point()) {
                log(&format!(
                    "{name}: pretrained; validation loss {:.3} (train {:.3}); kept step {} \
                     (validation loss {:.3})",
                    last.validation_loss, last.train_loss, kept.step, kept.validation_loss
                ));
            }
            for &ratio in &options.mask_ratios {
                let seed = options.seed ^ (ratio * 1000.0) as u64;
                // The same masks on the validation split, every 16th window: what a user
                // without a test split could see (logged, not a result row).
                let (val_interp, val_model) = impute_errors(
                    (&model, &card),
                    (&raw, &data, &normalizer),
                    train_end - 96..val_end,
                    ratio,
                    16,
                    !seed,
                )?;
                log(&format!(
                    "{name}: validation split, {:.1} % hidden: interpolation {:.4}, model {:.4}",
                    ratio * 100.0,
                    val_interp.mse(),
                    val_model.mse()
                ));
                // TimesNet's test windows: every start from 96 steps before the test split.
                let (interp_err, model_err) = impute_errors(
                    (&model, &card),
                    (&raw, &data, &normalizer),
                    val_end - 96..test_end,
                    ratio,
                    options.impute_stride,
                    seed,
                )?;
                rows.push(row(
                    &interp_err,
                    name,
                    "impute",
                    None,
                    Some(ratio),
                    "interpolation",
                ));
                let base = match options.impute_patch {
                    8 => format!("doppel_mae_{}", options.impute_size),
                    p => format!("doppel_mae_{}_p{p}", options.impute_size),
                };
                let model_name = model_name(&base, options.impute_channels_per_token);
                rows.push(row(
                    &model_err,
                    name,
                    "impute",
                    None,
                    Some(ratio),
                    &model_name,
                ));
            }
        }
    }
    Ok(rows)
}

/// Imputation errors of interpolation and of the model on the windows of 96 steps that start
/// every `stride` steps in `range` (each ending inside it), random points hidden at `ratio`
/// with a generator seeded by `seed`; errors on the hidden points, in training-standardised
/// units.
fn impute_errors(
    (model, card): (&doppel_model::model::SensorModel, &ModelCard),
    (raw, data, normalizer): (&Recording, &Recording, &Normalizer),
    range: std::ops::Range<usize>,
    ratio: f64,
    stride: usize,
    seed: u64,
) -> Result<(ErrorSums, ErrorSums)> {
    let device = Device::flex();
    let channels = raw.channels.len();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let (mut interp_err, mut model_err) = (ErrorSums::default(), ErrorSums::default());
    for start in (range.start..range.end.saturating_sub(95)).step_by(stride) {
        // The window, with random points hidden.
        let mut window = slice(raw, start, 96);
        let truth = slice(data, start, 96);
        let mut hidden = vec![vec![false; 96]; channels];
        for (hidden, observed) in hidden.iter_mut().zip(&mut window.observed) {
            for (hidden, observed) in hidden.iter_mut().zip(observed.iter_mut()) {
                if rng.random::<f64>() < ratio {
                    *hidden = true;
                    *observed = false;
                }
            }
        }
        let (filled, _) = tasks::impute(model, card, &window, &device)?;
        let filled = normalizer.apply(&filled);
        for (c, hidden) in hidden.iter().enumerate() {
            // `truth` is the window standardised; interpolation reads its shown values only.
            let interp = interpolate(&truth.values[c], &window.observed[c]);
            for t in 0..96 {
                if hidden[t] {
                    let y = truth.values[c][t];
                    interp_err.add(interp[t], y);
                    model_err.add(filled.values[c][t], y);
                }
            }
        }
    }
    Ok((interp_err, model_err))
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

/// A model (tiny unless asked) pretrained on the training split for forecasting: windows of
/// the look-back (patches of 16 steps, as PatchTST), instance-normalised.
fn pretrain_for_forecasting(
    data: &Recording,
    train_end: usize,
    val_end: usize,
    lookback: usize,
    options: &EttOptions,
    log: &mut impl FnMut(&str),
) -> Result<(doppel_model::model::SensorModel, ModelConfig)> {
    let patch = 16;
    if !lookback.is_multiple_of(patch) {
        return Err(ModelError::Settings(format!(
            "the look-back ({lookback}) must be a multiple of the patch ({patch})"
        )));
    }
    let mut config = sized(
        &options.forecast_size,
        data.channels.len(),
        patch,
        lookback / patch,
    )?;
    config.instance_norm = true;
    config.mask_ratio = options.forecast_mask_ratio;
    config.channels_per_token = options.forecast_channels_per_token;
    let windows_per_batch = if options.forecast_channel_independent {
        32 * data.channels.len()
    } else {
        32
    };
    let train = TrainConfig {
        validation_fraction: (val_end - train_end) as f64 / val_end as f64,
        channel_independent: options.forecast_channel_independent,
        ..TrainConfig::new(
            options.forecast_pretrain_steps,
            windows_per_batch,
            DEFAULT_LEARNING_RATE,
            options.seed,
        )
    };
    let device = Device::flex().autodiff();
    let (model, curve) = pretrain(&[slice(data, 0, val_end)], &config, &train, &device, |_| {})?;
    if let Some(last) = curve.last() {
        log(&format!(
            "  validation loss {:.4} (train {:.4})",
            last.validation_loss, last.train_loss
        ));
    }
    Ok((model, config))
}

/// Fine-tunes a forecasting head on the training split (validation split for choosing the
/// weights) and measures it on every test window (stride 1).
fn finetune_and_test(
    model: doppel_model::model::SensorModel,
    config: &ModelConfig,
    data: &Recording,
    (train_end, val_end, test_end): (usize, usize, usize),
    horizon: usize,
    options: &EttOptions,
    log: &mut impl FnMut(&str),
) -> Result<(ForecastEvaluation, String)> {
    let l = config.window();
    let train = TrainConfig {
        validation_fraction: (val_end - train_end) as f64 / val_end as f64,
        ..TrainConfig::new(
            options.finetune_steps,
            128,
            options.finetune_learning_rate,
            options.seed,
        )
    };
    let tuning = doppel_model::finetune::ForecastTuning {
        horizon,
        // One channel a window, as PatchTST; 2-D tokens read every channel together.
        channel_independent: config.channels_per_token == 1,
        linear: Search::default(),
        freeze_encoder: options.freeze_encoder,
        dropout: options.finetune_dropout,
        loss: options.finetune_loss,
        band_coverage: options.band_coverage,
    };
    let device = Device::flex().autodiff();
    let (forecaster, head) = doppel_model::finetune::finetune_forecast(
        model,
        config,
        &[slice(data, 0, val_end)],
        &tuning,
        &train,
        &device,
        |_| {},
    )?;
    let curve: Vec<String> = head
        .curve
        .iter()
        .map(|p| format!("{}:{:.4}/{:.4}", p.step, p.train_loss, p.validation_loss))
        .collect();
    log(&format!(
        "  validation MSE {:.4} / MAE {:.4} (linear start {:.4} / {:.4}; kept step {}, chosen \
         on {}); curve (train/validation {}) {}",
        head.validation_mse,
        head.validation_mae.unwrap_or(f64::NAN),
        head.linear_validation_mse,
        head.linear_validation_mae.unwrap_or(f64::NAN),
        head.best_step,
        head.loss.measure(),
        head.loss.measure(),
        curve.join(" ")
    ));
    // Every test window: look-backs from the end of validation on, forecasts inside test.
    let test = slice(data, val_end - l, test_end - (val_end - l));
    let evaluation = evaluate_forecaster(
        &forecaster,
        config,
        &head,
        &[test],
        1,
        options.recalibrate_steps,
        &Device::flex(),
    )?;
    let listed = |scores: &[BandScore]| -> String {
        let each: Vec<String> = scores.iter().map(BandScore::to_string).collect();
        each.join("; ")
    };
    log(&format!(
        "  {:.0} % bands on validation (second half): {}",
        100.0 * options.band_coverage,
        listed(&head.band_scores)
    ));
    log(&format!(
        "  {:.0} % bands on test: {}",
        100.0 * options.band_coverage,
        listed(&evaluation.bands)
    ));
    let settings = format!(
        "{}; kept step {}",
        head.linear_start
            .as_ref()
            .map_or_else(String::new, linear_settings),
        head.best_step
    );
    Ok((evaluation, settings))
}

/// A model of a named size, or an error that names the sizes there are.
fn sized(size: &str, channels: usize, patch: usize, patches: usize) -> Result<ModelConfig> {
    ModelConfig::sized(size, channels, patch, patches).ok_or_else(|| {
        ModelError::Settings(format!(
            "unknown size `{size}`: use tiny, small, base or large"
        ))
    })
}

/// The linear start's settings, as the JSON rows and the log give them.
fn linear_settings(c: &linear::Candidate) -> String {
    format!(
        "look-back {}, {:?}, ridge {}",
        c.lookback, c.layout, c.ridge
    )
}

/// A model pretrained on the training split (windows of 96 steps, 12 patches of 8 unless
/// the options say otherwise).
fn pretrain_for_imputation(
    raw: &Recording,
    normalizer: &Normalizer,
    train_end: usize,
    val_end: usize,
    options: &EttOptions,
) -> Result<(doppel_model::model::SensorModel, ModelCard)> {
    // Train on the training split; the validation curve uses the validation split.
    let data = normalizer.apply(&slice(raw, 0, val_end));
    let patch = options.impute_patch;
    if patch == 0 || 96 % patch != 0 {
        return Err(ModelError::Settings(format!(
            "the imputation model's patch length must divide its 96-step windows, not {patch}"
        )));
    }
    let mut config = sized(&options.impute_size, raw.channels.len(), patch, 96 / patch)?;
    config.point_mask_ratio = options.point_mask_ratio;
    config.instance_norm = options.instance_norm;
    config.interpolation_prior = options.interpolation_prior;
    config.cross_channel_prior = options.cross_channel_prior;
    config.channel_readout = options.channel_readout;
    config.mask_ratio = options.impute_mask_ratio;
    config.channels_per_token = options.impute_channels_per_token;
    let train = TrainConfig {
        validation_fraction: (val_end - train_end) as f64 / val_end as f64,
        keep_best: true,
        ..TrainConfig::new(
            options.pretrain_steps,
            32,
            DEFAULT_LEARNING_RATE,
            options.seed,
        )
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
