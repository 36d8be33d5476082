//! A policy at work on the live plant, in one of four modes:
//!
//! - `shadow`: the rule-based operator runs the plant; what the policy would do is recorded;
//! - `recommend`: the same, each proposal with its simulated effect (the change in the policy
//!   file's total cost, energy and excursions over the next hours, against doing nothing, as a
//!   mean with a p5–p95 band from a small Monte Carlo on the estimated plant);
//! - `approve`: the policy runs the plant, but each of its decisions waits for an operator's
//!   approval (audited: who, when, why) and is done only then;
//! - `auto`: the policy's decisions are done at once (and recorded).
//!
//! Where proposals go and approved ones come from is a [`Desk`] (the live twin, in `doppel
//! up`); this module never touches the network.

use std::str::FromStr;
use std::sync::Arc;

use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::kpi::Summary;
use doppel_sim::plant::{Action, ActuatorKind, Plant, Readings};
use doppel_sim::policy::{OperatorRules, Policy, PolicyStats, RuleBasedOperator};
use serde::Serialize;

use crate::error::{AutonomyError, Result};
use crate::lookahead::{Lookahead, rollout};
use crate::objective::Objective;
use crate::shield::REFRESH_S;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Shadow,
    Recommend,
    Approve,
    Auto,
}

impl FromStr for Mode {
    type Err = AutonomyError;
    fn from_str(text: &str) -> Result<Mode> {
        Ok(match text {
            "shadow" => Mode::Shadow,
            "recommend" => Mode::Recommend,
            "approve" => Mode::Approve,
            "auto" => Mode::Auto,
            other => {
                return Err(AutonomyError::PolicyOption {
                    name: other.to_owned(),
                    reason: "not a mode: use shadow, recommend, approve or auto".into(),
                });
            }
        })
    }
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Shadow => "shadow",
            Mode::Recommend => "recommend",
            Mode::Approve => "approve",
            Mode::Auto => "auto",
        }
    }
}

/// The simulated effect of a decision against doing nothing, over `hours`: per KPI the
/// change's mean and its p5–p95 over `runs` futures of the estimated plant.
#[derive(Debug, Clone, Serialize)]
pub struct Effect {
    pub hours: f64,
    pub runs: usize,
    pub total_cost: Summary,
    pub energy_cost: Summary,
    pub limit_excursion_minutes: Summary,
}

/// One decision of the policy, as it goes to the desk.
#[derive(Debug, Clone)]
pub struct Decision {
    pub policy: String,
    pub mode: Mode,
    /// Data time, ns.
    pub time_ns: i64,
    pub actions: Vec<Action>,
    /// Each action in words.
    pub summary: Vec<String>,
    pub effect: Option<Effect>,
}

/// Where decisions go, and where approved ones come back from.
pub trait Desk: Send {
    fn record(&mut self, decision: Decision);
    /// Action batches approved since the last call.
    fn approved(&mut self) -> Vec<Vec<Action>>;
}

/// Hours and runs of the Monte Carlo behind a proposal's effect.
const EFFECT_HOURS: f64 = 4.0;
const EFFECT_RUNS: usize = 8;

pub struct Supervised {
    name: String,
    mode: Mode,
    agent: Box<dyn Policy>,
    operator: RuleBasedOperator,
    view: Lookahead,
    objective: Arc<Objective>,
    desk: Box<dyn Desk>,
    start_ns: i64,
    actuators: Vec<(String, bool)>,
    assets: Vec<String>,
    proposed: Vec<Action>,
    /// Per actuator, the value last set and when (run seconds).
    written: Vec<(f64, f64)>,
    /// Run time from which the policy is at work; before it (history being written), the
    /// rule-based operator runs the plant and nothing is proposed.
    from_s: f64,
}

impl Supervised {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: String,
        mode: Mode,
        agent: Box<dyn Policy>,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
        objective: Arc<Objective>,
        desk: Box<dyn Desk>,
    ) -> doppel_sim::Result<Supervised> {
        Ok(Supervised {
            name,
            mode,
            agent,
            operator: RuleBasedOperator::new(plant, OperatorRules::default())?,
            view: Lookahead::new(plant, config, seed ^ 0x5355_5056),
            objective,
            desk,
            start_ns: config.start_ns,
            actuators: plant
                .actuators()
                .iter()
                .map(|a| (a.name.clone(), a.kind == ActuatorKind::Switch))
                .collect(),
            assets: plant.assets().iter().map(|a| a.id.clone()).collect(),
            proposed: Vec::new(),
            written: vec![(f64::NAN, f64::NEG_INFINITY); plant.actuators().len()],
            from_s: f64::NEG_INFINITY,
        })
    }

    /// At work only from run time `t_s` on.
    pub fn from(mut self, t_s: f64) -> Supervised {
        self.from_s = t_s;
        self
    }

    /// An action in words.
    fn words(&self, action: &Action) -> String {
        match *action {
            Action::Set { actuator, value } => match self.actuators.get(actuator) {
                Some((name, true)) => {
                    let unit = name.trim_end_matches(".run");
                    if value == 1.0 {
                        format!("start {unit}")
                    } else {
                        format!("stop {unit}")
                    }
                }
                Some((name, false)) => format!("{name} to {value}"),
                None => format!("actuator #{actuator} to {value}"),
            },
            Action::Release { actuator } => format!(
                "give {} back to its local controller",
                self.actuators
                    .get(actuator)
                    .map_or("?", |(n, _)| n.as_str())
            ),
            Action::Maintain { asset } => format!(
                "service {}",
                self.assets.get(asset).map_or("?", |a| a.as_str())
            ),
        }
    }

    /// What `actions` change over the next hours against doing nothing, on the estimated
    /// plant; `None` before the estimator has readings.
    fn effect(&self, actions: &[Action]) -> Option<Effect> {
        let model = self.view.model().ok()?;
        let mut total = Vec::new();
        let mut energy = Vec::new();
        let mut excursion = Vec::new();
        for run in 0..EFFECT_RUNS as u64 {
            let future = model.reseeded(model.plant.seed().wrapping_add(run));
            let horizon = EFFECT_HOURS * 3600.0;
            let with = rollout(&future, actions, horizon, 60.0, &self.objective)?;
            let without = rollout(&future, &[], horizon, 60.0, &self.objective)?;
            total.push(without.reward - with.reward);
            energy.push(
                (with.after.energy_cost - with.before.energy_cost)
                    - (without.after.energy_cost - without.before.energy_cost),
            );
            excursion.push(
                (with.after.limit_excursion_minutes - with.before.limit_excursion_minutes)
                    - (without.after.limit_excursion_minutes
                        - without.before.limit_excursion_minutes),
            );
        }
        Some(Effect {
            hours: EFFECT_HOURS,
            runs: EFFECT_RUNS,
            total_cost: Summary::of(&total),
            energy_cost: Summary::of(&energy),
            limit_excursion_minutes: Summary::of(&excursion),
        })
    }
}

impl Policy for Supervised {
    fn name(&self) -> &str {
        &self.name
    }

    fn wants_readings(&self, _t_s: f64) -> bool {
        true
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.view.observe(t_s, readings);
        self.proposed.clear();
        self.agent.decide(t_s, readings, &mut self.proposed);
        if t_s < self.from_s {
            self.operator.decide(t_s, readings, actions);
            return;
        }
        match self.mode {
            Mode::Shadow | Mode::Recommend => self.operator.decide(t_s, readings, actions),
            Mode::Approve => {
                for batch in self.desk.approved() {
                    actions.extend(batch);
                }
            }
            Mode::Auto => actions.extend(self.proposed.iter().copied()),
        }
        // A value written again within two refreshes of the same write (the gate holding what
        // it let through) is no new decision: done, not recorded.
        let written = &mut self.written;
        self.proposed.retain(|action| match *action {
            Action::Set { actuator, value } => {
                let (last, at) = written[actuator];
                written[actuator] = (value, t_s);
                !(last == value && t_s - at <= 2.0 * REFRESH_S)
            }
            _ => true,
        });
        if self.proposed.is_empty() {
            return;
        }
        let effect = match self.mode {
            Mode::Recommend | Mode::Approve => self.effect(&self.proposed),
            Mode::Shadow | Mode::Auto => None,
        };
        let decision = Decision {
            policy: self.name.clone(),
            mode: self.mode,
            time_ns: self.start_ns + (t_s * 1e9) as i64,
            summary: self.proposed.iter().map(|a| self.words(a)).collect(),
            actions: self.proposed.clone(),
            effect,
        };
        self.desk.record(decision);
    }

    fn stats(&self) -> PolicyStats {
        self.agent.stats()
    }
}
