//! Who operates the plant during a run. A policy sees readings (never the truth) and emits
//! actions; the plant checks every action and refuses impossible ones.
//!
//! Two ship with doppel: [`LocalControllersOnly`] (nobody intervenes; the plant's own
//! controllers and standby changeover do what they can) and [`RuleBasedOperator`] (stages
//! pumps and chillers by load, services a pump when its vibration passes a limit, cleans a
//! fouled chiller, puts a tampered setpoint back). The autonomy layer adds learned policies.

use serde::{Deserialize, Serialize};

use crate::chiller::ChillerPlantConfig;
use crate::error::{Result, SimError};
use crate::plant::{Action, Plant, Readings, actuator_index, sensor_index};

pub trait Policy: Send {
    fn name(&self) -> &str;
    /// Whether the policy will look at the readings at time `t_s` (so runs can skip reading
    /// the sensors when nobody looks).
    fn wants_readings(&self, t_s: f64) -> bool;
    /// Decides, at time `t_s`, given the latest readings.
    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>);
    /// What the policy did so far, for reports (decisions made, compute spent, actions its
    /// safety gate blocked).
    fn stats(&self) -> PolicyStats {
        PolicyStats::default()
    }
}

/// What a policy did during a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyStats {
    /// Decisions made (the moments it chose what to do).
    pub decisions: u64,
    /// Seconds of compute spent deciding.
    pub compute_s: f64,
    /// Action batches its safety gate blocked and replaced by the rule-based operator's.
    pub blocked: u64,
}

/// Makes a fresh policy for each run of a study (runs are independent and run on many
/// threads). The autonomy layer's policies come in through this too.
pub trait PolicyMaker: Send + Sync {
    /// The policy's name as a user chose it (`rules`, `mpc`, `grpo:policies/p1`).
    fn name(&self) -> String;
    /// A policy for `plant`, whose configuration is `config`; `seed` is the run's (a policy
    /// that draws random numbers draws them from it).
    fn make(
        &self,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
    ) -> Result<Box<dyn Policy>>;
}

impl PolicyMaker for PolicyKind {
    fn name(&self) -> String {
        match self {
            PolicyKind::None => "none".into(),
            PolicyKind::Rules => "rules".into(),
        }
    }
    fn make(
        &self,
        plant: &dyn Plant,
        _config: &ChillerPlantConfig,
        _seed: u64,
    ) -> Result<Box<dyn Policy>> {
        self.build(plant)
    }
}

/// Which shipped policy to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Nobody intervenes beyond the plant's local controllers.
    None,
    /// The rule-based operator.
    #[default]
    Rules,
}

impl PolicyKind {
    pub fn build(self, plant: &dyn Plant) -> Result<Box<dyn Policy>> {
        Ok(match self {
            PolicyKind::None => Box::new(LocalControllersOnly),
            PolicyKind::Rules => Box::new(RuleBasedOperator::new(plant, OperatorRules::default())?),
        })
    }
}

/// Does nothing: the plant runs on its local controllers.
pub struct LocalControllersOnly;

impl Policy for LocalControllersOnly {
    fn name(&self) -> &str {
        "none"
    }
    fn wants_readings(&self, _t_s: f64) -> bool {
        false
    }
    fn decide(&mut self, _t_s: f64, _readings: &Readings, _actions: &mut Vec<Action>) {}
}

/// The operator's rules of thumb.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperatorRules {
    /// How often the operator looks, seconds.
    pub interval_s: f64,
    /// Least time between two staging changes of the same kind, seconds.
    pub staging_hold_s: f64,
    /// Nameplate capacity of a chiller, kW, and the best flow of a pump, m³/h.
    pub chiller_capacity_kw: f64,
    pub pump_best_flow_m3h: f64,
    /// Start a chiller above this share of the running capacity; stop one below this share
    /// of what would remain.
    pub chiller_start_load: f64,
    pub chiller_stop_load: f64,
    /// Pumps: start one above this share of best flow per pump; stop one below this share.
    pub pump_start_flow: f64,
    pub pump_stop_flow: f64,
    /// Service a pump whose vibration passes this, mm/s (ISO 10816-3 zone C/D boundary).
    pub vibration_limit_mm_s: f64,
    /// Clean a chiller whose condensing temperature is this far above the tower water, K.
    pub cond_approach_limit_k: f64,
    /// The supply setpoint the operator holds.
    pub supply_setpoint_c: f64,
    /// A setpoint someone else moved inside this range goes back by at most
    /// `setpoint_step_k` a look (a larger jump breaks the reference policy file's rate
    /// limit); one outside it (tampering) goes back at once.
    pub setpoint_safe_c: (f64, f64),
    pub setpoint_step_k: f64,
    /// Whether it holds its own setpoint. When not (a policy beside it moves the setpoint),
    /// it leaves a setpoint within the safe range where it is, still puts one outside it back,
    /// and judges the supply against the setpoint it reads.
    pub hold_setpoint: bool,
    /// A supply this close to the top of the safe range is too warm whatever the setpoint, K.
    pub supply_margin_k: f64,
    /// Wait this long before asking again after a maintenance order was refused, seconds.
    pub retry_s: f64,
}

impl Default for OperatorRules {
    fn default() -> Self {
        OperatorRules {
            interval_s: 900.0,
            staging_hold_s: 3600.0,
            chiller_capacity_kw: 1000.0,
            pump_best_flow_m3h: 120.0,
            chiller_start_load: 0.85,
            chiller_stop_load: 0.7,
            pump_start_flow: 0.95,
            pump_stop_flow: 0.6,
            vibration_limit_mm_s: 4.5,
            cond_approach_limit_k: 5.6,
            supply_setpoint_c: 7.0,
            setpoint_safe_c: (5.5, 9.0),
            setpoint_step_k: 1.0,
            hold_setpoint: true,
            supply_margin_k: 0.4,
            retry_s: 4.0 * 3600.0,
        }
    }
}

/// Sensors and actuators of one unit, by index.
struct Unit {
    status: usize,
    load: usize,
    extra: usize,
    run: usize,
    asset: usize,
}

/// A rule-based operator for the chilled-water plant.
pub struct RuleBasedOperator {
    rules: OperatorRules,
    pumps: Vec<Unit>,
    chillers: Vec<Unit>,
    supply: usize,
    setpoint: usize,
    setpoint_actuator: usize,
    flow: usize,
    tower_water: usize,
    /// The last value seen of every sensor (an operator's screen keeps the last reading).
    seen: Vec<f64>,
    next_look_s: f64,
    last_chiller_change_s: f64,
    last_pump_change_s: f64,
    last_order_s: Vec<f64>,
}

impl RuleBasedOperator {
    pub fn new(plant: &dyn Plant, rules: OperatorRules) -> Result<Self> {
        let missing = |what: String| SimError::Policy {
            policy: "rules".into(),
            reason: format!("the plant has no {what}"),
        };
        let sensor =
            |id: String| sensor_index(plant, &id).ok_or_else(|| missing(format!("sensor `{id}`")));
        let actuator = |name: String| {
            actuator_index(plant, &name).ok_or_else(|| missing(format!("actuator `{name}`")))
        };
        let asset = |id: &str| {
            plant
                .assets()
                .iter()
                .position(|a| a.id == id)
                .ok_or_else(|| missing(format!("asset `{id}`")))
        };
        let units = |kind: &str, load: &str, extra: &str| -> Result<Vec<Unit>> {
            let ids: Vec<String> = plant
                .assets()
                .iter()
                .filter(|a| a.kind == kind)
                .map(|a| a.id.clone())
                .collect();
            ids.iter()
                .map(|id| {
                    Ok(Unit {
                        status: sensor(format!("{id}_status"))?,
                        load: sensor(format!("{id}_{load}"))?,
                        extra: sensor(format!("{id}_{extra}"))?,
                        run: actuator(format!("{id}.run"))?,
                        asset: asset(id)?,
                    })
                })
                .collect()
        };
        let pumps = units("pump", "speed", "vibration")?;
        let chillers = units("chiller", "duty", "cond_temp")?;
        Ok(RuleBasedOperator {
            last_order_s: vec![f64::NEG_INFINITY; plant.assets().len()],
            rules,
            pumps,
            chillers,
            supply: sensor("chw_supply_temp".into())?,
            setpoint: sensor("chw_setpoint".into())?,
            setpoint_actuator: actuator("chw.supply_setpoint".into())?,
            flow: sensor("chw_flow".into())?,
            tower_water: sensor("tower_water_temp".into())?,
            seen: vec![f64::NAN; plant.sensors().len()],
            next_look_s: 0.0,
            last_chiller_change_s: f64::NEG_INFINITY,
            last_pump_change_s: f64::NEG_INFINITY,
        })
    }

    fn running(&self, units: &[Unit]) -> Vec<usize> {
        (0..units.len())
            .filter(|&i| self.seen[units[i].status] == 1.0)
            .collect()
    }

    fn idle(&self, units: &[Unit]) -> Vec<usize> {
        (0..units.len())
            .filter(|&i| self.seen[units[i].status] == 0.0)
            .collect()
    }
}

impl Policy for RuleBasedOperator {
    fn name(&self) -> &str {
        "rules"
    }

    fn wants_readings(&self, t_s: f64) -> bool {
        t_s >= self.next_look_s
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        for (i, seen) in self.seen.iter_mut().enumerate() {
            if let Some(v) = readings.get(i) {
                *seen = v;
            }
        }
        if t_s < self.next_look_s {
            return;
        }
        self.next_look_s = t_s + self.rules.interval_s;
        let r = &self.rules;

        // A setpoint someone else changed goes back: at once from outside the safe range,
        // else a step at a time.
        let seen = self.seen[self.setpoint];
        let (low, high) = r.setpoint_safe_c;
        let legal = (low..=high).contains(&seen);
        // Beside a policy that moves the setpoint, a legal one is the policy's: followed.
        let follows = !r.hold_setpoint && legal;
        if (seen - r.supply_setpoint_c).abs() > 0.05 && !follows {
            let value = if legal {
                seen + (r.supply_setpoint_c - seen).clamp(-r.setpoint_step_k, r.setpoint_step_k)
            } else {
                r.supply_setpoint_c
            };
            actions.push(Action::Set {
                actuator: self.setpoint_actuator,
                value,
            });
        }

        // Chillers by load.
        let running = self.running(&self.chillers);
        let idle = self.idle(&self.chillers);
        let duty: f64 = running
            .iter()
            .map(|&j| self.seen[self.chillers[j].load])
            .sum();
        let n = running.len() as f64;
        // Too warm: 0.8 K above the setpoint (its own, or the one it reads beside a policy
        // that moves it), and never closer than `supply_margin_k` to the safe range's top.
        let target = if follows { seen } else { r.supply_setpoint_c };
        let supply_high = self.seen[self.supply] > (target + 0.8).min(high - r.supply_margin_k);
        // Beside a policy that raised the setpoint: a supply near the top of the safe range with
        // every chiller running (nothing left to start) takes the setpoint down a step, toward
        // its own.
        if follows
            && seen > r.supply_setpoint_c
            && idle.is_empty()
            && self.seen[self.supply] > high - r.supply_margin_k
        {
            actions.push(Action::Set {
                actuator: self.setpoint_actuator,
                value: (seen - 0.5).max(r.supply_setpoint_c),
            });
        }
        if t_s - self.last_chiller_change_s >= r.staging_hold_s {
            if (supply_high || duty > r.chiller_start_load * n * r.chiller_capacity_kw)
                && let Some(&j) = idle.first()
            {
                actions.push(Action::Set {
                    actuator: self.chillers[j].run,
                    value: 1.0,
                });
                self.last_chiller_change_s = t_s;
            } else if running.len() >= 2
                && !supply_high
                && duty < r.chiller_stop_load * (n - 1.0) * r.chiller_capacity_kw
            {
                // Stop the most fouled (warmest condenser).
                let j = *running
                    .iter()
                    .max_by(|&&a, &&b| {
                        self.seen[self.chillers[a].extra]
                            .total_cmp(&self.seen[self.chillers[b].extra])
                    })
                    .expect("two or more running");
                actions.push(Action::Set {
                    actuator: self.chillers[j].run,
                    value: 0.0,
                });
                self.last_chiller_change_s = t_s;
            }
        }

        // Pumps by flow per pump.
        let running = self.running(&self.pumps);
        let idle = self.idle(&self.pumps);
        let flow = self.seen[self.flow];
        let per_pump = flow / running.len().max(1) as f64;
        if t_s - self.last_pump_change_s >= r.staging_hold_s {
            if (running.is_empty() || per_pump > r.pump_start_flow * r.pump_best_flow_m3h)
                && let Some(&i) = idle.first()
            {
                actions.push(Action::Set {
                    actuator: self.pumps[i].run,
                    value: 1.0,
                });
                self.last_pump_change_s = t_s;
            } else if running.len() > 2
                && flow / (running.len() - 1) as f64 <= r.pump_stop_flow * r.pump_best_flow_m3h
            {
                // Stop the roughest-running pump.
                let i = *running
                    .iter()
                    .max_by(|&&a, &&b| {
                        self.seen[self.pumps[a].extra].total_cmp(&self.seen[self.pumps[b].extra])
                    })
                    .expect("three or more running");
                actions.push(Action::Set {
                    actuator: self.pumps[i].run,
                    value: 0.0,
                });
                self.last_pump_change_s = t_s;
            }
        }

        // Condition-based maintenance: one order per look, with a standby to take over.
        let standby_pump = !self.idle(&self.pumps).is_empty();
        let standby_chiller = !self.idle(&self.chillers).is_empty();
        let order = self
            .pumps
            .iter()
            .find(|p| {
                self.seen[p.status] <= 1.0
                    && self.seen[p.extra] > r.vibration_limit_mm_s
                    && (standby_pump || self.seen[p.status] == 0.0)
                    && t_s - self.last_order_s[p.asset] >= r.retry_s
            })
            .or_else(|| {
                self.chillers.iter().find(|c| {
                    self.seen[c.status] == 1.0
                        && self.seen[c.extra] - self.seen[self.tower_water]
                            > r.cond_approach_limit_k
                        && standby_chiller
                        && t_s - self.last_order_s[c.asset] >= r.retry_s
                })
            });
        if let Some(unit) = order {
            let asset = unit.asset;
            self.last_order_s[asset] = t_s;
            actions.push(Action::Maintain { asset });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OperatorRules, RuleBasedOperator};
    use crate::chiller::{ChillerPlant, ChillerPlantConfig};
    use crate::plant::{Action, Plant, Readings, actuator_index, sensor_index};
    use crate::policy::Policy;

    /// The setpoint action the operator takes when it reads `setpoint`.
    fn setpoint_back_from(setpoint: f64) -> Option<f64> {
        setpoint_back_by(setpoint, OperatorRules::default())
    }

    fn setpoint_back_by(setpoint: f64, rules: OperatorRules) -> Option<f64> {
        setpoint_back_reading(setpoint, rules, &[])
    }

    /// The same, with some readings set (sensor id, value).
    fn setpoint_back_reading(
        setpoint: f64,
        rules: OperatorRules,
        set: &[(&str, f64)],
    ) -> Option<f64> {
        let plant = ChillerPlant::new(ChillerPlantConfig::default(), 1).unwrap();
        let mut operator = RuleBasedOperator::new(&plant, rules).unwrap();
        let mut readings = Readings::new(plant.sensors().len());
        readings.values.copy_from_slice(plant.truth());
        readings.present.fill(true);
        readings.values[sensor_index(&plant, "chw_setpoint").unwrap()] = setpoint;
        for (id, value) in set {
            readings.values[sensor_index(&plant, id).unwrap()] = *value;
        }
        let actuator = actuator_index(&plant, "chw.supply_setpoint").unwrap();
        let mut actions = Vec::new();
        operator.decide(0.0, &readings, &mut actions);
        actions.iter().find_map(|a| match *a {
            Action::Set { actuator: i, value } if i == actuator => Some(value),
            _ => None,
        })
    }

    /// A tampered setpoint goes back at once; one moved within the safe range (by a policy
    /// the operator stands in for) walks back a step at a time, never past the rate limit.
    #[test]
    fn the_operator_puts_a_setpoint_back_at_once_only_from_outside_the_safe_range() {
        assert_eq!(setpoint_back_from(12.0), Some(7.0));
        assert_eq!(setpoint_back_from(3.0), Some(7.0));
        assert_eq!(setpoint_back_from(8.5), Some(7.5));
        assert_eq!(setpoint_back_from(6.0), Some(7.0));
        assert_eq!(setpoint_back_from(7.0), None);
    }

    /// Beside a policy that moves the setpoint, the operator leaves a legal one alone and still
    /// puts a tampered one back.
    #[test]
    fn beside_a_setpoint_policy_the_operator_only_undoes_tampering() {
        let beside = || OperatorRules {
            hold_setpoint: false,
            ..OperatorRules::default()
        };
        assert_eq!(setpoint_back_by(8.5, beside()), None);
        assert_eq!(setpoint_back_by(6.0, beside()), None);
        assert_eq!(setpoint_back_by(12.0, beside()), Some(7.0));
        // A raised setpoint the plant cannot hold with every chiller on comes down a step.
        let struggling = [
            ("chiller1_status", 1.0),
            ("chiller2_status", 1.0),
            ("chiller3_status", 1.0),
            ("chw_supply_temp", 8.8),
        ];
        assert_eq!(setpoint_back_reading(8.5, beside(), &struggling), Some(8.0));
        assert_eq!(setpoint_back_reading(8.5, beside(), &struggling[3..]), None);
    }
}
