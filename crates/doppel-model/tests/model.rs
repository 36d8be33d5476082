//! The sensor model against its promises.

use burn::prelude::*;
use doppel_model::data::Recording;
use doppel_model::model::ModelConfig;
use doppel_model::train::{TrainConfig, pretrain};

/// Three correlated channels: sums of sines with noise, on a minute grid.
fn sines(len: usize, seed: u64) -> Recording {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut values = vec![Vec::with_capacity(len); 3];
    for t in 0..len {
        let x = t as f32;
        let a = (x * std::f32::consts::TAU / 24.0).sin()
            + 0.5 * (x * std::f32::consts::TAU / 7.0).sin();
        values[0].push(a + 0.05 * (rng.random::<f32>() - 0.5));
        values[1].push(2.0 * a + 0.05 * (rng.random::<f32>() - 0.5));
        values[2]
            .push((x * std::f32::consts::TAU / 24.0).cos() + 0.05 * (rng.random::<f32>() - 0.5));
    }
    Recording {
        source: "sines".into(),
        start_ns: 0,
        step_ns: 60_000_000_000,
        channels: vec!["a".into(), "b".into(), "c".into()],
        observed: vec![vec![true; len]; 3],
        values,
    }
}

#[test]
fn pretraining_lowers_the_validation_loss() {
    let device = Device::flex().autodiff();
    let raw = sines(2000, 1);
    let rec = doppel_model::data::Normalizer::fit(std::slice::from_ref(&raw), None).apply(&raw);
    let config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
    let train = TrainConfig {
        steps: 300,
        batch_size: 16,
        eval_every: 20,
        warmup_steps: 10,
        ..TrainConfig::default()
    };
    let started = std::time::Instant::now();
    let (_model, curve) = pretrain(&[rec], &config, &train, &device, |_| {}).unwrap();
    eprintln!("{:?} in {:?}", curve, started.elapsed());
    let first = curve.first().unwrap().validation_loss;
    let last = curve.last().unwrap().validation_loss;
    assert!(last < 0.5 * first, "validation loss {first} -> {last}");
}
