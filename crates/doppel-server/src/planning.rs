//! Planning over HTTP: the scenario library (`GET /api/v1/scenarios`), a draft checked with
//! the CLI's errors (`POST /api/v1/scenarios/check`), and Monte Carlo studies of a scenario
//! against the same seeds without it run as server-side jobs (`POST /api/v1/scenario-runs`,
//! listed, read, cancelled). A job runs on one core beside ingest; its progress goes out on
//! the event stream; a finished one is kept in the data folder (`.scenario-runs/ID.json`) and
//! listed after a restart. A job still running when the server stops is lost.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::monte_carlo::{ClusterQuestion, Study, run_study_until};
use doppel_sim::run::RunSettings;
use doppel_sim::scenario::{Disruption, Scenario, Unit};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;

use crate::{AppState, error_response};

/// The scenarios shipped with doppel (`scenarios/` in its repository), by name.
const LIBRARY: &[(&str, &str)] = &[
    (
        "bearing_wear",
        include_str!("../../../scenarios/bearing_wear.toml"),
    ),
    (
        "cyber_setpoint",
        include_str!("../../../scenarios/cyber_setpoint.toml"),
    ),
    (
        "cyber_spoof",
        include_str!("../../../scenarios/cyber_spoof.toml"),
    ),
    (
        "cyber_stealth",
        include_str!("../../../scenarios/cyber_stealth.toml"),
    ),
    ("fouling", include_str!("../../../scenarios/fouling.toml")),
    ("heatwave", include_str!("../../../scenarios/heatwave.toml")),
    (
        "load_surge",
        include_str!("../../../scenarios/load_surge.toml"),
    ),
    (
        "parts_delay",
        include_str!("../../../scenarios/parts_delay.toml"),
    ),
    (
        "price_spike",
        include_str!("../../../scenarios/price_spike.toml"),
    ),
    (
        "pump_trip",
        include_str!("../../../scenarios/pump_trip.toml"),
    ),
    (
        "sensor_faults",
        include_str!("../../../scenarios/sensor_faults.toml"),
    ),
];

/// The most runs and days one job may ask for.
const MAX_RUNS: usize = 10_000;
const MAX_DAYS: f64 = 366.0;

/// One job as listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSummary {
    pub id: String,
    pub scenario: String,
    pub runs: usize,
    pub days: f64,
    pub policy: String,
    /// Whether the runs start from the live plant's estimated state (else fresh plants).
    #[serde(default)]
    pub from_live: bool,
    pub seed: u64,
    /// `running`, `done`, `failed` or `cancelled`.
    pub state: String,
    /// Runs finished (each with its baseline twin).
    pub done: u64,
    pub created: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

struct Job {
    summary: RunSummary,
    cancel: Arc<AtomicBool>,
    result: Option<serde_json::Value>,
}

/// The jobs of one server.
pub struct Planning {
    dir: PathBuf,
    jobs: Mutex<BTreeMap<String, Job>>,
}

impl Planning {
    /// The jobs kept in `data`/.scenario-runs, read back.
    pub fn open(data: &std::path::Path) -> Planning {
        let dir = data.join(".scenario-runs");
        let mut jobs = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let Ok(text) = std::fs::read_to_string(entry.path()) else {
                continue;
            };
            let Ok(kept) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let Ok(summary) = serde_json::from_value::<RunSummary>(kept["summary"].clone()) else {
                continue;
            };
            jobs.insert(
                summary.id.clone(),
                Job {
                    summary,
                    cancel: Arc::default(),
                    result: Some(kept["result"].clone()).filter(|r| !r.is_null()),
                },
            );
        }
        Planning {
            dir,
            jobs: Mutex::new(jobs),
        }
    }

    fn jobs(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Job>> {
        // A panicked study leaves the map as it was: still good to read.
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn keep(&self, id: &str) {
        let jobs = self.jobs();
        let Some(job) = jobs.get(id) else {
            return;
        };
        let kept = serde_json::json!({"summary": job.summary, "result": job.result});
        let _ = std::fs::create_dir_all(&self.dir);
        let path = self.dir.join(format!("{id}.json"));
        let scratch = self.dir.join(format!(".{id}.json.writing"));
        if std::fs::write(&scratch, kept.to_string()).is_ok() {
            let _ = std::fs::rename(&scratch, &path);
        }
    }
}

fn probe_plant() -> Result<ChillerPlant, String> {
    ChillerPlant::new(ChillerPlantConfig::default(), 0).map_err(|e| e.to_string())
}

/// A scenario from the library by name, or a draft's text, parsed with the CLI's checks.
fn scenario_of(name: Option<&str>, text: Option<&str>) -> Result<(String, Scenario), String> {
    let plant = probe_plant()?;
    let (label, text) = match (name, text) {
        (_, Some(text)) => ("draft".to_owned(), text.to_owned()),
        (Some(name), None) => match LIBRARY.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => ((*n).to_owned(), (*text).to_owned()),
            None => {
                let names: Vec<&str> = LIBRARY.iter().map(|(n, _)| *n).collect();
                return Err(format!(
                    "no scenario `{name}` in the library: {}",
                    names.join(", ")
                ));
            }
        },
        (None, None) => return Err("give `scenario` (a library name) or `text` (a draft)".into()),
    };
    let file = PathBuf::from(format!("{label}.toml"));
    Scenario::parse(&text, &file, &plant)
        .map(|s| (label, s))
        .map_err(|e| e.to_string())
}

/// A disruption in words, as `doppel scenario check` says it.
fn in_words(d: &Disruption) -> String {
    format!(
        "{}: probability {}, starts at {}; {}",
        d.label,
        d.probability,
        d.start_s.in_words(Unit::Time),
        d.effect_in_words()
    )
}

fn bad(message: &str) -> Response {
    error_response(StatusCode::BAD_REQUEST, "invalid", message)
}

/// `GET /api/v1/scenarios`: the library, each scenario with its disruptions in words.
pub(crate) async fn library() -> Response {
    let Ok(plant) = probe_plant() else {
        return error_response(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no plant");
    };
    let list: Vec<serde_json::Value> = LIBRARY
        .iter()
        .filter_map(|(name, text)| {
            let s = Scenario::parse(text, &PathBuf::from(format!("{name}.toml")), &plant).ok()?;
            Some(serde_json::json!({
                "name": name, "title": s.name, "description": s.description, "text": text,
                "disruptions": s.disruptions.iter().map(in_words).collect::<Vec<_>>(),
            }))
        })
        .collect();
    Json(list).into_response()
}

#[derive(Deserialize)]
pub(crate) struct Draft {
    text: String,
}

/// `POST /api/v1/scenarios/check`: a draft checked as `doppel scenario check` checks a file.
pub(crate) async fn check(
    body: Result<Json<Draft>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Ok(Json(draft)) = body else {
        return bad("the body must be JSON like {\"text\": \"name = ...\"}");
    };
    match scenario_of(None, Some(&draft.text)) {
        Ok((_, s)) => Json(serde_json::json!({
            "ok": true, "title": s.name,
            "disruptions": s.disruptions.iter().map(in_words).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(message) => bad(&message),
    }
}

#[derive(Deserialize)]
pub(crate) struct RunRequest {
    scenario: Option<String>,
    text: Option<String>,
    #[serde(default = "default_runs")]
    runs: usize,
    #[serde(default = "default_days")]
    days: f64,
    #[serde(default = "default_policy")]
    policy: String,
    #[serde(default = "default_seed")]
    seed: u64,
    #[serde(default)]
    from_live: bool,
}

fn default_runs() -> usize {
    100
}
fn default_days() -> f64 {
    30.0
}
fn default_policy() -> String {
    "rules".into()
}
fn default_seed() -> u64 {
    1
}

/// `POST /api/v1/scenario-runs`: starts a study; `202` with its id.
pub(crate) async fn start(
    State(state): State<AppState>,
    body: Result<Json<RunRequest>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let request = match body {
        Ok(Json(r)) => r,
        Err(e) => {
            return bad(&format!(
                "the body must be JSON like {{\"scenario\": \"heatwave\", \"runs\": 100, \"days\": 30, \"policy\": \"rules\"}}: {e}"
            ));
        }
    };
    if !(1..=MAX_RUNS).contains(&request.runs) {
        return bad(&format!(
            "runs must be 1 to {MAX_RUNS}, not {}",
            request.runs
        ));
    }
    if !(request.days > 0.0 && request.days <= MAX_DAYS) {
        return bad(&format!(
            "days must be above 0 and at most {MAX_DAYS}, not {}",
            request.days
        ));
    }
    let (label, scenario) = match scenario_of(request.scenario.as_deref(), request.text.as_deref())
    {
        Ok(found) => found,
        Err(message) => return bad(&message),
    };
    let maker = match probe_plant().map_err(|e| e.to_string()).and_then(|plant| {
        let objective = doppel_autonomy::Objective::reference(&plant).map_err(|e| e.to_string())?;
        doppel_autonomy::policy_by_name(&request.policy, Arc::new(objective))
            .map_err(|e| e.to_string())
    }) {
        Ok(maker) => maker,
        Err(message) => return bad(&message),
    };
    let start = if request.from_live {
        match crate::estimate::live_plant(&state).await {
            Ok((plant, _)) => Some(Arc::new(plant)),
            Err(refusal) => return refusal.response(),
        }
    } else {
        None
    };
    let planning = state.planning.clone();
    let id = format!(
        "{label}-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let summary = RunSummary {
        id: id.clone(),
        scenario: label,
        runs: request.runs,
        days: request.days,
        policy: maker.name(),
        seed: request.seed,
        from_live: request.from_live,
        state: "running".into(),
        done: 0,
        created: doppel_core::time::format_rfc3339(doppel_core::time::now_nanos()),
        error: None,
    };
    let cancel = Arc::new(AtomicBool::new(false));
    planning.jobs().insert(
        id.clone(),
        Job {
            summary: summary.clone(),
            cancel: cancel.clone(),
            result: None,
        },
    );
    let study = Study {
        plant: ChillerPlantConfig::default(),
        policy: maker,
        start,
        settings: RunSettings {
            days: request.days,
            step_s: 60.0,
        },
        runs: request.runs,
        seed: request.seed,
        cluster: ClusterQuestion::default(),
        // One core, on its idle time only: ingest and queries come first.
        threads: Some(1),
        background: true,
    };
    let twin = state.twin.clone();
    let announce = move |summary: &RunSummary| {
        if let Some(twin) = &twin {
            twin.announce(doppel_twin::TwinEvent::ScenarioRun {
                id: summary.id.clone(),
                state: summary.state.clone(),
                done: summary.done,
                runs: summary.runs,
            });
        }
    };
    announce(&summary);
    let worker = planning.clone();
    std::thread::Builder::new()
        .name(format!("study-{id}"))
        .spawn(move || {
            let progress = |done: u64| {
                let summary = {
                    let mut jobs = worker.jobs();
                    let Some(job) = jobs.get_mut(&id) else { return };
                    job.summary.done = done;
                    job.summary.clone()
                };
                announce(&summary);
            };
            let outcome = run_study_until(&study, &scenario, &progress, &cancel);
            let summary = {
                let mut jobs = worker.jobs();
                let Some(job) = jobs.get_mut(&id) else { return };
                match outcome {
                    Ok(result) => {
                        job.summary.state = "done".into();
                        job.result = serde_json::to_value(&result).ok();
                    }
                    Err(doppel_sim::SimError::Cancelled) => job.summary.state = "cancelled".into(),
                    Err(e) => {
                        job.summary.state = "failed".into();
                        job.summary.error = Some(e.to_string());
                    }
                }
                job.summary.clone()
            };
            worker.keep(&id);
            announce(&summary);
        })
        .expect("a thread for the study");
    (StatusCode::ACCEPTED, Json(summary)).into_response()
}

/// `GET /api/v1/scenario-runs`: every job, newest first.
pub(crate) async fn list(State(state): State<AppState>) -> Response {
    let mut list: Vec<RunSummary> = state
        .planning
        .jobs()
        .values()
        .map(|j| j.summary.clone())
        .collect();
    list.sort_by(|a, b| b.created.cmp(&a.created));
    Json(list).into_response()
}

fn unknown(id: &str) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        "not_found",
        &format!("no scenario run `{id}` (GET /api/v1/scenario-runs lists them)"),
    )
}

/// `GET /api/v1/scenario-runs/{id}`: the job, with its result once done.
pub(crate) async fn read(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let jobs = state.planning.jobs();
    match jobs.get(&id) {
        Some(job) => {
            Json(serde_json::json!({"summary": job.summary, "result": job.result})).into_response()
        }
        None => unknown(&id),
    }
}

/// `POST /api/v1/scenario-runs/{id}/cancel`: runs not yet begun are not started.
pub(crate) async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let jobs = state.planning.jobs();
    match jobs.get(&id) {
        Some(job) if job.summary.state == "running" => {
            job.cancel.store(true, Ordering::Relaxed);
            (StatusCode::ACCEPTED, Json(job.summary.clone())).into_response()
        }
        Some(job) => error_response(
            StatusCode::CONFLICT,
            "conflict",
            &format!("scenario run `{id}` is {} already", job.summary.state),
        ),
        None => unknown(&id),
    }
}
