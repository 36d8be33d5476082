//! Scenarios in words, for `doppel scenario check` and reports: "pump2 trips", not the
//! parser's structures. Only describes; never draws or checks.

use super::{Disruption, Dist, Effect, Target};
use crate::sensors::FaultMode;

/// The unit a distribution's values are in.
#[derive(Clone, Copy)]
pub enum Unit {
    /// Seconds, written in the largest whole unit (`3d`, `6h`, `90s`).
    Time,
    /// Kelvin.
    Kelvin,
    /// A factor (`×1.5`).
    Factor,
    /// A plain number.
    Plain,
}

impl Unit {
    fn value(self, x: f64) -> String {
        match self {
            Unit::Time => match x {
                x if x != 0.0 && x % 86_400.0 == 0.0 => format!("{}d", x / 86_400.0),
                x if x != 0.0 && x % 3600.0 == 0.0 => format!("{}h", x / 3600.0),
                x if x != 0.0 && x % 60.0 == 0.0 => format!("{}min", x / 60.0),
                x => format!("{x}s"),
            },
            Unit::Kelvin => format!("{x} K"),
            Unit::Factor => format!("×{x}"),
            Unit::Plain => format!("{x}"),
        }
    }
}

impl Dist {
    /// The distribution in words: `3d`, `uniform 3d..20d`, `one of 1, 2`.
    pub fn in_words(&self, unit: Unit) -> String {
        let v = |x: f64| unit.value(x);
        match self {
            Dist::Fixed(x) => v(*x),
            Dist::Uniform(a, b) => format!("uniform {}..{}", v(*a), v(*b)),
            Dist::Normal(m, s) => format!("normal(mean {}, sd {})", v(*m), v(*s)),
            Dist::Exponential(m) => format!("exponential(mean {})", v(*m)),
            Dist::Choice(xs) => format!(
                "one of {}",
                xs.iter().map(|x| v(*x)).collect::<Vec<_>>().join(", ")
            ),
        }
    }
}

impl Disruption {
    /// What the disruption does, in a sentence: `pump2 trips`, `one of pump1, pump2 trips`,
    /// `outdoor air up to uniform 6 K..10 K warmer at the peak`.
    pub fn effect_in_words(&self) -> String {
        let name = |i: usize| {
            self.target_names
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("#{i}"))
        };
        // "pump2 trips" / "pump1 and pump2 trip" / "one of pump1, pump2 trips".
        let subject = |target: &Target, one: &str, many: &str| -> String {
            match target {
                Target::All(v) if v.len() == 1 => format!("{} {one}", name(v[0])),
                Target::All(v) => {
                    let names: Vec<String> = v.iter().map(|&i| name(i)).collect();
                    let (last, rest) = names.split_last().expect("targets are never empty");
                    format!("{} and {last} {many}", rest.join(", "))
                }
                Target::OneOf(v) => {
                    let names: Vec<String> = v.iter().map(|&i| name(i)).collect();
                    format!("one of {} (drawn per run) {one}", names.join(", "))
                }
            }
        };
        match &self.effect {
            Effect::HeatWave { delta_c } => format!(
                "outdoor air up to {} warmer at the peak",
                delta_c.in_words(Unit::Kelvin)
            ),
            Effect::LoadSurge { factor } => {
                format!("heat load {}", factor.in_words(Unit::Factor))
            }
            Effect::Trip { assets } => subject(assets, "trips", "trip"),
            Effect::Degradation { assets, factor } => format!(
                "{} {} faster",
                subject(assets, "wears", "wear"),
                factor.in_words(Unit::Factor)
            ),
            Effect::PriceSpike { factor } => {
                format!("electricity price {}", factor.in_words(Unit::Factor))
            }
            Effect::PartsDelay { delay_s } => format!(
                "spare parts ordered meanwhile arrive {} later",
                delay_s.in_words(Unit::Time)
            ),
            Effect::Sensors {
                sensors,
                mode,
                magnitude,
                offset_s,
            } => {
                let how = match mode {
                    FaultMode::Stuck => "sticks at its last value".to_owned(),
                    FaultMode::Drift => {
                        format!("drifts by {} units a day", magnitude.in_words(Unit::Plain))
                    }
                    FaultMode::Bias => {
                        format!("reads {} units off", magnitude.in_words(Unit::Plain))
                    }
                    FaultMode::Spike => format!(
                        "jumps by {} units on about one sample in twenty",
                        magnitude.in_words(Unit::Plain)
                    ),
                    FaultMode::Dropout => "reports nothing".to_owned(),
                    FaultMode::Noise => {
                        format!("gets extra noise (sd {})", magnitude.in_words(Unit::Plain))
                    }
                    FaultMode::Replay => format!(
                        "is spoofed: replays what it read {} earlier",
                        offset_s.in_words(Unit::Time)
                    ),
                    FaultMode::Fake => {
                        "is spoofed: sends calm values near the one at the start".to_owned()
                    }
                };
                // The verb agrees with one sensor; a list reads "a and b: ...".
                match sensors {
                    Target::All(v) if v.len() > 1 => format!(
                        "{}: each {how}",
                        v.iter().map(|&i| name(i)).collect::<Vec<_>>().join(", ")
                    ),
                    _ => subject(sensors, &how, &how),
                }
            }
            Effect::Command { actuator, value } => format!(
                "an intruder sets {} to {}",
                name(*actuator),
                value.in_words(Unit::Plain)
            ),
        }
    }
}
