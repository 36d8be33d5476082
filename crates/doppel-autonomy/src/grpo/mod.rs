//! The learned policy: a small network (burn) trained with group relative policy optimisation
//! on the policy file's rule-based rewards in the simulator, after a cold start that imitates
//! the rule-based operator (DeepSeek-R1's recipe; docs/AUTONOMY.md).
//!
//! - [`net`]: the network, what it observes and the actions it chooses between;
//! - [`train`]: cold start and GRPO, checkpoints, the card;
//! - [`validate`]: checkpoints scored on episodes set aside, so training keeps its best;
//! - here: the policy at work (`grpo:FOLDER`), choosing the likeliest action every period,
//!   and the actor training samples actions from.

pub mod net;
pub mod ppo;
pub mod train;
pub mod validate;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::prelude::*;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::plant::{Action, Plant, Readings, actuator_index, sensor_index};
use doppel_sim::policy::{Policy, PolicyMaker, PolicyStats};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use crate::error::{AutonomyError, Result};
use crate::lookahead::{Fleet, OperatorHalf};
use net::{CHOICES, Control, FEATURES, HEADS, PolicyNet, SETPOINT_RANGE, SETPOINT_STEP};

/// The weights' file and the card's, in a policy's folder.
pub const WEIGHTS: &str = "policy.safetensors";
pub const CARD: &str = "card.json";

/// Seconds between decisions.
pub const PERIOD_S: f64 = 900.0;

/// Share of uniform choice mixed into the policy's when it samples for training.
const EXPLORE: f32 = 0.1;

/// What a trained policy is, how it was trained and how it did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyCard {
    pub algo: String,
    pub width: usize,
    /// The scenarios it was trained on, by name, in curriculum order.
    pub scenarios: Vec<String>,
    /// The reward and limits it was paid by, as written.
    pub reward: String,
    pub limits: Vec<String>,
    pub seed: u64,
    pub settings: train::GrpoSettings,
    pub cold_start: train::ColdStart,
    /// Per iteration: mean trajectory reward of its groups, groups kept, loss.
    pub curve: Vec<train::CurvePoint>,
    pub iterations_done: usize,
    pub seconds: f64,
    pub simulator_share: f64,
    /// The network scored on episodes set aside as training went, and which iteration's
    /// network this folder holds (the best scored; none: the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validation: Vec<validate::ValidationPoint>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kept_iteration: Option<usize>,
    /// What `doppel policy eval` found, each run appended (kept as written).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evaluations: Vec<serde_json::Value>,
}

impl PolicyCard {
    /// The card of a policy about to be trained by `algo`, fresh from its cold start.
    pub fn new(
        algo: &str,
        scenarios: &[(String, doppel_sim::scenario::Scenario)],
        objective: &crate::objective::Objective,
        settings: &train::GrpoSettings,
        cold_start: train::ColdStart,
    ) -> PolicyCard {
        PolicyCard {
            algo: algo.into(),
            width: settings.width,
            scenarios: scenarios.iter().map(|(n, _)| n.clone()).collect(),
            reward: objective.reward_text.clone(),
            limits: objective
                .limits
                .iter()
                .map(|l| format!("{}: {}", l.name, l.keep))
                .collect(),
            seed: settings.seed,
            settings: settings.clone(),
            cold_start,
            curve: Vec::new(),
            iterations_done: 0,
            seconds: 0.0,
            simulator_share: 0.0,
            validation: Vec::new(),
            kept_iteration: None,
            evaluations: Vec::new(),
        }
    }
}

/// Indices of what the policy reads and moves.
#[derive(Clone)]
pub struct Senses {
    supply: usize,
    ret: usize,
    flow: usize,
    load: usize,
    outdoor: usize,
    tower: usize,
    setpoint: usize,
    pumps: Fleet,
    chillers: Fleet,
    setpoint_actuator: usize,
    start_unix_s: f64,
    utc_offset_h: f64,
}

impl Senses {
    pub fn new(plant: &dyn Plant, config: &ChillerPlantConfig) -> doppel_sim::Result<Senses> {
        let missing = |what: &str| doppel_sim::SimError::Policy {
            policy: "grpo".into(),
            reason: format!("the plant has no {what}"),
        };
        let sensor = |id: &str| sensor_index(plant, id).ok_or_else(|| missing(id));
        Ok(Senses {
            supply: sensor("chw_supply_temp")?,
            ret: sensor("chw_return_temp")?,
            flow: sensor("chw_flow")?,
            load: sensor("hall_load")?,
            outdoor: sensor("weather_temp")?,
            tower: sensor("tower_water_temp")?,
            setpoint: sensor("chw_setpoint")?,
            pumps: Fleet::of(plant, "pump", "vibration", "grpo")?,
            chillers: Fleet::of(plant, "chiller", "cond_temp", "grpo")?,
            setpoint_actuator: actuator_index(plant, "chw.supply_setpoint")
                .ok_or_else(|| missing("setpoint actuator"))?,
            start_unix_s: config.start_ns as f64 / 1e9,
            utc_offset_h: config.environment.utc_offset_h,
        })
    }

    /// What the policy observes at run time `t_s`, from the last value of each sensor.
    pub fn observe(&self, t_s: f64, seen: &[f64]) -> [f32; FEATURES] {
        let v = |i: usize| {
            let x = seen[i];
            if x.is_finite() { x } else { 0.0 }
        };
        let last = |i: usize| Some(seen[i]);
        let local_s = self.start_unix_s + t_s + self.utc_offset_h * 3600.0;
        let hour = (local_s / 3600.0).rem_euclid(24.0);
        // 1970-01-01 was a Thursday: day 0 is weekday 3 counting from Monday as 0.
        let weekday = ((local_s / 86_400.0).floor() as i64 + 3).rem_euclid(7);
        let weekend = weekday >= 5;
        let day_tariff = !weekend && (7.0..22.0).contains(&hour);
        let angle = std::f64::consts::TAU * hour / 24.0;
        [
            (v(self.supply) - 7.0) / 2.0,
            (v(self.ret) - v(self.supply) - 6.0) / 3.0,
            v(self.flow) / 300.0 - 1.0,
            v(self.load) / 1500.0 - 1.0,
            (v(self.outdoor) - 15.0) / 10.0,
            (v(self.tower) - 24.0) / 5.0,
            v(self.setpoint) - 7.0,
            self.pumps.running(&last) as f64 / 4.0,
            self.chillers.running(&last) as f64 / 3.0,
            angle.sin(),
            angle.cos(),
            f64::from(u8::from(weekend)),
            f64::from(u8::from(day_tariff)),
            1.0,
        ]
        .map(|x| x as f32)
    }

    /// The plant's actions for a choice of the three heads, given what was last seen. With
    /// `hold_first`, the setpoint goes up only while the supply holds the one it has (within
    /// 0.2 K): a plant that cannot reach its setpoint gains nothing from a higher one but a
    /// warmer hall.
    pub fn act(
        &self,
        choice: [usize; HEADS],
        seen: &[f64],
        hold_first: bool,
        actions: &mut Vec<Action>,
    ) {
        let current = seen[self.setpoint];
        let holds = seen[self.supply] <= current + 0.2;
        if current.is_finite() && choice[0] != 1 && (choice[0] == 0 || holds || !hold_first) {
            let step = if choice[0] == 0 {
                -SETPOINT_STEP
            } else {
                SETPOINT_STEP
            };
            let target = (current + step).clamp(SETPOINT_RANGE.0, SETPOINT_RANGE.1);
            if (target - current).abs() > 1e-9 {
                actions.push(Action::Set {
                    actuator: self.setpoint_actuator,
                    value: target,
                });
            }
        }
        let last = |i: usize| Some(seen[i]);
        let stage = |fleet: &Fleet, change: usize, least: usize| match change {
            2 => fleet.start_one(&last),
            0 => fleet.stop_one(&last, least),
            _ => None,
        };
        actions.extend(stage(&self.chillers, choice[1], 1));
        actions.extend(stage(&self.pumps, choice[2], 2));
    }

    /// The head choices an operator's actions amount to (for imitating it).
    pub fn choice_of(&self, actions: &[Action], seen: &[f64]) -> [usize; HEADS] {
        let mut choice = [1; HEADS];
        for a in actions {
            if let Action::Set { actuator, value } = *a {
                if actuator == self.setpoint_actuator {
                    choice[0] = if value < seen[self.setpoint] { 0 } else { 2 };
                } else if self.chillers.switches(actuator) {
                    choice[1] = if value == 1.0 { 2 } else { 0 };
                } else if self.pumps.switches(actuator) {
                    choice[2] = if value == 1.0 { 2 } else { 0 };
                }
            }
        }
        choice
    }
}

/// One decision as training keeps it.
#[derive(Debug, Clone)]
pub struct Step {
    pub obs: [f32; FEATURES],
    pub choice: [usize; HEADS],
    /// Log-probability of the choice under the policy that made it.
    pub logp: f32,
}

/// The network at work in a run: every period it observes, chooses (the likeliest choice, or
/// sampled when training) and acts; maintenance orders are the rule-based operator's (and the
/// staging too, when the network moves only the setpoint).
pub struct Actor {
    net: PolicyNet,
    device: Device,
    senses: Senses,
    operator: OperatorHalf,
    control: Control,
    seen: Vec<f64>,
    next_s: f64,
    /// Sampling (training) or the likeliest choice (at work).
    rng: Option<Xoshiro256PlusPlus>,
    pub steps: Vec<Step>,
    stats: PolicyStats,
}

impl Actor {
    pub fn new(
        net: PolicyNet,
        device: Device,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        sample_seed: Option<u64>,
        control: Control,
    ) -> doppel_sim::Result<Actor> {
        Ok(Actor {
            net,
            device,
            senses: Senses::new(plant, config)?,
            operator: match control {
                Control::All => OperatorHalf::maintenance(plant)?,
                Control::Setpoint => OperatorHalf::all_but_setpoint(plant)?,
            },
            control,
            // Until a sensor reports, its true value stands in (a run forked mid-way).
            seen: plant.truth().to_vec(),
            next_s: plant.time_s(),
            rng: sample_seed.map(Xoshiro256PlusPlus::seed_from_u64),
            steps: Vec::new(),
            stats: PolicyStats::default(),
        })
    }
}

impl Policy for Actor {
    fn name(&self) -> &str {
        "grpo"
    }

    fn wants_readings(&self, _t_s: f64) -> bool {
        true
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        for (i, seen) in self.seen.iter_mut().enumerate() {
            if let Some(v) = readings.get(i) {
                *seen = v;
            }
        }
        let before = actions.len();
        self.operator.decide(t_s, readings, actions);
        if t_s < self.next_s {
            return;
        }
        self.next_s = t_s + PERIOD_S;
        // Beside the operator, a setpoint it puts back (someone tampered with it) is not the
        // network's to move: no choice this period.
        let setpoint = self.senses.setpoint_actuator;
        if self.control == Control::Setpoint
            && actions[before..]
                .iter()
                .any(|a| matches!(a, Action::Set { actuator, .. } if *actuator == setpoint))
        {
            return;
        }
        let began = Instant::now();
        let obs = self.senses.observe(t_s, &self.seen);
        let probs = net::probabilities(&self.net, &obs, &self.device);
        let mut choice = [1; HEADS];
        let mut logp = 0.0f32;
        // Heads that do not act keep things as they are, and are not part of the choice.
        for (h, p) in probs.iter().enumerate().take(self.control.heads()) {
            // Sampling for training mixes in a tenth of uniform choice (exploration); the
            // log-probability is the mixture's, the policy that actually chose.
            let p: [f32; CHOICES] = match self.rng {
                Some(_) => p.map(|x| (1.0 - EXPLORE) * x + EXPLORE / CHOICES as f32),
                None => *p,
            };
            choice[h] = match &mut self.rng {
                Some(rng) => {
                    let u: f32 = rng.random();
                    let mut acc = 0.0;
                    (0..CHOICES)
                        .find(|&c| {
                            acc += p[c];
                            u < acc
                        })
                        .unwrap_or(CHOICES - 1)
                }
                None => (0..CHOICES)
                    .max_by(|&a, &b| p[a].total_cmp(&p[b]))
                    .unwrap_or(1),
            };
            logp += p[choice[h]].max(1e-8).ln();
        }
        self.senses.act(
            choice,
            &self.seen,
            self.control == Control::Setpoint,
            actions,
        );
        self.steps.push(Step { obs, choice, logp });
        self.stats.decisions += 1;
        self.stats.compute_s += began.elapsed().as_secs_f64();
    }

    fn stats(&self) -> PolicyStats {
        self.stats
    }
}

/// Writes the network's weights (safetensors) and card into `dir`.
pub fn save(dir: &Path, net: &PolicyNet, card: &PolicyCard) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| folder_error(dir, format!("cannot create it: {e}")))?;
    let mut store = SafetensorsStore::from_file(dir.join(WEIGHTS))
        .overwrite(true)
        .clear_metadata();
    net.save_into(&mut store)
        .map_err(|e| folder_error(dir, format!("cannot write {WEIGHTS}: {e}")))?;
    write_card(dir, card)
}

/// Reads a policy written by [`save`].
pub fn load(dir: &Path, device: &Device) -> Result<(PolicyNet, PolicyCard)> {
    let card = read_card(dir)?;
    let mut net = PolicyNet::new(card.width, device);
    let mut store = SafetensorsStore::from_file(dir.join(WEIGHTS));
    net.load_from(&mut store)
        .map_err(|e| folder_error(dir, format!("cannot read {WEIGHTS}: {e}")))?;
    Ok((net, card))
}

/// Appends an evaluation to the card of the policy in `dir`.
pub fn record_evaluation(dir: &Path, evaluation: serde_json::Value) -> Result<()> {
    let mut card = read_card(dir)?;
    card.evaluations.push(evaluation);
    write_card(dir, &card)
}

fn read_card(dir: &Path) -> Result<PolicyCard> {
    let text = std::fs::read_to_string(dir.join(CARD)).map_err(|e| {
        folder_error(
            dir,
            format!("cannot read {CARD} ({e}): is it a policy folder `doppel policy train` wrote?"),
        )
    })?;
    serde_json::from_str(&text).map_err(|e| folder_error(dir, format!("{CARD}: {e}")))
}

pub(super) fn write_card(dir: &Path, card: &PolicyCard) -> Result<()> {
    let text = serde_json::to_string_pretty(card).expect("the card serialises");
    std::fs::write(dir.join(CARD), text + "\n")
        .map_err(|e| folder_error(dir, format!("cannot write {CARD}: {e}")))
}

/// A problem with the policy folder `dir`, named as `--policy` takes it.
fn folder_error(dir: &Path, reason: String) -> AutonomyError {
    AutonomyError::PolicyOption {
        name: format!("grpo:{}", dir.display()),
        reason,
    }
}

/// `grpo:FOLDER`: the trained policy at work, choosing the likeliest action.
pub struct GrpoMaker {
    pub dir: PathBuf,
    pub label: String,
    net: PolicyNet,
    control: Control,
}

impl GrpoMaker {
    pub fn open(name: &str, dir: &str) -> Result<Arc<GrpoMaker>> {
        let device = Device::flex();
        let (net, card) = load(Path::new(dir), &device)?;
        Ok(Arc::new(GrpoMaker {
            dir: dir.into(),
            ..GrpoMaker::from_net(name, net, card.settings.control)
        }))
    }

    /// A network in memory at work (training scores its checkpoints with it).
    pub fn from_net(name: &str, net: PolicyNet, control: Control) -> GrpoMaker {
        GrpoMaker {
            dir: PathBuf::new(),
            label: name.to_owned(),
            net,
            control,
        }
    }
}

impl PolicyMaker for GrpoMaker {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn make(
        &self,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        _seed: u64,
    ) -> doppel_sim::Result<Box<dyn Policy>> {
        Ok(Box::new(Actor::new(
            self.net.clone(),
            Device::flex(),
            plant,
            config,
            None,
            self.control,
        )?))
    }
}
