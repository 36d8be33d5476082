//! `doppel sim run`, `doppel scenario run|check`, and the reference plant as `doppel up`'s
//! live data source. Wiring only: the simulator lives in `doppel-sim`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::monte_carlo::{ClusterQuestion, Study, StudyResult, run_study};
use doppel_sim::output::{RunRecorder, SeriesLayout, events_path, labels_path, write_events};
use doppel_sim::plant::Plant;
use doppel_sim::random::run_seed;
use doppel_sim::run::{Observer, RunSettings, StepView, simulate};
use doppel_sim::scenario::{Scenario, Unit, starting_before};
use doppel_sim::{SimError, kpi::Summary};

use crate::client::Client;

#[derive(Subcommand)]
pub enum SimCommand {
    /// Run the reference plant once and write its readings (and labels) to a file, or
    /// stream them to a running doppel.
    Run(Box<SimRunArgs>),
    /// Print the reference plant's twin spec (twin.toml): its assets and sensors.
    Spec,
}

#[derive(Subcommand)]
pub enum ScenarioCommand {
    /// Run a scenario many times against its no-disruption baseline (same seeds) and report
    /// KPI distributions.
    Run(Box<ScenarioRunArgs>),
    /// Check a scenario file and print what it will do.
    Check {
        /// The scenario file (TOML; see docs/SCENARIOS.md).
        file: PathBuf,
    },
}

/// What every run shares.
#[derive(Args, Clone, Debug)]
pub struct RunShape {
    /// How many days to simulate.
    #[arg(long, default_value_t = 30.0)]
    days: f64,
    /// The simulation step (e.g. 60s, 10s, 5m).
    #[arg(long, default_value = "60s", value_parser = seconds)]
    step: f64,
    /// Who operates the plant: none, rules, mpc (or mpc:horizon=2h,period=15m), any of them
    /// with +shield for the safety gate (docs/AUTONOMY.md).
    #[arg(long, default_value = "rules")]
    policy: String,
    /// The policy file whose reward and limits MPC and the safety gate use (default: the
    /// reference plant's, examples/reference-plant/policy.toml).
    #[arg(long)]
    objective: Option<PathBuf>,
    /// When the simulated time starts (RFC 3339). Seasons and the daily rhythm follow it.
    #[arg(long, default_value = "2026-07-01T00:00:00Z", value_parser = rfc3339)]
    start: i64,
}

pub(crate) fn seconds(text: &str) -> Result<f64, String> {
    doppel_core::time::parse_duration(text).map(|n| n as f64 / 1e9)
}

fn rfc3339(text: &str) -> Result<i64, String> {
    doppel_core::time::parse_rfc3339(text)
}

/// How fast to run: a multiple of real time, or as fast as possible.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Speed(pub Option<f64>);

pub fn speed(text: &str) -> Result<Speed, String> {
    if text == "max" {
        return Ok(Speed(None));
    }
    let number = text.trim_end_matches(['x', 'X']);
    match number.parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Speed(Some(v))),
        _ => Err(format!(
            "`{text}` is not a speed: write a multiple of real time such as 60x, or max"
        )),
    }
}

#[derive(Args, Debug)]
pub struct SimRunArgs {
    #[command(flatten)]
    shape: RunShape,
    /// The seed: the same seed gives the same run, byte for byte.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// A scenario file whose disruptions happen in this run.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Write readings here (.parquet or .csv); labels go to NAME.labels.EXT and the drawn
    /// disruptions to NAME.events.json.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Stream readings as line protocol to a running doppel (or any InfluxDB) at this URL.
    #[arg(long)]
    to: Option<String>,
    /// The bucket (database) to stream into.
    #[arg(long, default_value = "plant")]
    bucket: String,
    /// The token of the server streamed to.
    #[arg(long, env = "DOPPEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// How fast to stream: a multiple of real time (60x) or max.
    #[arg(long, default_value = "max", value_parser = speed)]
    speed: Speed,
    /// Start from a state saved with --save-state (the run forks from that moment).
    #[arg(long)]
    load_state: Option<PathBuf>,
    /// Save the plant's state at the end of the run (JSON).
    #[arg(long)]
    save_state: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ScenarioRunArgs {
    /// The scenario file (TOML; see docs/SCENARIOS.md).
    file: PathBuf,
    #[command(flatten)]
    shape: RunShape,
    /// How many runs (each with its own seed, shared with its baseline run).
    #[arg(long, default_value_t = 1000)]
    runs: usize,
    /// The study's seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output: a table for people or one JSON object.
    #[arg(long, value_enum, default_value = "table")]
    format: ReportFormat,
    /// Threads to use (default: all cores). Results do not depend on it.
    #[arg(long)]
    threads: Option<usize>,
    /// For "P(at least N failures at M or more assets within T)": N.
    #[arg(long, default_value_t = 2)]
    cluster_failures: usize,
    /// ... M.
    #[arg(long, default_value_t = 2)]
    cluster_assets: usize,
    /// ... T.
    #[arg(long, default_value = "7d", value_parser = seconds)]
    cluster_within: f64,
    /// Start every run from the live plant as the state estimator finds it now (asked of the
    /// running doppel: the one serving --data, or --url), instead of from fresh plants.
    #[arg(long)]
    from_live: bool,
    #[command(flatten)]
    data: crate::DataDirArg,
    #[command(flatten)]
    server: crate::ServerArg,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
pub enum ReportFormat {
    Table,
    Json,
}

pub fn run_sim(command: SimCommand) -> anyhow::Result<ExitCode> {
    match command {
        SimCommand::Run(args) => sim_run(*args),
        SimCommand::Spec => {
            print!(
                "{}",
                ChillerPlant::new(ChillerPlantConfig::default(), 0)?.twin_spec()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn run_scenario(command: ScenarioCommand) -> anyhow::Result<ExitCode> {
    match command {
        ScenarioCommand::Run(args) => scenario_run(*args),
        ScenarioCommand::Check { file } => scenario_check(&file),
    }
}

/// The policy `--policy` names, paid and limited by `--objective`.
fn policy_maker(
    shape: &RunShape,
    plant: &ChillerPlant,
) -> anyhow::Result<std::sync::Arc<dyn doppel_sim::policy::PolicyMaker>> {
    let objective = crate::policy::objective(shape.objective.as_deref(), plant)?;
    Ok(doppel_autonomy::policy_by_name(&shape.policy, objective)?)
}

fn plant_config(shape: &RunShape) -> ChillerPlantConfig {
    ChillerPlantConfig {
        start_ns: shape.start,
        ..ChillerPlantConfig::default()
    }
}

fn sim_run(args: SimRunArgs) -> anyhow::Result<ExitCode> {
    if args.out.is_none() && args.to.is_none() {
        bail!("say where the readings go: --out FILE.parquet (or .csv), and/or --to URL");
    }
    let mut plant = ChillerPlant::new(plant_config(&args.shape), args.seed)?;
    if let Some(path) = &args.load_state {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        plant
            .load_state(value)
            .with_context(|| format!("cannot load {}", path.display()))?;
    }
    let scenario = match &args.scenario {
        Some(path) => Scenario::load(path, &plant)?,
        None => Scenario::baseline(),
    };
    // Step times count from the plant's own start, also after --load-state (a fork goes on
    // from the saved moment, and scenario times count from the plant's start too).
    let start_ns = plant.config().start_ns;
    let settings = RunSettings {
        days: args.shape.days,
        step_s: args.shape.step,
    };
    let events = starting_before(
        scenario.draw(run_seed(args.seed, 0)),
        plant.time_s() + settings.days * 86_400.0,
    );
    let steps = settings.steps()?;
    let config = plant.config().clone();
    let mut policy = policy_maker(&args.shape, &plant)?.make(&plant, &config, args.seed)?;
    let mut recorder = match &args.out {
        Some(path) => Some(RunRecorder::create(path, &plant, &events, start_ns)?),
        None => None,
    };
    let mut stream = match &args.to {
        Some(url) => Some(LineStream::new(
            Client::new(url, args.token.clone()),
            url,
            &args.bucket,
            &plant,
            start_ns,
            args.speed.0,
        )),
        None => None,
    };
    let bar = crate::progress::bar(steps, "steps");
    let mut observer = Tee {
        recorder: recorder.as_mut(),
        stream: stream.as_mut(),
        bar: &bar,
    };
    let began = Instant::now();
    let outcome = simulate(
        &mut plant,
        policy.as_mut(),
        events.clone(),
        settings,
        Some(&mut observer),
    )?;
    if let Some(stream) = stream.as_mut() {
        stream.flush()?;
    }
    bar.finish_and_clear();
    if let (Some(recorder), Some(path)) = (recorder, &args.out) {
        recorder.finish()?;
        write_events(&events_path(path), &events, start_ns)?;
        eprintln!(
            "wrote {} (readings), {} (labels) and {} (events)",
            path.display(),
            labels_path(path).display(),
            events_path(path).display()
        );
    }
    if let Some(path) = &args.save_state {
        let text = serde_json::to_string(&plant.save_state())?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    for (t, message) in &outcome.refused {
        eprintln!("refused at day {:.2}: {message}", t / 86_400.0);
    }
    eprintln!(
        "{} steps in {:.1} s; energy {:.0} kWh, cost {:.0}, {:.0} min above the supply limit, {} failure(s), downtime {:.1} h",
        outcome.steps,
        began.elapsed().as_secs_f64(),
        outcome.kpis.energy_kwh,
        outcome.kpis.energy_cost,
        outcome.kpis.limit_excursion_minutes,
        outcome.kpis.failures,
        outcome.kpis.downtime_hours,
    );
    Ok(ExitCode::SUCCESS)
}

/// Sends each step to the file and/or the server, and moves the progress bar.
struct Tee<'a> {
    recorder: Option<&'a mut RunRecorder>,
    stream: Option<&'a mut LineStream>,
    bar: &'a indicatif::ProgressBar,
}

impl Observer for Tee<'_> {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        if let Some(r) = self.recorder.as_deref_mut() {
            r.observe(view)?;
        }
        if let Some(s) = self.stream.as_deref_mut() {
            s.observe(view)?;
        }
        self.bar.inc(1);
        Ok(true)
    }
}

/// Streams readings as line protocol, batched, paced to a multiple of real time.
struct LineStream {
    client: Client,
    url: String,
    bucket: String,
    layout: SeriesLayout,
    start_ns: i64,
    speed: Option<f64>,
    began: Instant,
    first_t_s: Option<f64>,
    body: String,
    lines: usize,
    last_send: Instant,
    points: Vec<doppel_core::Point>,
}

impl LineStream {
    fn new(
        client: Client,
        url: &str,
        bucket: &str,
        plant: &dyn Plant,
        start_ns: i64,
        speed: Option<f64>,
    ) -> Self {
        LineStream {
            client,
            url: url.to_owned(),
            bucket: bucket.to_owned(),
            layout: SeriesLayout::new(plant.sensors()),
            start_ns,
            speed,
            began: Instant::now(),
            first_t_s: None,
            body: String::new(),
            lines: 0,
            last_send: Instant::now(),
            points: Vec::new(),
        }
    }

    fn flush(&mut self) -> doppel_sim::Result<()> {
        if self.lines == 0 {
            return Ok(());
        }
        self.client
            .write_lines(&self.bucket, &self.body)
            .map_err(|e| SimError::Output {
                path: PathBuf::from(&self.url),
                message: format!("{e:#}"),
            })?;
        self.body.clear();
        self.lines = 0;
        self.last_send = Instant::now();
        Ok(())
    }
}

impl Observer for LineStream {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        let time = self.start_ns + (view.t_s * 1e9).round() as i64;
        self.points.clear();
        self.layout.points(view.readings, time, &mut self.points);
        for p in &self.points {
            doppel_ingest::write_line(&mut self.body, p);
            self.body.push('\n');
            self.lines += 1;
        }
        if let Some(speed) = self.speed {
            // Wait until real time catches up with simulated time / speed.
            let first = *self.first_t_s.get_or_insert(view.t_s);
            let due = Duration::from_secs_f64((view.t_s - first) / speed);
            let elapsed = self.began.elapsed();
            if due > elapsed {
                if self.lines > 0 {
                    self.flush()?;
                }
                std::thread::sleep(due - elapsed);
            }
        }
        if self.lines >= 5000 || self.last_send.elapsed() >= Duration::from_secs(1) {
            self.flush()?;
        }
        Ok(true)
    }
}

fn scenario_check(file: &Path) -> anyhow::Result<ExitCode> {
    let plant = ChillerPlant::new(ChillerPlantConfig::default(), 0)?;
    let scenario = Scenario::load(file, &plant)?;
    println!("{}: {}", scenario.name, scenario.description);
    for (i, d) in scenario.disruptions.iter().enumerate() {
        let duration = d
            .duration_s
            .as_ref()
            .map_or("until the end of the run".to_owned(), |x| {
                format!("lasting {}", x.in_words(Unit::Time))
            });
        println!(
            "  {}. {}: probability {}, starts at {}, {duration}; {}",
            i + 1,
            d.label,
            d.probability,
            d.start_s.in_words(Unit::Time),
            d.effect_in_words(),
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn scenario_run(args: ScenarioRunArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let config = plant_config(&args.shape);
    let probe = ChillerPlant::new(config.clone(), 0)?;
    let scenario = Scenario::load(&args.file, &probe)?;
    let start = if args.from_live {
        Some(std::sync::Arc::new(live_plant(&args.data, &args.server)?))
    } else {
        None
    };
    let study = Study {
        plant: config,
        policy: policy_maker(&args.shape, &probe)?,
        start,
        settings: RunSettings {
            days: args.shape.days,
            step_s: args.shape.step,
        },
        runs: args.runs,
        seed: args.seed,
        cluster: ClusterQuestion {
            at_least: args.cluster_failures,
            assets: args.cluster_assets,
            window_s: args.cluster_within,
        },
        threads: args.threads,
        background: false,
    };
    let bar = crate::progress::bar(args.runs as u64, "runs");
    let began = Instant::now();
    let result = run_study(&study, &scenario, &|done| bar.set_position(done))?;
    bar.finish_and_clear();
    let seconds = began.elapsed().as_secs_f64();
    match args.format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&result)?),
        ReportFormat::Table => print_table(&result),
    }
    let threads = args.threads.unwrap_or_else(rayon_threads);
    let per_second = result.plant_steps as f64 / seconds;
    eprintln!(
        "{:.1} M plant steps in {seconds:.1} s: {:.2} M steps/s on {threads} thread(s), {:.2} M per thread",
        result.plant_steps as f64 / 1e6,
        per_second / 1e6,
        per_second / 1e6 / threads as f64,
    );
    Ok(ExitCode::SUCCESS)
}

/// The live plant as the running twin's state estimator finds it (`GET /api/v1/twin/estimate`).
fn live_plant(data: &crate::DataDirArg, server: &crate::ServerArg) -> anyhow::Result<ChillerPlant> {
    let client = crate::client::twin_client(data, server, "--from-live asks the running twin")?;
    let body: serde_json::Value =
        serde_json::from_slice(&client.get("/api/v1/twin/estimate", &[])?)?;
    let mut plant = ChillerPlant::new(ChillerPlantConfig::default(), 0)?;
    plant.load_state(body["state"].clone())?;
    eprintln!(
        "starting from the live plant at {}: {}",
        body["at"].as_str().unwrap_or("?"),
        body["hidden"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                let seen = if h["readings"].as_u64() == Some(0) {
                    " (not seen running: prior)"
                } else {
                    ""
                };
                format!(
                    "{} {} {:.2}{seen}",
                    h["asset"].as_str().unwrap_or("?"),
                    h["quantity"].as_str().unwrap_or("?"),
                    h["value"].as_f64().unwrap_or(f64::NAN)
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(plant)
}

fn rayon_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn print_table(r: &StudyResult) {
    println!(
        "scenario {}: {} runs of {} days (step {} s), policy {}, seed {}{}; baseline = same seeds without the disruptions\n",
        r.scenario_name,
        r.runs,
        r.days,
        r.step_s,
        r.policy,
        r.seed,
        if r.from_live {
            ", from the live plant"
        } else {
            ""
        }
    );
    let cell = |s: &Summary| format!("{:.1} [{:.1}, {:.1}]", s.p50, s.p5, s.p95);
    println!(
        "{:<27} {:>30} {:>30} {:>14}",
        "KPI", "baseline p50 [p5, p95]", "scenario p50 [p5, p95]", "mean change"
    );
    for (name, base) in &r.baseline {
        let with = &r.scenario[name];
        let diff = &r.difference[name];
        println!(
            "{name:<27} {:>30} {:>30} {:>+14.1}",
            cell(base),
            cell(with),
            diff.mean
        );
    }
    let c = &r.cluster;
    println!(
        "\nP(at least {} failures at {} or more assets within {} h): baseline {:.3}, scenario {:.3}",
        c.at_least, c.assets, c.within_hours, c.baseline_probability, c.scenario_probability
    );
    let drawn: Vec<String> = r
        .disruptions_drawn
        .iter()
        .map(|(label, n)| format!("{label} in {n}/{} runs", r.runs))
        .collect();
    if !drawn.is_empty() {
        println!("disruptions: {}", drawn.join("; "));
    }
}
