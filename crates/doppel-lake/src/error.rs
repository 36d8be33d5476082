//! The lake's errors: each says what went wrong and, where there is one, which file.

use std::path::{Path, PathBuf};

use crate::catalog::PointRejection;

pub type Result<T, E = LakeError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the data directory {} is in use by another doppel process (lock held on {}); stop it, or query it through its HTTP API with --url",
        dir.display(), dir.join("LOCK").display()
    )]
    Locked { dir: PathBuf },
    #[error(
        "the write-ahead log is damaged: {} at byte {offset}: {reason}. Nothing was changed; move the file aside to start without it (its unpersisted writes would be lost)",
        path.display()
    )]
    WalCorrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("the manifest {} cannot be read: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },
    #[error("{} point(s) rejected", .0.len())]
    Rejected(Vec<PointRejection>),
    #[error(
        "the write buffer is full ({buffered_bytes} bytes) while earlier data is being persisted; retry in a moment"
    )]
    Busy { buffered_bytes: usize },
    #[error("database `{0}` not found")]
    DatabaseNotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("query failed: {0}")]
    Query(String),
    #[error("Arrow/Parquet error: {0}")]
    Arrow(String),
    #[error("the lake is shutting down")]
    ShuttingDown,
}

impl LakeError {
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        LakeError::Io {
            path: path.as_ref().to_owned(),
            source,
        }
    }

    pub fn arrow(e: impl std::fmt::Display) -> Self {
        LakeError::Arrow(e.to_string())
    }
}

impl From<datafusion::error::DataFusionError> for LakeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        // DataFusion wraps messages in context; the innermost says what the user did wrong.
        LakeError::Query(e.strip_backtrace())
    }
}
