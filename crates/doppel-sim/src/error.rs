//! The simulator's one error type. Every message names what was wrong and where.

use std::path::PathBuf;

/// One problem in a scenario file, with its place.
pub type ScenarioProblem = doppel_core::located::Problem;

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("the study was cancelled")]
    Cancelled,
    /// An action the plant cannot carry out; never clamped silently.
    #[error("action on {target} refused: {reason}")]
    Action { target: String, reason: String },
    #[error("cannot read scenario {}: {source}", path.display())]
    ReadScenario {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the scenario:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Scenario(Vec<ScenarioProblem>),
    #[error("invalid plant state: {0}")]
    State(String),
    #[error("invalid run settings: {0}")]
    Settings(String),
    #[error("policy `{policy}` cannot drive this plant: {reason}")]
    Policy { policy: String, reason: String },
    #[error("cannot write {}: {message}", path.display())]
    Output { path: PathBuf, message: String },
}

impl SimError {
    pub fn action(target: impl Into<String>, reason: impl Into<String>) -> Self {
        SimError::Action {
            target: target.into(),
            reason: reason.into(),
        }
    }

    /// The problems of a bad scenario file (empty for other errors).
    pub fn problems(&self) -> &[ScenarioProblem] {
        match self {
            SimError::Scenario(problems) => problems,
            _ => &[],
        }
    }
}

pub type Result<T, E = SimError> = std::result::Result<T, E>;
