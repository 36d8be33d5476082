//! Training checkpoints: everything a pretraining needs to go on exactly where it stopped
//! (the weights with their parameter ids, AdamW's moments, the window sampler's generator,
//! the curve so far), so a run that was stopped and resumed ends with the same weights as
//! one that never stopped.
//!
//! A checkpoint is never read half written: its weight and optimizer files carry their step
//! in the name, and `checkpoint.json`, renamed into place last, names the complete set; older
//! files go only after that. Checkpoints are burn's own format (burnpack, which keeps
//! parameter ids), not the model directory's safetensors: they are for doppel to resume,
//! not for anyone to read.

use std::path::{Path, PathBuf};

use burn::optim::{ModuleOptimizer, OptimizerRecord};
use burn::store::{BurnpackStore, ModuleSnapshot};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::config::{CurvePoint, TrainConfig};
use crate::error::{ModelError, Result};
use crate::model::{ModelConfig, SensorModel};

/// Where and how often a pretraining writes checkpoints, and whether it starts from one.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpointing {
    pub dir: PathBuf,
    /// Steps between checkpoints (0: none).
    pub every: usize,
    /// Go on from the checkpoint in `dir`, when there is one.
    pub resume: bool,
}

const MANIFEST: &str = "checkpoint.json";
const FORMAT: &str = "doppel-checkpoint/1";

/// The manifest, `checkpoint.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    format: String,
    /// Steps done.
    step: usize,
    model: ModelConfig,
    train: TrainConfig,
    curve: Vec<CurvePoint>,
    /// Training losses since the last curve point.
    recent: Vec<f64>,
    /// The generator that draws windows and masks, as it stands after `step` steps.
    rng: Xoshiro256PlusPlus,
    weights: String,
    optimizer: String,
    /// With `keep_best`: the weights of the lowest validation loss so far.
    #[serde(default)]
    best: Option<String>,
}

/// A run's state after `step` steps.
pub(crate) struct TrainingState<'a> {
    pub step: usize,
    pub model_config: &'a ModelConfig,
    pub train: &'a TrainConfig,
    pub curve: &'a [CurvePoint],
    pub recent: &'a [f64],
    pub rng: &'a Xoshiro256PlusPlus,
    /// The weights a `keep_best` run would end with if it ended now.
    pub best: Option<&'a SensorModel>,
}

/// A run read back from a checkpoint (its weights go into the caller's model).
pub(crate) struct Resumed {
    pub step: usize,
    pub optimizer: OptimizerRecord,
    pub curve: Vec<CurvePoint>,
    pub recent: Vec<f64>,
    pub rng: Xoshiro256PlusPlus,
    pub best: Option<SensorModel>,
}

fn error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Store {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The weight, optimizer and best-weight files of the checkpoint after `step` steps.
fn step_files(step: usize) -> [String; 3] {
    [
        format!("model-{step:08}.bpk"),
        format!("optimizer-{step:08}.bpk"),
        format!("best-{step:08}.bpk"),
    ]
}

/// Whether a file name is one of [`step_files`]' (of any step).
fn is_step_file(name: &str) -> bool {
    name.ends_with(".bpk")
        && ["model-", "optimizer-", "best-"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

fn save_weights(dir: &Path, file: &str, model: &SensorModel) -> Result<()> {
    let mut store = BurnpackStore::from_file(dir.join(file))
        .auto_extension(false)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| error(dir, format!("cannot write {file}: {e}")))
}

fn load_weights(dir: &Path, file: &str, model: &mut SensorModel) -> Result<()> {
    let mut store = BurnpackStore::from_file(dir.join(file)).auto_extension(false);
    model
        .load_from(&mut store)
        .map_err(|e| error(dir, format!("cannot read {file}: {e}")))?;
    Ok(())
}

/// The manifest in `dir`, if there is one.
fn read_manifest(dir: &Path) -> Result<Option<Manifest>> {
    let text = match std::fs::read_to_string(dir.join(MANIFEST)) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error(dir, format!("cannot read {MANIFEST}: {e}"))),
    };
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| error(dir, format!("{MANIFEST} is not a doppel checkpoint: {e}")))?;
    Ok(Some(manifest))
}

/// Writes a checkpoint of the run into `dir`, then removes the previous one's files.
pub(crate) fn save(
    dir: &Path,
    state: &TrainingState,
    model: &SensorModel,
    optimizer: &ModuleOptimizer,
) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| error(dir, e))?;
    let [weights, optimizer_file, best_file] = step_files(state.step);
    save_weights(dir, &weights, model)?;
    if let Some(best) = state.best {
        save_weights(dir, &best_file, best)?;
    }
    optimizer
        .to_record()
        .save(dir.join(&optimizer_file))
        .map_err(|e| error(dir, format!("cannot write {optimizer_file}: {e}")))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        step: state.step,
        model: state.model_config.clone(),
        train: state.train.clone(),
        curve: state.curve.to_vec(),
        recent: state.recent.to_vec(),
        rng: state.rng.clone(),
        weights: weights.clone(),
        optimizer: optimizer_file.clone(),
        best: state.best.map(|_| best_file.clone()),
    };
    let text = serde_json::to_string_pretty(&manifest).expect("the manifest serialises");
    let scratch = dir.join(format!("{MANIFEST}.writing"));
    std::fs::write(&scratch, text).map_err(|e| error(dir, e))?;
    std::fs::rename(&scratch, dir.join(MANIFEST)).map_err(|e| error(dir, e))?;
    // Only now is the new set the one named; the files of earlier steps can go.
    for entry in std::fs::read_dir(dir).map_err(|e| error(dir, e))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if is_step_file(&name) && name != weights && name != optimizer_file && name != best_file {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// Reads the checkpoint in `dir`, if there is one, for a run of these settings: its weights
/// go into `model` (with their parameter ids, which the optimizer record refers to). A
/// checkpoint of other settings is refused (resuming it would train a model nobody asked
/// for).
pub(crate) fn load(
    dir: &Path,
    model_config: &ModelConfig,
    train: &TrainConfig,
    model: &mut SensorModel,
) -> Result<Option<Resumed>> {
    let Some(manifest) = read_manifest(dir)? else {
        return Ok(None);
    };
    if manifest.format != FORMAT {
        return Err(error(
            dir,
            format!(
                "checkpoint format `{}`; this doppel reads `{FORMAT}`",
                manifest.format
            ),
        ));
    }
    let mut differing = differing_settings(&manifest.model, model_config);
    differing.extend(differing_settings(&manifest.train, train));
    if !differing.is_empty() {
        return Err(error(
            dir,
            format!(
                "the checkpoint was written by a run with other settings ({}); run with those \
                 settings to resume it, or without --resume to start afresh",
                differing.join(", ")
            ),
        ));
    }
    let best = match &manifest.best {
        Some(file) => {
            let mut best = model.clone();
            load_weights(dir, file, &mut best)?;
            Some(best)
        }
        None => None,
    };
    load_weights(dir, &manifest.weights, model)?;
    let optimizer = OptimizerRecord::load(dir.join(&manifest.optimizer))
        .map_err(|e| error(dir, format!("cannot read {}: {e}", manifest.optimizer)))?;
    Ok(Some(Resumed {
        step: manifest.step,
        optimizer,
        curve: manifest.curve,
        recent: manifest.recent,
        rng: manifest.rng,
        best,
    }))
}

/// The settings that differ between a checkpoint's and this run's, as `name: was → now`.
fn differing_settings<T: Serialize>(saved: &T, now: &T) -> Vec<String> {
    let as_map = |settings: &T| match serde_json::to_value(settings) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (saved, now) = (as_map(saved), as_map(now));
    now.iter()
        .filter(|(key, value)| saved.get(*key) != Some(*value))
        .map(|(key, value)| {
            let was = saved
                .get(key)
                .map_or_else(|| "unset".into(), |v| v.to_string());
            format!("{key}: {was} → {value}")
        })
        .collect()
}

/// The step of the checkpoint in `dir`, if one is there (for messages; [`load`] checks it).
pub fn saved_step(dir: &Path) -> Option<usize> {
    read_manifest(dir).ok().flatten().map(|m| m.step)
}

/// Removes a run's checkpoint files (and `dir`, if nothing else is in it) once its model is
/// safely written.
pub fn clear(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with(MANIFEST) || is_step_file(&name) {
            std::fs::remove_file(entry.path()).map_err(|e| error(dir, e))?;
        }
    }
    let _ = std::fs::remove_dir(dir);
    Ok(())
}
