//! `doppel query`: SQL on a running server or straight on a data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use doppel_lake::{Lake, LakeConfig, LakeError, QueryLimits};
use doppel_server::query::{Format, render};

use crate::client::{Client, running_server};
use crate::{DataDirArg, ServerArg};

#[derive(Args)]
pub struct QueryArgs {
    /// The database (bucket) to query.
    #[arg(long)]
    db: String,
    /// The SQL, such as "SELECT * FROM pumps LIMIT 10".
    sql: String,
    /// Output format: pretty, json, jsonl or csv.
    #[arg(long, default_value = "pretty")]
    format: String,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    data: DataDirArg,
}

pub fn run(args: QueryArgs) -> anyhow::Result<ExitCode> {
    let format: Format = args.format.parse().map_err(anyhow::Error::msg)?;
    let output = run_sql(&args.db, &args.sql, format, &args.server, &args.data)?;
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output)?;
    if format == Format::Json && !output.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs SQL on the running doppel at `--url` when one is given, else straight on the data
/// directory; returns the result rendered in `format`.
pub fn run_sql(
    db: &str,
    sql: &str,
    format: Format,
    server: &ServerArg,
    data: &DataDirArg,
) -> anyhow::Result<Vec<u8>> {
    let ask = |url: &str| {
        Client::new(url, server.token.clone()).post_json(
            "/api/v3/query_sql",
            &serde_json::json!({"db": db, "q": sql, "format": format.name()}),
        )
    };
    match &server.url {
        Some(url) => ask(url),
        None => {
            let config = LakeConfig {
                query: QueryLimits::local(),
                ..LakeConfig::default()
            };
            let lake = match Lake::open(&data.data, config) {
                Ok(lake) => lake,
                Err(LakeError::Locked { .. }) if running_server(&data.data).is_some() => {
                    // The doppel serving this directory answers instead.
                    let url = running_server(&data.data).expect("checked");
                    eprintln!(
                        "(asking the doppel at {url}, which holds {})",
                        data.data.display()
                    );
                    return ask(&url);
                }
                Err(e @ LakeError::Locked { .. }) => {
                    anyhow::bail!("{e}. Ask the running doppel instead: add --url http://HOST:PORT")
                }
                Err(e) => {
                    return Err(e).context(format!("cannot open {}", data.data.display()));
                }
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(lake.query(db, sql));
            // Reading never changes the lake; leave replayed writes in the WAL as they were.
            drop(lake);
            let (schema, batches) = result?;
            render(format, &schema, &batches).map_err(anyhow::Error::msg)
        }
    }
}
