//! Changing how the lake keeps a table, while it serves: `POST /api/v3/configure/retention`
//! with `{"db", "table", "period" ("30d", or "none"), "dry_run"}` answers what the period
//! removes (files and rows) and, unless `dry_run`, sets it and removes them;
//! `DELETE /api/v3/configure/table?db=&table=` drops a table and
//! `DELETE /api/v3/configure/column?db=&table=&column=` one field column (both with
//! `&dry_run=true` to only see what would go).

use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
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

#[derive(Debug, Deserialize)]
pub(crate) struct DropRequest {
    db: String,
    table: String,
    column: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `DELETE /api/v3/configure/table`: the table and all its rows.
pub(crate) async fn drop_table(
    state: State<AppState>,
    request: Result<Query<DropRequest>, QueryRejection>,
) -> Response {
    match request {
        Ok(Query(r)) if r.column.is_some() => error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "to drop a column use DELETE /api/v3/configure/column",
        ),
        other => drop_any(state, other, "db=plant&table=pumps").await,
    }
}

/// `DELETE /api/v3/configure/column`: one field column of a table, its values in every row.
pub(crate) async fn drop_column(
    state: State<AppState>,
    request: Result<Query<DropRequest>, QueryRejection>,
) -> Response {
    match request {
        Ok(Query(r)) if r.column.is_none() => error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "name the column: ?db=plant&table=pumps&column=speed",
        ),
        other => drop_any(state, other, "db=plant&table=pumps&column=speed").await,
    }
}

async fn drop_any(
    State(state): State<AppState>,
    request: Result<Query<DropRequest>, QueryRejection>,
    example: &str,
) -> Response {
    let request = match crate::query_or_400(request, &format!("{example}[&dry_run=true]")) {
        Ok(r) => r,
        Err(refusal) => return refusal.into_response(),
    };
    let lake = state.lake.clone();
    // A drop persists the buffer and may rewrite files: not on this thread.
    let answer = tokio::task::spawn_blocking(move || {
        let column = request.column.as_deref();
        if request.dry_run {
            lake.drop_effect(&request.db, &request.table, column)
        } else {
            lake.drop_table_or_column(&request.db, &request.table, column)
        }
        .map(|effect| (effect, !request.dry_run))
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
            &format!("the drop failed: {e}"),
        ),
    }
}
