//! Changing how the lake keeps a table, while it serves: `POST /api/v3/configure/retention`
//! with `{"db", "table", "period" ("30d", or "none"), "dry_run"}` answers what the period
//! removes (files and rows) and, unless `dry_run`, sets it and removes them.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, error_response, lake_error_response};

#[derive(Debug, Deserialize)]
pub(crate) struct RetentionRequest {
    db: String,
    table: String,
    period: String,
    #[serde(default)]
    dry_run: bool,
}

pub(crate) async fn retention(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let request: RetentionRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!(
                    "the body must be JSON like {{\"db\": \"plant\", \"table\": \"pumps\", \"period\": \"30d\", \"dry_run\": true}}: {e}"
                ),
            );
        }
    };
    let period = match request.period.as_str() {
        "none" | "forever" => None,
        text => match doppel_core::time::parse_duration(text) {
            Ok(nanos) => Some(Duration::from_nanos(nanos.max(0) as u64)),
            Err(message) => return error_response(StatusCode::BAD_REQUEST, "invalid", &message),
        },
    };
    let lake = state.lake.clone();
    // Setting a retention waits for a running persist and removes files: not on this thread.
    let answer = tokio::task::spawn_blocking(move || {
        let effect = lake.retention_effect(&request.db, &request.table, period)?;
        if !request.dry_run {
            lake.set_retention(&request.db, &request.table, period)?;
        }
        Ok::<_, doppel_lake::LakeError>((effect, !request.dry_run))
    })
    .await;
    match answer {
        Ok(Ok((effect, applied))) => {
            Json(json!({ "effect": effect, "applied": applied })).into_response()
        }
        Ok(Err(e)) => lake_error_response(e),
        Err(e) => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &format!("setting the retention failed: {e}"),
        ),
    }
}
