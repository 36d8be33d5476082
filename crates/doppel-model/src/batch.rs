//! From windows of sensor data to the tensors the model takes: patch tokens, the order in
//! which they are shown (visible first), and the loss weights.
//!
//! Masks are drawn here, in plain Rust with the caller's seeded generator, so the same seed
//! always hides the same patches. A patch with no observed value at all is always hidden
//! (inherited masking: a real gap is one more masked patch) and never scored.

use burn::prelude::*;
use rand::Rng;

use crate::baselines::interpolate;
use crate::model::{ModelConfig, Tokens};

/// One window: `values[c * T + t]`, meaningful where `observed[c * T + t]`; already
/// standardised. `channels[c]` is the model's index of channel `c`.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub values: Vec<f32>,
    pub observed: Vec<bool>,
    pub channels: Vec<usize>,
}

/// Which patches to hide from the encoder (beyond the ones with no data).
#[derive(Debug, Clone, PartialEq)]
pub enum Mask {
    /// A random share of all tokens (pretraining).
    Random(f64),
    /// The last `n` patches of every channel (forecasting).
    Tail(usize),
    /// Every patch of these channels (virtual sensors).
    Channels(Vec<usize>),
    /// Patches `from..to` of every channel (interpolation).
    Block(usize, usize),
    /// Every patch with a missing value (imputation): the model fills it from the rest.
    Gaps,
    /// Only the patches with no value at all; missing points inside the others are filled
    /// from their own patch (imputation with a model pretrained with point masks).
    Holes,
    /// These tokens (`channel * patches + patch`), plus the patches with missing values
    /// (scoring: every token hidden once, in turns).
    Tokens(Vec<usize>),
}

/// A batch: the tokens, what to reconstruct, and where the loss counts.
#[derive(Debug, Clone)]
pub struct Batch {
    pub tokens: Tokens,
    /// Standardised patch values, 0 where unobserved: [B, L, P].
    pub target: Tensor<3>,
    /// 1 where a value was hidden from the encoder and really observed: [B, L, P].
    pub weight: Tensor<3>,
    /// Whether each token was hidden, per window (for the tasks that read the output).
    pub hidden: Vec<Vec<bool>>,
    /// Each window's per-channel mean and standard deviation (`[window][channel]`), taken
    /// from the values the encoder sees: inputs and targets are in these units (RevIN-style
    /// instance normalisation), so a level the training data never had does not throw the
    /// model. Multiply and add them back to read the output.
    pub scale: Vec<Vec<(f32, f32)>>,
}

pub fn make_batch(
    windows: &[Window],
    config: &ModelConfig,
    mask: &Mask,
    rng: &mut impl Rng,
    device: &Device,
) -> Batch {
    let (p, n) = (config.patch_len, config.patches);
    let t_len = p * n;
    let c = windows[0].channels.len();
    let l = c * n;
    let b = windows.len();
    // How many tokens the encoder sees: the same for every window of the batch.
    let hidden_wanted = match mask {
        Mask::Random(ratio) => ((l as f64) * ratio).round() as usize,
        Mask::Tail(k) => c * (*k).min(n),
        Mask::Channels(list) => list.len() * n,
        Mask::Block(from, to) => c * to.saturating_sub(*from).min(n),
        Mask::Gaps | Mask::Holes | Mask::Tokens(_) => 0,
    }
    .min(l - 1);
    let empty = |w: &Window, token: usize| {
        let (ch, patch) = (token / n, token % n);
        !(0..p).any(|i| w.observed[ch * t_len + patch * p + i])
    };
    let incomplete = |w: &Window, token: usize| {
        let (ch, patch) = (token / n, token % n);
        (0..p).any(|i| !w.observed[ch * t_len + patch * p + i])
    };
    let most_incomplete = windows
        .iter()
        .map(|w| (0..l).filter(|&tk| incomplete(w, tk)).count())
        .max()
        .unwrap_or(0);
    let most_empty = windows
        .iter()
        .map(|w| (0..l).filter(|&tk| empty(w, tk)).count())
        .max()
        .unwrap_or(0);
    let visible = match mask {
        Mask::Gaps => l - most_incomplete,
        Mask::Holes => l - most_empty,
        Mask::Tokens(list) => windows
            .iter()
            .map(|w| {
                (0..l)
                    .filter(|&tk| list.contains(&tk) || incomplete(w, tk))
                    .count()
            })
            .max()
            .map_or(l, |hidden| l - hidden),
        _ => l - hidden_wanted,
    }
    .max(1);

    let mut features = Vec::with_capacity(b * l * 2 * p);
    let mut target = Vec::with_capacity(b * l * p);
    let mut weight = Vec::with_capacity(b * l * p);
    let mut prior = Vec::with_capacity(b * l * p);
    let mut channel = Vec::with_capacity(b * l);
    let mut position = Vec::with_capacity(b * l);
    let mut order = Vec::with_capacity(b * l);
    let mut restore = vec![0i64; b * l];
    let mut hidden_all = Vec::with_capacity(b);
    let mut scale_all = Vec::with_capacity(b);
    let point_drop = matches!(mask, Mask::Random(_)) && config.point_mask_ratio > 0.0;
    for (wi, w) in windows.iter().enumerate() {
        // Lower score = shown first. Tokens the mask hides score 2..3, empty ones 3..4.
        let mut score: Vec<(f64, usize)> = (0..l)
            .map(|tk| {
                let (ch, patch) = (tk / n, tk % n);
                let forced = match mask {
                    Mask::Tail(k) => patch + k >= n,
                    Mask::Channels(list) => list.contains(&ch),
                    Mask::Block(from, to) => (*from..*to).contains(&patch),
                    Mask::Gaps => incomplete(w, tk),
                    Mask::Tokens(list) => list.contains(&tk) || incomplete(w, tk),
                    Mask::Random(_) | Mask::Holes => false,
                };
                let u: f64 = rng.random();
                let s = if empty(w, tk) {
                    3.0 + u
                } else if forced {
                    2.0 + u
                } else {
                    u
                };
                (s, tk)
            })
            .collect();
        score.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut hidden = vec![true; l];
        for (rank, &(_, tk)) in score.iter().enumerate() {
            order.push(tk as i64);
            restore[wi * l + tk] = rank as i64;
            if rank < visible {
                hidden[tk] = false;
            }
        }
        // Instance statistics per channel, from what the encoder may see.
        let scale: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let (mut n_seen, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
                for patch in 0..n {
                    if hidden[ch * n + patch] {
                        continue;
                    }
                    for i in 0..p {
                        let at = ch * t_len + patch * p + i;
                        if w.observed[at] {
                            let v = w.values[at] as f64;
                            n_seen += 1.0;
                            sum += v;
                            sum2 += v * v;
                        }
                    }
                }
                if n_seen < 1.0 || !config.instance_norm {
                    return (0.0, 1.0);
                }
                let mean = sum / n_seen;
                // Values are already standardised over the training data: a window's spread
                // below a fifth of that is too little to divide by (a channel hidden almost
                // whole would blow its targets up), and too few values give no spread at all.
                let sd = if n_seen < 4.0 {
                    1.0
                } else {
                    (sum2 / n_seen - mean * mean).max(0.0).sqrt().max(0.2)
                };
                (mean as f32, sd as f32)
            })
            .collect();
        // Which values the encoder is shown: observed, in a visible token, and not dropped
        // by a point mask. Drawn token by token, point by point, so a seed always hides the
        // same points.
        let mut shown = vec![false; c * t_len];
        for (tk, &is_hidden) in hidden.iter().enumerate() {
            let base = (tk / n) * t_len + (tk % n) * p;
            for i in 0..p {
                let dropped =
                    point_drop && !is_hidden && rng.random::<f64>() < config.point_mask_ratio;
                shown[base + i] = w.observed[base + i] && !is_hidden && !dropped;
            }
        }
        let scaled = |ch: usize, at: usize| {
            let (mean, sd) = scale[ch];
            (w.values[at] - mean) / sd
        };
        // The prior: each channel's shown values, straight lines between them, flat past
        // the ends (what interpolation alone would answer).
        let mut prior_values = vec![0.0f32; c * t_len];
        if config.interpolation_prior {
            for ch in 0..c {
                let row = ch * t_len..(ch + 1) * t_len;
                let values: Vec<f32> = row
                    .clone()
                    .map(|at| if shown[at] { scaled(ch, at) } else { 0.0 })
                    .collect();
                prior_values[row.clone()].copy_from_slice(&interpolate(&values, &shown[row]));
            }
        }
        for (tk, &is_hidden) in hidden.iter().enumerate() {
            let (ch, patch) = (tk / n, tk % n);
            channel.push(w.channels[ch] as i64);
            position.push(patch as i64);
            let base = ch * t_len + patch * p;
            for at in base..base + p {
                let seen = w.observed[at];
                let v = if seen { scaled(ch, at) } else { 0.0 };
                features.push(if shown[at] { v } else { prior_values[at] });
                target.push(v);
                // Scored: observed values the encoder was not shown.
                weight.push(if seen && !shown[at] && (is_hidden || point_drop) {
                    1.0
                } else {
                    0.0
                });
            }
            features.extend(
                shown[base..base + p]
                    .iter()
                    .map(|&s| if s { 1.0 } else { 0.0 }),
            );
            if config.interpolation_prior {
                prior.extend_from_slice(&prior_values[base..base + p]);
            }
        }
        scale_all.push(scale);
        hidden_all.push(hidden);
    }
    let float =
        |v: Vec<f32>, shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(v, shape), device);
    let int = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, l]), device);
    Batch {
        tokens: Tokens {
            features: float(features, [b, l, 2 * p]),
            channel: int(channel),
            position: int(position),
            order: int(order),
            restore: int(restore),
            visible,
            prior: config.interpolation_prior.then(|| float(prior, [b, l, p])),
        },
        target: float(target, [b, l, p]),
        weight: float(weight, [b, l, p]),
        hidden: hidden_all,
        scale: scale_all,
    }
}
