//! The model crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A problem with an input file: says which and what.
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("model directory {}: {message}", path.display())]
    Store { path: PathBuf, message: String },
}

pub type Result<T, E = ModelError> = std::result::Result<T, E>;
