//! The autonomy layer's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AutonomyError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the policy file:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    PolicyFile(Vec<doppel_core::located::Problem>),
    #[error("unknown policy `{name}`: use one of {known}")]
    UnknownPolicy { name: String, known: String },
    #[error("policy `{name}`: {reason}")]
    PolicyOption { name: String, reason: String },
    #[error(transparent)]
    Sim(#[from] doppel_sim::SimError),
}

pub type Result<T, E = AutonomyError> = std::result::Result<T, E>;
