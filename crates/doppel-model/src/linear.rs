//! The linear forecaster on the look-back — NLinear, fitted in closed form by ridge
//! regression — and the choice of its settings on validation windows: the look-back, the
//! ridge penalty, and whether the channels share one weight matrix or each channel has its
//! own (DLinear's "individual" mode). It is a baseline every forecasting claim is measured
//! against and the start of the fine-tuned forecasting head (`finetune.rs`).
//!
//! Inputs and outputs are taken relative to the window's last value, which keeps the fit
//! honest under level shifts. Everything is fitted from sums of squares (XᵀX, XᵀY, YᵀY), so
//! every candidate setting is fitted and scored on validation without another pass over the
//! data. This module must never see test data: callers hand it training and validation
//! series only.

use std::ops::Range;

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// Whether the channels share one weight matrix or each has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Shared,
    PerChannel,
}

/// One channel's series. Training windows lie wholly before `cut`; validation windows
/// forecast the steps from `cut` on (their look-back may start before it, as in ETT's
/// protocol), so both splits are scored on every step they hold.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    pub channel: usize,
    pub values: &'a [f32],
    pub cut: usize,
}

/// The settings tried by [`choose`].
#[derive(Debug, Clone, PartialEq)]
pub struct Search {
    pub ridges: Vec<f64>,
    pub layouts: Vec<Layout>,
}

impl Default for Search {
    fn default() -> Self {
        Search {
            ridges: vec![1.0, 10.0, 100.0, 1e3, 1e4],
            layouts: vec![Layout::Shared, Layout::PerChannel],
        }
    }
}

/// A setting tried, with its validation error (standardised MSE when the series are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub lookback: usize,
    pub ridge: f64,
    pub layout: Layout,
    pub validation_mse: f64,
}

/// A linear map from the last `lookback` values to the next `horizon`.
#[derive(Debug, Clone)]
pub struct LinearForecaster {
    pub lookback: usize,
    pub horizon: usize,
    pub layout: Layout,
    pub ridge: f64,
    /// `weights[g][i * horizon + k]`: input step i's weight for output step k, for group g
    /// (one group when shared, else one per channel).
    weights: Vec<Vec<f64>>,
}

impl LinearForecaster {
    /// Fits one weight matrix shared by all series on every window (stride 1).
    pub fn fit(series: &[&[f32]], lookback: usize, horizon: usize, ridge: f64) -> Self {
        let mut sums = Moments::new(lookback, horizon);
        for s in series {
            sums.add_windows(s, 0..windows_in(s.len(), lookback, horizon));
        }
        LinearForecaster {
            lookback,
            horizon,
            layout: Layout::Shared,
            ridge,
            weights: vec![sums.solve(ridge)],
        }
    }

    /// Weight groups: one when shared, one per channel otherwise.
    pub fn groups(&self) -> usize {
        self.weights.len()
    }

    /// `weights(g)[i * horizon + k]`: group g's weight of input step i for output step k.
    pub fn weights(&self, group: usize) -> &[f64] {
        &self.weights[group]
    }

    /// Forecasts channel `channel` from its history (at least `lookback` values).
    pub fn predict(&self, channel: usize, history: &[f32]) -> Vec<f32> {
        let (l, h) = (self.lookback, self.horizon);
        let w = match self.layout {
            Layout::Shared => &self.weights[0],
            Layout::PerChannel => &self.weights[channel],
        };
        let input = &history[history.len() - l..];
        let last = input[l - 1] as f64;
        (0..h)
            .map(|k| {
                let mut y = last;
                for (i, &v) in input.iter().enumerate() {
                    y += (v as f64 - last) * w[i * h + k];
                }
                y as f32
            })
            .collect()
    }
}

/// Fits every setting of `search` at every look-back on the training windows and keeps the
/// one with the lowest validation MSE, pooled over channels. `channels` is the number of
/// channels (per-channel weights are indexed by [`Series::channel`]). Returns the chosen
/// forecaster and every candidate tried, best first.
pub fn choose(
    series: &[Series],
    channels: usize,
    lookbacks: &[usize],
    horizon: usize,
    search: &Search,
) -> Result<(LinearForecaster, Vec<Candidate>)> {
    let mut candidates = Vec::new();
    let mut best: Option<(f64, LinearForecaster)> = None;
    for &l in lookbacks {
        // Per channel: training and validation sums of squares.
        let mut train = vec![Moments::new(l, horizon); channels];
        let mut valid = vec![Moments::new(l, horizon); channels];
        for s in series {
            let end = windows_in(s.values.len(), l, horizon);
            train[s.channel].add_windows(s.values, 0..windows_in(s.cut, l, horizon));
            valid[s.channel].add_windows(s.values, s.cut.saturating_sub(l)..end);
        }
        let count: usize = valid.iter().map(|m| m.count).sum();
        if train.iter().all(|m| m.count == 0) || count == 0 {
            continue;
        }
        let pooled = train.iter().fold(Moments::new(l, horizon), |mut acc, m| {
            acc.merge(m);
            acc
        });
        for &layout in &search.layouts {
            for &ridge in &search.ridges {
                let weights = match layout {
                    Layout::Shared => vec![pooled.solve(ridge)],
                    Layout::PerChannel => train.iter().map(|m| m.solve(ridge)).collect(),
                };
                let sse: f64 = valid
                    .iter()
                    .enumerate()
                    .map(|(c, m)| m.sse(&weights[if weights.len() == 1 { 0 } else { c }]))
                    .sum();
                let validation_mse = sse / (count * horizon) as f64;
                candidates.push(Candidate {
                    lookback: l,
                    ridge,
                    layout,
                    validation_mse,
                });
                if best.as_ref().is_none_or(|(b, _)| validation_mse < *b) {
                    let model = LinearForecaster {
                        lookback: l,
                        horizon,
                        layout,
                        ridge,
                        weights,
                    };
                    best = Some((validation_mse, model));
                }
            }
        }
    }
    let Some((_, model)) = best else {
        return Err(ModelError::Settings(format!(
            "no look-back of {lookbacks:?} steps plus a horizon of {horizon} fits in both the \
             training and the validation part of any series"
        )));
    };
    candidates.sort_by(|a, b| a.validation_mse.total_cmp(&b.validation_mse));
    Ok((model, candidates))
}

/// Window starts in a series of `len` values: `0..windows_in(len, l, h)`.
fn windows_in(len: usize, lookback: usize, horizon: usize) -> usize {
    (len + 1).saturating_sub(lookback + horizon)
}

/// Sums of squares of windows (inputs x and targets y relative to the window's last
/// input value): XᵀX, XᵀY and YᵀY.
#[derive(Debug, Clone)]
struct Moments {
    lookback: usize,
    horizon: usize,
    /// `xtx[i * lookback + j]`.
    xtx: Vec<f64>,
    /// `xty[i * horizon + k]`.
    xty: Vec<f64>,
    yty: f64,
    count: usize,
}

impl Moments {
    fn new(lookback: usize, horizon: usize) -> Self {
        Moments {
            lookback,
            horizon,
            xtx: vec![0.0; lookback * lookback],
            xty: vec![0.0; lookback * horizon],
            yty: 0.0,
            count: 0,
        }
    }

    fn merge(&mut self, other: &Moments) {
        for (a, b) in self.xtx.iter_mut().zip(&other.xtx) {
            *a += b;
        }
        for (a, b) in self.xty.iter_mut().zip(&other.xty) {
            *a += b;
        }
        self.yty += other.yty;
        self.count += other.count;
    }

    /// Adds the windows starting at `starts` (each needs lookback + horizon values).
    fn add_windows(&mut self, values: &[f32], starts: Range<usize>) {
        // Blocks of rows as matrices, multiplied by `gemm` (the kernel under burn's CPU
        // backend): ETTm1's 240 k windows of 512 steps are 6·10¹⁰ multiply-adds.
        const BLOCK: usize = 2048;
        let (l, h) = (self.lookback, self.horizon);
        let mut x = vec![0.0f64; BLOCK * l];
        let mut y = vec![0.0f64; BLOCK * h];
        let mut first = starts.start;
        while first < starts.end {
            let rows = BLOCK.min(starts.end - first);
            for r in 0..rows {
                let s = first + r;
                let last = values[s + l - 1] as f64;
                for (xi, &v) in x[r * l..(r + 1) * l].iter_mut().zip(&values[s..s + l]) {
                    *xi = v as f64 - last;
                }
                for (yk, &v) in y[r * h..(r + 1) * h]
                    .iter_mut()
                    .zip(&values[s + l..s + l + h])
                {
                    *yk = v as f64 - last;
                    self.yty += *yk * *yk;
                }
            }
            add_xt_times(&mut self.xtx, &x[..rows * l], l, &x[..rows * l], l);
            add_xt_times(&mut self.xty, &x[..rows * l], l, &y[..rows * h], h);
            self.count += rows;
            first += rows;
        }
    }

    /// The ridge solution W = (XᵀX + λI)⁻¹ XᵀY, `w[i * horizon + k]`.
    fn solve(&self, ridge: f64) -> Vec<f64> {
        let l = self.lookback;
        let mut a = self.xtx.clone();
        for i in 0..l {
            a[i * l + i] += ridge;
        }
        solve_spd(&mut a, l, &self.xty, self.horizon)
    }

    /// Sum of squared errors of `w` on these windows: YᵀY − 2⟨W, XᵀY⟩ + ⟨W, XᵀX·W⟩.
    fn sse(&self, w: &[f64]) -> f64 {
        let (l, h) = (self.lookback, self.horizon);
        let mut cross = 0.0;
        let mut quad = 0.0;
        let mut xtx_w = vec![0.0f64; h];
        for i in 0..l {
            xtx_w.fill(0.0);
            for j in 0..l {
                let a = self.xtx[i * l + j];
                if a != 0.0 {
                    for (acc, &wj) in xtx_w.iter_mut().zip(&w[j * h..(j + 1) * h]) {
                        *acc += a * wj;
                    }
                }
            }
            for k in 0..h {
                cross += w[i * h + k] * self.xty[i * h + k];
                quad += w[i * h + k] * xtx_w[k];
            }
        }
        self.yty - 2.0 * cross + quad
    }
}

/// `dst += Xᵀ·M` for row-major X (rows × `x_cols`) and M (rows × `m_cols`), by `gemm`;
/// `dst` is `x_cols × m_cols`, row-major.
fn add_xt_times(dst: &mut [f64], x: &[f64], x_cols: usize, m: &[f64], m_cols: usize) {
    let rows = x.len() / x_cols;
    assert!(x.len() == rows * x_cols && m.len() == rows * m_cols);
    assert_eq!(dst.len(), x_cols * m_cols);
    // SAFETY: the asserts above make every pointer cover the shape and strides passed with
    // it. Xᵀ is X read with swapped strides: element (i, r) at r·x_cols + i.
    unsafe {
        gemm::gemm(
            x_cols,
            m_cols,
            rows,
            dst.as_mut_ptr(),
            1,
            m_cols as isize,
            true,
            x.as_ptr(),
            x_cols as isize,
            1,
            m.as_ptr(),
            1,
            m_cols as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(0),
        );
    }
}

/// Solves A·X = B for a symmetric positive-definite `n × n` A (overwritten by its Cholesky
/// factor) and `n × m` B.
pub(crate) fn solve_spd(a: &mut [f64], n: usize, b: &[f64], m: usize) -> Vec<f64> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// x[t] = a·x[t−1] + b·x[t−2] plus occasional jumps: a linear rule NLinear represents.
    fn recurrence(a: f32, b: f32, n: usize) -> Vec<f32> {
        let mut s = vec![1.0f32, 3.0];
        for t in 2..n {
            s.push(a * s[t - 1] + b * s[t - 2] + if t % 50 == 0 { 5.0 } else { 0.0 });
        }
        s
    }

    fn roll(s: &[f32], a: f32, b: f32, from: usize, steps: usize) -> Vec<f32> {
        let mut x = s[..from].to_vec();
        for _ in 0..steps {
            let n = x.len();
            x.push(a * x[n - 1] + b * x[n - 2]);
        }
        x[from..].to_vec()
    }

    #[test]
    fn the_linear_model_learns_a_linear_rule_exactly() {
        let s = recurrence(0.5, 0.5, 400);
        let model = LinearForecaster::fit(&[&s], 8, 3, 1e-6);
        let p = model.predict(0, &s[..300]);
        let truth = roll(&s, 0.5, 0.5, 300, 3);
        for k in 0..3 {
            assert!((p[k] - truth[k]).abs() < 1e-3, "{p:?} vs {truth:?}");
        }
    }

    #[test]
    fn validation_error_from_sums_of_squares_matches_a_direct_count() {
        let s: Vec<f32> = (0..300)
            .map(|t| (t as f32 * 0.3).sin() + 0.1 * ((t * 7919) % 13) as f32)
            .collect();
        let (l, h) = (16, 4);
        let model = LinearForecaster::fit(&[&s[..200]], l, h, 1.0);
        let mut m = Moments::new(l, h);
        m.add_windows(&s, 200 - l..windows_in(s.len(), l, h));
        let mut direct = 0.0f64;
        for start in 200 - l..windows_in(s.len(), l, h) {
            let p = model.predict(0, &s[start..start + l]);
            for k in 0..h {
                direct += ((p[k] - s[start + l + k]) as f64).powi(2);
            }
        }
        let from_moments = m.sse(model.weights(0));
        assert!(
            (from_moments - direct).abs() < 1e-6 * direct,
            "{from_moments} vs {direct}"
        );
    }

    /// x[t] = a·x[t−1] + b·x[t−2] + noise, with a fixed pseudo-random noise.
    fn autoregressive(a: f32, b: f32, n: usize, seed: u64) -> Vec<f32> {
        let mut state = seed;
        let mut noise = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        };
        let mut s = vec![0.0f32, 0.0];
        for t in 2..n {
            s.push(a * s[t - 1] + b * s[t - 2] + noise());
        }
        s
    }

    #[test]
    fn choosing_on_validation_gives_channels_with_different_rules_their_own_weights() {
        // A slow and an oscillating process: one shared matrix cannot forecast both, and
        // the validation windows must say so.
        let slow = autoregressive(0.95, 0.0, 3000, 1);
        let oscillating = autoregressive(1.6, -0.9, 3000, 2);
        let series = [
            Series {
                channel: 0,
                values: &slow,
                cut: 2000,
            },
            Series {
                channel: 1,
                values: &oscillating,
                cut: 2000,
            },
        ];
        let (model, candidates) = choose(&series, 2, &[8, 16], 4, &Search::default()).unwrap();
        assert_eq!(model.layout, Layout::PerChannel, "{candidates:?}");
        assert_eq!(model.groups(), 2);
        assert_eq!(candidates.len(), 2 * 5 * 2);
        let best = &candidates[0];
        assert_eq!(
            (best.lookback, best.ridge, best.layout),
            (model.lookback, model.ridge, model.layout)
        );
        let shared = candidates
            .iter()
            .find(|c| c.layout == Layout::Shared)
            .unwrap();
        assert!(
            shared.validation_mse > 1.2 * candidates[0].validation_mse,
            "{candidates:?}"
        );
        // The chosen weights differ by channel: the same history forecasts differently.
        let history = &oscillating[..2500];
        assert_ne!(model.predict(0, history), model.predict(1, history));
    }

    #[test]
    fn a_horizon_longer_than_any_validation_part_is_refused() {
        let a = recurrence(0.5, 0.5, 100);
        let series = [Series {
            channel: 0,
            values: &a,
            cut: 90,
        }];
        let err = choose(&series, 1, &[32], 64, &Search::default()).unwrap_err();
        assert!(err.to_string().contains("horizon of 64"), "{err}");
    }
}
