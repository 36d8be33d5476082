//! The dashboard: one page at `/`, its script, styles and the chart library, all inside the
//! binary (no CDN, nothing to build). It speaks only the public API (`/api/v1`, SQL, the event
//! stream), so these files are served without a token: the page holds no data, asks for the
//! token when the API does, and shows nothing without it. uPlot 1.6.32 (MIT, `vendor/`) draws
//! the charts.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// The page and its files: (name, content type, bytes).
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("style.css"),
    ),
    (
        "uplot.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("vendor/uplot.min.js"),
    ),
    (
        "uplot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("vendor/uplot.min.css"),
    ),
    (
        "uplot.LICENSE",
        "text/plain; charset=utf-8",
        include_bytes!("vendor/uplot.LICENSE"),
    ),
];

/// `/`, `/dashboard/{file}`, and `/dashboard/auth`, which tells the page whether to ask for
/// a token before it calls the API (it says nothing else).
pub fn router(token_required: bool) -> Router {
    let auth = axum::Json(serde_json::json!({ "token_required": token_required }));
    Router::new()
        .route("/", get(index))
        .route("/dashboard/auth", get(move || async move { auth }))
        .route("/dashboard/{file}", get(file))
}

async fn index() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("index.html"),
    )
        .into_response()
}

async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(n, _, _)| *n == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such dashboard file").into_response(),
    }
}
