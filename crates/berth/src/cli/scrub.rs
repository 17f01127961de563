//! `berth scrub`: starts an integrity scrub on a running server (the management API) and
//! follows it to its end, with progress on a terminal, then lists what it found.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::Client;
use crate::BoxError;

/// How often the run's progress is read.
const POLL: Duration = Duration::from_millis(500);
/// Findings read per request (the server's largest page).
const FINDINGS_PAGE: usize = 1000;

pub(super) async fn scrub(client: &Client) -> Result<(), BoxError> {
    let started = client.call(Method::POST, "/scrub/runs", None).await?;
    let id = started["id"].as_i64().ok_or("the server's answer has no run id")?;
    let terminal = std::io::stderr().is_terminal();
    let run = loop {
        let run = client.get(&format!("/scrub/runs/{id}")).await?;
        if terminal {
            eprint!(
                "\rscrub {id}: {} of {} blobs checked, {} bytes, {} damaged   ",
                run["checked"], run["blobs_total"], run["bytes"], run["damaged"]
            );
            let _ = std::io::stderr().flush();
        }
        if run["state"] != "running" {
            break run;
        }
        tokio::time::sleep(POLL).await;
    };
    if terminal {
        eprintln!();
    }
    // Its findings, a page at a time (the answers above carried the first page).
    let mut page = client.get(&format!("/scrub/runs/{id}?n={FINDINGS_PAGE}")).await?;
    loop {
        let findings = page["findings"].as_array().cloned().unwrap_or_default();
        for finding in &findings {
            println!("{}\t{}", text(&finding["digest"]), text(&finding["reason"]));
        }
        match findings.last() {
            Some(last) if findings.len() == FINDINGS_PAGE => {
                let after = super::client::segment(text(&last["digest"]));
                page = client.get(&format!("/scrub/runs/{id}?n={FINDINGS_PAGE}&last={after}")).await?;
            }
            _ => break,
        }
    }
    println!(
        "scrub {id} {}: {} blobs checked, {} bytes, {} damaged",
        text(&run["state"]),
        run["checked"],
        run["bytes"],
        run["damaged"]
    );
    match run["error"].as_str() {
        Some(error) => Err(format!("scrub {id} failed: {error}").into()),
        None => Ok(()),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}
