//! The channel read-out: a value missing at a step where every other channel is shown is
//! read from those channels by a C × C linear map, and blended with the network's answer by
//! a learned share per channel (`ModelConfig::channel_readout`).
//!
//! Its start is each channel's least-squares fit on the others over the training rows, in
//! closed form (ridge regression from the channels' sums of products), with the penalty,
//! and whether to keep the fit at all, chosen on the validation rows. Learned from zero at
//! the network's rate the map crawls toward a fit that is a small solve away.
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

use crate::channel_map::{ChannelMapInputs, channel_map};
use crate::data::Recording;
use crate::linear::solve_spd;

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
    /// Per channel, the largest MSE of the map over a window's steps with every channel
    /// shown at which it still fills that window (`ReadoutFit::tie_limit`); frozen: [M].
    tie_limit: Param<Tensor<1>>,
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
        let unchecked = vec![f32::MAX; channels];
        Self::new(
            vec![0.0; channels * channels],
            vec![1.0; channels],
            unchecked,
            device,
        )
    }

    /// The read-out started at `start`'s fit, each channel's share at its `network_share`.
    pub fn started(start: &ReadoutStart, device: &Device) -> Self {
        let shares = start.fits.iter().map(|f| f.network_share as f32).collect();
        let limits = start
            .fits
            .iter()
            .map(|f| f.tie_limit.map_or(f32::MAX, |l| l as f32))
            .collect();
        Self::new(start.map.clone(), shares, limits, device)
    }

    fn new(map: Vec<f32>, shares: Vec<f32>, limits: Vec<f32>, device: &Device) -> Self {
        let m = shares.len();
        ChannelReadout {
            map_start: frozen(Tensor::from_data(TensorData::new(map, [m, m]), device)),
            map: Initializer::Zeros.init([m, m], device),
            share_start: frozen(Tensor::from_data(TensorData::new(shares, [m]), device)),
            share: Initializer::Zeros.init([m], device),
            tie_limit: frozen(Tensor::from_data(TensorData::new(limits, [m]), device)),
        }
    }

    /// The read-out with the network's share per model channel set to `shares` (what
    /// training added to the start is replaced).
    pub fn with_network_shares(mut self, shares: &[f32]) -> Self {
        let start = self.share_start.val();
        let target = Tensor::<1>::from_data(
            TensorData::new(shares.to_vec(), [shares.len()]),
            &start.device(),
        );
        self.share = self.share.map(|_| target - start);
        self
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
    /// in training, and the channel would end rebuilt far worse than the network alone
    /// (docs/MODEL.md, the read-out).
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
        let map = self.map_start.val() + self.map.val();
        // In training-standardised units. (The diagonal stays 0: a filled value is never
        // shown, so nothing trains a channel's read of itself.)
        let said = channel_map(map, &inputs.read, channel_ids); // [B, C, T]
        let holds = match &inputs.check {
            Some(check) => {
                let limit = per_window(self.tie_limit.val());
                tie_holds(said.clone().detach(), &inputs.read, check, limit)
            }
            None => has_row.ones_like(),
        }; // [B, C, 1]
        // The fill is 1 / a scale where the read-out fills, so positive; 0 elsewhere.
        let filled = inputs.fill.clone().greater_elem(0.0).float() * has_row * holds; // [B, C, T]
        let said = said * inputs.fill.clone();
        let readout = match &inputs.shift {
            Some(shift) => said + shift.clone(),
            None => said,
        } * filled.clone(); // [B, C, T], 0 where not filled
        // model + (1 − s)·(readout − model) where filled.
        model.clone() + (readout - model * filled) * (share.neg() + 1.0)
    }
}

/// 1 for each window's channel that the map reads within its tie `limit` over the steps
/// with every channel shown (`check`: [B, 1, T]; the summed error divided by their count,
/// at least [`MIN_CHECKED_STEPS`]), or that has no such step; 0 where the tie broke. `said` is the map's answer and `shown` the values, in
/// training-standardised units: [B, C, T]. Returns [B, C, 1].
fn tie_holds(said: Tensor<3>, shown: &Tensor<3>, check: &Tensor<3>, limit: Tensor<3>) -> Tensor<3> {
    let steps = check.clone().sum_dim(2); // [B, 1, 1]
    let error = ((shown.clone() - said) * check.clone())
        .powi_scalar(2)
        .sum_dim(2)
        / steps.clone().clamp_min(MIN_CHECKED_STEPS as f32); // [B, C, 1]
    let unchecked = steps.lower_elem(1.0).float(); // [B, 1, 1]
    (error.lower_equal(limit).float() + unchecked).clamp_max(1.0)
}

/// A window whose fit is worse than `TIE_MARGIN` times the `TIE_QUANTILE` quantile of the
/// training windows' is one where the tie broke: the read-out does not fill it. Ties do
/// break for months at a time (ETTh1's loads in its validation split), and a fill with a
/// broken tie is worse than none.
pub const TIE_QUANTILE: f64 = 0.99;
pub const TIE_MARGIN: f64 = 2.0;
/// A window's error is its squared errors summed over the steps with every channel shown,
/// divided by their count but never by less than this: a few steps can still show a broken
/// tie (one step off by far more than the limit), but not condemn a near one. (Checking
/// only windows with at least this many such steps left ETT's broken months filled where
/// many points are hidden and a window has only a few such steps, and the read-out then
/// cost more than it gave; docs/MODEL.md.) A window with no such step is not checked.
pub const MIN_CHECKED_STEPS: usize = 8;

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
    /// Standardised validation MSE of the kept fit and of the training mean, over the
    /// validation windows where the tie held (absent with no validation rows; the smallest
    /// penalty is then kept).
    pub validation_mse: Option<f64>,
    pub validation_mse_of_mean: Option<f64>,
    /// The largest MSE of the fit over one window's steps with every channel shown at which
    /// the read-out still fills that window: [`TIE_MARGIN`] times the [`TIE_QUANTILE`]
    /// quantile of the fit's MSE over the training windows. Absent: no fit, or no training
    /// window to measure (the tie is then never checked).
    #[serde(default)]
    pub tie_limit: Option<f64>,
    /// Validation windows the tie could be checked on, and those where it broke (the fit's
    /// MSE over the window past `tie_limit`): left out of the validation MSEs above.
    #[serde(default)]
    pub validation_windows: usize,
    #[serde(default)]
    pub broken_windows: usize,
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

/// Sums over some rows of one recording or several: the products xᵢxⱼ over rows where every
/// channel was observed, and per channel the squared error of the midpoint of each observed
/// value's two observed neighbours (what interpolation answers for a lone gap).
#[derive(Clone)]
struct Products {
    channels: usize,
    sums: Vec<f64>,
    rows: usize,
    /// Per channel: the sum of squared midpoint errors, and how many.
    midpoint: Vec<(f64, usize)>,
}

impl Products {
    fn new(channels: usize) -> Self {
        Products {
            channels,
            sums: vec![0.0; channels * channels],
            rows: 0,
            midpoint: vec![(0.0, 0); channels],
        }
    }

    fn of_rows(rec: &Recording, rows: std::ops::Range<usize>) -> Self {
        let c = rec.channels.len();
        let mut products = Products::new(c);
        let mut x = vec![0.0f64; c];
        for t in rows {
            for (ch, (sse, count)) in products.midpoint.iter_mut().enumerate() {
                let (values, seen) = (&rec.values[ch], &rec.observed[ch]);
                if t >= 1 && t + 1 < rec.len() && seen[t - 1] && seen[t] && seen[t + 1] {
                    let midpoint = (values[t - 1] as f64 + values[t + 1] as f64) / 2.0;
                    *sse += (values[t] as f64 - midpoint).powi(2);
                    *count += 1;
                }
            }
            if !(0..c).all(|ch| rec.observed[ch][t]) {
                continue;
            }
            for (ch, v) in x.iter_mut().enumerate() {
                *v = rec.values[ch][t] as f64;
            }
            for i in 0..c {
                for j in 0..c {
                    products.sums[i * c + j] += x[i] * x[j];
                }
            }
            products.rows += 1;
        }
        products
    }

    /// The sums over all of `parts`.
    fn pooled<'a>(channels: usize, parts: impl IntoIterator<Item = &'a Products>) -> Self {
        let mut all = Products::new(channels);
        for part in parts {
            all.rows += part.rows;
            for (sum, add) in all.sums.iter_mut().zip(&part.sums) {
                *sum += add;
            }
            for (mine, theirs) in all.midpoint.iter_mut().zip(&part.midpoint) {
                mine.0 += theirs.0;
                mine.1 += theirs.1;
            }
        }
        all
    }

    fn at(&self, i: usize, j: usize) -> f64 {
        self.sums[i * self.channels + j]
    }

    /// Mean squared error of reading `target` as Σ w[k]·x[others[k]] over these rows; with
    /// no weights, the error of answering 0 (the training mean, in standardised units).
    fn mse(&self, target: usize, others: &[usize], w: &[f64]) -> f64 {
        self.sse(target, others, w) / self.rows.max(1) as f64
    }

    /// The error a window's tie is judged by: as the read-out's check computes it.
    fn window_error(&self, target: usize, others: &[usize], w: &[f64]) -> f64 {
        self.sse(target, others, w) / self.rows.max(MIN_CHECKED_STEPS) as f64
    }

    /// The summed squared error of that read: yy − 2 wᵀxy + wᵀ XX w.
    fn sse(&self, target: usize, others: &[usize], w: &[f64]) -> f64 {
        let mut sse = self.at(target, target);
        for (&i, &wi) in others.iter().zip(w) {
            sse -= 2.0 * wi * self.at(i, target);
            for (&j, &wj) in others.iter().zip(w) {
                sse += wi * wj * self.at(i, j);
            }
        }
        sse.max(0.0)
    }

    /// MSE of each observed value of `channel` against the midpoint of its observed
    /// neighbours (0 when there is none).
    fn midpoint_mse(&self, channel: usize) -> f64 {
        let (sse, count) = self.midpoint[channel];
        if count == 0 { 0.0 } else { sse / count as f64 }
    }

    /// Whether enough rows to set a tie limit from (a training window).
    fn full(&self) -> bool {
        self.rows >= MIN_CHECKED_STEPS
    }
}

/// One recording's rows cut into windows of the model's length: the unit a tie is checked on.
fn windows_of(rec: &Recording, rows: std::ops::Range<usize>, window: usize) -> Vec<Products> {
    let window = window.max(1);
    (rows.start..rows.end)
        .step_by(window)
        .map(|from| Products::of_rows(rec, from..(from + window).min(rows.end)))
        .collect()
}

/// Each channel's least-squares fit on the others, from the training rows (before each
/// recording's `training_ends`) where every channel was observed, with the ridge penalty
/// and the choice to keep it at all made on the validation rows (the rest): a tie seen in
/// training that does not hold later (ETTm1's oil temperature against its loads) starts at
/// zero instead. All zero when no complete training row exists.
///
/// The rows are cut into windows of `window` steps, the model's: a channel's tie limit
/// comes from its fit's error over the training windows, and validation judges the fit only
/// on the windows where the tie held, as the read-out only fills those (a fit whose tie
/// breaks for a while is still kept for the rest).
pub fn least_squares_start(
    recordings: &[Recording],
    training_ends: &[usize],
    window: usize,
    untrained: Untrained,
) -> ReadoutStart {
    let names: &[String] = recordings.first().map_or(&[], |r| &r.channels);
    let c = names.len();
    let (mut train_windows, mut validation_windows) = (Vec::new(), Vec::new());
    for (rec, &end) in recordings.iter().zip(training_ends) {
        let end = end.min(rec.len());
        train_windows.extend(windows_of(rec, 0..end, window));
        validation_windows.extend(windows_of(rec, end..rec.len(), window));
    }
    let train = Products::pooled(c, &train_windows);
    let untrained_mse = |rows: &Products, target: usize| match untrained {
        Untrained::Mean => rows.mse(target, &[], &[]),
        Untrained::Interpolation => rows.midpoint_mse(target),
    };
    // The same for every channel: a window is checked where any row is complete.
    let checked_windows = validation_windows.iter().filter(|w| w.rows > 0).count();
    let validates = checked_windows > 0;
    let all_scored = if validates {
        Products::pooled(c, &validation_windows)
    } else {
        train.clone()
    };
    let mut map = vec![0.0f32; c * c];
    let mut fits = Vec::with_capacity(c);
    for target in 0..c {
        let others: Vec<usize> = (0..c).filter(|&j| j != target).collect();
        let mut fit = ReadoutFit {
            channel: names[target].clone(),
            ridge: None,
            validation_mse: None,
            validation_mse_of_mean: None,
            tie_limit: None,
            validation_windows: checked_windows,
            broken_windows: 0,
            untrained_mse: untrained_mse(&all_scored, target),
            network_share: 1.0,
        };
        if train.rows == 0 || others.is_empty() {
            fits.push(fit);
            continue;
        }
        // A fit's tie limit, and which validation windows it holds in.
        let judge = |w: &[f64]| -> (Option<f64>, Vec<bool>) {
            let mut errors: Vec<f64> = train_windows
                .iter()
                .filter(|p| p.full())
                .map(|p| p.mse(target, &others, w))
                .collect();
            if errors.is_empty() {
                return (None, vec![true; validation_windows.len()]);
            }
            errors.sort_by(f64::total_cmp);
            let at = ((TIE_QUANTILE * errors.len() as f64).ceil() as usize).clamp(1, errors.len());
            // A floor, so that an exact tie is not broken by rounding.
            let floor = 1e-6 * train.mse(target, &[], &[]);
            let limit = TIE_MARGIN * errors[at - 1].max(floor);
            let holds = validation_windows
                .iter()
                .map(|p| p.rows == 0 || p.window_error(target, &others, w) <= limit)
                .collect();
            (Some(limit), holds)
        };
        let held = |holds: &[bool]| {
            let kept = validation_windows.iter().zip(holds).filter(|(_, h)| **h);
            Products::pooled(c, kept.map(|(w, _)| w))
        };
        let candidates: Vec<(f64, Vec<f64>)> = RIDGES
            .iter()
            .map(|&ridge| (ridge, ridge_fit(&train, target, &others, ridge)))
            .collect();
        // The penalties are compared on the windows where the plainest fit's tie holds.
        let plain_held = held(&judge(&candidates[0].1).1);
        let (ridge, w) = if validates && plain_held.rows > 0 {
            let error = |w: &[f64]| plain_held.mse(target, &others, w);
            candidates
                .iter()
                .min_by(|a, b| error(&a.1).total_cmp(&error(&b.1)))
                .expect("RIDGES is not empty")
        } else {
            &candidates[0]
        };
        let (limit, holds) = judge(w);
        fit.tie_limit = limit;
        fit.broken_windows = holds.iter().filter(|h| !**h).count();
        let scored = if validates {
            held(&holds)
        } else {
            train.clone()
        };
        let keep = if validates {
            scored.rows > 0 && {
                let (fit_mse, mean_mse) = (
                    scored.mse(target, &others, w),
                    scored.mse(target, &others, &[]),
                );
                fit.validation_mse = Some(fit_mse);
                fit.validation_mse_of_mean = Some(mean_mse);
                fit_mse < mean_mse
            }
        } else {
            true
        };
        if keep {
            fit.untrained_mse = untrained_mse(&scored, target);
            let fit_mse = scored.mse(target, &others, w);
            fit.network_share = if fit.untrained_mse > 0.0 {
                (fit_mse / fit.untrained_mse).min(1.0)
            } else {
                1.0
            };
            fit.ridge = Some(*ridge);
            for (&j, &wj) in others.iter().zip(w) {
                map[target * c + j] = wj as f32;
            }
        }
        fits.push(fit);
    }
    ReadoutStart { map, fits }
}

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

/// Two channels, a and b, each read from the other with `weight`, the network's share at
/// `share`, and `tie_limit`: the start the tests build on.
#[cfg(test)]
pub(crate) fn pair_start(weight: f32, share: f64, tie_limit: Option<f64>) -> ReadoutStart {
    let fit = |channel: &str| ReadoutFit {
        channel: channel.into(),
        ridge: Some(RIDGES[0]),
        validation_mse: None,
        validation_mse_of_mean: None,
        tie_limit,
        validation_windows: 0,
        broken_windows: 0,
        untrained_mse: 1.0,
        network_share: share,
    };
    ReadoutStart {
        map: vec![0.0, weight, weight, 0.0],
        fits: vec![fit("a"), fit("b")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The model's window in these tests: the unit a tie is checked on.
    const WINDOW: usize = 20;

    fn recording(values: Vec<Vec<f32>>, observed: Vec<Vec<bool>>) -> Recording {
        Recording {
            source: "r.csv".into(),
            start_ns: 0,
            step_ns: 1,
            channels: (0..values.len()).map(|i| format!("c{i}")).collect(),
            values,
            observed,
            rows: Vec::new(),
            labels: Vec::new(),
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
        let start = least_squares_start(&[rec], &[150], WINDOW, Untrained::Mean);
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
        // b = a on the 100 training rows, b = −a on the 100 validation rows: the tie breaks
        // in every validation window, so nothing is left to judge the fit on.
        let (a, _) = two_inputs(200);
        let b = flipped_after(&a, 100);
        let rec = recording(vec![a, b], vec![vec![true; 200]; 2]);
        let start = least_squares_start(&[rec], &[100], WINDOW, Untrained::Mean);
        assert_eq!(start.map, vec![0.0; 4]);
        for fit in &start.fits {
            assert_eq!(fit.ridge, None);
            assert_eq!((fit.validation_windows, fit.broken_windows), (5, 5));
            assert_eq!(fit.validation_mse, None);
        }
    }

    #[test]
    fn a_tie_that_breaks_for_a_while_is_judged_where_it_holds() {
        // b = a plus a little noise, except in one validation window (rows 140..160) where
        // b = −a: the fit is kept, that window is counted broken and left out of the
        // validation error, and its limit sits between the noise and the break.
        let (a, noise) = two_inputs(200);
        let b: Vec<f32> = (0..200)
            .map(|t| if (140..160).contains(&t) { -a[t] } else { a[t] } + 0.05 * noise[t])
            .collect();
        let rec = recording(vec![a, b], vec![vec![true; 200]; 2]);
        let start = least_squares_start(&[rec], &[100], WINDOW, Untrained::Mean);
        let fit = &start.fits[1];
        assert!((start.map[2] - 1.0).abs() < 0.05, "{:?}", start.map);
        assert_eq!(
            (fit.validation_windows, fit.broken_windows),
            (5, 1),
            "{fit:?}"
        );
        let noise_mse = 0.05f64.powi(2) * 0.34; // the noise's variance, roughly
        let limit = fit.tie_limit.unwrap();
        assert!(limit > noise_mse && limit < 0.1, "{fit:?}");
        assert!(fit.validation_mse.unwrap() < 2.0 * noise_mse, "{fit:?}");
        assert!(fit.network_share < 0.05, "{fit:?}");
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
        let start = least_squares_start(
            &[recording(vec![a, b], observed)],
            &[200],
            WINDOW,
            Untrained::Mean,
        );
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
        let start = least_squares_start(&[rec], &[4], WINDOW, Untrained::Mean);
        assert_eq!(start.map, vec![0.0; 4]);
        assert!(start.fits.iter().all(|f| f.ridge.is_none()));
    }

    #[test]
    fn training_moves_what_it_adds_and_never_the_start() {
        use burn::optim::{AdamWConfig, GradientsParams};
        let device = Device::flex().autodiff();
        let start = pair_start(1.0, 0.5, None);
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
            check: None,
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
    fn a_window_whose_shown_steps_break_the_tie_is_not_filled() {
        // b = a, read-out alone (share 0), tie limit 0.01. Four windows of 12 steps, a
        // shown throughout: (1) b = a where shown (steps 0..11), hidden at step 11; (2) the
        // same but b = −a where shown; (3) b = −a at steps 0..3 only: few steps, but far
        // enough off to tell; (4) b never shown: nothing to check, filled.
        let device = Device::flex();
        let start = pair_start(1.0, 0.0, Some(0.01));
        let readout = ChannelReadout::started(&start, &device);
        let t = 12;
        let a: Vec<f32> = (0..t).map(|i| (i as f32 * 0.7).sin()).collect();
        let b_shown = [11, 11, 3, 0];
        let b_sign = [1.0, -1.0, -1.0, 1.0];
        let (mut read, mut fill, mut check) = (vec![], vec![], vec![]);
        for w in 0..4 {
            read.extend(&a);
            read.extend((0..t).map(|i| {
                if i < b_shown[w] {
                    b_sign[w] * a[i]
                } else {
                    0.0
                }
            }));
            fill.extend(vec![0.0; t]);
            fill.extend((0..t).map(|i| if i < b_shown[w] { 0.0 } else { 1.0 }));
            check.extend((0..t).map(|i| if i < b_shown[w] { 1.0 } else { 0.0 }));
        }
        let tensor = |v: Vec<f32>, shape: [usize; 3]| {
            Tensor::<3>::from_data(TensorData::new(v, shape), &device)
        };
        let inputs = ChannelMapInputs {
            read: tensor(read, [4, 2, t]),
            fill: tensor(fill, [4, 2, t]),
            shift: None,
            check: Some(tensor(check, [4, 1, t])),
        };
        let ids = Tensor::<2, Int>::from_data(
            TensorData::new(vec![0i64, 1, 0, 1, 0, 1, 0, 1], [4, 2]),
            &device,
        );
        let answer = readout
            .blend(Tensor::zeros([4, 2, t], &device), &inputs, &ids)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        let b_of = |w: usize, i: usize| answer[(w * 2 + 1) * t + i];
        assert!((b_of(0, 11) - a[11]).abs() < 1e-6, "the tie holds: filled");
        assert_eq!(b_of(1, 11), 0.0, "the tie broke: the network's answer");
        for i in 3..t {
            assert_eq!(b_of(2, i), 0.0, "three steps far off break it too");
        }
        for (i, a) in a.iter().enumerate() {
            assert!((b_of(3, i) - a).abs() < 1e-6, "unchecked: filled");
        }
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
        let plain =
            least_squares_start(std::slice::from_ref(&rec), &[300], WINDOW, Untrained::Mean);
        let filler = least_squares_start(&[rec], &[300], WINDOW, Untrained::Interpolation);
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
