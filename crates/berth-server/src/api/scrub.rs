//! The integrity scrub through the API: start a run, list runs, read one run with what it
//! found. System administration only. The run itself is `berth_jobs::scrub`'s.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Error, ErrorKind};
use berth_meta::{Finding, ScrubRun};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Caller, Change, MAX_PAGE, Reply, bad_request, json, unknown};
use crate::state::Registry;
use berth_access::Access;

#[derive(Serialize, ToSchema)]
pub struct RunView {
    id: i64,
    /// The node that runs or ran it.
    node: String,
    /// Unix seconds.
    started_at: i64,
    finished_at: Option<i64>,
    /// `running`, `finished` or `failed`.
    state: String,
    /// Blobs recorded when it started, blobs checked so far and their bytes.
    blobs_total: u64,
    checked: u64,
    bytes: u64,
    /// Blobs found missing, truncated or not matching their digest.
    damaged: u64,
    error: Option<String>,
    /// What it found (only when one run is read).
    #[serde(skip_serializing_if = "Option::is_none")]
    findings: Option<Vec<FindingView>>,
}

#[derive(Serialize, ToSchema)]
pub struct FindingView {
    digest: String,
    /// `missing`, `truncated: …`, `mismatch: …` (these mark the blob damaged: no longer
    /// served), or `unreadable: …` (a read error, reported only).
    reason: String,
}

impl From<&ScrubRun> for RunView {
    fn from(r: &ScrubRun) -> RunView {
        RunView {
            id: r.id,
            node: r.node.clone(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            state: r.state.clone(),
            blobs_total: r.blobs_total,
            checked: r.checked,
            bytes: r.bytes,
            damaged: r.damaged,
            error: r.error.clone(),
            findings: None,
        }
    }
}

impl From<Finding> for FindingView {
    fn from(f: Finding) -> FindingView {
        FindingView { digest: f.digest, reason: f.reason }
    }
}

#[utoipa::path(post, path = "/api/v1/scrub/runs", tag = "scrub",
    responses((status = 202, description = "Started; read its progress at /api/v1/scrub/runs/{id}", body = RunView),
        (status = 403, body = super::ErrorBody),
        (status = 409, description = "A run is going on already", body = super::ErrorBody)))]
pub async fn start(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let run = berth_jobs::scrub::start(&registry.jobs).await?.ok_or_else(|| {
        Error::new(ErrorKind::Conflict).with_message("a scrub run is going on already (on this node or another)")
    })?;
    let id = run.id.to_string();
    caller
        .audit(&registry, &principal, Change { operation: "scrub.start", project: None, resource: &id, detail: None })
        .await;
    Ok(json(StatusCode::ACCEPTED, &RunView::from(&run)))
}

#[utoipa::path(get, path = "/api/v1/scrub/runs", tag = "scrub",
    params(("n" = Option<u32>, Query, description = "At most this many runs, newest first (1–1000, default 100)")),
    responses((status = 200, body = [RunView]), (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let n = caller.number::<u32>("n")?.unwrap_or(super::DEFAULT_PAGE);
    if n == 0 || n > MAX_PAGE {
        return Err(bad_request(format!("n must be between 1 and {MAX_PAGE}")).into());
    }
    let runs = registry.jobs.scrub.runs(n).await?;
    Ok(json(StatusCode::OK, &runs.iter().map(RunView::from).collect::<Vec<_>>()))
}

/// The run with a page of its findings (`n`, by default 100, after digest `last`; a
/// `Link` leads to the next page): a run over a damaged store may find millions.
#[utoipa::path(get, path = "/api/v1/scrub/runs/{id}", tag = "scrub", params(("id" = i64, Path), super::Paging),
    responses((status = 200, body = RunView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(id): Path<String>) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let page = caller.page()?;
    let missing = || unknown("scrub run", &id);
    let number: i64 = id.parse().map_err(|_| missing())?;
    let run = registry.jobs.scrub.run(number).await?.ok_or_else(missing)?;
    let mut findings = registry.jobs.scrub.findings(number, page.last.as_deref(), page.n + 1).await?;
    let more = findings.len() > page.n as usize;
    findings.truncate(page.n as usize);
    let last = findings.last().map(|f| f.digest.clone());
    let view = RunView { findings: Some(findings.into_iter().map(FindingView::from).collect()), ..RunView::from(&run) };
    let mut response = json(StatusCode::OK, &view);
    if let (true, Some(last)) = (more, last) {
        page.link_after(&mut response, &format!("/api/v1/scrub/runs/{number}"), &last);
    }
    Ok(response)
}
