//! The live twin: the plant's assets and sensors from its twin spec, each sensor's latest
//! value and quality kept from the lake's write path (the batches the WAL made durable, never
//! re-read from files), each asset's state rolled up from its sensors', and the recent
//! readings behind them, downsampled for a screen. What the API's `/api/v1/twin` and
//! `/api/v1/assets/{id}` answer. Never serves HTTP itself (the server does) and never writes.

/// Alerts from the rules: firing, acknowledged, resolved; kept in the lake.
pub mod alerts;
/// Anomaly scores per asset from PCA over its recent history.
pub mod anomaly;
/// The sensor model at work: trained from the lake, scoring every minute.
pub mod models;
/// What policies at work propose, and what operators decide about it.
pub mod proposals;
/// Each sensor's latest value and its quality; an asset's state.
pub mod state;
/// What happened, newest first: alerts, state changes, maintenance, disruptions, proposals.
pub mod timeline;
/// The twin attached to a lake: what it watches, and the views it answers with.
pub mod twin;
/// Alert changes POSTed to an operator's URL, retried until delivered.
pub mod webhook;

pub use alerts::{Alert, AlertState};
pub use doppel_rules::RuleSet;
pub use models::ModelSettings;
pub use state::{AssetState, Quality};
pub use twin::{Readings, Twin, TwinError, TwinEvent, TwinOptions};
