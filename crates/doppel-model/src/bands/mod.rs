//! Error bands around a forecast, and how well they hold.
//!
//! A band is split-conformal: the quantiles of the forecaster's errors (truth − forecast,
//! standardised) on validation windows, per channel and horizon step, added to the point
//! forecast. Constant offsets give every window the same width, the calm ones and the
//! restless ones alike. A scaled band (normalised conformal prediction) divides each error
//! by how much its window's look-back moves before taking the quantiles and multiplies the
//! offsets back by it when forecasting, so the band widens where the plant is restless and
//! narrows where it is calm. Which scale a head uses is chosen on validation: calibrated on
//! the first half of the validation windows, scored by the interval score (Gneiting &
//! Raftery 2007) on the second half, then recalibrated on all of them. Where the data drift
//! away from the validation windows, `Recalibrator` widens or narrows each channel's band by
//! one factor set on the recent forecasts whose truth has arrived.
//!
//! Calibration must only ever see validation windows; `BandTally` is what evaluation on
//! held-out data uses to measure the bands it was given.

mod drift;
mod tally;

use serde::{Deserialize, Serialize};

pub use drift::{Adapter, Follower, Recalibrator, needed_factors, widened};
pub use tally::{BandTally, CoverageByActivity, activity};

use crate::batch::Window;

/// The share of truth a band holds unless asked otherwise: an 80 % band, the 10th to the
/// 90th percentile.
pub const DEFAULT_COVERAGE: f64 = 0.8;

/// The levels of a band meant to hold `coverage` of the truth: its low end, the median of the
/// errors and its high end.
pub fn band_levels(coverage: f64) -> [f64; 3] {
    // Rounded to nine places, so 0.8 gives 0.1 and 0.9, not 0.09999999999999998.
    let tail = ((1.0 - coverage) / 2.0 * 1e9).round() / 1e9;
    [tail, 0.5, 1.0 - tail]
}

/// The `level` quantile of (truth − forecast), `offsets[channel][step]`: standardised units
/// for a constant band, multiples of the window's scale for a scaled one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBand {
    pub level: f64,
    pub offsets: Vec<Vec<f32>>,
}

/// How far a window's scale may stray from its channel's mean, either way.
const CLAMP: f32 = 4.0;

/// The least mean scale (standardised units) a channel needs for its band to follow it.
const MOVES: f64 = 1e-3;

/// What a band's width follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BandScale {
    /// The same width for every window.
    #[default]
    Constant,
    /// The standard deviation of the channel's look-back: wide where the level moves.
    Spread,
    /// The root mean square of its step-to-step changes: wide where it is jittery now.
    Steps,
}

impl BandScale {
    /// Every scale, the default first.
    pub const ALL: [BandScale; 3] = [BandScale::Constant, BandScale::Spread, BandScale::Steps];

    /// The name model cards and reports use.
    pub fn name(self) -> &'static str {
        match self {
            BandScale::Constant => "constant",
            BandScale::Spread => "spread",
            BandScale::Steps => "steps",
        }
    }

    /// How much channel `c`'s look-back in `window` (every channel) moves, before the
    /// clamp; 1 for a constant band.
    fn of(self, window: &Window, c: usize) -> f32 {
        let t = window.values.len() / window.channels.len().max(1);
        let at = c * t..(c + 1) * t;
        self.raw(&window.values[at.clone()], &window.observed[at])
    }

    /// How much one channel's look-back moves, before the clamp; 1 for a constant band.
    fn raw(self, values: &[f32], observed: &[bool]) -> f32 {
        let seen = || {
            values
                .iter()
                .zip(observed)
                .filter(|(_, o)| **o)
                .map(|(v, _)| *v as f64)
        };
        let root_mean = |sum: f64, n: usize| {
            if n == 0 {
                0.0
            } else {
                (sum / n as f64).sqrt() as f32
            }
        };
        match self {
            BandScale::Constant => 1.0,
            BandScale::Spread => {
                let n = seen().count();
                let mean = seen().sum::<f64>() / n.max(1) as f64;
                root_mean(seen().map(|v| (v - mean).powi(2)).sum(), n)
            }
            BandScale::Steps => {
                let (mut sum, mut n) = (0.0, 0);
                for i in 1..values.len() {
                    if observed[i] && observed[i - 1] {
                        sum += ((values[i] - values[i - 1]) as f64).powi(2);
                        n += 1;
                    }
                }
                root_mean(sum, n)
            }
        }
    }
}

/// Bands and, per channel, the scale their offsets multiply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaledBands {
    pub scales: Vec<BandScale>,
    /// Per channel, the mean scale over the calibration windows. A window's scale is
    /// clamped to between a quarter of it and four times it: a look-back that happened to
    /// be flat still gets a band, and one restless as never seen gets at most four times
    /// the typical band, never the thousands a near-zero divisor would give.
    pub typical: Vec<f32>,
    pub bands: Vec<ErrorBand>,
}

impl ScaledBands {
    /// Constant bands of `channels` channels (offsets in standardised units).
    pub fn constant(bands: Vec<ErrorBand>) -> ScaledBands {
        let channels = bands.first().map_or(0, |b| b.offsets.len());
        ScaledBands {
            scales: vec![BandScale::Constant; channels],
            typical: vec![1.0; channels],
            bands,
        }
    }

    /// Channel `c`'s scale in `window` (every channel).
    fn scale_of(&self, window: &Window, c: usize) -> f32 {
        let typical = self.typical[c];
        self.scales[c]
            .of(window, c)
            .clamp(typical / CLAMP, typical * CLAMP)
    }

    /// The band offsets for `window` (every channel), standardised: `[band][c * H + k]`.
    pub fn offsets(&self, window: &Window, horizon: usize) -> Vec<Vec<f32>> {
        let channels = self.scales.len();
        let scales: Vec<f32> = (0..channels).map(|c| self.scale_of(window, c)).collect();
        self.bands
            .iter()
            .map(|band| {
                (0..channels)
                    .flat_map(|c| (0..horizon).map(move |k| (c, k)))
                    .map(|(c, k)| band.offsets[c][k] * scales[c])
                    .collect()
            })
            .collect()
    }

    /// The share of truth the band is meant to hold (its levels' span).
    pub fn coverage(&self) -> f64 {
        match (self.bands.first(), self.bands.last()) {
            (Some(low), Some(high)) => high.level - low.level,
            _ => DEFAULT_COVERAGE,
        }
    }

    /// The name of the scale, or "per channel" when the channels differ.
    pub fn name(&self) -> &'static str {
        match self.scales.split_first() {
            Some((first, rest)) if rest.iter().all(|s| s == first) => first.name(),
            Some(_) => "per channel",
            None => BandScale::Constant.name(),
        }
    }
}

/// How a band did on some windows: its coverage, width and score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BandScore {
    /// The scale ("constant", "spread", "steps"), or "per channel" for the one chosen.
    pub bands: String,
    /// The share of observed truth inside the band, and below and above it.
    pub coverage: f64,
    pub below: f64,
    pub above: f64,
    /// The mean width, standardised units.
    pub width: f64,
    /// The mean interval score: the width plus 2/α times each miss's distance (α = 1 − the
    /// share the band is meant to hold);
    /// lower is better, and only an honest band can make it low.
    pub interval_score: f64,
    /// The coverage in the calmest and in the most restless third of the windows, ranked
    /// per channel by their look-back's step-to-step changes (evaluation only): a band of
    /// one width tends to hold too much in the first and too little in the second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restless: Option<f64>,
}

impl std::fmt::Display for BandScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:.1} % inside ({:.1} below, {:.1} above), width {:.3}, interval score {:.3}",
            self.bands,
            100.0 * self.coverage,
            100.0 * self.below,
            100.0 * self.above,
            self.width,
            self.interval_score
        )?;
        if let (Some(calm), Some(restless)) = (self.calm, self.restless) {
            write!(
                f,
                "; inside in the calmest third {:.1} %, the most restless {:.1} %",
                100.0 * calm,
                100.0 * restless
            )?;
        }
        Ok(())
    }
}

/// Running sums behind a `BandScore`.
#[derive(Debug, Clone, Copy)]
pub struct IntervalSums {
    /// 2/α: what a miss costs per unit of distance, for a band meant to hold 1 − α.
    miss_weight: f64,
    below: usize,
    above: usize,
    width: f64,
    penalty: f64,
    count: usize,
}

impl IntervalSums {
    /// Sums for a band meant to hold `coverage` of the truth.
    pub fn new(coverage: f64) -> Self {
        IntervalSums {
            miss_weight: 2.0 / (1.0 - coverage),
            below: 0,
            above: 0,
            width: 0.0,
            penalty: 0.0,
            count: 0,
        }
    }

    /// One observed value whose error (truth − forecast) is `error`, against the band's
    /// `low` and `high` offsets; whether the band held it.
    pub fn add(&mut self, error: f32, low: f32, high: f32) -> bool {
        self.width += (high - low) as f64;
        self.count += 1;
        if error < low {
            self.below += 1;
            self.penalty += self.miss_weight * (low - error) as f64;
            false
        } else if error > high {
            self.above += 1;
            self.penalty += self.miss_weight * (error - high) as f64;
            false
        } else {
            true
        }
    }

    fn merge(&mut self, other: &IntervalSums) {
        self.below += other.below;
        self.above += other.above;
        self.width += other.width;
        self.penalty += other.penalty;
        self.count += other.count;
    }

    fn mean_score(&self) -> f64 {
        (self.width + self.penalty) / self.count.max(1) as f64
    }

    pub fn score(&self, bands: &str) -> BandScore {
        let n = self.count.max(1) as f64;
        BandScore {
            bands: bands.into(),
            coverage: 1.0 - (self.below + self.above) as f64 / n,
            below: self.below as f64 / n,
            above: self.above as f64 / n,
            width: self.width / n,
            interval_score: self.mean_score(),
            calm: None,
            restless: None,
        }
    }
}

/// Calibration windows: each look-back (every channel) and the errors that followed it.
pub struct Residuals<'a> {
    pub windows: &'a [Window],
    /// `errors[window][c * H + k]`: truth − forecast, standardised; NaN where unobserved.
    pub errors: &'a [Vec<f32>],
    pub channels: usize,
    pub horizon: usize,
    /// The share of truth the bands are to hold.
    pub coverage: f64,
}

/// What calibration gives a head.
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    /// One width for every window.
    pub constant: ScaledBands,
    /// Each channel's scale chosen by its interval score on the second half of the windows
    /// when calibrated on the first; then calibrated on all of them.
    pub chosen: ScaledBands,
    /// Each scale on every channel, and the per-channel choice, on the second half.
    pub validation: Vec<BandScore>,
}

/// Calibrates bands on `residuals` and chooses each channel's scale (see `Calibration`).
pub fn calibrate(residuals: &Residuals) -> Calibration {
    let (n, channels) = (residuals.windows.len(), residuals.channels);
    let (first, second) = (0..n / 2, n / 2..n);
    // Per scale, per channel: the second half's sums with bands from the first half.
    let sums: Vec<Vec<IntervalSums>> = BandScale::ALL
        .iter()
        .map(|&scale| {
            let bands = fit(residuals, &vec![scale; channels], first.clone());
            channel_sums(residuals, &bands, second.clone())
        })
        .collect();
    let best: Vec<usize> = (0..channels)
        .map(|c| {
            (0..sums.len())
                .min_by(|&a, &b| sums[a][c].mean_score().total_cmp(&sums[b][c].mean_score()))
                .expect("there are scales")
        })
        .collect();
    let total = |pick: &dyn Fn(usize) -> usize| {
        let mut all = IntervalSums::new(residuals.coverage);
        for c in 0..channels {
            all.merge(&sums[pick(c)][c]);
        }
        all
    };
    let mut validation: Vec<BandScore> = BandScale::ALL
        .iter()
        .enumerate()
        .map(|(i, scale)| total(&|_| i).score(scale.name()))
        .collect();
    validation.push(total(&|c| best[c]).score("per channel"));
    let scales: Vec<BandScale> = best.iter().map(|&i| BandScale::ALL[i]).collect();
    Calibration {
        constant: fit(residuals, &vec![BandScale::Constant; channels], 0..n),
        chosen: fit(residuals, &scales, 0..n),
        validation,
    }
}

/// Bands with each channel's `scales` from the windows in `range`.
fn fit(r: &Residuals, scales: &[BandScale], range: std::ops::Range<usize>) -> ScaledBands {
    let (channels, h) = (r.channels, r.horizon);
    let windows = &r.windows[range.clone()];
    let mut scaled = ScaledBands {
        scales: scales.to_vec(),
        typical: vec![1.0; channels],
        bands: Vec::new(),
    };
    for c in 0..channels {
        let scale = scaled.scales[c];
        let mean = windows.iter().map(|w| scale.of(w, c) as f64).sum::<f64>()
            / windows.len().max(1) as f64;
        if scale == BandScale::Constant || mean < MOVES {
            // A channel whose look-backs (almost) never move has no scale to follow.
            scaled.scales[c] = BandScale::Constant;
        } else {
            scaled.typical[c] = mean as f32;
        }
    }
    let mut errors = vec![vec![Vec::new(); h]; channels];
    for i in range {
        let w = &r.windows[i];
        for (c, per_step) in errors.iter_mut().enumerate() {
            let s = scaled.scale_of(w, c);
            for (k, e) in per_step.iter_mut().enumerate() {
                let error = r.errors[i][c * h + k];
                if !error.is_nan() {
                    e.push(error / s);
                }
            }
        }
    }
    for per_step in &mut errors {
        for e in per_step {
            e.sort_by(f32::total_cmp);
        }
    }
    scaled.bands = band_levels(r.coverage)
        .iter()
        .map(|&level| ErrorBand {
            level,
            offsets: errors
                .iter()
                .map(|per_step| {
                    per_step
                        .iter()
                        .map(|e| match e.len() {
                            0 => 0.0,
                            len => e[((len - 1) as f64 * level).round() as usize],
                        })
                        .collect()
                })
                .collect(),
        })
        .collect();
    scaled
}

/// Per channel, how `bands` did on the windows in `range`.
fn channel_sums(
    r: &Residuals,
    bands: &ScaledBands,
    range: std::ops::Range<usize>,
) -> Vec<IntervalSums> {
    let mut sums = vec![IntervalSums::new(r.coverage); r.channels];
    for i in range {
        let offsets = bands.offsets(&r.windows[i], r.horizon);
        let (low, high) = (&offsets[0], &offsets[offsets.len() - 1]);
        for (j, &error) in r.errors[i].iter().enumerate() {
            if !error.is_nan() {
                sums[j / r.horizon].add(error, low[j], high[j]);
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: usize = 10;

    /// 200 windows of two channels whose look-backs jitter ±0.5 (even windows) or step
    /// from −2 to 2 (odd ones), so their spread is 0.5 or 2, with channel 0's errors that
    /// size times u and channel 1's just u, u running over ten levels from −1 to 1.
    fn residuals() -> (Vec<Window>, Vec<Vec<f32>>) {
        let spread = |i: usize| if i.is_multiple_of(2) { 0.5 } else { 2.0 };
        let u = |i: usize| ((i / 2) % 10) as f32 / 4.5 - 1.0;
        let lookback = |i: usize, j: usize| match i % 2 {
            0 if j.is_multiple_of(2) => 0.5,
            0 => -0.5,
            _ if j % 8 < 4 => -2.0,
            _ => 2.0,
        };
        let windows = (0..200)
            .map(|i| Window {
                values: (0..16).map(|j| lookback(i, j)).collect(),
                observed: vec![true; 16],
                channels: vec![0, 1],
            })
            .collect();
        let errors = (0..200)
            .map(|i| {
                let mut e = vec![spread(i) * u(i); H];
                e.extend(vec![u(i); H]);
                e
            })
            .collect();
        (windows, errors)
    }

    /// The windows and errors of two channels, H steps, an 80 % band.
    fn two_channels<'a>(windows: &'a [Window], errors: &'a [Vec<f32>]) -> Residuals<'a> {
        Residuals {
            windows,
            errors,
            channels: 2,
            horizon: H,
            coverage: DEFAULT_COVERAGE,
        }
    }

    /// The share inside `bands` of errors spread evenly over ±`size` in `window`,
    /// channel `c`, first step.
    fn coverage(bands: &ScaledBands, window: &Window, c: usize, size: f32) -> f64 {
        let o = bands.offsets(window, H);
        let mut sums = IntervalSums::new(DEFAULT_COVERAGE);
        for j in 0..1000 {
            let error = size * (j as f32 / 999.5 * 2.0 - 1.0);
            sums.add(error, o[0][c * H], o[2][c * H]);
        }
        sums.score("").coverage
    }

    /// Errors that grow with the look-back's swing get a band scaled by it, which holds the
    /// same share in calm and restless windows; errors that do not keep a constant band.
    #[test]
    fn each_channel_gets_the_scale_its_errors_follow() {
        let (windows, errors) = residuals();
        let r = two_channels(&windows, &errors);
        let calibration = calibrate(&r);
        let chosen = &calibration.chosen;
        assert_eq!(chosen.scales, [BandScale::Spread, BandScale::Constant]);
        assert_eq!(chosen.name(), "per channel");
        let score = |name: &str| {
            let s = calibration
                .validation
                .iter()
                .find(|s| s.bands == name)
                .unwrap();
            s.interval_score
        };
        assert!(
            score("per channel") < 0.9 * score("constant"),
            "{:?}",
            calibration.validation
        );
        for single in ["spread", "steps"] {
            assert!(
                score("per channel") < score(single),
                "{:?}",
                calibration.validation
            );
        }
        // Channel 0: about 78 % covered (the 10th to 90th of ten levels) in calm and
        // restless windows alike, 4× wider in the restless ones; the constant band covers
        // everything in calm windows and less in restless ones.
        let (calm, restless) = (&windows[0], &windows[1]);
        for window_and_size in [(calm, 0.5), (restless, 2.0)] {
            let got = coverage(chosen, window_and_size.0, 0, window_and_size.1);
            assert!((got - 7.0 / 9.0).abs() < 0.01, "{got}");
        }
        let width = |w: &Window| {
            let o = chosen.offsets(w, H);
            o[2][0] - o[0][0]
        };
        assert!((width(restless) / width(calm) - 4.0).abs() < 1e-3);
        assert_eq!(coverage(&calibration.constant, calm, 0, 0.5), 1.0);
        assert!(coverage(&calibration.constant, restless, 0, 2.0) < 0.75);
        // Channel 1: the same band in every window.
        let o = (chosen.offsets(calm, H), chosen.offsets(restless, H));
        assert_eq!(o.0[0][H], o.1[0][H]);
        assert_eq!(o.0[2][H], o.1[2][H]);
    }

    /// A 90 % band runs from the 5th to the 95th percentile, is wider than the 80 % one, and
    /// its misses cost 20 times their distance (2/α, α = 0.1).
    #[test]
    fn a_ninety_percent_band() {
        assert_eq!(band_levels(0.8), [0.1, 0.5, 0.9]);
        assert_eq!(band_levels(0.9), [0.05, 0.5, 0.95]);
        let (windows, errors) = residuals();
        let calibrated = |coverage| {
            calibrate(&Residuals {
                coverage,
                ..two_channels(&windows, &errors)
            })
        };
        let (eighty, ninety) = (calibrated(0.8), calibrated(0.9));
        assert!((ninety.constant.coverage() - 0.9).abs() < 1e-9);
        let width =
            |c: &Calibration| c.constant.bands[2].offsets[1][0] - c.constant.bands[0].offsets[1][0];
        assert!(width(&ninety) > width(&eighty));
        let mut sums = IntervalSums::new(0.9);
        sums.add(2.0, -1.0, 1.0);
        assert!((sums.score("").interval_score - (2.0 + 20.0)).abs() < 1e-9);
    }

    /// A channel whose look-backs never move keeps a constant band; unobserved truth (NaN)
    /// is left out.
    #[test]
    fn a_channel_that_never_moves_keeps_a_constant_band() {
        let (mut windows, mut errors) = residuals();
        for w in &mut windows {
            w.values[..8].fill(0.5);
        }
        errors[0][0] = f32::NAN;
        let r = two_channels(&windows, &errors);
        for scale in [BandScale::Spread, BandScale::Steps] {
            let bands = fit(&r, &[scale; 2], 0..200);
            assert_eq!(bands.scales, [BandScale::Constant, scale]);
            let o = bands.offsets(&windows[1], H);
            let (low, high) = (o[0][0], o[2][0]);
            assert!(
                low.is_finite() && high.is_finite() && high - low > 0.5,
                "{low} {high}"
            );
        }
    }

    /// A channel flat in most windows and restless in a few: no window's band is more than
    /// four times the typical one's, or under a quarter of it, flat or restless as never seen.
    #[test]
    fn a_window_scale_stays_within_four_times_the_typical() {
        let (mut windows, errors) = residuals();
        for (i, w) in windows.iter_mut().enumerate() {
            if i % 20 != 1 {
                w.values[..8].fill(0.5);
            }
        }
        let r = two_channels(&windows, &errors);
        let bands = fit(&r, &[BandScale::Spread; 2], 0..200);
        assert_eq!(bands.scales[0], BandScale::Spread);
        let width = |w: &Window| {
            let o = bands.offsets(w, H);
            o[2][0] - o[0][0]
        };
        let typical = bands.typical[0];
        let restless = Window {
            values: (0..16)
                .map(|j: usize| if j.is_multiple_of(2) { 50.0 } else { -50.0 })
                .collect(),
            ..windows[0].clone()
        };
        // The mean spread is 0.1 (2 in one window of 20): a flat window gets a quarter of
        // it, one swinging ±50 four times it.
        assert!((typical - 0.1).abs() < 1e-6, "{typical}");
        assert!((width(&restless) / width(&windows[0]) - 16.0).abs() < 1e-3);
    }
}
