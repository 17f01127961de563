//! How long what the token service issues lives: never past the account's own expiry,
//! never past the configured lifetimes (whatever a token's `exp` says), and not a moment
//! past the revocation of the key that signed it.

use base64::Engine as _;
use berth_access::{keys, tokens};
use berth_core::access::{Permission, Role};
use berth_meta::SigningKey;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::{Auth, PASSWORD, Setup, assert_error, claims};

fn kid_of(jwt: &str) -> String {
    let header = jwt.split('.').next().unwrap();
    let header: Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    header["kid"].as_str().unwrap().to_owned()
}

/// The key `s`'s server signs with now.
async fn signer(s: &Setup) -> SigningKey {
    let keys = s.store.signing_keys(0).await.unwrap();
    keys.into_iter().find(|k| k.retired_at.is_none()).expect("a key that signs")
}

/// A token signed with `key` as the server would, for `audience`, living `lifetime`
/// seconds from now, granting pull on `team/app`.
fn mint(key: &SigningKey, audience: &str, sub: &str, lifetime: i64) -> String {
    let now = berth_meta::now();
    let access = if audience == "berth" {
        vec![tokens::AccessEntry { kind: "repository".into(), name: "team/app".into(), actions: vec!["pull".into()] }]
    } else {
        Vec::new()
    };
    let claims = tokens::Claims {
        iss: "berth".into(),
        sub: Some(sub.into()),
        aud: audience.into(),
        exp: now + lifetime,
        nbf: now,
        // A refresh token must postdate the account's last change.
        iat: now + 1,
        jti: format!("minted-{lifetime}"),
        access,
    };
    tokens::sign(&claims, &key.kid, &keys::signer_of(key).unwrap()).unwrap()
}

fn refresh_form(token: &str) -> [(&'static str, &str); 3] {
    [("grant_type", "refresh_token"), ("refresh_token", token), ("scope", "repository:team/app:pull")]
}

#[tokio::test]
async fn a_robots_tokens_never_outlive_the_robot() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    let expires_at = berth_meta::now() + 120;
    s.robot("robot$team+ci", "team", &[Permission::Pull], Some(expires_at)).await;
    let r = s.get_token(Some("robot$team+ci"), "offline_token=true&scope=repository:team/app:pull").await;
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    for kind in ["token", "refresh_token"] {
        let exp = claims(body[kind].as_str().unwrap())["exp"].as_i64().unwrap();
        assert!(exp <= expires_at, "the {kind} ends at {exp}, after the robot's {expires_at}");
    }
    assert!(body["expires_in"].as_i64().unwrap() <= 120, "{body}");
    // A refresh grant's registry token the same.
    let r = s.post_token(&refresh_form(body["refresh_token"].as_str().unwrap())).await;
    let body: Value = r.json().await.unwrap();
    let exp = claims(body["access_token"].as_str().unwrap())["exp"].as_i64().unwrap();
    assert!(exp <= expires_at, "refreshed: {exp} after {expires_at}");
    assert_eq!(body.get("refresh_token"), None, "a refresh grant issues no new refresh token: {body}");
}

#[tokio::test]
async fn a_token_living_longer_than_the_token_ttl_is_refused() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let key = signer(&s).await;
    // The token TTL is 5 minutes, refresh tokens' 30 days.
    let fits = mint(&key, "berth", "alice", 300);
    assert_eq!(s.pull(&Auth::Bearer(fits), "team/app", "1").await.status(), StatusCode::OK);
    let long = mint(&key, "berth", "alice", 3600);
    let r = s.pull(&Auth::Bearer(long), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let long_refresh = mint(&key, "berth/refresh", "alice", 31 * 24 * 3600);
    let r = s.post_token(&refresh_form(&long_refresh)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let refresh = mint(&key, "berth/refresh", "alice", 24 * 3600);
    assert_eq!(s.post_token(&refresh_form(&refresh)).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_retired_longer_ago_than_the_token_ttl_verifies_no_registry_token_but_refresh_tokens() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let old = signer(&s).await;
    // A rotation an hour ago: no registry token the old key signed (5 minutes at most)
    // can still be current, so none verifies; refresh tokens live 30 days and still do.
    let mut new = keys::generate(berth_meta::now() - 3600).unwrap();
    new.created_at = berth_meta::now() - 3600;
    s.store.rotate_signing_key(&new).await.unwrap();
    let Setup { server, store, audit, http } = s;
    let s = Setup { server: server.restart(), store, audit, http };
    let r = s.pull(&Auth::Bearer(mint(&old, "berth", "alice", 60)), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let r = s.post_token(&refresh_form(&mint(&old, "berth/refresh", "alice", 3600))).await;
    assert_eq!(r.status(), StatusCode::OK, "a refresh token outlives its key's retirement");
}

#[tokio::test]
async fn a_revoked_signing_key_verifies_nothing_at_once() {
    let s = Setup::start().await;
    s.push_as_admin("team/app", "1").await;
    s.user("alice", &[("team", Role::Guest)]).await;
    let admin = Auth::admin();
    let token = s.token(Some("alice"), "repository:team/app:pull").await;
    let first = kid_of(&token);
    let form = [("grant_type", "password"), ("username", "alice"), ("password", PASSWORD), ("access_type", "offline")];
    let body: Value = s.post_token(&form).await.json().await.unwrap();
    let refresh = body["refresh_token"].as_str().unwrap().to_owned();
    // Verified once: from now on it is served from the cache.
    assert_eq!(s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await.status(), StatusCode::OK);

    let r = admin.on(s.req(Method::POST, "/api/v1/signing-keys")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await.status(), StatusCode::OK);
    let r = admin.on(s.req(Method::DELETE, &format!("/api/v1/signing-keys/{first}"))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.text().await);
    let r = s.pull(&Auth::Bearer(token.clone()), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let r = s.post_token(&refresh_form(&refresh)).await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let listed: Value =
        admin.on(s.req(Method::GET, "/api/v1/signing-keys")).send().await.unwrap().json().await.unwrap();
    assert!(listed.as_array().unwrap().iter().all(|k| k["kid"] != json!(first)), "{listed}");
    let r = admin.on(s.req(Method::DELETE, &format!("/api/v1/signing-keys/{first}"))).send().await.unwrap();
    assert_error(r, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no signing key named {first:?}")).await;

    // Revoking the key that signs makes a new one sign first: tokens are issued still.
    let second = s.token(Some("alice"), "repository:team/app:pull").await;
    let r = admin.on(s.req(Method::DELETE, &format!("/api/v1/signing-keys/{}", kid_of(&second)))).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::NO_CONTENT);
    let r = s.pull(&Auth::Bearer(second.clone()), "team/app", "1").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "the token is invalid").await;
    let third = s.token(Some("alice"), "repository:team/app:pull").await;
    assert_ne!(kid_of(&third), kid_of(&second));
    assert_eq!(s.pull(&Auth::Bearer(third), "team/app", "1").await.status(), StatusCode::OK);
    // Only a system administrator revokes.
    let r = Auth::user("alice").on(s.req(Method::DELETE, &format!("/api/v1/signing-keys/{}", kid_of(&token)))).send();
    assert_eq!(r.await.unwrap().status(), StatusCode::FORBIDDEN);
}
