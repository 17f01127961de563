//! The audit log, read: filtered by user, project, operation and time, newest first, a
//! page at a time (`limit`, `before`). System administrators read all of it; whoever
//! holds `read-audit-log` in a project reads that project's entries.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use berth_core::access::Permission;
use berth_meta::{AuditQuery, AuditRecord};
use serde::Serialize;
use utoipa::{IntoParams, ToSchema};

use super::{Caller, MAX_PAGE, Reply, bad_request, json, next_link};
use crate::state::Registry;
use berth_access::Access;

/// The query's parameters (documentation; they are read from the query string).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct Filters {
    /// Entries of this user or robot.
    user: Option<String>,
    /// Entries of this project (required unless the caller is a system administrator).
    project: Option<String>,
    /// An operation (`manifest.push`) or a prefix ending in `.` (`robot.`).
    operation: Option<String>,
    /// Unix milliseconds, inclusive.
    since: Option<i64>,
    /// Unix milliseconds, exclusive.
    until: Option<i64>,
    /// Entries older than this id (the last id of the previous page).
    before: Option<i64>,
    /// At most this many entries (1–1000, default 100).
    limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntry {
    id: i64,
    /// Unix milliseconds.
    at_ms: i64,
    /// The user or robot; `null` for an anonymous caller.
    actor: Option<String>,
    address: String,
    operation: String,
    project: Option<String>,
    resource: Option<String>,
    /// `success`, `denied` or `failure`.
    outcome: String,
    detail: Option<String>,
    /// How many identical pulls this entry stands for (1 for everything else): pulls
    /// queued together that differ only in time are recorded once, at the first one's time.
    count: u32,
}

impl From<&AuditRecord> for AuditEntry {
    fn from(r: &AuditRecord) -> AuditEntry {
        let e = &r.event;
        AuditEntry {
            id: r.id,
            at_ms: e.at_ms,
            actor: e.actor.clone(),
            address: e.address.clone(),
            operation: e.operation.clone(),
            project: e.project.clone(),
            resource: e.resource.clone(),
            outcome: e.outcome.clone(),
            detail: e.detail.clone(),
            count: e.count,
        }
    }
}

#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", params(Filters),
    responses((status = 200, body = [AuditEntry]), (status = 403, body = super::ErrorBody)))]
pub async fn query(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    let project = caller.param("project");
    match &project {
        Some(p) => caller.authorize(&registry, Access::Project(p, Permission::ReadAuditLog)).await?,
        None => caller.authorize(&registry, Access::System).await?,
    };
    let limit = caller.number::<u32>("limit")?.unwrap_or(super::DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad_request(format!("limit must be between 1 and {MAX_PAGE}")).into());
    }
    let query = AuditQuery {
        actor: caller.param("user"),
        project,
        operation: caller.param("operation"),
        since_ms: caller.number("since")?,
        until_ms: caller.number("until")?,
        before_id: caller.number("before")?,
        limit: limit + 1,
    };
    let mut records = registry.jobs.audit.store().query(&query).await?;
    let more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let entries: Vec<AuditEntry> = records.iter().map(AuditEntry::from).collect();
    let mut response = json(StatusCode::OK, &entries);
    if let (true, Some(last)) = (more, records.last()) {
        // The same filters, from the last entry on.
        let mut next = form_urlencoded::Serializer::new(String::new());
        for key in ["user", "project", "operation", "since", "until"] {
            if let Some(value) = caller.param(key) {
                next.append_pair(key, &value);
            }
        }
        next.append_pair("limit", &limit.to_string()).append_pair("before", &last.id.to_string());
        next_link(&mut response, &format!("/api/v1/audit?{}", next.finish()));
    }
    Ok(response)
}
