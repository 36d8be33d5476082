//! `doppel alerts list|ack`: the running twin's alerts from the command line, through its API
//! (the doppel serving the data directory, or `--url`).

use std::process::ExitCode;

use clap::Subcommand;

use crate::client::{Client, twin_client};
use crate::{DataDirArg, ServerArg};

#[derive(Subcommand)]
pub enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// Only alerts in this state: open (firing or acknowledged), firing, acknowledged,
        /// resolved.
        #[arg(long)]
        state: Option<String>,
        /// Only this asset's.
        #[arg(long)]
        asset: Option<String>,
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Acknowledge an open alert: who, and a note for the others.
    Ack {
        /// The alert's id (`doppel alerts list` shows it).
        id: String,
        /// Who acknowledges.
        #[arg(long, env = "USER")]
        by: String,
        /// What is being done about it.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        data: DataDirArg,
        #[command(flatten)]
        server: ServerArg,
    },
}

fn client(data: &DataDirArg, server: &ServerArg) -> anyhow::Result<Client> {
    twin_client(data, server, "alerts live in a running twin")
}

pub fn run(command: AlertsCommand) -> anyhow::Result<ExitCode> {
    match command {
        AlertsCommand::List {
            state,
            asset,
            data,
            server,
        } => {
            let mut query = Vec::new();
            if let Some(s) = &state {
                query.push(("state", s.as_str()));
            }
            if let Some(a) = &asset {
                query.push(("asset", a.as_str()));
            }
            let body = client(&data, &server)?.get("/api/v1/alerts", &query)?;
            let alerts: Vec<serde_json::Value> = serde_json::from_slice(&body)?;
            if alerts.is_empty() {
                println!("no alerts");
            }
            for a in &alerts {
                let text = |k: &str| a[k].as_str().unwrap_or("").to_owned();
                let ack = match a["acknowledged_by"].as_str() {
                    Some(by) => format!(" — {by}: {}", text("note")),
                    None => String::new(),
                };
                println!(
                    "{}  {:<12} {:<8} {}  {} on {} since {}{ack}",
                    text("id"),
                    text("state"),
                    text("severity"),
                    text("rule"),
                    serde_json::to_string(&a["values"]).unwrap_or_default(),
                    text("asset"),
                    text("started"),
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsCommand::Ack {
            id,
            by,
            note,
            data,
            server,
        } => {
            let body = serde_json::json!({"by": by, "note": note});
            let answer =
                client(&data, &server)?.post_json(&format!("/api/v1/alerts/{id}/ack"), &body)?;
            let alert: serde_json::Value = serde_json::from_slice(&answer)?;
            println!(
                "{} acknowledged by {}",
                alert["id"].as_str().unwrap_or(&id),
                by
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}
