//! Checkpoints that resume: a pretraining stopped after a checkpoint and started again from it
//! ends with the same weights and curve as one that never stopped; a checkpoint of other
//! settings is refused; only the newest checkpoint's files are kept.

use burn::prelude::*;
use doppel_model::batch::{Mask, make_batch};
use doppel_model::model::{ModelConfig, SensorModel};
use doppel_model::train::checkpoint::{self, Checkpointing};
use doppel_model::train::{
    Pretrained, Progress, TrainConfig, cut, pretrain, pretrain_with_checkpoints,
};
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

/// What a model outputs on one fixed masked window of `rec`: equal outputs, equal weights.
fn outputs_on_one_window(
    rec: &doppel_model::data::Recording,
    config: &ModelConfig,
) -> impl Fn(SensorModel) -> Vec<f32> {
    let window = cut(rec, 10, config.window(), &[0, 1, 2]);
    let batch = make_batch(
        &[window],
        config,
        &Mask::Random(0.8),
        &mut Xoshiro256PlusPlus::seed_from_u64(common::seed(1)),
        &Device::flex(),
    );
    move |m: SensorModel| {
        m.valid()
            .forward(&batch.tokens)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    }
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
    let Pretrained {
        model: unbroken,
        curve,
        ..
    } = pretrain_with_checkpoints(recordings, &config, &train, Some(&writing), &device, |p| {
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
    let Pretrained {
        model: resumed,
        curve: resumed_curve,
        ..
    } = pretrain_with_checkpoints(
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
    let out = outputs_on_one_window(&rec, &config);
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
    assert!(
        e.contains("learning_rate: 0.001 → 0.0005"),
        "names what differs: {e}"
    );

    // Cleared once the model is written: the checkpoint files go, and so does the folder.
    checkpoint::clear(&dir).unwrap();
    assert!(!dir.exists());
}

/// The weights of the model `dir`'s checkpoint files hold after `step` steps.
fn weights_at(dir: &std::path::Path, step: usize, config: &ModelConfig) -> SensorModel {
    use burn::store::{BurnpackStore, ModuleSnapshot};
    let mut model = config.init_seeded(common::seed(0), &Device::flex().autodiff());
    let mut store =
        BurnpackStore::from_file(dir.join(format!("model-{step:08}.bpk"))).auto_extension(false);
    model.load_from(&mut store).unwrap();
    model
}

#[test]
fn keep_best_ends_with_the_weights_of_the_lowest_validation_loss_even_after_a_resume() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    // Noise that channels 1 and 2 copy in the training half and mirror in the validation
    // half: the better the model learns to copy, the worse it does on validation.
    let mut rec = standardised_sines(600, 4);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(5));
    for t in 0..600 {
        let w = rand::Rng::random::<f32>(&mut rng) * 3.4 - 1.7;
        let sign = if t < 300 { 1.0 } else { -1.0 };
        rec.values[0][t] = w;
        rec.values[1][t] = sign * w;
        rec.values[2][t] = sign * w;
    }
    let recordings = std::slice::from_ref(&rec);
    let config = ModelConfig::sized("tiny", 3, 8, 4).unwrap();
    let train = TrainConfig {
        eval_every: 10,
        learning_rate: 3e-3,
        validation_fraction: 0.5,
        keep_best: true,
        ..train_config(200, 3)
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("checkpoint");
    let snapshot = |step: usize| tmp.path().join(format!("at-{step}"));
    let writing = Checkpointing {
        dir: dir.clone(),
        every: 10,
        resume: false,
    };
    let Pretrained {
        model: best, curve, ..
    } = pretrain_with_checkpoints(recordings, &config, &train, Some(&writing), &device, |p| {
        if p.step % 10 == 0 && p.step < 200 {
            copy_dir(&dir, &snapshot(p.step));
        }
    })
    .unwrap();
    let kept = doppel_model::train::kept_point(&train, &curve).unwrap();
    assert!(kept.step < 150, "the loss rose at the end: {curve:?}");
    assert!(
        curve
            .iter()
            .all(|p| p.validation_loss >= kept.validation_loss)
    );
    assert!(
        curve
            .iter()
            .any(|p| p.validation_loss > kept.validation_loss)
    );

    let out = outputs_on_one_window(&rec, &config);
    let best_out = out(best);
    assert_eq!(
        best_out,
        out(weights_at(&snapshot(kept.step), kept.step, &config)),
        "the weights of step {}",
        kept.step
    );
    let (last, last_curve) = pretrain(
        recordings,
        &config,
        &TrainConfig {
            keep_best: false,
            ..train.clone()
        },
        &device,
        |_| {},
    )
    .unwrap();
    assert_eq!(last_curve, curve, "keeping the best changes no step");
    assert_ne!(out(last), best_out, "the last step's weights are others");

    // Stopped after the best and resumed: the best comes back from the checkpoint.
    let resume_at = kept.step + 30;
    let resuming = Checkpointing {
        dir: snapshot(resume_at),
        every: 10,
        resume: true,
    };
    let Pretrained { model: resumed, .. } = pretrain_with_checkpoints(
        recordings,
        &config,
        &train,
        Some(&resuming),
        &device,
        |_| {},
    )
    .unwrap();
    assert_eq!(
        out(resumed),
        best_out,
        "the best read back at step {resume_at}"
    );
}
