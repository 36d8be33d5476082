//! `doppel model evaluate`: a fine-tuned forecaster measured on files it never saw.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use burn::prelude::Device;
use clap::Args;
use doppel_model::evaluate::evaluate_forecaster;
use doppel_model::store;

use super::finetune::read_standardised;
use super::lake_input::LakeArgs;
use super::model_dir;

#[derive(Args)]
pub struct EvaluateArgs {
    /// The model, with a forecasting head (`doppel model finetune --task forecast`): a model
    /// folder, or a registered name (`pumps`, `pumps@2`).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    lake: LakeArgs,
    /// Files to measure on (machines, runs or periods the model neither trained nor chose its
    /// weights on), on the model's grid and with its channels.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// The time column (default: as `doppel import` finds it).
    #[arg(long)]
    time_column: Option<String>,
    /// Steps between forecast origins (1: every window).
    #[arg(long, default_value_t = 1)]
    stride: usize,
    /// Also measure the bands as a deployed forecaster would make them follow drift, per
    /// sensor: recalibrated to hold their share (80 % unless fine-tuned otherwise) of the
    /// forecasts of the last this many steps whose truth has arrived; adapted after each
    /// arrived forecast by how often it missed (adaptive conformal inference, which follows
    /// bursts); and both.
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    recalibrate: Option<u64>,
    /// Also write the result as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub(super) fn evaluate_command(args: EvaluateArgs) -> anyhow::Result<ExitCode> {
    let device = Device::flex();
    let dir = model_dir(&args.model, &args.lake.data.data)?;
    let (forecaster, card) = store::load_forecaster(&dir, &device)?;
    let head = card
        .forecast_head
        .as_ref()
        .expect("load_forecaster checked the head");
    let recordings =
        read_standardised(&args.input, args.time_column.as_deref(), &card, &args.lake)?;
    for rec in &recordings {
        if let Some(overlap) = card.trained_on(rec) {
            eprintln!(
                "warning: {overlap}: errors there measure what the model remembers, not how \
                 it forecasts; evaluate on later rows or other files"
            );
        }
    }
    let evaluation = evaluate_forecaster(
        &forecaster,
        &card.config,
        head,
        &recordings,
        args.stride,
        args.recalibrate.map(|s| s as usize),
        &device,
    )?;
    println!(
        "{} window(s) over {} file(s), {} step(s) ahead, standardised: MSE {:.4}, MAE {:.4}; \
         persistence (the last value held) MSE {:.4}, MAE {:.4}",
        evaluation.windows,
        recordings.len(),
        evaluation.horizon,
        evaluation.mse,
        evaluation.mae,
        evaluation.persistence_mse,
        evaluation.persistence_mae
    );
    let mut worst: Vec<(&String, f64)> = card
        .channels
        .iter()
        .zip(evaluation.channel_mse.iter().copied())
        .collect();
    worst.sort_by(|a, b| b.1.total_cmp(&a.1));
    let worst: Vec<String> = worst
        .iter()
        .take(5)
        .map(|(c, mse)| format!("{c} {mse:.4}"))
        .collect();
    println!("hardest channels (MSE): {}", worst.join(", "));
    let share = 100.0 * head.chosen_bands().coverage();
    for band in &evaluation.bands {
        println!("{share:.0} % band, {band}");
    }
    if let Some(out) = &args.out {
        let json = serde_json::json!({
            "model": dir,
            "files": args.input,
            "stride": args.stride,
            "channels": card.channels,
            "evaluation": evaluation,
        });
        std::fs::write(out, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(ExitCode::SUCCESS)
}
