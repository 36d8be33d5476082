//! doppel's simulator: `future_state = simulate(live_state(), policy(), disrupt())`.
//!
//! - [`plant`]: the interface every plant implements (sensors, actuators, assets, a
//!   deterministic `step`, truth kept apart from readings, JSON snapshots);
//! - [`chiller`]: the reference plant, a chilled-water cooling plant (docs/REFERENCE_PLANT.md);
//! - [`sensors`]: what instruments do to the truth (noise, gaps, faults, spoofing);
//! - [`scenario`]: disruption scenarios read from TOML (docs/SCENARIOS.md);
//! - [`policy`]: who operates the plant during a run;
//! - [`run`]: one run; [`monte_carlo`]: many, spread over all cores; [`kpi`]: what they cost;
//! - [`output`]: run files (CSV/Parquet) and line-protocol points.
//!
//! This crate never touches the lake or the network: it produces numbers and files; the
//! binary decides where they go.

pub mod chiller;
pub mod error;
pub mod kpi;
pub mod monte_carlo;
pub mod output;
pub mod plant;
pub mod policy;
pub mod random;
pub mod run;
pub mod scenario;
pub mod sensors;
pub mod timeline;

pub use error::{Result, SimError};
