//! The sensor model at work on the live twin. When the twin has history enough and no model
//! of its own, one is pretrained in the background from the lake (the twin's sensors as
//! minute means), registered as `twin-<bucket>` in the data directory's registry, calibrated
//! on the rows it never trained on, and put to work: every minute of data time it scores the
//! latest window, per asset, with each sensor's share of the score, and writes the scores
//! back into the lake. Which detector the rules see (`anomaly(asset)`) is measured, not
//! assumed (`choice`). Never serves HTTP; writes only scores, through the twin.

pub mod backtest;
pub mod choice;
pub mod coverage;
pub mod fit;
pub mod forecasts;
mod training;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use doppel_core::time::format_rfc3339;
use doppel_model::card::LiveScoring;
use doppel_model::forecaster::Forecaster;
use doppel_model::registry::Registry;
use doppel_model::tasks::reconstruction_errors;
use doppel_model::tasks::{FollowDrift, forecast_with_head};
use doppel_model::{ModelCard, Recording, SensorModel};
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::json;

use crate::twin::{Twin, float_at, ident, int_at, where_tags};
use choice::{group_statistic, rank};

/// The grid the twin's model reads: one row a minute (each sensor's mean over it).
pub const STEP_NS: i64 = 60_000_000_000;
/// The table the model's per-sensor shares of each asset's score go to (tags `asset`,
/// `sensor`; field `share`), a row a sensor a minute, beside `doppel_anomaly`.
pub const CONTRIBUTIONS_TABLE: &str = "doppel_anomaly_sensors";

/// How the twin gets and uses its model.
#[derive(Debug, Clone)]
pub struct ModelSettings {
    /// Pretrain one in the background when none is registered.
    pub train: bool,
    /// Pretraining steps.
    pub steps: usize,
    /// History (data time) the twin waits for before it trains.
    pub min_history_ns: i64,
    /// History it trains on, at most (the latest).
    pub history_ns: i64,
    /// Data time between retrainings (a new version goes to work only when it beats the
    /// live one on the most recent day).
    pub retrain_every_ns: i64,
}

impl Default for ModelSettings {
    fn default() -> Self {
        ModelSettings {
            train: true,
            steps: 600,
            min_history_ns: 12 * 3600 * 1_000_000_000,
            history_ns: 7 * 86_400 * 1_000_000_000,
            retrain_every_ns: 86_400 * 1_000_000_000,
        }
    }
}

/// Where the twin's model stands, as `GET /api/v1/models` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ModelStatus {
    /// The registry name of the twin's model.
    pub name: String,
    /// `waiting` (for history), `training`, `live`, `failed` or `off`.
    pub state: &'static str,
    /// What it is doing, in words.
    pub message: String,
    pub step: usize,
    pub steps: usize,
    pub loss: Option<f64>,
    /// The registered version at work.
    pub live_version: Option<u32>,
    /// The detector the rules see: `model`, `pca` or `both`.
    pub detector: Option<String>,
}

/// One asset's latest score from the model: where the minute falls among the held-out
/// minutes (0 to 1), and each sensor's share of it, largest first.
#[derive(Debug, Clone, Serialize)]
pub struct ModelScore {
    pub score: f64,
    pub time: String,
    #[serde(skip)]
    pub minute: i64,
    pub sensors: Vec<(String, f64)>,
}

/// What the twin shares with its model's worker.
pub struct ModelWork {
    pub status: RwLock<ModelStatus>,
    pub scores: RwLock<BTreeMap<String, ModelScore>>,
    /// The latest forecasts the rules read.
    pub forecasts: RwLock<Vec<forecasts::Band>>,
    /// Each asset's recent minute scores, for the drift check.
    recent: parking_lot::Mutex<BTreeMap<String, std::collections::VecDeque<f64>>>,
}

/// The alert the twin raises when an asset's model scores drift away from their calibration.
pub const DRIFT_ALERT: &str = "anomaly scores drifting";
/// Minutes of scores the drift check reads.
const DRIFT_WINDOW: usize = 360;
/// Calibrated, a twentieth of minutes score above 0.95; drifting from five times that, and
/// back once under twice that.
const DRIFT_OPENS: f64 = 0.25;
const DRIFT_CLOSES: f64 = 0.10;

impl ModelWork {
    pub fn new(name: String, settings: &ModelSettings) -> ModelWork {
        ModelWork {
            status: RwLock::new(ModelStatus {
                name,
                state: if settings.train { "waiting" } else { "off" },
                message: if settings.train {
                    "waiting for history".into()
                } else {
                    "no model is trained or used (--no-model)".into()
                },
                step: 0,
                steps: settings.steps,
                loss: None,
                live_version: None,
                detector: None,
            }),
            scores: RwLock::new(BTreeMap::new()),
            forecasts: RwLock::new(Vec::new()),
            recent: Default::default(),
        }
    }

    fn set(&self, state: &'static str, message: String) {
        let mut status = self.status.write();
        status.state = state;
        status.message = message;
    }

    /// A new message, the state as it is.
    fn note(&self, message: String) {
        self.status.write().message = message;
    }

    /// `model` is at work.
    fn went_live(&self, model: &LiveModel) {
        let mut status = self.status.write();
        status.state = "live";
        status.message = format!(
            "version {} at work: {}",
            model.version, model.scoring.choice.why
        );
        status.live_version = Some(model.version);
        status.detector = Some(model.scoring.choice.detector.clone());
        tracing::info!(version = model.version, why = %model.scoring.choice.why, "the twin's model is at work");
    }
}

/// The twin's model as `GET /api/v1/models` shows it: what it is doing, and every
/// registered version of it, with the one at work marked `live`.
pub fn view(twin: &Twin) -> serde_json::Value {
    let status = twin.models().status.read().clone();
    let registry = Registry::in_data_dir(twin.lake().dir());
    let versions: Vec<serde_json::Value> = registry
        .list()
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.name == status.name)
        .map(|e| {
            let kept = e.card.kept_point().cloned();
            serde_json::json!({
                "version": e.version,
                "live": Some(e.version) == status.live_version,
                "created": e.created.map(|t| format_rfc3339(
                    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64))),
                "parameters": e.card.parameters,
                "sensors": e.card.channels.len(),
                "trained_on": e.card.data,
                "steps": e.card.train.steps,
                "validation_loss": kept.map(|p| p.validation_loss),
                "detector": e.card.live_scoring.as_ref().map(|s| &s.choice),
                "promotion": e.card.promotion,
                "curve": e.card.curve.iter().map(|p| json!([p.step, finite(p.train_loss), finite(p.validation_loss)])).collect::<Vec<_>>(),
                "forecast_head": e.card.forecast_head.as_ref().map(|h| json!({
                    "horizon": h.horizon,
                    "validation_mse": h.validation_mse,
                    "linear_validation_mse": h.linear_validation_mse,
                    "band_scores": h.band_scores,
                })),
                "path": e.path,
            })
        })
        .collect();
    serde_json::json!({
        "status": status,
        "versions": versions,
        // The share of the truth the forecast bands are meant to hold (p10 to p90).
        "coverage_target": doppel_model::bands::DEFAULT_COVERAGE,
    })
}

/// A loss for JSON: `null` where it is not a number.
fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// The registry name of a bucket's twin model (letters, digits, `-`, `_`).
pub fn model_name(bucket: &str) -> String {
    let clean: String = bucket
        .chars()
        .map(
            |c| match c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                true => c,
                false => '_',
            },
        )
        .take(58)
        .collect();
    format!("twin-{clean}")
}

/// A model at work: the weights, the forecasting head, the card.
struct LiveModel {
    model: SensorModel,
    /// The head the rules' forecasts come from, when they read any.
    forecaster: Option<Forecaster>,
    card: ModelCard,
    /// The card's `live_scoring`, checked present when the model was loaded.
    scoring: LiveScoring,
    version: u32,
}

/// How often the worker looks at the data (wall clock).
const LOOK_EVERY: Duration = Duration::from_secs(5);
/// How often a twin waiting for history looks again.
const WAIT_EVERY: Duration = Duration::from_secs(30);

/// Starts the worker thread of `twin`'s model.
pub fn start(twin: Twin, settings: ModelSettings) {
    crate::twin::spawn_worker("twin-model", work(twin, settings));
}

async fn work(twin: Twin, settings: ModelSettings) {
    let work = twin.models();
    let name = work.status.read().name.clone();
    let registry = Registry::in_data_dir(twin.lake().dir());
    let mut live: Option<LiveModel> = None;
    let mut last_scored = i64::MIN;
    let mut attempted_to = None;
    loop {
        let Some(model) = &live else {
            if let Some(found) = training::registered(&registry, &name) {
                work.went_live(&found);
                live = Some(found);
                continue;
            }
            if !settings.train {
                return;
            }
            live = training::first_model(&twin, &settings, &registry, &name).await;
            if live.is_none() {
                tokio::time::sleep(WAIT_EVERY).await;
            }
            continue;
        };
        let Some(now) = twin.data_now() else {
            tokio::time::sleep(LOOK_EVERY).await;
            continue;
        };
        let minute = now.div_euclid(STEP_NS);
        // The last whole minute is scored once.
        if minute - 1 > last_scored {
            last_scored = minute - 1;
            if let Err(e) = score_minute(&twin, model, minute - 1).await {
                tracing::warn!(error = %e, "the twin's model could not score a minute");
            }
        }
        if settings.train && training::due(model, attempted_to, now, settings.retrain_every_ns) {
            let to = minute * STEP_NS;
            attempted_to = Some(to);
            match training::retrain(&twin, &settings, &registry, &name, model, to).await {
                Ok(Some(promoted)) => live = Some(promoted),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "retraining the twin's model failed");
                    work.note(format!(
                        "version {} at work; retraining failed: {e}",
                        model.version
                    ));
                }
            }
            continue;
        }
        tokio::time::sleep(LOOK_EVERY).await;
    }
}

/// Scores the window ending with `minute` (minutes since the epoch): each asset's score and
/// its sensors' shares, kept for the views and the rules and written into the lake.
async fn score_minute(twin: &Twin, live: &LiveModel, minute: i64) -> Result<(), String> {
    let w = live.card.config.window() as i64;
    let to = (minute + 1) * STEP_NS;
    let rec = minute_recording(twin, to - w * STEP_NS, to, Some(&live.card.channels)).await?;
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    let errors =
        reconstruction_errors(&live.model, &live.card, &rec, &device).map_err(|e| e.to_string())?;
    let last = rec.len() - 1;
    let scoring = &live.scoring;
    let time = minute * STEP_NS;
    let mut scores = BTreeMap::new();
    for group in &scoring.groups {
        let statistic = group_statistic(&errors, &scoring.typical, &group.channels, last);
        if !statistic.is_finite() || group.normal.is_empty() {
            continue;
        }
        let mut sensors: Vec<(String, f64)> = group
            .channels
            .iter()
            .filter(|&&c| errors[c][last].is_finite())
            .map(|&c| {
                let part = errors[c][last] / scoring.typical[c];
                (
                    live.card.channels[c].clone(),
                    (part / statistic / group.channels.len() as f32) as f64,
                )
            })
            .collect();
        // Shares of the statistic (an average): they add up to one.
        let total: f64 = sensors.iter().map(|(_, s)| s).sum();
        for (_, s) in &mut sensors {
            *s /= total.max(f64::MIN_POSITIVE);
        }
        sensors.sort_by(|a, b| b.1.total_cmp(&a.1));
        scores.insert(
            group.name.clone(),
            ModelScore {
                score: rank(&group.normal, statistic),
                time: format_rfc3339(time),
                minute,
                sensors,
            },
        );
    }
    write_scores(twin, &scores, time);
    check_drift(twin, &scores, time);
    *twin.models().scores.write() = scores;
    // The forecasts the rules read, from the same window.
    let wanted = twin.forecasts_wanted();
    if let (Some(forecaster), Some(head)) = (&live.forecaster, &live.card.forecast_head)
        && !wanted.is_empty()
    {
        let bands = match forecast_with_head(
            forecaster,
            &live.card,
            &rec,
            head.horizon,
            FollowDrift::NOT,
            &device,
        ) {
            Ok(forecast) => forecasts::bands(&forecast, &live.card, &wanted, minute),
            Err(e) => {
                tracing::warn!(error = %e, "the twin's model could not forecast");
                Vec::new()
            }
        };
        twin.set_forecasts(&wanted, &bands);
        write_forecasts(twin, &bands);
        *twin.models().forecasts.write() = bands;
    }
    Ok(())
}

/// Scores calibrated on held-out minutes fall above their 95th percentile a twentieth of the
/// time; when an asset's last six hours do far more often, the model no longer describes
/// its normal (new operating states, sensors replaced, drift) and its scores say little:
/// that is an alert of its own, resolved once they settle.
fn check_drift(twin: &Twin, scores: &BTreeMap<String, ModelScore>, time: i64) {
    let mut changes = Vec::new();
    let mut recent = twin.models().recent.lock();
    for (asset, score) in scores {
        let window = recent.entry(asset.clone()).or_default();
        let Some((firing, high)) = drifting(window, score.score) else {
            continue;
        };
        changes.push(doppel_rules::Firing {
            rule: usize::MAX,
            name: DRIFT_ALERT.into(),
            asset: asset.clone(),
            severity: doppel_rules::Severity::Warning,
            firing,
            time,
            values: vec![("share of minutes above 0.95".into(), Some(high))],
        });
    }
    drop(recent);
    twin.apply_changes(&changes);
}

/// Adds a minute's score to an asset's window; once it is full, whether its scores drift
/// (true), have settled (false) or lie between (`None`), with the share above 0.95.
fn drifting(window: &mut std::collections::VecDeque<f64>, score: f64) -> Option<(bool, f64)> {
    window.push_back(score);
    if window.len() > DRIFT_WINDOW {
        window.pop_front();
    }
    if window.len() < DRIFT_WINDOW {
        return None;
    }
    let high = window.iter().filter(|&&s| s > 0.95).count() as f64 / window.len() as f64;
    match high {
        h if h >= DRIFT_OPENS => Some((true, h)),
        h if h < DRIFT_CLOSES => Some((false, h)),
        _ => None,
    }
}

/// The table the rules' forecasts go to (tag `sensor`, `horizon` in minutes; fields `p10`,
/// `p50`, `p90`), a row a sensor and horizon a minute, at the time forecast.
pub const FORECASTS_TABLE: &str = "doppel_forecast";

fn write_forecasts(twin: &Twin, bands: &[forecasts::Band]) {
    for band in bands {
        let Ok(time) = doppel_core::time::parse_rfc3339(&band.time) else {
            continue;
        };
        twin.send_row(doppel_core::Point {
            measurement: FORECASTS_TABLE.into(),
            tags: vec![
                ("sensor".into(), band.sensor.clone()),
                ("horizon".into(), format!("{}m", band.horizon_minutes)),
            ],
            fields: ["p10", "p50", "p90"]
                .into_iter()
                .zip([band.p10, band.p50, band.p90])
                .map(|(k, v)| (k.into(), doppel_core::FieldValue::Float(v)))
                .collect(),
            time,
        });
    }
}

/// The model's scores of one minute (data time `time`, ns) into the lake: each asset's
/// in `doppel_anomaly` (detector `model`), each sensor's share in
/// `doppel_anomaly_sensors`.
fn write_scores(twin: &Twin, scores: &BTreeMap<String, ModelScore>, time: i64) {
    for (asset, score) in scores {
        twin.send_row(doppel_core::Point {
            measurement: crate::twin::SCORES_TABLE.into(),
            tags: vec![
                ("asset".into(), asset.clone()),
                ("detector".into(), "model".into()),
            ],
            fields: vec![("score".into(), doppel_core::FieldValue::Float(score.score))],
            time,
        });
        for (sensor, share) in &score.sensors {
            twin.send_row(doppel_core::Point {
                measurement: CONTRIBUTIONS_TABLE.into(),
                tags: vec![
                    ("asset".into(), asset.clone()),
                    ("sensor".into(), sensor.clone()),
                ],
                fields: vec![("share".into(), doppel_core::FieldValue::Float(*share))],
                time,
            });
        }
    }
}

/// The twin's sensors (or only `only`, in that order) as minute means over `from..to` (ns,
/// minute-aligned): a recording on a one-minute grid, gaps where no reading came.
pub async fn minute_recording(
    twin: &Twin,
    from: i64,
    to: i64,
    only: Option<&[String]>,
) -> Result<Recording, String> {
    let len = ((to - from) / STEP_NS).max(0) as usize;
    if len == 0 {
        return Err("no minutes asked for".into());
    }
    let spec = twin.spec();
    let ids: Vec<String> = match only {
        Some(ids) => ids.to_vec(),
        None => spec.sensors.iter().map(|s| s.id.clone()).collect(),
    };
    let mut values = vec![vec![0.0f32; len]; ids.len()];
    let mut observed = vec![vec![false; len]; ids.len()];
    let mut groups: BTreeMap<crate::twin::SeriesKey, Vec<(usize, String)>> = BTreeMap::new();
    for (c, id) in ids.iter().enumerate() {
        let Some(sensor) = spec.sensors.iter().find(|s| &s.id == id) else {
            return Err(format!(
                "the model reads sensor `{id}`, which the twin spec no longer has"
            ));
        };
        groups
            .entry((sensor.measurement.clone(), sensor.tags.clone()))
            .or_default()
            .push((c, sensor.field.clone()));
    }
    for ((measurement, tags), fields) in groups {
        let written = twin.lake().fields_of(twin.bucket(), &measurement);
        let fields: Vec<(usize, String)> = fields
            .into_iter()
            .filter(|(_, f)| written.contains(f))
            .collect();
        if fields.is_empty() {
            continue;
        }
        let means: Vec<String> = fields
            .iter()
            .map(|(_, f)| format!("avg(CAST({f} AS DOUBLE))", f = ident(f)))
            .collect();
        let sql = format!(
            "SELECT CAST(date_bin(INTERVAL '60 seconds', time, TIMESTAMP \
             '1970-01-01T00:00:00Z') AS BIGINT) AS t, {means} FROM {m}{w} AND time >= '{from}' \
             AND time < '{to}' GROUP BY 1",
            means = means.join(", "),
            m = ident(&measurement),
            w = where_tags(&tags),
            from = format_rfc3339(from),
            to = format_rfc3339(to),
        );
        let (_, batches) = twin
            .lake()
            .query(twin.bucket(), &sql)
            .await
            .map_err(|e| e.to_string())?;
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let Some(t) = int_at(batch, 0, row) else {
                    continue;
                };
                let slot = (t - from).div_euclid(STEP_NS);
                if !(0..len as i64).contains(&slot) {
                    continue;
                }
                for (k, (c, _)) in fields.iter().enumerate() {
                    if let Some(v) = float_at(batch, k + 1, row) {
                        values[*c][slot as usize] = v as f32;
                        observed[*c][slot as usize] = true;
                    }
                }
            }
        }
    }
    Ok(Recording {
        source: PathBuf::from(format!("lake:{}", twin.bucket())),
        start_ns: from,
        step_ns: STEP_NS,
        channels: ids,
        values,
        observed,
        rows: Vec::new(),
        labels: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calibrated scores (a twentieth above 0.95) never say drift; a stretch of high ones
    /// does once it is a quarter of the window, and it settles again under a tenth.
    #[test]
    fn drift_opens_on_many_high_scores_and_closes_when_they_settle() {
        let mut window = std::collections::VecDeque::new();
        let calibrated = |i: usize| if i.is_multiple_of(20) { 0.97 } else { 0.5 };
        for i in 0..DRIFT_WINDOW - 1 {
            assert_eq!(drifting(&mut window, calibrated(i)), None, "not full yet");
        }
        assert!(matches!(drifting(&mut window, 0.5), Some((false, _))));
        let mut opened = None;
        for i in 0..DRIFT_WINDOW {
            if let Some((true, share)) = drifting(&mut window, 0.99) {
                opened = Some((i, share));
                break;
            }
        }
        let (after, share) = opened.expect("drift opens");
        assert!(
            share >= DRIFT_OPENS && after < DRIFT_WINDOW / 3,
            "{after} {share}"
        );
        let mut closed = false;
        for i in 0..2 * DRIFT_WINDOW {
            if let Some((false, _)) = drifting(&mut window, calibrated(i)) {
                closed = true;
                break;
            }
        }
        assert!(closed, "settles");
    }
}
