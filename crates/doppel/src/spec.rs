//! `doppel spec check`: validate a twin spec and list every problem with file, line and key.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum SpecCommand {
    /// Check a twin spec; prints every problem as FILE:LINE:COLUMN: KEY: MESSAGE.
    Check {
        /// The spec file, such as examples/cooling-plant/twin.toml.
        file: PathBuf,
    },
}

pub fn run(command: SpecCommand) -> anyhow::Result<ExitCode> {
    match command {
        SpecCommand::Check { file } => match doppel_core::spec::load(&file) {
            Ok(spec) => {
                println!(
                    "{}: ok ({} site(s), {} asset(s), {} sensor(s))",
                    file.display(),
                    spec.sites.len(),
                    spec.assets.len(),
                    spec.sensors.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(doppel_core::spec::SpecError::Invalid(problems)) => {
                for p in &problems {
                    println!("{p}");
                }
                eprintln!("{}: {} problem(s)", file.display(), problems.len());
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        },
    }
}
