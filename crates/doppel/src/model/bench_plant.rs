//! `doppel model bench plant`: the sensor model on the reference plant, in one command.
//! It simulates years of the plant, pretrains on some, lets the next ones choose the
//! weights, fine-tunes forecasting heads, and measures them and their linear start on years
//! that neither trained nor chose anything.
//!
//! It lives in the binary because it joins two parts that must not know each other: the
//! simulator (`doppel-sim`) and the model (`doppel-model`). It goes through the same library
//! calls, settings and model folders as `doppel model pretrain`, `finetune` and `evaluate`,
//! so each number can be checked with those commands on the folders it leaves.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use burn::module::Module;
use burn::prelude::Device;
use clap::Args;
use doppel_model::bands::BandScore;
use doppel_model::data::Recording;
use doppel_model::evaluate::{ForecastEvaluation, evaluate_forecaster};
use doppel_model::finetune::{ForecastHeadCard, ForecastLoss, ForecastTuning, finetune_forecast};
use doppel_model::linear::Search;

use doppel_model::card::{DataRange, ModelCard};
use doppel_model::store;
use doppel_model::train::{TrainConfig, pretrain};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::plant::Plant;
use doppel_sim::policy::PolicyKind;
use doppel_sim::random::run_seed;
use doppel_sim::run::{Observer, RunSettings, StepView, simulate};
use doppel_sim::scenario::Scenario;

use super::ShapeArgs;
use serde::Serialize;

#[derive(Args)]
pub struct PlantArgs {
    /// Where to write the results, one JSON object a line.
    #[arg(long)]
    out: PathBuf,
    /// A folder for the models trained: `pretrained`, and per horizon H `head-hH` (and
    /// `head-hH-absolute` for the absolute loss) and `linear-hH` (the linear start alone),
    /// for `doppel model evaluate` or `forecast`.
    #[arg(long, default_value = "plant-bench")]
    models: PathBuf,
    /// Simulated years to learn from; the last --validation-years of them only choose
    /// weights (pretraining's and the heads'), none of their rows is trained on.
    #[arg(long, default_value_t = 10)]
    years: usize,
    /// Years at the end of --years held out whole to choose weights.
    #[arg(long, default_value_t = 2)]
    validation_years: usize,
    /// Further years, simulated after those, that only measure.
    #[arg(long, default_value_t = 2)]
    test_years: usize,
    /// The simulator's seed of the first year; each year after takes the next.
    #[arg(long, default_value_t = 21)]
    first_year_seed: u64,
    /// Days in a simulated "year" (shorter for a quick look).
    #[arg(long, default_value_t = 365.0)]
    days: f64,
    /// The grid of the readings.
    #[arg(long, default_value = "5m", value_parser = crate::sim::seconds)]
    step: f64,
    #[command(flatten)]
    shape: ShapeArgs,
    /// Sensors per token (LSM's 2-D patches; the plant has 50).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    channels_per_token: u64,
    /// Pretraining steps (batches of 32 windows); the weights best on validation are kept.
    #[arg(long, default_value_t = 4000)]
    pretrain_steps: usize,
    /// Forecast horizons, in steps of the grid.
    #[arg(long, value_delimiter = ',', default_value = "12,48")]
    horizons: Vec<usize>,
    /// Fine-tuning steps per horizon, at most (see --patience).
    #[arg(long, default_value_t = 2000)]
    finetune_steps: usize,
    /// What each head's fine-tuning minimises: `squared`, `absolute`, or both (one head
    /// each, from the same pretrained model; see `finetune --loss`).
    #[arg(long, value_delimiter = ',', default_value = "squared", value_parser = super::loss_parser())]
    finetune_losses: Vec<ForecastLoss>,
    /// Stop fine-tuning once this many checks (one every 50 steps) have not lowered the
    /// validation error; 0 runs every step.
    #[arg(long, default_value_t = 8)]
    patience: usize,
    /// Steps between forecast origins on the test years (1: every window).
    #[arg(long, default_value_t = 4)]
    test_stride: usize,
    /// Also measure the bands recalibrated on the forecasts of the last this many steps
    /// whose truth has arrived, adapted, and both (see `evaluate --recalibrate`).
    #[arg(long, value_name = "STEPS", value_parser = clap::value_parser!(u64).range(1..))]
    recalibrate_steps: Option<u64>,
    /// The share of truth the heads' error bands are to hold (see `finetune --band-coverage`).
    #[arg(long, default_value_t = doppel_model::bands::DEFAULT_COVERAGE, value_parser = super::share_above_zero_below_one)]
    band_coverage: f64,
    /// The seed of pretraining and fine-tuning.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// One result line.
#[derive(Serialize)]
struct PlantRow {
    dataset: &'static str,
    task: &'static str,
    horizon: usize,
    /// `persistence`, `linear_start` or `doppel_<size>` (`doppel_<size>_absolute` for the
    /// absolute loss).
    model: String,
    /// On the test years, standardised.
    mse: f64,
    mae: f64,
    windows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    validation_mse: Option<f64>,
    /// The fine-tuning step whose weights were kept (0: the linear start).
    #[serde(skip_serializing_if = "Option::is_none")]
    kept_step: Option<usize>,
    /// The bands on the test years: the one forecasts use, then the constant one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bands: Vec<BandScore>,
}

pub(super) fn bench_plant(mut args: PlantArgs) -> anyhow::Result<ExitCode> {
    // A loss named twice is one head, not two runs writing the same folder.
    let mut seen = Vec::new();
    args.finetune_losses.retain(|l| {
        let new = !seen.contains(l);
        seen.push(*l);
        new
    });
    if args.validation_years == 0 || args.validation_years >= args.years {
        bail!(
            "--validation-years must be at least 1 and fewer than --years ({}), not {}",
            args.years,
            args.validation_years
        );
    }
    if args.test_years == 0 {
        bail!("--test-years must be at least 1: they are what the bench measures on");
    }
    if args.pretrain_steps == 0 {
        bail!("--pretrain-steps must be at least 1: the heads start from a pretrained model");
    }
    if args.horizons.is_empty() || args.horizons.contains(&0) {
        bail!("--horizons takes one or more horizons of at least 1 step, such as 12,48");
    }
    let began = Instant::now();
    let seeds: Vec<u64> = (0..(args.years + args.test_years) as u64)
        .map(|i| args.first_year_seed + i)
        .collect();
    eprintln!(
        "simulating {} plant years ({} days each, a {} s grid; seeds {}..={}): {} to learn \
         from, the last {} of them validating, then {} to test on",
        seeds.len(),
        args.days,
        args.step,
        seeds[0],
        seeds[seeds.len() - 1],
        args.years,
        args.validation_years,
        args.test_years
    );
    let bar = crate::progress::bar(seeds.len() as u64, "years");
    let mut years = Vec::with_capacity(seeds.len());
    for &seed in &seeds {
        years.push(simulate_year(seed, args.days, args.step)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let test = years.split_off(args.years);
    let simulated_s = began.elapsed().as_secs_f64();

    // Pretraining, as `doppel model pretrain --validation-files N --channels-per-token K
    // --checkpoint-every 0` does it.
    let config = args
        .shape
        .config(years[0].channels.len(), args.channels_per_token)?;
    let train = TrainConfig {
        keep_best: true,
        validation_recordings: args.validation_years,
        ..TrainConfig::new(args.pretrain_steps, 32, 1e-3, args.seed)
    };
    let normalizer = train.normalizer(&years)?;
    let standardised: Vec<Recording> = years.iter().map(|r| normalizer.apply(r)).collect();
    let parameters = config.init_seeded(args.seed, &Device::flex()).num_params();
    eprintln!(
        "pretraining a {} model ({parameters} parameters), {} steps, windows of {} steps",
        args.shape.size,
        args.pretrain_steps,
        config.window()
    );
    let started = Instant::now();
    let device = doppel_model::device::training(doppel_model::device::Accelerator::Cpu)?;
    let bar = crate::progress::training_bar(args.pretrain_steps as u64);
    let (model, curve) = pretrain(&standardised, &config, &train, &device, |p| {
        crate::progress::show_loss(&bar, p)
    })?;
    bar.finish_and_clear();
    let data = DataRange::of(&years, &train);
    let step_ns = years[0].step_ns;
    let card = ModelCard::new(config, normalizer, step_ns, parameters, data, train, curve);
    let pretrained = args.models.join("pretrained");
    store::save(&pretrained, &model.valid(), &card)?;
    let kept = card.kept_point().context("pretraining ran no step")?;
    eprintln!(
        "pretrained in {:.0} s: validation loss {:.4} (step {} kept); wrote {}",
        started.elapsed().as_secs_f64(),
        kept.validation_loss,
        kept.step,
        pretrained.display()
    );
    drop((model, years));
    let test: Vec<Recording> = test.iter().map(|r| card.normalizer.apply(r)).collect();

    let mut rows = Vec::new();
    for &horizon in &args.horizons {
        let started = Instant::now();
        let (linear, linear_head) =
            forecaster_for(&args, &pretrained, &standardised, horizon, None)?;
        let linear_eval = measure(&linear, &test, &args)?;
        let row = |model: String, eval: (f64, f64), validation_mse, kept_step, bands| PlantRow {
            dataset: "plant",
            task: "forecast",
            horizon,
            model,
            mse: eval.0,
            mae: eval.1,
            windows: linear_eval.windows,
            validation_mse,
            kept_step,
            bands,
        };
        rows.push(row(
            "persistence".into(),
            (linear_eval.persistence_mse, linear_eval.persistence_mae),
            None,
            None,
            Vec::new(),
        ));
        rows.push(row(
            "linear_start".into(),
            (linear_eval.mse, linear_eval.mae),
            Some(linear_head.validation_mse),
            Some(0),
            linear_eval.bands.clone(),
        ));
        for &loss in &args.finetune_losses {
            let (head, card) =
                forecaster_for(&args, &pretrained, &standardised, horizon, Some(loss))?;
            let eval = measure(&head, &test, &args)?;
            rows.push(row(
                format!("doppel_{}{}", args.shape.size, loss.suffix("_")),
                (eval.mse, eval.mae),
                Some(card.validation_mse),
                Some(card.best_step),
                eval.bands,
            ));
        }
        eprintln!(
            "{horizon} steps ahead: fine-tuned and measured in {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    super::bench::write_jsonl(&args.out, &rows)?;
    print_table(&rows, args.step, args.band_coverage);
    eprintln!(
        "{:.0} s ({simulated_s:.0} s simulating); wrote {} and the models in {}",
        began.elapsed().as_secs_f64(),
        args.out.display(),
        args.models.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Fine-tunes a forecaster for `horizon` on the pretrained model with `loss` (None: the
/// linear start alone, 0 steps), as `doppel model finetune --task forecast
/// --validation-files N` does, and saves it next to the pretrained model. `years` are the
/// learning years, standardised with the pretrained model's statistics. Returns the
/// forecaster's folder and its head's card.
fn forecaster_for(
    args: &PlantArgs,
    pretrained: &Path,
    years: &[Recording],
    horizon: usize,
    loss: Option<ForecastLoss>,
) -> anyhow::Result<(PathBuf, ForecastHeadCard)> {
    let steps = if loss.is_some() {
        args.finetune_steps
    } else {
        0
    };
    let device = Device::flex().autodiff();
    let (model, mut card) = store::load(pretrained, &device)?;
    let train = TrainConfig {
        patience: args.patience,
        validation_recordings: args.validation_years,
        ..TrainConfig::new(steps, 128, 3e-4, args.seed)
    };
    let tuning = ForecastTuning {
        horizon,
        channel_independent: card.config.channels_per_token == 1,
        linear: Search::default(),
        freeze_encoder: false,
        dropout: 0.0,
        loss: loss.unwrap_or_default(),
        band_coverage: args.band_coverage,
    };
    let bar = crate::progress::training_bar(steps as u64);
    let (forecaster, head) =
        finetune_forecast(model, &card.config, years, &tuning, &train, &device, |p| {
            crate::progress::show_loss(&bar, p)
        })?;
    bar.finish_and_clear();
    if let Some(note) = super::early_stop_note(&head.train, &head.curve) {
        eprintln!("{horizon} steps ahead: {note}");
    }
    card.forecast_head = Some(head.clone());
    let dir = args.models.join(match loss {
        None => format!("linear-h{horizon}"),
        Some(loss) => format!("head-h{horizon}{}", loss.suffix("-")),
    });
    store::save_forecaster(&dir, &forecaster, &card)?;
    Ok((dir, head))
}

/// A saved forecaster's errors on the (standardised) test years, read back from its folder
/// as `doppel model evaluate` reads it.
fn measure(dir: &Path, test: &[Recording], args: &PlantArgs) -> anyhow::Result<ForecastEvaluation> {
    let device = Device::flex();
    let (forecaster, card) = store::load_forecaster(dir, &device)?;
    let head = card
        .forecast_head
        .as_ref()
        .expect("load_forecaster checked");
    Ok(evaluate_forecaster(
        &forecaster,
        &card.config,
        head,
        test,
        args.test_stride,
        args.recalibrate_steps.map(|s| s as usize),
        &device,
    )?)
}

fn print_table(rows: &[PlantRow], step_s: f64, band_coverage: f64) {
    let ahead = |horizon: usize| format!("{:.1} h", horizon as f64 * step_s / 3600.0);
    println!(
        "{:<8} {:<34} {:>14} {:>9} {:>9} {:>20}",
        "horizon", "forecaster", "validation MSE", "test MSE", "test MAE", "vs linear start"
    );
    for chunk in rows.chunk_by(|a, b| a.horizon == b.horizon) {
        let Some(linear) = chunk.iter().find(|r| r.model == "linear_start") else {
            continue;
        };
        for r in chunk {
            let ahead = ahead(r.horizon);
            let model = match r.kept_step {
                Some(step) if r.model.starts_with("doppel") => {
                    format!("{} (step {step})", r.model)
                }
                _ => r.model.clone(),
            };
            let change = if r.model.starts_with("doppel") {
                format!(
                    "{:+.1} % / {:+.1} %",
                    100.0 * (r.mse / linear.mse - 1.0),
                    100.0 * (r.mae / linear.mae - 1.0)
                )
            } else {
                String::new()
            };
            println!(
                "{ahead:<8} {model:<34} {:>14} {:>9.4} {:>9.4} {change:>20}",
                r.validation_mse
                    .map_or_else(String::new, |v| format!("{v:.4}")),
                r.mse,
                r.mae
            );
        }
    }
    println!(
        "\n{:.0} % bands on the test years: coverage (below / above), mean width, interval \
         score, coverage in the calmest and the most restless third of the windows",
        100.0 * band_coverage
    );
    let share = |v: Option<f64>| v.map_or_else(String::new, |v| format!("{:.1} %", 100.0 * v));
    for r in rows {
        for b in &r.bands {
            println!(
                "{:<8} {:<34} {:<27} {:>5.1} % ({:>4.1} / {:>4.1}) {:>7.3} {:>7.3} {:>8} {:>8}",
                ahead(r.horizon),
                r.model,
                b.bands,
                100.0 * b.coverage,
                100.0 * b.below,
                100.0 * b.above,
                b.width,
                b.interval_score,
                share(b.calm),
                share(b.restless)
            );
        }
    }
}

/// Runs the reference plant for `days` under the rule-based operator, without
/// disruptions (`doppel sim run --days D --step S --seed N`), and keeps its readings as a
/// recording on the step's grid; a reading the plant did not deliver is unobserved.
fn simulate_year(seed: u64, days: f64, step_s: f64) -> anyhow::Result<Recording> {
    let mut plant = ChillerPlant::new(ChillerPlantConfig::default(), seed)?;
    let start_ns = plant.config().start_ns;
    let events = Scenario::baseline().draw(run_seed(seed, 0));
    let mut policy = PolicyKind::Rules.build(&plant)?;
    let channels: Vec<String> = plant.sensors().iter().map(|s| s.id.clone()).collect();
    let mut readings = Readings {
        values: vec![Vec::new(); channels.len()],
        observed: vec![Vec::new(); channels.len()],
        first_ns: None,
        start_ns,
    };
    let settings = RunSettings { days, step_s };
    simulate(
        &mut plant,
        policy.as_mut(),
        events,
        settings,
        Some(&mut readings),
    )?;
    let Some(first_ns) = readings.first_ns else {
        bail!("--days {days} with --step {step_s} s simulates no step");
    };
    Ok(Recording {
        source: PathBuf::from(format!("simulated plant, seed {seed}, {days} days")),
        start_ns: first_ns,
        step_ns: (step_s * 1e9).round() as i64,
        channels,
        values: readings.values,
        observed: readings.observed,
        rows: Vec::new(),
        labels: Vec::new(),
    })
}

/// Collects a run's readings, one series per sensor.
struct Readings {
    values: Vec<Vec<f32>>,
    observed: Vec<Vec<bool>>,
    first_ns: Option<i64>,
    start_ns: i64,
}

impl Observer for Readings {
    fn observe(&mut self, view: &StepView) -> doppel_sim::Result<bool> {
        self.first_ns
            .get_or_insert(self.start_ns + (view.t_s * 1e9).round() as i64);
        for (i, (values, observed)) in self.values.iter_mut().zip(&mut self.observed).enumerate() {
            // As a file read back: a reading that is not a finite number is unobserved.
            let reading = view.readings.get(i).filter(|v| v.is_finite());
            values.push(reading.unwrap_or(0.0) as f32);
            observed.push(reading.is_some());
        }
        Ok(true)
    }
}
