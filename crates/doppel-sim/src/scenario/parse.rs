//! Reading scenario files: TOML into checked [`Disruption`]s, with every problem reported as
//! file, line, column and key. Only reads; drawing and running live elsewhere.

use std::path::Path;

use doppel_core::located::Problems;
use serde::Deserialize;
use toml::Spanned;

use super::{Disruption, Dist, Effect, Scenario, Target};
use crate::error::{Result, SimError};
use crate::plant::{ActuatorKind, Plant};
use crate::sensors::FaultMode;

/// Parses and checks a scenario; `file` is only used in messages.
pub(super) fn parse(text: &str, file: &Path, plant: &dyn Plant) -> Result<Scenario> {
    let mut problems = Problems::new(text, file);
    let raw: RawScenario = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            problems.push(e.span().unwrap_or(0..0), "toml", e.message());
            return Err(SimError::Scenario(problems.list));
        }
    };
    let name = raw.name.unwrap_or_else(|| {
        file.file_stem()
            .map_or("scenario".into(), |s| s.to_string_lossy().into_owned())
    });
    let mut disruptions = Vec::new();
    for (i, d) in raw.disruptions.into_iter().enumerate() {
        if let Some(d) = check_disruption(d, i, plant, &mut problems) {
            disruptions.push(d);
        }
    }
    if problems.list.is_empty() {
        Ok(Scenario {
            name,
            description: raw.description.unwrap_or_default(),
            disruptions,
        })
    } else {
        Err(SimError::Scenario(problems.list))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    #[serde(default, rename = "disruption")]
    disruptions: Vec<Spanned<RawDisruption>>,
}

type Value = Option<Spanned<toml::Value>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisruption {
    kind: Spanned<String>,
    label: Option<Spanned<String>>,
    probability: Value,
    start: Value,
    duration: Value,
    asset: Value,
    sensor: Value,
    mode: Value,
    magnitude: Value,
    offset: Value,
    delta_c: Value,
    factor: Value,
    delay: Value,
    actuator: Value,
    value: Value,
}

/// Each kind, the keys it takes (beyond kind, label, probability, start) and what it is for.
const KINDS: [(&str, &[&str], &str); 10] = [
    (
        "heat_wave",
        &["duration", "delta_c"],
        "outdoor temperature up by delta_c K",
    ),
    (
        "load_surge",
        &["duration", "factor"],
        "heat load times factor",
    ),
    ("pump_trip", &["asset"], "a pump trips"),
    ("trip", &["asset"], "a pump or chiller trips"),
    (
        "bearing_wear",
        &["duration", "asset", "factor"],
        "pump bearings wear factor times faster",
    ),
    (
        "fouling",
        &["duration", "asset", "factor"],
        "chiller tubes foul factor times faster",
    ),
    (
        "price_spike",
        &["duration", "factor"],
        "electricity price times factor",
    ),
    (
        "parts_delay",
        &["duration", "delay"],
        "spare parts arrive later by delay",
    ),
    (
        "sensor_fault",
        &["duration", "sensor", "mode", "magnitude"],
        "sensors stuck, drifting, biased, spiking, silent or noisy",
    ),
    (
        "spoof",
        &["duration", "sensor", "mode", "offset"],
        "cyber: sensors replay old data or send plausible fakes",
    ),
];
const COMMAND_KEYS: &[&str] = &["actuator", "value"];

/// What kind of number a key holds.
#[derive(Clone, Copy, PartialEq)]
enum Unit {
    Seconds,
    Number,
}

fn scalar(v: &toml::Value, unit: Unit) -> std::result::Result<f64, String> {
    match (v, unit) {
        (toml::Value::String(s), Unit::Seconds) => doppel_core::time::parse_offset_seconds(s),
        (toml::Value::Integer(i), Unit::Number) => Ok(*i as f64),
        (toml::Value::Float(f), Unit::Number) if f.is_finite() => Ok(*f),
        (_, Unit::Seconds) => Err(format!(
            "expected a duration such as \"6h\" or \"3d\", found {v}"
        )),
        (_, Unit::Number) => Err(format!("expected a number, found {v}")),
    }
}

fn dist(v: &toml::Value, unit: Unit) -> std::result::Result<Dist, String> {
    let toml::Value::Table(table) = v else {
        return scalar(v, unit).map(Dist::Fixed);
    };
    let [(name, arg)] = table.iter().collect::<Vec<_>>()[..] else {
        return Err(
            "a distribution is one of { uniform = [a, b] }, { normal = [mean, sd] }, \
             { exponential = mean }, { choice = [...] }"
                .into(),
        );
    };
    let list = |n: Option<usize>| -> std::result::Result<Vec<f64>, String> {
        let toml::Value::Array(items) = arg else {
            return Err(format!("`{name}` takes a list, found {arg}"));
        };
        if let Some(n) = n
            && items.len() != n
        {
            return Err(format!("`{name}` takes {n} values, found {}", items.len()));
        }
        if items.is_empty() {
            return Err(format!("`{name}` needs at least one value"));
        }
        items.iter().map(|x| scalar(x, unit)).collect()
    };
    match name.as_str() {
        "uniform" => {
            let v = list(Some(2))?;
            if v[0] > v[1] {
                let toml::Value::Array(items) = arg else {
                    unreachable!("list() checked it is an array")
                };
                return Err(format!(
                    "uniform bounds are reversed: {} > {}",
                    items[0], items[1]
                ));
            }
            Ok(Dist::Uniform(v[0], v[1]))
        }
        "normal" => {
            let v = list(Some(2))?;
            if v[1] < 0.0 {
                return Err("a normal's standard deviation cannot be negative".into());
            }
            Ok(Dist::Normal(v[0], v[1]))
        }
        "exponential" => {
            let mean = scalar(arg, unit)?;
            if mean <= 0.0 {
                return Err("an exponential's mean must be positive".into());
            }
            Ok(Dist::Exponential(mean))
        }
        "choice" => list(None).map(Dist::Choice),
        other => Err(format!(
            "unknown distribution `{other}`: use uniform, normal, exponential or choice"
        )),
    }
}

/// Names → indices, for assets, sensors or actuators, with an allowed subset.
fn target(
    v: &toml::Value,
    names: &[&str],
    allowed: impl Fn(usize) -> bool,
    what: &str,
) -> std::result::Result<Target, String> {
    let find = |x: &toml::Value| -> std::result::Result<usize, String> {
        let toml::Value::String(name) = x else {
            return Err(format!("expected a {what} id, found {x}"));
        };
        match names.iter().position(|n| n == name) {
            Some(i) if allowed(i) => Ok(i),
            Some(_) => Err(format!("`{name}` cannot be hit by this kind of disruption")),
            None => {
                let valid: Vec<&str> = (0..names.len())
                    .filter(|&i| allowed(i))
                    .map(|i| names[i])
                    .collect();
                Err(format!(
                    "unknown {what} `{name}`; this plant has: {}",
                    valid.join(", ")
                ))
            }
        }
    };
    let many = |items: &Vec<toml::Value>| -> std::result::Result<Vec<usize>, String> {
        if items.is_empty() {
            return Err(format!("the list of {what}s is empty"));
        }
        items.iter().map(find).collect()
    };
    match v {
        toml::Value::Array(items) => many(items).map(Target::All),
        toml::Value::Table(t) => match (t.len(), t.get("one_of")) {
            (1, Some(toml::Value::Array(items))) => many(items).map(Target::OneOf),
            _ => Err(format!(
                "write a {what} as \"id\", [\"id\", ...] (all of them) or {{ one_of = [\"id\", ...] }}"
            )),
        },
        single => find(single).map(|i| Target::All(vec![i])),
    }
}

fn check_disruption(
    raw: Spanned<RawDisruption>,
    index: usize,
    plant: &dyn Plant,
    problems: &mut Problems,
) -> Option<Disruption> {
    let span = raw.span();
    let d = raw.into_inner();
    let key = |k: &str| format!("disruption[{index}].{k}");
    let kind = d.kind.get_ref().clone();
    let given: [(&str, &Value); 13] = [
        ("probability", &d.probability),
        ("start", &d.start),
        ("duration", &d.duration),
        ("asset", &d.asset),
        ("sensor", &d.sensor),
        ("mode", &d.mode),
        ("magnitude", &d.magnitude),
        ("offset", &d.offset),
        ("delta_c", &d.delta_c),
        ("factor", &d.factor),
        ("delay", &d.delay),
        ("actuator", &d.actuator),
        ("value", &d.value),
    ];
    let takes: &[&str] = if kind == "malicious_command" {
        COMMAND_KEYS
    } else if let Some((_, keys, _)) = KINDS.iter().find(|(k, _, _)| *k == kind) {
        keys
    } else {
        let mut all: Vec<&str> = KINDS.iter().map(|(k, _, _)| *k).collect();
        all.push("malicious_command");
        problems.push(
            d.kind.span(),
            key("kind"),
            format!("unknown kind `{kind}`; use one of: {}", all.join(", ")),
        );
        return None;
    };
    let before = problems.list.len();
    for (name, value) in &given {
        if let Some(v) = value
            && !matches!(*name, "probability" | "start")
            && !takes.contains(name)
        {
            problems.push(
                v.span(),
                key(name),
                format!(
                    "`{name}` does not apply to {kind} (it takes: {})",
                    takes.join(", ")
                ),
            );
        }
    }
    let ctx = Ctx {
        index,
        kind: &kind,
        span: span.clone(),
    };
    let get = |problems: &mut Problems, name: &str, value: &Value, required: bool, unit: Unit| {
        ctx.get(problems, name, value, required, unit)
    };
    let probability = get(problems, "probability", &d.probability, false, Unit::Number);
    let start = get(problems, "start", &d.start, false, Unit::Seconds).unwrap_or(Dist::Fixed(0.0));
    let duration = get(problems, "duration", &d.duration, false, Unit::Seconds);
    let assets: Vec<&str> = plant.assets().iter().map(|a| a.id.as_str()).collect();
    let sensors: Vec<&str> = plant.sensors().iter().map(|s| s.id.as_str()).collect();
    let actuators: Vec<&str> = plant.actuators().iter().map(|a| a.name.as_str()).collect();
    let kinds: Vec<&str> = plant.assets().iter().map(|a| a.kind.as_str()).collect();
    let pick =
        |problems: &mut Problems,
         name: &str,
         value: &Value,
         names: &[&str],
         allowed: &dyn Fn(usize) -> bool,
         what: &str| { ctx.pick(problems, name, value, names, allowed, what) };
    let is = |k: &'static str| {
        let kinds = kinds.clone();
        move |i: usize| kinds[i] == k
    };
    let effect = match kind.as_str() {
        "heat_wave" => get(problems, "delta_c", &d.delta_c, true, Unit::Number)
            .map(|delta_c| Effect::HeatWave { delta_c }),
        "load_surge" => get(problems, "factor", &d.factor, true, Unit::Number)
            .map(|factor| Effect::LoadSurge { factor }),
        "price_spike" => get(problems, "factor", &d.factor, true, Unit::Number)
            .map(|factor| Effect::PriceSpike { factor }),
        "parts_delay" => get(problems, "delay", &d.delay, true, Unit::Seconds)
            .map(|delay_s| Effect::PartsDelay { delay_s }),
        "pump_trip" => pick(problems, "asset", &d.asset, &assets, &is("pump"), "pump")
            .map(|assets| Effect::Trip { assets }),
        "trip" => {
            let (p, c) = (is("pump"), is("chiller"));
            pick(
                problems,
                "asset",
                &d.asset,
                &assets,
                &move |i| p(i) || c(i),
                "pump or chiller",
            )
            .map(|assets| Effect::Trip { assets })
        }
        "bearing_wear" | "fouling" => {
            let (kind_of, what) = if kind == "bearing_wear" {
                ("pump", "pump")
            } else {
                ("chiller", "chiller")
            };
            let t = pick(problems, "asset", &d.asset, &assets, &is(kind_of), what);
            let f = get(problems, "factor", &d.factor, true, Unit::Number);
            t.zip(f)
                .map(|(assets, factor)| Effect::Degradation { assets, factor })
        }
        "sensor_fault" | "spoof" => {
            let t = pick(problems, "sensor", &d.sensor, &sensors, &|_| true, "sensor");
            let mode = fault_mode(&kind, &d.mode, &key("mode"), span.clone(), problems);
            let needs_magnitude = matches!(
                mode,
                Some(FaultMode::Drift | FaultMode::Bias | FaultMode::Spike | FaultMode::Noise)
            );
            let magnitude = if kind == "sensor_fault" {
                if !needs_magnitude && let Some(v) = &d.magnitude {
                    problems.push(v.span(), key("magnitude"), "this mode takes no magnitude");
                }
                get(
                    problems,
                    "magnitude",
                    &d.magnitude,
                    needs_magnitude,
                    Unit::Number,
                )
            } else {
                None
            };
            let offset = if kind == "spoof" {
                get(problems, "offset", &d.offset, false, Unit::Seconds)
            } else {
                None
            };
            match (t, mode) {
                (Some(sensors), Some(mode)) => Some(Effect::Sensors {
                    sensors,
                    mode,
                    magnitude: magnitude.unwrap_or(Dist::Fixed(0.0)),
                    offset_s: offset.unwrap_or(Dist::Fixed(86_400.0)),
                }),
                _ => None,
            }
        }
        "malicious_command" => {
            let actuator = match &d.actuator {
                Some(v) => match target(v.get_ref(), &actuators, |_| true, "actuator") {
                    Ok(Target::All(list)) if list.len() == 1 => Some(list[0]),
                    Ok(_) => {
                        problems.push(v.span(), key("actuator"), "name one actuator");
                        None
                    }
                    Err(m) => {
                        problems.push(v.span(), key("actuator"), m);
                        None
                    }
                },
                None => {
                    problems.push(
                        span.clone(),
                        key("actuator"),
                        "malicious_command needs `actuator`",
                    );
                    None
                }
            };
            let value = get(problems, "value", &d.value, true, Unit::Number);
            if let (Some(a), Some(v), Some(raw)) = (actuator, &value, &d.value) {
                let spec = &plant.actuators()[a];
                let fits = |x: f64| match spec.kind {
                    ActuatorKind::Switch => x == 0.0 || x == 1.0,
                    ActuatorKind::Setpoint { min, max } => (min..=max).contains(&x),
                };
                let ok = match v {
                    Dist::Fixed(x) => fits(*x),
                    Dist::Choice(xs) => xs.iter().all(|x| fits(*x)),
                    Dist::Uniform(a, b) => fits(*a) && fits(*b),
                    _ => false,
                };
                if !ok {
                    problems.push(
                        raw.span(),
                        key("value"),
                        format!(
                            "{} accepts {} (the plant refuses anything else, so the attack would do nothing)",
                            spec.name,
                            match spec.kind {
                                ActuatorKind::Switch => "0 or 1".to_owned(),
                                ActuatorKind::Setpoint { min, max } => format!("{min}..={max} {}", spec.unit),
                            }
                        ),
                    );
                }
            }
            actuator
                .zip(value)
                .map(|(actuator, value)| Effect::Command { actuator, value })
        }
        _ => unreachable!("kind checked above"),
    };
    let probability = match probability {
        None => 1.0,
        Some(Dist::Fixed(p)) if (0.0..=1.0).contains(&p) => p,
        Some(_) => {
            let span = d.probability.as_ref().map_or(span.clone(), |v| v.span());
            problems.push(
                span,
                key("probability"),
                "a probability is a fixed number from 0 to 1",
            );
            return None;
        }
    };
    if problems.list.len() > before {
        return None;
    }
    let label_given = d.label.is_some();
    let label = d
        .label
        .map(Spanned::into_inner)
        .unwrap_or_else(|| describe(&kind, &effect, plant));
    let target_names = match &effect {
        Some(Effect::Trip { .. }) | Some(Effect::Degradation { .. }) => {
            plant.assets().iter().map(|a| a.id.clone()).collect()
        }
        Some(Effect::Sensors { .. }) => plant.sensors().iter().map(|s| s.id.clone()).collect(),
        Some(Effect::Command { .. }) => plant.actuators().iter().map(|a| a.name.clone()).collect(),
        _ => Vec::new(),
    };
    Some(Disruption {
        kind,
        label,
        label_given,
        target_names,
        probability,
        start_s: start,
        duration_s: duration,
        effect: effect?,
    })
}

/// Where a disruption is, for reading its keys.
struct Ctx<'a> {
    index: usize,
    kind: &'a str,
    span: std::ops::Range<usize>,
}

impl Ctx<'_> {
    fn key(&self, name: &str) -> String {
        format!("disruption[{}].{name}", self.index)
    }

    /// Reads a required or optional number or duration (fixed or a distribution).
    fn get(
        &self,
        problems: &mut Problems,
        name: &str,
        value: &Value,
        required: bool,
        unit: Unit,
    ) -> Option<Dist> {
        match value {
            Some(v) => match dist(v.get_ref(), unit) {
                Ok(x) => Some(x),
                Err(m) => {
                    problems.push(v.span(), self.key(name), m);
                    None
                }
            },
            None if required => {
                problems.push(
                    self.span.clone(),
                    self.key(name),
                    format!("{} needs `{name}`", self.kind),
                );
                None
            }
            None => None,
        }
    }

    /// Reads a required target (assets or sensors).
    fn pick(
        &self,
        problems: &mut Problems,
        name: &str,
        value: &Value,
        names: &[&str],
        allowed: &dyn Fn(usize) -> bool,
        what: &str,
    ) -> Option<Target> {
        match value {
            Some(v) => match target(v.get_ref(), names, allowed, what) {
                Ok(t) => Some(t),
                Err(m) => {
                    problems.push(v.span(), self.key(name), m);
                    None
                }
            },
            None => {
                problems.push(
                    self.span.clone(),
                    self.key(name),
                    format!("{} needs `{name}`", self.kind),
                );
                None
            }
        }
    }
}

fn fault_mode(
    kind: &str,
    value: &Value,
    key: &str,
    span: std::ops::Range<usize>,
    problems: &mut Problems,
) -> Option<FaultMode> {
    let allowed: &[FaultMode] = if kind == "spoof" {
        &[FaultMode::Replay, FaultMode::Fake]
    } else {
        &[
            FaultMode::Stuck,
            FaultMode::Drift,
            FaultMode::Bias,
            FaultMode::Spike,
            FaultMode::Dropout,
            FaultMode::Noise,
        ]
    };
    let names: Vec<&str> = FaultMode::ALL
        .iter()
        .filter(|(_, m)| allowed.contains(m))
        .map(|(n, _)| *n)
        .collect();
    let Some(v) = value else {
        problems.push(
            span,
            key,
            format!("{kind} needs `mode` ({})", names.join(", ")),
        );
        return None;
    };
    let found = v.get_ref().as_str().and_then(|s| {
        FaultMode::ALL
            .iter()
            .find(|(n, m)| *n == s && allowed.contains(m))
            .map(|(_, m)| *m)
    });
    if found.is_none() {
        problems.push(
            v.span(),
            key,
            format!(
                "unknown mode {}; {kind} takes: {}",
                v.get_ref(),
                names.join(", ")
            ),
        );
    }
    found
}

/// A default label: kind and targets.
fn describe(kind: &str, effect: &Option<Effect>, plant: &dyn Plant) -> String {
    let names = |t: &Target, f: &dyn Fn(usize) -> String| -> String {
        let (list, sep) = match t {
            Target::All(v) => (v, "+"),
            Target::OneOf(v) => (v, "|"),
        };
        list.iter().map(|&i| f(i)).collect::<Vec<_>>().join(sep)
    };
    let asset = |i: usize| plant.assets()[i].id.clone();
    let sensor = |i: usize| plant.sensors()[i].id.clone();
    match effect {
        Some(Effect::Trip { assets }) | Some(Effect::Degradation { assets, .. }) => {
            format!("{kind}:{}", names(assets, &asset))
        }
        Some(Effect::Sensors { sensors, .. }) => format!("{kind}:{}", names(sensors, &sensor)),
        Some(Effect::Command { actuator, .. }) => {
            format!("{kind}:{}", plant.actuators()[*actuator].name)
        }
        _ => kind.to_owned(),
    }
}
