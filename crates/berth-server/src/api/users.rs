//! Users, and the caller itself (`/me`): create, list, get, enable/disable, make or unmake
//! a system administrator, change a password. System administrators manage users; a user
//! may read itself and change its own password (with the old one).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Error, ErrorKind};
use berth_meta::{PageSpec, User, UserUpdate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Paging, Reply, bad_request, check_name, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::password;
use berth_access::{Access, Principal, Subject};

/// A user as the API shows it (never its password hash).
#[derive(Serialize, ToSchema)]
pub struct UserView {
    name: String,
    /// A system administrator.
    admin: bool,
    disabled: bool,
    /// Unix seconds.
    created_at: i64,
}

impl From<&User> for UserView {
    fn from(u: &User) -> UserView {
        UserView { name: u.name.clone(), admin: u.admin, disabled: u.disabled, created_at: u.created_at }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    name: String,
    /// At least 8 characters.
    password: String,
    #[serde(default)]
    admin: bool,
}

/// What to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    admin: Option<bool>,
    disabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    /// The current password: required when users change their own (system
    /// administrators may set anyone's without it).
    old_password: Option<String>,
    /// At least 8 characters.
    password: String,
}

/// The caller: who it is and where it is a member.
#[derive(Serialize, ToSchema)]
pub struct Me {
    /// `None` for an anonymous caller.
    name: Option<String>,
    /// `user`, `robot` or `anonymous`.
    kind: &'static str,
    admin: bool,
    /// A user's memberships, or a robot's grants as projects.
    projects: Vec<Membership>,
}

#[derive(Serialize, ToSchema)]
pub struct Membership {
    project: String,
    /// The role of a user (`project-admin`, `maintainer`, …); `None` for a robot.
    role: Option<&'static str>,
    /// A robot's permissions in the project.
    permissions: Vec<&'static str>,
}

/// Passwords shorter than this are refused.
const MIN_PASSWORD: usize = 8;

fn check_password(password: &str) -> Result<(), Error> {
    if password.chars().count() < MIN_PASSWORD {
        return Err(bad_request(format!("a password needs at least {MIN_PASSWORD} characters")));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/v1/me", tag = "users",
    responses((status = 200, body = Me), (status = 401, body = super::ErrorBody)))]
pub async fn me(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    let principal = caller.authorize(&registry, Access::Authenticated).await?;
    let store = &*registry.identity;
    let (kind, projects) = match &principal.subject {
        Subject::Anonymous => ("anonymous", Vec::new()),
        Subject::User(name) => {
            let members = store.memberships(name).await?;
            let projects = members
                .into_iter()
                .map(|m| Membership { project: m.project, role: Some(m.role.as_str()), permissions: Vec::new() })
                .collect();
            ("user", projects)
        }
        Subject::Robot(name) => {
            let grants = store.robot(name).await?.map(|r| r.grants).unwrap_or_default();
            let projects = grants
                .into_iter()
                .map(|g| Membership {
                    project: g.project,
                    role: None,
                    permissions: g.permissions.iter().map(|p| p.as_str()).collect(),
                })
                .collect();
            ("robot", projects)
        }
    };
    let me = Me { name: principal.name().map(str::to_owned), kind, admin: principal.admin, projects };
    Ok(json(StatusCode::OK, &me))
}

#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(Paging),
    responses((status = 200, body = [UserView]), (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let page = caller.page()?;
    let spec = PageSpec { last: page.last.as_deref(), limit: page.n + 1, max_bytes: usize::MAX };
    let users = registry.identity.users(spec).await?;
    Ok(page.respond::<_, UserView>(users, |u| &u.name, "/api/v1/users"))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = NewUser,
    responses((status = 201, body = UserView), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let new: NewUser = parse_body(&body)?;
    check_name("user", &new.name)?;
    check_password(&new.password)?;
    let hash = password::hash_blocking(new.password).await?;
    let user = registry.identity.create_user(&new.name, &hash, new.admin).await?;
    let detail = Some(format!("admin={}", user.admin));
    caller
        .audit(&registry, &principal, Change { operation: "user.create", project: None, resource: &user.name, detail })
        .await;
    Ok(json(StatusCode::CREATED, &UserView::from(&user)))
}

#[utoipa::path(get, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path)),
    responses((status = 200, body = UserView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    self_or_admin(&registry, &caller, &name).await?;
    let user = registry.identity.user(&name).await?.ok_or_else(|| unknown("user", &name))?;
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}

#[utoipa::path(patch, path = "/api/v1/users/{name}", tag = "users", params(("name" = String, Path)),
    request_body = UserPatch,
    responses((status = 200, body = UserView), (status = 404, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn update(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let patch: UserPatch = parse_body(&body)?;
    // An administrator cannot lock itself out (someone else must do it).
    if principal.subject == Subject::User(name.clone()) && (patch.admin == Some(false) || patch.disabled == Some(true))
    {
        return Err(Error::new(ErrorKind::Conflict)
            .with_message("administrators cannot disable themselves or drop their own admin role")
            .into());
    }
    let update = UserUpdate { password_hash: None, admin: patch.admin, disabled: patch.disabled };
    let user = registry.identity.update_user(&name, &update).await?;
    let detail = Some(format!("admin={} disabled={}", user.admin, user.disabled));
    caller
        .audit(&registry, &principal, Change { operation: "user.update", project: None, resource: &name, detail })
        .await;
    Ok(json(StatusCode::OK, &UserView::from(&user)))
}

#[utoipa::path(put, path = "/api/v1/users/{name}/password", tag = "users", params(("name" = String, Path)),
    request_body = PasswordChange,
    responses((status = 204), (status = 400, body = super::ErrorBody), (status = 403, body = super::ErrorBody)))]
pub async fn password(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = self_or_admin(&registry, &caller, &name).await?;
    let change: PasswordChange = parse_body(&body)?;
    check_password(&change.password)?;
    let store = &*registry.identity;
    let user = store.user(&name).await?.ok_or_else(|| unknown("user", &name))?;
    if !principal.admin {
        let old = change.old_password.ok_or_else(|| bad_request("old_password is required"))?;
        if !password::verify_blocking(old, user.password_hash).await {
            return Err(Error::new(ErrorKind::Denied).with_message("the old password does not match").into());
        }
    }
    let hash = password::hash_blocking(change.password).await?;
    store.update_user(&name, &UserUpdate { password_hash: Some(hash), ..UserUpdate::default() }).await?;
    let change = Change { operation: "user.password", project: None, resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

/// The user `name` itself, or a system administrator.
async fn self_or_admin(registry: &Registry, caller: &Caller, name: &str) -> Result<Principal, Error> {
    let principal = caller.authorize(registry, Access::Authenticated).await?;
    if matches!(&principal.subject, Subject::User(own) if own == name) {
        return Ok(principal);
    }
    caller.authorize(registry, Access::System).await
}
