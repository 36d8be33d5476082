//! Many runs of a scenario and of its baseline, spread over all cores.
//!
//! Run `i` of a study uses the seed `run_seed(seed, i)` for both the scenario and the
//! baseline, so the two differ only by the disruptions (common random numbers) and their
//! difference is measured with far less noise. Runs are independent and collected in index
//! order, so the result is the same whatever the number of threads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;
use serde::Serialize;

use crate::chiller::{ChillerPlant, ChillerPlantConfig};
use crate::error::{Result, SimError};
use crate::kpi::{Kpis, Summary, failures_cluster};
use crate::plant::Plant;
use crate::policy::PolicyMaker;
use crate::random::run_seed;
use crate::run::{RunOutcome, RunSettings, simulate};
use crate::scenario::Scenario;

/// "At least `at_least` failures at `assets` or more distinct assets within `window_s`."
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClusterQuestion {
    pub at_least: usize,
    pub assets: usize,
    pub window_s: f64,
}

impl Default for ClusterQuestion {
    fn default() -> Self {
        ClusterQuestion {
            at_least: 2,
            assets: 2,
            window_s: 7.0 * 86_400.0,
        }
    }
}

/// A Monte Carlo study of one scenario against its baseline.
#[derive(Clone)]
pub struct Study {
    pub plant: ChillerPlantConfig,
    pub policy: Arc<dyn PolicyMaker>,
    /// Where every run starts: a plant as the state estimator found it (`None`: a fresh plant
    /// drawn from the run's seed). Each run goes on from it with its own seed.
    pub start: Option<Arc<ChillerPlant>>,
    pub settings: RunSettings,
    pub runs: usize,
    pub seed: u64,
    pub cluster: ClusterQuestion,
    /// Threads to spread runs over (`None`: all cores). The result does not depend on it.
    pub threads: Option<usize>,
    /// Run on the machine's idle time only (a study beside a server's ingest): its threads
    /// get the CPU when nothing else wants it. The result does not depend on it.
    pub background: bool,
}

/// KPI distributions of the scenario, the baseline and their paired difference.
#[derive(Debug, Clone, Serialize)]
pub struct StudyResult {
    pub scenario_name: String,
    pub runs: usize,
    pub days: f64,
    pub step_s: f64,
    pub seed: u64,
    pub policy: String,
    /// Whether the runs started from an estimated live state rather than fresh plants.
    pub from_live: bool,
    pub scenario: BTreeMap<&'static str, Summary>,
    pub baseline: BTreeMap<&'static str, Summary>,
    /// Scenario minus baseline, run by run (same seeds).
    pub difference: BTreeMap<&'static str, Summary>,
    pub cluster: ClusterAnswer,
    /// How many runs had each disruption happen.
    pub disruptions_drawn: BTreeMap<String, usize>,
    /// Plant steps simulated in all (scenario and baseline).
    pub plant_steps: u64,
    /// The risk grid: P(at least X failures at min(X, the cluster question's assets) or more
    /// distinct assets within T), for X of 1 to 4 and T of 1, 3, 7, 14 and 30 days (those
    /// within the run's length).
    pub risk: Vec<ClusterAnswer>,
    /// Each asset's odds of failing at least once in a run, with and without the scenario.
    pub asset_failures: BTreeMap<String, AssetOdds>,
}

/// The share of runs in which an asset failed at least once.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AssetOdds {
    pub scenario: f64,
    pub baseline: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClusterAnswer {
    pub at_least: usize,
    pub assets: usize,
    pub within_hours: f64,
    pub scenario_probability: f64,
    pub baseline_probability: f64,
}

/// Runs `work` on a pool of `threads` (`None`: rayon's global pool, all cores), on the
/// machine's idle time only when `background` ([`doppel_core::background`]).
pub fn on_threads<R: Send>(
    threads: Option<usize>,
    background: bool,
    work: impl FnOnce() -> R + Send,
) -> Result<R> {
    doppel_core::background::on_threads(threads, background, work)
        .map_err(|e| SimError::Settings(format!("cannot start the study's threads: {e}")))
}

/// One run of the study's plant and policy.
pub fn run_once(study: &Study, seed: u64, scenario: &Scenario) -> Result<RunOutcome> {
    let mut plant = match &study.start {
        Some(start) => start.reseeded(seed),
        None => ChillerPlant::new(study.plant.clone(), seed)?,
    };
    let config = plant.config().clone();
    let mut policy = study.policy.make(&plant as &dyn Plant, &config, seed)?;
    let events = scenario.draw(seed);
    simulate(&mut plant, policy.as_mut(), events, study.settings, None)
}

/// Runs the study. `progress` is called with the number of runs finished so far.
pub fn run_study(
    study: &Study,
    scenario: &Scenario,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<StudyResult> {
    run_study_until(
        study,
        scenario,
        progress,
        &std::sync::atomic::AtomicBool::new(false),
    )
}

/// [`run_study`], given up (`SimError::Cancelled`) once `cancel` is set: runs not yet begun
/// are not started.
pub fn run_study_until(
    study: &Study,
    scenario: &Scenario,
    progress: &(dyn Fn(u64) + Sync),
    cancel: &std::sync::atomic::AtomicBool,
) -> Result<StudyResult> {
    study.settings.steps()?;
    let baseline = Scenario::baseline();
    let finished = AtomicU64::new(0);
    let all_runs = || {
        (0..study.runs)
            .into_par_iter()
            .map(|i| {
                if cancel.load(Ordering::Relaxed) {
                    return Err(SimError::Cancelled);
                }
                let seed = run_seed(study.seed, i as u64);
                let with = run_once(study, seed, scenario)?;
                let without = run_once(study, seed, &baseline)?;
                progress(finished.fetch_add(1, Ordering::Relaxed) + 1);
                Ok((with, without))
            })
            .collect::<Result<Vec<(RunOutcome, RunOutcome)>>>()
    };
    let pairs = on_threads(study.threads, study.background, all_runs)??;
    let pick = |f: &dyn Fn(&(RunOutcome, RunOutcome)) -> Kpis| -> Vec<Kpis> {
        pairs.iter().map(f).collect()
    };
    let with = pick(&|p| p.0.kpis);
    let without = pick(&|p| p.1.kpis);
    let summarise = |list: &[Kpis], other: Option<&[Kpis]>| {
        let mut out = BTreeMap::new();
        for (k, (name, _)) in Kpis::default().named().iter().enumerate() {
            let values: Vec<f64> = list
                .iter()
                .enumerate()
                .map(|(i, kpis)| {
                    let v = kpis.named()[k].1;
                    other.map_or(v, |o| v - o[i].named()[k].1)
                })
                .collect();
            out.insert(*name, Summary::of(&values));
        }
        out
    };
    let c = study.cluster;
    let share = |f: &dyn Fn(&(RunOutcome, RunOutcome)) -> bool| {
        pairs.iter().filter(|p| f(p)).count() as f64 / pairs.len().max(1) as f64
    };
    let mut disruptions_drawn = BTreeMap::new();
    for d in &scenario.disruptions {
        disruptions_drawn.entry(d.label.clone()).or_insert(0);
    }
    // Counted under the scenario's label (`pump_trip:pump1|pump2`), whichever target a run
    // drew; the run's events hold only those that started before it ended.
    for (with, _) in &pairs {
        for e in &with.events {
            let label = &scenario.disruptions[e.disruption].label;
            *disruptions_drawn.entry(label.clone()).or_insert(0) += 1;
        }
    }
    let answer = |at_least: usize, assets: usize, window_s: f64| ClusterAnswer {
        at_least,
        assets,
        within_hours: window_s / 3600.0,
        scenario_probability: share(&|p| {
            failures_cluster(&p.0.failures, at_least, assets, window_s)
        }),
        baseline_probability: share(&|p| {
            failures_cluster(&p.1.failures, at_least, assets, window_s)
        }),
    };
    let mut risk = Vec::new();
    for days in [1.0, 3.0, 7.0, 14.0, 30.0] {
        if days > study.settings.days.max(1.0) {
            continue;
        }
        for at_least in 1..=4 {
            risk.push(answer(
                at_least,
                at_least.min(c.assets.max(1)),
                days * 86_400.0,
            ));
        }
    }
    let probe = ChillerPlant::new(study.plant.clone(), 0)?;
    let asset_failures = probe
        .assets()
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let failed = |f: &[crate::plant::FailureEvent]| f.iter().any(|e| e.asset == i);
            (
                a.id.clone(),
                AssetOdds {
                    scenario: share(&|p| failed(&p.0.failures)),
                    baseline: share(&|p| failed(&p.1.failures)),
                },
            )
        })
        .collect();
    Ok(StudyResult {
        risk,
        asset_failures,
        scenario_name: scenario.name.clone(),
        runs: study.runs,
        days: study.settings.days,
        step_s: study.settings.step_s,
        seed: study.seed,
        policy: study.policy.name(),
        from_live: study.start.is_some(),
        scenario: summarise(&with, None),
        baseline: summarise(&without, None),
        difference: summarise(&with, Some(&without)),
        cluster: ClusterAnswer {
            at_least: c.at_least,
            assets: c.assets,
            within_hours: c.window_s / 3600.0,
            scenario_probability: share(&|p| {
                failures_cluster(&p.0.failures, c.at_least, c.assets, c.window_s)
            }),
            baseline_probability: share(&|p| {
                failures_cluster(&p.1.failures, c.at_least, c.assets, c.window_s)
            }),
        },
        disruptions_drawn,
        plant_steps: pairs.iter().map(|p| p.0.steps + p.1.steps).sum(),
    })
}
