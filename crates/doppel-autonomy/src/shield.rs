//! The safety gate: every action batch of a policy is tried first on the plant the state
//! estimator finds in the gate's own readings, run `lookahead` ahead on its local controllers.
//! A batch the plant would refuse, or after which more steps break a limit than if nothing
//! were done, is blocked: the rule-based operator's decision is done instead, and counted.
//! Doing nothing is judged too: when the operator would act and doing nothing breaks more
//! limits ahead than its action, the operator's action is done (a policy that fails to start a
//! chiller in a heat wave is caught as surely as one that stops the wrong one).
//!
//! Judging a batch against doing nothing, rather than against no broken limit at all, keeps a
//! plant already outside a limit (a heat wave no action can undo) from blocking every action,
//! including the ones that bring it back.

use std::sync::Arc;

use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::plant::{Action, Plant, Readings};
use doppel_sim::policy::{OperatorRules, Policy, PolicyMaker, PolicyStats, RuleBasedOperator};

use crate::lookahead::{Lookahead, rollout};
use crate::objective::Objective;

/// Seconds a batch is looked ahead by default.
pub const LOOKAHEAD_S: f64 = 1800.0;

/// Wraps every policy another maker makes in the gate.
pub struct ShieldMaker {
    pub inner: Arc<dyn PolicyMaker>,
    pub objective: Arc<Objective>,
    pub lookahead_s: f64,
}

impl PolicyMaker for ShieldMaker {
    fn name(&self) -> String {
        format!("{}+shield", self.inner.name())
    }
    fn make(
        &self,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
    ) -> doppel_sim::Result<Box<dyn Policy>> {
        Ok(Box::new(Shielded {
            inner: self.inner.make(plant, config, seed)?,
            fallback: RuleBasedOperator::new(plant, OperatorRules::default())?,
            view: Lookahead::new(plant, config, seed ^ 0x5348_4c44),
            objective: self.objective.clone(),
            lookahead_s: self.lookahead_s,
            blocked: 0,
            proposed: Vec::new(),
            fallback_actions: Vec::new(),
        }))
    }
}

pub struct Shielded {
    inner: Box<dyn Policy>,
    fallback: RuleBasedOperator,
    view: Lookahead,
    objective: Arc<Objective>,
    lookahead_s: f64,
    blocked: u64,
    proposed: Vec<Action>,
    fallback_actions: Vec<Action>,
}

impl Shielded {
    /// Whether `batch` may go to the plant: the plant takes it, and no more steps break a limit
    /// after it than after `instead` (doing nothing, for a policy's own batch).
    fn passes(&self, batch: &[Action], instead: &[Action]) -> bool {
        let Ok(model) = self.view.model() else {
            // Nothing known of the plant yet: nothing to judge by.
            return true;
        };
        let step = 60.0;
        let other = rollout(&model, instead, self.lookahead_s, step, &self.objective);
        match (
            rollout(&model, batch, self.lookahead_s, step, &self.objective),
            other,
        ) {
            (None, _) => false,
            (Some(with), Some(without)) => with.broken_steps <= without.broken_steps,
            (Some(with), None) => with.broken_steps == 0,
        }
    }
}

impl Policy for Shielded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn wants_readings(&self, _t_s: f64) -> bool {
        true
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.view.observe(t_s, readings);
        self.proposed.clear();
        self.fallback_actions.clear();
        self.inner.decide(t_s, readings, &mut self.proposed);
        // The operator watches every step, so its decision is ready when one is needed.
        self.fallback
            .decide(t_s, readings, &mut self.fallback_actions);
        if self.proposed.is_empty() {
            // Doing nothing is a decision too: when the operator would act, and doing nothing
            // breaks more limits ahead than its action, the operator's is done (and counted).
            if !self.fallback_actions.is_empty() && !self.passes(&[], &self.fallback_actions) {
                self.blocked += 1;
                actions.append(&mut self.fallback_actions);
            }
            return;
        }
        if self.passes(&self.proposed, &[]) {
            actions.append(&mut self.proposed);
        } else {
            self.blocked += 1;
            actions.append(&mut self.fallback_actions);
        }
    }

    fn stats(&self) -> PolicyStats {
        PolicyStats {
            blocked: self.blocked,
            ..self.inner.stats()
        }
    }
}
