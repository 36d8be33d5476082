//! The write endpoints: line protocol in, durable points out.
//!
//! A batch is atomic unless `accept_partial=true`: any bad line (unparseable, or refused by the
//! lake's catalog) refuses the whole body with `400` and a JSON list of the bad lines. The
//! answer `204` is sent only once the lake has fsynced the batch.

use std::borrow::Cow;
use std::io::Read;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use doppel_core::Precision;
use doppel_ingest::line_protocol::{describe_line, parse_columnar};
use doppel_lake::LakeError;
use serde::Deserialize;
use serde_json::json;

use crate::{AppState, error_response, lake_error_response};

#[derive(Debug, Deserialize)]
pub(crate) struct V2Params {
    bucket: Option<String>,
    #[allow(dead_code)]
    org: Option<String>,
    precision: Option<String>,
    accept_partial: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct V1Params {
    db: Option<String>,
    precision: Option<String>,
    accept_partial: Option<bool>,
}

pub(crate) async fn write_v2(
    State(state): State<AppState>,
    Query(params): Query<V2Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(bucket) = params.bucket else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "missing `bucket` parameter",
        );
    };
    write(
        state,
        bucket,
        params.precision,
        params.accept_partial,
        &headers,
        body,
    )
    .await
}

pub(crate) async fn write_v1(
    State(state): State<AppState>,
    Query(params): Query<V1Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(db) = params.db else {
        return error_response(StatusCode::BAD_REQUEST, "invalid", "missing `db` parameter");
    };
    write(
        state,
        db,
        params.precision,
        params.accept_partial,
        &headers,
        body,
    )
    .await
}

/// InfluxDB 3's own write endpoint: `db`, `precision`, `accept_partial`.
pub(crate) async fn write_v3(
    state: State<AppState>,
    params: Query<V1Params>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    write_v1(state, params, headers, body).await
}

async fn write(
    state: AppState,
    database: String,
    precision: Option<String>,
    accept_partial: Option<bool>,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let precision = match precision.as_deref().map(str::parse::<Precision>) {
        None => Precision::Nanoseconds,
        Some(Ok(p)) => p,
        Some(Err(message)) => return error_response(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    let accept_partial = accept_partial.unwrap_or(false);
    if body.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body is empty: send line protocol, one point per line",
        );
    }
    let text = match body_text(headers, &body, state.config.max_body_bytes) {
        Ok(text) => text,
        Err((status, code, message)) => return error_response(status, code, &message),
    };
    let parsed = parse_columnar(&text, &database, precision, doppel_core::time::now_nanos());
    if parsed.errors.is_empty() && parsed.batch.rows() == 0 {
        // As InfluxDB does: nothing to write is a mistake, and must not create a database.
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "the body holds no points (only blank lines or comments): send line protocol, one point per line",
        );
    }
    let mut bad_lines: Vec<serde_json::Value> = parsed
        .errors
        .iter()
        .map(|e| {
            let message = format!("column {}: {}", e.column, e.message);
            bad_line(e.line_number, &e.original_line, &message)
        })
        .collect();
    if !bad_lines.is_empty() && !accept_partial {
        return bad_lines_response("no lines were written: the batch has bad lines", bad_lines);
    }
    // A row the lake refused, reported like a line that did not parse: its source is the
    // byte offset of its line.
    let refused_line = |r: &doppel_lake::PointRejection| {
        let (number, original) = describe_line(&text, r.index);
        bad_line(number, &original, &r.message)
    };
    match state
        .lake
        .write_columns(parsed.batch, Vec::new(), accept_partial)
        .await
    {
        Ok(outcome) => {
            bad_lines.extend(outcome.rejected.iter().map(refused_line));
            if bad_lines.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                bad_lines.sort_by_key(|l| l["line_number"].as_u64());
                bad_lines_response(
                    &format!(
                        "partial write: {} point(s) written, {} line(s) rejected",
                        outcome.points_written,
                        bad_lines.len()
                    ),
                    bad_lines,
                )
            }
        }
        Err(LakeError::Rejected(rejections)) => {
            let lines = rejections.iter().map(refused_line).collect();
            bad_lines_response(
                "no lines were written: the batch conflicts with the stored schema",
                lines,
            )
        }
        Err(e) => lake_error_response(e),
    }
}

/// One entry of the `data` list of a refused write, in InfluxDB 3's shape.
fn bad_line(line_number: usize, original_line: &str, message: &str) -> serde_json::Value {
    json!({
        "line_number": line_number,
        "original_line": original_line,
        "error_message": message,
    })
}

fn bad_lines_response(message: &str, lines: Vec<serde_json::Value>) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({
            "code": "invalid",
            "message": format!("{message}; first: line {}: {}", lines[0]["line_number"], lines[0]["error_message"].as_str().unwrap_or("")),
            "error": message,
            "data": lines,
        })),
    )
        .into_response()
}

/// The body as text, gunzipped when `Content-Encoding: gzip`, never beyond `limit` bytes.
/// Why a body cannot be read: the status, the error code and a message.
type BodyError = (StatusCode, &'static str, String);

fn body_text<'a>(
    headers: &HeaderMap,
    body: &'a Bytes,
    limit: usize,
) -> Result<Cow<'a, str>, BodyError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let not_utf8 = |e: std::str::Utf8Error| {
        (
            StatusCode::BAD_REQUEST,
            "invalid",
            format!("the body is not UTF-8 (byte {})", e.valid_up_to()),
        )
    };
    match encoding.as_str() {
        // The body is read in place: no copy on the hot path.
        "identity" | "" => std::str::from_utf8(body)
            .map(Cow::Borrowed)
            .map_err(not_utf8),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(body.len() * 4);
            // Every member of a multi-member stream (`cat a.gz b.gz`), as gzip itself reads
            // it; bytes after the last member that are not another member are an error.
            let mut decoder = flate2::read::MultiGzDecoder::new(&body[..]).take(limit as u64 + 1);
            if let Err(e) = decoder.read_to_end(&mut out) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    format!("the body is not valid gzip: {e}"),
                ));
            }
            if out.len() > limit {
                return Err((
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request too large",
                    format!("the body is larger than {limit} bytes once decompressed"),
                ));
            }
            String::from_utf8(out)
                .map(Cow::Owned)
                .map_err(|e| not_utf8(e.utf8_error()))
        }
        other => Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid",
            format!("Content-Encoding `{other}` is not supported: send identity or gzip"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;
    use proptest::prelude::*;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    fn gzip_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        headers
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: std::env::var("DOPPEL_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
            ..ProptestConfig::default()
        })]

        /// Any number of gzip members decode to their texts joined; anything after the last
        /// member that is not another member refuses the body. Nothing panics.
        #[test]
        fn gzip_members_are_all_read_and_trailing_bytes_refused(
            members in proptest::collection::vec("[a-z0-9 =,\n]{0,200}", 1..5),
            trailing in proptest::collection::vec(any::<u8>(), 0..16),
            limit in 0usize..2000,
        ) {
            let mut body = Vec::new();
            for m in &members {
                body.extend(gzip(m.as_bytes()));
            }
            body.extend(&trailing);
            let body = Bytes::from(body);
            let joined: String = members.concat();
            match body_text(&gzip_headers(), &body, limit) {
                Ok(text) => {
                    prop_assert!(trailing.is_empty(), "trailing {:?} accepted", trailing);
                    prop_assert_eq!(text.as_ref(), joined.as_str());
                }
                Err((status, _, message)) => {
                    let too_large = joined.len() > limit;
                    prop_assert!(
                        !trailing.is_empty() || too_large,
                        "refused {}: {}", status, message
                    );
                    if too_large && trailing.is_empty() {
                        prop_assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
                    } else if !too_large {
                        prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", message);
                    }
                }
            }
        }

        /// Random bytes sent as gzip are refused with 400, never a panic or a 5xx.
        #[test]
        fn random_bytes_sent_as_gzip_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let body = Bytes::from(bytes);
            if let Err((status, _, _)) = body_text(&gzip_headers(), &body, 1 << 20) {
                prop_assert!(status.is_client_error());
            }
        }
    }
}
