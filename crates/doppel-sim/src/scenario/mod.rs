//! Disruption scenarios: what goes wrong, when, where and how hard, read from TOML.
//!
//! A scenario is a list of `[[disruption]]` tables. Times and sizes are fixed values or
//! distributions (`{ uniform = [a, b] }`, `{ normal = [mean, sd] }`, `{ exponential = mean }`,
//! `{ choice = [...] }`), drawn afresh for every run of a Monte Carlo study from the run's
//! `Scenario` stream. Every problem in a file is reported with file, line, column and key.
//! The format is documented in docs/SCENARIOS.md. This module only reads and draws; it never
//! runs a plant (that is [`crate::timeline`]).

use std::path::Path;

use rand::Rng;
use rand_distr::{Distribution, Exp, Normal};
use serde::{Deserialize, Serialize};

mod parse;
mod words;

pub use words::Unit;

use crate::error::{Result, SimError};
use crate::plant::Plant;
use crate::random::{Stream, stream};
use crate::sensors::FaultMode;

/// A value drawn per run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Dist {
    Fixed(f64),
    Uniform(f64, f64),
    Normal(f64, f64),
    Exponential(f64),
    Choice(Vec<f64>),
}

impl Dist {
    fn sample(&self, rng: &mut impl Rng) -> f64 {
        match self {
            Dist::Fixed(v) => *v,
            Dist::Uniform(a, b) => a + (b - a) * rng.random::<f64>(),
            Dist::Normal(m, s) => Normal::new(*m, *s).map(|d| d.sample(rng)).unwrap_or(*m),
            Dist::Exponential(mean) => Exp::new(1.0 / mean).map(|d| d.sample(rng)).unwrap_or(*mean),
            Dist::Choice(values) => values[rng.random_range(0..values.len())],
        }
    }
}

/// Which assets, sensors... a disruption hits.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Target {
    /// All of these (by index).
    All(Vec<usize>),
    /// One of these, drawn per run.
    OneOf(Vec<usize>),
}

impl Target {
    fn draw(&self, rng: &mut impl Rng) -> Vec<usize> {
        match self {
            Target::All(v) => v.clone(),
            Target::OneOf(v) => vec![v[rng.random_range(0..v.len())]],
        }
    }
}

/// What a disruption does, with its size still to be drawn.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Effect {
    /// Outdoor temperature raised by `delta_c` K at the peak (ramping in and out).
    HeatWave { delta_c: Dist },
    /// Heat load multiplied by `factor`.
    LoadSurge { factor: Dist },
    /// Assets trip (fail) at the start.
    Trip { assets: Target },
    /// Degradation (bearing wear, fouling) of assets runs `factor` times faster.
    Degradation { assets: Target, factor: Dist },
    /// Electricity price multiplied by `factor`.
    PriceSpike { factor: Dist },
    /// Spare parts ordered during the window take `delay` seconds longer.
    PartsDelay { delay_s: Dist },
    /// Sensors misbehave (faults or spoofing).
    Sensors {
        sensors: Target,
        mode: FaultMode,
        magnitude: Dist,
        offset_s: Dist,
    },
    /// An intruder sets an actuator.
    Command { actuator: usize, value: Dist },
}

/// One `[[disruption]]` of a scenario.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Disruption {
    pub kind: String,
    /// The file's `label`, or kind and every target it may hit (`pump_trip:pump1|pump2`).
    pub label: String,
    /// Whether `label` came from the file: a drawn event then keeps it, instead of naming
    /// the targets it hit.
    pub label_given: bool,
    /// The names of the plant's assets, sensors or actuators, by the index a target uses
    /// (empty for a disruption without targets): events and reports speak in names.
    pub target_names: Vec<String>,
    pub probability: f64,
    pub start_s: Dist,
    /// `None`: until the end of the run.
    pub duration_s: Option<Dist>,
    pub effect: Effect,
}

/// A scenario: a name, a description and its disruptions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub disruptions: Vec<Disruption>,
}

/// One disruption as drawn for one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Index of the disruption in its scenario.
    pub disruption: usize,
    pub kind: String,
    /// Human-readable: kind and the targets drawn, such as `pump_trip:pump2`, or the
    /// scenario's own label.
    pub label: String,
    /// The names of the assets, sensors or actuator drawn (empty for plant-wide effects).
    #[serde(default)]
    pub targets: Vec<String>,
    pub start_s: f64,
    /// `f64::INFINITY`: until the end of the run.
    pub end_s: f64,
    pub effect: DrawnEffect,
}

/// An effect with its size drawn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum DrawnEffect {
    HeatWave {
        delta_c: f64,
    },
    LoadSurge {
        factor: f64,
    },
    Trip {
        assets: Vec<usize>,
    },
    Degradation {
        assets: Vec<usize>,
        factor: f64,
    },
    PriceSpike {
        factor: f64,
    },
    PartsDelay {
        delay_h: f64,
    },
    Sensors {
        sensors: Vec<usize>,
        mode: FaultMode,
        magnitude: f64,
        offset_s: f64,
    },
    Command {
        actuator: usize,
        value: f64,
    },
}

impl Scenario {
    /// The scenario with no disruptions (the baseline).
    pub fn baseline() -> Scenario {
        Scenario {
            name: "baseline".into(),
            description: "no disruptions".into(),
            disruptions: Vec::new(),
        }
    }

    /// Reads and checks a scenario file against the plant it will run on.
    pub fn load(path: &Path, plant: &dyn Plant) -> Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|source| SimError::ReadScenario {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(&text, path, plant)
    }

    /// Parses and checks a scenario; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path, plant: &dyn Plant) -> Result<Scenario> {
        parse::parse(text, file, plant)
    }

    /// Draws the events of run `run_seed`. Disruptions that do not happen in this run
    /// (see `probability`) are left out.
    pub fn draw(&self, run_seed: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for (i, d) in self.disruptions.iter().enumerate() {
            let mut rng = stream(run_seed, Stream::Scenario, i as u64);
            // Always the same draws in the same order, so one disruption's settings never
            // change another's.
            let happens = rng.random::<f64>() < d.probability;
            let start_s = d.start_s.sample(&mut rng).max(0.0);
            let end_s = d
                .duration_s
                .as_ref()
                .map_or(f64::INFINITY, |dur| start_s + dur.sample(&mut rng).max(0.0));
            let effect = match &d.effect {
                Effect::HeatWave { delta_c } => DrawnEffect::HeatWave {
                    delta_c: delta_c.sample(&mut rng),
                },
                Effect::LoadSurge { factor } => DrawnEffect::LoadSurge {
                    factor: factor.sample(&mut rng).max(0.0),
                },
                Effect::Trip { assets } => DrawnEffect::Trip {
                    assets: assets.draw(&mut rng),
                },
                Effect::Degradation { assets, factor } => DrawnEffect::Degradation {
                    assets: assets.draw(&mut rng),
                    factor: factor.sample(&mut rng).max(0.0),
                },
                Effect::PriceSpike { factor } => DrawnEffect::PriceSpike {
                    factor: factor.sample(&mut rng).max(0.0),
                },
                Effect::PartsDelay { delay_s } => DrawnEffect::PartsDelay {
                    delay_h: delay_s.sample(&mut rng).max(0.0) / 3600.0,
                },
                Effect::Sensors {
                    sensors,
                    mode,
                    magnitude,
                    offset_s,
                } => DrawnEffect::Sensors {
                    sensors: sensors.draw(&mut rng),
                    mode: *mode,
                    magnitude: magnitude.sample(&mut rng),
                    offset_s: offset_s.sample(&mut rng).max(0.0),
                },
                Effect::Command { actuator, value } => DrawnEffect::Command {
                    actuator: *actuator,
                    value: value.sample(&mut rng),
                },
            };
            if happens {
                let targets: Vec<String> = effect
                    .target_indices()
                    .iter()
                    .filter_map(|&t| d.target_names.get(t).cloned())
                    .collect();
                let label = match (d.label_given, targets.is_empty()) {
                    (false, false) => format!("{}:{}", d.kind, targets.join("+")),
                    _ => d.label.clone(),
                };
                events.push(Event {
                    disruption: i,
                    kind: d.kind.clone(),
                    label,
                    targets,
                    start_s,
                    end_s,
                    effect,
                });
            }
        }
        events
    }
}

impl DrawnEffect {
    /// The indices of the assets, sensors or actuator this effect hits.
    pub fn target_indices(&self) -> Vec<usize> {
        match self {
            DrawnEffect::Trip { assets } | DrawnEffect::Degradation { assets, .. } => {
                assets.clone()
            }
            DrawnEffect::Sensors { sensors, .. } => sensors.clone(),
            DrawnEffect::Command { actuator, .. } => vec![*actuator],
            _ => Vec::new(),
        }
    }
}

/// The events that start before `end_s` (seconds from the plant's start): one drawn to
/// start after a run ends never happens in it, so it is neither run, written, nor counted.
pub fn starting_before(events: Vec<Event>, end_s: f64) -> Vec<Event> {
    events.into_iter().filter(|e| e.start_s < end_s).collect()
}
