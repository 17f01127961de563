//! The grant rule over the management API: nobody grants what they do not hold (the
//! permissions of a robot or a role, and a robot's expiry), nobody widens their own
//! grants, and nobody gets hold of a robot (its secret, its trust, its enabling) that holds
//! more than they do. System administrators are not bound by it. `matrix.rs` runs every
//! grant-changing operation for every permission of the matrix; these are the reported
//! escalations, one by one.

use berth_core::access::{Permission, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, Setup};

/// `method /api/v1{path}` as `auth` with `body`: the status and the body.
async fn call(s: &Setup, auth: &Auth, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
    let mut r = auth.on(s.req(method, &format!("/api/v1{path}")));
    if let Some(body) = body {
        r = r.json(&body);
    }
    let r = r.send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() })
}

/// Asserts a 403 DENIED whose message names the grant rule.
fn assert_grant_refused(status: StatusCode, body: &Value, what: &str) {
    assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
    assert_eq!(body["errors"][0]["code"], "DENIED", "{what}: {body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("does not hold") || message.contains("outlive"), "{what}: {message}");
}

fn permissions_of(robot: &berth_meta::Robot) -> Vec<Permission> {
    robot.grants.iter().flat_map(|g| g.permissions.iter().copied()).collect()
}

#[tokio::test]
async fn a_robot_cannot_widen_its_own_grants() {
    let s = Setup::start().await;
    s.store.create_project("team", false).await.unwrap();
    s.robot("robot$team+boss", "team", &[Permission::ManageRobots], Some(berth_meta::now() + 3600)).await;
    let boss = Auth::user("robot$team+boss");
    let wider =
        json!({ "grants": [{ "project": "team", "permissions": ["push", "pull", "delete", "manage-robots"] }] });
    let (status, body) = call(&s, &boss, Method::PATCH, "/robots/robot$team+boss", Some(wider)).await;
    assert_grant_refused(status, &body, "widening its own permissions");
    let (status, body) =
        call(&s, &boss, Method::PATCH, "/robots/robot$team+boss", Some(json!({ "expires_at": null }))).await;
    assert_grant_refused(status, &body, "dropping its own expiry");
    let later = json!({ "expires_at": berth_meta::now() + 7200 });
    let (status, body) = call(&s, &boss, Method::PATCH, "/robots/robot$team+boss", Some(later)).await;
    assert_grant_refused(status, &body, "extending its own expiry");
    let robot = s.store.robot("robot$team+boss").await.unwrap().unwrap();
    assert_eq!(permissions_of(&robot), [Permission::ManageRobots]);
    // What does not widen it is allowed.
    let (status, body) =
        call(&s, &boss, Method::PATCH, "/robots/robot$team+boss", Some(json!({ "description": "ci" }))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_robot_grants_no_permission_it_does_not_hold() {
    let s = Setup::start().await;
    s.store.create_project("team", false).await.unwrap();
    s.robot("robot$team+boss", "team", &[Permission::ManageRobots], None).await;
    s.robot("robot$team+ci", "team", &[Permission::Pull, Permission::Push], None).await;
    let boss = Auth::user("robot$team+boss");
    let robot =
        |permissions: &[&str]| json!({ "name": "made", "grants": [{ "project": "team", "permissions": permissions }] });
    let (status, body) =
        call(&s, &boss, Method::POST, "/projects/team/robots", Some(robot(&["push", "manage-members"]))).await;
    assert_grant_refused(status, &body, "creating a robot with push and manage-members");
    assert_eq!(s.store.robot("robot$team+made").await.unwrap(), None);
    // Nor gives another robot more, nor takes another's secret or enables one that holds more.
    let more = json!({ "grants": [{ "project": "team", "permissions": ["pull", "push", "delete"] }] });
    let (status, body) = call(&s, &boss, Method::PATCH, "/robots/robot$team+ci", Some(more)).await;
    assert_grant_refused(status, &body, "giving another robot permissions");
    let (status, body) = call(&s, &boss, Method::POST, "/robots/robot$team+ci/secret", None).await;
    assert_grant_refused(status, &body, "rotating the secret of a robot that holds more");
    let (status, body) =
        call(&s, &boss, Method::PATCH, "/robots/robot$team+ci", Some(json!({ "disabled": false }))).await;
    assert_grant_refused(status, &body, "changing a robot that holds more");
    // What it holds, it may grant.
    let (status, body) = call(&s, &boss, Method::POST, "/projects/team/robots", Some(robot(&["manage-robots"]))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A system administrator is not bound by the rule.
    let (status, body) = call(&s, &Auth::admin(), Method::POST, "/robots/robot$team+ci/secret", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn a_robot_cannot_create_a_robot_that_outlives_it() {
    let s = Setup::start().await;
    s.store.create_project("team", false).await.unwrap();
    let expires = berth_meta::now() + 3600;
    s.robot("robot$team+boss", "team", &[Permission::Pull, Permission::ManageRobots], Some(expires)).await;
    let boss = Auth::user("robot$team+boss");
    let robot = |name: &str, expires_at: Option<i64>| {
        let mut robot = json!({ "name": name, "grants": [{ "project": "team", "permissions": ["pull"] }] });
        if let Some(at) = expires_at {
            robot["expires_at"] = at.into();
        }
        robot
    };
    for (what, expires_at) in [("never expiring", None), ("expiring later", Some(expires + 60))] {
        let (status, body) =
            call(&s, &boss, Method::POST, "/projects/team/robots", Some(robot("made", expires_at))).await;
        assert_grant_refused(status, &body, what);
    }
    let (status, body) =
        call(&s, &boss, Method::POST, "/projects/team/robots", Some(robot("made", Some(expires - 60)))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, body) =
        call(&s, &boss, Method::PATCH, "/robots/robot$team+made", Some(json!({ "expires_at": null }))).await;
    assert_grant_refused(status, &body, "making its robot never expire");
}

#[tokio::test]
async fn a_robot_with_manage_members_cannot_make_anyone_project_admin() {
    let s = Setup::start().await;
    s.store.create_project("team", false).await.unwrap();
    s.robot("robot$team+hr", "team", &[Permission::Pull, Permission::ManageMembers], None).await;
    s.user("alice", &[]).await;
    let hr = Auth::user("robot$team+hr");
    for role in [Role::ProjectAdmin, Role::Maintainer, Role::Developer, Role::Guest] {
        let body = json!({ "role": role.as_str() });
        let (status, body) = call(&s, &hr, Method::PUT, "/projects/team/members/alice", Some(body)).await;
        assert_grant_refused(status, &body, role.as_str());
    }
    assert!(s.store.memberships("alice").await.unwrap().is_empty());
    // A role whose permissions it holds (pull), it may give.
    let body = json!({ "role": "limited-guest" });
    let (status, body) = call(&s, &hr, Method::PUT, "/projects/team/members/alice", Some(body)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
