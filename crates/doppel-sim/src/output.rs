//! Where a recorded run goes: tables on disk (CSV or Parquet, chosen by the file name) and
//! points for the lake or line protocol.
//!
//! A run writes three files: the readings (`time` plus one column per sensor, empty where the
//! sensor reported nothing), the labels next to them (`NAME.labels.EXT`: each asset's status
//! and health, the true value behind every sensor, and one column per disruption saying when
//! it was active) and the drawn events (`NAME.events.json`). Rows are written in batches as
//! the run goes, so a year-long run needs little memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, StringBuilder, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use doppel_core::{FieldValue, Point};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::{Result, SimError};
use crate::plant::{Plant, Readings, SensorSpec};
use crate::run::{Observer, StepView};
use crate::scenario::Event;

const BATCH_ROWS: usize = 8192;

/// The table format, from the file name's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Parquet,
}

impl Format {
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("csv") => Ok(Format::Csv),
            Some("parquet") => Ok(Format::Parquet),
            _ => Err(SimError::Output {
                path: path.to_owned(),
                message: "name the file .csv or .parquet so doppel knows which to write".into(),
            }),
        }
    }
}

/// `run.parquet` → `run.labels.parquet`.
pub fn labels_path(readings: &Path) -> PathBuf {
    sibling(
        readings,
        "labels",
        readings
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("csv"),
    )
}

/// `run.parquet` → `run.events.json`.
pub fn events_path(readings: &Path) -> PathBuf {
    sibling(readings, "events", "json")
}

fn sibling(path: &Path, tag: &str, ext: &str) -> PathBuf {
    let stem = path
        .file_stem()
        .map_or("run".into(), |s| s.to_string_lossy().into_owned());
    path.with_file_name(format!("{stem}.{tag}.{ext}"))
}

enum Sink {
    Csv(Box<arrow::csv::Writer<File>>),
    Parquet(Box<ArrowWriter<File>>),
}

/// A column being filled.
enum Column {
    Float(Float64Builder),
    Text(StringBuilder),
    Flag(BooleanBuilder),
}

/// One table written batch by batch.
struct TableWriter {
    path: PathBuf,
    schema: SchemaRef,
    sink: Option<Sink>,
    times: Vec<i64>,
    columns: Vec<Column>,
}

impl TableWriter {
    fn create(path: &Path, fields: Vec<Field>) -> Result<Self> {
        let fail = |e: &dyn std::fmt::Display| SimError::Output {
            path: path.to_owned(),
            message: e.to_string(),
        };
        let format = Format::of(path)?;
        let mut all = vec![Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Nanosecond, None),
            false,
        )];
        all.extend(fields);
        let schema = Arc::new(Schema::new(all));
        let file = File::create(path).map_err(|e| fail(&e))?;
        let sink = match format {
            Format::Csv => Sink::Csv(Box::new(
                arrow::csv::WriterBuilder::new()
                    .with_timestamp_format("%Y-%m-%dT%H:%M:%S%.fZ".into())
                    .build(file),
            )),
            Format::Parquet => {
                // Row groups of 64 Ki rows keep memory bounded on year-long runs.
                let props = WriterProperties::builder()
                    .set_compression(Compression::SNAPPY)
                    .set_max_row_group_row_count(Some(65_536))
                    .build();
                Sink::Parquet(Box::new(
                    ArrowWriter::try_new(file, schema.clone(), Some(props))
                        .map_err(|e| fail(&e))?,
                ))
            }
        };
        let columns = schema.fields()[1..]
            .iter()
            .map(|f| match f.data_type() {
                DataType::Utf8 => Column::Text(StringBuilder::new()),
                DataType::Boolean => Column::Flag(BooleanBuilder::new()),
                _ => Column::Float(Float64Builder::new()),
            })
            .collect();
        Ok(TableWriter {
            path: path.to_owned(),
            schema,
            sink: Some(sink),
            times: Vec::new(),
            columns,
        })
    }

    fn float(&mut self, column: usize, value: Option<f64>) {
        if let Column::Float(b) = &mut self.columns[column] {
            b.append_option(value);
        }
    }

    fn text(&mut self, column: usize, value: &str) {
        if let Column::Text(b) = &mut self.columns[column] {
            b.append_value(value);
        }
    }

    fn flag(&mut self, column: usize, value: bool) {
        if let Column::Flag(b) = &mut self.columns[column] {
            b.append_value(value);
        }
    }

    fn end_row(&mut self, time_ns: i64) -> Result<()> {
        self.times.push(time_ns);
        if self.times.len() >= BATCH_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        if self.times.is_empty() {
            return Ok(());
        }
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(TimestampNanosecondArray::from(
            std::mem::take(&mut self.times),
        ))];
        for c in &mut self.columns {
            arrays.push(match c {
                Column::Float(b) => Arc::new(b.finish()),
                Column::Text(b) => Arc::new(b.finish()),
                Column::Flag(b) => Arc::new(b.finish()),
            });
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(|e| self.fail(&e))?;
        let result = match self.sink.as_mut().expect("not finished") {
            Sink::Csv(w) => w.write(&batch).map_err(|e| e.to_string()),
            Sink::Parquet(w) => w.write(&batch).map_err(|e| e.to_string()),
        };
        result.map_err(|e| self.fail(&e))
    }

    fn fail(&self, e: &dyn std::fmt::Display) -> SimError {
        SimError::Output {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        match self.sink.take() {
            Some(Sink::Parquet(w)) => w.close().map(|_| ()).map_err(|e| self.fail(&e)),
            Some(Sink::Csv(w)) => {
                let file = w.into_inner();
                file.sync_all().map_err(|e| self.fail(&e))
            }
            None => Ok(()),
        }
    }
}

/// Column-name friendly: letters, digits and `_` only.
fn column_name(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// Records a run into a readings file and a labels file.
pub struct RunRecorder {
    start_ns: i64,
    readings: TableWriter,
    labels: TableWriter,
    /// Which assets get status and health columns (pumps and chillers).
    maintained: Vec<usize>,
    sensors: usize,
}

impl RunRecorder {
    pub fn create(path: &Path, plant: &dyn Plant, events: &[Event], start_ns: i64) -> Result<Self> {
        let readings = TableWriter::create(
            path,
            plant
                .sensors()
                .iter()
                .map(|s| Field::new(&s.id, DataType::Float64, true))
                .collect(),
        )?;
        let maintained: Vec<usize> = plant
            .assets()
            .iter()
            .enumerate()
            .filter(|(_, a)| a.kind == "pump" || a.kind == "chiller")
            .map(|(i, _)| i)
            .collect();
        let mut fields = Vec::new();
        for &a in &maintained {
            let id = &plant.assets()[a].id;
            fields.push(Field::new(format!("{id}_state"), DataType::Utf8, false));
            fields.push(Field::new(format!("{id}_health"), DataType::Float64, false));
        }
        for s in plant.sensors() {
            fields.push(Field::new(
                format!("true_{}", s.id),
                DataType::Float64,
                true,
            ));
        }
        for (i, e) in events.iter().enumerate() {
            fields.push(Field::new(
                format!("disruption{}_{}", i + 1, column_name(&e.label)),
                DataType::Boolean,
                false,
            ));
        }
        let labels = TableWriter::create(&labels_path(path), fields)?;
        Ok(RunRecorder {
            start_ns,
            readings,
            labels,
            maintained,
            sensors: plant.sensors().len(),
        })
    }

    pub fn finish(mut self) -> Result<()> {
        self.readings.finish()?;
        self.labels.finish()
    }
}

impl Observer for RunRecorder {
    fn observe(&mut self, view: &StepView) -> Result<bool> {
        let time = self.start_ns + (view.t_s * 1e9).round() as i64;
        for i in 0..self.sensors {
            self.readings.float(i, view.readings.get(i));
        }
        self.readings.end_row(time)?;
        let mut c = 0;
        for &a in &self.maintained {
            let label = view.labels[a];
            let state = serde_json::to_value(label.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            self.labels.text(c, &state);
            self.labels.float(c + 1, Some(label.health));
            c += 2;
        }
        for &t in view.truth {
            self.labels.float(c, Some(t).filter(|v| v.is_finite()));
            c += 1;
        }
        for &active in view.active {
            self.labels.flag(c, active);
            c += 1;
        }
        self.labels.end_row(time)?;
        Ok(true)
    }
}

/// An event's effect as JSON, its assets, sensors or actuator by name (`"assets": ["pump2"]`),
/// not by the plant's internal index.
fn effect_by_name(event: &Event) -> serde_json::Value {
    let mut effect = serde_json::to_value(&event.effect).expect("effects serialise");
    // Serialised as {"Trip": {"assets": [1]}}: one variant, its fields inside.
    if let Some(fields) = effect
        .as_object_mut()
        .and_then(|o| o.values_mut().next())
        .and_then(|v| v.as_object_mut())
    {
        for key in ["assets", "sensors", "actuator"] {
            if let Some(value) = fields.get_mut(key) {
                *value = match key {
                    "actuator" => serde_json::json!(event.targets.first()),
                    _ => serde_json::json!(event.targets),
                };
            }
        }
    }
    effect
}

/// Writes the drawn events as JSON, with RFC 3339 times.
pub fn write_events(path: &Path, events: &[Event], start_ns: i64) -> Result<()> {
    let at = |s: f64| {
        if s.is_finite() {
            serde_json::Value::String(doppel_core::time::format_rfc3339(
                start_ns + (s * 1e9) as i64,
            ))
        } else {
            serde_json::Value::Null
        }
    };
    let list: Vec<serde_json::Value> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "label": e.label,
                "kind": e.kind,
                "targets": e.targets,
                "start": at(e.start_s),
                "end": at(e.end_s),
                "effect": effect_by_name(e),
            })
        })
        .collect();
    let text = serde_json::to_string_pretty(&list).expect("events serialise");
    std::fs::write(path, text + "\n").map_err(|e| SimError::Output {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// One series: a measurement, its tags, and which sensors are its fields.
struct Series {
    measurement: String,
    tags: Vec<(String, String)>,
    fields: Vec<(usize, String)>,
}

/// Groups a plant's sensors into series (measurement + tags), to turn readings into points.
pub struct SeriesLayout {
    series: Vec<Series>,
}

impl SeriesLayout {
    pub fn new(sensors: &[SensorSpec]) -> Self {
        let mut series: Vec<Series> = Vec::new();
        for (i, s) in sensors.iter().enumerate() {
            let mut tags = s.tags.clone();
            tags.sort();
            match series
                .iter_mut()
                .find(|x| x.measurement == s.measurement && x.tags == tags)
            {
                Some(x) => x.fields.push((i, s.field.clone())),
                None => series.push(Series {
                    measurement: s.measurement.clone(),
                    tags,
                    fields: vec![(i, s.field.clone())],
                }),
            }
        }
        SeriesLayout { series }
    }

    /// One point per series that has at least one reading; missing readings are left out.
    pub fn points(&self, readings: &Readings, time_ns: i64, out: &mut Vec<Point>) {
        for series in &self.series {
            let values: Vec<(String, FieldValue)> = series
                .fields
                .iter()
                .filter_map(|(i, name)| {
                    readings
                        .get(*i)
                        .map(|v| (name.clone(), FieldValue::Float(v)))
                })
                .collect();
            if !values.is_empty() {
                out.push(Point {
                    measurement: series.measurement.clone(),
                    tags: series.tags.clone(),
                    fields: values,
                    time: time_ns,
                });
            }
        }
    }
}
