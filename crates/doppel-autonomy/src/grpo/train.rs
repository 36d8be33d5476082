//! Training the learned policy: a cold start that imitates the rule-based operator, then group
//! relative policy optimisation on the policy file's rewards in the simulator.
//!
//! Each iteration draws groups. A group is a plant run by the rule-based operator to a random
//! moment of a scenario (the snapshot), then `group` futures of it under the policy, sampling
//! its choices, with the same disruptions and the same seed: they differ only by what the
//! policy chose. A future's reward is the policy file's over its hours (each step that breaks
//! a limit earning the floor); its advantage is its reward less the group's mean, with no
//! division by the group's spread (Dr. GRPO), over a fixed scale. Groups whose futures all
//! earned the same teach nothing and are dropped. The loss is the clipped ratio of the new
//! policy's probability of each choice to the sampling one's (the policy mixed with a tenth of
//! uniform choice, so groups still differ once it is sure of itself; clipped 0.2 below, 0.28
//! above: DAPO's),
//! times the advantage, with a small KL penalty toward the cold-started policy (the reference).
//! The first third of the iterations stay on undisturbed weather; the rest go round every
//! scenario (a curriculum).

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::kpi::Kpis;
use doppel_sim::plant::Plant;
use doppel_sim::policy::{OperatorRules, Policy, PolicyKind, RuleBasedOperator};
use doppel_sim::random::run_seed;
use doppel_sim::run::{Observer, RunSettings, StepView, simulate};
use doppel_sim::scenario::Scenario;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::{Deserialize, Serialize};

use super::net::{self, Control, FEATURES, HEADS, PolicyNet};
use super::validate::Validation;
use super::{Actor, PERIOD_S, PolicyCard, Senses, WEIGHTS};
use crate::error::Result;
use crate::objective::{Objective, Watch};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrpoSettings {
    pub iterations: usize,
    /// Groups drawn an iteration, and futures a group.
    pub groups: usize,
    pub group: usize,
    /// Decisions (of 15 minutes) each future lasts.
    pub horizon: usize,
    pub learning_rate: f64,
    pub clip_low: f64,
    pub clip_high: f64,
    pub kl: f64,
    /// Passes over an iteration's decisions.
    pub epochs: usize,
    pub width: usize,
    /// Days of the rule-based operator imitated, and the steps imitating it.
    pub cold_start_days: f64,
    pub cold_start_steps: usize,
    /// Advantages are divided by this (currency): a fixed scale, not the group's spread.
    pub reward_scale: f64,
    pub seed: u64,
    /// What the network moves (cards written before it existed: everything).
    #[serde(default)]
    pub control: Control,
    /// Times the network is scored on episodes set aside (`validation_seeds` seeds of
    /// `validation_days` days of every scenario), evenly through training; the best scored
    /// is the policy kept. 0 keeps the last.
    #[serde(default)]
    pub validations: usize,
    #[serde(default)]
    pub validation_seeds: u64,
    #[serde(default)]
    pub validation_days: f64,
}

impl Default for GrpoSettings {
    fn default() -> Self {
        GrpoSettings {
            iterations: 60,
            groups: 4,
            group: 8,
            horizon: 16,
            learning_rate: 3e-3,
            clip_low: 0.2,
            clip_high: 0.28,
            kl: 0.02,
            epochs: 2,
            width: 64,
            cold_start_days: 30.0,
            cold_start_steps: 300,
            reward_scale: 100.0,
            seed: 1,
            control: Control::All,
            validations: 12,
            validation_seeds: 2,
            validation_days: 15.0,
        }
    }
}

/// The most a rare choice of the operator's weighs in the cold start, against a common one's 1.
const RARE_WEIGHT_CAP: f64 = 20.0;

/// The largest advantage a future counts with, in units of `reward_scale` (capping the
/// difference in currency instead, a thousand whatever the scale, let setpoint-only policies
/// trained at a scale of 5 run far above the supply limit: docs/BENCHMARKS.md).
const ADVANTAGE_CAP: f64 = 10.0;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ColdStart {
    pub examples: usize,
    pub steps: usize,
    /// Share of the operator's decisions the policy makes the same (every head that acts).
    pub agreement: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurvePoint {
    pub iteration: usize,
    /// Mean reward of the iteration's futures.
    pub reward: f64,
    pub groups_kept: usize,
    pub loss: f64,
}

/// What training reports as it goes.
pub struct Progress {
    pub phase: &'static str,
    pub done: usize,
    pub of: usize,
    pub reward: Option<f64>,
}

/// The rule-based operator, its decisions recorded as the policy's choices would be.
struct Imitated {
    operator: RuleBasedOperator,
    senses: Senses,
    seen: Vec<f64>,
    next_s: f64,
    examples: Vec<([f32; FEATURES], [usize; HEADS])>,
}

impl Policy for Imitated {
    fn name(&self) -> &str {
        "rules"
    }
    fn wants_readings(&self, _t_s: f64) -> bool {
        true
    }
    fn decide(
        &mut self,
        t_s: f64,
        readings: &doppel_sim::plant::Readings,
        actions: &mut Vec<doppel_sim::plant::Action>,
    ) {
        for (i, seen) in self.seen.iter_mut().enumerate() {
            if let Some(v) = readings.get(i) {
                *seen = v;
            }
        }
        let before = actions.len();
        self.operator.decide(t_s, readings, actions);
        if t_s >= self.next_s {
            self.next_s = t_s + PERIOD_S;
            let obs = self.senses.observe(t_s, &self.seen);
            let choice = self.senses.choice_of(&actions[before..], &self.seen);
            self.examples.push((obs, choice));
        }
    }
}

/// Counts the steps at which a limit broke.
pub(super) struct Limits<'a> {
    watch: Watch,
    objective: &'a Objective,
    pub(super) broken: u32,
    pub(super) steps: u32,
}

impl<'a> Limits<'a> {
    /// Counting from now, on `plant`, by `objective`'s limits.
    pub(super) fn new(plant: &ChillerPlant, objective: &'a Objective) -> Limits<'a> {
        Limits {
            watch: Watch::new(plant),
            objective,
            broken: 0,
            steps: 0,
        }
    }
}

impl Observer for Limits<'_> {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        self.watch.observe(view.t_s, view.truth, view.labels);
        self.steps += 1;
        if self.objective.broken(&self.watch).is_some() {
            self.broken += 1;
        }
        Ok(true)
    }
}

/// The curriculum: undisturbed weather for the first third of the iterations, then every
/// scenario in turn, group by group.
pub(super) fn curriculum(
    scenarios: &[(String, Scenario)],
    iteration: usize,
    total: usize,
    groups: usize,
    g: usize,
) -> &Scenario {
    if iteration < total / 3 || scenarios.len() == 1 {
        &scenarios[0].1
    } else {
        &scenarios[1 + (iteration * groups + g) % (scenarios.len() - 1)].1
    }
}

/// A plant run by the rule-based operator to a random moment (half a day to 20 days) of a
/// scenario: where a group's futures start. Returns it and the scenario's drawn events.
pub(super) fn snapshot(
    config: &ChillerPlantConfig,
    scenario: &Scenario,
    seed: u64,
    rng: &mut Xoshiro256PlusPlus,
) -> Result<(ChillerPlant, Vec<doppel_sim::scenario::Event>)> {
    let mut plant = ChillerPlant::new(config.clone(), seed)?;
    let events = scenario.draw(seed);
    let warm_days = rng.random_range(0.5..20.0);
    let mut operator = PolicyKind::Rules.build(&plant)?;
    simulate(
        &mut plant,
        operator.as_mut(),
        events.clone(),
        RunSettings {
            days: warm_days,
            step_s: 60.0,
        },
        None,
    )?;
    Ok((plant, events))
}

/// The folder in a policy's folder where training keeps its latest network (what `--resume`
/// goes on from) while the folder itself holds the best scored.
pub const LAST: &str = "last";

/// Trains a policy into `out` (its weights, its card, and checkpoints as it goes; `resume`
/// goes on from the last one there). With validations, `out` holds the best network scored
/// and `out/last` the latest.
pub fn train(
    scenarios: &[(String, Scenario)],
    objective: &Objective,
    settings: GrpoSettings,
    out: &Path,
    resume: bool,
    progress: &dyn Fn(&Progress),
) -> Result<PolicyCard> {
    let began = Instant::now();
    let device = Device::flex().autodiff();
    let config = ChillerPlantConfig::default();
    let mut sim_seconds = 0.0;

    let last = out.join(LAST);
    let checkpoint = if last.join(WEIGHTS).exists() {
        last.as_path()
    } else {
        out
    };
    let (mut net, reference, mut card) = match resume.then(|| super::load(checkpoint, &device)) {
        Some(Ok((net, card))) if card.iterations_done < settings.iterations => {
            let reference = super::load(&out.join("reference"), &device)?.0;
            (net, reference, card)
        }
        Some(Ok((_, card))) => return Ok(card),
        Some(Err(e)) => return Err(e),
        None => {
            let (net, cold) = cold_start(
                scenarios,
                &config,
                &settings,
                &device,
                progress,
                &mut sim_seconds,
            )?;
            let card = PolicyCard::new("grpo", scenarios, objective, &settings, cold);
            super::save(&out.join("reference"), &net.valid(), &card)?;
            (net.clone(), net, card)
        }
    };
    let mut validation = Validation::new(scenarios, objective, &settings)?;
    // Where training starts is scored too: it is kept unless training does better.
    if let Some(v) = &mut validation
        && card.iterations_done == 0
    {
        v.consider(&mut card, &net.valid(), 0)?;
        super::save(out, &net.valid(), &card)?;
    }
    let reference = reference.valid();
    let mut optimizer = AdamWConfig::new().init();
    // Time spent by earlier runs (a resumed training adds to it).
    let (earlier_s, earlier_sim) = (card.seconds, card.seconds * card.simulator_share);
    let total = settings.iterations;
    for iteration in card.iterations_done..total {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(run_seed(settings.seed, iteration as u64));
        let sampler = net.valid();
        let mut batch: Vec<(super::Step, f32)> = Vec::new();
        let mut rewards = Vec::new();
        let mut kept = 0;
        for g in 0..settings.groups {
            let scenario = curriculum(scenarios, iteration, total, settings.groups, g);
            let seed = rng.random::<u64>();
            let sim = Instant::now();
            let (snapshot, events) = snapshot(&config, scenario, seed, &mut rng)?;
            let mut futures = Vec::new();
            for k in 0..settings.group {
                let mut plant = snapshot.clone();
                let mut actor = Actor::new(
                    sampler.clone(),
                    device.clone(),
                    &plant,
                    &config,
                    Some(run_seed(seed, k as u64)),
                    settings.control,
                )?;
                let before: Kpis = *plant.kpis();
                let mut limits = Limits::new(&plant, objective);
                simulate(
                    &mut plant,
                    &mut actor,
                    events.clone(),
                    RunSettings {
                        days: settings.horizon as f64 * PERIOD_S / 86_400.0,
                        step_s: 60.0,
                    },
                    Some(&mut limits),
                )?;
                let reward = objective.reward(&before, plant.kpis(), limits.broken, limits.steps);
                futures.push((reward, std::mem::take(&mut actor.steps)));
            }
            sim_seconds += sim.elapsed().as_secs_f64();
            let mean = futures.iter().map(|f| f.0).sum::<f64>() / futures.len() as f64;
            rewards.extend(futures.iter().map(|f| f.0));
            let spread = futures
                .iter()
                .map(|f| (f.0 - mean).abs())
                .fold(0.0, f64::max);
            if spread < 1e-9 {
                continue;
            }
            kept += 1;
            for (reward, steps) in futures {
                // A broken limit costs the floor a step: clipped, so one such future does not
                // swamp every other difference in the batch.
                let advantage = ((reward - mean) / settings.reward_scale)
                    .clamp(-ADVANTAGE_CAP, ADVANTAGE_CAP) as f32;
                batch.extend(steps.into_iter().map(|s| (s, advantage)));
            }
        }
        let mut loss_value = 0.0;
        if !batch.is_empty() {
            let obs: Vec<[f32; FEATURES]> = batch.iter().map(|(s, _)| s.obs).collect();
            let choices: Vec<[usize; HEADS]> = batch.iter().map(|(s, _)| s.choice).collect();
            let n = batch.len();
            let old = Tensor::<1>::from_data(
                TensorData::new(batch.iter().map(|(s, _)| s.logp).collect::<Vec<_>>(), [n]),
                &device,
            );
            let advantage = Tensor::<1>::from_data(
                TensorData::new(batch.iter().map(|(_, a)| *a).collect::<Vec<_>>(), [n]),
                &device,
            );
            let heads = settings.control.heads();
            let reference_logp = reference
                .log_prob_of(
                    net::observations(&obs, &device),
                    net::actions(&choices, &device),
                    heads,
                )
                .detach();
            for _ in 0..settings.epochs {
                let logp = net.log_prob_of(
                    net::observations(&obs, &device),
                    net::actions(&choices, &device),
                    heads,
                );
                let ratio = (logp.clone() - old.clone()).exp();
                let clipped = ratio
                    .clone()
                    .clamp(1.0 - settings.clip_low, 1.0 + settings.clip_high);
                let surrogate = (ratio * advantage.clone()).min_pair(clipped * advantage.clone());
                // The k3 estimate of KL(policy ‖ reference), as GRPO's paper writes it.
                let log_ratio = reference_logp.clone() - logp;
                let kl = log_ratio.clone().exp() - log_ratio - 1.0;
                let loss = surrogate.mean().neg() + kl.mean() * settings.kl;
                loss_value = loss.clone().into_scalar::<f32>() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = optimizer.step(settings.learning_rate, net, grads);
            }
        }
        let reward = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
        card.curve.push(CurvePoint {
            iteration,
            reward,
            groups_kept: kept,
            loss: loss_value,
        });
        card.iterations_done = iteration + 1;
        card.seconds = earlier_s + began.elapsed().as_secs_f64();
        card.simulator_share = (earlier_sim + sim_seconds) / card.seconds.max(1e-9);
        progress(&Progress {
            phase: "grpo",
            done: iteration + 1,
            of: total,
            reward: Some(reward),
        });
        let done = iteration + 1;
        if let Some(v) = &mut validation
            && v.due(done)
        {
            if v.consider(&mut card, &net.valid(), done)? {
                super::save(out, &net.valid(), &card)?;
            }
            report_validation(&card, progress);
        }
        if done % 5 == 0 || done == total {
            match validation {
                None => super::save(out, &net.valid(), &card)?,
                Some(_) => {
                    super::save(&last, &net.valid(), &card)?;
                    super::write_card(out, &card)?;
                }
            }
        }
    }
    Ok(card)
}

/// Reports the latest validation score (its total cost, as a negative reward).
pub(super) fn report_validation(card: &PolicyCard, progress: &dyn Fn(&Progress)) {
    if let Some(point) = card.validation.last() {
        progress(&Progress {
            phase: "validation",
            done: point.iteration,
            of: card.settings.iterations,
            reward: Some(-point.total_cost),
        });
    }
}

/// The policy's cold start: the rule-based operator's decisions over `cold_start_days` of
/// every scenario in turn, imitated (cross-entropy) for `cold_start_steps` steps.
pub(super) fn cold_start(
    scenarios: &[(String, Scenario)],
    config: &ChillerPlantConfig,
    settings: &GrpoSettings,
    device: &Device,
    progress: &dyn Fn(&Progress),
    sim_seconds: &mut f64,
) -> Result<(PolicyNet, ColdStart)> {
    let fresh = || {
        net::seeded(device, settings.seed, || {
            PolicyNet::new(settings.width, device)
        })
    };
    if settings.cold_start_steps == 0 {
        return Ok((fresh(), ColdStart::default()));
    }
    let mut examples = Vec::new();
    let days_each = (settings.cold_start_days / scenarios.len() as f64).max(1.0);
    let sim = Instant::now();
    for (k, (_, scenario)) in scenarios.iter().enumerate() {
        let seed = run_seed(settings.seed ^ 0xC01D, k as u64);
        let mut plant = ChillerPlant::new(config.clone(), seed)?;
        let mut imitated = Imitated {
            operator: RuleBasedOperator::new(&plant, OperatorRules::default())?,
            senses: Senses::new(&plant, config)?,
            seen: plant.truth().to_vec(),
            next_s: 0.0,
            examples: Vec::new(),
        };
        simulate(
            &mut plant,
            &mut imitated,
            scenario.draw(seed),
            RunSettings {
                days: days_each,
                step_s: 60.0,
            },
            None,
        )?;
        examples.extend(imitated.examples);
    }
    *sim_seconds += sim.elapsed().as_secs_f64();
    let mut net = fresh();
    let mut optimizer = AdamWConfig::new().init();
    let obs: Vec<[f32; FEATURES]> = examples.iter().map(|e| e.0).collect();
    let choices: Vec<[usize; HEADS]> = examples.iter().map(|e| e.1).collect();
    // Each choice weighed by how rare it is for its head (the operator mostly keeps things as
    // they are; the rare start of a chiller in a heat wave is the decision that matters).
    let mut counts = [[0usize; net::CHOICES]; HEADS];
    for c in &choices {
        for h in 0..HEADS {
            counts[h][c[h]] += 1;
        }
    }
    // Heads that do not act are not imitated.
    let heads = settings.control.heads();
    let weight = |h: usize, c: usize| {
        let n = choices.len() as f64 / (net::CHOICES as f64 * counts[h][c].max(1) as f64);
        if h < heads {
            n.clamp(0.2, RARE_WEIGHT_CAP) as f32
        } else {
            0.0
        }
    };
    let weights: Vec<f32> = choices
        .iter()
        .flat_map(|c| (0..HEADS).map(move |h| (h, c[h])))
        .map(|(h, c)| weight(h, c))
        .collect();
    let n = choices.len();
    let weights = Tensor::<2>::from_data(TensorData::new(weights, [n, HEADS]), device);
    let taken = net::actions(&choices, device).reshape([n, HEADS, 1]);
    for step in 0..settings.cold_start_steps {
        let all = net.log_probs(net::observations(&obs, device)); // [n, HEADS, CHOICES]
        let logp = all.gather(2, taken.clone()).reshape([n, HEADS]); // [n, HEADS]
        let loss = (logp * weights.clone()).mean().neg();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = optimizer.step(settings.learning_rate, net, grads);
        if (step + 1) % 25 == 0 || step + 1 == settings.cold_start_steps {
            progress(&Progress {
                phase: "cold start",
                done: step + 1,
                of: settings.cold_start_steps,
                reward: None,
            });
        }
    }
    // How often the imitation chooses as the operator did.
    let valid = net.valid();
    let all = valid.log_probs(net::observations(&obs, device));
    let best: Vec<i64> = all
        .argmax(2)
        .into_data()
        .convert::<i64>()
        .try_into_vec::<i64>()
        .unwrap_or_default();
    let agree = choices
        .iter()
        .enumerate()
        .filter(|(i, c)| (0..heads).all(|h| best.get(i * HEADS + h) == Some(&(c[h] as i64))))
        .count();
    Ok((
        net,
        ColdStart {
            examples: examples.len(),
            steps: settings.cold_start_steps,
            agreement: agree as f64 / examples.len().max(1) as f64,
        },
    ))
}
