//! doppel's HTTP API, compatible with InfluxDB clients.
//!
//! - `POST /api/v2/write` and `POST /write` (v1): line protocol in, `204` when durable;
//! - `GET|POST /api/v3/query_sql`: SQL out as JSON, JSON lines, CSV or a text table;
//! - `GET /ping`, `GET /health`.
//!
//! [`app`] builds the router from a lake and a config, apart from any socket, so tests can run
//! it in process or over loopback. This crate must not own data: it translates HTTP to the
//! lake and back, and nothing else.

pub mod query;
mod write;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use doppel_lake::Lake;
use serde_json::json;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every request must carry it (`Authorization: Token …` or `Bearer …`).
    pub token: Option<String>,
    /// The largest request body accepted, after decompression (bytes).
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body_bytes: 10 << 20,
        }
    }
}

#[derive(Clone)]
struct AppState {
    lake: Lake,
    config: Arc<ServerConfig>,
}

/// The whole API as a router.
pub fn app(lake: Lake, config: ServerConfig) -> Router {
    let state = AppState {
        lake,
        config: Arc::new(config),
    };
    Router::new()
        .route("/api/v2/write", post(write::write_v2))
        .route("/write", post(write::write_v1))
        .route("/api/v3/write_lp", post(write::write_v3))
        .route(
            "/api/v3/query_sql",
            get(query::query_get).post(query::query_post),
        )
        .route("/ping", get(ping).head(ping))
        .route("/health", get(health))
        .route("/api/v3/health", get(health))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Compressed bodies are limited again after decompression (see `write::body_text`).
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
}

async fn ping() -> impl IntoResponse {
    (
        StatusCode::NO_CONTENT,
        [
            ("X-Influxdb-Version", "1.8.10"),
            ("X-Influxdb-Build", "doppel"),
            ("X-Doppel-Version", env!("CARGO_PKG_VERSION")),
        ],
    )
}

async fn health(State(state): State<AppState>) -> impl IntoResponse {
    Json(json!({
        "status": "pass",
        "name": "doppel",
        "version": env!("CARGO_PKG_VERSION"),
        "lake": state.lake.stats(),
    }))
}

/// Answers `413` from the `Content-Length` alone, so a client is not made to upload a body
/// that would be refused anyway (bodies without a length are limited while read).
async fn refuse_oversized(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if n > state.config.max_body_bytes as u64 => error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request too large",
            &format!(
                "the body is {n} bytes; the limit is {} (raise it with --max-body-mib, or send smaller batches)",
                state.config.max_body_bytes
            ),
        ),
        _ => next.run(request).await,
    }
}

/// Checks the token when one is configured. Accepts what Influx clients send:
/// `Authorization: Token T` (v2), `Bearer T` (v3), Basic auth with T as the password and
/// the `p=T` query parameter (v1).
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let presented = token_from(request.headers(), request.uri().query());
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), expected.as_bytes()) => next.run(request).await,
        Some(_) => error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        ),
        None => error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this server needs a token: send `Authorization: Token <token>` (or `Bearer <token>`)",
        ),
    }
}

fn token_from(headers: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let value = value.trim();
        for scheme in ["Token ", "Bearer "] {
            if let Some(t) = value.strip_prefix(scheme) {
                return Some(t.trim().to_owned());
            }
        }
        if let Some(encoded) = value.strip_prefix("Basic ") {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()?;
            let text = String::from_utf8(decoded).ok()?;
            return text
                .split_once(':')
                .map(|(_, password)| password.to_owned());
        }
        return Some(value.to_owned());
    }
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "p")
        .map(|(_, v)| v.into_owned())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A JSON error body in the shape InfluxDB clients read: `code`, `message` and `error`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "code": code, "message": message, "error": message })),
    )
        .into_response()
}

pub(crate) fn lake_error_response(error: doppel_lake::LakeError) -> Response {
    use doppel_lake::LakeError as E;
    match &error {
        E::Busy { .. } => {
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                &error.to_string(),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            response
        }
        E::DatabaseNotFound(_) => {
            error_response(StatusCode::NOT_FOUND, "not found", &error.to_string())
        }
        E::Invalid(_) | E::Query(_) => {
            error_response(StatusCode::BAD_REQUEST, "invalid", &error.to_string())
        }
        E::ShuttingDown => error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            &error.to_string(),
        ),
        _ => error_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
            &error.to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_read_the_ways_influx_clients_send_them() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Token abc"));
        assert_eq!(token_from(&headers, None).as_deref(), Some("abc"));
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc"),
        );
        assert_eq!(token_from(&headers, None).as_deref(), Some("abc"));
        // "user:abc" in base64
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjphYmM="),
        );
        assert_eq!(token_from(&headers, None).as_deref(), Some("abc"));
        assert_eq!(
            token_from(&HeaderMap::new(), Some("db=x&p=a%2Bb")).as_deref(),
            Some("a+b")
        );
        assert_eq!(token_from(&HeaderMap::new(), Some("db=x")), None);
    }
}
