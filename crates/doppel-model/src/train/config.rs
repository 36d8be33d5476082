//! How a pretraining run is set up and how it went: its settings (`TrainConfig`: steps,
//! schedule, the split into training and validation), its curve, and the rules read off the
//! curve (which step's weights to keep, when to stop). Plain data and arithmetic: no model,
//! no tensors.

use serde::{Deserialize, Serialize};

use crate::data::{Normalizer, Recording};
use crate::error::{ModelError, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub warmup_steps: usize,
    pub weight_decay: f32,
    pub clip_norm: f32,
    pub seed: u64,
    /// The last share of each recording, kept for validation (unless
    /// `validation_recordings` holds out whole recordings instead).
    pub validation_fraction: f64,
    /// Recordings at the end of the list kept whole for validation, none of their rows
    /// trained on: the model is then judged on machines, runs or years it never saw. 0: the
    /// last `validation_fraction` of every recording validates instead.
    #[serde(default)]
    pub validation_recordings: usize,
    pub eval_every: usize,
    /// Pretrain on windows of one channel each (PatchTST's channel independence), for an
    /// encoder that will read one channel at a time, as the forecasting head does.
    #[serde(default)]
    pub channel_independent: bool,
    /// End with the weights of the evaluation with the lowest validation loss, not the last
    /// step's: early stopping that still draws the whole curve. A long run on a short
    /// history can then not return weights that had begun to learn its training windows by
    /// heart. The step kept is [`kept_point`]'s.
    #[serde(default)]
    pub keep_best: bool,
    /// Stop once this many evaluations in a row have not lowered the validation loss
    /// ([`stalled`]); 0 runs every step. The schedule stays the one of `steps`, so a run
    /// stopped early ends at a higher learning rate than a run planned that short.
    #[serde(default)]
    pub patience: usize,
}

/// The peak learning rate unless a caller says otherwise.
pub const DEFAULT_LEARNING_RATE: f64 = 1e-3;

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            steps: 600,
            batch_size: 32,
            learning_rate: DEFAULT_LEARNING_RATE,
            warmup_steps: 50,
            weight_decay: 0.05,
            clip_norm: 1.0,
            seed: 0,
            validation_fraction: 0.2,
            validation_recordings: 0,
            eval_every: 50,
            channel_independent: false,
            keep_best: false,
            patience: 0,
        }
    }
}

impl TrainConfig {
    /// `steps` batches of `batch_size` at a peak `learning_rate`, warming up over the first
    /// tenth; everything else as [`Default`].
    pub fn new(steps: usize, batch_size: usize, learning_rate: f64, seed: u64) -> Self {
        TrainConfig {
            steps,
            batch_size,
            learning_rate,
            warmup_steps: (steps / 10).max(1),
            seed,
            ..TrainConfig::default()
        }
    }

    /// Where each recording's training part ends: its rows before the end are trained on,
    /// the rest validate. The one rule for every split (windows, normalisation statistics,
    /// the linear start), so validation rows never reach training.
    pub fn training_ends(&self, recordings: &[Recording]) -> Result<Vec<usize>> {
        let (n, held_out) = (recordings.len(), self.validation_recordings);
        if held_out > 0 && held_out >= n {
            return Err(ModelError::Settings(format!(
                "{held_out} of {n} file(s) kept whole for validation: keep at least one for \
                 training"
            )));
        }
        Ok(recordings
            .iter()
            .enumerate()
            .map(|(i, rec)| match held_out {
                0 => ((rec.len() as f64) * (1.0 - self.validation_fraction)) as usize,
                _ if self.held_out(i, n) => 0,
                _ => rec.len(),
            })
            .collect())
    }

    /// The standardisation statistics of this split: the training rows' alone, so nothing
    /// that validates shapes them.
    pub fn normalizer(&self, recordings: &[Recording]) -> Result<Normalizer> {
        Ok(Normalizer::fit_rows(
            recordings,
            &self.training_ends(recordings)?,
        ))
    }

    /// Whether recording `index` of `count` is held out whole for validation.
    pub fn held_out(&self, index: usize, count: usize) -> bool {
        self.validation_recordings > 0 && index + self.validation_recordings >= count
    }

    /// This split, or, when no file is long enough to keep its last share for a validation
    /// window of `window` steps (many short recordings), one that keeps whole files at the
    /// end of the list for validation instead, with a note saying so. Unchanged when whole
    /// files are held out already, or nothing would validate either way (pretraining then
    /// says why).
    pub fn fitted_to(&self, recordings: &[Recording], window: usize) -> (Self, Option<String>) {
        let validates = |config: &TrainConfig| {
            config.training_ends(recordings).is_ok_and(|ends| {
                let (train, val) = window_starts(recordings, window, &ends);
                !train.is_empty() && !val.is_empty()
            })
        };
        if self.validation_recordings > 0 || recordings.len() < 2 || validates(self) {
            return (self.clone(), None);
        }
        let n = recordings.len();
        let first_try = ((n as f64 * self.validation_fraction).round() as usize).max(1);
        for held_out in first_try..n {
            let whole = TrainConfig {
                validation_recordings: held_out,
                ..self.clone()
            };
            if validates(&whole) {
                let note = format!(
                    "no file is long enough to keep {} for a validation window of {window}                      steps: {} validate whole instead (--validation-files {held_out})",
                    self.validation_part(),
                    whole.validation_part()
                );
                return (whole, Some(note));
            }
        }
        (self.clone(), None)
    }

    /// What validates, in words, for error messages.
    pub(crate) fn validation_part(&self) -> String {
        match self.validation_recordings {
            0 => format!(
                "the last {:.0} % of each file",
                self.validation_fraction * 100.0
            ),
            1 => "the last file".into(),
            n => format!("the last {n} files"),
        }
    }
}

/// One point of the training curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    pub step: usize,
    #[serde(deserialize_with = "number_or_nan")]
    pub train_loss: f64,
    /// NaN where nothing validated; JSON writes NaN as `null`, and reads it back as NaN.
    #[serde(deserialize_with = "number_or_nan")]
    pub validation_loss: f64,
    pub learning_rate: f64,
}

/// A loss from a card: JSON has no NaN and writes it as `null`, so `null` reads back as NaN
/// (cards written before training refused to run without validation windows hold it).
fn number_or_nan<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

impl CurvePoint {
    /// The point after `step` steps: the mean of the `recent` training losses, which it
    /// empties for the next stretch.
    pub(crate) fn closing(
        step: usize,
        recent: &mut Vec<f64>,
        validation_loss: f64,
        learning_rate: f64,
    ) -> Self {
        let train_loss = recent.iter().sum::<f64>() / recent.len().max(1) as f64;
        recent.clear();
        CurvePoint {
            step,
            train_loss,
            validation_loss,
            learning_rate,
        }
    }
}

/// The point of the curve whose weights a run ends with: the last, or with
/// [`TrainConfig::keep_best`] the first with the lowest validation loss (the last when no
/// point has one).
pub fn kept_point<'a>(config: &TrainConfig, curve: &'a [CurvePoint]) -> Option<&'a CurvePoint> {
    let mut best: Option<&CurvePoint> = None;
    if config.keep_best {
        for point in curve {
            if point.validation_loss < best.map_or(f64::INFINITY, |b| b.validation_loss) {
                best = Some(point);
            }
        }
    }
    best.or(curve.last())
}

/// Whether a run should stop: [`TrainConfig::patience`] evaluations have passed since the
/// lowest validation loss so far, counting `start` (the loss before the first step, or
/// infinity when there is none) as an evaluation that came before them all. Read from the
/// curve alone, so a resumed run stops where the uninterrupted one would have. A check
/// without a validation loss (NaN: nothing to validate on) says nothing, so it never counts.
pub fn stalled(config: &TrainConfig, start: f64, curve: &[CurvePoint]) -> bool {
    if config.patience == 0 {
        return false;
    }
    let mut lowest = start;
    let mut since = 0;
    for point in curve.iter().filter(|p| !p.validation_loss.is_nan()) {
        if point.validation_loss < lowest {
            lowest = point.validation_loss;
            since = 0;
        } else {
            since += 1;
        }
    }
    since >= config.patience
}

/// The step a run stopped at when [`TrainConfig::patience`] ended it before its last step.
pub fn stopped_early(config: &TrainConfig, curve: &[CurvePoint]) -> Option<usize> {
    curve
        .last()
        .map(|p| p.step)
        .filter(|&step| step < config.steps)
}

/// Warm-up then cosine decay to a tenth of the peak.
pub fn learning_rate(config: &TrainConfig, step: usize) -> f64 {
    let peak = config.learning_rate;
    if step < config.warmup_steps {
        return peak * (step + 1) as f64 / config.warmup_steps as f64;
    }
    let span = (config.steps - config.warmup_steps).max(1) as f64;
    let x = ((step - config.warmup_steps) as f64 / span).min(1.0);
    peak * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * x).cos()))
}

/// A window's place: (recording, first slot).
pub type Start = (usize, usize);

/// Where windows may start, split into training and validation at each recording's
/// training end ([`TrainConfig::training_ends`]): no window straddles the cut, and inside a
/// recording validation windows are later than any training window.
pub fn window_starts(
    recordings: &[Recording],
    window: usize,
    training_ends: &[usize],
) -> (Vec<Start>, Vec<Start>) {
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (r, (rec, &cut)) in recordings.iter().zip(training_ends).enumerate() {
        if rec.len() < window {
            continue;
        }
        for start in 0..=rec.len() - window {
            if start + window <= cut {
                train.push((r, start));
            } else if start >= cut {
                val.push((r, start));
            }
        }
    }
    (train, val)
}
