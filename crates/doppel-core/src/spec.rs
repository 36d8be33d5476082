//! The twin spec: the plant described as sites, assets and sensors, read from `twin.toml`.
//!
//! Parsing keeps the position of every value so that each problem found, in the TOML itself or
//! in what it means (duplicate ids, unknown parents, cycles, min above max...), is reported with
//! its file, line, column and key. Validation collects every problem, not just the first.
//! This module must never touch the lake or the network: a spec is checked on its own.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use crate::located::Problems;

use serde::Deserialize;
use toml::Spanned;

use crate::time::parse_duration;

/// A validated twin spec.
#[derive(Debug, Clone, PartialEq)]
pub struct TwinSpec {
    pub name: Option<String>,
    pub sites: Vec<Site>,
    pub assets: Vec<Asset>,
    pub sensors: Vec<Sensor>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Site {
    pub id: String,
    pub name: Option<String>,
    pub timezone: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Asset {
    pub id: String,
    pub site: String,
    pub kind: String,
    pub name: Option<String>,
    pub parent: Option<String>,
    pub attributes: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sensor {
    pub id: String,
    pub asset: String,
    pub unit: String,
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Sampling period in nanoseconds.
    pub period_nanos: i64,
    /// The series this sensor maps to: measurement, tags and field.
    pub measurement: String,
    pub tags: BTreeMap<String, String>,
    pub field: String,
    /// Readings of this sensor that mean its asset is out of service for maintenance or
    /// repair (a status code's values); empty for most sensors.
    pub maintenance: Vec<f64>,
}

impl Sensor {
    /// Whether `value` read from this sensor means its asset is in maintenance. Codes are
    /// compared rounded, as a status travels as a float.
    pub fn means_maintenance(&self, value: f64) -> bool {
        self.maintenance
            .iter()
            .any(|&code| (value - code).abs() < 0.5)
    }
}

/// One problem found in a spec, with where it is.
pub type SpecProblem = crate::located::Problem;

/// Everything wrong with a spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read twin spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} problem(s) in the twin spec:\n{}", .0.len(), .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<SpecProblem>),
}

impl SpecError {
    pub fn problems(&self) -> &[SpecProblem] {
        match self {
            SpecError::Invalid(problems) => problems,
            SpecError::Read { .. } => &[],
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Option<String>,
    #[serde(default, rename = "site")]
    sites: Vec<Spanned<RawSite>>,
    #[serde(default, rename = "asset")]
    assets: Vec<Spanned<RawAsset>>,
    #[serde(default, rename = "sensor")]
    sensors: Vec<Spanned<RawSensor>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSite {
    id: Spanned<String>,
    name: Option<String>,
    timezone: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAsset {
    id: Spanned<String>,
    site: Spanned<String>,
    kind: Spanned<String>,
    name: Option<String>,
    parent: Option<Spanned<String>>,
    #[serde(default)]
    attributes: BTreeMap<String, toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    id: Spanned<String>,
    asset: Spanned<String>,
    unit: Spanned<String>,
    min: Option<Spanned<f64>>,
    max: Option<Spanned<f64>>,
    period: Spanned<String>,
    measurement: Spanned<String>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
    field: Spanned<String>,
    #[serde(default)]
    maintenance: Option<Spanned<Vec<f64>>>,
}

/// Reads and validates a twin spec file.
pub fn load(path: &Path) -> Result<TwinSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parses and validates a twin spec; `file` is only used in error messages.
pub fn parse(text: &str, file: &Path) -> Result<TwinSpec, SpecError> {
    let mut problems = Problems::new(text, file);
    let raw: RawSpec = match toml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => {
            let span = e.span().unwrap_or(0..0);
            let message = e.message().to_owned();
            problems.push(span, "toml", message);
            return Err(SpecError::Invalid(problems.list));
        }
    };
    let spec = validate(raw, &mut problems);
    if problems.list.is_empty() {
        Ok(spec)
    } else {
        Err(SpecError::Invalid(problems.list))
    }
}

fn validate(raw: RawSpec, problems: &mut Problems) -> TwinSpec {
    let mut site_ids: HashSet<String> = HashSet::new();
    let mut sites = Vec::new();
    for (i, site) in raw.sites.into_iter().enumerate() {
        let site = site.into_inner();
        check_id(problems, &site.id, &format!("site[{i}].id"));
        if !site_ids.insert(site.id.get_ref().clone()) {
            problems.push(
                site.id.span(),
                format!("site[{i}].id"),
                format!("duplicate site id `{}`", site.id.get_ref()),
            );
        }
        sites.push(Site {
            id: site.id.into_inner(),
            name: site.name,
            timezone: site.timezone,
        });
    }

    let mut asset_index: HashMap<String, usize> = HashMap::new();
    let mut parent_spans = Vec::new();
    let mut assets = Vec::new();
    for (i, asset) in raw.assets.into_iter().enumerate() {
        let asset = asset.into_inner();
        let key = format!("asset[{i}]");
        check_id(problems, &asset.id, &format!("{key}.id"));
        if asset_index.insert(asset.id.get_ref().clone(), i).is_some() {
            problems.push(
                asset.id.span(),
                format!("{key}.id"),
                format!("duplicate asset id `{}`", asset.id.get_ref()),
            );
        }
        if !site_ids.contains(asset.site.get_ref()) {
            problems.push(
                asset.site.span(),
                format!("{key}.site"),
                format!(
                    "unknown site `{}`: declare it in a [[site]] table",
                    asset.site.get_ref()
                ),
            );
        }
        if asset.kind.get_ref().trim().is_empty() {
            problems.push(
                asset.kind.span(),
                format!("{key}.kind"),
                "kind is empty: say what the asset is, e.g. `pump`",
            );
        }
        parent_spans.push(asset.parent.as_ref().map(|p| p.span()));
        assets.push(Asset {
            id: asset.id.into_inner(),
            site: asset.site.into_inner(),
            kind: asset.kind.into_inner(),
            name: asset.name,
            parent: asset.parent.map(Spanned::into_inner),
            attributes: asset.attributes,
        });
    }
    check_parents(problems, &assets, &asset_index, &parent_spans);

    let mut sensor_ids: HashSet<String> = HashSet::new();
    let mut series_owner: HashMap<(String, BTreeMap<String, String>, String), String> =
        HashMap::new();
    let mut sensors = Vec::new();
    for (i, sensor) in raw.sensors.into_iter().enumerate() {
        let s = sensor.into_inner();
        let key = format!("sensor[{i}]");
        check_id(problems, &s.id, &format!("{key}.id"));
        if !sensor_ids.insert(s.id.get_ref().clone()) {
            problems.push(
                s.id.span(),
                format!("{key}.id"),
                format!("duplicate sensor id `{}`", s.id.get_ref()),
            );
        }
        if !asset_index.contains_key(s.asset.get_ref()) {
            problems.push(
                s.asset.span(),
                format!("{key}.asset"),
                format!("unknown asset `{}`", s.asset.get_ref()),
            );
        }
        if s.unit.get_ref().trim().is_empty() {
            problems.push(
                s.unit.span(),
                format!("{key}.unit"),
                "unit is empty: use e.g. `degC`, `kW`, `1` for dimensionless",
            );
        }
        if let (Some(min), Some(max)) = (&s.min, &s.max)
            && min.get_ref() > max.get_ref()
        {
            problems.push(
                min.span(),
                format!("{key}.min"),
                format!("min {} is above max {}", min.get_ref(), max.get_ref()),
            );
        }
        for bound in [&s.min, &s.max].into_iter().flatten() {
            if !bound.get_ref().is_finite() {
                problems.push(
                    bound.span(),
                    format!("{key}.min/max"),
                    "bounds must be finite numbers",
                );
            }
        }
        let period_nanos = match parse_duration(s.period.get_ref()) {
            Ok(nanos) => nanos,
            Err(message) => {
                problems.push(s.period.span(), format!("{key}.period"), message);
                0
            }
        };
        if s.measurement.get_ref().is_empty() {
            problems.push(
                s.measurement.span(),
                format!("{key}.measurement"),
                "measurement is empty",
            );
        }
        if s.field.get_ref().is_empty() {
            problems.push(s.field.span(), format!("{key}.field"), "field is empty");
        }
        let series = (
            s.measurement.get_ref().clone(),
            s.tags.clone(),
            s.field.get_ref().clone(),
        );
        if let Some(codes) = &s.maintenance
            && codes.get_ref().iter().any(|c| !c.is_finite())
        {
            problems.push(
                codes.span(),
                format!("{key}.maintenance"),
                "maintenance codes must be finite numbers, such as [3, 4]",
            );
        }
        if let Some(other) = series_owner.insert(series, s.id.get_ref().clone()) {
            problems.push(
                s.field.span(),
                format!("{key}.field"),
                format!("sensor `{}` maps to the same series and field as sensor `{other}`: each sensor needs its own", s.id.get_ref()),
            );
        }
        sensors.push(Sensor {
            id: s.id.into_inner(),
            asset: s.asset.into_inner(),
            unit: s.unit.into_inner(),
            min: s.min.map(Spanned::into_inner),
            max: s.max.map(Spanned::into_inner),
            period_nanos,
            measurement: s.measurement.into_inner(),
            tags: s.tags,
            field: s.field.into_inner(),
            maintenance: s.maintenance.map(Spanned::into_inner).unwrap_or_default(),
        });
    }

    TwinSpec {
        name: raw.name,
        sites,
        assets,
        sensors,
    }
}

fn check_id(problems: &mut Problems, id: &Spanned<String>, key: &str) {
    let value = id.get_ref();
    let ok = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
    if !ok {
        problems.push(
            id.span(),
            key,
            format!(
                "id `{}` must be non-empty letters, digits, `_`, `-`, `.` or `:`",
                value.escape_debug()
            ),
        );
    }
}

/// Every parent must exist, and following parents must never come back to where it started.
fn check_parents(
    problems: &mut Problems,
    assets: &[Asset],
    index: &HashMap<String, usize>,
    parent_spans: &[Option<std::ops::Range<usize>>],
) {
    for (i, asset) in assets.iter().enumerate() {
        let Some(parent) = &asset.parent else {
            continue;
        };
        let span = parent_spans[i].clone().unwrap_or(0..0);
        if !index.contains_key(parent) {
            problems.push(
                span,
                format!("asset[{i}].parent"),
                format!("unknown parent asset `{parent}`"),
            );
            continue;
        }
        // Walk up at most assets.len() steps: a longer walk must have gone round a cycle.
        let mut current = parent;
        let mut path = vec![asset.id.as_str()];
        for _ in 0..=assets.len() {
            path.push(current);
            if current == &asset.id {
                problems.push(
                    span.clone(),
                    format!("asset[{i}].parent"),
                    format!("parent cycle: {}", path.join(" -> ")),
                );
                break;
            }
            match index.get(current).and_then(|&j| assets[j].parent.as_ref()) {
                Some(next) if index.contains_key(next) => current = next,
                _ => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "test"
[[site]]
id = "s1"
[[asset]]
id = "loop"
site = "s1"
kind = "coolant_loop"
[[asset]]
id = "pump-1"
site = "s1"
kind = "pump"
parent = "loop"
attributes = { rated_kw = 55 }
[[sensor]]
id = "pump-1.vib"
asset = "pump-1"
unit = "mm/s"
min = 0.0
max = 45.0
period = "10s"
measurement = "pumps"
tags = { asset = "pump-1" }
field = "vibration"
"#;

    fn problems(text: &str) -> Vec<SpecProblem> {
        parse(text, Path::new("twin.toml"))
            .unwrap_err()
            .problems()
            .to_vec()
    }

    #[test]
    fn a_good_spec_parses() {
        let spec = parse(GOOD, Path::new("twin.toml")).unwrap();
        assert_eq!(spec.assets.len(), 2);
        assert_eq!(spec.assets[1].parent.as_deref(), Some("loop"));
        assert_eq!(spec.sensors[0].period_nanos, 10_000_000_000);
        assert_eq!(spec.sensors[0].tags["asset"], "pump-1");
    }

    #[test]
    fn duplicate_ids_are_reported_with_line() {
        let text = GOOD
            .replace("id = \"loop\"", "id = \"pump-1\"")
            .replace("parent = \"loop\"", "");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].key, "asset[1].id");
        assert_eq!(found[0].line, 10);
        assert!(found[0].message.contains("duplicate asset id `pump-1`"));
    }

    #[test]
    fn unknown_parent_and_min_above_max_are_both_reported() {
        let text = GOOD
            .replace("parent = \"loop\"", "parent = \"nowhere\"")
            .replace("max = 45.0", "max = -1.0");
        let found = problems(&text);
        let keys: Vec<_> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["asset[1].parent", "sensor[0].min"]);
        assert_eq!(found[0].line, 13);
        assert_eq!(found[1].line, 19);
    }

    #[test]
    fn cycles_are_found() {
        let text = GOOD.replace(
            "kind = \"coolant_loop\"",
            "kind = \"coolant_loop\"\nparent = \"pump-1\"",
        );
        let found = problems(&text);
        assert!(
            found
                .iter()
                .any(|p| p.message.contains("parent cycle: loop -> pump-1 -> loop")),
            "{found:?}"
        );
    }

    #[test]
    fn toml_errors_and_unknown_keys_say_where() {
        let found =
            problems("[[asset]]\nid = \"a\"\nsite = \"s\"\nkind = \"k\"\ncolour = \"red\"\n");
        assert_eq!(found[0].line, 5);
        assert!(found[0].message.contains("colour"), "{}", found[0].message);
        let found = problems("name = \n");
        assert_eq!(found[0].key, "toml");
        assert_eq!(found[0].line, 1);
    }

    #[test]
    fn bad_period_and_shared_series_are_reported() {
        let extra = "\n[[sensor]]\nid = \"pump-1.vib2\"\nasset = \"pump-1\"\nunit = \"mm/s\"\nperiod = \"often\"\nmeasurement = \"pumps\"\ntags = { asset = \"pump-1\" }\nfield = \"vibration\"\n";
        let found = problems(&format!("{GOOD}{extra}"));
        let keys: Vec<_> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["sensor[1].period", "sensor[1].field"]);
    }
}
