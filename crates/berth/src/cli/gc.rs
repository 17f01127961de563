//! `berth gc`: garbage collection on a running server through the management API — one
//! run now (waiting for it; `--dry-run` lists what a real run would remove), or the
//! record of past runs.

use std::io::IsTerminal;

use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, Remote};
use crate::BoxError;

#[derive(clap::Args)]
pub struct GcArgs {
    #[command(subcommand)]
    command: Option<GcCommand>,
    /// List what the run would remove, and how many bytes; remove nothing.
    #[arg(long)]
    dry_run: bool,
    /// Also check every blob and manifest, and remove blob-store objects no record names.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    remote: Remote,
}

#[derive(clap::Subcommand)]
pub enum GcCommand {
    /// Past runs, newest first.
    Runs {
        /// Runs older than this id (to continue a listing).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

pub async fn gc(args: GcArgs) -> Result<(), BoxError> {
    match args.command {
        None => {
            let client = Client::new(&args.remote)?;
            if std::io::stderr().is_terminal() {
                eprintln!("garbage collection running on the server…");
            }
            let body = json!({ "dry_run": args.dry_run, "full": args.full });
            let report = client.call(Method::POST, "/gc", Some(body)).await?;
            print_report(&report);
        }
        Some(GcCommand::Runs { before, limit }) => {
            let mut path = format!("/gc/runs?limit={limit}");
            if let Some(before) = before {
                path.push_str(&format!("&before={before}"));
            }
            for run in Client::new(&args.remote)?.get(&path).await?.as_array().into_iter().flatten() {
                println!("{}", summary(run));
            }
        }
    }
    Ok(())
}

/// One line: `id kind [dry run] started: N candidates, M manifests, B blobs (bytes), …`.
fn summary(run: &Value) -> String {
    let error = run["error"].as_str().map(|e| format!(", {e}")).unwrap_or_default();
    format!(
        "{}\t{}{}\tstarted_ms={}\t{} ms\tcandidates={} manifests={} blobs={} bytes={} orphans={} orphan_bytes={}{error}",
        run["id"],
        run["kind"].as_str().unwrap_or("-"),
        if run["dry_run"] == true { " (dry run)" } else { "" },
        run["started_ms"],
        run["duration_ms"],
        run["candidates"],
        run["manifests_removed"],
        run["blobs_removed"],
        run["bytes_freed"],
        run["orphans_removed"],
        run["orphan_bytes"],
    )
}

fn print_report(report: &Value) {
    let run = &report["run"];
    let verb = if run["dry_run"] == true { "would remove" } else { "removed" };
    println!("{}", summary(run));
    let items = |key: &str| report[key].as_array().cloned().unwrap_or_default();
    for m in items("manifests") {
        println!(
            "{verb} manifest {}@{}\t{}",
            m["repository"].as_str().unwrap_or("-"),
            m["digest"].as_str().unwrap_or("-"),
            m["size"]
        );
    }
    for b in items("blobs") {
        println!("{verb} blob {}\t{}", b["digest"].as_str().unwrap_or("-"), b["size"]);
    }
    for o in items("orphans") {
        println!("{verb} orphan {}\t{}", o["name"].as_str().unwrap_or("-"), o["size"]);
    }
}
