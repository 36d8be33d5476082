//! `doppel model ...`: pretrain the sensor model on a plant's files and use it (fill gaps,
//! forecast). Wiring only: the model lives in `doppel-model`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use burn::prelude::Device;
use clap::builder::TypedValueParser;
use clap::{Args, Subcommand};
use doppel_core::time::format_rfc3339;
use doppel_model::card::ModelCard;
use doppel_model::data::{ReadOptions, Recording};
use doppel_model::finetune::ForecastLoss;
use doppel_model::registry::Registry;
use doppel_model::store;
use doppel_model::tasks;
use doppel_model::train::{CurvePoint, TrainConfig, stopped_early};

use crate::DataDirArg;

mod bench;
mod bench_plant;
mod evaluate;
mod finetune;
mod lake_input;
mod pretrain;
mod twin;

use evaluate::{EvaluateArgs, evaluate_command};
use finetune::{FinetuneArgs, finetune_command};
use pretrain::{PretrainArgs, pretrain_command};

use lake_input::{LakeArgs, read_input};

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Pretrain a model (masked autoencoder) on unlabeled sensor files.
    Pretrain(PretrainArgs),
    /// Fine-tune a head on a pretrained model: forecasting (a linear head like PatchTST's, with error bands) or a linear probe (classify, regress).
    Finetune(FinetuneArgs),
    /// Measure a fine-tuned forecaster on files it never saw: errors over every window,
    /// next to persistence.
    Evaluate(EvaluateArgs),
    /// Fill every missing value of a file with the model's reconstruction, or, in a channel
    /// where the model filled values hidden to check it worse, by linear interpolation.
    Impute(ImputeArgs),
    /// Forecast the steps after the end of a file.
    Forecast(ForecastArgs),
    /// Score every step for anomalies (calibrated on rows assumed normal) and say which
    /// sensors drive each flag.
    Score(ScoreArgs),
    /// One vector per window, for linear probes and similarity search.
    Embed(EmbedArgs),
    /// Label each window with a model's probe (from `finetune --task classify|regress`).
    Predict(PredictArgs),
    /// Train several sizes on several amounts of data; fit loss against compute (table,
    /// JSON lines and a PNG chart).
    Scaling(bench::ScalingArgs),
    /// Benchmarks on public data (see docs/BENCHMARKS.md).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
    /// Make the model a live twin trains for itself, from recorded files: pretrained on the
    /// spec's sensors as minute means, calibrated and its detector (model, PCA or both)
    /// chosen on held-out rows, with a head for the rules' forecasts. For backtests (`doppel
    /// rules test --model`) or to register as a twin's model (`--name twin-plant`).
    Twin(twin::TwinModelArgs),
    /// Show a model's card: size, channels, data, training curve.
    Info {
        /// The model: a model folder, or a registered name (`pumps`, `pumps@2`).
        #[arg(long)]
        model: String,
        #[command(flatten)]
        data: DataDirArg,
    },
    /// List the models registered in the data directory (`--name` on pretrain/finetune).
    List {
        #[command(flatten)]
        data: DataDirArg,
    },
}

/// Where a trained model goes: a folder, or the registry in the data directory.
#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct Destination {
    /// The model folder to write (model.safetensors + model.json).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Register the model under this name in the data directory, as its next version
    /// (see `doppel model list`).
    #[arg(long)]
    name: Option<String>,
}

/// Which input validates a training run.
#[derive(Args)]
pub struct ValidationArgs {
    /// Hold out the last N input files whole for validation: the model is judged on
    /// machines, runs or years it never trained on. 0 (default): the last 20 % of each file
    /// validates.
    #[arg(long, default_value_t = 0)]
    pub(super) validation_files: usize,
}

/// The network's size and its tokens' length, for the commands that build one.
#[derive(Args)]
pub struct ShapeArgs {
    /// Model size: tiny (CPU, minutes), small, base, large.
    #[arg(long, default_value = "tiny")]
    pub(super) size: String,
    /// Steps per patch (a token is one patch of one channel, or of --channels-per-token).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    patch: u64,
    /// Patches per window (the look-back is patch × patches steps).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..))]
    patches: u64,
}

impl ShapeArgs {
    /// The named size over `channels` channels, `channels_per_token` to a token.
    pub(super) fn config(
        &self,
        channels: usize,
        channels_per_token: u64,
    ) -> anyhow::Result<doppel_model::model::ModelConfig> {
        let Some(mut config) = doppel_model::model::ModelConfig::sized(
            &self.size,
            channels,
            self.patch as usize,
            self.patches as usize,
        ) else {
            bail!(
                "unknown size `{}`: use tiny, small, base or large",
                self.size
            );
        };
        config.channels_per_token = channels_per_token as usize;
        Ok(config)
    }
}

/// Why a run ended before its last step, if patience ended it.
pub(super) fn early_stop_note(train: &TrainConfig, curve: &[CurvePoint]) -> Option<String> {
    stopped_early(train, curve).map(|step| {
        format!(
            "stopped at step {step} of {}: the validation loss had not fallen in {} checks \
             (--patience)",
            train.steps, train.patience
        )
    })
}

impl ValidationArgs {
    /// `train` validating as asked.
    pub(super) fn apply(&self, train: TrainConfig) -> TrainConfig {
        TrainConfig {
            validation_recordings: self.validation_files,
            ..train
        }
    }
}

#[derive(Args)]
pub struct TaskArgs {
    /// The model: a model folder, or a registered name (`pumps`, `pumps@2`).
    #[arg(long)]
    model: String,
    #[command(flatten)]
    lake: LakeArgs,
    /// The input: a file (CSV, whitespace table, Parquet) or a lake table,
    /// lake:DB/TABLE[?tag=value&...] (read from --data, or from a running doppel with --url).
    #[arg(long)]
    input: PathBuf,
    /// The time column (default: as `doppel import` finds it).
    #[arg(long)]
    time_column: Option<String>,
    /// Where to write the result (CSV).
    #[arg(long)]
    out: PathBuf,
}

#[derive(Args)]
pub struct ImputeArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Fill every gap with the model, even in channels where it filled the check's hidden
    /// values worse than linear interpolation did.
    #[arg(long)]
    model_only: bool,
}

#[derive(Args)]
pub struct ForecastArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// How many steps to forecast.
    #[arg(long)]
    horizon: usize,
    /// Adapt each sensor's error bands after each of the head's forecasts over the last this
    /// many steps of the file, widening them after misses beyond their share and narrowing
    /// them after fewer (adaptive conformal inference): bands that hold their share where
    /// the data drift away from the validation windows. Off by default: on data like the
    /// validation windows it widens bands for nothing (`doppel model evaluate --recalibrate`
    /// measures both on your data; docs/MODEL.md, "Bands that follow drift").
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    adapt: Option<u64>,
    /// For a model without a forecasting head: forecast by filling in hidden patches after
    /// the end of the file. Pretraining does not teach this, and it usually loses to
    /// repeating the last value (ETTh1's oil temperature: error 6.06 against 0.84); fine-tune
    /// a head instead (`doppel model finetune --task forecast`).
    #[arg(long)]
    reconstruct: bool,
}

#[derive(Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// The first N rows are taken as normal: they set each sensor's typical error and the
    /// flag threshold.
    #[arg(long)]
    calibrate_rows: usize,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Steps between window starts (default: the stride the probe was fitted with).
    #[arg(long)]
    stride: Option<usize>,
}

#[derive(Args)]
pub struct EmbedArgs {
    #[command(flatten)]
    task: TaskArgs,
    /// Window length in steps: the model's window (default), or shorter, read as the
    /// model's window that began with a gap (for recordings shorter than the model's window).
    #[arg(long)]
    window: Option<usize>,
    /// Steps between window starts.
    #[arg(long)]
    stride: usize,
}

#[derive(Subcommand)]
pub enum BenchCommand {
    /// ETT forecasting and imputation under the standard protocol, next to published figures.
    // Boxed: its many options would otherwise make every variant as large as it is.
    Ett(Box<EttArgs>),
    /// The reference plant's simulated years: pretrain, fine-tune forecasting heads, and
    /// measure them and their linear start on years they never saw (about 17 minutes on two
    /// cores; `--days 30 --pretrain-steps 300 --finetune-steps 200`, under two minutes, for a
    /// quick look).
    Plant(Box<bench_plant::PlantArgs>),
    /// Tennessee Eastman fault detection: the sensor model's score next to PCA T²/SPE.
    Tep {
        /// The folder with d00.dat and d00_te.dat ... d21_te.dat.
        #[arg(long)]
        data_dir: PathBuf,
        /// Where to write the results, one JSON object a line.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 1000)]
        pretrain_steps: usize,
        /// Channels per token of the sensor model (1: one channel a token; K > 1: LSM's
        /// 2-D patches of K neighbouring variables).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        channels_per_token: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
}

#[derive(Args)]
pub struct EttArgs {
    /// The folder with ETTh1.csv, ETTh2.csv, ETTm1.csv, ETTm2.csv.
    #[arg(long)]
    data_dir: PathBuf,
    /// Where to write the results, one JSON object a line.
    #[arg(long)]
    out: PathBuf,
    #[arg(long, value_delimiter = ',', default_value = "ETTh1,ETTh2,ETTm1,ETTm2")]
    datasets: Vec<String>,
    #[arg(long, value_delimiter = ',', default_value = "96,192,336,720")]
    horizons: Vec<usize>,
    /// Look-backs the linear forecaster chooses among on validation (multiples of 16); the
    /// sensor model reads the one with the lowest validation error over the horizons.
    #[arg(long, value_delimiter = ',', default_value = "336,512")]
    lookbacks: Vec<usize>,
    /// Imputation mask ratios (none: skip imputation).
    #[arg(long, value_delimiter = ',', default_value = "0.125,0.25,0.375,0.5")]
    mask_ratios: Vec<f64>,
    /// Pretraining steps of the sensor model used for imputation; it keeps the weights with
    /// the lowest validation loss (checked every 50 steps).
    #[arg(long, default_value_t = 3000)]
    pretrain_steps: usize,
    /// Whether the imputation model learns the difference from linear interpolation
    /// (`false`: it reconstructs values from scratch, for ablations).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    interpolation_prior: bool,
    /// Whether, over that prior, it also learns what the other channels say at the same
    /// step (`false`: interpolation alone, for ablations).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    cross_channel_prior: bool,
    /// Give the imputation model the channel read-out (`doppel model pretrain
    /// --channel-readout`): a value missing alone at its step is also read from the other
    /// channels, by a map started at least squares, in the windows where that map reads the
    /// fully shown steps as well as it read training. Where sensors are tied it lowers the
    /// error; where their ties drift it can raise it (docs/BENCHMARKS.md, ETT imputation).
    #[arg(long)]
    channel_readout: bool,
    /// Share of whole patches the imputation model hides in pretraining.
    #[arg(long, default_value_t = 0.0)]
    impute_mask_ratio: f64,
    /// Share of points it also hides inside the patches it shows.
    #[arg(long, default_value_t = 0.4)]
    point_mask_ratio: f64,
    /// Channels per token of the imputation model (1; 7 puts all of ETT's channels in one
    /// 2-D patch, as LSM's).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    impute_channels_per_token: u64,
    /// Size of the imputation model (tiny, small, base, large).
    #[arg(long, default_value = "tiny")]
    impute_size: String,
    /// Steps per patch of the imputation model (a divisor of its 96-step windows).
    #[arg(long, default_value_t = 8)]
    impute_patch: usize,
    /// Steps between imputation test windows (1: every window, as TimesNet).
    #[arg(long, default_value_t = 1)]
    impute_stride: usize,
    /// Forecasting only.
    #[arg(long)]
    skip_impute: bool,
    /// Fine-tuning steps of the model's forecasting head, per horizon (0: baselines only).
    #[arg(long, default_value_t = 600)]
    finetune_steps: usize,
    /// Peak learning rate of the fine-tuning.
    #[arg(long, default_value_t = 3e-4)]
    finetune_lr: f64,
    /// Dropout in the encoder while fine-tuning (0 to 1).
    #[arg(long, default_value_t = 0.0, value_parser = share_below_one)]
    finetune_dropout: f64,
    /// What fine-tuning minimises and what chooses the head kept (see `finetune --loss`).
    #[arg(long, default_value = "squared", value_parser = loss_parser())]
    finetune_loss: ForecastLoss,
    /// Also measure the fine-tuned heads' bands recalibrated on the forecasts of the last
    /// this many steps whose truth has arrived, adapted, and both (see `evaluate --recalibrate`).
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    recalibrate_steps: Option<u64>,
    /// The share of truth the heads' error bands are to hold (see `finetune --band-coverage`).
    #[arg(long, default_value_t = doppel_model::bands::DEFAULT_COVERAGE, value_parser = share_above_zero_below_one)]
    band_coverage: f64,
    /// Fine-tune the forecasting heads only, the pretrained encoder frozen.
    #[arg(long)]
    freeze_encoder: bool,
    /// Pretraining steps of the model the forecasting heads start from.
    #[arg(long, default_value_t = 1000)]
    forecast_pretrain_steps: usize,
    /// Share of patches hidden when pretraining that model (PatchTST pretrains with 0.4).
    #[arg(long, default_value_t = 0.8, value_parser = share_below_one)]
    forecast_mask_ratio: f64,
    /// Pretrain that model on one channel a window, as its heads read them.
    #[arg(long)]
    forecast_channel_independent: bool,
    /// Size of that model (tiny, small, base, large).
    #[arg(long, default_value = "tiny")]
    forecast_size: String,
    /// Channels per token of that model (K > 1: 2-D patches; its heads read every channel
    /// of a window together).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    forecast_channels_per_token: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(command: ModelCommand) -> anyhow::Result<ExitCode> {
    doppel_model::device::on_a_worker(|| run_on_a_worker(command))
}

fn run_on_a_worker(command: ModelCommand) -> anyhow::Result<ExitCode> {
    match command {
        ModelCommand::Pretrain(args) => pretrain_command(args),
        ModelCommand::Twin(args) => twin::twin_model_command(args),
        ModelCommand::Finetune(args) => finetune_command(args),
        ModelCommand::Impute(args) => impute_command(args),
        ModelCommand::Forecast(args) => forecast_command(args),
        ModelCommand::Score(args) => score_command(args),
        ModelCommand::Embed(args) => embed_command(args),
        ModelCommand::Predict(args) => predict_command(args),
        ModelCommand::Bench {
            command: BenchCommand::Ett(args),
        } => bench::bench_ett(*args),
        ModelCommand::Bench {
            command: BenchCommand::Plant(args),
        } => bench_plant::bench_plant(*args),
        ModelCommand::Bench {
            command:
                BenchCommand::Tep {
                    data_dir,
                    out,
                    pretrain_steps,
                    channels_per_token,
                    seed,
                },
        } => {
            let rows = doppel_research::bench::tep(
                &data_dir,
                pretrain_steps,
                channels_per_token as usize,
                seed,
                |m| eprintln!("{m}"),
            )?;
            bench::write_jsonl(&out, &rows)?;
            eprintln!("wrote {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        ModelCommand::Scaling(args) => bench::scaling(args),
        ModelCommand::Evaluate(args) => evaluate_command(args),
        ModelCommand::Info { model, data } => info(&model_dir(&model, &data.data)?),
        ModelCommand::List { data } => list(&data.data),
    }
}

fn predict_command(args: PredictArgs) -> anyhow::Result<ExitCode> {
    let t = &args.task;
    let device = Device::flex();
    let (model, probe, card) =
        store::load_probe(&model_dir(&t.model, &t.lake.data.data)?, &device)?;
    let probe_card = card.probe.clone().expect("load_probe checks the card");
    let rec = t.read(&card)?;
    let stride = args.stride.unwrap_or(probe_card.stride);
    let answers =
        doppel_model::probe::predict(&model, &probe, &card, &probe_card, &rec, stride, &device)?;
    let file = std::fs::File::create(&t.out)
        .with_context(|| format!("cannot write {}", t.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "start,end,{}", probe_card.label_column)?;
    for (first, last, value) in &answers {
        let value = match probe_card.task {
            doppel_model::card::ProbeTask::Classify => probe_card.class_text(*value),
            doppel_model::card::ProbeTask::Regress => value.to_string(),
        };
        writeln!(
            out,
            "{},{},{value}",
            format_rfc3339(rec.time_ns(*first)),
            format_rfc3339(rec.time_ns(*last))
        )?;
    }
    out.flush()?;
    eprintln!("{} window(s); wrote {}", answers.len(), t.out.display());
    Ok(ExitCode::SUCCESS)
}

impl TaskArgs {
    /// Reads `--input` (a file or a lake table) with the model's channels.
    fn read(&self, card: &ModelCard) -> anyhow::Result<Recording> {
        read_input(
            &self.input,
            &ReadOptions {
                time_column: self.time_column.clone(),
                channels: Some(card.channels.clone()),
                // A sensor dead for the whole file is still the model's to fill or score.
                allow_empty_channels: true,
                label_column: None,
            },
            &self.lake,
        )
    }
}

fn load(
    args: &TaskArgs,
) -> anyhow::Result<(
    doppel_model::model::SensorModel,
    ModelCard,
    Recording,
    Device,
)> {
    let device = Device::flex();
    let (net, card) = store::load(&model_dir(&args.model, &args.lake.data.data)?, &device)?;
    let rec = args.read(&card)?;
    Ok((net, card, rec, device))
}

/// A model folder from `--model`: a path when one exists there, else a registered name.
pub(crate) fn model_dir(spec: &str, data: &Path) -> anyhow::Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() || spec.contains(['/', '\\']) {
        return Ok(path.to_owned());
    }
    Ok(Registry::in_data_dir(data).resolve(spec)?)
}

impl Destination {
    /// Where a pretraining writing here keeps its checkpoints until the model is written.
    fn checkpoint_dir(&self, data: &Path) -> anyhow::Result<PathBuf> {
        match (&self.out, &self.name) {
            (Some(out), _) => Ok(out.join("checkpoint")),
            (None, Some(name)) => Ok(Registry::in_data_dir(data).checkpoint_dir(name)?),
            (None, None) => bail!("give --out DIR or --name NAME"),
        }
    }

    /// Writes the model with `save` into the folder or the registry; says where it went.
    fn write(
        &self,
        data: &Path,
        save: impl FnOnce(&Path) -> doppel_model::Result<()>,
    ) -> anyhow::Result<String> {
        match (&self.out, &self.name) {
            (Some(out), _) => {
                save(out)?;
                Ok(format!("wrote {}", out.display()))
            }
            (None, Some(name)) => {
                let (version, dir) = Registry::in_data_dir(data).register(name, save)?;
                Ok(format!(
                    "registered {name} v{version} ({}); use it with --model {name}",
                    dir.display()
                ))
            }
            (None, None) => bail!("give --out DIR or --name NAME"),
        }
    }
}

fn list(data: &Path) -> anyhow::Result<ExitCode> {
    let entries = Registry::in_data_dir(data).list()?;
    if entries.is_empty() {
        eprintln!(
            "no models registered in {} (train one with `doppel model pretrain ... --name NAME`)",
            data.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<20} {:>4} {:>10} {:>8} {:>7} {:>9} {:>8}  created",
        "name", "ver", "params", "channels", "window", "val loss", "forecast"
    );
    let registry = Registry::in_data_dir(data);
    for e in &entries {
        let created = e
            .created
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or_else(|| "?".into(), |d| format_rfc3339(d.as_nanos() as i64));
        println!(
            "{:<20} {:>4} {:>10} {:>8} {:>7} {:>9} {:>8}  {created}",
            e.name,
            format!("v{}", e.version),
            e.card.parameters,
            e.card.channels.len(),
            e.card.config.window(),
            e.card
                .kept_point()
                .map_or_else(|| "-".into(), |p| format!("{:.4}", p.validation_loss)),
            e.card
                .forecast_head
                .as_ref()
                .map_or_else(|| "-".into(), |h| format!("{} steps", h.horizon)),
        );
        if registry.live_version(&e.name) == Some(e.version) {
            println!("{:<20} at work in the twin", "");
        }
        if let Some(p) = &e.card.promotion {
            println!(
                "{:<20} {} v{}: error {:.4} against its {:.4} on {} to {}",
                "",
                if p.promoted { "replaced" } else { "lost to" },
                p.against,
                p.candidate_error,
                p.live_error,
                p.from,
                p.to
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn impute_command(args: ImputeArgs) -> anyhow::Result<ExitCode> {
    let (net, card, rec, device) = load(&args.task)?;
    let (filled, was_missing, choices) = if args.model_only {
        let (filled, was_missing) = tasks::impute(&net, &card, &rec, &device)?;
        (filled, was_missing, Vec::new())
    } else {
        tasks::impute_checked(&net, &card, &rec, &device)?
    };
    for choice in &choices {
        let mse = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.4}"));
        let how = match (choice.by_model, choice.model_mse) {
            (true, None) => "the model (too few values to check it)".to_owned(),
            (true, Some(_)) => format!(
                "the model (squared error {} against interpolation's {})",
                mse(choice.model_mse),
                mse(choice.interpolation_mse)
            ),
            (false, _) => format!(
                "linear interpolation: the model's squared error {} lost to its {} \
                 (--model-only to use the model anyway; a model pretrained to fill gaps, \
                 docs/MODEL.md, usually wins)",
                mse(choice.model_mse),
                mse(choice.interpolation_mse)
            ),
        };
        eprintln!(
            "{}: filled by {how}, on 5 % of its values hidden to check",
            choice.channel
        );
    }
    // One row out per row in, at its own time: a grid slot no row fell on is not written.
    let rows = rec.input_rows();
    let count: usize = rows
        .iter()
        .map(|&(_, slot)| was_missing.iter().filter(|c| c[slot]).count())
        .sum();
    let lines = rows.iter().map(|&(time, slot)| {
        (
            time,
            filled.values.iter().map(|c| c[slot]).collect::<Vec<f32>>(),
        )
    });
    write_csv(&args.task.out, &filled.channels, lines)?;
    eprintln!(
        "filled {count} missing value(s) in {} row(s); wrote {}",
        rows.len(),
        args.task.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn forecast_command(args: ForecastArgs) -> anyhow::Result<ExitCode> {
    let t = &args.task;
    let device = Device::flex();
    let dir = model_dir(&t.model, &t.lake.data.data)?;
    let (net, card) = store::load(&dir, &device)?;
    let rec = t.read(&card)?;
    // A fine-tuned head when the model has one; the masked reconstruction of the tail only
    // when asked for (no error bands then): it is not what pretraining trains.
    if card.forecast_head.is_none() && !args.reconstruct {
        bail!(
            "this model has no forecasting head: fine-tune one with `doppel model finetune \
             --task forecast --model {} ...` (it learns to forecast and gives error bands). \
             --reconstruct forecasts without one by filling in the steps after the file, \
             which pretraining does not teach and which usually loses to repeating the last \
             value",
            t.model
        );
    }
    if card.forecast_head.is_some() && args.reconstruct {
        bail!("--reconstruct is for models without a forecasting head; this one has a head");
    }
    let forecast = if card.forecast_head.is_some() {
        let forecaster = store::with_forecast_head(&dir, net, &card, &device)?;
        let follow = tasks::FollowDrift {
            recalibrate: None,
            adapt: args.adapt.map(|s| s as usize),
        };
        tasks::forecast_with_head(&forecaster, &card, &rec, args.horizon, follow, &device)?
    } else {
        eprintln!(
            "warning: forecasting by reconstruction, without a head and without error bands: \
             compare it with repeating the last value before trusting it"
        );
        tasks::Forecast {
            values: tasks::forecast(&net, &card, &rec, args.horizon, &device)?,
            bands: Vec::new(),
            width_factors: None,
        }
    };
    if let Some(factors) = &forecast.width_factors {
        let mut sorted = factors.clone();
        sorted.sort_by(f32::total_cmp);
        eprintln!(
            "bands adapted over the file's last {} step(s): width × {:.2} to × {:.2} (median × {:.2}) across {} sensor(s)",
            args.adapt.unwrap_or(0),
            sorted[0],
            sorted[sorted.len() - 1],
            sorted[sorted.len() / 2],
            sorted.len()
        );
    } else if args.adapt.is_some() {
        eprintln!("this model has no forecasting head, so no error bands to follow drift");
    }
    let mut header = card.channels.clone();
    for (level, _) in &forecast.bands {
        header.extend(
            card.channels
                .iter()
                .map(|c| format!("{c}_p{:02}", (level * 100.0).round() as u32)),
        );
    }
    let last = rec.time_ns(rec.len() - 1);
    let rows = (0..args.horizon).map(|h| {
        let mut row: Vec<f32> = forecast.values.iter().map(|c| c[h]).collect();
        for (_, band) in &forecast.bands {
            row.extend(band.iter().map(|c| c[h]));
        }
        (last + (h as i64 + 1) * rec.step_ns, row)
    });
    write_csv(&t.out, &header, rows)?;
    eprintln!(
        "forecast {} step(s){}; wrote {}",
        args.horizon,
        if forecast.bands.is_empty() {
            ""
        } else {
            " with error bands"
        },
        t.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn score_command(args: ScoreArgs) -> anyhow::Result<ExitCode> {
    let t = &args.task;
    let (net, card, rec, device) = load(t)?;
    if card.config.interpolation_prior {
        eprintln!(
            "note: this is a gap-filling model (pretrained with --recipe gap-filling): it fills a \
             hidden patch from its neighbours and so follows a shifted level instead of being \
             surprised by it. For anomaly scores, pretrain without the prior (docs/MODEL.md)"
        );
    }
    // The first N rows of the file, as grid steps (irregular rows may skip some).
    let input_rows = rec.input_rows();
    let calibrate_steps = match args.calibrate_rows {
        0 => 0,
        n if n > input_rows.len() => bail!(
            "--calibrate-rows {n}: the file has {} rows",
            input_rows.len()
        ),
        n => input_rows[n - 1].1 + 1,
    };
    let s = tasks::score(&net, &card, &rec, calibrate_steps, &device)?;
    let mut header = vec!["score".to_owned(), "flag".to_owned()];
    header.extend(card.channels.iter().cloned());
    // One row out per row in, at its own time, so scores line up with the input.
    let rows = input_rows.iter().map(|&(time, i)| {
        let mut row = vec![s.score[i], if s.flag[i] { 1.0 } else { 0.0 }];
        row.extend(s.contribution.iter().map(|c| c[i]));
        (time, row)
    });
    write_csv(&t.out, &header, rows)?;
    let flagged = input_rows.iter().filter(|&&(_, i)| s.flag[i]).count();
    eprintln!(
        "threshold {:.3} (99.5th percentile of the calibration rows); {flagged} of {} rows flagged; wrote {}",
        s.threshold,
        input_rows.len(),
        t.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn embed_command(args: EmbedArgs) -> anyhow::Result<ExitCode> {
    let t = &args.task;
    let (net, card, rec, device) = load(t)?;
    let window = args.window.unwrap_or(card.config.window());
    let vectors = tasks::embed_windows(&net, &card, &rec, window, args.stride, &device)?;
    let file = std::fs::File::create(&t.out)
        .with_context(|| format!("cannot write {}", t.out.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let dims = vectors.first().map_or(0, |v| v.2.len());
    let names: Vec<String> = (0..dims).map(|i| format!("e{i}")).collect();
    writeln!(out, "start,end,{}", names.join(","))?;
    for (first, last, v) in &vectors {
        write!(
            out,
            "{},{}",
            format_rfc3339(rec.time_ns(*first)),
            format_rfc3339(rec.time_ns(*last))
        )?;
        for x in v {
            write!(out, ",{x}")?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    eprintln!(
        "{} window(s) of {dims} dimensions; wrote {}",
        vectors.len(),
        t.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn info(dir: &Path) -> anyhow::Result<ExitCode> {
    let (_, card) = store::load(dir, &Device::flex())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({
            "parameters": card.parameters,
            "config": card.config,
            "channels": card.channels,
            "step_s": card.step_ns as f64 / 1e9,
            "data": card.data,
            "final": card.curve.last(),
            "kept": card.kept_point(),
            "forecast_head": card.forecast_head.as_ref().map(|h| serde_json::json!({
                "horizon": h.horizon,
                "channel_independent": h.channel_independent,
                "loss": h.loss,
                "validation_mse": h.validation_mse,
                "linear_validation_mse": h.linear_validation_mse,
                "validation_mae": h.validation_mae,
                "linear_validation_mae": h.linear_validation_mae,
                "best_step": h.best_step,
                "steps_run": h.curve.last().map_or(0, |p| p.step),
                "band_scales": h.chosen_bands().scales,
                "band_scores": h.band_scores,
            })),
            "code_version": card.code_version,
        }))?
    );
    Ok(ExitCode::SUCCESS)
}

/// A CSV with a `time` column (RFC 3339) and one column per channel.
fn write_csv(
    path: &Path,
    channels: &[String],
    rows: impl Iterator<Item = (i64, Vec<f32>)>,
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let quote = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let header: Vec<String> = std::iter::once("time".to_owned())
        .chain(channels.iter().map(|c| quote(c)))
        .collect();
    writeln!(out, "{}", header.join(","))?;
    for (time, values) in rows {
        write!(out, "{}", format_rfc3339(time))?;
        for v in values {
            write!(out, ",{v}")?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(())
}

/// Parses a fine-tuning loss by its name (`squared`, `absolute`).
fn loss_parser() -> impl TypedValueParser<Value = ForecastLoss> {
    clap::builder::PossibleValuesParser::new(ForecastLoss::ALL.map(ForecastLoss::name)).map(
        |name| {
            ForecastLoss::ALL
                .into_iter()
                .find(|loss| loss.name() == name)
                .expect("clap accepts only the losses' names")
        },
    )
}

/// Parses a share that must be above 0 (a band's coverage): above 0 and below 1.
fn share_above_zero_below_one(text: &str) -> Result<f64, String> {
    match share_below_one(text)? {
        0.0 => Err("a share here is above 0".into()),
        share => Ok(share),
    }
}

/// Parses a share (a dropout rate, a mask ratio): at least 0 and below 1.
fn share_below_one(text: &str) -> Result<f64, String> {
    let share: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!("a share is at least 0 and below 1, not {share}"))
    }
}
