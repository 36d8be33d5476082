//! The Tennessee Eastman benchmark (`../shared/data/tep`): fit on normal operation, then the
//! share of flagged samples in each fault's test file, for PCA T², PCA T² or SPE, and the
//! sensor model's anomaly score — at their own thresholds and at equal false alarms.

use std::path::Path;

use burn::prelude::*;
use serde::Serialize;

use doppel_model::card::ModelCard;
use doppel_model::data::{Normalizer, Recording};
use doppel_model::error::{ModelError, Result};
use doppel_model::model::ModelConfig;
use doppel_model::tasks;
use doppel_model::train::{DEFAULT_LEARNING_RATE, TrainConfig, pretrain};

use super::model_name;

/// One TEP result: a test file, a detector, and the share of its samples flagged.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TepRow {
    /// `d01_te` ... `d21_te`, or `d00_te` (normal throughout: the false-alarm rate).
    pub file: String,
    pub model: String,
    /// Share of faulty samples flagged (after sample 160), or of all samples for `d00_te`.
    pub flagged: f64,
}

/// Reads a TEP file (whitespace-separated numbers, one sample a row; `transposed` for
/// `d00.dat`, stored one variable a row) into `rows[sample][variable]`.
pub fn read_tep(path: &Path, transposed: bool) -> Result<Vec<Vec<f64>>> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::Input {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut rows: Vec<Vec<f64>> = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let row: std::result::Result<Vec<f64>, _> =
            line.split_whitespace().map(str::parse).collect();
        rows.push(row.map_err(|e| ModelError::Input {
            path: path.to_owned(),
            message: format!("line {}: {e}", i + 1),
        })?);
    }
    if transposed {
        let (vars, samples) = (rows.len(), rows[0].len());
        rows = (0..samples)
            .map(|s| (0..vars).map(|v| rows[v][s]).collect())
            .collect();
    }
    Ok(rows)
}

/// TEP rows as a recording on a 3-minute grid, variables `v1`..`v52`.
fn tep_recording(rows: &[Vec<f64>], name: &str) -> Recording {
    let vars = rows[0].len();
    Recording {
        source: name.into(),
        start_ns: 0,
        step_ns: 180_000_000_000,
        channels: (1..=vars).map(|v| format!("v{v}")).collect(),
        values: (0..vars)
            .map(|v| rows.iter().map(|r| r[v] as f32).collect())
            .collect(),
        observed: vec![vec![true; rows.len()]; vars],
        rows: Vec::new(),
        labels: Vec::new(),
    }
}

/// The false-alarm rate on `d00_te` at which detectors are also compared head to head.
const MATCHED_FALSE_ALARMS: f64 = 0.05;

/// Tennessee Eastman: fit on normal operation (`d00.dat`), then the share of flagged samples
/// in each test file, for PCA T², PCA T² or SPE, and the sensor model's score (each sensor's
/// typical error and the 99th-percentile threshold from `d00.dat`, like PCA's). Then the same
/// statistics again with thresholds that flag 5 % of `d00_te`: detection at equal false alarms.
/// Last, the model's score with PCA's T² and SPE in one index (each over its own
/// 99th-percentile limit, the largest of the three), as the T²/SPE index combines PCA's two:
/// the model reads how sensors move in time, PCA where a sample sits among the normal
/// correlations.
pub fn tep(
    dir: &Path,
    pretrain_steps: usize,
    channels_per_token: usize,
    seed: u64,
    mut log: impl FnMut(&str),
) -> Result<Vec<TepRow>> {
    let normal = read_tep(&dir.join("d00.dat"), true)?;
    let pca = doppel_model::baselines::PcaDetector::fit(&normal, 0.9, 0.99);
    log(&format!(
        "PCA on {} normal samples; pretraining the sensor model ({pretrain_steps} steps)",
        normal.len()
    ));
    let rec = tep_recording(&normal, "d00.dat");
    let normalizer = Normalizer::fit(std::slice::from_ref(&rec), 0.8);
    let mut config = ModelConfig::sized("tiny", rec.channels.len(), 4, 12).expect("tiny is a size");
    config.channels_per_token = channels_per_token;
    let train = TrainConfig::new(pretrain_steps, 16, DEFAULT_LEARNING_RATE, seed);
    let started = std::time::Instant::now();
    let device = Device::flex().autodiff();
    let (model, curve) = pretrain(&[normalizer.apply(&rec)], &config, &train, &device, |_| {})?;
    log(&format!(
        "pretrained in {:.0} s ({} tokens a window)",
        started.elapsed().as_secs_f64(),
        config.tokens_per_window(rec.channels.len())
    ));
    let model = model.valid();
    let card = ModelCard::new(
        config,
        normalizer,
        rec.step_ns,
        model.num_params(),
        vec![],
        train,
        curve,
    );
    // The model's normal: its errors on the normal run it was trained on.
    let normal_errors = tasks::reconstruction_errors(&model, &card, &rec, &Device::flex())?;
    let calibration = tasks::Calibration::fit(&normal_errors, 0..rec.len(), 0.99);
    let mut rows = Vec::new();
    // Thresholds at which each statistic flags 5 % of d00_te (set when f = 0).
    let mut matched: Option<(f64, f64, f32, f64)> = None;
    let ours = model_name("doppel_mae_tiny", channels_per_token);
    let (ours_matched, ours_or_pca, ours_or_pca_matched) = (
        format!("{ours}@far5"),
        format!("{ours}_or_pca"),
        format!("{ours}_pca@far5"),
    );
    for f in 0..=21 {
        let name = format!("d{f:02}_te");
        let test = read_tep(&dir.join(format!("{name}.dat")), false)?;
        // d00_te is normal throughout; the others turn faulty at sample 161.
        let from = if f == 0 { 0 } else { 160 };
        let share = |flags: &[bool]| {
            flags[from..].iter().filter(|&&x| x).count() as f64 / (flags.len() - from) as f64
        };
        let stats: Vec<(f64, f64)> = test.iter().map(|r| pca.statistics(r)).collect();
        let t2: Vec<f64> = stats.iter().map(|s| s.0).collect();
        // T² and SPE in one index: each over its own limit, the larger of the two.
        let combined: Vec<f64> = stats
            .iter()
            .map(|(t2, spe)| (t2 / pca.t2_threshold).max(spe / pca.spe_threshold))
            .collect();
        let errors = tasks::reconstruction_errors(
            &model,
            &card,
            &tep_recording(&test, &name),
            &Device::flex(),
        )?;
        let scores = calibration.apply(&errors);
        let model_or_pca: Vec<f64> = combined
            .iter()
            .zip(&scores.score)
            .map(|(pca_index, &score)| {
                (score as f64 / calibration.threshold as f64).max(*pca_index)
            })
            .collect();
        let (t2_far, combined_far, model_far, model_or_pca_far) =
            *matched.get_or_insert_with(|| {
                let at = 1.0 - MATCHED_FALSE_ALARMS;
                (
                    tasks::quantile_of(&mut t2.clone(), at),
                    tasks::quantile_of(&mut combined.clone(), at),
                    tasks::quantile_of(&mut scores.score.clone(), at),
                    tasks::quantile_of(&mut model_or_pca.clone(), at),
                )
            });
        let detectors: [(&str, Vec<bool>); 8] = [
            ("pca_t2", stats.iter().map(|s| pca.flags_of(*s).0).collect()),
            (
                "pca_t2_or_spe",
                stats
                    .iter()
                    .map(|s| {
                        let (a, b) = pca.flags_of(*s);
                        a || b
                    })
                    .collect(),
            ),
            (&ours, scores.flag.clone()),
            ("pca_t2@far5", t2.iter().map(|&x| x > t2_far).collect()),
            (
                "pca_t2_spe@far5",
                combined.iter().map(|&x| x > combined_far).collect(),
            ),
            (
                &ours_matched,
                scores.score.iter().map(|&x| x > model_far).collect(),
            ),
            (
                &ours_or_pca,
                model_or_pca.iter().map(|&x| x > 1.0).collect(),
            ),
            (
                &ours_or_pca_matched,
                model_or_pca.iter().map(|&x| x > model_or_pca_far).collect(),
            ),
        ];
        let mut line = format!("{name}:");
        for (model_name, flags) in detectors {
            let flagged = share(&flags);
            line += &format!(" {model_name} {flagged:.3}");
            rows.push(TepRow {
                file: name.clone(),
                model: model_name.into(),
                flagged,
            });
        }
        log(&line);
    }
    Ok(rows)
}
