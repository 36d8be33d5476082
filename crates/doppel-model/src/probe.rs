//! Linear probes on the frozen encoder: a label (a class, or a number) read off a window's
//! embedding by one linear map, the way LSM measures what pretraining learned.
//!
//! The probe is fitted in closed form (ridge regression; one-hot targets for classes, the
//! least-squares classifier) on windows from the first 80 % of each file and measured on the
//! rest, next to the trivial answer (the most common class, or the training mean), so every
//! number says how much the embedding adds. The encoder is never changed here.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig};
use burn::prelude::*;

use crate::card::{ModelCard, ProbeCard, ProbeTask};
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::linear::solve_spd;
use crate::model::SensorModel;
use crate::tasks;
use crate::train::TrainConfig;

/// The probe's weights: embedding [d] → outputs [k] (k classes, or 1).
#[derive(Module, Debug)]
pub struct Probe {
    linear: Linear,
}

impl Probe {
    pub fn empty(d: usize, outputs: usize, device: &Device) -> Self {
        Probe {
            linear: LinearConfig::new(d, outputs)
                .with_initializer(Initializer::Zeros)
                .init(device),
        }
    }

    /// Outputs for embeddings [n, d] → [n, k].
    pub fn forward(&self, embeddings: Tensor<2>) -> Tensor<2> {
        self.linear.forward(embeddings)
    }
}

/// One window's embedding and its label (the label at the window's last step).
struct Example {
    vector: Vec<f32>,
    label: f64,
    validation: bool,
}

/// Embeds windows of each recording and pairs them with `labels[file][row]` (NaN: none).
fn examples(
    model: &SensorModel,
    card: &ModelCard,
    recordings: &[Recording],
    labels: &[Vec<f64>],
    stride: usize,
    training_ends: &[usize],
    device: &Device,
) -> Result<Vec<Example>> {
    let mut out = Vec::new();
    for ((rec, labels), &cut) in recordings.iter().zip(labels).zip(training_ends) {
        for (first, last, vector) in tasks::embed(model, card, rec, stride, device)? {
            let label = labels[last];
            // A window across the cut would train on validation rows: it is left out.
            if label.is_finite() && (last < cut || first >= cut) {
                out.push(Example {
                    vector,
                    label,
                    validation: first >= cut,
                });
            }
        }
    }
    Ok(out)
}

/// What to probe for.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeSettings {
    pub task: ProbeTask,
    pub label_column: String,
    /// Steps between window starts.
    pub stride: usize,
    /// Files at the end held out whole for validation (0: the last 20 % of each file), as
    /// [`TrainConfig::validation_recordings`].
    pub validation_recordings: usize,
}

/// Fits a probe on recordings (in the model's channels) and `labels[file][row]` (NaN: none).
pub fn fit_probe(
    model: &SensorModel,
    card: &ModelCard,
    recordings: &[Recording],
    labels: &[Vec<f64>],
    settings: &ProbeSettings,
    device: &Device,
) -> Result<(Probe, ProbeCard)> {
    let (task, stride, label_column) = (settings.task, settings.stride, &settings.label_column);
    if stride == 0 {
        return Err(ModelError::Settings("--stride must be at least 1".into()));
    }
    let split = TrainConfig {
        validation_recordings: settings.validation_recordings,
        ..TrainConfig::default()
    };
    let training_ends = split.training_ends(recordings)?;
    let all = examples(
        model,
        card,
        recordings,
        labels,
        stride,
        &training_ends,
        device,
    )?;
    let (train, validation): (Vec<&Example>, Vec<&Example>) =
        all.iter().partition(|e| !e.validation);
    if train.len() < 2 || validation.is_empty() {
        return Err(ModelError::Settings(format!(
            "{} labelled window(s) for training and {} for validation: the probe needs more \
             (longer files, a smaller --stride, or labels on more rows)",
            train.len(),
            validation.len()
        )));
    }
    let mut classes: Vec<f64> = Vec::new();
    if task == ProbeTask::Classify {
        classes = train.iter().map(|e| e.label).collect();
        classes.sort_by(f64::total_cmp);
        classes.dedup();
        if classes.len() > 256 {
            return Err(ModelError::Settings(format!(
                "`{label_column}` has {} distinct values in training: too many classes (use \
                 --task regress for a number)",
                classes.len()
            )));
        }
    }
    let target = |e: &Example| -> Vec<f64> {
        match task {
            ProbeTask::Classify => classes
                .iter()
                .map(|&c| if c == e.label { 1.0 } else { 0.0 })
                .collect(),
            ProbeTask::Regress => vec![e.label],
        }
    };
    let k = classes.len().max(1);
    let d = train[0].vector.len();
    // Ridge in closed form on [embedding, 1].
    let n = d + 1;
    let mut xtx = vec![0.0f64; n * n];
    let mut xty = vec![0.0f64; n * k];
    for e in &train {
        let x: Vec<f64> = e
            .vector
            .iter()
            .map(|&v| v as f64)
            .chain(std::iter::once(1.0))
            .collect();
        let y = target(e);
        for i in 0..n {
            for j in 0..n {
                xtx[i * n + j] += x[i] * x[j];
            }
            for (o, yo) in y.iter().enumerate() {
                xty[i * k + o] += x[i] * yo;
            }
        }
    }
    for i in 0..d {
        xtx[i * n + i] += 1e-3 * train.len() as f64;
    }
    let w = solve_spd(&mut xtx, n, &xty, k);
    let predict = |e: &Example| -> Vec<f64> {
        (0..k)
            .map(|o| {
                e.vector
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v as f64 * w[i * k + o])
                    .sum::<f64>()
                    + w[d * k + o]
            })
            .collect()
    };
    let mut seen: Vec<f64> = validation.iter().map(|e| e.label).collect();
    seen.sort_by(f64::total_cmp);
    seen.dedup();
    let (validation_score, trivial_score) = match task {
        ProbeTask::Classify => {
            let majority = classes
                .iter()
                .copied()
                .max_by_key(|&c| train.iter().filter(|e| e.label == c).count())
                .expect("at least one class");
            let right = validation
                .iter()
                .filter(|e| classes[argmax(&predict(e))] == e.label)
                .count();
            let trivial = validation.iter().filter(|e| e.label == majority).count();
            (
                right as f64 / validation.len() as f64,
                trivial as f64 / validation.len() as f64,
            )
        }
        ProbeTask::Regress => {
            let mean = train.iter().map(|e| e.label).sum::<f64>() / train.len() as f64;
            let total: f64 = validation.iter().map(|e| (e.label - mean).powi(2)).sum();
            let residual: f64 = validation
                .iter()
                .map(|e| (e.label - predict(e)[0]).powi(2))
                .sum();
            (1.0 - residual / total.max(1e-12), 0.0)
        }
    };
    let mut probe = Probe::empty(d, k, device);
    let weights: Vec<f32> = w[..d * k].iter().map(|&x| x as f32).collect();
    let bias: Vec<f32> = w[d * k..].iter().map(|&x| x as f32).collect();
    probe.linear.weight =
        Param::from_tensor(Tensor::from_data(TensorData::new(weights, [d, k]), device));
    probe.linear.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(bias, [k]),
        device,
    )));
    let card = ProbeCard {
        task,
        label_column: label_column.clone(),
        stride,
        classes,
        class_names: Vec::new(),
        validation_classes: match task {
            ProbeTask::Classify => seen.len(),
            ProbeTask::Regress => 0,
        },
        train_windows: train.len(),
        validation_windows: validation.len(),
        validation_score,
        trivial_score,
    };
    Ok((probe, card))
}

fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// The probe's answer for each window of a recording: (first step, last step, prediction),
/// the prediction being a class (classification) or a number.
pub fn predict(
    model: &SensorModel,
    probe: &Probe,
    card: &ModelCard,
    probe_card: &ProbeCard,
    rec: &Recording,
    stride: usize,
    device: &Device,
) -> Result<Vec<(usize, usize, f64)>> {
    let windows = tasks::embed(model, card, rec, stride, device)?;
    let Some(d) = windows.first().map(|w| w.2.len()) else {
        return Ok(Vec::new());
    };
    let flat: Vec<f32> = windows.iter().flat_map(|w| w.2.iter().copied()).collect();
    let out = probe
        .forward(Tensor::from_data(
            TensorData::new(flat, [windows.len(), d]),
            device,
        ))
        .into_data()
        .try_into_vec::<f32>()
        .expect("the probe outputs f32");
    let k = out.len() / windows.len();
    Ok(windows
        .iter()
        .enumerate()
        .map(|(i, (first, last, _))| {
            let row: Vec<f64> = out[i * k..(i + 1) * k].iter().map(|&x| x as f64).collect();
            let value = match probe_card.task {
                ProbeTask::Classify => probe_card.classes[argmax(&row)],
                ProbeTask::Regress => row[0],
            };
            (*first, *last, value)
        })
        .collect())
}
