//! One run: a plant, a policy and a scenario's drawn events, stepped forward in time.
//!
//! The loop is the same for a single recorded run (`doppel sim run`), for live streaming
//! (`doppel up`) and for each of a Monte Carlo study's thousands of runs; only the observer
//! differs. Readings are produced only when someone looks (the observer or the policy).

use serde::Serialize;

use crate::error::{Result, SimError};
use crate::kpi::Kpis;
use crate::plant::{Action, AssetLabel, Disturbances, FailureEvent, Plant, Readings};
use crate::policy::Policy;
use crate::scenario::Event;
use crate::timeline::Timeline;

/// How long a run lasts and how finely it is stepped.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunSettings {
    pub days: f64,
    pub step_s: f64,
}

impl RunSettings {
    pub fn steps(&self) -> Result<u64> {
        if !(self.step_s.is_finite() && self.step_s > 0.0) {
            return Err(SimError::Settings(format!(
                "the step must be positive, not {} s",
                self.step_s
            )));
        }
        if !(self.days.is_finite() && self.days > 0.0) {
            return Err(SimError::Settings(format!(
                "a run must last a positive number of days, not {}",
                self.days
            )));
        }
        Ok((self.days * 86_400.0 / self.step_s).round().max(1.0) as u64)
    }
}

/// What one step looked like, for an observer that records or streams it.
pub struct StepView<'a> {
    pub step: u64,
    /// Seconds since the start of the run, at the end of the step (when it was read).
    pub t_s: f64,
    pub readings: &'a Readings,
    pub truth: &'a [f64],
    pub labels: &'a [AssetLabel],
    /// Whether each of the run's events was active during the step.
    pub active: &'a [bool],
}

/// Someone watching every step. Returning `false` stops the run early.
pub trait Observer {
    fn observe(&mut self, view: &StepView) -> Result<bool>;
}

/// What a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub kpis: Kpis,
    pub failures: Vec<FailureEvent>,
    pub events: Vec<Event>,
    /// The first refused actions, with when and why.
    pub refused: Vec<(f64, String)>,
    pub steps: u64,
}

const REFUSALS_KEPT: usize = 20;

/// Runs `plant` under `policy` through `events`. With an observer, every step is read and
/// shown to it.
pub fn simulate(
    plant: &mut dyn Plant,
    policy: &mut dyn Policy,
    events: Vec<Event>,
    settings: RunSettings,
    mut observer: Option<&mut dyn Observer>,
) -> Result<RunOutcome> {
    let steps = settings.steps()?;
    let dt = settings.step_s;
    let end_s = plant.time_s() + steps as f64 * dt;
    let mut timeline = Timeline::new(crate::scenario::starting_before(events, end_s));
    timeline.prepare(plant, dt);
    let mut dist = Disturbances::none(plant.assets().len(), plant.sensors().len());
    let mut readings = Readings::new(plant.sensors().len());
    let mut actions: Vec<Action> = Vec::new();
    let mut commands: Vec<Action> = Vec::new();
    let mut refused: Vec<(f64, String)> = Vec::new();
    let mut refused_count = 0.0;
    let mut active: Vec<bool> = Vec::new();
    let mut done = 0;
    for step in 0..steps {
        let t = plant.time_s();
        timeline.at(t, &mut dist, &mut commands);
        // An intruder's command goes through the same checks as anyone's.
        for command in commands.drain(..) {
            if let Err(e) = plant.act(&command) {
                note(&mut refused, t, format!("intruder's command: {e}"));
            }
        }
        let end = t + dt;
        let look = observer.is_some() || policy.wants_readings(end);
        plant.step(dt, &[], &dist, look.then_some(&mut readings))?;
        if look {
            policy.decide(end, &readings, &mut actions);
            for action in actions.drain(..) {
                if let Err(e) = plant.act(&action) {
                    refused_count += 1.0;
                    note(&mut refused, end, format!("{}: {e}", policy.name()));
                }
            }
        }
        done = step + 1;
        if let Some(obs) = observer.as_deref_mut() {
            active.clear();
            active.extend(timeline.active(t));
            let labels = plant.labels();
            let view = StepView {
                step,
                t_s: end,
                readings: &readings,
                truth: plant.truth(),
                labels: &labels,
                active: &active,
            };
            if !obs.observe(&view)? {
                break;
            }
        }
    }
    let mut kpis = *plant.kpis();
    kpis.refused_actions += refused_count;
    Ok(RunOutcome {
        kpis,
        failures: plant.failures().to_vec(),
        events: timeline.events().to_vec(),
        refused,
        steps: done,
    })
}

fn note(refused: &mut Vec<(f64, String)>, t: f64, message: String) {
    if refused.len() < REFUSALS_KEPT {
        refused.push((t, message));
    }
}
