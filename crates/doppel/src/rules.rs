//! `doppel rules check`: read a rules file, check it against a twin spec, and list every
//! problem with file, line, column and what was expected.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum RulesCommand {
    /// Check a rules file against a twin spec (the reference plant's by default); prints
    /// every problem as FILE:LINE:COLUMN: KEY: MESSAGE, or the rules in words.
    Check {
        /// The rules file, such as examples/reference-plant/rules.toml.
        file: PathBuf,
        /// The twin spec the rules name sensors of (default: the reference plant's).
        #[arg(long)]
        spec: Option<PathBuf>,
    },
    /// Backtest rules on recorded data: what would have fired, when, and for how long. The
    /// file (CSV or Parquet, such as `doppel sim run --out run.parquet` writes) has a time
    /// column and one column a sensor, named by its spec id.
    Test {
        /// The rules file.
        file: PathBuf,
        /// The recorded readings.
        #[arg(long)]
        input: PathBuf,
        /// The twin spec (default: the reference plant's).
        #[arg(long)]
        spec: Option<PathBuf>,
        /// Print the alerts as JSON lines (rule, asset, severity, start, end) for scripts.
        #[arg(long)]
        json: bool,
        /// A twin's model (a folder, or a registered name such as `twin-plant`): `anomaly()`
        /// then reads its scores of each minute, as the live twin would hand them in
        /// (otherwise it is unknown throughout). `forecast()` stays unknown.
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        data: crate::DataDirArg,
    },
}

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Test {
            file,
            input,
            spec,
            json,
            model,
            data,
        } => {
            let model = match model {
                Some(m) => Some(crate::model::model_dir(&m, &data.data)?),
                None => None,
            };
            backtest(&file, &input, spec.as_deref(), json, model.as_deref())
        }
        RulesCommand::Check { file, spec } => {
            let spec = match &spec {
                Some(path) => doppel_core::spec::load(path)?,
                None => crate::live::reference_spec()?,
            };
            match doppel_rules::RuleSet::load(&file, &spec) {
                Ok(rules) => {
                    for rule in &rules.rules {
                        let keep = match rule.keep_firing_for {
                            0 => String::new(),
                            ns if ns % 60_000_000_000 == 0 => {
                                format!("; keeps firing {} min after", ns / 60_000_000_000)
                            }
                            ns => format!("; keeps firing {} s after", ns / 1_000_000_000),
                        };
                        println!(
                            "{} ({:?}, asset {}): {}{keep}",
                            rule.name, rule.severity, rule.asset, rule.when
                        );
                    }
                    println!("{}: ok ({} rule(s))", file.display(), rules.rules.len());
                    Ok(ExitCode::SUCCESS)
                }
                Err(doppel_rules::RulesError::Invalid(problems)) => {
                    for p in &problems {
                        println!("{p}");
                    }
                    eprintln!("{}: {} problem(s)", file.display(), problems.len());
                    Ok(ExitCode::FAILURE)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// Feeds a recording's rows, in time order, to the rules and prints each alert's span.
fn backtest(
    file: &std::path::Path,
    input: &std::path::Path,
    spec: Option<&std::path::Path>,
    json: bool,
    model: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    use doppel_core::time::format_rfc3339;
    let spec = match spec {
        Some(path) => doppel_core::spec::load(path)?,
        None => crate::live::reference_spec()?,
    };
    let rules = doppel_rules::RuleSet::load(file, &spec)?;
    let mut evaluator = doppel_rules::Evaluator::new(rules, &spec);
    // The recording as the model reads it: every numeric column, each row at its own time.
    let recording = doppel_model::read_recording(
        input,
        &doppel_model::ReadOptions {
            allow_empty_channels: true,
            ..Default::default()
        },
    )?;
    let columns: Vec<Option<usize>> = recording
        .channels
        .iter()
        .map(|name| spec.sensors.iter().position(|s| &s.id == name))
        .collect();
    if columns.iter().all(Option::is_none) {
        anyhow::bail!(
            "{}: no column is named like a sensor of the spec (such as `{}`)",
            input.display(),
            spec.sensors.first().map_or("", |s| s.id.as_str())
        );
    }
    // Each minute's anomaly scores, handed in once the minute is whole.
    let scores = match model {
        Some(dir) => {
            let scores = doppel_twin::models::backtest::score(dir, &recording)
                .map_err(anyhow::Error::msg)?;
            eprintln!(
                "anomaly(): the {} detector of {}",
                scores.detector,
                dir.display()
            );
            Some(scores)
        }
        None => None,
    };
    let mut scored_minute = None;
    let mut open: std::collections::BTreeMap<String, (i64, String, String, String)> =
        Default::default();
    let mut fired = 0;
    let print = |key: &str,
                 (began, rule, asset, severity): &(i64, String, String, String),
                 end: Option<i64>| {
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "rule": rule, "asset": asset, "severity": severity,
                    "start": format_rfc3339(*began), "end": end.map(format_rfc3339),
                })
            );
        } else {
            match end {
                Some(end) => println!(
                    "{key}: {} to {} ({:.0} min)",
                    format_rfc3339(*began),
                    format_rfc3339(end),
                    (end - began) as f64 / 60e9
                ),
                None => println!(
                    "{key}: {} to the end of the file (still firing)",
                    format_rfc3339(*began)
                ),
            }
        }
    };
    for (time, slot) in recording.input_rows() {
        for (c, sensor) in columns.iter().enumerate() {
            if let Some(i) = sensor
                && recording.observed[c][slot]
            {
                evaluator.observe(*i, time, recording.values[c][slot] as f64);
            }
        }
        if let Some(scores) = &scores {
            let minute = (time - scores.start_ns).div_euclid(60_000_000_000) - 1;
            if minute >= 0 && Some(minute) != scored_minute {
                scored_minute = Some(minute);
                if let Some(assets) = scores.scores.get(minute as usize) {
                    for asset in &spec.assets {
                        let score = assets.iter().find(|(a, _)| a == &asset.id);
                        evaluator.set_anomaly(&asset.id, score.map_or(f64::NAN, |(_, s)| *s));
                    }
                }
            }
        }
        for change in evaluator.evaluate(time) {
            let key = format!("{} ({})", change.name, change.asset);
            if change.firing {
                fired += 1;
                let severity = serde_json::to_value(change.severity)?
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                open.insert(key, (change.time, change.name, change.asset, severity));
            } else if let Some(opened) = open.remove(&key) {
                print(&key, &opened, Some(change.time));
            }
        }
    }
    for (key, opened) in &open {
        print(key, opened, None);
    }
    let summary = format!(
        "{}: {fired} alert(s) over {} rows",
        input.display(),
        recording.input_rows().len()
    );
    if json {
        eprintln!("{summary}");
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}
