//! Anomaly scores on live data, per asset, from the plain statistics first: PCA over the
//! asset's sensors (Hotelling's T² inside the principal subspace, SPE outside it), fitted on
//! the asset's readings of the last day in the lake (the moments all its sensors read). An asset's score is where its
//! latest readings' statistic falls among its history's: 0.5 is ordinary, 0.99 beyond all but
//! one minute in a hundred. The sensor model's own score joins this later (its issue asks which
//! detects best); until then the twin's alerts stand on the statistics alone. Never writes.

use std::collections::BTreeMap;

use doppel_model::baselines::PcaDetector;

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
        let s = statistic(&self.pca, row);
        let below = self.history.partition_point(|h| *h < s);
        below as f64 / self.history.len() as f64
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
        assert_eq!(broken, 1.0, "{broken}");
        assert!(
            AssetDetector::fit(vec![0, 1, 2], &rows[..50]).is_none(),
            "too little history"
        );
    }
}
