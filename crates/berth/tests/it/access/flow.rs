//! The token flow as clients meet it: challenges, `/token` (GET and POST), bearer and
//! Basic credentials on `/v2`, refresh tokens, robots, projects and the catalog.

use berth_core::access::{Permission, Role};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, PASSWORD, Setup, assert_error, claims};

const DENIED: &str = "requested access to the resource is denied";

fn admin() -> Auth {
    Auth::admin()
}

#[tokio::test]
async fn anonymous_requests_get_the_exact_challenge_for_what_they_need() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    let r = s.req(Method::GET, "/v2/").send().await.unwrap();
    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required").await;
    assert_eq!(challenge.unwrap(), s.challenge(""));
    for (method, path, scope) in [
        (Method::GET, "/v2/team/app/manifests/1", "repository:team/app:pull"),
        (
            Method::HEAD,
            "/v2/team/app/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "repository:team/app:pull",
        ),
        (Method::POST, "/v2/library/app/blobs/uploads/", "repository:library/app:pull,push"),
        (Method::DELETE, "/v2/team/app/manifests/1", "repository:team/app:delete"),
        (Method::GET, "/v2/_catalog", "registry:catalog:*"),
    ] {
        let r = s.req(method.clone(), path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let expected = s.challenge(&format!(",scope=\"{scope}\""));
        assert_eq!(r.headers()["www-authenticate"], expected.as_str(), "{method} {path}");
    }
}

#[tokio::test]
async fn the_realm_is_under_the_external_url_when_one_is_set() {
    let s = Setup::start_with(|c| {
        c.listen.external_url = Some("https://registry.example.com/".into());
        c.auth.service_name = "registry.example.com".into();
    })
    .await;
    let r = s.req(Method::GET, "/v2/team/x/tags/list").send().await.unwrap();
    assert_eq!(
        r.headers()["www-authenticate"],
        "Bearer realm=\"https://registry.example.com/token\",service=\"registry.example.com\",scope=\"repository:team/x:pull\""
    );
}

#[tokio::test]
async fn anonymous_callers_pull_public_projects_with_or_without_a_token_and_push_nothing() {
    let s = Setup::start().await;
    s.push_as_admin("library/alpine", "1").await;
    s.push_as_admin("team/app", "1").await;
    assert_eq!(s.pull(&Auth::Anonymous, "library/alpine", "1").await.status(), StatusCode::OK);
    let r = s.pull(&Auth::Anonymous, "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required").await;

    let r = s.get_token(None, "scope=repository:library/alpine:pull,push&scope=repository:team/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let body: Value = r.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert_eq!(body["access_token"], token);
    assert_eq!(body["expires_in"], 300);
    assert!(body["issued_at"].as_str().unwrap().ends_with('Z'), "{body}");
    assert!(body.get("refresh_token").is_none(), "no refresh token for anonymous callers");
    let c = claims(token);
    assert_eq!(c["iss"], "berth");
    assert_eq!(c["aud"], "berth");
    assert!(c.get("sub").is_none());
    assert_eq!(
        c["access"],
        json!([
            { "type": "repository", "name": "library/alpine", "actions": ["pull"] },
            { "type": "repository", "name": "team/app", "actions": [] },
        ])
    );
    let bearer = Auth::Bearer(token.into());
    assert_eq!(s.pull(&bearer, "library/alpine", "1").await.status(), StatusCode::OK);
    let r = s.push(&bearer, "library/alpine", "2").await;
    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required").await;
    assert_eq!(challenge.unwrap(), s.challenge(",scope=\"repository:library/alpine:pull,push\""));
}

#[tokio::test]
async fn basic_credentials_straight_to_v2_push_and_pull_by_role() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Developer)]).await;
    s.user("bob", &[("team", Role::Guest)]).await;
    s.user("carol", &[]).await;
    let r = s.req(Method::GET, "/v2/").basic_auth("alice", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(s.push(&Auth::user("alice"), "team/app", "2").await.status(), StatusCode::CREATED);
    assert_eq!(s.pull(&Auth::user("bob"), "team/app", "2").await.status(), StatusCode::OK);
    let r = s.push(&Auth::user("bob"), "team/app", "3").await;
    assert_eq!(assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await, None);
    let r = s.pull(&Auth::user("carol"), "team/app", "1").await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    let r = s.pull(&Auth::Basic("alice".into(), "wrong".into()), "team/app", "1").await;
    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password").await;
    assert_eq!(challenge.unwrap(), s.challenge(",scope=\"repository:team/app:pull\""));
    let r = s.pull(&Auth::Basic("nobody".into(), PASSWORD.into()), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password").await;
}

#[tokio::test]
async fn a_token_grants_the_requested_actions_the_caller_holds_and_never_more() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.push_as_admin("secret/app", "1").await;
    s.user("bob", &[("team", Role::Guest)]).await;
    let scopes = "scope=repository:team/app:pull,push,delete&scope=repository:secret/app:*&scope=registry:catalog:*";
    let r = s.get_token(Some("bob"), scopes).await;
    assert_eq!(r.status(), StatusCode::OK);
    let c = claims(r.json::<Value>().await.unwrap()["token"].as_str().unwrap());
    assert_eq!(c["sub"], "bob");
    assert_eq!(
        c["access"],
        json!([
            { "type": "repository", "name": "team/app", "actions": ["pull"] },
            { "type": "repository", "name": "secret/app", "actions": [] },
            { "type": "registry", "name": "catalog", "actions": ["pull", "push", "delete"] },
        ])
    );
    // The OAuth2 form: the same grants, and `scope` says what was granted.
    let form = [
        ("grant_type", "password"),
        ("username", "bob"),
        ("password", PASSWORD),
        ("client_id", "test"),
        ("service", "berth"),
        ("scope", "repository:team/app:pull,push repository:secret/app:pull"),
    ];
    let r = s.post_token(&form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["scope"], "repository:team/app:pull");
    assert_eq!(claims(body["access_token"].as_str().unwrap())["access"][0]["actions"], json!(["pull"]));
    let r = s.req(Method::GET, "/token?service=other&scope=repository:team/app:pull").send().await.unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST", "unknown service \"other\"").await;
}

#[tokio::test]
async fn a_pull_token_used_to_push_is_refused() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Developer)]).await;
    s.user("bob", &[("team", Role::Guest)]).await;
    // Alice may push but her token does not say so: 403 with the challenge for a token
    // that does (RFC 6750's insufficient_scope), and with one she pushes.
    let token = s.token(Some("alice"), "repository:team/app:pull").await;
    let r = s.push(&Auth::Bearer(token), "team/app", "2").await;
    let challenge = assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    assert_eq!(
        challenge.unwrap(),
        s.challenge(",scope=\"repository:team/app:pull,push\",error=\"insufficient_scope\"")
    );
    let token = s.token(Some("alice"), "repository:team/app:pull,push").await;
    assert_eq!(s.push(&Auth::Bearer(token), "team/app", "2").await.status(), StatusCode::CREATED);
    // Bob may not push at all: no token would help, so no challenge.
    let token = s.token(Some("bob"), "repository:team/app:pull,push").await;
    assert_eq!(s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await.status(), StatusCode::OK);
    let r = s.push(&Auth::Bearer(token), "team/app", "3").await;
    assert_eq!(assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await, None);
}

#[tokio::test]
async fn a_token_for_one_repository_is_refused_on_another() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.push_as_admin("team/other", "1").await;
    s.push_as_admin("secret/app", "1").await;
    s.user("alice", &[("team", Role::Developer)]).await;
    let token = Auth::Bearer(s.token(Some("alice"), "repository:team/app:pull,push").await);
    assert_eq!(s.pull(&token, "team/app", "1").await.status(), StatusCode::OK);
    let r = s.pull(&token, "team/other", "1").await;
    let challenge = assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    assert_eq!(challenge.unwrap(), s.challenge(",scope=\"repository:team/other:pull\",error=\"insufficient_scope\""));
    let r = s.pull(&token, "secret/app", "1").await;
    assert_eq!(assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await, None);
}

#[tokio::test]
async fn a_refresh_token_works_until_its_user_is_disabled() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Developer)]).await;
    let r = s.get_token(Some("alice"), "offline_token=true&scope=repository:team/app:pull").await;
    assert!(r.json::<Value>().await.unwrap()["refresh_token"].is_string());
    let form = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("access_type", "offline")];
    let body: Value = s.post_token(&form).await.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(claims(&refresh)["aud"], "berth/refresh");
    let refresh_form =
        [("grant_type", "refresh_token"), ("refresh_token", refresh.as_str()), ("scope", "repository:team/app:pull")];
    let r = s.post_token(&refresh_form).await;
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["access_token"].as_str().unwrap().to_owned();
    assert_eq!(s.pull(&Auth::Bearer(token), "team/app", "1").await.status(), StatusCode::OK);
    // A refresh token is not an access token.
    let r = s.pull(&Auth::Bearer(refresh.clone()), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;

    s.disable("alice").await;
    let r = s.post_token(&refresh_form).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the refresh token is no longer valid").await;
}

#[tokio::test]
async fn a_limited_guest_sees_no_repository_in_the_catalog() {
    let s = Setup::start().await;
    s.push_as_admin("secret/app", "1").await;
    s.user("lg", &[("secret", Role::LimitedGuest)]).await;
    s.user("guest", &[("secret", Role::Guest)]).await;
    let listed = |user: &'static str| {
        let r = Auth::user(user).on(s.req(Method::GET, "/v2/_catalog"));
        async move { r.send().await.unwrap().json::<Value>().await.unwrap()["repositories"].clone() }
    };
    // The matrix: a limited guest pulls, but does not list the project's repositories.
    assert_eq!(s.pull(&Auth::user("lg"), "secret/app", "1").await.status(), StatusCode::OK);
    assert_eq!(listed("lg").await, json!([]));
    let token = s.token(Some("lg"), "registry:catalog:*").await;
    let r = s.req(Method::GET, "/v2/_catalog").bearer_auth(token).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!([]));
    let r = Auth::user("lg").on(s.req(Method::GET, "/api/v1/projects/secret/repositories")).send().await.unwrap();
    assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    // A guest lists them, in both places.
    assert_eq!(listed("guest").await, json!(["secret/app"]));
    let r = Auth::user("guest").on(s.req(Method::GET, "/api/v1/projects/secret/repositories")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_catalog_lists_only_what_the_caller_may_list_a_full_page_at_a_time() {
    let s = Setup::start().await;
    for repo in ["library/y", "secret/x", "team/a", "team/b", "zeta/z"] {
        s.push_as_admin(repo, "1").await;
    }
    s.user("alice", &[("team", Role::Guest)]).await;
    let list = |auth: Auth, query: &'static str| {
        let r = auth.on(s.req(Method::GET, &format!("/v2/_catalog{query}")));
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let link = r.headers().get("link").map(|l| l.to_str().unwrap().to_owned());
            (r.json::<Value>().await.unwrap()["repositories"].clone(), link)
        }
    };
    let (all, _) = list(admin(), "").await;
    assert_eq!(all, json!(["library/y", "secret/x", "team/a", "team/b", "zeta/z"]));
    // Alice is a guest of `team` only: `library` is public, so she may pull from it, but
    // only its members list its repositories (as the management API's listing).
    let (mine, link) = list(Auth::user("alice"), "").await;
    assert_eq!(mine, json!(["team/a", "team/b"]));
    assert_eq!(link, None);
    // A page skips what alice cannot see and is still full; the next one continues after it.
    let (page, link) = list(Auth::user("alice"), "?n=2").await;
    assert_eq!(page, json!(["team/a", "team/b"]));
    assert_eq!(link.unwrap(), "</v2/_catalog?n=2&last=team%2Fb>; rel=\"next\"");
    let (rest, link) = list(Auth::user("alice"), "?n=2&last=team/b").await;
    assert_eq!((rest, link), (json!([]), None));
    // With a token: it must carry the catalog scope; the listing is the caller's.
    let token = s.token(Some("alice"), "registry:catalog:*").await;
    assert_eq!(list(Auth::Bearer(token), "").await.0, mine);
    let token = s.token(Some("alice"), "repository:team/a:pull").await;
    let r = s.req(Method::GET, "/v2/_catalog").bearer_auth(token).send().await.unwrap();
    let challenge = assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    assert_eq!(challenge.unwrap(), s.challenge(",scope=\"registry:catalog:*\",error=\"insufficient_scope\""));
}

#[tokio::test]
async fn robots_log_in_with_their_secret_and_stay_inside_their_projects() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.push_as_admin("secret/app", "1").await;
    s.robot("robot$team+ci", "team", &[Permission::Pull, Permission::Push], None).await;
    s.robot("robot$team+old", "team", &[Permission::Pull], Some(1)).await;
    let ci = Auth::user("robot$team+ci");
    assert_eq!(s.push(&ci, "team/app", "2").await.status(), StatusCode::CREATED);
    let r = s.pull(&ci, "secret/app", "1").await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED", DENIED).await;
    let token = s.token(Some("robot$team+ci"), "repository:team/app:pull,push,delete").await;
    assert_eq!(claims(&token)["access"][0]["actions"], json!(["pull", "push"]));
    let r = s.pull(&Auth::user("robot$team+old"), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password").await;
}

#[tokio::test]
async fn a_push_into_a_missing_project_is_refused_saying_so_unless_admins_may_create_it() {
    let s = Setup::start_with(|c| c.auth.auto_create_projects = false).await;
    let r = s.push(&admin(), "newproj/app", "1").await;
    let message = "project \"newproj\" does not exist (create it first, or start berth with --auto-create-projects)";
    assert_error(r, StatusCode::FORBIDDEN, "DENIED", message).await;
    assert_eq!(s.store.project("newproj").await.unwrap(), None);

    let s = Setup::start().await;
    s.push_as_admin("newproj/app", "1").await;
    let project = s.store.project("newproj").await.unwrap().expect("created by the push");
    assert!(!project.public);
}

#[tokio::test]
async fn a_mount_from_a_repository_the_caller_cannot_pull_becomes_an_upload() {
    let s = Setup::start().await;
    s.push_as_admin("secret/x", "1").await;
    s.push_as_admin("team/a", "1").await;
    s.user("alice", &[("team", Role::Developer)]).await;
    let manifest: Value = s.pull(&admin(), "secret/x", "1").await.json().await.unwrap();
    let secret_blob = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let manifest: Value = s.pull(&admin(), "team/a", "1").await.json().await.unwrap();
    let team_blob = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let mount = |digest: String, from: &'static str| {
        let path = format!("/v2/team/b/blobs/uploads/?mount={digest}&from={from}");
        Auth::user("alice").on(s.req(Method::POST, &path)).send()
    };
    assert_eq!(mount(secret_blob, "secret/x").await.unwrap().status(), StatusCode::ACCEPTED);
    assert_eq!(mount(team_blob, "team/a").await.unwrap().status(), StatusCode::CREATED);
}

/// The `key="value"` parameters of a `Bearer` challenge.
fn challenge_params(challenge: &str) -> std::collections::HashMap<String, String> {
    let rest = challenge.strip_prefix("Bearer ").expect("a Bearer challenge");
    let mut params = std::collections::HashMap::new();
    for pair in rest.split("\",") {
        let (key, value) = pair.split_once("=\"").unwrap();
        params.insert(key.to_owned(), value.trim_end_matches('"').to_owned());
    }
    params
}

#[tokio::test]
async fn a_mount_challenge_names_the_source_so_a_token_for_the_challenged_scopes_mounts() {
    let s = Setup::start().await;
    s.push_as_admin("library/conf", "1").await;
    s.user("alice", &[("library", Role::Developer)]).await;
    let manifest: Value = s.pull(&admin(), "library/conf", "1").await.json().await.unwrap();
    let digest = manifest["config"]["digest"].as_str().unwrap().to_owned();
    let path = format!("/v2/library/other/blobs/uploads/?mount={digest}&from=library/conf");

    // Without credentials: the challenge names the source's pull beside the target's push.
    let r = s.req(Method::POST, &path).send().await.unwrap();
    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "authentication required").await;
    let challenge = challenge.unwrap();
    assert_eq!(challenge, s.challenge(",scope=\"repository:library/other:pull,push repository:library/conf:pull\""));

    // A client that asks for exactly what it was challenged for (as the OCI conformance
    // suite's does) gets a token that mounts.
    let params = challenge_params(&challenge);
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("service", &params["service"]);
    for scope in params["scope"].split(' ') {
        query.append_pair("scope", scope);
    }
    let url = format!("{}?{}", params["realm"], query.finish());
    let r = s.http.get(url).basic_auth("alice", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let token = r.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    let r = s.req(Method::POST, &path).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(r.headers()["location"], format!("/v2/library/other/blobs/{digest}").as_str());
}

#[tokio::test]
async fn tokens_issued_before_a_restart_verify_after_it() {
    let s = Setup::start().await;
    s.push_as_admin("library/alpine", "1").await;
    let token = Auth::Bearer(s.token(Some("admin"), "repository:library/alpine:pull").await);
    let Setup { server, store, audit, http } = s;
    let s = Setup { server: server.restart(), store, audit, http };
    assert_eq!(s.pull(&token, "library/alpine", "1").await.status(), StatusCode::OK);
}
