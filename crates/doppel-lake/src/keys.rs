//! Whether a Parquet file holds any row with the same series and timestamp as rows in memory.
//!
//! The lake's files never share a key (series, time) with each other, so a query over files is
//! a plain union. Keeping that true only needs a merge where keys really collide: two files
//! whose time ranges overlap but whose keys differ (several clients sending interleaved
//! times, a gateway uploading a backlog of other series, late data) can both stay as they
//! are. Before this check, any overlap in time meant reading and rewriting the whole older
//! file, which made a day of sustained ingest cost time quadratic in its size.
//!
//! The check reads only a file's key columns (tags and time), skips row groups whose time
//! statistics miss the probe's range, and compares tag values only for rows whose timestamp
//! the probe holds at all. This module reads; it never changes a file.

use std::cell::OnceCell;
use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::{ArrayRef, AsArray, BooleanArray, RecordBatch, new_null_array};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::filter;
use datafusion::arrow::datatypes::{DataType, TimestampNanosecondType};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::HashSet;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::file::statistics::Statistics;

use crate::buffer::{TIME_COLUMN, TableSchema};
use crate::error::{LakeError, Result};

/// The probe's keys (each row's encoded tag values followed by its time, big-endian) and
/// the encoder that turns other rows' tags into the same bytes.
type KeySet = (RowConverter, HashSet<Box<[u8]>>);

/// The keys of a batch of rows (in a table's schema), ready to be looked for in files.
pub struct KeyProbe {
    /// The batch's time range, for skipping row groups.
    range: (i64, i64),
    times: HashSet<i64>,
    tag_names: Vec<String>,
    tags: Vec<ArrayRef>,
    time: ScalarBuffer<i64>,
    /// Built on first need: most files share no timestamp with the probe at all.
    keys: OnceCell<KeySet>,
}

impl KeyProbe {
    /// The keys of `batch`, whose first `schema.tag_count` columns are its tags and whose
    /// times span `range` (`persist::time_range`).
    pub fn new(batch: &RecordBatch, schema: &TableSchema, range: (i64, i64)) -> Result<Self> {
        let time = batch
            .column_by_name(TIME_COLUMN)
            .ok_or_else(|| LakeError::Invalid("a batch without a time column".into()))?
            .as_primitive::<TimestampNanosecondType>()
            .values()
            .clone();
        Ok(KeyProbe {
            range,
            times: time.iter().copied().collect(),
            tag_names: schema.arrow.fields()[..schema.tag_count]
                .iter()
                .map(|f| f.name().clone())
                .collect(),
            tags: batch.columns()[..schema.tag_count].to_vec(),
            time,
            keys: OnceCell::new(),
        })
    }

    /// The probe's keys, and the encoder for other rows' tags.
    fn keys(&self) -> Result<&KeySet> {
        if let Some(keys) = self.keys.get() {
            return Ok(keys);
        }
        let converter = tag_converter(self.tags.len())?;
        let rows = encode(&converter, &self.tags, self.time.len())?;
        let mut key = Vec::new();
        let keys = self
            .time
            .iter()
            .enumerate()
            .map(|(i, &t)| Box::from(key_of(&mut key, &rows, i, t)))
            .collect();
        Ok(self.keys.get_or_init(|| (converter, keys)))
    }

    /// True when the file at `path` holds a row with one of the probe's keys.
    pub fn found_in(&self, path: &Path) -> Result<bool> {
        if self.time.is_empty() {
            return Ok(false);
        }
        let file = File::open(path).map_err(|e| LakeError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(LakeError::arrow)?;
        let file_schema = builder.schema().clone();
        let Ok(time_index) = file_schema.index_of(TIME_COLUMN) else {
            return Err(LakeError::Invalid(format!(
                "{} has no time column",
                path.display()
            )));
        };
        // The probe's tags that the file has, by position in the file; the others are null
        // in every row of the file (it predates them).
        let tag_indices: Vec<Option<usize>> = self
            .tag_names
            .iter()
            .map(|name| file_schema.index_of(name).ok())
            .collect();
        let mut projected: Vec<usize> = tag_indices.iter().flatten().copied().collect();
        projected.push(time_index);
        projected.sort_unstable();
        let row_groups: Vec<usize> = builder
            .metadata()
            .row_groups()
            .iter()
            .enumerate()
            .filter(|(_, group)| match group.column(time_index).statistics() {
                Some(Statistics::Int64(s)) => match (s.min_opt(), s.max_opt()) {
                    (Some(&lo), Some(&hi)) => lo <= self.range.1 && hi >= self.range.0,
                    _ => true,
                },
                _ => true,
            })
            .map(|(i, _)| i)
            .collect();
        if row_groups.is_empty() {
            return Ok(false);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), projected.iter().copied());
        let reader = builder
            .with_projection(mask)
            .with_row_groups(row_groups)
            .with_batch_size(64 * 1024)
            .build()
            .map_err(LakeError::arrow)?;
        // Positions in the projected batches: the projection keeps the file's column order.
        let position = |file_index: usize| projected.binary_search(&file_index).expect("projected");
        for batch in reader {
            let batch = batch.map_err(LakeError::arrow)?;
            let times = batch
                .column(position(time_index))
                .as_primitive::<TimestampNanosecondType>();
            let candidates: BooleanArray = times
                .values()
                .iter()
                .map(|t| Some(self.times.contains(t)))
                .collect();
            let count = candidates.true_count();
            if count == 0 {
                continue;
            }
            let (converter, keys) = self.keys()?;
            let tags: Vec<ArrayRef> = tag_indices
                .iter()
                .map(|index| match index {
                    Some(i) => filter(batch.column(position(*i)).as_ref(), &candidates)
                        .map_err(LakeError::arrow),
                    None => Ok(new_null_array(&DataType::Utf8, count)),
                })
                .collect::<Result<_>>()?;
            let candidate_times = filter(times, &candidates).map_err(LakeError::arrow)?;
            let candidate_times = candidate_times.as_primitive::<TimestampNanosecondType>();
            let rows = encode(converter, &tags, count)?;
            let mut key = Vec::new();
            for (i, &t) in candidate_times.values().iter().enumerate() {
                if keys.contains(key_of(&mut key, &rows, i, t)) {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }
}

fn tag_converter(tag_count: usize) -> Result<RowConverter> {
    RowConverter::new(vec![SortField::new(DataType::Utf8); tag_count]).map_err(LakeError::arrow)
}

/// The tag values of each row, encoded so that equal tuples (nulls included) are equal bytes.
/// A table without tags has no rows to encode: every row's tag bytes are empty.
fn encode(converter: &RowConverter, tags: &[ArrayRef], rows: usize) -> Result<Option<Rows>> {
    if tags.is_empty() || rows == 0 {
        return Ok(None);
    }
    converter
        .convert_columns(tags)
        .map(Some)
        .map_err(LakeError::arrow)
}

/// Row `i`'s key, written into `key`: its encoded tags, then its time.
fn key_of<'k>(key: &'k mut Vec<u8>, tags: &Option<Rows>, i: usize, time: i64) -> &'k [u8] {
    key.clear();
    if let Some(rows) = tags {
        key.extend_from_slice(rows.row(i).as_ref());
    }
    key.extend_from_slice(&time.to_be_bytes());
    key
}
