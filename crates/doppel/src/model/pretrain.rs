//! `doppel model pretrain`: read the files, standardise, pretrain with checkpoints, write
//! the model folder or register it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use burn::module::Module;
use burn::prelude::Device;
use clap::Args;
use doppel_model::card::{DataRange, ModelCard};
use doppel_model::data::{ReadOptions, Recording};
use doppel_model::device::Accelerator;
use doppel_model::readout::ReadoutFit;
use doppel_model::store;
use doppel_model::train::checkpoint::{self, Checkpointing};
use doppel_model::train::{Throughput, TrainConfig, pretrain_with_checkpoints};

use super::lake_input::{LakeArgs, read_input};
use super::{Destination, ShapeArgs, ValidationArgs};

/// The heading of the options the recipes set: `--help` lists them, `-h` does not.
const RESEARCH: &str = "Research options (a recipe sets these; docs/MODEL.md)";

#[derive(Args)]
pub struct PretrainArgs {
    /// Input files (CSV, whitespace tables or Parquet) or lake tables
    /// (lake:DB/TABLE[?tag=value&...]); each is one recording, and windows
    /// never cross from one into the next.
    #[arg(long, num_args = 1.., required = true)]
    input: Vec<PathBuf>,
    /// The time column (default: time, timestamp, date... as `doppel import` finds it).
    #[arg(long)]
    time_column: Option<String>,
    /// Channels to model, comma-separated (default: every numeric column of the first file).
    #[arg(long, value_delimiter = ',')]
    channels: Option<Vec<String>>,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Channels per token: 1 (default) cuts each channel on its own; K > 1 gives LSM's 2-D
    /// patches of K neighbouring channels (fewer tokens: quicker on many channels; the model
    /// then always reads its channels in this order, all of them together).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    channels_per_token: u64,
    /// Training steps (batches).
    #[arg(long, default_value_t = 600)]
    steps: usize,
    /// Windows per batch.
    #[arg(long, default_value_t = 32)]
    batch: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// The seed: the same seed and data give the same weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// What the model is for, as measured (docs/MODEL.md, "Recipes"): `anomaly` (LSM's
    /// masked patches: scores, embeddings, forecasting heads), `gap-filling` (hidden points
    /// over linear interpolation, windows normalised: the recipe that beat TimesNet on ETT
    /// imputation), `virtual-sensor` (whole channels hidden, 2-D tokens of every channel, a
    /// read-out started at least squares: rebuilds a dead sensor from its neighbours).
    #[arg(long, value_enum, default_value_t = Recipe::Anomaly)]
    recipe: Recipe,
    /// Share of patches hidden from the encoder in each training window (LSM's 0.8).
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    mask_ratio: Option<f64>,
    /// Share of points also hidden inside the patches the encoder sees: teaches the model
    /// to fill scattered missing values from their own patch.
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    point_mask_ratio: Option<f64>,
    /// Share of training batches that hide one whole channel of every window, the others
    /// shown, instead of random patches: teaches the model to rebuild a dead sensor from
    /// its neighbours (a virtual sensor; `--recipe virtual-sensor` sets 0.25; docs/MODEL.md).
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    channel_mask_share: Option<f64>,
    /// Blend into a value missing where every other channel is shown at its step a linear
    /// read-out of those channels (a C × C map started at each channel's least-squares fit
    /// on the others, kept where that fit beats the channel's mean on validation), in the
    /// windows where the map reads the fully shown steps as well as it read the training
    /// windows: the point-level tie between sensors a virtual sensor or a gap filler needs.
    /// Pair with --channel-mask-share for a virtual sensor, which teaches the network what
    /// the fit leaves (docs/MODEL.md).
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    channel_readout: bool,
    /// Learn the difference from linear interpolation of the shown values, not the values
    /// themselves (`--recipe gap-filling` sets it). Not for anomaly scores: a gap filler
    /// follows shifted levels.
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    interpolation_prior: bool,
    /// With --interpolation-prior: also learn, for each hidden value, what the other
    /// channels' readings at the same step say (a C × C map, starting at zero), for sensors
    /// that move together. On by default (it improved every ETT set); `false` to leave it out.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, help_heading = RESEARCH, hide_short_help = true)]
    cross_channel_prior: bool,
    /// Normalise each window by its own shown values (RevIN), for data whose level drifts.
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    instance_norm: bool,
    /// Steps between training checkpoints (0: none). They go into OUT/checkpoint (or the
    /// registry, with --name) and are removed once the model is written.
    #[arg(long, default_value_t = 500)]
    checkpoint_every: usize,
    /// Go on from the last checkpoint of a run with the same settings that was stopped: it
    /// ends with the weights an unbroken run would have.
    #[arg(long)]
    resume: bool,
    /// End with the weights that had the lowest validation loss (checked every 50 steps),
    /// not the last step's: a long run on a short history cannot then hand back weights
    /// that learnt its training windows by heart. `false` keeps the last step's.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    keep_best: bool,
    /// Stop once this many validation checks in a row (one every 50 steps) have not
    /// lowered the validation loss; 0 (default) runs every step.
    #[arg(long, default_value_t = 0)]
    patience: usize,
    /// Train on windows of one channel each, as a forecasting head reads them (PatchTST's
    /// channel independence); raise --batch to keep the tokens a batch. For forecasting,
    /// with --mask-ratio 0.4, PatchTST's share.
    #[arg(long, help_heading = RESEARCH, hide_short_help = true)]
    channel_independent: bool,
    #[command(flatten)]
    validation: ValidationArgs,
    #[command(flatten)]
    dest: Destination,
    #[command(flatten)]
    lake: LakeArgs,
    /// Train on the GPU (needs a doppel built with `--features gpu`).
    #[arg(long)]
    gpu: bool,
}

pub(super) fn pretrain_command(args: PretrainArgs) -> anyhow::Result<ExitCode> {
    let mut options = ReadOptions {
        time_column: args.time_column.clone(),
        channels: args.channels.clone(),
        ..ReadOptions::default()
    };
    let mut recordings: Vec<Recording> = Vec::new();
    for path in &args.input {
        let rec = read_input(path, &options, &args.lake)?;
        if options.channels.is_none() {
            options.channels = Some(rec.channels.clone());
        }
        recordings.push(rec);
    }
    let step_ns = recordings[0].step_ns;
    if let Some(other) = recordings.iter().find(|r| r.step_ns != step_ns) {
        bail!(
            "{} has rows {} s apart, {} has {} s: give files on one grid",
            other.source.display(),
            other.step_ns as f64 / 1e9,
            recordings[0].source.display(),
            step_ns as f64 / 1e9
        );
    }
    // Irregular rows on a fine grid leave most of it empty: the model would learn gaps.
    let steps: usize = recordings.iter().map(Recording::len).sum();
    let seen: f64 = recordings
        .iter()
        .map(|r| r.observed_share() * r.len() as f64)
        .sum();
    if seen < 0.5 * steps as f64 {
        eprintln!(
            "warning: only {:.0} of {steps} grid steps ({:.1} %) hold a reading: the grid is \
             the commonest step between rows ({} s), and most rows are further apart. Resample \
             the data to a regular step (for example with SQL's date_bin), or expect a model \
             of mostly gaps",
            seen,
            100.0 * seen / steps.max(1) as f64,
            step_ns as f64 / 1e9
        );
    }
    let channels = recordings[0].channels.clone();
    let recipe = args.recipe.settings(channels.len());
    let channels_per_token = match (args.recipe, args.channels_per_token) {
        (Recipe::VirtualSensor, 1) => recipe.channels_per_token,
        (_, k) => k,
    };
    let mut config = args.shape.config(channels.len(), channels_per_token)?;
    let mask_ratio = args.mask_ratio.unwrap_or(recipe.mask_ratio);
    let point_mask_ratio = args.point_mask_ratio.unwrap_or(recipe.point_mask_ratio);
    let channel_mask_share = args.channel_mask_share.unwrap_or(recipe.channel_mask_share);
    for (name, ratio) in [
        ("--mask-ratio", mask_ratio),
        ("--point-mask-ratio", point_mask_ratio),
        ("--channel-mask-share", channel_mask_share),
    ] {
        if !(0.0..1.0).contains(&ratio) {
            bail!("{name} must be at least 0 and below 1, not {ratio}");
        }
    }
    config.mask_ratio = mask_ratio;
    config.point_mask_ratio = point_mask_ratio;
    config.channel_mask_share = channel_mask_share;
    config.channel_readout = args.channel_readout || recipe.channel_readout;
    if args.channel_independent && config.channel_mask_share > 0.0 {
        bail!(
            "--channel-mask-share hides one channel among the others, and --channel-independent \
             windows have one channel each: use one or the other"
        );
    }
    if args.channel_independent && config.channel_readout {
        bail!(
            "--channel-readout reads a channel from the others at the same step, and \
             --channel-independent windows have one channel each: use one or the other"
        );
    }
    config.interpolation_prior = args.interpolation_prior || recipe.interpolation_prior;
    config.cross_channel_prior = config.interpolation_prior && args.cross_channel_prior;
    config.instance_norm = args.instance_norm || recipe.instance_norm;
    if config.channels_per_token > 1
        && config.point_mask_ratio == 0.0
        && config.channel_mask_share == 0.0
    {
        eprintln!(
            "note: a model of 2-D tokens learns to fill a sensor among its token's others only \
             from hidden points or channels: pretrain with --recipe virtual-sensor (or \
             --point-mask-ratio 0.3) if it is to fill dead sensors (docs/MODEL.md)"
        );
    }
    let (train, split_note) = args
        .validation
        .apply(TrainConfig {
            channel_independent: args.channel_independent,
            keep_best: args.keep_best,
            patience: args.patience,
            ..TrainConfig::new(args.steps, args.batch, args.lr, args.seed)
        })
        .fitted_to(&recordings, config.window());
    if let Some(note) = split_note {
        eprintln!("note: {note}");
    }
    let normalizer = train.normalizer(&recordings)?;
    let standardised: Vec<Recording> = recordings.iter().map(|r| normalizer.apply(r)).collect();
    let device = doppel_model::device::training(if args.gpu {
        Accelerator::Gpu
    } else {
        Accelerator::Cpu
    })?;
    let parameters = config.init_seeded(args.seed, &Device::flex()).num_params();
    let held_out = match train.validation_recordings {
        0 => String::new(),
        n => format!(" (the last {n} held out for validation)"),
    };
    eprintln!(
        "pretraining a {} model ({parameters} parameters) on {} file(s){held_out}, {} channel(s), windows of {} steps ({} patches of {}; {} tokens of {} channel(s) each)",
        args.shape.size,
        recordings.len(),
        channels.len(),
        config.window(),
        config.patches,
        config.patch_len,
        config.tokens_per_window(channels.len()),
        config.channels_per_token
    );
    let checkpoints = Checkpointing {
        dir: args.dest.checkpoint_dir(&args.lake.data.data)?,
        every: args.checkpoint_every,
        resume: args.resume,
    };
    match (checkpoint::saved_step(&checkpoints.dir), args.resume) {
        (Some(step), true) => eprintln!(
            "resuming from the checkpoint at step {step} ({})",
            checkpoints.dir.display()
        ),
        (None, true) => eprintln!(
            "no checkpoint in {}: starting from step 0",
            checkpoints.dir.display()
        ),
        (Some(step), false) => eprintln!(
            "{} holds a checkpoint at step {step}: add --resume to go on from it; \
             this run starts afresh and replaces it",
            checkpoints.dir.display()
        ),
        (None, false) => {}
    }
    let bar = crate::progress::training_bar(args.steps as u64);
    let (mut speed, mut step_speed) = (0.0, None);
    let pretrained = pretrain_with_checkpoints(
        &standardised,
        &config,
        &train,
        Some(&checkpoints),
        &device,
        |p| {
            (speed, step_speed) = (p.tokens_per_second, p.step_tokens_per_second);
            bar.set_position(p.step as u64);
            bar.set_message(format!(
                "loss {:.4}, {:.0} tokens/s",
                p.loss, p.tokens_per_second
            ));
        },
    )?;
    bar.finish_and_clear();
    let data = DataRange::of(&recordings, &train);
    let (model, curve) = (pretrained.model, pretrained.curve);
    let mut card = ModelCard::new(config, normalizer, step_ns, parameters, data, train, curve);
    // The card says which channels the read-out reads and which it left to the network.
    if let Some(fits) = pretrained.readout_start {
        eprintln!("{}", readout_note(&fits));
        if let Some(shares) = model.network_shares() {
            let named: Vec<String> = (card.channels.iter().zip(&shares))
                .map(|(name, share)| format!("{name} {share:.3}"))
                .collect();
            eprintln!(
                "the network's share of each value the read-out fills, set on the validation \
                 windows after training: {}",
                named.join(", ")
            );
        }
        card.readout_start = Some(fits);
    }
    let model = model.valid();
    let written = args
        .dest
        .write(&args.lake.data.data, |dir| store::save(dir, &model, &card))?;
    checkpoint::clear(&checkpoints.dir)?;
    if let Some(last) = card.curve.last() {
        eprintln!(
            "validation loss {:.4} (standardised MSE on hidden patches) after {} steps; \
             {speed:.0} tokens/s (batching and validation included)",
            last.validation_loss, last.step
        );
        if let Some(note) = super::early_stop_note(&card.train, &card.curve) {
            eprintln!("{note}");
        }
        if let Some(kept) = card.kept_point()
            && kept.step != last.step
        {
            eprintln!(
                "kept the weights of step {}, with the lowest validation loss ({:.4}); \
                 --keep-best false keeps the last step's",
                kept.step, kept.validation_loss
            );
        }
        if let Some(step_speed) = step_speed {
            eprintln!(
                "{step_speed:.0} tokens/s in the training steps alone, after {} warm-up steps",
                Throughput::WARM_UP_STEPS
            );
        }
    }
    eprintln!("{written}");
    Ok(ExitCode::SUCCESS)
}

/// One line on the read-out's start: the channels read from the others, with the share of
/// the untrained model's error the fit removes (of the channel's variance, for a model
/// without the interpolation prior), and those whose fit lost to their mean on validation.
fn readout_note(fits: &[ReadoutFit]) -> String {
    let mse = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.3}"));
    let (read, left): (Vec<&ReadoutFit>, Vec<&ReadoutFit>) =
        fits.iter().partition(|f| f.ridge.is_some());
    let read: Vec<String> = read
        .iter()
        .map(|f| {
            let broke = if f.broken_windows > 0 {
                format!(
                    ", its tie broken in {} of {} validation windows, not filled there",
                    f.broken_windows, f.validation_windows
                )
            } else {
                String::new()
            };
            format!(
                "{} ({:.1} %{broke})",
                f.channel,
                100.0 * (1.0 - f.network_share)
            )
        })
        .collect();
    let mut note = format!(
        "channel read-out started from least squares on the other channels for {} of {} \
         channel(s), with the share of the untrained model's error each fit removes: {}",
        read.len(),
        fits.len(),
        if read.is_empty() {
            "none".into()
        } else {
            read.join(", ")
        }
    );
    for fit in left {
        if fit.validation_windows > 0 && fit.broken_windows == fit.validation_windows {
            note += &format!(
                "; not {} (its tie to the others broke in every validation window)",
                fit.channel
            );
            continue;
        }
        note += &format!(
            "; not {} (its fit's validation MSE {} against {} for its training mean)",
            fit.channel,
            mse(fit.validation_mse),
            mse(fit.validation_mse_of_mean)
        );
    }
    note
}

/// What a model is pretrained for: each recipe is the set of research options a benchmark
/// made the best known way to that use (docs/MODEL.md, "Recipes").
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Recipe {
    Anomaly,
    GapFilling,
    VirtualSensor,
}

/// The options a recipe sets; a research flag given on the command line replaces its own.
struct RecipeSettings {
    mask_ratio: f64,
    point_mask_ratio: f64,
    channel_mask_share: f64,
    channel_readout: bool,
    interpolation_prior: bool,
    instance_norm: bool,
    channels_per_token: u64,
}

impl Recipe {
    fn settings(self, channels: usize) -> RecipeSettings {
        let lsm = RecipeSettings {
            mask_ratio: 0.8,
            point_mask_ratio: 0.0,
            channel_mask_share: 0.0,
            channel_readout: false,
            interpolation_prior: false,
            instance_norm: false,
            channels_per_token: 1,
        };
        match self {
            Recipe::Anomaly => lsm,
            // ETT imputation (docs/BENCHMARKS.md): every test set below TimesNet's error.
            Recipe::GapFilling => RecipeSettings {
                mask_ratio: 0.0,
                point_mask_ratio: 0.4,
                interpolation_prior: true,
                instance_norm: true,
                ..lsm
            },
            // A dead sensor rebuilt from the others (docs/BENCHMARKS.md): fine detail crosses
            // between channels only inside one token, and the read-out carries linear ties.
            Recipe::VirtualSensor => RecipeSettings {
                channel_mask_share: 0.25,
                channel_readout: true,
                channels_per_token: channels as u64,
                ..lsm
            },
        }
    }
}
