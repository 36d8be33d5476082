//! Checkpoints that resume: a pretraining stopped after a checkpoint and started again from it
//! ends with the same weights and curve as one that never stopped; a checkpoint of other
//! settings is refused; only the newest checkpoint's files are kept.

use burn::prelude::*;
use doppel_model::batch::{Mask, make_batch};
use doppel_model::checkpoint::{self, Checkpointing};
use doppel_model::model::{ModelConfig, SensorModel};
use doppel_model::train::{Progress, TrainConfig, cut, pretrain, pretrain_with_checkpoints};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

mod common;
use common::{serial, standardised_sines, train_config};

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn file_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_run_resumed_from_a_checkpoint_ends_with_the_weights_of_an_unbroken_run() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let rec = standardised_sines(600, 4);
    let recordings = std::slice::from_ref(&rec);
    let config = ModelConfig::sized("tiny", 3, 8, 4).unwrap();
    let train = TrainConfig {
        eval_every: 10,
        ..train_config(40, 9)
    };
    let tmp = tempfile::tempdir().unwrap();
    let (dir, snapshot) = (tmp.path().join("checkpoint"), tmp.path().join("at-20"));
    let writing = Checkpointing {
        dir: dir.clone(),
        every: 10,
        resume: false,
    };

    // The unbroken run, writing checkpoints; the one of step 20 is copied as it stood.
    let (unbroken, curve) =
        pretrain_with_checkpoints(recordings, &config, &train, Some(&writing), &device, |p| {
            if p.step == 20 {
                copy_dir(&dir, &snapshot);
            }
        })
        .unwrap();
    assert_eq!(curve.len(), 4);
    // One set of files: the last checkpoint (step 30; none is written at the end).
    assert_eq!(
        file_names(&dir),
        [
            "checkpoint.json",
            "model-00000030.bpk",
            "optimizer-00000030.bpk"
        ]
    );
    assert_eq!(
        file_names(&snapshot),
        [
            "checkpoint.json",
            "model-00000020.bpk",
            "optimizer-00000020.bpk"
        ]
    );

    // Stopped there and started again: it goes on at step 21 and ends where the first did.
    let resuming = Checkpointing {
        dir: snapshot.clone(),
        every: 10,
        resume: true,
    };
    let mut steps = Vec::new();
    let (resumed, resumed_curve) = pretrain_with_checkpoints(
        recordings,
        &config,
        &train,
        Some(&resuming),
        &device,
        |p: &Progress| steps.push(p.step),
    )
    .unwrap();
    assert_eq!(steps, (21..=40).collect::<Vec<_>>());
    assert_eq!(
        resumed_curve, curve,
        "the same curve, the first half read back"
    );
    let window = cut(&rec, 10, config.window(), &[0, 1, 2]);
    let infer = Device::flex();
    let batch = make_batch(
        &[window],
        &config,
        &Mask::Random(0.8),
        &mut Xoshiro256PlusPlus::seed_from_u64(1),
        &infer,
    );
    let out = |m: SensorModel| {
        m.valid()
            .forward(&batch.tokens)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (unbroken_out, resumed_out) = (out(unbroken), out(resumed));
    assert_eq!(unbroken_out, resumed_out, "the same weights");
    // Not a vacuous check: a run that stopped at step 20 has other weights.
    let (short, _) = pretrain(recordings, &config, &train_config(20, 9), &device, |_| {}).unwrap();
    assert_ne!(out(short), unbroken_out);

    // A checkpoint of other settings is refused, not silently continued.
    let other = TrainConfig {
        learning_rate: 5e-4,
        ..train.clone()
    };
    let e = pretrain_with_checkpoints(
        recordings,
        &config,
        &other,
        Some(&resuming),
        &device,
        |_| {},
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("other settings"), "{e}");

    // Cleared once the model is written: the checkpoint files go, and so does the folder.
    checkpoint::clear(&dir).unwrap();
    assert!(!dir.exists());
}
