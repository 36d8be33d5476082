//! The live twin's API: `GET /api/v1/twin` (sites → assets → sensors with their state),
//! `GET /api/v1/assets/{id}?window=1h&points=2000` (one asset, with its sensors' readings
//! over the window downsampled to about that many points), `GET /api/v1/alerts` and
//! `POST /api/v1/alerts/{id}/ack`, `GET /api/v1/timeline` (what happened, kept in the lake),
//! `GET /api/v1/events`, a Server-Sent Events stream of
//! the twin's changes, and `GET /api/v1/models`, the twin's own model. JSON; docs/API.md.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;

use crate::{AppState, error_response, lake_error_response};

/// The answer when the server runs without a twin spec.
fn no_twin() -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        "this doppel has no twin: start it with --spec twin.toml (doppel up uses the \
         reference plant's own spec)",
    )
}

pub(crate) async fn plant(State(state): State<AppState>) -> Response {
    match &state.twin {
        Some(twin) => Json(twin.view()).into_response(),
        None => no_twin(),
    }
}

/// How far back `GET /api/v1/models` sets the forecast bands against what came.
const COVERAGE_WINDOW_NS: i64 = 24 * 3_600_000_000_000;

/// `GET /api/v1/models`: the twin's own model, what it is doing and its versions, and how its
/// forecast bands did on the live plant over the last day of data.
pub(crate) async fn models(State(state): State<AppState>) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let mut view = doppel_twin::models::view(twin);
    match doppel_twin::models::coverage::live_coverage(twin, COVERAGE_WINDOW_NS).await {
        Ok(coverage) => view["coverage"] = serde_json::json!(coverage),
        Err(doppel_twin::TwinError::Lake(e)) => return lake_error_response(e),
        Err(e) => {
            return error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                &e.to_string(),
            );
        }
    }
    Json(view).into_response()
}

#[derive(Deserialize)]
pub(crate) struct AssetQuery {
    window: Option<String>,
    points: Option<usize>,
}

/// At most this many points a sensor, whatever is asked.
const MAX_POINTS: usize = 20_000;

pub(crate) async fn asset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<AssetQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let query = match crate::query_or_400(query, "window=1h&points=2000") {
        Ok(q) => q,
        Err(refusal) => return refusal.into_response(),
    };
    let window = match doppel_core::time::parse_duration(query.window.as_deref().unwrap_or("1h")) {
        Ok(ns) if ns > 0 => ns,
        Ok(_) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid",
                "the window must be above zero",
            );
        }
        Err(message) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("window: {message}"),
            );
        }
    };
    let points = query.points.unwrap_or(2_000);
    if points == 0 || points > MAX_POINTS {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("points must be 1 to {MAX_POINTS}, not {points}"),
        );
    }
    match twin.asset(&id, window, points).await {
        Ok(view) => Json(view).into_response(),
        Err(doppel_twin::TwinError::UnknownAsset { id, known }) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no asset `{id}` in the twin; its assets: {known}"),
        ),
        Err(doppel_twin::TwinError::Invalid(message)) => {
            error_response(StatusCode::BAD_REQUEST, "invalid", &message)
        }
        Err(doppel_twin::TwinError::Lake(e)) => lake_error_response(e),
        Err(
            e @ (doppel_twin::TwinError::UnknownAlert(_)
            | doppel_twin::TwinError::UnknownProposal(_)),
        ) => error_response(StatusCode::NOT_FOUND, "not_found", &e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct AlertQuery {
    state: Option<String>,
    asset: Option<String>,
}

pub(crate) async fn alerts(
    State(state): State<AppState>,
    query: Result<Query<AlertQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let Ok(Query(query)) = query else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the query string must be like ?state=open&asset=pump1",
        );
    };
    if let Some(s) = query.state.as_deref()
        && !["open", "firing", "acknowledged", "resolved"].contains(&s)
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("unknown state `{s}`: use open, firing, acknowledged or resolved"),
        );
    }
    Json(twin.alerts(query.state.as_deref(), query.asset.as_deref())).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Acknowledgement {
    by: String,
    #[serde(default)]
    note: String,
}

/// A body saying who acts and why, or what it should look like.
fn who_and_why(body: &[u8], example_note: &str) -> Result<Acknowledgement, String> {
    serde_json::from_slice(body).map_err(|e| {
        format!("the body must be JSON like {{\"by\": \"ana\", \"note\": \"{example_note}\"}}: {e}")
    })
}

pub(crate) async fn acknowledge(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let ack = match who_and_why(&body, "crew sent") {
        Ok(a) => a,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    if ack.by.trim().is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "say who acknowledges (`by`)",
        );
    }
    match twin.acknowledge(&id, ack.by.trim(), ack.note.trim()) {
        Ok(alert) => Json(alert).into_response(),
        Err(doppel_twin::TwinError::UnknownAlert(id)) => error_response(
            StatusCode::NOT_FOUND,
            "not_found",
            &format!("no alert `{id}`"),
        ),
        Err(e) => error_response(StatusCode::CONFLICT, "conflict", &e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct ProposalQuery {
    state: Option<String>,
}

/// `GET /api/v1/proposals[?state=pending]`: what policies at work propose, newest first.
pub(crate) async fn proposals(
    State(state): State<AppState>,
    query: Result<Query<ProposalQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, "invalid", &e.body_text()),
    };
    use doppel_twin::proposals::ProposalState;
    if let Some(s) = &query.state
        && !ProposalState::NAMES.contains(&s.as_str())
    {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!(
                "unknown state `{s}`: use one of {}",
                ProposalState::NAMES.join(", ")
            ),
        );
    }
    Json(twin.proposals(query.state.as_deref())).into_response()
}

/// `POST /api/v1/proposals/{id}/approve` and `.../reject` with `{"by": "...", "note": "..."}`.
pub(crate) async fn approve(
    state: State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    decide(state, id, body, true)
}

pub(crate) async fn reject(
    state: State<AppState>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    decide(state, id, body, false)
}

fn decide(
    State(state): State<AppState>,
    id: String,
    body: axum::body::Bytes,
    approve: bool,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let decision = match who_and_why(&body, "checked the trend") {
        Ok(a) => a,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    match twin.decide(&id, approve, decision.by.trim(), decision.note.trim()) {
        Ok(p) => Json(p).into_response(),
        Err(e @ doppel_twin::TwinError::UnknownProposal(_)) => {
            error_response(StatusCode::NOT_FOUND, "not_found", &e.to_string())
        }
        Err(doppel_twin::TwinError::Invalid(m)) if m.starts_with("say who") => {
            error_response(StatusCode::BAD_REQUEST, "invalid", &m)
        }
        Err(e) => error_response(StatusCode::CONFLICT, "conflict", &e.to_string()),
    }
}

#[derive(Deserialize)]
pub(crate) struct TimelineQuery {
    hours: Option<f64>,
    limit: Option<usize>,
}

/// At most this many timeline entries, whatever is asked.
const MAX_TIMELINE: usize = 2_000;

/// `GET /api/v1/timeline[?hours=24][&limit=200]`: what happened, newest first.
pub(crate) async fn timeline(
    State(state): State<AppState>,
    query: Result<Query<TimelineQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let query = match crate::query_or_400(query, "hours=24&limit=200") {
        Ok(q) => q,
        Err(refusal) => return refusal.into_response(),
    };
    let hours = query.hours.unwrap_or(24.0);
    if !(hours > 0.0 && hours <= 24.0 * 366.0) {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("hours must be above 0 and at most a year (8784), not {hours}"),
        );
    }
    let limit = query.limit.unwrap_or(200);
    if limit == 0 || limit > MAX_TIMELINE {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            &format!("limit must be 1 to {MAX_TIMELINE}, not {limit}"),
        );
    }
    let since = doppel_core::time::now_nanos() - (hours * 3.6e12) as i64;
    match twin.timeline(since, limit).await {
        Ok(entries) => Json(entries).into_response(),
        Err(doppel_twin::TwinError::Lake(e)) => lake_error_response(e),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            &e.to_string(),
        ),
    }
}

/// `GET /api/v1/events`: every change from the moment of the request, as Server-Sent Events
/// named by their type (`readings`, `state`, `alert`) with JSON data; a comment every 15 s
/// keeps idle connections open. A listener that falls far behind is told how many events it
/// missed (`lagged`) and goes on.
pub(crate) async fn events(State(state): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let Some(twin) = &state.twin else {
        return no_twin();
    };
    let receiver = twin.subscribe();
    let stopping = crate::listen::STOPPING.subscribe();
    let stream = futures_util::stream::unfold(
        (receiver, stopping),
        |(mut receiver, mut stopping)| async move {
            let next = tokio::select! {
                next = receiver.recv() => next,
                _ = stopping.wait_for(|stop| *stop) => return None,
            };
            let event = match next {
                Ok(event) => {
                    let kind = match &event {
                        doppel_twin::TwinEvent::Readings { .. } => "readings",
                        doppel_twin::TwinEvent::State { .. } => "state",
                        doppel_twin::TwinEvent::Alert { .. } => "alert",
                        doppel_twin::TwinEvent::ScenarioRun { .. } => "scenario_run",
                        doppel_twin::TwinEvent::Disruption { .. } => "disruption",
                        doppel_twin::TwinEvent::Proposal { .. } => "proposal",
                    };
                    Event::default()
                        .event(kind)
                        .data(serde_json::to_string(&event).unwrap_or_default())
                }
                Err(RecvError::Lagged(missed)) => Event::default()
                    .event("lagged")
                    .data(format!("{{\"missed\": {missed}}}")),
                Err(RecvError::Closed) => return None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(event),
                (receiver, stopping),
            ))
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(std::time::Duration::from_secs(15)))
        .into_response()
}
