//! The verifier against a real issuer played by the test: an axum server on 127.0.0.1:0
//! serving a discovery document and a JWKS (counting the requests it gets), with ID tokens
//! signed in the test by P-256 keys generated here.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use berth_core::ErrorKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

use super::{OidcConfig, OidcVerifier, Trust};
use crate::access::password::{base64url, random_bytes};

/// A key the test issuer signs with.
struct IssuerKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl IssuerKey {
    fn generate(kid: &str) -> IssuerKey {
        let secret = loop {
            if let Ok(secret) = p256::SecretKey::from_slice(&random_bytes::<32>()) {
                break secret;
            }
        };
        let pem = secret.to_pkcs8_pem(LineEnding::LF).unwrap();
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).unwrap();
        let point = secret.public_key().to_encoded_point(false);
        let jwk = json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
            "x": base64url(point.x().unwrap()), "y": base64url(point.y().unwrap()),
        });
        IssuerKey { kid: kid.into(), encoding, jwk }
    }

    fn sign(&self, claims: &Value) -> String {
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, claims, &self.encoding).unwrap()
    }
}

/// What the issuer serves, and how often it was asked.
struct Published {
    issuer: String,
    /// The `issuer` its discovery document claims (normally `issuer`).
    discovery_issuer: Mutex<String>,
    jwks: Mutex<Value>,
    /// How long the JWKS takes to arrive (a slow issuer).
    jwks_delay: Mutex<Duration>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

struct TestIssuer {
    published: Arc<Published>,
}

impl TestIssuer {
    async fn start(keys: &[&IssuerKey]) -> TestIssuer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let issuer = format!("http://{}", listener.local_addr().unwrap());
        let published = Arc::new(Published {
            discovery_issuer: Mutex::new(issuer.clone()),
            issuer,
            jwks: Mutex::new(Value::Null),
            jwks_delay: Mutex::new(Duration::ZERO),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(published.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        let issuer = TestIssuer { published };
        issuer.publish(keys);
        issuer
    }

    fn url(&self) -> &str {
        &self.published.issuer
    }

    fn publish(&self, keys: &[&IssuerKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        *self.published.jwks.lock().unwrap() = json!({ "keys": keys });
    }

    fn jwks_hits(&self) -> usize {
        self.published.jwks_hits.load(Ordering::SeqCst)
    }

    fn discovery_hits(&self) -> usize {
        self.published.discovery_hits.load(Ordering::SeqCst)
    }

    /// A trust in this issuer for audience `berth`, subject `repo:acme/app:ref:refs/heads/*`
    /// and `repository_owner: acme`.
    fn trust(&self) -> Trust {
        Trust::parse(
            &json!({
                "issuer": self.url(),
                "audiences": ["berth", "other"],
                "subject": "repo:acme/app:ref:refs/heads/*",
                "claims": { "repository_owner": "acme" },
            })
            .to_string(),
        )
        .unwrap()
    }

    /// Claims that satisfy [`TestIssuer::trust`].
    fn claims(&self) -> Value {
        let now = now();
        json!({
            "iss": self.url(), "aud": "berth", "sub": "repo:acme/app:ref:refs/heads/main",
            "repository_owner": "acme", "iat": now, "nbf": now, "exp": now + 300,
        })
    }
}

type JsonBody = ([(axum::http::HeaderName, &'static str); 1], String);

fn json_body(value: &Value) -> JsonBody {
    ([(CONTENT_TYPE, "application/json")], value.to_string())
}

async fn discovery(State(published): State<Arc<Published>>) -> JsonBody {
    published.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = published.discovery_issuer.lock().unwrap().clone();
    json_body(&json!({ "issuer": issuer, "jwks_uri": format!("{}/keys", published.issuer) }))
}

async fn jwks(State(published): State<Arc<Published>>) -> JsonBody {
    published.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let delay = *published.jwks_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    json_body(&published.jwks.lock().unwrap())
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

/// An issuer publishing one key, `k1`.
async fn one_key_issuer() -> (IssuerKey, TestIssuer) {
    let key = IssuerKey::generate("k1");
    let issuer = TestIssuer::start(&[&key]).await;
    (key, issuer)
}

fn verifier() -> OidcVerifier {
    OidcVerifier::new(OidcConfig::default()).unwrap()
}

/// A verifier whose cache expires and may refetch quickly, for the rotation tests.
fn quick_verifier() -> OidcVerifier {
    let config = OidcConfig {
        jwks_ttl: Duration::from_millis(300),
        refetch_interval: Duration::from_millis(300),
        ..OidcConfig::default()
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
    let (key, issuer) = one_key_issuer().await;
    let verifier = verifier();
    let identity = verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    assert_eq!(identity.issuer, issuer.url());
    assert_eq!(identity.subject, "repo:acme/app:ref:refs/heads/main");
    assert_eq!(identity.expires_at, issuer.claims()["exp"].as_i64().unwrap());
    // `aud` as an array holding one trusted audience verifies too, from the cached JWKS.
    let claims = with(issuer.claims(), "aud", json!(["sts.example", "other"]));
    verifier.verify(&key.sign(&claims), &issuer.trust()).await.unwrap();
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
}

#[tokio::test]
async fn a_token_for_another_audience_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    let token = key.sign(&with(issuer.claims(), "aud", json!(["sts.example"])));
    assert_refused(&verifier(), &token, &issuer.trust(), "audience").await;
}

#[tokio::test]
async fn a_token_whose_subject_does_not_match_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    let token = key.sign(&with(issuer.claims(), "sub", json!("repo:acme/app:pull_request")));
    assert_refused(&verifier(), &token, &issuer.trust(), "subject does not match").await;
}

#[tokio::test]
async fn a_token_failing_a_claim_rule_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    let token = key.sign(&with(issuer.claims(), "repository_owner", json!("mallory")));
    assert_refused(&verifier(), &token, &issuer.trust(), "claim `repository_owner` does not match").await;
    let mut claims = issuer.claims();
    claims.as_object_mut().unwrap().remove("repository_owner");
    assert_refused(&verifier(), &key.sign(&claims), &issuer.trust(), "no string claim `repository_owner`").await;
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    let then = now() - 3600;
    let claims = with(with(with(issuer.claims(), "iat", json!(then)), "nbf", json!(then)), "exp", json!(then + 300));
    assert_refused(&verifier(), &key.sign(&claims), &issuer.trust(), "expired").await;
}

#[tokio::test]
async fn a_token_not_valid_yet_or_issued_in_the_future_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    let later = now() + 600;
    let verifier = verifier();
    let not_yet = with(issuer.claims(), "nbf", json!(later));
    assert_refused(&verifier, &key.sign(&not_yet), &issuer.trust(), "not valid yet").await;
    let future = with(issuer.claims(), "iat", json!(later));
    assert_refused(&verifier, &key.sign(&future), &issuer.trust(), "issued in the future").await;
}

#[tokio::test]
async fn a_token_of_another_issuer_is_refused_without_fetching_anything() {
    let (key, issuer) = one_key_issuer().await;
    let other = TestIssuer::start(&[&key]).await;
    // Signed by a key the trusted issuer publishes, but claiming the other issuer.
    let token = key.sign(&with(issuer.claims(), "iss", json!(other.url())));
    assert_refused(&verifier(), &token, &issuer.trust(), "issuer is not the issuer the robot trusts").await;
    assert_eq!(issuer.discovery_hits() + other.discovery_hits(), 0);
}

#[tokio::test]
async fn an_issuer_whose_discovery_document_names_another_issuer_is_not_trusted() {
    let (key, issuer) = one_key_issuer().await;
    *issuer.published.discovery_issuer.lock().unwrap() = "https://impostor.example".into();
    let token = key.sign(&issuer.claims());
    assert_refused(&verifier(), &token, &issuer.trust(), "could not be fetched").await;
    assert_eq!(issuer.jwks_hits(), 0);
}

#[tokio::test]
async fn a_key_rotated_out_of_the_jwks_is_refused_once_the_cache_expires() {
    let old = IssuerKey::generate("old");
    let new = IssuerKey::generate("new");
    let issuer = TestIssuer::start(&[&old]).await;
    let verifier = quick_verifier();
    verifier.verify(&old.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    issuer.publish(&[&new]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_refused(&verifier, &old.sign(&issuer.claims()), &issuer.trust(), "unknown `kid`").await;
    verifier.verify(&new.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn a_key_rotated_into_the_jwks_is_picked_up_by_the_refetch_its_kid_triggers() {
    let first = IssuerKey::generate("first");
    let second = IssuerKey::generate("second");
    let issuer = TestIssuer::start(&[&first]).await;
    let verifier =
        OidcVerifier::new(OidcConfig { refetch_interval: Duration::from_millis(300), ..Default::default() }).unwrap();
    verifier.verify(&first.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    issuer.publish(&[&first, &second]);
    tokio::time::sleep(Duration::from_millis(400)).await;
    // The JWKS is still fresh (15 min), but `second` is unknown to it: one refetch.
    verifier.verify(&second.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    verifier.verify(&first.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    assert_eq!(issuer.jwks_hits(), 2);
}

#[tokio::test]
async fn a_token_with_alg_none_is_refused() {
    let (_key, issuer) = one_key_issuer().await;
    let header = base64url(json!({"alg": "none", "kid": "k1", "typ": "JWT"}).to_string().as_bytes());
    let payload = base64url(issuer.claims().to_string().as_bytes());
    for token in [format!("{header}.{payload}."), format!("{header}.{payload}")] {
        assert_refused(&verifier(), &token, &issuer.trust(), "accepted algorithm").await;
    }
    assert_eq!(issuer.discovery_hits(), 0);
}

#[tokio::test]
async fn a_token_signed_with_hs256_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    // An HMAC "signature" keyed with public material (the published x coordinate).
    let secret = key.jwk["x"].as_str().unwrap().as_bytes().to_vec();
    let header = Header { kid: Some("k1".into()), ..Header::new(Algorithm::HS256) };
    let token = jsonwebtoken::encode(&header, &issuer.claims(), &EncodingKey::from_secret(&secret)).unwrap();
    assert_refused(&verifier(), &token, &issuer.trust(), "accepted algorithm").await;
}

#[tokio::test]
async fn a_token_with_a_tampered_payload_or_a_foreign_signature_is_refused() {
    let (key, issuer) = one_key_issuer().await;
    // Another key under the same `kid`: the JWKS lookup succeeds, the signature must not.
    let foreign = IssuerKey::generate("k1");
    let verifier = verifier();
    let token = key.sign(&issuer.claims());
    let (header, rest) = token.split_once('.').unwrap();
    let signature = rest.split_once('.').unwrap().1;
    let tampered = with(issuer.claims(), "sub", json!("repo:acme/app:ref:refs/heads/release"));
    let tampered = format!("{header}.{}.{signature}", base64url(tampered.to_string().as_bytes()));
    assert_refused(&verifier, &tampered, &issuer.trust(), "signature does not verify").await;
    assert_refused(&verifier, &foreign.sign(&issuer.claims()), &issuer.trust(), "signature does not verify").await;
}

#[tokio::test]
async fn a_flood_of_unknown_kids_refetches_at_most_once_per_window() {
    let (key, issuer) = one_key_issuer().await;
    let verifier = Arc::new(verifier());
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    let trust = issuer.trust();
    let mut flood = tokio::task::JoinSet::new();
    for i in 0..200 {
        let bogus = IssuerKey::generate(&format!("bogus-{i}"));
        let (verifier, trust, token) = (verifier.clone(), trust.clone(), bogus.sign(&issuer.claims()));
        flood.spawn(async move { verifier.verify(&token, &trust).await });
    }
    while let Some(result) = flood.join_next().await {
        assert_eq!(result.unwrap().unwrap_err().kind, ErrorKind::Unauthorized);
    }
    // The first verification fetched once; the flood, within 30 s of it, fetched nothing.
    assert_eq!((issuer.discovery_hits(), issuer.jwks_hits()), (1, 1));
    // Known keys keep working meanwhile.
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
}

#[tokio::test]
async fn an_unknown_kid_on_a_cold_cache_fetches_once_per_window() {
    let (_key, issuer) = one_key_issuer().await;
    let verifier = verifier();
    for i in 0..20 {
        let bogus = IssuerKey::generate(&format!("bogus-{i}"));
        assert_refused(&verifier, &bogus.sign(&issuer.claims()), &issuer.trust(), "unknown `kid`").await;
    }
    assert_eq!(issuer.jwks_hits(), 1);
}

#[tokio::test]
async fn an_oversized_jwks_is_not_read() {
    let (key, issuer) = one_key_issuer().await;
    let mut jwks = json!({ "keys": [key.jwk.clone()] });
    jwks["padding"] = json!("x".repeat(70 * 1024));
    *issuer.published.jwks.lock().unwrap() = jwks;
    assert_refused(&verifier(), &key.sign(&issuer.claims()), &issuer.trust(), "could not be fetched").await;
}

#[tokio::test]
async fn keys_fetched_before_serve_while_the_issuer_fails_but_not_past_max_stale() {
    let (key, issuer) = one_key_issuer().await;
    let config = OidcConfig {
        jwks_ttl: Duration::from_millis(200),
        refetch_interval: Duration::from_millis(200),
        max_stale: Duration::from_millis(1000),
        ..OidcConfig::default()
    };
    let verifier = OidcVerifier::new(config).unwrap();
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    *issuer.published.jwks.lock().unwrap() = json!("temporarily unavailable");
    // Past the TTL: the refetch fails, the keys of the last fetch still serve.
    tokio::time::sleep(Duration::from_millis(300)).await;
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    // Past TTL + max_stale since that fetch: they are dropped.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_refused(&verifier, &key.sign(&issuer.claims()), &issuer.trust(), "could not be fetched").await;
    assert_eq!(issuer.jwks_hits(), 3);
}

#[tokio::test]
async fn a_known_key_verifies_while_a_slow_refetch_is_in_flight() {
    let (key, issuer) = one_key_issuer().await;
    let config = OidcConfig { refetch_interval: Duration::from_millis(100), ..OidcConfig::default() };
    let verifier = Arc::new(OidcVerifier::new(config).unwrap());
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    *issuer.published.jwks_delay.lock().unwrap() = Duration::from_secs(3);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let bogus = IssuerKey::generate("bogus").sign(&issuer.claims());
    let (slow, trust) = (verifier.clone(), issuer.trust());
    let refetch = tokio::spawn(async move { slow.verify(&bogus, &trust).await });
    while issuer.jwks_hits() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = std::time::Instant::now();
    verifier.verify(&key.sign(&issuer.claims()), &issuer.trust()).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for the refetch", started.elapsed());
    assert!(!refetch.is_finished(), "the refetch should still be in flight");
    assert_eq!(refetch.await.unwrap().unwrap_err().kind, ErrorKind::Unauthorized);
}
