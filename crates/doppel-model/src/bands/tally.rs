//! How well bands hold on held-out data: coverage, width and interval score of each set of
//! bands a head could use, and coverage in calm against restless windows.
//!
//! Only evaluation uses this; it must never feed what it measures back into calibration.

use super::{
    BandScale, BandScore, ErrorBand, Follower, IntervalSums, ScaledBands, needed_factors, widened,
};
use crate::batch::Window;

/// How restless channel `c`'s look-back in `window` (every channel) is: the root mean square
/// of its step-to-step changes.
pub fn activity(window: &Window, c: usize) -> f32 {
    BandScale::Steps.of(window, c)
}

/// A band's coverage by how restless the look-back was (`BandScore::calm`, `restless`).
#[derive(Debug, Clone, Default)]
pub struct CoverageByActivity {
    /// Per channel: (activity, values inside, values observed) of each window.
    per_channel: Vec<Vec<(f32, u32, u32)>>,
}

impl CoverageByActivity {
    pub fn add(&mut self, channel: usize, activity: f32, inside: u32, observed: u32) {
        if self.per_channel.len() <= channel {
            self.per_channel.resize(channel + 1, Vec::new());
        }
        self.per_channel[channel].push((activity, inside, observed));
    }

    /// The coverage in the calmest and in the most restless third of each channel's windows.
    pub fn thirds(&mut self) -> (f64, f64) {
        let (mut calm, mut restless) = ((0u64, 0u64), (0u64, 0u64));
        for windows in &mut self.per_channel {
            windows.sort_by(|a, b| a.0.total_cmp(&b.0));
            let third = windows.len() / 3;
            for (part, sums) in [
                (&windows[..third], &mut calm),
                (&windows[windows.len() - third..], &mut restless),
            ] {
                for &(_, inside, observed) in part {
                    sums.0 += inside as u64;
                    sums.1 += observed as u64;
                }
            }
        }
        let share = |(inside, observed): (u64, u64)| inside as f64 / observed.max(1) as f64;
        (share(calm), share(restless))
    }
}

/// Measures a head's bands over forecasts on held-out data: the bands forecasts use, the
/// constant ones when those differ, and with `recalibrate` (steps) the first made to follow
/// drift as a deployed forecaster would: recalibrated (`Recalibrator`), adapted (`Adapter`),
/// and both.
pub struct BandTally {
    /// Named bands; the sets that follow drift, if any, are last and have none of their own.
    sets: Vec<(String, Option<ScaledBands>)>,
    /// The first set recalibrated, adapted, and both (none without `recalibrate`), each with
    /// rules of its own: the two recalibrators read the same forecasts and agree, and a
    /// recalibration is cheap next to the forecasts it reads.
    followers: Vec<Follower>,
    sums: Vec<IntervalSums>,
    by_activity: Vec<CoverageByActivity>,
    horizon: usize,
}

impl BandTally {
    pub fn new(
        chosen: ScaledBands,
        constant: Vec<ErrorBand>,
        recalibrate: Option<usize>,
        horizon: usize,
    ) -> Self {
        let (channels, coverage) = (chosen.scales.len(), chosen.coverage());
        let name = chosen.name();
        let mut sets = vec![(name.to_string(), Some(chosen))];
        if name != BandScale::Constant.name() {
            sets.push(("constant".into(), Some(ScaledBands::constant(constant))));
        }
        let mut followers = Vec::new();
        if let Some(steps) = recalibrate {
            for (rule, recalibrate, adapt_from) in [
                ("recalibrated", Some(steps), None),
                ("adapted", None, Some(0)),
                ("recalibrated, adapted", Some(steps), Some(0)),
            ] {
                sets.push((format!("{name}, {rule}"), None));
                followers.push(Follower::new(
                    recalibrate,
                    adapt_from,
                    channels,
                    horizon,
                    coverage,
                ));
            }
        }
        BandTally {
            sums: vec![IntervalSums::new(coverage); sets.len()],
            by_activity: vec![CoverageByActivity::default(); sets.len()],
            sets,
            followers,
            horizon,
        }
    }

    /// The next forecasts come from another recording (the rules that follow drift start
    /// over).
    pub fn new_recording(&mut self) {
        self.followers.iter_mut().for_each(Follower::reset);
    }

    /// A forecast from `window` (every channel) whose first step is `origin`, and its errors
    /// (truth − forecast, standardised, `[c * H + k]`; NaN where unobserved). Forecasts of
    /// one recording come in the order of their origins.
    pub fn add(&mut self, window: &Window, origin: usize, errors: &[f32]) {
        let h = self.horizon;
        let mut offsets: Vec<Vec<Vec<f32>>> = self
            .sets
            .iter()
            .filter_map(|(_, bands)| bands.as_ref().map(|b| b.offsets(window, h)))
            .collect();
        for follower in &mut self.followers {
            offsets.push(widened(&offsets[0], &follower.factors_at(origin), h));
        }
        for c in 0..window.channels.len() {
            let activity = activity(window, c);
            for (set, o) in offsets.iter().enumerate() {
                let (mut inside, mut observed) = (0, 0);
                for i in c * h..(c + 1) * h {
                    let error = errors[i];
                    if error.is_nan() {
                        continue;
                    }
                    let (low, high) = (o[0][i], o[o.len() - 1][i]);
                    inside += u32::from(self.sums[set].add(error, low, high));
                    observed += 1;
                }
                self.by_activity[set].add(c, activity, inside, observed);
            }
        }
        if !self.followers.is_empty() {
            let needed = needed_factors(&offsets[0], errors);
            for follower in &mut self.followers {
                follower.record(origin, needed.clone());
            }
        }
    }

    /// Each set's score, the bands forecasts use first.
    pub fn scores(mut self) -> Vec<BandScore> {
        self.sets
            .iter()
            .zip(&self.sums)
            .zip(&mut self.by_activity)
            .map(|(((name, _), sums), counts)| {
                let (calm, restless) = counts.thirds();
                BandScore {
                    calm: Some(calm),
                    restless: Some(restless),
                    ..sums.score(name)
                }
            })
            .collect()
    }
}
