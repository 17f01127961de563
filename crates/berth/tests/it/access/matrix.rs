//! The permission matrix over HTTP, generated from the one table (`access::MATRIX`):
//! anonymous, each role, a robot per permission set, a disabled user, an expired robot
//! and a system administrator × every permission that has an endpoint (pull, push and
//! delete on `/v2`; listing repositories, managing members and robots and reading the
//! audit log on `/api/v1`) on a public and a private project, each with its exact
//! outcome (allowed; 401 with the exact challenge; 403 DENIED). Callers present Basic
//! credentials; what `/token` grants each of them is checked against the same matrix, and
//! so is every grant-changing operation (creating, changing and rotating a robot, setting
//! a member's role) for every permission and role: a caller grants only what it holds.

use base64::Engine as _;
use berth_core::access::{MATRIX, Permission, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Setup, assert_error};

#[derive(Debug)]
enum Caller {
    Anonymous,
    Member(Role),
    Robot(&'static [Permission]),
    DisabledUser,
    ExpiredRobot,
    Admin,
}

impl Caller {
    fn name(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Member(role) => role.as_str().into(),
            Caller::Robot(perms) => {
                format!("robot${}", perms.iter().map(|p| p.as_str()).collect::<Vec<_>>().join("-"))
            }
            Caller::DisabledUser => "disabled".into(),
            Caller::ExpiredRobot => "robot$expired".into(),
            Caller::Admin => "admin".into(),
        }
    }

    fn auth(&self) -> Auth {
        match self {
            Caller::Anonymous => Auth::Anonymous,
            Caller::Admin => Auth::admin(),
            _ => Auth::user(&self.name()),
        }
    }

    /// Whether the matrix lets this caller have `permission` in a project.
    fn holds(&self, permission: Permission) -> bool {
        match self {
            Caller::Member(role) => role.allows(permission),
            Caller::Robot(perms) => perms.contains(&permission),
            Caller::Admin => true,
            Caller::Anonymous | Caller::DisabledUser | Caller::ExpiredRobot => false,
        }
    }

    /// Whether a request from this caller is authenticated at all.
    fn authenticated(&self) -> bool {
        matches!(self, Caller::Member(_) | Caller::Robot(_) | Caller::Admin)
    }
}

/// A user who is no caller, whose membership the `ManageMembers` checks change.
const BYSTANDER: &str = "bystander";

/// The coverage test fails once a row is added to the matrix that no test here exercises.
const ON_V2: [Permission; 3] = [Permission::Pull, Permission::Push, Permission::Delete];
/// Checked in two tests, each on a server of its own: a caller whose credentials fail
/// makes one failed login per check, and one test's worth of checks fits the per-account
/// limit of failed logins (10: five permissions on two projects).
const ON_API: [Permission; 7] = [
    Permission::DeleteRepository,
    Permission::ManageWebhooks,
    Permission::ListRepositories,
    Permission::ManageMembers,
    Permission::ManageRobots,
    Permission::ReadAuditLog,
    Permission::ManageTagPolicies,
];

#[test]
fn every_permission_of_the_matrix_is_exercised() {
    let mut covered: Vec<Permission> = ON_V2.iter().chain(&ON_API).copied().collect();
    covered.sort();
    let mut rows: Vec<Permission> = MATRIX.iter().map(|(p, _)| *p).collect();
    rows.sort();
    assert_eq!(covered, rows);
}

/// A server with a public project `open` and a private one `closed`, each holding
/// `app:pull-me`, a tag per caller for its delete and a repository per caller (`gone<i>`)
/// for its repository delete, and every caller made.
async fn world() -> (Setup, Vec<Caller>) {
    let s = Setup::start().await;
    let callers: Vec<Caller> = [Caller::Anonymous, Caller::DisabledUser, Caller::ExpiredRobot, Caller::Admin]
        .into_iter()
        .chain(Role::ALL.into_iter().map(Caller::Member))
        .chain(
            [&[Permission::Pull][..], &[Permission::Pull, Permission::Push], &[Permission::Pull, Permission::Delete]]
                .into_iter()
                .map(Caller::Robot),
        )
        .chain([
            Caller::Robot(&[Permission::ListRepositories, Permission::ManageRobots, Permission::ReadAuditLog]),
            Caller::Robot(&[Permission::Pull, Permission::ManageMembers]),
        ])
        .collect();
    for (project, public) in [("open", true), ("closed", false)] {
        s.store.create_project(project, public).await.unwrap();
        s.push_as_admin(&format!("{project}/app"), "pull-me").await;
        for (i, caller) in callers.iter().enumerate() {
            s.push_as_admin(&format!("{project}/app"), &format!("del-{}", caller.name().replace('$', "_"))).await;
            s.push_as_admin(&format!("{project}/gone{i}"), "1").await;
        }
    }
    // Visibility is re-read every few seconds: wait until the new projects are seen.
    tokio::time::sleep(berth_access::grants::PROJECTS_TTL).await;
    s.user(BYSTANDER, &[]).await;
    for caller in &callers {
        let name = caller.name();
        match caller {
            Caller::Member(role) => s.user(&name, &[("open", *role), ("closed", *role)]).await,
            Caller::DisabledUser => {
                s.user(&name, &[("open", Role::ProjectAdmin), ("closed", Role::ProjectAdmin)]).await;
                s.disable(&name).await;
            }
            Caller::Robot(perms) => {
                s.robot(&name, "open", perms, None).await;
                let mut robot = s.store.robot(&name).await.unwrap().unwrap();
                robot.grants.push(berth_meta::RobotGrant { project: "closed".into(), permissions: perms.to_vec() });
                let update = berth_meta::RobotUpdate { grants: Some(robot.grants), ..Default::default() };
                s.store.update_robot(&name, &update).await.unwrap();
            }
            Caller::ExpiredRobot => s.robot(&name, "closed", &[Permission::Pull, Permission::Push], Some(1)).await,
            Caller::Anonymous | Caller::Admin => {}
        }
    }
    (s, callers)
}

#[tokio::test]
async fn every_caller_gets_exactly_what_the_matrix_says_on_public_and_private_projects() {
    let (s, callers) = world().await;

    let mut checked = 0;
    for (project, public) in [("open", true), ("closed", false)] {
        let repo = format!("{project}/app");
        for caller in &callers {
            for permission in ON_V2 {
                // Credentials that do not log in are refused even where no credentials
                // would do (a public pull): the client learns its login is bad.
                let valid = caller.authenticated() || matches!(caller, Caller::Anonymous);
                let allowed = valid && (caller.holds(permission) || (permission == Permission::Pull && public));
                let auth = caller.auth();
                let tag = format!("del-{}", caller.name().replace('$', "_"));
                let (r, scope) = match permission {
                    Permission::Pull => (s.pull(&auth, &repo, "pull-me").await, "pull"),
                    Permission::Push => (s.push(&auth, &repo, &format!("new-{}", tag)).await, "pull,push"),
                    _ => {
                        let r = auth.on(s.req(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}")));
                        (r.send().await.unwrap(), "delete")
                    }
                };
                let what = format!("{caller:?} {permission:?} on {project}");
                if allowed {
                    let expected = match permission {
                        Permission::Pull => StatusCode::OK,
                        Permission::Push => StatusCode::CREATED,
                        _ => StatusCode::ACCEPTED,
                    };
                    assert_eq!(r.status(), expected, "{what}: {:?}", r.text().await);
                } else if caller.authenticated() {
                    assert_eq!(r.status(), StatusCode::FORBIDDEN, "{what}");
                    assert_error(r, StatusCode::FORBIDDEN, "DENIED", "requested access to the resource is denied")
                        .await;
                } else {
                    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
                    let message = match caller {
                        Caller::Anonymous => "authentication required",
                        _ => "invalid username or password",
                    };
                    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).await;
                    assert_eq!(
                        challenge.unwrap(),
                        s.challenge(&format!(",scope=\"repository:{repo}:{scope}\"")),
                        "{what}"
                    );
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, callers.len() * 3 * 2);
}

#[tokio::test]
async fn every_caller_gets_exactly_what_the_matrix_says_in_the_management_api() {
    api_matrix(&ON_API[2..]).await;
}

#[tokio::test]
async fn every_caller_gets_exactly_what_the_matrix_says_for_repository_deletes_and_webhooks() {
    api_matrix(&ON_API[..2]).await;
}

async fn api_matrix(permissions: &[Permission]) {
    let (s, callers) = world().await;
    let mut checked = 0;
    for (project, public) in [("open", true), ("closed", false)] {
        for (i, caller) in callers.iter().enumerate() {
            for &permission in permissions {
                let request = match permission {
                    Permission::ListRepositories => {
                        s.req(Method::GET, &format!("/api/v1/projects/{project}/repositories"))
                    }
                    // Makes a user who is no caller a limited guest (whose one permission, pull,
                    // every holder of manage-members here holds): nothing changes for the callers (a
                    // change to a caller's membership would also drop its cached login, and its
                    // next login could meet the failed-login limit of the one address every
                    // caller here shares, which the failing callers have used up).
                    Permission::ManageMembers => s
                        .req(Method::PUT, &format!("/api/v1/projects/{project}/members/{BYSTANDER}"))
                        .json(&json!({ "role": "limited-guest" })),
                    // A permission every holder of manage-robots here holds.
                    Permission::ManageRobots => {
                        s.req(Method::POST, &format!("/api/v1/projects/{project}/robots")).json(&json!({
                            "name": format!("made{i}"),
                            "grants": [{ "project": project, "permissions": ["list-repositories"] }],
                        }))
                    }
                    // A rule of its own per caller, matching no tag the other tests use.
                    Permission::ManageTagPolicies => s
                        .req(Method::POST, &format!("/api/v1/projects/{project}/immutable-rules"))
                        .json(&json!({ "pattern": format!("rule{i}-*") })),
                    Permission::ManageWebhooks => s.req(Method::GET, &format!("/api/v1/projects/{project}/webhooks")),
                    Permission::DeleteRepository => {
                        s.req(Method::DELETE, &format!("/api/v1/repositories/{project}%2Fgone{i}"))
                    }
                    _ => s.req(Method::GET, &format!("/api/v1/audit?project={project}")),
                };
                let r = caller.auth().on(request).send().await.unwrap();
                let what = format!("{caller:?} {permission:?} on {project} (public: {public})");
                // A public project lets anyone pull, nothing more.
                if caller.holds(permission) {
                    let expected = match permission {
                        Permission::ManageRobots | Permission::ManageTagPolicies => StatusCode::CREATED,
                        Permission::DeleteRepository => StatusCode::NO_CONTENT,
                        _ => StatusCode::OK,
                    };
                    assert_eq!(r.status(), expected, "{what}: {:?}", r.text().await);
                } else if caller.authenticated() {
                    assert_error(r, StatusCode::FORBIDDEN, "DENIED", "requested access to the resource is denied")
                        .await;
                } else {
                    let message = match caller {
                        Caller::Anonymous => "authentication required",
                        _ => "invalid username or password",
                    };
                    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).await;
                    assert_eq!(challenge.unwrap(), s.challenge(""), "{what}");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, callers.len() * permissions.len() * 2);
}

#[tokio::test]
async fn tokens_grant_each_caller_exactly_the_repository_actions_the_matrix_gives() {
    let (s, callers) = world().await;
    for (project, public) in [("open", true), ("closed", false)] {
        let repo = format!("{project}/app");
        for caller in &callers {
            let r = caller
                .auth()
                .on(s.req(Method::GET, &format!("/token?service=berth&scope=repository:{repo}:pull,push,delete")))
                .send()
                .await
                .unwrap();
            let what = format!("{caller:?} on {project}");
            if !caller.authenticated() && !matches!(caller, Caller::Anonymous) {
                assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password").await;
                continue;
            }
            assert_eq!(r.status(), StatusCode::OK, "{what}");
            let body: Value = r.json().await.unwrap();
            let payload = body["token"].as_str().unwrap().split('.').nth(1).unwrap().to_owned();
            let claims: Value =
                serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap())
                    .unwrap();
            let granted: Vec<&str> = claims["access"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|a| a["type"] == "repository" && a["name"] == repo.as_str())
                .flat_map(|a| a["actions"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()))
                .collect();
            let expected: Vec<&str> = ON_V2
                .into_iter()
                .filter(|p| caller.holds(*p) || (*p == Permission::Pull && public))
                .map(|p| p.as_str())
                .collect();
            assert_eq!(granted, expected, "{what}: {claims}");
        }
    }
}

/// What a grant-changing request answered, against what the grant rule says.
async fn assert_granted_only_if_held(r: reqwest::Response, allowed: bool, expected: StatusCode, what: &str) {
    if allowed {
        assert_eq!(r.status(), expected, "{what}: {:?}", r.text().await);
    } else {
        let status = r.status();
        let body: Value = r.json().await.unwrap();
        assert_eq!((status, &body["errors"][0]["code"]), (StatusCode::FORBIDDEN, &json!("DENIED")), "{what}: {body}");
    }
}

#[tokio::test]
async fn every_grant_changing_operation_grants_only_what_the_caller_holds() {
    let (s, callers) = world().await;
    let project = "closed";
    for (i, caller) in callers.iter().enumerate().filter(|(_, c)| c.authenticated()) {
        let auth = caller.auth();
        let manages_robots = caller.holds(Permission::ManageRobots);
        for (j, (permission, _)) in MATRIX.iter().enumerate() {
            let grants = json!([{ "project": project, "permissions": [permission.as_str()] }]);
            let allowed = manages_robots && caller.holds(*permission);
            let what = format!("{caller:?} granting {permission:?}");
            let create = json!({ "name": format!("g{i}x{j}"), "grants": grants });
            let r = auth.on(s.req(Method::POST, &format!("/api/v1/projects/{project}/robots")).json(&create));
            assert_granted_only_if_held(
                r.send().await.unwrap(),
                allowed,
                StatusCode::CREATED,
                &format!("{what}: create"),
            )
            .await;
            if !manages_robots && j > 0 {
                // Refused before anything is looked at: once is enough.
                continue;
            }
            // A robot holding exactly `permission`: changing it or taking its secret gets
            // the caller hold of what it holds.
            let target = format!("robot${project}+t{i}x{j}");
            s.robot(&target, project, &[*permission], None).await;
            let patch = json!({ "grants": grants, "description": "changed" });
            let r = auth.on(s.req(Method::PATCH, &format!("/api/v1/robots/{target}")).json(&patch));
            assert_granted_only_if_held(r.send().await.unwrap(), allowed, StatusCode::OK, &format!("{what}: patch"))
                .await;
            let r = auth.on(s.req(Method::POST, &format!("/api/v1/robots/{target}/secret")));
            assert_granted_only_if_held(r.send().await.unwrap(), allowed, StatusCode::OK, &format!("{what}: rotate"))
                .await;
        }
        let manages_members = caller.holds(Permission::ManageMembers);
        for role in Role::ALL {
            let held = MATRIX.iter().all(|(p, _)| !role.allows(*p) || caller.holds(*p));
            let what = format!("{caller:?} making a {role:?}");
            let body = json!({ "role": role.as_str() });
            let r = auth.on(s.req(Method::PUT, &format!("/api/v1/projects/{project}/members/{BYSTANDER}")).json(&body));
            assert_granted_only_if_held(r.send().await.unwrap(), manages_members && held, StatusCode::OK, &what).await;
        }
    }
}
