//! A policy file: the reward a policy earns and the hard limits it must keep, both in the
//! rule language, checked against the plant before anything runs.
//!
//! ```toml
//! reward = "-energy_cost - 50 * limit_excursion_minutes - maintenance_cost"
//! floor = -1000
//! [[limit]]
//! name = "supply temperature"
//! keep = "chw_supply_temp <= 9.5"
//! ```
//!
//! The reward reads the KPIs accrued over one decision period; the limits read, at every step,
//! each sensor's true value by its id and a few quantities of the plant's operation
//! ([`Watch`]). Each step at which a limit broke earns `floor` instead of its share of the
//! period's reward. Every problem in a file is
//! reported with file, line, column and what was expected, and a file with a problem is not
//! used at all.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;

use doppel_core::located::Problems;
use doppel_rules::{Expr, Truth, check_expression, number_from, truth_from};
use doppel_sim::kpi::Kpis;
use doppel_sim::plant::{AssetLabel, AssetStatus, Plant};
use serde::Deserialize;
use toml::Spanned;

use crate::error::{AutonomyError, Result};

/// The reference plant's policy file (examples/reference-plant/policy.toml), built in.
pub const REFERENCE: &str = include_str!("../../../examples/reference-plant/policy.toml");

/// Quantities of the plant's operation a limit may read besides its sensors, with their units.
pub const OPERATION: [(&str, &str); 4] = [
    ("pumps_running", ""),
    ("chillers_running", ""),
    ("minutes_between_chiller_starts", "min"),
    ("setpoint_step_k", "K"),
];

/// One hard limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub name: String,
    /// The condition as written.
    pub keep: String,
    condition: Expr,
}

/// A checked policy file.
#[derive(Debug, Clone)]
pub struct Objective {
    /// The reward as written.
    pub reward_text: String,
    reward: Expr,
    pub floor: f64,
    pub limits: Vec<Limit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    reward: Spanned<String>,
    floor: Option<f64>,
    #[serde(default)]
    limit: Vec<RawLimit>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    name: Spanned<String>,
    keep: Spanned<String>,
}

impl Objective {
    /// Reads and checks a policy file against `plant`.
    pub fn load(path: &Path, plant: &dyn Plant) -> Result<Objective> {
        let text = std::fs::read_to_string(path).map_err(|source| AutonomyError::Read {
            path: path.to_owned(),
            source,
        })?;
        Objective::parse(&text, path, plant)
    }

    /// The reference plant's built-in objective.
    pub fn reference(plant: &dyn Plant) -> Result<Objective> {
        Objective::parse(
            REFERENCE,
            Path::new("examples/reference-plant/policy.toml"),
            plant,
        )
    }

    /// Parses and checks a policy file; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path, plant: &dyn Plant) -> Result<Objective> {
        let mut problems = Problems::new(text, file);
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(e.span().unwrap_or(0..0), "policy", e.message().to_owned());
                return Err(AutonomyError::PolicyFile(problems.list));
            }
        };
        let kpis: HashMap<&str, &str> = Kpis::default()
            .named()
            .iter()
            .filter(|(name, _)| *name != "peak_supply_temp_c")
            .map(|(name, _)| (*name, ""))
            .collect();
        let mut quantities: HashMap<&str, &str> = plant
            .sensors()
            .iter()
            .map(|s| (s.id.as_str(), s.unit.as_str()))
            .collect();
        quantities.extend(OPERATION);
        let reward = check(&mut problems, &raw.reward, "reward".into(), &kpis, "KPI");
        let mut limits = Vec::new();
        let mut seen: Vec<String> = Vec::new();
        for (i, limit) in raw.limit.iter().enumerate() {
            let name = limit.name.get_ref().trim().to_owned();
            if name.is_empty() || seen.contains(&name) {
                problems.push(
                    limit.name.span(),
                    format!("limit[{i}].name"),
                    "each limit needs a name of its own: counts of broken limits go by it",
                );
            }
            seen.push(name.clone());
            if let Some(condition) = check(
                &mut problems,
                &limit.keep,
                format!("limit[{i}].keep"),
                &quantities,
                "sensor or quantity",
            ) {
                limits.push(Limit {
                    name,
                    keep: limit.keep.get_ref().clone(),
                    condition,
                });
            }
        }
        let floor = raw.floor.unwrap_or(-1000.0);
        if !floor.is_finite() {
            problems.push(0..0, "floor", "the floor must be a number");
        }
        match reward {
            Some(reward) if problems.list.is_empty() => Ok(Objective {
                reward_text: raw.reward.into_inner(),
                reward,
                floor,
                limits,
            }),
            _ => Err(AutonomyError::PolicyFile(problems.list)),
        }
    }

    /// What a period of `steps` steps earns from the KPIs accrued in it (`after − before`),
    /// each of its `broken` steps (a limit broken) earning the floor instead of its share. An
    /// unknown reward (a division by zero) earns the floor for every step.
    ///
    /// Flooring step by step rather than the whole period keeps an order among periods that
    /// all break a limit (a heat wave, a malicious setpoint): fewer broken steps is better, so a
    /// policy is still drawn back inside its limits.
    pub fn reward(&self, before: &Kpis, after: &Kpis, broken: u32, steps: u32) -> f64 {
        let steps = steps.max(1);
        let broken = broken.min(steps);
        let (b, a) = (before.named(), after.named());
        let value = |name: &str| {
            a.iter()
                .zip(&b)
                .find(|((n, _), _)| *n == name)
                .map(|((_, x), (_, y))| x - y)
        };
        match number_from(&self.reward, &value) {
            Some(earned) => {
                earned * f64::from(steps - broken) / f64::from(steps)
                    + self.floor * f64::from(broken)
            }
            None => self.floor * f64::from(steps),
        }
    }

    /// The first limit broken now, by index; unknown is not broken (in a simulation every
    /// quantity is known).
    pub fn broken(&self, watch: &Watch) -> Option<usize> {
        let names = |name: &str| watch.get(name);
        self.limits
            .iter()
            .position(|l| truth_from(&l.condition, &names) == Truth::False)
    }

    /// Adds one to `counts[k]` for every limit `k` broken now (`counts` has one place a
    /// limit); whether any was.
    pub fn count_broken(&self, watch: &Watch, counts: &mut [u32]) -> bool {
        let names = |name: &str| watch.get(name);
        let mut any = false;
        for (limit, count) in self.limits.iter().zip(counts.iter_mut()) {
            if truth_from(&limit.condition, &names) == Truth::False {
                *count += 1;
                any = true;
            }
        }
        any
    }
}

/// Checks one expression of the file against the names it may read.
fn check(
    problems: &mut Problems,
    spanned: &Spanned<String>,
    key: String,
    names: &HashMap<&str, &str>,
    noun: &str,
) -> Option<Expr> {
    // Offsets inside the expression from the start of its TOML string (after the quote).
    let start = spanned.span().start + 1;
    let inner = |r: Range<usize>| (start + r.start)..(start + r.end);
    match check_expression(spanned.get_ref(), names, noun) {
        Ok(c) if c.hold != 0 => {
            problems.push(
                spanned.span(),
                key,
                "`for` has no meaning here: rewards and limits are judged every step",
            );
            None
        }
        Ok(c) => Some(c.expr),
        Err(found) => {
            for (span, message) in found {
                problems.push(inner(span), key.clone(), message);
            }
            None
        }
    }
}

/// The quantities limits read, kept up to date through a run: each sensor's true value, and
/// the operation's counts, gaps and steps.
#[derive(Debug, Clone)]
pub struct Watch {
    index: HashMap<String, usize>,
    values: Vec<f64>,
    pumps: Vec<usize>,
    chillers: Vec<usize>,
    setpoint: Option<usize>,
    chiller_running: Vec<bool>,
    /// Times of the last two chiller starts, seconds.
    starts: [f64; 2],
    last_setpoint: f64,
    derived: [f64; 4],
}

impl Watch {
    pub fn new(plant: &dyn Plant) -> Watch {
        let of_kind = |kind: &str| {
            plant
                .assets()
                .iter()
                .enumerate()
                .filter(|(_, a)| a.kind == kind)
                .map(|(i, _)| i)
                .collect::<Vec<_>>()
        };
        let chillers = of_kind("chiller");
        let labels = plant.labels();
        let setpoint = plant.sensors().iter().position(|s| s.id == "chw_setpoint");
        Watch {
            index: plant
                .sensors()
                .iter()
                .enumerate()
                .map(|(i, s)| (s.id.clone(), i))
                .collect(),
            values: plant.truth().to_vec(),
            pumps: of_kind("pump"),
            chiller_running: chillers
                .iter()
                .map(|&a| labels[a].status == AssetStatus::Running)
                .collect(),
            chillers,
            setpoint,
            starts: [f64::NEG_INFINITY; 2],
            // A plant not yet stepped has no truth to compare the first step with.
            last_setpoint: setpoint
                .map(|i| plant.truth()[i])
                .filter(|_| plant.truth().iter().any(|v| *v != 0.0))
                .unwrap_or(f64::NAN),
            derived: [0.0, 0.0, f64::INFINITY, 0.0],
        }
    }

    /// The plant after a step ending at `t_s`.
    pub fn observe(&mut self, t_s: f64, truth: &[f64], labels: &[AssetLabel]) {
        self.values.clear();
        self.values.extend_from_slice(truth);
        let running = |a: &usize| labels[*a].status == AssetStatus::Running;
        self.derived[0] = self.pumps.iter().filter(|a| running(a)).count() as f64;
        self.derived[1] = self.chillers.iter().filter(|a| running(a)).count() as f64;
        for (k, a) in self.chillers.iter().enumerate() {
            let now = running(a);
            if now && !self.chiller_running[k] {
                self.starts = [self.starts[1], t_s];
            }
            self.chiller_running[k] = now;
        }
        // Fewer than two starts so far: no gap to keep.
        self.derived[2] = if self.starts[0].is_finite() {
            (self.starts[1] - self.starts[0]) / 60.0
        } else {
            f64::INFINITY
        };
        if let Some(i) = self.setpoint {
            let s = truth[i];
            self.derived[3] = if self.last_setpoint.is_finite() {
                (s - self.last_setpoint).abs()
            } else {
                0.0
            };
            self.last_setpoint = s;
        }
    }

    /// A quantity by name: a sensor's id or one of [`OPERATION`].
    pub fn get(&self, name: &str) -> Option<f64> {
        if let Some(&i) = self.index.get(name) {
            return self.values.get(i).copied();
        }
        OPERATION
            .iter()
            .position(|(n, _)| *n == name)
            .map(|k| self.derived[k])
    }
}
