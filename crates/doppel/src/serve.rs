//! `doppel serve` and `doppel up`: the HTTP API over a lake, with graceful shutdown.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use doppel_lake::{Lake, LakeConfig, QueryLimits};
use doppel_server::{ConnectionLimits, ServerConfig, app_with_twin, serve};

use crate::DataDirArg;
use crate::live::{LiveSource, SourceArgs};

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The address to listen on. Anything but loopback needs --token.
    #[arg(long, env = "DOPPEL_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// A token every request must carry (Authorization: Token <token>).
    #[arg(long, env = "DOPPEL_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The largest request body accepted, in MiB (after decompression).
    #[arg(long, env = "DOPPEL_MAX_BODY_MIB", default_value_t = 10)]
    max_body_mib: usize,
    /// Persist the write buffer to Parquet once it holds this many MiB.
    #[arg(long, env = "DOPPEL_FLUSH_MIB", default_value_t = 128)]
    flush_mib: usize,
    /// Persist the write buffer once its oldest write is this old (e.g. 5m, 30s).
    #[arg(long, env = "DOPPEL_FLUSH_AGE", default_value = "5m", value_parser = parse_duration)]
    flush_age: Duration,
    /// Answer writes with 503 (retry later) while this many MiB are buffered.
    #[arg(long, env = "DOPPEL_MAX_BUFFER_MIB", default_value_t = 512)]
    max_buffer_mib: usize,
    /// Stop a query still running after this long (e.g. 60s, 5m).
    #[arg(long, env = "DOPPEL_QUERY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    query_timeout: Duration,
    /// The memory all running queries share, results included, in MiB; a query that needs
    /// more fails with a clear error, never the server.
    #[arg(long, env = "DOPPEL_QUERY_MEMORY_MIB", default_value_t = 1024)]
    query_memory_mib: usize,
    /// Close a connection whose request headers have not arrived this long after it opened or
    /// after its last answer (idle keep-alive connections too).
    #[arg(long, env = "DOPPEL_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    header_timeout: Duration,
    /// Answer 408 to a request whose body has not fully arrived this long after its headers.
    #[arg(long, env = "DOPPEL_BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    body_timeout: Duration,
    /// Connections open at once; more wait until one closes.
    #[arg(long, env = "DOPPEL_MAX_CONNECTIONS", default_value_t = 512)]
    max_connections: usize,
    /// The twin spec (sites, assets, sensors): the live twin at /api/v1 keeps each sensor's
    /// latest value and state. `doppel up` with the reference plant uses the plant's own.
    #[arg(long, env = "DOPPEL_SPEC")]
    spec: Option<std::path::PathBuf>,
    /// Alert rules in doppel's rule language (docs/RULES.md), checked against the spec.
    /// `doppel up` with the reference plant uses the plant's own rules.
    #[arg(long, env = "DOPPEL_RULES")]
    rules: Option<std::path::PathBuf>,
    /// POST every alert change as JSON to this http:// or https:// URL (retried until
    /// delivered).
    #[arg(long, env = "DOPPEL_WEBHOOK")]
    webhook: Option<String>,
    /// PEM certificates to trust for an https webhook instead of the public roots (a
    /// receiver behind an internal CA).
    #[arg(long, env = "DOPPEL_WEBHOOK_CA", requires = "webhook")]
    webhook_ca: Option<std::path::PathBuf>,
    /// The bucket the twin's sensors are written to (and the reference plant writes to).
    #[arg(long, env = "DOPPEL_BUCKET", default_value = "plant")]
    pub bucket: String,
    /// Do not train or use a sensor model in the twin (anomaly scores from PCA alone).
    #[arg(long)]
    no_model: bool,
    /// Pretraining steps of the twin's own model, trained in the background once the lake
    /// holds --model-history of its sensors and no model is registered for it.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    model_steps: u64,
    /// Data the twin waits for before it trains its model (e.g. 12h, 1d).
    #[arg(long, default_value = "12h", value_parser = parse_duration)]
    model_history: Duration,
    /// Data time between retrainings of the twin's model: a new version is trained on the
    /// history before the latest day and goes to work only when it beats the live one on
    /// that day (`doppel model list` shows each comparison).
    #[arg(long, default_value = "1d", value_parser = parse_duration)]
    retrain_every: Duration,
}

/// `doppel up`: the server plus a live data source.
#[derive(Args, Clone, Debug)]
pub struct UpArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    doppel_core::time::parse_duration(text).map(|n| Duration::from_nanos(n as u64))
}

pub fn run(args: ServeArgs, up: Option<SourceArgs>) -> anyhow::Result<ExitCode> {
    if args.token.as_deref().is_some_and(|t| t.trim().is_empty()) {
        bail!(
            "the token is empty (--token or DOPPEL_TOKEN): an empty token would let anyone in. \
             Set a real one, or leave both unset to serve on loopback without a token"
        );
    }
    if !args.listen.ip().is_loopback() && args.token.is_none() {
        bail!(
            "refusing to listen on {} without a token: anyone who can reach it could read and write your data. \
             Set --token (or DOPPEL_TOKEN), or listen on 127.0.0.1",
            args.listen
        );
    }
    let config = LakeConfig {
        flush_bytes: args.flush_mib << 20,
        flush_age: args.flush_age,
        max_buffer_bytes: args.max_buffer_mib << 20,
        query: QueryLimits {
            timeout: args.query_timeout,
            memory_bytes: args.query_memory_mib << 20,
            ..QueryLimits::default()
        },
        ..LakeConfig::default()
    };
    let lake = Lake::open(&args.data.data, config).with_context(|| {
        format!(
            "cannot open the data directory {}",
            args.data.data.display()
        )
    })?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server_config = ServerConfig {
        token: args.token.clone(),
        max_body_bytes: args.max_body_mib << 20,
        body_timeout: args.body_timeout,
        max_response_bytes: args.query_memory_mib << 20,
    };
    let limits = ConnectionLimits {
        header_timeout: args.header_timeout,
        max_connections: args.max_connections,
    };
    let result = runtime.block_on(async {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "{} is already in use (another doppel, or another program); choose another address with --listen",
                args.listen
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {}", args.listen)),
        };
        let address = listener.local_addr()?;
        tracing::info!(%address, data = %args.data.data.display(), "doppel is serving");
        if let Err(e) = crate::client::announce_server(&args.data.data, address) {
            tracing::warn!(error = %e, "cannot write {} into the data directory; commands run beside this server will need --url", crate::client::SERVER_FILE);
        }
        let spec = twin_spec(&args, up.as_ref())?;
        let twin = match spec {
            Some(spec) => {
                let rules = twin_rules(&args, up.as_ref(), &spec)?;
                let webhook = webhook_target(&args)?;
                Some(
                    doppel_twin::Twin::attach(
                        lake.clone(),
                        spec,
                        &args.bucket,
                        doppel_twin::TwinOptions {
                            rules,
                            webhook,
                            model: doppel_twin::ModelSettings {
                                train: !args.no_model,
                                steps: args.model_steps as usize,
                                min_history_ns: args.model_history.as_nanos() as i64,
                                retrain_every_ns: args.retrain_every.as_nanos() as i64,
                                ..doppel_twin::ModelSettings::default()
                            },
                        },
                    )
                    .await,
                )
            }
            None => None,
        };
        let source = match &up {
            Some(source_args) => {
                let source =
                    LiveSource::start(source_args, &args.bucket, lake.clone(), twin.clone())?;
                print_what_next(address, args.token.is_some(), source.is_some());
                source
            }
            None => None,
        };
        let served = serve(
            listener,
            app_with_twin(lake.clone(), server_config, twin),
            limits,
            shutdown_signal(),
        )
        .await
        .context("the HTTP server failed");
        if let Some(source) = source {
            tracing::info!("stopping the reference plant");
            source.stop().context("the reference plant failed")?;
        }
        served
    });
    let _ = std::fs::remove_file(args.data.data.join(crate::client::SERVER_FILE));
    tracing::info!("persisting buffered writes before exiting");
    let flushed = lake.shutdown();
    result?;
    flushed.context(
        "persisting at shutdown failed; the writes are safe in the WAL and will be replayed",
    )?;
    Ok(ExitCode::SUCCESS)
}

/// The twin spec to serve: `--spec`, or the reference plant's own when it is the source.
fn twin_spec(
    args: &ServeArgs,
    up: Option<&SourceArgs>,
) -> anyhow::Result<Option<doppel_core::spec::TwinSpec>> {
    if let Some(path) = &args.spec {
        return match doppel_core::spec::load(path) {
            Ok(spec) => Ok(Some(spec)),
            Err(doppel_core::spec::SpecError::Invalid(problems)) => {
                let lines: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                bail!(
                    "{} is not a valid twin spec:\n{}",
                    path.display(),
                    lines.join("\n")
                )
            }
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
    }
    match up {
        Some(source) if source.is_reference() => Ok(Some(crate::live::reference_spec()?)),
        _ => Ok(None),
    }
}

/// The webhook from `--webhook` and `--webhook-ca`, checked before the server starts.
fn webhook_target(args: &ServeArgs) -> anyhow::Result<Option<doppel_twin::webhook::WebhookTarget>> {
    let Some(url) = &args.webhook else {
        return Ok(None);
    };
    let ca = match &args.webhook_ca {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading the webhook's CA file {}", path.display()))?,
        ),
        None => None,
    };
    Ok(Some(doppel_twin::webhook::WebhookTarget::new(
        url,
        ca.as_deref(),
    )?))
}

/// The rules to watch with: `--rules`, or the reference plant's own with the plant.
fn twin_rules(
    args: &ServeArgs,
    up: Option<&SourceArgs>,
    spec: &doppel_core::spec::TwinSpec,
) -> anyhow::Result<Option<doppel_twin::RuleSet>> {
    if let Some(path) = &args.rules {
        return Ok(Some(doppel_rules::RuleSet::load(path, spec)?));
    }
    match up {
        Some(source) if source.is_reference() && args.spec.is_none() => {
            Ok(Some(doppel_rules::RuleSet::parse(
                crate::live::REFERENCE_RULES,
                std::path::Path::new("examples/reference-plant/rules.toml"),
                spec,
            )?))
        }
        _ => Ok(None),
    }
}

fn print_what_next(address: SocketAddr, token: bool, plant: bool) {
    let auth = if token {
        " -H \"Authorization: Token $DOPPEL_TOKEN\""
    } else {
        ""
    };
    // The commands name this very binary, which need not be on PATH after `cargo run`.
    let doppel = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "doppel".into());
    let live = if plant {
        format!(
            "The simulated reference plant (a chilled-water cooling plant) is writing live\n  \
             readings into bucket `plant`:\n    \
             {doppel} query --url http://{address} --db plant \"SHOW TABLES\"\n    \
             {doppel} query --url http://{address} --db plant \\\n      \
             \"SELECT date_bin(INTERVAL '1 hour', time) AS hour, avg(power) FROM plant GROUP BY hour ORDER BY hour\"\n\n  \
             The live twin: each asset's state, its sensors' latest values, anomaly scores and the\n  \
             alerts of the plant's rules (docs/API.md):\n    \
             curl{auth} http://{address}/api/v1/twin\n    \
             curl -N{auth} http://{address}/api/v1/events          # changes as they happen\n    \
             {doppel} alerts list --url http://{address}\n\n  "
        )
    } else {
        String::new()
    };
    eprintln!(
        "\n  doppel is up on http://{address}\n\n  {live}\
         Write line protocol (as to InfluxDB):\n    \
         curl -i{auth} -XPOST 'http://{address}/api/v2/write?bucket=mine&precision=s' \\\n      \
         --data-binary 'pumps,asset=pump-1 speed=0.82,vibration=2.1 '\"$(date +%s)\"\n\n  \
         Query it with SQL:\n    \
         {doppel} query --url http://{address} --db mine \"SELECT * FROM pumps\"\n\n  \
         Import history:\n    {doppel} import --url http://{address} --db history FILE.csv\n\n  \
         Stop with Ctrl-C: buffered writes are persisted first.\n"
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
