//! A scaling study: pretrain several model sizes on several amounts of data, measure the
//! validation loss of each, and fit L = a·C^b + c against training compute C (LSM's §4
//! shape, at the scale one machine allows).
//!
//! Every run is validated on the same windows (the last part of each recording); a smaller
//! data amount keeps the most recent part of the training data, and trains for
//! proportionally fewer steps (the same number of passes over its data), so that compute
//! grows with both size and data. Compute is the usual estimate, 6 × parameters × tokens.

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;

use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::model::ModelConfig;
use crate::train::{CurvePoint, DEFAULT_LEARNING_RATE, TrainConfig, pretrain};

#[derive(Debug, Clone)]
pub struct ScalingOptions {
    pub sizes: Vec<String>,
    /// Shares of the training data, largest first or not.
    pub fractions: Vec<f64>,
    /// Training steps with all the data; a run on a share f takes f of them.
    pub steps: usize,
    pub batch_size: usize,
    pub patch_len: usize,
    pub patches: usize,
    /// Channels per token (2-D patches above 1): fewer, larger tokens, so more runs fit.
    pub channels_per_token: usize,
    pub validation_fraction: f64,
    pub seed: u64,
}

/// One run of the study.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScalingRun {
    pub size: String,
    pub parameters: usize,
    /// Channels per token (1, or K for 2-D patches).
    pub channels_per_token: usize,
    pub data_fraction: f64,
    /// Grid steps of training data the run could draw windows from.
    pub training_rows: usize,
    pub steps: usize,
    pub tokens: f64,
    /// Training compute, FLOPs (6 × parameters × tokens).
    pub compute: f64,
    pub validation_loss: f64,
    pub seconds: f64,
    pub curve: Vec<CurvePoint>,
}

/// L = a·C^b + c, and how well it fits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PowerLaw {
    pub a: f64,
    pub b: f64,
    pub c: f64,
    /// Root-mean-square error of the fit over the runs.
    pub rmse: f64,
}

impl PowerLaw {
    pub fn at(&self, compute: f64) -> f64 {
        self.a * compute.powf(self.b) + self.c
    }
}

/// Runs the study; `log` hears each run as it starts and ends.
pub fn study(
    recordings: &[Recording],
    options: &ScalingOptions,
    device: &Device,
    mut log: impl FnMut(&str),
) -> Result<Vec<ScalingRun>> {
    let channels = recordings
        .first()
        .map(|r| r.channels.len())
        .ok_or_else(|| ModelError::Settings("no recordings to study".into()))?;
    let mut runs = Vec::new();
    for size in &options.sizes {
        let config = ModelConfig {
            channels_per_token: options.channels_per_token,
            ..ModelConfig::sized(size, channels, options.patch_len, options.patches).ok_or_else(
                || {
                    ModelError::Settings(format!(
                        "unknown size `{size}`: use tiny, small, base or large"
                    ))
                },
            )?
        };
        for &fraction in &options.fractions {
            if !(fraction > 0.0 && fraction <= 1.0) {
                return Err(ModelError::Settings(format!(
                    "data fraction {fraction}: give shares in (0, 1]"
                )));
            }
            // Keep the validation part whole and the most recent `fraction` of the rest.
            let (mut kept, mut training_rows, mut validation_rows) = (Vec::new(), 0, 0);
            for rec in recordings {
                let cut = ((rec.len() as f64) * (1.0 - options.validation_fraction)) as usize;
                let from = cut - ((cut as f64) * fraction) as usize;
                training_rows += cut - from;
                validation_rows += rec.len() - cut;
                kept.push(tail(rec, from));
            }
            let steps = ((options.steps as f64) * fraction).round().max(20.0) as usize;
            let train = TrainConfig {
                validation_fraction: validation_rows as f64
                    / (validation_rows + training_rows) as f64,
                eval_every: (steps / 5).max(1),
                ..TrainConfig::new(
                    steps,
                    options.batch_size,
                    DEFAULT_LEARNING_RATE,
                    options.seed,
                )
            };
            log(&format!(
                "{size}: {:.0} % of the data ({training_rows} rows), {steps} steps",
                fraction * 100.0
            ));
            let started = std::time::Instant::now();
            let (model, curve) = pretrain(&kept, &config, &train, device, |_| {})?;
            let parameters = model.num_params();
            let tokens = (steps * options.batch_size * config.tokens_per_window(channels)) as f64;
            let validation_loss = curve.last().map_or(f64::NAN, |p| p.validation_loss);
            let run = ScalingRun {
                size: size.clone(),
                parameters,
                channels_per_token: config.channels_per_token,
                data_fraction: fraction,
                training_rows,
                steps,
                tokens,
                compute: 6.0 * parameters as f64 * tokens,
                validation_loss,
                seconds: started.elapsed().as_secs_f64(),
                curve,
            };
            log(&format!(
                "  validation loss {validation_loss:.4} ({parameters} parameters, {:.2e} FLOPs, {:.0} s)",
                run.compute, run.seconds
            ));
            runs.push(run);
        }
    }
    Ok(runs)
}

/// The recording from slot `from` on.
fn tail(rec: &Recording, from: usize) -> Recording {
    Recording {
        source: rec.source.clone(),
        start_ns: rec.time_ns(from),
        step_ns: rec.step_ns,
        channels: rec.channels.clone(),
        values: rec.values.iter().map(|v| v[from..].to_vec()).collect(),
        observed: rec.observed.iter().map(|o| o[from..].to_vec()).collect(),
    }
}

/// Fits L = a·C^b + c by least squares. For each candidate floor c below the lowest loss,
/// log(L − c) = log a + b·log C is a straight line (closed form); the c whose line fits L
/// best wins. Three parameters and a handful of points need no optimisation crate.
pub fn fit_power_law(points: &[(f64, f64)]) -> Option<PowerLaw> {
    let points: Vec<(f64, f64)> = points
        .iter()
        .copied()
        .filter(|(c, l)| c.is_finite() && *c > 0.0 && l.is_finite())
        .collect();
    if points.len() < 3 {
        return None;
    }
    let lowest = points.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let mut best: Option<PowerLaw> = None;
    for i in 0..400 {
        // Floors from 0 up to just under the lowest loss.
        let c = lowest * (i as f64 / 400.0);
        let xs: Vec<f64> = points.iter().map(|p| p.0.ln()).collect();
        let ys: Vec<f64> = points.iter().map(|p| (p.1 - c).ln()).collect();
        let n = xs.len() as f64;
        let (mx, my) = (xs.iter().sum::<f64>() / n, ys.iter().sum::<f64>() / n);
        let sxx: f64 = xs.iter().map(|x| (x - mx).powi(2)).sum();
        if sxx == 0.0 {
            return None;
        }
        let sxy: f64 = xs.iter().zip(&ys).map(|(x, y)| (x - mx) * (y - my)).sum();
        let b = sxy / sxx;
        let a = (my - b * mx).exp();
        let law = PowerLaw { a, b, c, rmse: 0.0 };
        let rmse = (points
            .iter()
            .map(|&(cc, l)| (law.at(cc) - l).powi(2))
            .sum::<f64>()
            / n)
            .sqrt();
        if best.is_none_or(|b| rmse < b.rmse) {
            best = Some(PowerLaw { rmse, ..law });
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_recovers_a_known_power_law() {
        let truth = PowerLaw {
            a: 40.0,
            b: -0.3,
            c: 0.2,
            rmse: 0.0,
        };
        let points: Vec<(f64, f64)> = [1e9, 3e9, 1e10, 3e10, 1e11, 1e12]
            .iter()
            .map(|&c| (c, truth.at(c)))
            .collect();
        let fit = fit_power_law(&points).unwrap();
        assert!((fit.b - truth.b).abs() < 0.02, "{fit:?}");
        assert!((fit.c - truth.c).abs() < 0.01, "{fit:?}");
        assert!(fit.rmse < 1e-3, "{fit:?}");
        assert!(fit_power_law(&points[..2]).is_none());
    }
}
