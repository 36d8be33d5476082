//! The in-memory write buffer: acknowledged points, by database and table, ready for queries.
//!
//! Points are appended in write order into Arrow builders (one per column). Turning a table's
//! buffer into a record batch sorts it by series and time and applies last-write-wins: for the
//! same series and timestamp, each field takes its last written non-null value. The same
//! [`sort_dedupe`] is used when persisted files are merged, so the rule lives in one place.
//! This module never touches the disk.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampNanosecondArray, UInt32Array, UInt64Builder,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, lexsort_to_indices, take, take_record_batch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::row::{RowConverter, SortField};
use doppel_core::{FieldType, FieldValue, Point};

use crate::error::{LakeError, Result};

/// The name of the time column in every table.
pub const TIME_COLUMN: &str = "time";

/// The Arrow type of a field type.
pub fn arrow_type(field_type: FieldType) -> DataType {
    match field_type {
        FieldType::Float => DataType::Float64,
        FieldType::Integer => DataType::Int64,
        FieldType::UInteger => DataType::UInt64,
        FieldType::String => DataType::Utf8,
        FieldType::Boolean => DataType::Boolean,
    }
}

/// The time column's Arrow type: nanoseconds, no time zone (UTC by convention), as InfluxDB 3.
pub fn time_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, None)
}

/// A table's schema: its tag columns (sorted) come first, then fields (sorted), then `time`.
#[derive(Debug, Clone)]
pub struct TableSchema {
    pub arrow: SchemaRef,
    pub tag_count: usize,
}

impl TableSchema {
    pub fn new<'a>(
        tags: impl Iterator<Item = &'a String>,
        fields: impl Iterator<Item = (&'a String, &'a FieldType)>,
    ) -> Self {
        let mut columns: Vec<Field> = tags.map(|t| Field::new(t, DataType::Utf8, true)).collect();
        let tag_count = columns.len();
        columns.extend(fields.map(|(name, t)| Field::new(name, arrow_type(*t), true)));
        columns.push(Field::new(TIME_COLUMN, time_type(), false));
        TableSchema {
            arrow: Arc::new(Schema::new(columns)),
            tag_count,
        }
    }

    fn is_tag(&self, column: usize) -> bool {
        column < self.tag_count
    }
}

/// Everything buffered, by database then table.
#[derive(Default)]
pub struct Buffer {
    pub databases: BTreeMap<String, BTreeMap<String, TableBuffer>>,
    /// Approximate memory held, in bytes.
    pub bytes: usize,
    pub rows: usize,
}

impl Buffer {
    pub fn append(&mut self, database: &str, points: &[Point]) {
        let tables = self.databases.entry(database.to_owned()).or_default();
        for point in points {
            let table = match tables.get_mut(&point.measurement) {
                Some(t) => t,
                None => tables.entry(point.measurement.clone()).or_default(),
            };
            self.bytes += table.append(point);
            self.rows += 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }
}

/// One table's buffered rows, in write order.
#[derive(Default)]
pub struct TableBuffer {
    series: HashMap<Vec<(String, String)>, u32>,
    series_tags: Vec<Vec<(String, String)>>,
    series_of_row: Vec<u32>,
    times: Vec<i64>,
    fields: BTreeMap<String, FieldColumn>,
    pub min_time: i64,
    pub max_time: i64,
}

enum FieldColumn {
    Float(Float64Builder),
    Integer(Int64Builder),
    UInteger(UInt64Builder),
    String(StringBuilder),
    Boolean(BooleanBuilder),
}

impl FieldColumn {
    fn new(field_type: FieldType, nulls: usize) -> Self {
        let mut column = match field_type {
            FieldType::Float => FieldColumn::Float(Float64Builder::new()),
            FieldType::Integer => FieldColumn::Integer(Int64Builder::new()),
            FieldType::UInteger => FieldColumn::UInteger(UInt64Builder::new()),
            FieldType::String => FieldColumn::String(StringBuilder::new()),
            FieldType::Boolean => FieldColumn::Boolean(BooleanBuilder::new()),
        };
        column.append_nulls(nulls);
        column
    }

    fn len(&self) -> usize {
        match self {
            FieldColumn::Float(b) => b.len(),
            FieldColumn::Integer(b) => b.len(),
            FieldColumn::UInteger(b) => b.len(),
            FieldColumn::String(b) => b.len(),
            FieldColumn::Boolean(b) => b.len(),
        }
    }

    fn append_nulls(&mut self, n: usize) {
        match self {
            FieldColumn::Float(b) => b.append_nulls(n),
            FieldColumn::Integer(b) => b.append_nulls(n),
            FieldColumn::UInteger(b) => b.append_nulls(n),
            FieldColumn::String(b) => (0..n).for_each(|_| b.append_null()),
            FieldColumn::Boolean(b) => b.append_nulls(n),
        }
    }

    /// Appends a value; the catalog has already checked that its type is this column's.
    fn append(&mut self, value: &FieldValue) -> usize {
        match (self, value) {
            (FieldColumn::Float(b), FieldValue::Float(v)) => b.append_value(*v),
            (FieldColumn::Integer(b), FieldValue::Integer(v)) => b.append_value(*v),
            (FieldColumn::UInteger(b), FieldValue::UInteger(v)) => b.append_value(*v),
            (FieldColumn::String(b), FieldValue::String(v)) => {
                b.append_value(v);
                return 8 + v.len();
            }
            (FieldColumn::Boolean(b), FieldValue::Boolean(v)) => b.append_value(*v),
            (column, value) => {
                // Unreachable when the catalog did its job; a null keeps the columns aligned.
                tracing::error!(
                    ?value,
                    "field value does not match its column type; stored as null"
                );
                column.append_nulls(1);
            }
        }
        9
    }

    fn finish_cloned(&self) -> ArrayRef {
        match self {
            FieldColumn::Float(b) => Arc::new(b.finish_cloned()),
            FieldColumn::Integer(b) => Arc::new(b.finish_cloned()),
            FieldColumn::UInteger(b) => Arc::new(b.finish_cloned()),
            FieldColumn::String(b) => Arc::new(b.finish_cloned()),
            FieldColumn::Boolean(b) => Arc::new(b.finish_cloned()),
        }
    }
}

impl TableBuffer {
    /// Appends one point; returns the bytes it added.
    fn append(&mut self, point: &Point) -> usize {
        let row = self.times.len();
        let mut bytes = 12;
        let series = match self.series.get(&point.tags) {
            Some(&id) => id,
            None => {
                let id = self.series_tags.len() as u32;
                bytes += point
                    .tags
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 48)
                    .sum::<usize>();
                self.series.insert(point.tags.clone(), id);
                self.series_tags.push(point.tags.clone());
                id
            }
        };
        if row == 0 {
            self.min_time = point.time;
            self.max_time = point.time;
        } else {
            self.min_time = self.min_time.min(point.time);
            self.max_time = self.max_time.max(point.time);
        }
        self.series_of_row.push(series);
        self.times.push(point.time);
        for (name, value) in &point.fields {
            let column = match self.fields.get_mut(name) {
                Some(column) => column,
                None => self
                    .fields
                    .entry(name.clone())
                    .or_insert_with(|| FieldColumn::new(value.field_type(), row)),
            };
            bytes += column.append(value);
        }
        // Every column gets one entry per row: the columns this point left out get a null.
        if self.fields.len() != point.fields.len() {
            for column in self.fields.values_mut() {
                if column.len() == row {
                    column.append_nulls(1);
                }
            }
        }
        bytes
    }

    /// The buffered rows as one batch in `schema` (columns this buffer lacks are null), sorted
    /// by series and time, with last-write-wins applied.
    pub fn to_batch(&self, schema: &TableSchema) -> Result<RecordBatch> {
        sort_dedupe(&self.to_unsorted_batch(schema)?, schema.tag_count)
    }

    /// The buffered rows copied out in write order, not yet sorted: cheap enough to take
    /// under the lake's lock, leaving the sort for after it is released.
    pub fn to_unsorted_batch(&self, schema: &TableSchema) -> Result<RecordBatch> {
        let rows = self.times.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.arrow.fields().len());
        for (i, field) in schema.arrow.fields().iter().enumerate() {
            let name = field.name();
            if name == TIME_COLUMN {
                columns.push(Arc::new(TimestampNanosecondArray::from(self.times.clone())));
            } else if schema.is_tag(i) {
                let mut builder = StringBuilder::with_capacity(rows, rows * 8);
                for &s in &self.series_of_row {
                    match self.series_tags[s as usize].iter().find(|(k, _)| k == name) {
                        Some((_, v)) => builder.append_value(v),
                        None => builder.append_null(),
                    }
                }
                columns.push(Arc::new(builder.finish()));
            } else if let Some(column) = self.fields.get(name) {
                columns.push(column.finish_cloned());
            } else {
                columns.push(datafusion::arrow::array::new_null_array(
                    field.data_type(),
                    rows,
                ));
            }
        }
        RecordBatch::try_new(schema.arrow.clone(), columns).map_err(LakeError::arrow)
    }
}

/// Sorts a batch by its tag columns (the first `tag_count`) and time and keeps one row per
/// series and time: for each field, the value of the last row (in the input's order) where it
/// is not null.
pub fn sort_dedupe(batch: &RecordBatch, tag_count: usize) -> Result<RecordBatch> {
    let rows = batch.num_rows();
    if rows == 0 {
        return Ok(batch.clone());
    }
    let schema = batch.schema();
    let time_column = schema.index_of(TIME_COLUMN).map_err(LakeError::arrow)?;
    let key_columns: Vec<usize> = (0..tag_count).chain([time_column]).collect();
    // Sort by the series key and time, then by input position so later writes come later.
    let position = Arc::new(UInt32Array::from_iter_values(0..rows as u32)) as ArrayRef;
    let mut sort_columns: Vec<SortColumn> = key_columns
        .iter()
        .map(|&i| SortColumn {
            values: batch.column(i).clone(),
            options: Some(SortOptions {
                descending: false,
                nulls_first: true,
            }),
        })
        .collect();
    sort_columns.push(SortColumn {
        values: position,
        options: None,
    });
    let order = lexsort_to_indices(&sort_columns, None).map_err(LakeError::arrow)?;

    // Group equal keys; most batches have no duplicates, and then the sort is all there is.
    let keys: Vec<ArrayRef> = key_columns
        .iter()
        .map(|&i| take(batch.column(i).as_ref(), &order, None))
        .collect::<std::result::Result<_, _>>()
        .map_err(LakeError::arrow)?;
    let converter = RowConverter::new(
        keys.iter()
            .map(|k| SortField::new(k.data_type().clone()))
            .collect(),
    )
    .map_err(LakeError::arrow)?;
    let key_rows = converter.convert_columns(&keys).map_err(LakeError::arrow)?;
    let mut group_starts = Vec::with_capacity(rows);
    for i in 0..rows {
        if i == 0 || key_rows.row(i) != key_rows.row(i - 1) {
            group_starts.push(i);
        }
    }
    let order_values = order.values();
    if group_starts.len() == rows {
        return take_record_batch(batch, &order).map_err(LakeError::arrow);
    }
    group_starts.push(rows);
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (c, column) in batch.columns().iter().enumerate() {
        let is_key_column = key_columns.contains(&c);
        let indices: UInt32Array = group_starts
            .windows(2)
            .map(|w| {
                let group = &order_values[w[0]..w[1]];
                if is_key_column {
                    Some(group[0])
                } else {
                    // The last write with a value wins; all null stays null.
                    group
                        .iter()
                        .rev()
                        .copied()
                        .find(|&r| column.is_valid(r as usize))
                }
            })
            .collect();
        columns.push(take(column.as_ref(), &indices, None).map_err(LakeError::arrow)?);
    }
    RecordBatch::try_new(schema, columns).map_err(LakeError::arrow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn point(tags: &[(&str, &str)], fields: &[(&str, FieldValue)], time: i64) -> Point {
        Point {
            measurement: "m".into(),
            tags: tags
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
            time,
        }
    }

    #[test]
    fn last_write_wins_per_field_and_rows_sort_by_series_and_time() {
        let mut buffer = Buffer::default();
        buffer.append(
            "db",
            &[
                point(&[("a", "2")], &[("x", FieldValue::Float(1.0))], 20),
                point(
                    &[("a", "1")],
                    &[("x", FieldValue::Float(2.0)), ("y", FieldValue::Integer(7))],
                    10,
                ),
                point(&[("a", "1")], &[("x", FieldValue::Float(3.0))], 10),
                point(&[("a", "1")], &[("x", FieldValue::Float(4.0))], 5),
            ],
        );
        let table = &buffer.databases["db"]["m"];
        let tags = ["a".to_string()];
        let fields = [
            ("x".to_string(), FieldType::Float),
            ("y".to_string(), FieldType::Integer),
        ];
        let schema = TableSchema::new(tags.iter(), fields.iter().map(|(n, t)| (n, t)));
        let batch = table.to_batch(&schema).unwrap();
        let text = pretty_format_batches(&[batch]).unwrap().to_string();
        let expected = "\
+---+-----+---+-------------------------------+
| a | x   | y | time                          |
+---+-----+---+-------------------------------+
| 1 | 4.0 |   | 1970-01-01T00:00:00.000000005 |
| 1 | 3.0 | 7 | 1970-01-01T00:00:00.000000010 |
| 2 | 1.0 |   | 1970-01-01T00:00:00.000000020 |
+---+-----+---+-------------------------------+";
        assert_eq!(text, expected);
    }
}
