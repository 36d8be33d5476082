//! `doppel model finetune`: a forecasting head, or a linear probe for labels, on top of a
//! pretrained model.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use burn::prelude::Device;
use clap::Args;
use doppel_model::bands::BandScale;
use doppel_model::card::ModelCard;
use doppel_model::card::ProbeTask;
use doppel_model::data::{ReadOptions, Recording};
use doppel_model::finetune::{ForecastLoss, ForecastTuning, finetune_forecast};
use doppel_model::linear::{Layout, Search};
use doppel_model::probe::{ProbeSettings, fit_probe};
use doppel_model::store;
use doppel_model::train::TrainConfig;

use super::lake_input::{LakeArgs, read_input};
use super::{Destination, ValidationArgs, model_dir, share_below_one};

/// Reads files in a model's channels, checks they are on its grid, and standardises them
/// with its statistics.
pub(super) fn read_standardised(
    inputs: &[PathBuf],
    time_column: Option<&str>,
    card: &ModelCard,
    lake: &LakeArgs,
) -> anyhow::Result<Vec<Recording>> {
    let options = ReadOptions {
        time_column: time_column.map(str::to_owned),
        channels: Some(card.channels.clone()),
        ..ReadOptions::default()
    };
    let mut recordings = Vec::new();
    for path in inputs {
        let rec = read_input(path, &options, lake)?;
        if rec.step_ns != card.step_ns {
            bail!(
                "{}: rows are {} s apart, the model's grid is {} s",
                path.display(),
                rec.step_ns as f64 / 1e9,
                card.step_ns as f64 / 1e9
            );
        }
        recordings.push(card.normalizer.apply(&rec));
    }
    Ok(recordings)
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FinetuneTask {
    /// The next --horizon steps of every channel, with error bands.
    Forecast,
    /// A class from --label-column, by a linear probe on window embeddings.
    Classify,
    /// A number from --label-column, by a linear probe on window embeddings.
    Regress,
}

#[derive(Args)]
pub struct FinetuneArgs {
    /// What the head learns.
    #[arg(long, value_enum)]
    task: FinetuneTask,
    /// The pretrained model: a model folder, or a registered name (`pumps`, `pumps@2`).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    lake: LakeArgs,
    /// Training files, on the model's grid and with its channels; the last 20 % of each (or
    /// the files of --validation-files) is kept to choose the weights and to measure the
    /// error bands.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// The time column (default: as `doppel import` finds it).
    #[arg(long)]
    time_column: Option<String>,
    /// Steps to forecast (the head forecasts up to this many; forecast only).
    #[arg(long, required_if_eq("task", "forecast"))]
    horizon: Option<usize>,
    /// The column holding the label (classify, regress): a window's label is its value at
    /// the window's last step; rows without one are skipped.
    #[arg(long, required_if_eq_any([("task", "classify"), ("task", "regress")]))]
    label_column: Option<String>,
    /// Steps between window starts (classify, regress; default: a quarter window).
    #[arg(long)]
    stride: Option<usize>,
    /// Training steps (batches), at most: see --patience. 0 (forecast) keeps the linear
    /// start alone, its settings chosen on validation: the baseline a head must beat
    /// (`doppel model evaluate` both).
    #[arg(long, default_value_t = 2000)]
    steps: usize,
    /// Stop once this many validation checks in a row (one every 50 steps) have not
    /// lowered the validation error (forecast); 0 runs every step. The weights kept are
    /// the best checked either way.
    #[arg(long, default_value_t = 8)]
    patience: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 128)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-4)]
    lr: f64,
    /// Read all channels of a window together (default: each channel on its own, as
    /// PatchTST, which generalises better on few channels; a model of 2-D tokens always
    /// reads them together).
    #[arg(long)]
    channels_together: bool,
    /// Train the head only, the encoder as pretrained (a linear probe).
    #[arg(long)]
    freeze_encoder: bool,
    /// Dropout in the encoder's blocks while fine-tuning (0 to 1; PatchTST uses 0.2–0.3 on
    /// small data sets). Nothing is dropped when the model forecasts.
    #[arg(long, default_value_t = 0.0, value_parser = share_below_one)]
    dropout: f64,
    /// What training minimises and what chooses the weights kept (forecast): `squared`
    /// error aims at the mean of what may follow, `absolute` error at its median, which
    /// forecasts a switching signal (on/off, a duty level) at its likelier level rather
    /// than a blend of both. `evaluate` reports both measures either way.
    #[arg(long, default_value = "squared", value_parser = super::loss_parser())]
    loss: ForecastLoss,
    /// The share of what follows the error bands are to hold (0.8: the 10th to the 90th
    /// percentile; 0.9: the 5th to the 95th).
    #[arg(long, default_value_t = doppel_model::bands::DEFAULT_COVERAGE, value_parser = super::share_above_zero_below_one)]
    band_coverage: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    validation: ValidationArgs,
    #[command(flatten)]
    dest: Destination,
}

pub(super) fn finetune_command(args: FinetuneArgs) -> anyhow::Result<ExitCode> {
    let task = match args.task {
        FinetuneTask::Forecast => None,
        FinetuneTask::Classify => Some(ProbeTask::Classify),
        FinetuneTask::Regress => Some(ProbeTask::Regress),
    };
    if let Some(task) = task {
        return probe_command(&args, task);
    }
    let horizon = args.horizon.expect("clap requires --horizon for forecast");
    let device = Device::flex().autodiff();
    let (model, mut card) = store::load(&model_dir(&args.model, &args.lake.data.data)?, &device)?;
    let recordings =
        read_standardised(&args.input, args.time_column.as_deref(), &card, &args.lake)?;
    let train = args.validation.apply(TrainConfig {
        patience: args.patience,
        ..TrainConfig::new(args.steps, args.batch, args.lr, args.seed)
    });
    let tuning = ForecastTuning {
        horizon,
        channel_independent: !args.channels_together && card.config.channels_per_token == 1,
        linear: Search::default(),
        freeze_encoder: args.freeze_encoder,
        dropout: args.dropout,
        loss: args.loss,
        band_coverage: args.band_coverage,
    };
    eprintln!(
        "fine-tuning a forecasting head for {} steps on a {}-step look-back ({} file(s))",
        horizon,
        card.config.window(),
        recordings.len()
    );
    let bar = crate::progress::training_bar(args.steps as u64);
    let (forecaster, head) = finetune_forecast(
        model,
        &card.config,
        &recordings,
        &tuning,
        &train,
        &device,
        |p| crate::progress::show_loss(&bar, p),
    )?;
    bar.finish_and_clear();
    let start = head.linear_start.as_ref().map_or_else(String::new, |c| {
        let layout = match c.layout {
            Layout::Shared => "one matrix for all channels",
            Layout::PerChannel => "one matrix per channel",
        };
        format!(" ({layout}, ridge {}, chosen on validation)", c.ridge)
    });
    if let Some(note) = super::early_stop_note(&head.train, &head.curve) {
        eprintln!("{note}");
    }
    let mae = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{v:.4}"));
    eprintln!(
        "validation MSE / MAE (standardised) {:.4} / {}; the linear start{start} had {:.4} / \
         {}; kept the weights of step {} (chosen on {})",
        head.validation_mse,
        mae(head.validation_mae),
        head.linear_validation_mse,
        mae(head.linear_validation_mae),
        head.best_step,
        head.loss.measure()
    );
    let chosen = head.chosen_bands();
    let count: Vec<String> = BandScale::ALL
        .iter()
        .map(|&scale| {
            let n = chosen.scales.iter().filter(|&&s| s == scale).count();
            format!("{n} {}", scale.name())
        })
        .collect();
    eprintln!(
        "error bands: each channel's scale chosen on the second half of the validation \
         windows ({}; spread: the look-back's standard deviation, steps: its step-to-step \
         changes); the {:.0} % band there:",
        count.join(", "),
        100.0 * chosen.coverage()
    );
    for score in &head.band_scores {
        eprintln!("  {score}");
    }
    card.forecast_head = Some(head);
    card.probe = None;
    let written = args.dest.write(&args.lake.data.data, |dir| {
        store::save_forecaster(dir, &forecaster, &card)
    })?;
    eprintln!("{written}");
    Ok(ExitCode::SUCCESS)
}

fn probe_command(args: &FinetuneArgs, task: ProbeTask) -> anyhow::Result<ExitCode> {
    let label_column = args
        .label_column
        .clone()
        .expect("clap requires --label-column for classify and regress");
    let device = Device::flex();
    let (model, mut card) = store::load(&model_dir(&args.model, &args.lake.data.data)?, &device)?;
    let stride = args.stride.unwrap_or((card.config.window() / 4).max(1));
    let (mut recordings, mut texts) = (Vec::new(), Vec::new());
    for path in &args.input {
        // One read for sensors and label, so both sit on the same grid.
        let mut rec = read_input(
            path,
            &ReadOptions {
                time_column: args.time_column.clone(),
                channels: Some(card.channels.clone()),
                label_column: Some(label_column.clone()),
                ..ReadOptions::default()
            },
            &args.lake,
        )?;
        if rec.labels.iter().all(Option::is_none) {
            bail!(
                "{}: `{label_column}` holds no label (no such column, or every cell empty)",
                path.display()
            );
        }
        texts.push(std::mem::take(&mut rec.labels));
        recordings.push(rec);
    }
    let (labels, class_names) = label_values(&texts, task, &label_column)?;
    let settings = ProbeSettings {
        task,
        label_column,
        stride,
        validation_recordings: args.validation.validation_files,
    };
    eprintln!(
        "fitting a linear probe ({:?}) on window embeddings, windows of {} steps every {stride}",
        task,
        card.config.window()
    );
    let (probe, probe_card) = fit_probe(&model, &card, &recordings, &labels, &settings, &device)?;
    let metric = match task {
        ProbeTask::Classify => "accuracy",
        ProbeTask::Regress => "R²",
    };
    eprintln!(
        "validation {metric} {:.3} on {} window(s) (the trivial answer: {:.3}); {} training window(s){}",
        probe_card.validation_score,
        probe_card.validation_windows,
        probe_card.trivial_score,
        probe_card.train_windows,
        if task == ProbeTask::Classify {
            format!(", {} classes", probe_card.classes.len())
        } else {
            String::new()
        }
    );
    if task == ProbeTask::Classify && probe_card.validation_classes == 1 {
        eprintln!(
            "warning: every validation window has the same class, so the accuracy says \
             nothing about telling classes apart: validate on rows or files where the classes \
             change (--validation-files N holds out whole files)"
        );
    }
    let mut probe_card = probe_card;
    probe_card.class_names = class_names;
    card.probe = Some(probe_card);
    card.forecast_head = None;
    let written = args.dest.write(&args.lake.data.data, |dir| {
        store::save_probe(dir, &model, &probe, &card)
    })?;
    eprintln!("{written}");
    Ok(ExitCode::SUCCESS)
}

/// Labels as numbers for the probe: numbers as they are; for classification, text labels
/// (`running`, `off`, ...) as the index of their name among the sorted distinct names, which
/// are returned too. NaN where a row has no label.
fn label_values(
    texts: &[Vec<Option<String>>],
    task: ProbeTask,
    column: &str,
) -> anyhow::Result<(Vec<Vec<f64>>, Vec<String>)> {
    let number = |t: &str| t.trim().parse::<f64>().ok().filter(|v| v.is_finite());
    let text = texts
        .iter()
        .flatten()
        .flatten()
        .find(|t| number(t).is_none());
    let Some(example) = text else {
        let values = texts
            .iter()
            .map(|file| {
                file.iter()
                    .map(|t| t.as_deref().and_then(number).unwrap_or(f64::NAN))
                    .collect()
            })
            .collect();
        return Ok((values, Vec::new()));
    };
    if task == ProbeTask::Regress {
        bail!(
            "`{column}` holds text (`{example}`): --task regress needs numbers; for classes \
             use --task classify"
        );
    }
    let mut names: Vec<String> = texts.iter().flatten().flatten().cloned().collect();
    names.sort();
    names.dedup();
    let values = texts
        .iter()
        .map(|file| {
            file.iter()
                .map(|t| match t {
                    Some(t) => names.binary_search(t).map_or(f64::NAN, |i| i as f64),
                    None => f64::NAN,
                })
                .collect()
        })
        .collect();
    Ok((values, names))
}
