//! Alerts: a rule that fires opens one for its asset (one at a time per rule and asset),
//! an operator acknowledges it with a note, and it resolves when its condition is false
//! again: `firing → acknowledged → resolved`. Every change is written to the lake as a row of
//! `doppel_alerts` (so alerts are SQL-queryable and survive restarts and `kill -9` like any
//! acknowledged write), and read back from there at start.

use std::collections::BTreeMap;

use doppel_core::time::format_rfc3339;
use doppel_core::{FieldValue, Point};
use doppel_rules::{Firing, Severity};
use serde::Serialize;

/// The table alerts are written to, in the twin's bucket.
pub const ALERTS_TABLE: &str = "doppel_alerts";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Firing,
    Acknowledged,
    Resolved,
}

impl AlertState {
    fn name(self) -> &'static str {
        match self {
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "firing" => Some(AlertState::Firing),
            "acknowledged" => Some(AlertState::Acknowledged),
            "resolved" => Some(AlertState::Resolved),
            _ => None,
        }
    }

    pub fn is_open(self) -> bool {
        self != AlertState::Resolved
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Alert {
    pub id: String,
    pub rule: String,
    pub asset: String,
    pub severity: Severity,
    pub state: AlertState,
    /// RFC 3339, data time.
    pub started: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved: Option<String>,
    /// The rule's sensors' values when it fired.
    pub values: BTreeMap<String, Option<f64>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip)]
    started_ns: i64,
}

/// Every alert the twin knows, open and resolved.
#[derive(Default)]
pub struct Alerts {
    list: Vec<Alert>,
}

impl Alerts {
    pub fn all(&self) -> &[Alert] {
        &self.list
    }

    /// The open alert of a rule on an asset, if any.
    fn open(&mut self, rule: &str, asset: &str) -> Option<&mut Alert> {
        self.list
            .iter_mut()
            .find(|a| a.state.is_open() && a.rule == rule && a.asset == asset)
    }

    /// A rule's change: opens an alert (unless one is open for the rule and asset) or
    /// resolves the open one. Returns the alert changed, to be written and announced.
    pub fn apply(&mut self, firing: &Firing) -> Option<Alert> {
        if firing.firing {
            if self.open(&firing.name, &firing.asset).is_some() {
                return None;
            }
            let alert = Alert {
                id: format!("{}-{}", slug(&firing.name), firing.time / 1_000_000),
                rule: firing.name.clone(),
                asset: firing.asset.clone(),
                severity: firing.severity,
                state: AlertState::Firing,
                started: format_rfc3339(firing.time),
                resolved: None,
                values: firing.values.iter().cloned().collect(),
                acknowledged_by: None,
                note: None,
                started_ns: firing.time,
            };
            self.list.push(alert.clone());
            Some(alert)
        } else {
            let alert = self.open(&firing.name, &firing.asset)?;
            alert.state = AlertState::Resolved;
            alert.resolved = Some(format_rfc3339(firing.time));
            Some(alert.clone())
        }
    }

    /// Acknowledges an open alert; `None` when there is no such alert, `Err` when it is
    /// resolved already.
    pub fn acknowledge(&mut self, id: &str, by: &str, note: &str) -> Option<Result<Alert, String>> {
        let alert = self.list.iter_mut().find(|a| a.id == id)?;
        if alert.state == AlertState::Resolved {
            return Some(Err(format!("alert `{id}` is resolved already")));
        }
        alert.state = AlertState::Acknowledged;
        alert.acknowledged_by = Some(by.to_owned());
        alert.note = Some(note.to_owned());
        Some(Ok(alert.clone()))
    }

    /// Takes in an alert as read back from the lake (the latest row of each id wins).
    pub fn restore(&mut self, alert: Alert) {
        match self.list.iter_mut().find(|a| a.id == alert.id) {
            Some(known) => *known = alert,
            None => self.list.push(alert),
        }
    }

    /// The worst open severity on `asset`.
    pub fn worst_open(&self, asset: &str) -> Option<Severity> {
        self.list
            .iter()
            .filter(|a| a.state.is_open() && a.asset == asset)
            .map(|a| a.severity)
            .max()
    }
}

/// A rule's name as an id part: lowercase letters, digits and dashes.
fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// An alert's change as a row of `doppel_alerts`: stamped with the wall clock when it was
/// made, so the rows of one alert are in the order its changes happened (an acknowledgement
/// comes after the firing whatever the data's time), with `at`, the change's data time.
pub fn to_point(alert: &Alert, at: i64) -> Point {
    let mut fields = vec![
        ("at".to_owned(), FieldValue::Integer(at)),
        ("id".to_owned(), FieldValue::String(alert.id.clone())),
        (
            "state".to_owned(),
            FieldValue::String(alert.state.name().into()),
        ),
        (
            "severity".to_owned(),
            FieldValue::String(
                serde_json::to_value(alert.severity)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            ),
        ),
        ("started".to_owned(), FieldValue::Integer(alert.started_ns)),
        (
            "values".to_owned(),
            FieldValue::String(serde_json::to_string(&alert.values).unwrap_or_default()),
        ),
    ];
    if let Some(by) = &alert.acknowledged_by {
        fields.push(("acknowledged_by".into(), FieldValue::String(by.clone())));
    }
    if let Some(note) = &alert.note {
        fields.push(("note".into(), FieldValue::String(note.clone())));
    }
    Point {
        measurement: ALERTS_TABLE.into(),
        tags: vec![
            ("asset".into(), alert.asset.clone()),
            ("rule".into(), alert.rule.clone()),
        ],
        fields,
        time: doppel_core::time::now_nanos(),
    }
}

/// An alert from a row of `doppel_alerts`: (at, asset, rule, id, state, severity, started,
/// values, acknowledged_by, note); `at` is the change's data time.
#[allow(clippy::too_many_arguments)]
pub fn from_row(
    time: i64,
    asset: String,
    rule: String,
    id: String,
    state: &str,
    severity: &str,
    started: i64,
    values: &str,
    acknowledged_by: Option<String>,
    note: Option<String>,
) -> Option<Alert> {
    let state = AlertState::parse(state)?;
    let severity = match severity {
        "info" => Severity::Info,
        "critical" => Severity::Critical,
        _ => Severity::Warning,
    };
    Some(Alert {
        id,
        rule,
        asset,
        severity,
        state,
        started: format_rfc3339(started),
        resolved: (state == AlertState::Resolved).then(|| format_rfc3339(time)),
        values: serde_json::from_str(values).unwrap_or_default(),
        acknowledged_by,
        note,
        started_ns: started,
    })
}
