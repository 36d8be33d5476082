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
    /// The Arrow IPC stream format: the result's own columns and types, for programs
    /// (the model reads lake tables so).
    Arrow,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "jsonl" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "pretty" => Ok(Format::Pretty),
            "arrow" => Ok(Format::Arrow),
            other => Err(format!(
                "unknown format `{other}`: use json, jsonl, csv, pretty or arrow"
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
            Format::Arrow => "arrow",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/jsonl",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Pretty => "text/plain; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
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
        Ok((schema, batches)) => {
            let limit = state.config.max_response_bytes;
            match render_within(format, &schema, &batches, limit) {
                Ok(body) => ([(header::CONTENT_TYPE, format.content_type())], body).into_response(),
                Err(RenderError::TooLarge) => error_response(
                    StatusCode::BAD_REQUEST,
                    "limit exceeded",
                    &format!(
                        "the result is larger than {} MiB once written as {}; add a LIMIT, \
                         aggregate, or narrow the time range (the limit is --query-memory-mib)",
                        limit >> 20,
                        format.name()
                    ),
                ),
                Err(RenderError::Failed(e)) => {
                    error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal error", &e)
                }
            }
        }
        Err(e) => lake_error_response(e),
    }
}

/// Why a result could not be written out.
enum RenderError {
    TooLarge,
    Failed(String),
}

/// A buffer that refuses to grow past its limit, so a large result fails as the client's
/// request instead of taking the server's memory.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.overflowed = true;
            return Err(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                "over the limit",
            ));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn render_within(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    limit: usize,
) -> Result<Vec<u8>, RenderError> {
    // A text table is built whole before it is written: judge it by its data first.
    let data: usize = batches.iter().map(|b| b.get_array_memory_size()).sum();
    if format == Format::Pretty && data > limit {
        return Err(RenderError::TooLarge);
    }
    let mut out = Capped {
        bytes: Vec::new(),
        limit,
        overflowed: false,
    };
    match render_into(format, schema, batches, &mut out) {
        Ok(()) => Ok(out.bytes),
        Err(_) if out.overflowed => Err(RenderError::TooLarge),
        Err(e) => Err(RenderError::Failed(e)),
    }
}

/// Reads an answer given with `format=arrow` back into record batches.
pub fn read_arrow(bytes: &[u8]) -> Result<Vec<RecordBatch>, String> {
    let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(bytes, None)
        .map_err(|e| format!("not an Arrow stream: {e}"))?;
    reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("a damaged Arrow stream: {e}"))
}

/// Renders query results in a format. Public so the CLI prints exactly what the API sends.
pub fn render(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    render_into(format, schema, batches, &mut out)?;
    Ok(out)
}

fn render_into(
    format: Format,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    out: &mut impl std::io::Write,
) -> Result<(), String> {
    use datafusion::arrow::{csv, json};
    let refs: Vec<&RecordBatch> = batches.iter().collect();
    let failed = |e: &dyn std::fmt::Display| e.to_string();
    match format {
        Format::Arrow => {
            let mut writer =
                datafusion::arrow::ipc::writer::StreamWriter::try_new(&mut *out, schema)
                    .map_err(|e| e.to_string())?;
            for batch in batches {
                writer.write(batch).map_err(|e| e.to_string())?;
            }
            writer.finish().map_err(|e| e.to_string())?;
        }
        Format::Json if batches.iter().all(|b| b.num_rows() == 0) => {
            out.write_all(b"[]").map_err(|e| failed(&e))?;
        }
        Format::Json => {
            let mut writer = json::ArrayWriter::new(&mut *out);
            writer.write_batches(&refs).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        Format::JsonLines => {
            let mut writer = json::LineDelimitedWriter::new(&mut *out);
            writer.write_batches(&refs).map_err(|e| e.to_string())?;
            writer.finish().map_err(|e| e.to_string())?;
        }
        Format::Csv => {
            let mut writer = csv::WriterBuilder::new().with_header(true).build(&mut *out);
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
            writeln!(out, "{text}").map_err(|e| failed(&e))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    #[test]
    fn an_answer_past_the_limit_is_refused_in_every_format() {
        let schema: SchemaRef =
            Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(0..10_000))],
        )
        .unwrap();
        for format in [Format::Json, Format::JsonLines, Format::Csv, Format::Pretty] {
            let whole = render_within(format, &schema, std::slice::from_ref(&batch), 1 << 30);
            let Ok(whole) = whole else {
                panic!("{format:?} failed under a large limit")
            };
            let cut = render_within(
                format,
                &schema,
                std::slice::from_ref(&batch),
                whole.len() / 2,
            );
            assert!(matches!(cut, Err(RenderError::TooLarge)), "{format:?}");
        }
        let empty = render_within(Format::Json, &schema, &[], 16);
        assert_eq!(empty.ok().as_deref(), Some(&b"[]"[..]));
    }
}
