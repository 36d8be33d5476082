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
}

pub fn run(command: RulesCommand) -> anyhow::Result<ExitCode> {
    match command {
        RulesCommand::Check { file, spec } => {
            let spec = match &spec {
                Some(path) => doppel_core::spec::load(path)?,
                None => crate::sim::reference_spec()?,
            };
            match doppel_rules::RuleSet::load(&file, &spec) {
                Ok(rules) => {
                    for rule in &rules.rules {
                        println!(
                            "{} ({:?}, asset {}): {}",
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
