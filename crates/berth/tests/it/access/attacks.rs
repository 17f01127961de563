//! Attacks on the token service, each refused with its exact error: forged, foreign,
//! unsigned and expired tokens, scopes that try to escape their repository, a refresh
//! token passed off as an access token, and password guessing.

use std::time::Duration;

use base64::Engine as _;
use berth_access::{keys, tokens};
use berth_core::access::{Permission, Role};
use reqwest::StatusCode;
use serde_json::Value;

use super::{Auth, PASSWORD, Setup, assert_error};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Asserts that `token` is refused on a pull of `team/app:1` as an invalid token.
async fn assert_invalid_token(s: &Setup, token: String, message: &str) {
    let r = s.pull(&Auth::Bearer(token), "team/app", "1").await;
    let challenge = assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).await;
    assert_eq!(challenge.unwrap(), s.challenge(",scope=\"repository:team/app:pull\",error=\"invalid_token\""));
}

async fn setup() -> (Setup, String) {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let token = s.token(Some("alice"), "repository:team/app:pull").await;
    assert_eq!(s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await.status(), StatusCode::OK);
    (s, token)
}

#[tokio::test]
async fn a_token_whose_payload_was_changed_is_refused() {
    let (s, token) = setup().await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims = decode(parts[1]);
    claims["access"][0]["actions"] = serde_json::json!(["pull", "push", "delete"]);
    claims["sub"] = "admin".into();
    let tampered = format!("{}.{}.{}", parts[0], b64(claims.to_string().as_bytes()), parts[2]);
    assert_invalid_token(&s, tampered, "the token is invalid").await;
}

#[tokio::test]
async fn a_token_signed_by_a_foreign_key_is_refused_even_under_a_known_kid() {
    let (s, token) = setup().await;
    let kid = decode(token.split('.').next().unwrap())["kid"].as_str().unwrap().to_owned();
    let foreign = keys::generate(0).unwrap();
    let signer = keys::signer_of(&foreign).unwrap();
    let claims: tokens::Claims = serde_json::from_value(decode(token.split('.').nth(1).unwrap())).unwrap();
    assert_invalid_token(&s, tokens::sign(&claims, &kid, &signer).unwrap(), "the token is invalid").await;
    assert_invalid_token(&s, tokens::sign(&claims, &foreign.kid, &signer).unwrap(), "the token is invalid").await;
}

#[tokio::test]
async fn an_unsigned_token_is_refused() {
    let (s, token) = setup().await;
    let parts: Vec<&str> = token.split('.').collect();
    let mut header = decode(parts[0]);
    header["alg"] = "none".into();
    for signature in ["", parts[2]] {
        let unsigned = format!("{}.{}.{signature}", b64(header.to_string().as_bytes()), parts[1]);
        assert_invalid_token(&s, unsigned, "the token is invalid").await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let s = Setup::start_with(|c| c.auth.token_ttl = Duration::from_secs(1)).await;
    s.push_as_admin("team/app", "1").await;
    let token = s.token(Some("admin"), "repository:team/app:pull").await;
    assert_eq!(s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await.status(), StatusCode::OK);
    // Past its `exp` and the leeway allowed between nodes' clocks.
    tokio::time::sleep(Duration::from_secs(1 + tokens::LEEWAY_SECS + 1)).await;
    assert_invalid_token(&s, token, "the token has expired").await;
}

#[tokio::test]
async fn scopes_with_traversal_or_injected_separators_are_refused_whole() {
    let s = Setup::start().await;
    s.user("alice", &[("team", Role::Developer)]).await;
    for (scope, why) in [
        ("repository:team/../secret/app:pull", "invalid repository name: \"repository:team/../secret/app:pull\""),
        ("repository:../secret:pull", "invalid repository name: \"repository:../secret:pull\""),
        (
            "repository:team/app:pull:secret/app:push",
            "invalid repository name: \"repository:team/app:pull:secret/app:push\"",
        ),
        ("repository:team/app,secret/app:pull", "invalid repository name: \"repository:team/app,secret/app:pull\""),
        ("repository:team/app:pull,admin", "unknown action: \"repository:team/app:pull,admin\""),
    ] {
        let query = format!("scope=repository:team/app:pull&scope={}", urlencode(scope));
        let r = s.get_token(Some("alice"), &query).await;
        assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST", &format!("invalid scope: {why}")).await;
    }
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().no_proxy().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap()
}

/// Guesses at `/token` as `account` (a new name per guess if `None`) until the answer is
/// 429 or `max` guesses were refused; returns the 401s before it and the 429.
async fn guess_until_limited(
    s: &Setup,
    from: &reqwest::Client,
    account: Option<&str>,
    max: u32,
) -> (u32, reqwest::Response) {
    for refused in 0..=max {
        let name = account.map_or_else(|| format!("nobody{refused}"), str::to_owned);
        let r = from.get(s.url("/token?service=berth")).basic_auth(name, Some("guess")).send().await.unwrap();
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            return (refused, r);
        }
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "invalid username or password").await;
    }
    panic!("{max} guesses and no limit");
}

#[tokio::test]
async fn password_guessing_meets_the_limit_and_the_user_still_logs_in_from_where_they_did() {
    let s = Setup::start().await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let (home, attacker, sprayer) = (client_from("127.0.0.1"), client_from("127.0.0.2"), client_from("127.0.0.3"));
    // Alice logged in from home before the attack.
    let r = home.get(s.url("/token?service=berth")).basic_auth("alice", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // The account allows a burst of 10 failures (one more each 6 s; the guesses take less).
    // Past it a guess waits for the bucket to put one back, then is refused 429.
    let started = std::time::Instant::now();
    let (refused, r) = guess_until_limited(&s, &attacker, Some("alice"), 30).await;
    let refills = started.elapsed().as_secs() as u32 / 6;
    assert!((10..=10 + refills + 1).contains(&refused), "{refused} guesses before the limit");
    let retry_after: u64 = r.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=6).contains(&retry_after), "one failure refills in 6 s: {retry_after}");
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS", "too many failed logins; retry later").await;
    // Straight to /v2 the same; and while that guess waits its turn, the address gets no
    // other one checked: many connections guess no faster than one.
    let guess = |password: &'static str| {
        let r = attacker.get(s.url("/v2/")).basic_auth("alice", Some(password));
        async move {
            let started = std::time::Instant::now();
            (r.send().await.unwrap().status(), started.elapsed())
        }
    };
    let (waited, at_once) = tokio::join!(guess("guess2"), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        guess("guess3").await
    });
    assert_eq!(waited.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(waited.1 >= Duration::from_secs(3), "a guess past the limit waits its turn: {:?}", waited.1);
    assert_eq!(at_once.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(at_once.1 < Duration::from_secs(2), "a second one meanwhile is refused at once: {:?}", at_once.1);
    // From home, where she logged in before, alice is not slowed: her guesses are
    // still checked (401, not 429) and her password works.
    let r = home.get(s.url("/v2/")).basic_auth("alice", Some("typo")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = home.get(s.url("/v2/")).basic_auth("alice", Some(PASSWORD)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // One address spraying many accounts meets the address' limit: 20, one more each 3 s.
    let started = std::time::Instant::now();
    let (refused, _) = guess_until_limited(&s, &sprayer, None, 60).await;
    let refills = started.elapsed().as_secs() as u32 / 3;
    assert!((20..=20 + refills + 1).contains(&refused), "{refused} guesses before the limit");
}

/// `GET /token` as `account` with `password` from `from`: its status and how long it took.
fn login_from(
    s: &Setup,
    from: &str,
    account: &str,
    password: &str,
) -> impl Future<Output = (StatusCode, Duration)> + use<> {
    let r = client_from(from).get(s.url("/token?service=berth")).basic_auth(account, Some(password));
    async move {
        let started = std::time::Instant::now();
        let status = r.send().await.unwrap().status();
        (status, started.elapsed())
    }
}

#[tokio::test]
async fn an_attacker_failing_logins_from_many_addresses_does_not_lock_the_owner_out() {
    let s = Setup::start().await;
    s.user("alice", &[("team", Role::Guest)]).await;
    s.robot("robot$team+ci", "team", &[Permission::Pull], None).await;
    let attack_then_log_in = |account: &'static str, net: u8| {
        let s = &s;
        async move {
            // Ten failures, each from another address, empty the account's bucket…
            for i in 0..10 {
                let (status, _) = login_from(s, &format!("127.{net}.1.{i}"), account, "guess").await;
                assert_eq!(status, StatusCode::UNAUTHORIZED, "{account}");
            }
            // …and the attack goes on from more addresses while the owner logs in from
            // an address never seen (a new CI runner): slowed, never refused.
            let attack = (0..5).map(|i| login_from(s, &format!("127.{net}.2.{i}"), account, "guess"));
            let owner = async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                login_from(s, &format!("127.{net}.3.1"), account, PASSWORD).await
            };
            let (attack, (status, took)) = tokio::join!(futures_util::future::join_all(attack), owner);
            assert_eq!(status, StatusCode::OK, "{account}'s owner logs in during the attack");
            assert!(took < Duration::from_secs(8), "{account}: waited at most one refill (6 s): {took:?}");
            // The attacker's guesses past the limit are refused, as many as it sends.
            assert!(attack.iter().all(|(status, _)| *status == StatusCode::TOO_MANY_REQUESTS), "{attack:?}");
        }
    };
    tokio::join!(attack_then_log_in("alice", 1), attack_then_log_in("robot$team+ci", 2));
}

#[tokio::test]
async fn bad_id_tokens_from_many_addresses_do_not_lock_a_keyless_robot_out() {
    use berth_testkit::oidc::{OidcIssuer, OidcKey};
    const AUDIENCE: &str = "https://registry.example.com";
    const SUBJECT: &str = "repo:acme/app:ref:refs/heads/main";
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    // The issuer the test plays is on loopback, over plain http: allowed explicitly.
    let s = Setup::start_with(|config| {
        config.auth.oidc_issuers = vec![issuer.url().to_owned()];
        config.auth.oidc_allow_private = true;
    })
    .await;
    s.store.create_project("team", false).await.unwrap();
    s.robot("robot$team+gha", "team", &[Permission::Pull], None).await;
    let trust = serde_json::json!({ "issuer": issuer.url(), "audiences": [AUDIENCE], "subject": SUBJECT });
    let update =
        berth_meta::RobotUpdate { secret_hash: Some(None), trust: Some(Some(trust.to_string())), ..Default::default() };
    s.store.update_robot("robot$team+gha", &update).await.unwrap();

    // Thirty ID tokens for another audience, from thirty addresses: each is refused as
    // what it is (401), none is counted against the robot, so none meets a limit.
    for i in 0..30 {
        let bad = key.sign(&issuer.claims("https://elsewhere.example", SUBJECT));
        let (status, _) = login_from(&s, &format!("127.0.1.{i}"), "robot$team+gha", &bad).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "bad ID token {i}");
    }
    // The CI job's real ID token, from a runner never seen, logs in at once.
    let good = key.sign(&issuer.claims(AUDIENCE, SUBJECT));
    let (status, took) = login_from(&s, "127.0.2.1", "robot$team+gha", &good).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(2), "a keyless login is not slowed: {took:?}");
}

#[tokio::test]
async fn one_clients_failures_behind_a_shared_proxy_address_do_not_lock_out_anothers_login() {
    // A proxy Berth does not trust: every client has its address (127.0.0.1).
    let s = Setup::start().await;
    s.user("alice", &[("team", Role::Guest)]).await;
    for i in 0..20 {
        let (status, _) = login_from(&s, "127.0.0.1", &format!("nobody{i}"), "guess").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // The address' bucket is empty: another client's right password waits its turn (at
    // most 3 s) and logs in.
    let (status, took) = login_from(&s, "127.0.0.1", "alice", PASSWORD).await;
    assert_eq!(status, StatusCode::OK);
    assert!(took < Duration::from_secs(5), "{took:?}");
    drop(s);

    // A trusted proxy (what deploy/kubernetes sets): each client is its own address, and
    // another's failures do not even slow it.
    let s = Setup::start_with(|c| {
        c.listen.trusted_proxies = berth_server::TrustedProxies(vec!["127.0.0.0/8".parse().unwrap()])
    })
    .await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let via_proxy = |client: &str, account: &str, password: &str| {
        let r = s.req(reqwest::Method::GET, "/token?service=berth").header("x-forwarded-for", client);
        let r = r.basic_auth(account, Some(password)).send();
        async move { r.await.unwrap().status() }
    };
    for i in 0..20 {
        assert_eq!(via_proxy("203.0.113.1", &format!("nobody{i}"), "guess").await, StatusCode::UNAUTHORIZED);
    }
    let started = std::time::Instant::now();
    assert_eq!(via_proxy("203.0.113.2", "alice", PASSWORD).await, StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn logins_and_tokens_are_audited_without_any_secret() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let r = s.req(reqwest::Method::GET, "/token?service=berth").basic_auth("alice", Some("wrong-guess")).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    let token = s.token(Some("alice"), "repository:team/app:pull,push").await;
    let r = s.pull(&Auth::Basic("alice".into(), "other-guess".into()), "team/app", "1").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // The writer appends in batches: wait for the three events.
    let query = berth_meta::AuditQuery { actor: Some("alice".into()), limit: 100, ..Default::default() };
    let mut events = Vec::new();
    for _ in 0..100 {
        events = s.audit.query(&query).await.unwrap();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen: Vec<(&str, &str, Option<&str>)> = events
        .iter()
        .rev()
        .map(|r| (r.event.operation.as_str(), r.event.outcome.as_str(), r.event.detail.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("login", "failure", Some("invalid username or password")),
            ("token.issue", "success", Some("repository:team/app:pull")),
            ("login", "failure", Some("invalid username or password")),
        ]
    );
    assert!(events.iter().all(|r| r.event.address == "127.0.0.1"));
    let text = format!("{events:?}");
    for secret in ["wrong-guess", "other-guess", PASSWORD, token.as_str()] {
        assert!(!text.contains(secret), "the audit log holds a secret: {text}");
    }
}

#[tokio::test]
async fn unauthorized_upload_requests_do_not_hold_the_upload_permits() {
    let s = Setup::start_with(|c| c.limits.max_uploads = 2).await;
    let token = s.token(Some("admin"), "repository:team/app:pull,push").await;
    let r = s.req(reqwest::Method::POST, "/v2/team/app/blobs/uploads/").bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let path = r.headers()["location"].to_str().unwrap().to_owned();
    let location = s.url(&path);

    // Wrong passwords queue for the password checks (a few at once per core)…
    let guesses = (0..48).map(|i| {
        let r = client_from(&format!("127.0.4.{i}")).get(s.url("/v2/")).basic_auth(format!("nobody{i}"), Some("x"));
        async move { r.send().await.unwrap().status() }
    });
    // …and so do uploads sent with them, while they wait to be authorized.
    let uploads = (0..8).map(|i| {
        let r = client_from(&format!("127.0.5.{i}")).patch(&location).basic_auth(format!("nobody{i}"), Some("x"));
        async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            r.body("xx").send().await.unwrap().status()
        }
    });
    // An authorized upload meanwhile is not refused for lack of a permit.
    let authorized = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = s.req(reqwest::Method::PATCH, &path).bearer_auth(&token);
        r.body("abc").send().await.unwrap().status()
    };
    let (guesses, uploads, authorized) =
        tokio::join!(futures_util::future::join_all(guesses), futures_util::future::join_all(uploads), authorized);
    assert_eq!(authorized, StatusCode::ACCEPTED);
    assert!(guesses.iter().chain(&uploads).all(|s| *s == StatusCode::UNAUTHORIZED), "{guesses:?} {uploads:?}");
}
