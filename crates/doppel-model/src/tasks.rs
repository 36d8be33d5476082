//! What a twin asks of the model: fill gaps and forecast (scoring and embedding follow).
//! Each task cuts the input into model-sized windows, hides the patches the task is about,
//! and reads the reconstruction back in the data's own units.

use burn::prelude::*;
use rand::SeedableRng;
use rand_xoshiro::Xoshiro256PlusPlus;

use crate::batch::{Mask, make_batch};
use crate::data::Recording;
use crate::error::{ModelError, Result};
use crate::model::SensorModel;
use crate::store::ModelCard;
use crate::train::cut;

/// Checks a recording against the model and returns it standardised, in the model's
/// channel order.
fn prepare(card: &ModelCard, rec: &Recording, min_len: usize) -> Result<Recording> {
    let rec = rec.select(&card.channels)?;
    if rec.step_ns != card.step_ns {
        return Err(ModelError::Input {
            path: rec.source.clone(),
            message: format!(
                "the file's rows are {} s apart, the model's grid is {} s",
                rec.step_ns as f64 / 1e9,
                card.step_ns as f64 / 1e9
            ),
        });
    }
    if rec.len() < min_len {
        return Err(ModelError::Input {
            path: rec.source.clone(),
            message: format!(
                "{} steps of data, but the model's window needs {min_len}",
                rec.len()
            ),
        });
    }
    Ok(card.normalizer.apply(&rec))
}

/// Runs the model on one window with a mask; returns the reconstruction [L × P], flat.
fn reconstruct(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    start: usize,
    mask: &Mask,
    device: &Device,
) -> Vec<f32> {
    let ids: Vec<usize> = (0..card.channels.len()).collect();
    let window = cut(rec, start, card.config.window(), &ids);
    // Task masks hide fixed patches; the generator only breaks ties, so any seed will do.
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(0);
    let batch = make_batch(&[window], &card.config, mask, &mut rng, device);
    model
        .forward(&batch.tokens)
        .into_data()
        .try_into_vec::<f32>()
        .expect("the model outputs f32")
}

/// Fills every missing value. Returns the filled recording and, per channel and step,
/// whether the value was filled in.
pub fn impute(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    device: &Device,
) -> Result<(Recording, Vec<Vec<bool>>)> {
    let w = card.config.window();
    let (p, n) = (card.config.patch_len, card.config.patches);
    let std_rec = prepare(card, rec, w)?;
    let mut out = rec.select(&card.channels)?;
    let filled: Vec<Vec<bool>> = out
        .observed
        .iter()
        .map(|o| o.iter().map(|x| !x).collect())
        .collect();
    let mut starts: Vec<usize> = (0..=std_rec.len() - w).step_by(w).collect();
    if starts.last() != Some(&(std_rec.len() - w)) {
        starts.push(std_rec.len() - w);
    }
    for start in starts {
        let recon = reconstruct(model, card, &std_rec, start, &Mask::Gaps, device);
        for c in 0..out.channels.len() {
            for i in 0..w {
                let t = start + i;
                if !out.observed[c][t] {
                    let token = c * n + i / p;
                    let v = recon[token * p + i % p];
                    out.values[c][t] = card.normalizer.invert(c, v);
                }
            }
        }
    }
    for o in &mut out.observed {
        o.iter_mut().for_each(|x| *x = true);
    }
    Ok((out, filled))
}

/// Forecasts the `horizon` steps after the end of the recording: `[channel][step]`.
pub fn forecast(
    model: &SensorModel,
    card: &ModelCard,
    rec: &Recording,
    horizon: usize,
    device: &Device,
) -> Result<Vec<Vec<f32>>> {
    let (p, n) = (card.config.patch_len, card.config.patches);
    let tail = horizon.div_ceil(p);
    if horizon == 0 || tail >= n {
        return Err(ModelError::Settings(format!(
            "the horizon must be 1 to {} steps for this model (its window is {} patches of {p})",
            (n - 1) * p,
            n
        )));
    }
    let context = (n - tail) * p;
    let std_rec = prepare(card, rec, context)?;
    // The window: the last `context` steps, then `tail` patches of nothing to fill in.
    let mut window = std_rec.clone();
    let from = std_rec.len() - context;
    for c in 0..window.channels.len() {
        window.values[c] = std_rec.values[c][from..].to_vec();
        window.values[c].resize(n * p, 0.0);
        window.observed[c] = std_rec.observed[c][from..].to_vec();
        window.observed[c].resize(n * p, false);
    }
    let recon = reconstruct(model, card, &window, 0, &Mask::Tail(tail), device);
    Ok((0..window.channels.len())
        .map(|c| {
            (0..horizon)
                .map(|h| {
                    let i = context + h;
                    card.normalizer
                        .invert(c, recon[(c * n + i / p) * p + i % p])
                })
                .collect()
        })
        .collect())
}
