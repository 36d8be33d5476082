//! doppel's HTTP API, compatible with InfluxDB clients.
//!
//! - `POST /api/v2/write` and `POST /write` (v1): line protocol in, `204` when durable;
//! - `GET|POST /api/v3/query_sql`: SQL out as JSON, JSON lines, CSV or a text table;
//! - `POST /api/v3/configure/retention`: what a retention period removes, and setting it;
//! - `GET /ping`, `GET /health`.
//!
//! [`app`] builds the router from a lake and a config, apart from any socket, so tests can run
//! it in process or over loopback; [`serve`] runs it on a socket with the limits that keep
//! idle, slow and half-sent connections from starving it. This crate must not own data: it
//! translates HTTP to the lake and back, and nothing else.

mod configure;
mod dashboard;
mod estimate;
mod listen;
mod planning;
pub mod query;
mod twin;
mod write;

pub use listen::{ConnectionLimits, serve};

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{delete, get, post};
use doppel_lake::Lake;
use serde_json::json;

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// When set, every request must carry it (`Authorization: Token …` or `Bearer …`).
    pub token: Option<String>,
    /// The largest request body accepted, after decompression (bytes).
    pub max_body_bytes: usize,
    /// A request body must arrive whole within this time.
    pub body_timeout: Duration,
    /// The largest query answer, as written out (bytes).
    pub max_response_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            token: None,
            max_body_bytes: 10 << 20,
            body_timeout: Duration::from_secs(60),
            max_response_bytes: 1 << 30,
        }
    }
}

#[derive(Clone)]
struct AppState {
    lake: Lake,
    config: Arc<ServerConfig>,
    /// The live twin, when the server was given a spec.
    twin: Option<doppel_twin::Twin>,
    /// Scenario studies run as jobs.
    planning: Arc<planning::Planning>,
}

/// The whole API as a router, without a live twin (`/api/v1` answers 404 saying so).
pub fn app(lake: Lake, config: ServerConfig) -> Router {
    app_with_twin(lake, config, None)
}

/// The whole API as a router, with the live twin's `/api/v1` when there is one.
pub fn app_with_twin(lake: Lake, config: ServerConfig, twin: Option<doppel_twin::Twin>) -> Router {
    let token_required = config.token.is_some();
    let planning = Arc::new(planning::Planning::open(lake.dir()));
    let state = AppState {
        lake,
        config: Arc::new(config),
        twin,
        planning,
    };
    Router::new()
        .route("/api/v1/twin", get(twin::plant))
        .route("/api/v1/twin/estimate", get(estimate::estimate))
        .route("/api/v1/assets/{id}", get(twin::asset))
        .route("/api/v1/alerts", get(twin::alerts))
        .route("/api/v1/events", get(twin::events))
        .route("/api/v1/timeline", get(twin::timeline))
        .route("/api/v1/alerts/{id}/ack", post(twin::acknowledge))
        .route("/api/v1/proposals", get(twin::proposals))
        .route("/api/v1/proposals/{id}/approve", post(twin::approve))
        .route("/api/v1/proposals/{id}/reject", post(twin::reject))
        .route("/api/v1/models", get(twin::models))
        .route("/api/v1/scenarios", get(planning::library))
        .route("/api/v1/scenarios/check", post(planning::check))
        .route(
            "/api/v1/scenario-runs",
            get(planning::list).post(planning::start),
        )
        .route("/api/v1/scenario-runs/{id}", get(planning::read))
        .route("/api/v1/scenario-runs/{id}/cancel", post(planning::cancel))
        .route("/api/v2/write", post(write::write_v2))
        .route("/write", post(write::write_v1))
        .route("/api/v3/write_lp", post(write::write_v3))
        .route(
            "/api/v3/query_sql",
            get(query::query_get).post(query::query_post),
        )
        .route("/api/v3/configure/retention", post(configure::retention))
        .route("/api/v3/configure/table", delete(configure::drop_table))
        .route("/api/v3/configure/column", delete(configure::drop_column))
        .route("/ping", get(ping).head(ping))
        .route("/health", get(health))
        .route("/api/v3/health", get(health))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            read_body_within,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            refuse_oversized,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        // Compressed bodies are limited again after decompression (see `write::body_text`).
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .with_state(state)
        // The dashboard's files hold no data: served without a token (the page asks for it).
        .merge(dashboard::router(token_required))
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

/// `pass`; `warn` (200) while persisting to Parquet keeps failing but writes are taken;
/// `fail` (503) while writes are refused. `checks` says what is wrong, in words.
async fn health(State(state): State<AppState>) -> impl IntoResponse {
    let health = state.lake.health();
    let checks: Vec<&String> = health.wal.iter().chain(&health.persist).collect();
    let (status, code) = if health.wal.is_some() {
        ("fail", StatusCode::SERVICE_UNAVAILABLE)
    } else if health.persist.is_some() {
        ("warn", StatusCode::OK)
    } else {
        ("pass", StatusCode::OK)
    };
    (
        code,
        Json(json!({
            "status": status,
            "name": "doppel",
            "version": env!("CARGO_PKG_VERSION"),
            "checks": checks,
            "lake": state.lake.stats(),
        })),
    )
}

/// Reads the whole body before any handler runs, within the body timeout and size limit, so
/// a client that sends slowly or never finishes is cut off instead of holding a task.
async fn read_body_within(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let limit = state.config.max_body_bytes;
    let timeout = state.config.body_timeout;
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                error_response(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request too large",
                    &format!(
                        "the body is larger than {limit} bytes (raise it with --max-body-mib, or send smaller batches)"
                    ),
                )
            } else {
                error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!("the body could not be read: {e}"),
                )
            }
        }
        Err(_) => error_response(
            StatusCode::REQUEST_TIMEOUT,
            "request timeout",
            &format!(
                "the body did not arrive within {} s (--body-timeout)",
                timeout.as_secs()
            ),
        ),
    }
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
        Some(_) => unauthorized("the token is not valid"),
        None => unauthorized(
            "this server needs a token: send `Authorization: Token <token>` (or `Bearer <token>`)",
        ),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, "unauthorized", message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Token realm=\"doppel\", Bearer realm=\"doppel\""),
    );
    response
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

/// A query string as `T`, or the `400` that shows what it should look like (`example`, such
/// as `window=1h&points=2000`).
pub(crate) fn query_or_400<T>(
    query: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
    example: &str,
) -> Result<T, InvalidQuery> {
    query
        .map(|q| q.0)
        .map_err(|e| InvalidQuery(format!("the query string must be like ?{example}: {e}")))
}

/// A query string that is not what the endpoint takes: a `400` saying what it should be.
pub(crate) struct InvalidQuery(String);

impl IntoResponse for InvalidQuery {
    fn into_response(self) -> Response {
        error_response(StatusCode::BAD_REQUEST, "invalid", &self.0)
    }
}

/// The one place a lake error becomes an HTTP answer: the client's mistakes are 4xx with
/// where and why; the lake's passing troubles are 503 with `Retry-After`; its failures are
/// 500 with a message that names no file (the log has the details).
pub(crate) fn lake_error_response(error: doppel_lake::LakeError) -> Response {
    use doppel_lake::ErrorKind;
    let message = error.to_string();
    match error.kind() {
        ErrorKind::Client => error_response(StatusCode::BAD_REQUEST, "invalid", &message),
        ErrorKind::NotFound => error_response(StatusCode::NOT_FOUND, "not found", &message),
        ErrorKind::Limit => error_response(StatusCode::BAD_REQUEST, "limit exceeded", &message),
        ErrorKind::Unavailable(retry_after) => {
            let mut response =
                error_response(StatusCode::SERVICE_UNAVAILABLE, "unavailable", &message);
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after.as_secs().max(1)),
            );
            response
        }
        ErrorKind::Internal => {
            tracing::error!(error = %error, "answering 500");
            error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error",
                &error.public_message(),
            )
        }
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

    fn status_of(error: doppel_lake::LakeError) -> (StatusCode, Option<String>, String) {
        let response = lake_error_response(error);
        let retry = response
            .headers()
            .get(header::RETRY_AFTER)
            .map(|v| v.to_str().unwrap().to_owned());
        let status = response.status();
        let body = futures_body(response);
        (status, retry, body)
    }

    fn futures_body(response: Response) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = runtime
            .block_on(axum::body::to_bytes(response.into_body(), usize::MAX))
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Every kind of lake error maps to the status that tells the client who must act.
    #[test]
    fn lake_errors_map_to_who_must_act() {
        use doppel_lake::LakeError as E;
        let secret = std::path::PathBuf::from("/srv/secret/lake/wal/0001.wal");
        let cases: Vec<(E, StatusCode, Option<&str>)> = vec![
            (E::Invalid("bad name".into()), StatusCode::BAD_REQUEST, None),
            (E::Rejected(vec![]), StatusCode::BAD_REQUEST, None),
            (
                E::QueryRefused("read-only".into()),
                StatusCode::BAD_REQUEST,
                None,
            ),
            (
                E::Query("no column x".into()),
                StatusCode::BAD_REQUEST,
                None,
            ),
            (
                E::QueryLimit("too long".into()),
                StatusCode::BAD_REQUEST,
                None,
            ),
            (E::DatabaseNotFound("x".into()), StatusCode::NOT_FOUND, None),
            (
                E::Busy { buffered_bytes: 1 },
                StatusCode::SERVICE_UNAVAILABLE,
                Some("1"),
            ),
            (E::ShuttingDown, StatusCode::SERVICE_UNAVAILABLE, Some("1")),
            (
                E::Unavailable {
                    reason: "the disk is full".into(),
                    retry_after: Duration::from_secs(5),
                },
                StatusCode::SERVICE_UNAVAILABLE,
                Some("5"),
            ),
            (
                E::io(&secret, std::io::Error::from_raw_os_error(5)),
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
            (
                E::WalCorrupt {
                    path: secret.clone(),
                    offset: 8,
                    reason: "x".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
            (
                E::Internal("x".into()),
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
            ),
        ];
        for (error, status, retry) in cases {
            let shown = format!("{error:?}");
            let (got, got_retry, body) = status_of(error);
            assert_eq!(got, status, "{shown}");
            assert_eq!(got_retry.as_deref(), retry, "{shown}");
            if got.is_server_error() {
                assert!(!body.contains("/srv/secret"), "{shown}: {body}");
            }
        }
    }
}
