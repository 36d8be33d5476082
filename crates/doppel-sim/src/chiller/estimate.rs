//! The state estimator: the reference plant as its recent readings say it is now, so a
//! simulation can start from the live plant instead of from a fresh one.
//!
//! What a sensor shows is taken as it is (temperatures, statuses, the setpoint), except a
//! return temperature the loop's heat balance contradicts (a drifting sensor: the supply, flow
//! and load give the return instead). What no sensor shows is inverted from the plant's own
//! equations (docs/REFERENCE_PLANT.md):
//! - bearing wear, from vibration `0.5 + 0.9 s² + 7 w^2.5` (averaged over the pump's recent
//!   running readings, since one reading's noise hides a young bearing's wear);
//! - tube fouling, from the condenser's approach to the tower water `2 + 6 φ`;
//! - the weather front and the load's swing, from the outdoor temperature and the hall's load
//!   against the calendar's expectation;
//! - the maintenance department: failed assets queue for repair, assets under repair or
//!   service are given half a job's time to finish (nobody's sensor says how far along a crew
//!   is), the parts stock is the configured one.
//!
//! A unit that has not run within the readings shows nothing of its wear or fouling: it gets
//! the middle of the configured initial range, and the estimate says it was not observed.
//! This module never reads the lake: the caller hands it readings.

use serde::Serialize;

use super::layout::*;
use super::maintenance::{Equipment, Job, Maintenance};
use super::physics::{CP, RHO};
use super::{ChillerPlant, ChillerPlantConfig, Operations, State, step};
use crate::error::{Result, SimError};
use crate::kpi::Kpis;
use crate::plant::{AssetStatus, Readings};
use crate::sensors::SensorModel;

/// Recent readings of the plant's sensors, as the lake holds them.
#[derive(Debug, Clone, Default)]
pub struct RecentReadings {
    /// The moment to estimate the state at, Unix seconds.
    pub now_unix_s: f64,
    /// Per sensor, in the plant's sensor order: (Unix seconds, value), oldest first.
    pub series: Vec<Vec<(f64, f64)>>,
}

impl RecentReadings {
    pub fn new(sensors: usize) -> Self {
        RecentReadings {
            now_unix_s: f64::NAN,
            series: vec![Vec::new(); sensors],
        }
    }

    /// Adds what the sensors reported at `unix_s`, and forgets readings older than `keep_s`
    /// (a policy keeps a rolling window this way).
    pub fn push(&mut self, unix_s: f64, readings: &Readings, keep_s: f64) {
        self.now_unix_s = unix_s;
        for (i, series) in self.series.iter_mut().enumerate() {
            if let Some(v) = readings.get(i) {
                series.push((unix_s, v));
            }
            let old = series.partition_point(|&(t, _)| t < unix_s - keep_s);
            // Keep the newest reading however old: a slow sensor's last value still counts.
            let old = old.min(series.len().saturating_sub(1));
            if old > 64 || (old > 0 && old * 4 > series.len()) {
                series.drain(..old);
            }
        }
    }

    fn latest(&self, sensor: usize) -> Option<f64> {
        self.series.get(sensor)?.last().map(|&(_, v)| v)
    }
}

/// A run's last six hours of readings, kept as it goes (as a policy's or the lake's window
/// would hold them).
struct ReadingsWindow {
    start_unix_s: f64,
    recent: RecentReadings,
}

impl crate::run::Observer for ReadingsWindow {
    fn observe(&mut self, view: &crate::run::StepView) -> Result<bool> {
        self.recent
            .push(self.start_unix_s + view.t_s, view.readings, WEAR_WINDOW_S);
        Ok(true)
    }
}

/// A hidden quantity the estimator inferred.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct HiddenEstimate {
    pub asset: String,
    /// `bearing_wear` or `fouling` (0 = as new, 1 = failing).
    pub quantity: &'static str,
    pub value: f64,
    /// How many readings it was inferred from; 0 means the unit did not run in the window
    /// and the value is the configured prior.
    pub readings: usize,
}

/// What the estimator did, for the caller to show.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Estimate {
    pub at_unix_s: f64,
    /// The hall's load against what the calendar expects, when beyond its usual swing (1 when
    /// within): a simulation from the estimate carries it as a disruption's `load_factor`.
    pub load_factor: f64,
    pub hidden: Vec<HiddenEstimate>,
    /// Sensors with no reading in the window (their quantities took defaults).
    pub missing: Vec<String>,
    /// Sensors whose latest reading the others contradict (the value they imply was used).
    pub distrusted: Vec<String>,
}

/// An asset's health at a glance, from its estimated degradation.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    pub asset: String,
    /// 1 − its wear or fouling: 1 as new, 0 failing.
    pub health: f64,
    /// The odds it trips within `HEALTH_HORIZON_H` running at today's degradation. Wear only
    /// grows until a service, so this is the floor of the risk.
    pub trip_odds: f64,
}

/// The horizon of `Health::trip_odds`: 30 days.
pub const HEALTH_HORIZON_H: f64 = 720.0;

impl Estimate {
    /// Each pump's and chiller's health and trip odds, from the hazards of the plant's physics.
    pub fn health(&self) -> Vec<Health> {
        self.hidden
            .iter()
            .map(|h| {
                let per_h = match h.quantity {
                    "bearing_wear" => crate::chiller::physics::pump_trip_hazard_per_h(h.value),
                    _ => crate::chiller::physics::chiller_trip_hazard_per_h(h.value),
                };
                Health {
                    asset: h.asset.clone(),
                    health: (1.0 - h.value).clamp(0.0, 1.0),
                    trip_odds: 1.0 - (-per_h * HEALTH_HORIZON_H).exp(),
                }
            })
            .collect()
    }
}

/// How far a return reading may stray from the loop's heat balance before it is not believed,
/// K: beyond the balance's own error with a flow meter off by a sixth (a biased meter is a
/// fault of its own, and a return within this changes little of what a simulation predicts).
const RETURN_TOLERANCE_K: f64 = 1.5;

/// A pump's readings are used for its wear only this close to the newest (wear moves slowly,
/// but a service resets it).
const WEAR_WINDOW_S: f64 = 6.0 * 3600.0;

impl ChillerPlant {
    /// The plant as `recent` says it is at `recent.now_unix_s`, ready to run forward with
    /// `seed`. The configuration describes the plant (sizes, curves, costs); its start time is
    /// replaced by the moment estimated.
    pub fn estimate(
        mut config: ChillerPlantConfig,
        seed: u64,
        recent: &RecentReadings,
    ) -> Result<(ChillerPlant, Estimate)> {
        if !recent.now_unix_s.is_finite() {
            return Err(SimError::State(
                "the moment to estimate is not a time".into(),
            ));
        }
        config.start_ns = (recent.now_unix_s * 1e9) as i64;
        let mut plant = ChillerPlant::new(config, seed)?;
        let l = plant.layout;
        if recent.series.len() != plant.sensors.len() {
            return Err(SimError::State(format!(
                "readings for {} sensors, but the plant has {}",
                recent.series.len(),
                plant.sensors.len()
            )));
        }
        let cfg = plant.config.clone();
        let mut missing = Vec::new();
        let mut latest = |sensor: usize, default: f64| {
            recent.latest(sensor).unwrap_or_else(|| {
                missing.push(plant.sensors[sensor].id.clone());
                default
            })
        };

        let supply_c = latest(l.plant(CHW_SUPPLY), cfg.supply_setpoint_c);
        let mut return_c = latest(
            l.plant(CHW_RETURN),
            cfg.supply_setpoint_c + cfg.design_delta_t_k,
        );
        let setpoint_c = latest(l.plant(CHW_SETPOINT), cfg.supply_setpoint_c);
        let outdoor_c = latest(l.plant(WEATHER_TEMP), f64::NAN);
        let load_kw = latest(l.plant(HALL_LOAD), f64::NAN);
        let flow_m3h = latest(l.plant(CHW_FLOW), f64::NAN);
        // The return is weighed against the loop's heat balance (the hall's heat carried by
        // the flow: `T_r = T_s + Q / (ṁ·c_p)`): a return the supply, flow and load together
        // contradict by more than `RETURN_TOLERANCE_K` (a drifting sensor) is replaced by the
        // balance's, and the estimate says so.
        let mut distrusted = Vec::new();
        if flow_m3h > 1.0 && load_kw.is_finite() {
            let balanced_c = (supply_c + load_kw / (flow_m3h * RHO / 3600.0 * CP))
                .min(cfg.coil_max_return_c.max(supply_c));
            if (return_c - balanced_c).abs() > RETURN_TOLERANCE_K {
                return_c = balanced_c;
                distrusted.push(plant.sensors[l.plant(CHW_RETURN)].id.clone());
            }
        }
        let status = |code: f64| match code.round() as i64 {
            1 => AssetStatus::Running,
            2 => AssetStatus::Failed,
            3 => AssetStatus::Repair,
            4 => AssetStatus::Maintenance,
            _ => AssetStatus::Off,
        };
        let pump_status: Vec<AssetStatus> = (0..l.pumps)
            .map(|i| status(latest(l.pump(i, PUMP_STATUS), 0.0)))
            .collect();
        let chiller_status: Vec<AssetStatus> = (0..l.chillers)
            .map(|j| status(latest(l.chiller(j, CHILLER_STATUS), 0.0)))
            .collect();
        let bearing_c: Vec<f64> = (0..l.pumps)
            .map(|i| latest(l.pump(i, PUMP_BEARING), 30.0))
            .collect();
        let mut heat_rejected_kw = 0.0;
        for (j, status) in chiller_status.iter().enumerate() {
            if *status == AssetStatus::Running {
                heat_rejected_kw += latest(l.chiller(j, CHILLER_DUTY), 0.0)
                    + latest(l.chiller(j, CHILLER_POWER), 0.0);
            }
        }

        // The weather front and the load's swing: what the calendar does not explain.
        let env = &cfg.environment;
        let cal = super::environment::Calendar::at(recent.now_unix_s, env.utc_offset_h);
        let calm = env.at(cal, 0.0, 0.0, 0.0, 1.0, 1.0);
        let front_c = if outdoor_c.is_finite() {
            (outdoor_c - calm.outdoor_c).clamp(-4.0 * env.front_sd_c, 4.0 * env.front_sd_c)
        } else {
            0.0
        };
        // The load against the calendar's expectation over the last hour: within the usual
        // swing it is the swing (which fades within hours); beyond it, a lasting change of the
        // load (a surge) the simulation must carry forward as a disruption would.
        let expected_at = |unix_s: f64| {
            let cal = super::environment::Calendar::at(unix_s, env.utc_offset_h);
            env.at(cal, front_c, 0.0, 0.0, 1.0, 1.0).load_kw
        };
        let hall = &recent.series[l.plant(HALL_LOAD)];
        let ratios: Vec<f64> = hall
            .iter()
            .filter(|(t, _)| *t >= recent.now_unix_s - 3600.0)
            .filter_map(|&(t, v)| {
                let e = expected_at(t);
                (e > 0.0 && v.is_finite()).then(|| v / e)
            })
            .collect();
        let ratio = if ratios.is_empty() {
            if load_kw.is_finite() && expected_at(recent.now_unix_s) > 0.0 {
                load_kw / expected_at(recent.now_unix_s)
            } else {
                1.0
            }
        } else {
            ratios.iter().sum::<f64>() / ratios.len() as f64
        };
        let usual = 3.0 * env.load_noise_fraction;
        let (load_noise, load_factor) = if (ratio - 1.0).abs() <= usual {
            (ratio - 1.0, 1.0)
        } else {
            (0.0, ratio.clamp(0.2, 3.0))
        };

        let mut hidden = Vec::new();
        let mut wear = Vec::with_capacity(l.pumps);
        for i in 0..l.pumps {
            let prior = 0.5 * (cfg.initial_wear.0 + cfg.initial_wear.1);
            let (value, readings) = pump_wear(recent, l, i).unwrap_or((prior, 0));
            hidden.push(HiddenEstimate {
                asset: plant.assets[l.pump_asset(i)].id.clone(),
                quantity: "bearing_wear",
                value,
                readings,
            });
            wear.push(value);
        }
        let mut fouling = Vec::with_capacity(l.chillers);
        for j in 0..l.chillers {
            let prior = 0.5 * (cfg.initial_fouling.0 + cfg.initial_fouling.1);
            let (value, readings) = chiller_fouling(recent, l, j).unwrap_or((prior, 0));
            hidden.push(HiddenEstimate {
                asset: plant.assets[l.chiller_asset(j)].id.clone(),
                quantity: "fouling",
                value,
                readings,
            });
            fouling.push(value);
        }

        // Who is down, and the jobs that will bring them back.
        let mut maintenance = Maintenance::new(&cfg.maintenance);
        let m = &cfg.maintenance;
        let units = pump_status
            .iter()
            .enumerate()
            .map(|(i, s)| (l.pump_asset(i), Equipment::Pump, *s))
            .chain(
                chiller_status
                    .iter()
                    .enumerate()
                    .map(|(j, s)| (l.chiller_asset(j), Equipment::Chiller, *s)),
            );
        for (asset, equipment, status) in units {
            let hours = match (equipment, status) {
                (_, AssetStatus::Failed) => {
                    maintenance.report_failure(asset, equipment);
                    continue;
                }
                (Equipment::Pump, AssetStatus::Repair) => m.pump_repair_h,
                (Equipment::Pump, AssetStatus::Maintenance) => m.pump_service_h,
                (Equipment::Chiller, AssetStatus::Repair) => m.chiller_repair_h,
                (Equipment::Chiller, AssetStatus::Maintenance) => m.chiller_clean_h,
                _ => continue,
            };
            let job = Job {
                asset,
                equipment,
                until_s: 0.5 * hours * 3600.0,
                planned: status == AssetStatus::Maintenance,
            };
            // More units down than crews: the rest wait their turn as failures do.
            match maintenance.crews.iter_mut().find(|c| c.is_none()) {
                Some(crew) => *crew = Some(job),
                None => maintenance.report_failure(asset, equipment),
            }
        }
        let mut ops = Operations {
            pump_cmd: pump_status
                .iter()
                .map(|s| *s == AssetStatus::Running)
                .collect(),
            chiller_cmd: chiller_status
                .iter()
                .map(|s| *s == AssetStatus::Running)
                .collect(),
            pump_status,
            chiller_status,
            speed_override: None,
            setpoint_c,
            maintenance,
            ordered_cost: 0.0,
        };
        ops.settle_all();

        let sensors = plant.sensors.len();
        plant.state = State {
            step: 0,
            t_s: 0.0,
            supply_c,
            return_c,
            front_c,
            load_noise,
            wear,
            bearing_c,
            fouling,
            heat_rejected_kw,
            ops,
            kpis: Kpis::default(),
            failures: Vec::with_capacity(64),
            truth: vec![0.0; sensors],
            sensors: SensorModel::new(sensors, cfg.sensor_quality),
        };
        plant.decay = step::Decay::default();
        // The truth vector as the estimate has it (the latest readings where there are any).
        for (i, value) in plant.state.truth.iter_mut().enumerate() {
            *value = recent.latest(i).unwrap_or(0.0);
        }
        missing.sort();
        missing.dedup();
        let estimate = Estimate {
            at_unix_s: recent.now_unix_s,
            load_factor,
            hidden,
            missing,
            distrusted,
        };
        Ok((plant, estimate))
    }

    /// The hidden wear and fouling as they truly are, in the order [`ChillerPlant::estimate`]
    /// lists them (for measuring the estimator).
    pub fn hidden_truth(&self) -> Vec<f64> {
        self.state
            .wear
            .iter()
            .chain(&self.state.fouling)
            .copied()
            .collect()
    }

    /// Whether a unit runs now, in the order of [`ChillerPlant::hidden_truth`].
    pub fn hidden_running(&self) -> Vec<bool> {
        self.state
            .ops
            .pump_status
            .iter()
            .chain(&self.state.ops.chiller_status)
            .map(|s| *s == AssetStatus::Running)
            .collect()
    }
}

/// The readings of `sensor` at the times `status` said the unit was running, within `window_s`
/// of the newest reading.
fn while_running(
    recent: &RecentReadings,
    status: usize,
    sensor: usize,
    window_s: f64,
) -> Vec<(f64, f64)> {
    let statuses = &recent.series[status];
    let running_at = |t: f64| {
        // The status in force at t: the last one reported at or before it.
        let k = statuses.partition_point(|&(ts, _)| ts <= t);
        k > 0 && statuses[k - 1].1.round() == 1.0
    };
    // Only since the last service, repair or failure: those reset wear and fouling.
    let reset = statuses
        .iter()
        .rev()
        .find(|(_, s)| s.round() >= 2.0)
        .map_or(f64::NEG_INFINITY, |&(t, _)| t);
    let series = &recent.series[sensor];
    let Some(&(newest, _)) = series.last() else {
        return Vec::new();
    };
    series
        .iter()
        .copied()
        .filter(|&(t, v)| t >= newest - window_s && t > reset && v.is_finite() && running_at(t))
        .collect()
}

/// The value at or before `t` of a series, if any.
fn at(series: &[(f64, f64)], t: f64) -> Option<f64> {
    let k = series.partition_point(|&(ts, _)| ts <= t);
    (k > 0).then(|| series[k - 1].1)
}

/// Bearing wear from vibration: `w = ((v − 0.5 − 0.9 s²) / 7)^0.4`, with the excess vibration
/// averaged before inverting (inverting each noisy reading would bias young bearings upward).
fn pump_wear(recent: &RecentReadings, l: Layout, i: usize) -> Option<(f64, usize)> {
    let vibration = while_running(
        recent,
        l.pump(i, PUMP_STATUS),
        l.pump(i, PUMP_VIBRATION),
        WEAR_WINDOW_S,
    );
    let speed = &recent.series[l.pump(i, PUMP_SPEED)];
    let excess: Vec<f64> = vibration
        .iter()
        .filter_map(|&(t, v)| {
            let s = at(speed, t)? / 100.0;
            Some(v - 0.5 - 0.9 * s * s)
        })
        .collect();
    if excess.is_empty() {
        return None;
    }
    let mean = excess.iter().sum::<f64>() / excess.len() as f64;
    Some(((mean / 7.0).max(0.0).powf(0.4).min(1.2), excess.len()))
}

/// Fouling from the condenser: `φ = (cond − tower water − 2) / 6`, averaged over the chiller's
/// recent running readings.
fn chiller_fouling(recent: &RecentReadings, l: Layout, j: usize) -> Option<(f64, usize)> {
    let cond = while_running(
        recent,
        l.chiller(j, CHILLER_STATUS),
        l.chiller(j, CHILLER_COND),
        WEAR_WINDOW_S,
    );
    let tower = &recent.series[l.plant(TOWER_WATER)];
    let approach: Vec<f64> = cond
        .iter()
        .filter_map(|&(t, c)| Some(c - at(tower, t)? - 2.0))
        .collect();
    if approach.is_empty() {
        return None;
    }
    let mean = approach.iter().sum::<f64>() / approach.len() as f64;
    Some(((mean / 6.0).clamp(0.0, 1.5), approach.len()))
}

/// How far the estimator is from the truth, over many plants (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Serialize, Default)]
pub struct EstimatorErrors {
    pub plants: usize,
    /// Mean absolute error of bearing wear and fouling, on units that ran within the window
    /// (observed) and on those that did not (the prior), with how many of each.
    pub wear_observed: (f64, usize),
    pub wear_unobserved: (f64, usize),
    pub fouling_observed: (f64, usize),
    pub fouling_unobserved: (f64, usize),
    /// Mean absolute error, over the hour after the estimate, of the supply temperature (K) and
    /// of the plant's power (kW) simulated from the estimate against the true plant's, both
    /// run by the rule-based operator; and of the true plant's power, for scale.
    pub supply_ahead_k: f64,
    pub power_ahead_kw: f64,
    pub mean_power_kw: f64,
}

/// A plant of `config` and `seed` run `days` by the rule-based operator, and its recent
/// readings (what the estimator would be handed).
pub fn operated(
    config: &ChillerPlantConfig,
    seed: u64,
    days: f64,
) -> Result<(ChillerPlant, RecentReadings)> {
    use crate::policy::PolicyKind;
    use crate::run::{RunSettings, simulate};
    let mut plant = ChillerPlant::new(config.clone(), seed)?;
    let mut window = ReadingsWindow {
        start_unix_s: config.start_ns as f64 / 1e9,
        recent: RecentReadings::new(plant.sensors.len()),
    };
    let mut operator = PolicyKind::Rules.build(&plant)?;
    let settings = RunSettings { days, step_s: 60.0 };
    simulate(
        &mut plant,
        operator.as_mut(),
        Vec::new(),
        settings,
        Some(&mut window),
    )?;
    Ok((plant, window.recent))
}

/// Runs `seeds` reference plants for `days` each under the rule-based operator, estimates
/// each from its last six hours of readings, and compares the estimate with the truth, then
/// and over the hour after.
pub fn measure_estimator(seeds: std::ops::Range<u64>, days: f64) -> Result<EstimatorErrors> {
    use crate::policy::PolicyKind;
    use crate::run::{Observer, RunSettings, StepView, simulate};

    struct Power {
        supply: usize,
        power: usize,
        trace: Vec<(f64, f64)>,
    }
    impl Observer for Power {
        fn observe(&mut self, view: &StepView) -> Result<bool> {
            self.trace
                .push((view.truth[self.supply], view.truth[self.power]));
            Ok(true)
        }
    }

    let config = ChillerPlantConfig::default();
    let mut e = EstimatorErrors::default();
    let (mut supply_sum, mut power_sum, mut scale_sum, mut points) = (0.0, 0.0, 0.0, 0usize);
    let add = |slot: &mut (f64, usize), err: f64| {
        slot.0 += err;
        slot.1 += 1;
    };
    for seed in seeds {
        let (mut truth, recent) = operated(&config, seed, days)?;
        let l = truth.layout;
        let (mut estimated, estimate) =
            ChillerPlant::estimate(config.clone(), seed ^ 0x5eed, &recent)?;
        let actual = truth.hidden_truth();
        for (h, actual) in estimate.hidden.iter().zip(actual) {
            let err = (h.value - actual.min(1.2)).abs();
            let slot = match (h.quantity, h.readings > 0) {
                ("bearing_wear", true) => &mut e.wear_observed,
                ("bearing_wear", false) => &mut e.wear_unobserved,
                (_, true) => &mut e.fouling_observed,
                (_, false) => &mut e.fouling_unobserved,
            };
            add(slot, err);
        }
        let hour = RunSettings {
            days: 1.0 / 24.0,
            step_s: 60.0,
        };
        let mut traces = Vec::new();
        for plant in [&mut truth, &mut estimated] {
            let mut power = Power {
                supply: l.plant(CHW_SUPPLY),
                power: l.plant(PLANT_POWER),
                trace: Vec::new(),
            };
            let mut operator = PolicyKind::Rules.build(plant)?;
            simulate(plant, operator.as_mut(), Vec::new(), hour, Some(&mut power))?;
            traces.push(power.trace);
        }
        for (a, b) in traces[0].iter().zip(&traces[1]) {
            supply_sum += (a.0 - b.0).abs();
            power_sum += (a.1 - b.1).abs();
            scale_sum += a.1;
            points += 1;
        }
        e.plants += 1;
    }
    for slot in [
        &mut e.wear_observed,
        &mut e.wear_unobserved,
        &mut e.fouling_observed,
        &mut e.fouling_unobserved,
    ] {
        if slot.1 > 0 {
            slot.0 /= slot.1 as f64;
        }
    }
    let n = points.max(1) as f64;
    e.supply_ahead_k = supply_sum / n;
    e.power_ahead_kw = power_sum / n;
    e.mean_power_kw = scale_sum / n;
    Ok(e)
}
