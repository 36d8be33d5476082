//! Which anomaly detector a twin trusts, measured rather than assumed: after training, the
//! model and PCA (T²/SPE) are both scored on the held-out rows, each detector's threshold is
//! set to flag a fixed share of those clean rows, and faults are injected into copies of them
//! (a sensor biased, stuck, drifting or spiking for a stretch). The detector that finds the
//! most faults is used live; the model (or both together) only when it finds more than PCA
//! alone, so the twin's alerts are never worse than the plain statistics. Never writes.

use std::collections::BTreeMap;

use doppel_model::card::{DetectorChoice, LiveScoring, ScoredGroup};
use doppel_model::tasks::reconstruction_errors;
use doppel_model::{ModelCard, Recording, SensorModel};

use crate::anomaly::AssetDetector;

/// The share of clean held-out rows each detector may flag.
pub const FALSE_ALARM_RATE: f64 = 0.05;
/// Minutes a fault lasts.
const FAULT_SPAN: usize = 16;
/// Faults injected per asset (four kinds, each this many times / 4).
const FAULTS_PER_ASSET: usize = 16;

/// An asset's channels (indices into the card's) by asset id.
pub type AssetChannels = BTreeMap<String, Vec<usize>>;

/// The statistic of `group` at step `t`: its channels' errors over their typical ones,
/// averaged over those observed; NaN when none is.
pub fn group_statistic(errors: &[Vec<f32>], typical: &[f32], group: &[usize], t: usize) -> f32 {
    let (sum, seen) = group
        .iter()
        .filter(|&&c| errors[c][t].is_finite())
        .fold((0.0, 0usize), |(s, n), &c| {
            (s + errors[c][t] / typical[c], n + 1)
        });
    if seen == 0 {
        f32::NAN
    } else {
        sum / seen as f32
    }
}

/// Where `value` falls among `sorted` (0 to 1).
pub fn rank<T: PartialOrd + Copy + Into<f64>>(sorted: &[T], value: T) -> f64 {
    crate::anomaly::extended_rank(sorted, value)
}

/// Calibrates the model's scores on `held` (rows never trained on, in raw units) and chooses
/// the detector, with PCA fitted per asset on `training` rows (raw units, the same channels).
pub fn calibrate_and_choose(
    model: &SensorModel,
    card: &ModelCard,
    training: &Recording,
    held: &Recording,
    assets: &AssetChannels,
) -> Result<LiveScoring, String> {
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    let errors = reconstruction_errors(model, card, held, &device).map_err(|e| e.to_string())?;
    let typical: Vec<f32> = errors
        .iter()
        .map(|e| {
            let seen: Vec<f32> = e.iter().copied().filter(|x| x.is_finite()).collect();
            (seen.iter().sum::<f32>() / seen.len().max(1) as f32).max(1e-6)
        })
        .collect();
    let groups: Vec<ScoredGroup> = assets
        .iter()
        .map(|(name, channels)| {
            let mut normal: Vec<f32> = (0..held.len())
                .map(|t| group_statistic(&errors, &typical, channels, t))
                .filter(|s| s.is_finite())
                .collect();
            normal.sort_by(f32::total_cmp);
            ScoredGroup {
                name: name.clone(),
                channels: channels.clone(),
                normal,
            }
        })
        .collect();
    let pca: BTreeMap<&str, AssetDetector> = assets
        .iter()
        .filter_map(|(name, channels)| {
            let rows = complete_rows(training, channels, 0..training.len());
            AssetDetector::fit(channels.clone(), &rows).map(|d| (name.as_str(), d))
        })
        .collect();
    let choice = choose(model, card, held, &errors, &typical, &groups, &pca)?;
    Ok(LiveScoring {
        typical,
        groups,
        choice,
    })
}

/// The rows `range` of `rec` where every one of `channels` was observed, as f64.
fn complete_rows(
    rec: &Recording,
    channels: &[usize],
    range: std::ops::Range<usize>,
) -> Vec<Vec<f64>> {
    range
        .filter_map(|t| {
            channels
                .iter()
                .map(|&c| rec.observed[c][t].then(|| rec.values[c][t] as f64))
                .collect()
        })
        .collect()
}

/// One injected fault: which asset's channel, where, and how.
struct Fault {
    group: usize,
    channel: usize,
    start: usize,
    kind: usize,
}

/// The faulty copy of `held`: bias (+3 σ), stuck (frozen at its first value), drift (0 to
/// +4 σ), or a spike (+6 σ for one minute in the middle), σ the channel's spread in `held`.
fn inject(held: &Recording, fault: &Fault) -> Recording {
    let mut faulty = held.clone();
    let c = fault.channel;
    let seen: Vec<f32> = (0..held.len())
        .filter(|&t| held.observed[c][t])
        .map(|t| held.values[c][t])
        .collect();
    let mean = seen.iter().sum::<f32>() / seen.len().max(1) as f32;
    let sigma = (seen.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / seen.len().max(1) as f32)
        .sqrt()
        .max(1e-3);
    let first = match held.observed[c][fault.start] {
        true => held.values[c][fault.start],
        false => mean,
    };
    for k in 0..FAULT_SPAN {
        let t = fault.start + k;
        // A fault changes readings; it does not invent them where none came.
        if !held.observed[c][t] {
            continue;
        }
        let v = &mut faulty.values[c][t];
        match fault.kind {
            0 => *v += 3.0 * sigma,
            1 => *v = first,
            2 => *v += 4.0 * sigma * k as f32 / (FAULT_SPAN - 1) as f32,
            _ if k == FAULT_SPAN / 2 => *v += 6.0 * sigma,
            _ => {}
        }
    }
    faulty
}

/// A small deterministic generator for where faults go (the same choice on every run).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// `clean`: the model's errors on `held` as it is, before any fault.
fn choose(
    model: &SensorModel,
    card: &ModelCard,
    held: &Recording,
    clean: &[Vec<f32>],
    typical: &[f32],
    groups: &[ScoredGroup],
    pca: &BTreeMap<&str, AssetDetector>,
) -> Result<DetectorChoice, String> {
    let w = card.config.window();
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    // Thresholds on the clean rows: each detector's own, and both's on the larger of the
    // two ranks.
    let quantile = |mut v: Vec<f64>| -> f64 {
        v.sort_by(f64::total_cmp);
        v.get(((1.0 - FALSE_ALARM_RATE) * v.len() as f64) as usize)
            .copied()
            .unwrap_or(f64::INFINITY)
    };
    let mut pca_normal: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for g in groups {
        if let Some(d) = pca.get(g.name.as_str()) {
            let mut stats: Vec<f64> = complete_rows(held, &g.channels, 0..held.len())
                .iter()
                .map(|r| d.statistic(r))
                .collect();
            stats.sort_by(f64::total_cmp);
            pca_normal.insert(g.name.as_str(), stats);
        }
    }
    let mut threshold: BTreeMap<(&str, &str), f64> = BTreeMap::new();
    for g in groups {
        let Some(pn) = pca_normal.get(g.name.as_str()) else {
            continue;
        };
        let d = &pca[g.name.as_str()];
        let mut model_ranks = Vec::new();
        let mut both_ranks = Vec::new();
        for t in 0..held.len() {
            let m = group_statistic(clean, typical, &g.channels, t);
            let row: Option<Vec<f64>> = g
                .channels
                .iter()
                .map(|&c| held.observed[c][t].then(|| held.values[c][t] as f64))
                .collect();
            if !m.is_finite() {
                continue;
            }
            let mr = rank(&g.normal, m);
            model_ranks.push(mr);
            if let Some(row) = row {
                both_ranks.push(mr.max(rank(pn, d.statistic(&row))));
            }
        }
        threshold.insert((g.name.as_str(), "model"), quantile(model_ranks));
        threshold.insert(
            (g.name.as_str(), "pca"),
            quantile(pn.iter().map(|s| rank(pn, *s)).collect()),
        );
        threshold.insert((g.name.as_str(), "both"), quantile(both_ranks));
    }
    let compared: Vec<usize> = (0..groups.len())
        .filter(|&i| pca_normal.contains_key(groups[i].name.as_str()))
        .collect();
    if compared.is_empty() || held.len() < FAULT_SPAN + 1 {
        return Ok(DetectorChoice {
            detector: "model".into(),
            false_alarm_rate: FALSE_ALARM_RATE,
            faults: 0,
            detected: BTreeMap::new(),
            why: "no asset has history enough for PCA to be compared: the model alone".into(),
        });
    }
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut found: BTreeMap<&str, usize> = BTreeMap::new();
    let mut faults = 0;
    for &gi in &compared {
        let g = &groups[gi];
        for f in 0..FAULTS_PER_ASSET {
            let fault = Fault {
                group: gi,
                channel: g.channels[next(&mut seed) as usize % g.channels.len()],
                start: next(&mut seed) as usize % (held.len() - FAULT_SPAN),
                kind: f % 4,
            };
            let faulty = inject(held, &fault);
            // Only the window ending at the fault's end is scored: a deployed twin scores
            // the latest window.
            let end = (fault.start + FAULT_SPAN).max(w.min(held.len()));
            let from = end.saturating_sub(w);
            let piece = faulty.slice(from, end);
            let errors =
                reconstruction_errors(model, card, &piece, &device).map_err(|e| e.to_string())?;
            let group = &groups[fault.group];
            let d = &pca[group.name.as_str()];
            let pn = &pca_normal[group.name.as_str()];
            let (mut by_model, mut by_pca, mut by_both) = (false, false, false);
            for t in fault.start..fault.start + FAULT_SPAN {
                let local = t - from;
                let m = group_statistic(&errors, typical, &group.channels, local);
                let mr = if m.is_finite() {
                    rank(&group.normal, m)
                } else {
                    0.0
                };
                let row: Option<Vec<f64>> = group
                    .channels
                    .iter()
                    .map(|&c| faulty.observed[c][t].then(|| faulty.values[c][t] as f64))
                    .collect();
                let pr = row.map_or(0.0, |r| rank(pn, d.statistic(&r)));
                let name = group.name.as_str();
                by_model |= mr > threshold[&(name, "model")];
                by_pca |= pr > threshold[&(name, "pca")];
                by_both |= mr.max(pr) > threshold[&(name, "both")];
            }
            faults += 1;
            for (name, hit) in [("model", by_model), ("pca", by_pca), ("both", by_both)] {
                *found.entry(name).or_default() += hit as usize;
            }
        }
    }
    let share = |name: &str| found.get(name).copied().unwrap_or(0) as f64 / faults as f64;
    let (model_share, pca_share, both_share) = (share("model"), share("pca"), share("both"));
    // PCA unless another finds strictly more: the plain statistics are the floor.
    let detector = if both_share > pca_share && both_share >= model_share {
        "both"
    } else if model_share > pca_share {
        "model"
    } else {
        "pca"
    };
    let pct = |x: f64| format!("{:.0} %", 100.0 * x);
    Ok(DetectorChoice {
        detector: detector.into(),
        false_alarm_rate: FALSE_ALARM_RATE,
        faults,
        detected: [
            ("model", model_share),
            ("pca", pca_share),
            ("both", both_share),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect(),
        why: format!(
            "{detector}: of {faults} faults injected into held-out rows (sensors biased, \
             stuck, drifting, spiking), at {} false alarms on the clean rows, the model found \
             {}, PCA {}, both together {}{}",
            pct(FALSE_ALARM_RATE),
            pct(model_share),
            pct(pca_share),
            pct(both_share),
            if detector == "pca" {
                "; PCA is kept unless another detector finds more"
            } else {
                ""
            }
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(values: Vec<Vec<f32>>, observed: Vec<Vec<bool>>) -> Recording {
        Recording {
            source: "test".into(),
            start_ns: 0,
            step_ns: 60_000_000_000,
            channels: (0..values.len()).map(|c| format!("s{c}")).collect(),
            values,
            observed,
            rows: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Faults change readings where they came and invent none where they did not; a stuck
    /// sensor repeats its first value.
    #[test]
    fn injected_faults_change_only_observed_readings() {
        let values: Vec<f32> = (0..40).map(|t| (t % 2) as f32).collect();
        let mut seen = vec![true; 40];
        seen[12] = false;
        let held = recording(vec![values.clone()], vec![seen]);
        let fault = |kind| Fault {
            group: 0,
            channel: 0,
            start: 10,
            kind,
        };
        let biased = inject(&held, &fault(0));
        // σ of a 0/1 alternation is about 0.5: +1.5 inside the span, nothing outside.
        assert!(
            (biased.values[0][11] - 2.5).abs() < 0.01,
            "{}",
            biased.values[0][11]
        );
        assert_eq!(biased.values[0][9], values[9]);
        assert_eq!(biased.values[0][26], values[26]);
        assert!(!biased.observed[0][12], "no reading invented");
        let stuck = inject(&held, &fault(1));
        assert!(
            (10..26)
                .filter(|&t| t != 12)
                .all(|t| stuck.values[0][t] == values[10])
        );
    }

    /// A group's statistic averages its observed channels' errors over their typical ones.
    #[test]
    fn group_statistics_average_what_was_observed() {
        let errors = vec![vec![4.0, f32::NAN], vec![1.0, f32::NAN]];
        let typical = [2.0, 1.0];
        assert_eq!(group_statistic(&errors, &typical, &[0, 1], 0), 1.5);
        assert!(group_statistic(&errors, &typical, &[0, 1], 1).is_nan());
        assert_eq!(rank(&[1.0, 2.0, 3.0, 4.0], 3.5), 0.75);
    }
}
