//! `berth replication`: replication rules and their executions (docs/federation.md),
//! through a running server's management API. Registries and rules are made through the
//! API (their specs have many fields); here they are listed and run.

use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use serde_json::Value;

use super::client::{Client, segment};
use crate::BoxError;

#[derive(Subcommand)]
pub enum ReplicationCommand {
    /// Every rule: name, registry, project, whether it copies on events.
    Rules,
    /// Run a rule now: copy everything it matches. Prints the execution, and with
    /// `--wait` waits until it finishes (the exit status says whether every artifact got
    /// there).
    Run {
        rule: String,
        #[arg(long)]
        wait: bool,
    },
    /// Recent executions, newest first (of one rule with `--rule`).
    Executions {
        #[arg(long)]
        rule: Option<String>,
    },
}

pub(super) async fn replication(command: ReplicationCommand, client: &Client) -> Result<(), BoxError> {
    match command {
        ReplicationCommand::Rules => {
            for r in client.get("/replication/rules").await?.as_array().cloned().unwrap_or_default() {
                let text = |k: &str| r[k].as_str().unwrap_or_default().to_owned();
                let event = if r["on_event"] == true { "on events" } else { "manual" };
                let enabled = if r["enabled"] == true { "" } else { "\tdisabled" };
                println!("{}\t{}\t{}\t{event}{enabled}", text("name"), text("registry"), text("project"));
            }
            Ok(())
        }
        ReplicationCommand::Run { rule, wait } => {
            let path = format!("/replication/rules/{}/run", segment(&rule));
            let mut execution = client.call(Method::POST, &path, None).await?;
            println!("{}", line(&execution));
            if !wait {
                return Ok(());
            }
            while execution["state"] == "running" {
                tokio::time::sleep(Duration::from_secs(1)).await;
                execution = client.get(&format!("/replication/executions/{}", execution["id"])).await?;
            }
            println!("{}", line(&execution));
            match execution["state"].as_str() {
                Some("succeeded") => Ok(()),
                _ => Err(format!(
                    "execution {} {}: see `GET /api/v1/replication/executions/{}/tasks`",
                    execution["id"], execution["state"], execution["id"]
                )
                .into()),
            }
        }
        ReplicationCommand::Executions { rule } => {
            let path = match rule {
                Some(rule) => format!("/replication/executions?rule={}", segment(&rule)),
                None => "/replication/executions".to_owned(),
            };
            for e in client.get(&path).await?.as_array().cloned().unwrap_or_default() {
                println!("{}", line(&e));
            }
            Ok(())
        }
    }
}

/// `ID  RULE  TRIGGER  STATE  succeeded/total  failed  BYTES`
fn line(e: &Value) -> String {
    let text = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
    format!(
        "{}\t{}\t{}\t{}\t{}/{} succeeded\t{} failed\t{} bytes",
        e["id"],
        text("rule"),
        text("trigger"),
        text("state"),
        e["succeeded"],
        e["total"],
        e["failed"],
        e["bytes"]
    )
}
