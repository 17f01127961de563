//! Garbage collection through the management API: run one now (`POST /gc`, waits for it and
//! returns what it removed, or a dry run's list of what it would remove) and the record of
//! past runs (`GET /gc/runs`). System administrators only.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use berth_meta::GcRun;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{Caller, MAX_PAGE, Reply, bad_request, json, next_link, parse_body};
use crate::state::Registry;
use berth_access::Access;
use berth_jobs::gc::{GcReport, GcRequest, collect};

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Report what a run would remove, remove nothing.
    #[serde(default)]
    dry_run: bool,
    /// A full run: also check every blob and manifest, and remove blob-store objects with
    /// no record.
    #[serde(default)]
    full: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RunView {
    /// 0 is never an id: every run is recorded.
    id: i64,
    /// `incremental` or `full`.
    kind: &'static str,
    dry_run: bool,
    /// Unix milliseconds.
    started_ms: i64,
    duration_ms: i64,
    /// Queued candidates that were due for review.
    candidates: u64,
    manifests_removed: u64,
    blobs_removed: u64,
    bytes_freed: u64,
    orphans_removed: u64,
    orphan_bytes: u64,
    /// Why the run stopped early, if it did.
    error: Option<String>,
}

impl From<&GcRun> for RunView {
    fn from(r: &GcRun) -> RunView {
        RunView {
            id: r.id,
            kind: r.kind.as_str(),
            dry_run: r.dry_run,
            started_ms: r.started_ms,
            duration_ms: r.duration_ms,
            candidates: r.candidates,
            manifests_removed: r.manifests_removed,
            blobs_removed: r.blobs_removed,
            bytes_freed: r.bytes_freed,
            orphans_removed: r.orphans_removed,
            orphan_bytes: r.orphan_bytes,
            error: r.error.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RemovedManifest {
    repository: String,
    digest: String,
    size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RemovedBlob {
    digest: String,
    size: u64,
}

#[derive(Serialize, ToSchema)]
pub struct RemovedOrphan {
    /// The blob store's name for the object.
    name: String,
    size: u64,
}

/// A run's figures and what it removed (a dry run: what the real run would remove).
#[derive(Serialize, ToSchema)]
pub struct ReportView {
    run: RunView,
    manifests: Vec<RemovedManifest>,
    blobs: Vec<RemovedBlob>,
    orphans: Vec<RemovedOrphan>,
}

impl From<&GcReport> for ReportView {
    fn from(r: &GcReport) -> ReportView {
        ReportView {
            run: RunView::from(&r.run),
            manifests: r
                .manifests
                .iter()
                .map(|m| RemovedManifest { repository: m.repo.to_string(), digest: m.digest.to_string(), size: m.size })
                .collect(),
            blobs: r.blobs.iter().map(|b| RemovedBlob { digest: b.digest.to_string(), size: b.size }).collect(),
            orphans: r.orphans.iter().map(|o| RemovedOrphan { name: o.name.clone(), size: o.size }).collect(),
        }
    }
}

#[utoipa::path(post, path = "/api/v1/gc", tag = "gc", request_body = RunRequest,
    responses((status = 200, body = ReportView), (status = 403, body = super::ErrorBody),
        (status = 409, description = "A run is in progress", body = super::ErrorBody)))]
pub async fn run(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let request: RunRequest = if body.is_empty() { RunRequest::default() } else { parse_body(&body)? };
    let report = collect(&registry.jobs, GcRequest { full: request.full, dry_run: request.dry_run }).await?;
    Ok(json(StatusCode::OK, &ReportView::from(&report)))
}

/// The listing's parameters (documentation; they are read from the query string).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RunsPage {
    /// Runs older than this id (the last id of the previous page).
    before: Option<i64>,
    /// At most this many runs (1–1000, default 100).
    limit: Option<u32>,
}

#[utoipa::path(get, path = "/api/v1/gc/runs", tag = "gc", params(RunsPage),
    responses((status = 200, body = [RunView]), (status = 403, body = super::ErrorBody)))]
pub async fn runs(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let gc =
        registry.jobs.gc.as_ref().ok_or_else(|| berth_core::Error::internal("garbage collection is not configured"))?;
    let limit = caller.number::<u32>("limit")?.unwrap_or(super::DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad_request(format!("limit must be between 1 and {MAX_PAGE}")).into());
    }
    let mut runs = gc.store.runs(caller.number("before")?, limit + 1).await?;
    let more = runs.len() > limit as usize;
    runs.truncate(limit as usize);
    let views: Vec<RunView> = runs.iter().map(RunView::from).collect();
    let mut response = json(StatusCode::OK, &views);
    if let (true, Some(last)) = (more, runs.last()) {
        next_link(&mut response, &format!("/api/v1/gc/runs?limit={limit}&before={}", last.id));
    }
    Ok(response)
}
