//! Listings for a UI: a project's repositories, a repository's artifacts (manifests with
//! digest, media type, size, tags and push time) and tags. A repository name goes in one
//! path segment with its slashes encoded (`team%2Fapp`).

use std::sync::Arc;

use axum::extract::{Path, State};

use berth_core::{Error, ErrorKind, RepoName};
use berth_meta::{Artifact, project_repositories};
use serde::Serialize;
use utoipa::ToSchema;

use super::{Caller, Paging, Reply};
use crate::state::Registry;
use berth_access::{Access, Action};

#[derive(Serialize, ToSchema)]
pub struct RepositoryView {
    /// The full name (`team/app`).
    name: String,
}

impl From<&String> for RepositoryView {
    fn from(name: &String) -> RepositoryView {
        RepositoryView { name: name.clone() }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ArtifactView {
    digest: String,
    media_type: String,
    artifact_type: Option<String>,
    /// Bytes of the manifest.
    size: u64,
    /// Unix seconds of its first push.
    pushed_at: i64,
    tags: Vec<String>,
}

impl From<&Artifact> for ArtifactView {
    fn from(a: &Artifact) -> ArtifactView {
        ArtifactView {
            digest: a.digest.to_string(),
            media_type: a.media_type.clone(),
            artifact_type: a.artifact_type.clone(),
            size: a.size,
            pushed_at: a.pushed_at,
            tags: a.tags.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct TagView {
    name: String,
}

impl From<&String> for TagView {
    fn from(name: &String) -> TagView {
        TagView { name: name.clone() }
    }
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/repositories", tag = "listings",
    params(("project" = String, Path), Paging),
    responses((status = 200, body = [RepositoryView]), (status = 403, body = super::ErrorBody)))]
pub async fn repositories(State(registry): State<Arc<Registry>>, caller: Caller, Path(project): Path<String>) -> Reply {
    caller.authorize(&registry, berth_access::grants::listing_of(&project)).await?;
    let page = caller.page()?;
    let names = project_repositories(&*registry.meta, &project, page.last.clone(), page.n).await?;
    let path = format!("/api/v1/projects/{project}/repositories");
    Ok(page.respond::<_, RepositoryView>(names, |n| n, &path))
}

#[utoipa::path(get, path = "/api/v1/repositories/{name}/tags", tag = "listings",
    params(("name" = String, Path, description = "The repository, slashes encoded as %2F"), Paging),
    responses((status = 200, body = [TagView]), (status = 404, body = super::ErrorBody)))]
pub async fn tags(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let repo = RepoName::parse(&name)?;
    caller.authorize(&registry, Access::Repository(&repo, Action::Pull)).await?;
    let page = caller.page()?;
    let tags = registry.meta.tags(&repo, page.last.as_deref(), page.n + 1).await?.ok_or_else(unknown)?;
    let path = format!("/api/v1/repositories/{}/tags", encode(&repo));
    Ok(page.respond::<_, TagView>(tags.items, |t| t, &path))
}

#[utoipa::path(get, path = "/api/v1/repositories/{name}/artifacts", tag = "listings",
    params(("name" = String, Path, description = "The repository, slashes encoded as %2F"), Paging),
    responses((status = 200, body = [ArtifactView]), (status = 404, body = super::ErrorBody)))]
pub async fn artifacts(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let repo = RepoName::parse(&name)?;
    caller.authorize(&registry, Access::Repository(&repo, Action::Pull)).await?;
    let page = caller.page()?;
    let found = registry.meta.artifacts(&repo, page.last.as_deref(), page.n + 1).await?.ok_or_else(unknown)?;
    let path = format!("/api/v1/repositories/{}/artifacts", encode(&repo));
    Ok(page.respond::<_, ArtifactView>(found.items, |a| a.digest.as_str(), &path))
}

fn unknown() -> Error {
    Error::new(ErrorKind::NameUnknown)
}

/// A repository name as one path segment.
fn encode(repo: &RepoName) -> String {
    repo.as_str().replace('/', "%2F")
}
