//! From windows of sensor data to the tensors the model takes: patch tokens, the order in
//! which they are shown (visible first), and the loss weights.
//!
//! Masks are drawn here, in plain Rust with the caller's seeded generator, so the same seed
//! always hides the same patches. A patch with no observed value at all is always hidden
//! (inherited masking: a real gap is one more masked patch) and never scored.

use burn::prelude::*;
use rand::Rng;

use crate::baselines::interpolate;
use crate::channel_map::ChannelMapInputs;
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
    let k = config.channels_per_token;
    // A token of K channels names its group by position, so such a model reads every one
    // of its channels, in its own order (callers check this and say so; here it is a bug).
    assert!(
        k == 1
            || windows
                .iter()
                .all(|w| w.channels.iter().copied().eq(0..config.channels)),
        "tokens of {k} channels need windows of all the model's channels, in order"
    );
    let groups = config.groups(c);
    // Two token counts: `l` per channel patch (what the mask speaks of, what is scored and
    // read back) and `lg` per group of K channels (what the network sees). They are the
    // same with one channel a token.
    let l = c * n;
    let lg = groups * n;
    let b = windows.len();
    let members = |gt: usize| {
        let (g, patch) = (gt / n, gt % n);
        (g * k..((g + 1) * k).min(c)).map(move |ch| ch * n + patch)
    };
    let empty = |w: &Window, token: usize| {
        let (ch, patch) = (token / n, token % n);
        !(0..p).any(|i| w.observed[ch * t_len + patch * p + i])
    };
    let incomplete = |w: &Window, token: usize| {
        let (ch, patch) = (token / n, token % n);
        (0..p).any(|i| !w.observed[ch * t_len + patch * p + i])
    };
    // What the mask itself withholds, per channel patch.
    let forced = |w: &Window, tk: usize| {
        let (ch, patch) = (tk / n, tk % n);
        match mask {
            Mask::Tail(tail) => patch + tail >= n,
            Mask::Channels(list) => list.contains(&ch),
            Mask::Block(from, to) => (*from..*to).contains(&patch),
            Mask::Gaps => incomplete(w, tk),
            Mask::Tokens(list) => list.contains(&tk) || incomplete(w, tk),
            Mask::Random(_) | Mask::Holes => false,
        }
    };
    // A group token is hidden from the encoder only when all its channels are.
    let group_count = |w: &Window, hides: &dyn Fn(&Window, usize) -> bool| {
        (0..lg)
            .filter(|&gt| members(gt).all(|tk| hides(w, tk)))
            .count()
    };
    let most_hidden = |hides: &dyn Fn(&Window, usize) -> bool| {
        windows
            .iter()
            .map(|w| group_count(w, hides))
            .max()
            .unwrap_or(0)
    };
    // How many tokens the encoder sees: the same for every window of the batch.
    let visible = match mask {
        Mask::Random(ratio) => lg - ((lg as f64) * ratio).round() as usize,
        Mask::Tail(tail) => lg - groups * (*tail).min(n),
        Mask::Block(from, to) => lg - groups * to.saturating_sub(*from).min(n),
        Mask::Channels(_) | Mask::Gaps | Mask::Tokens(_) => lg - most_hidden(&forced),
        Mask::Holes => lg - most_hidden(&empty),
    }
    .max(1);

    let mut features = Vec::with_capacity(b * lg * 2 * k * p);
    let mut target = Vec::with_capacity(b * l * p);
    let mut weight = Vec::with_capacity(b * l * p);
    let mut prior = Vec::with_capacity(b * l * p);
    let mut channel = Vec::with_capacity(b * lg);
    let mut position = Vec::with_capacity(b * lg);
    let mut order = Vec::with_capacity(b * lg);
    let mut channel_ids = Vec::with_capacity(b * c);
    let mut restore = vec![0i64; b * lg];
    let cross_channel = config.interpolation_prior && config.cross_channel_prior;
    let readout = config.channel_readout;
    let per_value = |on: bool| if on { b * c * t_len } else { 0 };
    let mut departure = Vec::with_capacity(per_value(cross_channel));
    let mut fill = Vec::with_capacity(per_value(cross_channel));
    let mut level = Vec::with_capacity(per_value(readout));
    let mut readout_fill = Vec::with_capacity(per_value(readout));
    let mut readout_shift = Vec::with_capacity(per_value(readout));
    let mut readout_check = Vec::with_capacity(if readout { b * t_len } else { 0 });
    let mut hidden_all = Vec::with_capacity(b);
    let mut scale_all = Vec::with_capacity(b);
    let point_drop = matches!(mask, Mask::Random(_)) && config.point_mask_ratio > 0.0;
    for (wi, w) in windows.iter().enumerate() {
        channel_ids.extend(w.channels.iter().map(|&ch| ch as i64));
        // Lower score = shown first. Tokens the mask hides score 2..3, empty ones 3..4.
        let mut score: Vec<(f64, usize)> = (0..lg)
            .map(|gt| {
                let all_empty = members(gt).all(|tk| empty(w, tk));
                let all_withheld = members(gt).all(|tk| forced(w, tk) || empty(w, tk));
                let u: f64 = rng.random();
                let s = if all_empty {
                    3.0 + u
                } else if all_withheld {
                    2.0 + u
                } else {
                    u
                };
                (s, gt)
            })
            .collect();
        score.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut group_hidden = vec![true; lg];
        for (rank, &(_, gt)) in score.iter().enumerate() {
            order.push(gt as i64);
            restore[wi * lg + gt] = rank as i64;
            if rank < visible {
                group_hidden[gt] = false;
            }
        }
        // Per channel patch: hidden with its token, or withheld by the mask inside a token
        // the encoder sees (2-D patches: a virtual sensor's rows among its neighbours').
        let hidden: Vec<bool> = (0..l)
            .map(|tk| {
                let (ch, patch) = (tk / n, tk % n);
                group_hidden[(ch / k) * n + patch] || forced(w, tk)
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
        // Instance statistics per channel, from the values the encoder is shown. Not from
        // every observed value of its visible tokens: points hidden inside them would leak
        // into the statistics, and a model trained so learns to read the hidden values back
        // out of the window's mean and spread — which no real gap gives it (ETTm1: with
        // longer training its validation loss fell while real gaps were filled worse).
        let scale: Vec<(f32, f32)> = (0..c)
            .map(|ch| {
                let (mut n_seen, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
                let row = ch * t_len..(ch + 1) * t_len;
                for (&v, _) in w.values[row.clone()]
                    .iter()
                    .zip(&shown[row])
                    .filter(|(_, shown)| **shown)
                {
                    let v = v as f64;
                    n_seen += 1.0;
                    sum += v;
                    sum2 += v * v;
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
        if cross_channel {
            for (ch, &(_, sd)) in scale.iter().enumerate() {
                let row = ch * t_len..(ch + 1) * t_len;
                departure.extend(departures(&w.values[row.clone()], &shown[row.clone()]));
                fill.extend(shown[row].iter().map(|&s| if s { 0.0 } else { 1.0 / sd }));
            }
        }
        if readout {
            // The read-out fills a value only where it alone is not shown at its step: a
            // least-squares map on all the other channels means nothing on some of them.
            let unshown_at: Vec<usize> = (0..t_len)
                .map(|i| (0..c).filter(|ch| !shown[ch * t_len + i]).count())
                .collect();
            readout_check.extend(unshown_at.iter().map(|&u| if u == 0 { 1.0 } else { 0.0 }));
            for (ch, &(mean, sd)) in scale.iter().enumerate() {
                let row = ch * t_len..(ch + 1) * t_len;
                for (i, at) in row.enumerate() {
                    let filled = c > 1 && !shown[at] && unshown_at[i] == 1;
                    level.push(if shown[at] { w.values[at] } else { 0.0 });
                    readout_fill.push(if filled { 1.0 / sd } else { 0.0 });
                    readout_shift.push(if filled { -mean / sd } else { 0.0 });
                }
            }
        }
        for (tk, &is_hidden) in hidden.iter().enumerate() {
            let base = (tk / n) * t_len + (tk % n) * p;
            let seen_and_shown = w.observed[base..base + p]
                .iter()
                .zip(&shown[base..base + p]);
            for (at, (&seen, &was_shown)) in (base..).zip(seen_and_shown) {
                target.push(if seen { scaled(tk / n, at) } else { 0.0 });
                // Scored: observed values the encoder was not shown.
                weight.push(if seen && !was_shown && (is_hidden || point_drop) {
                    1.0
                } else {
                    0.0
                });
            }
            if config.interpolation_prior {
                prior.extend_from_slice(&prior_values[base..base + p]);
            }
        }
        for gt in 0..lg {
            let (g, patch) = (gt / n, gt % n);
            // One channel a token: the model's index of the channel; K: the group's position.
            channel.push(if k == 1 { w.channels[g] } else { g } as i64);
            position.push(patch as i64);
            // K rows of P values (the prior where not shown), then K rows of shown-flags;
            // channels past the last one (a short last group) are empty rows.
            let rows = || (g * k..(g + 1) * k).map(|ch| (ch < c).then(|| ch * t_len + patch * p));
            for row in rows() {
                match row {
                    Some(base) => features.extend((base..base + p).map(|at| {
                        if shown[at] {
                            scaled(at / t_len, at)
                        } else {
                            prior_values[at]
                        }
                    })),
                    None => features.extend(std::iter::repeat_n(0.0, p)),
                }
            }
            for row in rows() {
                match row {
                    Some(base) => features.extend(
                        shown[base..base + p]
                            .iter()
                            .map(|&s| if s { 1.0 } else { 0.0 }),
                    ),
                    None => features.extend(std::iter::repeat_n(0.0, p)),
                }
            }
        }
        scale_all.push(scale);
        hidden_all.push(hidden);
    }
    let float =
        |v: Vec<f32>, shape: [usize; 3]| Tensor::<3>::from_data(TensorData::new(v, shape), device);
    let int = |v: Vec<i64>, width: usize| {
        Tensor::<2, Int>::from_data(TensorData::new(v, [b, width]), device)
    };
    Batch {
        tokens: Tokens {
            features: float(features, [b, lg, 2 * k * p]),
            channel: int(channel, lg),
            position: int(position, lg),
            order: int(order, lg),
            restore: int(restore, lg),
            visible,
            channel_ids: int(channel_ids, c),
            channels: c,
            channels_per_token: k,
            prior: config.interpolation_prior.then(|| float(prior, [b, l, p])),
            cross: cross_channel.then(|| ChannelMapInputs {
                read: float(departure, [b, c, t_len]),
                fill: float(fill, [b, c, t_len]),
                shift: None,
                check: None,
            }),
            readout: readout.then(|| ChannelMapInputs {
                read: float(level, [b, c, t_len]),
                fill: float(readout_fill, [b, c, t_len]),
                shift: Some(float(readout_shift, [b, c, t_len])),
                check: Some(float(readout_check, [b, 1, t_len])),
            }),
        },
        target: float(target, [b, l, p]),
        weight: float(weight, [b, l, p]),
        hidden: hidden_all,
        scale: scale_all,
    }
}

/// Each shown value minus the line through its channel's other shown values (flat past the
/// ends, as `interpolate`): what this reading says that its neighbours in time do not. 0
/// where not shown, and for a channel with fewer than two shown values.
fn departures(values: &[f32], shown: &[bool]) -> Vec<f32> {
    let at: Vec<usize> = (0..values.len()).filter(|&t| shown[t]).collect();
    let mut out = vec![0.0; values.len()];
    if at.len() < 2 {
        return out;
    }
    for (i, &t) in at.iter().enumerate() {
        let line = match (i.checked_sub(1).map(|j| at[j]), at.get(i + 1)) {
            (Some(before), Some(&after)) => {
                let share = (t - before) as f32 / (after - before) as f32;
                values[before] + share * (values[after] - values[before])
            }
            (Some(before), None) => values[before],
            (None, Some(&after)) => values[after],
            (None, None) => unreachable!("two shown values at least"),
        };
        out[t] = values[t] - line;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn a_departure_is_a_reading_minus_the_line_through_its_shown_neighbours() {
        let values = [1.0, 9.0, 3.0, 5.0, 0.0, 2.0];
        let shown = [true, true, true, false, true, true];
        // t=1: the line 1 → 3 gives 2; t=2: 9 (t=1) → 0 (t=4) a third of the way gives 6;
        // t=4: 3 (t=2) → 2 (t=5) two thirds of the way; the ends read their one neighbour;
        // t=3 was not shown.
        let expected = [
            1.0 - 9.0,
            9.0 - 2.0,
            3.0 - 6.0,
            0.0,
            -(3.0 - 2.0 / 3.0),
            2.0 - 0.0,
        ];
        let got = departures(&values, &shown);
        for (t, (g, e)) in got.iter().zip(expected).enumerate() {
            assert!((g - e).abs() < 1e-6, "step {t}: {g} against {e}");
        }
        let one_shown = [false, true, false, false, false, false];
        assert_eq!(departures(&values, &one_shown), [0.0; 6]);
    }

    #[test]
    fn the_read_out_fills_a_value_only_where_it_alone_is_not_shown_at_its_step() {
        let mut config = ModelConfig::sized("tiny", 3, 4, 2).unwrap();
        config.channel_readout = true;
        config.instance_norm = true;
        // Channel 1 misses its first patch, channel 0 a point of its second; channel 2 is
        // whole. Gaps hide each patch with a missing value.
        let values: Vec<f32> = (0..24).map(|i| (i as f32 * 0.7).sin() * 2.0).collect();
        let mut observed = vec![true; 24];
        observed[8..12].fill(false);
        observed[6] = false;
        let window = Window {
            values: values.clone(),
            observed,
            channels: vec![0, 1, 2],
        };
        let device = Device::flex();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
        let batch = make_batch(&[window], &config, &Mask::Gaps, &mut rng, &device);
        let inputs = batch
            .tokens
            .readout
            .expect("a model with a read-out gets its inputs");
        let read = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap();
        let (level, fill, shift, check) = (
            read(inputs.read),
            read(inputs.fill),
            read(inputs.shift.unwrap()),
            read(inputs.check.unwrap()),
        );
        // No step has all three channels shown, so no step checks the tie.
        assert_eq!(check, [0.0; 8]);
        // Shown: channel 0's first patch, channel 1's second, all of channel 2.
        let shown = |at: usize| matches!(at, 0..4 | 12..16 | 16..24);
        for at in 0..24 {
            let expected = if shown(at) { values[at] } else { 0.0 };
            assert_eq!(level[at], expected, "level at {at}");
        }
        // Steps 0..4: only channel 1 not shown; steps 4..8: only channel 0.
        let (mean, sd) = batch.scale[0][1];
        for at in 0..24 {
            let (ch, step) = (at / 8, at % 8);
            let filled = (ch == 1 && step < 4) || (ch == 0 && step >= 4);
            let (mean, sd) = batch.scale[0][ch];
            let (want_fill, want_shift) = if filled {
                (1.0 / sd, -mean / sd)
            } else {
                (0.0, 0.0)
            };
            assert!(
                (fill[at] - want_fill).abs() < 1e-6,
                "fill at channel {ch}, step {step}"
            );
            assert!(
                (shift[at] - want_shift).abs() < 1e-6,
                "shift at channel {ch}, step {step}"
            );
        }
        assert!(
            sd != 1.0 && mean != 0.0,
            "instance statistics from channel 1's shown patch"
        );
    }
}
