//! The verifier against a real issuer played by the test (`berth_testkit::oidc`: an HTTP
//! server on 127.0.0.1:0 serving a discovery document and a JWKS, counting the requests
//! it gets), with ID tokens signed by P-256 keys generated in the test.

use std::sync::Arc;
use std::time::Duration;

use berth_core::ErrorKind;
use berth_testkit::oidc::{OidcIssuer, OidcKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use super::{IssuerPolicy, OidcConfig, OidcVerifier, Trust};
use crate::password::base64url;

/// A trust in `issuer` for audience `berth`, subject `repo:acme/app:ref:refs/heads/*`
/// and `repository_owner: acme`.
fn trust(issuer: &OidcIssuer) -> Trust {
    Trust::parse(
        &json!({
            "issuer": issuer.url(),
            "audiences": ["berth", "other"],
            "subject": "repo:acme/app:ref:refs/heads/*",
            "claims": { "repository_owner": "acme" },
        })
        .to_string(),
    )
    .unwrap()
}

/// Claims that satisfy [`trust`].
fn claims(issuer: &OidcIssuer) -> Value {
    with(issuer.claims("berth", "repo:acme/app:ref:refs/heads/main"), "repository_owner", json!("acme"))
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An issuer publishing one key, `k1`.
fn one_key_issuer() -> (OidcKey, OidcIssuer) {
    let key = OidcKey::generate("k1");
    let issuer = OidcIssuer::start(&[&key]);
    (key, issuer)
}

/// The defaults, allowing `issuer` (plain http on 127.0.0.1: private addresses allowed).
fn config(issuer: &OidcIssuer) -> OidcConfig {
    let issuers = IssuerPolicy { allowed: vec![issuer.url().to_owned()], allow_private: true };
    OidcConfig { issuers, ..OidcConfig::default() }
}

fn verifier(issuer: &OidcIssuer) -> OidcVerifier {
    OidcVerifier::new(config(issuer)).unwrap()
}

/// A verifier whose cache expires and may refetch quickly, for the rotation tests.
fn quick_verifier(issuer: &OidcIssuer) -> OidcVerifier {
    let config = OidcConfig {
        jwks_ttl: Duration::from_millis(300),
        refetch_interval: Duration::from_millis(300),
        ..config(issuer)
    };
    OidcVerifier::new(config).unwrap()
}

/// Verifies, expecting a 401 whose message contains `expected` and not the token.
async fn assert_refused(verifier: &OidcVerifier, token: &str, trust: &Trust, expected: &str) {
    let error = verifier.verify(token, trust).await.expect_err("the token must be refused");
    assert_eq!(error.kind, ErrorKind::Unauthorized);
    assert!(error.message().contains(expected), "{:?} lacks {expected:?}", error.message());
    assert!(!error.message().contains(token), "the message echoes the token");
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

#[tokio::test]
async fn a_token_matching_the_trust_verifies() {
    let (key, issuer) = one_key_issuer();
    let verifier = verifier(&issuer);
    let identity = verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    assert_eq!(identity.issuer, issuer.url());
    assert_eq!(identity.subject, "repo:acme/app:ref:refs/heads/main");
    assert_eq!(identity.expires_at, claims(&issuer)["exp"].as_i64().unwrap());
    // `aud` as an array holding one trusted audience verifies too, from the cached JWKS.
    let claims = with(claims(&issuer), "aud", json!(["sts.example", "other"]));
    verifier.verify(&key.sign(&claims), &trust(&issuer)).await.unwrap();
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (key, issuer) = one_key_issuer();
    let token = key.sign(&with(claims(&issuer), "aud", json!(["sts.example"])));
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "audience").await;
}

#[tokio::test]
async fn a_token_whose_subject_does_not_match_is_refused() {
    let (key, issuer) = one_key_issuer();
    let token = key.sign(&with(claims(&issuer), "sub", json!("repo:acme/app:pull_request")));
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "subject does not match").await;
}

#[tokio::test]
async fn a_token_failing_a_claim_rule_is_refused() {
    let (key, issuer) = one_key_issuer();
    let token = key.sign(&with(claims(&issuer), "repository_owner", json!("mallory")));
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "claim `repository_owner` does not match").await;
    let mut claims = claims(&issuer);
    claims.as_object_mut().unwrap().remove("repository_owner");
    assert_refused(&verifier(&issuer), &key.sign(&claims), &trust(&issuer), "no string claim `repository_owner`").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (key, issuer) = one_key_issuer();
    let then = now() - 3600;
    let claims = with(with(with(claims(&issuer), "iat", json!(then)), "nbf", json!(then)), "exp", json!(then + 300));
    assert_refused(&verifier(&issuer), &key.sign(&claims), &trust(&issuer), "expired").await;
}

#[tokio::test]
async fn a_token_not_valid_yet_or_issued_in_the_future_is_refused() {
    let (key, issuer) = one_key_issuer();
    let later = now() + 600;
    let verifier = verifier(&issuer);
    let not_yet = with(claims(&issuer), "nbf", json!(later));
    assert_refused(&verifier, &key.sign(&not_yet), &trust(&issuer), "not valid yet").await;
    let future = with(claims(&issuer), "iat", json!(later));
    assert_refused(&verifier, &key.sign(&future), &trust(&issuer), "issued in the future").await;
}

#[tokio::test]
async fn a_token_of_another_issuer_is_refused_without_fetching_anything() {
    let (key, issuer) = one_key_issuer();
    let other = OidcIssuer::start(&[&key]);
    // Signed by a key the trusted issuer publishes, but claiming the other issuer.
    let token = key.sign(&with(claims(&issuer), "iss", json!(other.url())));
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "issuer is not the issuer the robot trusts").await;
    assert_eq!(issuer.discovery_hits() + other.discovery_hits(), 0);
}

#[tokio::test]
async fn an_issuer_whose_discovery_document_names_another_issuer_is_not_trusted() {
    let (key, issuer) = one_key_issuer();
    issuer.set_discovery_issuer("https://impostor.example");
    let token = key.sign(&claims(&issuer));
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "could not be fetched").await;
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn a_key_rotated_out_of_the_jwks_is_refused_once_the_cache_expires() {
    let old = OidcKey::generate("old");
    let new = OidcKey::generate("new");
    let issuer = OidcIssuer::start(&[&old]);
    let verifier = quick_verifier(&issuer);
    verifier.verify(&old.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    issuer.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_refused(&verifier, &old.sign(&claims(&issuer)), &trust(&issuer), "unknown `kid`").await;
    verifier.verify(&new.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn a_key_rotated_into_the_jwks_is_picked_up_by_the_refetch_its_kid_triggers() {
    let first = OidcKey::generate("first");
    let second = OidcKey::generate("second");
    let issuer = OidcIssuer::start(&[&first]);
    let verifier =
        OidcVerifier::new(OidcConfig { refetch_interval: Duration::from_millis(300), ..config(&issuer) }).unwrap();
    verifier.verify(&first.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    issuer.publish(&[&first, &second]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The JWKS is still fresh (15 min), but `second` is unknown to it: one refetch.
    verifier.verify(&second.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    verifier.verify(&first.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn a_token_with_alg_none_is_refused() {
    let (_key, issuer) = one_key_issuer();
    let header = base64url(json!({"alg": "none", "kid": "k1", "typ": "JWT"}).to_string().as_bytes());
    let payload = base64url(claims(&issuer).to_string().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        assert_refused(&verifier(&issuer), &token, &trust(&issuer), "accepted algorithm").await;
    }
    assert_eq!(issuer.discovery_hits(), 0);
}

#[tokio::test]
async fn a_token_signed_with_hs256_is_refused() {
    let (key, issuer) = one_key_issuer();
    // An HMAC "signature" keyed with public material (the published x coordinate).
    let secret = key.jwk()["x"].as_str().unwrap().as_bytes().to_vec();
    let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) };
    let token = jsonwebtoken::encode(&header, &claims(&issuer), &EncodingKey::from_secret(&secret)).unwrap();
    assert_refused(&verifier(&issuer), &token, &trust(&issuer), "accepted algorithm").await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_or_a_foreign_signature_is_refused() {
    let (key, issuer) = one_key_issuer();
    // Another key under the same `kid`: the JWKS lookup succeeds, the signature must not.
    let foreign = OidcKey::generate("k1");
    let verifier = verifier(&issuer);
    let token = key.sign(&claims(&issuer));
    let (header, rest) = token.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let tampered = with(claims(&issuer), "sub", json!("repo:acme/app:ref:refs/heads/release"));
    let tampered = format!("{header}.{}.{signature}", base64url(tampered.to_string().as_bytes()));
    assert_refused(&verifier, &tampered, &trust(&issuer), "signature does not verify").await;
    assert_refused(&verifier, &foreign.sign(&claims(&issuer)), &trust(&issuer), "signature does not verify").await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_refetches_at_most_once_per_window() {
    let (key, issuer) = one_key_issuer();
    let verifier = Arc::new(verifier(&issuer));
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let bogus = OidcKey::generate(&format!("bogus-{i}"));
        let (verifier, trust, token) = (verifier.clone(), trust(&issuer), bogus.sign(&claims(&issuer)));
        flood.spawn(async move { verifier.verify(&token, &trust).await });
    }
    while let Some(result) = flood.join_next().await {
        assert_eq!(result.unwrap().unwrap_err().kind, ErrorKind::Unauthorized);
    }
    // The first verification fetched once; the flood, within 30 s of it, fetched nothing.
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
    // Known keys keep working meanwhile.
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_on_a_cold_cache_fetches_once_per_window() {
    let (_key, issuer) = one_key_issuer();
    let verifier = verifier(&issuer);
    for i in 0..20 {
        let bogus = OidcKey::generate(&format!("bogus-{i}"));
        assert_refused(&verifier, &bogus.sign(&claims(&issuer)), &trust(&issuer), "unknown `kid`").await;
    }
    assert_eq!(issuer.jwks_hits(), 1);
}

#[tokio::test]
async fn an_oversized_jwks_is_not_read() {
    let (key, issuer) = one_key_issuer();
    issuer.publish_raw(json!({ "keys": [key.jwk()], "padding": "x".repeat(70 * 1024) }));
    assert_refused(&verifier(&issuer), &key.sign(&claims(&issuer)), &trust(&issuer), "could not be fetched").await;
}

#[tokio::test]
async fn keys_fetched_before_serve_while_the_issuer_fails_but_not_past_max_stale() {
    let (key, issuer) = one_key_issuer();
    let config = OidcConfig {
        jwks_ttl: Duration::from_millis(200),
        refetch_interval: Duration::from_millis(200),
        max_stale: Duration::from_millis(1000),
        ..config(&issuer)
    };
    let verifier = OidcVerifier::new(config).unwrap();
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    issuer.publish_raw(json!("temporarily unavailable"));
    // Past the TTL: the refetch fails, the keys of the last fetch still serve.
    tokio::time::sleep(Duration::from_millis(300)).await;
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    // Past TTL + max_stale since that fetch: they are dropped.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_refused(&verifier, &key.sign(&claims(&issuer)), &trust(&issuer), "could not be fetched").await;
    assert_eq!(issuer.jwks_hits(), 3);
}

#[tokio::test]
async fn a_known_key_verifies_while_a_slow_refetch_is_in_flight() {
    let (key, issuer) = one_key_issuer();
    let config = OidcConfig { refetch_interval: Duration::from_millis(100), ..config(&issuer) };
    let verifier = Arc::new(OidcVerifier::new(config).unwrap());
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    issuer.set_jwks_delay(Duration::from_secs(3));
    tokio::time::sleep(Duration::from_millis(150)).await;
    let bogus = OidcKey::generate("bogus").sign(&claims(&issuer));
    let (slow, slow_trust) = (verifier.clone(), trust(&issuer));
    let refetch = tokio::spawn(async move { slow.verify(&bogus, &slow_trust).await });
    while issuer.jwks_hits() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    verifier.verify(&key.sign(&claims(&issuer)), &trust(&issuer)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for the refetch", started.elapsed());
    assert!(!refetch.is_finished(), "the refetch should still be in flight");
    assert_eq!(refetch.await.unwrap().unwrap_err().kind, ErrorKind::Unauthorized);
}

#[tokio::test]
async fn an_issuer_the_policy_does_not_allow_is_refused_without_fetching_anything() {
    let (key, issuer) = one_key_issuer();
    // The defaults: the issuer is neither allowlisted nor on a public address over https.
    let strict = OidcVerifier::new(OidcConfig::default()).unwrap();
    assert_refused(&strict, &key.sign(&claims(&issuer)), &trust(&issuer), "no longer allowed").await;
    // Allowlisted, but on a private address that is not allowed.
    let issuers = IssuerPolicy { allowed: vec![issuer.url().to_owned()], allow_private: false };
    let private = OidcVerifier::new(OidcConfig { issuers, ..OidcConfig::default() }).unwrap();
    assert_refused(&private, &key.sign(&claims(&issuer)), &trust(&issuer), "no longer allowed").await;
    assert_eq!(issuer.discovery_hits(), 0);
}
