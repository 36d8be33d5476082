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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rollout {
    pub reward: f64,
    pub broken_steps: u32,
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
    for action in actions {
        plant.act(action).ok()?;
    }
    let mut watch = Watch::new(&plant);
    let before = *plant.kpis();
    let steps = (horizon_s / step_s).round().max(1.0) as usize;
    let mut broken_steps = 0;
    for _ in 0..steps {
        plant.step(step_s, &[], &model.world, None).ok()?;
        watch.observe(plant.time_s(), plant.truth(), &plant.labels());
        if objective.broken(&watch).is_some() {
            broken_steps += 1;
        }
    }
    Some(Rollout {
        reward: objective.reward(&before, plant.kpis(), broken_steps, steps as u32),
        broken_steps,
        before,
        after: *plant.kpis(),
    })
}

/// The rule-based operator kept for one half of its work: its maintenance orders beside a
/// policy that runs the plant (MPC, the learned policy), or its running of the plant beside a
/// policy that orders maintenance (the planner).
pub struct OperatorHalf {
    operator: doppel_sim::policy::RuleBasedOperator,
    keep_maintenance: bool,
    scratch: Vec<Action>,
}

impl OperatorHalf {
    /// Its maintenance orders only.
    pub fn maintenance(plant: &dyn Plant) -> doppel_sim::Result<OperatorHalf> {
        Self::new(plant, true)
    }

    /// Everything but its maintenance orders.
    pub fn operations(plant: &dyn Plant) -> doppel_sim::Result<OperatorHalf> {
        Self::new(plant, false)
    }

    fn new(plant: &dyn Plant, keep_maintenance: bool) -> doppel_sim::Result<OperatorHalf> {
        Ok(OperatorHalf {
            operator: doppel_sim::policy::RuleBasedOperator::new(
                plant,
                doppel_sim::policy::OperatorRules::default(),
            )?,
            keep_maintenance,
            scratch: Vec::new(),
        })
    }

    /// The operator watches every step; its half of what it decides is added to `actions`.
    pub fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.scratch.clear();
        self.operator.decide(t_s, readings, &mut self.scratch);
        let keep = self.keep_maintenance;
        actions.extend(
            self.scratch
                .iter()
                .filter(|a| matches!(a, Action::Maintain { .. }) == keep),
        );
    }
}
