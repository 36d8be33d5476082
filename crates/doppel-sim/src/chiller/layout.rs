//! Where each sensor, actuator and asset of the chilled-water plant sits in the plant's
//! vectors, and what each one is called outside (ids, series, units).
//!
//! The step loop addresses sensors by arithmetic on these offsets, never by name, so it stays
//! free of lookups and allocation.

use crate::plant::{ActuatorKind, ActuatorSpec, AssetSpec, SensorSpec};

/// Per-pump sensors, in order: (field, unit, period s, noise sd, resolution, min, max).
const PUMP_FIELDS: [(&str, &str, f64, f64, f64, f64, f64); 6] = [
    ("status", "code", 60.0, 0.0, 1.0, 0.0, 4.0),
    ("speed", "%", 10.0, 0.2, 0.1, 0.0, 110.0),
    ("power", "kW", 10.0, 0.1, 0.1, 0.0, 100.0),
    ("current", "A", 10.0, 0.2, 0.1, 0.0, 200.0),
    ("bearing_temp", "°C", 60.0, 0.2, 0.1, -20.0, 150.0),
    ("vibration", "mm/s", 10.0, 0.05, 0.01, 0.0, 45.0),
];
pub const PUMP_STATUS: usize = 0;
pub const PUMP_SPEED: usize = 1;
pub const PUMP_POWER: usize = 2;
pub const PUMP_CURRENT: usize = 3;
pub const PUMP_BEARING: usize = 4;
pub const PUMP_VIBRATION: usize = 5;

const CHILLER_FIELDS: [(&str, &str, f64, f64, f64, f64, f64); 5] = [
    ("status", "code", 60.0, 0.0, 1.0, 0.0, 4.0),
    ("power", "kW", 60.0, 1.0, 0.1, 0.0, 2000.0),
    ("duty", "kW", 60.0, 10.0, 1.0, 0.0, 5000.0),
    ("leaving_temp", "°C", 60.0, 0.05, 0.01, -5.0, 40.0),
    ("cond_temp", "°C", 60.0, 0.1, 0.1, 0.0, 70.0),
];
pub const CHILLER_STATUS: usize = 0;
pub const CHILLER_POWER: usize = 1;
pub const CHILLER_DUTY: usize = 2;
pub const CHILLER_LEAVING: usize = 3;
pub const CHILLER_COND: usize = 4;

/// Plant-wide sensors: (asset, measurement, field, unit, period, noise, resolution, min, max).
#[allow(clippy::type_complexity)]
const PLANT_FIELDS: [(&str, &str, &str, &str, f64, f64, f64, f64, f64); 11] = [
    (
        "chw",
        "chw_loop",
        "supply_temp",
        "°C",
        60.0,
        0.05,
        0.01,
        -5.0,
        40.0,
    ),
    (
        "chw",
        "chw_loop",
        "return_temp",
        "°C",
        60.0,
        0.05,
        0.01,
        -5.0,
        60.0,
    ),
    (
        "chw", "chw_loop", "flow", "m³/h", 60.0, 2.0, 0.1, 0.0, 2000.0,
    ),
    ("chw", "chw_loop", "dp", "kPa", 60.0, 1.0, 0.1, 0.0, 1000.0),
    (
        "chw", "chw_loop", "setpoint", "°C", 60.0, 0.0, 0.1, 0.0, 40.0,
    ),
    (
        "tower",
        "tower",
        "water_temp",
        "°C",
        60.0,
        0.1,
        0.1,
        -5.0,
        50.0,
    ),
    ("tower", "tower", "fan", "%", 60.0, 0.0, 0.1, 0.0, 100.0),
    (
        "weather", "weather", "temp", "°C", 300.0, 0.2, 0.1, -40.0, 60.0,
    ),
    (
        "weather", "weather", "humidity", "%", 300.0, 1.0, 1.0, 0.0, 100.0,
    ),
    ("hall", "hall", "load", "kW", 60.0, 5.0, 1.0, 0.0, 10_000.0),
    (
        "plant", "plant", "power", "kW", 60.0, 1.0, 0.1, 0.0, 10_000.0,
    ),
];
pub const CHW_SUPPLY: usize = 0;
pub const CHW_RETURN: usize = 1;
pub const CHW_FLOW: usize = 2;
pub const CHW_DP: usize = 3;
pub const CHW_SETPOINT: usize = 4;
pub const TOWER_WATER: usize = 5;
pub const TOWER_FAN: usize = 6;
pub const WEATHER_TEMP: usize = 7;
pub const WEATHER_HUMIDITY: usize = 8;
pub const HALL_LOAD: usize = 9;
pub const PLANT_POWER: usize = 10;

/// Non-maintainable assets, after the pumps and chillers: (id, kind).
const OTHER_ASSETS: [(&str, &str); 5] = [
    ("chw", "coolant_loop"),
    ("tower", "cooling_tower"),
    ("hall", "heat_load"),
    ("weather", "weather_station"),
    ("plant", "site_meter"),
];

#[derive(Debug, Clone, Copy)]
pub struct Layout {
    pub pumps: usize,
    pub chillers: usize,
}

impl Layout {
    pub fn pump(&self, i: usize, field: usize) -> usize {
        i * PUMP_FIELDS.len() + field
    }
    pub fn chiller(&self, j: usize, field: usize) -> usize {
        self.pumps * PUMP_FIELDS.len() + j * CHILLER_FIELDS.len() + field
    }
    pub fn plant(&self, field: usize) -> usize {
        self.pumps * PUMP_FIELDS.len() + self.chillers * CHILLER_FIELDS.len() + field
    }
    pub fn sensor_count(&self) -> usize {
        self.plant(PLANT_FIELDS.len())
    }

    /// Asset index of pump `i` / chiller `j`.
    pub fn pump_asset(&self, i: usize) -> usize {
        i
    }
    pub fn chiller_asset(&self, j: usize) -> usize {
        self.pumps + j
    }
    pub fn asset_count(&self) -> usize {
        self.pumps + self.chillers + OTHER_ASSETS.len()
    }

    /// Actuator indices: `pumpN.run`, then `chillerN.run`, then the speed and the setpoint.
    pub fn pump_run(&self, i: usize) -> usize {
        i
    }
    pub fn chiller_run(&self, j: usize) -> usize {
        self.pumps + j
    }
    pub fn speed_actuator(&self) -> usize {
        self.pumps + self.chillers
    }
    pub fn setpoint_actuator(&self) -> usize {
        self.pumps + self.chillers + 1
    }

    pub fn sensors(&self) -> Vec<SensorSpec> {
        let mut out = Vec::with_capacity(self.sensor_count());
        let mut push = |asset: &str,
                        measurement: &str,
                        (field, unit, period, noise, resolution, min, max): (
            &str,
            &str,
            f64,
            f64,
            f64,
            f64,
            f64,
        )| {
            out.push(SensorSpec {
                id: format!("{asset}_{field}"),
                asset: asset.to_owned(),
                unit: unit.to_owned(),
                measurement: measurement.to_owned(),
                tags: vec![("asset".to_owned(), asset.to_owned())],
                field: field.to_owned(),
                period_s: period,
                noise_sd: noise,
                resolution,
                min,
                max,
            })
        };
        for i in 0..self.pumps {
            for f in PUMP_FIELDS {
                push(&format!("pump{}", i + 1), "pump", f);
            }
        }
        for j in 0..self.chillers {
            for f in CHILLER_FIELDS {
                push(&format!("chiller{}", j + 1), "chiller", f);
            }
        }
        for (asset, measurement, field, unit, period, noise, res, min, max) in PLANT_FIELDS {
            push(
                asset,
                measurement,
                (field, unit, period, noise, res, min, max),
            );
        }
        out
    }

    pub fn assets(&self) -> Vec<AssetSpec> {
        let mut out = Vec::with_capacity(self.asset_count());
        for i in 0..self.pumps {
            out.push(AssetSpec {
                id: format!("pump{}", i + 1),
                kind: "pump".into(),
            });
        }
        for j in 0..self.chillers {
            out.push(AssetSpec {
                id: format!("chiller{}", j + 1),
                kind: "chiller".into(),
            });
        }
        for (id, kind) in OTHER_ASSETS {
            out.push(AssetSpec {
                id: id.into(),
                kind: kind.into(),
            });
        }
        out
    }

    pub fn actuators(&self, min_speed: f64) -> Vec<ActuatorSpec> {
        let mut out = Vec::new();
        for i in 0..self.pumps {
            out.push(ActuatorSpec {
                name: format!("pump{}.run", i + 1),
                unit: "on/off".into(),
                kind: ActuatorKind::Switch,
            });
        }
        for j in 0..self.chillers {
            out.push(ActuatorSpec {
                name: format!("chiller{}.run", j + 1),
                unit: "on/off".into(),
                kind: ActuatorKind::Switch,
            });
        }
        out.push(ActuatorSpec {
            name: "pumps.speed".into(),
            unit: "fraction of full speed".into(),
            kind: ActuatorKind::Setpoint {
                min: min_speed,
                max: 1.0,
            },
        });
        out.push(ActuatorSpec {
            name: "chw.supply_setpoint".into(),
            unit: "°C".into(),
            kind: ActuatorKind::Setpoint {
                min: 5.0,
                max: 12.0,
            },
        });
        out
    }
}

/// The parent of each asset in the twin spec: pumps and chillers sit on the loop.
fn parent(kind: &str) -> Option<&'static str> {
    match kind {
        "pump" | "chiller" | "heat_load" | "cooling_tower" => Some("chw"),
        _ => None,
    }
}

/// The twin spec (`twin.toml`) that describes this plant's assets and sensors.
pub fn twin_spec(layout: &Layout) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    out.push_str(
        "# The twin spec of doppel's reference plant: a chilled-water cooling plant serving a\n\
         # data hall (docs/REFERENCE_PLANT.md). Generated by `doppel sim spec`; every key is\n\
         # explained in ../README.md. Check it with:\n\
         #   doppel spec check examples/reference-plant/twin.toml\n\
         name = \"reference-plant\"\n\n\
         [[site]]\nid = \"site\"\nname = \"Reference data centre\"\ntimezone = \"Europe/Berlin\"\n",
    );
    for asset in layout.assets() {
        let _ = write!(
            out,
            "\n[[asset]]\nid = \"{}\"\nsite = \"site\"\nkind = \"{}\"\n",
            asset.id, asset.kind
        );
        if let Some(p) = parent(&asset.kind) {
            let _ = writeln!(out, "parent = \"{p}\"");
        }
    }
    for s in layout.sensors() {
        let tags: Vec<String> = s
            .tags
            .iter()
            .map(|(k, v)| format!("{k} = \"{v}\""))
            .collect();
        let _ = write!(
            out,
            "\n[[sensor]]\nid = \"{}\"\nasset = \"{}\"\nunit = \"{}\"\nmin = {:?}\nmax = {:?}\nperiod = \"{}s\"\nmeasurement = \"{}\"\ntags = {{ {} }}\nfield = \"{}\"\n",
            s.id,
            s.asset,
            s.unit,
            s.min,
            s.max,
            s.period_s,
            s.measurement,
            tags.join(", "),
            s.field
        );
        if s.field == "status" {
            // Codes 3 (repair) and 4 (planned service): the asset is out of service.
            out.push_str("maintenance = [3, 4]\n");
        }
    }
    out
}
