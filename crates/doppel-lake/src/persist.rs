//! Turning buffered rows into Parquet files, merging, compacting and expiring files.
//!
//! Invariant kept here: within a table, no two files hold the same series and timestamp. New
//! rows that share a key with an existing file of the same day are merged with it (last
//! write wins) and the file is replaced, so queries over files never need to deduplicate.
//! Files whose time ranges overlap the new rows but whose keys differ stay as they are
//! (`keys`): a merge costs the whole older file, and late or interleaved data is normal.
//! Files are written to a temporary name, fsynced and renamed; the caller records them in the
//! manifest before anything that depended on the old state (the WAL, replaced files) goes.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, UInt32Array, new_null_array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, Encoding};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;

use crate::buffer::{Buffer, TIME_COLUMN, TableSchema, sort_dedupe};
use crate::catalog::{Catalog, FileMeta};
use crate::error::{LakeError, Result};
use crate::faults::{Faults, IoPoint};
use crate::keys::KeyProbe;
use crate::wal::sync_dir;

pub const NANOS_PER_DAY: i64 = 86_400 * 1_000_000_000;

/// How files are laid out and kept.
#[derive(Debug, Clone)]
pub struct PersistConfig {
    /// A day partition with more files than this has its small files merged.
    pub max_files_per_partition: usize,
    /// Files below this size count as small for compaction.
    pub small_file_bytes: u64,
    /// Failures to inject (the durability harness only).
    pub faults: Faults,
}

impl Default for PersistConfig {
    fn default() -> Self {
        PersistConfig {
            max_files_per_partition: 8,
            small_file_bytes: 64 << 20,
            faults: Faults::default(),
        }
    }
}

/// File changes to record in the catalog: per (database, table), files added and removed.
#[derive(Debug, Default)]
pub struct FileChanges {
    pub added: Vec<(String, String, FileMeta)>,
    pub removed: Vec<(String, String, String)>,
}

impl FileChanges {
    pub fn apply(&self, catalog: &mut Catalog) {
        for (db, table, path) in &self.removed {
            if let Some(t) = catalog
                .databases
                .get_mut(db)
                .and_then(|d| d.tables.get_mut(table))
            {
                t.files.retain(|f| &f.path != path);
            }
        }
        for (db, table, meta) in &self.added {
            let t = catalog
                .databases
                .entry(db.clone())
                .or_default()
                .tables
                .entry(table.clone())
                .or_default();
            t.files.push(meta.clone());
            t.files.sort_by_key(|f| (f.day, f.min_time));
        }
    }
}

/// Writes the buffer's rows into Parquet under `dir`, merging with the overlapping files that
/// `catalog` lists. `catalog.next_file_id` is advanced for the files written.
pub fn persist(
    dir: &Path,
    buffer: &Buffer,
    catalog: &mut Catalog,
    config: &PersistConfig,
) -> Result<FileChanges> {
    let mut changes = FileChanges::default();
    for (db, tables) in &buffer.databases {
        for (table, rows) in tables {
            let Some(table_catalog) = catalog.table(db, table) else {
                return Err(LakeError::Invalid(format!(
                    "buffered table {db}.{table} is not in the catalog"
                )));
            };
            let schema = table_catalog.schema();
            let existing = table_catalog.files.clone();
            let batch = rows.to_batch(&schema)?;
            for (day, part) in split_by_day(&batch)? {
                let in_day: Vec<&FileMeta> = existing.iter().filter(|f| f.day == day).collect();
                let overlapping = files_sharing_keys(dir, &in_day, &part, &schema)?;
                let small: Vec<&FileMeta> = if in_day.len() + 1 > config.max_files_per_partition {
                    in_day
                        .iter()
                        .copied()
                        .filter(|f| f.bytes < config.small_file_bytes)
                        .collect()
                } else {
                    Vec::new()
                };
                let mut merge: Vec<&FileMeta> = overlapping;
                for f in small {
                    if !merge.iter().any(|m| m.path == f.path) {
                        merge.push(f);
                    }
                }
                // Older data first so the new rows win.
                merge.sort_by_key(|f| f.path.clone());
                let combined = merge_with_files(dir, &merge, part, &schema)?;
                changes.removed.extend(
                    merge
                        .iter()
                        .map(|f| (db.clone(), table.clone(), f.path.clone())),
                );
                let id = catalog.next_file_id;
                catalog.next_file_id += 1;
                let meta = write_file(dir, db, table, day, id, &combined, &config.faults)?;
                changes.added.push((db.clone(), table.clone(), meta));
            }
        }
    }
    Ok(changes)
}

/// `newest` merged with the rows of `files` (oldest first), sorted and deduplicated so that
/// `newest` wins; `newest` itself when there are no files.
pub fn merge_with_files(
    dir: &Path,
    files: &[&FileMeta],
    newest: RecordBatch,
    schema: &TableSchema,
) -> Result<RecordBatch> {
    if files.is_empty() {
        return Ok(newest);
    }
    let mut batches = Vec::with_capacity(files.len() + 1);
    for f in files {
        batches.push(read_file(&dir.join(&f.path), &schema.arrow)?);
    }
    batches.push(newest);
    let all = concat_batches(&schema.arrow, &batches).map_err(LakeError::arrow)?;
    sort_dedupe(&all, schema.tag_count)
}

/// The files among `files` that hold a row with the same series and time as a row of `batch`.
pub fn files_sharing_keys<'f>(
    dir: &Path,
    files: &[&'f FileMeta],
    batch: &RecordBatch,
    schema: &TableSchema,
) -> Result<Vec<&'f FileMeta>> {
    let (min, max) = time_range(batch);
    let mut probe = None;
    let mut sharing = Vec::new();
    for &f in files {
        if f.min_time > max || f.max_time < min {
            continue;
        }
        let probe = match &mut probe {
            Some(p) => p,
            None => probe.insert(KeyProbe::new(batch, schema, (min, max))?),
        };
        if probe.found_in(&dir.join(&f.path))? {
            sharing.push(f);
        }
    }
    Ok(sharing)
}

/// Files of tables with a retention period whose newest row is older than it.
pub fn expired_files(catalog: &Catalog, now: i64) -> FileChanges {
    let mut changes = FileChanges::default();
    for (db, database) in &catalog.databases {
        for (table, t) in &database.tables {
            let Some(retention) = t.retention_nanos else {
                continue;
            };
            for f in &t.files {
                if f.max_time < now - retention {
                    changes
                        .removed
                        .push((db.clone(), table.clone(), f.path.clone()));
                }
            }
        }
    }
    changes
}

pub fn time_range(batch: &RecordBatch) -> (i64, i64) {
    let times = batch
        .column_by_name(TIME_COLUMN)
        .expect("every table has a time column")
        .as_primitive::<TimestampNanosecondType>();
    let min = times.values().iter().copied().min().unwrap_or(0);
    let max = times.values().iter().copied().max().unwrap_or(0);
    (min, max)
}

/// Splits a sorted batch into one batch per UTC day, keeping the order within each.
fn split_by_day(batch: &RecordBatch) -> Result<Vec<(i64, RecordBatch)>> {
    let times = batch
        .column_by_name(TIME_COLUMN)
        .expect("every table has a time column")
        .as_primitive::<TimestampNanosecondType>();
    let mut days: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, t) in times.values().iter().enumerate() {
        days.entry(t.div_euclid(NANOS_PER_DAY))
            .or_default()
            .push(i as u32);
    }
    if days.len() == 1 {
        let day = *days.keys().next().expect("one day");
        return Ok(vec![(day, batch.clone())]);
    }
    days.into_iter()
        .map(|(day, rows)| {
            let part =
                take_record_batch(batch, &UInt32Array::from(rows)).map_err(LakeError::arrow)?;
            Ok((day, part))
        })
        .collect()
}

/// Makes a table or database name safe as one path component: letters, digits, `_`, `-`
/// and `.` stay; anything else becomes `%XX` (so distinct names stay distinct).
pub fn path_component(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-') || (b == b'.' && !out.is_empty()) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Writes a batch to a Parquet file and fsyncs it; returns its size and CRC-32C.
fn write_parquet(tmp: &Path, batch: &RecordBatch, faults: &Faults) -> Result<(u64, u32)> {
    faults
        .check(IoPoint::ParquetWrite, tmp)
        .map_err(|e| LakeError::io(tmp, e))?;
    let file = PacedFile::new(File::create(tmp).map_err(|e| LakeError::io(tmp, e))?);
    let time = ColumnPath::from(TIME_COLUMN);
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(1 << 20))
        .set_dictionary_page_size_limit(128 << 10)
        .set_column_dictionary_enabled(time.clone(), false)
        .set_column_encoding(time, Encoding::DELTA_BINARY_PACKED)
        .build();
    let mut writer =
        ArrowWriter::try_new(file, batch.schema(), Some(props)).map_err(LakeError::arrow)?;
    writer.write(batch).map_err(LakeError::arrow)?;
    let paced = writer.into_inner().map_err(LakeError::arrow)?;
    let (file, crc) = (paced.file, paced.crc);
    faults
        .check(IoPoint::ParquetSync, tmp)
        .and_then(|()| file.sync_all())
        .map_err(|e| LakeError::io(tmp, e))?;
    let bytes = file.metadata().map_err(|e| LakeError::io(tmp, e))?.len();
    faults.synced(tmp, bytes);
    Ok((bytes, crc))
}

fn day_name(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day{day}"))
}

pub(crate) fn write_file(
    dir: &Path,
    db: &str,
    table: &str,
    day: i64,
    id: u64,
    batch: &RecordBatch,
    faults: &Faults,
) -> Result<FileMeta> {
    let relative = format!(
        "{}/{}/{}/{id:012}.parquet",
        path_component(db),
        path_component(table),
        day_name(day)
    );
    let path = dir.join(&relative);
    let partition = path.parent().expect("a file has a folder");
    std::fs::create_dir_all(partition).map_err(|e| LakeError::io(partition, e))?;
    let tmp = path.with_extension("parquet.tmp");
    let written = write_parquet(&tmp, batch, faults);
    if written.is_err() {
        // A full disk must not be made fuller by the half-written file.
        let _ = std::fs::remove_file(&tmp);
    }
    let (bytes, crc) = written?;
    std::fs::rename(&tmp, &path).map_err(|e| LakeError::io(&path, e))?;
    sync_dir(partition)?;
    if let Some(table_dir) = partition.parent() {
        sync_dir(table_dir)?;
    }
    let (min_time, max_time) = time_range(batch);
    Ok(FileMeta {
        path: relative,
        day,
        min_time,
        max_time,
        rows: batch.num_rows() as u64,
        bytes,
        crc32c: Some(crc),
    })
}

/// A file being written that starts the kernel's write-back every few MiB instead of leaving
/// it all to the final `fsync` (RocksDB's `bytes_per_sync`, by hand because no crate offers
/// it). On ext4 in its default ordered mode, a WAL `fdatasync` that commits the journal must
/// also write out the dirty data of every other file in the transaction: a 100 MB Parquet
/// file dirty in the page cache would hold up acknowledgements of writes for as long as it
/// takes to reach the disk.
struct PacedFile {
    file: File,
    written: u64,
    started_through: u64,
    /// CRC-32C of every byte written so far.
    crc: u32,
}

impl PacedFile {
    const STEP: u64 = 4 << 20;

    fn new(file: File) -> Self {
        PacedFile {
            file,
            written: 0,
            started_through: 0,
            crc: 0,
        }
    }
}

impl std::io::Write for PacedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.file.write(buf)?;
        self.crc = crc32c::crc32c_append(self.crc, &buf[..n]);
        self.written += n as u64;
        if self.written - self.started_through >= Self::STEP {
            start_write_back(&self.file, self.started_through, self.written);
            self.started_through = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Asks the kernel to start writing `from..to` of `file` to disk, without waiting for it.
/// Only a hint: the final `fsync` is what makes the file durable, so an error here changes
/// nothing and is ignored.
#[cfg(target_os = "linux")]
fn start_write_back(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives; the call only reads it.
    unsafe {
        libc::sync_file_range(
            file.as_raw_fd(),
            from as libc::off64_t,
            (to - from) as libc::off64_t,
            libc::SYNC_FILE_RANGE_WRITE,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn start_write_back(_file: &File, _from: u64, _to: u64) {}

/// Reads a whole Parquet file into one batch with the table's current schema (columns the
/// file predates are null).
pub fn read_file(path: &Path, schema: &SchemaRef) -> Result<RecordBatch> {
    let file = File::open(path).map_err(|e| LakeError::io(path, e))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(LakeError::arrow)?
        .with_batch_size(64 * 1024)
        .build()
        .map_err(LakeError::arrow)?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(align_to_schema(&batch.map_err(LakeError::arrow)?, schema)?);
    }
    concat_batches(schema, &batches).map_err(LakeError::arrow)
}

/// The batch's columns in `schema`'s order, with nulls for the columns it lacks.
pub fn align_to_schema(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => c.clone(),
            None => new_null_array(f.data_type(), batch.num_rows()),
        })
        .collect();
    RecordBatch::try_new(schema.clone(), columns).map_err(LakeError::arrow)
}
