//! The `doppel` command: wiring only. Each subcommand lives in its own module and calls
//! into the library crates; nothing here owns data or logic another part could need.

/// mimalloc keeps freed memory for reuse: the model's tensor buffers come and go by the
/// megabyte every step, and glibc's malloc returns each to the kernel and faults it back in.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process. mimalloc asks the kernel for them, and
/// then every first touch of freed-and-returned memory clears 2 MiB instead of 4 KiB, which
/// under HTTP ingest dominated the server's time; model training is no slower without them.
/// Best effort: an old kernel just says no.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// Lets a command whose output goes to a closed pipe (`doppel query ... | head`) end quietly,
/// as other command-line tools do, instead of failing on every later write. Rust ignores
/// SIGPIPE for every program; sockets are unaffected either way (the standard library sends
/// with `MSG_NOSIGNAL`), and the server keeps ignoring it, so a closed log pipe cannot stop it.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: setting a signal's disposition to its default touches no memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

mod admin;
mod alerts;
mod bench;
mod client;
mod import;
mod live;
mod model;
mod plot;
mod policy;
mod progress;
mod query;
mod rules;
mod serve;
mod sim;
mod spec;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// doppel: a self-hosted digital twin for industrial operations.
///
/// Start with `doppel up`, then write line protocol to http://127.0.0.1:7700/api/v2/write
/// and query it with `doppel query --db plant "SHOW TABLES"`.
#[derive(Parser)]
#[command(name = "doppel", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole twin on defaults: data in ./doppel-data, HTTP on 127.0.0.1:7700, and the
    /// simulated reference plant streaming live readings into bucket `plant`.
    Up(serve::UpArgs),
    /// Run the HTTP API over a data directory.
    Serve(serve::ServeArgs),
    /// Run SQL against a database, on a running server (--url) or straight on a data directory.
    Query(query::QueryArgs),
    /// Import history files (CSV, whitespace-separated tables, Parquet) into a database.
    Import(Box<import::ImportArgs>),
    /// Work with twin specs (`twin.toml`).
    Spec {
        #[command(subcommand)]
        command: spec::SpecCommand,
    },
    /// The running twin's alerts: list them, acknowledge one.
    Alerts {
        #[command(subcommand)]
        command: alerts::AlertsCommand,
    },
    /// Work with alert rules (doppel's rule language, docs/RULES.md).
    Rules {
        #[command(subcommand)]
        command: rules::RulesCommand,
    },
    /// Simulate the reference plant (a chilled-water cooling plant).
    Sim {
        #[command(subcommand)]
        command: sim::SimCommand,
    },
    /// Run disruption scenarios many times and report what they cost (Monte Carlo KPIs).
    Scenario {
        #[command(subcommand)]
        command: sim::ScenarioCommand,
    },
    /// Policies that operate the plant: check a policy file, compare policies on scenarios.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// The sensor model: pretrain it on a plant's history; fill gaps, forecast, score, embed; fine-tune heads and probes; a registry of versions.
    Model {
        #[command(subcommand)]
        command: model::ModelCommand,
    },
    /// Set how long a table keeps its data.
    Retention(admin::RetentionArgs),
    /// Look after the data directory (check its files; salvage a damaged write-ahead log).
    Lake {
        #[command(subcommand)]
        command: admin::LakeCommand,
    },
    /// Measure parsing, durable writes and HTTP ingest (see docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

/// Where the lake lives, shared by the commands that open it.
#[derive(clap::Args, Clone, Debug)]
pub struct DataDirArg {
    /// The data directory.
    #[arg(long = "data", env = "DOPPEL_DATA", default_value = "./doppel-data")]
    pub data: PathBuf,
}

/// A running doppel to talk to instead of opening the data directory.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArg {
    /// Talk to a running doppel at this URL (such as http://127.0.0.1:7700) instead of
    /// opening the data directory.
    #[arg(long, env = "DOPPEL_URL")]
    pub url: Option<String>,
    /// The token of the running doppel.
    #[arg(long, env = "DOPPEL_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("DOPPEL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    if !matches!(cli.command, Command::Up(_) | Command::Serve(_)) {
        restore_default_sigpipe();
    }
    let result = match cli.command {
        Command::Up(args) => serve::run(args.serve, Some(args.source)),
        Command::Serve(args) => serve::run(args, None),
        Command::Sim { command } => sim::run_sim(command),
        Command::Scenario { command } => sim::run_scenario(command),
        Command::Model { command } => model::run(command),
        Command::Query(args) => query::run(args),
        Command::Lake { command } => admin::lake(command),
        Command::Import(args) => import::run(*args),
        Command::Spec { command } => spec::run(command),
        Command::Rules { command } => rules::run(command),
        Command::Policy { command } => policy::run_command(command),
        Command::Alerts { command } => alerts::run(command),
        Command::Retention(args) => admin::retention(args),
        Command::Bench { command } => bench::run(command),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
