//! `doppel bench`: the measurements behind docs/BENCHMARKS.md, runnable by anyone.
//!
//! The payload is plant-like: 200 assets, 8 float fields a line, 5,000 lines a batch.
//! `ingest` speaks the InfluxDB v1/v2 write API, so the same command measures doppel and a
//! peer (InfluxDB 1.x) side by side; see `benches/ingest_vs_influxdb.sh`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::{Args, Subcommand};
use doppel_core::{ColumnarBatch, Precision};

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Line-protocol parsing on one core: lines/s and MB/s.
    Parse(ParseArgs),
    /// Durable writes into a lake in a temporary folder (WAL fsync + group commit), then one
    /// persist of the buffer to Parquet.
    Wal(WalArgs),
    /// End-to-end HTTP ingest against a running server (doppel or InfluxDB).
    Ingest(IngestArgs),
    /// The durability harness: seeded cases of writes under injected full disks, I/O errors,
    /// short writes, crashes, power cuts and bit flips; checks that no acknowledged batch is
    /// lost and that damage is detected.
    Faults(FaultsArgs),
    /// The state estimator against the simulator's truth: reference plants run under the
    /// rule-based operator, each estimated from its last six hours of readings; the error of
    /// hidden wear and fouling, and of the hour simulated from the estimate.
    Estimator {
        /// Plants (seeds 1..=N).
        #[arg(long, default_value_t = 100)]
        plants: u64,
        /// Days each plant runs before it is estimated.
        #[arg(long, default_value_t = 2.0)]
        days: f64,
    },
}

#[derive(Args)]
pub struct FaultsArgs {
    /// Cases to run (seeds `--seed` .. `--seed + --cases`).
    #[arg(long, default_value_t = 2000)]
    cases: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Where to put the temporary lakes (a folder on the disk to test).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

#[derive(Args)]
pub struct ParseArgs {
    /// Lines to parse (repeated batches of the plant payload).
    #[arg(long, default_value_t = 1_000_000)]
    lines: usize,
}

#[derive(Args)]
pub struct WalArgs {
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    writers: usize,
    /// Batches each writer sends.
    #[arg(long, default_value_t = 50)]
    batches: usize,
    /// Lines a batch.
    #[arg(long, default_value_t = 5000)]
    lines: usize,
    /// Where to put the temporary lake (a folder on the disk to measure).
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

#[derive(Args)]
pub struct IngestArgs {
    /// The server, such as http://127.0.0.1:7700 (doppel) or http://127.0.0.1:8086 (InfluxDB).
    #[arg(long)]
    url: String,
    /// The database (bucket) to write into; created beforehand for InfluxDB.
    #[arg(long, default_value = "bench")]
    db: String,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Batches each client sends.
    #[arg(long, default_value_t = 40)]
    batches: usize,
    /// Lines a batch.
    #[arg(long, default_value_t = 5000)]
    lines: usize,
    /// A name for the server in the printed result.
    #[arg(long, default_value = "server")]
    label: String,
}

pub const ASSETS: usize = 200;
pub const FIELDS: usize = 8;

/// One batch of the plant payload: `lines` lines over 200 assets, timestamps from `start`.
pub fn plant_batch(lines: usize, start_step: u64, seed: u64) -> String {
    let mut out = String::with_capacity(lines * 160);
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    for i in 0..lines {
        let asset = i % ASSETS;
        let step = start_step + (i / ASSETS) as u64;
        out.push_str("plant,site=north,asset=asset_");
        out.push_str(&format!("{asset:03} "));
        for f in 0..FIELDS {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let v = 10.0 + (x >> 40) as f64 / 1e5;
            if f > 0 {
                out.push(',');
            }
            out.push_str(&format!("f{f}={v:.4}"));
        }
        out.push_str(&format!(
            " {}\n",
            1_700_000_000_000_000_000u64 + step * 1_000_000_000
        ));
    }
    out
}

/// Plant-payload bodies for `clients` concurrent senders, `batches` each, with timestamps that
/// never collide across senders (so no write overwrites another).
fn client_bodies(clients: usize, batches: usize, lines: usize) -> Vec<Vec<String>> {
    (0..clients)
        .map(|c| {
            (0..batches)
                .map(|b| {
                    let step = ((b * clients + c) * lines / ASSETS) as u64;
                    plant_batch(lines, step, (c * 1000 + b) as u64)
                })
                .collect()
        })
        .collect()
}

pub fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Parse(args) => parse(args),
        BenchCommand::Wal(args) => wal(args),
        BenchCommand::Ingest(args) => ingest(args),
        BenchCommand::Faults(args) => faults(args),
        BenchCommand::Estimator { plants, days } => {
            let began = Instant::now();
            let e = doppel_sim::chiller::measure_estimator(1..plants + 1, days)?;
            println!("{}", serde_json::to_string_pretty(&e)?);
            eprintln!("{plants} plants in {:.1} s", began.elapsed().as_secs_f64());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn faults(args: FaultsArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = crate::progress::bar(args.cases, "cases");
    let mut failures = Vec::new();
    let (mut batches, mut acknowledged, mut refused, mut injected, mut detected, mut lost) =
        (0, 0, 0, 0, 0, 0);
    let mut endings = std::collections::BTreeMap::new();
    for seed in args.seed..args.seed + args.cases {
        let dir = tempfile::tempdir_in(&args.dir)?;
        match doppel_lake::harness::run_case(seed, dir.path()) {
            Ok(report) => {
                batches += report.batches;
                acknowledged += report.acknowledged;
                refused += report.refused;
                injected += report.faults_injected;
                detected += usize::from(report.damage_detected);
                lost += report.lost;
                let ending = report.ending.map_or("none".into(), |e| format!("{e:?}"));
                *endings.entry(ending).or_insert(0) += 1;
            }
            Err(why) => {
                // Printed, not through the bar: a bar hidden off a terminal drops its lines.
                bar.suspend(|| println!("seed {seed}: {why}"));
                failures.push(seed);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "faults: {} cases in {:.1} s; {batches} batches written, {acknowledged} acknowledged, \
         {refused} refused with 503; {injected} faults injected; endings {endings:?}; damage \
         detected in {detected} bit-flip cases (acknowledged batches in damaged records: {lost}); \
         broken promises: {}",
        args.cases,
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    if failures.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        println!("failing seeds: {failures:?}");
        Ok(ExitCode::FAILURE)
    }
}

fn parse(args: ParseArgs) -> anyhow::Result<ExitCode> {
    let batch = plant_batch(5000, 0, 1);
    let rounds = args.lines.div_ceil(5000);
    let bytes = batch.len() * rounds;
    let report = |what: &str, rows: usize, seconds: f64| {
        println!(
            "parse ({what}): {rows} lines in {seconds:.2} s: {:.0} lines/s, {:.1} MB/s, {:.2} M values/s (one core)",
            rows as f64 / seconds,
            bytes as f64 / seconds / 1e6,
            (rows * FIELDS) as f64 / seconds / 1e6
        )
    };
    // Warm up once, then time. Columns are what the write path parses into.
    let warm = doppel_ingest::parse_columnar(&batch, "bench", Precision::Nanoseconds, 0);
    if let Some(e) = warm.errors.first() {
        bail!("the benchmark payload does not parse: {e}");
    }
    let started = Instant::now();
    let mut rows = 0;
    for _ in 0..rounds {
        rows += doppel_ingest::parse_columnar(&batch, "bench", Precision::Nanoseconds, 0)
            .batch
            .rows();
    }
    report("columns", rows, started.elapsed().as_secs_f64());
    let started = Instant::now();
    let mut points = 0;
    for _ in 0..rounds {
        points += doppel_ingest::parse_lines(&batch, Precision::Nanoseconds, 0)
            .points
            .len();
    }
    report("points", points, started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

fn wal(args: WalArgs) -> anyhow::Result<ExitCode> {
    let dir = tempfile_in(&args.dir)?;
    let lake = doppel_lake::Lake::open(&dir, doppel_lake::LakeConfig::default())?;
    let batches: Vec<Vec<ColumnarBatch>> = client_bodies(args.writers, args.batches, args.lines)
        .into_iter()
        .map(|bodies| {
            bodies
                .iter()
                .map(|text| {
                    doppel_ingest::parse_columnar(text, "bench", Precision::Nanoseconds, 0).batch
                })
                .collect()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.writers)
        .build()?;
    let started = Instant::now();
    runtime.block_on(async {
        let writers: Vec<_> = batches
            .into_iter()
            .map(|writer| {
                let lake = lake.clone();
                tokio::spawn(async move {
                    for batch in writer {
                        lake.write_columns(batch, Vec::new(), false)
                            .await
                            .expect("bench write");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("bench writer");
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    let total = args.writers * args.batches;
    println!(
        "wal: {total} batches of {} lines from {} writers in {seconds:.2} s: {:.0} batches/s, {:.0} lines/s, {:.2} M values/s (durable)",
        args.lines,
        args.writers,
        total as f64 / seconds,
        (total * args.lines) as f64 / seconds,
        (total * args.lines * FIELDS) as f64 / seconds / 1e6
    );
    // Then the buffer to Parquet, on the persist path alone (what the persist thread does
    // beside ingest: sort, encode, compress, fsync).
    let buffered = lake.stats().buffered_rows;
    let started = Instant::now();
    lake.flush()?;
    let seconds = started.elapsed().as_secs_f64();
    let stats = lake.stats();
    println!(
        "persist: {buffered} rows in {seconds:.2} s: {:.0} rows/s, {} file(s), {:.1} bytes a row",
        buffered as f64 / seconds,
        stats.files,
        stats.file_bytes as f64 / (total * args.lines) as f64
    );
    drop(lake);
    std::fs::remove_dir_all(&dir)?;
    Ok(ExitCode::SUCCESS)
}

fn tempfile_in(parent: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let dir = parent.join(format!(".doppel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    eprintln!(
        "preparing {} batches of {} lines...",
        args.clients * args.batches,
        args.lines
    );
    let bodies = client_bodies(args.clients, args.batches, args.lines);
    let url = format!(
        "{}/write?db={}&precision=ns",
        args.url.trim_end_matches('/'),
        args.db
    );
    let started = Instant::now();
    // Per client: failed batches, `503` answers (each retried after 100 ms), and each
    // acknowledged batch's latency from first send to success.
    let outcomes: Vec<(usize, usize, Vec<Duration>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = bodies
            .iter()
            .map(|client_bodies| {
                let url = url.clone();
                scope.spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .timeout_global(Some(Duration::from_secs(120)))
                        .build()
                        .into();
                    let (mut failures, mut refusals) = (0, 0);
                    let mut latencies = Vec::with_capacity(client_bodies.len());
                    for body in client_bodies {
                        let sent = Instant::now();
                        loop {
                            match agent.post(&url).send(body.as_str()) {
                                Ok(r) if r.status().is_success() => {
                                    latencies.push(sent.elapsed());
                                    break;
                                }
                                Ok(r) if r.status().as_u16() == 503 => {
                                    refusals += 1;
                                    std::thread::sleep(Duration::from_millis(100))
                                }
                                Ok(r) => {
                                    eprintln!("write failed: {}", r.status());
                                    failures += 1;
                                    break;
                                }
                                Err(e) => {
                                    eprintln!("write failed: {e}");
                                    failures += 1;
                                    break;
                                }
                            }
                        }
                    }
                    (failures, refusals, latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let seconds = started.elapsed().as_secs_f64();
    let lines = args.clients * args.batches * args.lines;
    let failures: usize = outcomes.iter().map(|o| o.0).sum();
    if failures > 0 {
        bail!("{failures} batches failed");
    }
    let refusals: usize = outcomes.iter().map(|o| o.1).sum();
    let mut latencies: Vec<Duration> = outcomes.into_iter().flat_map(|o| o.2).collect();
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 * q).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1e3
    };
    println!(
        "ingest[{}]: {lines} lines ({} batches of {}, {} clients) in {seconds:.2} s: {:.0} lines/s, {:.2} M values/s; batch latency p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms; {refusals} answers 503",
        args.label,
        args.clients * args.batches,
        args.lines,
        args.clients,
        lines as f64 / seconds,
        (lines * FIELDS) as f64 / seconds / 1e6,
        at(0.5),
        at(0.99),
        at(1.0),
    );
    Ok(ExitCode::SUCCESS)
}
