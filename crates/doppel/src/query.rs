//! `doppel query`: SQL on a running server or straight on a data directory.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use doppel_lake::{Lake, LakeConfig, LakeError};
use doppel_server::query::{Format, render};

use crate::client::Client;
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
    let output = match &args.server.url {
        Some(url) => Client::new(url, args.server.token.clone()).post_json(
            "/api/v3/query_sql",
            &serde_json::json!({"db": args.db, "q": args.sql, "format": args.format}),
        )?,
        None => {
            let lake = match Lake::open(&args.data.data, LakeConfig::default()) {
                Ok(lake) => lake,
                Err(e @ LakeError::Locked { .. }) => {
                    anyhow::bail!(
                        "{e}. For a running server: doppel query --url http://127.0.0.1:7700 --db {} \"...\"",
                        args.db
                    )
                }
                Err(e) => {
                    return Err(e).context(format!("cannot open {}", args.data.data.display()));
                }
            };
            let runtime = tokio::runtime::Runtime::new()?;
            let result = runtime.block_on(lake.query(&args.db, &args.sql));
            // Reading never changes the lake; leave replayed writes in the WAL as they were.
            drop(lake);
            let (schema, batches) = result?;
            render(format, &schema, &batches).map_err(anyhow::Error::msg)?
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(&output)?;
    if format == Format::Json && !output.ends_with(b"\n") {
        stdout.write_all(b"\n")?;
    }
    Ok(ExitCode::SUCCESS)
}
