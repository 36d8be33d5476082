//! The twin's model over time: found in the registry at start (the version marked live),
//! trained once the lake holds history enough, and retrained as data grows (every
//! `retrain_every` of data time): a new version is trained on the latest history, both it
//! and the live version are scored on the latest rows neither trained on (after the live
//! version's data, inside the new one's validation tail: with a day between retrainings,
//! about the latest day), and the new one goes to work only when its error there is lower.
//! Every comparison is kept in the new version's card (`promotion`), promoted or not.

use doppel_core::time::{format_rfc3339, parse_rfc3339};
use doppel_model::card::Promotion;
use doppel_model::registry::Registry;
use doppel_model::tasks::reconstruction_errors;
use doppel_model::{ModelCard, Recording, SensorModel, store};

use super::{LiveModel, ModelSettings, STEP_NS, fit, minute_recording};
use crate::twin::Twin;

/// How a new version is compared with the one at work.
type Compare<'a> = dyn Fn(&SensorModel, &ModelCard) -> Result<Promotion, String> + 'a;

/// The version of `name` marked live (else the newest a twin calibrated), loaded.
pub(super) fn registered(registry: &Registry, name: &str) -> Option<LiveModel> {
    let entries = registry.list().ok()?;
    let calibrated = entries
        .into_iter()
        .filter(|e| e.name == name && e.card.live_scoring.is_some());
    let entry = match registry.live_version(name) {
        Some(v) => calibrated.into_iter().find(|e| e.version == v)?,
        None => calibrated.max_by_key(|e| e.version)?,
    };
    load(&entry.path, entry.version).ok()
}

/// A registered version as the twin uses it: weights, forecaster, card.
fn load(path: &std::path::Path, version: u32) -> Result<LiveModel, String> {
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    let (model, card) = store::load(path, &device).map_err(|e| e.to_string())?;
    let scoring = card
        .live_scoring
        .clone()
        .ok_or("the model was not calibrated by a twin")?;
    // The head on the encoder already read, not the weights read a second time.
    let forecaster = match card.forecast_head {
        Some(_) => Some(
            store::with_forecast_head(path, model.clone(), &card, &device)
                .map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    Ok(LiveModel {
        model,
        forecaster,
        card,
        scoring,
        version,
    })
}

fn hours(ns: i64) -> String {
    format!("{:.1} h", ns as f64 / 3.6e12)
}

/// The twin's history over `from..to` as the model reads it: minute means from the first
/// minute any sensor read, of the sensors that read in at least half the minutes; an error
/// in words while there is less than `least` of it.
async fn history(twin: &Twin, from: i64, to: i64, least: i64) -> Result<Recording, String> {
    let rec = minute_recording(twin, from, to, None).await?;
    let first = (0..rec.len())
        .find(|&t| rec.observed.iter().any(|o| o[t]))
        .ok_or("no readings yet")?;
    let rec = rec.slice(first, rec.len());
    let have = rec.len() as i64 * STEP_NS;
    if have < least {
        return Err(format!(
            "{} of the {} of data it trains on",
            hours(have),
            hours(least)
        ));
    }
    let keep: Vec<String> = (0..rec.channels.len())
        .filter(|&c| rec.observed[c].iter().filter(|&&o| o).count() * 2 >= rec.len())
        .map(|c| rec.channels[c].clone())
        .collect();
    rec.select(&keep).map_err(|e| e.to_string())
}

/// Trains, calibrates, registers and marks live the twin's first model once the lake holds
/// history enough; `None` while it does not (or when training failed: said in the status).
pub(super) async fn first_model(
    twin: &Twin,
    settings: &ModelSettings,
    registry: &Registry,
    name: &str,
) -> Option<LiveModel> {
    let work = twin.models();
    let to = twin.data_now()?.div_euclid(STEP_NS) * STEP_NS;
    let rec = match history(twin, to - settings.history_ns, to, settings.min_history_ns).await {
        Ok(rec) => rec,
        Err(e) => {
            work.set("waiting", format!("waiting for history: {e}"));
            return None;
        }
    };
    let trained =
        train(twin, settings, registry, name, &rec, None).and_then(|(version, path, _)| {
            registry
                .set_live(name, version)
                .map_err(|e| e.to_string())?;
            load(&path, version)
        });
    match trained {
        Ok(model) => {
            work.went_live(&model);
            Some(model)
        }
        Err(e) => {
            tracing::warn!(error = %e, "training the twin's model failed");
            work.set("failed", format!("training failed: {e}"));
            None
        }
    }
}

/// Pretrains on `rec` as [`fit::fit`] does, the twin's status following, and registers the
/// result (with `promotion` in its card when given); its version, folder and card.
fn train(
    twin: &Twin,
    settings: &ModelSettings,
    registry: &Registry,
    name: &str,
    rec: &Recording,
    compare: Option<&Compare>,
) -> Result<(u32, std::path::PathBuf, ModelCard), String> {
    let work = twin.models();
    tracing::info!(
        sensors = rec.channels.len(),
        minutes = rec.len(),
        steps = settings.steps,
        "pretraining the twin's model from the lake"
    );
    let message = format!(
        "pretraining on {} of {} sensor(s), {} steps",
        hours(rec.len() as i64 * STEP_NS),
        rec.channels.len(),
        settings.steps
    );
    // On the machine's idle time: training takes both cores for minutes, and ingest and
    // queries come first (docs/BENCHMARKS.md, "ingest while the model trains").
    let spec = twin.spec();
    let forecasts = twin.forecasts_wanted();
    let mut fitted = doppel_core::background::on_threads(None, true, || {
        fit::fit(
            rec,
            &spec,
            &forecasts,
            settings.steps,
            |stage| match stage {
                fit::Stage::Pretraining { step, loss } => {
                    let mut status = work.status.write();
                    // A first model is `training`; a live one stays `live` while its successor trains.
                    if status.live_version.is_none() {
                        status.state = "training";
                    }
                    status.message = message.clone();
                    status.step = step;
                    status.loss = Some(loss);
                }
                fit::Stage::Choosing => work.note("choosing the detector on held-out rows".into()),
                fit::Stage::FineTuning { horizon } => work.note(format!(
                    "fine-tuning a forecasting head for {horizon} minute(s)"
                )),
            },
        )
    })
    .map_err(|e| format!("cannot start the training's threads: {e}"))??;
    if let Some(compare) = compare {
        fitted.card.promotion = Some(compare(&fitted.model, &fitted.card)?);
    }
    let (version, path) = registry
        .register(name, |dir| fit::save(dir, &fitted))
        .map_err(|e| e.to_string())?;
    Ok((version, path, fitted.card))
}

/// Whether the live model is due for retraining: data has grown by `every` past what it
/// (or the last attempt) trained on.
pub(super) fn due(live: &LiveModel, attempted_to: Option<i64>, now: i64, every: i64) -> bool {
    match data_end(&live.card).max(attempted_to) {
        Some(to) => now - to >= every,
        None => false,
    }
}

/// Trains a new version on the latest history, compares both on the rows neither trained
/// on (after the live version's data, within the new one's validation tail), registers the
/// new one with the comparison, and returns it when it goes to work.
pub(super) async fn retrain(
    twin: &Twin,
    settings: &ModelSettings,
    registry: &Registry,
    name: &str,
    live: &LiveModel,
    to: i64,
) -> Result<Option<LiveModel>, String> {
    let work = twin.models();
    let live_end = data_end(&live.card).ok_or("the live version's card has no data range")?;
    let rec = history(twin, to - settings.history_ns, to, settings.min_history_ns).await?;
    // Not worth training when too little would be left to compare on.
    let trained_share = 1.0 - live.card.train.validation_fraction;
    let expected_from = (rec.start_ns + (rec.len() as f64 * trained_share) as i64 * STEP_NS)
        .max(live_end + STEP_NS);
    let window = live.card.config.window();
    if to - expected_from < window as i64 * STEP_NS {
        return Err(format!(
            "too little data after v{} to compare a new version with it (a window is {window} \
             minutes)",
            live.version
        ));
    }
    // Every sensor after the live version's data: what the comparison reads.
    let after = minute_recording(twin, live_end + STEP_NS, to, None).await?;
    work.note(format!(
        "retraining: a new version on the data to {}, to be compared with v{} on what \
         neither trained on",
        format_rfc3339(to),
        live.version
    ));
    let compare = |model: &SensorModel, card: &ModelCard| -> Result<Promotion, String> {
        let trained_to = trained_end(card).ok_or("the new card has no data range")?;
        let from = trained_to.max(live_end) + STEP_NS;
        let skip = ((from - after.start_ns) / STEP_NS).max(0) as usize;
        if after.len() < skip + window {
            return Err(format!(
                "too little data neither version trained on to compare them ({} minute(s); a \
                 window is {window})",
                after.len().saturating_sub(skip)
            ));
        }
        let held = after.slice(skip, after.len());
        let live_error = error_on(&live.model, &live.card, &held, &live.card)?;
        let candidate_error = error_on(model, card, &held, &live.card)?;
        Ok(Promotion {
            against: live.version,
            from: format_rfc3339(held.start_ns),
            to: format_rfc3339(to),
            candidate_error,
            live_error,
            promoted: candidate_error < live_error,
        })
    };
    let (version, path, card) = train(twin, settings, registry, name, &rec, Some(&compare))?;
    let promotion = card.promotion.clone().ok_or("no comparison was made")?;
    tracing::info!(
        version,
        against = live.version,
        candidate_error = promotion.candidate_error,
        live_error = promotion.live_error,
        promoted = promotion.promoted,
        "the twin's model was retrained"
    );
    if !promotion.promoted {
        work.went_live(live);
        work.note(format!(
            "version {} at work; v{version} had error {:.4} on the data neither trained on, \
             against its {:.4}",
            live.version, promotion.candidate_error, promotion.live_error
        ));
        return Ok(None);
    }
    registry
        .set_live(name, version)
        .map_err(|e| e.to_string())?;
    let model = load(&path, version)?;
    work.went_live(&model);
    Ok(Some(model))
}

/// The time of the last row a model's data reached.
fn data_end(card: &ModelCard) -> Option<i64> {
    card.data
        .iter()
        .filter_map(|d| parse_rfc3339(&d.end).ok())
        .max()
}

/// The time of the last row a model trained on (its validation tail excluded).
fn trained_end(card: &ModelCard) -> Option<i64> {
    card.data
        .iter()
        .filter_map(|d| {
            let start = parse_rfc3339(&d.start).ok()?;
            let trained = (d.steps as f64 * (1.0 - card.train.validation_fraction)) as i64;
            Some(start + (trained - 1).max(0) * card.step_ns)
        })
        .max()
}

/// The mean squared reconstruction error of `model` on `day` (each value hidden once), in
/// `reference`'s standardised units, over the channels both read.
fn error_on(
    model: &SensorModel,
    card: &ModelCard,
    day: &Recording,
    reference: &ModelCard,
) -> Result<f64, String> {
    let device = doppel_model::device::inference(Default::default()).map_err(|e| e.to_string())?;
    let rec = day.select(&card.channels).map_err(|e| e.to_string())?;
    let errors = reconstruction_errors(model, card, &rec, &device).map_err(|e| e.to_string())?;
    let (mut sum, mut n) = (0.0, 0usize);
    for (c, channel) in card.channels.iter().enumerate() {
        let Some(r) = reference.channels.iter().position(|x| x == channel) else {
            continue;
        };
        // From this model's units to the reference's.
        let scale = (card.normalizer.std[c] / reference.normalizer.std[r].max(1e-9)).powi(2);
        for e in errors[c].iter().filter(|e| e.is_finite()) {
            sum += (*e * scale) as f64;
            n += 1;
        }
    }
    if n == 0 {
        return Err("no reading on the latest day to compare the versions on".into());
    }
    Ok(sum / n as f64)
}
