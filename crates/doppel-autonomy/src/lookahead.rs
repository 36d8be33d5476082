//! What a policy knows of the plant: its own recent readings, the plant the state estimator
//! makes of them, and that plant run a little way ahead under a candidate action (a
//! rollout). MPC chooses by rollouts; the safety gate judges by them.
//!
//! Rollouts see no new disruption (nobody knows the future), only what the estimator finds
//! lasting now (a load beyond its usual swing), and share one seed, so two candidates differ
//! only by what they do (common random numbers).

use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig, RecentReadings};
use doppel_sim::kpi::Kpis;
use doppel_sim::plant::{Action, Disturbances, Plant, Readings};
use doppel_sim::policy::Policy;

use crate::objective::{Objective, Watch};

/// How much reading history a policy keeps (the estimator's window for wear).
const KEEP_S: f64 = 6.0 * 3600.0;

/// A policy's view of the plant, built from the readings it is shown.
pub struct Lookahead {
    config: ChillerPlantConfig,
    /// The run's time 0, Unix seconds.
    start_unix_s: f64,
    recent: RecentReadings,
    seed: u64,
}

impl Lookahead {
    pub fn new(plant: &dyn Plant, config: &ChillerPlantConfig, seed: u64) -> Lookahead {
        Lookahead {
            config: config.clone(),
            start_unix_s: config.start_ns as f64 / 1e9,
            recent: RecentReadings::new(plant.sensors().len()),
            seed,
        }
    }

    /// Readings at `t_s` seconds into the run.
    pub fn observe(&mut self, t_s: f64, readings: &Readings) {
        self.recent.push(self.start_unix_s + t_s, readings, KEEP_S);
    }

    /// The latest reading of sensor `i`.
    pub fn latest(&self, i: usize) -> Option<f64> {
        self.recent.series[i].last().map(|&(_, v)| v)
    }

    /// The plant as the estimator finds it now, with what lasts of the world around it (a
    /// load beyond its usual swing) as the disturbances to run it ahead under.
    pub fn model(&self) -> doppel_sim::Result<Model> {
        let (plant, estimate) =
            ChillerPlant::estimate(self.config.clone(), self.seed, &self.recent)?;
        let mut world = Disturbances::none(plant.assets().len(), plant.sensors().len());
        world.load_factor = estimate.load_factor;
        Ok(Model { plant, world })
    }
}

/// A plant to run ahead, and the disturbances it runs under.
#[derive(Clone)]
pub struct Model {
    pub plant: ChillerPlant,
    pub world: Disturbances,
}

impl Model {
    /// The same model with the random numbers of `seed`.
    pub fn reseeded(&self, seed: u64) -> Model {
        Model {
            plant: self.plant.reseeded(seed),
            world: self.world.clone(),
        }
    }
}

/// What a rollout earned, how many of its steps broke a limit, and the KPIs it accrued.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    pub reward: f64,
    pub broken_steps: u32,
    /// Steps each limit of the policy file was broken, in the file's order.
    pub broken_by_limit: Vec<u32>,
    /// The KPIs before and after (their difference is what the rollout accrued).
    pub before: Kpis,
    pub after: Kpis,
}

/// Runs `model` (a copy) `horizon_s` ahead after `actions`, in steps of `step_s`, on its local
/// controllers alone, under the model's lasting disturbances; `None` if the plant refuses an
/// action.
pub fn rollout(
    model: &Model,
    actions: &[Action],
    horizon_s: f64,
    step_s: f64,
    objective: &Objective,
) -> Option<Rollout> {
    let mut plant = model.plant.clone();
    // Watched from the plant as the batch finds it: the first step's changes (a setpoint's
    // step among them) are measured from there.
    let mut watch = Watch::new(&plant);
    for action in actions {
        plant.act(action).ok()?;
    }
    let before = *plant.kpis();
    let steps = (horizon_s / step_s).round().max(1.0) as usize;
    let mut broken_steps = 0;
    let mut broken_by_limit = vec![0; objective.limits.len()];
    for _ in 0..steps {
        plant.step(step_s, &[], &model.world, None).ok()?;
        watch.observe(plant.time_s(), plant.truth(), &plant.labels());
        if objective.count_broken(&watch, &mut broken_by_limit) {
            broken_steps += 1;
        }
    }
    Some(Rollout {
        reward: objective.reward(&before, plant.kpis(), broken_steps, steps as u32),
        broken_steps,
        broken_by_limit,
        before,
        after: *plant.kpis(),
    })
}

/// The rule-based operator kept for part of its work: its maintenance orders beside a policy
/// that runs the plant (MPC, the learned policy), its running of the plant beside a policy
/// that orders maintenance (the planner), or everything but the setpoint beside a policy that
/// moves only the setpoint (a learned policy with `control = setpoint`).
pub struct OperatorHalf {
    operator: doppel_sim::policy::RuleBasedOperator,
    keep: Keep,
    scratch: Vec<Action>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Keep {
    Maintenance,
    Operations,
    AllButSetpoint,
}

impl OperatorHalf {
    /// Its maintenance orders only.
    pub fn maintenance(plant: &dyn Plant) -> doppel_sim::Result<OperatorHalf> {
        Self::new(plant, Keep::Maintenance)
    }

    /// Everything but its maintenance orders.
    pub fn operations(plant: &dyn Plant) -> doppel_sim::Result<OperatorHalf> {
        Self::new(plant, Keep::Operations)
    }

    /// Everything (staging by the setpoint it reads, maintenance), leaving the setpoint to
    /// the policy beside it unless someone tampered with it.
    pub fn all_but_setpoint(plant: &dyn Plant) -> doppel_sim::Result<OperatorHalf> {
        Self::new(plant, Keep::AllButSetpoint)
    }

    fn new(plant: &dyn Plant, keep: Keep) -> doppel_sim::Result<OperatorHalf> {
        Ok(OperatorHalf {
            operator: doppel_sim::policy::RuleBasedOperator::new(
                plant,
                doppel_sim::policy::OperatorRules {
                    hold_setpoint: keep != Keep::AllButSetpoint,
                    ..Default::default()
                },
            )?,
            keep,
            scratch: Vec::new(),
        })
    }

    /// The operator watches every step; its part of what it decides is added to `actions`.
    pub fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.scratch.clear();
        self.operator.decide(t_s, readings, &mut self.scratch);
        let keep = self.keep;
        actions.extend(self.scratch.iter().filter(|a| {
            let maintenance = matches!(a, Action::Maintain { .. });
            match keep {
                Keep::Maintenance => maintenance,
                Keep::Operations => !maintenance,
                Keep::AllButSetpoint => true,
            }
        }));
    }
}

/// One kind of unit (pumps, chillers): each one's status and roughness sensors and its run
/// switch, and the staging moves a policy makes with them.
#[derive(Clone)]
pub struct Fleet {
    units: Vec<FleetUnit>,
}

#[derive(Clone)]
struct FleetUnit {
    status: usize,
    /// Vibration (pumps) or condensing temperature (chillers): the roughest stops first.
    roughness: usize,
    run: usize,
}

impl Fleet {
    /// The plant's assets of `kind`, with their `{id}_status` and `{id}_{roughness}` sensors and
    /// `{id}.run` switches; `policy` names who asks, in the error.
    pub fn of(
        plant: &dyn Plant,
        kind: &str,
        roughness: &str,
        policy: &str,
    ) -> doppel_sim::Result<Fleet> {
        let missing = |what: String| doppel_sim::SimError::Policy {
            policy: policy.into(),
            reason: format!("the plant has no {what}"),
        };
        let sensor = |id: String| {
            doppel_sim::plant::sensor_index(plant, &id)
                .ok_or_else(|| missing(format!("sensor `{id}`")))
        };
        let units = plant
            .assets()
            .iter()
            .filter(|a| a.kind == kind)
            .map(|a| {
                Ok(FleetUnit {
                    status: sensor(format!("{}_status", a.id))?,
                    roughness: sensor(format!("{}_{roughness}", a.id))?,
                    run: doppel_sim::plant::actuator_index(plant, &format!("{}.run", a.id))
                        .ok_or_else(|| missing(format!("actuator `{}.run`", a.id)))?,
                })
            })
            .collect::<doppel_sim::Result<_>>()?;
        Ok(Fleet { units })
    }

    /// How many run, by their status readings (`value(sensor)`: its last value).
    pub fn running(&self, value: &dyn Fn(usize) -> Option<f64>) -> usize {
        self.units
            .iter()
            .filter(|u| is_code(value(u.status), 1.0))
            .count()
    }

    /// Whether `actuator` is one of the fleet's run switches.
    pub fn switches(&self, actuator: usize) -> bool {
        self.units.iter().any(|u| u.run == actuator)
    }

    /// One more running: the first idle unit starts; `None` when none is idle.
    pub fn start_one(&self, value: &dyn Fn(usize) -> Option<f64>) -> Option<Action> {
        self.units
            .iter()
            .find(|u| is_code(value(u.status), 0.0))
            .map(|u| Action::Set {
                actuator: u.run,
                value: 1.0,
            })
    }

    /// One fewer running, keeping at least `least`: the roughest running unit stops; `None`
    /// when that would leave too few.
    pub fn stop_one(&self, value: &dyn Fn(usize) -> Option<f64>, least: usize) -> Option<Action> {
        let running: Vec<&FleetUnit> = self
            .units
            .iter()
            .filter(|u| is_code(value(u.status), 1.0))
            .collect();
        if running.len() <= least {
            return None;
        }
        let rough = |u: &FleetUnit| value(u.roughness).unwrap_or(0.0);
        running
            .into_iter()
            .max_by(|a, b| rough(a).total_cmp(&rough(b)))
            .map(|u| Action::Set {
                actuator: u.run,
                value: 0.0,
            })
    }
}

/// Whether a status reading is the code `code`.
fn is_code(reading: Option<f64>, code: f64) -> bool {
    reading.is_some_and(|s| s.round() == code)
}
