//! `doppel up`'s live source: the simulated reference plant writing into the lake, its
//! history backfilled, then at real time, never ahead of the wall clock; and, with
//! `--policy`, a policy at work on it in one of the modes of docs/AUTONOMY.md, its proposals
//! going to the live twin.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, ValueEnum};
use doppel_autonomy::supervise::{Decision, Desk, Mode, Supervised};
use doppel_autonomy::{Objective, policy_by_name};
use doppel_core::WriteBatch;
use doppel_lake::Lake;
use doppel_sim::SimError;
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::output::SeriesLayout;
use doppel_sim::plant::{Action, Plant};
use doppel_sim::policy::PolicyKind;
use doppel_sim::run::{Observer, RunSettings, StepView, simulate};
use doppel_sim::scenario::Scenario;

use crate::sim::{Speed, speed};

/// A live policy's decisions go to the twin as proposals; approved ones come back.
struct TwinDesk {
    twin: doppel_twin::Twin,
}

impl Desk for TwinDesk {
    fn record(&mut self, decision: Decision) {
        self.twin.propose(doppel_twin::proposals::Draft {
            policy: decision.policy,
            mode: decision.mode.name().into(),
            time: decision.time_ns,
            summary: decision.summary,
            effect: serde_json::to_value(&decision.effect).unwrap_or_default(),
            actions: serde_json::to_value(&decision.actions).unwrap_or_default(),
            waits: decision.mode == Mode::Approve,
            done: decision.mode == Mode::Auto,
        });
    }

    fn approved(&mut self) -> Vec<Vec<Action>> {
        self.twin
            .take_approved()
            .into_iter()
            .filter_map(|p| serde_json::from_value(p.actions).ok())
            .collect()
    }
}

/// Options of the reference plant as `doppel up`'s data source.
#[derive(Args, Clone, Debug)]
pub struct SourceArgs {
    /// Where live data comes from: the simulated reference plant, or nothing.
    #[arg(long, value_enum, default_value = "reference")]
    source: SourceKind,
    /// How fast the reference plant streams its last stretch of history (--catch-up) before
    /// it reaches now: a multiple of real time (60x), or max. From now on it runs at real
    /// time: its data is never stamped later than the wall clock.
    #[arg(long, default_value = "60x", value_parser = speed)]
    speed: Speed,
    /// History the plant starts with, ending now (e.g. 1d; 0 for none). All but the last
    /// stretch (--catch-up) is written at once.
    #[arg(long, default_value = "1d", value_parser = doppel_core::time::parse_offset_seconds)]
    backfill: f64,
    /// Wall-clock time the plant takes to stream the end of its history at --speed, so the
    /// twin is seen filling in (10m at 60x: the last 10 hours).
    #[arg(long, default_value = "10m", value_parser = doppel_core::time::parse_offset_seconds)]
    catch_up: f64,
    /// A policy at work on the live plant once it reaches now (docs/AUTONOMY.md): mpc,
    /// mpc+shield, maintenance, rules... Its decisions go to GET /api/v1/proposals.
    #[arg(long)]
    policy: Option<String>,
    /// How the policy works: shadow (the rule-based operator runs the plant; what the policy
    /// would do is recorded), recommend (the same, with each proposal's simulated effect),
    /// approve (each decision waits for POST /api/v1/proposals/ID/approve), auto.
    #[arg(long)]
    mode: Option<String>,
    /// A disruption scenario (scenarios/*.toml) injected into the live plant, its times
    /// counted from the moment the plant reaches now (after its history), so you can watch
    /// the twin catch it.
    #[arg(long)]
    scenario: Option<PathBuf>,
}

impl SourceArgs {
    /// Whether the reference plant is the source.
    pub fn is_reference(&self) -> bool {
        self.source == SourceKind::Reference
    }
}

/// The reference plant's alert rules (examples/reference-plant/rules.toml), built in.
pub const REFERENCE_RULES: &str = include_str!("../../../examples/reference-plant/rules.toml");

/// The reference plant's twin spec, as `doppel sim spec` writes it.
pub fn reference_spec() -> anyhow::Result<doppel_core::spec::TwinSpec> {
    let text = ChillerPlant::new(ChillerPlantConfig::default(), 0)?.twin_spec();
    Ok(doppel_core::spec::parse(
        &text,
        std::path::Path::new("the reference plant's spec"),
    )?)
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum SourceKind {
    Reference,
    None,
}

/// The live plant's step: its fastest sensors' sampling period.
const LIVE_STEP_S: f64 = 10.0;

/// Where the live plant keeps its state between runs, in the data directory.
const SAVED_STATE: &str = ".twin/reference-plant.json";

/// The plant's state as saved at a stop: where its data ends, and the state to go on from.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedPlant {
    /// The plant's own start (its time 0) and the time of its last step, ns.
    start_ns: i64,
    last_ns: i64,
    seed: u64,
    state: serde_json::Value,
}

/// The reference plant writing into the lake until `stop` is set.
pub struct LiveSource {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<anyhow::Result<()>>,
}

impl LiveSource {
    /// Starts the reference plant, or returns `None` when the source is `none`. Its data
    /// time never runs ahead of the wall clock: it starts `--backfill` ago (or where the
    /// bucket's data ends, after a restart), writes history at once, streams the last
    /// `--catch-up` of it at `--speed`, then goes on at real time.
    pub fn start(
        args: &SourceArgs,
        bucket: &str,
        lake: Lake,
        twin: Option<doppel_twin::Twin>,
    ) -> anyhow::Result<Option<LiveSource>> {
        if args.source == SourceKind::None {
            return Ok(None);
        }
        // The fastest sensors report every 10 s: a coarser step would leave them stale.
        let step_s = LIVE_STEP_S;
        let step_ns = (step_s * 1e9) as i64;
        let now = doppel_core::time::now_nanos();
        let saved_path = lake.dir().join(SAVED_STATE);
        // Asked on a thread of its own: `doppel up` starts the source inside its runtime.
        let resumed = std::thread::scope(|scope| {
            scope
                .spawn(|| resume(&lake, bucket, &saved_path, now))
                .join()
                .map_err(|_| anyhow::anyhow!("reading where the lake's data ends panicked"))
        })??;
        let (mut plant, start_ns) = match resumed {
            Some(resumed) => resumed,
            None => {
                let start_ns = (now - (args.backfill * 1e9) as i64) / step_ns * step_ns;
                let config = ChillerPlantConfig {
                    start_ns,
                    ..ChillerPlantConfig::default()
                };
                let seed = (now as u64) ^ 0x5EED;
                (ChillerPlant::new(config, seed)?, start_ns)
            }
        };
        let live_from_s = (now - plant.config().start_ns) as f64 / 1e9;
        let mut policy = match (&args.policy, &args.mode) {
            (None, None) => PolicyKind::Rules.build(&plant)?,
            (None, Some(_)) => bail!("--mode says how a --policy works: name the policy"),
            (Some(name), mode) => {
                let mode: Mode = mode.as_deref().unwrap_or("shadow").parse()?;
                let Some(twin) = &twin else {
                    bail!("--policy needs the live twin (its proposals go there)");
                };
                let objective = Arc::new(Objective::reference(&plant)?);
                let config = plant.config().clone();
                let seed = plant.seed();
                // Only in `auto` do the policy's batches reach the plant (its gate then holds
                // the setpoints it let through); otherwise they are proposals.
                let maker = match mode {
                    Mode::Auto => policy_by_name(name, objective.clone())?,
                    _ => doppel_autonomy::catalog::advisor_by_name(name, objective.clone())?,
                };
                let agent = maker.make(&plant, &config, seed)?;
                let desk = Box::new(TwinDesk { twin: twin.clone() });
                Box::new(
                    Supervised::new(
                        name.clone(),
                        mode,
                        agent,
                        &plant,
                        &config,
                        seed,
                        objective,
                        desk,
                    )?
                    .from(live_from_s),
                )
            }
        };
        // A scenario's times count from the moment the plant reaches now.
        let events = match &args.scenario {
            Some(path) => {
                let scenario = Scenario::load(path, &plant)?;
                let events: Vec<_> = scenario
                    .draw(now as u64)
                    .into_iter()
                    .map(|mut e| {
                        e.start_s += live_from_s;
                        e.end_s += live_from_s;
                        e
                    })
                    .collect();
                for e in &events {
                    tracing::info!(
                        disruption = %e.label,
                        at = %doppel_core::time::format_rfc3339(now + (e.start_s - live_from_s) as i64 * 1_000_000_000),
                        "a disruption of the scenario is drawn for the live plant"
                    );
                }
                events
            }
            None => Vec::new(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let catch_up_ns = match args.speed.0 {
            Some(speed) => (args.catch_up * speed * 1e9) as i64,
            None => 0,
        };
        let mut writer = LakeWriter {
            lake,
            bucket: bucket.to_owned(),
            layout: SeriesLayout::new(plant.sensors()),
            start_ns,
            speed: args.speed.0,
            catch_up_ns,
            batch: WriteBatch::new(bucket.to_owned()),
            stop: stop.clone(),
            began: None,
            last_write: Instant::now(),
            // Each injected disruption, announced on the event stream when it begins.
            disruptions: {
                let origin = plant.config().start_ns;
                let mut pending: Vec<(i64, String, Vec<String>)> = events
                    .iter()
                    .map(|e| {
                        let at = origin + (e.start_s * 1e9) as i64;
                        (at, e.label.clone(), e.targets.clone())
                    })
                    .collect();
                pending.sort_by_key(|d| std::cmp::Reverse(d.0));
                pending
            },
            twin,
        };
        let settings = RunSettings {
            days: 365.0 * 100.0,
            step_s,
        };
        let thread = std::thread::Builder::new()
            .name("reference-plant".into())
            .spawn(move || {
                simulate(
                    &mut plant,
                    policy.as_mut(),
                    events,
                    settings,
                    Some(&mut writer),
                )?;
                writer.write()?;
                // Where the data ends and the state to go on from, for the next start.
                let saved = SavedPlant {
                    start_ns: plant.config().start_ns,
                    last_ns: plant.config().start_ns + (plant.time_s() * 1e9).round() as i64,
                    seed: plant.seed(),
                    state: plant.save_state(),
                };
                if let Some(folder) = saved_path.parent() {
                    std::fs::create_dir_all(folder)?;
                }
                std::fs::write(&saved_path, serde_json::to_vec(&saved)?)?;
                Ok(())
            })?;
        Ok(Some(LiveSource { stop, thread }))
    }

    /// Stops the plant after the step in progress and waits for its last write.
    pub fn stop(self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.join() {
            Ok(result) => result,
            Err(_) => bail!("the reference plant's thread panicked"),
        }
    }
}

/// After a restart: the plant that goes on where the bucket's data ends. Its saved state
/// when it matches the lake's last reading (a clean stop); a fresh plant starting after the
/// last reading otherwise (a crash). `None` for an empty bucket, or data older than `now`
/// can catch up from at real time (more than a day: start afresh).
fn resume(
    lake: &Lake,
    bucket: &str,
    saved_path: &std::path::Path,
    now: i64,
) -> anyhow::Result<Option<(ChillerPlant, i64)>> {
    let probe = ChillerPlant::new(ChillerPlantConfig::default(), 0)?;
    let table = probe
        .sensors()
        .first()
        .map(|s| s.measurement.clone())
        .expect("the plant has sensors");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let sql = format!("SELECT CAST(max(time) AS BIGINT) AS last FROM \"{table}\"");
    let last = match runtime.block_on(lake.query(bucket, &sql)) {
        Ok((_, batches)) => {
            let text = doppel_server::query::render(
                doppel_server::query::Format::Csv,
                &batches[0].schema(),
                &batches,
            )
            .unwrap_or_default();
            let text = String::from_utf8_lossy(&text).into_owned();
            text.lines()
                .nth(1)
                .and_then(|l| l.trim().parse::<i64>().ok())
        }
        Err(_) => None,
    };
    let Some(last) = last else { return Ok(None) };
    if now - last > 86_400_000_000_000 || last > now {
        return Ok(None);
    }
    let saved: Option<SavedPlant> = std::fs::read(saved_path)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
    // A stop during the wait for a reading's time leaves the plant a step past the lake.
    let step = (LIVE_STEP_S * 1e9) as i64;
    if let Some(saved) = saved.filter(|s| s.last_ns == last || s.last_ns == last + step) {
        let config = ChillerPlantConfig {
            start_ns: saved.start_ns,
            ..ChillerPlantConfig::default()
        };
        let mut plant = ChillerPlant::new(config, saved.seed)?;
        if plant.load_state(saved.state).is_ok() {
            tracing::info!(from = %doppel_core::time::format_rfc3339(last), "the reference plant goes on from its saved state");
            return Ok(Some((plant, saved.start_ns)));
        }
    }
    let start_ns = last + step;
    tracing::info!(from = %doppel_core::time::format_rfc3339(start_ns), "the reference plant starts again where the lake's data ends");
    let config = ChillerPlantConfig {
        start_ns,
        ..ChillerPlantConfig::default()
    };
    Ok(Some((
        ChillerPlant::new(config, (now as u64) ^ 0x5EED)?,
        start_ns,
    )))
}

/// Writes readings into the lake in batches: history at once, its last stretch at the demo
/// speed, then at real time, never ahead of the wall clock.
struct LakeWriter {
    lake: Lake,
    bucket: String,
    layout: SeriesLayout,
    start_ns: i64,
    speed: Option<f64>,
    /// How far behind the wall clock the demo-speed stretch starts, ns.
    catch_up_ns: i64,
    batch: WriteBatch,
    stop: Arc<AtomicBool>,
    /// Real and simulated time when the demo-speed stretch began.
    began: Option<(Instant, f64)>,
    last_write: Instant,
    /// Disruptions still to begin (time ns, label, targets), the next last.
    disruptions: Vec<(i64, String, Vec<String>)>,
    twin: Option<doppel_twin::Twin>,
}

impl LakeWriter {
    fn write(&mut self) -> doppel_sim::Result<()> {
        if self.batch.points.is_empty() {
            return Ok(());
        }
        let batch = std::mem::replace(&mut self.batch, WriteBatch::new(self.bucket.clone()));
        let mut delay = Duration::from_millis(100);
        loop {
            match self.lake.write_blocking(batch.clone(), false) {
                Ok(_) => break,
                // The lake is persisting: wait, as any writer would.
                Err(doppel_lake::LakeError::Busy { .. }) if !self.stop.load(Ordering::Relaxed) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    return Err(SimError::Output {
                        path: PathBuf::from(format!("lake bucket {}", self.bucket)),
                        message: e.to_string(),
                    });
                }
            }
        }
        self.last_write = Instant::now();
        Ok(())
    }

    /// Sleeps in short slices until `ready` says so or a stop is asked for.
    fn wait_until(&self, ready: impl Fn() -> Option<Duration>) {
        while let Some(left) = ready() {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(200)));
        }
    }
}

impl Observer for LakeWriter {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        let time = self.start_ns + (view.t_s * 1e9).round() as i64;
        let behind = doppel_core::time::now_nanos() - time;
        let backfilling = behind > self.catch_up_ns;
        if !backfilling {
            // Written before the wait: a reading is in the lake as soon as its time comes.
            self.write()?;
        }
        if behind < 0 {
            // Live: the reading's time has not come yet.
            self.wait_until(|| {
                let left = time - doppel_core::time::now_nanos();
                (left > 0).then(|| Duration::from_nanos(left as u64))
            });
            if doppel_core::time::now_nanos() < time {
                // Stopped before the reading's time came: it is never written ahead.
                return Ok(false);
            }
        } else if !backfilling && let Some(speed) = self.speed {
            // The demo stretch: the end of the history at `speed` times real time.
            let (real, sim) = *self.began.get_or_insert((Instant::now(), view.t_s));
            let due = Duration::from_secs_f64((view.t_s - sim) / speed);
            self.wait_until(|| due.checked_sub(real.elapsed()).filter(|d| !d.is_zero()));
        }
        while self.disruptions.last().is_some_and(|d| d.0 <= time) {
            let (at, label, targets) = self.disruptions.pop().expect("checked");
            if let Some(twin) = &self.twin {
                twin.record_disruption(label, targets, at);
            }
        }
        self.layout
            .points(view.readings, time, &mut self.batch.points);
        if self.batch.points.len() >= 20_000
            || (!backfilling && self.last_write.elapsed() >= Duration::from_millis(500))
        {
            self.write()?;
        }
        Ok(!self.stop.load(Ordering::Relaxed))
    }
}
