//! From windows of sensor data to the tensors the model takes: patch tokens, the order in
//! which they are shown (visible first), and the loss weights.
//!
//! Masks are drawn here, in plain Rust with the caller's seeded generator, so the same seed
//! always hides the same patches. A patch with no observed value at all is always hidden
//! (inherited masking: a real gap is one more masked patch) and never scored.

use burn::prelude::*;
use rand::Rng;

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
        Mask::Gaps | Mask::Tokens(_) => 0,
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
    let visible = match mask {
        Mask::Gaps => l - most_incomplete,
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
    let mut channel = Vec::with_capacity(b * l);
    let mut position = Vec::with_capacity(b * l);
    let mut order = Vec::with_capacity(b * l);
    let mut restore = vec![0i64; b * l];
    let mut hidden_all = Vec::with_capacity(b);
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
                    Mask::Random(_) => false,
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
        for (tk, &is_hidden) in hidden.iter().enumerate() {
            let (ch, patch) = (tk / n, tk % n);
            channel.push(w.channels[ch] as i64);
            position.push(patch as i64);
            let base = ch * t_len + patch * p;
            for i in 0..p {
                let seen = w.observed[base + i];
                let v = if seen { w.values[base + i] } else { 0.0 };
                features.push(v);
                target.push(v);
                weight.push(if seen && is_hidden { 1.0 } else { 0.0 });
            }
            for i in 0..p {
                features.push(if w.observed[base + i] { 1.0 } else { 0.0 });
            }
        }
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
        },
        target: float(target, [b, l, p]),
        weight: float(weight, [b, l, p]),
        hidden: hidden_all,
    }
}
