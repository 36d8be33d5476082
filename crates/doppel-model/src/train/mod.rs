//! Masked pretraining: windows drawn from the recordings, 80 % of tokens hidden, AdamW with
//! warm-up then cosine decay and gradient clipping, a validation loss on fixed windows and
//! masks. Every random choice comes from the seed: the same seed gives the same weights, and
//! a run resumed from a checkpoint (`checkpoint`) ends where an unbroken one does.

use burn::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::time::{Duration, Instant};

use crate::batch::{Batch, Mask, Window, make_batch};
pub mod checkpoint;
mod config;

use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::model::{ModelConfig, SensorModel, masked_mse};
use crate::readout::{ReadoutFit, least_squares_start};
use checkpoint::{Checkpointing, TrainingState};
pub use config::{
    CurvePoint, DEFAULT_LEARNING_RATE, Start, TrainConfig, kept_point, learning_rate, stalled,
    stopped_early, window_starts,
};

/// What the progress bar shows after each step.
pub struct Progress {
    pub step: usize,
    pub loss: f64,
    /// Over the whole run so far: batching, validation and checkpoints included.
    pub tokens_per_second: f64,
    /// Over the training steps alone (batch, forward, backward, optimiser), leaving out the
    /// first [`Throughput::WARM_UP_STEPS`] of the run: how PyTorch training loops are
    /// usually timed, so the two can be set side by side. `None` until a step has been timed.
    pub step_tokens_per_second: Option<f64>,
}

/// Counts tokens a second two ways for [`Progress`]: whole run, and training steps alone.
pub struct Throughput {
    tokens_per_step: f64,
    run_started: Instant,
    steps_run: usize,
    step_started: Instant,
    in_timed_steps: Duration,
}

impl Throughput {
    /// Steps left out of the training-step figure: the first ones allocate buffers and warm
    /// caches (PyTorch's comparison script leaves out as many).
    pub const WARM_UP_STEPS: usize = 10;

    pub(crate) fn new(tokens_per_step: f64) -> Self {
        let now = Instant::now();
        Self {
            tokens_per_step,
            run_started: now,
            steps_run: 0,
            step_started: now,
            in_timed_steps: Duration::ZERO,
        }
    }

    /// Call as a training step begins, before its batch is built.
    pub(crate) fn step_begins(&mut self) {
        self.step_started = Instant::now();
    }

    /// Call once the optimiser has stepped, before validation or checkpoints.
    pub(crate) fn step_ends(&mut self) {
        if self.steps_run >= Self::WARM_UP_STEPS {
            self.in_timed_steps += self.step_started.elapsed();
        }
        self.steps_run += 1;
    }

    pub(crate) fn progress(&self, step: usize, loss: f64) -> Progress {
        let per_second = |steps: usize, elapsed: Duration| {
            self.tokens_per_step * steps as f64 / elapsed.as_secs_f64()
        };
        let timed_steps = self.steps_run.saturating_sub(Self::WARM_UP_STEPS);
        Progress {
            step,
            loss,
            tokens_per_second: per_second(self.steps_run, self.run_started.elapsed()),
            step_tokens_per_second: (timed_steps > 0)
                .then(|| per_second(timed_steps, self.in_timed_steps)),
        }
    }
}

/// Cuts window `start..start+len` of the channels `channel_ids` of a recording (standardised
/// already; its channel i is the model's channel i).
pub fn cut(rec: &Recording, start: usize, len: usize, channel_ids: &[usize]) -> Window {
    let c = channel_ids.len();
    let mut values = Vec::with_capacity(c * len);
    let mut observed = Vec::with_capacity(c * len);
    for &ch in channel_ids {
        values.extend_from_slice(&rec.values[ch][start..start + len]);
        observed.extend_from_slice(&rec.observed[ch][start..start + len]);
    }
    Window {
        values,
        observed,
        channels: channel_ids.to_vec(),
    }
}

/// The mask of one pretraining batch of windows of `channels` channels: a random share of
/// tokens, or, for a `channel_mask_share` of batches, one whole channel (the same for every
/// window of the batch). Draws from `rng` only when channel masks are on, so a model without
/// them trains exactly as before they existed.
pub fn pretraining_mask(config: &ModelConfig, channels: usize, rng: &mut impl Rng) -> Mask {
    if config.channel_mask_share > 0.0
        && channels > 1
        && rng.random::<f64>() < config.channel_mask_share
    {
        Mask::Channels(vec![rng.random_range(0..channels)])
    } else {
        Mask::Random(config.mask_ratio)
    }
}

/// What pretraining returns: the model, its curve, and how its read-out was started.
pub struct Pretrained {
    pub model: SensorModel,
    pub curve: Vec<CurvePoint>,
    /// Each channel's start of the channel read-out (with `channel_readout`), for the card.
    pub readout_start: Option<Vec<ReadoutFit>>,
}

/// Pretrains a model on standardised recordings. Returns the model and its curve.
pub fn pretrain(
    recordings: &[Recording],
    model_config: &ModelConfig,
    config: &TrainConfig,
    device: &Device,
    progress: impl FnMut(&Progress) + Send,
) -> Result<(SensorModel, Vec<CurvePoint>)> {
    let pretrained =
        pretrain_with_checkpoints(recordings, model_config, config, None, device, progress)?;
    Ok((pretrained.model, pretrained.curve))
}

/// [`pretrain`], writing checkpoints as it goes and, if asked, going on from the last one.
pub fn pretrain_with_checkpoints(
    recordings: &[Recording],
    model_config: &ModelConfig,
    config: &TrainConfig,
    checkpoints: Option<&Checkpointing>,
    device: &Device,
    progress: impl FnMut(&Progress) + Send,
) -> Result<Pretrained> {
    crate::device::on_a_worker(|| {
        pretrain_on_a_worker(
            recordings,
            model_config,
            config,
            checkpoints,
            device,
            progress,
        )
    })
}

fn pretrain_on_a_worker(
    recordings: &[Recording],
    model_config: &ModelConfig,
    config: &TrainConfig,
    checkpoints: Option<&Checkpointing>,
    device: &Device,
    mut progress: impl FnMut(&Progress),
) -> Result<Pretrained> {
    let window = model_config.window();
    let training_ends = config.training_ends(recordings)?;
    let (train, val) = window_starts(recordings, window, &training_ends);
    if train.is_empty() {
        let longest = recordings.iter().map(Recording::len).max().unwrap_or(0);
        return Err(ModelError::Settings(format!(
            "the window ({window} steps) is longer than the training part of every file \
             (the longest file has {longest} steps; {} validates): use fewer or shorter \
             patches",
            config.validation_part()
        )));
    }
    if val.is_empty() {
        // A run without a validation loss could neither keep its best weights nor tell its
        // user how well it does: refuse it rather than write a card with no figure.
        let hint = match config.validation_recordings {
            0 => "hold out whole files (--validation-files N)",
            _ => "hold out longer files",
        };
        return Err(ModelError::Settings(format!(
            "the window ({window} steps) is longer than every part kept for validation \
             ({}), so nothing could validate: {hint}, or use fewer or shorter patches",
            config.validation_part()
        )));
    }
    if config.channel_independent && model_config.channels_per_token > 1 {
        return Err(ModelError::Settings(format!(
            "a token of {} channels needs windows of every channel: channel-independent \
             pretraining takes one channel a token",
            model_config.channels_per_token
        )));
    }
    let channel_ids: Vec<usize> = (0..model_config.channels).collect();
    // A window holds every channel, or (channel-independent) one: `pick()`'s, modulo the
    // channel count. Only then is `pick` called, so the default path draws what it always drew.
    let channels_of = |pick: &mut dyn FnMut() -> usize| -> Vec<usize> {
        if config.channel_independent {
            vec![pick() % channel_ids.len()]
        } else {
            channel_ids.clone()
        }
    };
    let mut model = model_config.init_seeded(config.seed, device);
    let mut readout_start = None;
    if model_config.channel_readout {
        let window = model_config.patch_len * model_config.patches;
        let start =
            least_squares_start(recordings, &training_ends, window, model_config.untrained());
        model = model.with_readout_start(&start, device);
        readout_start = Some(start.fits);
    }
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .with_grad_clipping(Some(GradientClippingConfig::Norm(config.clip_norm)))
        .init();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(config.seed);

    // Fixed validation windows and masks: the curve measures the model, not the draw.
    let mut val_rng = Xoshiro256PlusPlus::seed_from_u64(config.seed ^ 0x7A1);
    let per_window = if config.channel_independent {
        1
    } else {
        channel_ids.len()
    };
    // The same number of validation tokens either way.
    let val_count = val.len().min(64 * channel_ids.len() / per_window);
    let val_windows: Vec<Window> = (0..val_count)
        .map(|i| {
            // Spread evenly over the validation part.
            let (r, s) = val[(i * val.len()) / val_count];
            cut(
                &recordings[r],
                s,
                window,
                &channels_of(&mut || i), // in turns
            )
        })
        .collect();
    let val_batch = (!val_windows.is_empty()).then(|| {
        make_batch(
            &val_windows,
            model_config,
            &Mask::Random(model_config.mask_ratio),
            &mut val_rng,
            device,
        )
    });

    let mut curve = Vec::new();
    let mut recent = Vec::new();
    let mut first_step = 0;
    // With `keep_best`: the weights of the curve's kept point so far (`kept_point`).
    let mut best: Option<SensorModel> = None;
    if let Some(cp) = checkpoints.filter(|cp| cp.resume)
        && let Some(resumed) = checkpoint::load(&cp.dir, model_config, config, &mut model)?
    {
        optimizer = optimizer.load_record(resumed.optimizer);
        rng = resumed.rng;
        curve = resumed.curve;
        recent = resumed.recent;
        first_step = resumed.step;
        best = resumed.best;
    }
    let mut throughput =
        Throughput::new((config.batch_size * model_config.tokens_per_window(per_window)) as f64);
    for step in first_step..config.steps {
        throughput.step_begins();
        let windows: Vec<Window> = (0..config.batch_size)
            .map(|_| {
                let (r, s) = train[rng.random_range(0..train.len())];
                let channels = channels_of(&mut || rng.random_range(0..channel_ids.len()));
                cut(&recordings[r], s, window, &channels)
            })
            .collect();
        let mask = pretraining_mask(model_config, windows[0].channels.len(), &mut rng);
        let batch = make_batch(&windows, model_config, &mask, &mut rng, device);
        let prediction = model.forward(&batch.tokens);
        let loss = masked_mse(prediction, batch.target, batch.weight);
        let loss_value = loss.clone().into_scalar::<f32>() as f64;
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = learning_rate(config, step);
        model = optimizer.step(lr, model, grads);
        throughput.step_ends();
        recent.push(loss_value);
        if (step + 1) % config.eval_every == 0 || step + 1 == config.steps {
            let validation_loss = match &val_batch {
                Some(b) => {
                    let valid = model.valid();
                    let p = valid.forward(&b.tokens);
                    masked_mse(p, b.target.clone(), b.weight.clone()).into_scalar::<f32>() as f64
                }
                None => f64::NAN,
            };
            curve.push(CurvePoint::closing(
                step + 1,
                &mut recent,
                validation_loss,
                lr,
            ));
            // A clone shares the weights' buffers; the optimizer's next step writes new
            // ones, so the copy kept here stays as it is.
            if config.keep_best && kept_point(config, &curve).map(|p| p.step) == Some(step + 1) {
                best = Some(model.clone());
            }
        }
        if let Some(cp) = checkpoints
            && cp.every > 0
            && (step + 1) % cp.every == 0
            && step + 1 < config.steps
        {
            let state = TrainingState {
                step: step + 1,
                model_config,
                train: config,
                curve: &curve,
                recent: &recent,
                rng: &rng,
                best: best.as_ref(),
            };
            checkpoint::save(&cp.dir, &state, &model, &optimizer)?;
        }
        progress(&throughput.progress(step + 1, loss_value));
        if curve.last().is_some_and(|p| p.step == step + 1)
            && stalled(config, f64::INFINITY, &curve)
        {
            break;
        }
    }
    let mut model = best.unwrap_or(model);
    if let Some(batch) = &val_batch
        && let Some(shares) = calibrated_shares(&model.valid(), batch)
    {
        model = model.with_network_shares(&shares);
    }
    Ok(Pretrained {
        model,
        curve,
        readout_start,
    })
}

/// The network's share of each channel's read-out fills that gives the least squared error
/// on held-out windows: s = Σ (y − r)(n − r) / Σ (n − r)² over the values the read-out
/// fills and the batch scores (y the truth, n the network's answer, r the read-out's),
/// within [0, 1]; a channel with no such value keeps its share. None without a read-out.
///
/// Training moves the shares on the training windows, where each channel's least-squares
/// fit is in-sample; where the ties drift (ETTh2), that trusts the read-out more than
/// held-out data bears out.
pub fn calibrated_shares(model: &SensorModel, batch: &Batch) -> Option<Vec<f32>> {
    let current = model.network_shares()?;
    let values = |t: Tensor<3>| t.into_data().try_into_vec::<f32>().unwrap_or_default();
    let answer = |share: f32| {
        let shares = vec![share; current.len()];
        values(
            model
                .clone()
                .with_network_shares(&shares)
                .forward(&batch.tokens),
        )
    };
    let (network, readout) = (answer(1.0), answer(0.0));
    let (target, weight) = (values(batch.target.clone()), values(batch.weight.clone()));
    let [b, c] = batch.tokens.channel_ids.dims();
    let ids = batch
        .tokens
        .channel_ids
        .clone()
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .ok()?;
    let per_window = network.len() / b.max(1);
    let per_channel = per_window / c.max(1);
    let mut sums = vec![(0.0f64, 0.0f64); current.len()];
    for (i, (&n, &r)) in network.iter().zip(&readout).enumerate() {
        // Only a filled value differs between the two answers.
        if weight[i] == 0.0 || n == r {
            continue;
        }
        let channel = ids[(i / per_window) * c + (i % per_window) / per_channel] as usize;
        let (y, n, r) = (target[i] as f64, n as f64, r as f64);
        sums[channel].0 += (y - r) * (n - r);
        sums[channel].1 += (n - r) * (n - r);
    }
    let shares = current
        .iter()
        .zip(&sums)
        .map(|(&share, &(cross, spread))| {
            if spread > 0.0 {
                (cross / spread).clamp(0.0, 1.0) as f32
            } else {
                share
            }
        })
        .collect();
    Some(shares)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recording(len: usize) -> Recording {
        Recording {
            source: "r.csv".into(),
            start_ns: 0,
            step_ns: 1,
            channels: vec!["x".into()],
            values: vec![vec![0.0; len]],
            observed: vec![vec![true; len]],
            rows: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// A card written with a NaN loss (`null` in JSON) reads back, its loss NaN again.
    #[test]
    fn a_curve_point_without_a_validation_loss_reads_back() {
        let point = CurvePoint::closing(50, &mut vec![0.5], f64::NAN, 1e-3);
        let json = serde_json::to_string(&point).unwrap();
        assert!(json.contains("\"validation_loss\":null"), "{json}");
        let back: CurvePoint = serde_json::from_str(&json).unwrap();
        assert!(back.validation_loss.is_nan() && back.train_loss == 0.5);
    }

    fn curve(losses: &[f64]) -> Vec<CurvePoint> {
        losses
            .iter()
            .enumerate()
            .map(|(i, &validation_loss)| CurvePoint {
                step: 50 * (i + 1),
                train_loss: 0.0,
                validation_loss,
                learning_rate: 1e-3,
            })
            .collect()
    }

    /// Patience counts the checks since the lowest validation loss, the start included; 0
    /// never stops.
    #[test]
    fn stops_after_patience_checks_without_a_new_low() {
        let patient = TrainConfig {
            patience: 2,
            steps: 1000,
            ..TrainConfig::default()
        };
        let inf = f64::INFINITY;
        assert!(!stalled(&patient, inf, &curve(&[1.0, 0.9, 0.95])));
        assert!(stalled(&patient, inf, &curve(&[1.0, 0.9, 0.95, 0.91])));
        assert!(!stalled(&patient, inf, &curve(&[1.0, 0.9, 0.95, 0.8])));
        // A start never beaten: the checks after it count.
        assert!(!stalled(&patient, 0.5, &curve(&[0.6])));
        assert!(stalled(&patient, 0.5, &curve(&[0.6, 0.55])));
        let never = TrainConfig {
            patience: 0,
            ..patient.clone()
        };
        assert!(!stalled(&never, 0.5, &curve(&[0.6; 50])));
        assert!(!stalled(&patient, inf, &curve(&[f64::NAN; 5])));
        assert_eq!(stopped_early(&patient, &curve(&[1.0, 0.9])), Some(100));
        assert_eq!(stopped_early(&patient, &curve(&[1.0; 20])), None);
    }

    /// The tail of each recording validates, or the last recordings whole; either way no
    /// window straddles a cut and nothing held out is trained on.
    #[test]
    fn splits_by_tails_or_by_whole_recordings() {
        let recordings = [recording(100), recording(50), recording(40)];
        let tails = TrainConfig::default();
        assert_eq!(tails.training_ends(&recordings).unwrap(), [80, 40, 32]);
        let held_out = TrainConfig {
            validation_recordings: 1,
            ..TrainConfig::default()
        };
        let ends = held_out.training_ends(&recordings).unwrap();
        assert_eq!(ends, [100, 50, 0]);
        let (train, val) = window_starts(&recordings, 10, &ends);
        assert_eq!(train.len(), 91 + 41, "every window of the training files");
        assert!(train.iter().all(|&(r, _)| r < 2));
        assert_eq!(val, (0..=30).map(|s| (2, s)).collect::<Vec<_>>());
        let (train, val) = window_starts(&recordings, 10, &[80, 40, 32]);
        assert!(train.iter().all(|&(r, s)| s + 10 <= [80, 40, 32][r]));
        assert!(val.iter().all(|&(r, s)| s >= [80, 40, 32][r]));

        let all = TrainConfig {
            validation_recordings: 3,
            ..TrainConfig::default()
        };
        let err = all.training_ends(&recordings).unwrap_err().to_string();
        assert!(err.contains("3 of 3 file(s)"), "{err}");
    }
}

#[cfg(test)]
mod calibration_tests {
    use super::*;
    use crate::readout::pair_start;

    /// b = a; windows of both, points hidden at random so that many are missing alone at
    /// their step.
    fn tied_batch(config: &ModelConfig, device: &Device) -> Batch {
        let t = config.patch_len * config.patches;
        let windows: Vec<Window> = (0..16)
            .map(|w| {
                let a: Vec<f32> = (0..t).map(|i| ((w * t + i) as f32 * 0.37).sin()).collect();
                Window {
                    values: [a.clone(), a].concat(),
                    observed: vec![true; 2 * t],
                    channels: vec![0, 1],
                }
            })
            .collect();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
        make_batch(&windows, config, &Mask::Random(0.0), &mut rng, device)
    }

    fn model_reading_b_as(sign: f32, config: &ModelConfig, device: &Device) -> SensorModel {
        let start = pair_start(sign, 0.5, None);
        config
            .init_seeded(0, device)
            .with_readout_start(&start, device)
    }

    #[test]
    fn held_out_windows_set_the_shares_where_the_read_out_fills() {
        let device = Device::flex();
        let mut config = ModelConfig::sized("tiny", 2, 4, 4).unwrap();
        config.channel_readout = true;
        config.point_mask_ratio = 0.4;
        let batch = tied_batch(&config, &device);
        // An exact read-out against an untrained network: nearly all to the read-out.
        let exact = model_reading_b_as(1.0, &config, &device);
        let shares = calibrated_shares(&exact, &batch).unwrap();
        assert!(shares.iter().all(|&s| s < 0.05), "{shares:?}");
        // A read-out of the wrong sign: all to the network.
        let wrong = model_reading_b_as(-1.0, &config, &device);
        let shares_wrong = calibrated_shares(&wrong, &batch).unwrap();
        assert!(shares_wrong.iter().all(|&s| s > 0.95), "{shares_wrong:?}");
        // The shares set are the model's.
        let set = exact.with_network_shares(&shares).network_shares().unwrap();
        for (set, wanted) in set.iter().zip(&shares) {
            assert!((set - wanted).abs() < 1e-6, "{set} against {wanted}");
        }
    }
}
