//! The learned-policy reference GRPO is measured against: PPO with a value network, on the
//! same simulation budget (the same snapshots and the same number of futures an iteration,
//! of the same length), from the same cold start, with the same network and actions.
//!
//! Where GRPO scores a future as a whole against its group's mean, PPO scores each decision:
//! the reward of its own period, and a critic's estimate of what is still to come, combined by
//! generalised advantage estimation (γ 0.95, λ 0.95; a future's last decision has nothing
//! after it, as the futures are cut at the horizon). Advantages are normalised over the batch;
//! the loss is PPO's clipped ratio (0.2 both ways) and, for the critic, the squared error to
//! the returns. No KL penalty toward the cold start: plain PPO.

use std::path::Path;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use doppel_sim::chiller::ChillerPlantConfig;
use doppel_sim::plant::Plant;
use doppel_sim::random::run_seed;
use doppel_sim::run::{RunSettings, simulate};
use doppel_sim::scenario::Scenario;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::net::{self, FEATURES, HEADS, ValueNet};
use super::train::{CurvePoint, GrpoSettings, Limits, Progress, cold_start, curriculum, snapshot};
use super::validate::Validation;
use super::{Actor, PERIOD_S, PolicyCard};
use crate::error::Result;
use crate::objective::Objective;

/// Discount and GAE's λ.
const GAMMA: f32 = 0.95;
const LAMBDA: f32 = 0.95;
/// The ratio is clipped to 1 ± this.
const CLIP: f64 = 0.2;

/// One decision of a future: what the policy saw and chose, and what its period earned.
struct Decision {
    step: super::Step,
    reward: f32,
}

/// Trains a PPO policy into `out` (its weights and card, as `doppel policy train` writes
/// GRPO's; no checkpoints to resume from).
pub fn train(
    scenarios: &[(String, Scenario)],
    objective: &Objective,
    settings: GrpoSettings,
    out: &Path,
    progress: &dyn Fn(&Progress),
) -> Result<PolicyCard> {
    let began = Instant::now();
    let device = Device::flex().autodiff();
    let config = ChillerPlantConfig::default();
    let mut sim_seconds = 0.0;
    let (mut net, cold) = cold_start(
        scenarios,
        &config,
        &settings,
        &device,
        progress,
        &mut sim_seconds,
    )?;
    let mut critic = net::seeded(&device, settings.seed ^ 0x00C8_171C, || {
        ValueNet::new(settings.width, &device)
    });
    let mut policy_optimizer = AdamWConfig::new().init();
    let mut critic_optimizer = AdamWConfig::new().init();
    let mut card = PolicyCard::new("ppo", scenarios, objective, &settings, cold);
    // Kept as GRPO keeps it: the best scored on the validation episodes, where training
    // started included.
    let mut validation = Validation::new(scenarios, objective, &settings)?;
    let mut best = None;
    if let Some(v) = &mut validation {
        v.consider(&mut card, &net.valid(), 0)?;
        best = Some(net.valid());
    }
    let total = settings.iterations;
    for iteration in 0..total {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(run_seed(settings.seed, iteration as u64));
        let sampler = net.valid();
        let mut futures: Vec<Vec<Decision>> = Vec::new();
        for g in 0..settings.groups {
            let scenario = curriculum(scenarios, iteration, total, settings.groups, g);
            let seed = rng.random::<u64>();
            let sim = Instant::now();
            let (start, events) = snapshot(&config, scenario, seed, &mut rng)?;
            for k in 0..settings.group {
                let mut plant = start.clone();
                let mut actor = Actor::new(
                    sampler.clone(),
                    device.clone(),
                    &plant,
                    &config,
                    Some(run_seed(seed, k as u64)),
                    settings.control,
                )?;
                let mut limits = Limits::new(&plant, objective);
                // One decision period at a time, so each decision has its own reward.
                let mut rewards = Vec::with_capacity(settings.horizon);
                for _ in 0..settings.horizon {
                    let before = *plant.kpis();
                    let (broken, steps) = (limits.broken, limits.steps);
                    simulate(
                        &mut plant,
                        &mut actor,
                        events.clone(),
                        RunSettings {
                            days: PERIOD_S / 86_400.0,
                            step_s: 60.0,
                        },
                        Some(&mut limits),
                    )?;
                    let earned = objective.reward(
                        &before,
                        plant.kpis(),
                        limits.broken - broken,
                        limits.steps - steps,
                    );
                    rewards.push((earned / settings.reward_scale) as f32);
                }
                futures.push(
                    std::mem::take(&mut actor.steps)
                        .into_iter()
                        .zip(rewards)
                        .map(|(step, reward)| Decision { step, reward })
                        .collect(),
                );
            }
            sim_seconds += sim.elapsed().as_secs_f64();
        }

        // Advantages by GAE over each future, from the critic's values.
        let decisions: Vec<&Decision> = futures.iter().flatten().collect();
        let n = decisions.len();
        let obs: Vec<[f32; FEATURES]> = decisions.iter().map(|d| d.step.obs).collect();
        let choices: Vec<[usize; HEADS]> = decisions.iter().map(|d| d.step.choice).collect();
        let values: Vec<f32> = critic
            .valid()
            .forward(net::observations(&obs, &device))
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap_or_else(|_| vec![0.0; n]);
        let mut advantages = vec![0.0f32; n];
        let mut at = 0;
        for future in &futures {
            let mut running = 0.0;
            for i in (0..future.len()).rev() {
                let next = if i + 1 < future.len() {
                    values[at + i + 1]
                } else {
                    0.0
                };
                let delta = future[i].reward + GAMMA * next - values[at + i];
                running = delta + GAMMA * LAMBDA * running;
                advantages[at + i] = running;
            }
            at += future.len();
        }
        let returns: Vec<f32> = advantages.iter().zip(&values).map(|(a, v)| a + v).collect();
        let mean = advantages.iter().sum::<f32>() / n.max(1) as f32;
        let spread = (advantages.iter().map(|a| (a - mean).powi(2)).sum::<f32>() / n.max(1) as f32)
            .sqrt()
            .max(1e-6);
        let normalised: Vec<f32> = advantages.iter().map(|a| (a - mean) / spread).collect();

        let mut loss_value = 0.0;
        if n > 0 {
            let tensor = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [n]), &device);
            let old = tensor(decisions.iter().map(|d| d.step.logp).collect());
            let advantage = tensor(normalised);
            let target = tensor(returns);
            for _ in 0..settings.epochs {
                let logp = net.log_prob_of(
                    net::observations(&obs, &device),
                    net::actions(&choices, &device),
                    settings.control.heads(),
                );
                let ratio = (logp - old.clone()).exp();
                let clipped = ratio.clone().clamp(1.0 - CLIP, 1.0 + CLIP);
                let surrogate = (ratio * advantage.clone()).min_pair(clipped * advantage.clone());
                let loss = surrogate.mean().neg();
                loss_value = loss.clone().into_scalar::<f32>() as f64;
                let grads = GradientsParams::from_grads(loss.backward(), &net);
                net = policy_optimizer.step(settings.learning_rate, net, grads);

                let error = critic.forward(net::observations(&obs, &device)) - target.clone();
                let value_loss = (error.clone() * error).mean();
                let grads = GradientsParams::from_grads(value_loss.backward(), &critic);
                critic = critic_optimizer.step(settings.learning_rate, critic, grads);
            }
        }
        let rewards: Vec<f64> = futures
            .iter()
            .map(|f| f.iter().map(|d| f64::from(d.reward)).sum::<f64>() * settings.reward_scale)
            .collect();
        let reward = rewards.iter().sum::<f64>() / rewards.len().max(1) as f64;
        card.curve.push(CurvePoint {
            iteration,
            reward,
            groups_kept: settings.groups,
            loss: loss_value,
        });
        card.iterations_done = iteration + 1;
        card.seconds = began.elapsed().as_secs_f64();
        card.simulator_share = sim_seconds / card.seconds.max(1e-9);
        progress(&Progress {
            phase: "ppo",
            done: iteration + 1,
            of: total,
            reward: Some(reward),
        });
        if let Some(v) = &mut validation
            && v.due(iteration + 1)
        {
            if v.consider(&mut card, &net.valid(), iteration + 1)? {
                best = Some(net.valid());
            }
            super::train::report_validation(&card, progress);
        }
    }
    super::save(out, &best.unwrap_or_else(|| net.valid()), &card)?;
    Ok(card)
}
