//! How the forecast bands did on the live plant: every band the twin wrote to
//! `doppel_forecast` whose minute has come is set against that minute's mean reading, and
//! counted inside, below or above. The validation coverage on the model's card says how the
//! bands did on held-out history; this says whether they still hold on the plant now, hour by
//! hour. Reads the lake only; decides nothing.

use doppel_core::time::format_rfc3339;
use serde::Serialize;

use super::FORECASTS_TABLE;
use crate::twin::{Twin, TwinError, ident, int_at, text_at, where_tags};

/// One sensor's bands at one horizon, against what came.
#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub sensor: String,
    /// `30m`: how far ahead the bands were made.
    pub horizon: String,
    /// Bands whose minute has a reading.
    pub due: u64,
    /// Shares of those with the reading inside the band, below it and above it.
    pub inside: f64,
    pub below: f64,
    pub above: f64,
    /// Each hour: its start (ms since the epoch), the share inside, and how many came due.
    pub hourly: Vec<(i64, f64, u64)>,
}

/// The bands due over the last `window_ns` of data time, per sensor and horizon.
pub async fn live_coverage(twin: &Twin, window_ns: i64) -> Result<Vec<Coverage>, TwinError> {
    let lake = twin.lake();
    let Some(now) = twin.data_now() else {
        return Ok(Vec::new());
    };
    if lake.fields_of(twin.bucket(), FORECASTS_TABLE).is_empty() {
        return Ok(Vec::new());
    }
    let since = now - window_ns;
    let pairs_sql = format!(
        "SELECT DISTINCT CAST(sensor AS VARCHAR) AS sensor, CAST(horizon AS VARCHAR) AS horizon \
         FROM {} WHERE time >= '{}' ORDER BY 1, 2",
        ident(FORECASTS_TABLE),
        format_rfc3339(since)
    );
    let mut pairs = Vec::new();
    for batch in lake.query(twin.bucket(), &pairs_sql).await?.1 {
        for row in 0..batch.num_rows() {
            if let (Some(s), Some(h)) = (text_at(&batch, 0, row), text_at(&batch, 1, row)) {
                pairs.push((s, h));
            }
        }
    }
    let spec = twin.spec();
    let mut out = Vec::new();
    for (sensor_id, horizon) in pairs {
        // A band for a sensor the spec no longer has, or not yet written, has nothing to meet.
        let Some(sensor) = spec.sensors.iter().find(|s| s.id == sensor_id) else {
            continue;
        };
        if !lake
            .fields_of(twin.bucket(), &sensor.measurement)
            .contains(&sensor.field)
        {
            continue;
        }
        let sql = format!(
            "WITH actual AS (SELECT date_bin(INTERVAL '60 seconds', time, TIMESTAMP \
             '1970-01-01T00:00:00Z') AS minute, avg(CAST({field} AS DOUBLE)) AS v FROM {m}{w} \
             AND time >= '{since}' GROUP BY 1), \
             bands AS (SELECT time, p10, p90 FROM {f} WHERE sensor = '{s}' AND horizon = '{h}' \
             AND time >= '{since}') \
             SELECT CAST(date_bin(INTERVAL '1 hour', bands.time, TIMESTAMP \
             '1970-01-01T00:00:00Z') AS BIGINT) AS hour, count(*) AS due, \
             sum(CASE WHEN actual.v < bands.p10 THEN 1 ELSE 0 END) AS below, \
             sum(CASE WHEN actual.v > bands.p90 THEN 1 ELSE 0 END) AS above \
             FROM bands JOIN actual ON bands.time = actual.minute GROUP BY 1 ORDER BY 1",
            field = ident(&sensor.field),
            m = ident(&sensor.measurement),
            w = where_tags(&sensor.tags),
            f = ident(FORECASTS_TABLE),
            s = sensor_id.replace('\'', "''"),
            h = horizon.replace('\'', "''"),
            since = format_rfc3339(since),
        );
        let (mut due, mut below, mut above) = (0, 0, 0);
        let mut hourly = Vec::new();
        for batch in lake.query(twin.bucket(), &sql).await?.1 {
            for row in 0..batch.num_rows() {
                let count = |c: usize| int_at(&batch, c, row).unwrap_or(0).max(0) as u64;
                let (n, lo, hi) = (count(1), count(2), count(3));
                if let Some(hour) = int_at(&batch, 0, row).filter(|_| n > 0) {
                    hourly.push((hour / 1_000_000, (n - lo - hi) as f64 / n as f64, n));
                }
                (due, below, above) = (due + n, below + lo, above + hi);
            }
        }
        if due == 0 {
            continue;
        }
        let share = |k: u64| k as f64 / due as f64;
        out.push(Coverage {
            sensor: sensor_id,
            horizon,
            due,
            inside: share(due - below - above),
            below: share(below),
            above: share(above),
            hourly,
        });
    }
    Ok(out)
}
