//! The twin attached to a lake: it watches the lake's durable batches for its bucket, starts
//! from each sensor's last value in the lake, and answers with views of the plant (sites →
//! assets → sensors with their state) and of one asset with its recent readings, downsampled
//! in SQL so a week of 1-second data reaches a screen as a few thousand points.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use doppel_core::spec::{Sensor, TwinSpec};
use doppel_core::time::{format_rfc3339, now_nanos};
use doppel_lake::Lake;
use parking_lot::RwLock;
use serde::Serialize;
use serde_json::{Value, json};

use crate::alerts::{ALERTS_TABLE, Alert, Alerts, from_row, to_point};
use crate::state::{AssetState, LiveState};
use doppel_rules::{Evaluator, RuleSet, Severity};

/// A series of the lake: its table and tags.
pub(crate) type SeriesKey = (String, BTreeMap<String, String>);

/// What a twin request can get wrong.
#[derive(Debug, thiserror::Error)]
pub enum TwinError {
    #[error("no asset `{id}` in the twin; its assets: {known}")]
    UnknownAsset { id: String, known: String },
    #[error("{0}")]
    Invalid(String),
    #[error("no alert `{0}`")]
    UnknownAlert(String),
    #[error("no proposal `{0}` (GET /api/v1/proposals lists them)")]
    UnknownProposal(String),
    #[error("reading the lake failed: {0}")]
    Lake(#[from] doppel_lake::LakeError),
}

/// The live twin of one spec over one bucket of a lake. Cheap to clone.
#[derive(Clone)]
pub struct Twin {
    lake: Lake,
    bucket: String,
    pub(crate) state: Arc<RwLock<LiveState>>,
    alerts: Arc<RwLock<Alerts>>,
    /// Rows the twin writes back to the lake (alert changes, scores), written off the WAL's
    /// thread, which sees the batches.
    lake_rows: std::sync::mpsc::Sender<doppel_core::Point>,
    events: tokio::sync::broadcast::Sender<TwinEvent>,
    pub(crate) detectors: Arc<RwLock<crate::anomaly::Detectors>>,
    /// Each asset's latest anomaly score (0 to 1).
    scores: Arc<RwLock<BTreeMap<String, f64>>>,
    rules: Option<Arc<parking_lot::Mutex<Evaluator>>>,
    webhook: Option<Arc<crate::webhook::Webhook>>,
    /// The asset states last announced, and the minute of data time last scored into the lake.
    announced: Arc<parking_lot::Mutex<BTreeMap<String, AssetState>>>,
    /// Whether the data has once come within `catch_up_within` of the wall clock (ns, the
    /// spec's shortest stale window): until then the twin is catching up on history, and
    /// states are not judged.
    caught_up: Arc<std::sync::atomic::AtomicBool>,
    catch_up_within: i64,
    scored_minute: Arc<parking_lot::Mutex<i64>>,
    /// Data time of the newest reading seen (ns), and when its batch arrived.
    newest: Arc<parking_lot::Mutex<Option<(i64, std::time::Instant)>>>,
    /// The sensor model at work: its status and its latest scores.
    models: Arc<crate::models::ModelWork>,
    /// What policies at work propose.
    pub(crate) proposals: Arc<RwLock<crate::proposals::Proposals>>,
}

/// What a twin does besides keeping state: its rules, where alerts go, its model.
#[derive(Default)]
pub struct TwinOptions {
    pub rules: Option<RuleSet>,
    /// Where every alert change is POSTed.
    pub webhook: Option<crate::webhook::WebhookTarget>,
    pub model: crate::models::ModelSettings,
}

/// The table each asset's anomaly score goes to, a row a minute of data time (tags `asset`
/// and `detector`, field `score`), in the twin's bucket.
pub const SCORES_TABLE: &str = "doppel_anomaly";

/// Minutes of data time a model score stands for the rules after the minute it scored.
const MODEL_SCORE_FRESH: i64 = 3;

/// How often a quiet feed is judged at the wall clock.
const TICK_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Data this close to the wall clock is live (ns): older means history being written.
const LIVE_WITHIN: i64 = 120_000_000_000;

/// Runs `work` on a thread of its own with a single-threaded runtime: the twin's background
/// work (fitting, training, scoring) queries the lake asynchronously but must never take
/// the server's runtime threads.
pub(crate) fn spawn_worker(
    name: &str,
    work: impl std::future::Future<Output = ()> + Send + 'static,
) {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                tracing::error!("no runtime for the twin's background work");
                return;
            };
            runtime.block_on(work);
        })
        .expect("a thread for the twin's background work");
}

/// A change the twin announces, as the event stream sends it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TwinEvent {
    /// New latest readings: sensor → [time in ms since the epoch, value].
    Readings {
        values: BTreeMap<String, (i64, f64)>,
    },
    /// An asset's state changed.
    State { asset: String, state: AssetState },
    /// An alert opened, was acknowledged or resolved.
    Alert { alert: Alert },
    /// A disruption injected into the live source (`doppel up --scenario`) began.
    Disruption {
        label: String,
        targets: Vec<String>,
        time: String,
    },
    /// A policy's proposal was made, decided, executed or expired.
    Proposal {
        proposal: crate::proposals::Proposal,
    },
    /// A scenario study's progress (`/api/v1/scenario-runs`).
    ScenarioRun {
        id: String,
        state: String,
        done: u64,
        runs: usize,
    },
}

/// Events kept for a listener that falls behind; older ones are dropped for it.
const EVENT_BACKLOG: usize = 4096;

/// One sensor's recent readings, downsampled: bucket starts (ms since the epoch) and the
/// mean of each bucket (`null` where the bucket has no reading).
#[derive(Debug, Clone, Serialize)]
pub struct Readings {
    pub sensor: String,
    pub t: Vec<i64>,
    pub v: Vec<Option<f64>>,
}

impl Twin {
    /// The twin of `spec` over `bucket`: from now on every durable batch for the bucket
    /// updates it. Starts from each sensor's latest value already in the lake.
    pub async fn attach(lake: Lake, spec: TwinSpec, bucket: &str, options: TwinOptions) -> Twin {
        let webhook = options
            .webhook
            .map(|target| Arc::new(crate::webhook::Webhook::start(target)));
        let models = Arc::new(crate::models::ModelWork::new(
            crate::models::model_name(bucket),
            &options.model,
        ));
        let evaluator = options
            .rules
            .map(|r| Arc::new(parking_lot::Mutex::new(Evaluator::new(r, &spec))));
        let catch_up_within = spec
            .sensors
            .iter()
            .map(|s| crate::state::STALE_PERIODS * s.period_nanos)
            .min()
            .unwrap_or(LIVE_WITHIN)
            .min(LIVE_WITHIN);
        let state = Arc::new(RwLock::new(LiveState::new(spec)));
        let alerts = Arc::new(RwLock::new(Alerts::default()));
        let (lake_rows, rows) = std::sync::mpsc::channel::<doppel_core::Point>();
        let (events, _) = tokio::sync::broadcast::channel(EVENT_BACKLOG);
        let writer_lake = lake.clone();
        let writer_bucket = bucket.to_owned();
        std::thread::Builder::new()
            .name("twin-alerts".into())
            .spawn(move || {
                for point in rows {
                    let batch = doppel_core::WriteBatch {
                        database: writer_bucket.clone(),
                        points: vec![point],
                    };
                    // Retried while the lake is busy; given up only when it shuts down.
                    let mut delay = std::time::Duration::from_millis(100);
                    while let Err(e) = writer_lake.write_blocking(batch.clone(), false) {
                        if matches!(e, doppel_lake::LakeError::ShuttingDown) {
                            return;
                        }
                        std::thread::sleep(delay);
                        delay = (delay * 2).min(std::time::Duration::from_secs(5));
                    }
                }
            })
            .expect("a thread for the alerts' writes");
        let twin = Twin {
            lake: lake.clone(),
            bucket: bucket.to_owned(),
            state: state.clone(),
            alerts: alerts.clone(),
            lake_rows: lake_rows.clone(),
            events: events.clone(),
            detectors: Default::default(),
            scores: Default::default(),
            rules: evaluator.clone(),
            webhook,
            announced: Default::default(),
            caught_up: Default::default(),
            catch_up_within,
            scored_minute: Arc::new(parking_lot::Mutex::new(i64::MIN)),
            newest: Default::default(),
            models,
            proposals: Default::default(),
        };
        twin.start_from_the_lake().await;
        twin.restore_alerts(evaluator.as_deref()).await;
        *twin.announced.lock() = twin.restore_states().await;
        twin.restore_proposals().await;
        let watched = state;
        let database = bucket.to_owned();
        let _ = alerts;
        let watcher = twin.clone();
        lake.watch(move |batch| {
            if batch.database != database {
                return;
            }
            let mut newest = None;
            let mut readings: BTreeMap<String, (i64, f64)> = BTreeMap::new();
            {
                let mut state = watched.write();
                let mut rules = evaluator.as_ref().map(|e| e.lock());
                let ids: Vec<String> = state.spec().sensors.iter().map(|s| s.id.clone()).collect();
                for rows in &batch.tables {
                    state.observe(rows, |sensor, time, value| {
                        if let Some(rules) = rules.as_mut() {
                            rules.observe(sensor, time, value);
                        }
                        newest = newest.max(Some(time));
                        let entry = readings.entry(ids[sensor].clone()).or_insert((time, value));
                        if time >= entry.0 {
                            *entry = (time, value);
                        }
                    });
                }
            }
            let Some(newest) = newest else {
                return;
            };
            {
                let mut seen = watcher.newest.lock();
                let latest = seen.map_or(newest, |(t, _)| t.max(newest));
                *seen = Some((latest, std::time::Instant::now()));
            }
            let readings = readings
                .into_iter()
                .map(|(id, (t, v))| (id, (t / 1_000_000, v)))
                .collect();
            let _ = watcher
                .events
                .send(TwinEvent::Readings { values: readings });
            watcher.judge(newest);
        });
        crate::anomaly::start_fitting(&twin);
        twin.start_ticking();
        crate::models::start(twin.clone(), options.model);
        twin
    }

    /// Sends an event to every listener of the event stream.
    pub fn announce(&self, event: TwinEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn lake(&self) -> &Lake {
        &self.lake
    }

    /// A row for the twin's bucket, written off the caller's thread (retried while the lake is
    /// busy).
    pub(crate) fn write_row(&self, point: doppel_core::Point) {
        let _ = self.lake_rows.send(point);
    }

    /// The twin's spec.
    pub fn spec(&self) -> TwinSpec {
        self.state.read().spec().clone()
    }

    /// The sensor model at work: its status and latest scores.
    pub fn models(&self) -> &crate::models::ModelWork {
        &self.models
    }

    /// The data time the twin has reached: its newest reading (ns), from the feed or, before
    /// any batch came, from the lake.
    pub(crate) fn data_now(&self) -> Option<i64> {
        let fed = self.newest.lock().map(|(t, _)| t);
        let state = self.state.read();
        let stored = (0..state.spec().sensors.len())
            .filter_map(|i| state.latest(i).map(|(t, _)| t))
            .max();
        fed.max(stored)
    }

    /// Alerts opened or resolved (by the rules, or by the twin's own checks such as its
    /// model's drift): kept, written, announced and sent to the webhook. A change that
    /// changes nothing (opening an open alert, resolving none) is dropped.
    pub(crate) fn apply_changes(&self, changes: &[doppel_rules::Firing]) {
        let mut alerts = self.alerts.write();
        for change in changes {
            if let Some(alert) = alerts.apply(change) {
                let _ = self.lake_rows.send(to_point(&alert, change.time));
                let event = TwinEvent::Alert { alert };
                if let Some(webhook) = &self.webhook {
                    webhook.send(serde_json::to_value(&event).unwrap_or_default());
                }
                let _ = self.events.send(event);
            }
        }
    }

    /// The forecasts the rules read: (sensor, horizon ns).
    pub(crate) fn forecasts_wanted(&self) -> Vec<(String, i64)> {
        self.rules
            .as_ref()
            .map(|r| r.lock().forecasts_wanted())
            .unwrap_or_default()
    }

    /// Hands the rules their forecasts: each wanted one its band, or unknown without one.
    pub(crate) fn set_forecasts(
        &self,
        wanted: &[(String, i64)],
        bands: &[crate::models::forecasts::Band],
    ) {
        let Some(rules) = &self.rules else {
            return;
        };
        let mut rules = rules.lock();
        for (sensor, horizon) in wanted {
            let minutes = crate::models::forecasts::minutes(*horizon);
            let band = bands
                .iter()
                .find(|b| &b.sensor == sensor && b.horizon_minutes == minutes)
                .map(|b| [b.p10, b.p50, b.p90]);
            rules.set_forecast(sensor, *horizon, band);
        }
    }

    /// Queues a row for the lake (scores, alert changes), written off the WAL's thread.
    pub(crate) fn send_row(&self, point: doppel_core::Point) {
        let _ = self.lake_rows.send(point);
    }

    /// After readings up to data time `now`: each asset's anomaly score (for the rules, the
    /// views and, once a minute of data time, the lake), the rules judged (alerts opened or
    /// resolved: written, announced, sent to the webhook), then the asset states that changed
    /// (by the wall clock, as the views judge them) announced, once the data is live.
    fn judge(&self, now: i64) {
        let announce = |event: TwinEvent| {
            // No listener is not an error.
            let _ = self.events.send(event);
        };
        {
            let state = self.state.read();
            let detectors = self.detectors.read();
            let mut scores = self.scores.write();
            let detector = self.models.status.read().detector.clone();
            let model_scores = self.models.scores.read();
            let mut pca_scores = BTreeMap::new();
            for asset in &state.spec().assets {
                let asset = &asset.id;
                // An asset with a sensor unread or stale has no PCA score.
                let pca = detectors.assets.get(asset).and_then(|detector| {
                    let row: Option<Vec<f64>> = detector
                        .sensors
                        .iter()
                        .map(|&i| {
                            state
                                .latest(i)
                                .filter(|_| state.quality(i, now) != crate::Quality::Stale)
                                .map(|(_, v)| v)
                        })
                        .collect();
                    row.map(|r| detector.score(&r))
                });
                // The model's score of a recent minute (it scores whole minutes).
                let model = model_scores
                    .get(asset)
                    .filter(|m| now.div_euclid(60_000_000_000) - m.minute <= MODEL_SCORE_FRESH)
                    .map(|m| m.score);
                if let Some(p) = pca {
                    pca_scores.insert(asset.clone(), p);
                }
                let score =
                    crate::anomaly::live_score(detector.as_deref(), pca, model).unwrap_or(f64::NAN);
                if let Some(rules) = &self.rules {
                    rules.lock().set_anomaly(asset, score);
                }
                if score.is_finite() {
                    scores.insert(asset.clone(), score);
                } else {
                    scores.remove(asset);
                }
            }
            drop(model_scores);
            let minute = now.div_euclid(60_000_000_000);
            let mut last = self.scored_minute.lock();
            if minute > *last && !pca_scores.is_empty() {
                *last = minute;
                for (asset, score) in pca_scores.iter() {
                    let _ = self.lake_rows.send(doppel_core::Point {
                        measurement: SCORES_TABLE.into(),
                        tags: vec![
                            ("asset".into(), asset.clone()),
                            ("detector".into(), "pca".into()),
                        ],
                        fields: vec![("score".into(), doppel_core::FieldValue::Float(*score))],
                        time: minute * 60_000_000_000,
                    });
                }
            }
        }
        if let Some(rules) = &self.rules {
            let changes = rules.lock().evaluate(now);
            self.apply_changes(&changes);
        }
        let wall = now_nanos();
        let state = self.state.read();
        // States are judged by the wall clock: while the twin catches up on history (a
        // backfill at start, a restart filling its gap) every asset would look stale, then
        // fine again, which says nothing about the plant.
        use std::sync::atomic::Ordering;
        if !self.caught_up.load(Ordering::Relaxed) {
            if wall - now > self.catch_up_within {
                return;
            }
            self.caught_up.store(true, Ordering::Relaxed);
        }
        let alerts = self.alerts.read();
        for asset in &state.spec().assets {
            let current = asset_state(
                state.asset_state(&asset.id, wall),
                alerts.worst_open(&asset.id),
            );
            let previous = self.announced.lock().insert(asset.id.clone(), current);
            if previous != Some(current) {
                // The first state a new twin sees is where it starts, not a change.
                if let Some(previous) = previous {
                    self.record_state(&asset.id, previous, current, now);
                }
                announce(TwinEvent::State {
                    asset: asset.id.clone(),
                    state: current,
                });
            }
        }
    }

    /// When the feed goes quiet the twin still judges: every few seconds, once its data has
    /// caught up with the wall clock (not while history is being written), rules are judged
    /// at the wall clock, so `stale(...)` fires for a feed that stopped, and states that went
    /// stale are announced.
    fn start_ticking(&self) {
        let twin = self.clone();
        std::thread::Builder::new()
            .name("twin-ticks".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(TICK_EVERY);
                    let wall = now_nanos();
                    let Some((data, arrived)) = *twin.newest.lock() else {
                        continue;
                    };
                    // Quiet since its last batch, and that batch was live when it came: judged
                    // at the wall clock. History that stopped coming is not judged so.
                    let quiet = arrived.elapsed() >= TICK_EVERY;
                    let was_live = wall - arrived.elapsed().as_nanos() as i64 - data < LIVE_WITHIN;
                    if quiet && was_live {
                        twin.judge(wall);
                    }
                }
            })
            .expect("a thread for the twin's ticks");
    }

    /// Open and past alerts as the lake holds them (the latest row of each wins); the rules
    /// of open ones are marked firing, so they resolve when their condition turns false.
    async fn restore_alerts(&self, evaluator: Option<&parking_lot::Mutex<Evaluator>>) {
        let fields = self.lake.fields_of(&self.bucket, ALERTS_TABLE);
        if fields.is_empty() {
            return;
        }
        let optional = |name: &str| match fields.iter().any(|f| f == name) {
            true => ident(name),
            false => format!("CAST(NULL AS VARCHAR) AS {}", ident(name)),
        };
        let sql = format!(
            "SELECT at, asset, rule, id, state, severity, started, \"values\", {}, {} FROM {} \
             ORDER BY time",
            optional("acknowledged_by"),
            optional("note"),
            ident(ALERTS_TABLE)
        );
        let Ok((_, batches)) = self.lake.query(&self.bucket, &sql).await else {
            return;
        };
        let mut alerts = self.alerts.write();
        for batch in &batches {
            for row in 0..batch.num_rows() {
                let text = |c: usize| text_at(batch, c, row);
                let alert = from_row(
                    int_at(batch, 0, row).unwrap_or(0),
                    text(1).unwrap_or_default(),
                    text(2).unwrap_or_default(),
                    text(3).unwrap_or_default(),
                    &text(4).unwrap_or_default(),
                    &text(5).unwrap_or_default(),
                    int_at(batch, 6, row).unwrap_or(0),
                    &text(7).unwrap_or_default(),
                    text(8),
                    text(9),
                );
                if let Some(alert) = alert {
                    alerts.restore(alert);
                }
            }
        }
        if let Some(evaluator) = evaluator {
            let mut evaluator = evaluator.lock();
            for alert in alerts.all().iter().filter(|a| a.state.is_open()) {
                evaluator.mark_firing(&alert.rule);
            }
        }
    }

    /// The alerts, newest first, filtered by state (`open` for firing or acknowledged) and
    /// asset.
    pub fn alerts(&self, state: Option<&str>, asset: Option<&str>) -> Vec<Alert> {
        let alerts = self.alerts.read();
        let mut list: Vec<Alert> = alerts
            .all()
            .iter()
            .filter(|a| match state {
                None => true,
                Some("open") => a.state.is_open(),
                Some(s) => {
                    serde_json::to_value(a.state)
                        .ok()
                        .and_then(|v| v.as_str().map(|x| x == s))
                        == Some(true)
                }
            })
            .filter(|a| asset.is_none_or(|x| a.asset == x))
            .cloned()
            .collect();
        list.reverse();
        list
    }

    /// Acknowledges an open alert with who and why; written to the lake like every change.
    pub fn acknowledge(&self, id: &str, by: &str, note: &str) -> Result<Alert, TwinError> {
        let answer = self.alerts.write().acknowledge(id, by, note);
        match answer {
            None => Err(TwinError::UnknownAlert(id.to_owned())),
            Some(Err(message)) => Err(TwinError::Invalid(message)),
            Some(Ok(alert)) => {
                let _ = self.lake_rows.send(to_point(&alert, now_nanos()));
                let _ = self.events.send(TwinEvent::Alert {
                    alert: alert.clone(),
                });
                Ok(alert)
            }
        }
    }

    /// Every change from now on: new readings, asset states, alerts.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TwinEvent> {
        self.events.subscribe()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// Each sensor's last value in the lake (one query a series), for a twin that starts
    /// over data written before it.
    async fn start_from_the_lake(&self) {
        let groups = self.series_groups(None);
        for ((measurement, tags), sensors) in groups {
            for (i, sensor) in &sensors {
                let sql = format!(
                    "SELECT CAST(time AS BIGINT) AS t, CAST({f} AS DOUBLE) AS v FROM {m}{w} \
                     AND {f} IS NOT NULL ORDER BY time DESC LIMIT 1",
                    f = ident(&sensor.field),
                    m = ident(&measurement),
                    w = where_tags(&tags),
                );
                if self
                    .lake
                    .fields_of(&self.bucket, &measurement)
                    .contains(&sensor.field)
                    && let Ok((_, batches)) = self.lake.query(&self.bucket, &sql).await
                    && let Some(batch) = batches.iter().find(|b| b.num_rows() > 0)
                    && let (Some(t), Some(v)) = (int_at(batch, 0, 0), float_at(batch, 1, 0))
                {
                    self.state.write().set_latest(*i, t, v);
                }
            }
        }
    }

    /// The spec's sensors (optionally one asset's), grouped by the series they read.
    fn series_groups(&self, asset: Option<&str>) -> BTreeMap<SeriesKey, Vec<(usize, Sensor)>> {
        let state = self.state.read();
        let mut groups: BTreeMap<_, Vec<(usize, Sensor)>> = BTreeMap::new();
        for (i, s) in state.spec().sensors.iter().enumerate() {
            if asset.is_none_or(|a| s.asset == a) {
                groups
                    .entry((s.measurement.clone(), s.tags.clone()))
                    .or_default()
                    .push((i, s.clone()));
            }
        }
        groups
    }

    /// Sites → assets → sensors, each with its state now.
    pub fn view(&self) -> Value {
        let state = self.state.read();
        let now = now_nanos();
        let spec = state.spec();
        let sites: Vec<Value> = spec
            .sites
            .iter()
            .map(|site| {
                let assets: Vec<Value> = spec
                    .assets
                    .iter()
                    .filter(|a| a.site == site.id)
                    .map(|a| {
                        let mut view = asset_view(&state, &self.alerts.read(), &a.id, now);
                        self.add_anomaly(&mut view, &a.id, spec);
                        view
                    })
                    .collect();
                json!({"id": site.id, "name": site.name, "timezone": site.timezone, "assets": assets})
            })
            .collect();
        json!({
            "name": spec.name,
            "bucket": self.bucket,
            "now": format_rfc3339(now),
            "sites": sites,
        })
    }

    /// An asset's anomaly score as the rules see it, which detector gives it, the model's
    /// latest score with each sensor's share (the sensors driving it first), and the
    /// forecasts of its sensors the rules read.
    fn add_anomaly(&self, view: &mut Value, id: &str, spec: &TwinSpec) {
        view["anomaly"] = json!(self.scores.read().get(id));
        view["anomaly_detector"] = json!(
            self.models
                .status
                .read()
                .detector
                .clone()
                .unwrap_or_else(|| "pca".into())
        );
        view["anomaly_model"] = json!(self.models.scores.read().get(id));
        let sensors: Vec<String> = spec
            .sensors
            .iter()
            .filter(|s| s.asset == id)
            .map(|s| s.id.clone())
            .collect();
        let forecasts: Vec<crate::models::forecasts::Band> = self
            .models
            .forecasts
            .read()
            .iter()
            .filter(|b| sensors.contains(&b.sensor))
            .cloned()
            .collect();
        view["forecasts"] = json!(forecasts);
    }

    /// One asset's state and its sensors', with each sensor's readings over the last
    /// `window_ns`, downsampled to at most `points` buckets (their means), and its anomaly
    /// scores over the same window.
    pub async fn asset(&self, id: &str, window_ns: i64, points: usize) -> Result<Value, TwinError> {
        let (mut view, from) = self.asset_readings(id, window_ns, points).await?;
        view["anomaly_history"] = json!(self.anomaly_history(id, from).await?);
        Ok(view)
    }

    /// [`Twin::asset`] without the anomaly scores (what fitting the detectors reads), and
    /// where its window starts (ns).
    pub(crate) async fn asset_readings(
        &self,
        id: &str,
        window_ns: i64,
        points: usize,
    ) -> Result<(Value, i64), TwinError> {
        let now = now_nanos();
        let mut view = {
            let state = self.state.read();
            let spec = state.spec();
            if !spec.assets.iter().any(|a| a.id == id) {
                let known: Vec<&str> = spec.assets.iter().map(|a| a.id.as_str()).collect();
                return Err(TwinError::UnknownAsset {
                    id: id.to_owned(),
                    known: known.join(", "),
                });
            }
            let mut view = asset_view(&state, &self.alerts.read(), id, now);
            self.add_anomaly(&mut view, id, spec);
            view
        };
        if window_ns <= 0 || points == 0 {
            return Err(TwinError::Invalid(
                "the window and the number of points must be above zero".into(),
            ));
        }
        // Whole seconds a bucket, at least one.
        let step_s = (window_ns / points as i64 / 1_000_000_000).max(1);
        let from = (now - window_ns) / 1_000_000_000 / step_s * step_s * 1_000_000_000;
        let readings = self.bucketed_means(Some(id), from, step_s).await?;
        view["readings"] = json!({
            "from": format_rfc3339(from),
            "to": format_rfc3339(now),
            "step_seconds": step_s,
            "series": readings,
        });
        Ok((view, from))
    }

    /// Every sensor's readings since `from` (ns), averaged in buckets of `step_s` seconds
    /// (times in ms, at the bucket's start): of one asset's sensors, or of all.
    async fn bucketed_means(
        &self,
        asset: Option<&str>,
        from: i64,
        step_s: i64,
    ) -> Result<Vec<Readings>, TwinError> {
        let mut readings = Vec::new();
        for ((measurement, tags), sensors) in self.series_groups(asset) {
            // Only fields written so far can be read; the others have no readings yet.
            let fields = self.lake.fields_of(&self.bucket, &measurement);
            let (written, unwritten): (Vec<_>, Vec<_>) = sensors
                .into_iter()
                .partition(|(_, s)| fields.contains(&s.field));
            for (_, sensor) in &unwritten {
                readings.push(Readings {
                    sensor: sensor.id.clone(),
                    t: Vec::new(),
                    v: Vec::new(),
                });
            }
            if written.is_empty() {
                continue;
            }
            let sensors = written;
            let means: Vec<String> = sensors
                .iter()
                .map(|(_, s)| format!("avg(CAST({f} AS DOUBLE)) AS {f}", f = ident(&s.field)))
                .collect();
            let sql = format!(
                "SELECT CAST(date_bin(INTERVAL '{step_s} seconds', time, TIMESTAMP \
                 '1970-01-01T00:00:00Z') AS BIGINT) AS t, {means} FROM {m}{w} AND time >= \
                 '{since}' GROUP BY 1 ORDER BY 1",
                means = means.join(", "),
                m = ident(&measurement),
                w = where_tags(&tags),
                since = format_rfc3339(from),
            );
            let batches = self.lake.query(&self.bucket, &sql).await?.1;
            for (k, (_, sensor)) in sensors.iter().enumerate() {
                let mut series = Readings {
                    sensor: sensor.id.clone(),
                    t: Vec::new(),
                    v: Vec::new(),
                };
                for batch in &batches {
                    for row in 0..batch.num_rows() {
                        if let Some(t) = int_at(batch, 0, row) {
                            series.t.push(t / 1_000_000);
                            series.v.push(float_at(batch, k + 1, row));
                        }
                    }
                }
                readings.push(series);
            }
        }
        Ok(readings)
    }

    /// Every sensor's minute means over the last `window_ns` of data time, and the time of
    /// the newest (ns; `None` before any reading): what the state estimator starts from.
    pub async fn recent_readings(
        &self,
        window_ns: i64,
    ) -> Result<(Option<i64>, Vec<Readings>), TwinError> {
        let newest = {
            let state = self.state.read();
            (0..state.spec().sensors.len())
                .filter_map(|i| state.latest(i).map(|(t, _)| t))
                .max()
        };
        let Some(newest) = newest else {
            return Ok((None, Vec::new()));
        };
        let from = (newest - window_ns) / 60_000_000_000 * 60_000_000_000;
        Ok((Some(newest), self.bucketed_means(None, from, 60).await?))
    }

    /// The asset's minute scores since `from` (ns), per detector, from `doppel_anomaly`:
    /// `{"pca": {"t": [...], "v": [...]}, "model": ...}` (empty before any score).
    async fn anomaly_history(&self, id: &str, from: i64) -> Result<Value, TwinError> {
        let mut out: BTreeMap<String, (Vec<i64>, Vec<f64>)> = BTreeMap::new();
        if self
            .lake
            .fields_of(&self.bucket, SCORES_TABLE)
            .iter()
            .any(|f| f == "score")
        {
            let sql = format!(
                "SELECT detector, CAST(time AS BIGINT) AS t, score FROM {SCORES_TABLE} WHERE \
                 asset = '{}' AND time >= '{}' ORDER BY time",
                id.replace('\'', "''"),
                format_rfc3339(from)
            );
            for batch in self.lake.query(&self.bucket, &sql).await?.1 {
                for row in 0..batch.num_rows() {
                    if let (Some(detector), Some(t), Some(v)) = (
                        text_at(&batch, 0, row),
                        int_at(&batch, 1, row),
                        float_at(&batch, 2, row),
                    ) {
                        let series = out.entry(detector).or_default();
                        series.0.push(t / 1_000_000);
                        series.1.push(v);
                    }
                }
            }
        }
        Ok(Value::Object(
            out.into_iter()
                .map(|(k, (t, v))| (k, json!({"t": t, "v": v})))
                .collect(),
        ))
    }
}

/// An asset's state and its sensors' latest readings, as the API shows them.
fn asset_view(state: &LiveState, alerts: &Alerts, id: &str, now: i64) -> Value {
    let spec = state.spec();
    let asset = spec
        .assets
        .iter()
        .find(|a| a.id == id)
        .expect("the caller checked");
    let sensors: Vec<Value> = spec
        .sensors
        .iter()
        .enumerate()
        .filter(|(_, s)| s.asset == id)
        .map(|(i, s)| {
            let latest = state.latest(i);
            json!({
                "id": s.id,
                "unit": s.unit,
                "min": s.min,
                "max": s.max,
                "period_seconds": s.period_nanos as f64 / 1e9,
                "value": latest.map(|(_, v)| v),
                "time": latest.map(|(t, _)| format_rfc3339(t)),
                "quality": state.quality(i, now),
            })
        })
        .collect();
    json!({
        "id": asset.id,
        "name": asset.name,
        "kind": asset.kind,
        "site": asset.site,
        "parent": asset.parent,
        "state": asset_state(state.asset_state(id, now), alerts.worst_open(id)),
        "open_alerts": alerts.all().iter().filter(|a| a.state.is_open() && a.asset == id).count(),
        "sensors": sensors,
    })
}

/// An asset's state with its open alerts: a critical alert is an alarm, a warning one a
/// warning, unless its sensors say worse; an asset in maintenance stays so.
fn asset_state(sensors: AssetState, worst_alert: Option<Severity>) -> AssetState {
    match (sensors, worst_alert) {
        (AssetState::Maintenance, _) => AssetState::Maintenance,
        (AssetState::Alarm, _) | (_, Some(Severity::Critical)) => AssetState::Alarm,
        (_, Some(Severity::Warning)) => AssetState::Warning,
        (sensors, _) => sensors,
    }
}

/// A name quoted for SQL.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// ` WHERE tag = 'value' AND ...` for a series' tags (` WHERE true` without tags).
pub(crate) fn where_tags(tags: &BTreeMap<String, String>) -> String {
    let terms: Vec<String> = tags
        .iter()
        .map(|(k, v)| format!("{} = '{}'", ident(k), v.replace('\'', "''")))
        .collect();
    match terms.is_empty() {
        true => " WHERE true".into(),
        false => format!(" WHERE {}", terms.join(" AND ")),
    }
}

pub(crate) fn int_at(batch: &RecordBatch, column: usize, row: usize) -> Option<i64> {
    let array = cast(batch.column(column), &DataType::Int64).ok()?;
    let array = array.as_primitive::<Int64Type>();
    array.is_valid(row).then(|| array.value(row))
}

pub(crate) fn text_at(batch: &RecordBatch, column: usize, row: usize) -> Option<String> {
    let array = cast(batch.column(column), &DataType::Utf8).ok()?;
    let array = array.as_string::<i32>();
    array.is_valid(row).then(|| array.value(row).to_owned())
}

pub(crate) fn float_at(batch: &RecordBatch, column: usize, row: usize) -> Option<f64> {
    let array = cast(batch.column(column), &DataType::Float64).ok()?;
    let array = array.as_primitive::<Float64Type>();
    (array.is_valid(row) && array.value(row).is_finite()).then(|| array.value(row))
}
