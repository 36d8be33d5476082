//! Policies compared on the simulator: every policy runs every scenario (and undisturbed
//! weather) from the same seeds, so each difference is the policies' and not the dice's.
//! Per episode: the KPIs, the total cost the policy file's reward puts on them, the steps at
//! which a limit was broken in the plant (executed violations), and what the policy reports of
//! itself (decisions, compute, actions its gate blocked).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::kpi::Kpis;
use doppel_sim::policy::{PolicyMaker, PolicyStats};
use doppel_sim::run::{Observer, RunSettings, StepView, simulate};
use doppel_sim::scenario::Scenario;
use rayon::prelude::*;
use serde::Serialize;

use crate::error::Result;
use crate::objective::{Objective, Watch};

/// What to compare, on what.
pub struct Evaluation {
    pub policies: Vec<Arc<dyn PolicyMaker>>,
    /// Scenarios by name; "undisturbed" is added by the caller when wanted.
    pub scenarios: Vec<(String, Scenario)>,
    pub seeds: std::ops::Range<u64>,
    pub days: f64,
    pub step_s: f64,
    pub plant: ChillerPlantConfig,
    pub objective: Arc<Objective>,
    /// Threads (`None`: all cores). Results do not depend on it.
    pub threads: Option<usize>,
}

/// One policy's run of one scenario from one seed.
#[derive(Debug, Clone, Serialize)]
pub struct Episode {
    pub policy: String,
    pub scenario: String,
    pub seed: u64,
    pub kpis: Kpis,
    /// What the policy file's reward charges for the whole run (its negative).
    pub total_cost: f64,
    /// Steps at which some limit was broken in the plant, and by limit.
    pub violation_steps: u64,
    pub broken: BTreeMap<String, u64>,
    pub stats: PolicyStats,
}

/// One policy's episodes summed up (over one scenario, or over all: `scenario` = "all").
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub policy: String,
    pub scenario: String,
    pub episodes: usize,
    pub energy_cost: f64,
    pub limit_excursion_minutes: f64,
    pub downtime_hours: f64,
    pub maintenance_cost: f64,
    /// Means per episode.
    pub total_cost: f64,
    /// Total cost against `rules` on the same episodes, % (negative: cheaper).
    pub against_rules_pct: Option<f64>,
    pub violation_steps: u64,
    pub episodes_with_violations: usize,
    pub blocked: u64,
    pub decisions: u64,
    /// Compute per decision, milliseconds.
    pub ms_per_decision: f64,
}

struct Violations<'a> {
    watch: Watch,
    objective: &'a Objective,
    steps: u64,
    broken: BTreeMap<String, u64>,
}

impl Observer for Violations<'_> {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        self.watch.observe(view.t_s, view.truth, view.labels);
        if let Some(k) = self.objective.broken(&self.watch) {
            self.steps += 1;
            *self
                .broken
                .entry(self.objective.limits[k].name.clone())
                .or_insert(0) += 1;
        }
        Ok(true)
    }
}

fn episode(
    e: &Evaluation,
    maker: &dyn PolicyMaker,
    (name, scenario): &(String, Scenario),
    seed: u64,
) -> Result<Episode> {
    let mut plant = ChillerPlant::new(e.plant.clone(), seed)?;
    let mut policy = maker.make(&plant, &e.plant, seed)?;
    let events = scenario.draw(seed);
    let mut violations = Violations {
        watch: Watch::new(&plant),
        objective: &e.objective,
        steps: 0,
        broken: BTreeMap::new(),
    };
    let settings = RunSettings {
        days: e.days,
        step_s: e.step_s,
    };
    let outcome = simulate(
        &mut plant,
        policy.as_mut(),
        events,
        settings,
        Some(&mut violations),
    )?;
    Ok(Episode {
        policy: maker.name(),
        scenario: name.clone(),
        seed,
        total_cost: -e.objective.reward(&Kpis::default(), &outcome.kpis, 0, 1),
        kpis: outcome.kpis,
        violation_steps: violations.steps,
        broken: violations.broken,
        stats: policy.stats(),
    })
}

/// Runs every episode; `progress` is called with the number finished.
pub fn run(e: &Evaluation, progress: &(dyn Fn(u64) + Sync)) -> Result<Vec<Episode>> {
    let mut jobs = Vec::new();
    for scenario in &e.scenarios {
        for seed in e.seeds.clone() {
            for policy in &e.policies {
                jobs.push((policy.clone(), scenario, seed));
            }
        }
    }
    let done = AtomicU64::new(0);
    let all = || {
        jobs.par_iter()
            .map(|(policy, scenario, seed)| {
                let result = episode(e, policy.as_ref(), scenario, *seed);
                progress(done.fetch_add(1, Ordering::Relaxed) + 1);
                result
            })
            .collect::<Result<Vec<Episode>>>()
    };
    doppel_sim::monte_carlo::on_threads(e.threads, false, all)?
}

/// Per policy, per scenario and over all scenarios.
pub fn summarise(episodes: &[Episode]) -> Vec<Report> {
    let mut policies: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    for ep in episodes {
        if !policies.contains(&ep.policy) {
            policies.push(ep.policy.clone());
        }
        if !scenarios.contains(&ep.scenario) {
            scenarios.push(ep.scenario.clone());
        }
    }
    // The operator's total cost on the same (scenario, seed) episodes.
    let rules_cost = |seeds: &[(String, u64)]| -> Option<f64> {
        let mut sum = 0.0;
        for (s, seed) in seeds {
            sum += episodes
                .iter()
                .find(|ep| ep.policy == "rules" && &ep.scenario == s && ep.seed == *seed)?
                .total_cost;
        }
        Some(sum)
    };
    let mut out = Vec::new();
    for scenario in scenarios.iter().map(Some).chain([None]) {
        for policy in &policies {
            let mine: Vec<&Episode> = episodes
                .iter()
                .filter(|ep| &ep.policy == policy && scenario.is_none_or(|s| &ep.scenario == s))
                .collect();
            if mine.is_empty() {
                continue;
            }
            let n = mine.len() as f64;
            let mean = |f: &dyn Fn(&Episode) -> f64| mine.iter().map(|ep| f(ep)).sum::<f64>() / n;
            let seeds: Vec<(String, u64)> = mine
                .iter()
                .map(|ep| (ep.scenario.clone(), ep.seed))
                .collect();
            let total: f64 = mine.iter().map(|ep| ep.total_cost).sum();
            let decisions: u64 = mine.iter().map(|ep| ep.stats.decisions).sum();
            let compute: f64 = mine.iter().map(|ep| ep.stats.compute_s).sum();
            out.push(Report {
                policy: policy.clone(),
                scenario: scenario.cloned().unwrap_or_else(|| "all".into()),
                episodes: mine.len(),
                energy_cost: mean(&|ep| ep.kpis.energy_cost),
                limit_excursion_minutes: mean(&|ep| ep.kpis.limit_excursion_minutes),
                downtime_hours: mean(&|ep| ep.kpis.downtime_hours),
                maintenance_cost: mean(&|ep| ep.kpis.maintenance_cost),
                total_cost: total / n,
                against_rules_pct: rules_cost(&seeds)
                    .filter(|r| *r > 0.0)
                    .map(|r| 100.0 * (total / r - 1.0)),
                violation_steps: mine.iter().map(|ep| ep.violation_steps).sum(),
                episodes_with_violations: mine.iter().filter(|ep| ep.violation_steps > 0).count(),
                blocked: mine.iter().map(|ep| ep.stats.blocked).sum(),
                decisions,
                ms_per_decision: if decisions > 0 {
                    1e3 * compute / decisions as f64
                } else {
                    0.0
                },
            });
        }
    }
    out
}
