//! A project's retention policy: set, read, remove, and run it (dry or for real). Project
//! administrators and maintainers (`manage-tag-policies`) and system administrators.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::Permission;
use serde::Deserialize;
use utoipa::ToSchema;

use super::{Caller, Change, Reply, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::{Access, Principal};
use berth_jobs::retention::{self, Policy, RunReport};

/// Characters of a policy kept in its audit entry.
const MAX_DETAIL: usize = 1024;

#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// Report what would be deleted, delete nothing.
    #[serde(default)]
    dry_run: bool,
}

/// The caller, if it may manage `project`'s tag policies.
async fn manager(registry: &Registry, caller: &Caller, project: &str) -> Result<Principal, berth_core::Error> {
    caller.authorize(registry, Access::Project(project, Permission::ManageTagPolicies)).await
}

/// The project must exist.
async fn project(registry: &Registry, name: &str) -> Result<(), berth_core::Error> {
    registry.identity.project(name).await?.map(|_| ()).ok_or_else(|| unknown("project", name))
}

async fn stored(registry: &Registry, name: &str) -> Result<Policy, berth_core::Error> {
    let json =
        registry.jobs.retention_store()?.policy(name).await?.ok_or_else(|| unknown("retention policy for", name))?;
    serde_json::from_str(&json).map_err(berth_core::Error::internal)
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/retention", tag = "retention",
    params(("project" = String, Path)),
    responses((status = 200, body = Policy), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    manager(&registry, &caller, &name).await?;
    Ok(json(StatusCode::OK, &stored(&registry, &name).await?))
}

#[utoipa::path(put, path = "/api/v1/projects/{project}/retention", tag = "retention",
    params(("project" = String, Path)), request_body = Policy,
    responses((status = 200, body = Policy), (status = 400, description = "An invalid policy: the message names the rule",
        body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn set(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = manager(&registry, &caller, &name).await?;
    let compiled = parse_body::<Policy>(&body)?.compile()?;
    project(&registry, &name).await?;
    let canonical = serde_json::to_string(&compiled.policy).map_err(berth_core::Error::internal)?;
    registry.jobs.retention_store()?.set_policy(&name, Some(&canonical)).await?;
    // The policy as the audit entry's detail, cut to a short note.
    let detail = Some(match canonical.char_indices().nth(MAX_DETAIL) {
        Some((cut, _)) => format!("{}…", &canonical[..cut]),
        None => canonical,
    });
    let change = Change { operation: "retention.policy.set", project: Some(&name), resource: &name, detail };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::OK, &compiled.policy))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/retention", tag = "retention",
    params(("project" = String, Path)),
    responses((status = 204, description = "Removed: retention deletes nothing in the project"),
        (status = 404, body = super::ErrorBody)))]
pub async fn remove(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = manager(&registry, &caller, &name).await?;
    stored(&registry, &name).await?;
    registry.jobs.retention_store()?.set_policy(&name, None).await?;
    let change = Change { operation: "retention.policy.delete", project: Some(&name), resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/retention/run", tag = "retention",
    params(("project" = String, Path)), request_body = RunRequest,
    responses((status = 200, description = "What was deleted (or, dry, would be) and why; what was kept and why",
        body = RunReport), (status = 404, body = super::ErrorBody)))]
pub async fn run(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = manager(&registry, &caller, &name).await?;
    let request: RunRequest = if body.is_empty() { RunRequest::default() } else { parse_body(&body)? };
    let policy = stored(&registry, &name).await?.compile()?;
    let by = principal.name().unwrap_or("anonymous");
    let report = retention::run(&registry.jobs, &name, &policy, request.dry_run, by).await?;
    let deleted = report.deleted_tags().count();
    let manifests: usize = report.repositories.iter().map(|r| r.verdict.deleted_manifests.len()).sum();
    let detail = Some(format!("dry_run={}; tags={deleted}; manifests={manifests}", request.dry_run));
    let change = Change { operation: "retention.run", project: Some(&name), resource: &name, detail };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::OK, &report))
}
