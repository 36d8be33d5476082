//! Turns a run's drawn events into what the plant feels at each step.
//!
//! Before the run, [`Timeline::prepare`] asks the plant to keep the history a replay attack
//! will need. At each step, [`Timeline::at`] sets the disturbances (offsets add, factors
//! multiply, the latest sensor fault wins) and hands out one-off events (trips, intruders'
//! commands) exactly once. This module never changes the plant itself.

use crate::plant::{Action, Disturbances, Plant};
use crate::scenario::{DrawnEffect, Event};
use crate::sensors::{FaultMode, SensorFault};

/// Heat waves build up and fade over this fraction of their length.
const RAMP_FRACTION: f64 = 0.15;

pub struct Timeline {
    events: Vec<Event>,
    fired: Vec<bool>,
}

impl Timeline {
    pub fn new(events: Vec<Event>) -> Self {
        let fired = vec![false; events.len()];
        Timeline { events, fired }
    }

    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Lets the plant keep the sensor history replay attacks will send back.
    pub fn prepare(&self, plant: &mut dyn Plant, dt: f64) {
        for e in &self.events {
            if let DrawnEffect::Sensors {
                sensors,
                mode: FaultMode::Replay,
                offset_s,
                ..
            } = &e.effect
            {
                for &s in sensors {
                    plant.watch(s, *offset_s, dt);
                }
            }
        }
    }

    /// Whether each event is active during the step that starts at `t_s`.
    pub fn active(&self, t_s: f64) -> impl Iterator<Item = bool> + '_ {
        self.events
            .iter()
            .map(move |e| e.start_s <= t_s && t_s < e.end_s)
    }

    /// Sets `dist` for the step starting at `t_s`, and pushes commands due now.
    pub fn at(&mut self, t_s: f64, dist: &mut Disturbances, commands: &mut Vec<Action>) {
        if self.events.is_empty() {
            return;
        }
        dist.ambient_offset_c = 0.0;
        dist.load_factor = 1.0;
        dist.price_factor = 1.0;
        dist.parts_delay_h = 0.0;
        dist.trips.clear();
        dist.degradation_factor.iter_mut().for_each(|f| *f = 1.0);
        if dist.any_sensor_fault {
            dist.sensor_faults.iter_mut().for_each(|f| *f = None);
            dist.any_sensor_fault = false;
        }
        for (i, e) in self.events.iter().enumerate() {
            let active = e.start_s <= t_s && t_s < e.end_s;
            // One-off events fire at the first step at or after their start.
            if t_s >= e.start_s && !self.fired[i] {
                match &e.effect {
                    DrawnEffect::Trip { assets } => {
                        self.fired[i] = true;
                        dist.trips.extend_from_slice(assets);
                    }
                    DrawnEffect::Command { actuator, value } => {
                        self.fired[i] = true;
                        commands.push(Action::Set {
                            actuator: *actuator,
                            value: *value,
                        });
                    }
                    _ => {}
                }
            }
            if !active {
                continue;
            }
            match &e.effect {
                DrawnEffect::HeatWave { delta_c } => {
                    let into = t_s - e.start_s;
                    let weight = if e.end_s.is_finite() {
                        let length = e.end_s - e.start_s;
                        let ramp = (RAMP_FRACTION * length).max(1.0);
                        (into / ramp).min((e.end_s - t_s) / ramp).min(1.0)
                    } else {
                        (into / 43_200.0).min(1.0)
                    };
                    dist.ambient_offset_c += delta_c * weight;
                }
                DrawnEffect::LoadSurge { factor } => dist.load_factor *= factor,
                DrawnEffect::PriceSpike { factor } => dist.price_factor *= factor,
                DrawnEffect::PartsDelay { delay_h } => dist.parts_delay_h += delay_h,
                DrawnEffect::Degradation { assets, factor } => {
                    for &a in assets {
                        dist.degradation_factor[a] *= factor;
                    }
                }
                DrawnEffect::Sensors {
                    sensors,
                    mode,
                    magnitude,
                    offset_s,
                } => {
                    dist.any_sensor_fault = true;
                    for &s in sensors {
                        dist.sensor_faults[s] = Some(SensorFault {
                            mode: *mode,
                            magnitude: *magnitude,
                            since_s: e.start_s,
                            offset_s: *offset_s,
                        });
                    }
                }
                DrawnEffect::Trip { .. } | DrawnEffect::Command { .. } => {}
            }
        }
    }
}
