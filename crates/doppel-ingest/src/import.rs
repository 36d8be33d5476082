//! History files into write batches: CSV (any separator), whitespace-separated tables and Parquet.
//!
//! A file is read row by row and handed out in batches of `batch_rows`, so a file of any size
//! imports in bounded memory. Every problem names the file, the line and the column. This module
//! only reads files: writing the batches is the caller's job.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use doppel_core::{FieldValue, Point, WriteBatch};

/// How the columns of a text file are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Separator {
    /// Guess from the first line: tab, `;`, `|`, `,`, or runs of spaces.
    Auto,
    Char(u8),
    /// One or more spaces or tabs (the Tennessee Eastman files).
    Whitespace,
}

/// Where each row's time comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TimeSource {
    /// A column, by name (or the first column named like `time`, `date` or `timestamp`).
    /// Text times are RFC 3339 or `YYYY-MM-DD HH:MM:SS[.fff]` (taken as UTC); numbers are
    /// Unix epoch times in `epoch_unit` (nanoseconds per unit).
    Column {
        name: Option<String>,
        epoch_unit_nanos: i64,
    },
    /// Row `i` (from 0) is at `start + i * period`, for files without a time column.
    Generated { start: i64, period: i64 },
}

/// What to import and how.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    pub database: String,
    /// The table to write into; the file's name without extension when `None`.
    pub measurement: Option<String>,
    /// Tags added to every point, such as `unit=7`.
    pub tags: Vec<(String, String)>,
    /// Columns whose values become tags rather than fields.
    pub tag_columns: Vec<String>,
    pub separator: Separator,
    /// Column names for files without a header line (an empty list names them `c1`, `c2`,
    /// ...); `None` means the first line is the header.
    pub column_names: Option<Vec<String>>,
    pub time: TimeSource,
    /// The file is stored with one variable per line (rows are columns), like TEP's `d00.dat`.
    pub transpose: bool,
    pub batch_rows: usize,
    /// Hand a row with no value at all to the sink as a point without fields (its time
    /// only), instead of skipping it: for readers that answer per input row, such as the
    /// model's tasks. Never for a lake, which stores no empty point.
    pub keep_rows_without_values: bool,
}

impl Default for ImportOptions {
    fn default() -> Self {
        ImportOptions {
            database: "default".into(),
            measurement: None,
            tags: Vec::new(),
            tag_columns: Vec::new(),
            separator: Separator::Auto,
            column_names: None,
            time: TimeSource::Column {
                name: None,
                epoch_unit_nanos: 1_000_000_000,
            },
            transpose: false,
            batch_rows: 10_000,
            keep_rows_without_values: false,
        }
    }
}

/// A problem in a file, with where it is (line and column are 1-based; 0 when not known).
#[derive(Debug, thiserror::Error)]
#[error("{}{}: {message}", file.display(), location(*line, column))]
pub struct ImportError {
    pub file: PathBuf,
    pub line: usize,
    pub column: Option<String>,
    pub message: String,
}

fn location(line: usize, column: &Option<String>) -> String {
    match (line, column) {
        (0, None) => String::new(),
        (0, Some(c)) => format!(", column `{c}`"),
        (l, None) => format!(":{l}"),
        (l, Some(c)) => format!(":{l}, column `{c}`"),
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportStats {
    /// Data rows read, written or not.
    pub rows: u64,
    /// Rows with no value in any value column (every cell empty, NaN or null): nothing of
    /// them is stored, as a gap is not.
    pub rows_without_values: u64,
    pub values: u64,
    /// Value columns in which no cell held a value (all empty, NaN or null).
    pub empty_columns: Vec<String>,
}

/// Reads one file into one Arrow table: `time` (ns) first, then every other column in the
/// file's order, typed by its first value (tags and text as strings; a column with no value
/// at all is all-null Float64). Rows keep the file's order; a row without any value is kept
/// with its time. The same reader, checks and errors as [`import_file`].
pub fn import_file_arrow(
    path: &Path,
    options: &ImportOptions,
) -> Result<(RecordBatch, ImportStats), ImportError> {
    let options = ImportOptions {
        keep_rows_without_values: true,
        ..options.clone()
    };
    let table = open_table(path, &options)?;
    let mut builder = BatchBuilder::new(path, &options, &table.columns)?;
    let names = table
        .columns
        .iter()
        .enumerate()
        .filter(|(c, _)| Some(*c) != builder.time_column)
        .map(|(_, n)| n.clone())
        .collect();
    builder.table = Some(columns::Columns::new(names));
    let mut stats = ImportStats::default();
    let mut rows = table.rows;
    while let Some(row) = rows.next_row()? {
        if !builder.add_row(row.line, &row.cells, stats.rows)? {
            stats.rows_without_values += 1;
        }
        stats.rows += 1;
    }
    if stats.rows == 0 {
        return Err(builder.error(0, None, "the file has no data rows".into()));
    }
    stats.empty_columns = builder.empty_columns();
    let batch = builder.table.take().expect("set above").finish();
    stats.values = batch
        .columns()
        .iter()
        .skip(1)
        .map(|c| (c.len() - c.null_count()) as u64)
        .sum();
    Ok((batch, stats))
}

fn open_table(path: &Path, options: &ImportOptions) -> Result<Table, ImportError> {
    let is_parquet = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("parquet"));
    if is_parquet {
        read_parquet(path, options)
    } else {
        TextTable::open(path, options)
    }
}

/// Imports one file, handing each batch to `sink`; `progress` gets the rows read so far.
/// The file type follows its extension: `.parquet` is Parquet, anything else is text.
pub fn import_file<E: std::fmt::Display>(
    path: &Path,
    options: &ImportOptions,
    mut progress: impl FnMut(u64),
    mut sink: impl FnMut(WriteBatch) -> Result<(), E>,
) -> Result<ImportStats, ImportError> {
    let table = open_table(path, options)?;
    let mut builder = BatchBuilder::new(path, options, &table.columns)?;
    let mut stats = ImportStats::default();
    let mut rows = table.rows;
    while let Some(row) = rows.next_row()? {
        if !builder.add_row(row.line, &row.cells, stats.rows)? {
            stats.rows_without_values += 1;
        }
        stats.rows += 1;
        if builder.batch.points.len() >= options.batch_rows {
            stats.values += builder.batch.field_count() as u64;
            progress(stats.rows);
            let batch = std::mem::replace(
                &mut builder.batch,
                WriteBatch::new(options.database.clone()),
            );
            sink(batch)
                .map_err(|e| builder.error(row.line, None, format!("writing failed: {e}")))?;
        }
    }
    if !builder.batch.points.is_empty() {
        stats.values += builder.batch.field_count() as u64;
        let batch = std::mem::take(&mut builder.batch);
        sink(batch).map_err(|e| builder.error(0, None, format!("writing failed: {e}")))?;
    }
    progress(stats.rows);
    if stats.rows == 0 {
        return Err(builder.error(0, None, "the file has no data rows".into()));
    }
    stats.empty_columns = builder.empty_columns();
    Ok(stats)
}

/// A table being read: its column names and a source of rows.
struct Table {
    columns: Vec<String>,
    rows: Box<dyn RowSource>,
}

struct Row {
    line: usize,
    cells: Vec<Cell>,
}

/// One value of a row, as read: text from text files, typed from Parquet.
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Missing,
    Text(String),
    Float(f64),
    Integer(i64),
    UInteger(u64),
    Boolean(bool),
    /// Nanoseconds since the epoch.
    Time(i64),
}

trait RowSource {
    fn next_row(&mut self) -> Result<Option<Row>, ImportError>;
}

struct TextTable;

impl TextTable {
    fn open(path: &Path, options: &ImportOptions) -> Result<Table, ImportError> {
        let err = |line: usize, message: String| ImportError {
            file: path.to_owned(),
            line,
            column: None,
            message,
        };
        let file = File::open(path).map_err(|e| err(0, format!("cannot open: {e}")))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut first = String::new();
        reader
            .read_line(&mut first)
            .map_err(|e| err(1, format!("cannot read: {e}")))?;
        let first = first.trim_start_matches('\u{feff}').to_owned();
        if first.trim().is_empty() {
            return Err(err(
                1,
                "the file is empty (or its first line is blank)".into(),
            ));
        }
        let separator = match options.separator {
            Separator::Auto => detect_separator(&first),
            other => other,
        };
        let rest: Box<dyn BufRead> = Box::new(reader);
        let mut lines = LineSplitter {
            first: Some(first),
            rest,
            separator,
            line: 0,
            path: path.to_owned(),
        };
        if options.transpose {
            return transpose(path, options, lines);
        }
        let columns = match &options.column_names {
            Some(names) if !names.is_empty() => names.clone(),
            Some(_) => {
                let first = lines.first.as_deref().unwrap_or_default();
                default_names(lines.split(first.trim_end_matches(['\n', '\r']))?.len())
            }
            None => {
                let (_, header) = lines.next_fields()?.expect("the first line is not blank");
                header.into_iter().map(|h| h.trim().to_owned()).collect()
            }
        };
        Ok(Table {
            columns,
            rows: Box::new(TextRows { lines }),
        })
    }
}

fn detect_separator(first_line: &str) -> Separator {
    for candidate in [b'\t', b';', b'|', b','] {
        if first_line.as_bytes().contains(&candidate) {
            return Separator::Char(candidate);
        }
    }
    Separator::Whitespace
}

/// Splits text lines into fields. Hand-written rather than `csv`'s reader because it must also
/// split on runs of whitespace and take the first line back after sniffing the separator;
/// quoted CSV fields (with separators or doubled quotes inside) are handled by the `csv` crate.
struct LineSplitter {
    first: Option<String>,
    rest: Box<dyn BufRead>,
    separator: Separator,
    line: usize,
    path: PathBuf,
}

impl LineSplitter {
    fn next_fields(&mut self) -> Result<Option<(usize, Vec<String>)>, ImportError> {
        loop {
            let text = match self.first.take() {
                Some(first) => first,
                None => {
                    let mut buf = String::new();
                    let n = self.rest.read_line(&mut buf).map_err(|e| ImportError {
                        file: self.path.clone(),
                        line: self.line + 1,
                        column: None,
                        message: format!("cannot read: {e}"),
                    })?;
                    if n == 0 {
                        return Ok(None);
                    }
                    buf
                }
            };
            self.line += 1;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.trim().is_empty() {
                continue;
            }
            let fields = self.split(text)?;
            return Ok(Some((self.line, fields)));
        }
    }

    fn split(&self, text: &str) -> Result<Vec<String>, ImportError> {
        Ok(match self.separator {
            Separator::Whitespace => text.split_whitespace().map(str::to_owned).collect(),
            Separator::Char(sep) if text.contains('"') => {
                let mut reader = csv::ReaderBuilder::new()
                    .has_headers(false)
                    .delimiter(sep)
                    .from_reader(text.as_bytes());
                let mut record = csv::StringRecord::new();
                reader.read_record(&mut record).map_err(|e| ImportError {
                    file: self.path.clone(),
                    line: self.line,
                    column: None,
                    message: format!("bad CSV: {e}"),
                })?;
                record.iter().map(str::to_owned).collect()
            }
            Separator::Char(sep) => text.split(sep as char).map(str::to_owned).collect(),
            Separator::Auto => unreachable!("the separator is resolved before reading"),
        })
    }
}

/// Names for the columns of a file without a header: `c1`, `c2`, ...
fn default_names(count: usize) -> Vec<String> {
    (1..=count).map(|i| format!("c{i}")).collect()
}

struct TextRows {
    lines: LineSplitter,
}

impl RowSource for TextRows {
    fn next_row(&mut self) -> Result<Option<Row>, ImportError> {
        Ok(self.lines.next_fields()?.map(|(line, fields)| Row {
            line,
            cells: fields
                .into_iter()
                .map(|f| {
                    let f = f.trim();
                    if f.is_empty()
                        || f.eq_ignore_ascii_case("nan")
                        || f.eq_ignore_ascii_case("null")
                    {
                        Cell::Missing
                    } else {
                        Cell::Text(f.to_owned())
                    }
                })
                .collect(),
        }))
    }
}

/// Reads a file stored with one variable per line and turns it into one row per sample.
fn transpose(
    path: &Path,
    options: &ImportOptions,
    mut lines: LineSplitter,
) -> Result<Table, ImportError> {
    let mut variables = Vec::new();
    while let Some((_, fields)) = lines.next_fields()? {
        variables.push(fields);
    }
    let samples = variables.first().map_or(0, Vec::len);
    if let Some((i, v)) = variables
        .iter()
        .enumerate()
        .find(|(_, v)| v.len() != samples)
    {
        return Err(ImportError {
            file: path.to_owned(),
            line: i + 1,
            column: None,
            message: format!(
                "has {} values but line 1 has {samples}: a transposed file must be rectangular",
                v.len()
            ),
        });
    }
    let columns = options
        .column_names
        .clone()
        .unwrap_or_else(|| default_names(variables.len()));
    let rows: Vec<Row> = (0..samples)
        .map(|s| Row {
            // For a transposed file the "line" of a sample is its position along the line.
            line: s + 1,
            cells: variables.iter().map(|v| Cell::Text(v[s].clone())).collect(),
        })
        .collect();
    Ok(Table {
        columns,
        rows: Box::new(VecRows {
            rows: rows.into_iter(),
        }),
    })
}

struct VecRows {
    rows: std::vec::IntoIter<Row>,
}

impl RowSource for VecRows {
    fn next_row(&mut self) -> Result<Option<Row>, ImportError> {
        Ok(self.rows.next())
    }
}

fn read_parquet(path: &Path, _options: &ImportOptions) -> Result<Table, ImportError> {
    let err = |message: String| ImportError {
        file: path.to_owned(),
        line: 0,
        column: None,
        message,
    };
    let file = File::open(path).map_err(|e| err(format!("cannot open: {e}")))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| err(format!("not a readable Parquet file: {e}")))?;
    let columns = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let reader = builder
        .with_batch_size(8192)
        .build()
        .map_err(|e| err(format!("cannot read: {e}")))?;
    Ok(Table {
        columns,
        rows: Box::new(ParquetRows {
            reader,
            batch: None,
            next: 0,
            row_number: 0,
            path: path.to_owned(),
        }),
    })
}

struct ParquetRows {
    reader: datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    next: usize,
    row_number: usize,
    path: PathBuf,
}

impl RowSource for ParquetRows {
    fn next_row(&mut self) -> Result<Option<Row>, ImportError> {
        loop {
            if let Some(batch) = &self.batch
                && self.next < batch.num_rows()
            {
                let i = self.next;
                self.next += 1;
                self.row_number += 1;
                let cells = batch
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(c, array)| {
                        arrow_cell(array.as_ref(), i).map_err(|message| ImportError {
                            file: self.path.clone(),
                            line: self.row_number,
                            column: Some(batch.schema().field(c).name().clone()),
                            message,
                        })
                    })
                    .collect::<Result<_, _>>()?;
                return Ok(Some(Row {
                    line: self.row_number,
                    cells,
                }));
            }
            match self.reader.next() {
                None => return Ok(None),
                Some(Ok(batch)) => {
                    self.batch = Some(batch);
                    self.next = 0;
                }
                Some(Err(e)) => {
                    return Err(ImportError {
                        file: self.path.clone(),
                        line: self.row_number + 1,
                        column: None,
                        message: format!("cannot read: {e}"),
                    });
                }
            }
        }
    }
}

fn arrow_cell(array: &dyn Array, i: usize) -> Result<Cell, String> {
    use datafusion::arrow::datatypes::*;
    if array.is_null(i) {
        return Ok(Cell::Missing);
    }
    Ok(match array.data_type() {
        // NaN is a missing value, as the text `NaN` is.
        DataType::Float64 => match array.as_primitive::<Float64Type>().value(i) {
            v if v.is_nan() => Cell::Missing,
            v => Cell::Float(v),
        },
        DataType::Float32 => match array.as_primitive::<Float32Type>().value(i) {
            v if v.is_nan() => Cell::Missing,
            v => Cell::Float(v as f64),
        },
        DataType::Int64 => Cell::Integer(array.as_primitive::<Int64Type>().value(i)),
        DataType::Int32 => Cell::Integer(array.as_primitive::<Int32Type>().value(i) as i64),
        DataType::Int16 => Cell::Integer(array.as_primitive::<Int16Type>().value(i) as i64),
        DataType::Int8 => Cell::Integer(array.as_primitive::<Int8Type>().value(i) as i64),
        DataType::UInt64 => Cell::UInteger(array.as_primitive::<UInt64Type>().value(i)),
        DataType::UInt32 => Cell::UInteger(array.as_primitive::<UInt32Type>().value(i) as u64),
        DataType::UInt16 => Cell::UInteger(array.as_primitive::<UInt16Type>().value(i) as u64),
        DataType::UInt8 => Cell::UInteger(array.as_primitive::<UInt8Type>().value(i) as u64),
        DataType::Boolean => Cell::Boolean(array.as_boolean().value(i)),
        DataType::Utf8 => Cell::Text(array.as_string::<i32>().value(i).to_owned()),
        DataType::LargeUtf8 => Cell::Text(array.as_string::<i64>().value(i).to_owned()),
        DataType::Timestamp(unit, _) => {
            let value = match unit {
                TimeUnit::Second => {
                    array.as_primitive::<TimestampSecondType>().value(i) * 1_000_000_000
                }
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(i) * 1_000_000
                }
                TimeUnit::Microsecond => {
                    array.as_primitive::<TimestampMicrosecondType>().value(i) * 1_000
                }
                TimeUnit::Nanosecond => array.as_primitive::<TimestampNanosecondType>().value(i),
            };
            Cell::Time(value)
        }
        DataType::Dictionary(_, _) => {
            let cast = datafusion::arrow::compute::cast(&array.slice(i, 1), &DataType::Utf8)
                .map_err(|e| format!("cannot read dictionary value: {e}"))?;
            Cell::Text(cast.as_string::<i32>().value(0).to_owned())
        }
        other => {
            return Err(format!(
                "column type {other} is not supported: use numbers, booleans, text or timestamps"
            ));
        }
    })
}

/// Turns rows into points, checking each column keeps one type.
struct BatchBuilder {
    file: PathBuf,
    measurement: String,
    columns: Vec<String>,
    time_column: Option<usize>,
    /// Per column: tag, field (with the type fixed by the first value) or the time column.
    roles: Vec<Role>,
    options: ImportOptions,
    batch: WriteBatch,
    /// Rows gathered as Arrow columns instead of points ([`import_file_arrow`]).
    table: Option<columns::Columns>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Time,
    Tag,
    Field(Option<doppel_core::FieldType>),
}

impl BatchBuilder {
    /// Value columns in which no cell held a value so far.
    fn empty_columns(&self) -> Vec<String> {
        self.roles
            .iter()
            .zip(&self.columns)
            .filter(|(role, _)| **role == Role::Field(None))
            .map(|(_, name)| name.clone())
            .collect()
    }

    fn new(path: &Path, options: &ImportOptions, columns: &[String]) -> Result<Self, ImportError> {
        let measurement = options.measurement.clone().unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "import".into())
        });
        let mut this = BatchBuilder {
            file: path.to_owned(),
            measurement,
            columns: columns.to_vec(),
            time_column: None,
            roles: vec![Role::Field(None); columns.len()],
            options: options.clone(),
            batch: WriteBatch::new(options.database.clone()),
            table: None,
        };
        if columns.is_empty() {
            return Err(this.error(1, None, "the file has no columns".into()));
        }
        if let Some(dup) = columns
            .iter()
            .enumerate()
            .find(|(i, c)| columns[..*i].contains(c))
        {
            return Err(this.error(1, Some(dup.1), "column name appears twice".into()));
        }
        if let TimeSource::Column { name, .. } = &options.time {
            let found = match name {
                Some(name) => columns.iter().position(|c| c == name).ok_or_else(|| {
                    this.error(1, None, format!("no time column `{name}`; columns are: {}", columns.join(", ")))
                })?,
                None => columns
                    .iter()
                    .position(|c| {
                        matches!(c.to_ascii_lowercase().as_str(), "time" | "timestamp" | "date" | "datetime" | "ts")
                    })
                    .ok_or_else(|| {
                        this.error(1, None, format!(
                            "no time column found (looked for time, timestamp, date, datetime, ts); name it with --time-column or generate times with --start and --period; columns are: {}",
                            columns.join(", ")
                        ))
                    })?,
            };
            this.time_column = Some(found);
            this.roles[found] = Role::Time;
        }
        for tag in &options.tag_columns {
            let i = columns
                .iter()
                .position(|c| c == tag)
                .ok_or_else(|| this.error(1, None, format!("no tag column `{tag}`")))?;
            this.roles[i] = Role::Tag;
        }
        if !this.roles.iter().any(|r| matches!(r, Role::Field(_))) {
            return Err(this.error(
                1,
                None,
                "the file has no value columns besides time and tags".into(),
            ));
        }
        Ok(this)
    }

    fn error(&self, line: usize, column: Option<&str>, message: String) -> ImportError {
        ImportError {
            file: self.file.clone(),
            line,
            column: column.map(str::to_owned),
            message,
        }
    }

    /// Adds a row's point to the batch; `false` when the row holds no value to store.
    fn add_row(&mut self, line: usize, cells: &[Cell], index: u64) -> Result<bool, ImportError> {
        if cells.len() != self.columns.len() {
            return Err(self.error(
                line,
                None,
                format!(
                    "has {} values but the header names {} columns",
                    cells.len(),
                    self.columns.len()
                ),
            ));
        }
        let time = match (&self.options.time, self.time_column) {
            (TimeSource::Generated { start, period }, _) => start + period * index as i64,
            (
                TimeSource::Column {
                    epoch_unit_nanos, ..
                },
                Some(c),
            ) => parse_time(&cells[c], *epoch_unit_nanos)
                .map_err(|m| self.error(line, Some(&self.columns[c]), m))?,
            (TimeSource::Column { .. }, None) => unreachable!("a time column was found in new()"),
        };
        // Values by column index: a name is copied only into a point, never per table row.
        let mut tags: Vec<(usize, String)> = Vec::new();
        let mut fields: Vec<(usize, FieldValue)> = Vec::with_capacity(cells.len());
        for (c, cell) in cells.iter().enumerate() {
            match self.roles[c] {
                Role::Time => {}
                Role::Tag => {
                    let text = match cell {
                        Cell::Missing => continue,
                        Cell::Text(t) => t.clone(),
                        other => cell_to_string(other),
                    };
                    tags.push((c, text));
                }
                Role::Field(expected) => {
                    if is_out_of_range(cell) {
                        return Err(self.error(
                            line,
                            Some(&self.columns[c]),
                            format!(
                                "value `{}` is outside the range of a 64-bit float (about \
                                 ±1.8e308)",
                                cell_to_string(cell)
                            ),
                        ));
                    }
                    let Some(value) = cell_value(cell, expected) else {
                        if matches!(cell, Cell::Missing) {
                            continue;
                        }
                        return Err(self.error(
                            line,
                            Some(&self.columns[c]),
                            format!(
                                "value `{}` is not a {} like the rest of the column",
                                cell_to_string(cell),
                                expected.expect("typed")
                            ),
                        ));
                    };
                    self.roles[c] = Role::Field(Some(value.field_type()));
                    fields.push((c, value));
                }
            }
        }
        if fields.is_empty() && !self.options.keep_rows_without_values {
            // A row with every value missing carries nothing: skip it (gaps stay gaps), and
            // count it, so the import does not claim it as written.
            return Ok(false);
        }
        let has_values = !fields.is_empty();
        if let Some(table) = &mut self.table {
            let mut row: Vec<Option<FieldValue>> = vec![None; cells.len()];
            for (c, text) in tags {
                row[c] = Some(FieldValue::String(text));
            }
            for (c, value) in fields {
                row[c] = Some(value);
            }
            let time_column = self.time_column;
            let values = row
                .iter()
                .enumerate()
                .filter(|(c, _)| Some(*c) != time_column)
                .map(|(_, v)| v.as_ref());
            table.push_row(time, values);
            return Ok(has_values);
        }
        let mut named_tags = self.options.tags.clone();
        named_tags.extend(tags.into_iter().map(|(c, t)| (self.columns[c].clone(), t)));
        named_tags.sort_by(|a, b| a.0.cmp(&b.0));
        self.batch.points.push(Point {
            measurement: self.measurement.clone(),
            tags: named_tags,
            fields: fields
                .into_iter()
                .map(|(c, v)| (self.columns[c].clone(), v))
                .collect(),
            time,
        });
        Ok(has_values)
    }
}

/// A number no 64-bit float holds: `1e400` in a text file, an infinity in Parquet. Refused
/// rather than stored as infinity or, as text, turning its column into strings.
fn is_out_of_range(cell: &Cell) -> bool {
    match cell {
        Cell::Float(v) => v.is_infinite(),
        Cell::Text(text) => {
            text.parse::<f64>().is_ok_and(f64::is_infinite)
                && text
                    .bytes()
                    .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'))
        }
        _ => false,
    }
}

fn cell_to_string(cell: &Cell) -> String {
    match cell {
        Cell::Missing => String::new(),
        Cell::Text(t) => t.clone(),
        Cell::Float(v) => v.to_string(),
        Cell::Integer(v) => v.to_string(),
        Cell::UInteger(v) => v.to_string(),
        Cell::Boolean(v) => v.to_string(),
        Cell::Time(v) => doppel_core::time::format_rfc3339(*v),
    }
}

/// The value of a cell for a field of the expected type (any type when not yet known);
/// `None` when the cell is missing or does not fit.
fn cell_value(cell: &Cell, expected: Option<doppel_core::FieldType>) -> Option<FieldValue> {
    use doppel_core::FieldType as T;
    let value = match cell {
        Cell::Missing => return None,
        Cell::Float(v) => FieldValue::Float(*v),
        Cell::Integer(v) => FieldValue::Integer(*v),
        Cell::UInteger(v) => FieldValue::UInteger(*v),
        Cell::Boolean(v) => FieldValue::Boolean(*v),
        Cell::Time(v) => FieldValue::Integer(*v),
        Cell::Text(text) => {
            // Text files carry no types: numbers are floats (so `1` and `1.5` share a column),
            // `true`/`false` booleans, anything else text.
            if let Ok(v) = text.parse::<f64>()
                && v.is_finite()
                && expected != Some(T::String)
            {
                FieldValue::Float(v)
            } else if expected != Some(T::String) && text.eq_ignore_ascii_case("true") {
                FieldValue::Boolean(true)
            } else if expected != Some(T::String) && text.eq_ignore_ascii_case("false") {
                FieldValue::Boolean(false)
            } else {
                FieldValue::String(text.clone())
            }
        }
    };
    match expected {
        Some(t) if t != value.field_type() => None,
        _ => Some(value),
    }
}

/// Parses a time cell: RFC 3339, `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), `YYYY-MM-DD`, or an epoch number.
fn parse_time(cell: &Cell, epoch_unit_nanos: i64) -> Result<i64, String> {
    let overflow = || "time is outside the years 1677..2262".to_string();
    match cell {
        Cell::Time(t) => Ok(*t),
        Cell::Integer(v) => v.checked_mul(epoch_unit_nanos).ok_or_else(overflow),
        Cell::UInteger(v) => i64::try_from(*v)
            .ok()
            .and_then(|v| v.checked_mul(epoch_unit_nanos))
            .ok_or_else(overflow),
        Cell::Float(v) => Ok((v * epoch_unit_nanos as f64).round() as i64),
        Cell::Missing => Err("time is missing".into()),
        Cell::Boolean(_) => Err("time is a boolean".into()),
        Cell::Text(text) => parse_time_text(text, epoch_unit_nanos),
    }
}

fn parse_time_text(text: &str, epoch_unit_nanos: i64) -> Result<i64, String> {
    if let Ok(v) = text.parse::<i64>() {
        return v
            .checked_mul(epoch_unit_nanos)
            .ok_or_else(|| "time is outside the years 1677..2262".into());
    }
    if let Ok(v) = text.parse::<f64>() {
        return Ok((v * epoch_unit_nanos as f64).round() as i64);
    }
    if let Ok(t) = doppel_core::time::parse_rfc3339(text) {
        return Ok(t);
    }
    for format in [
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y/%m/%d %H:%M:%S%.f",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return t
                .and_utc()
                .timestamp_nanos_opt()
                .ok_or_else(|| "time is outside the years 1677..2262".into());
        }
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_nanos_opt()
            .ok_or_else(|| "time is outside the years 1677..2262".to_string());
    }
    Err(format!(
        "`{text}` is not a time: expected RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or an epoch number"
    ))
}

mod columns;

pub use columns::TIME as TIME_COLUMN;

#[cfg(test)]
mod tests;
