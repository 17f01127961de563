//! The permission matrix over HTTP, generated from the one table (`access::MATRIX`):
//! anonymous, each role, a robot per permission set, a disabled user, an expired robot
//! and a system administrator × pull, push and delete on a public and a private project,
//! each with its exact outcome (allowed; 401 with the exact challenge; 403 DENIED).
//! Callers present Basic credentials straight to `/v2` (the token flow's grants come
//! from the same evaluation and are tested in `flow.rs`).

use berth_core::access::{Permission, Role};
use reqwest::{Method, StatusCode};

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

#[tokio::test]
async fn every_caller_gets_exactly_what_the_matrix_says_on_public_and_private_projects() {
    let s = Setup::start().await;
    let callers: Vec<Caller> = [Caller::Anonymous, Caller::DisabledUser, Caller::ExpiredRobot, Caller::Admin]
        .into_iter()
        .chain(Role::ALL.into_iter().map(Caller::Member))
        .chain(
            [&[Permission::Pull][..], &[Permission::Pull, Permission::Push], &[Permission::Pull, Permission::Delete]]
                .into_iter()
                .map(Caller::Robot),
        )
        .collect();
    for (project, public) in [("open", true), ("closed", false)] {
        s.store.create_project(project, public).await.unwrap();
        s.push_as_admin(&format!("{project}/app"), "pull-me").await;
        for caller in &callers {
            s.push_as_admin(&format!("{project}/app"), &format!("del-{}", caller.name().replace('$', "_"))).await;
        }
    }
    // Visibility is re-read every few seconds: wait until the new projects are seen.
    tokio::time::sleep(berth_server::access::grants::PROJECTS_TTL).await;
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

    let mut checked = 0;
    for (project, public) in [("open", true), ("closed", false)] {
        let repo = format!("{project}/app");
        for caller in &callers {
            for permission in [Permission::Pull, Permission::Push, Permission::Delete] {
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
