//! Bands that follow drift. Calibrated once, on the validation windows, a band holds its
//! share only while the data stay like them. Two rules widen or narrow each channel's band
//! around its median as the truth of earlier forecasts arrives:
//!
//! - `Recalibrator`: the factor that would have held the share over the last N steps'
//!   forecasts (a window quantile). It follows a steady drift, and a burst only once the
//!   burst fills its window.
//! - `Adapter`: adaptive conformal inference (Gibbs & Candès 2021) on the log of the factor,
//!   which steps up a little for each value its band missed and down a little for each it
//!   held, as the truth arrives. It follows a burst within a few horizons.
//!
//! Both must only ever use truth that has arrived by the origin they are asked about: a
//! forecaster in service cannot know more.

use std::collections::VecDeque;

use super::CLAMP;

/// The least factor on each value's band (`offsets`, `[band][c * H + k]`, widened around the
/// median) that would have held its error (`errors`, truth − forecast; NaN stays NaN).
pub fn needed_factors(offsets: &[Vec<f32>], errors: &[f32]) -> Vec<f32> {
    let (low, mid, high) = (&offsets[0], &offsets[1], &offsets[offsets.len() - 1]);
    errors
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            if e >= mid[i] {
                (e - mid[i]) / (high[i] - mid[i]).max(f32::EPSILON)
            } else {
                (mid[i] - e) / (mid[i] - low[i]).max(f32::EPSILON)
            }
        })
        .collect()
}

/// One factor a channel that would have held the band's share of the forecasts made in the last
/// `steps` steps whose truth has all arrived (one factor a channel, not one per step: a few
/// hundred recent forecasts are enough to set it), between a quarter and four.
#[derive(Debug, Clone)]
pub struct Recalibrator {
    steps: usize,
    coverage: f64,
    channels: usize,
    horizon: usize,
    /// Forecasts whose truth is still arriving: (origin, needed factors `[c * H + k]`).
    pending: VecDeque<(usize, Vec<f32>)>,
    /// Forecasts whose truth has arrived, oldest first.
    known: VecDeque<(usize, Vec<f32>)>,
    factors: Vec<f32>,
    /// Forecasts become known since the factors were last set.
    fresh: usize,
}

impl Recalibrator {
    /// For bands meant to hold `coverage` of the truth.
    pub fn new(steps: usize, channels: usize, horizon: usize, coverage: f64) -> Self {
        Recalibrator {
            steps,
            coverage,
            channels,
            horizon,
            pending: VecDeque::new(),
            known: VecDeque::new(),
            factors: vec![1.0; channels],
            fresh: 0,
        }
    }

    /// Each channel's factor for a forecast whose first step is `origin` (steps of one
    /// recording, in order): 1 until some earlier forecast's truth has all arrived.
    pub fn factors_at(&mut self, origin: usize) -> &[f32] {
        while self
            .pending
            .front()
            .is_some_and(|(o, _)| o + self.horizon <= origin)
        {
            let done = self.pending.pop_front().expect("checked");
            self.known.push_back(done);
            self.fresh += 1;
        }
        let newest = self.known.back().map_or(0, |(o, _)| *o);
        while self
            .known
            .front()
            .is_some_and(|(o, _)| o + self.steps <= newest)
        {
            self.known.pop_front();
        }
        // Setting the factors sorts every recent error; once a horizon's worth of new
        // forecasts is often enough to follow drift.
        if self.fresh > 0 && (self.fresh >= self.horizon || self.fresh >= self.known.len()) {
            self.fresh = 0;
            let mut needed = Vec::new();
            for c in 0..self.channels {
                needed.clear();
                for (_, factors) in &self.known {
                    let of_channel = &factors[c * self.horizon..(c + 1) * self.horizon];
                    needed.extend(of_channel.iter().filter(|f| !f.is_nan()));
                }
                if !needed.is_empty() {
                    let at = ((needed.len() - 1) as f64 * self.coverage).round() as usize;
                    let (_, &mut factor, _) = needed.select_nth_unstable_by(at, f32::total_cmp);
                    // Bounded like the scales: a band calibrated to (almost) zero width,
                    // a status that validation never saw switch, would need any factor.
                    self.factors[c] = factor.clamp(1.0 / CLAMP, CLAMP);
                }
            }
        }
        &self.factors
    }

    /// A forecast made at `origin` and the factors its values `needed` (`needed_factors` of
    /// the calibrated bands, `[c * H + k]`).
    pub fn record(&mut self, origin: usize, needed: Vec<f32>) {
        self.pending.push_back((origin, needed));
    }

    /// Starts over (a new recording: its steps are not the last one's).
    pub fn reset(&mut self) {
        *self = Recalibrator::new(self.steps, self.channels, self.horizon, self.coverage);
    }
}

/// How far a channel's log-factor moves over one horizon of forecasts that all miss (less the
/// share allowed). Set before measuring, from the delay: a forecast's last miss is known a
/// horizon after it, and an integrator whose feedback comes D steps late overshoots once its
/// gain times D passes about 1/e and turns unstable near π/2. An 80 % band's miss share falls
/// by about 0.45 per unit of log-width for Gaussian errors (0.8 for uniform ones), so this
/// gain per horizon is 0.2–0.4: it settles without ringing even were every miss a horizon late.
const ADAPT_PER_HORIZON: f64 = 0.5;

/// Adaptive conformal inference on each channel's band width: as the truth of each value of
/// a forecast arrives, its channel's log-factor moves by 1/H of (1 if the band it was given
/// missed it, less the share it may miss, 1 − coverage), times the steps since the forecast
/// before it; a whole forecast moves it by its share of misses less 1 − coverage. Too many
/// misses widen the band, too few narrow it. Unbounded, the misses would average
/// 1 − coverage over any long run whatever the data do; bounded, as the factor is (a quarter
/// to four), only while the bound is not reached. Taking each value in as its truth arrives
/// (a step-ahead miss is known a step later), not the whole forecast a horizon after its
/// origin: the shorter the delay, the steadier the feedback at the same rate.
#[derive(Debug, Clone)]
pub struct Adapter {
    coverage: f64,
    horizon: usize,
    /// Each channel's log-factor on the width, within ±ln 4.
    tilt: Vec<f64>,
    /// Forecasts whose truth is still arriving, oldest first.
    pending: VecDeque<Pending>,
    last_origin: Option<usize>,
}

#[derive(Debug, Clone)]
struct Pending {
    origin: usize,
    /// Steps since the forecast before: what one forecast stands for.
    gap: usize,
    /// `needed_factors`, `[c * H + k]`.
    needed: Vec<f32>,
    /// Each channel's factor it was given.
    given: Vec<f32>,
    /// Horizon steps already taken in.
    absorbed: usize,
}

impl Adapter {
    /// For bands meant to hold `coverage` of the truth.
    pub fn new(channels: usize, horizon: usize, coverage: f64) -> Self {
        Adapter {
            coverage,
            horizon,
            tilt: vec![0.0; channels],
            pending: VecDeque::new(),
            last_origin: None,
        }
    }

    /// Each channel's factor for a forecast whose first step is `origin`: `base` (1, or a
    /// `Recalibrator`'s factors) tilted by the misses whose truth had arrived by then.
    pub fn factors_at(&mut self, origin: usize, base: &[f32]) -> Vec<f32> {
        let h = self.horizon;
        // Per value: a forecast's H values together move the log-factor as far as its share
        // of misses would at once.
        let per_value = ADAPT_PER_HORIZON / (h * h) as f64;
        let (allowed, bound) = (1.0 - self.coverage, (CLAMP as f64).ln());
        for p in &mut self.pending {
            // Steps of the forecast whose truth has arrived: those before `origin`.
            let known = origin.saturating_sub(p.origin).min(h);
            for k in p.absorbed..known {
                for (c, tilt) in self.tilt.iter_mut().enumerate() {
                    let needed = p.needed[c * h + k];
                    if !needed.is_nan() {
                        let missed = f64::from(u8::from(needed > p.given[c]));
                        let step = per_value * p.gap as f64 * (missed - allowed);
                        *tilt = (*tilt + step).clamp(-bound, bound);
                    }
                }
            }
            p.absorbed = p.absorbed.max(known);
        }
        while self.pending.front().is_some_and(|p| p.absorbed == h) {
            self.pending.pop_front();
        }
        base.iter()
            .zip(&self.tilt)
            .map(|(&b, &t)| (b * t.exp() as f32).clamp(1.0 / CLAMP, CLAMP))
            .collect()
    }

    /// A forecast made at `origin`, the factors its values `needed` (`needed_factors`,
    /// `[c * H + k]`) and each channel's factor it was `given`.
    pub fn record(&mut self, origin: usize, needed: Vec<f32>, given: Vec<f32>) {
        // The forecast stands for the steps since the one before (a stride), so the band
        // moves as fast per step of time whatever the stride; at most a horizon's worth.
        let gap = self
            .last_origin
            .map_or(1, |last| origin.saturating_sub(last))
            .clamp(1, self.horizon);
        self.last_origin = Some(origin);
        self.pending.push_back(Pending {
            origin,
            gap,
            needed,
            given,
            absorbed: 0,
        });
    }

    /// Starts over (a new recording).
    pub fn reset(&mut self) {
        *self = Adapter::new(self.tilt.len(), self.horizon, self.coverage);
    }
}

/// Bands made to follow drift by one rule or both, forecast by forecast: the recalibrated
/// factors (1 without a recalibrator), adapted on top where an adapter runs. What a deployed
/// forecaster (`tasks::forecast_with_head`) and the evaluation (`BandTally`) both step through.
#[derive(Debug, Clone)]
pub struct Follower {
    channels: usize,
    recalibrator: Option<Recalibrator>,
    /// The adapter and the first origin it reads (it neither tilts nor learns before).
    adapter: Option<(Adapter, usize)>,
    /// The factors last given: what the adapter learns against when their forecast is
    /// recorded.
    given: Vec<f32>,
}

impl Follower {
    /// Recalibrated over the last `recalibrate` steps, and adapted from origin `adapt_from`
    /// on; for bands meant to hold `coverage` of the truth.
    pub fn new(
        recalibrate: Option<usize>,
        adapt_from: Option<usize>,
        channels: usize,
        horizon: usize,
        coverage: f64,
    ) -> Self {
        Follower {
            channels,
            recalibrator: recalibrate
                .map(|steps| Recalibrator::new(steps, channels, horizon, coverage)),
            adapter: adapt_from.map(|from| (Adapter::new(channels, horizon, coverage), from)),
            given: Vec::new(),
        }
    }

    /// Each channel's factor for a forecast whose first step is `origin` (steps of one
    /// recording, in order).
    pub fn factors_at(&mut self, origin: usize) -> Vec<f32> {
        let base = match &mut self.recalibrator {
            Some(r) => r.factors_at(origin).to_vec(),
            None => vec![1.0; self.channels],
        };
        let factors = match &mut self.adapter {
            Some((adapter, from)) if origin >= *from => adapter.factors_at(origin, &base),
            _ => base,
        };
        self.given = factors.clone();
        factors
    }

    /// The forecast at `origin` just given `factors_at(origin)`, and the factors its values
    /// `needed` (`needed_factors` of the calibrated bands, `[c * H + k]`).
    pub fn record(&mut self, origin: usize, needed: Vec<f32>) {
        if let Some((adapter, from)) = &mut self.adapter
            && origin >= *from
        {
            adapter.record(origin, needed.clone(), std::mem::take(&mut self.given));
        }
        if let Some(r) = &mut self.recalibrator {
            r.record(origin, needed);
        }
    }

    /// Starts over (a new recording).
    pub fn reset(&mut self) {
        if let Some(r) = &mut self.recalibrator {
            r.reset();
        }
        if let Some((adapter, _)) = &mut self.adapter {
            adapter.reset();
        }
    }
}

/// `offsets` (`[band][c * H + k]`) widened (factor > 1) or narrowed around the median band
/// by each channel's factor.
pub fn widened(offsets: &[Vec<f32>], factors: &[f32], horizon: usize) -> Vec<Vec<f32>> {
    let mid = &offsets[1];
    offsets
        .iter()
        .map(|band| {
            band.iter()
                .enumerate()
                .map(|(i, &o)| mid[i] + factors[i / horizon] * (o - mid[i]))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bands::{DEFAULT_COVERAGE, IntervalSums};

    /// Errors that double halfway through a stream: the calibrated band then holds far less
    /// than 80 %; recalibrated on the last 500 steps' forecasts it holds 80 % again once
    /// those are all from after the change, and it never uses a forecast whose truth has
    /// not all arrived.
    #[test]
    fn recalibration_follows_errors_that_drift() {
        let (h, band) = (2, vec![vec![-1.0f32; 2], vec![0.0; 2], vec![1.0; 2]]);
        let mut recalibrator = Recalibrator::new(500, 1, h, DEFAULT_COVERAGE);
        // Spread evenly over ±1.25 (so ±1 holds 80 %), doubled from origin 2,000 on.
        let error = |o: usize, k: usize| {
            let u = ((o * h + k) as f64 * 0.618_034).fract() as f32 * 2.5 - 1.25;
            if o >= 2000 { 2.0 * u } else { u }
        };
        let (mut fixed, mut followed) = (
            IntervalSums::new(DEFAULT_COVERAGE),
            IntervalSums::new(DEFAULT_COVERAGE),
        );
        for origin in 0..4000 {
            let factors = recalibrator.factors_at(origin).to_vec();
            if origin == 1999 || origin == 2001 {
                assert!((factors[0] - 1.0).abs() < 0.02, "{factors:?}");
            }
            let widened = widened(&band, &factors, h);
            let errors: Vec<f32> = (0..h).map(|k| error(origin, k)).collect();
            if origin >= 2600 {
                for (k, &e) in errors.iter().enumerate() {
                    fixed.add(e, band[0][k], band[2][k]);
                    followed.add(e, widened[0][k], widened[2][k]);
                }
            }
            recalibrator.record(origin, needed_factors(&band, &errors));
        }
        let (fixed, followed) = (fixed.score("constant"), followed.score("recalibrated"));
        assert!((fixed.coverage - 0.4).abs() < 0.03, "{fixed}");
        assert!((followed.coverage - 0.8).abs() < 0.03, "{followed}");
        assert!((recalibrator.factors_at(4000)[0] - 2.0).abs() < 0.05);

        // A band of zero width that starts missing is widened at most four times.
        let flat = vec![vec![0.0f32; 2]; 3];
        let mut recalibrator = Recalibrator::new(500, 1, h, DEFAULT_COVERAGE);
        for origin in 0..100 {
            recalibrator.record(origin, needed_factors(&flat, &[1.0, -1.0]));
        }
        assert_eq!(recalibrator.factors_at(200), [4.0]);
    }

    /// A burst: errors three times their size for 200 steps, then back. The calibrated band
    /// holds about a quarter of the burst; recalibrated on the last 500 steps' forecasts,
    /// still under half, because the burst never fills the window; adapted, most of it
    /// within a few horizons. Over the whole stream the adapted band holds its 80 %, and it
    /// moves only once the truth of a burst forecast's first step has arrived.
    #[test]
    fn adaptation_follows_a_burst_the_window_quantile_misses() {
        let h = 10;
        let band = vec![vec![-1.0f32; h], vec![0.0; h], vec![1.0; h]];
        let burst = 2000..2200;
        // Spread evenly over ±1.25 (so ±1 holds 80 %), tripled in the burst.
        let calm_error =
            |o: usize, k: usize| ((o * h + k) as f64 * 0.618_034).fract() as f32 * 2.5 - 1.25;
        let error = |o: usize, k: usize| {
            let u = calm_error(o, k);
            if burst.contains(&o) { 3.0 * u } else { u }
        };
        let mut recalibrator = Recalibrator::new(500, 1, h, DEFAULT_COVERAGE);
        let mut adapter = Adapter::new(1, h, DEFAULT_COVERAGE);
        let mut calm = adapter.clone();
        let sums = || IntervalSums::new(DEFAULT_COVERAGE);
        let (mut in_burst, mut overall) = ([sums(), sums(), sums()], sums());
        for origin in 0..4000 {
            let recalibrated = recalibrator.factors_at(origin).to_vec();
            let adapted = adapter.factors_at(origin, &[1.0]);
            // The same stream without the burst: the factors part only once the truth of
            // the first burst forecast's first step has arrived, a step after its origin.
            let unburst = calm.factors_at(origin, &[1.0]);
            if origin <= burst.start + 1 {
                assert_eq!(unburst == adapted, origin <= burst.start, "{origin}");
            }
            let calm_errors: Vec<f32> = (0..h).map(|k| calm_error(origin, k)).collect();
            calm.record(origin, needed_factors(&band, &calm_errors), unburst);
            let errors: Vec<f32> = (0..h).map(|k| error(origin, k)).collect();
            let sets = [
                band.clone(),
                widened(&band, &recalibrated, h),
                widened(&band, &adapted, h),
            ];
            for (k, &e) in errors.iter().enumerate() {
                if burst.contains(&origin) && origin >= burst.start + 4 * h {
                    for (sums, o) in in_burst.iter_mut().zip(&sets) {
                        sums.add(e, o[0][k], o[2][k]);
                    }
                }
                overall.add(e, sets[2][0][k], sets[2][2][k]);
            }
            let needed = needed_factors(&band, &errors);
            recalibrator.record(origin, needed.clone());
            adapter.record(origin, needed, adapted);
        }
        let [fixed, recalibrated, adapted] = in_burst.map(|s| s.score("").coverage);
        let overall = overall.score("");
        eprintln!("in the burst: {fixed:.3} {recalibrated:.3} {adapted:.3}; overall {overall}");
        assert!((fixed - 4.0 / 15.0).abs() < 0.03, "{fixed}");
        assert!(recalibrated < 0.5, "{recalibrated}");
        assert!(adapted > 0.7, "{adapted}");
        assert!((overall.coverage - 0.8).abs() < 0.01, "{overall}");
    }
}
