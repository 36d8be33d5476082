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

use doppel_core::columnar::{BatchBuilder, ColumnarBatch, FieldRef};
use doppel_core::{FieldType, FieldValue, Point, Precision};

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
    let mut line = Line::default();
    outcome.errors = for_each_line(body, |parser, start, line_number| {
        if !parser.start_line() {
            return Ok(());
        }
        parser.measurement_and_tags(&mut line)?;
        parser.fields_and_time(&mut line, precision, default_time)?;
        outcome.points.push(Point {
            measurement: line.measurement.to_string(),
            tags: line
                .tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: line
                .fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_ref().to_owned_value()))
                .collect(),
            time: line.time,
        });
        let text_len = body[start..parser.pos].trim_end_matches(['\n', '\r']).len();
        outcome.sources.push((line_number, start..start + text_len));
        Ok(())
    });
    outcome
}

/// What parsing a body into columns gave: the batch and the bad lines. Each row's source is
/// the byte offset of its line in the body ([`describe_line`] turns it back into words).
#[derive(Debug, Default)]
pub struct ColumnarOutcome {
    pub batch: ColumnarBatch,
    pub errors: Vec<LineError>,
}

/// Parses a whole body of line protocol straight into columns for `database`: the write
/// path's parser. Names are borrowed from the body, a series seen before is recognised from
/// its raw text without unescaping or sorting its tags, and values go into plain vectors.
/// A line that contradicts an earlier line of the body (another type for a field, a tag
/// used as a field) is a bad line like one that does not parse.
pub fn parse_columnar(
    body: &str,
    database: &str,
    precision: Precision,
    default_time: i64,
) -> ColumnarOutcome {
    // About one row per 128 bytes: plant-like lines of 8 fields are 140 or so.
    let mut builder = BatchBuilder::with_rows_hint(database, body.len() / 128);
    let mut line = Line::default();
    let bytes = body.as_bytes();
    if u32::try_from(body.len()).is_err() {
        // Rows name their line by a 32-bit offset.
        let message = "the body is larger than 4 GiB: send it in smaller batches".to_string();
        return ColumnarOutcome {
            batch: builder.finish(),
            errors: vec![LineError {
                line_number: 1,
                original_line: String::new(),
                column: 1,
                message,
            }],
        };
    }
    // The values of a line read against its table's row template.
    let mut templated: Vec<Value> = Vec::new();
    let errors = for_each_line(body, |parser, start, _| {
        if !parser.start_line() {
            return Ok(());
        }
        let raw_start = parser.pos;
        let known = parser
            .series_text_end()
            .and_then(|end| Some((end, builder.series_by_raw(&bytes[raw_start..end])?)));
        let ids = match known {
            Some((end, ids)) => {
                parser.pos = end;
                line.tags.clear();
                Some(ids)
            }
            None => {
                parser.measurement_and_tags(&mut line)?;
                None
            }
        };
        let fields_start = parser.pos;
        // The builder's refusals are about the fields: point there.
        let at_fields = |message| (fields_start - start + 2, message);
        // Fast path: a known series whose fields repeat the previous row of its table, name
        // for name. Anything else (and any doubt) goes to the full parse from the same place.
        if let Some(ids) = ids
            && builder
                .row_template(ids.0)
                .is_some_and(|template| parser.templated_fields(template, &mut templated))
        {
            let time = parser.time_and_line_end(precision, default_time)?;
            let values = templated.iter().map(Value::as_ref);
            return builder
                .push_templated_row(ids, time, values, start as u32)
                .map_err(at_fields);
        }
        parser.pos = fields_start;
        parser.newlines_in_strings = 0;
        parser.fields_and_time(&mut line, precision, default_time)?;
        let ids = match ids {
            Some(ids) => ids,
            None => {
                let ids = builder
                    .series(&line.measurement, &line.tags)
                    .map_err(at_fields)?;
                builder.remember_raw(&bytes[raw_start..fields_start], ids);
                ids
            }
        };
        let fields = line.fields.iter().map(|(k, v)| (k.as_ref(), v.as_ref()));
        builder
            .push_row(ids, line.time, fields, start as u32)
            .map_err(at_fields)
    });
    ColumnarOutcome {
        batch: builder.finish(),
        errors,
    }
}

/// The line number (1-based) and text of the line that starts at byte `offset` of `body`: how
/// a row refused after parsing (by the lake's catalog, say) is named to whoever sent it.
pub fn describe_line(body: &str, offset: usize) -> (usize, String) {
    let number = 1 + body.as_bytes()[..offset]
        .iter()
        .filter(|&&c| c == b'\n')
        .count();
    let mut parser = LineParser::at(body, offset);
    let mut line = Line::default();
    let parsed = parser.start_line()
        && parser.measurement_and_tags(&mut line).is_ok()
        && parser
            .fields_and_time(&mut line, Precision::Nanoseconds, 0)
            .is_ok();
    let end = if parsed {
        parser.pos
    } else {
        parser.skip_to_line_end()
    };
    let text = body[offset..end].trim_end_matches(['\n', '\r']);
    (number, text.chars().take(1000).collect())
}

/// Runs `parse` on each line of `body` (a line with a quoted string may span several) with a
/// parser at the line's start, the start's byte offset and the line number; returns the
/// lines it failed on. On success `parse` leaves the parser just past its line.
fn for_each_line<'a>(
    body: &'a str,
    mut parse: impl FnMut(&mut LineParser<'a>, usize, usize) -> LineResult<()>,
) -> Vec<LineError> {
    let mut errors = Vec::new();
    let (mut pos, mut line_number) = (0, 0);
    while pos < body.len() {
        line_number += 1;
        let start = pos;
        let mut parser = LineParser::at(body, pos);
        let result = parse(&mut parser, start, line_number);
        // Continue after the end of this line: outside quoted strings for a good line, at the
        // next newline for a bad one.
        match result {
            Ok(()) => {
                pos = parser.pos;
                line_number += parser.newlines_in_strings;
            }
            Err((column, message)) => {
                // A line refused after it was read whole (it contradicts an earlier line) ends
                // where it was read to; one that does not parse ends at its first newline,
                // whatever quotes it has.
                let end = if parser.line_read {
                    parser.pos
                } else {
                    parser.skip_to_line_end()
                };
                let text = body[start..end].trim_end_matches(['\n', '\r']);
                errors.push(LineError {
                    line_number,
                    original_line: text.chars().take(1000).collect(),
                    column,
                    message,
                });
                if parser.line_read {
                    line_number += parser.newlines_in_strings;
                }
                pos = end;
            }
        }
    }
    errors
}

/// One parsed line, borrowed from the body wherever no escape had to be undone. Kept between
/// lines so its vectors are allocated once per body, not once per line.
#[derive(Default)]
struct Line<'a> {
    measurement: Cow<'a, str>,
    /// Sorted by key.
    tags: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    fields: Vec<(Cow<'a, str>, Value<'a>)>,
    time: i64,
}

/// A field value as read; strings are borrowed unless they held escapes.
#[derive(Debug)]
enum Value<'a> {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(Cow<'a, str>),
    Boolean(bool),
}

impl Value<'_> {
    fn as_ref(&self) -> FieldRef<'_> {
        match self {
            Value::Float(v) => FieldRef::Float(*v),
            Value::Integer(v) => FieldRef::Integer(*v),
            Value::UInteger(v) => FieldRef::UInteger(*v),
            Value::String(v) => FieldRef::String(v),
            Value::Boolean(v) => FieldRef::Boolean(*v),
        }
    }
}

struct LineParser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    line_start: usize,
    /// Newlines inside quoted strings of the line so far: the lines after it are numbered
    /// past them.
    newlines_in_strings: usize,
    /// Whether the line was read to its end (`pos` is past it).
    line_read: bool,
}

type LineResult<T> = Result<T, (usize, String)>;

impl<'a> LineParser<'a> {
    fn at(text: &'a str, pos: usize) -> Self {
        LineParser {
            text,
            bytes: text.as_bytes(),
            pos,
            line_start: pos,
            newlines_in_strings: 0,
            line_read: false,
        }
    }

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

    /// Skips leading whitespace; `false` (with `pos` past the line) for a blank line or a
    /// comment, `true` when a measurement should follow.
    fn start_line(&mut self) -> bool {
        // Leading whitespace is allowed before the measurement and comments.
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.pos += 1;
        }
        match self.peek() {
            None => false,
            Some(b'\n') => {
                self.pos += 1;
                false
            }
            Some(b'#') => {
                self.pos = self.skip_to_line_end();
                false
            }
            _ => true,
        }
    }

    /// Where the measurement and tags end (the first space no backslash escapes), without
    /// reading them; `None` when the line ends first (it is bad, the full parse will say why).
    fn series_text_end(&self) -> Option<usize> {
        let mut i = self.pos;
        while let Some(&c) = self.bytes.get(i) {
            match c {
                b' ' => return Some(i),
                b'\n' => return None,
                b'\\' if matches!(self.bytes.get(i + 1), Some(b',' | b' ' | b'=' | b'\\')) => {
                    i += 2
                }
                _ => i += 1,
            }
        }
        None
    }

    /// Reads the measurement and the tags; `pos` ends on the space before the fields.
    fn measurement_and_tags(&mut self, line: &mut Line<'a>) -> LineResult<()> {
        line.tags.clear();
        line.measurement = self.name(NameKind::Measurement)?;
        if line.measurement.is_empty() {
            return self.fail("missing measurement name");
        }
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
            line.tags.push((key, value));
        }
        if self.peek() != Some(b' ') {
            return self.fail("expected a space and then fields after the measurement and tags");
        }
        Ok(())
    }

    /// Reads the fields and the optional timestamp, from the space after the tags; on success
    /// `pos` is just past the line's newline (or at the end of the body).
    fn fields_and_time(
        &mut self,
        line: &mut Line<'a>,
        precision: Precision,
        default_time: i64,
    ) -> LineResult<()> {
        self.skip_spaces();
        line.fields.clear();
        // One bit per (length, last byte) of the keys so far: a full comparison only when a
        // key could repeat an earlier one, instead of one per pair of fields.
        let mut seen_keys = 0u64;
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
            if line.tags.iter().any(|(t, _)| *t == key) {
                return self.fail(format!("`{key}` is both a tag and a field"));
            }
            let bit = 1u64 << ((key.len() + *key.as_bytes().last().unwrap_or(&0) as usize) % 64);
            if seen_keys & bit != 0 && line.fields.iter().any(|(f, _)| *f == key) {
                return self.fail(format!("field `{key}` appears twice"));
            }
            seen_keys |= bit;
            line.fields.push((key, value));
            if self.peek() == Some(b',') {
                self.pos += 1;
            } else {
                break;
            }
        }
        line.time = self.time_and_line_end(precision, default_time)?;

        if line.tags.len() > 1 {
            line.tags.sort_by(|a, b| a.0.cmp(&b.0));
            if let Some(pair) = line.tags.windows(2).find(|w| w[0].0 == w[1].0) {
                return self.fail(format!("tag `{}` appears twice", pair[0].0));
            }
        }
        Ok(())
    }

    /// Reads the fields from the space after the tags when they are exactly `template`'s
    /// names, in order, each with a value of the template's type; their values go to `values`.
    /// `false` (with `pos` anywhere) as soon as the line differs: the caller parses it again
    /// the general way, which also finds what may be wrong with it.
    fn templated_fields<'t>(
        &mut self,
        template: impl ExactSizeIterator<Item = (&'t str, FieldType)>,
        values: &mut Vec<Value<'a>>,
    ) -> bool {
        self.skip_spaces();
        values.clear();
        let count = template.len();
        for (i, (name, field_type)) in template.enumerate() {
            let key = name.as_bytes();
            let after_key = self.pos + key.len();
            let rest = &self.bytes[self.pos..];
            // Byte by byte: field names are short, and a slice compare is a `memcmp` call.
            if rest.get(key.len()) != Some(&b'=') || !key.iter().zip(rest).all(|(a, b)| a == b) {
                return false;
            }
            self.pos = after_key + 1;
            match self.field_value(name) {
                Ok(v) if v.as_ref().field_type() == field_type => values.push(v),
                _ => return false,
            }
            let last = i + 1 == count;
            match self.peek() {
                Some(b',') if !last => self.pos += 1,
                None | Some(b' ' | b'\n' | b'\r') if last => {}
                _ => return false,
            }
        }
        true
    }

    /// Reads the optional timestamp after the fields and the end of the line; `pos` ends just
    /// past the line's newline (or at the end of the body). Returns the time in nanoseconds.
    fn time_and_line_end(&mut self, precision: Precision, default_time: i64) -> LineResult<i64> {
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
        self.line_read = true;
        Ok(time)
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

    fn field_value(&mut self, key: &str) -> LineResult<Value<'a>> {
        if self.peek() == Some(b'"') {
            return self.string_value(key);
        }
        let start = self.pos;
        if let Some((value, len)) = plain_decimal(&self.bytes[start..]) {
            self.pos += len;
            return Ok(Value::Float(value));
        }
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
        if matches!(raw.as_bytes()[0], b't' | b'T' | b'f' | b'F') {
            match raw {
                "t" | "T" | "true" | "True" | "TRUE" => return Ok(Value::Boolean(true)),
                "f" | "F" | "false" | "False" | "FALSE" => return Ok(Value::Boolean(false)),
                _ => {}
            }
        }
        if let Some(digits) = raw.strip_suffix('i') {
            return match digits.parse::<i64>() {
                Ok(v) if is_plain_integer(digits, true) => Ok(Value::Integer(v)),
                _ => invalid("a 64-bit signed integer (like `-42i`)"),
            };
        }
        if let Some(digits) = raw.strip_suffix('u') {
            return match digits.parse::<u64>() {
                Ok(v) if is_plain_integer(digits, false) => Ok(Value::UInteger(v)),
                _ => invalid("a 64-bit unsigned integer (like `42u`)"),
            };
        }
        // Rust also accepts `inf`, `NaN` and `infinity`; line protocol does not.
        let looks_numeric = raw
            .bytes()
            .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
        match raw.parse::<f64>() {
            Ok(v) if looks_numeric && v.is_finite() => Ok(Value::Float(v)),
            _ => invalid(
                "a number, an integer (`1i`), an unsigned integer (`1u`), a boolean or a \"string\"",
            ),
        }
    }

    fn string_value(&mut self, key: &str) -> LineResult<Value<'a>> {
        let open = self.pos;
        self.pos += 1;
        // Borrowed until the first escape; owned from then on.
        let mut out: Option<String> = None;
        let mut chunk_start = self.pos;
        loop {
            match self.peek() {
                None => {
                    self.pos = open;
                    return self.fail(format!("field `{key}` string value has no closing quote"));
                }
                Some(b'"') => {
                    let tail = &self.text[chunk_start..self.pos];
                    self.pos += 1;
                    return Ok(Value::String(match out {
                        None => Cow::Borrowed(tail),
                        Some(mut s) => {
                            s.push_str(tail);
                            Cow::Owned(s)
                        }
                    }));
                }
                Some(b'\\') if matches!(self.bytes.get(self.pos + 1), Some(b'"' | b'\\')) => {
                    let s = out.get_or_insert_with(String::new);
                    s.push_str(&self.text[chunk_start..self.pos]);
                    s.push(self.bytes[self.pos + 1] as char);
                    self.pos += 2;
                    chunk_start = self.pos;
                }
                Some(b'\n') => {
                    self.newlines_in_strings += 1;
                    self.pos += 1;
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    fn timestamp(&mut self) -> LineResult<i64> {
        let start = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let digits_start = self.pos;
        // Up to 19 digits fit a u64 without overflow, so no check is needed per digit.
        let mut magnitude = 0u64;
        while let Some(&c) = self.bytes.get(self.pos)
            && c.is_ascii_digit()
        {
            magnitude = magnitude.wrapping_mul(10).wrapping_add((c - b'0') as u64);
            self.pos += 1;
        }
        let digits = &self.text[digits_start..self.pos];
        // The token runs to the next separator; anything but digits makes it no integer.
        while !matches!(self.peek(), None | Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.pos += 1;
        }
        let magnitude = match digits.len() {
            _ if self.pos != digits_start + digits.len() => None,
            0 => None,
            1..=19 => Some(magnitude),
            // Leading zeros can make a long but valid number.
            _ => digits.parse::<u64>().ok(),
        };
        let value = magnitude.and_then(|m| {
            if negative {
                0i64.checked_sub_unsigned(m)
            } else {
                i64::try_from(m).ok()
            }
        });
        value.ok_or_else(|| {
            (
                start - self.line_start + 1,
                format!(
                    "timestamp `{}` is not an integer (Unix time in the request's precision)",
                    &self.text[start..self.pos]
                ),
            )
        })
    }
}

/// The common case of a float field, `[-]digits[.digits]` with at most 15 digits, parsed in
/// the same pass that finds its end; `None` sends anything else to the general path.
/// Hand-written because this is the hottest loop of ingest (`str::parse` took a sixth of
/// it), and because such a number converts exactly with one division: the digits and the
/// power of ten are both exact in an f64 and IEEE division rounds once (Clinger's fast
/// path), so the result is the very value `str::parse` gives (tested against it).
fn plain_decimal(bytes: &[u8]) -> Option<(f64, usize)> {
    const POWERS_OF_TEN: [f64; 16] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
    ];
    let negative = bytes.first() == Some(&b'-');
    let mut i = negative as usize;
    let (mut mantissa, mut digits, mut decimals, mut dot) = (0u64, 0usize, 0usize, false);
    while let Some(&c) = bytes.get(i) {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa.wrapping_mul(10).wrapping_add((c - b'0') as u64);
                digits += 1;
                decimals += dot as usize;
            }
            b'.' if !dot => dot = true,
            b',' | b' ' | b'\n' | b'\r' => break,
            _ => return None,
        }
        i += 1;
    }
    if digits == 0 || digits > 15 {
        return None;
    }
    let magnitude = mantissa as f64 / POWERS_OF_TEN[decimals];
    Some((if negative { -magnitude } else { magnitude }, i))
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
