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
    Array, ArrayBuilder, ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, PrimitiveBuilder,
    RecordBatch, StringBuilder, TimestampNanosecondArray, UInt32Array, UInt64Builder,
};
use datafusion::arrow::compute::{
    SortColumn, SortOptions, lexsort_to_indices, take, take_record_batch,
};
use datafusion::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, Schema, SchemaRef, TimeUnit,
};
use datafusion::arrow::row::{RowConverter, SortField};
use doppel_core::FieldType;
use doppel_core::columnar::{ColumnValues, ColumnarBatch, FieldColumn as BatchColumn, TableRows};

use crate::error::{LakeError, Result};

mod chunked;
use chunked::{ChunkBuilder, ChunkedArray, ChunkedVec};

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
    /// Appends a batch's rows, each table's in order.
    pub fn append(&mut self, batch: &ColumnarBatch) {
        let tables = match self.databases.get_mut(&batch.database) {
            Some(t) => t,
            None => self.databases.entry(batch.database.clone()).or_default(),
        };
        for rows in batch.tables.iter().filter(|r| !r.is_empty()) {
            let table = match tables.get_mut(&rows.measurement) {
                Some(t) => t,
                None => tables.entry(rows.measurement.clone()).or_default(),
            };
            self.bytes += table.append(rows);
            self.rows += rows.len();
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
    series_of_row: ChunkedVec<u32>,
    times: ChunkedVec<i64>,
    fields: BTreeMap<String, ChunkedArray<FieldColumn>>,
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
    fn new(field_type: FieldType, nulls: usize, capacity: usize) -> Self {
        let capacity = capacity.max(nulls);
        let mut column = match field_type {
            FieldType::Float => FieldColumn::Float(Float64Builder::with_capacity(capacity)),
            FieldType::Integer => FieldColumn::Integer(Int64Builder::with_capacity(capacity)),
            FieldType::UInteger => FieldColumn::UInteger(UInt64Builder::with_capacity(capacity)),
            FieldType::String => FieldColumn::String(StringBuilder::new()),
            FieldType::Boolean => FieldColumn::Boolean(BooleanBuilder::with_capacity(capacity)),
        };
        column.append_nulls(nulls);
        column
    }

    fn field_type(&self) -> FieldType {
        match self {
            FieldColumn::Float(_) => FieldType::Float,
            FieldColumn::Integer(_) => FieldType::Integer,
            FieldColumn::UInteger(_) => FieldType::UInteger,
            FieldColumn::String(_) => FieldType::String,
            FieldColumn::Boolean(_) => FieldType::Boolean,
        }
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

    /// Appends a batch's column; the catalog has already checked that its type is this
    /// column's. Returns the bytes it added.
    fn append(&mut self, column: &BatchColumn) -> usize {
        let valid = column.valid.as_deref();
        match (self, &column.values) {
            (FieldColumn::Float(b), ColumnValues::Float(v)) => append_slice(b, v, valid),
            (FieldColumn::Integer(b), ColumnValues::Integer(v)) => append_slice(b, v, valid),
            (FieldColumn::UInteger(b), ColumnValues::UInteger(v)) => append_slice(b, v, valid),
            (FieldColumn::Boolean(b), ColumnValues::Boolean(v)) => match valid {
                None => b.append_slice(v),
                Some(valid) => v
                    .iter()
                    .zip(valid)
                    .for_each(|(&x, &ok)| b.append_option(ok.then_some(x))),
            },
            (FieldColumn::String(b), ColumnValues::String(v)) => {
                let mut bytes = 0;
                for (row, s) in v.iter().enumerate() {
                    if valid.is_none_or(|m| m[row]) {
                        b.append_value(s);
                        bytes += s.len();
                    } else {
                        b.append_null();
                    }
                }
                return bytes + 8 * v.len();
            }
            (column, values) => {
                // Unreachable when the catalog did its job; nulls keep the columns aligned.
                tracing::error!(
                    column = %values.field_type(),
                    "field values do not match their column's type; stored as nulls"
                );
                column.append_nulls(values.len());
            }
        }
        9 * column.values.len()
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

impl ChunkBuilder for FieldColumn {
    fn rows(&self) -> usize {
        self.len()
    }

    fn seal(&mut self, rows: usize) -> ArrayRef {
        let fresh = FieldColumn::new(self.field_type(), 0, rows);
        let mut full = std::mem::replace(self, fresh);
        match &mut full {
            FieldColumn::Float(b) => Arc::new(b.finish()),
            FieldColumn::Integer(b) => Arc::new(b.finish()),
            FieldColumn::UInteger(b) => Arc::new(b.finish()),
            FieldColumn::String(b) => Arc::new(b.finish()),
            FieldColumn::Boolean(b) => Arc::new(b.finish()),
        }
    }

    fn snapshot(&self) -> ArrayRef {
        self.finish_cloned()
    }
}

fn append_slice<T: ArrowPrimitiveType>(
    builder: &mut PrimitiveBuilder<T>,
    values: &[T::Native],
    valid: Option<&[bool]>,
) {
    match valid {
        None => builder.append_slice(values),
        Some(valid) => builder.append_values(values, valid),
    }
}

impl TableBuffer {
    /// The rows buffered.
    pub fn row_count(&self) -> usize {
        self.times.len()
    }

    /// Appends a batch's rows of this table; returns the bytes they added.
    fn append(&mut self, rows: &TableRows) -> usize {
        let before = self.times.len();
        let mut bytes = 12 * rows.len();
        // Each of the batch's series once: its id in this buffer.
        let ids: Vec<u32> = rows
            .series
            .iter()
            .map(|tags| match self.series.get(tags) {
                Some(&id) => id,
                None => {
                    let id = self.series_tags.len() as u32;
                    bytes += tags
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 48)
                        .sum::<usize>();
                    self.series.insert(tags.clone(), id);
                    self.series_tags.push(tags.clone());
                    id
                }
            })
            .collect();
        self.series_of_row
            .extend(rows.series_of_row.iter().map(|&s| ids[s as usize]));
        let (min, max) = rows
            .times
            .iter()
            .fold((i64::MAX, i64::MIN), |(lo, hi), &t| (lo.min(t), hi.max(t)));
        if before == 0 {
            (self.min_time, self.max_time) = (min, max);
        } else {
            self.min_time = self.min_time.min(min);
            self.max_time = self.max_time.max(max);
        }
        self.times.extend_from_slice(&rows.times);
        for column in &rows.fields {
            let buffered = match self.fields.get_mut(&column.name) {
                Some(c) => c,
                None => self.fields.entry(column.name.clone()).or_insert_with(|| {
                    ChunkedArray::new(FieldColumn::new(column.values.field_type(), before, 0))
                }),
            };
            buffered.make_room(column.values.len());
            bytes += buffered.current.append(column);
        }
        // Every column gets one entry per row: the columns this batch left out get nulls.
        if self.fields.len() != rows.fields.len() {
            let after = self.times.len();
            for column in self.fields.values_mut() {
                let missing = after - column.len();
                if missing > 0 {
                    column.make_room(missing);
                    column.current.append_nulls(missing);
                }
            }
        }
        bytes
    }

    /// The buffered rows as one batch in `schema` (columns this buffer lacks are null), sorted
    /// by series and time, with last-write-wins applied.
    pub fn to_batch(&self, schema: &TableSchema) -> Result<RecordBatch> {
        let (batch, keys) = self.to_unsorted_batch(schema)?;
        keys.sort_dedupe(&batch, schema.tag_count)
    }

    /// The buffered rows copied out in write order, not yet sorted, with their sort keys:
    /// cheap enough to take under the lake's lock, leaving the sort for after it is released.
    pub fn to_unsorted_batch(&self, schema: &TableSchema) -> Result<(RecordBatch, RowKeys)> {
        let rows = self.times.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.arrow.fields().len());
        for (i, field) in schema.arrow.fields().iter().enumerate() {
            let name = field.name();
            if name == TIME_COLUMN {
                columns.push(Arc::new(TimestampNanosecondArray::from(
                    self.times.to_vec(),
                )));
            } else if schema.is_tag(i) {
                let mut builder = StringBuilder::with_capacity(rows, rows * 8);
                for &s in self.series_of_row.iter() {
                    match self.series_tags[s as usize].iter().find(|(k, _)| k == name) {
                        Some((_, v)) => builder.append_value(v),
                        None => builder.append_null(),
                    }
                }
                columns.push(Arc::new(builder.finish()));
            } else if let Some(column) = self.fields.get(name) {
                columns.push(column.to_array()?);
            } else {
                columns.push(datafusion::arrow::array::new_null_array(
                    field.data_type(),
                    rows,
                ));
            }
        }
        let batch =
            RecordBatch::try_new(schema.arrow.clone(), columns).map_err(LakeError::arrow)?;
        Ok((batch, self.row_keys(schema)))
    }

    /// Each row's place in series-then-time order, as two integers: the rank of its series
    /// (its tag values compared column by column, a missing tag first, as the sort of the tag
    /// columns themselves would order them) and its time. Sorting 200 series once and then
    /// integers is far cheaper than comparing every row's tag strings.
    fn row_keys(&self, schema: &TableSchema) -> RowKeys {
        let tag_names: Vec<&str> = schema.arrow.fields()[..schema.tag_count]
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        let values = |s: usize| {
            let tags = &self.series_tags[s];
            tag_names.iter().map(move |name| {
                tags.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            })
        };
        let mut by_tags: Vec<usize> = (0..self.series_tags.len()).collect();
        by_tags.sort_by(|&a, &b| values(a).cmp(values(b)));
        let mut rank = vec![0u32; by_tags.len()];
        for (r, &s) in by_tags.iter().enumerate() {
            rank[s] = r as u32;
        }
        RowKeys(
            self.series_of_row
                .iter()
                .zip(self.times.iter())
                .map(|(&s, &t)| (rank[s as usize], t))
                .collect(),
        )
    }
}

/// Per row of a buffer's batch: (series rank, time); see `TableBuffer::row_keys`.
pub struct RowKeys(Vec<(u32, i64)>);

impl RowKeys {
    /// [`sort_dedupe`] for a buffer's batch, on integer keys: the same rows in the same order.
    pub fn sort_dedupe(&self, batch: &RecordBatch, tag_count: usize) -> Result<RecordBatch> {
        // The row number last in each key: rows with the same series and time stay in write
        // order, and the keys sort in place without chasing indices.
        let mut keyed: Vec<(u32, i64, u32)> = self
            .0
            .iter()
            .enumerate()
            .map(|(row, &(rank, time))| (rank, time, row as u32))
            .collect();
        keyed.sort_unstable();
        let mut group_starts = Vec::with_capacity(keyed.len() + 1);
        for (i, key) in keyed.iter().enumerate() {
            if i == 0 || key.0 != keyed[i - 1].0 || key.1 != keyed[i - 1].1 {
                group_starts.push(i);
            }
        }
        let order: Vec<u32> = keyed.into_iter().map(|(_, _, row)| row).collect();
        let time_column = batch
            .schema()
            .index_of(TIME_COLUMN)
            .map_err(LakeError::arrow)?;
        let key_columns: Vec<usize> = (0..tag_count).chain([time_column]).collect();
        take_groups(batch, &UInt32Array::from(order), group_starts, &key_columns)
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
    take_groups(batch, &order, group_starts, &key_columns)
}

/// The rows of `batch` in `order`, one per group of equal keys (`group_starts`: where each
/// group begins in `order`): key columns from the group's first row, each field from the
/// last row (in `order`) where it is not null.
fn take_groups(
    batch: &RecordBatch,
    order: &UInt32Array,
    mut group_starts: Vec<usize>,
    key_columns: &[usize],
) -> Result<RecordBatch> {
    let rows = order.len();
    if group_starts.len() == rows {
        return take_record_batch(batch, order).map_err(LakeError::arrow);
    }
    let order_values = order.values();
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
    RecordBatch::try_new(batch.schema(), columns).map_err(LakeError::arrow)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use doppel_core::{FieldValue, Point, WriteBatch};

    fn point(tags: &[(&str, &str)], fields: &[(&str, FieldValue)], time: i64) -> Point {
        Point::new("m", tags, fields, time)
    }

    /// Appends points of table `m` to the buffer as one batch of database `db`.
    fn append(buffer: &mut Buffer, points: Vec<Point>) {
        let batch = WriteBatch {
            database: "db".into(),
            points,
        };
        buffer.append(&ColumnarBatch::from_points(&batch).0);
    }

    /// The schema of table `m`: these tags, one float field and one integer field.
    fn schema(tags: &[&str], float: &str, integer: &str) -> TableSchema {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        let fields = [
            (float.to_string(), FieldType::Float),
            (integer.to_string(), FieldType::Integer),
        ];
        TableSchema::new(tags.iter(), fields.iter().map(|(n, t)| (n, t)))
    }

    #[test]
    fn last_write_wins_per_field_and_rows_sort_by_series_and_time() {
        let mut buffer = Buffer::default();
        append(
            &mut buffer,
            vec![
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
        // A second batch: its rows come after the first's (and win over them).
        append(
            &mut buffer,
            vec![point(&[("a", "2")], &[("y", FieldValue::Integer(8))], 20)],
        );
        let table = &buffer.databases["db"]["m"];
        let schema = schema(&["a"], "x", "y");
        let batch = table.to_batch(&schema).unwrap();
        let text = pretty_format_batches(&[batch]).unwrap().to_string();
        let expected = "\
+---+-----+---+-------------------------------+
| a | x   | y | time                          |
+---+-----+---+-------------------------------+
| 1 | 4.0 |   | 1970-01-01T00:00:00.000000005 |
| 1 | 3.0 | 7 | 1970-01-01T00:00:00.000000010 |
| 2 | 1.0 | 8 | 1970-01-01T00:00:00.000000020 |
+---+-----+---+-------------------------------+";
        assert_eq!(text, expected);
    }

    /// The buffer's integer-key sort must give exactly what the general sort of the tag
    /// columns gives: same order, same winners, missing tags first.
    #[test]
    fn keyed_sort_equals_the_general_sort() {
        let mut x: u64 = 7;
        let mut next = |n: u64| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % n
        };
        for _ in 0..50 {
            let mut buffer = Buffer::default();
            for _ in 0..1 + next(3) {
                let points: Vec<Point> = (0..1 + next(200))
                    .map(|_| {
                        let mut tags = Vec::new();
                        for key in ["a", "b"] {
                            if next(4) > 0 {
                                tags.push((key, ["x", "y", "xy", ""][next(3) as usize]));
                            }
                        }
                        let mut fields = Vec::new();
                        if next(3) > 0 {
                            fields.push(("f", FieldValue::Float(next(100) as f64)));
                        }
                        if fields.is_empty() || next(2) == 0 {
                            fields.push(("g", FieldValue::Integer(next(100) as i64)));
                        }
                        point(&tags, &fields, next(20) as i64 - 10)
                    })
                    .collect();
                append(&mut buffer, points);
            }
            let table = &buffer.databases["db"]["m"];
            let schema = schema(&["a", "b"], "f", "g");
            let (unsorted, _) = table.to_unsorted_batch(&schema).unwrap();
            let general = sort_dedupe(&unsorted, schema.tag_count).unwrap();
            assert_eq!(table.to_batch(&schema).unwrap(), general);
        }
    }

    #[test]
    fn rows_read_back_in_write_order_across_chunks_and_late_columns() {
        use datafusion::arrow::array::{Float64Array, Int64Array, StringArray};
        let mut buffer = Buffer::default();
        let mut expected: Vec<(i64, &str, Option<f64>, Option<i64>)> = Vec::new();
        // Batches of uneven sizes around the (test) chunk size; `g` starts in the third batch
        // and `f` is missing from every fifth row.
        for (b, size) in [5usize, 64, 100, 1, 63, 130].into_iter().enumerate() {
            let mut points = Vec::new();
            for i in 0..size {
                let t = expected.len() as i64;
                let tag = if i % 2 == 0 { "x" } else { "y" };
                let f = (i % 5 != 0).then_some(t as f64 / 2.0);
                let g = (b >= 2).then_some(-t);
                let mut fields = Vec::new();
                if let Some(f) = f {
                    fields.push(("f", FieldValue::Float(f)));
                }
                if let Some(g) = g {
                    fields.push(("g", FieldValue::Integer(g)));
                }
                if fields.is_empty() {
                    continue;
                }
                points.push(point(&[("a", tag)], &fields, t));
                expected.push((t, tag, f, g));
            }
            append(&mut buffer, points);
        }
        let table = &buffer.databases["db"]["m"];
        let schema = schema(&["a"], "f", "g");
        let (batch, _) = table.to_unsorted_batch(&schema).unwrap();
        assert_eq!(batch.num_rows(), expected.len());
        let column = |name: &str| batch.column(batch.schema().index_of(name).unwrap()).clone();
        let times = column("time");
        let times = times
            .as_any()
            .downcast_ref::<TimestampNanosecondArray>()
            .unwrap();
        let a = column("a");
        let a = a.as_any().downcast_ref::<StringArray>().unwrap();
        let f = column("f");
        let f = f.as_any().downcast_ref::<Float64Array>().unwrap();
        let g = column("g");
        let g = g.as_any().downcast_ref::<Int64Array>().unwrap();
        for (row, &(t, tag, fv, gv)) in expected.iter().enumerate() {
            assert_eq!(times.value(row), t, "row {row}");
            assert_eq!(a.value(row), tag, "row {row}");
            assert_eq!(f.is_valid(row).then(|| f.value(row)), fv, "row {row}");
            assert_eq!(g.is_valid(row).then(|| g.value(row)), gv, "row {row}");
        }
        assert_eq!(
            (table.min_time, table.max_time),
            (0, expected.len() as i64 - 1)
        );
    }
}
