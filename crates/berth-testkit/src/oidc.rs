//! An OpenID Connect issuer played by a test, for keyless robots: a real HTTP server on
//! 127.0.0.1:0 (its own thread and runtime, so sync and async tests alike can use it)
//! serving a discovery document and a JWKS, counting the requests it gets, and P-256 keys
//! generated in the test that sign ID tokens (ES256). Nothing external is needed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::HeaderName;
use axum::http::header::CONTENT_TYPE;
use axum::routing::get;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::{EncodePrivateKey, LineEnding};
use serde_json::{Value, json};

/// A signing key of the issuer: ES256 on a fresh random P-256 key.
pub struct OidcKey {
    kid: String,
    encoding: EncodingKey,
    jwk: Value,
}

impl OidcKey {
    pub fn generate(kid: &str) -> OidcKey {
        let secret = loop {
            let mut bytes = [0u8; 32];
            getrandom::fill(&mut bytes).expect("the OS random source");
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let pem = secret.to_pkcs8_pem(LineEnding::LF).expect("a PKCS#8 PEM");
        let encoding = EncodingKey::from_ec_pem(pem.as_bytes()).expect("an ES256 key");
        let mut jwk = Jwk::from_encoding_key(&encoding, Algorithm::ES256).expect("its JWK");
        jwk.common.key_id = Some(kid.to_owned());
        let mut jwk = serde_json::to_value(&jwk).expect("a JWK as JSON");
        jwk["use"] = json!("sig");
        OidcKey { kid: kid.to_owned(), encoding, jwk }
    }

    /// The published form of the key.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// An ID token: `claims` signed with ES256, this key's `kid` in the header.
    pub fn sign(&self, claims: &Value) -> String {
        let header = Header { kid: Some(self.kid.clone()), ..Header::new(Algorithm::ES256) };
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("signing")
    }
}

/// What the issuer serves, and how often it was asked.
struct Published {
    url: String,
    /// The `issuer` its discovery document claims (normally `url`).
    discovery_issuer: Mutex<String>,
    jwks: Mutex<Value>,
    /// How long the JWKS takes to arrive (a slow issuer).
    jwks_delay: Mutex<Duration>,
    discovery_hits: AtomicUsize,
    jwks_hits: AtomicUsize,
}

/// The issuer; stops when dropped.
pub struct OidcIssuer {
    published: Arc<Published>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl OidcIssuer {
    /// Starts serving on 127.0.0.1 at a free port, publishing `keys`.
    pub fn start(keys: &[&OidcKey]) -> OidcIssuer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let published = Arc::new(Published {
            discovery_issuer: Mutex::new(url.clone()),
            url,
            jwks: Mutex::new(Value::Null),
            jwks_delay: Mutex::new(Duration::ZERO),
            discovery_hits: AtomicUsize::new(0),
            jwks_hits: AtomicUsize::new(0),
        });
        let router = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/keys", get(jwks))
            .with_state(published.clone());
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                // Dropping the issuer ends the runtime, and with it every connection.
                tokio::select! {
                    served = axum::serve(listener, router) => served.expect("serving"),
                    _ = stop => {}
                }
            });
        });
        let issuer = OidcIssuer { published, shutdown: Some(shutdown), thread: Some(thread) };
        issuer.publish(keys);
        issuer
    }

    /// The issuer URL (`iss`), `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.published.url
    }

    /// Replaces the JWKS with these keys (a rotation).
    pub fn publish(&self, keys: &[&OidcKey]) {
        let keys: Vec<Value> = keys.iter().map(|k| k.jwk.clone()).collect();
        self.publish_raw(json!({ "keys": keys }));
    }

    /// Serves `jwks` as it is (an oversized or broken document).
    pub fn publish_raw(&self, jwks: Value) {
        *self.published.jwks.lock().unwrap() = jwks;
    }

    /// Makes the discovery document claim another issuer.
    pub fn set_discovery_issuer(&self, issuer: &str) {
        *self.published.discovery_issuer.lock().unwrap() = issuer.to_owned();
    }

    pub fn set_jwks_delay(&self, delay: Duration) {
        *self.published.jwks_delay.lock().unwrap() = delay;
    }

    pub fn discovery_hits(&self) -> usize {
        self.published.discovery_hits.load(Ordering::SeqCst)
    }

    pub fn jwks_hits(&self) -> usize {
        self.published.jwks_hits.load(Ordering::SeqCst)
    }

    /// Claims of an ID token from this issuer valid for five minutes from now.
    pub fn claims(&self, audience: &str, subject: &str) -> Value {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
        json!({ "iss": self.url(), "aud": audience, "sub": subject, "iat": now, "nbf": now, "exp": now + 300 })
    }
}

impl Drop for OidcIssuer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

type JsonBody = ([(HeaderName, &'static str); 1], String);

fn json_body(value: &Value) -> JsonBody {
    ([(CONTENT_TYPE, "application/json")], value.to_string())
}

async fn discovery(State(published): State<Arc<Published>>) -> JsonBody {
    published.discovery_hits.fetch_add(1, Ordering::SeqCst);
    let issuer = published.discovery_issuer.lock().unwrap().clone();
    json_body(&json!({ "issuer": issuer, "jwks_uri": format!("{}/keys", published.url) }))
}

async fn jwks(State(published): State<Arc<Published>>) -> JsonBody {
    published.jwks_hits.fetch_add(1, Ordering::SeqCst);
    let delay = *published.jwks_delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    json_body(&published.jwks.lock().unwrap())
}
