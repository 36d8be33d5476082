//! `doppel import`: history files into the lake (directly, or through a running server).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use doppel_core::WriteBatch;
use doppel_ingest::import::{ImportOptions, Separator, TimeSource, import_file};
use doppel_lake::{Lake, LakeConfig, LakeError};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::Client;
use crate::{DataDirArg, ServerArg};

#[derive(Args)]
#[command(after_help = "Examples:
  doppel import --db ett ../shared/data/ett/ETTh1.csv
  doppel import --db tep --measurement tep --tag run=d01 --no-header \\
      --start 2024-01-01T00:00:00Z --period 3m ../shared/data/tep/d01.dat
  doppel import --db tep --measurement tep --tag run=d00 --transpose \\
      --start 2024-01-01T00:00:00Z --period 3m ../shared/data/tep/d00.dat")]
pub struct ImportArgs {
    /// The files; each is read whole, in order.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// The database (bucket) to write into.
    #[arg(long)]
    db: String,
    /// The table to write into (default: each file's name without extension).
    #[arg(long)]
    measurement: Option<String>,
    /// A tag added to every row, as key=value (repeatable).
    #[arg(long = "tag", value_parser = parse_key_value)]
    tags: Vec<(String, String)>,
    /// A column whose values become a tag instead of a field (repeatable).
    #[arg(long = "tag-column")]
    tag_columns: Vec<String>,
    /// Column separator: auto, comma, semicolon, tab, pipe, whitespace, or one character.
    #[arg(long, default_value = "auto")]
    separator: String,
    /// The time column (default: the first named time, timestamp, date, datetime or ts).
    #[arg(long)]
    time_column: Option<String>,
    /// Unit of numeric times in the time column: s, ms, us or ns.
    #[arg(long, default_value = "s")]
    time_unit: String,
    /// Generate times instead: the first row's time (RFC 3339); needs --period.
    #[arg(long, requires = "period")]
    start: Option<String>,
    /// Generate times instead: the time between rows, such as 3m; needs --start.
    #[arg(long, requires = "start")]
    period: Option<String>,
    /// The file has no header line: columns are named c1, c2, ... (or by --columns).
    #[arg(long)]
    no_header: bool,
    /// Column names, comma-separated, for files without a header.
    #[arg(long, value_delimiter = ',')]
    columns: Option<Vec<String>>,
    /// The file has one variable per line (rows and columns swapped), like TEP's d00.dat.
    #[arg(long)]
    transpose: bool,
    /// Rows per write batch.
    #[arg(long, default_value_t = 10_000)]
    batch_rows: usize,
    #[command(flatten)]
    server: ServerArg,
    #[command(flatten)]
    data: DataDirArg,
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not key=value")),
    }
}

fn options(args: &ImportArgs) -> anyhow::Result<ImportOptions> {
    let separator = match args.separator.as_str() {
        "auto" => Separator::Auto,
        "comma" | "," => Separator::Char(b','),
        "semicolon" | ";" => Separator::Char(b';'),
        "tab" | "\\t" | "\t" => Separator::Char(b'\t'),
        "pipe" | "|" => Separator::Char(b'|'),
        "whitespace" | "space" => Separator::Whitespace,
        s if s.len() == 1 => Separator::Char(s.as_bytes()[0]),
        s => bail!(
            "unknown separator `{s}`: use auto, comma, semicolon, tab, pipe, whitespace or one character"
        ),
    };
    let time = match (&args.start, &args.period) {
        (Some(start), Some(period)) => TimeSource::Generated {
            start: doppel_core::time::parse_rfc3339(start).map_err(anyhow::Error::msg)?,
            period: doppel_core::time::parse_duration(period).map_err(anyhow::Error::msg)?,
        },
        _ => TimeSource::Column {
            name: args.time_column.clone(),
            epoch_unit_nanos: match args.time_unit.as_str() {
                "s" => 1_000_000_000,
                "ms" => 1_000_000,
                "us" => 1_000,
                "ns" => 1,
                other => bail!("unknown --time-unit `{other}`: use s, ms, us or ns"),
            },
        },
    };
    let headerless = args.no_header || args.transpose || args.columns.is_some();
    Ok(ImportOptions {
        database: args.db.clone(),
        measurement: args.measurement.clone(),
        tags: args.tags.clone(),
        tag_columns: args.tag_columns.clone(),
        separator,
        column_names: if headerless && !args.transpose {
            Some(args.columns.clone().unwrap_or_default())
        } else {
            args.columns.clone()
        },
        time,
        transpose: args.transpose,
        batch_rows: args.batch_rows,
        keep_rows_without_values: false,
    })
}

pub fn run(args: ImportArgs) -> anyhow::Result<ExitCode> {
    let options = options(&args)?;
    enum Sink {
        Lake(Lake),
        Http(Client),
    }
    let sink = match &args.server.url {
        Some(url) => Sink::Http(Client::new(url, args.server.token.clone())),
        None => match Lake::open(&args.data.data, LakeConfig::default()) {
            Ok(lake) => Sink::Lake(lake),
            Err(e @ LakeError::Locked { .. }) => {
                match crate::client::running_server(&args.data.data) {
                    // The doppel serving this directory takes the rows instead.
                    Some(url) => {
                        eprintln!(
                            "importing through the doppel at {url}, which holds {}",
                            args.data.data.display()
                        );
                        Sink::Http(Client::new(&url, args.server.token.clone()))
                    }
                    None => {
                        bail!("{e}. To import through it: doppel import --url http://HOST:PORT ...")
                    }
                }
            }
            Err(e) => return Err(e).context(format!("cannot open {}", args.data.data.display())),
        },
    };
    let started = Instant::now();
    let mut total_rows = 0;
    let mut total_values = 0;
    for file in &args.files {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {pos} rows ({per_sec}) {elapsed}")
                .expect("the template is valid"),
        );
        bar.set_message(file.display().to_string());
        let stats = import_file(
            file,
            &options,
            |rows| bar.set_position(rows),
            |batch: WriteBatch| -> anyhow::Result<()> {
                match &sink {
                    Sink::Lake(lake) => {
                        lake.write_blocking(batch, false)
                            .map(|_| ())
                            .map_err(|e| match e {
                                LakeError::Rejected(r) => anyhow::anyhow!(
                                    "{} (row {} of the batch)",
                                    r[0].message,
                                    r[0].index + 1
                                ),
                                other => other.into(),
                            })
                    }
                    Sink::Http(client) => {
                        let mut text = String::with_capacity(batch.points.len() * 128);
                        for p in &batch.points {
                            doppel_ingest::write_line(&mut text, p);
                        }
                        client.write_lines(&batch.database, &text)
                    }
                }
            },
        )?;
        bar.finish_and_clear();
        let skipped = match stats.rows_without_values {
            0 => String::new(),
            n => format!(
                " ({n} of them with no value at all, every cell empty, NaN or null: not stored)"
            ),
        };
        eprintln!(
            "{}: {} rows{skipped}, {} values",
            file.display(),
            stats.rows,
            stats.values
        );
        if !stats.empty_columns.is_empty() {
            eprintln!(
                "{}: column(s) {} had no value at all (every cell empty, NaN or null): nothing \
                 was written for them",
                file.display(),
                stats.empty_columns.join(", ")
            );
        }
        total_rows += stats.rows;
        total_values += stats.values;
    }
    if let Sink::Lake(lake) = sink {
        lake.shutdown().context("persisting the import")?;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "imported {total_rows} rows ({total_values} values) into `{}` in {seconds:.1}s ({:.0} rows/s)",
        args.db,
        total_rows as f64 / seconds.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}
