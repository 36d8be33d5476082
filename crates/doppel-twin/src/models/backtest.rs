//! A twin's model over recorded data, for backtests of rules (`doppel rules test --model`):
//! each asset's anomaly score at every minute, as the live twin hands it to the rules (the
//! detector the model chose: its own score, PCA's, or the larger). Differences from live, on
//! purpose: the model scores the recording window by window rather than each minute as the
//! latest of its window, and PCA is fitted on the recording's first day of minute means
//! rather than on the lake's last day of readings. Never writes.

use std::collections::BTreeMap;
use std::path::Path;

use doppel_model::tasks::reconstruction_errors;
use doppel_model::{Recording, store};

use super::STEP_NS;
use super::choice::{group_statistic, rank};
use crate::anomaly::AssetDetector;

/// Minutes of the recording PCA is fitted on, at most.
const PCA_FIT_MINUTES: usize = 1440;

/// Every asset's score at each minute of a recording.
pub struct RecordedScores {
    /// Which detector gives them: `model`, `pca` or `both`.
    pub detector: String,
    /// The start of each minute, ns.
    pub start_ns: i64,
    /// `scores[minute]`: (asset, score), for the assets with a score that minute.
    pub scores: Vec<Vec<(String, f64)>>,
}

/// The recording as minute means (slots of its grid averaged into minutes).
pub fn minute_means(rec: &Recording) -> Recording {
    if rec.step_ns == STEP_NS {
        return rec.clone();
    }
    let start = rec.start_ns.div_euclid(STEP_NS) * STEP_NS;
    let end = rec.time_ns(rec.len().saturating_sub(1)).div_euclid(STEP_NS) * STEP_NS;
    let len = ((end - start) / STEP_NS + 1) as usize;
    let mut sums = vec![vec![(0.0f64, 0usize); len]; rec.channels.len()];
    for t in 0..rec.len() {
        let slot = ((rec.time_ns(t) - start) / STEP_NS) as usize;
        for (c, sum) in sums.iter_mut().enumerate() {
            if rec.observed[c][t] {
                sum[slot].0 += rec.values[c][t] as f64;
                sum[slot].1 += 1;
            }
        }
    }
    Recording {
        source: rec.source.clone(),
        start_ns: start,
        step_ns: STEP_NS,
        channels: rec.channels.clone(),
        values: sums
            .iter()
            .map(|c| {
                c.iter()
                    .map(|(s, n)| (s / (*n).max(1) as f64) as f32)
                    .collect()
            })
            .collect(),
        observed: sums
            .iter()
            .map(|c| c.iter().map(|(_, n)| *n > 0).collect())
            .collect(),
        rows: Vec::new(),
        labels: Vec::new(),
    }
}

/// Scores `rec` (any grid: read as minute means) with the twin's model in `dir`.
pub fn score(dir: &Path, rec: &Recording) -> Result<RecordedScores, String> {
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    let (model, card) = store::load(dir, &device).map_err(|e| e.to_string())?;
    let Some(scoring) = card.live_scoring.clone() else {
        return Err(format!(
            "{} is not a twin's model (its card has no live scoring): use one a twin trained \
             (`doppel model list` shows twin-<bucket>) or `doppel model twin`",
            dir.display()
        ));
    };
    let rec = minute_means(rec);
    let rec = rec.select(&card.channels).map_err(|e| e.to_string())?;
    let errors = reconstruction_errors(&model, &card, &rec, &device).map_err(|e| e.to_string())?;
    let detector = scoring.choice.detector.clone();
    // PCA per asset on the first day, as a twin fits it on history.
    let fit_to = PCA_FIT_MINUTES.min(rec.len());
    let row = |channels: &[usize], t: usize| -> Option<Vec<f64>> {
        channels
            .iter()
            .map(|&c| rec.observed[c][t].then(|| rec.values[c][t] as f64))
            .collect()
    };
    let pca: BTreeMap<&str, AssetDetector> = match detector.as_str() {
        "model" => BTreeMap::new(),
        _ => scoring
            .groups
            .iter()
            .filter_map(|g| {
                let rows: Vec<Vec<f64>> = (0..fit_to).filter_map(|t| row(&g.channels, t)).collect();
                AssetDetector::fit(g.channels.clone(), &rows).map(|d| (g.name.as_str(), d))
            })
            .collect(),
    };
    let scores = (0..rec.len())
        .map(|t| {
            scoring
                .groups
                .iter()
                .filter_map(|g| {
                    let statistic = group_statistic(&errors, &scoring.typical, &g.channels, t);
                    let model = (statistic.is_finite() && !g.normal.is_empty())
                        .then(|| rank(&g.normal, statistic));
                    let pca = pca
                        .get(g.name.as_str())
                        .and_then(|d| row(&g.channels, t).map(|r| d.score(&r)));
                    crate::anomaly::live_score(Some(&detector), pca, model)
                        .map(|s| (g.name.clone(), s))
                })
                .collect()
        })
        .collect();
    Ok(RecordedScores {
        detector,
        start_ns: rec.start_ns,
        scores,
    })
}
