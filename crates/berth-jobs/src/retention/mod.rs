//! Retention: a project's policy applied to its repositories (on demand through the
//! management API, or on a schedule by the node holding the `retention` lease), and the
//! pull recorder that tells it when tags were last pulled.
//!
//! A run lists each repository of the project (the catalog), reads its tags and top-level
//! manifests with their push and pull times (`RetentionStore::repo_state`), and decides
//! (`policy.rs`). A dry run stops there and reports the decision. A real run then deletes
//! through `MetadataStore::delete_tag` and `delete_manifest`, as a client's delete would
//! (so GC sees what they leave unreferenced), writing one audit entry per deletion
//! (`retention.tag.delete`, `retention.manifest.delete`, actor `retention`). Each delete is
//! conditioned on what the run decided on, in the delete's own transaction: a tag pushed or
//! moved since the listing, or a manifest tagged since, is kept (reported as skipped);
//! an untagged manifest goes only if nothing holds on to it then (no tag, no index of its
//! repository naming it: buildx pushes an index's children by digest first) and it was
//! first pushed longer ago than the GC grace period (`DeleteIf::Unheld`; younger ones are
//! not decided on, so a dry run lists what the real run deletes). A
//! tag whose delete is refused with DENIED (an immutability rule) is kept, reported with
//! the refusal's message; the run goes on.

use std::sync::Arc;
use std::time::Duration;

use berth_core::access::project_of;
use berth_core::{Digest, Error, ErrorKind, RepoName, Tag};
use berth_meta::{AuditEvent, DeleteIf, TagTarget};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::Jobs;
use crate::gc::GcConfig;
use berth_meta::now_ms;

pub mod policy;

pub use crate::pulls::PullRecorder;
pub use policy::{Compiled, DeletedManifest, DeletedTag, KeptTag, Policy, Verdict};

/// The actor of retention's audit entries.
pub const ACTOR: &str = "retention";
/// Repositories read from the catalog at once.
const REPO_PAGE: u32 = 1000;

/// What a run did (or, dry, would do) to a project.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RunReport {
    pub project: String,
    pub dry_run: bool,
    /// The repositories a rule applies to, by name.
    pub repositories: Vec<RepoReport>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RepoReport {
    pub repository: String,
    #[serde(flatten)]
    pub verdict: Verdict,
    /// Deletions a real run did not do: what changed since it decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl RunReport {
    /// Tags deleted (or to be): `repo:tag`, in order.
    pub fn deleted_tags(&self) -> impl Iterator<Item = String> + '_ {
        self.repositories
            .iter()
            .flat_map(|r| r.verdict.deleted_tags.iter().map(|t| format!("{}:{}", r.repository, t.tag)))
    }
}

/// Applies `policy` to `project`'s repositories; deletes only if not `dry_run`. `by` says
/// who asked (a user's name, or `schedule`), for the audit entries' detail.
pub async fn run(
    registry: &Jobs,
    project: &str,
    policy: &Compiled,
    dry_run: bool,
    by: &str,
) -> Result<RunReport, Error> {
    let store = registry.retention_store()?;
    let mut report = RunReport { project: project.to_owned(), dry_run, repositories: Vec::new() };
    // Untagged manifests pushed since are not decided on: a push by digest may be an
    // index's child whose index is on its way (the grace GC gives the same pushes).
    let grace = registry.gc.as_ref().map_or_else(|| GcConfig::default().grace, |gc| gc.config.grace);
    let pushed_by = berth_meta::now() - grace.as_secs() as i64;
    let mut last = None;
    loop {
        let names = berth_meta::project_repositories(&*registry.meta, project, last.clone(), REPO_PAGE).await?;
        for name in &names {
            let repo = RepoName::parse(name).map_err(Error::internal)?;
            let mut state = store.repo_state(&repo).await?;
            state.manifests.retain(|m| m.pushed_at <= pushed_by);
            let Some(verdict) = policy.decide(name, &state, berth_meta::now()) else { continue };
            let mut repo_report = RepoReport { repository: name.clone(), verdict, skipped: Vec::new() };
            if !dry_run {
                apply(registry, &repo, &state, pushed_by, &mut repo_report, by).await?;
            }
            report.repositories.push(repo_report);
        }
        match names.last() {
            Some(name) if names.len() > REPO_PAGE as usize => last = Some(name.clone()),
            _ => break,
        }
    }
    Ok(report)
}

/// Deletes what `report` says goes, each only as the run saw it; moves what it could not
/// delete to kept or skipped.
async fn apply(
    registry: &Jobs,
    repo: &RepoName,
    state: &berth_meta::RepoState,
    pushed_by: i64,
    report: &mut RepoReport,
    by: &str,
) -> Result<(), Error> {
    let verdict = &mut report.verdict;
    let mut deleted = Vec::new();
    for t in std::mem::take(&mut verdict.deleted_tags) {
        // Deleted only as the run saw it: a tag pushed since stays (checked in the delete).
        let Some(seen) = state.tags.iter().find(|s| s.tag == t.tag) else { continue };
        let expected =
            TagTarget { digest: Digest::parse(&seen.digest).map_err(Error::internal)?, pushed_at: seen.pushed_at };
        let tag = Tag::parse(&t.tag).map_err(Error::internal)?;
        match registry.meta.delete_tag(repo, &tag, Some(&expected)).await {
            Ok(true) => {
                let detail = format!("{}; was {}; run by {by}", t.reason, t.digest);
                record(registry, "retention.tag.delete", repo, format!("{repo}:{}", t.tag), detail).await;
                deleted.push(t);
            }
            Ok(false) => report.skipped.push(format!("tag {}: pushed or deleted during the run", t.tag)),
            Err(e) if e.kind == ErrorKind::Denied => {
                let reasons = vec![format!("protected: {}", e.message())];
                verdict.kept.push(KeptTag { tag: t.tag, digest: t.digest, reasons });
            }
            Err(e) => return Err(e),
        }
    }
    verdict.deleted_tags = deleted;
    let mut deleted = Vec::new();
    for m in std::mem::take(&mut verdict.deleted_manifests) {
        // Untagged as the run saw it: one tagged or named by an index since stays (checked
        // in the delete).
        let digest = Digest::parse(&m.digest).map_err(Error::internal)?;
        match registry.meta.delete_manifest(repo, &digest, DeleteIf::Unheld { pushed_by }).await {
            Ok(true) => {
                let detail = format!("{}; run by {by}", m.reason);
                record(registry, "retention.manifest.delete", repo, format!("{repo}@{}", m.digest), detail).await;
                deleted.push(m);
            }
            Ok(false) => {
                report.skipped.push(format!("manifest {}: tagged, referenced or deleted during the run", m.digest))
            }
            Err(e) if e.kind == ErrorKind::Denied => {
                report.skipped.push(format!("manifest {}: protected: {}", m.digest, e.message()))
            }
            Err(e) => return Err(e),
        }
    }
    verdict.deleted_manifests = deleted;
    Ok(())
}

async fn record(registry: &Jobs, operation: &str, repo: &RepoName, resource: String, detail: String) {
    let event = AuditEvent {
        at_ms: now_ms(),
        actor: Some(ACTOR.to_owned()),
        address: "internal".to_owned(),
        operation: operation.to_owned(),
        project: Some(project_of(repo).to_owned()),
        resource: Some(resource),
        outcome: "success".to_owned(),
        detail: Some(detail),
        count: 1,
    };
    registry.audit.record(event).await;
}

/// The scheduled runs: every project with a policy, on the node holding the `retention` lease.
pub struct RetentionJob {
    registry: Arc<Jobs>,
}

impl RetentionJob {
    pub fn new(registry: Arc<Jobs>) -> RetentionJob {
        RetentionJob { registry }
    }

    /// Runs every project's policy once; a project whose run fails is logged and the
    /// others still run. Returns the reports of those that ran.
    pub async fn run_once(&self) -> Result<Vec<RunReport>, Error> {
        let mut reports = Vec::new();
        for (project, json) in self.registry.retention_store()?.policies().await? {
            let compiled = serde_json::from_str::<Policy>(&json).map_err(Error::internal).and_then(Policy::compile);
            let result = match compiled {
                Ok(policy) => run(&self.registry, &project, &policy, false, "schedule").await,
                Err(e) => Err(e),
            };
            match result {
                Ok(report) => reports.push(report),
                Err(e) => tracing::warn!(%project, error = %e, "retention run failed"),
            }
        }
        Ok(reports)
    }

    /// Runs every `interval` until `shutdown`, on whichever node holds the `retention`
    /// lease (held for an interval and a minute, renewed by its holder on each pass: a
    /// dead node's runs resume elsewhere within about an interval).
    pub async fn run(self, interval: Duration, shutdown: CancellationToken) {
        let ttl = interval.as_secs() as i64 + 60;
        loop {
            let holder = &self.registry.node_id;
            let pass = match self.registry.meta.try_lease("retention", holder, ttl).await {
                Ok(true) => self.run_once().await,
                Ok(false) => Ok(Vec::new()),
                Err(e) => Err(e),
            };
            match pass {
                Ok(reports) => {
                    let deleted: usize = reports.iter().map(|r| r.deleted_tags().count()).sum();
                    if deleted > 0 {
                        tracing::info!(projects = reports.len(), deleted, "retention");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention pass failed"),
            }
            if !crate::pause(interval, &shutdown).await {
                return;
            }
        }
    }
}

/// Flushes the pull recorder every `interval` (and when it fills up) until `shutdown`.
/// The last flush is the caller's, after the last request (`berth::serve`).
pub async fn flush_pulls(registry: Arc<Jobs>, interval: Duration, shutdown: CancellationToken) {
    let Ok(store) = registry.retention_store().cloned() else { return };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
            _ = registry.pulls.filling.notified() => {}
        }
        if let Err(e) = registry.pulls.flush(&*store).await {
            tracing::warn!(error = %e, "flushing pull times failed; retried at the next flush");
            // The pulls put back may wake this loop at once: not faster than a second.
            if !crate::pause(Duration::from_secs(1), &shutdown).await {
                return;
            }
        }
    }
}
