//! LSM's 2-D patches: a token of K neighbouring channels × P steps. The batch builds such
//! tokens (a short last group padded with empty rows), the mask speaks per channel patch as
//! with 1-D tokens, and a model of 2-D tokens learns, forecasts, scores and reloads through
//! the same tasks, forecasting heads included. What needs one channel a window refuses
//! clearly.

use burn::prelude::*;
use doppel_model::batch::{Mask, make_batch};
use doppel_model::card::ModelCard;
use doppel_model::data::Normalizer;
use doppel_model::finetune::{ForecastTuning, finetune_forecast};
use doppel_model::forecaster::{ForecastHead, Forecaster, predict};
use doppel_model::linear::{self, Layout, Search, Series};
use doppel_model::model::ModelConfig;
use doppel_model::store;
use doppel_model::tasks;
use doppel_model::train::{TrainConfig, cut, pretrain};
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

mod common;
use common::{
    assert_forecasts_are_linear, forecast_against_seasonal_naive, pretrained_on_sines, serial,
    sines, standardised_sines, train_config,
};

fn two_d(k: usize) -> ModelConfig {
    ModelConfig {
        channels_per_token: k,
        ..ModelConfig::sized("tiny", 3, 8, 6).unwrap()
    }
}

#[test]
fn tokens_hold_k_channels_and_the_output_has_one_row_per_channel() {
    let _serial = serial();
    let device = Device::flex();
    let config = two_d(2); // channels {0, 1} and {2, padding}
    let (p, n) = (8, 6);
    let rec = standardised_sines(200, 2);
    let window = cut(&rec, 10, 48, &[0, 1, 2]);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(common::seed(3));
    let batch = make_batch(
        std::slice::from_ref(&window),
        &config,
        &Mask::Random(0.5),
        &mut rng,
        &device,
    );
    assert_eq!(batch.tokens.features.dims(), [1, 2 * n, 2 * 2 * p]);
    assert_eq!(batch.tokens.order.dims(), [1, 2 * n]);
    assert_eq!(batch.tokens.visible, n, "half of the 12 tokens are shown");
    assert_eq!(batch.target.dims(), [1, 3 * n, p]);
    let output = config
        .init_seeded(common::seed(0), &device)
        .forward(&batch.tokens);
    assert_eq!(output.dims(), [1, 3 * n, p]);

    // Channels 0 and 1 share their tokens, so they are hidden together.
    let hidden = &batch.hidden[0];
    for patch in 0..n {
        assert_eq!(hidden[patch], hidden[n + patch], "patch {patch}");
    }
    let order: Vec<i32> = batch.tokens.order.clone().into_data().try_to_vec().unwrap();
    let features: Vec<f32> = batch
        .tokens
        .features
        .clone()
        .into_data()
        .try_to_vec()
        .unwrap();
    let weight: Vec<f32> = batch.weight.clone().into_data().try_to_vec().unwrap();
    for &token in &order[..n] {
        let (g, patch) = (token as usize / n, token as usize % n);
        let row = |r: usize| &features[token as usize * 4 * p + r * p..][..p];
        // Shown tokens carry their channels' values (standardised, no instance norm) and
        // flags; the padding row of the last group is empty.
        for k in 0..2 {
            let ch = 2 * g + k;
            if ch < 3 {
                let expected = &window.values[ch * 48 + patch * p..][..p];
                assert_eq!(row(k), expected, "token {token} row {k}");
                assert!(row(2 + k).iter().all(|&f| f == 1.0));
                assert!(
                    weight[(ch * n + patch) * p..][..p]
                        .iter()
                        .all(|&x| x == 0.0)
                );
            } else {
                assert!(row(k).iter().chain(row(2 + k)).all(|&x| x == 0.0));
            }
        }
    }

    // A virtual sensor inside a token: channel 1's rows are withheld and scored, channel
    // 0's shown, and no token is hidden whole (each still shows channel 0 or 2).
    let batch = make_batch(
        &[window],
        &config,
        &Mask::Channels(vec![1]),
        &mut rng,
        &device,
    );
    assert_eq!(batch.tokens.visible, 2 * n);
    let features: Vec<f32> = batch.tokens.features.into_data().try_to_vec().unwrap();
    let weight: Vec<f32> = batch.weight.into_data().try_to_vec().unwrap();
    // Features are in token order: group 0's tokens come first.
    for patch in 0..n {
        let token = patch;
        let flags = |r: usize| &features[token * 4 * p + (2 + r) * p..][..p];
        assert!(flags(0).iter().all(|&f| f == 1.0), "channel 0 is shown");
        assert!(flags(1).iter().all(|&f| f == 0.0), "channel 1 is withheld");
        let scored = |ch: usize| weight[(ch * n + patch) * p..][..p].iter().sum::<f32>();
        assert_eq!(
            (scored(0), scored(1), scored(2)),
            (0.0, p as f32, 0.0),
            "only channel 1 is scored"
        );
    }
}

#[test]
fn a_model_of_two_d_patches_learns_forecasts_scores_and_reloads_exactly() {
    let _serial = serial();
    // All three channels in one token: 6 tokens a window instead of 18.
    let config = two_d(3);
    assert_eq!(config.tokens_per_window(3), 6);
    let (model, card) = pretrained_on_sines(config, train_config(3000, 3), 1);
    let (first, last) = (
        card.curve[0].validation_loss,
        card.curve.last().unwrap().validation_loss,
    );
    assert!(last < 0.3 * first, "validation loss {first} -> {last}");
    let plain = Device::flex();

    // The known pattern, forecast clearly better than seasonal naive: if the unfolding mixed
    // channels up, each channel would get another's forecast. The bar is 0.7×: over four
    // seeds the ratio ran 0.33–0.62 on one build and 0.20–0.53 on another that only summed
    // in another order, so 0.5× was seed luck.
    let (model_mse, naive_mse) = forecast_against_seasonal_naive(&model, &card);
    eprintln!(
        "forecast MSE ratio to seasonal naive: {}",
        model_mse / naive_mse
    );
    assert!(
        model_mse < 0.7 * naive_mse,
        "model {model_mse} vs seasonal naive {naive_mse}"
    );

    // Scoring hides whole tokens in turns, as pretraining did: a burst on one sensor, one
    // patch long, is flagged and blamed on that sensor. (A slow drift of one sensor away
    // from the others in the same token would not be: the token's channels are hidden
    // together, so nothing checks them against each other at that moment. Tokens of one
    // channel do; docs/BENCHMARKS.md measures what that costs on Tennessee Eastman.)
    // +5 is about three standard deviations of sensor b (2a + 3): the burst's steps then
    // score about three times the threshold. At +3 (under two) its first steps scored at
    // the threshold, and how many of them were flagged moved with float rounding (8, 6 or
    // 5 of 8 across builds that differ only in summation order).
    let mut anomalous = sines(3400, 1);
    for i in 3000..3008 {
        anomalous.values[1][i] += 5.0;
    }
    let s = tasks::score(&model, &card, &anomalous, 2000, &plain).unwrap();
    let inside = (3000..3008).filter(|&i| s.flag[i]).count();
    let outside = (2000..2900).filter(|&i| s.flag[i]).count();
    eprintln!("flagged {inside}/8 in the burst, {outside}/900 before it");
    assert!(inside >= 6, "{inside}/8 anomalous steps flagged");
    assert!(outside <= 20, "{outside}/900 normal steps flagged");
    let total = |c: usize| (3000..3008).map(|i| s.contribution[c][i]).sum::<f32>();
    assert!(
        total(1) > total(0) && total(1) > total(2),
        "sensor b drives the flags"
    );

    // Saved and reloaded: the same card (with K) and the same forecasts.
    let dir = tempfile::tempdir().unwrap();
    store::save(dir.path(), &model, &card).unwrap();
    let (loaded, loaded_card) = store::load(dir.path(), &plain).unwrap();
    assert_eq!(loaded_card.config.channels_per_token, 3);
    assert_eq!(loaded_card, card);
    let context = sines(3100, 1);
    assert_eq!(
        tasks::forecast(&loaded, &loaded_card, &context, 16, &plain).unwrap(),
        tasks::forecast(&model, &card, &context, 16, &plain).unwrap()
    );
}

#[test]
fn what_reads_one_channel_a_window_refuses_two_d_patches() {
    let _serial = serial();
    let device = Device::flex().autodiff();
    let rec = standardised_sines(600, 4);
    let config = two_d(2);
    let independent = TrainConfig {
        channel_independent: true,
        ..train_config(5, 0)
    };
    let e = pretrain(
        std::slice::from_ref(&rec),
        &config,
        &independent,
        &device,
        |_| {},
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("channel-independent"), "{e}");

    let tuning = ForecastTuning {
        horizon: 8,
        channel_independent: true,
        linear: Search::default(),
        freeze_encoder: false,
        dropout: 0.0,
        loss: Default::default(),
        band_coverage: doppel_model::bands::DEFAULT_COVERAGE,
    };
    let e = finetune_forecast(
        config.init_seeded(common::seed(0), &device),
        &config,
        std::slice::from_ref(&rec),
        &tuning,
        &train_config(5, 0),
        &device,
        |_| {},
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("--channels-together"), "{e}");
}

#[test]
fn a_forecasting_head_on_two_d_tokens_starts_at_its_linear_start_and_reloads_exactly() {
    let _serial = serial();
    let config = two_d(2); // tokens {0, 1} and {2, padding}
    let (w, h) = (config.window(), 12);
    let raw = sines(2000, 4);
    let normalizer = Normalizer::fit(std::slice::from_ref(&raw), 1.0);
    let data = normalizer.apply(&raw);
    let per_channel = Search {
        ridges: vec![1.0],
        layouts: vec![Layout::PerChannel],
    };
    let starts = [1500, 1613, 1777];
    let windows: Vec<_> = starts
        .iter()
        .map(|&s| cut(&data, s, w, &[0, 1, 2]))
        .collect();
    let plain = Device::flex();

    // A fresh head forecasts exactly as its per-channel linear start: each channel's
    // look-back, unfolded from the 2-D tokens, meets its own channel's weights.
    let series: Vec<Series> = (0..3)
        .map(|channel| Series {
            channel,
            values: &data.values[channel],
            cut: 1500,
        })
        .collect();
    let (linear, _) = linear::choose(&series, 3, &[w], h, &per_channel).unwrap();
    let fresh = Forecaster {
        model: config.init_seeded(common::seed(0), &plain),
        head: ForecastHead::new(&config, &linear, &plain),
    };
    let predicted = predict(&fresh, &config, false, &windows, &plain);
    assert_forecasts_are_linear(&predicted, &linear, &data, &starts);

    // Fine-tuned (every channel of a window together), saved with its head and reloaded:
    // the same forecasts.
    let device = Device::flex().autodiff();
    let tuning = ForecastTuning {
        horizon: h,
        channel_independent: false,
        linear: per_channel,
        freeze_encoder: false,
        dropout: 0.0,
        loss: Default::default(),
        band_coverage: doppel_model::bands::DEFAULT_COVERAGE,
    };
    let (forecaster, head) = finetune_forecast(
        config.init_seeded(common::seed(0), &device),
        &config,
        std::slice::from_ref(&data),
        &tuning,
        &train_config(40, 5),
        &device,
        |_| {},
    )
    .unwrap();
    let forecaster = forecaster.valid();
    let predicted = predict(&forecaster, &config, false, &windows, &plain);
    assert!(
        predicted
            .iter()
            .all(|p| p.len() == 3 * h && p.iter().all(|x| x.is_finite()))
    );
    let mut card = ModelCard::new(
        config.clone(),
        normalizer,
        raw.step_ns,
        forecaster.model.num_params(),
        vec![],
        train_config(40, 5),
        vec![],
    );
    card.forecast_head = Some(head);
    let dir = tempfile::tempdir().unwrap();
    store::save_forecaster(dir.path(), &forecaster, &card).unwrap();
    let (reloaded, card) = store::load_forecaster(dir.path(), &plain).unwrap();
    assert_eq!(
        predict(&reloaded, &card.config, false, &windows, &plain),
        predicted
    );
}
