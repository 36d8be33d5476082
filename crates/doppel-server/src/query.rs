//! The SQL endpoint, InfluxDB 3's convention: `/api/v3/query_sql?db=B&q=SQL&format=F`.

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::Deserialize;

use crate::{AppState, error_response, lake_error_response};

#[derive(Debug, Deserialize)]
pub(crate) struct QueryParams {
    db: Option<String>,
    q: Option<String>,
    format: Option<String>,
}

pub(crate) async fn query_get(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
) -> Response {
    run(state, params).await
}

/// POST takes the same parameters as a JSON body (or in the query string).
pub(crate) async fn query_post(
    State(state): State<AppState>,
    Query(from_url): Query<QueryParams>,
    body: axum::body::Bytes,
) -> Response {
    let params = if body.is_empty() {
        from_url
    } else {
        match serde_json::from_slice::<QueryParams>(&body) {
            Ok(p) => QueryParams {
                db: p.db.or(from_url.db),
                q: p.q.or(from_url.q),
                format: p.format.or(from_url.format),
            },
            Err(e) => {
                return error_response(
                    StatusCode::BAD_REQUEST,
                    "invalid",
                    &format!(
                        "the body must be JSON like {{\"db\": \"B\", \"q\": \"SELECT ...\"}}: {e}"
                    ),
                );
            }
        }
    };
    run(state, params).await
}

/// Output formats of query results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    JsonLines,
    Csv,
    Pretty,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "pretty" => Ok(Format::Pretty),
            other => Err(format!(
                "unknown format `{other}`: use json, jsonl, csv or pretty"
            )),
        }
    }
}

impl Format {
    /// The name `format=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::JsonLines => "jsonl",
            Format::Csv => "csv",
            Format::Pretty => "pretty",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Pretty => "text/plain; charset=utf-8",
        }
    }
}

async fn run(state: AppState, params: QueryParams) -> Response {
    let Some(db) = params.db else {
        return error_response(StatusCode::BAD_REQUEST, "invalid", "missing `db` parameter");
    };
    let Some(sql) = params.q else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "invalid",
            "missing `q` parameter (the SQL)",
        );
    };
    let format = match params.format.as_deref().unwrap_or("json").parse::<Format>() {
        Ok(f) => f,
        Err(message) => return error_response(StatusCode::BAD_REQUEST, "invalid", &message),
    };
    match state.lake.query(&db, &sql).await {
        Ok((schema, batches)) => match render(format, &schema, &batches) {
            Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
            Err(e) => error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &e),
        },
        Err(e) => lake_error_response(e),
    }
}

/// Renders query results in a format. Public so the CLI prints exactly what the API sends.
pub fn render(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, String> {
    use datafusion::arrow::{csv, json};
    let mut out = Vec::new();
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    match format {
        Format::Json => {
            let mut writer = json::ArrayWriter::new(&mut out);
            writer.write_batches(&refs).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
            if out.is_empty() {
                out.extend_from_slice(b"[]");
            }
        }
        Format::JsonLines => {
            let mut writer = json::LineDelimitedWriter::new(&mut out);
            writer.write_batches(&refs).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut out);
            if batches.is_empty() {
                writer
                    .write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(|e| e.to_string())?;
            }
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
        }
        Format::Pretty => {
            let text = if batches.is_empty() {
                datafusion::arrow::util::pretty::pretty_format_batches(&[RecordBatch::new_empty(
                    schema.clone(),
                )])
            } else {
                datafusion::arrow::util::pretty::pretty_format_batches(batches)
            }
            .map_err(|e| e.to_string())?;
            out.extend_from_slice(text.to_string().as_bytes());
            out.push(b'\n');
        }
    }
    Ok(out)
}
