//! The lake's errors: each says what went wrong and, where there is one, which file.
//!
//! Every error belongs to one [`ErrorKind`]: the caller's mistake (fix the request), a limit
//! the caller ran into (narrow the request), a passing state of the lake (retry later), or
//! the lake's own failure (an operator must look). The HTTP API maps kinds to status codes
//! in one place; the CLI prints the message.

use std::path::{Path, PathBuf};
use std::time::Duration;

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
        "the write-ahead log is damaged: {} at byte {offset}: {reason}. Nothing was changed. \
         `doppel lake salvage --data <dir>` keeps every intact record (before and after the damage) \
         and moves the damaged segment into wal/damaged/ for inspection",
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
    /// The lake cannot take writes for now (a full disk, a failed WAL write it is recovering
    /// from); it resumes by itself. Nothing of the refused request was acknowledged.
    #[error("{reason}; nothing of this request was written, retry in {} s", retry_after.as_secs())]
    Unavailable {
        reason: String,
        retry_after: Duration,
    },
    #[error("database `{0}` not found")]
    DatabaseNotFound(String),
    /// The caller's mistake, with where and why.
    #[error("{0}")]
    Invalid(String),
    /// SQL the lake will not run: anything but a read, or too deeply nested.
    #[error("{0}")]
    QueryRefused(String),
    #[error("query failed: {0}")]
    Query(String),
    /// A query ran into a limit (time, memory, result size): narrowing it helps, retrying not.
    #[error("{0}")]
    QueryLimit(String),
    #[error("Arrow/Parquet error: {0}")]
    Arrow(String),
    /// A broken invariant or an unexpected failure inside the lake.
    #[error("internal error: {0}")]
    Internal(String),
    #[error("the lake is shutting down")]
    ShuttingDown,
}

/// Who must act on an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong: fixing it helps, retrying it does not.
    Client,
    /// The request named something that does not exist.
    NotFound,
    /// The request is valid but too large for a configured limit.
    Limit,
    /// The lake cannot serve it now and will recover by itself: retry after the given time.
    Unavailable(Duration),
    /// The lake failed: an operator must look (the log has the details).
    Internal,
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

    /// Who must act on this error.
    pub fn kind(&self) -> ErrorKind {
        use LakeError as E;
        match self {
            E::Rejected(_) | E::Invalid(_) | E::QueryRefused(_) | E::Query(_) => ErrorKind::Client,
            E::DatabaseNotFound(_) => ErrorKind::NotFound,
            E::QueryLimit(_) => ErrorKind::Limit,
            E::Busy { .. } | E::ShuttingDown => ErrorKind::Unavailable(Duration::from_secs(1)),
            E::Unavailable { retry_after, .. } => ErrorKind::Unavailable(*retry_after),
            E::Io { .. }
            | E::Locked { .. }
            | E::WalCorrupt { .. }
            | E::Manifest { .. }
            | E::Arrow(_)
            | E::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The message for a client that is not the operator: the lake's own failures say what
    /// failed without file paths (those are in the server's log).
    pub fn public_message(&self) -> String {
        match self {
            LakeError::Io { source, .. } => {
                format!("the lake could not read or write its files ({source}); see the server log")
            }
            LakeError::WalCorrupt { .. }
            | LakeError::Manifest { .. }
            | LakeError::Locked { .. } => {
                "the lake's files are damaged or in use; see the server log".into()
            }
            LakeError::Arrow(_) | LakeError::Internal(_) => {
                "the lake failed to answer; see the server log".into()
            }
            other => other.to_string(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for LakeError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        match e.find_root() {
            D::ResourcesExhausted(message) => LakeError::QueryLimit(format!(
                "the query needs more memory than the query memory limit allows ({message}); \
                 add a LIMIT, aggregate, or narrow the time range (the limit is --query-memory-mib)"
            )),
            D::IoError(_) | D::ObjectStore(_) | D::ParquetError(_) | D::Internal(_) => {
                LakeError::Internal(e.strip_backtrace())
            }
            // DataFusion wraps messages in context; the innermost says what the user did wrong.
            _ => LakeError::Query(e.strip_backtrace()),
        }
    }
}
