//! Proposals: what a policy at work in the twin would do, with its simulated effect, waiting
//! for an operator (`approve` mode), recorded only (`shadow`, `recommend`), or done at once
//! (`auto`). An operator approves or rejects a waiting one with who and why; an approved one
//! is taken by the plant's source and marked executed; one a newer proposal of the same
//! policy replaces expires. Every change is a row of `doppel_proposals` in the twin's bucket
//! (the audit trail, SQL-queryable); the list the API shows holds the latest 500.
//!
//! The twin knows nothing of what an action means: the policy describes each in words and
//! hands the plant's own form (`actions`) through untouched.

use doppel_core::time::{format_rfc3339, now_nanos};
use doppel_core::{FieldValue, Point};
use serde::Serialize;

use crate::twin::{Twin, TwinError, TwinEvent, ident, text_at};

/// The table proposal changes are written to, in the twin's bucket.
pub const PROPOSALS_TABLE: &str = "doppel_proposals";

/// Proposals kept in memory for the API.
const KEPT: usize = 500;

/// Where a proposal stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalState {
    /// Recorded only: the policy runs in shadow or recommend mode.
    Recorded,
    /// Waiting for an operator.
    Pending,
    Approved,
    Rejected,
    /// Done by the plant (approved, or in auto mode).
    Executed,
    /// Replaced by a newer proposal before anyone decided.
    Expired,
}

impl ProposalState {
    /// Every state, by the name the API uses.
    pub const NAMES: [&'static str; 6] = [
        "recorded", "pending", "approved", "rejected", "executed", "expired",
    ];

    pub fn name(self) -> &'static str {
        // The variants are declared in the order of `NAMES`.
        Self::NAMES[self as usize]
    }

    /// The state at `index` of `NAMES`.
    fn from_index(index: usize) -> ProposalState {
        [
            ProposalState::Recorded,
            ProposalState::Pending,
            ProposalState::Approved,
            ProposalState::Rejected,
            ProposalState::Executed,
            ProposalState::Expired,
        ][index]
    }
}

/// A policy's proposal as it hands it in.
#[derive(Debug, Clone, Serialize)]
pub struct Draft {
    pub policy: String,
    /// `shadow`, `recommend`, `approve` or `auto`.
    pub mode: String,
    /// Data time it was made at, ns.
    pub time: i64,
    /// Each action in words, such as "chw.supply_setpoint to 7.5".
    pub summary: Vec<String>,
    /// The simulated effect (the policy's own account: KPIs changed, with bands).
    pub effect: serde_json::Value,
    /// The actions in the plant's own form, handed back when approved.
    pub actions: serde_json::Value,
    /// Whether it waits for an operator (`approve`), or is done at once (`auto`).
    pub waits: bool,
    pub done: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Proposal {
    pub id: String,
    pub policy: String,
    pub mode: String,
    /// RFC 3339, data time.
    pub time: String,
    pub state: ProposalState,
    pub summary: Vec<String>,
    pub effect: serde_json::Value,
    pub actions: serde_json::Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// RFC 3339, wall clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<String>,
}

/// The proposals of a twin, oldest first.
#[derive(Default)]
pub struct Proposals {
    list: Vec<Proposal>,
    next: u64,
}

fn to_point(p: &Proposal) -> Point {
    let mut fields = vec![
        ("id".to_owned(), FieldValue::String(p.id.clone())),
        (
            "state".to_owned(),
            FieldValue::String(p.state.name().into()),
        ),
        (
            "time_of_data".to_owned(),
            FieldValue::String(p.time.clone()),
        ),
        (
            "summary".to_owned(),
            FieldValue::String(p.summary.join("; ")),
        ),
        (
            "effect".to_owned(),
            FieldValue::String(p.effect.to_string()),
        ),
    ];
    if let Some(by) = &p.decided_by {
        fields.push(("decided_by".into(), FieldValue::String(by.clone())));
    }
    if let Some(note) = &p.note {
        fields.push(("note".into(), FieldValue::String(note.clone())));
    }
    Point {
        measurement: PROPOSALS_TABLE.into(),
        tags: vec![
            ("policy".into(), p.policy.clone()),
            ("mode".into(), p.mode.clone()),
        ],
        fields,
        // The wall clock: the rows of one proposal in the order its changes happened.
        time: now_nanos(),
    }
}

impl Twin {
    fn record(&self, proposal: &Proposal) {
        self.write_row(to_point(proposal));
        self.announce(TwinEvent::Proposal {
            proposal: proposal.clone(),
        });
    }

    /// Takes a policy's proposal: recorded, waiting, or executed at once; a waiting one of
    /// the same policy expires.
    pub fn propose(&self, draft: Draft) -> Proposal {
        let mut changed = Vec::new();
        let proposal = {
            let mut store = self.proposals.write();
            if draft.waits {
                for old in store.list.iter_mut() {
                    if old.policy == draft.policy && old.state == ProposalState::Pending {
                        old.state = ProposalState::Expired;
                        changed.push(old.clone());
                    }
                }
            }
            store.next += 1;
            let proposal = Proposal {
                id: format!("p{}-{}", store.next, draft.time / 1_000_000_000),
                policy: draft.policy,
                mode: draft.mode,
                time: format_rfc3339(draft.time),
                state: if draft.done {
                    ProposalState::Executed
                } else if draft.waits {
                    ProposalState::Pending
                } else {
                    ProposalState::Recorded
                },
                summary: draft.summary,
                effect: draft.effect,
                actions: draft.actions,
                decided_by: None,
                note: None,
                decided_at: None,
            };
            store.list.push(proposal.clone());
            let over = store.list.len().saturating_sub(KEPT);
            store.list.drain(..over);
            proposal
        };
        for old in &changed {
            self.record(old);
        }
        self.record(&proposal);
        proposal
    }

    /// An operator approves (or rejects) a waiting proposal, with who and why.
    pub fn decide(
        &self,
        id: &str,
        approve: bool,
        by: &str,
        note: &str,
    ) -> Result<Proposal, TwinError> {
        if by.trim().is_empty() {
            return Err(TwinError::Invalid(
                "say who decides (`by`): decisions are audited".into(),
            ));
        }
        let decided = {
            let mut store = self.proposals.write();
            let Some(p) = store.list.iter_mut().find(|p| p.id == id) else {
                return Err(TwinError::UnknownProposal(id.to_owned()));
            };
            if p.state != ProposalState::Pending {
                return Err(TwinError::Invalid(format!(
                    "proposal `{id}` is {} and waits for nobody",
                    p.state.name()
                )));
            }
            p.state = if approve {
                ProposalState::Approved
            } else {
                ProposalState::Rejected
            };
            p.decided_by = Some(by.to_owned());
            p.note = Some(note.to_owned());
            p.decided_at = Some(format_rfc3339(now_nanos()));
            p.clone()
        };
        self.record(&decided);
        Ok(decided)
    }

    /// The approved proposals not yet done, now marked executed: the plant's source takes
    /// them and does their actions. Proposals of the same policy still waiting were decided
    /// on the plant before these actions: they expire (the policy proposes again if it still
    /// wants to).
    pub fn take_approved(&self) -> Vec<Proposal> {
        let (taken, expired) = {
            let mut store = self.proposals.write();
            let taken: Vec<Proposal> = store
                .list
                .iter_mut()
                .filter(|p| p.state == ProposalState::Approved)
                .map(|p| {
                    p.state = ProposalState::Executed;
                    p.clone()
                })
                .collect();
            let policies: Vec<&str> = taken.iter().map(|p| p.policy.as_str()).collect();
            let expired: Vec<Proposal> = store
                .list
                .iter_mut()
                .filter(|p| {
                    p.state == ProposalState::Pending && policies.contains(&p.policy.as_str())
                })
                .map(|p| {
                    p.state = ProposalState::Expired;
                    p.clone()
                })
                .collect();
            (taken, expired)
        };
        for p in taken.iter().chain(&expired) {
            self.record(p);
        }
        taken
    }

    /// The proposals as the lake holds them (the latest row of each wins; the newest
    /// `KEPT`), read at start. One left pending or approved by the last run cannot be done
    /// now (its actions were for the plant as it was, and are not kept): it expires, saying
    /// why.
    pub(crate) async fn restore_proposals(&self) {
        let fields = self.lake().fields_of(self.bucket(), PROPOSALS_TABLE);
        if fields.is_empty() {
            return;
        }
        let column = |name: &str| match fields.iter().any(|f| f == name) {
            true => format!("CAST({c} AS VARCHAR) AS {c}", c = ident(name)),
            false => format!("CAST(NULL AS VARCHAR) AS {}", ident(name)),
        };
        // Only the newest rows: a proposal has at most four (made, decided, done or expired),
        // so these hold the newest `KEPT`, and a shadow policy's years of rows are not read.
        let sql = format!(
            "SELECT * FROM (SELECT CAST(policy AS VARCHAR) AS policy, CAST(mode AS VARCHAR) \
             AS mode, {}, time FROM {} ORDER BY time DESC LIMIT {rows}) ORDER BY time",
            [
                "id",
                "state",
                "time_of_data",
                "summary",
                "effect",
                "decided_by",
                "note"
            ]
            .map(column)
            .join(", "),
            ident(PROPOSALS_TABLE),
            rows = 4 * KEPT
        );
        let Ok((_, batches)) = self.lake().query(self.bucket(), &sql).await else {
            return;
        };
        let mut latest: Vec<Proposal> = Vec::new();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let text = |c: usize| text_at(batch, c, row).unwrap_or_default();
                let Some(state) = ProposalState::NAMES
                    .iter()
                    .position(|n| *n == text(3))
                    .map(ProposalState::from_index)
                else {
                    continue;
                };
                let proposal = Proposal {
                    id: text(2),
                    policy: text(0),
                    mode: text(1),
                    time: text(4),
                    state,
                    summary: text(5).split("; ").map(str::to_owned).collect(),
                    effect: serde_json::from_str(&text(6)).unwrap_or_default(),
                    actions: serde_json::Value::Null,
                    decided_by: text_at(batch, 7, row),
                    note: text_at(batch, 8, row),
                    decided_at: None,
                };
                match latest.iter_mut().find(|p| p.id == proposal.id) {
                    Some(known) => *known = proposal,
                    None => latest.push(proposal),
                }
            }
        }
        let mut expired = Vec::new();
        for p in latest.iter_mut() {
            if matches!(p.state, ProposalState::Pending | ProposalState::Approved) {
                p.state = ProposalState::Expired;
                p.note = Some("the server restarted before it was done".into());
                expired.push(p.clone());
            }
        }
        let over = latest.len().saturating_sub(KEPT);
        latest.drain(..over);
        {
            let mut store = self.proposals.write();
            // New ids go on from the highest number used, so none repeats an old one.
            store.next = latest
                .iter()
                .filter_map(|p| p.id.strip_prefix('p')?.split('-').next()?.parse().ok())
                .max()
                .unwrap_or(0);
            store.list = latest;
        }
        for p in &expired {
            self.record(p);
        }
    }

    /// The proposals, newest first, of one state if asked.
    pub fn proposals(&self, state: Option<&str>) -> Vec<Proposal> {
        let store = self.proposals.read();
        store
            .list
            .iter()
            .rev()
            .filter(|p| state.is_none_or(|s| p.state.name() == s))
            .cloned()
            .collect()
    }
}
