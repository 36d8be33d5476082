//! A write batch in columns: what the line-protocol parser builds and the lake logs and buffers.
//!
//! A [`Point`] owns a `String` for every name and tag value, which costs ten allocations a
//! line and a hash of every name where a batch is checked and buffered. A [`ColumnarBatch`]
//! holds each table's names once, each distinct tag set once, and one plain vector per field,
//! so checking a batch against the catalog is per column and buffering it is a slice copy.
//! [`BatchBuilder`] is the one place that decides how rows become columns (and which rows of a
//! batch contradict each other), for the parser and for [`ColumnarBatch::from_points`] alike.
//!
//! This module stays free of Arrow: plain vectors, so every crate can use it cheaply.

use std::collections::{BTreeSet, HashMap};

use crate::point::{FieldType, FieldValue, Point, WriteBatch};

/// The name every table reserves for its timestamps.
pub const TIME_NAME: &str = "time";

/// A batch for one database, table by table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnarBatch {
    pub database: String,
    pub tables: Vec<TableRows>,
}

/// One table's rows of a batch, in write order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableRows {
    pub measurement: String,
    /// The distinct tag sets of these rows, each sorted by key.
    pub series: Vec<Vec<(String, String)>>,
    /// For each row, its index in `series`.
    pub series_of_row: Vec<u32>,
    /// For each row, its time in nanoseconds.
    pub times: Vec<i64>,
    /// The field columns, in the order they first appeared; each has one entry a row.
    pub fields: Vec<FieldColumn>,
    /// For each row, where it came from (a byte offset in a request body, a point's index):
    /// what a refusal names. Not logged; empty after a batch is read back from the WAL.
    pub sources: Vec<u32>,
}

/// One field's values over a table's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldColumn {
    pub name: String,
    pub values: ColumnValues,
    /// Which rows have a value; `None` when all do (the common case costs nothing).
    pub valid: Option<Vec<bool>>,
}

/// A column's values; a row without a value holds the type's default and is marked invalid.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnValues {
    Float(Vec<f64>),
    Integer(Vec<i64>),
    UInteger(Vec<u64>),
    String(Vec<String>),
    Boolean(Vec<bool>),
}

/// A field value borrowed from wherever it was read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FieldRef<'a> {
    Float(f64),
    Integer(i64),
    UInteger(u64),
    String(&'a str),
    Boolean(bool),
}

impl FieldRef<'_> {
    pub fn field_type(&self) -> FieldType {
        match self {
            FieldRef::Float(_) => FieldType::Float,
            FieldRef::Integer(_) => FieldType::Integer,
            FieldRef::UInteger(_) => FieldType::UInteger,
            FieldRef::String(_) => FieldType::String,
            FieldRef::Boolean(_) => FieldType::Boolean,
        }
    }
}

impl FieldValue {
    pub fn as_ref(&self) -> FieldRef<'_> {
        match self {
            FieldValue::Float(v) => FieldRef::Float(*v),
            FieldValue::Integer(v) => FieldRef::Integer(*v),
            FieldValue::UInteger(v) => FieldRef::UInteger(*v),
            FieldValue::String(v) => FieldRef::String(v),
            FieldValue::Boolean(v) => FieldRef::Boolean(*v),
        }
    }
}

impl ColumnValues {
    pub fn new(field_type: FieldType) -> Self {
        Self::with_capacity(field_type, 0)
    }

    pub fn with_capacity(field_type: FieldType, rows: usize) -> Self {
        match field_type {
            FieldType::Float => ColumnValues::Float(Vec::with_capacity(rows)),
            FieldType::Integer => ColumnValues::Integer(Vec::with_capacity(rows)),
            FieldType::UInteger => ColumnValues::UInteger(Vec::with_capacity(rows)),
            FieldType::String => ColumnValues::String(Vec::with_capacity(rows)),
            FieldType::Boolean => ColumnValues::Boolean(Vec::with_capacity(rows)),
        }
    }

    pub fn field_type(&self) -> FieldType {
        match self {
            ColumnValues::Float(_) => FieldType::Float,
            ColumnValues::Integer(_) => FieldType::Integer,
            ColumnValues::UInteger(_) => FieldType::UInteger,
            ColumnValues::String(_) => FieldType::String,
            ColumnValues::Boolean(_) => FieldType::Boolean,
        }
    }

    pub fn len(&self) -> usize {
        match self {
            ColumnValues::Float(v) => v.len(),
            ColumnValues::Integer(v) => v.len(),
            ColumnValues::UInteger(v) => v.len(),
            ColumnValues::String(v) => v.len(),
            ColumnValues::Boolean(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends `n` placeholders (rows without a value).
    fn push_defaults(&mut self, n: usize) {
        match self {
            ColumnValues::Float(v) => v.resize(v.len() + n, 0.0),
            ColumnValues::Integer(v) => v.resize(v.len() + n, 0),
            ColumnValues::UInteger(v) => v.resize(v.len() + n, 0),
            ColumnValues::String(v) => v.resize(v.len() + n, String::new()),
            ColumnValues::Boolean(v) => v.resize(v.len() + n, false),
        }
    }

    /// Appends a value whose type the caller has checked.
    fn push(&mut self, value: FieldRef<'_>) {
        match (self, value) {
            (ColumnValues::Float(v), FieldRef::Float(x)) => v.push(x),
            (ColumnValues::Integer(v), FieldRef::Integer(x)) => v.push(x),
            (ColumnValues::UInteger(v), FieldRef::UInteger(x)) => v.push(x),
            (ColumnValues::String(v), FieldRef::String(x)) => v.push(x.to_owned()),
            (ColumnValues::Boolean(v), FieldRef::Boolean(x)) => v.push(x),
            (column, value) => unreachable!(
                "a {} value pushed into a {} column",
                value.field_type(),
                column.field_type()
            ),
        }
    }

    /// The value of `row` (valid or not).
    pub fn get(&self, row: usize) -> FieldRef<'_> {
        match self {
            ColumnValues::Float(v) => FieldRef::Float(v[row]),
            ColumnValues::Integer(v) => FieldRef::Integer(v[row]),
            ColumnValues::UInteger(v) => FieldRef::UInteger(v[row]),
            ColumnValues::String(v) => FieldRef::String(&v[row]),
            ColumnValues::Boolean(v) => FieldRef::Boolean(v[row]),
        }
    }

    fn retain(&mut self, keep: &[bool]) {
        match self {
            ColumnValues::Float(v) => retain_by(v, keep),
            ColumnValues::Integer(v) => retain_by(v, keep),
            ColumnValues::UInteger(v) => retain_by(v, keep),
            ColumnValues::String(v) => retain_by(v, keep),
            ColumnValues::Boolean(v) => retain_by(v, keep),
        }
    }
}

/// Keeps the items whose `keep` entry is true.
fn retain_by<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut k = keep.iter();
    items.retain(|_| *k.next().unwrap_or(&false));
}

impl FieldColumn {
    pub fn is_valid(&self, row: usize) -> bool {
        self.valid.as_ref().is_none_or(|v| v[row])
    }

    /// Rows without a value.
    pub fn null_count(&self) -> usize {
        self.valid
            .as_ref()
            .map_or(0, |v| v.iter().filter(|&&ok| !ok).count())
    }
}

impl TableRows {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Keeps the rows whose `keep` entry is true (the series list is left as it is).
    pub fn retain_rows(&mut self, keep: &[bool]) {
        retain_by(&mut self.series_of_row, keep);
        retain_by(&mut self.times, keep);
        if !self.sources.is_empty() {
            retain_by(&mut self.sources, keep);
        }
        for column in &mut self.fields {
            column.values.retain(keep);
            if let Some(valid) = &mut column.valid {
                retain_by(valid, keep);
            }
        }
        // A column left with no value at all would create an empty column in the catalog.
        self.fields.retain(|c| c.null_count() < c.values.len());
    }
}

impl ColumnarBatch {
    pub fn rows(&self) -> usize {
        self.tables.iter().map(TableRows::len).sum()
    }

    /// The number of field values (what throughput is counted in).
    pub fn field_values(&self) -> usize {
        self.tables
            .iter()
            .flat_map(|t| &t.fields)
            .map(|c| c.values.len() - c.null_count())
            .sum()
    }

    /// The batch's points in columns; a point that contradicts an earlier one of the batch (a
    /// field of another type, a name that is a tag there and a field here) is left out and
    /// reported as `(point index, why)`. Each row's source is its point's index.
    pub fn from_points(batch: &WriteBatch) -> (ColumnarBatch, Vec<(usize, String)>) {
        let mut builder = BatchBuilder::new(&batch.database);
        let mut refused = Vec::new();
        for (index, point) in batch.points.iter().enumerate() {
            if let Err(message) = builder.push_point(point, index as u32) {
                refused.push((index, message));
            }
        }
        (builder.finish(), refused)
    }

    /// The rows as points again, table by table (each table's rows in order): for tests,
    /// comparisons and the few callers that want rows.
    pub fn to_points(&self) -> Vec<Point> {
        let mut points = Vec::with_capacity(self.rows());
        for table in &self.tables {
            for row in 0..table.len() {
                let fields = table
                    .fields
                    .iter()
                    .filter(|c| c.is_valid(row))
                    .map(|c| (c.name.clone(), c.values.get(row).to_owned_value()))
                    .collect();
                points.push(Point {
                    measurement: table.measurement.clone(),
                    tags: table.series[table.series_of_row[row] as usize].clone(),
                    fields,
                    time: table.times[row],
                });
            }
        }
        points
    }
}

impl FieldRef<'_> {
    pub fn to_owned_value(&self) -> FieldValue {
        match *self {
            FieldRef::Float(v) => FieldValue::Float(v),
            FieldRef::Integer(v) => FieldValue::Integer(v),
            FieldRef::UInteger(v) => FieldValue::UInteger(v),
            FieldRef::String(v) => FieldValue::String(v.to_owned()),
            FieldRef::Boolean(v) => FieldValue::Boolean(v),
        }
    }
}

/// Builds a [`ColumnarBatch`] a row at a time.
///
/// A row is checked whole before any of it is added, so a refused row leaves no trace.
/// Within one batch the first type a field is written with is its type; a later row with
/// another type is refused, as is a name used both as a tag and as a field.
pub struct BatchBuilder {
    batch: ColumnarBatch,
    tables: Vec<TableState>,
    table_of_measurement: HashMap<String, usize>,
    /// A line's text up to its fields (measurement and tags as sent) → its table and series:
    /// the parser's way to skip unescaping, sorting and hashing the tags of a known series.
    raw_series: HashMap<Box<[u8]>, (u32, u32), foldhash::fast::RandomState>,
    /// Scratch: the column of each field of the row being pushed.
    resolved: Vec<usize>,
    /// Rows a table is expected to get: what its vectors reserve when they are made, so a
    /// batch's columns do not grow by doubling (copying) as it is parsed.
    rows_hint: usize,
}

#[derive(Default)]
struct TableState {
    series: HashMap<Vec<(String, String)>, u32>,
    tag_keys: BTreeSet<String>,
    column_of_field: HashMap<String, usize>,
    /// The columns the previous row's fields went to, in order: rows of one source usually
    /// repeat their field order, so a name compare replaces a hash lookup.
    last_columns: Vec<usize>,
    /// Whether every name of `last_columns` reads the same escaped and unescaped (see
    /// [`BatchBuilder::row_template`]).
    last_columns_plain: bool,
}

impl BatchBuilder {
    pub fn new(database: &str) -> Self {
        BatchBuilder {
            batch: ColumnarBatch {
                database: database.to_owned(),
                tables: Vec::new(),
            },
            tables: Vec::new(),
            table_of_measurement: HashMap::new(),
            raw_series: HashMap::default(),
            resolved: Vec::new(),
            rows_hint: 0,
        }
    }

    /// A builder whose tables reserve room for about `rows` rows each as they are made.
    pub fn with_rows_hint(database: &str, rows: usize) -> Self {
        BatchBuilder {
            rows_hint: rows,
            ..BatchBuilder::new(database)
        }
    }

    /// The fields of the previous row of `table`, in order, as name and type: a parser that
    /// finds the next row repeating them can add it with [`BatchBuilder::push_templated_row`]
    /// and skip looking each name up. `None` when there is no previous row or when a name
    /// holds a character line protocol escapes (`,`, `=`, space, backslash), so that the
    /// names can be compared with a line's text as sent.
    pub fn row_template(
        &self,
        table: u32,
    ) -> Option<impl ExactSizeIterator<Item = (&str, FieldType)> + '_> {
        let state = &self.tables[table as usize];
        let fields = &self.batch.tables[table as usize].fields;
        (state.last_columns_plain && !state.last_columns.is_empty()).then(|| {
            state
                .last_columns
                .iter()
                .map(|&c| (fields[c].name.as_str(), fields[c].values.field_type()))
        })
    }

    /// Adds a row whose fields are exactly those of [`BatchBuilder::row_template`] for its
    /// table, in that order: `values` are their values. Refused (leaving no trace) when the
    /// values do not match the template's count and types.
    pub fn push_templated_row<'f>(
        &mut self,
        (table, series): (u32, u32),
        time: i64,
        values: impl ExactSizeIterator<Item = FieldRef<'f>> + Clone,
        source: u32,
    ) -> Result<(), String> {
        let state = &self.tables[table as usize];
        let rows = &mut self.batch.tables[table as usize];
        let count = values.len();
        let matches = state.last_columns.len() == count
            && state
                .last_columns
                .iter()
                .zip(values.clone())
                .all(|(&c, v)| rows.fields[c].values.field_type() == v.field_type());
        if !matches {
            return Err("the row's fields are not those of the previous row".into());
        }
        let row = rows.times.len();
        for (&c, value) in state.last_columns.iter().zip(values) {
            let column = &mut rows.fields[c];
            column.values.push(value);
            if let Some(valid) = &mut column.valid {
                valid.push(true);
            }
        }
        if count != rows.fields.len() {
            fill_missing(&mut rows.fields, row);
        }
        rows.series_of_row.push(series);
        rows.times.push(time);
        rows.sources.push(source);
        Ok(())
    }

    /// The table and series already seen with this raw series text, if any.
    pub fn series_by_raw(&self, raw: &[u8]) -> Option<(u32, u32)> {
        self.raw_series.get(raw).copied()
    }

    /// Remembers the table and series of a raw series text (see [`BatchBuilder::series_by_raw`]).
    pub fn remember_raw(&mut self, raw: &[u8], ids: (u32, u32)) {
        self.raw_series.insert(raw.into(), ids);
    }

    /// The table and series of a measurement and tag set (sorted by key, keys unique),
    /// created when new. Refused when a tag key is `time` or a field of that table.
    pub fn series<K: AsRef<str>, V: AsRef<str>>(
        &mut self,
        measurement: &str,
        tags: &[(K, V)],
    ) -> Result<(u32, u32), String> {
        let table = match self.table_of_measurement.get(measurement) {
            Some(&t) => t,
            None => {
                let t = self.batch.tables.len();
                let rows = self.rows_hint;
                self.batch.tables.push(TableRows {
                    measurement: measurement.to_owned(),
                    series_of_row: Vec::with_capacity(rows),
                    times: Vec::with_capacity(rows),
                    sources: Vec::with_capacity(rows),
                    ..TableRows::default()
                });
                self.tables.push(TableState::default());
                self.table_of_measurement.insert(measurement.to_owned(), t);
                t
            }
        };
        let owned: Vec<(String, String)> = tags
            .iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let state = &mut self.tables[table];
        if let Some(&s) = state.series.get(&owned) {
            return Ok((table as u32, s));
        }
        for (key, _) in &owned {
            if key == TIME_NAME {
                return Err("`time` cannot be a tag key: it is the timestamp column".into());
            }
            if state.column_of_field.contains_key(key) {
                return Err(format!(
                    "`{key}` is a field of `{measurement}` earlier in this batch, not a tag"
                ));
            }
        }
        let rows = &mut self.batch.tables[table];
        let id = rows.series.len() as u32;
        state.tag_keys.extend(owned.iter().map(|(k, _)| k.clone()));
        rows.series.push(owned.clone());
        state.series.insert(owned, id);
        Ok((table as u32, id))
    }

    /// Adds one row to a table: its series (from [`BatchBuilder::series`]), time, fields and
    /// source. `fields` is read twice (check, then add), so it must give the same items again.
    pub fn push_row<'f>(
        &mut self,
        (table, series): (u32, u32),
        time: i64,
        fields: impl Iterator<Item = (&'f str, FieldRef<'f>)> + Clone,
        source: u32,
    ) -> Result<(), String> {
        let (table, series) = (table as usize, series);
        let state = &mut self.tables[table];
        let rows = &mut self.batch.tables[table];
        let row = rows.times.len();
        self.resolved.clear();
        // Check: every field's column exists with its type, or can be made.
        for (i, (name, value)) in fields.clone().enumerate() {
            let cached = state
                .last_columns
                .get(i)
                .copied()
                .filter(|&c| rows.fields[c].name == name);
            let column = cached.or_else(|| state.column_of_field.get(name).copied());
            match column {
                Some(c) => {
                    let had = rows.fields[c].values.field_type();
                    if had != value.field_type() {
                        return Err(format!(
                            "field type conflict: `{}.{name}` is {had} earlier in this batch but this line writes {}",
                            rows.measurement,
                            value.field_type()
                        ));
                    }
                    if self.resolved.contains(&c) {
                        return Err(format!("field `{name}` appears twice"));
                    }
                    self.resolved.push(c);
                }
                None => {
                    if name == TIME_NAME {
                        return Err(
                            "`time` cannot be a field key: it is the timestamp column".into()
                        );
                    }
                    if state.tag_keys.contains(name) {
                        return Err(format!(
                            "`{name}` is a tag of `{}` earlier in this batch, not a field",
                            rows.measurement
                        ));
                    }
                    if fields.clone().take(i).any(|(earlier, _)| earlier == name) {
                        return Err(format!("field `{name}` appears twice"));
                    }
                    self.resolved.push(usize::MAX);
                }
            }
        }
        // Add: new columns start with `row` rows without a value.
        for ((name, value), slot) in fields.zip(self.resolved.iter_mut()) {
            if *slot == usize::MAX {
                let mut values =
                    ColumnValues::with_capacity(value.field_type(), self.rows_hint.max(row + 1));
                values.push_defaults(row);
                *slot = rows.fields.len();
                rows.fields.push(FieldColumn {
                    name: name.to_owned(),
                    values,
                    valid: (row > 0).then(|| vec![false; row]),
                });
                state.column_of_field.insert(name.to_owned(), *slot);
            }
            let column = &mut rows.fields[*slot];
            column.values.push(value);
            if let Some(valid) = &mut column.valid {
                valid.push(true);
            }
        }
        if self.resolved.len() != rows.fields.len() {
            fill_missing(&mut rows.fields, row);
        }
        rows.series_of_row.push(series);
        rows.times.push(time);
        rows.sources.push(source);
        if state.last_columns != self.resolved {
            state.last_columns.clone_from(&self.resolved);
            state.last_columns_plain = self
                .resolved
                .iter()
                .all(|&c| reads_the_same_escaped(&rows.fields[c].name));
        }
        Ok(())
    }

    /// Adds a point (see [`BatchBuilder::push_row`]).
    pub fn push_point(&mut self, point: &Point, source: u32) -> Result<(), String> {
        // A known series is found by the point's own tags, without copying them.
        let known = self
            .table_of_measurement
            .get(&point.measurement)
            .and_then(|&t| Some((t as u32, *self.tables[t].series.get(point.tags.as_slice())?)));
        let ids = match known {
            Some(ids) => ids,
            None => self.series(&point.measurement, &point.tags)?,
        };
        self.push_row(
            ids,
            point.time,
            point.fields.iter().map(|(k, v)| (k.as_str(), v.as_ref())),
            source,
        )
    }

    pub fn finish(self) -> ColumnarBatch {
        self.batch
    }
}

/// Gives a placeholder, marked invalid, to each column that row `row` left out.
fn fill_missing(fields: &mut [FieldColumn], row: usize) {
    for column in fields {
        if column.values.len() == row {
            column.values.push_defaults(1);
            column
                .valid
                .get_or_insert_with(|| vec![true; row])
                .push(false);
        }
    }
}

/// Whether a field name is written in line protocol exactly as it reads: no character that
/// could be (or start) an escape.
fn reads_the_same_escaped(name: &str) -> bool {
    !name
        .bytes()
        .any(|c| matches!(c, b',' | b'=' | b' ' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(m: &str, tags: &[(&str, &str)], fields: &[(&str, FieldValue)], time: i64) -> Point {
        Point::new(m, tags, fields, time)
    }

    #[test]
    fn points_round_trip_through_columns_with_gaps() {
        let points = vec![
            point("m", &[("a", "1")], &[("x", FieldValue::Float(1.0))], 1),
            point(
                "m",
                &[("a", "2")],
                &[
                    ("y", FieldValue::String("s".into())),
                    ("x", FieldValue::Float(2.0)),
                ],
                2,
            ),
            point("n", &[], &[("b", FieldValue::Boolean(true))], 3),
            point("m", &[("a", "1")], &[("z", FieldValue::UInteger(7))], 4),
        ];
        let batch = WriteBatch {
            database: "db".into(),
            points: points.clone(),
        };
        let (columns, refused) = ColumnarBatch::from_points(&batch);
        assert!(refused.is_empty());
        assert_eq!(columns.tables.len(), 2);
        let m = &columns.tables[0];
        assert_eq!(m.series.len(), 2);
        assert_eq!(m.series_of_row, vec![0, 1, 0]);
        assert_eq!(m.sources, vec![0, 1, 3]);
        let names: Vec<_> = m.fields.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["x", "y", "z"]);
        assert_eq!(m.fields[0].valid, Some(vec![true, true, false]));
        assert_eq!(m.fields[2].valid, Some(vec![false, false, true]));
        // Back to points: table by table, each field in column order.
        let back = columns.to_points();
        assert_eq!(back[0], points[0]);
        assert_eq!(back[1].fields.len(), 2);
        assert_eq!(back[2], points[3]);
        assert_eq!(back[3], points[2]);
        assert_eq!(columns.field_values(), 5);
    }

    #[test]
    fn contradicting_rows_are_refused_whole() {
        let batch = WriteBatch {
            database: "db".into(),
            points: vec![
                point("m", &[("a", "1")], &[("x", FieldValue::Float(1.0))], 1),
                // x is a float in this batch: the whole row goes, y is not created.
                point(
                    "m",
                    &[("a", "1")],
                    &[("y", FieldValue::Float(1.0)), ("x", FieldValue::Integer(2))],
                    2,
                ),
                point("m", &[("x", "1")], &[("z", FieldValue::Float(1.0))], 3),
                point("m", &[("a", "1")], &[("a", FieldValue::Float(1.0))], 4),
                point("m", &[], &[("time", FieldValue::Float(1.0))], 5),
                point("m", &[("time", "t")], &[("v", FieldValue::Float(1.0))], 6),
            ],
        };
        let (columns, refused) = ColumnarBatch::from_points(&batch);
        let indices: Vec<usize> = refused.iter().map(|r| r.0).collect();
        assert_eq!(indices, [1, 2, 3, 4, 5]);
        assert!(refused[0].1.contains("`m.x` is float"), "{}", refused[0].1);
        assert!(refused[1].1.contains("`x` is a field"), "{}", refused[1].1);
        assert!(refused[2].1.contains("`a` is a tag"), "{}", refused[2].1);
        assert_eq!(columns.tables[0].len(), 1);
        assert_eq!(
            columns.tables[0].fields.len(),
            1,
            "no column from a refused row"
        );
    }

    #[test]
    fn retaining_rows_keeps_columns_aligned() {
        let batch = WriteBatch {
            database: "db".into(),
            points: vec![
                point("m", &[], &[("x", FieldValue::Float(1.0))], 1),
                point("m", &[], &[("y", FieldValue::Integer(2))], 2),
                point("m", &[], &[("x", FieldValue::Float(3.0))], 3),
            ],
        };
        let (mut columns, _) = ColumnarBatch::from_points(&batch);
        columns.tables[0].retain_rows(&[true, false, true]);
        let t = &columns.tables[0];
        assert_eq!(t.times, vec![1, 3]);
        assert_eq!(t.fields.len(), 1, "y has no value left and goes");
        assert_eq!(t.fields[0].values, ColumnValues::Float(vec![1.0, 3.0]));
        assert_eq!(t.sources, vec![0, 2]);
    }
}
