//! Each sensor's latest reading, judged against its spec: `ok`, `stale` (nothing for three
//! of its sampling periods), `out_of_range` (outside the spec's expected range) or `no_data`;
//! and an asset's state, the worst of its sensors'. Plain data, updated from write batches;
//! no lake, no clock of its own (the caller says what time it is).

use std::collections::HashMap;

use doppel_core::columnar::{ColumnValues, TableRows};
use doppel_core::spec::TwinSpec;
use serde::Serialize;

/// How far to trust a sensor's latest value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Quality {
    Ok,
    /// No reading for three of the sensor's sampling periods.
    Stale,
    /// Never read since the twin started.
    NoData,
    /// The latest value lies outside the spec's expected range.
    OutOfRange,
}

/// An asset at a glance: the worst of its sensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AssetState {
    Ok,
    /// Some sensor is stale or has sent nothing: what the twin shows may be old.
    Stale,
    /// An alert of warning severity is open.
    Warning,
    /// Some sensor reads outside its expected range, or a critical alert is open.
    Alarm,
    /// A status sensor says the asset is out of service for maintenance or repair (its spec's
    /// `maintenance` codes): what it reads and the alerts it raises are expected, so this
    /// wins over the rest.
    Maintenance,
}

/// How many of a sampling period pass without a reading before a sensor is stale.
pub const STALE_PERIODS: i64 = 3;

/// A series as batches name it: measurement and tags sorted by key.
type SeriesKey = (String, Vec<(String, String)>);

/// The latest reading of every sensor of a spec.
pub struct LiveState {
    spec: TwinSpec,
    /// (measurement, sorted tags) → (field, sensor index) for the sensors of that series.
    series: HashMap<SeriesKey, Vec<(String, usize)>>,
    /// Per sensor: time (ns) and value of its latest reading.
    latest: Vec<Option<(i64, f64)>>,
}

impl LiveState {
    pub fn new(spec: TwinSpec) -> Self {
        let mut series: HashMap<_, Vec<(String, usize)>> = HashMap::new();
        for (i, sensor) in spec.sensors.iter().enumerate() {
            let tags: Vec<(String, String)> = sensor
                .tags
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(); // a BTreeMap: sorted by key, as batches hold tags
            series
                .entry((sensor.measurement.clone(), tags))
                .or_default()
                .push((sensor.field.clone(), i));
        }
        let latest = vec![None; spec.sensors.len()];
        LiveState {
            spec,
            series,
            latest,
        }
    }

    pub fn spec(&self) -> &TwinSpec {
        &self.spec
    }

    /// Takes in one table's rows of a durable batch: each sensor of the spec found there
    /// keeps its newest numeric value (booleans as 0 and 1; text is not a reading), and
    /// `each` sees every reading as (sensor, time, value).
    pub fn observe(&mut self, rows: &TableRows, mut each: impl FnMut(usize, i64, f64)) {
        for (series_index, tags) in rows.series.iter().enumerate() {
            let Some(sensors) = self.series.get(&(rows.measurement.clone(), tags.clone())) else {
                continue;
            };
            for (field, sensor) in sensors {
                let Some(column) = rows.fields.iter().find(|c| &c.name == field) else {
                    continue;
                };
                for row in 0..rows.times.len() {
                    if rows.series_of_row[row] as usize != series_index || !column.is_valid(row) {
                        continue;
                    }
                    let value = match &column.values {
                        ColumnValues::Float(v) => v[row],
                        ColumnValues::Integer(v) => v[row] as f64,
                        ColumnValues::UInteger(v) => v[row] as f64,
                        ColumnValues::Boolean(v) => f64::from(u8::from(v[row])),
                        ColumnValues::String(_) => continue,
                    };
                    let time = rows.times[row];
                    each(*sensor, time, value);
                    let latest = &mut self.latest[*sensor];
                    if latest.is_none_or(|(t, _)| time >= t) {
                        *latest = Some((time, value));
                    }
                }
            }
        }
    }

    /// Sensor `i`'s latest reading, if any.
    pub fn latest(&self, i: usize) -> Option<(i64, f64)> {
        self.latest[i]
    }

    /// Sets a sensor's latest reading (the twin's start, from the lake's last values).
    pub fn set_latest(&mut self, i: usize, time: i64, value: f64) {
        if self.latest[i].is_none_or(|(t, _)| time >= t) {
            self.latest[i] = Some((time, value));
        }
    }

    /// Sensor `i`'s quality at time `now` (ns).
    pub fn quality(&self, i: usize, now: i64) -> Quality {
        let sensor = &self.spec.sensors[i];
        match self.latest[i] {
            None => Quality::NoData,
            Some((_, v))
                if sensor.min.is_some_and(|m| v < m) || sensor.max.is_some_and(|m| v > m) =>
            {
                Quality::OutOfRange
            }
            Some((t, _)) if now - t > STALE_PERIODS * sensor.period_nanos => Quality::Stale,
            Some(_) => Quality::Ok,
        }
    }

    /// The state of asset `id` at `now`: `maintenance` when a fresh status reading says so,
    /// else the worst of its sensors' qualities (an asset without sensors is `ok`).
    pub fn asset_state(&self, id: &str, now: i64) -> AssetState {
        let in_maintenance = self.spec.sensors.iter().enumerate().any(|(i, sensor)| {
            sensor.asset == id
                && !sensor.maintenance.is_empty()
                && self.quality(i, now) == Quality::Ok
                && self.latest[i].is_some_and(|(_, v)| sensor.means_maintenance(v))
        });
        if in_maintenance {
            return AssetState::Maintenance;
        }
        let worst = (0..self.spec.sensors.len())
            .filter(|&i| self.spec.sensors[i].asset == id)
            .map(|i| self.quality(i, now))
            .max();
        match worst {
            Some(Quality::OutOfRange) => AssetState::Alarm,
            Some(Quality::Stale | Quality::NoData) => AssetState::Stale,
            _ => AssetState::Ok,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doppel_core::columnar::ColumnarBatch;
    use doppel_core::{FieldValue, Point, WriteBatch};

    const SPEC: &str = r#"
[[site]]
id = "s"
[[asset]]
id = "p1"
site = "s"
kind = "pump"
[[sensor]]
id = "p1.speed"
asset = "p1"
unit = "1"
min = 0.0
max = 1.0
period = "10s"
measurement = "pumps"
tags = { asset = "p1" }
field = "speed"
[[sensor]]
id = "p1.on"
asset = "p1"
unit = "1"
period = "1m"
measurement = "pumps"
tags = { asset = "p1" }
field = "on"
[[sensor]]
id = "p1.status"
asset = "p1"
unit = "code"
period = "1m"
measurement = "pumps"
tags = { asset = "p1" }
field = "status"
maintenance = [3, 4]
"#;

    fn batch(points: Vec<(&str, &str, FieldValue, i64)>) -> ColumnarBatch {
        let batch = WriteBatch {
            database: "plant".into(),
            points: points
                .into_iter()
                .map(|(asset, field, value, time)| Point {
                    measurement: "pumps".into(),
                    tags: vec![("asset".into(), asset.into())],
                    fields: vec![(field.into(), value)],
                    time,
                })
                .collect(),
        };
        ColumnarBatch::from_points(&batch).0
    }

    /// The newest reading of the spec's own series wins, whatever the order in the batch;
    /// other series are ignored; quality follows range and age; the asset, the worst.
    #[test]
    fn latest_values_and_their_quality() {
        let spec = doppel_core::spec::parse(SPEC, std::path::Path::new("t.toml")).unwrap();
        let mut state = LiveState::new(spec);
        let s = 1_000_000_000;
        let b = batch(vec![
            ("p1", "speed", FieldValue::Float(0.7), 20 * s),
            ("p1", "speed", FieldValue::Float(0.5), 10 * s),
            ("p2", "speed", FieldValue::Float(0.9), 30 * s),
            ("p1", "on", FieldValue::Boolean(true), 10 * s),
            ("p1", "status", FieldValue::Float(1.0), 10 * s),
        ]);
        for rows in &b.tables {
            state.observe(rows, |_, _, _| {});
        }
        assert_eq!(state.latest(0), Some((20 * s, 0.7)));
        assert_eq!(state.latest(1), Some((10 * s, 1.0)));
        assert_eq!(state.quality(0, 30 * s), Quality::Ok);
        assert_eq!(
            state.quality(0, 51 * s),
            Quality::Stale,
            "three periods of 10 s passed"
        );
        assert_eq!(state.asset_state("p1", 30 * s), AssetState::Ok);
        let high = batch(vec![("p1", "speed", FieldValue::Float(1.5), 40 * s)]);
        state.observe(&high.tables[0], |_, _, _| {});
        assert_eq!(state.quality(0, 41 * s), Quality::OutOfRange);
        assert_eq!(state.asset_state("p1", 41 * s), AssetState::Alarm);
    }

    /// A fresh status reading with one of the spec's maintenance codes puts the asset in
    /// maintenance whatever its other sensors read; a running code or a stale status does not.
    #[test]
    fn a_maintenance_code_puts_the_asset_in_maintenance() {
        let spec = doppel_core::spec::parse(SPEC, std::path::Path::new("t.toml")).unwrap();
        let mut state = LiveState::new(spec);
        let s = 1_000_000_000;
        let feed = |state: &mut LiveState, points| {
            for rows in &batch(points).tables {
                state.observe(rows, |_, _, _| {});
            }
        };
        feed(
            &mut state,
            vec![
                ("p1", "speed", FieldValue::Float(1.5), 10 * s),
                ("p1", "on", FieldValue::Boolean(true), 10 * s),
                ("p1", "status", FieldValue::Float(1.0), 10 * s),
            ],
        );
        assert_eq!(state.asset_state("p1", 12 * s), AssetState::Alarm);
        feed(
            &mut state,
            vec![("p1", "status", FieldValue::Float(3.0), 20 * s)],
        );
        assert_eq!(state.asset_state("p1", 22 * s), AssetState::Maintenance);
        feed(
            &mut state,
            vec![("p1", "status", FieldValue::Integer(4), 30 * s)],
        );
        assert_eq!(state.asset_state("p1", 32 * s), AssetState::Maintenance);
        assert_eq!(
            state.asset_state("p1", 30 * s + 181 * s),
            AssetState::Alarm,
            "a status three minutes old no longer says the asset is in maintenance"
        );
    }
}
