//! The importer's rows as Arrow columns, for readers that want a table rather than points
//! (the sensor model): one builder a column, by column index, so no name is copied per row.
//! A column takes its type from its first value, as a lake table does; a column with no
//! value at all is an all-null Float64 column.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, RecordBatch, StringBuilder,
    TimestampNanosecondArray, UInt64Builder, new_null_array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use doppel_core::FieldValue;

/// The name the time column has in the batch, whatever the file called it.
pub const TIME: &str = "time";

/// One column being built: nothing yet (the missing values so far), or its builder.
enum Column {
    Pending(usize),
    Float(Float64Builder),
    Integer(Int64Builder),
    UInteger(UInt64Builder),
    Text(StringBuilder),
    Boolean(BooleanBuilder),
}

impl Column {
    /// A builder for `value`'s type, holding `nulls` missing values first.
    fn started(value: &FieldValue, nulls: usize) -> Column {
        let mut column = match value {
            FieldValue::Float(_) => Column::Float(Float64Builder::new()),
            FieldValue::Integer(_) => Column::Integer(Int64Builder::new()),
            FieldValue::UInteger(_) => Column::UInteger(UInt64Builder::new()),
            FieldValue::String(_) => Column::Text(StringBuilder::new()),
            FieldValue::Boolean(_) => Column::Boolean(BooleanBuilder::new()),
        };
        for _ in 0..nulls {
            column.push(None);
        }
        column
    }

    /// Appends a value (of the column's type: the importer checked it) or a missing one.
    fn push(&mut self, value: Option<&FieldValue>) {
        match (self, value) {
            (Column::Pending(n), None) => *n += 1,
            (column @ Column::Pending(_), Some(v)) => {
                let Column::Pending(n) = *column else {
                    unreachable!()
                };
                *column = Column::started(v, n);
                column.push(Some(v));
            }
            (Column::Float(b), v) => b.append_option(v.and_then(|v| match v {
                FieldValue::Float(x) => Some(*x),
                _ => None,
            })),
            (Column::Integer(b), v) => b.append_option(v.and_then(|v| match v {
                FieldValue::Integer(x) => Some(*x),
                _ => None,
            })),
            (Column::UInteger(b), v) => b.append_option(v.and_then(|v| match v {
                FieldValue::UInteger(x) => Some(*x),
                _ => None,
            })),
            (Column::Text(b), v) => b.append_option(v.and_then(|v| match v {
                FieldValue::String(x) => Some(x.as_str()),
                _ => None,
            })),
            (Column::Boolean(b), v) => b.append_option(v.and_then(|v| match v {
                FieldValue::Boolean(x) => Some(*x),
                _ => None,
            })),
        }
    }

    fn finish(self) -> ArrayRef {
        match self {
            Column::Pending(n) => new_null_array(&DataType::Float64, n),
            Column::Float(mut b) => Arc::new(b.finish()),
            Column::Integer(mut b) => Arc::new(b.finish()),
            Column::UInteger(mut b) => Arc::new(b.finish()),
            Column::Text(mut b) => Arc::new(b.finish()),
            Column::Boolean(mut b) => Arc::new(b.finish()),
        }
    }
}

/// Rows gathered as columns: a time a row, and a value (or none) a row for each column.
pub(super) struct Columns {
    names: Vec<String>,
    times: Vec<i64>,
    columns: Vec<Column>,
}

impl Columns {
    /// Columns named `names` (the file's, less its time column).
    pub(super) fn new(names: Vec<String>) -> Self {
        let columns = names.iter().map(|_| Column::Pending(0)).collect();
        Columns {
            names,
            times: Vec::new(),
            columns,
        }
    }

    /// Appends one row: its time and, for each column, its value or none.
    pub(super) fn push_row<'a>(
        &mut self,
        time: i64,
        values: impl Iterator<Item = Option<&'a FieldValue>>,
    ) {
        self.times.push(time);
        for (column, value) in self.columns.iter_mut().zip(values) {
            column.push(value);
        }
    }

    /// The table: `time` (timestamps, ns) first, then the columns in the file's order.
    pub(super) fn finish(self) -> RecordBatch {
        let mut fields = vec![Field::new(
            TIME,
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        )];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(TimestampNanosecondArray::from(self.times))];
        for (name, column) in self.names.into_iter().zip(self.columns) {
            let array = column.finish();
            fields.push(Field::new(name, array.data_type().clone(), true));
            arrays.push(array);
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
            .expect("every column has a value or a null a row")
    }
}
