//! The sensor model measured, above the model and never under it: benchmarks on public data
//! under their published protocols, next to published figures (ETT forecasting and
//! imputation, Tennessee Eastman fault detection), and the scaling study (loss against
//! compute, a power law fitted and checked on points it was not fitted on). The product path
//! (`doppel-model`) never depends on this crate. Errors are the model's own (`ModelError`):
//! everything here runs the model.

/// ETT and Tennessee Eastman benchmarks.
pub mod bench;
/// Several sizes on several amounts of data; loss against compute, fitted.
pub mod scaling;
