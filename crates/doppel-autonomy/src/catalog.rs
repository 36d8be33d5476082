//! Policies chosen by name, wherever a policy is taken (`--policy`, the API):
//! `none` and `rules` (the simulator's own), `mpc` or `mpc:horizon=2h,period=15m,...`
//! ([`crate::mpc`]), `maintenance` or `maintenance:slot=6h,horizon=7d,solver=highs`
//! ([`crate::maintenance`]). Any of them behind the safety gate with a `+shield` suffix
//! (`mpc+shield`). `grpo:FOLDER` (or `ppo:FOLDER`): a policy `doppel policy train` wrote.

use std::sync::Arc;

use doppel_sim::policy::{PolicyKind, PolicyMaker};

use crate::error::{AutonomyError, Result};
use crate::mpc::{MpcMaker, MpcSettings};
use crate::objective::Objective;
use crate::shield::{LOOKAHEAD_S, ShieldMaker};

/// The names `policy_by_name` knows, for messages.
pub const KNOWN: &str = "none, rules, mpc[:horizon=2h,period=15m,setpoints=6.5/7/7.5], \
                         maintenance[:slot=6h,horizon=7d,solver=microlp|highs], grpo:FOLDER, ppo:FOLDER, each with +shield for the safety gate";

/// The policy called `name`, paid and limited by `objective`, running the plant.
pub fn policy_by_name(name: &str, objective: Arc<Objective>) -> Result<Arc<dyn PolicyMaker>> {
    by_name(name, objective, true)
}

/// The policy called `name` where its batches are proposals someone else may act on (the
/// shadow, recommend and approve modes): its gate does not write again what it let through,
/// since what it let through never reached the plant.
pub fn advisor_by_name(name: &str, objective: Arc<Objective>) -> Result<Arc<dyn PolicyMaker>> {
    by_name(name, objective, false)
}

fn by_name(name: &str, objective: Arc<Objective>, acts: bool) -> Result<Arc<dyn PolicyMaker>> {
    let name = name.trim();
    if let Some(inner) = name.strip_suffix("+shield") {
        return Ok(Arc::new(ShieldMaker {
            inner: by_name(inner, objective.clone(), acts)?,
            objective,
            lookahead_s: LOOKAHEAD_S,
            refresh: acts,
        }));
    }
    let (kind, options) = name.split_once(':').unwrap_or((name, ""));
    Ok(match kind {
        "none" if options.is_empty() => Arc::new(PolicyKind::None),
        "rules" if options.is_empty() => Arc::new(PolicyKind::Rules),
        "mpc" => Arc::new(MpcMaker {
            settings: MpcSettings::parse(options)?,
            objective,
            label: name.to_owned(),
        }),
        "maintenance" => crate::maintenance::maker(name, options)?,
        // A trained network, whichever algorithm trained it (its card says which).
        "grpo" | "ppo" if !options.is_empty() => crate::grpo::GrpoMaker::open(name, options)?,
        "grpo" | "ppo" => {
            return Err(AutonomyError::PolicyOption {
                name: name.to_owned(),
                reason: format!(
                    "say which trained policy: {kind}:FOLDER (doppel policy train --out FOLDER)"
                ),
            });
        }
        _ => {
            return Err(AutonomyError::UnknownPolicy {
                name: name.to_owned(),
                known: KNOWN.into(),
            });
        }
    })
}
