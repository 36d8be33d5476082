//! The channel read-out: a value missing at a step where every other channel is shown is
//! read from those channels by a C × C linear map, and blended with the network's answer by
//! a learned share per channel (`ModelConfig::channel_readout`).
//!
//! Its start is each channel's least-squares fit on the others over the training rows, in
//! closed form (ridge regression from the channels' sums of products), with the penalty,
//! and whether to keep the fit at all, chosen on the validation rows. Learned from zero at
//! the network's rate the map crawled (on the sines the rebuilt channel's error went 0.215
//! → 0.178 in 600 steps, docs/BENCHMARKS.md), while the fit it needs is a small solve.
//!
//! The start is kept as a frozen tensor and training learns an offset from it: weight decay
//! then pulls the map and the shares back to the fit, not to zero. (A map decayed toward
//! zero where no batch trains it, as in a model pretrained without channel masks, answered
//! HUFL at 0.032 on ETTm1 where its start answers 0.003.) The fit must never see test rows:
//! callers hand it each recording's training end, and what lies past it only validates.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::Recording;
use crate::linear::solve_spd;
use crate::model::{ChannelMapInputs, channel_map};

/// The read-out's weights, model channel to model channel (M of them).
#[derive(Module, Debug)]
pub struct ChannelReadout {
    /// The least-squares start of the map, row: the channel filled, column: the channel
    /// read; frozen: [M, M].
    map_start: Param<Tensor<2>>,
    /// What training adds to it: [M, M].
    map: Param<Tensor<2>>,
    /// The network's share of the answer where the read-out fills, at the start; frozen:
    /// [M]. (The read-out has the rest.)
    share_start: Param<Tensor<1>>,
    /// What training adds to it: [M].
    share: Param<Tensor<1>>,
}

/// A weight training never moves: no gradient, so neither the optimizer nor its weight decay
/// touch it (and loading keeps it so).
fn frozen<const D: usize>(tensor: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(tensor).set_require_grad(false)
}

impl ChannelReadout {
    /// A read-out not started: every row zero, so it fills nothing (weights are loaded over
    /// it, or pretraining starts it).
    pub fn unstarted(channels: usize, device: &Device) -> Self {
        Self::new(vec![0.0; channels * channels], vec![1.0; channels], device)
    }

    /// The read-out started at `start`'s fit, each channel's share at its `network_share`.
    pub fn started(start: &ReadoutStart, device: &Device) -> Self {
        let shares = start.fits.iter().map(|f| f.network_share as f32).collect();
        Self::new(start.map.clone(), shares, device)
    }

    fn new(map: Vec<f32>, shares: Vec<f32>, device: &Device) -> Self {
        let m = shares.len();
        ChannelReadout {
            map_start: frozen(Tensor::from_data(TensorData::new(map, [m, m]), device)),
            map: Initializer::Zeros.init([m, m], device),
            share_start: frozen(Tensor::from_data(TensorData::new(shares, [m]), device)),
            share: Initializer::Zeros.init([m], device),
        }
    }

    /// The network's share per model channel, as trained.
    pub fn network_shares(&self) -> Vec<f32> {
        let share = self.share_start.val() + self.share.val();
        share.into_data().try_into_vec::<f32>().unwrap_or_default()
    }

    /// `model`'s answer [B, C, T] (instance units) where the read-out does not fill; where
    /// it fills, s · `model` + (1 − s) · the read-out's, s the channel's network share.
    ///
    /// A channel whose start row is all zero is never filled: its fit lost to its mean on
    /// validation (or there was none). Were it filled, its share would drift toward the
    /// read-out's answer (the mean) while the network is still worse than a constant, early
    /// in training (on the sines, channel c: share 1 → 0.12 in 600 steps, rebuilt at MSE
    /// 0.76 instead of 0.02).
    pub fn blend(
        &self,
        model: Tensor<3>,
        inputs: &ChannelMapInputs,
        channel_ids: &Tensor<2, Int>,
    ) -> Tensor<3> {
        let [b, c] = channel_ids.dims();
        let ids = channel_ids.clone().reshape([b * c]);
        let per_window =
            |per_channel: Tensor<1>| per_channel.select(0, ids.clone()).reshape([b, c, 1]);
        let share = per_window(self.share_start.val() + self.share.val()); // [B, C, 1]
        let has_row = per_window(
            self.map_start
                .val()
                .abs()
                .sum_dim(1)
                .squeeze_dim(1)
                .greater_elem(0.0)
                .float(),
        ); // [B, C, 1]
        // The fill is 1 / a scale where the read-out fills, so positive; 0 elsewhere.
        let filled = inputs.fill.clone().greater_elem(0.0).float() * has_row; // [B, C, T]
        let map = self.map_start.val() + self.map.val();
        let said = channel_map(map, &inputs.read, channel_ids) * inputs.fill.clone();
        let readout = match &inputs.shift {
            Some(shift) => said + shift.clone(),
            None => said,
        } * filled.clone(); // [B, C, T], 0 where not filled
        // model + (1 − s)·(readout − model) where filled.
        model.clone() + (readout - model * filled) * (share.neg() + 1.0)
    }
}

/// Ridge penalties tried for each channel's fit, as shares of each input channel's sum of
/// squares; the one with the least validation error is kept. The smallest keeps two
/// channels that are near copies of each other (ETTm1's HUFL and MUFL) from cancelling
/// with huge weights.
const RIDGES: [f64; 4] = [1e-3, 1e-2, 1e-1, 1.0];

/// How one channel's row of the map was started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReadoutFit {
    pub channel: String,
    /// The ridge penalty kept; none: the fit lost to the channel's training mean on
    /// validation, and the row starts at zero.
    pub ridge: Option<f64>,
    /// Standardised validation MSE of the kept fit and of the training mean (absent with no
    /// validation rows; the smallest penalty is then kept).
    pub validation_mse: Option<f64>,
    pub validation_mse_of_mean: Option<f64>,
    /// Standardised MSE of what the untrained model answers for a missing value
    /// ([`Untrained`]), on the validation rows (else the training rows).
    #[serde(default)]
    pub untrained_mse: f64,
    /// The network's share of the answer where the read-out fills, at the start: the share
    /// of the untrained model's error that the fit leaves, e_fit / e_untrained at most 1,
    /// with e_fit the fit's MSE (on validation, else on the training rows); 1 with no fit.
    /// For a plain model that is the share of the channel's variance the fit leaves
    /// unexplained: a channel the others read almost exactly starts near 0, one they barely
    /// read or that interpolation already answers better, near 1. Training moves it. (Not
    /// the inverse-MSE blend e_fit / (e_fit + e_untrained): that assumes independent errors,
    /// and a fit barely better than the mean errs as the mean does; on the sines it gave
    /// channel c a share of 0.5 and rebuilt it at 0.11 instead of 0.03.)
    pub network_share: f64,
}

/// What a model answers for a missing value before training, which the read-out's starting
/// share is weighed against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untrained {
    /// The channel's training mean (a plain model's head knows nothing yet).
    Mean,
    /// The line between its neighbours (a model with the interpolation prior, whose head
    /// starts at zero): a gap filler, already far better than the mean on smooth series.
    Interpolation,
}

/// The start of the read-out: the map W, [C, C] row-major (row i reads channel i from the
/// others, W[i][i] = 0, in training-standardised units), and how each row was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadoutStart {
    pub map: Vec<f32>,
    pub fits: Vec<ReadoutFit>,
}

/// Sums of products xᵢxⱼ over rows where every channel was observed.
struct Products {
    channels: usize,
    sums: Vec<f64>,
    rows: usize,
}

impl Products {
    fn new(channels: usize) -> Self {
        Products {
            channels,
            sums: vec![0.0; channels * channels],
            rows: 0,
        }
    }

    fn add_rows(&mut self, rec: &Recording, rows: std::ops::Range<usize>) {
        let c = self.channels;
        let mut x = vec![0.0f64; c];
        for t in rows {
            if !(0..c).all(|ch| rec.observed[ch][t]) {
                continue;
            }
            for (ch, v) in x.iter_mut().enumerate() {
                *v = rec.values[ch][t] as f64;
            }
            for i in 0..c {
                for j in 0..c {
                    self.sums[i * c + j] += x[i] * x[j];
                }
            }
            self.rows += 1;
        }
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.sums[i * self.channels + j]
    }

    /// Mean squared error of reading `target` as Σ w[k]·x[others[k]] over these rows:
    /// (yy − 2 wᵀxy + wᵀ XX w) / n.
    fn mse(&self, target: usize, others: &[usize], w: &[f64]) -> f64 {
        let mut sse = self.at(target, target);
        for (&i, &wi) in others.iter().zip(w) {
            sse -= 2.0 * wi * self.at(i, target);
            for (&j, &wj) in others.iter().zip(w) {
                sse += wi * wj * self.at(i, j);
            }
        }
        sse.max(0.0) / self.rows as f64
    }
}

impl Untrained {
    /// What a model of `config` answers before training.
    pub fn of(config: &crate::model::ModelConfig) -> Self {
        if config.interpolation_prior {
            Untrained::Interpolation
        } else {
            Untrained::Mean
        }
    }
}

/// Each channel's least-squares fit on the others, from the training rows (before each
/// recording's `training_ends`) where every channel was observed, with the ridge penalty
/// and the choice to keep it at all made on the validation rows (the rest): a tie seen in
/// training that does not hold later (ETTm1's oil temperature against its loads) starts at
/// zero instead. All zero when no complete training row exists.
pub fn least_squares_start(
    recordings: &[Recording],
    training_ends: &[usize],
    untrained: Untrained,
) -> ReadoutStart {
    let names: &[String] = recordings.first().map_or(&[], |r| &r.channels);
    let c = names.len();
    let (mut train, mut validation) = (Products::new(c), Products::new(c));
    let mut train_parts = Vec::new();
    let mut validation_parts = Vec::new();
    for (rec, &end) in recordings.iter().zip(training_ends) {
        let end = end.min(rec.len());
        train.add_rows(rec, 0..end);
        validation.add_rows(rec, end..rec.len());
        train_parts.push((rec, 0..end));
        validation_parts.push((rec, end..rec.len()));
    }
    let validates = validation.rows > 0;
    // The rows the fit and the untrained model are scored on: validation's, else training's.
    let (scored, scored_parts) = if validates {
        (&validation, &validation_parts)
    } else {
        (&train, &train_parts)
    };
    let mut map = vec![0.0f32; c * c];
    let mut fits = Vec::with_capacity(c);
    for target in 0..c {
        let others: Vec<usize> = (0..c).filter(|&j| j != target).collect();
        let mut fit = ReadoutFit {
            channel: names[target].clone(),
            ridge: None,
            validation_mse: None,
            validation_mse_of_mean: validates.then(|| validation.mse(target, &others, &[])),
            untrained_mse: match untrained {
                Untrained::Mean => scored.mse(target, &others, &[]),
                Untrained::Interpolation => midpoint_mse(scored_parts, target),
            },
            network_share: 1.0,
        };
        if train.rows > 0 && !others.is_empty() {
            // (ridge, weights, validation error), best first.
            let mut best: Option<(f64, Vec<f64>, Option<f64>)> = None;
            for ridge in RIDGES {
                let w = ridge_fit(&train, target, &others, ridge);
                let error = validates.then(|| validation.mse(target, &others, &w));
                let better = match (&best, error) {
                    (None, _) => true,
                    (Some((_, _, Some(kept))), Some(e)) => e < *kept,
                    _ => false,
                };
                if better {
                    best = Some((ridge, w, error));
                }
            }
            if let Some((ridge, w, error)) = best {
                let beats_mean = match (error, fit.validation_mse_of_mean) {
                    (Some(e), Some(mean)) => e < mean,
                    _ => true,
                };
                fit.validation_mse = error;
                if beats_mean {
                    let fit_mse = scored.mse(target, &others, &w);
                    fit.network_share = if fit.untrained_mse > 0.0 {
                        (fit_mse / fit.untrained_mse).min(1.0)
                    } else {
                        1.0
                    };
                    fit.ridge = Some(ridge);
                    for (&j, &wj) in others.iter().zip(&w) {
                        map[target * c + j] = wj as f32;
                    }
                }
            }
        }
        fits.push(fit);
    }
    ReadoutStart { map, fits }
}

/// MSE of each observed value of `channel` against the midpoint of its two observed
/// neighbours, over the given rows of each recording (0 when there is none).
fn midpoint_mse(parts: &[(&Recording, std::ops::Range<usize>)], channel: usize) -> f64 {
    let (mut sum, mut count) = (0.0f64, 0usize);
    for (rec, rows) in parts {
        let (values, seen) = (&rec.values[channel], &rec.observed[channel]);
        for t in rows.start.max(1)..rows.end.min(rec.len().saturating_sub(1)) {
            if seen[t - 1] && seen[t] && seen[t + 1] {
                let midpoint = (values[t - 1] as f64 + values[t + 1] as f64) / 2.0;
                sum += (values[t] as f64 - midpoint).powi(2);
                count += 1;
            }
        }
    }
    if count == 0 { 0.0 } else { sum / count as f64 }
}

/// Ridge regression of `target` on `others` from sums of products; the penalty is a share
/// of each input's own sum of squares (a constant channel still gets a positive diagonal).
fn ridge_fit(products: &Products, target: usize, others: &[usize], ridge: f64) -> Vec<f64> {
    let n = others.len();
    let mut a = vec![0.0f64; n * n];
    let mut b = vec![0.0f64; n];
    for (r, &i) in others.iter().enumerate() {
        for (s, &j) in others.iter().enumerate() {
            a[r * n + s] = products.at(i, j);
        }
        a[r * n + r] += ridge * products.at(i, i) + 1e-9 * products.rows as f64;
        b[r] = products.at(i, target);
    }
    solve_spd(&mut a, n, &b, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(values: Vec<Vec<f32>>, observed: Vec<Vec<bool>>) -> Recording {
        Recording {
            source: "r.csv".into(),
            start_ns: 0,
            step_ns: 1,
            channels: (0..values.len()).map(|i| format!("c{i}")).collect(),
            values,
            observed,
        }
    }

    /// Two unrelated wiggles of `n` steps.
    fn two_inputs(n: usize) -> (Vec<f32>, Vec<f32>) {
        let a = (0..n)
            .map(|t| ((t * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let b = (0..n)
            .map(|t| ((t * 53 % 97) as f32 / 48.0) - 1.0)
            .collect();
        (a, b)
    }

    /// `a` up to step `at`, −a after.
    fn flipped_after(a: &[f32], at: usize) -> Vec<f32> {
        let flip = |(t, v): (usize, &f32)| if t < at { *v } else { -v };
        a.iter().enumerate().map(flip).collect()
    }

    #[test]
    fn a_channel_that_is_a_sum_of_two_others_is_read_from_them() {
        let (a, b) = two_inputs(200);
        let c: Vec<f32> = a.iter().zip(&b).map(|(a, b)| 2.0 * a - b).collect();
        let rec = recording(vec![a, b, c], vec![vec![true; 200]; 3]);
        let start = least_squares_start(&[rec], &[150], Untrained::Mean);
        let row_c = &start.map[6..9];
        assert!((row_c[0] - 2.0).abs() < 0.01, "{row_c:?}");
        assert!((row_c[1] + 1.0).abs() < 0.01, "{row_c:?}");
        assert_eq!(row_c[2], 0.0, "a channel never reads itself");
        assert_eq!((start.map[0], start.map[4]), (0.0, 0.0));
        let fit = &start.fits[2];
        assert_eq!((fit.channel.as_str(), fit.ridge), ("c2", Some(RIDGES[0])));
        assert!(fit.validation_mse.unwrap() < 1e-3 * fit.validation_mse_of_mean.unwrap());
    }

    #[test]
    fn a_tie_that_breaks_on_validation_starts_at_zero() {
        // b = a on the 100 training rows, b = −a on the 100 validation rows.
        let (a, _) = two_inputs(200);
        let b = flipped_after(&a, 100);
        let rec = recording(vec![a, b], vec![vec![true; 200]; 2]);
        let start = least_squares_start(&[rec], &[100], Untrained::Mean);
        assert_eq!(start.map, vec![0.0; 4]);
        for fit in &start.fits {
            assert_eq!(fit.ridge, None);
            assert!(fit.validation_mse.unwrap() > fit.validation_mse_of_mean.unwrap());
        }
    }

    #[test]
    fn rows_with_a_gap_are_not_read() {
        // b = a where a was observed, b = −a where a's reading is marked missing.
        let (a, _) = two_inputs(200);
        let b = flipped_after(&a, 100);
        let mut observed = vec![vec![true; 200]; 2];
        for seen in &mut observed[0][100..] {
            *seen = false;
        }
        let start =
            least_squares_start(&[recording(vec![a, b], observed)], &[200], Untrained::Mean);
        assert!((start.map[1] - 1.0).abs() < 0.01, "{:?}", start.map);
        // No validation rows: the smallest penalty is kept, with nothing to compare.
        assert_eq!(start.fits[0].ridge, Some(RIDGES[0]));
        assert_eq!(start.fits[0].validation_mse, None);
    }

    #[test]
    fn no_complete_row_gives_an_empty_map() {
        let rec = recording(
            vec![vec![1.0; 4], vec![2.0; 4]],
            vec![
                vec![true, false, true, false],
                vec![false, true, false, true],
            ],
        );
        let start = least_squares_start(&[rec], &[4], Untrained::Mean);
        assert_eq!(start.map, vec![0.0; 4]);
        assert!(start.fits.iter().all(|f| f.ridge.is_none()));
    }

    #[test]
    fn training_moves_what_it_adds_and_never_the_start() {
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let fit = |channel: &str| ReadoutFit {
            channel: channel.into(),
            ridge: Some(RIDGES[0]),
            validation_mse: None,
            validation_mse_of_mean: None,
            untrained_mse: 1.0,
            network_share: 0.5,
        };
        let start = ReadoutStart {
            map: vec![0.0, 1.0, 1.0, 0.0],
            fits: vec![fit("a"), fit("b")],
        };
        let readout = ChannelReadout::started(&start, &device);
        // Channel a shown (1, 2, 3), b hidden and filled at every step; truth b = 2a.
        let inputs = ChannelMapInputs {
            read: Tensor::from_data(
                TensorData::new(vec![1.0f32, 2.0, 3.0, 0.0, 0.0, 0.0], [1, 2, 3]),
                &device,
            ),
            fill: Tensor::from_data(
                TensorData::new(vec![0.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], [1, 2, 3]),
                &device,
            ),
            shift: None,
        };
        let ids = Tensor::<2, Int>::from_data(TensorData::new(vec![0i64, 1], [1, 2]), &device);
        let truth = Tensor::<3>::from_data(
            TensorData::new(vec![1.0f32, 2.0, 3.0, 2.0, 4.0, 6.0], [1, 2, 3]),
            &device,
        );
        let answer = readout.blend(Tensor::zeros([1, 2, 3], &device), &inputs, &ids);
        let loss = (answer - truth).powi_scalar(2).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &readout);
        let mut optimizer = AdamWConfig::new().with_weight_decay(0.5).init();
        let stepped = optimizer.step(0.1, readout, grads);
        let values = |p: &Param<Tensor<2>>| p.val().into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(values(&stepped.map_start), start.map, "the start is frozen");
        assert_eq!(
            stepped
                .share_start
                .val()
                .into_data()
                .try_into_vec::<f32>()
                .unwrap(),
            [0.5, 0.5]
        );
        let added = values(&stepped.map);
        assert!(added[2] > 0.0, "b's read of a moves toward 2: {added:?}");
        assert_eq!(added[1], 0.0, "a, never filled, adds nothing to its row");
        assert_ne!(stepped.network_shares(), [0.5, 0.5], "the shares learn");
    }

    #[test]
    fn a_model_that_already_interpolates_keeps_more_of_its_answer() {
        // c = a + b + a slow wave the others do not carry: the fit misses the wave, the
        // line between c's own neighbours does not. A gap filler's share starts near 1, a
        // plain model's (which only knows the mean) near 0.
        let smooth = |k: f32| {
            (0..400)
                .map(move |t| (t as f32 * k).sin())
                .collect::<Vec<f32>>()
        };
        let (a, b, wave) = (smooth(0.05), smooth(0.031), smooth(0.013));
        let c: Vec<f32> = (0..400).map(|t| a[t] + b[t] + 0.3 * wave[t]).collect();
        let rec = recording(vec![a, b, c], vec![vec![true; 400]; 3]);
        let plain = least_squares_start(std::slice::from_ref(&rec), &[300], Untrained::Mean);
        let filler = least_squares_start(&[rec], &[300], Untrained::Interpolation);
        let (plain, filler) = (&plain.fits[2], &filler.fits[2]);
        assert_eq!(plain.validation_mse, filler.validation_mse, "the same fit");
        assert!(
            filler.untrained_mse < 0.01 * plain.untrained_mse,
            "{filler:?} {plain:?}"
        );
        assert!(plain.network_share < 0.1, "{plain:?}");
        assert!(filler.network_share > 0.9, "{filler:?}");
    }
}
