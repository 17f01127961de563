//! No secret leaks: a `berth serve` process logging at debug level is put through every
//! way a secret reaches it — passwords (right and wrong, Basic straight to `/v2` and to
//! `/token`), bearer and refresh tokens, robot secrets (created and rotated), a password
//! change — and then its whole log, its audit log and the management API's answers after
//! creation are searched for every one of them, raw and as the Basic header carries it.

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::support::{Backend, admin};

#[tokio::test]
async fn no_secret_reaches_the_log_the_audit_log_or_a_later_api_answer() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    let server = backend.spawn_env(dir.path(), &[("BERTH_LOG", "debug")]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |path: &str| format!("{}{path}", server.url());
    let admin = admin();
    let as_admin =
        |method: Method, path: &str| http.request(method, url(path)).basic_auth("admin", Some(&admin.password));

    let (first, second, guess) = ("first-Secret-Passw0rd", "second-Secret-Passw0rd", "guessed-Passw0rd");
    let r = as_admin(Method::POST, "/api/v1/projects").json(&json!({ "name": "team" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = as_admin(Method::POST, "/api/v1/users").json(&json!({ "name": "alice", "password": first })).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::CREATED);
    let r = as_admin(Method::PUT, "/api/v1/projects/team/members/alice").json(&json!({ "role": "developer" }));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);

    // Wrong and right passwords, on /token and straight to /v2.
    let token_url = url("/token?service=berth&scope=repository:team/app:pull,push&offline_token=true");
    let r = http.get(&token_url).basic_auth("alice", Some(guess)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.get(url("/v2/team/app/tags/list")).basic_auth("alice", Some(guess)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = http.get(&token_url).basic_auth("alice", Some(first)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let (token, refresh) =
        (body["token"].as_str().unwrap().to_owned(), body["refresh_token"].as_str().unwrap().to_owned());
    let r = http.post(url("/v2/team/app/blobs/uploads/")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let form = format!("grant_type=refresh_token&service=berth&refresh_token={refresh}&scope=repository:team/app:pull");
    let r = http.post(url("/token")).header("content-type", "application/x-www-form-urlencoded").body(form);
    let r = r.send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let refreshed: Value = r.json().await.unwrap();
    let refreshed = refreshed["access_token"].as_str().unwrap().to_owned();

    // A robot: created, used, rotated.
    let robot = json!({ "name": "ci", "grants": [{ "project": "team", "permissions": ["pull", "push"] }] });
    let r = as_admin(Method::POST, "/api/v1/projects/team/robots").json(&robot).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let created: Value = r.json().await.unwrap();
    let (robot_name, robot_secret) =
        (created["robot"]["name"].as_str().unwrap().to_owned(), created["secret"].as_str().unwrap().to_owned());
    let r = http.post(url("/v2/team/app/blobs/uploads/")).basic_auth(&robot_name, Some(&robot_secret)).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::ACCEPTED);
    let r = as_admin(Method::POST, &format!("/api/v1/robots/{robot_name}/secret")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let rotated: Value = r.json().await.unwrap();
    let rotated = rotated["secret"].as_str().unwrap().to_owned();

    // Alice changes her password.
    let change = json!({ "old_password": first, "password": second });
    let r = http.put(url("/api/v1/users/alice/password")).basic_auth("alice", Some(first)).json(&change).send();
    assert!(r.await.unwrap().status().is_success());

    // What is read afterwards: the audit log and the accounts.
    let mut later = String::new();
    for path in
        ["/api/v1/audit?limit=1000", "/api/v1/users/alice", "/api/v1/users", &format!("/api/v1/robots/{robot_name}")]
    {
        let r = as_admin(Method::GET, path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        later.push_str(&r.text().await.unwrap());
    }
    assert!(later.contains("\"alice\"") && later.contains("token.issue"), "the audit log records the run: {later}");
    // The log has been written by now; the drain thread reads it as it comes.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let log = server.log();
    assert!(log.contains("DEBUG"), "the server logged at debug level");

    let basic =
        |user: &str, password: &str| base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let secrets = [
        ("the admin's password", admin.password.clone()),
        ("a password", first.to_owned()),
        ("a changed password", second.to_owned()),
        ("a wrong password", guess.to_owned()),
        ("a token", token.clone()),
        ("a refresh token", refresh.clone()),
        ("a refreshed token", refreshed.clone()),
        ("a robot secret", robot_secret.clone()),
        ("a rotated robot secret", rotated.clone()),
        ("a Basic header", basic("admin", &admin.password)),
        ("a Basic header", basic("alice", first)),
        ("a Basic header", basic("alice", guess)),
        ("a Basic header", basic(&robot_name, &robot_secret)),
    ];
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} is in the server's log");
        assert!(!later.contains(secret.as_str()), "{what} is in a later API answer or the audit log");
    }
    // Tokens are JWTs: their signature part alone must not appear either.
    for t in [&token, &refresh, &refreshed] {
        let signature = t.rsplit('.').next().unwrap();
        assert!(!log.contains(signature) && !later.contains(signature), "a token's signature leaked");
    }
    server.kill9();
}
