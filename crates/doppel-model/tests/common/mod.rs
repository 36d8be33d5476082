//! Helpers shared by the model's integration tests: a known signal, one test at a time,
//! and a short training schedule.

use burn::module::Module;
use burn::prelude::*;
use doppel_model::card::{DataRange, ModelCard};
use doppel_model::data::{Normalizer, Recording};
use doppel_model::linear::LinearForecaster;
use doppel_model::model::{ModelConfig, SensorModel};
use doppel_model::tasks;
use doppel_model::train::{TrainConfig, pretrain};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const TAU: f32 = std::f32::consts::TAU;

/// One test at a time: burn's CPU backend sums in parallel (rayon), and the grouping of
/// those sums, so the last bits of every weight, depends on what else shares the threads.
/// Alone, a seed gives the same weights every time; side by side, trainings drift apart.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The seed a test asked for, shifted by the environment's `DOPPEL_TEST_SEED` (0 unless
/// set). Every seed the model's tests use goes through here, so running them under a few
/// shifts shows which bars hold by a margin and which by one seed's luck.
#[allow(dead_code)] // each test binary compiles this module; not all of them use it
pub fn seed(asked: u64) -> u64 {
    let shift = std::env::var("DOPPEL_TEST_SEED").map_or(0, |s| {
        s.parse()
            .unwrap_or_else(|_| panic!("DOPPEL_TEST_SEED={s:?} is not a whole number"))
    });
    asked + shift
}

/// Three correlated channels: sums of sines with noise, on a minute grid.
pub fn sines(len: usize, seed: u64) -> Recording {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(self::seed(seed));
    let mut values: Vec<Vec<f32>> = (0..3).map(|_| Vec::with_capacity(len)).collect();
    for t in 0..len {
        let x = t as f32;
        let a = (x * TAU / 24.0).sin() + 0.5 * (x * TAU / 7.0).sin();
        values[0].push(a + 0.05 * (rng.random::<f32>() - 0.5));
        values[1].push(2.0 * a + 3.0 + 0.05 * (rng.random::<f32>() - 0.5));
        values[2].push((x * TAU / 24.0).cos() + 0.05 * (rng.random::<f32>() - 0.5));
    }
    Recording {
        source: "sines.csv".into(),
        start_ns: 0,
        step_ns: 60_000_000_000,
        channels: vec!["a".into(), "b".into(), "c".into()],
        observed: vec![vec![true; len]; 3],
        values,
        rows: Vec::new(),
        labels: Vec::new(),
    }
}

pub fn train_config(steps: usize, seed: u64) -> TrainConfig {
    TrainConfig {
        steps,
        batch_size: 16,
        eval_every: 50,
        warmup_steps: 20,
        seed: self::seed(seed),
        ..TrainConfig::default()
    }
}

/// [`sines`] in standardised units (statistics of the whole series).
#[allow(dead_code)] // each test binary compiles this module; not all of them use it
pub fn standardised_sines(len: usize, seed: u64) -> Recording {
    let raw = sines(len, seed);
    Normalizer::fit(std::slice::from_ref(&raw), 1.0).apply(&raw)
}

/// A model pretrained on 3,000 steps of [`sines`] drawn with `data_seed`, ready for
/// inference, with its card (one data range: the sines).
#[allow(dead_code)] // each test binary compiles this module; not all of them train
pub fn pretrained_on_sines(
    config: ModelConfig,
    train: TrainConfig,
    data_seed: u64,
) -> (SensorModel, ModelCard) {
    pretrained_on(&sines(3000, data_seed), config, train)
}

/// A model pretrained on `raw` (standardised with its own statistics), ready for inference,
/// with its card (one data range: the recording).
#[allow(dead_code)] // each test binary compiles this module; not all of them train
pub fn pretrained_on(
    raw: &Recording,
    config: ModelConfig,
    train: TrainConfig,
) -> (SensorModel, ModelCard) {
    let device = Device::flex().autodiff();
    let normalizer = Normalizer::fit(std::slice::from_ref(raw), 1.0);
    let (model, curve) =
        pretrain(&[normalizer.apply(raw)], &config, &train, &device, |_| {}).unwrap();
    let card = ModelCard::new(
        config,
        normalizer,
        raw.step_ns,
        model.num_params(),
        vec![DataRange {
            file: raw.source.clone(),
            start: "1970-01-01T00:00:00Z".into(),
            end: "later".into(),
            steps: raw.len(),
            validation_only: false,
        }],
        train,
        curve,
    );
    (model.valid(), card)
}

/// The model's 16-step forecasts of the sines, at points after its training range, against
/// seasonal naive (24 steps back) on the same steps: standardised MSE of each,
/// (model, seasonal naive).
#[allow(dead_code)] // each test binary compiles this module; not all of them forecast
pub fn forecast_against_seasonal_naive(model: &SensorModel, card: &ModelCard) -> (f64, f64) {
    let device = Device::flex();
    let test = sines(3000 + 400, 1); // the same process, later: the last 400 steps are new
    let (mut model_se, mut naive_se, mut n) = (0.0f64, 0.0f64, 0);
    for end in (3050..3380).step_by(37) {
        let mut context = test.clone();
        for c in 0..3 {
            context.values[c].truncate(end);
            context.observed[c].truncate(end);
        }
        let f = tasks::forecast(model, card, &context, 16, &device).unwrap();
        for (c, predicted) in f.iter().enumerate() {
            let sd = card.normalizer.std[c] as f64;
            for (h, &p) in predicted.iter().enumerate() {
                let truth = test.values[c][end + h] as f64;
                let naive = test.values[c][end + h - 24] as f64;
                model_se += ((p as f64 - truth) / sd).powi(2);
                naive_se += ((naive - truth) / sd).powi(2);
                n += 1;
            }
        }
    }
    (model_se / n as f64, naive_se / n as f64)
}

/// Asserts that `predicted` (per window, `[channel * H + step]`) is what `linear` forecasts
/// from each window's look-back: the windows of `data` that start at `starts`.
#[allow(dead_code)] // each test binary compiles this module; not all of them forecast
pub fn assert_forecasts_are_linear(
    predicted: &[Vec<f32>],
    linear: &LinearForecaster,
    data: &Recording,
    starts: &[usize],
) {
    let (w, h) = (linear.lookback, linear.horizon);
    for (p, &s) in predicted.iter().zip(starts) {
        for c in 0..data.channels.len() {
            let expected = linear.predict(c, &data.values[c][s..s + w]);
            for k in 0..h {
                let got = p[c * h + k];
                assert!(
                    (got - expected[k]).abs() < 1e-3,
                    "window {s}, channel {c}, step {k}: {got} vs {}",
                    expected[k]
                );
            }
        }
    }
}
