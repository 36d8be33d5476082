//! The safety gate: every action batch of a policy is tried first on the plant the state
//! estimator finds in the gate's own readings, run `lookahead` ahead on its local controllers.
//! A batch is blocked, and the rule-based operator's decision done instead (and counted), when
//! the plant would refuse it, when it breaks some limit on more steps than doing nothing would
//! (limits compared one by one: a setpoint jump past its rate limit is not bought with fewer
//! minutes above the supply limit), or when the operator would act and its action breaks
//! fewer steps. Doing nothing is judged too: when the operator would act and doing nothing
//! breaks more steps than its action, the operator's action is done (a policy that fails to
//! start a chiller in a heat wave is caught as surely as one that stops the wrong one).
//!
//! Judging against doing nothing, rather than against no broken limit at all, keeps a plant
//! already outside a limit (a heat wave no action can undo) from blocking every action,
//! including the ones that bring it back. The plant is estimated once a decision.
//!
//! The gate also owns the loop's supply setpoint: every [`REFRESH_S`] it writes again the value
//! it last let through (as a supervisory controller refreshes its commands; as first read,
//! until it lets one through), so a value that did not pass the gate (an intruder's, written
//! past it straight to the plant) stands for at most that long, even when its reading is
//! faked. Behind the gate, and on the plant it estimates, the setpoint reads as that value.

use std::sync::Arc;

use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::plant::{Action, Plant, Readings, actuator_index, sensor_index};
use doppel_sim::policy::{OperatorRules, Policy, PolicyMaker, PolicyStats, RuleBasedOperator};

use crate::lookahead::{Lookahead, Model, Rollout, rollout};
use crate::objective::Objective;

/// Seconds a batch is looked ahead by default.
pub const LOOKAHEAD_S: f64 = 1800.0;

/// Seconds between two writes of the setpoint the gate let through (one simulator step).
pub const REFRESH_S: f64 = 60.0;

/// Wraps every policy another maker makes in the gate.
pub struct ShieldMaker {
    pub inner: Arc<dyn PolicyMaker>,
    pub objective: Arc<Objective>,
    pub lookahead_s: f64,
    /// Whether the gate writes what it let through again every [`REFRESH_S`]: only where its
    /// batches reach the plant (a gate whose batches are proposals owns no setpoint).
    pub refresh: bool,
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
            setpoint: actuator_index(plant, "chw.supply_setpoint")
                .zip(sensor_index(plant, "chw_setpoint")),
            held: None,
            seen: Readings::new(plant.sensors().len()),
            next_refresh_s: if self.refresh {
                plant.time_s()
            } else {
                f64::INFINITY
            },
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
    /// The supply setpoint's actuator and sensor, and the value the gate holds it at.
    setpoint: Option<(usize, usize)>,
    held: Option<f64>,
    /// The readings behind the gate: the plant's, the setpoint at the value held.
    seen: Readings,
    next_refresh_s: f64,
    fallback: RuleBasedOperator,
    view: Lookahead,
    objective: Arc<Objective>,
    lookahead_s: f64,
    blocked: u64,
    proposed: Vec<Action>,
    fallback_actions: Vec<Action>,
}

/// The plant the gate judges on, and how far ahead.
struct Trial<'a> {
    model: &'a Model,
    lookahead_s: f64,
    objective: &'a Objective,
}

impl Trial<'_> {
    fn run(&self, batch: &[Action]) -> Option<Rollout> {
        rollout(self.model, batch, self.lookahead_s, 60.0, self.objective)
    }

    /// Whether the policy's `batch` may go to the plant, with `operator` the rule-based
    /// operator's batch (empty when it would not act): the plant takes it, it breaks no limit
    /// on more steps than doing nothing, and the operator's batch breaks no fewer steps.
    fn passes(&self, batch: &[Action], operator: &[Action]) -> bool {
        let Some(with) = self.run(batch) else {
            return false;
        };
        let introduces = match self.run(&[]) {
            Some(nothing) => with
                .broken_by_limit
                .iter()
                .zip(&nothing.broken_by_limit)
                .any(|(with, nothing)| with > nothing),
            None => with.broken_steps > 0,
        };
        if introduces {
            return false;
        }
        if operator.is_empty() || operator == batch {
            return true;
        }
        self.run(operator)
            .is_none_or(|theirs| theirs.broken_steps >= with.broken_steps)
    }

    /// Whether doing nothing may stand when the operator would do `operator`: it breaks no
    /// more steps than the operator's batch.
    fn nothing_passes(&self, operator: &[Action]) -> bool {
        match (self.run(&[]), self.run(operator)) {
            (Some(nothing), Some(theirs)) => nothing.broken_steps <= theirs.broken_steps,
            (Some(_), None) => true,
            (None, _) => false,
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
        // Behind the gate the setpoint reads as the value held (a sample of it may lag a step
        // the gate let through, and a step from a stale value break the rate limit).
        self.seen.clone_from(readings);
        if let Some((_, sensor)) = self.setpoint {
            self.held = self.held.or(readings.get(sensor));
            if let Some(value) = self.held {
                self.seen.values[sensor] = value;
                self.seen.present[sensor] = true;
            }
        }
        let before = actions.len();
        self.judge(t_s, actions);
        self.hold(t_s, before, actions);
    }

    fn stats(&self) -> PolicyStats {
        PolicyStats {
            blocked: self.blocked,
            ..self.inner.stats()
        }
    }
}

impl Shielded {
    /// Holds the setpoint the gate let through in `actions[before..]`, or writes the one it
    /// holds again when the batch sets none and a refresh is due.
    fn hold(&mut self, t_s: f64, before: usize, actions: &mut Vec<Action>) {
        let Some((setpoint, _)) = self.setpoint else {
            return;
        };
        let mut set_now = false;
        for action in &actions[before..] {
            match *action {
                Action::Set { actuator, value } if actuator == setpoint => {
                    self.held = Some(value);
                    set_now = true;
                }
                Action::Release { actuator } if actuator == setpoint => self.held = None,
                _ => {}
            }
        }
        if t_s + 1e-9 < self.next_refresh_s {
            return;
        }
        self.next_refresh_s = t_s + REFRESH_S;
        if let (Some(value), false) = (self.held, set_now) {
            actions.push(Action::Set {
                actuator: setpoint,
                value,
            });
        }
    }

    /// The policy's batch if it passes, the operator's (counted) if not.
    fn judge(&mut self, t_s: f64, actions: &mut Vec<Action>) {
        self.view.observe(t_s, &self.seen);
        self.proposed.clear();
        self.fallback_actions.clear();
        self.inner.decide(t_s, &self.seen, &mut self.proposed);
        // The operator watches every step, so its decision is ready when one is needed.
        self.fallback
            .decide(t_s, &self.seen, &mut self.fallback_actions);
        if self.proposed.is_empty() && self.fallback_actions.is_empty() {
            return;
        }
        // The operator's own batch has nothing to be replaced by (one the plant refuses too,
        // an order for a busy crew, is refused there, not blocked here).
        if self.proposed == self.fallback_actions {
            actions.append(&mut self.proposed);
            return;
        }
        let Ok(model) = self.view.model() else {
            // Nothing known of the plant yet: nothing to judge by.
            actions.append(&mut self.proposed);
            return;
        };
        let trial = Trial {
            model: &model,
            lookahead_s: self.lookahead_s,
            objective: &self.objective,
        };
        if self.proposed.is_empty() {
            // Doing nothing is a decision too: when the operator would act, and doing nothing
            // is worse than its action, the operator's is done (and counted).
            if !trial.nothing_passes(&self.fallback_actions) {
                self.blocked += 1;
                actions.append(&mut self.fallback_actions);
            }
            return;
        }
        if trial.passes(&self.proposed, &self.fallback_actions) {
            actions.append(&mut self.proposed);
        } else {
            self.blocked += 1;
            actions.append(&mut self.fallback_actions);
        }
    }
}
