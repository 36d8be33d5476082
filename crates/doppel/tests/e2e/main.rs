//! doppel end to end: the real binary, a real HTTP server on loopback, real files.
//!
//! One test binary for the whole CLI (each test binary links DataFusion; one keeps CI fast).

mod autonomy;
mod common;
mod crash;
mod dashboard;
mod hardening;
mod http_api;
mod import_and_query;
mod model;
mod model_heads;
mod model_scaling;
mod model_validation;
mod simulate;
mod twin;
mod twin_model;
