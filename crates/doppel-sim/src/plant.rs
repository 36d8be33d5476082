//! The plant interface every simulated plant implements, and the vocabulary around it:
//! sensors, actuators, assets, actions, disturbances, readings and ground truth.
//!
//! A plant owns its physics and its sensors. What it measures (readings: noisy, quantised,
//! sometimes missing, sometimes faulty) is kept apart from what is true (the truth vector and
//! the asset labels), so a model can be scored against the truth it never saw.
//! This module must never reach into a particular plant's insides or into the lake.

use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::kpi::Kpis;
use crate::sensors::SensorFault;

/// One sensor: what it measures and how it maps to a series (InfluxDB data model).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SensorSpec {
    /// Unique id, such as `pump1_vibration`; also the column name in run files.
    pub id: String,
    /// The asset it belongs to.
    pub asset: String,
    pub unit: String,
    /// The measurement, tags and field it is written to.
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub field: String,
    /// How often it reports, in seconds (never faster than the simulation step).
    pub period_s: f64,
    /// Standard deviation of its measurement noise, in its unit.
    pub noise_sd: f64,
    /// The smallest step its readings move in (quantisation), in its unit; 0 for none.
    pub resolution: f64,
    /// The range the instrument can show.
    pub min: f64,
    pub max: f64,
}

/// What an actuator accepts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum ActuatorKind {
    /// 0 (off) or 1 (on).
    Switch,
    /// A value in `min..=max`.
    Setpoint { min: f64, max: f64 },
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActuatorSpec {
    /// Unique name, such as `pump2.run` or `chw.supply_setpoint`.
    pub name: String,
    pub unit: String,
    pub kind: ActuatorKind,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssetSpec {
    pub id: String,
    pub kind: String,
}

/// An action a policy (or an intruder) asks of the plant. Indices refer to
/// [`Plant::actuators`] and [`Plant::assets`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Action {
    /// Set an actuator: a switch to 0 or 1, a setpoint to a value in its range.
    Set { actuator: usize, value: f64 },
    /// Give an actuator back to the plant's local controller.
    Release { actuator: usize },
    /// Take an asset down for planned maintenance (needs a free crew, and parts if the job uses any).
    Maintain { asset: usize },
}

/// The state of an asset, as the ground truth knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetStatus {
    /// Available and stopped.
    Off,
    Running,
    /// Failed; waiting for a crew or parts.
    Failed,
    /// Under repair after a failure (unplanned).
    Repair,
    /// Under planned maintenance.
    Maintenance,
}

impl AssetStatus {
    pub fn code(self) -> f64 {
        match self {
            AssetStatus::Off => 0.0,
            AssetStatus::Running => 1.0,
            AssetStatus::Failed => 2.0,
            AssetStatus::Repair => 3.0,
            AssetStatus::Maintenance => 4.0,
        }
    }

    /// Down because something broke (counts as unplanned downtime).
    pub fn is_unplanned_down(self) -> bool {
        matches!(self, AssetStatus::Failed | AssetStatus::Repair)
    }

    pub fn is_available(self) -> bool {
        matches!(self, AssetStatus::Off | AssetStatus::Running)
    }
}

/// Ground truth about one asset at the current step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct AssetLabel {
    pub status: AssetStatus,
    /// 1 = as new, 0 = failed (bearing wear, fouling...).
    pub health: f64,
}

/// A failure that happened during a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FailureEvent {
    pub time_s: f64,
    pub asset: usize,
}

/// What the world does to the plant at this step, set by the scenario's disruptions.
/// Neutral values (`Disturbances::none`) leave the plant as it would be.
#[derive(Debug, Clone, PartialEq)]
pub struct Disturbances {
    /// Added to the outdoor dry-bulb temperature, in K.
    pub ambient_offset_c: f64,
    /// Multiplies the heat load.
    pub load_factor: f64,
    /// Multiplies the electricity price.
    pub price_factor: f64,
    /// Multiplies each asset's degradation rate (bearing wear, fouling), by asset index.
    pub degradation_factor: Vec<f64>,
    /// Assets forced to fail at this step (a trip).
    pub trips: Vec<usize>,
    /// Added to the lead time of spare parts ordered from now on, in hours.
    pub parts_delay_h: f64,
    /// A fault on each sensor, by sensor index (`None`: healthy).
    pub sensor_faults: Vec<Option<SensorFault>>,
    /// Whether any of `sensor_faults` is set (lets healthy runs skip them).
    pub any_sensor_fault: bool,
}

impl Disturbances {
    pub fn none(assets: usize, sensors: usize) -> Self {
        Disturbances {
            ambient_offset_c: 0.0,
            load_factor: 1.0,
            price_factor: 1.0,
            degradation_factor: vec![1.0; assets],
            trips: Vec::new(),
            parts_delay_h: 0.0,
            sensor_faults: vec![None; sensors],
            any_sensor_fault: false,
        }
    }
}

/// What the sensors reported at one step: a value per sensor, and whether it reported at all.
/// A missing reading is `present == false`; its value is meaningless and never written out.
#[derive(Debug, Clone, PartialEq)]
pub struct Readings {
    pub values: Vec<f64>,
    pub present: Vec<bool>,
}

impl Readings {
    pub fn new(sensors: usize) -> Self {
        Readings {
            values: vec![0.0; sensors],
            present: vec![false; sensors],
        }
    }

    pub fn get(&self, sensor: usize) -> Option<f64> {
        self.present[sensor].then(|| self.values[sensor])
    }
}

/// A simulated plant. Deterministic for a seed; `step` allocates nothing.
pub trait Plant: Send {
    fn sensors(&self) -> &[SensorSpec];
    fn actuators(&self) -> &[ActuatorSpec];
    fn assets(&self) -> &[AssetSpec];

    /// Seconds since the run started.
    fn time_s(&self) -> f64;

    /// Checks an action against the plant as it is now; says which and why when refused.
    fn check(&self, action: &Action) -> Result<()>;

    /// Checks and applies one action at once (between steps); refused actions change nothing.
    fn act(&mut self, action: &Action) -> Result<()>;

    /// Keeps `horizon_s` seconds of a sensor's true history (for replay attacks), at step `dt`.
    fn watch(&mut self, sensor: usize, horizon_s: f64, dt: f64);

    /// Advances the plant by `dt` seconds. Actions are checked first: if any is refused,
    /// none is applied and the plant does not move. When `readings` is given, the sensors
    /// are read at the end of the step (skipping them is how Monte Carlo runs go fast;
    /// the physics and the truth are the same either way).
    fn step(
        &mut self,
        dt: f64,
        actions: &[Action],
        disturbances: &Disturbances,
        readings: Option<&mut Readings>,
    ) -> Result<()>;

    /// The true value of every quantity a sensor measures, after the last step.
    fn truth(&self) -> &[f64];

    /// The true state and health of every asset.
    fn labels(&self) -> Vec<AssetLabel>;

    /// The KPIs accumulated since the run started.
    fn kpis(&self) -> &Kpis;

    /// The failures so far.
    fn failures(&self) -> &[FailureEvent];

    /// The whole state, as JSON, so a run can fork from this moment.
    fn save_state(&self) -> serde_json::Value;

    /// Restores a state saved by `save_state` of the same kind of plant.
    fn load_state(&mut self, state: serde_json::Value) -> Result<()>;
}

/// Finds a sensor's index by id.
pub fn sensor_index(plant: &dyn Plant, id: &str) -> Option<usize> {
    plant.sensors().iter().position(|s| s.id == id)
}

/// Finds an actuator's index by name.
pub fn actuator_index(plant: &dyn Plant, name: &str) -> Option<usize> {
    plant.actuators().iter().position(|a| a.name == name)
}

/// Finds an asset's index by id.
pub fn asset_index(plant: &dyn Plant, id: &str) -> Option<usize> {
    plant.assets().iter().position(|a| a.id == id)
}
