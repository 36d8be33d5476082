//! Scores a network during training on episodes set aside for it, so training keeps the best
//! policy it passed through rather than the last (the setpoint policy's reward curve is noisy,
//! and a long training can drift back to the operator: docs/BENCHMARKS.md).
//!
//! The validation episodes are every training scenario from seeds [`SEEDS_FROM`].. (training
//! draws its snapshots' seeds at random from all of `u64`, and the benchmarks evaluate on
//! 1000..1100), each run by the network choosing its likeliest action, as `grpo:FOLDER` runs
//! it, and by the rule-based operator once, for comparison. It never touches the training's
//! random numbers: with or without it, the same seed trains the same weights.

use std::sync::Arc;

use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::policy::PolicyKind;
use doppel_sim::scenario::Scenario;
use serde::{Deserialize, Serialize};

use super::GrpoMaker;
use super::net::{Control, PolicyNet};
use crate::error::Result;
use crate::evaluate::{Evaluation, run};
use crate::objective::Objective;

/// The first validation seed.
pub const SEEDS_FROM: u64 = 9000;

/// One scoring of the network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ValidationPoint {
    /// Iterations done when it was scored (0: the network training started from).
    pub iteration: usize,
    /// Mean total cost an episode (what the policy file's reward charges).
    pub total_cost: f64,
    /// Against the rule-based operator on the same episodes, %.
    pub against_rules_pct: f64,
}

/// The episodes set aside, and the operator's cost on them.
pub struct Validation {
    evaluation: Evaluation,
    rules_cost: f64,
}

impl Validation {
    /// Runs the rule-based operator on `seeds` seeds of `days` days of every scenario.
    pub fn new(
        scenarios: &[(String, Scenario)],
        objective: &Objective,
        seeds: u64,
        days: f64,
    ) -> Result<Validation> {
        let mut evaluation = Evaluation {
            policies: vec![Arc::new(PolicyKind::Rules)],
            scenarios: scenarios.to_vec(),
            seeds: SEEDS_FROM..SEEDS_FROM + seeds.max(1),
            days,
            step_s: 60.0,
            plant: ChillerPlantConfig::default(),
            objective: Arc::new(objective.clone()),
            threads: None,
        };
        let rules_cost = mean_cost(&evaluation)?;
        evaluation.policies.clear();
        Ok(Validation {
            evaluation,
            rules_cost,
        })
    }

    /// Scores `net` after `iteration` iterations.
    pub fn score(
        &mut self,
        net: &PolicyNet,
        control: Control,
        iteration: usize,
    ) -> Result<ValidationPoint> {
        self.evaluation.policies =
            vec![Arc::new(GrpoMaker::from_net("grpo", net.clone(), control))];
        let total_cost = mean_cost(&self.evaluation)?;
        self.evaluation.policies.clear();
        Ok(ValidationPoint {
            iteration,
            total_cost,
            against_rules_pct: 100.0 * (total_cost / self.rules_cost - 1.0),
        })
    }
}

fn mean_cost(evaluation: &Evaluation) -> Result<f64> {
    let episodes = run(evaluation, &|_| {})?;
    Ok(episodes.iter().map(|e| e.total_cost).sum::<f64>() / episodes.len().max(1) as f64)
}
