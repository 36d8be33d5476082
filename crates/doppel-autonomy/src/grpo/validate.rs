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

use super::net::{Control, PolicyNet};
use super::train::GrpoSettings;
use super::{GrpoMaker, PolicyCard};
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
    /// Mean total cost an episode (what the policy file's reward charges for the KPIs).
    pub total_cost: f64,
    /// Mean steps an episode at which a limit broke in the plant, and the operator's on the
    /// same episodes.
    #[serde(default)]
    pub limit_steps: f64,
    #[serde(default)]
    pub rules_limit_steps: f64,
    /// The total cost against the operator's on the same episodes, %.
    pub against_rules_pct: f64,
}

impl ValidationPoint {
    /// Whether it broke limits on no more steps than the operator did.
    fn within_limits(&self) -> bool {
        self.limit_steps <= self.rules_limit_steps
    }

    /// Whether it is a better network than `other`: one within the operator's broken-limit
    /// steps beats one beyond them; within, the cheaper; beyond, the fewer steps.
    fn beats(&self, other: &ValidationPoint) -> bool {
        match (self.within_limits(), other.within_limits()) {
            (true, false) => true,
            (false, true) => false,
            (true, true) => self.total_cost < other.total_cost,
            (false, false) => self.limit_steps < other.limit_steps,
        }
    }
}

/// The episodes set aside, the operator's cost on them, and when to score.
pub struct Validation {
    evaluation: Evaluation,
    /// The operator's mean total cost and broken-limit steps an episode.
    rules: (f64, f64),
    control: Control,
    every: usize,
    total: usize,
}

impl Validation {
    /// As `settings` asks (`None` when it asks for no validation): runs the rule-based
    /// operator on the validation episodes once.
    pub fn new(
        scenarios: &[(String, Scenario)],
        objective: &Objective,
        settings: &GrpoSettings,
    ) -> Result<Option<Validation>> {
        if settings.validations == 0 {
            return Ok(None);
        }
        let mut evaluation = Evaluation {
            policies: vec![Arc::new(PolicyKind::Rules)],
            scenarios: scenarios.to_vec(),
            seeds: SEEDS_FROM..SEEDS_FROM + settings.validation_seeds.max(1),
            days: settings.validation_days,
            step_s: 60.0,
            plant: ChillerPlantConfig::default(),
            objective: Arc::new(objective.clone()),
            threads: None,
        };
        let rules = score(&evaluation)?;
        evaluation.policies.clear();
        Ok(Some(Validation {
            evaluation,
            rules,
            control: settings.control,
            every: settings.iterations.div_ceil(settings.validations).max(1),
            total: settings.iterations,
        }))
    }

    /// Whether the network is scored after `done` iterations (evenly, and at the end).
    pub fn due(&self, done: usize) -> bool {
        done.is_multiple_of(self.every) || done == self.total
    }

    /// Scores `net` after `done` iterations into `card`; true when it is the best so far (the
    /// card then says it is the one kept): the cheapest of those that broke limits on no more
    /// steps than the operator (a network that saves energy by breaking limits is never kept
    /// over one that does not).
    pub fn consider(
        &mut self,
        card: &mut PolicyCard,
        net: &PolicyNet,
        done: usize,
    ) -> Result<bool> {
        self.evaluation.policies = vec![Arc::new(GrpoMaker::from_net(
            "validation",
            net.clone(),
            self.control,
        ))];
        let (total_cost, limit_steps) = score(&self.evaluation)?;
        self.evaluation.policies.clear();
        let point = ValidationPoint {
            iteration: done,
            total_cost,
            limit_steps,
            rules_limit_steps: self.rules.1,
            against_rules_pct: 100.0 * (total_cost / self.rules.0 - 1.0),
        };
        let best = card.validation.iter().all(|p| point.beats(p));
        card.validation.push(point);
        if best {
            card.kept_iteration = Some(done);
        }
        Ok(best)
    }
}

/// Mean total cost and broken-limit steps an episode.
fn score(evaluation: &Evaluation) -> Result<(f64, f64)> {
    let episodes = run(evaluation, &|_| {})?;
    let n = episodes.len().max(1) as f64;
    let cost = episodes.iter().map(|e| e.total_cost).sum::<f64>() / n;
    let steps = episodes
        .iter()
        .map(|e| e.violation_steps as f64)
        .sum::<f64>()
        / n;
    Ok((cost, steps))
}
