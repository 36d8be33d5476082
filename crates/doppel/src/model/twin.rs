//! `doppel model twin`: the model a live twin trains for itself, made from files instead of
//! the lake (the same recipe, calibration and detector choice: `doppel_twin::models::fit`),
//! for backtests (`doppel rules test --model`) or to give a twin a model before it has
//! history of its own (register it as `twin-<bucket>`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use doppel_model::ReadOptions;
use doppel_twin::models::backtest::minute_means;
use doppel_twin::models::fit::{self, Stage};

use super::Destination;
use super::lake_input::{LakeArgs, read_input};

#[derive(Args)]
pub struct TwinModelArgs {
    /// The recorded readings (CSV or Parquet with a time column and one column a sensor,
    /// named by its spec id, such as `doppel sim run --out run.parquet` writes), or a lake
    /// table; read as minute means.
    #[arg(long)]
    input: PathBuf,
    /// The twin spec: which sensors make each asset (default: the reference plant's).
    #[arg(long)]
    spec: Option<PathBuf>,
    /// Rules whose `forecast(...)` the model is to make (a head is fine-tuned for them).
    #[arg(long)]
    rules: Option<PathBuf>,
    /// Pretraining steps (and, with forecasts, fine-tuning steps).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    steps: u64,
    #[command(flatten)]
    dest: Destination,
    #[command(flatten)]
    lake: LakeArgs,
}

pub(super) fn twin_model_command(args: TwinModelArgs) -> anyhow::Result<ExitCode> {
    let spec = match &args.spec {
        Some(path) => doppel_core::spec::load(path)?,
        None => crate::live::reference_spec()?,
    };
    let wanted = match &args.rules {
        Some(path) => {
            doppel_rules::Evaluator::new(doppel_rules::RuleSet::load(path, &spec)?, &spec)
                .forecasts_wanted()
        }
        None => Vec::new(),
    };
    let rec = read_input(
        &args.input,
        &ReadOptions {
            allow_empty_channels: true,
            ..ReadOptions::default()
        },
        &args.lake,
    )?;
    // The spec's sensors that read in at least half the minutes, as a twin keeps them.
    let rec = minute_means(&rec);
    let keep: Vec<String> = (0..rec.channels.len())
        .filter(|&c| spec.sensors.iter().any(|s| s.id == rec.channels[c]))
        .filter(|&c| rec.observed[c].iter().filter(|&&o| o).count() * 2 >= rec.len())
        .map(|c| rec.channels[c].clone())
        .collect();
    if keep.is_empty() {
        anyhow::bail!(
            "{}: no column is named like a sensor of the spec (such as `{}`) and read in half \
             of the minutes",
            args.input.display(),
            spec.sensors.first().map_or("", |s| s.id.as_str())
        );
    }
    let rec = rec.select(&keep)?;
    eprintln!(
        "fitting a twin's model on {} minute(s) of {} sensor(s){}",
        rec.len(),
        keep.len(),
        match wanted.is_empty() {
            true => String::new(),
            false => format!(", with a head for {} forecast(s)", wanted.len()),
        }
    );
    let bar = crate::progress::training_bar(args.steps);
    let fitted = fit::fit(
        &rec,
        &spec,
        &wanted,
        args.steps as usize,
        |stage| match stage {
            Stage::Pretraining { step, loss } => {
                bar.set_position(step as u64);
                bar.set_message(format!("loss {loss:.4}"));
            }
            Stage::Choosing => bar.set_message("choosing the detector on held-out rows"),
            Stage::FineTuning { horizon } => {
                bar.set_message(format!("fine-tuning a head for {horizon} minute(s)"))
            }
        },
    )
    .map_err(anyhow::Error::msg)?;
    bar.finish_and_clear();
    if let Some(scoring) = &fitted.card.live_scoring {
        eprintln!("detector {}", scoring.choice.why);
    }
    let written = args
        .dest
        .write(&args.lake.data.data, |dir| fit::save(dir, &fitted))?;
    eprintln!("{written}");
    Ok(ExitCode::SUCCESS)
}
