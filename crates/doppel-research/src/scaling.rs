//! A scaling study: pretrain several model sizes on several amounts of data, measure the
//! validation loss of each, and fit L = a·C^b + c against training compute C (LSM's §4
//! shape, at the scale one machine allows).
//!
//! Two fits come out. One over each run's final loss, as LSM reports it; at this scale it fits
//! poorly, because every size sits near the trivial loss until some thousand steps and then
//! drops, so loss follows steps more than compute. The other over the compute frontier: every
//! point of every run's validation curve, placed at the compute spent so far, keeping those no
//! cheaper point beats (the envelope of the training curves), from the point where the
//! envelope is past half of its fall on. An intermediate point of a run was taken mid-schedule
//! (its learning rate not yet decayed), so the frontier is, if anything, pessimistic.
//!
//! Every run is validated on the same windows, and trains for a share of the steps equal to
//! its share of the data (the same number of passes over its data), so that compute grows
//! with both size and data. Compute is the usual estimate, 6 × parameters × tokens. Two ways
//! to split:
//!
//! - the last part of each recording validates, and a smaller data amount keeps the most
//!   recent part of each recording's training rows. Simple, but a share is then a different
//!   stretch of time, not less of the same kind of data: on a year with seasons the small
//!   shares never see the season the validation part is in;
//! - the last recordings are held out whole (`validation_recordings`), and a data amount is a
//!   number of whole training recordings (machines, runs, years): every share covers whole
//!   recordings, so it holds less of the same kind of data.

use burn::module::Module;
use burn::prelude::*;
use serde::Serialize;

use doppel_model::data::Recording;
use doppel_model::error::{ModelError, Result};
use doppel_model::model::ModelConfig;
use doppel_model::train::{CurvePoint, DEFAULT_LEARNING_RATE, TrainConfig, pretrain};

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
    /// The last share of each recording validates (when no recording is held out).
    pub validation_fraction: f64,
    /// Recordings at the end of the list held out whole for validation; the shares are then
    /// counted in whole training recordings (the first `round(share × count)`, at least one).
    pub validation_recordings: usize,
    pub seed: u64,
}

impl ScalingOptions {
    /// How the recordings split into training and validation rows (before any share is
    /// taken): the split that sets the standardisation statistics too.
    pub fn split(&self) -> TrainConfig {
        TrainConfig {
            validation_fraction: self.validation_fraction,
            validation_recordings: self.validation_recordings,
            ..TrainConfig::default()
        }
    }
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
    /// Recordings those rows are in (whole ones when recordings are held out).
    pub training_recordings: usize,
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
            let share = share_of(recordings, options, fraction)?;
            let fraction = share.fraction;
            let steps = ((options.steps as f64) * fraction).round().max(20.0) as usize;
            let train = TrainConfig {
                validation_fraction: share.validation_fraction,
                validation_recordings: options.validation_recordings,
                // Ten points a curve: the compute frontier is drawn from them.
                eval_every: (steps / 10).max(1),
                ..TrainConfig::new(
                    steps,
                    options.batch_size,
                    DEFAULT_LEARNING_RATE,
                    options.seed,
                )
            };
            log(&format!(
                "{size}: {:.0} % of the data ({} rows{}), {steps} steps",
                fraction * 100.0,
                share.training_rows,
                share.described
            ));
            let started = std::time::Instant::now();
            let (model, curve) = pretrain(&share.recordings, &config, &train, device, |_| {})?;
            let parameters = model.num_params();
            let tokens = (steps * options.batch_size * config.tokens_per_window(channels)) as f64;
            let validation_loss = curve.last().map_or(f64::NAN, |p| p.validation_loss);
            let run = ScalingRun {
                size: size.clone(),
                parameters,
                channels_per_token: config.channels_per_token,
                data_fraction: fraction,
                training_rows: share.training_rows,
                training_recordings: share.training_recordings,
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

/// One point of a run's validation curve, at the compute spent to reach it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrontierPoint {
    pub size: String,
    pub data_fraction: f64,
    pub step: usize,
    pub compute: f64,
    pub validation_loss: f64,
}

impl ScalingRun {
    /// Compute spent by the end of `step` (every step costs the same).
    pub fn compute_at(&self, step: usize) -> f64 {
        self.compute * step as f64 / self.steps.max(1) as f64
    }
}

/// The compute frontier: of every curve point of every run, those with a lower validation loss
/// than every point that cost no more compute, cheapest first.
pub fn compute_frontier(runs: &[ScalingRun]) -> Vec<FrontierPoint> {
    let mut points: Vec<FrontierPoint> = runs
        .iter()
        .flat_map(|run| {
            run.curve.iter().map(|p| FrontierPoint {
                size: run.size.clone(),
                data_fraction: run.data_fraction,
                step: p.step,
                compute: run.compute_at(p.step),
                validation_loss: p.validation_loss,
            })
        })
        .filter(|p| p.compute > 0.0 && p.validation_loss.is_finite())
        .collect();
    // Equal compute: the lower loss first, so it alone can make the frontier.
    points.sort_by(|a, b| {
        a.compute
            .total_cmp(&b.compute)
            .then(a.validation_loss.total_cmp(&b.validation_loss))
    });
    let mut best = f64::INFINITY;
    points.retain(|p| {
        let better = p.validation_loss < best;
        best = best.min(p.validation_loss);
        better
    });
    points
}

/// The part of the frontier past its early drop: from the first point whose loss has fallen
/// at least halfway from the frontier's first loss to its last. Before that, loss sits on the
/// plateau of an untrained model, which no power law in compute describes.
pub fn past_the_drop(frontier: &[FrontierPoint]) -> &[FrontierPoint] {
    let (Some(first), Some(last)) = (frontier.first(), frontier.last()) else {
        return frontier;
    };
    let halfway = (first.validation_loss + last.validation_loss) / 2.0;
    let from = frontier
        .iter()
        .position(|p| p.validation_loss <= halfway)
        .unwrap_or(0);
    &frontier[from..]
}

/// Whether the law predicts: fitted on the cheaper points only, its error on the dearest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extrapolation {
    /// The law fitted on the cheaper points.
    pub law: PowerLaw,
    pub fitted_points: usize,
    /// Each held-out point and the law's prediction for it, cheapest first.
    pub held_out: Vec<Prediction>,
    /// Mean of |predicted − measured| / measured over the held-out points.
    pub mean_relative_error: f64,
}

/// A loss measured at some compute, and what a law predicted there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    pub compute: f64,
    pub measured: f64,
    pub predicted: f64,
}

/// Fits the law on all but the dearest third of `points` (compute, loss; at least two held
/// out, three fitted) and measures how well it predicts those: a law that only describes
/// the points it was fitted on predicts nothing about a larger model or a longer run.
pub fn extrapolation(points: &[(f64, f64)]) -> Option<Extrapolation> {
    let mut points = points.to_vec();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let held = (points.len() / 3).max(2);
    if points.len() < held + 3 {
        return None;
    }
    let (fitted, dearest) = points.split_at(points.len() - held);
    let law = fit_power_law(fitted)?;
    let held_out: Vec<Prediction> = dearest
        .iter()
        .map(|&(compute, measured)| Prediction {
            compute,
            measured,
            predicted: law.at(compute),
        })
        .collect();
    let mean_relative_error = held_out
        .iter()
        .map(|p| (p.predicted - p.measured).abs() / p.measured)
        .sum::<f64>()
        / held_out.len() as f64;
    Some(Extrapolation {
        law,
        fitted_points: fitted.len(),
        held_out,
        mean_relative_error,
    })
}

/// The recordings one run trains and validates on.
struct Share {
    /// The share of the training data taken: the one asked for, or the nearest whole number
    /// of recordings.
    fraction: f64,
    recordings: Vec<Recording>,
    training_rows: usize,
    training_recordings: usize,
    /// For [`TrainConfig::validation_fraction`] when no recording is held out.
    validation_fraction: f64,
    /// How many recordings the share trains on, when it counts them.
    described: String,
}

/// A `fraction` of the training data, the validation data whole.
fn share_of(recordings: &[Recording], options: &ScalingOptions, fraction: f64) -> Result<Share> {
    let training_ends = options.split().training_ends(recordings)?;
    let held_out = options.validation_recordings;
    if held_out == 0 {
        // Keep the validation part whole and the most recent `fraction` of the rest.
        let (mut kept, mut training_rows, mut validation_rows) = (Vec::new(), 0, 0);
        for (rec, &cut) in recordings.iter().zip(&training_ends) {
            let from = cut - ((cut as f64) * fraction) as usize;
            training_rows += cut - from;
            validation_rows += rec.len() - cut;
            kept.push(tail(rec, from));
        }
        return Ok(Share {
            fraction,
            recordings: kept,
            training_rows,
            training_recordings: recordings.len(),
            validation_fraction: validation_rows as f64 / (validation_rows + training_rows) as f64,
            described: String::new(),
        });
    }
    let training = recordings.len() - held_out;
    let count = ((training as f64) * fraction).round().max(1.0) as usize;
    let kept: Vec<Recording> = recordings[..count]
        .iter()
        .chain(&recordings[training..])
        .cloned()
        .collect();
    Ok(Share {
        fraction: count as f64 / training as f64,
        training_rows: recordings[..count].iter().map(Recording::len).sum(),
        training_recordings: count,
        recordings: kept,
        validation_fraction: TrainConfig::default().validation_fraction,
        described: format!(" in {count} of {training} file(s)"),
    })
}

/// The recording from slot `from` on.
fn tail(rec: &Recording, from: usize) -> Recording {
    rec.slice(from, rec.len())
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

    /// On points of a true law the cheaper two thirds predict the dearest third; when the
    /// dearest points bend away from the law (a floor the cheap ones do not show), the
    /// error says so.
    #[test]
    fn the_extrapolation_check_predicts_a_true_law_and_catches_a_bend() {
        let truth = PowerLaw {
            a: 40.0,
            b: -0.3,
            c: 0.2,
            rmse: 0.0,
        };
        let computes = [1e9, 2e9, 4e9, 1e10, 3e10, 1e11, 3e11, 1e12, 3e12];
        let points: Vec<(f64, f64)> = computes.iter().map(|&c| (c, truth.at(c))).collect();
        let check = extrapolation(&points).unwrap();
        assert_eq!((check.fitted_points, check.held_out.len()), (6, 3));
        assert!(check.mean_relative_error < 0.01, "{check:?}");
        assert_eq!(
            check.held_out[0].compute, 3e11,
            "the dearest held out, cheapest first"
        );

        // The dearest three stall at the loss of the 6th point.
        let mut bent = points.clone();
        for p in &mut bent[6..] {
            p.1 = points[5].1;
        }
        let check = extrapolation(&bent).unwrap();
        assert!(check.mean_relative_error > 0.03, "{check:?}");
        assert!(
            extrapolation(&points[..4]).is_none(),
            "3 fitted + 2 held out at least"
        );
    }

    fn run(size: &str, compute: f64, losses: &[f64]) -> ScalingRun {
        let steps = losses.len() * 10;
        ScalingRun {
            size: size.into(),
            parameters: 1,
            channels_per_token: 1,
            data_fraction: 1.0,
            training_rows: 0,
            training_recordings: 1,
            steps,
            tokens: 0.0,
            compute,
            validation_loss: *losses.last().unwrap(),
            seconds: 0.0,
            curve: losses
                .iter()
                .enumerate()
                .map(|(i, &l)| CurvePoint {
                    step: (i + 1) * 10,
                    train_loss: l,
                    validation_loss: l,
                    learning_rate: 0.0,
                })
                .collect(),
        }
    }

    #[test]
    fn the_frontier_keeps_only_points_no_cheaper_point_beats() {
        // A small run (compute 4 at its end) and a large one (compute 40): the large run's
        // early points cost 10 and 20 and lose to the small run's end; its later points win.
        let runs = [
            run("tiny", 4.0, &[1.0, 0.9, 0.7, 0.6]),
            run("big", 40.0, &[1.0, 0.65, 0.5, 0.3]),
        ];
        let frontier = compute_frontier(&runs);
        let kept: Vec<(f64, f64)> = frontier
            .iter()
            .map(|p| (p.compute, p.validation_loss))
            .collect();
        assert_eq!(
            kept,
            vec![
                (1.0, 1.0),
                (2.0, 0.9),
                (3.0, 0.7),
                (4.0, 0.6),
                (30.0, 0.5),
                (40.0, 0.3)
            ]
        );
        assert_eq!(frontier[4].size, "big");
        assert_eq!(frontier[4].step, 30);
        // Halfway from 1.0 to 0.3 is 0.65: the fit starts at the first point at or under it.
        let past = past_the_drop(&frontier);
        assert_eq!(past.first().map(|p| p.validation_loss), Some(0.6));
        assert_eq!(past.len(), 3);
        assert!(past_the_drop(&[]).is_empty());
    }

    #[test]
    fn a_power_law_frontier_is_recovered_past_its_plateau() {
        // Runs that sit on a plateau of 1.0 for their first points, then follow L = 30·C^-0.3
        // + 0.1: the fit past the drop finds the law the plateau would hide.
        let law = PowerLaw {
            a: 30.0,
            b: -0.3,
            c: 0.1,
            rmse: 0.0,
        };
        let runs: Vec<ScalingRun> = [1e9, 1e10, 1e11]
            .iter()
            .map(|&total| {
                let losses: Vec<f64> = (1..=10)
                    .map(|i| {
                        let c = total * i as f64 / 10.0;
                        if i <= 3 { 1.0 } else { law.at(c).min(1.0) }
                    })
                    .collect();
                run("any", total, &losses)
            })
            .collect();
        let frontier = compute_frontier(&runs);
        let points: Vec<(f64, f64)> = past_the_drop(&frontier)
            .iter()
            .map(|p| (p.compute, p.validation_loss))
            .collect();
        let fit = fit_power_law(&points).unwrap();
        assert!((fit.b - law.b).abs() < 0.03, "{fit:?}");
        assert!(fit.rmse < 0.01, "{fit:?}");
    }
}
