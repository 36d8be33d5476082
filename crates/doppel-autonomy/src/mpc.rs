//! Model-predictive control: every decision period, the plant the state estimator finds in
//! the policy's own readings is run ahead over the horizon under each candidate action, and
//! the candidate that earns the most reward (the policy file's, limits flooring it) is done.
//!
//! A candidate is a supply setpoint from a grid, and one chiller and one pump more, fewer or
//! the same, held over the horizon while the local controllers do the rest: every one is tried
//! (shooting over a small grid rather than sampling it, since it is small enough to try
//! whole). Keeping things as they are wins ties, so the plant is not switched back and forth
//! for nothing. Maintenance orders are the rule-based operator's: this optimiser decides how
//! the plant runs, not when it is serviced.

use std::sync::Arc;
use std::time::Instant;

use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::plant::{Action, Plant, Readings, actuator_index, sensor_index};
use doppel_sim::policy::{Policy, PolicyMaker, PolicyStats};

use crate::error::{AutonomyError, Result};
use crate::lookahead::{Fleet, Lookahead, OperatorHalf, rollout};
use crate::objective::Objective;

/// How MPC looks ahead and what it may choose.
#[derive(Debug, Clone)]
pub struct MpcSettings {
    /// Seconds between decisions.
    pub period_s: f64,
    /// Seconds each candidate is run ahead.
    pub horizon_s: f64,
    /// The rollouts' step, seconds.
    pub step_s: f64,
    /// The supply setpoints it may choose, °C.
    pub setpoints: Vec<f64>,
    /// A candidate must beat keeping things as they are by this share of the reward to be
    /// chosen (hysteresis against switching for noise).
    pub margin: f64,
}

impl Default for MpcSettings {
    fn default() -> Self {
        MpcSettings {
            period_s: 900.0,
            horizon_s: 7200.0,
            step_s: 60.0,
            setpoints: vec![6.0, 6.5, 7.0, 7.5, 8.0],
            margin: 0.002,
        }
    }
}

impl MpcSettings {
    /// Reads `horizon=2h,period=15m,setpoints=6.5/7/7.5` (any subset).
    pub fn parse(options: &str) -> Result<MpcSettings> {
        let mut s = MpcSettings::default();
        let bad = |reason: String| AutonomyError::PolicyOption {
            name: format!("mpc:{options}"),
            reason,
        };
        for part in options.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let seconds = || {
                doppel_core::time::parse_offset_seconds(value)
                    .map_err(|e| bad(format!("{key}: {e}")))
            };
            match key {
                "horizon" => s.horizon_s = seconds()?,
                "period" => s.period_s = seconds()?,
                "setpoints" => {
                    s.setpoints = value
                        .split('/')
                        .map(|v| v.parse::<f64>().map_err(|e| bad(format!("setpoints: {e}"))))
                        .collect::<Result<_>>()?;
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}`: use horizon, period or setpoints"
                    )));
                }
            }
        }
        if !(s.period_s >= 60.0 && s.horizon_s >= s.period_s) || s.setpoints.is_empty() {
            return Err(bad(
                "the period must be at least 1m, the horizon at least the period, and there \
                 must be a setpoint to choose"
                    .into(),
            ));
        }
        Ok(s)
    }
}

/// Makes an MPC policy for each run.
pub struct MpcMaker {
    pub settings: MpcSettings,
    pub objective: Arc<Objective>,
    pub label: String,
}

impl PolicyMaker for MpcMaker {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn make(
        &self,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
    ) -> doppel_sim::Result<Box<dyn Policy>> {
        Ok(Box::new(Mpc::new(
            plant,
            config,
            seed,
            self.settings.clone(),
            self.objective.clone(),
        )?))
    }
}

pub struct Mpc {
    settings: MpcSettings,
    objective: Arc<Objective>,
    view: Lookahead,
    maintenance: OperatorHalf,
    pumps: Fleet,
    chillers: Fleet,
    setpoint_actuator: usize,
    setpoint_sensor: usize,
    next_s: f64,
    stats: PolicyStats,
}

impl Mpc {
    pub fn new(
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
        settings: MpcSettings,
        objective: Arc<Objective>,
    ) -> doppel_sim::Result<Mpc> {
        let missing = |what: String| doppel_sim::SimError::Policy {
            policy: "mpc".into(),
            reason: format!("the plant has no {what}"),
        };
        let sensor = |id: String| sensor_index(plant, &id).ok_or_else(|| missing(id));
        Ok(Mpc {
            pumps: Fleet::of(plant, "pump", "vibration", "mpc")?,
            chillers: Fleet::of(plant, "chiller", "cond_temp", "mpc")?,
            setpoint_actuator: actuator_index(plant, "chw.supply_setpoint")
                .ok_or_else(|| missing("setpoint actuator".into()))?,
            setpoint_sensor: sensor("chw_setpoint".into())?,
            maintenance: OperatorHalf::maintenance(plant)?,
            view: Lookahead::new(plant, config, seed ^ 0x6d70_6300),
            settings,
            objective,
            next_s: 0.0,
            stats: PolicyStats::default(),
        })
    }

    /// The staging moves open now: keep (no action), one more, one fewer (keeping at least
    /// `least` running); moves that cannot be are left out.
    fn moves(&self, fleet: &Fleet, least: usize) -> Vec<Option<Action>> {
        let value = |i: usize| self.view.latest(i);
        let mut moves = vec![None];
        moves.extend(fleet.start_one(&value).map(Some));
        moves.extend(fleet.stop_one(&value, least).map(Some));
        moves
    }

    /// The best candidate's actions now.
    fn choose(&self) -> doppel_sim::Result<Vec<Action>> {
        let model = self.view.model()?;
        let current = self
            .view
            .latest(self.setpoint_sensor)
            .unwrap_or(self.settings.setpoints[0]);
        let s = &self.settings;
        let (chillers, pumps) = (self.moves(&self.chillers, 1), self.moves(&self.pumps, 2));
        // The setpoint as it is, then the grid's others (one equal to it would only repeat it).
        let setpoints = std::iter::once(current).chain(
            s.setpoints
                .iter()
                .copied()
                .filter(|v| (v - current).abs() > 1e-9),
        );
        let mut keep = None;
        let mut best: Option<(f64, Vec<Action>)> = None;
        for setpoint in setpoints {
            for c in &chillers {
                for p in &pumps {
                    let mut actions: Vec<Action> = c.iter().chain(p).copied().collect();
                    if (setpoint - current).abs() > 1e-9 {
                        actions.push(Action::Set {
                            actuator: self.setpoint_actuator,
                            value: setpoint,
                        });
                    }
                    let Some(r) = rollout(&model, &actions, s.horizon_s, s.step_s, &self.objective)
                    else {
                        continue;
                    };
                    if actions.is_empty() {
                        keep = Some(r.reward);
                    }
                    if best.as_ref().is_none_or(|(b, _)| r.reward > *b) {
                        best = Some((r.reward, actions));
                    }
                }
            }
        }
        Ok(match (best, keep) {
            (Some((reward, actions)), Some(keep))
                if reward > keep + s.margin * keep.abs().max(1.0) =>
            {
                actions
            }
            (Some(_), Some(_)) => Vec::new(),
            (Some((_, actions)), None) => actions,
            (None, _) => Vec::new(),
        })
    }
}

impl Policy for Mpc {
    fn name(&self) -> &str {
        "mpc"
    }

    fn wants_readings(&self, _t_s: f64) -> bool {
        // Its view of the plant is built from every reading.
        true
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.view.observe(t_s, readings);
        self.maintenance.decide(t_s, readings, actions);
        if t_s < self.next_s {
            return;
        }
        self.next_s = t_s + self.settings.period_s;
        let began = Instant::now();
        // A plant the estimator cannot make sense of yet (no readings): leave it be.
        if let Ok(chosen) = self.choose() {
            actions.extend(chosen);
        }
        self.stats.decisions += 1;
        self.stats.compute_s += began.elapsed().as_secs_f64();
    }

    fn stats(&self) -> PolicyStats {
        self.stats
    }
}
