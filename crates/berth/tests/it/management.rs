//! The management API (`/api/v1`) over real sockets: users, projects, members, robots,
//! listings and the OpenAPI document, with credentials; what it refuses and with which
//! error; and that no secret comes back after the response that creates it.
//! `management/cli.rs` drives the same through the `berth` binary.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, assert_error};
use crate::support::{Creds, TestServer, admin, client_as};

pub mod cli;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// A client of `/api/v1` that keeps every response body it received.
pub struct Mgmt {
    client: reqwest::Client,
    base: String,
    pub seen: std::cell::RefCell<Vec<String>>,
}

impl Mgmt {
    pub fn new(server: &TestServer, creds: Option<&Creds>) -> Mgmt {
        Mgmt::at(server.url(), creds)
    }

    /// The same, for a server at `base` (a `berth` process).
    pub fn at(base: String, creds: Option<&Creds>) -> Mgmt {
        Mgmt { client: client_as(creds).build().unwrap(), base, seen: Default::default() }
    }

    /// `method /api/v1{path}` with an optional JSON body: the status, the `Link` header
    /// and the body (`null` when empty).
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Option<String>, Value) {
        let mut request = self.client.request(method, format!("{}/api/v1{path}", self.base));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let r = request.send().await.unwrap();
        let (status, link) = (r.status(), r.headers().get("link").map(|v| v.to_str().unwrap().to_owned()));
        let text = r.text().await.unwrap();
        self.seen.borrow_mut().push(text.clone());
        let value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap() };
        (status, link, value)
    }

    /// The body of a call that must answer `status`.
    pub async fn expect(&self, status: StatusCode, method: Method, path: &str, body: Option<Value>) -> Value {
        let (got, _, value) = self.call(method.clone(), path, body).await;
        assert_eq!(got, status, "{method} {path}: {value}");
        value
    }

    /// A call that must fail with `status` and the registry's error JSON with `code`.
    pub async fn refused(&self, status: StatusCode, code: &str, method: Method, path: &str, body: Option<Value>) {
        let value = self.expect(status, method, path, body).await;
        assert_eq!(value["errors"][0]["code"], code, "{value}");
        assert!(value["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{value}");
    }
}

#[tokio::test]
async fn admin_manages_users_projects_members_and_robots_and_no_later_response_holds_a_secret() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    let alice_password = "alice-first-password";
    let user = api
        .expect(StatusCode::CREATED, Method::POST, "/users", Some(json!({"name": "alice", "password": alice_password})))
        .await;
    assert_eq!(user, json!({"name": "alice", "admin": false, "disabled": false, "created_at": user["created_at"]}));
    let project = api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    assert_eq!((&project["name"], &project["public"]), (&json!("team"), &json!(false)));
    let member = api
        .expect(StatusCode::OK, Method::PUT, "/projects/team/members/alice", Some(json!({"role": "developer"})))
        .await;
    assert_eq!(member, json!({"user": "alice", "role": "developer"}));
    let grants = json!([{"project": "team", "permissions": ["push", "pull", "pull"]}]);
    let created = api
        .expect(
            StatusCode::CREATED,
            Method::POST,
            "/projects/team/robots",
            Some(json!({"name": "ci", "grants": grants})),
        )
        .await;
    assert_eq!(created["robot"]["name"], "robot$team+ci");
    assert_eq!(created["robot"]["grants"], json!([{"project": "team", "permissions": ["pull", "push"]}]));
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "{secret}");
    let after_creation = api.seen.borrow().len();

    // Everything reads back, changes, and lists; none of it shows a secret again.
    let robot = api.expect(StatusCode::OK, Method::GET, "/robots/robot$team+ci", None).await;
    assert_eq!((&robot["keyless"], &robot["disabled"]), (&json!(false), &json!(false)));
    assert!(robot.get("secret").is_none(), "{robot}");
    let rotated = api.expect(StatusCode::OK, Method::POST, "/robots/robot%24team%2Bci/secret", None).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    let after_rotation = api.seen.borrow().len();
    let disabled =
        api.expect(StatusCode::OK, Method::PATCH, "/robots/robot$team+ci", Some(json!({"disabled": true}))).await;
    assert_eq!(disabled["disabled"], true);
    let listed = api.expect(StatusCode::OK, Method::GET, "/projects/team/robots", None).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let users = api.expect(StatusCode::OK, Method::GET, "/users", None).await;
    assert!(users.as_array().unwrap().iter().any(|u| u["name"] == "alice"), "{users}");
    let members = api.expect(StatusCode::OK, Method::GET, "/projects/team/members", None).await;
    assert_eq!(members, json!([{"user": "alice", "role": "developer"}]));
    api.expect(StatusCode::OK, Method::PATCH, "/users/alice", Some(json!({"admin": true}))).await;
    let alice = api.expect(StatusCode::OK, Method::GET, "/users/alice", None).await;
    assert_eq!(alice["admin"], true);
    api.expect(StatusCode::NO_CONTENT, Method::PUT, "/users/alice/password", Some(json!({"password": "second-pw-1"})))
        .await;
    api.expect(StatusCode::OK, Method::GET, "/me", None).await;
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/team/members/alice", None).await;
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/robots/robot$team+ci", None).await;
    api.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::GET, "/robots/robot$team+ci", None).await;

    // Every change is in the audit log (written in the background: wait for the last).
    let ops = |v: &Value| v.as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap().to_owned()).collect();
    let mut robot_ops: Vec<String> = Vec::new();
    for _ in 0..100 {
        robot_ops = ops(&api.expect(StatusCode::OK, Method::GET, "/audit?operation=robot.", None).await);
        if robot_ops.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(robot_ops, ["robot.delete", "robot.update", "robot.rotate", "robot.create"]);
    let members = api.expect(StatusCode::OK, Method::GET, "/audit?project=team&operation=member.", None).await;
    assert_eq!(ops(&members), ["member.remove", "member.set"]);
    assert_eq!((&members[1]["resource"], &members[1]["detail"]), (&json!("alice"), &json!("role=developer")));
    assert_eq!((&members[1]["address"], &members[1]["actor"]), (&json!("127.0.0.1"), &json!("admin")));
    let users = api.expect(StatusCode::OK, Method::GET, "/audit?operation=user.", None).await;
    assert_eq!(ops(&users), ["user.password", "user.update", "user.create"]);
    let (_, link, page) = api.call(Method::GET, "/audit?operation=user.&limit=2", None).await;
    assert_eq!(page.as_array().unwrap().len(), 2);
    let before = page[1]["id"].as_i64().unwrap();
    assert_eq!(
        link.as_deref(),
        Some(&*format!("</api/v1/audit?operation=user.&limit=2&before={before}>; rel=\"next\""))
    );
    let rest =
        api.expect(StatusCode::OK, Method::GET, &format!("/audit?operation=user.&limit=2&before={before}"), None).await;
    assert_eq!(ops(&rest), ["user.create"]);

    let seen = api.seen.borrow();
    for (i, body) in seen.iter().enumerate() {
        for secret in [alice_password, "second-pw-1", "$argon2", "password_hash", "secret_hash"] {
            assert!(!body.contains(secret), "response {i} holds {secret:?}: {body}");
        }
        if i + 1 != after_creation {
            assert!(!body.contains(&secret), "response {i} after creation holds the robot's secret: {body}");
        }
        if i + 1 != after_rotation {
            assert!(!body.contains(&new_secret), "response {i} holds the rotated secret: {body}");
        }
    }
}

#[tokio::test]
async fn a_project_holding_a_repository_cannot_be_deleted_and_an_empty_one_can() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    for name in ["full", "empty"] {
        api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": name}))).await;
    }
    Api::new(server.url()).push_image("full/app", "1", OCI_MANIFEST, 1).await;
    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::DELETE, "/projects/full", None).await;
    api.expect(StatusCode::OK, Method::GET, "/projects/full", None).await;
    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::DELETE, "/projects/library", None).await;
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/empty", None).await;
    api.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::GET, "/projects/empty", None).await;
}

/// Deleting a repository (Harbor's project admins and maintainers may): its manifests,
/// tags and links go, the catalog no longer lists it, garbage collection then frees its
/// bytes, and its project can be deleted. A developer may not; an immutable tag in it
/// refuses the delete, naming the rule; the deletion is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_repository_is_gone_its_bytes_are_collected_and_its_project_can_go() {
    let server = TestServer::start_with(|c| c.jobs.gc_grace = std::time::Duration::ZERO);
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    for (user, role) in [("maya", "maintainer"), ("dev", "developer")] {
        let password = format!("{user}-password-long-enough");
        api.expect(StatusCode::CREATED, Method::POST, "/users", Some(json!({"name": user, "password": password})))
            .await;
        let path = format!("/projects/team/members/{user}");
        api.expect(StatusCode::OK, Method::PUT, &path, Some(json!({"role": role}))).await;
    }
    let registry = Api::new(server.url());
    registry.push_image("team/app", "1", OCI_MANIFEST, 41).await;
    registry.push_image("team/app", "2", OCI_MANIFEST, 42).await;
    registry.push_image("team/other", "1", OCI_MANIFEST, 43).await;

    let dev = Mgmt::new(&server, Some(&Creds::new("dev", "dev-password-long-enough")));
    dev.refused(StatusCode::FORBIDDEN, "DENIED", Method::DELETE, "/repositories/team%2Fapp", None).await;
    let rule = Some(json!({"pattern": "1"}));
    api.expect(StatusCode::CREATED, Method::POST, "/projects/team/immutable-rules", rule).await;
    let maya = Mgmt::new(&server, Some(&Creds::new("maya", "maya-password-long-enough")));
    let (status, _, body) = maya.call(Method::DELETE, "/repositories/team%2Fapp", None).await;
    assert_eq!((status, &body["errors"][0]["code"]), (StatusCode::FORBIDDEN, &json!("DENIED")), "{body}");
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("immutable"), "{body}");
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/team/immutable-rules/1", None).await;

    maya.expect(StatusCode::NO_CONTENT, Method::DELETE, "/repositories/team%2Fapp", None).await;
    maya.refused(StatusCode::NOT_FOUND, "NAME_UNKNOWN", Method::DELETE, "/repositories/team%2Fapp", None).await;
    let r = registry.send(Method::GET, "/v2/team/app/manifests/1").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let catalog: Value = registry.send(Method::GET, "/v2/_catalog").await.json().await.unwrap();
    assert_eq!(catalog["repositories"], json!(["team/other"]), "{catalog}");
    // The audit writer stores entries in batches, a few milliseconds later.
    let mut audit = Value::Null;
    for _ in 0..50 {
        audit = api.expect(StatusCode::OK, Method::GET, "/audit?operation=repository.delete", None).await;
        if !audit.as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let entry = &audit[0];
    assert_eq!((&entry["actor"], &entry["resource"]), (&json!("maya"), &json!("team/app")), "{audit}");

    // Its config blobs and layers are used nowhere else: garbage once their grace is over.
    crate::gc::collect_all(&server.url()).await;
    let runs = api.expect(StatusCode::OK, Method::GET, "/gc/runs", None).await;
    let removed: u64 = runs.as_array().unwrap().iter().map(|r| r["blobs_removed"].as_u64().unwrap()).sum();
    assert_eq!(removed, 4, "two images' config and layer blobs: {runs}");
    registry.push_image("team/other", "2", OCI_MANIFEST, 44).await;

    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::DELETE, "/projects/team", None).await;
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/repositories/team%2Fother", None).await;
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/team", None).await;
}

/// The status of `GET /v2/` with Basic `creds`: 200 for a valid login, 401 otherwise.
pub async fn basic_login_status(base: &str, creds: &Creds) -> StatusCode {
    client_as(Some(creds)).build().unwrap().get(format!("{base}/v2/")).send().await.unwrap().status()
}

/// Basic credentials a server has verified and remembers (30 s) stop working the moment
/// the account changes through the management API: a rotated robot secret, a disabled
/// robot, a disabled user, and a member removed from a private project.
#[tokio::test]
async fn changes_to_accounts_apply_at_once_to_basic_credentials_already_seen() {
    let server = TestServer::start();
    let url = server.url();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let robot = json!({"name": "ci", "grants": [{"project": "team", "permissions": ["pull"]}]});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot)).await;
    let old = Creds::new("robot$team+ci", created["secret"].as_str().unwrap());
    assert_eq!(basic_login_status(&url, &old).await, StatusCode::OK);
    let rotated = api.expect(StatusCode::OK, Method::POST, "/robots/robot$team+ci/secret", None).await;
    assert_eq!(basic_login_status(&url, &old).await, StatusCode::UNAUTHORIZED, "the old secret still worked");
    let new = Creds::new("robot$team+ci", rotated["secret"].as_str().unwrap());
    assert_eq!(basic_login_status(&url, &new).await, StatusCode::OK);
    api.expect(StatusCode::OK, Method::PATCH, "/robots/robot$team+ci", Some(json!({"disabled": true}))).await;
    assert_eq!(basic_login_status(&url, &new).await, StatusCode::UNAUTHORIZED, "the disabled robot still worked");

    let alice = Creds::new("alice", "alice-password-long-enough");
    let body = json!({"name": "alice", "password": alice.password});
    api.expect(StatusCode::CREATED, Method::POST, "/users", Some(body)).await;
    api.expect(StatusCode::OK, Method::PUT, "/projects/team/members/alice", Some(json!({"role": "developer"}))).await;
    Api::new(url.clone()).push_image("team/app", "v1", OCI_MANIFEST, 61).await;
    let as_alice = Api::as_user(url.clone(), Some(&alice));
    assert_eq!(as_alice.send(Method::GET, "/v2/team/app/manifests/v1").await.status(), StatusCode::OK);
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/team/members/alice", None).await;
    let r = as_alice.send(Method::GET, "/v2/team/app/manifests/v1").await;
    assert!(r.status().is_client_error(), "a removed member still pulled: {}", r.status());
    api.expect(StatusCode::OK, Method::PATCH, "/users/alice", Some(json!({"disabled": true}))).await;
    assert_eq!(basic_login_status(&url, &alice).await, StatusCode::UNAUTHORIZED, "the disabled user still worked");
}

#[tokio::test]
async fn every_route_of_the_served_openapi_document_is_served() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    let doc = api.expect(StatusCode::OK, Method::GET, "/openapi.json", None).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    let paths = doc["paths"].as_object().unwrap();
    let mut routes = 0;
    for (path, item) in paths {
        let concrete = path
            .trim_start_matches("/api/v1")
            .replace("{project}", "nosuchproject")
            .replace("{name}", "nosuchname")
            .replace("{user}", "nosuchuser");
        for method in item.as_object().unwrap().keys() {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (status, _, body) = api.call(method.clone(), &concrete, Some(json!({}))).await;
            // The route exists: whatever the answer, it is not the router's "no such
            // endpoint" nor "not with this method".
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}: {body}");
            assert_ne!(body["errors"][0]["message"], "no such endpoint", "{method} {path}: {body}");
            routes += 1;
        }
    }
    assert!(routes >= 27, "the document lists {routes} routes");
    // And what is not in it is not served.
    let (status, _, body) = api.call(Method::GET, "/nosuchroute", None).await;
    assert_eq!((status, &body["errors"][0]["code"]), (StatusCode::NOT_FOUND, &json!("UNSUPPORTED")), "{body}");
    let (status, _, _) = api.call(Method::DELETE, "/users", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn invalid_requests_are_refused_with_the_error_json_saying_what_is_wrong() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    let bad = |name: &str| json!({"name": name, "password": "long-enough-1"});
    for body in [bad("Upper"), bad("a..b"), bad("robot$x"), json!({"name": "bob", "password": "short"})] {
        api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::POST, "/users", Some(body)).await;
    }
    let (status, _, body) = api.call(Method::POST, "/users", Some(json!({"name": "bob", "password": 5}))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    api.expect(StatusCode::CREATED, Method::POST, "/users", Some(bad("bob"))).await;
    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::POST, "/users", Some(bad("bob"))).await;
    api.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::GET, "/users/nobody", None).await;
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team", "public": true}))).await;
    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let role = Some(json!({"role": "owner"}));
    api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::PUT, "/projects/team/members/bob", role).await;
    let role = Some(json!({"role": "guest"}));
    api.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::PUT, "/projects/team/members/nobody", role).await;
    for grants in [
        json!([]),
        json!([{"project": "team", "permissions": ["fly"]}]),
        json!([{"project": "team", "permissions": []}]),
        json!([{"project": "other", "permissions": ["pull"]}]),
    ] {
        let body = Some(json!({"name": "ci", "grants": grants}));
        api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::POST, "/projects/team/robots", body).await;
    }
    let expired =
        Some(json!({"name": "ci", "grants": [{"project": "team", "permissions": ["pull"]}], "expires_at": 1}));
    api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::POST, "/projects/team/robots", expired).await;
    api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::GET, "/users?n=0", None).await;
    api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::GET, "/users?n=x", None).await;
    let r = client_as(Some(&admin())).build().unwrap().post(format!("{}/api/v1/projects", server.url())).body("{");
    assert_error(r.send().await.unwrap(), StatusCode::BAD_REQUEST, "BAD_REQUEST").await;

    // A keyless robot: its trust is kept as given, it has no secret to show or rotate.
    let grants = json!([{"project": "team", "permissions": ["push"]}]);
    for bad in [json!("https://issuer"), json!({"issuer": "https://i", "audiences": ["berth"], "subject": "*"})] {
        let body = Some(json!({"name": "gha", "grants": grants, "trust": bad}));
        api.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::POST, "/projects/team/robots", body).await;
    }
    let trust = json!({"issuer": "https://token.actions.githubusercontent.com", "audiences": ["berth"],
        "subject": "repo:o/r:*"});
    let body = json!({"name": "gha", "grants": grants, "trust": trust});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(body)).await;
    assert_eq!((&created["secret"], &created["robot"]["keyless"]), (&Value::Null, &json!(true)));
    assert_eq!(created["robot"]["trust"], trust);
    api.refused(StatusCode::CONFLICT, "CONFLICT", Method::POST, "/robots/robot$team+gha/secret", None).await;
}

#[tokio::test]
async fn listings_show_a_projects_repositories_and_a_repositorys_artifacts_and_tags_page_by_page() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let registry = Api::new(server.url());
    let (first, body) = registry.push_image("team/app", "1.0", OCI_MANIFEST, 1).await;
    registry.push_image("team/app", "2.0", OCI_MANIFEST, 2).await;
    let r = registry.put_manifest("team/app", "latest", OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    for repo in ["team/web", "team/a/b", "teams/x", "alpine", "library/busybox"] {
        registry.push_image(repo, "1", OCI_MANIFEST, 3).await;
    }

    let names =
        |v: &Value| v.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let all = api.expect(StatusCode::OK, Method::GET, "/projects/team/repositories", None).await;
    assert_eq!(names(&all), ["team/a/b", "team/app", "team/web"]);
    let (status, link, page) = api.call(Method::GET, "/projects/team/repositories?n=2", None).await;
    assert_eq!((status, names(&page)), (StatusCode::OK, vec!["team/a/b".to_owned(), "team/app".to_owned()]));
    let link = link.expect("a Link to the next page");
    assert_eq!(link, "</api/v1/projects/team/repositories?n=2&last=team%2Fapp>; rel=\"next\"");
    let next = api.expect(StatusCode::OK, Method::GET, "/projects/team/repositories?n=2&last=team%2Fapp", None).await;
    assert_eq!(names(&next), ["team/web"]);
    let library = api.expect(StatusCode::OK, Method::GET, "/projects/library/repositories", None).await;
    assert_eq!(names(&library), ["alpine", "library/busybox"]);

    let tags = api.expect(StatusCode::OK, Method::GET, "/repositories/team%2Fapp/tags", None).await;
    assert_eq!(names(&tags), ["1.0", "2.0", "latest"]);
    let artifacts = api.expect(StatusCode::OK, Method::GET, "/repositories/team%2Fapp/artifacts", None).await;
    let artifacts = artifacts.as_array().unwrap();
    assert_eq!(artifacts.len(), 2);
    let a = artifacts.iter().find(|a| a["digest"] == first.as_str()).expect("the first image");
    assert_eq!(a["tags"], json!(["1.0", "latest"]));
    assert_eq!((&a["media_type"], &a["size"]), (&json!(OCI_MANIFEST), &json!(body.len())));
    assert!(a["pushed_at"].as_i64().unwrap() > 1_700_000_000, "{a}");
    let (_, link, one) = api.call(Method::GET, "/repositories/team%2Fapp/artifacts?n=1", None).await;
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert!(link.is_some_and(|l| l.starts_with("</api/v1/repositories/team%2Fapp/artifacts?n=1&last=sha256%3A")));
    api.refused(StatusCode::NOT_FOUND, "NAME_UNKNOWN", Method::GET, "/repositories/team%2Fnope/tags", None).await;
    api.refused(StatusCode::BAD_REQUEST, "NAME_INVALID", Method::GET, "/repositories/Team%2Fx/artifacts", None).await;
}

#[tokio::test]
async fn members_and_robots_are_listed_page_by_page() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    for user in ["carol", "alice", "bob"] {
        let body = json!({"name": user, "password": format!("{user}-password-1")});
        api.expect(StatusCode::CREATED, Method::POST, "/users", Some(body)).await;
        let role = Some(json!({"role": "guest"}));
        api.expect(StatusCode::OK, Method::PUT, &format!("/projects/team/members/{user}"), role).await;
    }
    for robot in ["zeta", "beta", "alpha"] {
        let body = json!({"name": robot, "grants": [{"project": "team", "permissions": ["pull", "push"]}]});
        api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(body)).await;
    }
    let users =
        |v: &Value| v.as_array().unwrap().iter().map(|m| m["user"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, link, page) = api.call(Method::GET, "/projects/team/members?n=2", None).await;
    assert_eq!(users(&page), ["alice", "bob"]);
    assert_eq!(link.as_deref(), Some("</api/v1/projects/team/members?n=2&last=bob>; rel=\"next\""));
    let (_, link, page) = api.call(Method::GET, "/projects/team/members?n=2&last=bob", None).await;
    assert_eq!((users(&page), link), (vec!["carol".to_owned()], None));

    let names =
        |v: &Value| v.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap().to_owned()).collect::<Vec<_>>();
    let (_, link, page) = api.call(Method::GET, "/projects/team/robots?n=1", None).await;
    assert_eq!(names(&page), ["robot$team+alpha"]);
    assert_eq!(page[0]["grants"][0]["permissions"], json!(["pull", "push"]), "a paged robot keeps its grants");
    assert!(link.is_some_and(|l| l.contains("last=robot%24team%2Balpha")));
    let (_, link, page) = api.call(Method::GET, "/robots?n=5&last=robot%24team%2Balpha", None).await;
    assert_eq!((names(&page), link), (vec!["robot$team+beta".to_owned(), "robot$team+zeta".to_owned()], None));
}

#[tokio::test]
async fn a_user_outside_a_project_is_denied_its_management_and_anonymous_callers_are_challenged() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    let (alice, bob) = (Creds::new("alice", "alice-password-1"), Creds::new("bob", "bob-password-1"));
    for who in [&alice, &bob] {
        let user = json!({"name": who.user, "password": who.password});
        api.expect(StatusCode::CREATED, Method::POST, "/users", Some(user)).await;
    }
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let role = Some(json!({"role": "maintainer"}));
    api.expect(StatusCode::OK, Method::PUT, "/projects/team/members/alice", role).await;

    // Bob is no member: the project's management is denied him, the system's too.
    let as_bob = Mgmt::new(&server, Some(&bob));
    as_bob.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, "/projects/team/members", None).await;
    let role = Some(json!({"role": "guest"}));
    as_bob.refused(StatusCode::FORBIDDEN, "DENIED", Method::PUT, "/projects/team/members/bob", role).await;
    as_bob.refused(StatusCode::FORBIDDEN, "DENIED", Method::POST, "/projects", Some(json!({"name": "x"}))).await;
    as_bob.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, "/users", None).await;
    as_bob.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, "/audit?project=team", None).await;
    let me = as_bob.expect(StatusCode::OK, Method::GET, "/me", None).await;
    assert_eq!((&me["name"], &me["kind"], &me["admin"]), (&json!("bob"), &json!("user"), &json!(false)));
    let projects = as_bob.expect(StatusCode::OK, Method::GET, "/projects", None).await;
    assert_eq!(projects.as_array().unwrap().iter().map(|p| &p["name"]).collect::<Vec<_>>(), [&json!("library")]);

    // Alice, a maintainer, sees the members and her project's audit log, not the whole
    // log, and manages neither members nor robots.
    let as_alice = Mgmt::new(&server, Some(&alice));
    as_alice.expect(StatusCode::OK, Method::GET, "/projects/team/members", None).await;
    as_alice.expect(StatusCode::OK, Method::GET, "/audit?project=team", None).await;
    as_alice.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, "/audit", None).await;
    let role = Some(json!({"role": "guest"}));
    as_alice.refused(StatusCode::FORBIDDEN, "DENIED", Method::PUT, "/projects/team/members/bob", role).await;
    let robot = Some(json!({"name": "ci", "grants": [{"project": "team", "permissions": ["pull"]}]}));
    as_alice.refused(StatusCode::FORBIDDEN, "DENIED", Method::POST, "/projects/team/robots", robot).await;
    let projects = as_alice.expect(StatusCode::OK, Method::GET, "/projects", None).await;
    let names: Vec<&Value> = projects.as_array().unwrap().iter().map(|p| &p["name"]).collect();
    assert_eq!(names, [&json!("library"), &json!("team")]);
    // Her own password needs the old one; another's is not hers to change.
    let change = Some(json!({"password": "alice-password-2"}));
    as_alice.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::PUT, "/users/alice/password", change).await;
    let change = Some(json!({"password": "alice-password-2", "old_password": "wrong-password"}));
    as_alice.refused(StatusCode::FORBIDDEN, "DENIED", Method::PUT, "/users/alice/password", change).await;
    let change = Some(json!({"password": "bob-password-2"}));
    as_alice.refused(StatusCode::FORBIDDEN, "DENIED", Method::PUT, "/users/bob/password", change).await;
    let change = Some(json!({"password": "alice-password-2", "old_password": alice.password}));
    as_alice.expect(StatusCode::NO_CONTENT, Method::PUT, "/users/alice/password", change).await;

    let anonymous = Mgmt::new(&server, None);
    anonymous.refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", Method::GET, "/users", None).await;
    anonymous.refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", Method::GET, "/me", None).await;
}

#[tokio::test]
async fn a_robot_secret_pulls_with_basic_credentials_only_in_its_project_and_a_rotated_one_is_refused() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    for name in ["team", "other"] {
        api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": name}))).await;
    }
    let registry = Api::new(server.url());
    registry.push_image("team/app", "1", OCI_MANIFEST, 1).await;
    registry.push_image("other/app", "1", OCI_MANIFEST, 2).await;
    let body = json!({"name": "ci", "grants": [{"project": "team", "permissions": ["pull"]}]});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(body)).await;
    let first = Creds::new("robot$team+ci", created["secret"].as_str().unwrap());
    // Rotated before its first use (a verified login is cached briefly, by design).
    let rotated = api.expect(StatusCode::OK, Method::POST, "/robots/robot$team+ci/secret", None).await;
    let robot = Creds::new("robot$team+ci", rotated["secret"].as_str().unwrap());

    let as_robot = Api::as_user(server.url(), Some(&robot));
    assert_eq!(as_robot.send(Method::GET, "/v2/team/app/manifests/1").await.status(), StatusCode::OK);
    let denied = as_robot.send(Method::GET, "/v2/other/app/manifests/1").await;
    assert_error(denied, StatusCode::FORBIDDEN, "DENIED").await;
    let r = as_robot.req(Method::PUT, "/v2/team/app/manifests/2").header("content-type", OCI_MANIFEST).body("{}");
    assert_error(r.send().await.unwrap(), StatusCode::FORBIDDEN, "DENIED").await;
    let old = Api::as_user(server.url(), Some(&first)).send(Method::GET, "/v2/team/app/manifests/1").await;
    assert_error(old, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
}
