//! Projects: create, list (a caller sees the public ones and those it may pull from),
//! get, make public or private, delete when it holds no repository. Creating, changing
//! and deleting projects is system administration.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::{DEFAULT_PROJECT, Permission};
use berth_core::{Error, ErrorKind};
use berth_meta::{PageSpec, Project};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Paging, Reply, check_name, json, parse_body, unknown};
use crate::{Access, Registry};

#[derive(Serialize, ToSchema)]
pub struct ProjectView {
    name: String,
    /// Anonymous callers may pull.
    public: bool,
    /// Unix seconds.
    created_at: i64,
}

impl From<&Project> for ProjectView {
    fn from(p: &Project) -> ProjectView {
        ProjectView { name: p.name.clone(), public: p.public, created_at: p.created_at }
    }
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
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectPatch {
    public: bool,
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
    Ok(page.respond::<_, ProjectView>(visible, |p| &p.name, "/api/v1/projects"))
}

#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = NewProject,
    responses((status = 201, body = ProjectView), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let new: NewProject = parse_body(&body)?;
    check_name("project", &new.name)?;
    let project = registry.identity.create_project(&new.name, new.public).await?;
    let change = Change {
        operation: "project.create",
        project: Some(&project.name),
        resource: &project.name,
        detail: Some(format!("public={}", project.public)),
    };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::CREATED, &ProjectView::from(&project)))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = ProjectView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    caller.authorize(&registry, Access::Project(&name, Permission::Pull)).await?;
    let project = registry.identity.project(&name).await?.ok_or_else(|| unknown("project", &name))?;
    Ok(json(StatusCode::OK, &ProjectView::from(&project)))
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
    let project = registry.identity.set_project_public(&name, patch.public).await?;
    let detail = Some(format!("public={}", project.public));
    caller
        .audit(
            &registry,
            &principal,
            Change { operation: "project.update", project: Some(&name), resource: &name, detail },
        )
        .await;
    Ok(json(StatusCode::OK, &ProjectView::from(&project)))
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
