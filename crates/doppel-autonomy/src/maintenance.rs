//! The maintenance planner: when to service which pump and clean which chiller, decided as a
//! mixed-integer program (`good_lp` on `microlp`, pure Rust; HiGHS with the `highs` feature and
//! `solver=highs`) over the next days in slots, from the wear and fouling the state estimator
//! finds in the planner's own readings.
//!
//! For each unit and each slot its service could start in, the expected cost of doing it then
//! is known in advance: the service's price, plus what failures cost on the way there (the
//! reference plant's trip hazards on the wear projected from today's, docs/REFERENCE_PLANT.md),
//! plus the energy a worn unit wastes until then, plus (for no service at all) the failure risk
//! carried past the horizon. The program picks at most one start a unit so that the total is
//! least while
//! - one crew works one job at a time (jobs under way keep theirs),
//! - a pump service takes a bearing kit, and kits come back one lead time after each is used,
//! - a unit is only taken out while a standby of its kind can run in its place.
//!
//! Services that start in the first slot are ordered; the plan is made again every slot, so
//! news (a trip, a kit that did not come) changes it. How the plant runs between services is
//! the rule-based operator's; its own service orders are dropped.

use std::sync::Arc;
use std::time::Instant;

use doppel_sim::chiller::{ChillerPlantConfig, MaintenanceConfig, physics};
use doppel_sim::plant::{Action, AssetStatus, Plant, Readings, sensor_index};
use doppel_sim::policy::{Policy, PolicyMaker, PolicyStats};
use good_lp::{
    Expression, ProblemVariables, Solution, SolverModel, Variable, constraint, microlp, variable,
};

use crate::error::{AutonomyError, Result};
use crate::lookahead::{Lookahead, OperatorHalf};

/// Which solver takes the planning program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanSolver {
    /// microlp: pure Rust, always built in.
    Microlp,
    /// HiGHS (C++), with the `highs` feature of this crate (or of the `doppel` binary).
    Highs,
}

/// How far and how finely the planner looks, and with which solver.
#[derive(Debug, Clone)]
pub struct PlannerSettings {
    /// Hours a slot (and between plans).
    pub slot_h: f64,
    /// Slots planned ahead.
    pub slots: usize,
    pub solver: PlanSolver,
}

impl Default for PlannerSettings {
    fn default() -> Self {
        PlannerSettings {
            slot_h: 6.0,
            slots: 28,
            solver: PlanSolver::Microlp,
        }
    }
}

impl PlannerSettings {
    /// Reads `slot=6h,horizon=7d,solver=highs` (any subset).
    pub fn parse(options: &str) -> Result<PlannerSettings> {
        let mut s = PlannerSettings::default();
        let mut horizon_h = s.slot_h * s.slots as f64;
        let bad = |reason: String| AutonomyError::PolicyOption {
            name: format!("maintenance:{options}"),
            reason,
        };
        for part in options.split(',').filter(|p| !p.is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not key=value")))?;
            let hours = || {
                doppel_core::time::parse_offset_seconds(value)
                    .map(|s| s / 3600.0)
                    .map_err(|e| bad(format!("{key}: {e}")))
            };
            match key {
                "slot" => s.slot_h = hours()?,
                "horizon" => horizon_h = hours()?,
                "solver" => {
                    s.solver = match value {
                        "microlp" => PlanSolver::Microlp,
                        "highs" if cfg!(feature = "highs") => PlanSolver::Highs,
                        "highs" => {
                            return Err(bad("HiGHS is not built in: build doppel with \
                                 `--features highs` (needs cmake, a C++ compiler and libclang)"
                                .into()));
                        }
                        other => {
                            return Err(bad(format!(
                                "unknown solver `{other}`: use microlp or highs"
                            )));
                        }
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown option `{other}`: use slot, horizon or solver"
                    )));
                }
            }
        }
        if !(s.slot_h >= 1.0 && horizon_h >= s.slot_h) {
            return Err(bad(
                "a slot must be at least 1h and the horizon at least a slot".into(),
            ));
        }
        s.slots = (horizon_h / s.slot_h).round() as usize;
        if s.slots > 120 {
            return Err(bad(
                "at most 120 slots (a longer slot, or a shorter horizon)".into(),
            ));
        }
        Ok(s)
    }
}

pub struct PlannerMaker {
    pub settings: PlannerSettings,
    pub label: String,
}

impl PolicyMaker for PlannerMaker {
    fn name(&self) -> String {
        self.label.clone()
    }
    fn make(
        &self,
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
    ) -> doppel_sim::Result<Box<dyn Policy>> {
        Ok(Box::new(Planner::new(
            plant,
            config,
            seed,
            self.settings.clone(),
        )?))
    }
}

/// Sensors of one maintainable unit.
struct Unit {
    asset: usize,
    pump: bool,
    status: usize,
    speed: Option<usize>,
}

pub struct Planner {
    settings: PlannerSettings,
    config: ChillerPlantConfig,
    view: Lookahead,
    operator: OperatorHalf,
    units: Vec<Unit>,
    weather: usize,
    /// Bearing kits the planner believes in stock, and when the ones on order arrive (run
    /// seconds): no sensor counts kits, so it keeps the books from what it saw used.
    kits: f64,
    arrivals: Vec<f64>,
    last_status: Vec<f64>,
    /// Pump services ordered and not yet seen started: (unit, when ordered, crew free then).
    pending: Vec<(usize, f64, bool)>,
    next_s: f64,
    stats: PolicyStats,
}

impl Planner {
    pub fn new(
        plant: &dyn Plant,
        config: &ChillerPlantConfig,
        seed: u64,
        settings: PlannerSettings,
    ) -> doppel_sim::Result<Planner> {
        let missing = |what: &str| doppel_sim::SimError::Policy {
            policy: "maintenance".into(),
            reason: format!("the plant has no sensor `{what}`"),
        };
        let sensor = |id: &str| sensor_index(plant, id).ok_or_else(|| missing(id));
        let mut units = Vec::new();
        for (asset, a) in plant.assets().iter().enumerate() {
            if a.kind == "pump" || a.kind == "chiller" {
                let pump = a.kind == "pump";
                units.push(Unit {
                    asset,
                    pump,
                    status: sensor(&format!("{}_status", a.id))?,
                    speed: if pump {
                        Some(sensor(&format!("{}_speed", a.id))?)
                    } else {
                        None
                    },
                });
            }
        }
        Ok(Planner {
            last_status: vec![f64::NAN; units.len()],
            pending: Vec::new(),
            units,
            weather: sensor("weather_temp")?,
            kits: config.maintenance.bearing_kits as f64,
            arrivals: Vec::new(),
            operator: OperatorHalf::operations(plant)?,
            view: Lookahead::new(plant, config, seed ^ 0x4d49_4c50),
            config: config.clone(),
            settings,
            next_s: 0.0,
            stats: PolicyStats::default(),
        })
    }

    /// Keeps the kit books: a pump going into repair or service used one, which comes back a
    /// lead time later.
    fn count_kits(&mut self, t_s: f64) {
        let lead_s = self.config.maintenance.kit_lead_time_h * 3600.0;
        for (k, unit) in self.units.iter().enumerate() {
            let Some(code) = self.view.latest(unit.status) else {
                continue;
            };
            let before = self.last_status[k];
            if unit.pump && (code == 3.0 || code == 4.0) && before != code && before != 3.0 {
                self.kits -= 1.0;
                self.arrivals.push(t_s + lead_s);
            }
            self.last_status[k] = code;
        }
        let due = self.arrivals.iter().filter(|&&a| a <= t_s).count();
        self.kits += due as f64;
        self.arrivals.retain(|&a| a > t_s);
        // An order for a pump that never started while the crew was free was refused for want
        // of a kit: the books were too hopeful (parts come later than the configured lead
        // time). None in stock, and every kit on order a slot later than thought.
        let slot_s = self.settings.slot_h * 3600.0;
        let started = |k: usize| self.last_status[k] == 4.0;
        let refused = self
            .pending
            .iter()
            .any(|&(k, at, crew_free)| crew_free && !started(k) && t_s - at >= 60.0);
        self.pending
            .retain(|&(k, at, _)| !started(k) && t_s - at < 60.0);
        if refused {
            self.kits = 0.0;
            if self.arrivals.is_empty() {
                self.arrivals.push(t_s + slot_s);
            }
            for a in &mut self.arrivals {
                *a += slot_s;
            }
        }
    }

    /// The services to order now.
    fn plan(&self, t_s: f64) -> Vec<usize> {
        let Ok(model) = self.view.model() else {
            return Vec::new();
        };
        let labels = model.plant.labels();
        let hidden = model.plant.hidden_truth();
        let outdoor = self.view.latest(self.weather).unwrap_or(20.0);
        let m = &self.config.maintenance;
        let s = &self.settings;
        let slot_h = s.slot_h;
        let n = s.slots;
        let status: Vec<AssetStatus> = self.units.iter().map(|u| labels[u.asset].status).collect();
        let standby = |pump: bool| {
            self.units
                .iter()
                .zip(&status)
                .filter(|(u, s)| u.pump == pump && **s == AssetStatus::Off)
                .count()
        };
        // Slots a job already under way (or waiting) keeps the crew.
        let busy = status
            .iter()
            .zip(&self.units)
            .filter(|(s, _)| !s.is_available())
            .map(|(_, u)| {
                let hours = if u.pump {
                    m.pump_repair_h
                } else {
                    m.chiller_repair_h
                };
                (0.5 * hours / slot_h).ceil() as usize
            })
            .sum::<usize>();

        let duration = |u: &Unit| {
            let hours = if u.pump {
                m.pump_service_h
            } else {
                m.chiller_clean_h
            };
            (hours / slot_h).ceil().max(1.0) as usize
        };
        // Kits the planner can count on by the end of each slot, before its own services.
        let kits_by: Vec<f64> = (0..n)
            .map(|slot| {
                let end = t_s + (slot as f64 + 1.0) * slot_h * 3600.0;
                self.kits + self.arrivals.iter().filter(|&&a| a <= end).count() as f64
            })
            .collect();
        // What each start would cost, where it could happen at all: the unit is available, a
        // standby of its kind can run in its place, the crew is free for the whole job and
        // (for a pump) a kit can be there.
        let jobs: Vec<Job> = self
            .units
            .iter()
            .enumerate()
            .map(|(k, unit)| {
                let available = status[k] == AssetStatus::Running || status[k] == AssetStatus::Off;
                let spare = standby(unit.pump) > 0;
                let costs = unit_costs(
                    unit,
                    hidden[k],
                    status[k] == AssetStatus::Running,
                    self.view.latest(unit.speed.unwrap_or(0)).unwrap_or(80.0) / 100.0,
                    outdoor,
                    &self.config,
                    s,
                );
                let slots = duration(unit);
                Job {
                    pump: unit.pump,
                    slots,
                    // Doing it in slot t instead of never: the difference.
                    gain: (0..n)
                        .map(|t| {
                            let possible = available
                                && spare
                                && t >= busy.min(n)
                                && t + slots <= n
                                && (!unit.pump || kits_by[t] >= 1.0);
                            possible.then(|| costs[t] - costs[n])
                        })
                        .collect(),
                }
            })
            .collect();
        let lead_slots = (m.kit_lead_time_h / slot_h).ceil() as usize;
        let program = Program {
            jobs: &jobs,
            kits_by: &kits_by,
            lead_slots,
            crews: m.crews.max(1) as f64,
            solver: self.settings.solver,
        };
        // The relaxation (starts between 0 and 1) comes out whole on these programs (one crew's
        // intervals and a kit count): it is solved first, being what microlp solves reliably;
        // the integer program only if some start came out fractional.
        let chosen = match program.solve(false) {
            Some(Schedule { first, whole: true }) => first,
            _ => program.solve(true).map(|s| s.first).unwrap_or_default(),
        };
        chosen.into_iter().map(|k| self.units[k].asset).collect()
    }
}

/// One unit's possible service starts: what each saves against none (`None`: it cannot start
/// then), how many slots the job takes, and whether it takes a kit.
struct Job {
    pump: bool,
    slots: usize,
    gain: Vec<Option<f64>>,
}

/// A solved plan: the units whose service starts in the first slot, and whether every start
/// came out whole.
struct Schedule {
    first: Vec<usize>,
    whole: bool,
}

/// The planning program over every unit's possible starts.
struct Program<'a> {
    jobs: &'a [Job],
    kits_by: &'a [f64],
    lead_slots: usize,
    crews: f64,
    solver: PlanSolver,
}

impl Program<'_> {
    /// Solves it with starts as whole numbers (`integer`) or as shares between 0 and 1.
    fn solve(&self, integer: bool) -> Option<Schedule> {
        let mut vars = ProblemVariables::new();
        let mut objective = Expression::from(0.0);
        let starts: Vec<Vec<Option<Variable>>> = self
            .jobs
            .iter()
            .map(|job| {
                job.gain
                    .iter()
                    .map(|gain| {
                        gain.map(|gain| {
                            let v = if integer {
                                vars.add(variable().binary())
                            } else {
                                vars.add(variable().min(0).max(1))
                            };
                            // In whole cents: tiny coefficients upset microlp (its issue #44).
                            objective += (gain * 100.0).round() / 100.0 * v;
                            v
                        })
                    })
                    .collect()
            })
            .collect();
        if starts.iter().flatten().all(Option::is_none) {
            return Some(Schedule {
                first: Vec::new(),
                whole: true,
            });
        }
        let mut constraints = Vec::new();
        // Constraints that could only read "≤ 0" or hold anyway are never written.
        for x in &starts {
            if x.iter().flatten().count() > 1 {
                let once: Expression = x.iter().flatten().sum();
                constraints.push(constraint!(once <= 1.0));
            }
        }
        let slots = self.kits_by.len();
        for slot in 0..slots {
            // Jobs under way at `slot`: as many as there are crews.
            let mut crew = Expression::from(0.0);
            let mut terms = 0;
            for (job, x) in self.jobs.iter().zip(&starts) {
                for v in x[slot.saturating_sub(job.slots - 1)..=slot]
                    .iter()
                    .flatten()
                {
                    crew += *v;
                    terms += 1;
                }
            }
            if terms as f64 > self.crews {
                constraints.push(constraint!(crew <= self.crews));
            }
            // Kits used by `slot`, less those the planner's own services bring back a lead
            // time later: at most what it counts on then.
            let mut used = Expression::from(0.0);
            let mut terms = 0;
            for (job, x) in self.jobs.iter().zip(&starts) {
                if !job.pump {
                    continue;
                }
                for (t, v) in x.iter().enumerate().take(slot + 1) {
                    if let Some(v) = v
                        && t + self.lead_slots > slot
                    {
                        used += *v;
                        terms += 1;
                    }
                }
            }
            if terms as f64 > self.kits_by[slot] {
                constraints.push(constraint!(used <= self.kits_by[slot]));
            }
        }
        let problem = vars.minimise(objective);
        match self.solver {
            PlanSolver::Microlp => solved(problem, microlp, constraints, &starts),
            #[cfg(feature = "highs")]
            PlanSolver::Highs => solved(problem, good_lp::highs, constraints, &starts),
            #[cfg(not(feature = "highs"))]
            PlanSolver::Highs => unreachable!("settings refuse HiGHS unless it is built in"),
        }
    }
}

/// `problem` under `constraints` solved by `solver`, as the plan it makes of `starts`.
fn solved<S: good_lp::Solver>(
    problem: good_lp::variable::UnsolvedProblem,
    solver: S,
    constraints: Vec<good_lp::Constraint>,
    starts: &[Vec<Option<Variable>>],
) -> Option<Schedule> {
    let solution = problem.using(solver).with_all(constraints).solve().ok()?;
    let values: Vec<f64> = starts
        .iter()
        .flatten()
        .flatten()
        .map(|v| solution.value(*v))
        .collect();
    Some(Schedule {
        first: starts
            .iter()
            .enumerate()
            .filter(|(_, x)| x[0].is_some_and(|v| solution.value(v) > 0.5))
            .map(|(k, _)| k)
            .collect(),
        whole: values.iter().all(|x| *x < 1e-6 || *x > 1.0 - 1e-6),
    })
}

/// A unit's expected cost if its service starts in slot `t` (entries `0..slots`) and if it does
/// not happen within the horizon (the last entry).
fn unit_costs(
    unit: &Unit,
    health: f64,
    running: bool,
    speed: f64,
    outdoor_c: f64,
    config: &ChillerPlantConfig,
    s: &PlannerSettings,
) -> Vec<f64> {
    let m: &MaintenanceConfig = &config.maintenance;
    let (service, failure) = if unit.pump {
        (
            m.pump_service_cost + m.kit_cost,
            m.pump_repair_cost + m.kit_cost,
        )
    } else {
        (m.chiller_clean_cost, m.chiller_repair_cost)
    };
    let price = 0.5 * (config.environment.price_day + config.environment.price_night);
    // Energy a worn unit wastes an hour, kW a unit of wear or fouling: a worn pump draws up to
    // 10 % more (about 1 kW); a fouled chiller lifts 6 K higher (about 3 %/K of 150 kW).
    let waste_kw = if unit.pump { 1.0 } else { 27.0 };
    let room_c = 22.0 + 0.25 * (outdoor_c - 20.0);
    // The plant's own trip hazards; a pump worn through (w ≥ 1) fails for certain.
    let hazard_per_h = |pump: bool, h: f64| match (pump, h >= 1.0) {
        (true, true) => f64::INFINITY,
        (true, false) => physics::pump_trip_hazard_per_h(h),
        (false, _) => physics::chiller_trip_hazard_per_h(h),
    };
    let growth_per_h = |pump: bool, h: f64| {
        if pump {
            let bearing = room_c + 15.0 * speed * speed + 30.0 * h * h;
            config.wear_per_hour * speed * speed * ((bearing - 45.0) / 15.0).exp()
        } else {
            config.fouling_per_hour * 0.7
        }
    };
    let mut h = health;
    let mut survive = 1.0;
    // Cost accrued before the service slot: failures and waste.
    let mut before = 0.0;
    let mut costs = Vec::with_capacity(s.slots + 1);
    for _ in 0..s.slots {
        costs.push(before + survive * service);
        let p_fail = if running {
            1.0 - (-hazard_per_h(unit.pump, h) * s.slot_h).exp()
        } else {
            0.0
        };
        before += survive * (p_fail * failure + waste_kw * h * s.slot_h * price);
        survive *= 1.0 - p_fail;
        if running {
            h += s.slot_h * growth_per_h(unit.pump, h);
        }
    }
    // Not serviced within the horizon: the failures and waste carried past it, over the
    // month after (a service's worth outlives any short horizon: a cleaned chiller saves
    // energy for months).
    let mut tail = 0.0;
    if running {
        let mut survive_tail = 1.0;
        let steps = (TAIL_H / s.slot_h).ceil() as usize;
        for _ in 0..steps {
            let p_fail = 1.0 - (-hazard_per_h(unit.pump, h) * s.slot_h).exp();
            tail += survive_tail * (p_fail * failure + waste_kw * h * s.slot_h * price);
            survive_tail *= 1.0 - p_fail;
            h += s.slot_h * growth_per_h(unit.pump, h);
        }
    }
    costs.push(before + survive * tail);
    costs
}

/// Hours past the horizon whose risk and waste an unserviced unit carries.
const TAIL_H: f64 = 7.0 * 24.0;

impl Policy for Planner {
    fn name(&self) -> &str {
        "maintenance"
    }

    fn wants_readings(&self, _t_s: f64) -> bool {
        true
    }

    fn decide(&mut self, t_s: f64, readings: &Readings, actions: &mut Vec<Action>) {
        self.view.observe(t_s, readings);
        self.count_kits(t_s);
        self.operator.decide(t_s, readings, actions);
        if t_s < self.next_s {
            return;
        }
        self.next_s = t_s + self.settings.slot_h * 3600.0;
        let began = Instant::now();
        let crew_free = self
            .last_status
            .iter()
            .all(|&code| !(code == 3.0 || code == 4.0));
        for asset in self.plan(t_s) {
            if let Some(k) = self.units.iter().position(|u| u.asset == asset && u.pump) {
                self.pending.push((k, t_s, crew_free));
            }
            actions.push(Action::Maintain { asset });
        }
        self.stats.decisions += 1;
        self.stats.compute_s += began.elapsed().as_secs_f64();
    }

    fn stats(&self) -> PolicyStats {
        self.stats
    }
}

/// The planner for `maintenance` or `maintenance:slot=6h,horizon=7d`.
pub fn maker(name: &str, options: &str) -> Result<Arc<dyn PolicyMaker>> {
    Ok(Arc::new(PlannerMaker {
        settings: PlannerSettings::parse(options)?,
        label: name.to_owned(),
    }))
}
