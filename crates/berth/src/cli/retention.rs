//! `berth retention`: set, show and remove a project's retention policy, and run it (with
//! `--dry-run`, only report) on a running server, through the management API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, segment};
use super::text;
use crate::BoxError;

#[derive(Subcommand)]
pub enum RetentionCommand {
    /// Set a project's policy from a JSON file (`-`: standard input); see docs/retention.md.
    Set { project: String, file: String },
    /// Print a project's policy.
    Show { project: String },
    /// Remove a project's policy: retention then deletes nothing there.
    Remove { project: String },
    /// Apply the policy now: print each tag and manifest deleted and why, each tag kept and why.
    Run {
        project: String,
        /// Delete nothing; print what a run would delete.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn retention(command: RetentionCommand, client: &Client) -> Result<(), BoxError> {
    let path = |project: &str| format!("/projects/{}/retention", segment(project));
    match command {
        RetentionCommand::Set { project, file } => {
            let text =
                if file == "-" { std::io::read_to_string(std::io::stdin())? } else { std::fs::read_to_string(&file)? };
            let policy: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
            client.call(Method::PUT, &path(&project), Some(policy)).await?;
            println!("retention policy of {project} set");
        }
        RetentionCommand::Show { project } => {
            println!("{}", serde_json::to_string_pretty(&client.get(&path(&project)).await?)?);
        }
        RetentionCommand::Remove { project } => {
            client.call(Method::DELETE, &path(&project), None).await?;
            println!("retention policy of {project} removed");
        }
        RetentionCommand::Run { project, dry_run } => {
            let body = json!({ "dry_run": dry_run });
            let report = client.call(Method::POST, &format!("{}/run", path(&project)), Some(body)).await?;
            print_report(&report, dry_run);
        }
    }
    Ok(())
}

/// One line per decision: `delete`/`would delete`, `keep` or `skipped`, what, why.
fn print_report(report: &Value, dry_run: bool) {
    let verb = if dry_run { "would delete" } else { "deleted" };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let (mut tags, mut manifests) = (0, 0);
    for repo in list(&report["repositories"]) {
        let name = text(&repo["repository"]);
        for t in list(&repo["deleted_tags"]) {
            tags += 1;
            println!("{verb}\t{name}:{}\t{}", text(&t["tag"]), text(&t["reason"]));
        }
        for m in list(&repo["deleted_manifests"]) {
            manifests += 1;
            println!("{verb}\t{name}@{}\t{}", text(&m["digest"]), text(&m["reason"]));
        }
        for t in list(&repo["kept"]) {
            let reasons: Vec<&str> = t["reasons"].as_array().into_iter().flatten().map(text).collect();
            println!("keep\t{name}:{}\t{}", text(&t["tag"]), reasons.join("; "));
        }
        for s in list(&repo["skipped"]) {
            println!("skipped\t{name}\t{}", text(&s));
        }
    }
    println!("{verb}: {tags} tags, {manifests} manifests");
}
