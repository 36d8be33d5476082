//! The plant's timeline: what happened, newest first, read back from the lake so it survives
//! restarts and reloads. Alert changes (`doppel_alerts`) and proposals (`doppel_proposals`)
//! are already rows of their own; this module adds the two other kinds of event a twin sees:
//! asset state changes, maintenance included (`doppel_states`), and disruptions injected into
//! the live source (`doppel_disruptions`). Each row is stamped with the wall clock when the
//! twin saw it, with `at`, the data time, beside it.
//!
//! Reading only: nothing here decides a state or an alert.

use std::collections::BTreeMap;

use doppel_core::time::{format_rfc3339, now_nanos};
use doppel_core::{FieldValue, Point};
use serde::Serialize;

use crate::alerts::ALERTS_TABLE;
use crate::proposals::PROPOSALS_TABLE;
use crate::state::AssetState;
use crate::twin::{Twin, TwinError, TwinEvent, ident, int_at, text_at};

/// Asset state changes: tag `asset`, fields `state`, `previous` and `at` (data time, ns).
pub const STATES_TABLE: &str = "doppel_states";
/// Disruptions injected into the live source: fields `label`, `targets` (comma-separated)
/// and `at` (data time, ns).
pub const DISRUPTIONS_TABLE: &str = "doppel_disruptions";

/// One thing that happened.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// When the twin saw it (RFC 3339, wall clock).
    pub time: String,
    /// `alert`, `state`, `maintenance`, `disruption` or `proposal`.
    pub kind: &'static str,
    pub asset: Option<String>,
    /// The event in words.
    pub text: String,
    #[serde(skip)]
    time_ns: i64,
}

impl AssetState {
    pub fn name(self) -> &'static str {
        match self {
            AssetState::Ok => "ok",
            AssetState::Stale => "stale",
            AssetState::Warning => "warning",
            AssetState::Alarm => "alarm",
            AssetState::Maintenance => "maintenance",
        }
    }

    fn parse(name: &str) -> Option<AssetState> {
        [
            AssetState::Ok,
            AssetState::Stale,
            AssetState::Warning,
            AssetState::Alarm,
            AssetState::Maintenance,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }
}

/// A state change in words; going into or out of maintenance is its own kind.
fn state_entry(asset: &str, state: &str, previous: &str) -> (&'static str, String) {
    match (state, previous) {
        ("maintenance", _) => ("maintenance", format!("{asset} went into maintenance")),
        (_, "maintenance") => (
            "maintenance",
            format!("{asset} back from maintenance: {state}"),
        ),
        _ => ("state", format!("{asset} is {state} (was {previous})")),
    }
}

impl Twin {
    /// Asset `asset` went from `previous` to `state` at data time `at`: kept in the lake.
    pub(crate) fn record_state(
        &self,
        asset: &str,
        previous: AssetState,
        state: AssetState,
        at: i64,
    ) {
        self.send_row(Point {
            measurement: STATES_TABLE.into(),
            tags: vec![("asset".into(), asset.to_owned())],
            fields: vec![
                ("state".into(), FieldValue::String(state.name().into())),
                (
                    "previous".into(),
                    FieldValue::String(previous.name().into()),
                ),
                ("at".into(), FieldValue::Integer(at)),
            ],
            time: now_nanos(),
        });
    }

    /// A disruption injected into the live source began at data time `at`: kept in the lake
    /// and announced.
    pub fn record_disruption(&self, label: String, targets: Vec<String>, at: i64) {
        self.send_row(Point {
            measurement: DISRUPTIONS_TABLE.into(),
            tags: Vec::new(),
            fields: vec![
                ("label".into(), FieldValue::String(label.clone())),
                ("targets".into(), FieldValue::String(targets.join(","))),
                ("at".into(), FieldValue::Integer(at)),
            ],
            time: now_nanos(),
        });
        self.announce(TwinEvent::Disruption {
            label,
            targets,
            time: format_rfc3339(at),
        });
    }

    /// Each asset's state as last recorded, so a restart records only real changes.
    pub(crate) async fn restore_states(&self) -> BTreeMap<String, AssetState> {
        let mut states = BTreeMap::new();
        if self
            .lake()
            .fields_of(self.bucket(), STATES_TABLE)
            .is_empty()
        {
            return states;
        }
        let sql = format!(
            "SELECT asset, state FROM {} ORDER BY time",
            ident(STATES_TABLE)
        );
        if let Ok((_, batches)) = self.lake().query(self.bucket(), &sql).await {
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    if let (Some(asset), Some(state)) = (
                        text_at(batch, 0, row),
                        text_at(batch, 1, row)
                            .as_deref()
                            .and_then(AssetState::parse),
                    ) {
                        states.insert(asset, state);
                    }
                }
            }
        }
        states
    }

    /// What happened since `since` (ns, wall clock), newest first, at most `limit` entries.
    pub async fn timeline(&self, since: i64, limit: usize) -> Result<Vec<Entry>, TwinError> {
        let mut entries = Vec::new();
        for (table, columns) in [
            (
                ALERTS_TABLE,
                &[
                    "asset",
                    "rule",
                    "state",
                    "severity",
                    "acknowledged_by",
                    "note",
                ][..],
            ),
            (STATES_TABLE, &["asset", "state", "previous"][..]),
            (DISRUPTIONS_TABLE, &["label", "targets"][..]),
            (
                PROPOSALS_TABLE,
                &["policy", "mode", "state", "summary", "decided_by", "note"][..],
            ),
        ] {
            let fields = self.lake().fields_of(self.bucket(), table);
            if fields.is_empty() {
                continue;
            }
            // A column never written (no alert acknowledged yet) reads as null.
            let selected: Vec<String> = columns
                .iter()
                .map(
                    |&c| match fields.iter().any(|f| f == c) || is_tag(table, c) {
                        true => format!("CAST({c} AS VARCHAR) AS {c}", c = ident(c)),
                        false => format!("CAST(NULL AS VARCHAR) AS {}", ident(c)),
                    },
                )
                .collect();
            // A shadow policy's proposals, only recorded, are its trail, not events.
            let only = match table {
                PROPOSALS_TABLE => " AND state <> 'recorded'",
                _ => "",
            };
            let sql = format!(
                "SELECT CAST(time AS BIGINT) AS t, {} FROM {} WHERE time >= '{}'{only} \
                 ORDER BY t DESC LIMIT {limit}",
                selected.join(", "),
                ident(table),
                format_rfc3339(since),
            );
            let batches = self.lake().query(self.bucket(), &sql).await?.1;
            for batch in &batches {
                for row in 0..batch.num_rows() {
                    let time_ns = int_at(batch, 0, row).unwrap_or(0);
                    let text = |c: usize| text_at(batch, c + 1, row).unwrap_or_default();
                    let optional = |c: usize| text_at(batch, c + 1, row).filter(|s| !s.is_empty());
                    let (kind, asset, words) = match table {
                        ALERTS_TABLE => {
                            let by = by_whom(optional(4), optional(5))
                                .filter(|_| text(2) == "acknowledged")
                                .unwrap_or_default();
                            let words = format!(
                                "alert {}: {} ({}, {}){by}",
                                text(2),
                                text(1),
                                text(0),
                                text(3)
                            );
                            ("alert", Some(text(0)), words)
                        }
                        STATES_TABLE => {
                            let (kind, words) = state_entry(&text(0), &text(1), &text(2));
                            (kind, Some(text(0)), words)
                        }
                        DISRUPTIONS_TABLE => {
                            let targets =
                                optional(1).map(|t| format!(" ({})", t.replace(',', ", ")));
                            let words = format!(
                                "disruption injected: {}{}",
                                text(0),
                                targets.unwrap_or_default()
                            );
                            ("disruption", None, words)
                        }
                        _ => {
                            let by = by_whom(optional(4), optional(5)).unwrap_or_default();
                            let words = format!(
                                "proposal {}: {} ({}, {}){by}",
                                text(2),
                                text(3),
                                text(0),
                                text(1)
                            );
                            ("proposal", None, words)
                        }
                    };
                    entries.push(Entry {
                        time: format_rfc3339(time_ns),
                        kind,
                        asset,
                        text: words,
                        time_ns,
                    });
                }
            }
        }
        entries.sort_by_key(|e| std::cmp::Reverse(e.time_ns));
        entries.truncate(limit);
        Ok(entries)
    }
}

/// " by ana: crew on the way", for who decided and why.
fn by_whom(by: Option<String>, note: Option<String>) -> Option<String> {
    by.map(|by| {
        format!(
            " by {by}{}",
            note.map(|n| format!(": {n}")).unwrap_or_default()
        )
    })
}

/// Whether `column` is a tag of `table` (tags are not listed among its fields).
fn is_tag(table: &str, column: &str) -> bool {
    matches!(
        (table, column),
        (ALERTS_TABLE, "asset" | "rule")
            | (STATES_TABLE, "asset")
            | (PROPOSALS_TABLE, "policy" | "mode")
    )
}
