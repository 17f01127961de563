//! A project's members: list (who may list the project's repositories may see them), set
//! a user's role, remove a user. Changing members needs `manage-members` in the project,
//! and a role is given only by a caller holding each of its permissions there (the grant
//! rule, as for robots; system administrators are not bound by it).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::{MATRIX, Permission, Role};
use berth_meta::{Member, PageSpec};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Paging, Reply, bad_request, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::Access;

#[derive(Serialize, ToSchema)]
pub struct MemberView {
    user: String,
    /// `project-admin`, `maintainer`, `developer`, `guest` or `limited-guest`.
    role: &'static str,
}

impl From<&Member> for MemberView {
    fn from(m: &Member) -> MemberView {
        MemberView { user: m.user.clone(), role: m.role.as_str() }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberRole {
    /// `project-admin`, `maintainer`, `developer`, `guest` or `limited-guest`.
    role: String,
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/members", tag = "members",
    params(("project" = String, Path), Paging),
    responses((status = 200, body = [MemberView]), (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller, Path(project): Path<String>) -> Reply {
    caller.authorize(&registry, Access::Project(&project, Permission::ListRepositories)).await?;
    let page = caller.page()?;
    let store = &*registry.identity;
    store.project(&project).await?.ok_or_else(|| unknown("project", &project))?;
    let spec = PageSpec { last: page.last.as_deref(), limit: page.n + 1, max_bytes: usize::MAX };
    let members = store.members(&project, spec).await?;
    Ok(page.respond::<_, MemberView>(members, |m| &m.user, &format!("/api/v1/projects/{project}/members")))
}

#[utoipa::path(put, path = "/api/v1/projects/{project}/members/{user}", tag = "members",
    params(("project" = String, Path), ("user" = String, Path)), request_body = MemberRole,
    responses((status = 200, body = MemberView), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn set(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::Project(&project, Permission::ManageMembers)).await?;
    let body: MemberRole = parse_body(&body)?;
    let role = Role::parse(&body.role).ok_or_else(|| {
        let roles: Vec<&str> = Role::ALL.iter().map(|r| r.as_str()).collect();
        bad_request(format!("unknown role {:?}: one of {}", body.role, roles.join(", ")))
    })?;
    if !principal.admin
        && let Some((missing, _)) =
            MATRIX.iter().find(|(p, _)| role.allows(*p) && !principal.may(Access::Project(&project, *p)))
    {
        let who = principal.name().unwrap_or("anonymous");
        return Err(super::robots::not_held(who, missing.as_str(), &project).into());
    }
    let store = &*registry.identity;
    store.project(&project).await?.ok_or_else(|| unknown("project", &project))?;
    store.user(&user).await?.ok_or_else(|| unknown("user", &user))?;
    let member = store.set_member(&project, &user, role).await?;
    let detail = Some(format!("role={}", role.as_str()));
    caller
        .audit(
            &registry,
            &principal,
            Change { operation: "member.set", project: Some(&project), resource: &user, detail },
        )
        .await;
    Ok(json(StatusCode::OK, &MemberView::from(&member)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{user}", tag = "members",
    params(("project" = String, Path), ("user" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub async fn remove(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, user)): Path<(String, String)>,
) -> Reply {
    let principal = caller.authorize(&registry, Access::Project(&project, Permission::ManageMembers)).await?;
    if !registry.identity.remove_member(&project, &user).await? {
        return Err(unknown("member", &user).into());
    }
    let change = Change { operation: "member.remove", project: Some(&project), resource: &user, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}
