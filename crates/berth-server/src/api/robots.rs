//! Robot accounts: create (the secret is in that one response and never again), list,
//! get, change (description, grants, expiry, enabled), rotate the secret, delete.
//!
//! A project's robots, `robot$PROJECT+NAME`, are managed by whoever holds
//! `manage-robots` there and hold grants in that project only; system robots,
//! `robot$NAME`, are managed by system administrators and may hold grants in several
//! projects. The grant rule ([`check_grantor`]) binds everyone but system administrators:
//! a robot one creates, changes or takes the secret of holds nothing its caller does not
//! hold, and outlives no robot that calls (nor a keyless robot's ID token); so nobody
//! widens their own grants either. A keyless robot has a `trust` (the external OIDC issuer and the claim rules
//! it accepts, kept as given; the token service checks it) instead of a secret.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::Permission;
use berth_core::{Error, ErrorKind};
use berth_meta::{IdentityStore, PageSpec, Robot, RobotGrant, RobotUpdate, now};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Reply, bad_request, check_name, json, parse_body, unknown};
use crate::seam::presented;
use crate::state::Registry;
use berth_access::authorizer::Presented;
use berth_access::oidc::{IssuerPolicy, Trust, expiry_of};
use berth_access::password;
use berth_access::{Access, Principal, Subject};

/// A robot as the API shows it (never its secret or the secret's hash).
#[derive(Serialize, ToSchema)]
pub struct RobotView {
    /// `robot$PROJECT+NAME` or `robot$NAME`.
    name: String,
    description: String,
    disabled: bool,
    /// Unix seconds; `null` never expires.
    expires_at: Option<i64>,
    grants: Vec<Grant>,
    /// Authenticates with an external issuer's identity tokens, not a secret.
    keyless: bool,
    /// A keyless robot's trust (issuer and claim rules).
    #[schema(value_type = Option<Object>)]
    trust: Option<serde_json::Value>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl From<&Robot> for RobotView {
    fn from(r: &Robot) -> RobotView {
        RobotView {
            name: r.name.clone(),
            description: r.description.clone(),
            disabled: r.disabled,
            expires_at: r.expires_at,
            grants: r
                .grants
                .iter()
                .map(|g| Grant {
                    project: g.project.clone(),
                    permissions: g.permissions.iter().map(|p| p.as_str().to_owned()).collect(),
                })
                .collect(),
            keyless: r.trust.is_some(),
            trust: r.trust.as_deref().and_then(|t| serde_json::from_str(t).ok()),
            created_by: r.created_by.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// What a robot may do in one project.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    project: String,
    /// A subset of `pull`, `push`, `delete`, `delete-repository`, `list-repositories`,
    /// `manage-members`, `manage-robots`, `manage-tag-policies`, `manage-webhooks`, `read-audit-log`.
    permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRobot {
    /// The robot's own part of its name (`ci` in `robot$team+ci`).
    name: String,
    #[serde(default)]
    description: String,
    /// At least one; a project's robot holds grants in that project only.
    grants: Vec<Grant>,
    /// Unix seconds, in the future; absent never expires.
    expires_at: Option<i64>,
    /// Makes a keyless robot: the issuer, audiences, subject and claim rules it trusts
    /// (`{"issuer","audiences","subject","claims"}`, see docs/access.md).
    #[schema(value_type = Option<Object>)]
    trust: Option<serde_json::Value>,
}

/// What to change; absent fields stay as they are.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RobotPatch {
    description: Option<String>,
    grants: Option<Vec<Grant>>,
    /// Unix seconds; `null` for never.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    expires_at: Option<Option<i64>>,
    disabled: Option<bool>,
    /// A keyless robot's new trust.
    #[schema(value_type = Option<Object>)]
    trust: Option<serde_json::Value>,
}

/// A field that is present, even as `null` (`Some(None)`), unlike an absent one (`None`).
fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// A robot with its secret: the only response that holds it.
#[derive(Serialize, ToSchema)]
pub struct RobotSecret {
    robot: RobotView,
    /// The robot's password; `null` for a keyless robot. Shown once.
    secret: Option<String>,
}

/// Descriptions longer than this are refused.
const MAX_DESCRIPTION: usize = 1024;

#[utoipa::path(get, path = "/api/v1/projects/{project}/robots", tag = "robots", params(("project" = String, Path)),
    responses((status = 200, body = [RobotView]), (status = 403, body = super::ErrorBody)))]
pub async fn list_in_project(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(project): Path<String>,
) -> Reply {
    caller.authorize(&registry, Access::Project(&project, Permission::ManageRobots)).await?;
    respond_list(&registry, &caller, Some(&project)).await
}

#[utoipa::path(get, path = "/api/v1/robots", tag = "robots",
    responses((status = 200, body = [RobotView]), (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    respond_list(&registry, &caller, None).await
}

async fn respond_list(registry: &Registry, caller: &Caller, project: Option<&str>) -> Reply {
    let page = caller.page()?;
    let spec = PageSpec { last: page.last.as_deref(), limit: page.n + 1, max_bytes: usize::MAX };
    let robots = registry.identity.robots(project, spec).await?;
    let path = match project {
        Some(p) => format!("/api/v1/projects/{p}/robots"),
        None => "/api/v1/robots".to_owned(),
    };
    Ok(page.respond::<_, RobotView>(robots, |r| &r.name, &path))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/robots", tag = "robots", params(("project" = String, Path)),
    request_body = NewRobot,
    responses((status = 201, body = RobotSecret), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create_in_project(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::Project(&project, Permission::ManageRobots)).await?;
    let new: NewRobot = parse_body(&body)?;
    check_name("robot", &new.name)?;
    let name = format!("robot${project}+{}", new.name);
    create_robot(&registry, &caller, &principal, name, new, Some(&project)).await
}

#[utoipa::path(post, path = "/api/v1/robots", tag = "robots", request_body = NewRobot,
    responses((status = 201, body = RobotSecret), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let new: NewRobot = parse_body(&body)?;
    check_name("robot", &new.name)?;
    let name = format!("robot${}", new.name);
    create_robot(&registry, &caller, &principal, name, new, None).await
}

async fn create_robot(
    registry: &Registry,
    caller: &Caller,
    principal: &Principal,
    name: String,
    new: NewRobot,
    scope: Option<&str>,
) -> Reply {
    let store = &*registry.identity;
    check_description(&new.description)?;
    let grants = check_grants(store, new.grants, scope).await?;
    let now = now();
    if new.expires_at.is_some_and(|at| at <= now) {
        return Err(bad_request("expires_at must be in the future").into());
    }
    check_grantor(registry, caller, principal, &grants, new.expires_at).await?;
    let (secret, secret_hash, trust) = match new.trust {
        Some(trust) => (None, None, Some(check_trust(registry, trust)?)),
        None => {
            let secret = password::random_secret();
            (Some(secret.clone()), Some(password::hash_blocking(secret).await?), None)
        }
    };
    let robot = Robot {
        name,
        description: new.description,
        secret_hash,
        disabled: false,
        expires_at: new.expires_at,
        grants,
        trust,
        created_by: principal.name().unwrap_or("anonymous").to_owned(),
        created_at: now,
        updated_at: now,
    };
    let robot = store.create_robot(&robot).await?;
    caller.audit(registry, principal, robot_change("robot.create", &robot)).await;
    Ok(json(StatusCode::CREATED, &RobotSecret { robot: RobotView::from(&robot), secret }))
}

#[utoipa::path(get, path = "/api/v1/robots/{name}", tag = "robots", params(("name" = String, Path)),
    responses((status = 200, body = RobotView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    authorize_for(&registry, &caller, &name).await?;
    let robot = registry.identity.robot(&name).await?.ok_or_else(|| unknown("robot", &name))?;
    Ok(json(StatusCode::OK, &RobotView::from(&robot)))
}

#[utoipa::path(patch, path = "/api/v1/robots/{name}", tag = "robots", params(("name" = String, Path)),
    request_body = RobotPatch,
    responses((status = 200, body = RobotView), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn update(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = authorize_for(&registry, &caller, &name).await?;
    let patch: RobotPatch = parse_body(&body)?;
    let store = &*registry.identity;
    let robot = store.robot(&name).await?.ok_or_else(|| unknown("robot", &name))?;
    if let Some(description) = &patch.description {
        check_description(description)?;
    }
    let grants = match patch.grants {
        Some(grants) => Some(check_grants(store, grants, project_of_robot(&name)).await?),
        None => None,
    };
    if let Some(Some(at)) = patch.expires_at
        && at <= now()
    {
        return Err(bad_request("expires_at must be in the future").into());
    }
    let trust = match patch.trust {
        Some(_) if robot.trust.is_none() => {
            return Err(bad_request("a robot with a secret cannot be given a trust; create a keyless robot").into());
        }
        Some(trust) => Some(Some(check_trust(&registry, trust)?)),
        None => None,
    };
    // Any change (its trust, enabling it) is a hold on the robot as it will be.
    let expires_at = patch.expires_at.unwrap_or(robot.expires_at);
    check_grantor(&registry, &caller, &principal, grants.as_deref().unwrap_or(&robot.grants), expires_at).await?;
    let update = RobotUpdate {
        description: patch.description,
        secret_hash: None,
        disabled: patch.disabled,
        expires_at: patch.expires_at,
        grants,
        trust,
    };
    let robot = store.update_robot(&name, &update).await?;
    caller.audit(&registry, &principal, robot_change("robot.update", &robot)).await;
    Ok(json(StatusCode::OK, &RobotView::from(&robot)))
}

#[utoipa::path(delete, path = "/api/v1/robots/{name}", tag = "robots", params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody)))]
pub async fn delete(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = authorize_for(&registry, &caller, &name).await?;
    if !registry.identity.delete_robot(&name).await? {
        return Err(unknown("robot", &name).into());
    }
    let change = Change { operation: "robot.delete", project: project_of_robot(&name), resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, path = "/api/v1/robots/{name}/secret", tag = "robots", params(("name" = String, Path)),
    responses((status = 200, description = "A new secret; the old one stops working", body = RobotSecret),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn rotate(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = authorize_for(&registry, &caller, &name).await?;
    let store = &*registry.identity;
    let robot = store.robot(&name).await?.ok_or_else(|| unknown("robot", &name))?;
    if robot.trust.is_some() {
        return Err(Error::new(ErrorKind::Conflict).with_message("a keyless robot has no secret to rotate").into());
    }
    // The new secret is the robot's whole power, handed to the caller.
    check_grantor(&registry, &caller, &principal, &robot.grants, robot.expires_at).await?;
    let secret = password::random_secret();
    let hash = password::hash_blocking(secret.clone()).await?;
    let update = RobotUpdate { secret_hash: Some(Some(hash)), ..RobotUpdate::default() };
    let robot = store.update_robot(&name, &update).await?;
    caller.audit(&registry, &principal, robot_change("robot.rotate", &robot)).await;
    Ok(json(StatusCode::OK, &RobotSecret { robot: RobotView::from(&robot), secret: Some(secret) }))
}

/// A change to `robot`: its grants and state as the detail (never its secret).
fn robot_change<'a>(operation: &'static str, robot: &'a Robot) -> Change<'a> {
    let grants: Vec<String> = robot
        .grants
        .iter()
        .map(|g| format!("{}={}", g.project, g.permissions.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")))
        .collect();
    let detail = format!("grants={} disabled={} expires_at={:?}", grants.join(" "), robot.disabled, robot.expires_at);
    Change { operation, project: project_of_robot(&robot.name), resource: &robot.name, detail: Some(detail) }
}

/// The project of a project's robot (`robot$PROJECT+NAME`); `None` for a system robot.
fn project_of_robot(name: &str) -> Option<&str> {
    name.strip_prefix("robot$")?.split_once('+').map(|(project, _)| project)
}

/// A project's robot is managed with `manage-robots` there; a system robot by system
/// administrators.
async fn authorize_for(registry: &Registry, caller: &Caller, name: &str) -> Result<Principal, Error> {
    match project_of_robot(name) {
        Some(project) => caller.authorize(registry, Access::Project(project, Permission::ManageRobots)).await,
        None => caller.authorize(registry, Access::System).await,
    }
}

/// The grant rule: unless `principal` is a system administrator, it must hold every
/// permission of `grants` in its project, and a robot whose login ends (its expiry; a
/// keyless robot's ID token) may only give a robot `expires_at` no later than that.
/// Applied to a robot as it will be after a create, a change or a rotation, so a robot
/// changing itself never widens its grants, and a short-lived login never becomes a
/// lasting secret.
async fn check_grantor(
    registry: &Registry,
    caller: &Caller,
    principal: &Principal,
    grants: &[RobotGrant],
    expires_at: Option<i64>,
) -> Result<(), Error> {
    if principal.admin {
        return Ok(());
    }
    let who = principal.name().unwrap_or("anonymous");
    for grant in grants {
        if let Some(missing) = grant.permissions.iter().find(|p| !principal.may(Access::Project(&grant.project, **p))) {
            return Err(not_held(who, missing.as_str(), &grant.project));
        }
    }
    let Subject::Robot(name) = &principal.subject else { return Ok(()) };
    let Some(robot) = registry.identity.robot(name).await? else { return Ok(()) };
    let login_ends = robot.trust.is_some().then(|| keyless_login_ends(caller));
    if let Some(own) = [robot.expires_at, login_ends].into_iter().flatten().min()
        && expires_at.is_none_or(|at| at > own)
    {
        let what = if login_ends == Some(own) { "its login ends with its ID token" } else { "it expires" };
        return Err(Error::new(ErrorKind::Denied).with_message(format!(
            "{who}: {what} at {own}, so it cannot make a robot that outlives it (expires_at must be set, at most \
             {own})"
        )));
    }
    Ok(())
}

/// When a keyless robot's login ends: the `exp` of the ID token it presented as its
/// password, or of the registry token issued on one (which ends no later); `authorize`
/// has verified either. Anything else ends it now.
fn keyless_login_ends(caller: &Caller) -> i64 {
    let credential = match presented(&caller.headers) {
        Presented::Basic(_, password) => password,
        Presented::Bearer(token) => token,
        Presented::Nothing | Presented::Unreadable => return now(),
    };
    expiry_of(&credential).unwrap_or_else(now)
}

/// The grant rule's refusal: `who` lacks `permission` in `project`.
pub(super) fn not_held(who: &str, permission: &str, project: &str) -> Error {
    Error::new(ErrorKind::Denied).with_message(format!(
        "{who} does not hold `{permission}` in project {project:?}: nobody grants what they do not hold"
    ))
}

fn check_description(description: &str) -> Result<(), Error> {
    if description.len() > MAX_DESCRIPTION {
        return Err(bad_request(format!("a description has at most {MAX_DESCRIPTION} bytes")));
    }
    Ok(())
}

/// A keyless robot's trust document, validated (`access::oidc::Trust`) and its issuer one
/// the server's policy allows (`[auth] oidc_issuers`), kept as given.
fn check_trust(registry: &Registry, trust: serde_json::Value) -> Result<String, Error> {
    let document = trust.to_string();
    let default = IssuerPolicy::default();
    let policy = registry.tokens.as_ref().map_or(&default, |t| &t.config.oidc.issuers);
    Trust::parse(&document)?.check_allowed(policy)?;
    Ok(document)
}

/// Grants as the store keeps them: at least one, each in an existing project (only
/// `scope` for a project's robot), once per project, permissions known, sorted and
/// without duplicates.
async fn check_grants(
    store: &dyn IdentityStore,
    grants: Vec<Grant>,
    scope: Option<&str>,
) -> Result<Vec<RobotGrant>, Error> {
    if grants.is_empty() {
        return Err(bad_request("a robot needs at least one grant"));
    }
    let mut checked: Vec<RobotGrant> = Vec::with_capacity(grants.len());
    for grant in grants {
        if scope.is_some_and(|p| p != grant.project) {
            return Err(bad_request(format!("a robot of project {:?} holds grants in it only", scope.unwrap_or(""))));
        }
        if checked.iter().any(|g| g.project == grant.project) {
            return Err(bad_request(format!("project {:?} is granted twice", grant.project)));
        }
        if store.project(&grant.project).await?.is_none() {
            return Err(bad_request(format!("no project named {:?}", grant.project)));
        }
        let mut permissions = grant
            .permissions
            .iter()
            .map(|p| Permission::parse(p).ok_or_else(|| bad_request(format!("unknown permission {p:?}"))))
            .collect::<Result<Vec<_>, _>>()?;
        permissions.sort();
        permissions.dedup();
        if permissions.is_empty() {
            return Err(bad_request(format!("the grant in {:?} names no permission", grant.project)));
        }
        checked.push(RobotGrant { project: grant.project, permissions });
    }
    checked.sort_by(|a, b| a.project.cmp(&b.project));
    Ok(checked)
}
