//! doppel's large sensor model: patch tokens, a masked-autoencoder transformer pretrained on a
//! plant's own unlabeled history, and the tasks a twin needs (fill gaps, forecast, score,
//! embed). Built on burn, with its CPU kernels in `doppel-kernels` below it and the research
//! harness (`doppel-research`: ETT, Tennessee Eastman, scaling) above it. Reads sensor files
//! and recordings, never the lake's insides. The modules below are in the order a reading
//! meets them.

// Data in: files on a regular grid, gaps as masks; windows to tokens.
pub mod batch;
pub mod data;

// The network: one config, one forward pass (model), its transformer blocks, and the
// cross-channel parts it may carry.
pub mod channel_map;
pub mod model;
pub mod readout;
pub mod transformer;

// Training: pretraining with its settings, curve and checkpoints; fine-tuned heads.
pub mod finetune;
pub mod forecaster;
pub mod linear;
pub mod train;

// What a twin asks of a model, with the baselines and bands every answer is measured against.
pub mod bands;
pub mod baselines;
pub mod evaluate;
pub mod probe;
pub mod tasks;

// Models a plant owns: the card, the files, the registry of versions; where they run.
pub mod card;
pub mod device;
pub mod registry;
pub mod store;

pub mod error;

pub use card::ModelCard;
pub use data::{ReadOptions, Recording, read_recording};
pub use error::{ModelError, Result};
pub use model::{ModelConfig, SensorModel};
pub use train::TrainConfig;
