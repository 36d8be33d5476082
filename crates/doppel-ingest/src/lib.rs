//! Getting data into doppel.
//!
//! - [`line_protocol`]: InfluxDB line protocol, parsed into points (and written back out);
//! - [`import`]: history files (CSV with any separator, whitespace-separated tables, Parquet)
//!   turned into write batches, with errors that name file, line and column.
//!
//! Ingest only turns bytes into [`doppel_core::WriteBatch`]es: it must never write to the
//! lake itself, so the same parsing serves the HTTP API, the CLI and tests.

pub mod import;
pub mod line_protocol;

pub use line_protocol::{
    ColumnarOutcome, LineError, ParseOutcome, describe_line, parse_columnar, parse_lines,
    write_line,
};
