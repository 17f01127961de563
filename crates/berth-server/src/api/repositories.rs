//! Deleting a whole repository (Harbor's "delete repository"): what a project's admins and
//! maintainers may do, and what deleting a project needs first.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::{Permission, project_of};
use berth_core::{Error, ErrorKind, RepoName};

use super::{Caller, Change, Reply};
use crate::state::Registry;
use berth_access::Access;

#[utoipa::path(delete, path = "/api/v1/repositories/{name}", tag = "repositories",
    params(("name" = String, Path, description = "The repository, slashes encoded as %2F")),
    responses((status = 204, description = "Deleted: its manifests, tags and blob links; garbage collection frees \
            the bytes no other repository uses"),
        (status = 403, description = "Not permitted, or a tag in it is immutable", body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let repo = RepoName::parse(&name)?;
    let project = project_of(&repo);
    let principal = caller.authorize(&registry, Access::Project(project, Permission::DeleteRepository)).await?;
    let Some(manifests) = registry.meta.delete_repository(&repo).await? else {
        return Err(Error::new(ErrorKind::NameUnknown).with_detail(repo.as_str()).into());
    };
    let detail = Some(format!("{manifests} manifests"));
    let change = Change { operation: "repository.delete", project: Some(project), resource: repo.as_str(), detail };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}
