//! `doppel policy check|eval`: policy files (reward and hard limits in the rule language), and
//! policies compared on the simulator from the same seeds (docs/AUTONOMY.md).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use doppel_autonomy::Objective;
use doppel_autonomy::evaluate::{Evaluation, Report, run, summarise};
use doppel_sim::chiller::{ChillerPlant, ChillerPlantConfig};
use doppel_sim::scenario::Scenario;

use crate::sim::ReportFormat;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Check a policy file against the reference plant; prints every problem as
    /// FILE:LINE:COLUMN: KEY: MESSAGE, or the reward and limits it holds.
    Check {
        /// The policy file, such as examples/reference-plant/policy.toml.
        file: PathBuf,
    },
    /// Train a policy with GRPO on the policy file's rewards in the simulator: a cold start
    /// imitating the rule-based operator, then group relative policy optimisation over
    /// undisturbed weather and then every scenario of the folder (docs/AUTONOMY.md). Writes the
    /// weights (safetensors), the card, the reward curve (PNG) and checkpoints into --out.
    /// `--algo ppo` trains the reference GRPO is measured against, PPO with a value network,
    /// on the same simulation budget.
    Train {
        /// The algorithm: grpo, or ppo (the reference).
        #[arg(long, default_value = "grpo", value_parser = ["grpo", "ppo"])]
        algo: String,
        /// A folder of scenario files (or one file).
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
        /// Where the policy goes, such as policies/p1.
        #[arg(long)]
        out: PathBuf,
        /// Go on from the last checkpoint in --out.
        #[arg(long)]
        resume: bool,
        /// Iterations (default: 1,200 with --control setpoint, about 75 s here; 60 with all).
        #[arg(long)]
        iterations: Option<usize>,
        /// Futures a group (same disruptions and seed; they differ by the policy's choices).
        #[arg(long, default_value_t = 8)]
        group: usize,
        /// Groups an iteration.
        #[arg(long, default_value_t = 4)]
        groups: usize,
        /// The training seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Advantages are a future's reward less its group's mean, divided by this fixed
        /// scale (never by the group's spread) and capped at ±10 (default: 5 with --control
        /// setpoint, 100 with all).
        #[arg(long)]
        reward_scale: Option<f64>,
        /// Decisions (of 15 minutes) each future lasts.
        #[arg(long, default_value_t = 16)]
        horizon: usize,
        /// What the network moves: `setpoint` (the setpoint alone; the rule-based operator
        /// stages and maintains beside it) or `all` (the setpoint and the staging of chillers
        /// and pumps; the operator only orders maintenance).
        #[arg(long, default_value = "setpoint", value_parser = ["setpoint", "all"])]
        control: String,
        /// Steps imitating the rule-based operator before GRPO, 0 for a fresh network
        /// (default: 0 with --control setpoint, whose cold start is the operator beside it;
        /// 300 with all).
        #[arg(long)]
        cold_start_steps: Option<usize>,
        /// Times the network is scored during training on episodes set aside (two seeds of 15
        /// days of every scenario, seeds 9000 and 9001); the folder keeps the best scored and
        /// `last/` the latest. 0 keeps the last.
        #[arg(long, default_value_t = 12)]
        validations: usize,
        /// The policy file (default: the reference plant's).
        #[arg(long)]
        objective: Option<PathBuf>,
    },
    /// Compare policies on every scenario of a folder (and undisturbed weather), each from the
    /// same seeds: energy, excursions, downtime, maintenance, total cost against `rules`,
    /// limits broken in the plant, actions the safety gate blocked, compute per decision.
    Eval {
        /// Policies, comma-separated: none, rules, mpc, mpc:horizon=1h, mpc+shield...
        #[arg(long, default_value = "rules,mpc")]
        policy: String,
        /// A folder of scenario files (or one file).
        #[arg(long, default_value = "scenarios")]
        scenarios: PathBuf,
        /// Leave out the undisturbed runs.
        #[arg(long)]
        no_undisturbed: bool,
        /// Seeds, as FIRST..END (END not included), such as 1000..1100.
        #[arg(long, default_value = "1..11", value_parser = seed_range)]
        seeds: Range<u64>,
        /// Days each episode lasts.
        #[arg(long, default_value_t = 30.0)]
        days: f64,
        /// The policy file (default: the reference plant's).
        #[arg(long)]
        objective: Option<PathBuf>,
        /// Threads (default: all cores). Results do not depend on it.
        #[arg(long)]
        threads: Option<usize>,
        /// Output: a table for people, or JSON (the summaries and every episode).
        #[arg(long, value_enum, default_value = "table")]
        format: ReportFormat,
    },
}

fn seed_range(text: &str) -> Result<Range<u64>, String> {
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("`{text}` is not a range: write FIRST..END, such as 1000..1100"))?;
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|e| format!("`{v}` in `{text}`: {e}"))
    };
    let (a, b) = (parse(a)?, parse(b)?);
    if b <= a {
        return Err(format!("`{text}` holds no seed: END must be above FIRST"));
    }
    Ok(a..b)
}

/// The policy file at `path`, or the reference plant's.
pub fn objective(path: Option<&Path>, plant: &ChillerPlant) -> anyhow::Result<Arc<Objective>> {
    Ok(Arc::new(match path {
        Some(path) => Objective::load(path, plant)?,
        None => Objective::reference(plant)?,
    }))
}

pub fn run_command(command: PolicyCommand) -> anyhow::Result<ExitCode> {
    let plant = ChillerPlant::new(ChillerPlantConfig::default(), 0)?;
    match command {
        PolicyCommand::Check { file } => {
            let o = Objective::load(&file, &plant)?;
            println!(
                "{}: reward = {}, floor {}",
                file.display(),
                o.reward_text,
                o.floor
            );
            for l in &o.limits {
                println!("  limit `{}`: keep {}", l.name, l.keep);
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Train {
            algo,
            scenarios,
            out,
            resume,
            iterations,
            group,
            groups,
            seed,
            reward_scale,
            horizon,
            control,
            cold_start_steps,
            validations,
            objective: file,
        } => {
            if algo == "ppo" && resume {
                bail!(
                    "--resume goes on from GRPO's checkpoints; PPO (the reference) trains in one go"
                );
            }
            let objective = objective(file.as_deref(), &plant)?;
            let mut list = vec![("undisturbed".to_owned(), Scenario::baseline())];
            for path in scenario_files(&scenarios)? {
                let name = path
                    .file_stem()
                    .map_or("?".into(), |s| s.to_string_lossy().into_owned());
                list.push((name, Scenario::load(&path, &plant)?));
            }
            let control = doppel_autonomy::grpo::net::Control::parse(&control)
                .expect("clap allows only all or setpoint");
            // Each mode's measured recipe (docs/BENCHMARKS.md), unless asked otherwise.
            let setpoint = control == doppel_autonomy::grpo::net::Control::Setpoint;
            let iterations = iterations.unwrap_or(if setpoint { 1200 } else { 60 });
            let settings = doppel_autonomy::grpo::train::GrpoSettings {
                iterations,
                group,
                groups,
                seed,
                reward_scale: reward_scale.unwrap_or(if setpoint { 5.0 } else { 100.0 }),
                horizon,
                control,
                cold_start_steps: cold_start_steps.unwrap_or(if setpoint { 0 } else { 300 }),
                validations,
                ..Default::default()
            };
            let bar = crate::progress::bar(iterations as u64, "iterations");
            let report = |p: &doppel_autonomy::grpo::train::Progress| {
                if p.phase == "validation" {
                    bar.println(format!(
                        "iteration {}: {:.0} total cost an episode set aside",
                        p.done,
                        -p.reward.unwrap_or(f64::NAN)
                    ));
                } else if p.phase == algo {
                    bar.set_position(p.done as u64);
                    if let Some(r) = p.reward {
                        bar.set_message(format!("reward {r:.1}"));
                    }
                } else {
                    bar.set_message(format!("{} {}/{}", p.phase, p.done, p.of));
                }
            };
            let card = match algo.as_str() {
                "ppo" => {
                    doppel_autonomy::grpo::ppo::train(&list, &objective, settings, &out, &report)?
                }
                _ => doppel_autonomy::grpo::train::train(
                    &list, &objective, settings, &out, resume, &report,
                )?,
            };
            bar.finish_and_clear();
            let curve: Vec<(f64, f64)> = card
                .curve
                .iter()
                .map(|c| (c.iteration as f64, c.reward))
                .collect();
            crate::plot::line_chart(
                &out.join("reward.png"),
                &format!(
                    "{}: mean reward of the futures, per iteration",
                    algo.to_uppercase()
                ),
                "iteration",
                "reward",
                &curve,
            )?;
            let cold = match card.cold_start.steps {
                0 => "no cold start (a fresh network)".to_owned(),
                _ => format!(
                    "cold start agreed with the operator on {:.0} % of {} decisions",
                    100.0 * card.cold_start.agreement,
                    card.cold_start.examples
                ),
            };
            println!(
                "{}: {cold}; {} iterations in {:.0} s ({:.0} % in the simulator); reward \
                 {:.1} → {:.1}",
                out.display(),
                card.iterations_done,
                card.seconds,
                100.0 * card.simulator_share,
                card.curve.first().map_or(f64::NAN, |c| c.reward),
                card.curve.last().map_or(f64::NAN, |c| c.reward),
            );
            if let (Some(kept), Some(point)) = (
                card.kept_iteration,
                card.validation
                    .iter()
                    .find(|p| Some(p.iteration) == card.kept_iteration),
            ) {
                println!(
                    "kept the network of iteration {kept} of {} scored: {:+.1} % total cost \
                     against the rule-based operator on the validation episodes (latest in {})",
                    card.validation.len(),
                    point.against_rules_pct,
                    out.join(doppel_autonomy::grpo::train::LAST).display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Eval {
            policy,
            scenarios,
            no_undisturbed,
            seeds,
            days,
            objective: file,
            threads,
            format,
        } => {
            let objective = objective(file.as_deref(), &plant)?;
            let policies = policy
                .split(',')
                .map(|name| doppel_autonomy::policy_by_name(name, objective.clone()))
                .collect::<Result<Vec<_>, _>>()?;
            let mut list = Vec::new();
            if !no_undisturbed {
                list.push(("undisturbed".to_owned(), Scenario::baseline()));
            }
            for path in scenario_files(&scenarios)? {
                let name = path
                    .file_stem()
                    .map_or("?".into(), |s| s.to_string_lossy().into_owned());
                list.push((name, Scenario::load(&path, &plant)?));
            }
            let e = Evaluation {
                policies,
                scenarios: list,
                seeds,
                days,
                step_s: 60.0,
                plant: ChillerPlantConfig::default(),
                objective,
                threads,
            };
            let total = (e.policies.len() * e.scenarios.len() * e.seeds.clone().count()) as u64;
            let bar = crate::progress::bar(total, "episodes");
            let began = Instant::now();
            let episodes = run(&e, &|done| bar.set_position(done))?;
            bar.finish_and_clear();
            let reports = summarise(&episodes);
            record_evaluations(&reports, &e)?;
            match format {
                ReportFormat::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &serde_json::json!({"summary": reports, "episodes": episodes})
                    )?
                ),
                ReportFormat::Table => print_table(&reports),
            }
            eprintln!(
                "{total} episodes of {days} days in {:.1} s",
                began.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes each learned policy's evaluation into its card (`evaluations`, the latest last):
/// what it was run on and how it did against the others, so the card says how it did.
fn record_evaluations(reports: &[Report], e: &Evaluation) -> anyhow::Result<()> {
    for policy in e.policies.iter().map(|p| p.name()) {
        let Some(folder) = policy.strip_prefix("grpo:") else {
            continue;
        };
        let folder = Path::new(folder.trim_end_matches("+shield"));
        let entry = serde_json::json!({
            "policy": policy,
            "date": doppel_core::time::format_rfc3339(doppel_core::time::now_nanos()),
            "scenarios": e.scenarios.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "seeds": [e.seeds.start, e.seeds.end],
            "days": e.days,
            "reports": reports.iter().filter(|r| r.scenario == "all").collect::<Vec<_>>(),
        });
        doppel_autonomy::grpo::record_evaluation(folder, entry)?;
    }
    Ok(())
}

/// The `.toml` files of a folder, by name (or the one file given).
fn scenario_files(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot read the scenario folder {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{} holds no scenario (.toml) file", path.display());
    }
    Ok(files)
}

fn print_table(reports: &[Report]) {
    println!(
        "{:<14} {:<22} {:>5} {:>11} {:>9} {:>9} {:>11} {:>11} {:>8} {:>9} {:>8} {:>9}",
        "scenario",
        "policy",
        "eps",
        "energy",
        "exc min",
        "down h",
        "maint",
        "total",
        "vs rules",
        "violat.",
        "blocked",
        "ms/dec"
    );
    for r in reports {
        println!(
            "{:<14} {:<22} {:>5} {:>11.0} {:>9.1} {:>9.1} {:>11.0} {:>11.0} {:>8} {:>9} {:>8} {:>9.2}",
            r.scenario,
            r.policy,
            r.episodes,
            r.energy_cost,
            r.limit_excursion_minutes,
            r.downtime_hours,
            r.maintenance_cost,
            r.total_cost,
            r.against_rules_pct
                .map_or("-".into(), |p| format!("{p:+.1}%")),
            r.violation_steps,
            r.blocked,
            r.ms_per_decision
        );
    }
    println!(
        "\nmeans per episode; total = what the policy file's reward charges; violat. = steps a \
         limit was broken in the plant; blocked = batches the safety gate replaced"
    );
}
