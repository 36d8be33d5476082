//! The sensor model against its promises: it learns, its loss looks only at hidden observed
//! values, it reloads exactly, it forecasts a known pattern better than seasonal naive, and it
//! rebuilds a whole missing channel from its correlated neighbours.

use std::sync::OnceLock;

use burn::prelude::*;
use doppel_model::batch::{Mask, Window, make_batch};
use doppel_model::card::ModelCard;
use doppel_model::data::Normalizer;
use doppel_model::finetune::{ForecastTuning, finetune_forecast};
use doppel_model::forecaster::{ForecastHead, Forecaster, predict};
use doppel_model::linear::{self, Layout, Search, Series};
use doppel_model::model::{ModelConfig, SensorModel, masked_mse};
use doppel_model::store;
use doppel_model::tasks::{self, FollowDrift};
use doppel_model::train::{CurvePoint, TrainConfig, cut, pretrain};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

mod common;
use common::{
    assert_forecasts_are_linear, forecast_against_seasonal_naive, pretrained_on,
    pretrained_on_sines, serial, sines, standardised_sines, train_config,
};

struct Trained {
    model: SensorModel,
    card: ModelCard,
    curve: Vec<CurvePoint>,
}

/// One model trained once for all the tests that need one.
fn trained() -> &'static Trained {
    static MODEL: OnceLock<Trained> = OnceLock::new();
    MODEL.get_or_init(|| {
        let config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
        let (model, card) = pretrained_on_sines(config, train_config(600, 3), 1);
        Trained {
            curve: card.curve.clone(),
            model,
            card,
        }
    })
}

#[test]
fn pretraining_lowers_the_validation_loss() {
    let _serial = serial();
    let curve = &trained().curve;
    let first = curve.first().unwrap().validation_loss;
    let last = curve.last().unwrap().validation_loss;
    assert!(
        last < 0.3 * first,
        "validation loss {first} -> {last}: {curve:?}"
    );
}

#[test]
fn pretraining_on_one_channel_a_window_learns_every_channel() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let raw = sines(3000, 1);
    let normalizer = Normalizer::fit(std::slice::from_ref(&raw), 1.0);
    let config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
    let train = TrainConfig {
        channel_independent: true,
        batch_size: 48,
        ..train_config(600, 3)
    };
    let (model, curve) =
        pretrain(&[normalizer.apply(&raw)], &config, &train, &device, |_| {}).unwrap();
    let (first, last) = (
        curve[0].validation_loss,
        curve.last().unwrap().validation_loss,
    );
    assert!(last < 0.5 * first, "validation loss {first} -> {last}");
    // Each channel alone, with two patches in its middle hidden, is rebuilt well under its
    // mean's error (1.0), over eight windows. Over ten seeds (DOPPEL_TEST_SEED=0..9) a
    // channel's ratio ran from 0.12 to 0.68 and the mean of the three from 0.24 to 0.56: the
    // bars sit above both with room (one window after 300 steps, as this test once was,
    // moved by 3× between seeds).
    let model = model.valid();
    let data = normalizer.apply(&sines(400, 8));
    let plain = Device::flex();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(0));
    let mut ratios = [0f32; 3];
    for (c, ratio) in ratios.iter_mut().enumerate() {
        let windows: Vec<_> = (0..8)
            .map(|i| cut(&data, 20 + 37 * i, config.window(), &[c]))
            .collect();
        assert_eq!(windows[0].channels, vec![c]);
        assert_eq!(windows[0].values, data.values[c][20..68].to_vec());
        let batch = make_batch(&windows, &config, &Mask::Block(2, 4), &mut rng, &plain);
        let output = model.forward(&batch.tokens);
        let error =
            masked_mse(output, batch.target.clone(), batch.weight.clone()).into_scalar::<f32>();
        let spread =
            masked_mse(batch.target.zeros_like(), batch.target, batch.weight).into_scalar::<f32>();
        *ratio = error / spread;
    }
    eprintln!("measured: one channel a window, error over spread {ratios:?}");
    let mean = ratios.iter().sum::<f32>() / 3.0;
    assert!(ratios.iter().all(|&r| r < 0.8) && mean < 0.7, "{ratios:?}");
}

#[test]
fn the_loss_ignores_what_the_encoder_saw_and_what_was_never_observed() {
    let _serial = serial();
    let device = Device::flex();
    let config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
    let model = config.init_seeded(common::seed(0), &device);
    let rec = standardised_sines(200, 2);
    for seed in 0..20u64 {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(seed));
        let start = rng.random_range(0..100);
        let mut window = doppel_model::train::cut(&rec, start, 48, &[0, 1, 2]);
        // Some values were never observed.
        for i in 0..window.observed.len() {
            if rng.random::<f64>() < 0.1 {
                window.observed[i] = false;
            }
        }
        let batch = make_batch(
            std::slice::from_ref(&window),
            &config,
            &Mask::Random(0.8),
            &mut Xoshiro256PlusPlus::seed_from_u64(common::seed(seed)),
            &device,
        );
        let prediction = model.forward(&batch.tokens);
        let loss = masked_mse(
            prediction.clone(),
            batch.target.clone(),
            batch.weight.clone(),
        );
        // Change every target value that has weight 0: the loss must not move.
        let dims = batch.target.dims();
        let noise: Vec<f32> = (0..dims.iter().product::<usize>())
            .map(|_| 5.0 * (rng.random::<f32>() - 0.5))
            .collect();
        let noise = Tensor::<3>::from_data(TensorData::new(noise, dims), &device);
        let unweighted = batch.weight.clone().equal_elem(0.0).float();
        let changed = batch.target.clone() + noise * unweighted;
        let loss2 = masked_mse(prediction, changed, batch.weight.clone());
        let (a, b) = (loss.into_scalar::<f32>(), loss2.into_scalar::<f32>());
        assert_eq!(a, b, "seed {seed}");
        // And something is scored: hidden, observed values exist.
        assert!(batch.weight.sum().into_scalar::<f32>() > 0.0);
    }
}

#[test]
fn the_same_seed_trains_the_same_weights_and_a_reload_gives_identical_outputs() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let raw = sines(600, 4);
    let rec = Normalizer::fit(std::slice::from_ref(&raw), 1.0).apply(&raw);
    let config = ModelConfig::sized("tiny", 3, 8, 4).unwrap();
    let run = || {
        pretrain(
            std::slice::from_ref(&rec),
            &config,
            &train_config(30, 9),
            &device,
            |_| {},
        )
        .unwrap()
    };
    let (m1, c1) = run();
    let (m2, c2) = run();
    assert_eq!(c1, c2, "same seed, same curve");
    let infer = Device::flex();
    let window: Window = doppel_model::train::cut(&rec, 10, 32, &[0, 1, 2]);
    let batch = make_batch(
        &[window],
        &config,
        &Mask::Random(0.8),
        &mut Xoshiro256PlusPlus::seed_from_u64(common::seed(1)),
        &infer,
    );
    let out = |m: &SensorModel| {
        m.forward(&batch.tokens)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    let (m1, m2) = (m1.valid(), m2.valid());
    assert_eq!(out(&m1), out(&m2));

    let dir = tempfile::tempdir().unwrap();
    let card = ModelCard::new(
        config.clone(),
        Normalizer::fit(std::slice::from_ref(&raw), 1.0),
        raw.step_ns,
        m1.num_params(),
        vec![],
        train_config(30, 9),
        c1,
    );
    store::save(dir.path(), &m1, &card).unwrap();
    let (loaded, loaded_card) = store::load(dir.path(), &infer).unwrap();
    assert_eq!(loaded_card, card);
    assert_eq!(out(&loaded), out(&m1));
    let e = store::load(&dir.path().join("nothing"), &infer)
        .unwrap_err()
        .to_string();
    assert!(e.contains("model.json"), "{e}");
}

#[test]
fn it_forecasts_a_known_pattern_far_better_than_seasonal_naive() {
    let _serial = serial();
    let t = trained();
    let (model_mse, naive_mse) = forecast_against_seasonal_naive(&t.model, &t.card);
    // A day's lag misses the 7-step sine. Over ten seeds (DOPPEL_TEST_SEED=0..9) the model
    // scored 0.34× to 0.64× seasonal naive's MSE.
    eprintln!("measured: forecast {model_mse} vs seasonal naive {naive_mse}");
    assert!(
        model_mse < 0.75 * naive_mse,
        "model {model_mse} vs seasonal naive {naive_mse}"
    );
}

#[test]
fn a_channel_missing_whole_is_rebuilt_from_its_correlated_neighbours() {
    let _serial = serial();
    let t = trained();
    let device = Device::flex();
    let mut rec = sines(3400, 1);
    let truth = rec.values[1].clone();
    rec.observed[1] = vec![false; rec.len()];
    let (filled, was_filled) = tasks::impute(&t.model, &t.card, &rec, &device).unwrap();
    assert!(was_filled[1].iter().all(|&x| x) && !was_filled[0].iter().any(|&x| x));
    let sd = t.card.normalizer.std[1] as f64;
    let mse: f64 = truth
        .iter()
        .zip(&filled.values[1])
        .map(|(a, b)| ((*a as f64 - *b as f64) / sd).powi(2))
        .sum::<f64>()
        / truth.len() as f64;
    // The channel's own mean would score 1.0; pretraining only ever hid random patches. Over
    // ten seeds (DOPPEL_TEST_SEED=0..9) the rebuilt channel scored 0.21 to 0.34.
    eprintln!("measured: rebuilt channel MSE {mse}");
    assert!(mse < 0.45, "standardised MSE of the rebuilt channel: {mse}");
    assert_eq!(
        filled.values[0], rec.values[0],
        "observed values are kept as they are"
    );
}

/// Channel `c` of fresh sines left out whole and rebuilt from the others: standardised MSE
/// (the channel's own mean scores about 1.0).
fn rebuilt_whole(model: &SensorModel, card: &ModelCard, c: usize) -> f64 {
    let mut rec = sines(3400, 11);
    let truth = rec.values[c].clone();
    rec.observed[c] = vec![false; rec.len()];
    let (filled, _) = tasks::impute(model, card, &rec, &Device::flex()).unwrap();
    let sd = card.normalizer.std[c] as f64;
    truth
        .iter()
        .zip(&filled.values[c])
        .map(|(a, b)| ((*a as f64 - *b as f64) / sd).powi(2))
        .sum::<f64>()
        / truth.len() as f64
}

/// Batches that hide one whole channel, the others shown, teach the dead-sensor task. On
/// these sines channel c (a day's cosine) is tied to a's daily sine a quarter-period apart:
/// a model that saw such batches rebuilds c far better than the suite's model, the same
/// but for them (same seed, steps and data). Over ten seeds (DOPPEL_TEST_SEED=0..9):
/// 0.010-0.040 against 0.049-0.181, 0.36× at worst. Both miss a and b's 7-step sine, a
/// fifth of their variance: neither rebuilds a or b better than 0.2.
#[test]
fn batches_that_hide_a_whole_channel_teach_the_model_to_rebuild_one() {
    let _serial = serial();
    let mut config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
    config.channel_mask_share = 0.25;
    let (model, card) = pretrained_on_sines(config, train_config(600, 3), 1);
    let with = rebuilt_whole(&model, &card, 2);
    let without = rebuilt_whole(&trained().model, &trained().card, 2);
    eprintln!("measured: channel c rebuilt {with} with channel masks, {without} without");
    assert!(
        with < 0.6 * without && with < 0.08,
        "channel c rebuilt at MSE {with} with channel masks, {without} without"
    );
}

/// The channel read-out answers a hidden value from the other channels at the same step:
/// the point-level tie one channel a token does not carry. b = 2a + 3, so b left out whole is
/// a's exact echo, which the network alone misses (a's 7-step sine, MSE 0.2); the read-out
/// starts at least squares on a and c and leaves b's answer to it. c, a quarter-period
/// from a, is barely read by the others (its fit explains 3 % of it, so the network keeps
/// 97 % of its answer), and is rebuilt about as well as without a read-out. Over ten seeds
/// (DOPPEL_TEST_SEED=0..9): b 0.00040-0.00044 with it against 0.205-0.219 without (the
/// noise's share); c 0.006-0.047 with, 0.010-0.040 without.
#[test]
fn the_channel_read_out_rebuilds_a_channel_from_the_others_at_the_same_step() {
    let _serial = serial();
    let rebuilt = |readout: bool| {
        let mut config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
        config.channel_mask_share = 0.25;
        config.channel_readout = readout;
        let (model, card) = pretrained_on_sines(config, train_config(600, 3), 1);
        let b = rebuilt_whole(&model, &card, 1);
        // The read-out's start and what training added to it are saved and come back.
        let dir = tempfile::tempdir().unwrap();
        store::save(dir.path(), &model, &card).unwrap();
        let (reloaded, card) = store::load(dir.path(), &Device::flex()).unwrap();
        assert_eq!(
            rebuilt_whole(&reloaded, &card, 1),
            b,
            "a reload rebuilds b identically"
        );
        (b, rebuilt_whole(&model, &card, 2))
    };
    let ((b, c), (b_alone, c_alone)) = (rebuilt(true), rebuilt(false));
    eprintln!(
        "measured: b rebuilt {b} with the read-out, {b_alone} without; c {c} with, {c_alone} without"
    );
    assert!(
        b < 0.01,
        "b rebuilt at MSE {b} with the read-out, {b_alone} without"
    );
    assert!(
        c < 0.1,
        "c rebuilt at MSE {c} with the read-out, {c_alone} without"
    );
}

#[test]
fn an_anomaly_is_flagged_and_blamed_on_the_right_sensor() {
    let _serial = serial();
    let t = trained();
    let device = Device::flex();
    let mut rec = sines(3400, 1);
    // Sensor b leaves its relation with a for 40 steps.
    for i in 3000..3040 {
        rec.values[1][i] += 3.0;
    }
    let s = tasks::score(&t.model, &t.card, &rec, 2000, &device).unwrap();
    let inside = (3000..3040).filter(|&i| s.flag[i]).count();
    let outside = (2000..2900).filter(|&i| s.flag[i]).count();
    // Over ten seeds (DOPPEL_TEST_SEED=0..9): 23 to 39 of the 40 flagged, 2 to 5 of the
    // 900 normal steps. Each hidden patch of b is rebuilt partly from b's own shown patches,
    // shifted too, so how much of the shift surprises the model depends on how far it
    // leans on a and c; what holds on every seed is most of it, against a handful outside.
    eprintln!("measured: anomaly flags inside {inside}/40, outside {outside}/900");
    assert!(inside >= 20, "{inside}/40 anomalous steps flagged");
    assert!(outside <= 15, "{outside}/900 normal steps flagged");
    for i in 3000..3040 {
        let sum: f32 = (0..3).map(|c| s.contribution[c][i]).sum();
        assert!((sum - s.score[i]).abs() < 1e-3 * s.score[i].max(1.0));
    }
    let blamed = (0..3).max_by(|&a, &b| {
        let total = |c: usize| (3000..3040).map(|i| s.contribution[c][i]).sum::<f32>();
        total(a).total_cmp(&total(b))
    });
    assert_eq!(blamed, Some(1), "sensor b drives the flags");
}

#[test]
fn embeddings_cover_the_windows_and_repeat_exactly() {
    let _serial = serial();
    let t = trained();
    let device = Device::flex();
    let rec = sines(500, 5);
    let e = tasks::embed(&t.model, &t.card, &rec, 24, &device).unwrap();
    assert_eq!(e.len(), (500 - 48) / 24 + 1);
    assert_eq!((e[1].0, e[1].1), (24, 71));
    assert!(
        e.iter()
            .all(|(_, _, v)| v.len() == 2 * t.card.config.d_model)
    );
    assert_eq!(
        tasks::embedding_width(&t.card.config),
        2 * t.card.config.d_model
    );
    assert_eq!(
        e,
        tasks::embed(&t.model, &t.card, &rec, 24, &device).unwrap()
    );
    // Windows a whole period apart look alike; half a period apart, less so.
    let dist = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f32>();
    let same_phase = dist(&e[0].2, &e[7].2); // 168 steps apart: a multiple of 24 and 7
    let other_phase = dist(&e[0].2, &e[1].2);
    assert!(same_phase < other_phase, "{same_phase} vs {other_phase}");
}

#[test]
fn a_model_pretrained_with_point_masks_fills_scattered_points_from_their_own_patch() {
    let _serial = serial();
    let mut config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
    config.point_mask_ratio = 0.25;
    let (model, card) = pretrained_on_sines(config, train_config(800, 5), 6);
    let mut rec = sines(600, 7);
    let truth = rec.values.clone();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(8));
    for c in 0..3 {
        for t in 0..600 {
            if rng.random::<f64>() < 0.2 {
                rec.observed[c][t] = false;
            }
        }
    }
    let mse = |model: &SensorModel, card: &ModelCard| {
        let (filled, _) = tasks::impute(model, card, &rec, &Device::flex()).unwrap();
        let (mut se, mut n) = (0.0f64, 0);
        for (c, true_values) in truth.iter().enumerate() {
            let sd = card.normalizer.std[c] as f64;
            for (t, &y) in true_values.iter().enumerate() {
                if !rec.observed[c][t] {
                    se += ((filled.values[c][t] - y) as f64 / sd).powi(2);
                    n += 1;
                }
            }
        }
        se / n as f64
    };
    // Against the same model, seed and steps without point masks in pretraining (so it can
    // only hide whole patches, and fills a patch with a gap from the others). On these
    // sines both fill scattered points well; over ten seeds (DOPPEL_TEST_SEED=0..9) the
    // point-mask model scored 0.18 to 0.29, 0.37× to 1.29× the other: better on six, level
    // on one, worse on three, not a margin a test can hold. Its gain is measured where it matters, on ETT's imputation
    // (docs/BENCHMARKS.md); here it must fill well and no worse than by chance.
    let with_points = mse(&model, &card);
    let (plain, plain_card) = pretrained_on_sines(
        ModelConfig::sized("tiny", 3, 8, 6).unwrap(),
        train_config(800, 5),
        6,
    );
    let whole_patches = mse(&plain, &plain_card);
    eprintln!("measured: point masks {with_points} vs whole patches {whole_patches}");
    assert!(
        with_points < 1.6 * whole_patches && with_points < 0.4,
        "scattered points: {with_points} with point-mask pretraining vs {whole_patches} hiding whole patches"
    );
}

/// Over an interpolation prior the head starts at zero, so before any training the model
/// answers exactly what linear interpolation answers (and training can only learn from
/// there); the gaps' neighbours, not the window's mean, decide the filled values.
#[test]
fn an_untrained_model_over_the_interpolation_prior_imputes_by_interpolation() {
    let _serial = serial();
    let device = Device::flex();
    let raw = sines(48, 3);
    // The cross-channel prior's map starts at zero too.
    for cross_channel_prior in [false, true] {
        let mut config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
        config.interpolation_prior = true;
        config.point_mask_ratio = 0.25;
        config.instance_norm = true;
        config.cross_channel_prior = cross_channel_prior;
        let model = config.init_seeded(common::seed(1), &device);
        let card = ModelCard::new(
            config,
            Normalizer::fit(std::slice::from_ref(&raw), 1.0),
            raw.step_ns,
            model.num_params(),
            vec![],
            train_config(1, 0),
            vec![],
        );
        let mut rec = raw.clone();
        let hidden: Vec<(usize, usize)> = vec![(0, 0), (0, 5), (0, 6), (1, 20), (2, 40), (2, 47)];
        for &(c, t) in &hidden {
            rec.observed[c][t] = false;
        }
        let (filled, was_filled) = tasks::impute(&model, &card, &rec, &device).unwrap();
        let v = |c: usize, t: usize| raw.values[c][t];
        let expected = [
            v(0, 1),                             // before the first known value: held
            v(0, 4) + (v(0, 7) - v(0, 4)) / 3.0, // a line across two gaps
            v(0, 4) + 2.0 * (v(0, 7) - v(0, 4)) / 3.0,
            (v(1, 19) + v(1, 21)) / 2.0,
            (v(2, 39) + v(2, 41)) / 2.0,
            v(2, 46), // after the last known value: held
        ];
        for (&(c, t), want) in hidden.iter().zip(expected) {
            assert!(was_filled[c][t]);
            let got = filled.values[c][t];
            assert!(
                (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                "channel {c}, step {t}: {got} instead of {want} (cross-channel prior: {cross_channel_prior})"
            );
        }
    }
}

#[test]
fn a_finetuned_forecaster_keeps_its_best_weights_reloads_exactly_and_its_bands_cover() {
    let _serial = serial();
    let t = trained();
    let dir = tempfile::tempdir().unwrap();
    store::save(&dir.path().join("pre"), &t.model, &t.card).unwrap();
    let device = Device::flex().autodiff();
    let (model, mut card) = store::load(&dir.path().join("pre"), &device).unwrap();
    let data = card.normalizer.apply(&sines(3000, 1));
    let tuning = ForecastTuning {
        horizon: 16,
        channel_independent: true,
        // One weight matrix per channel: the path that picks each series' own weights,
        // through saving and reloading.
        linear: Search {
            ridges: vec![1.0, 100.0],
            layouts: vec![Layout::PerChannel],
        },
        freeze_encoder: false,
        dropout: 0.0,
        loss: Default::default(),
        band_coverage: doppel_model::bands::DEFAULT_COVERAGE,
    };
    let (forecaster, head) = finetune_forecast(
        model,
        &card.config,
        &[data],
        &tuning,
        &train_config(100, 5),
        &device,
        |_| {},
    )
    .unwrap();
    assert_eq!(head.curve.len(), 2);
    // The weights kept are the linear start's or a step's, and never worse than the start.
    assert!(head.validation_mse <= head.linear_validation_mse);
    if head.best_step == 0 {
        assert_eq!(head.validation_mse, head.linear_validation_mse);
    } else {
        let kept = head
            .curve
            .iter()
            .find(|p| p.step == head.best_step)
            .unwrap();
        assert_eq!(head.validation_mse, kept.validation_loss);
    }
    assert_eq!(head.bands.len(), 3);
    let start = head
        .linear_start
        .as_ref()
        .expect("the card keeps the linear start");
    assert_eq!((start.layout, start.lookback), (Layout::PerChannel, 48));

    card.forecast_head = Some(head);
    store::save_forecaster(&dir.path().join("ft"), &forecaster.valid(), &card).unwrap();
    let plain = Device::flex();
    let (reloaded, card) = store::load_forecaster(&dir.path().join("ft"), &plain).unwrap();

    // Fresh data from the same process: the 80 % band holds about 80 % of what follows.
    let test = sines(3400, 9);
    let (mut inside, mut total) = (0, 0);
    for end in (3000..3380).step_by(13) {
        let mut context = test.clone();
        for c in 0..3 {
            context.values[c].truncate(end);
            context.observed[c].truncate(end);
        }
        let f = tasks::forecast_with_head(&reloaded, &card, &context, 16, FollowDrift::NOT, &plain)
            .unwrap();
        if end == 3000 {
            let again = tasks::forecast_with_head(
                &forecaster.valid(),
                &card,
                &context,
                16,
                FollowDrift::NOT,
                &plain,
            )
            .unwrap();
            assert_eq!(f, again, "a reload forecasts identically");
        }
        let (low, high) = (&f.bands[0], &f.bands[2]);
        assert_eq!((low.0, high.0), (0.1, 0.9));
        for c in 0..3 {
            for h in 0..16 {
                let y = test.values[c][end + h];
                inside += usize::from(low.1[c][h] <= y && y <= high.1[c][h]);
                total += 1;
            }
        }
    }
    let coverage = inside as f64 / total as f64;
    eprintln!("80 % band coverage on fresh data: {coverage:.3}");
    assert!(
        (0.6..=0.95).contains(&coverage),
        "80 % band covered {coverage:.2}"
    );
    // Recalibrated on the file's own last 400 steps, or adapted over them, or both: about as
    // wide where the recent data are like the validation windows, wider where they have
    // turned noisier.
    let rules = [(Some(400), None), (None, Some(400)), (Some(400), Some(400))]
        .map(|(recalibrate, adapt)| FollowDrift { recalibrate, adapt });
    let mut context = test.clone();
    for c in 0..3 {
        context.values[c].truncate(3000);
        context.observed[c].truncate(3000);
    }
    let width = |f: &tasks::Forecast, c: usize| f.bands[2].1[c][0] - f.bands[0].1[c][0];
    let plain_bands =
        tasks::forecast_with_head(&reloaded, &card, &context, 16, FollowDrift::NOT, &plain)
            .unwrap();
    let like = rules.map(|rule| {
        let like = tasks::forecast_with_head(&reloaded, &card, &context, 16, rule, &plain).unwrap();
        let factors = like.width_factors.clone().unwrap();
        assert!(
            factors.iter().all(|f| (0.6..1.6).contains(f)),
            "{rule:?}: {factors:?}"
        );
        assert_eq!(
            like.values, plain_bands.values,
            "following drift moves the bands only"
        );
        factors
    });
    for c in 0..3 {
        let sd = {
            let v = &context.values[c];
            let mean = v.iter().sum::<f32>() / v.len() as f32;
            (v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32).sqrt()
        };
        for i in 2500..3000 {
            context.values[c][i] += if i % 2 == 0 { 0.3 * sd } else { -0.3 * sd };
        }
    }
    for (rule, like) in rules.iter().zip(&like) {
        let noisy =
            tasks::forecast_with_head(&reloaded, &card, &context, 16, *rule, &plain).unwrap();
        let factors = noisy.width_factors.clone().unwrap();
        for c in 0..3 {
            assert!(factors[c] > 2.0 * like[c], "{rule:?}: {factors:?}");
            assert!(width(&noisy, c) > 1.5 * width(&plain_bands, c));
        }
    }
    let mut tiny = context.clone();
    for c in 0..3 {
        tiny.values[c].truncate(60);
        tiny.observed[c].truncate(60);
    }
    let e = tasks::forecast_with_head(&reloaded, &card, &tiny, 16, rules[1], &plain).unwrap_err();
    assert!(
        e.to_string().contains("bands that follow drift need"),
        "{e}"
    );
    // The card keeps each scale's validation score and the per-channel choice, and
    // `evaluate` measures the bands forecasts use (then the constant ones) over every window.
    let head = card.forecast_head.as_ref().unwrap();
    let names: Vec<&str> = head.band_scores.iter().map(|s| s.bands.as_str()).collect();
    assert_eq!(names, ["constant", "spread", "steps", "per channel"]);
    let evaluation = doppel_model::evaluate::evaluate_forecaster(
        &reloaded,
        &card.config,
        head,
        &[card.normalizer.apply(&test)],
        7,
        Some(700),
        &plain,
    )
    .unwrap();
    let chosen = &evaluation.bands[0];
    assert_eq!(chosen.bands, head.chosen_bands().name());
    let names: Vec<&str> = evaluation.bands.iter().map(|b| b.bands.as_str()).collect();
    let mut expected = vec![chosen.bands.clone()];
    if chosen.bands != "constant" {
        expected.push("constant".into());
    }
    for rule in ["recalibrated", "adapted", "recalibrated, adapted"] {
        expected.push(format!("{}, {rule}", chosen.bands));
    }
    assert_eq!(names, expected);
    for band in &evaluation.bands {
        eprintln!("evaluate: {band}");
        assert!((0.6..=0.95).contains(&band.coverage), "{band}");
        assert!((band.coverage + band.below + band.above - 1.0).abs() < 1e-9);
        assert!(band.interval_score >= band.width, "{band}");
    }
    let e = tasks::forecast_with_head(&reloaded, &card, &test, 17, FollowDrift::NOT, &plain)
        .unwrap_err();
    assert!(e.to_string().contains("fine-tuned for 16"), "{e}");
}

#[test]
fn a_fresh_head_forecasts_exactly_as_its_linear_start_channel_by_channel() {
    let _serial = serial();
    let t = trained();
    let device = Device::flex();
    let config = &t.card.config;
    let (w, h) = (config.window(), 12);
    let data = t.card.normalizer.apply(&sines(2000, 4));
    // Channel 2 differs from 0 and 1: per-channel weights differ, so a series that read
    // another channel's weights would forecast differently.
    let series: Vec<Series> = (0..3)
        .map(|channel| Series {
            channel,
            values: &data.values[channel],
            cut: 1500,
        })
        .collect();
    let search = Search {
        ridges: vec![1.0],
        layouts: vec![Layout::PerChannel],
    };
    let (linear, _) = linear::choose(&series, 3, &[w], h, &search).unwrap();
    let forecaster = Forecaster {
        model: t.model.clone(),
        head: ForecastHead::new(config, &linear, &device),
    };
    let ids = [0, 1, 2];
    let starts = [1500, 1613, 1777];
    let windows: Vec<_> = starts.iter().map(|&s| cut(&data, s, w, &ids)).collect();
    for together in [false, true] {
        let predicted = predict(&forecaster, config, !together, &windows, &device);
        assert_forecasts_are_linear(&predicted, &linear, &data, &starts);
    }
}

#[test]
fn batched_embeddings_equal_one_window_at_a_time_even_with_gaps() {
    let _serial = serial();
    let t = trained();
    let device = Device::flex();
    let mut rec = sines(400, 6);
    for step in (5..400).step_by(37) {
        rec.observed[step % 3][step] = false; // scattered gaps: windows differ in gap counts
    }
    let w = t.card.config.window();
    let all = tasks::embed(&t.model, &t.card, &rec, 16, &device).unwrap();
    assert_eq!(all.len(), (400 - w) / 16 + 1);
    for (first, last, vector) in all.iter().step_by(5) {
        let mut alone = rec.clone();
        for c in 0..3 {
            alone.values[c] = rec.values[c][*first..=*last].to_vec();
            alone.observed[c] = rec.observed[c][*first..=*last].to_vec();
        }
        let single = tasks::embed(&t.model, &t.card, &alone, 1, &device).unwrap();
        assert_eq!(single.len(), 1);
        let worst = vector
            .iter()
            .zip(&single[0].2)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "window at {first}: differs by {worst}");
    }
}

#[test]
fn dropout_changes_training_passes_only_and_keeps_the_weights_loadable() {
    let _serial = serial();
    let train_device = Device::flex().autodiff();
    // Only forward passes are compared: raw values serve as well as standardised ones.
    let rec = sines(300, 5);
    let config = ModelConfig::sized("tiny", 3, 8, 4).unwrap();
    let dropping = ModelConfig {
        dropout: 0.5,
        ..config.clone()
    };
    let plain = config.init_seeded(common::seed(3), &train_device);
    // The same weights in blocks that drop out (how a fine-tune adds dropout).
    let model = dropping
        .init(&train_device)
        .load_record(plain.clone().into_record());
    let window: Window = doppel_model::train::cut(&rec, 10, 32, &[0, 1, 2]);
    let out = |m: &SensorModel, device: &Device| {
        let batch = make_batch(
            std::slice::from_ref(&window),
            &config,
            &Mask::Random(0.5),
            &mut Xoshiro256PlusPlus::seed_from_u64(common::seed(1)),
            device,
        );
        m.forward(&batch.tokens)
            .into_data()
            .try_into_vec::<f32>()
            .unwrap()
    };
    assert_ne!(
        out(&model, &train_device),
        out(&model, &train_device),
        "training passes drop out"
    );
    let infer = Device::flex();
    assert_eq!(
        out(&model.valid(), &infer),
        out(&plain.valid(), &infer),
        "inference does not, and the weights are the pretrained ones"
    );
}

/// Sensors that move together point by point: `b` follows `a`'s every jitter, which `a`'s
/// own neighbours in time cannot predict. Over the interpolation prior, the cross-channel
/// prior learns that tie (`b`'s row of the map reads `a`) and fills scattered points of `b`
/// far better than the same model without it; it starts as plain interpolation and
/// reloads exactly.
#[test]
fn the_cross_channel_prior_fills_a_point_from_the_sensor_that_moves_with_it() {
    let _serial = serial();
    let jittery = |len: usize, seed: u64| {
        let mut rec = sines(len, seed);
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(seed + 100));
        for t in 0..len {
            let jitter = 0.6 * (rng.random::<f32>() - 0.5);
            rec.values[0][t] += jitter;
            rec.values[1][t] += 2.0 * jitter;
        }
        rec
    };
    let raw = jittery(3000, 1);
    let train = |cross_channel_prior: bool| {
        let mut config = ModelConfig::sized("tiny", 3, 8, 6).unwrap();
        config.mask_ratio = 0.0;
        config.point_mask_ratio = 0.3;
        config.interpolation_prior = true;
        config.instance_norm = true;
        config.cross_channel_prior = cross_channel_prior;
        // The map's entries are of order one and Adam moves a weight by about the learning
        // rate a step: 1e-3 would leave it far from there in a short run.
        let train = TrainConfig {
            learning_rate: 5e-3,
            ..train_config(300, 2)
        };
        pretrained_on(&raw, config, train)
    };
    let mut rec = jittery(400, 9);
    let truth = rec.values.clone();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(3));
    for t in 0..400 {
        if rng.random::<f64>() < 0.2 {
            rec.observed[1][t] = false;
        }
    }
    let device = Device::flex();
    let filled_b = |model: &SensorModel, card: &ModelCard| {
        tasks::impute(model, card, &rec, &device).unwrap().0.values[1].clone()
    };
    // In b's standardised units, as the cards (the same training data) keep them.
    let mse = |(model, card): (&SensorModel, &ModelCard)| {
        let filled = filled_b(model, card);
        let sd = card.normalizer.std[1] as f64;
        let errors: Vec<f64> = (0..400)
            .filter(|&t| !rec.observed[1][t])
            .map(|t| ((filled[t] - truth[1][t]) as f64 / sd).powi(2))
            .collect();
        errors.iter().sum::<f64>() / errors.len() as f64
    };
    let (with_map, with_card) = train(true);
    let (without_map, without_card) = train(false);
    let (with, without) = (
        mse((&with_map, &with_card)),
        mse((&without_map, &without_card)),
    );
    assert!(
        with < 0.7 * without,
        "b's scattered points: {with} with the cross-channel prior, {without} without"
    );

    let dir = tempfile::tempdir().unwrap();
    store::save(dir.path(), &with_map, &with_card).unwrap();
    let (loaded, loaded_card) = store::load(dir.path(), &device).unwrap();
    assert_eq!(
        filled_b(&loaded, &loaded_card),
        filled_b(&with_map, &with_card)
    );
}
