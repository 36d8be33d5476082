//! The reference plant: a chilled-water cooling plant serving a data hall.
//!
//! N variable-speed pumps in parallel push water through a loop; M chillers cool it to a
//! setpoint; a cooling tower takes their heat to the outdoor air. The hall's heat load follows
//! the day, the week and the weather. Pump bearings wear and chiller tubes foul, visibly in the
//! sensors, until they trip; a maintenance crew with a stock of parts repairs them.
//! The equations and every number are in docs/REFERENCE_PLANT.md.
//!
//! Local controllers (always on, whatever the policy): pump speed follows the load, chillers
//! share the load to hold the supply setpoint, the tower fan holds its water temperature, and
//! a unit that trips or goes into maintenance is replaced by an idle standby (changeover).

mod environment;
mod estimate;
mod layout;
mod maintenance;
pub mod physics;

use rand::Rng;
use rand_distr::StandardNormal;
use serde::{Deserialize, Serialize};

pub use environment::EnvironmentConfig;
pub use estimate::{
    Estimate, EstimatorErrors, HEALTH_HORIZON_H, Health, HiddenEstimate, RecentReadings,
    measure_estimator, operated,
};
pub use layout::Layout;
pub use maintenance::MaintenanceConfig;

use crate::error::{Result, SimError};
use crate::kpi::Kpis;
use crate::plant::{
    Action, ActuatorKind, ActuatorSpec, AssetLabel, AssetSpec, AssetStatus, Disturbances,
    FailureEvent, Plant, Readings, SensorSpec,
};
use crate::random::{Stream, stream};
use crate::sensors::{SensorModel, SensorQuality};
use maintenance::{Equipment, Job, Maintenance};
use physics::{ChillerCurves, PumpCurve, SystemCurve};

/// Everything that defines the plant. Defaults describe the plant in docs/REFERENCE_PLANT.md.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChillerPlantConfig {
    pub pumps: usize,
    pub chillers: usize,
    /// When the run starts, nanoseconds since the Unix epoch (UTC).
    pub start_ns: i64,
    pub pump: PumpCurve,
    pub system: SystemCurve,
    pub pump_min_speed: f64,
    pub pump_rated_kw: f64,
    pub chiller_capacity_kw: f64,
    pub chiller_cop: f64,
    pub curves: ChillerCurves,
    pub supply_setpoint_c: f64,
    /// Supply temperature above which the load is at risk (the excursion KPI).
    pub supply_limit_c: f64,
    /// Supply-to-return temperature difference the pumps aim for, K.
    pub design_delta_t_k: f64,
    /// The warmest the load's coils can return water, °C (caps the heat the water can take).
    pub coil_max_return_c: f64,
    pub supply_volume_m3: f64,
    pub return_volume_m3: f64,
    pub tower_design_heat_kw: f64,
    pub tower_design_approach_k: f64,
    pub tower_setpoint_c: f64,
    pub tower_fan_kw: f64,
    pub tower_min_fan: f64,
    pub condenser_pump_kw: f64,
    pub initial_pumps_running: usize,
    pub initial_chillers_running: usize,
    /// Initial bearing wear and tube fouling are drawn uniformly from these ranges.
    pub initial_wear: (f64, f64),
    pub initial_fouling: (f64, f64),
    /// Bearing wear per running hour at full speed and 45 °C bearing temperature.
    pub wear_per_hour: f64,
    /// Fouling per running hour at full load.
    pub fouling_per_hour: f64,
    pub environment: EnvironmentConfig,
    pub maintenance: MaintenanceConfig,
    pub sensor_quality: SensorQuality,
}

impl Default for ChillerPlantConfig {
    fn default() -> Self {
        ChillerPlantConfig {
            pumps: 4,
            chillers: 3,
            start_ns: 1_782_864_000_000_000_000, // 2026-07-01T00:00:00Z
            pump: PumpCurve {
                shutoff_head_m: 38.0,
                k: 8.0 / 14_400.0,
                q_bep_m3h: 120.0,
                eta_bep: 0.80,
                motor_efficiency: 0.92,
            },
            system: SystemCurve {
                min_head_m: 10.0,
                k: 2.0e-4,
            },
            pump_min_speed: 0.3,
            pump_rated_kw: 15.0,
            chiller_capacity_kw: 1000.0,
            chiller_cop: 5.5,
            curves: ChillerCurves::doe2_centrifugal(),
            supply_setpoint_c: 7.0,
            supply_limit_c: 9.0,
            design_delta_t_k: 6.0,
            coil_max_return_c: 18.0,
            supply_volume_m3: 20.0,
            return_volume_m3: 40.0,
            tower_design_heat_kw: 3600.0,
            tower_design_approach_k: 4.0,
            tower_setpoint_c: 24.0,
            tower_fan_kw: 45.0,
            tower_min_fan: 0.2,
            condenser_pump_kw: 18.5,
            initial_pumps_running: 3,
            initial_chillers_running: 2,
            initial_wear: (0.05, 0.85),
            initial_fouling: (0.0, 0.6),
            wear_per_hour: 1.0 / 2000.0,
            fouling_per_hour: 0.4 / 4320.0,
            environment: EnvironmentConfig::default(),
            maintenance: MaintenanceConfig::default(),
            sensor_quality: SensorQuality::default(),
        }
    }
}

impl ChillerPlantConfig {
    fn check(&self) -> Result<()> {
        let bad = |m: String| Err(SimError::Settings(m));
        if self.pumps == 0 || self.chillers == 0 {
            return bad("the plant needs at least one pump and one chiller".into());
        }
        if self.initial_pumps_running > self.pumps || self.initial_chillers_running > self.chillers
        {
            return bad("more units running at the start than the plant has".into());
        }
        if !(self.pump_min_speed > 0.0 && self.pump_min_speed < 1.0) {
            return bad(format!(
                "pump_min_speed must be in (0, 1), not {}",
                self.pump_min_speed
            ));
        }
        if self.pumps > 16 || self.chillers > 16 {
            return bad("the reference plant models at most 16 pumps and 16 chillers".into());
        }
        if self.maintenance.crews == 0 {
            return bad("the plant needs at least one maintenance crew".into());
        }
        Ok(())
    }
}

/// What operators and the local controllers decide: who runs, at what setpoints, and the
/// maintenance department. Small, so an action batch can be tried on a copy first.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Operations {
    pump_cmd: Vec<bool>,
    pump_status: Vec<AssetStatus>,
    chiller_cmd: Vec<bool>,
    chiller_status: Vec<AssetStatus>,
    speed_override: Option<f64>,
    setpoint_c: f64,
    maintenance: Maintenance,
    /// Money committed to planned jobs ordered since the last step.
    ordered_cost: f64,
}

impl Operations {
    /// Keeps each unit's status in line with its command, and replaces commanded units that
    /// are down by idle ones (the standby changeover every plant controller has).
    fn settle(cmd: &mut [bool], status: &mut [AssetStatus]) {
        for i in 0..cmd.len() {
            if cmd[i] && !status[i].is_available() {
                cmd[i] = false;
                if let Some(standby) =
                    (0..cmd.len()).find(|&k| !cmd[k] && status[k].is_available() && k != i)
                {
                    cmd[standby] = true;
                }
            }
        }
        for i in 0..cmd.len() {
            if status[i].is_available() {
                status[i] = if cmd[i] {
                    AssetStatus::Running
                } else {
                    AssetStatus::Off
                };
            }
        }
    }

    fn settle_all(&mut self) {
        Self::settle(&mut self.pump_cmd, &mut self.pump_status);
        Self::settle(&mut self.chiller_cmd, &mut self.chiller_status);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct State {
    step: u64,
    t_s: f64,
    supply_c: f64,
    return_c: f64,
    front_c: f64,
    load_noise: f64,
    wear: Vec<f64>,
    bearing_c: Vec<f64>,
    fouling: Vec<f64>,
    heat_rejected_kw: f64,
    ops: Operations,
    kpis: Kpis,
    failures: Vec<FailureEvent>,
    truth: Vec<f64>,
    sensors: SensorModel,
}

/// The chilled-water reference plant.
#[derive(Clone)]
pub struct ChillerPlant {
    config: ChillerPlantConfig,
    seed: u64,
    layout: Layout,
    sensors: Vec<SensorSpec>,
    actuators: Vec<ActuatorSpec>,
    assets: Vec<AssetSpec>,
    state: State,
    decay: step::Decay,
}

impl ChillerPlant {
    pub fn new(config: ChillerPlantConfig, seed: u64) -> Result<Self> {
        config.check()?;
        let layout = Layout {
            pumps: config.pumps,
            chillers: config.chillers,
        };
        let mut rng = stream(seed, Stream::Initial, 0);
        let (w0, w1) = config.initial_wear;
        let (f0, f1) = config.initial_fouling;
        let wear: Vec<f64> = (0..config.pumps)
            .map(|_| w0 + (w1 - w0) * rng.random::<f64>())
            .collect();
        let fouling: Vec<f64> = (0..config.chillers)
            .map(|_| f0 + (f1 - f0) * rng.random::<f64>())
            .collect();
        let front_c = config.environment.front_sd_c * rng.sample::<f64, _>(StandardNormal);
        let pump_cmd: Vec<bool> = (0..config.pumps)
            .map(|i| i < config.initial_pumps_running)
            .collect();
        let chiller_cmd: Vec<bool> = (0..config.chillers)
            .map(|j| j < config.initial_chillers_running)
            .collect();
        let mut ops = Operations {
            pump_status: vec![AssetStatus::Off; config.pumps],
            chiller_status: vec![AssetStatus::Off; config.chillers],
            pump_cmd,
            chiller_cmd,
            speed_override: None,
            setpoint_c: config.supply_setpoint_c,
            maintenance: Maintenance::new(&config.maintenance),
            ordered_cost: 0.0,
        };
        ops.settle_all();
        let bearing_c = (0..config.pumps)
            .map(|i| {
                let running = ops.pump_cmd[i];
                30.0 + if running {
                    15.0 * 0.64 + 30.0 * wear[i] * wear[i]
                } else {
                    0.0
                }
            })
            .collect();
        let sensors = layout.sensors();
        let state = State {
            step: 0,
            t_s: 0.0,
            supply_c: config.supply_setpoint_c,
            return_c: config.supply_setpoint_c + config.design_delta_t_k,
            front_c,
            load_noise: 0.0,
            wear,
            bearing_c,
            fouling,
            heat_rejected_kw: config.tower_design_heat_kw * 0.5,
            ops,
            kpis: Kpis::default(),
            // Room up front, so a failure in the step loop does not allocate.
            failures: Vec::with_capacity(64),
            truth: vec![0.0; sensors.len()],
            sensors: SensorModel::new(sensors.len(), config.sensor_quality),
        };
        Ok(ChillerPlant {
            actuators: layout.actuators(config.pump_min_speed),
            assets: layout.assets(),
            sensors,
            layout,
            config,
            seed,
            state,
            decay: step::Decay::default(),
        })
    }

    /// The seed the plant was made with (with its saved state, it goes on exactly).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The same plant in the same state, going on with the random numbers of `seed` (a Monte
    /// Carlo run forked from one state).
    pub fn reseeded(&self, seed: u64) -> ChillerPlant {
        let mut plant = self.clone();
        plant.seed = seed;
        plant
    }

    pub fn config(&self) -> &ChillerPlantConfig {
        &self.config
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The twin spec (`twin.toml` text) describing this plant's assets and sensors.
    pub fn twin_spec(&self) -> String {
        layout::twin_spec(&self.layout)
    }

    /// Which kind of equipment asset `a` is, and its index among its kind.
    fn equipment(&self, asset: usize) -> Option<(Equipment, usize)> {
        let l = self.layout;
        if asset < l.pumps {
            Some((Equipment::Pump, asset))
        } else if asset < l.pumps + l.chillers {
            Some((Equipment::Chiller, asset - l.pumps))
        } else {
            None
        }
    }

    /// Applies one action to `ops`, or says why it cannot be done.
    fn apply(&self, ops: &mut Operations, action: &Action) -> Result<()> {
        let l = self.layout;
        let now = self.state.t_s;
        match *action {
            Action::Set { actuator, value } => {
                let spec = self.actuators.get(actuator).ok_or_else(|| {
                    SimError::action(
                        format!("actuator #{actuator}"),
                        format!("no such actuator (the plant has {})", self.actuators.len()),
                    )
                })?;
                match spec.kind {
                    ActuatorKind::Switch if value != 0.0 && value != 1.0 => {
                        return Err(SimError::action(
                            &spec.name,
                            format!("a switch takes 0 or 1, not {value}"),
                        ));
                    }
                    ActuatorKind::Setpoint { min, max } if !(min..=max).contains(&value) => {
                        return Err(SimError::action(
                            &spec.name,
                            format!("{value} {} is outside {min}..={max}", spec.unit),
                        ));
                    }
                    _ => {}
                }
                let on = value == 1.0;
                if actuator < l.pumps + l.chillers {
                    let (cmd, status, k) = if actuator < l.pumps {
                        (&mut ops.pump_cmd, &ops.pump_status, actuator)
                    } else {
                        (
                            &mut ops.chiller_cmd,
                            &ops.chiller_status,
                            actuator - l.pumps,
                        )
                    };
                    if on && !status[k].is_available() {
                        return Err(SimError::action(
                            &spec.name,
                            format!(
                                "{} is {:?} and cannot run until it is back",
                                self.assets[if actuator < l.pumps {
                                    l.pump_asset(k)
                                } else {
                                    l.chiller_asset(k)
                                }]
                                .id,
                                status[k]
                            ),
                        ));
                    }
                    cmd[k] = on;
                } else if actuator == l.speed_actuator() {
                    ops.speed_override = Some(value);
                } else {
                    ops.setpoint_c = value;
                }
            }
            Action::Release { actuator } => {
                if actuator == l.speed_actuator() {
                    ops.speed_override = None;
                } else if actuator == l.setpoint_actuator() {
                    ops.setpoint_c = self.config.supply_setpoint_c;
                } else {
                    let name = self
                        .actuators
                        .get(actuator)
                        .map_or(format!("actuator #{actuator}"), |a| a.name.clone());
                    return Err(SimError::action(
                        name,
                        "has no local controller to hand back to",
                    ));
                }
            }
            Action::Maintain { asset } => {
                let name = self
                    .assets
                    .get(asset)
                    .map_or(format!("asset #{asset}"), |a| a.id.clone());
                let (equipment, k) = self.equipment(asset).ok_or_else(|| {
                    SimError::action(&name, "only pumps and chillers can be maintained")
                })?;
                let status = match equipment {
                    Equipment::Pump => &mut ops.pump_status[k],
                    Equipment::Chiller => &mut ops.chiller_status[k],
                };
                if !status.is_available() {
                    return Err(SimError::action(
                        &name,
                        format!("is already down ({status:?})"),
                    ));
                }
                ops.maintenance.check_planned(equipment, &name, now)?;
                *status = AssetStatus::Maintenance;
                let lead = self.config.maintenance.kit_lead_time_h;
                ops.ordered_cost += ops.maintenance.start_planned(
                    &self.config.maintenance,
                    asset,
                    equipment,
                    now,
                    lead,
                );
            }
        }
        ops.settle_all();
        Ok(())
    }

    fn fail(&mut self, asset: usize) {
        let Some((equipment, k)) = self.equipment(asset) else {
            return;
        };
        let ops = &mut self.state.ops;
        let status = match equipment {
            Equipment::Pump => &mut ops.pump_status[k],
            Equipment::Chiller => &mut ops.chiller_status[k],
        };
        if !status.is_available() {
            return;
        }
        *status = AssetStatus::Failed;
        ops.maintenance.report_failure(asset, equipment);
        self.state.kpis.failures += 1.0;
        self.state.failures.push(FailureEvent {
            time_s: self.state.t_s,
            asset,
        });
        ops.settle_all();
    }
}

mod step;

impl Plant for ChillerPlant {
    fn sensors(&self) -> &[SensorSpec] {
        &self.sensors
    }
    fn actuators(&self) -> &[ActuatorSpec] {
        &self.actuators
    }
    fn assets(&self) -> &[AssetSpec] {
        &self.assets
    }
    fn time_s(&self) -> f64 {
        self.state.t_s
    }

    fn check(&self, action: &Action) -> Result<()> {
        let mut ops = self.state.ops.clone();
        self.apply(&mut ops, action)
    }

    fn act(&mut self, action: &Action) -> Result<()> {
        let mut ops = self.state.ops.clone();
        self.apply(&mut ops, action)?;
        self.state.ops = ops;
        Ok(())
    }

    fn step(
        &mut self,
        dt: f64,
        actions: &[Action],
        disturbances: &Disturbances,
        readings: Option<&mut Readings>,
    ) -> Result<()> {
        if !(dt.is_finite() && dt > 0.0) {
            return Err(SimError::Settings(format!(
                "the step must be a positive number of seconds, not {dt}"
            )));
        }
        if !actions.is_empty() {
            let mut ops = self.state.ops.clone();
            for action in actions {
                self.apply(&mut ops, action)?;
            }
            self.state.ops = ops;
        }
        self.advance(dt, disturbances);
        if let Some(out) = readings {
            self.state.sensors.read(
                &self.sensors,
                &self.state.truth,
                &disturbances.sensor_faults,
                self.seed,
                self.state.step,
                self.state.t_s,
                dt,
                out,
            );
        }
        Ok(())
    }

    fn truth(&self) -> &[f64] {
        &self.state.truth
    }

    fn labels(&self) -> Vec<AssetLabel> {
        let ops = &self.state.ops;
        let mut out = Vec::with_capacity(self.assets.len());
        for i in 0..self.layout.pumps {
            out.push(AssetLabel {
                status: ops.pump_status[i],
                health: 1.0 - self.state.wear[i].min(1.0),
            });
        }
        for j in 0..self.layout.chillers {
            out.push(AssetLabel {
                status: ops.chiller_status[j],
                health: 1.0 - self.state.fouling[j].min(1.0),
            });
        }
        while out.len() < self.assets.len() {
            out.push(AssetLabel {
                status: AssetStatus::Running,
                health: 1.0,
            });
        }
        out
    }

    fn kpis(&self) -> &Kpis {
        &self.state.kpis
    }

    fn failures(&self) -> &[FailureEvent] {
        &self.state.failures
    }

    fn watch(&mut self, sensor: usize, horizon_s: f64, dt: f64) {
        let steps = (horizon_s / dt).ceil() as usize + 1;
        self.state.sensors.watch(sensor, steps);
    }

    fn save_state(&self) -> serde_json::Value {
        serde_json::json!({
            "plant": "chilled-water",
            "seed": self.seed,
            "config": self.config,
            "state": self.state,
        })
    }

    fn load_state(&mut self, value: serde_json::Value) -> Result<()> {
        if value.get("plant").and_then(|p| p.as_str()) != Some("chilled-water") {
            return Err(SimError::State(
                "not a saved state of the chilled-water plant (no \"plant\": \"chilled-water\")"
                    .into(),
            ));
        }
        let config: ChillerPlantConfig = serde_json::from_value(value["config"].clone())
            .map_err(|e| SimError::State(format!("config: {e}")))?;
        let seed = value["seed"]
            .as_u64()
            .ok_or_else(|| SimError::State("seed: missing or not a whole number".into()))?;
        let state: State = serde_json::from_value(value["state"].clone())
            .map_err(|e| SimError::State(format!("state: {e}")))?;
        let mut fresh = ChillerPlant::new(config, seed)?;
        if state.truth.len() != fresh.sensors.len() || state.wear.len() != fresh.layout.pumps {
            return Err(SimError::State(
                "the state does not match the plant's configuration".into(),
            ));
        }
        fresh.state = state;
        *self = fresh;
        Ok(())
    }
}
