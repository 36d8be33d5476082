//! The baselines every claim is measured against: seasonal naive and a linear model on the
//! look-back for forecasting (channel-independent, last-value normalised like NLinear, fitted
//! in closed form by ridge regression), and linear interpolation for imputation.
//! Plain f64 arithmetic: a few hundred unknowns need no linear-algebra crate.

/// Seasonal naive: each future step repeats the value one (or more) periods earlier.
pub fn seasonal_naive(history: &[f32], period: usize, horizon: usize) -> Vec<f32> {
    let n = history.len();
    (0..horizon)
        .map(|h| history[n - period + (h % period)])
        .collect()
}

/// A linear map from the last `lookback` values to the next `horizon`, shared by all
/// channels. Inputs and outputs are taken relative to the last input value (NLinear), which
/// keeps it honest under level shifts.
pub struct LinearForecaster {
    pub lookback: usize,
    pub horizon: usize,
    /// `weights[i * horizon + h]`: input step i's weight for output step h.
    weights: Vec<f64>,
}

impl LinearForecaster {
    /// Fits by ridge regression on every window of every series (stride 1).
    pub fn fit(series: &[&[f32]], lookback: usize, horizon: usize, ridge: f64) -> Self {
        let (l, h) = (lookback, horizon);
        let mut xtx = vec![0.0f64; l * l];
        let mut xty = vec![0.0f64; l * h];
        let mut x = vec![0.0f64; l];
        for s in series {
            if s.len() < l + h {
                continue;
            }
            for start in 0..=s.len() - l - h {
                let last = s[start + l - 1] as f64;
                for i in 0..l {
                    x[i] = s[start + i] as f64 - last;
                }
                for i in 0..l {
                    let xi = x[i];
                    if xi == 0.0 {
                        continue;
                    }
                    for j in i..l {
                        xtx[i * l + j] += xi * x[j];
                    }
                    for k in 0..h {
                        xty[i * h + k] += xi * (s[start + l + k] as f64 - last);
                    }
                }
            }
        }
        for i in 0..l {
            for j in 0..i {
                xtx[i * l + j] = xtx[j * l + i];
            }
            xtx[i * l + i] += ridge;
        }
        let weights = solve_spd(&mut xtx, l, &xty, h);
        LinearForecaster {
            lookback,
            horizon,
            weights,
        }
    }

    pub fn predict(&self, history: &[f32]) -> Vec<f32> {
        let (l, h) = (self.lookback, self.horizon);
        let input = &history[history.len() - l..];
        let last = input[l - 1] as f64;
        (0..h)
            .map(|k| {
                let mut y = last;
                for (i, &v) in input.iter().enumerate() {
                    y += (v as f64 - last) * self.weights[i * h + k];
                }
                y as f32
            })
            .collect()
    }
}

/// Solves A·X = B for a symmetric positive-definite `n × n` A (overwritten by its Cholesky
/// factor) and `n × m` B.
fn solve_spd(a: &mut [f64], n: usize, b: &[f64], m: usize) -> Vec<f64> {
    for j in 0..n {
        let mut d = a[j * n + j];
        for k in 0..j {
            d -= a[j * n + k] * a[j * n + k];
        }
        let d = d.max(1e-12).sqrt();
        a[j * n + j] = d;
        for i in j + 1..n {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= a[i * n + k] * a[j * n + k];
            }
            a[i * n + j] = s / d;
        }
    }
    let mut x = b.to_vec();
    for c in 0..m {
        // Forward: L·y = b; backward: Lᵀ·x = y.
        for i in 0..n {
            let mut s = x[i * m + c];
            for k in 0..i {
                s -= a[i * n + k] * x[k * m + c];
            }
            x[i * m + c] = s / a[i * n + i];
        }
        for i in (0..n).rev() {
            let mut s = x[i * m + c];
            for k in i + 1..n {
                s -= a[k * n + i] * x[k * m + c];
            }
            x[i * m + c] = s / a[i * n + i];
        }
    }
    x
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_linear_model_learns_a_linear_rule_exactly() {
        // x[t] = 0.5·x[t−1] + 0.5·x[t−2] plus a level: a linear rule it can represent.
        let mut s = vec![1.0f32, 3.0];
        for t in 2..400 {
            s.push(0.5 * s[t - 1] + 0.5 * s[t - 2] + if t % 50 == 0 { 5.0 } else { 0.0 });
        }
        let model = LinearForecaster::fit(&[&s], 8, 3, 1e-6);
        let history = &s[..300];
        let p = model.predict(history);
        let mut x = history.to_vec();
        for _ in 0..3 {
            let n = x.len();
            x.push(0.5 * x[n - 1] + 0.5 * x[n - 2]);
        }
        for k in 0..3 {
            assert!((p[k] - x[300 + k]).abs() < 1e-3, "{p:?} vs {:?}", &x[300..]);
        }
    }

    #[test]
    fn naive_and_interpolation_do_what_they_say() {
        assert_eq!(seasonal_naive(&[1.0, 2.0, 3.0, 4.0], 2, 3), [3.0, 4.0, 3.0]);
        let v = [0.0, 9.0, 2.0, 9.0, 9.0, 8.0];
        let o = [true, false, true, false, false, true];
        assert_eq!(interpolate(&v, &o), [0.0, 1.0, 2.0, 4.0, 6.0, 8.0]);
    }
}
