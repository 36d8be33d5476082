//! Looking after the lake: `doppel retention`, `doppel lake drop|check|salvage`. Each
//! change goes to the doppel serving the data directory when one runs (its `SERVER.json`, or
//! `--url`), else to the directory itself; each says what it will remove before it does.

use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use doppel_lake::{DropEffect, Lake, LakeConfig, LakeError, RetentionEffect};

use crate::client::{Client, running_server};
use crate::serve::parse_duration;
use crate::{DataDirArg, ServerArg};

/// Where a change goes: the lake opened here, or the doppel serving it.
enum Target {
    Local(Lake),
    Remote(Client),
}

impl Target {
    /// The running doppel (`--url`, or the one serving the directory), else the directory.
    fn find(data: &DataDirArg, server: &ServerArg) -> anyhow::Result<Target> {
        let remote = |url: &str| Target::Remote(Client::new(url, server.token.clone()));
        if let Some(url) = &server.url {
            return Ok(remote(url));
        }
        match Lake::open(&data.data, LakeConfig::default()) {
            Ok(lake) => Ok(Target::Local(lake)),
            Err(e @ LakeError::Locked { .. }) => match running_server(&data.data) {
                Some(url) => Ok(remote(&url)),
                None => Err(e.into()),
            },
            Err(e) => Err(e).context(format!("cannot open {}", data.data.display())),
        }
    }

    /// Persists and closes a lake opened here.
    fn close(self) -> anyhow::Result<()> {
        if let Target::Local(lake) = self {
            lake.shutdown()?;
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct RetentionArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The database.
    #[arg(long)]
    db: String,
    /// The table (measurement).
    #[arg(long)]
    table: String,
    /// How long to keep data, such as 30d; `none` keeps it forever.
    period: String,
    /// Say what the period would remove, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Remove what the period expires without asking.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    server: ServerArg,
}

pub fn retention(args: RetentionArgs) -> anyhow::Result<ExitCode> {
    let period = match args.period.as_str() {
        "none" | "forever" => None,
        text => Some(parse_duration(text).map_err(anyhow::Error::msg)?),
    };
    let target = Target::find(&args.data, &args.server)?;
    let ask = |client: &Client, dry_run: bool| -> anyhow::Result<RetentionEffect> {
        let body = serde_json::json!({
            "db": args.db, "table": args.table, "period": args.period, "dry_run": dry_run,
        });
        let answer: serde_json::Value =
            serde_json::from_slice(&client.post_json("/api/v3/configure/retention", &body)?)?;
        Ok(serde_json::from_value(answer["effect"].clone())?)
    };
    let effect = match &target {
        Target::Local(lake) => lake.retention_effect(&args.db, &args.table, period)?,
        Target::Remote(client) => ask(client, true)?,
    };
    let name = format!("{}.{}", args.db, args.table);
    let before = effect.cutoff.map_or(String::new(), |c| {
        let time = doppel_core::time::format_rfc3339(c);
        format!(" (the files whose newest row is before {time})")
    });
    println!(
        "{name}: retention {} removes {} of {} file(s), {} of {} row(s){before}",
        args.period,
        effect.files_removed,
        effect.files_removed + effect.files_kept,
        effect.rows_removed,
        effect.rows_removed + effect.rows_kept,
    );
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    if effect.rows_removed > 0 && !args.yes && !confirmed("Remove them?")? {
        bail!(
            "nothing changed: run again with --yes to remove {} row(s), or with --dry-run to only look",
            effect.rows_removed
        );
    }
    match &target {
        Target::Local(lake) => lake.set_retention(&args.db, &args.table, period)?,
        Target::Remote(client) => {
            ask(client, false)?;
        }
    }
    target.close()?;
    println!("{name}: retention {} set", args.period);
    Ok(ExitCode::SUCCESS)
}

/// Asks on the terminal; `false` when there is no terminal to ask on.
fn confirmed(question: &str) -> anyhow::Result<bool> {
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

#[derive(clap::Subcommand)]
pub enum LakeCommand {
    /// Drop a table, or one field column of it (--column): the way to remove a table written
    /// by mistake, or to free a column whose type one bad write fixed (writes of the right
    /// type are refused until it is gone; the column then comes back with the next write).
    /// Says what it removes and asks, or takes --yes; works beside a running doppel.
    Drop(DropArgs),
    /// Keep every intact record of a damaged write-ahead log: rewrites each damaged segment
    /// with its intact records (before and after the damage) and moves the original into
    /// wal/damaged/. Run it when `doppel serve` refuses to start over a damaged WAL, with no
    /// doppel running on the directory.
    Salvage {
        #[command(flatten)]
        data: DataDirArg,
    },
    /// Read every Parquet file the manifest lists and compare it with the checksum taken when
    /// it was written (a scrub); exits 1 and names the files when any differ. The manifest
    /// and the write-ahead log are checked at every start.
    Check {
        #[command(flatten)]
        data: DataDirArg,
    },
}

pub fn lake(command: LakeCommand) -> anyhow::Result<ExitCode> {
    match command {
        LakeCommand::Drop(args) => drop_command(args),
        LakeCommand::Check { data } => {
            let lake = Lake::open(&data.data, LakeConfig::default())
                .with_context(|| format!("cannot open {}", data.data.display()))?;
            let files = lake.stats().files;
            let damaged = lake.check()?;
            drop(lake);
            for (path, why) in &damaged {
                println!("{}: {why}", path.display());
            }
            if damaged.is_empty() {
                println!("{files} file(s) read: every one matches its checksum");
                Ok(ExitCode::SUCCESS)
            } else {
                println!("{} of {files} file(s) damaged", damaged.len());
                Ok(ExitCode::FAILURE)
            }
        }
        LakeCommand::Salvage { data } => {
            let report = Lake::salvage(&data.data)
                .with_context(|| format!("cannot salvage {}", data.data.display()))?;
            if report.is_empty() {
                println!("the write-ahead log has no damaged segment; nothing to do");
            }
            for segment in &report {
                let lost: u64 = segment.damaged.iter().map(|(a, b)| b - a).sum();
                println!(
                    "{}: kept {} intact record(s); {} damaged byte(s) at {}; the original is now {}",
                    segment.segment.display(),
                    segment.records_kept,
                    lost,
                    segment
                        .damaged
                        .iter()
                        .map(|(a, b)| format!("{a}..{b}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    segment.moved_to.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(clap::Args)]
pub struct DropArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// The database.
    #[arg(long)]
    db: String,
    /// The table (measurement).
    #[arg(long)]
    table: String,
    /// Drop only this field column, in every row (tags cannot be dropped).
    #[arg(long)]
    column: Option<String>,
    /// Say what would be removed, and change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Drop without asking.
    #[arg(long)]
    yes: bool,
    #[command(flatten)]
    server: ServerArg,
}

fn drop_command(args: DropArgs) -> anyhow::Result<ExitCode> {
    let target = Target::find(&args.data, &args.server)?;
    let column = args.column.as_deref();
    let ask = |client: &Client, dry_run: bool| -> anyhow::Result<DropEffect> {
        let path = match column {
            Some(_) => "/api/v3/configure/column",
            None => "/api/v3/configure/table",
        };
        let mut query = vec![("db", args.db.as_str()), ("table", args.table.as_str())];
        query.extend(column.map(|c| ("column", c)));
        if dry_run {
            query.push(("dry_run", "true"));
        }
        let answer: serde_json::Value = serde_json::from_slice(&client.delete(path, &query)?)?;
        Ok(serde_json::from_value(answer["effect"].clone())?)
    };
    let effect = match &target {
        Target::Local(lake) => lake.drop_effect(&args.db, &args.table, column)?,
        Target::Remote(client) => ask(client, true)?,
    };
    let what = match column {
        Some(c) => format!("column `{c}` of {}.{}", args.db, args.table),
        None => format!("table {}.{}", args.db, args.table),
    };
    match column {
        Some(_) => println!(
            "dropping {what} rewrites its {} file(s) ({} row(s)) without it",
            effect.files, effect.rows
        ),
        None => println!(
            "dropping {what} removes {} file(s), {} row(s)",
            effect.files, effect.rows
        ),
    }
    if args.dry_run {
        println!("dry run: nothing changed");
        return Ok(ExitCode::SUCCESS);
    }
    if !args.yes && !confirmed(&format!("Drop {what}?"))? {
        bail!(
            "nothing changed: run again with --yes to drop {what}, or with --dry-run to only look"
        );
    }
    let done = match &target {
        Target::Local(lake) => lake.drop_table_or_column(&args.db, &args.table, column)?,
        Target::Remote(client) => ask(client, false)?,
    };
    target.close()?;
    match done.values {
        Some(values) => println!("dropped {what}: {values} value(s) removed"),
        None => println!("dropped {what}: {} row(s) removed", done.rows),
    }
    Ok(ExitCode::SUCCESS)
}
