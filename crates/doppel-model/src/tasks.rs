//! What a twin asks of the model: fill gaps, forecast, score anomalies, embed windows.
//! Each task cuts the input into model-sized windows, hides the patches the task is about,
//! and reads the reconstruction back in the data's own units.

use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::batch::{Mask, make_batch};
use crate::card::ModelCard;
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::forecaster::{Forecaster, predict};
use crate::model::SensorModel;
use crate::train::cut;

/// Checks a recording against the model and returns it in the model's channel order, as it
/// is and standardised. A recording shorter than `min_len` steps (a window, or a forecast's
/// look-back) is padded at its start with steps that observed nothing, read by the model as
/// a gap; the third value is how many, for the task to leave out of its answer.
fn prepare(
    card: &ModelCard,
    rec: &Recording,
    min_len: usize,
) -> Result<(Recording, Recording, usize)> {
    let mut rec = rec.select(&card.channels)?;
    if rec.step_ns != card.step_ns {
        return Err(ModelError::Input {
            path: rec.source.clone(),
            message: format!(
                "the file's rows are {} s apart, the model's grid is {} s",
                rec.step_ns as f64 / 1e9,
                card.step_ns as f64 / 1e9
            ),
        });
    }
    let pad = min_len.saturating_sub(rec.len());
    if pad > 0 {
        rec = rec.padded_front(pad);
    }
    let standardised = card.normalizer.apply(&rec);
    Ok((rec, standardised, pad))
}

/// Runs the model on one window with a mask; returns the reconstruction [L × P], flat, in
/// the recording's standardised units.
fn reconstruct(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    start: usize,
    mask: &Mask,
    device: &Device,
) -> Vec<f32> {
    let ids: Vec<usize> = (0..card.channels.len()).collect();
    let window = cut(rec, start, card.config.window(), &ids);
    // Task masks hide fixed patches; the generator only breaks ties, so any seed will do.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let batch = make_batch(&[window], &card.config, mask, &mut rng, device);
    let out = model
        .forward(&batch.tokens)
        .into_data()
        .try_into_vec::<f32>()
        .expect("the model outputs f32");
    unscale(out, &batch.scale[0], &card.config)
}

/// From a window's instance-normalised units back to the recording's standardised ones.
fn unscale(
    mut out: Vec<f32>,
    scale: &[(f32, f32)],
    config: &crate::model::ModelConfig,
) -> Vec<f32> {
    let per_channel = config.patches * config.patch_len;
    for (c, (mean, sd)) in scale.iter().enumerate() {
        for v in &mut out[c * per_channel..(c + 1) * per_channel] {
            *v = *v * sd + mean;
        }
    }
    out
}

/// Fills every missing value. Returns the filled recording and, per channel and step,
/// whether the value was filled in.
pub fn impute(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    device: &Device,
) -> Result<(Recording, Vec<Vec<bool>>)> {
    let w = card.config.window();
    let (p, n) = (card.config.patch_len, card.config.patches);
    let (mut out, std_rec, pad) = prepare(card, rec, w)?;
    let filled: Vec<Vec<bool>> = out
        .observed
        .iter()
        .map(|o| o.iter().map(|x| !x).collect())
        .collect();
    for start in window_starts(std_rec.len(), w) {
        // A model that learned to fill points inside a patch keeps partly observed patches.
        let mask = if card.config.point_mask_ratio > 0.0 {
            Mask::Holes
        } else {
            Mask::Gaps
        };
        let recon = reconstruct(model, card, &std_rec, start, &mask, device);
        for c in 0..out.channels.len() {
            for i in 0..w {
                let t = start + i;
                if !out.observed[c][t] {
                    let token = c * n + i / p;
                    let v = recon[token * p + i % p];
                    out.values[c][t] = card.normalizer.invert(c, v);
                }
            }
        }
    }
    for o in &mut out.observed {
        o.iter_mut().for_each(|x| *x = true);
    }
    let out = out.slice(pad, out.len());
    let filled = filled.into_iter().map(|f| f[pad..].to_vec()).collect();
    Ok((out, filled))
}

/// How a channel's gaps were filled by [`impute_checked`], and why.
#[derive(Debug, Clone, PartialEq)]
pub struct FillChoice {
    pub channel: String,
    /// Mean squared error (data units) on observed values hidden for the check, of the
    /// model's fill and of linear interpolation; `None` when the channel had too few.
    pub model_mse: Option<f64>,
    pub interpolation_mse: Option<f64>,
    /// Whether the model filled this channel (else linear interpolation did).
    pub by_model: bool,
}

/// Share of a channel's observed values hidden to check the model against interpolation.
const CHECK_SHARE: f64 = 0.05;

/// [`impute`], checked on the file itself: a share of its observed values, in runs as long
/// as its real gaps, is hidden and filled both by the model and by linear interpolation;
/// each channel's real gaps are then filled by whichever came closer. A model that was not
/// trained to fill gaps can so never answer worse than the trivial baseline it is
/// measured against, and says where it lost.
pub fn impute_checked(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    device: &Device,
) -> Result<(Recording, Vec<Vec<bool>>, Vec<FillChoice>)> {
    let rec = rec.select(&card.channels)?;
    let (filled, was_missing) = impute(model, card, &rec, device)?;
    // The check: hide runs of observed values, fill them both ways, compare with the truth.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0x1A7E);
    let mut check = rec.clone();
    let mut hidden: Vec<Vec<usize>> = vec![Vec::new(); rec.channels.len()];
    for (c, hid) in hidden.iter_mut().enumerate() {
        let runs = missing_runs(&rec.observed[c]);
        let observed = rec.observed[c].iter().filter(|&&o| o).count();
        let target = (observed as f64 * CHECK_SHARE).ceil() as usize;
        let mut tries = 0;
        while hid.len() < target && tries < 20 * target.max(1) {
            tries += 1;
            let run = if runs.is_empty() {
                1
            } else {
                runs[rng.random_range(0..runs.len())]
            };
            let start = rng.random_range(0..rec.len());
            let end = (start + run).min(rec.len());
            // Only runs between observed values: a real gap has both its ends.
            let inside = start > 0 && end < rec.len();
            if inside && (start - 1..=end).all(|t| check.observed[c][t]) {
                for t in start..end {
                    check.observed[c][t] = false;
                    hid.push(t);
                }
            }
        }
    }
    let (by_model, _) = impute(model, card, &check, device)?;
    let mut out = filled;
    let mut choices = Vec::with_capacity(rec.channels.len());
    for (c, hid) in hidden.iter().enumerate() {
        let line = crate::baselines::interpolate(&check.values[c], &check.observed[c]);
        let mse = |fill: &dyn Fn(usize) -> f32| -> Option<f64> {
            (hid.len() >= 10).then(|| {
                hid.iter()
                    .map(|&t| (fill(t) as f64 - rec.values[c][t] as f64).powi(2))
                    .sum::<f64>()
                    / hid.len() as f64
            })
        };
        let model_mse = mse(&|t| by_model.values[c][t]);
        let interpolation_mse = mse(&|t| line[t]);
        // The model keeps a channel unless interpolation measured better.
        let use_model = match (model_mse, interpolation_mse) {
            (Some(m), Some(i)) => m <= i,
            _ => true,
        };
        if !use_model {
            let line = crate::baselines::interpolate(&rec.values[c], &rec.observed[c]);
            for (t, &gap) in was_missing[c].iter().enumerate() {
                if gap {
                    out.values[c][t] = line[t];
                }
            }
        }
        choices.push(FillChoice {
            channel: rec.channels[c].clone(),
            model_mse,
            interpolation_mse,
            by_model: use_model,
        });
    }
    Ok((out, was_missing, choices))
}

/// The lengths of a channel's runs of missing values between observed ones.
fn missing_runs(observed: &[bool]) -> Vec<usize> {
    let mut runs = Vec::new();
    let mut run = 0;
    let mut seen = false;
    for &o in observed {
        if o {
            if seen && run > 0 {
                runs.push(run);
            }
            seen = true;
            run = 0;
        } else {
            run += 1;
        }
    }
    runs
}

/// Forecasts the `horizon` steps after the end of the recording: `[channel][step]`.
pub fn forecast(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    horizon: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let (p, n) = (card.config.patch_len, card.config.patches);
    let tail = horizon.div_ceil(p);
    if horizon == 0 || tail >= n {
        return Err(ModelError::Settings(format!(
            "the horizon must be 1 to {} steps for this model (its window is {} patches of {p})",
            (n - 1) * p,
            n
        )));
    }
    let context = (n - tail) * p;
    let (_, std_rec, _) = prepare(card, rec, context)?;
    // The window: the last `context` steps, then `tail` patches of nothing to fill in.
    let mut window = std_rec.clone();
    let from = std_rec.len() - context;
    for c in 0..window.channels.len() {
        window.values[c] = std_rec.values[c][from..].to_vec();
        window.values[c].resize(n * p, 0.0);
        window.observed[c] = std_rec.observed[c][from..].to_vec();
        window.observed[c].resize(n * p, false);
    }
    let recon = reconstruct(model, card, &window, 0, &Mask::Tail(tail), device);
    Ok((0..window.channels.len())
        .map(|c| {
            (0..horizon)
                .map(|h| {
                    let i = context + h;
                    card.normalizer
                        .invert(c, recon[(c * n + i / p) * p + i % p])
                })
                .collect()
        })
        .collect())
}

/// A forecast from a fine-tuned head: the point forecast and its error bands, in the data's
/// units, `[channel][step]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Forecast {
    pub values: Vec<Vec<f32>>,
    /// (level, values): the `level` quantile of what will be seen, from the head's errors
    /// on its validation windows (split-conformal), scaled by how much the look-back moves
    /// where validation chose so (`bands.rs`).
    pub bands: Vec<(f64, Vec<Vec<f32>>)>,
    /// Where the bands follow drift: each channel's factor on the calibrated bands' width
    /// (above 1: the recent forecasts missed more than validation's did).
    pub width_factors: Option<Vec<f32>>,
}

/// How a forecast's bands follow drift, each rule on the head's forecasts over the
/// recording's own last steps whose truth it holds. Neither: the bands as calibrated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FollowDrift {
    /// Hold the bands' share of the last this many steps' forecasts (`bands::Recalibrator`).
    pub recalibrate: Option<usize>,
    /// Adapt after each of the last this many steps' forecasts by how often it missed
    /// (`bands::Adapter`); on top of the recalibration when both are asked.
    pub adapt: Option<usize>,
}

impl FollowDrift {
    /// The bands as calibrated.
    pub const NOT: FollowDrift = FollowDrift {
        recalibrate: None,
        adapt: None,
    };
}

/// Forecasts the `horizon` steps after the end of the recording with a fine-tuned head
/// (at most the head's horizon), with error bands, widened or narrowed per channel as
/// `follow` asks.
pub fn forecast_with_head(
    forecaster: &Forecaster,
    card: &ModelCard,
    rec: &Recording,
    horizon: usize,
    follow: FollowDrift,
    device: &Device,
) -> Result<Forecast> {
    let Some(head) = &card.forecast_head else {
        return Err(ModelError::Settings(
            "this model has no forecasting head: run `doppel model finetune --task forecast`"
                .into(),
        ));
    };
    if horizon == 0 || horizon > head.horizon {
        return Err(ModelError::Settings(format!(
            "the horizon must be 1 to {} steps: the head was fine-tuned for {}",
            head.horizon, head.horizon
        )));
    }
    let w = card.config.window();
    let (_, std_rec, _) = prepare(card, rec, w)?;
    let ids: Vec<usize> = (0..std_rec.channels.len()).collect();
    let window = cut(&std_rec, std_rec.len() - w, w, &ids);
    let h = head.horizon;
    let bands = head.chosen_bands();
    let mut offsets = bands.offsets(&window, h);
    let width_factors = if follow == FollowDrift::NOT {
        None
    } else {
        let factors = recent_factors(forecaster, card, &std_rec, &bands, follow, device)?;
        offsets = crate::bands::widened(&offsets, &factors, h);
        Some(factors)
    };
    let point = predict(
        forecaster,
        &card.config,
        head.channel_independent,
        &[window],
        device,
    )
    .remove(0);
    let in_units = |offset: &dyn Fn(usize, usize) -> f32| -> Vec<Vec<f32>> {
        (0..ids.len())
            .map(|c| {
                (0..horizon)
                    .map(|k| card.normalizer.invert(c, point[c * h + k] + offset(c, k)))
                    .collect()
            })
            .collect()
    };
    Ok(Forecast {
        values: in_units(&|_, _| 0.0),
        bands: bands
            .bands
            .iter()
            .zip(&offsets)
            .map(|(band, offset)| (band.level, in_units(&|c, k| offset[c * h + k])))
            .collect(),
        width_factors,
    })
}

/// The forecasts following drift reads at most: enough to set one factor a channel.
const RECENT_FORECASTS: usize = 512;

/// Each channel's factor on the bands' width from the head's forecasts whose origins lie in
/// the last steps of the (standardised) recording that `follow` names and still hold their
/// whole truth (at most `RECENT_FORECASTS` of them, evenly spaced).
fn recent_factors(
    forecaster: &Forecaster,
    card: &ModelCard,
    std_rec: &Recording,
    bands: &crate::bands::ScaledBands,
    follow: FollowDrift,
    device: &Device,
) -> Result<Vec<f32>> {
    let head = card.forecast_head.as_ref().expect("the caller checked");
    let (w, h, len) = (card.config.window(), head.horizon, std_rec.len());
    let channels = std_rec.channels.len();
    if len < w + h {
        return Err(ModelError::Settings(format!(
            "bands that follow drift need a forecast whose truth the file holds: at least \
             {} rows (look-back {w} + horizon {h}); the file has {len}",
            w + h
        )));
    }
    let last = len - h;
    let span = |steps: Option<usize>| last.saturating_sub(steps.unwrap_or(0).saturating_sub(1));
    let adapt_from = follow.adapt.map(|s| span(Some(s)));
    let first = span(follow.recalibrate)
        .min(adapt_from.unwrap_or(last))
        .max(w);
    let stride = (last - first + 1).div_ceil(RECENT_FORECASTS).max(1);
    let origins: Vec<usize> = (first..=last).step_by(stride).collect();
    let ids: Vec<usize> = (0..channels).collect();
    let windows: Vec<_> = origins
        .iter()
        .map(|&o| cut(std_rec, o - w, w, &ids))
        .collect();
    let predicted = predict(
        forecaster,
        &card.config,
        head.channel_independent,
        &windows,
        device,
    );
    let mut follower = crate::bands::Follower::new(
        follow.recalibrate,
        adapt_from,
        channels,
        h,
        bands.coverage(),
    );
    for ((&origin, window), p) in origins.iter().zip(&windows).zip(&predicted) {
        let errors: Vec<f32> = (0..channels * h)
            .map(|i| {
                let (c, at) = (i / h, origin + i % h);
                if std_rec.observed[c][at] {
                    std_rec.values[c][at] - p[i]
                } else {
                    f32::NAN
                }
            })
            .collect();
        follower.factors_at(origin); // what this forecast was given, for the adapter
        follower.record(
            origin,
            crate::bands::needed_factors(&bands.offsets(window, h), &errors),
        );
    }
    Ok(follower.factors_at(len))
}

/// Turns into which every token is hidden exactly once when scoring.
const SCORE_TURNS: usize = 4;

/// Anomaly scores: per step, how surprised the model is (1 = as surprised as on the
/// calibration rows, on average), whether that passes the threshold set on the calibration
/// rows, and each sensor's share of the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    pub score: Vec<f32>,
    pub flag: Vec<bool>,
    /// `contribution[c][t]`; the contributions of a step add up to its score.
    pub contribution: Vec<Vec<f32>>,
    pub threshold: f32,
}

/// Scores every step of a recording. The first `calibrate_rows` rows are taken as normal:
/// each sensor's typical reconstruction error and the flag threshold (their 99.5th
/// percentile score) come from them.
pub fn score(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    calibrate_rows: usize,
    device: &Device,
) -> Result<Scores> {
    let w = card.config.window();
    let len = rec.len();
    // A file shorter than a window calibrates on what it has.
    let least = w.min(len);
    if calibrate_rows < least || calibrate_rows > len {
        return Err(ModelError::Settings(format!(
            "--calibrate-rows must be between {least} (a window, or the whole file) and the \
             file's {len} rows"
        )));
    }
    let errors = reconstruction_errors(model, card, rec, device)?;
    let calibration = Calibration::fit(&errors, 0..calibrate_rows, 0.995);
    Ok(calibration.apply(&errors))
}

/// The squared reconstruction error of every value (standardised units), each value hidden
/// from the model once: `error[c][t]`, NaN where nothing was observed.
pub fn reconstruction_errors(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let w = card.config.window();
    let (p, n) = (card.config.patch_len, card.config.patches);
    let (_, std_rec, pad) = prepare(card, rec, w)?;
    let c_count = std_rec.channels.len();
    let len = std_rec.len();
    let mut error = vec![vec![f32::NAN; len]; c_count];
    let l = c_count * n;
    let per_token = card.config.channels_per_token;
    for start in window_starts(len, w) {
        for turn in 0..SCORE_TURNS {
            // Channel c's patch k is hidden in turn (g + k) mod turns, g = c's token group
            // (c itself with one channel a token): spread over channels and time, and whole
            // tokens at a time, as pretraining hid them.
            let hide: Vec<usize> = (0..l)
                .filter(|tk| (tk / n / per_token + tk % n) % SCORE_TURNS == turn)
                .collect();
            let recon = reconstruct(
                model,
                card,
                &std_rec,
                start,
                &Mask::Tokens(hide.clone()),
                device,
            );
            for &tk in &hide {
                let (c, k) = (tk / n, tk % n);
                for i in 0..p {
                    let t = start + k * p + i;
                    if std_rec.observed[c][t] {
                        let d = recon[tk * p + i] - std_rec.values[c][t];
                        error[c][t] = d * d;
                    }
                }
            }
        }
    }
    for e in &mut error {
        e.drain(..pad);
    }
    Ok(error)
}

/// What normal looks like: each sensor's typical error and the score above which a step
/// is flagged.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    pub typical: Vec<f32>,
    pub threshold: f32,
}

impl Calibration {
    /// From the errors of `rows` taken as normal; the threshold is the `quantile` of their
    /// scores.
    pub fn fit(errors: &[Vec<f32>], rows: std::ops::Range<usize>, quantile: f64) -> Self {
        let typical: Vec<f32> = errors
            .iter()
            .map(|e| {
                let seen: Vec<f32> = e[rows.clone()]
                    .iter()
                    .copied()
                    .filter(|x| x.is_finite())
                    .collect();
                (seen.iter().sum::<f32>() / seen.len().max(1) as f32).max(1e-6)
            })
            .collect();
        let mut calibration = Calibration {
            typical,
            threshold: f32::INFINITY,
        };
        let mut normal = calibration.apply(errors).score[rows].to_vec();
        calibration.threshold = quantile_of(&mut normal, quantile);
        calibration
    }

    /// Scores, flags and per-sensor contributions of every step.
    pub fn apply(&self, errors: &[Vec<f32>]) -> Scores {
        let c_count = errors.len();
        let len = errors.first().map_or(0, Vec::len);
        let mut contribution = vec![vec![0.0f32; len]; c_count];
        let mut score = vec![0.0f32; len];
        for t in 0..len {
            let seen = (0..c_count)
                .filter(|&c| errors[c][t].is_finite())
                .count()
                .max(1) as f32;
            for c in 0..c_count {
                if errors[c][t].is_finite() {
                    contribution[c][t] = errors[c][t] / self.typical[c] / seen;
                    score[t] += contribution[c][t];
                }
            }
        }
        let flag = score.iter().map(|&s| s > self.threshold).collect();
        Scores {
            score,
            flag,
            contribution,
            threshold: self.threshold,
        }
    }
}

/// The `q` quantile of `values` (sorted in place; the nearest rank below).
pub fn quantile_of<T: Copy + PartialOrd>(values: &mut [T], q: f64) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values[((values.len() - 1) as f64 * q) as usize]
}

/// Window starts covering `len` steps: every `w`, plus one aligned to the end.
fn window_starts(len: usize, w: usize) -> Vec<usize> {
    let mut starts: Vec<usize> = (0..=len - w).step_by(w).collect();
    if starts.last() != Some(&(len - w)) {
        starts.push(len - w);
    }
    starts
}

/// How many values [`embed`] gives per window.
pub fn embedding_width(config: &crate::model::ModelConfig) -> usize {
    2 * config.d_model
}

/// One embedding per window of the model's length: [`embed_windows`].
pub fn embed(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    stride: usize,
    device: &Device,
) -> Result<Vec<(usize, usize, Vec<f32>)>> {
    embed_windows(model, card, rec, card.config.window(), stride, device)
}

/// One embedding per window of `window` steps (at most the model's window; a shorter one is
/// read as the model's window that began with a gap), every `stride` steps; a recording
/// shorter than `window` is one window. The mean and the standard deviation of the
/// encoder's outputs over the window's tokens, side by side (2 × d values).
/// Returns (first step, last step, vector) per window.
pub fn embed_windows(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    window: usize,
    stride: usize,
    device: &Device,
) -> Result<Vec<(usize, usize, Vec<f32>)>> {
    let w = card.config.window();
    if stride == 0 {
        return Err(ModelError::Settings("--stride must be at least 1".into()));
    }
    if window == 0 || window > w {
        return Err(ModelError::Settings(format!(
            "windows of 1 to {w} steps for this model ({} patches of {}), not {window}",
            card.config.patches, card.config.patch_len
        )));
    }
    let (_, std_rec, pad) = prepare(card, rec, window)?;
    let ids: Vec<usize> = (0..std_rec.channels.len()).collect();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let mut out = Vec::new();
    for start in (0..=std_rec.len() - window).step_by(stride) {
        let piece = std_rec
            .slice(start, start + window)
            .padded_front(w - window);
        let cut_window = cut(&piece, 0, w, &ids);
        let batch = make_batch(&[cut_window], &card.config, &Mask::Gaps, &mut rng, device);
        let encoded = model.encode(&batch.tokens); // [1, K, d]
        let mean = encoded.clone().mean_dim(1); // [1, 1, d]
        // How the tokens differ, not only where they sit on average: a mean alone washes
        // out rhythm and spread, which probes need.
        let spread = (encoded - mean.clone()).powf_scalar(2.0).mean_dim(1).sqrt();
        let vector = Tensor::cat(vec![mean, spread], 2)
            .into_data()
            .try_into_vec::<f32>()
            .expect("the model outputs f32");
        // In the recording's own steps, the padding left out.
        let first = start.saturating_sub(pad);
        out.push((first, start + window - 1 - pad, vector));
    }
    Ok(out)
}
