//! From truth to readings: what real instruments do to a true value.
//!
//! Noise, quantisation, a sampling period per sensor, random lost samples and short outages,
//! the instrument's range, and the faults a scenario injects (stuck, drift, bias, spikes,
//! dropout, extra noise) or an intruder fakes (replayed history, plausible made-up values).
//! Every draw comes from the `Sensors` stream keyed by step, so reading the sensors or skipping
//! them never changes the physics, and the same step always reads the same way.
//! This module must never change the truth: it only describes how the truth is seen.

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

use crate::plant::{Readings, SensorSpec};
use crate::random::{Stream, hashed_unit, stream};

/// How a faulty or spoofed sensor misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultMode {
    /// Repeats the value it showed when the fault began.
    Stuck,
    /// Drifts away from the truth by `magnitude` units per day.
    Drift,
    /// Reads `magnitude` units off.
    Bias,
    /// Jumps by `magnitude` units on about one sample in twenty.
    Spike,
    /// Reports nothing.
    Dropout,
    /// Adds noise of standard deviation `magnitude`.
    Noise,
    /// Cyber: replays what the sensor truly read `offset_s` earlier.
    Replay,
    /// Cyber: reports a plausible, calm value near the one it showed when the attack began.
    Fake,
}

impl FaultMode {
    pub const ALL: [(&'static str, FaultMode); 8] = [
        ("stuck", FaultMode::Stuck),
        ("drift", FaultMode::Drift),
        ("bias", FaultMode::Bias),
        ("spike", FaultMode::Spike),
        ("dropout", FaultMode::Dropout),
        ("noise", FaultMode::Noise),
        ("replay", FaultMode::Replay),
        ("fake", FaultMode::Fake),
    ];
}

/// A fault active on one sensor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SensorFault {
    pub mode: FaultMode,
    pub magnitude: f64,
    /// When the fault began, seconds since the run started.
    pub since_s: f64,
    /// For `Replay`: how far back the replayed readings come from, in seconds.
    pub offset_s: f64,
}

/// Instrument imperfections shared by all sensors of a plant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SensorQuality {
    /// Chance that any one sample is lost.
    pub dropout_prob: f64,
    /// Chance that a block of `outage_steps` steps of one sensor is lost (a network outage).
    pub outage_prob: f64,
    pub outage_steps: u64,
}

impl Default for SensorQuality {
    fn default() -> Self {
        SensorQuality {
            dropout_prob: 0.001,
            outage_prob: 0.0005,
            outage_steps: 30,
        }
    }
}

/// The sensor layer of a plant. Its state (held values, replay history) is part of the
/// plant's snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensorModel {
    quality: SensorQuality,
    /// The value a stuck or faked sensor holds, and the fault start it was taken at.
    held: Vec<Option<(f64, f64)>>,
    /// True history of watched sensors (ring buffers), for replay attacks.
    history: Vec<Option<History>>,
    /// How many sensors are watched (most runs: none, and `track` has nothing to do).
    watched: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct History {
    values: Vec<f64>,
    next: usize,
    filled: usize,
}

impl SensorModel {
    pub fn new(sensors: usize, quality: SensorQuality) -> Self {
        SensorModel {
            quality,
            held: vec![None; sensors],
            history: vec![None; sensors],
            watched: 0,
        }
    }

    /// Starts keeping `steps` steps of a sensor's true history.
    pub fn watch(&mut self, sensor: usize, steps: usize) {
        let steps = steps.max(1);
        match &mut self.history[sensor] {
            Some(h) if h.values.len() >= steps => {}
            slot => {
                if slot.is_none() {
                    self.watched += 1;
                }
                *slot = Some(History {
                    values: vec![0.0; steps],
                    next: 0,
                    filled: 0,
                })
            }
        }
    }

    /// Called every step, read or not: remembers what faults need from the past.
    pub fn track(&mut self, truth: &[f64], faults: &[Option<SensorFault>], any_fault: bool) {
        if self.watched == 0 && !any_fault {
            return;
        }
        for (i, h) in self.history.iter_mut().enumerate() {
            if let Some(h) = h {
                let len = h.values.len();
                h.values[h.next] = truth[i];
                h.next = (h.next + 1) % len;
                h.filled = (h.filled + 1).min(len);
            }
        }
        for (i, fault) in faults.iter().enumerate() {
            if let Some(f) = fault
                && matches!(f.mode, FaultMode::Stuck | FaultMode::Fake)
                && self.held[i].is_none_or(|(_, since)| since != f.since_s)
            {
                self.held[i] = Some((truth[i], f.since_s));
            }
        }
    }

    fn held_value(&self, sensor: usize, now: f64) -> f64 {
        self.held[sensor].map_or(now, |(v, _)| v)
    }

    /// The true value `back_steps` steps ago (0 = now), if kept.
    fn past(&self, sensor: usize, back_steps: usize) -> Option<f64> {
        let h = self.history[sensor].as_ref()?;
        let len = h.values.len();
        if back_steps >= h.filled {
            return None;
        }
        Some(h.values[(h.next + len - 1 - back_steps) % len])
    }

    /// Reads every sensor at the end of step `step` (which ended at `t_s` and lasted `dt`).
    #[allow(clippy::too_many_arguments)]
    pub fn read(
        &self,
        specs: &[SensorSpec],
        truth: &[f64],
        faults: &[Option<SensorFault>],
        seed: u64,
        step: u64,
        t_s: f64,
        dt: f64,
        out: &mut Readings,
    ) {
        let mut rng = stream(seed, Stream::Sensors, step);
        let block = step / self.quality.outage_steps.max(1);
        for (i, spec) in specs.iter().enumerate() {
            // Always four draws per sensor, so one sensor's fault never shifts another's noise.
            let z: f64 = rng.sample(StandardNormal);
            let z2: f64 = rng.sample(StandardNormal);
            let u: f64 = rng.random();
            let u2: f64 = rng.random();
            // A sensor reports when its sampling grid was crossed during this step.
            let sampled = spec.period_s <= dt
                || (t_s / spec.period_s).floor() != ((t_s - dt) / spec.period_s).floor();
            let lost = u < self.quality.dropout_prob
                || hashed_unit(seed ^ 0x5EED, i as u64, block) < self.quality.outage_prob;
            if !sampled || lost {
                out.present[i] = false;
                continue;
            }
            let mut value = truth[i] + spec.noise_sd * z;
            let mut present = true;
            if let Some(f) = faults[i] {
                match f.mode {
                    FaultMode::Stuck => value = self.held_value(i, truth[i]),
                    FaultMode::Drift => value += f.magnitude * (t_s - f.since_s) / 86_400.0,
                    FaultMode::Bias => value += f.magnitude,
                    FaultMode::Spike => {
                        if u2 < 0.05 {
                            value += f.magnitude;
                        }
                    }
                    FaultMode::Dropout => present = false,
                    FaultMode::Noise => value += f.magnitude * z2,
                    FaultMode::Replay => {
                        let back = (f.offset_s / dt).round() as usize;
                        match self.past(i, back) {
                            Some(past) => value = past + spec.noise_sd * z,
                            // Nothing recorded that far back yet: the intruder sends nothing.
                            None => present = false,
                        }
                    }
                    FaultMode::Fake => value = self.held_value(i, truth[i]) + spec.noise_sd * z,
                }
            }
            if !present || !value.is_finite() {
                out.present[i] = false;
                continue;
            }
            if spec.resolution > 0.0 {
                value = quantize(value, spec.resolution);
            }
            out.values[i] = value.clamp(spec.min, spec.max);
            out.present[i] = true;
        }
    }
}

/// `value` on a grid of `resolution`, as a real instrument reports it: a reading of 0.1
/// resolution is written 72.1, not 72.10000000000001, so dividing by the steps per unit
/// where the resolution is a decimal fraction (multiplying by 0.1 leaves binary noise).
/// Never a negative zero.
fn quantize(value: f64, resolution: f64) -> f64 {
    let per_unit = (1.0 / resolution).round();
    let quantized = if per_unit >= 1.0 && (per_unit * resolution - 1.0).abs() < 1e-9 {
        (value * per_unit).round() / per_unit
    } else {
        (value / resolution).round() * resolution
    };
    quantized + 0.0
}

#[cfg(test)]
mod tests {
    use super::quantize;

    /// Readings print as the instrument shows them: no binary noise, no `-0`.
    #[test]
    fn quantized_readings_print_as_decimals() {
        for (value, resolution, printed) in [
            (72.104, 0.1, "72.1"),
            (4.6049, 0.1, "4.6"),
            (12.9549, 0.01, "12.95"),
            (-0.04, 0.1, "0"),
            (1349.2, 1.0, "1349"),
            (17.3, 5.0, "15"),
        ] {
            assert_eq!(quantize(value, resolution).to_string(), printed);
        }
    }
}
