//! InfluxDB line protocol: `measurement[,tag=v...] field=v[,field=v...] [timestamp]`.
//!
//! Written by hand rather than with the `influxdb-line-protocol` crate because the write path
//! needs every bad line reported (line number, text, column and reason) while the good ones go
//! on, and because this parser borrows from the request body instead of copying it; the tests
//! check it against that crate on the same inputs.
//!
//! Escaping rules (from the InfluxDB reference):
//! - measurement: `\,` and `\ ` (and `\\`);
//! - tag keys, tag values and field keys: `\,`, `\=`, `\ ` (and `\\`);
//! - string field values: in double quotes, `\"` and `\\`; may span lines;
//! - a backslash before any other character is kept as it is.

use std::borrow::Cow;
use std::fmt;

use doppel_core::{FieldValue, Point, Precision};

/// A line that could not be parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct LineError {
    /// 1-based line number in the body.
    pub line_number: usize,
    /// The line as it was sent (cut to 1,000 characters).
    pub original_line: String,
    /// 1-based column (in bytes) where the problem was found.
    pub column: usize,
    pub message: String,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: {} (line: `{}`)",
            self.line_number, self.column, self.message, self.original_line
        )
    }
}

/// What parsing a body gave: the good points (in order) and the bad lines.
#[derive(Debug, Default)]
pub struct ParseOutcome {
    pub points: Vec<Point>,
    /// For each point, its 1-based line number and its byte range in the body, so that a
    /// later refusal (a field type conflict, say) can name the line too.
    pub sources: Vec<(usize, std::ops::Range<usize>)>,
    pub errors: Vec<LineError>,
}

/// Parses a whole body of line protocol. Lines without a timestamp get `default_time`
/// (nanoseconds); others are converted from `precision` to nanoseconds.
pub fn parse_lines(body: &str, precision: Precision, default_time: i64) -> ParseOutcome {
    let mut outcome = ParseOutcome::default();
    let bytes = body.as_bytes();
    let mut pos = 0;
    let mut line_number = 0;
    while pos < bytes.len() {
        line_number += 1;
        let start = pos;
        let mut parser = LineParser {
            text: body,
            bytes,
            pos,
            line_start: start,
        };
        let result = parser.parse_line(precision, default_time);
        // Whatever happened, continue after the end of this line (outside quoted strings
        // for good lines; at the next newline for bad ones).
        let end = match result {
            Ok(_) => parser.pos,
            Err(_) => parser.skip_to_line_end(),
        };
        let line_text = body[start..end].trim_end_matches(['\n', '\r']);
        let extra_lines = body[start..end]
            .trim_end_matches('\n')
            .matches('\n')
            .count();
        match result {
            Ok(Some(point)) => {
                outcome.points.push(point);
                outcome
                    .sources
                    .push((line_number, start..start + line_text.len()));
            }
            Ok(None) => {}
            Err((column, message)) => outcome.errors.push(LineError {
                line_number,
                original_line: line_text.chars().take(1000).collect(),
                column,
                message,
            }),
        }
        line_number += extra_lines;
        pos = end;
    }
    outcome
}

struct LineParser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line_start: usize,
}

type LineResult<T> = Result<T, (usize, String)>;

impl<'a> LineParser<'a> {
    fn fail<T>(&self, message: impl Into<String>) -> LineResult<T> {
        Err((self.pos - self.line_start + 1, message.into()))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Moves past the end of the current line (ignoring quotes) and returns that position.
    fn skip_to_line_end(&mut self) -> usize {
        match memchr_newline(&self.bytes[self.line_start..]) {
            Some(i) => self.line_start + i + 1,
            None => self.bytes.len(),
        }
    }

    /// Parses one line; `Ok(None)` for blank lines and comments. On success `pos` is just past
    /// the line's newline (or at the end of the body).
    fn parse_line(&mut self, precision: Precision, default_time: i64) -> LineResult<Option<Point>> {
        // Leading whitespace is allowed before the measurement and comments.
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
        match self.peek() {
            None => return Ok(None),
            Some(b'\n') => {
                self.pos += 1;
                return Ok(None);
            }
            Some(b'#') => {
                self.pos = self.skip_to_line_end();
                return Ok(None);
            }
            _ => {}
        }

        let measurement = self.name(NameKind::Measurement)?;
        if measurement.is_empty() {
            return self.fail("missing measurement name");
        }
        let mut tags: Vec<(String, String)> = Vec::new();
        while self.peek() == Some(b',') {
            self.pos += 1;
            let key = self.name(NameKind::TagKey)?;
            if key.is_empty() {
                return self.fail("empty tag key");
            }
            if self.peek() != Some(b'=') {
                return self.fail(format!("tag `{key}` has no `=value`"));
            }
            self.pos += 1;
            let value = self.name(NameKind::TagValue)?;
            if value.is_empty() {
                return self.fail(format!("tag `{key}` has an empty value"));
            }
            if key == "time" {
                return self.fail("`time` cannot be a tag key: it is the timestamp column");
            }
            tags.push((key.into_owned(), value.into_owned()));
        }
        if self.peek() != Some(b' ') {
            return self.fail("expected a space and then fields after the measurement and tags");
        }
        self.skip_spaces();

        let mut fields: Vec<(String, FieldValue)> = Vec::new();
        loop {
            let key = self.name(NameKind::FieldKey)?;
            if key.is_empty() {
                return self
                    .fail("empty field key (a line needs at least one field, as key=value)");
            }
            if self.peek() != Some(b'=') {
                return self.fail(format!("field `{key}` has no `=value`"));
            }
            self.pos += 1;
            let value = self.field_value(&key)?;
            if key == "time" {
                return self.fail("`time` cannot be a field key: it is the timestamp column");
            }
            if tags.iter().any(|(t, _)| t.as_str() == key) {
                return self.fail(format!("`{key}` is both a tag and a field"));
            }
            if fields.iter().any(|(f, _)| f.as_str() == key) {
                return self.fail(format!("field `{key}` appears twice"));
            }
            fields.push((key.into_owned(), value));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }

        let mut time = default_time;
        match self.peek() {
            Some(b' ') => {
                self.skip_spaces();
                if !matches!(self.peek(), None | Some(b'\n' | b'\r')) {
                    let raw = self.timestamp()?;
                    time = match precision.to_nanos(raw) {
                        Some(t) => t,
                        None => {
                            return self
                                .fail(format!("timestamp {raw}{precision} is out of range"));
                        }
                    };
                }
            }
            None | Some(b'\n' | b'\r') => {}
            Some(c) => {
                return self.fail(format!(
                    "unexpected `{}` after the fields: expected a space and a timestamp, or the end of the line",
                    c as char
                ));
            }
        }
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
        match self.peek() {
            None => {}
            Some(b'\n') => self.pos += 1,
            Some(_) => return self.fail("unexpected text after the timestamp"),
        }

        tags.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(pair) = tags.windows(2).find(|w| w[0].0 == w[1].0) {
            return self.fail(format!("tag `{}` appears twice", pair[0].0));
        }
        Ok(Some(Point {
            measurement: measurement.into_owned(),
            tags,
            fields,
            time,
        }))
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Reads a measurement, tag key/value or field key, undoing its escapes.
    fn name(&mut self, kind: NameKind) -> LineResult<Cow<'a, str>> {
        let start = self.pos;
        let mut escaped = false;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => {
                    if let Some(next) = self.bytes.get(self.pos + 1)
                        && kind.escapable(*next)
                    {
                        escaped = true;
                        self.pos += 2;
                        continue;
                    }
                    self.pos += 1;
                }
                b',' | b' ' => break,
                b'=' if kind != NameKind::Measurement => break,
                b'\n' => break,
                b'\r' if self.bytes.get(self.pos + 1) == Some(&b'\n') => break,
                _ => self.pos += 1,
            }
        }
        let raw = &self.text[start..self.pos];
        if !escaped {
            return Ok(Cow::Borrowed(raw));
        }
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\'
                && let Some(&next) = chars.peek()
                && next.is_ascii()
                && kind.escapable(next as u8)
            {
                out.push(next);
                chars.next();
                continue;
            }
            out.push(c);
        }
        Ok(Cow::Owned(out))
    }

    fn field_value(&mut self, key: &str) -> LineResult<FieldValue> {
        if self.peek() == Some(b'"') {
            return self.string_value(key);
        }
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b',' | b' ' | b'\n' | b'\r') {
                break;
            }
            self.pos += 1;
        }
        let raw = &self.text[start..self.pos];
        if raw.is_empty() {
            return self.fail(format!("field `{key}` has an empty value"));
        }
        let invalid = |what: &str| {
            Err((
                start - self.line_start + 1,
                format!("field `{key}` value `{raw}` is not {what}"),
            ))
        };
        match raw {
            "t" | "T" | "true" | "True" | "TRUE" => return Ok(FieldValue::Boolean(true)),
            "f" | "F" | "false" | "False" | "FALSE" => return Ok(FieldValue::Boolean(false)),
            _ => {}
        }
        if let Some(digits) = raw.strip_suffix('i') {
            return match digits.parse::<i64>() {
                Ok(v) if is_plain_integer(digits, true) => Ok(FieldValue::Integer(v)),
                _ => invalid("a 64-bit signed integer (like `-42i`)"),
            };
        }
        if let Some(digits) = raw.strip_suffix('u') {
            return match digits.parse::<u64>() {
                Ok(v) if is_plain_integer(digits, false) => Ok(FieldValue::UInteger(v)),
                _ => invalid("a 64-bit unsigned integer (like `42u`)"),
            };
        }
        // Rust also accepts `inf`, `NaN` and `infinity`; line protocol does not.
        let looks_numeric = raw
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
        match raw.parse::<f64>() {
            Ok(v) if looks_numeric && v.is_finite() => Ok(FieldValue::Float(v)),
            _ => invalid(
                "a number, an integer (`1i`), an unsigned integer (`1u`), a boolean or a \"string\"",
            ),
        }
    }

    fn string_value(&mut self, key: &str) -> LineResult<FieldValue> {
        let open = self.pos;
        self.pos += 1;
        let mut out = String::new();
        let mut chunk_start = self.pos;
        loop {
            match self.peek() {
                None => {
                    self.pos = open;
                    return self.fail(format!("field `{key}` string value has no closing quote"));
                }
                Some(b'"') => {
                    out.push_str(&self.text[chunk_start..self.pos]);
                    self.pos += 1;
                    return Ok(FieldValue::String(out));
                }
                Some(b'\\') if matches!(self.bytes.get(self.pos + 1), Some(b'"' | b'\\')) => {
                    out.push_str(&self.text[chunk_start..self.pos]);
                    out.push(self.bytes[self.pos + 1] as char);
                    self.pos += 2;
                    chunk_start = self.pos;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn timestamp(&mut self) -> LineResult<i64> {
        let start = self.pos;
        while let Some(c) = self.peek() {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                break;
            }
            self.pos += 1;
        }
        let raw = &self.text[start..self.pos];
        match raw.parse::<i64>() {
            Ok(v) if is_plain_integer(raw, true) => Ok(v),
            _ => Err((
                start - self.line_start + 1,
                format!(
                    "timestamp `{raw}` is not an integer (Unix time in the request's precision)"
                ),
            )),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum NameKind {
    Measurement,
    TagKey,
    TagValue,
    FieldKey,
}

impl NameKind {
    fn escapable(self, c: u8) -> bool {
        match self {
            NameKind::Measurement => matches!(c, b',' | b' ' | b'\\'),
            _ => matches!(c, b',' | b'=' | b' ' | b'\\'),
        }
    }
}

fn is_plain_integer(digits: &str, signed: bool) -> bool {
    let unsigned = if signed {
        digits.strip_prefix('-').unwrap_or(digits)
    } else {
        digits
    };
    !unsigned.is_empty() && unsigned.bytes().all(|c| c.is_ascii_digit())
}

fn memchr_newline(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&c| c == b'\n')
}

/// Writes one point as a line of line protocol (with a trailing newline), escaping as needed.
pub fn write_line(out: &mut String, point: &Point) {
    escape_into(out, &point.measurement, NameKind::Measurement);
    for (key, value) in &point.tags {
        out.push(',');
        escape_into(out, key, NameKind::TagKey);
        out.push('=');
        escape_into(out, value, NameKind::TagValue);
    }
    out.push(' ');
    for (i, (key, value)) in point.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape_into(out, key, NameKind::FieldKey);
        out.push('=');
        use std::fmt::Write;
        match value {
            // `{:?}` keeps a `.0` or exponent so the value reads back as the same float.
            FieldValue::Float(v) => write!(out, "{v:?}").unwrap(),
            FieldValue::Integer(v) => write!(out, "{v}i").unwrap(),
            FieldValue::UInteger(v) => write!(out, "{v}u").unwrap(),
            FieldValue::Boolean(v) => out.push_str(if *v { "true" } else { "false" }),
            FieldValue::String(s) => {
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
            }
        }
    }
    use std::fmt::Write;
    writeln!(out, " {}", point.time).unwrap();
}

fn escape_into(out: &mut String, text: &str, kind: NameKind) {
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let needs_escape = match c {
            ',' | ' ' => true,
            '=' => kind != NameKind::Measurement,
            // A backslash only needs escaping when what follows would otherwise be read as
            // an escape (or when it ends the name, so it cannot join the next separator).
            '\\' => bytes.get(i + 1).is_none_or(|&n| kind.escapable(n)),
            _ => false,
        };
        if needs_escape {
            out.push('\\');
        }
        out.push(c);
    }
}

#[cfg(test)]
mod tests;
