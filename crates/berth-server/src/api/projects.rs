//! Projects: create, list (a caller sees the public ones and those it may pull from),
//! get, make public or private, set or clear its quota, delete when it holds no
//! repository. Creating, changing and deleting projects is system administration. A
//! project's JSON carries its quota and usage (`berth_meta::PolicyStore`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::{DEFAULT_PROJECT, Permission};
use berth_core::{Error, ErrorKind};
use berth_meta::{PageSpec, Project, Quota};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Paging, Reply, check_name, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::Access;

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    name: String,
    /// Anonymous callers may pull.
    public: bool,
    /// Unix seconds.
    created_at: i64,
    /// The most bytes of blobs its repositories may hold; `null`: unlimited.
    quota_bytes: Option<u64>,
    /// Bytes of the distinct blobs its repositories hold (a blob counts once however many
    /// of them hold it).
    used_bytes: u64,
}

impl From<&(Project, Quota)> for ProjectView {
    fn from((p, q): &(Project, Quota)) -> ProjectView {
        ProjectView {
            name: p.name.clone(),
            public: p.public,
            created_at: p.created_at,
            quota_bytes: q.limit,
            used_bytes: q.used,
        }
    }
}

/// A project with its quota and usage.
async fn with_quota(registry: &Registry, project: Project) -> Result<(Project, Quota), Error> {
    let quota = registry.policy.quota(&project.name).await?;
    Ok((project, quota))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    /// Lowercase letters and digits separated by single `.`, `_` or `-`: the first
    /// component of its repositories' names.
    name: String,
    /// Private unless said otherwise.
    #[serde(default)]
    public: bool,
    /// A limit in bytes on its repositories' blobs; none: unlimited.
    #[serde(default)]
    quota_bytes: Option<u64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    public: Option<bool>,
    /// A new limit in bytes, or `null` for none. Lowering it below the usage deletes
    /// nothing: pushes are refused until the usage is under it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<u64>)]
    quota_bytes: Option<Option<u64>>,
}

/// A field that is present, `null` or not: `Some`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(Paging),
    responses((status = 200, body = [ProjectView]), (status = 401, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    let principal = caller.authorize(&registry, Access::Authenticated).await?;
    let page = caller.page()?;
    let store = &*registry.identity;
    // Reads pages of the store until this page is full of projects the caller may see.
    let mut visible = Vec::new();
    let mut last = page.last.clone();
    loop {
        let spec = PageSpec { last: last.as_deref(), limit: page.n + 1, max_bytes: usize::MAX };
        let batch = store.projects(spec).await?;
        let exhausted = batch.len() <= page.n as usize;
        last = batch.last().map(|p| p.name.clone());
        visible.extend(
            batch
                .into_iter()
                .filter(|p| p.public || principal.admin || principal.may(Access::Project(&p.name, Permission::Pull))),
        );
        if exhausted || visible.len() > page.n as usize {
            break;
        }
    }
    visible.truncate(page.n as usize + 1);
    let mut views = Vec::with_capacity(visible.len());
    for project in visible {
        views.push(with_quota(&registry, project).await?);
    }
    Ok(page.respond::<_, ProjectView>(views, |(p, _)| &p.name, "/api/v1/projects"))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = ProjectView), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let new: NewProject = parse_body(&body)?;
    check_name("project", &new.name)?;
    let project = registry.identity.create_project(&new.name, new.public).await?;
    if new.quota_bytes.is_some() {
        registry.policy.set_quota(&project.name, new.quota_bytes).await?;
    }
    let project = with_quota(&registry, project).await?;
    let change = Change {
        operation: "project.create",
        project: Some(&project.0.name),
        resource: &project.0.name,
        detail: Some(match project.1.limit {
            Some(limit) => format!("public={} quota={limit}", project.0.public),
            None => format!("public={}", project.0.public),
        }),
    };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::CREATED, &ProjectView::from(&project)))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = ProjectView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    caller.authorize(&registry, Access::Project(&name, Permission::Pull)).await?;
    let project = registry.identity.project(&name).await?.ok_or_else(|| unknown("project", &name))?;
    Ok(json(StatusCode::OK, &ProjectView::from(&with_quota(&registry, project).await?)))
}

#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    request_body = ProjectPatch,
    responses((status = 200, body = ProjectView), (status = 404, body = super::ErrorBody)))]
pub async fn update(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let patch: ProjectPatch = parse_body(&body)?;
    let mut changes = Vec::new();
    if let Some(public) = patch.public {
        registry.identity.set_project_public(&name, public).await?;
        changes.push(format!("public={public}"));
    }
    if let Some(limit) = patch.quota_bytes {
        registry.policy.set_quota(&name, limit).await?;
        changes.push(format!("quota={}", quota_text(limit)));
    }
    let project = registry.identity.project(&name).await?.ok_or_else(|| unknown("project", &name))?;
    let detail = Some(changes.join(" "));
    caller
        .audit(
            &registry,
            &principal,
            Change { operation: "project.update", project: Some(&name), resource: &name, detail },
        )
        .await;
    Ok(json(StatusCode::OK, &ProjectView::from(&with_quota(&registry, project).await?)))
}

/// A limit as the audit log says it: bytes, or `none`.
fn quota_text(limit: Option<u64>) -> String {
    limit.map_or_else(|| "none".to_owned(), |l| l.to_string())
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 204, description = "Deleted, with its members and robots"),
        (status = 404, body = super::ErrorBody),
        (status = 409, description = "The project still holds repositories", body = super::ErrorBody)))]
pub async fn delete(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    if name == DEFAULT_PROJECT {
        let message = format!("{DEFAULT_PROJECT} holds every one-component repository name and cannot be deleted");
        return Err(Error::new(ErrorKind::Conflict).with_message(message).into());
    }
    registry.identity.delete_project(&name).await.map_err(|e| match e.kind {
        ErrorKind::Conflict if e.message.is_none() => {
            e.with_message(format!("project {name:?} still holds repositories: delete them first"))
        }
        _ => e,
    })?;
    let change = Change { operation: "project.delete", project: Some(&name), resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}
