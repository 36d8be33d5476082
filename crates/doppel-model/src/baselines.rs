//! The baselines every claim is measured against: seasonal naive for forecasting (the linear
//! forecaster on the look-back has its own module, `linear.rs`), linear interpolation for
//! imputation, and a PCA T²/SPE detector for scoring.
//! Plain f64 arithmetic: a few dozen variables need no linear-algebra crate.

/// Seasonal naive: each future step repeats the value one (or more) periods earlier.
pub fn seasonal_naive(history: &[f32], period: usize, horizon: usize) -> Vec<f32> {
    let n = history.len();
    (0..horizon)
        .map(|h| history[n - period + (h % period)])
        .collect()
}

/// Fills unobserved values by linear interpolation between the nearest observed ones
/// (held flat before the first and after the last).
pub fn interpolate(values: &[f32], observed: &[bool]) -> Vec<f32> {
    let known: Vec<usize> = (0..values.len()).filter(|&i| observed[i]).collect();
    if known.is_empty() {
        return vec![0.0; values.len()];
    }
    let mut out = values.to_vec();
    for i in 0..values.len() {
        if observed[i] {
            continue;
        }
        let after = known.partition_point(|&k| k < i);
        out[i] = match (after.checked_sub(1).map(|b| known[b]), known.get(after)) {
            (Some(a), Some(&b)) => {
                let w = (i - a) as f32 / (b - a) as f32;
                values[a] * (1.0 - w) + values[b] * w
            }
            (Some(a), None) => values[a],
            (None, Some(&b)) => values[b],
            (None, None) => 0.0,
        };
    }
    out
}

/// PCA monitoring, the classic detector for process data: Hotelling's T² in the principal
/// subspace and the squared prediction error (SPE, or Q) outside it, each with a threshold at
/// a high percentile of the training (normal) data.
pub struct PcaDetector {
    mean: Vec<f64>,
    std: Vec<f64>,
    /// Kept components as columns (`vars × k`, row-major) and their variances.
    components: Vec<f64>,
    variances: Vec<f64>,
    pub t2_threshold: f64,
    pub spe_threshold: f64,
}

impl PcaDetector {
    /// Fits on normal rows (`rows[i][var]`), keeping the components that explain
    /// `explained` of the variance; thresholds at the `quantile` of the training statistics.
    pub fn fit(rows: &[Vec<f64>], explained: f64, quantile: f64) -> Self {
        let vars = rows[0].len();
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..vars)
            .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n)
            .collect();
        let std: Vec<f64> = (0..vars)
            .map(|j| {
                let v =
                    rows.iter().map(|r| (r[j] - mean[j]).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
                if v > 1e-12 { v.sqrt() } else { 1.0 }
            })
            .collect();
        let z: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| (0..vars).map(|j| (r[j] - mean[j]) / std[j]).collect())
            .collect();
        let mut cov = vec![0.0; vars * vars];
        for r in &z {
            for i in 0..vars {
                for j in i..vars {
                    cov[i * vars + j] += r[i] * r[j];
                }
            }
        }
        for i in 0..vars {
            for j in i..vars {
                cov[i * vars + j] /= (n - 1.0).max(1.0);
                cov[j * vars + i] = cov[i * vars + j];
            }
        }
        let (values, vectors) = symmetric_eigen(cov, vars);
        let mut order: Vec<usize> = (0..vars).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let mut k = 0;
        let mut acc = 0.0;
        while k < vars && acc < explained * total {
            acc += values[order[k]].max(0.0);
            k += 1;
        }
        let k = k.max(1);
        let mut components = vec![0.0; vars * k];
        let mut variances = Vec::with_capacity(k);
        for (c, &o) in order.iter().take(k).enumerate() {
            variances.push(values[o].max(1e-12));
            for v in 0..vars {
                components[v * k + c] = vectors[v * vars + o];
            }
        }
        let mut detector = PcaDetector {
            mean,
            std,
            components,
            variances,
            t2_threshold: 0.0,
            spe_threshold: 0.0,
        };
        let (mut t2, mut spe): (Vec<f64>, Vec<f64>) =
            rows.iter().map(|r| detector.statistics(r)).unzip();
        t2.sort_by(f64::total_cmp);
        spe.sort_by(f64::total_cmp);
        let at = |v: &[f64]| v[((v.len() - 1) as f64 * quantile).round() as usize];
        detector.t2_threshold = at(&t2);
        detector.spe_threshold = at(&spe);
        detector
    }

    /// (T², SPE) of one row.
    pub fn statistics(&self, row: &[f64]) -> (f64, f64) {
        let vars = self.mean.len();
        let k = self.variances.len();
        let z: Vec<f64> = (0..vars)
            .map(|j| (row[j] - self.mean[j]) / self.std[j])
            .collect();
        let scores: Vec<f64> = (0..k)
            .map(|c| (0..vars).map(|v| z[v] * self.components[v * k + c]).sum())
            .collect();
        let t2 = scores
            .iter()
            .zip(&self.variances)
            .map(|(s, l)| s * s / l)
            .sum();
        let spe = (0..vars)
            .map(|v| {
                let back: f64 = (0..k).map(|c| scores[c] * self.components[v * k + c]).sum();
                (z[v] - back).powi(2)
            })
            .sum();
        (t2, spe)
    }

    /// Whether a row is flagged by T² or by SPE.
    pub fn flags(&self, row: &[f64]) -> (bool, bool) {
        self.flags_of(self.statistics(row))
    }

    /// Whether (T², SPE) statistics already computed pass the thresholds.
    pub fn flags_of(&self, (t2, spe): (f64, f64)) -> (bool, bool) {
        (t2 > self.t2_threshold, spe > self.spe_threshold)
    }
}

/// Eigenvalues and eigenvectors (columns of an `n × n` row-major matrix) of a symmetric
/// matrix, by cyclic Jacobi rotations: exact enough for the few dozen variables of a plant.
fn symmetric_eigen(mut a: Vec<f64>, n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut v = vec![0.0; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let vkp = v[k * n + p];
                    let vkq = v[k * n + q];
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_flags_a_broken_correlation_that_no_single_variable_shows() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        // Three variables driven by one factor, plus a little independent noise.
        let row = |rng: &mut rand_xoshiro::Xoshiro256PlusPlus, broken: bool| {
            let f: f64 = rng.random::<f64>() * 2.0 - 1.0;
            let e = |rng: &mut rand_xoshiro::Xoshiro256PlusPlus| (rng.random::<f64>() - 0.5) * 0.1;
            let third = if broken { -f } else { f };
            vec![f + e(rng), 2.0 * f + e(rng), third + e(rng)]
        };
        let normal: Vec<Vec<f64>> = (0..2000).map(|_| row(&mut rng, false)).collect();
        let pca = PcaDetector::fit(&normal, 0.9, 0.99);
        assert_eq!(pca.variances.len(), 1, "one factor explains the data");
        let false_alarms = (0..1000)
            .filter(|_| {
                let (a, b) = pca.flags(&row(&mut rng, false));
                a || b
            })
            .count();
        let detected = (0..1000)
            .filter(|_| pca.flags(&row(&mut rng, true)).1)
            .count();
        assert!(false_alarms < 40, "{false_alarms} false alarms in 1000");
        assert!(detected > 800, "SPE caught {detected} of 1000 broken rows");
        // The eigen solver itself, on a matrix whose eigenvalues are 1 and 3.
        let (values, _) = symmetric_eigen(vec![2.0, 1.0, 1.0, 2.0], 2);
        let mut values = values;
        values.sort_by(f64::total_cmp);
        assert!((values[0] - 1.0).abs() < 1e-9 && (values[1] - 3.0).abs() < 1e-9);
    }

    #[test]
    fn naive_and_interpolation_do_what_they_say() {
        assert_eq!(seasonal_naive(&[1.0, 2.0, 3.0, 4.0], 2, 3), [3.0, 4.0, 3.0]);
        let v = [0.0, 9.0, 2.0, 9.0, 9.0, 8.0];
        let o = [true, false, true, false, false, true];
        assert_eq!(interpolate(&v, &o), [0.0, 1.0, 2.0, 4.0, 6.0, 8.0]);
    }
}
