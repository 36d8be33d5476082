//! The model card (`model.json`): what a model is, what it saw and how well it did, in a form a
//! person can read and a later command can check against. Plain data: it never touches
//! weights, files or training.

use std::path::{Path, PathBuf};

use doppel_core::time::format_rfc3339;
use serde::{Deserialize, Serialize};

use crate::data::{Normalizer, Recording};
use crate::finetune::ForecastHeadCard;
use crate::model::ModelConfig;
use crate::readout::ReadoutFit;
use crate::train::{CurvePoint, TrainConfig};

/// The card format this doppel writes and reads.
pub const FORMAT: &str = "doppel-sensor-model/1";

/// What data a model was trained on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRange {
    pub file: PathBuf,
    pub start: String,
    pub end: String,
    pub steps: usize,
    /// Held out whole for validation: none of its rows was trained on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validation_only: bool,
}

impl DataRange {
    /// What each of `recordings` gave a run split by `train`, in order.
    pub fn of(recordings: &[Recording], train: &TrainConfig) -> Vec<DataRange> {
        recordings
            .iter()
            .enumerate()
            .map(|(i, r)| DataRange {
                file: r.source.clone(),
                start: format_rfc3339(r.start_ns),
                end: format_rfc3339(r.time_ns(r.len().saturating_sub(1))),
                steps: r.len(),
                validation_only: train.held_out(i, recordings.len()),
            })
            .collect()
    }
}

impl ModelCard {
    /// Whether `rec` holds rows this model was trained on: the same file (by name) over a
    /// time that overlaps the training part of it (a file's validation tail, and files
    /// held out whole, excepted). Says which, for a warning: an evaluation on training rows
    /// measures memory, not skill.
    pub fn trained_on(&self, rec: &Recording) -> Option<String> {
        let (from, to) = (rec.start_ns, rec.time_ns(rec.len().saturating_sub(1)));
        let name = |p: &Path| p.file_name().map(|n| n.to_owned());
        self.data.iter().find_map(|d| {
            if d.validation_only || name(&d.file) != name(&rec.source) {
                return None;
            }
            let start = doppel_core::time::parse_rfc3339(&d.start).ok()?;
            let trained_steps = match self.train.validation_recordings {
                0 => (d.steps as f64 * (1.0 - self.train.validation_fraction)) as i64,
                _ => d.steps as i64,
            };
            let end = start + (trained_steps - 1).max(0) * self.step_ns;
            (from <= end && to >= start).then(|| {
                format!(
                    "{} overlaps the rows of {} the model was trained on ({} to {})",
                    rec.source.display(),
                    d.file.display(),
                    d.start,
                    format_rfc3339(end)
                )
            })
        })
    }
}

/// The model card, saved as `model.json` next to the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub format: String,
    pub config: ModelConfig,
    pub channels: Vec<String>,
    pub normalizer: Normalizer,
    /// The grid step the model was trained on, ns.
    pub step_ns: i64,
    pub parameters: usize,
    pub data: Vec<DataRange>,
    pub train: TrainConfig,
    pub curve: Vec<CurvePoint>,
    pub code_version: String,
    /// Set once `doppel model finetune --task forecast` has trained a head.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast_head: Option<ForecastHeadCard>,
    /// Set once `doppel model finetune --task classify|regress` has fitted a probe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeCard>,
    /// How pretraining started the channel read-out's map, channel by channel (with
    /// `config.channel_readout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readout_start: Option<Vec<ReadoutFit>>,
    /// Set when a live twin trained the model: how it scores groups of channels (the
    /// twin's assets) and which detector the twin uses, chosen on held-out data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_scoring: Option<LiveScoring>,
    /// Set when a twin retrained: how this version compared with the one at work on the
    /// most recent day, which neither trained on, and whether it replaced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion: Option<Promotion>,
}

/// A retrained twin model against the one at work.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Promotion {
    /// The version it was compared with.
    pub against: u32,
    /// The day both were scored on.
    pub from: String,
    pub to: String,
    /// Mean squared reconstruction error of each on that day, each hidden value once, in the
    /// live version's standardised units, over the sensors both read.
    pub candidate_error: f64,
    pub live_error: f64,
    pub promoted: bool,
}

/// How a twin turns the model's reconstruction errors into scores, and which detector it
/// trusts, set on the held-out rows after training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveScoring {
    /// Each channel's typical squared error (standardised units) on the held-out rows.
    pub typical: Vec<f32>,
    /// The groups scored together, each with its statistic on the held-out rows.
    pub groups: Vec<ScoredGroup>,
    pub choice: DetectorChoice,
}

/// Channels scored together (a twin's asset): its score is where its statistic (its
/// channels' errors over their typical ones, averaged) falls among `normal`'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoredGroup {
    pub name: String,
    /// Indices into the card's channels.
    pub channels: Vec<usize>,
    /// The statistic on the held-out rows, sorted.
    pub normal: Vec<f32>,
}

/// Which anomaly detector a twin uses live, and the measurement that chose it: faults
/// injected into held-out rows (sensors biased, stuck, drifting, spiking), each detector's
/// threshold set to flag `false_alarm_rate` of the clean rows, and the share of faults each
/// found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectorChoice {
    /// `model`, `pca` or `both` (the larger of the two scores).
    pub detector: String,
    pub false_alarm_rate: f64,
    pub faults: usize,
    /// Share of the faults found, per detector.
    pub detected: std::collections::BTreeMap<String, f64>,
    /// The choice in words.
    pub why: String,
}

impl ModelCard {
    pub fn new(
        config: ModelConfig,
        normalizer: Normalizer,
        step_ns: i64,
        parameters: usize,
        data: Vec<DataRange>,
        train: TrainConfig,
        curve: Vec<CurvePoint>,
    ) -> Self {
        ModelCard {
            format: FORMAT.into(),
            channels: normalizer.channels.clone(),
            config,
            normalizer,
            step_ns,
            parameters,
            data,
            train,
            curve,
            code_version: concat!("doppel ", env!("CARGO_PKG_VERSION")).into(),
            forecast_head: None,
            probe: None,
            readout_start: None,
            live_scoring: None,
            promotion: None,
        }
    }

    /// The point of the training curve whose weights the model holds (the last, or the
    /// best on validation if it was trained with `keep_best`).
    pub fn kept_point(&self) -> Option<&CurvePoint> {
        crate::train::kept_point(&self.train, &self.curve)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeTask {
    /// The label's distinct values are classes.
    Classify,
    /// The label is a number.
    Regress,
}

/// What the model card keeps about a probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeCard {
    pub task: ProbeTask,
    /// The column the labels came from.
    pub label_column: String,
    /// Steps between window starts.
    pub stride: usize,
    /// The classes, in output order (classification): the label's values, or, for text
    /// labels, indices into `class_names`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<f64>,
    /// Text labels' names (`running`, `off`, ...), by the index `classes` holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// Distinct classes among the validation windows (classification): with one, accuracy
    /// says nothing about telling classes apart.
    #[serde(default)]
    pub validation_classes: usize,
    pub train_windows: usize,
    pub validation_windows: usize,
    /// Accuracy (classification) or R² (regression) on the validation windows.
    pub validation_score: f64,
    /// The same for the trivial answer: the most common class, or the training mean.
    pub trivial_score: f64,
}

impl ProbeCard {
    /// A class as written: its name for text labels, else its value.
    pub fn class_text(&self, class: f64) -> String {
        match self.class_names.get(class as usize) {
            Some(name) if !self.class_names.is_empty() => name.clone(),
            _ => class.to_string(),
        }
    }
}
