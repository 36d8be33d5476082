//! A rules file: `[[rule]]` tables, each with `name`, `when` (a condition), and optionally
//! `severity` (`info`, `warning` — the default — or `critical`), `asset` (the asset its
//! alerts are about; by default the asset of the first sensor it names) and
//! `keep_firing_for` (how long the condition must stay false before its alert resolves, so a
//! value wavering about its limit does not open an alert a minute). Every problem is
//! reported with file, line, column and key, and a file with any problem yields no rules.
//! Names are checked against the twin spec, and so are units where the spec gives them: a
//! sensor in °C is not compared with one in %.

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use doppel_core::located::{Problem, Problems};
use doppel_core::spec::TwinSpec;
use serde::Deserialize;
use toml::Spanned;

use crate::syntax::{Arith, Condition, Expr, Window, parse_condition};

/// How urgent a rule's alerts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

/// One checked rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    /// The condition as written.
    pub when: String,
    pub condition: Condition,
    pub severity: Severity,
    /// The asset its alerts are about.
    pub asset: String,
    /// How long the condition must stay false before a firing alert resolves, ns (0: at once).
    pub keep_firing_for: i64,
}

/// The rules of one file, all checked.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    rule: Vec<Spanned<RawRule>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    when: Spanned<String>,
    severity: Option<Spanned<String>>,
    asset: Option<Spanned<String>>,
    keep_firing_for: Option<Spanned<String>>,
}

impl RuleSet {
    /// Reads and checks a rules file against `spec`.
    pub fn load(path: &Path, spec: &TwinSpec) -> Result<RuleSet, RulesError> {
        let text = std::fs::read_to_string(path).map_err(|source| RulesError::Read {
            path: path.to_owned(),
            source,
        })?;
        RuleSet::parse(&text, path, spec)
    }

    /// Parses and checks rules; `file` is only used in messages.
    pub fn parse(text: &str, file: &Path, spec: &TwinSpec) -> Result<RuleSet, RulesError> {
        let mut problems = Problems::new(text, file);
        let raw: RawFile = match toml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => {
                problems.push(e.span().unwrap_or(0..0), "rules", e.message().to_owned());
                return Err(RulesError::Invalid(problems.list));
            }
        };
        let units: HashMap<&str, &str> = spec
            .sensors
            .iter()
            .map(|s| (s.id.as_str(), s.unit.as_str()))
            .collect();
        let sensor_asset: HashMap<&str, &str> = spec
            .sensors
            .iter()
            .map(|s| (s.id.as_str(), s.asset.as_str()))
            .collect();
        let mut rules = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, raw) in raw.rule.into_iter().enumerate() {
            let span = raw.span();
            let raw = raw.into_inner();
            let key = |k: &str| format!("rule[{i}].{k}");
            let name = raw.name.get_ref().trim().to_owned();
            if name.is_empty() {
                problems.push(raw.name.span(), key("name"), "a rule needs a name");
            } else if let Some(first) = seen.insert(name.clone(), i) {
                problems.push(
                    raw.name.span(),
                    key("name"),
                    format!("`{name}` names rule[{first}] already: names tell alerts apart"),
                );
            }
            // Offsets inside `when` from the start of its TOML string (after the quote).
            let when_span = raw.when.span();
            let inner =
                |r: Range<usize>| (when_span.start + 1 + r.start)..(when_span.start + 1 + r.end);
            let condition = match parse_condition(raw.when.get_ref()) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(inner(e.span), key("when"), e.message);
                    continue;
                }
            };
            let assets: Vec<&str> = spec.assets.iter().map(|a| a.id.as_str()).collect();
            let found = name_and_unit_problems(&condition, &units, &assets, "sensor");
            if !found.is_empty() {
                for (span, message) in found {
                    problems.push(span.map_or(when_span.clone(), inner), key("when"), message);
                }
                continue;
            }
            let mut names = Vec::new();
            condition.expr.names(&mut names);
            let severity = match raw.severity.as_ref().map(|s| s.get_ref().as_str()) {
                None | Some("warning") => Severity::Warning,
                Some("info") => Severity::Info,
                Some("critical") => Severity::Critical,
                Some(other) => {
                    problems.push(
                        raw.severity.as_ref().expect("some").span(),
                        key("severity"),
                        format!("unknown severity `{other}`: use info, warning or critical"),
                    );
                    continue;
                }
            };
            let asset = match &raw.asset {
                Some(a) if spec.assets.iter().any(|x| &x.id == a.get_ref()) => a.get_ref().clone(),
                Some(a) => {
                    problems.push(
                        a.span(),
                        key("asset"),
                        format!("unknown asset `{}`", a.get_ref()),
                    );
                    continue;
                }
                None => {
                    let (first, _) = &names
                        .first()
                        .map(|(n, b)| (n.text.clone(), *b))
                        .unwrap_or_default();
                    match sensor_asset.get(first.as_str()) {
                        Some(asset) => (*asset).to_owned(),
                        None if spec.assets.iter().any(|a| &a.id == first) => first.clone(),
                        None => {
                            problems.push(
                                span,
                                key("asset"),
                                "the rule names no sensor: give its `asset`",
                            );
                            continue;
                        }
                    }
                }
            };
            let keep_firing_for = match &raw.keep_firing_for {
                None => 0,
                Some(text) => match doppel_core::time::parse_duration(text.get_ref()) {
                    Ok(ns) => ns,
                    Err(message) => {
                        problems.push(text.span(), key("keep_firing_for"), message);
                        continue;
                    }
                },
            };
            rules.push(Rule {
                name,
                when: raw.when.into_inner(),
                condition,
                severity,
                asset,
                keep_firing_for,
            });
        }
        if problems.list.is_empty() {
            Ok(RuleSet { rules })
        } else {
            Err(RulesError::Invalid(problems.list))
        }
    }
}

/// Parses `text` as a condition or expression over the quantities named in `units` (name →
/// unit, empty for a plain number), checking every name and unit; `noun` says what a name
/// should be in messages ("sensor", "KPI"). Problems come as (byte range within `text`,
/// message). What rewards and limits in the autonomy layer's policy files use.
pub fn check_expression(
    text: &str,
    units: &HashMap<&str, &str>,
    noun: &str,
) -> Result<Condition, Vec<(Range<usize>, String)>> {
    let condition = parse_condition(text).map_err(|e| vec![(e.span, e.message)])?;
    let found = name_and_unit_problems(&condition, units, &[], noun);
    if found.is_empty() {
        Ok(condition)
    } else {
        Err(found
            .into_iter()
            .map(|(span, m)| (span.unwrap_or(0..text.len()), m))
            .collect())
    }
}

/// Unknown names (with a near one when there is), then mixed units: each with its range in the
/// condition's text (`None`: the whole of it).
fn name_and_unit_problems(
    condition: &Condition,
    units: &HashMap<&str, &str>,
    assets: &[&str],
    noun: &str,
) -> Vec<(Option<Range<usize>>, String)> {
    let mut names = Vec::new();
    condition.expr.names(&mut names);
    let mut found = Vec::new();
    for (name, may_be_asset) in &names {
        let known_sensor = units.contains_key(name.text.as_str());
        let known_asset = assets.contains(&name.text.as_str());
        if !(known_sensor || *may_be_asset && known_asset) {
            let what = if *may_be_asset {
                format!("{noun} or asset")
            } else {
                noun.to_owned()
            };
            found.push((
                Some(name.span.clone()),
                format!(
                    "unknown {what} `{}`{}",
                    name.text,
                    nearest(&name.text, units)
                ),
            ));
        }
    }
    if found.is_empty()
        && let Err(message) = unit_of(&condition.expr, units)
    {
        found.push((None, message));
    }
    found
}

/// " (did you mean `x`?)" when a sensor id is close to `name`.
fn nearest(name: &str, units: &HashMap<&str, &str>) -> String {
    let lower = name.to_lowercase();
    units
        .keys()
        .filter(|k| k.to_lowercase() == lower || k.contains(name) || name.contains(**k))
        .min_by_key(|k| k.len().abs_diff(name.len()))
        .map_or(String::new(), |k| format!(" (did you mean `{k}`?)"))
}

/// The unit of an expression's value (`None`: a plain number, or not known), or why two
/// parts do not go together.
fn unit_of(expr: &Expr, units: &HashMap<&str, &str>) -> Result<Option<String>, String> {
    let of = |n: &crate::syntax::Name| units.get(n.text.as_str()).map(|u| u.to_string());
    Ok(match expr {
        Expr::Number(_) | Expr::Anomaly(_) => None,
        Expr::Stale(_) => None,
        Expr::Sensor(n) | Expr::Forecast { sensor: n, .. } => of(n),
        Expr::Window {
            function, sensor, ..
        } => match function {
            Window::Rate => of(sensor).map(|u| format!("{u}/s")),
            _ => of(sensor),
        },
        Expr::Negate(e) | Expr::Abs(e) | Expr::Not(e) => unit_of(e, units)?,
        Expr::Arith(Arith::Mul | Arith::Div, a, b) => {
            unit_of(a, units)?;
            unit_of(b, units)?;
            None
        }
        Expr::Arith(_, a, b) | Expr::Compare(_, a, b) => {
            let (ua, ub) = (unit_of(a, units)?, unit_of(b, units)?);
            if let (Some(x), Some(y)) = (&ua, &ub)
                && x != y
            {
                return Err(format!(
                    "one side is in {x} and the other in {y}: they cannot be compared or added"
                ));
            }
            if matches!(expr, Expr::Compare(..)) {
                None
            } else {
                ua.or(ub)
            }
        }
        Expr::And(a, b) | Expr::Or(a, b) => {
            unit_of(a, units)?;
            unit_of(b, units)?;
            None
        }
    })
}
