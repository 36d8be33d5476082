//! The live twin's API: `GET /api/v1/twin` (sites → assets → sensors with their state) and
//! `GET /api/v1/assets/{id}?window=1h&points=2000` (one asset, with its sensors' readings
//! over the window downsampled to about that many points). JSON only; docs/API.md.

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
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                "invalid",
                &format!("the query string must be like ?window=1h&points=2000: {e}"),
            );
        }
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
    }
}
