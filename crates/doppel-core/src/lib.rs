//! doppel's shared vocabulary: the types every other part speaks.
//!
//! - [`point`]: a measurement point (series + fields + time) and a write batch, InfluxDB's data model;
//! - [`columnar`]: the same batch in columns, as the write path carries it;
//! - [`time`]: timestamps (UTC nanoseconds inside, RFC 3339 at the edges) and write precisions;
//! - [`spec`]: the twin spec (`twin.toml`): sites, assets and sensors, and its validation;
//! - [`background`]: work on the machine's idle time (studies, model training).
//!
//! This crate sits at the bottom of the workspace: it must never depend on anything heavy
//! (no Arrow, no DataFusion, no async runtime), so every part can use it cheaply.

pub mod background;
pub mod columnar;
pub mod located;
pub mod point;
pub mod spec;
pub mod time;

pub use columnar::{ColumnarBatch, FieldRef};
pub use point::{FieldType, FieldValue, Point, WriteBatch};
pub use time::Precision;
