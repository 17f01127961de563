//! Keyless robots end to end: the test plays an OIDC issuer (discovery document and JWKS
//! on loopback, ID tokens signed in the test, `berth_testkit::oidc`), a robot trusting it
//! is made through the management API, and a CI job's ID token is its password —
//! `skopeo copy --dest-creds 'robot$team+gha:<ID token>'` pushes, and the OAuth2 token
//! exchange on `POST /token` trades the ID token for a registry token. Tokens with a wrong
//! audience, a wrong subject, past their expiry, from an unknown issuer or signed by a key
//! rotated out of the JWKS are refused (401); a key rotated in is picked up. Nothing the
//! server issues on an ID token outlives it (no refresh token, registry tokens ending by
//! the ID token's `exp`), and a trust may name only an allowed https issuer on a public
//! address (the test's issuer, plain http on 127.0.0.1, is allowed explicitly).

use berth_testkit::oidc::{OidcIssuer, OidcKey};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::clients_skopeo_podman::{Clients, assert_serves_manifest, oci_ref};
use crate::fixtures::{OCI_MANIFEST, oci_layout};
use crate::management::Mgmt;
use crate::support::{TestServer, admin, client_as};

const AUDIENCE: &str = "https://registry.example.com";
const SUBJECT: &str = "repo:acme/app:ref:refs/heads/main";
const EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

/// What lets a server fetch the test's issuer, which plays on 127.0.0.1 over plain http:
/// allowlisted, and private addresses (loopback included) allowed.
fn allow_issuer(config: &mut berth::Config, issuer: &OidcIssuer) {
    config.auth.oidc_issuers = vec![issuer.url().to_owned()];
    config.auth.oidc_allow_private = true;
}

/// A server that allows `issuer` (see [`allow_issuer`]).
fn server_allowing(issuer: &OidcIssuer) -> TestServer {
    TestServer::start_with(|c| allow_issuer(c, issuer))
}

/// A keyless robot `robot$team+gha` trusting `issuer` for `AUDIENCE` and a subject on
/// `acme/app`'s branches, with pull and push in `team`.
async fn keyless_robot(server: &TestServer, issuer: &OidcIssuer) -> String {
    let api = Mgmt::new(server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" }))).await;
    let trust = json!({
        "issuer": issuer.url(),
        "audiences": [AUDIENCE],
        "subject": "repo:acme/app:ref:refs/heads/*",
        "claims": { "repository_owner": "acme" },
    });
    let robot = json!({
        "name": "gha",
        "grants": [{ "project": "team", "permissions": ["pull", "push"] }],
        "trust": trust,
    });
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot)).await;
    assert_eq!(created["secret"], Value::Null, "a keyless robot has no secret");
    created["robot"]["name"].as_str().unwrap().to_owned()
}

fn id_token(issuer: &OidcIssuer, key: &OidcKey, edit: impl FnOnce(&mut Value)) -> String {
    let mut claims = issuer.claims(AUDIENCE, SUBJECT);
    claims["repository_owner"] = json!("acme");
    edit(&mut claims);
    key.sign(&claims)
}

/// `POST /token` with the token-exchange grant for `robot`.
async fn exchange(server: &TestServer, robot: &str, id_token: &str) -> reqwest::Response {
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("grant_type", EXCHANGE),
            ("service", "berth"),
            ("scope", "repository:team/app:pull,push"),
            ("client_id", robot),
            ("subject_token", id_token),
            ("subject_token_type", ID_TOKEN),
        ])
        .finish();
    client_as(None)
        .build()
        .unwrap()
        .post(format!("{}/token", server.url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .unwrap()
}

/// `GET /token` with the ID token as the robot's Basic password.
async fn basic_login(server: &TestServer, robot: &str, id_token: &str) -> reqwest::Response {
    let url = format!("{}/token?service=berth&scope=repository:team/app:pull,push", server.url());
    client_as(None).build().unwrap().get(url).basic_auth(robot, Some(id_token)).send().await.unwrap()
}

#[test]
fn a_ci_job_pushes_with_skopeo_using_its_id_token_as_the_keyless_robots_password() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let robot = runtime.block_on(keyless_robot(&server, &issuer));
    assert_eq!(robot, "robot$team+gha");

    let clients = Clients::logged_out(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[60_000]);
    let creds = format!("{robot}:{}", id_token(&issuer, &key, |_| {}));
    let remote = format!("docker://{}/team/app:v1", server.host());
    clients.skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &oci_ref(&src, "v1"), &remote]);
    assert_serves_manifest(&server, "team/app", "v1", &image.manifest, OCI_MANIFEST);

    // Outside its grants, the same ID token pushes nothing.
    let elsewhere = format!("docker://{}/other/app:v1", server.host());
    let refused = clients.skopeo_fails(&[
        "copy",
        "--dest-tls-verify=false",
        "--dest-creds",
        &creds,
        &oci_ref(&src, "v1"),
        &elsewhere,
    ]);
    // skopeo reports the 403 of its first read in the project it holds nothing in.
    assert!(["403 (Forbidden)", "denied", "unauthorized"].iter().any(|r| refused.contains(r)), "{refused}");
}

#[tokio::test]
async fn the_token_exchange_grant_trades_a_matching_id_token_and_refuses_every_mismatch() {
    let (key, other) = (OidcKey::generate("k1"), OidcKey::generate("k2"));
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let robot = keyless_robot(&server, &issuer).await;

    // A matching ID token: a registry token for exactly what the robot holds.
    let r = exchange(&server, &robot, &id_token(&issuer, &key, |_| {})).await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    let token = body["access_token"].as_str().unwrap();
    let upload = client_as(None).build().unwrap().post(format!("{}/v2/team/app/blobs/uploads/", server.url()));
    assert_eq!(upload.bearer_auth(token).send().await.unwrap().status(), StatusCode::ACCEPTED);

    let now = issuer.claims(AUDIENCE, SUBJECT)["iat"].as_u64().unwrap();
    let foreign = OidcIssuer::start(&[&key]);
    let refusals: Vec<(&str, String)> = vec![
        ("a wrong audience", id_token(&issuer, &key, |c| c["aud"] = json!("https://elsewhere.example"))),
        ("a wrong subject", id_token(&issuer, &key, |c| c["sub"] = json!("repo:acme/app:pull_request"))),
        ("a claim rule unmet", id_token(&issuer, &key, |c| c["repository_owner"] = json!("mallory"))),
        ("an expired token", id_token(&issuer, &key, |c| c["exp"] = json!(now - 600))),
        ("an unknown issuer", id_token(&foreign, &key, |c| c["iss"] = json!(foreign.url()))),
        ("a key the issuer does not publish", id_token(&issuer, &other, |_| {})),
    ];
    for (what, bad) in &refusals {
        let r = exchange(&server, &robot, bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what}");
        let r = basic_login(&server, &robot, bad).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{what} as the Basic password");
    }

    // A secret is no ID token: a robot with a secret exchanges nothing.
    let api = Mgmt::new(&server, Some(&admin()));
    let robot_with_secret = json!({ "name": "ci", "grants": [{ "project": "team", "permissions": ["pull"] }] });
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot_with_secret)).await;
    let r = exchange(&server, "robot$team+ci", created["secret"].as_str().unwrap()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The issuer rotates: `k2` in, `k1` out. A token signed by `k2` is picked up by the
    // refetch its unknown kid triggers, once the refetch window since the last attempt
    // (the refused token above) has passed: a flood of unknown kids cannot make Berth
    // hammer the issuer.
    issuer.publish(&[&other]);
    let window = berth_access::oidc::OidcConfig::default().refetch_interval;
    tokio::time::sleep(window + std::time::Duration::from_secs(1)).await;
    let r =
        exchange(&server, &robot, &id_token(&issuer, &other, |c| c["sub"] = json!("repo:acme/app:ref:refs/heads/dev")))
            .await;
    assert_eq!(r.status(), StatusCode::OK, "a key rotated in is picked up");
    let r = exchange(&server, &robot, &id_token(&issuer, &key, |_| {})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a key rotated out is refused once the JWKS is refetched");
}

/// `POST /token` with `pairs` and the service and scope the robot holds.
async fn post_token(server: &TestServer, pairs: &[(&str, &str)]) -> reqwest::Response {
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([("service", "berth"), ("scope", "repository:team/app:pull,push")])
        .extend_pairs(pairs)
        .finish();
    let client = client_as(None).build().unwrap();
    let r = client.post(format!("{}/token", server.url())).header("content-type", "application/x-www-form-urlencoded");
    r.body(form).send().await.unwrap()
}

/// An ID token valid for one more minute.
fn short_id_token(issuer: &OidcIssuer, key: &OidcKey) -> (String, i64) {
    let exp = issuer.claims(AUDIENCE, SUBJECT)["iat"].as_i64().unwrap() + 60;
    (id_token(issuer, key, |c| c["exp"] = json!(exp)), exp)
}

#[tokio::test]
async fn a_keyless_login_gets_no_refresh_token() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let robot = keyless_robot(&server, &issuer).await;
    let (id, _) = short_id_token(&issuer, &key);

    // `docker login` asks for offline access on every login: a Basic login with
    // `offline_token=true`, and the OAuth2 password grant with `access_type=offline`.
    let url = format!("{}/token?service=berth&scope=repository:team/app:pull&offline_token=true", server.url());
    let r = client_as(None).build().unwrap().get(url).basic_auth(&robot, Some(&id)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let basic: Value = r.json().await.unwrap();
    let password = [("grant_type", "password"), ("username", &robot), ("password", &id), ("access_type", "offline")];
    let r = post_token(&server, &password).await;
    assert_eq!(r.status(), StatusCode::OK);
    let oauth: Value = r.json().await.unwrap();
    let exchanged = [
        ("grant_type", EXCHANGE),
        ("client_id", &robot),
        ("subject_token", &id),
        ("subject_token_type", ID_TOKEN),
        ("access_type", "offline"),
    ];
    let r = post_token(&server, &exchanged).await;
    assert_eq!(r.status(), StatusCode::OK);
    let exchange: Value = r.json().await.unwrap();
    for (what, answer) in [("basic", &basic), ("password grant", &oauth), ("token exchange", &exchange)] {
        assert!(answer["access_token"].is_string(), "{what}: {answer}");
        assert_eq!(answer.get("refresh_token"), None, "{what}: a refresh token for an ID token: {answer}");
    }

    // A robot with a secret still gets one (the rule is about keyless logins only).
    let api = Mgmt::new(&server, Some(&admin()));
    let ci = json!({ "name": "ci", "grants": [{ "project": "team", "permissions": ["pull"] }] });
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(ci)).await;
    let secret = created["secret"].as_str().unwrap();
    let password =
        [("grant_type", "password"), ("username", "robot$team+ci"), ("password", secret), ("access_type", "offline")];
    let answer: Value = post_token(&server, &password).await.json().await.unwrap();
    assert!(answer["refresh_token"].is_string(), "{answer}");
}

/// The reported case with the real client: `docker login` asks for offline access, and
/// keeps a refresh token, when it gets one, as `identitytoken` in `config.json`.
#[test]
fn docker_login_with_an_id_token_keeps_no_refresh_token_on_the_runner() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let robot = runtime.block_on(keyless_robot(&server, &issuer));
    let docker = crate::clients_docker::Dockerd::start();
    let (id, _) = short_id_token(&issuer, &key);
    let login = docker.login(&server.host(), &crate::support::Creds::new(&robot, &id));
    assert!(login.contains("Login Succeeded"), "{login}");
    let config = docker.cli_config();
    let entry = &config["auths"][server.host()];
    assert!(entry.is_object(), "docker kept nothing for {}: {config}", server.host());
    assert_eq!(entry.get("identitytoken"), None, "a refresh token on the runner: {config}");
}

#[tokio::test]
async fn a_registry_token_never_outlives_the_id_token_it_was_issued_on() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let robot = keyless_robot(&server, &issuer).await;
    // The registry token TTL is 5 minutes; the ID token has one minute left.
    let (id, id_exp) = short_id_token(&issuer, &key);
    let from_basic: Value = basic_login(&server, &robot, &id).await.json().await.unwrap();
    let from_exchange: Value = exchange(&server, &robot, &id).await.json().await.unwrap();
    for answer in [&from_basic, &from_exchange] {
        let token = answer["access_token"].as_str().unwrap_or_else(|| panic!("no token: {answer}"));
        let exp = crate::access::claims(token)["exp"].as_i64().unwrap();
        assert!(exp <= id_exp, "the registry token ends at {exp}, after the ID token's {id_exp}: {answer}");
        assert!(answer["expires_in"].as_i64().unwrap() <= 60, "{answer}");
    }
}

/// The key `server` signs with, read from its database.
async fn signing_key(server: &TestServer) -> berth_meta::SigningKey {
    use berth_meta::IdentityStore as _;
    let keys = match &server.backend().scaleout {
        Some(s) => berth_meta::PgStore::open(&s.database).await.unwrap().signing_keys(0).await.unwrap(),
        None => {
            let db = berth_meta::SqliteStore::open(&server.data_dir().join("berth.db")).await.unwrap();
            db.signing_keys(0).await.unwrap()
        }
    };
    keys.into_iter().find(|k| k.retired_at.is_none()).expect("a key that signs")
}

#[tokio::test]
async fn a_refresh_token_of_a_keyless_robot_is_refused() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    let robot = keyless_robot(&server, &issuer).await;
    // One minted with the server's own signing key, as an earlier version issued them.
    let signer = signing_key(&server).await;
    let now = berth_meta::now();
    let claims = berth_access::tokens::Claims {
        iss: "berth".into(),
        sub: Some(robot.clone()),
        aud: "berth/refresh".into(),
        exp: now + 3600,
        nbf: now,
        // After the robot's last change, which a refresh token must postdate.
        iat: now + 1,
        jti: "minted".into(),
        access: Vec::new(),
    };
    let encoding = berth_access::keys::signer_of(&signer).unwrap();
    let refresh = berth_access::tokens::sign(&claims, &signer.kid, &encoding).unwrap();
    let r = post_token(&server, &[("grant_type", "refresh_token"), ("refresh_token", &refresh)]).await;
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["errors"][0]["message"], "the refresh token is no longer valid", "{body}");
}

/// The trust document of a keyless robot trusting `issuer`.
fn trust_in(issuer: &str) -> Value {
    json!({ "issuer": issuer, "audiences": [AUDIENCE], "subject": "repo:acme/app:ref:refs/heads/*" })
}

#[tokio::test]
async fn an_issuer_not_allowed_plain_http_or_private_is_refused_by_default() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    // The defaults: the public CI issuers are allowed, nothing private.
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" }))).await;
    let robot = |name: &str, issuer: &str| json!({ "name": name, "grants": [{ "project": "team", "permissions": ["pull"] }], "trust": trust_in(issuer) });
    let refused = [
        (issuer.url().to_owned(), "plain http"),
        ("http://token.actions.githubusercontent.com".to_owned(), "plain http"),
        ("https://127.0.0.1:8443".to_owned(), "private"),
        ("https://[::1]:8443".to_owned(), "private"),
        ("https://10.1.2.3".to_owned(), "private"),
        ("https://169.254.169.254".to_owned(), "private"),
        ("https://192.168.1.1".to_owned(), "private"),
        ("https://localhost".to_owned(), "private"),
        ("https://issuer.example".to_owned(), "not an allowed issuer"),
        // A prefix of an allowed issuer's host is another host.
        ("https://token.actions.githubusercontent.com.evil.example".to_owned(), "not an allowed issuer"),
    ];
    for (i, (url, why)) in refused.iter().enumerate() {
        let (status, _, body) =
            api.call(Method::POST, "/projects/team/robots", Some(robot(&format!("r{i}"), url))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        let message = body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(why), "{url}: {message:?} lacks {why:?}");
    }
    let allowed = robot("gha", "https://token.actions.githubusercontent.com");
    api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(allowed)).await;
    // A change of trust is checked the same way.
    let patch = json!({ "trust": trust_in(issuer.url()) });
    let (status, _, body) = api.call(Method::PATCH, "/robots/robot$team+gha", Some(patch)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(issuer.discovery_hits(), 0, "a refused issuer is never contacted");
}

#[tokio::test]
async fn a_keyless_robot_makes_no_robot_that_outlives_its_id_token() {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    let server = server_allowing(&issuer);
    keyless_robot(&server, &issuer).await;
    // A keyless robot that manages the project's robots (it holds pull and manage-robots).
    let admin_api = Mgmt::new(&server, Some(&admin()));
    let manager = json!({
        "name": "ops",
        "grants": [{ "project": "team", "permissions": ["pull", "manage-robots"] }],
        "trust": trust_in(issuer.url()),
    });
    admin_api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(manager)).await;
    let ci = json!({ "name": "ci", "grants": [{ "project": "team", "permissions": ["pull"] }] });
    admin_api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(ci)).await;
    let (id, id_exp) = short_id_token(&issuer, &key);
    let ops = Mgmt::new(&server, Some(&crate::support::Creds::new("robot$team+ops", &id)));
    let robot = |expires_at: Option<i64>| {
        let mut robot = json!({ "name": "made", "grants": [{ "project": "team", "permissions": ["pull"] }] });
        if let Some(at) = expires_at {
            robot["expires_at"] = at.into();
        }
        robot
    };
    // Its login lasts as long as its ID token: a robot with a secret living longer, or
    // the secret of one, would turn the one-minute token into a lasting credential.
    for (what, expires_at) in [("never expiring", None), ("expiring after the ID token", Some(id_exp + 3600))] {
        let (status, _, body) = ops.call(Method::POST, "/projects/team/robots", Some(robot(expires_at))).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert!(body["errors"][0]["message"].as_str().unwrap().contains("outlive"), "{what}: {body}");
    }
    let (status, _, body) = ops.call(Method::POST, "/robots/robot$team+ci/secret", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "rotating a never-expiring robot's secret: {body}");
    ops.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot(Some(id_exp - 10)))).await;
}
