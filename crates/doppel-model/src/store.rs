//! A model directory the plant owner keeps: `model.safetensors` (plain tensor names that
//! PyTorch's safetensors reads) and `model.json` (the model card: config, channels,
//! normalisation, the data it saw, its training curve, the code version). Nothing is ever
//! fetched from anywhere.

use std::path::Path;

use crate::card::{FORMAT, ModelCard};
use crate::error::{ModelError, Result};
use crate::forecaster::{ForecastHead, Forecaster};
use crate::linear::Layout;
use crate::model::SensorModel;
use crate::probe::Probe;
use burn::prelude::*;
use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};

pub const WEIGHTS: &str = "model.safetensors";
pub const CARD: &str = "model.json";
/// The fine-tuned forecasting head, when there is one.
pub const FORECAST_HEAD: &str = "forecast_head.safetensors";
/// The linear probe, when there is one.
pub const PROBE: &str = "probe.safetensors";

fn store_error(path: &Path, message: impl std::fmt::Display) -> ModelError {
    ModelError::Store {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// Writes the weights and the card into `dir` (created if needed).
pub fn save(dir: &Path, model: &SensorModel, card: &ModelCard) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| store_error(dir, e))?;
    write_weights(dir, WEIGHTS, model)?;
    let text = serde_json::to_string_pretty(card).expect("the card serialises");
    std::fs::write(dir.join(CARD), text + "\n").map_err(|e| store_error(dir, e))
}

/// Writes a fine-tuned forecaster: the whole model as [`save`] does, plus its head.
pub fn save_forecaster(dir: &Path, forecaster: &Forecaster, card: &ModelCard) -> Result<()> {
    if card.forecast_head.is_none() {
        return Err(store_error(
            dir,
            "the card does not describe a forecasting head",
        ));
    }
    save(dir, &forecaster.model, card)?;
    write_weights(dir, FORECAST_HEAD, &forecaster.head)
}

/// Writes a model with a linear probe: the model as [`save`] does, plus the probe.
pub fn save_probe(dir: &Path, model: &SensorModel, probe: &Probe, card: &ModelCard) -> Result<()> {
    if card.probe.is_none() {
        return Err(store_error(dir, "the card does not describe a probe"));
    }
    save(dir, model, card)?;
    write_weights(dir, PROBE, probe)
}

/// Reads a model directory with a linear probe.
pub fn load_probe(dir: &Path, device: &Device) -> Result<(SensorModel, Probe, ModelCard)> {
    let (model, card) = load(dir, device)?;
    let Some(probe_card) = &card.probe else {
        return Err(store_error(
            dir,
            "this model has no probe: run `doppel model finetune --task classify` or `regress`",
        ));
    };
    let mut probe = Probe::empty(
        crate::tasks::embedding_width(&card.config),
        probe_card.classes.len().max(1),
        device,
    );
    let mut store =
        SafetensorsStore::from_file(dir.join(PROBE)).with_from_adapter(PyTorchToBurnAdapter);
    probe
        .load_from(&mut store)
        .map_err(|e| store_error(dir, format!("cannot read {PROBE}: {e}")))?;
    Ok((model, probe, card))
}

fn write_weights(dir: &Path, file: &str, module: &impl Module) -> Result<()> {
    // PyTorch's layout and names (linear weights [out, in], norms `weight`/`bias`), so
    // `safetensors.torch.load_file` gives tensors a PyTorch module takes as they are.
    // One metadata key: burn's default three come out of a HashMap in a different order each
    // run, so the same weights would give different files. `format: pt` is what PyTorch's own
    // `save_file` writes (the tensors are in its layout).
    let mut store = SafetensorsStore::from_file(dir.join(file))
        .overwrite(true)
        .clear_metadata()
        .metadata("format", "pt")
        .with_to_adapter(BurnToPyTorchAdapter);
    module
        .save_into(&mut store)
        .map_err(|e| store_error(dir, format!("cannot write {file}: {e}")))
}

/// Reads a model directory with a fine-tuned forecasting head.
pub fn load_forecaster(dir: &Path, device: &Device) -> Result<(Forecaster, ModelCard)> {
    let (model, card) = load(dir, device)?;
    let forecaster = with_forecast_head(dir, model, &card, device)?;
    Ok((forecaster, card))
}

/// Puts the forecasting head saved in `dir` on a model already loaded from there.
pub fn with_forecast_head(
    dir: &Path,
    model: SensorModel,
    card: &ModelCard,
    device: &Device,
) -> Result<Forecaster> {
    let Some(head_card) = &card.forecast_head else {
        return Err(store_error(
            dir,
            "this model has no forecasting head: run `doppel model finetune --task forecast`",
        ));
    };
    let groups = match &head_card.linear_start {
        Some(linear) if linear.layout == Layout::PerChannel => card.config.channels,
        _ => 1,
    };
    let mut head = ForecastHead::empty(&card.config, head_card.horizon, groups, device);
    let mut store = SafetensorsStore::from_file(dir.join(FORECAST_HEAD))
        .with_from_adapter(PyTorchToBurnAdapter);
    head.load_from(&mut store)
        .map_err(|e| store_error(dir, format!("cannot read {FORECAST_HEAD}: {e}")))?;
    Ok(Forecaster { model, head })
}

/// Reads a model directory written by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<(SensorModel, ModelCard)> {
    let card = load_card(dir)?;
    // Seeded (and locked) so loading never disturbs a training running beside it.
    let mut model = card.config.init_seeded(0, device);
    let mut store =
        SafetensorsStore::from_file(dir.join(WEIGHTS)).with_from_adapter(PyTorchToBurnAdapter);
    model
        .load_from(&mut store)
        .map_err(|e| store_error(dir, format!("cannot read the weights: {e}")))?;
    Ok((model, card))
}

/// Reads only the card of a model directory.
pub fn load_card(dir: &Path) -> Result<ModelCard> {
    let card_path = dir.join(CARD);
    let text = std::fs::read_to_string(&card_path).map_err(|e| {
        store_error(
            dir,
            format!("cannot read {CARD} ({e}); is this a model directory?"),
        )
    })?;
    let card: ModelCard = serde_json::from_str(&text)
        .map_err(|e| store_error(dir, format!("{CARD} is not a model card: {e}")))?;
    if card.format != FORMAT {
        return Err(store_error(
            dir,
            format!(
                "{CARD} has format `{}`; this doppel reads `{FORMAT}`",
                card.format
            ),
        ));
    }
    Ok(card)
}
