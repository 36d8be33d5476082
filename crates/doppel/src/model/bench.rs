//! `doppel model bench ...` and `doppel model scaling`: the benchmarks on public data and
//! the scaling study, printed as tables and written as JSON lines (and a PNG chart).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use burn::prelude::Device;
use clap::Args;
use doppel_model::data::ReadOptions;
use doppel_research::scaling::{
    ScalingOptions, compute_frontier, extrapolation, fit_power_law, past_the_drop, study,
};

use super::EttArgs;

pub(super) fn bench_ett(args: EttArgs) -> anyhow::Result<ExitCode> {
    let options = doppel_research::bench::EttOptions {
        datasets: args.datasets,
        horizons: args.horizons,
        lookbacks: args.lookbacks,
        mask_ratios: if args.skip_impute {
            Vec::new()
        } else {
            args.mask_ratios
        },
        pretrain_steps: args.pretrain_steps,
        interpolation_prior: args.interpolation_prior,
        cross_channel_prior: args.cross_channel_prior,
        channel_readout: args.channel_readout,
        impute_mask_ratio: args.impute_mask_ratio,
        point_mask_ratio: args.point_mask_ratio,
        impute_stride: args.impute_stride.max(1),
        impute_channels_per_token: args.impute_channels_per_token as usize,
        impute_size: args.impute_size,
        impute_patch: args.impute_patch,
        finetune_steps: args.finetune_steps,
        finetune_learning_rate: args.finetune_lr,
        finetune_dropout: args.finetune_dropout,
        finetune_loss: args.finetune_loss,
        recalibrate_steps: args.recalibrate_steps.map(|s| s as usize),
        band_coverage: args.band_coverage,
        freeze_encoder: args.freeze_encoder,
        forecast_pretrain_steps: args.forecast_pretrain_steps,
        forecast_mask_ratio: args.forecast_mask_ratio,
        forecast_channel_independent: args.forecast_channel_independent,
        forecast_size: args.forecast_size,
        forecast_channels_per_token: args.forecast_channels_per_token as usize,
        seed: args.seed,
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let rows = doppel_research::bench::ett(&args.data_dir, &options, |m| eprintln!("{m}"))?;
    write_jsonl(&args.out, &rows)?;
    println!(
        "{:<7} {:<9} {:>6} {:<20} {:>7} {:>7}",
        "data", "task", "h/mask", "model", "MSE", "MAE"
    );
    for r in &rows {
        let setting = r.horizon.map_or_else(
            || format!("{}", r.mask_ratio.unwrap_or(0.0)),
            |h| h.to_string(),
        );
        println!(
            "{:<7} {:<9} {:>6} {:<20} {:>7.3} {:>7.3}",
            r.dataset, r.task, setting, r.model, r.mse, r.mae
        );
    }
    println!("\npublished (same protocol):");
    for (data, task, model, mse, mae) in doppel_research::bench::PUBLISHED {
        if options.datasets.iter().any(|d| d == data) {
            println!("{data:<7} {task:<26} {model:<13} {mse:>7.3} {mae:>7.3}");
        }
    }
    eprintln!(
        "{:.0} s; wrote {}",
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Writes rows as JSON lines.
pub(super) fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> anyhow::Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    for row in rows {
        writeln!(out, "{}", serde_json::to_string(row)?)?;
    }
    out.flush()?;
    Ok(())
}

#[derive(Args)]
pub struct ScalingArgs {
    /// Input files (as for `doppel model pretrain`); the last 20 % of each validates every
    /// run, unless --validation-files holds out whole files.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    #[command(flatten)]
    validation: super::ValidationArgs,
    /// The time column (default: as `doppel import` finds it).
    #[arg(long)]
    time_column: Option<String>,
    /// Model sizes to train.
    #[arg(long, value_delimiter = ',', default_value = "tiny,small")]
    sizes: Vec<String>,
    /// Shares of the training data to train on: the most recent part of each file's
    /// training rows or, with --validation-files, whole training files (the first
    /// share × count), so a smaller share is less of the same kind of data (machines, runs,
    /// years), not a different stretch of time.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1")]
    fractions: Vec<f64>,
    /// Training steps with all the data (a run on a share f takes f of them).
    #[arg(long, default_value_t = 400)]
    steps: usize,
    #[arg(long, default_value_t = 32)]
    batch: usize,
    #[arg(long, default_value_t = 8)]
    patch: usize,
    #[arg(long, default_value_t = 12)]
    patches: usize,
    /// Channels per token (K > 1: LSM's 2-D patches, fewer tokens, quicker runs).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    channels_per_token: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    lake: super::LakeArgs,
    /// Folder for scaling.jsonl (one run a line, then the fit) and scaling.png.
    #[arg(long)]
    out: PathBuf,
}

pub(super) fn scaling(args: ScalingArgs) -> anyhow::Result<ExitCode> {
    let mut options = ReadOptions {
        time_column: args.time_column.clone(),
        channels: None,
        ..ReadOptions::default()
    };
    let mut recordings = Vec::new();
    for path in &args.input {
        let rec = super::read_input(path, &options, &args.lake)?;
        options.channels.get_or_insert_with(|| rec.channels.clone());
        recordings.push(rec);
    }
    let settings = ScalingOptions {
        sizes: args.sizes,
        fractions: args.fractions,
        steps: args.steps,
        batch_size: args.batch,
        patch_len: args.patch,
        patches: args.patches,
        channels_per_token: args.channels_per_token as usize,
        validation_fraction: 0.2,
        validation_recordings: args.validation.validation_files,
        seed: args.seed,
    };
    let normalizer = settings.split().normalizer(&recordings)?;
    let standardised: Vec<_> = recordings.iter().map(|r| normalizer.apply(r)).collect();
    let started = std::time::Instant::now();
    let runs = study(&standardised, &settings, &Device::flex().autodiff(), |m| {
        eprintln!("{m}")
    })?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let points: Vec<(f64, f64)> = runs
        .iter()
        .map(|r| (r.compute, r.validation_loss))
        .collect();
    let fit = fit_power_law(&points);
    let frontier = compute_frontier(&runs);
    let fitted = past_the_drop(&frontier);
    let frontier_points: Vec<(f64, f64)> = fitted
        .iter()
        .map(|p| (p.compute, p.validation_loss))
        .collect();
    let frontier_fit = fit_power_law(&frontier_points);
    let mut lines: Vec<serde_json::Value> = runs
        .iter()
        .map(|r| serde_json::to_value(r).expect("a run serialises"))
        .collect();
    for (name, law, over) in [
        ("final losses", &fit, "every run's last validation loss"),
        (
            "compute frontier",
            &frontier_fit,
            "the compute frontier of the validation curves, past the early drop",
        ),
    ] {
        if let Some(law) = law {
            lines.push(serde_json::json!({ "fit": "L = a*C^b + c", "over": over, "name": name, "a": law.a, "b": law.b, "c": law.c, "rmse": law.rmse }));
        }
    }
    let extrapolated = extrapolation(&frontier_points);
    if let Some(e) = &extrapolated {
        lines.push(serde_json::json!({ "extrapolation": "the frontier fit on its cheaper points, checked on the dearest", "fitted_points": e.fitted_points, "a": e.law.a, "b": e.law.b, "c": e.law.c, "held_out": e.held_out, "mean_relative_error": e.mean_relative_error }));
    }
    lines.extend(fitted.iter().map(|p| {
        serde_json::json!({ "frontier": p.size, "data_fraction": p.data_fraction, "step": p.step, "compute": p.compute, "validation_loss": p.validation_loss })
    }));
    write_jsonl(&args.out.join("scaling.jsonl"), &lines)?;
    println!(
        "{:<6} {:>10} {:>6} {:>8} {:>6} {:>10} {:>9} {:>6}",
        "size", "params", "data", "rows", "steps", "FLOPs", "val loss", "s"
    );
    for r in &runs {
        println!(
            "{:<6} {:>10} {:>5.0}% {:>8} {:>6} {:>10.2e} {:>9.4} {:>6.0}",
            r.size,
            r.parameters,
            r.data_fraction * 100.0,
            r.training_rows,
            r.steps,
            r.compute,
            r.validation_loss,
            r.seconds
        );
    }
    match &fit {
        Some(f) => println!(
            "fit over final losses: L = {:.3} * C^{:.4} + {:.4} (rmse {:.4})",
            f.a, f.b, f.c, f.rmse
        ),
        None => println!("fit over final losses: needs at least 3 runs with distinct compute"),
    }
    match &frontier_fit {
        Some(f) => println!(
            "fit over the compute frontier ({} of {} frontier points, past the early drop): \
             L = {:.3} * C^{:.4} + {:.4} (rmse {:.4})",
            fitted.len(),
            frontier.len(),
            f.a,
            f.b,
            f.c,
            f.rmse
        ),
        None => println!(
            "fit over the compute frontier: {} points past the early drop, needs at least 3",
            fitted.len()
        ),
    }
    if let Some(e) = &extrapolated {
        let (first, last) = (e.held_out[0], e.held_out[e.held_out.len() - 1]);
        println!(
            "does it predict? fitted on the {} cheapest frontier points (b = {:.3}, c = {:.4}), \
             it is off by {:.1} % on average on the {} dearest (at {:.2e} FLOPs: {:.4} for \
             {:.4} measured; at {:.2e}: {:.4} for {:.4})",
            e.fitted_points,
            e.law.b,
            e.law.c,
            e.mean_relative_error * 100.0,
            e.held_out.len(),
            first.compute,
            first.predicted,
            first.measured,
            last.compute,
            last.predicted,
            last.measured
        );
    }
    let png = args.out.join("scaling.png");
    crate::plot::scaling_chart(&png, &runs, fitted, frontier_fit.as_ref())?;
    eprintln!(
        "{:.0} s; wrote {} and {}",
        started.elapsed().as_secs_f64(),
        args.out.join("scaling.jsonl").display(),
        png.display()
    );
    Ok(ExitCode::SUCCESS)
}
