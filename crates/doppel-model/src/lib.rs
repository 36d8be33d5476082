//! doppel's large sensor model: patch tokens, a masked-autoencoder transformer pretrained on a
//! plant's own unlabeled history, and the tasks a twin needs (fill gaps, forecast, score,
//! embed). Built on burn; reads sensor files, never the lake's insides.

pub mod attention;
pub mod bands;
pub mod baselines;
pub mod batch;
pub mod bench;
pub mod checkpoint;
pub mod data;
pub mod dense;
pub mod device;
pub mod error;
pub mod evaluate;
pub mod finetune;
pub mod forecaster;
pub mod fused;
pub mod linear;
mod matmul;
pub mod model;
pub mod probe;
pub mod readout;
pub mod registry;
pub mod scaling;
pub mod store;
pub mod tasks;
#[cfg(test)]
mod testing;
pub mod train;
pub mod transformer;

pub use error::{ModelError, Result};
