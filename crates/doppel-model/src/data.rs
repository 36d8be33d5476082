//! Recordings: sensor files read into channels on a regular time grid, with a mask of what
//! was really observed.
//!
//! Each file is one recording (one machine, one run); windows are cut inside a recording and
//! never across two. Files whose rows are irregular are put on the grid (the median step
//! between rows), and every grid slot without a reading is marked missing: missing data stays
//! a mask, never an invented value. Any format `doppel import` reads works here (CSV with any
//! separator, whitespace tables, Parquet).

use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::{cast, concat_batches};
use arrow::datatypes::{DataType, Float64Type, TimeUnit, TimestampNanosecondType};
use doppel_ingest::import::{ImportOptions, TIME_COLUMN, TimeSource, import_file_arrow};
use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// One recording on a regular grid: `values[c][t]`, meaningful where `observed[c][t]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recording {
    pub source: PathBuf,
    /// Time of the first grid slot, ns since the epoch, and the grid step, ns.
    pub start_ns: i64,
    pub step_ns: i64,
    pub channels: Vec<String>,
    pub values: Vec<Vec<f32>>,
    pub observed: Vec<Vec<bool>>,
    /// The rows the recording was read from, in time order: each row's own time and the grid
    /// slot it landed on (rows a step off the grid, or two in one slot, keep their times).
    /// Tasks that answer per row answer for these. Empty: one row per slot.
    pub rows: Vec<(i64, usize)>,
    /// The label column's value at each grid slot, as text, when one was asked for
    /// ([`ReadOptions::label_column`]): a class name such as `running`, or a number.
    /// Empty otherwise.
    pub labels: Vec<Option<String>>,
}

impl Recording {
    pub fn len(&self) -> usize {
        self.values.first().map_or(0, Vec::len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Time of grid slot `t`.
    pub fn time_ns(&self, t: usize) -> i64 {
        self.start_ns + t as i64 * self.step_ns
    }

    /// The share of grid steps where at least one channel was observed.
    pub fn observed_share(&self) -> f64 {
        let seen = (0..self.len())
            .filter(|&t| self.observed.iter().any(|o| o[t]))
            .count();
        seen as f64 / self.len().max(1) as f64
    }

    /// The input rows, as (time, grid slot): those read, or one per slot when the recording
    /// was not read from rows.
    pub fn input_rows(&self) -> Vec<(i64, usize)> {
        if self.rows.is_empty() {
            (0..self.len()).map(|t| (self.time_ns(t), t)).collect()
        } else {
            self.rows.clone()
        }
    }

    /// Slots `from..to` (rows outside them dropped, the others' slots counted from `from`).
    pub fn slice(&self, from: usize, to: usize) -> Recording {
        Recording {
            source: self.source.clone(),
            start_ns: self.time_ns(from),
            step_ns: self.step_ns,
            channels: self.channels.clone(),
            values: self.values.iter().map(|v| v[from..to].to_vec()).collect(),
            observed: self.observed.iter().map(|o| o[from..to].to_vec()).collect(),
            rows: self
                .rows
                .iter()
                .filter(|(_, slot)| (from..to).contains(slot))
                .map(|&(time, slot)| (time, slot - from))
                .collect(),
            labels: match self.labels.is_empty() {
                true => Vec::new(),
                false => self.labels[from..to].to_vec(),
            },
        }
    }

    /// The recording with `n` slots before its first that observed nothing: a history shorter
    /// than a model's window is read as one that began with a gap.
    pub fn padded_front(&self, n: usize) -> Recording {
        let pad = |v: &Vec<f32>| [vec![0.0; n], v.clone()].concat();
        Recording {
            source: self.source.clone(),
            start_ns: self.start_ns - n as i64 * self.step_ns,
            step_ns: self.step_ns,
            channels: self.channels.clone(),
            values: self.values.iter().map(pad).collect(),
            observed: self
                .observed
                .iter()
                .map(|o| [vec![false; n], o.clone()].concat())
                .collect(),
            rows: self.rows.iter().map(|&(t, slot)| (t, slot + n)).collect(),
            labels: match self.labels.is_empty() {
                true => Vec::new(),
                false => [vec![None; n], self.labels.clone()].concat(),
            },
        }
    }

    /// Keeps only `channels`, in that order; names a missing one in the error.
    pub fn select(&self, channels: &[String]) -> Result<Recording> {
        let mut out = Recording {
            source: self.source.clone(),
            start_ns: self.start_ns,
            step_ns: self.step_ns,
            channels: channels.to_vec(),
            values: Vec::new(),
            observed: Vec::new(),
            rows: self.rows.clone(),
            labels: self.labels.clone(),
        };
        for name in channels {
            let Some(c) = self.channels.iter().position(|n| n == name) else {
                return Err(ModelError::Input {
                    path: self.source.clone(),
                    message: format!(
                        "the model needs channel `{name}`, which this file lacks (it has: {})",
                        self.channels.join(", ")
                    ),
                });
            };
            out.values.push(self.values[c].clone());
            out.observed.push(self.observed[c].clone());
        }
        Ok(out)
    }
}

/// How to read input files.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// The time column (default: the importer's guess: time, timestamp, date...).
    pub time_column: Option<String>,
    /// Channels to keep (default: every numeric column).
    pub channels: Option<Vec<String>>,
    /// Keep a chosen channel whose column is there but holds no value at all (all missing)
    /// instead of refusing it: for tasks on a model, which know the channel already and can
    /// fill or score it. Training refuses such a channel (nothing to learn it from).
    pub allow_empty_channels: bool,
    /// A column read as labels, text or numbers, into [`Recording::labels`] (not a channel).
    pub label_column: Option<String>,
}

/// Reads one file into a recording on its own grid: the importer's table
/// ([`import_file_arrow`]), then [`recording_from_batches`].
pub fn read_recording(path: &Path, options: &ReadOptions) -> Result<Recording> {
    let import = ImportOptions {
        measurement: Some("recording".into()),
        time: TimeSource::Column {
            name: options.time_column.clone(),
            epoch_unit_nanos: 1_000_000_000,
        },
        ..ImportOptions::default()
    };
    let (batch, _) = import_file_arrow(path, &import).map_err(|e| ModelError::Input {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    recording_from_batches(path, &[batch], options)
}

/// A table's rows as the model reads them: Arrow record batches.
pub type Batch = RecordBatch;

/// The `time` column of a batch, as ns since the epoch (empty when it has none).
pub fn times_of(batch: &RecordBatch) -> Vec<i64> {
    batch
        .column_by_name(TIME_COLUMN)
        .and_then(|t| cast(t, &DataType::Timestamp(TimeUnit::Nanosecond, None)).ok())
        .map(|t| {
            t.as_primitive::<TimestampNanosecondType>()
                .values()
                .to_vec()
        })
        .unwrap_or_default()
}

/// One table as a recording on its own grid: Arrow batches with a `time` timestamp column
/// (a file through the importer, or a lake table's query result) and numeric columns, the
/// channels; `options.label_column` is read as text. Rows may come in any order; every row
/// is kept in [`Recording::rows`], a row without any value too. `source` names the table in
/// errors.
pub fn recording_from_batches(
    source: &Path,
    batches: &[RecordBatch],
    options: &ReadOptions,
) -> Result<Recording> {
    let input = |message: String| ModelError::Input {
        path: source.to_owned(),
        message,
    };
    let Some(first) = batches.first() else {
        return Err(input("no rows".into()));
    };
    let table = concat_batches(&first.schema(), batches).map_err(|e| input(e.to_string()))?;
    let schema = table.schema();
    let column = |name: &str| schema.index_of(name).ok().map(|i| table.column(i).clone());
    let time = column(TIME_COLUMN)
        .ok_or_else(|| input(format!("no `{TIME_COLUMN}` column")))
        .and_then(|t| {
            cast(&t, &DataType::Timestamp(TimeUnit::Nanosecond, None))
                .map_err(|e| input(format!("the `{TIME_COLUMN}` column is not a time: {e}")))
        })?;
    let times = time.as_primitive::<TimestampNanosecondType>();
    let label_column = options.label_column.as_deref();
    // Numeric columns with a value are channels; one without any value cannot be learned.
    let numeric = |t: &DataType| t.is_numeric() && !matches!(t, DataType::Timestamp(..));
    let (mut names, mut empty) = (Vec::new(), Vec::new());
    for (field, array) in schema.fields().iter().zip(table.columns()) {
        let name = field.name();
        if name == TIME_COLUMN || Some(name.as_str()) == label_column {
            continue;
        }
        if array.null_count() == array.len() {
            empty.push(name.clone());
        } else if numeric(field.data_type()) {
            names.push(name.clone());
        }
    }
    if names.is_empty() {
        return Err(input("no numeric column to model".into()));
    }
    // A column with no value at all cannot be standardised or learned; left out silently, a
    // model would quietly miss a sensor its user thinks it has.
    if options.channels.is_none() && !empty.is_empty() {
        return Err(input(format!(
            "column(s) {} have no value at all (every cell empty or NaN): choose the \
             channels to model with --channels",
            empty.join(", ")
        )));
    }
    if table.num_rows() < 2 {
        return Err(input(format!(
            "{} row(s): too few to model",
            table.num_rows()
        )));
    }
    let channels: Vec<String> = options.channels.clone().unwrap_or_else(|| names.clone());
    // Each channel's values as f64 (NaN: missing), or why it has none.
    let mut columns: Vec<Vec<f64>> = Vec::with_capacity(channels.len());
    for name in &channels {
        let Some(array) = column(name).filter(|a| numeric(a.data_type())) else {
            let absent = column(name).is_none();
            let may_be_empty = options.allow_empty_channels && empty.contains(name);
            if may_be_empty {
                columns.push(vec![f64::NAN; table.num_rows()]);
                continue;
            }
            return Err(input(if absent {
                format!(
                    "`{name}` is not a column of this file: wanted {}; the file's numeric \
                     columns are {}",
                    channels.join(", "),
                    names.join(", ")
                )
            } else {
                format!("channel `{name}` has no numeric value at all")
            }));
        };
        let values = cast(&array, &DataType::Float64).map_err(|e| input(e.to_string()))?;
        let values = values.as_primitive::<Float64Type>();
        let all: Vec<f64> = (0..values.len())
            .map(|i| match values.is_valid(i) {
                true => values.value(i),
                false => f64::NAN,
            })
            .collect();
        if all.iter().all(|v| !v.is_finite()) && !options.allow_empty_channels {
            return Err(input(format!(
                "channel `{name}` has no numeric value at all"
            )));
        }
        columns.push(all);
    }
    let labels_text = match label_column {
        Some(name) => match column(name) {
            Some(array) => {
                let text = cast(&array, &DataType::Utf8).map_err(|e| input(e.to_string()))?;
                let text = text.as_string::<i32>();
                (0..text.len())
                    .map(|i| text.is_valid(i).then(|| text.value(i).to_owned()))
                    .collect()
            }
            None => vec![None; table.num_rows()],
        },
        None => Vec::new(),
    };
    // Rows in time order (a stable sort: rows at one time keep the table's order).
    let mut order: Vec<usize> = (0..table.num_rows()).collect();
    order.sort_by_key(|&i| times.value(i));
    let time_of = |i: usize| times.value(order[i]);
    // The grid: the most common step between rows (the smallest of equally common ones), so
    // gaps and the odd late row do not change it.
    let mut steps: Vec<i64> = (1..order.len())
        .map(|i| time_of(i) - time_of(i - 1))
        .filter(|&d| d > 0)
        .collect();
    if steps.is_empty() {
        return Err(input("every row has the same time".into()));
    }
    steps.sort_unstable();
    let mut step_ns = steps[0];
    let mut best = 0;
    for run in steps.chunk_by(|a, b| a == b) {
        if run.len() > best {
            best = run.len();
            step_ns = run[0];
        }
    }
    let start_ns = time_of(0);
    let last = time_of(order.len() - 1);
    let slots = ((last - start_ns) as f64 / step_ns as f64).round() as usize + 1;
    let mut values = vec![vec![0.0f32; slots]; channels.len()];
    let mut observed = vec![vec![false; slots]; channels.len()];
    let mut rows = Vec::with_capacity(order.len());
    let mut labels: Vec<Option<String>> = match label_column {
        Some(_) => vec![None; slots],
        None => Vec::new(),
    };
    for (i, &row) in order.iter().enumerate() {
        let time = time_of(i);
        let slot = ((time - start_ns) as f64 / step_ns as f64).round() as usize;
        rows.push((time, slot));
        for (c, column) in columns.iter().enumerate() {
            let v = column[row];
            if v.is_finite() {
                values[c][slot] = v as f32;
                observed[c][slot] = true;
            }
        }
        if let Some(label) = labels_text.get(row).cloned().flatten() {
            labels[slot] = Some(label);
        }
    }
    Ok(Recording {
        source: source.to_owned(),
        start_ns,
        step_ns,
        channels,
        values,
        observed,
        rows,
        labels,
    })
}

/// Per-channel mean and standard deviation, from training data only; saved with the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalizer {
    pub channels: Vec<String>,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

impl Normalizer {
    /// Statistics over the observed values of the first `share` (0..=1) of each recording:
    /// the training part, so validation data never leaks into the model.
    pub fn fit(recordings: &[Recording], share: f64) -> Normalizer {
        let ends: Vec<usize> = recordings
            .iter()
            .map(|r| ((r.len() as f64 * share).ceil() as usize).min(r.len()))
            .collect();
        Normalizer::fit_rows(recordings, &ends)
    }

    /// Statistics over the observed values of rows `..ends[i]` of recording i (a training
    /// split's ends, `TrainConfig::training_ends`; 0 leaves a recording out).
    pub fn fit_rows(recordings: &[Recording], ends: &[usize]) -> Normalizer {
        let channels = recordings[0].channels.clone();
        let mut mean = Vec::new();
        let mut std = Vec::new();
        for c in 0..channels.len() {
            let (mut n, mut sum, mut sum2) = (0.0f64, 0.0f64, 0.0f64);
            for (r, &end) in recordings.iter().zip(ends) {
                for t in 0..end.min(r.len()) {
                    if r.observed[c][t] {
                        let v = r.values[c][t] as f64;
                        n += 1.0;
                        sum += v;
                        sum2 += v * v;
                    }
                }
            }
            let m = if n > 0.0 { sum / n } else { 0.0 };
            let var = if n > 1.0 {
                (sum2 / n - m * m).max(0.0)
            } else {
                0.0
            };
            mean.push(m as f32);
            // A constant channel keeps unit scale rather than dividing by zero.
            std.push(if var > 1e-12 { var.sqrt() as f32 } else { 1.0 });
        }
        Normalizer {
            channels,
            mean,
            std,
        }
    }

    pub fn apply(&self, r: &Recording) -> Recording {
        let mut out = r.clone();
        for c in 0..out.channels.len() {
            for v in &mut out.values[c] {
                *v = (*v - self.mean[c]) / self.std[c];
            }
        }
        out
    }

    pub fn invert(&self, channel: usize, value: f32) -> f32 {
        value * self.std[channel] + self.mean[channel]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn irregular_rows_land_on_a_grid_with_gaps_masked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.csv");
        std::fs::write(
            &file,
            "time,a,b,label\n\
             2024-01-01T00:00:00Z,1,10,x\n\
             2024-01-01T00:01:00Z,2,,x\n\
             2024-01-01T00:02:01Z,3,30,x\n\
             2024-01-01T00:05:00Z,6,60,x\n",
        )
        .unwrap();
        let r = read_recording(&file, &ReadOptions::default()).unwrap();
        assert_eq!(r.channels, ["a", "b"]);
        assert_eq!(r.step_ns, 60_000_000_000);
        assert_eq!(r.len(), 6);
        assert_eq!(r.observed[0], [true, true, true, false, false, true]);
        assert_eq!(r.observed[1], [true, false, true, false, false, true]);
        assert_eq!(r.values[0][5], 6.0);
        let n = Normalizer::fit(std::slice::from_ref(&r), 1.0);
        assert!((n.mean[0] - 3.0).abs() < 1e-6);
        let missing = r.select(&["c".into()]).unwrap_err().to_string();
        assert!(
            missing.contains("`c`") && missing.contains("a, b"),
            "{missing}"
        );
    }

    #[test]
    fn files_without_numbers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("words.csv");
        std::fs::write(
            &file,
            "time,name\n2024-01-01T00:00:00Z,a\n2024-01-01T00:01:00Z,b\n",
        )
        .unwrap();
        let e = read_recording(&file, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("words.csv") && e.contains("no numeric column"),
            "{e}"
        );
    }

    #[test]
    fn a_column_with_no_value_at_all_is_refused_unless_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dead.csv");
        std::fs::write(
            &file,
            "time,a,dead,b
\
             2024-01-01T00:00:00Z,1,NaN,5
\
             2024-01-01T00:01:00Z,2,,6
\
             2024-01-01T00:02:00Z,3,nan,7
",
        )
        .unwrap();
        let e = read_recording(&file, &ReadOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dead.csv")
                && e.contains("dead have no value at all")
                && e.contains("--channels"),
            "{e}"
        );
        let chosen = ReadOptions {
            channels: Some(vec!["a".into(), "b".into()]),
            ..ReadOptions::default()
        };
        assert_eq!(read_recording(&file, &chosen).unwrap().channels, ["a", "b"]);
        let asked = ReadOptions {
            channels: Some(vec!["a".into(), "dead".into()]),
            ..ReadOptions::default()
        };
        let e = read_recording(&file, &asked).unwrap_err().to_string();
        assert!(e.contains("`dead` has no numeric value at all"), "{e}");
        // A task on a model that knows the channel reads it as all missing, to fill it; a
        // column the file does not have at all is still refused.
        let task = ReadOptions {
            allow_empty_channels: true,
            ..asked
        };
        let r = read_recording(&file, &task).unwrap();
        assert_eq!(r.channels, ["a", "dead"]);
        assert!(r.observed[1].iter().all(|&o| !o) && r.observed[0].iter().all(|&o| o));
        let absent = ReadOptions {
            channels: Some(vec!["a".into(), "nowhere".into()]),
            ..task
        };
        let e = read_recording(&file, &absent).unwrap_err().to_string();
        assert!(
            e.contains("`nowhere` is not a column of this file: wanted a, nowhere; the file's numeric columns are a"),
            "{e}"
        );
    }
}
