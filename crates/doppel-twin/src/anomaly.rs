//! Anomaly scores on live data, per asset, from the plain statistics first: PCA over the
//! asset's sensors (Hotelling's T² inside the principal subspace, SPE outside it), fitted on
//! the asset's readings of the last day in the lake (the moments all its sensors read). An asset's score is where its
//! latest readings' statistic falls among its history's: 0.5 is ordinary, 0.99 beyond all but
//! one minute in a hundred. The sensor model's own score joins this later (its issue asks which
//! detects best); until then the twin's alerts stand on the statistics alone. Never writes.

use std::collections::BTreeMap;

use doppel_model::baselines::PcaDetector;

use crate::twin::Twin;

/// How often assets without a detector try to get one, and how often all are fitted again.
const FIT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
const REFIT_EVERY: std::time::Duration = std::time::Duration::from_secs(6 * 3600);

/// One asset's detector: its sensors (indices into the spec) and the fitted PCA, with the
/// statistics of the history it was fitted on, sorted, to turn a statistic into a score.
pub struct AssetDetector {
    pub sensors: Vec<usize>,
    pca: PcaDetector,
    history: Vec<f64>,
}

/// Rows of history (moments where every sensor of the asset read) it needs for a detector.
pub const MIN_ROWS: usize = 120;

impl AssetDetector {
    /// Fits on rows of the asset's sensors' values (`rows[moment][sensor]`, complete rows
    /// only); `None` with fewer than [`MIN_ROWS`] rows or fewer than two sensors that vary.
    pub fn fit(sensors: Vec<usize>, rows: &[Vec<f64>]) -> Option<AssetDetector> {
        if rows.len() < MIN_ROWS || sensors.len() < 2 {
            return None;
        }
        let varying = (0..sensors.len())
            .filter(|&j| {
                let first = rows[0][j];
                rows.iter().any(|r| (r[j] - first).abs() > 1e-9)
            })
            .count();
        if varying < 2 {
            return None;
        }
        let pca = PcaDetector::fit(rows, 0.9, 0.99);
        let mut history: Vec<f64> = rows.iter().map(|r| statistic(&pca, r)).collect();
        history.sort_by(f64::total_cmp);
        Some(AssetDetector {
            sensors,
            pca,
            history,
        })
    }

    /// The score of one row of the asset's sensors: the share of the history whose statistic
    /// is below this row's (0 to 1).
    pub fn score(&self, row: &[f64]) -> f64 {
        extended_rank(&self.history, self.statistic(row))
    }
}

/// Where `value` falls among `sorted` (0 to 1), and beyond their largest it keeps rising
/// toward 1 as the value grows: 1 − (largest / value) / n. A rank alone stops at 1 for
/// anything past the history, so a minute twice as far out as ever and one a hundred times
/// as far would score alike, and no threshold could tell a new but ordinary state from a
/// fault.
pub fn extended_rank<T: PartialOrd + Copy + Into<f64>>(sorted: &[T], value: T) -> f64 {
    let n = sorted.len().max(1) as f64;
    let below = sorted.partition_point(|h| *h < value);
    match sorted.last() {
        Some(&top) if below == sorted.len() => {
            let (top, value): (f64, f64) = (top.into(), value.into());
            if top > 0.0 && value > top {
                1.0 - (top / value) / n
            } else {
                1.0 - 1.0 / n
            }
        }
        _ => below as f64 / n,
    }
}

impl AssetDetector {
    /// T² and SPE of one row, each over its limit from the history; the larger.
    pub fn statistic(&self, row: &[f64]) -> f64 {
        statistic(&self.pca, row)
    }
}

/// T² and SPE, each over its limit from the history; the larger.
fn statistic(pca: &PcaDetector, row: &[f64]) -> f64 {
    let (t2, spe) = pca.statistics(row);
    (t2 / pca.t2_threshold.max(1e-12)).max(spe / pca.spe_threshold.max(1e-12))
}

/// Every asset's detector, by asset id.
#[derive(Default)]
pub struct Detectors {
    pub assets: BTreeMap<String, AssetDetector>,
}

/// Fits each asset's detector on its last day in the lake, now and then: assets without
/// one every minute (a new twin gathers history first), all of them every six hours.
pub(crate) fn start_fitting(twin: &Twin) {
    let twin = twin.clone();
    crate::twin::spawn_worker("twin-detectors", async move {
        let began = std::time::Instant::now();
        let mut last_refit = began;
        loop {
            let refit = last_refit.elapsed() >= REFIT_EVERY;
            if refit {
                last_refit = std::time::Instant::now();
            }
            fit_detectors(&twin, refit).await;
            // Sooner at first: a new twin's history arrives in its first minutes.
            let pause = if began.elapsed() < FIT_EVERY * 5 {
                FIT_EVERY / 4
            } else {
                FIT_EVERY
            };
            tokio::time::sleep(pause).await;
        }
    });
}

/// Fits the detectors of the assets without one (all of them with `all`), on their
/// sensors' readings over the last day (the rows where every sensor read).
pub async fn fit_detectors(twin: &Twin, all: bool) {
    let assets: Vec<String> = {
        let state = twin.state.read();
        state.spec().assets.iter().map(|a| a.id.clone()).collect()
    };
    for asset in assets {
        if !all && twin.detectors.read().assets.contains_key(&asset) {
            continue;
        }
        // Buckets of 10 s hold single readings: the detector learns from readings as they
        // come, as it scores them (minute means would be calmer than any live reading).
        let Ok((view, _)) = twin.asset_readings(&asset, 86_400_000_000_000, 8_640).await else {
            continue;
        };
        // The sensors that reported through the day (a dead one would empty every row),
        // then one row a minute where each of them has a mean.
        let series: Vec<serde_json::Value> = view["readings"]["series"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|s| {
                s["v"]
                    .as_array()
                    .is_some_and(|v| v.iter().filter(|x| x.is_number()).count() >= MIN_ROWS)
            })
            .collect();
        let mut minutes: BTreeMap<i64, Vec<Option<f64>>> = BTreeMap::new();
        for (k, s) in series.iter().enumerate() {
            let (Some(t), Some(v)) = (s["t"].as_array(), s["v"].as_array()) else {
                continue;
            };
            for (t, v) in t.iter().zip(v) {
                if let Some(t) = t.as_i64() {
                    minutes.entry(t).or_insert_with(|| vec![None; series.len()])[k] = v.as_f64();
                }
            }
        }
        let rows: Vec<Vec<f64>> = minutes
            .into_values()
            .filter_map(|row| row.into_iter().collect::<Option<Vec<f64>>>())
            .collect();
        let order: Vec<usize> = {
            let state = twin.state.read();
            let spec = state.spec();
            series
                .iter()
                .filter_map(|s| {
                    spec.sensors
                        .iter()
                        .position(|x| Some(x.id.as_str()) == s["sensor"].as_str())
                })
                .collect()
        };
        if let Some(detector) = AssetDetector::fit(order, &rows) {
            twin.detectors.write().assets.insert(asset, detector);
        }
    }
}

/// The anomaly score the rules and views see, as the twin's model chose (`model`, `pca`,
/// `both`; PCA alone before a model is at work), falling back to whichever exists.
pub(crate) fn live_score(
    detector: Option<&str>,
    pca: Option<f64>,
    model: Option<f64>,
) -> Option<f64> {
    match (detector, pca, model) {
        (Some("model"), _, Some(m)) => Some(m),
        (Some("both"), Some(p), Some(m)) => Some(p.max(m)),
        (_, Some(p), _) => Some(p),
        (Some(_), None, m) => m,
        (None, None, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sensors that move together: a row like the history scores in the middle, one that
    /// breaks their tie (each value ordinary on its own) scores beyond all of it.
    #[test]
    fn a_broken_tie_scores_beyond_the_history() {
        let rows: Vec<Vec<f64>> = (0..500)
            .map(|i| {
                let x = (i as f64 * 0.37).sin() * 10.0 + 50.0;
                let noise = ((i * 7919) % 13) as f64 / 13.0 - 0.5;
                vec![x, 2.0 * x + noise, 20.0 + noise]
            })
            .collect();
        let detector = AssetDetector::fit(vec![0, 1, 2], &rows).unwrap();
        let ordinary = detector.score(&[55.0, 110.1, 20.1]);
        assert!((0.05..0.95).contains(&ordinary), "{ordinary}");
        let broken = detector.score(&[55.0, 90.0, 20.0]);
        assert!(broken > 1.0 - 1.0 / 500.0, "{broken}");
        let further = detector.score(&[55.0, 60.0, 20.0]);
        assert!(further > broken && further < 1.0, "{further} {broken}");
        assert!(
            AssetDetector::fit(vec![0, 1, 2], &rows[..50]).is_none(),
            "too little history"
        );
    }

    /// The rules see the chosen detector's score, and whichever exists when one is missing.
    #[test]
    fn the_live_score_follows_the_chosen_detector() {
        assert_eq!(live_score(None, Some(0.3), Some(0.9)), Some(0.3));
        assert_eq!(live_score(Some("pca"), Some(0.3), Some(0.9)), Some(0.3));
        assert_eq!(live_score(Some("model"), Some(0.3), Some(0.9)), Some(0.9));
        assert_eq!(live_score(Some("model"), Some(0.3), None), Some(0.3));
        assert_eq!(live_score(Some("both"), Some(0.95), Some(0.9)), Some(0.95));
        assert_eq!(live_score(Some("both"), None, Some(0.9)), Some(0.9));
        assert_eq!(live_score(None, None, Some(0.9)), None);
    }
}
