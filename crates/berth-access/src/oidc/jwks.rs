//! External issuers' signing keys: the discovery document, then its JWKS, fetched with a
//! small HTTP client (timeouts, no redirects, a size bound) and cached per issuer.
//!
//! A cached JWKS serves for `jwks_ttl`; a `kid` it lacks triggers a refetch, but at most
//! one fetch per issuer per `refetch_interval` (a flood of made-up `kid`s costs the issuer
//! nothing), and concurrent callers for one issuer wait for a single fetch. While the
//! issuer cannot be reached, the keys last fetched serve up to `max_stale` past their
//! TTL. Only issuers named by a trust document are ever fetched: the verifier compares
//! the token's `iss` with the trust before it asks for keys. Every URL fetched (the
//! issuer's, its `jwks_uri`) passes the [`IssuerPolicy`]'s checks, and names resolve
//! through [`PublicResolver`]; no HTTP proxy is used, so the address connected to is the
//! one checked.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::Error;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::OidcConfig;
use super::issuers::PublicResolver;
use super::trust::refused;

/// One published verification key.
pub(super) struct IssuerKey {
    pub key: DecodingKey,
    /// The JWK's `alg`, when it names one (the token's header must then agree).
    pub algorithm: Option<Algorithm>,
}

/// Every issuer's cached keys.
pub(super) struct KeyCache {
    http: reqwest::Client,
    config: OidcConfig,
    issuers: Mutex<HashMap<String, Arc<IssuerKeys>>>,
}

type KeyMap = HashMap<String, Arc<IssuerKey>>;

/// One issuer's keys. A known key is read from `cached` without waiting for a fetch in
/// flight; fetches take `fetching`, which holds when the issuer was last asked.
#[derive(Default)]
struct IssuerKeys {
    cached: Mutex<Cached>,
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

impl IssuerKeys {
    fn cached(&self) -> Cached {
        self.cached.lock().expect("an issuer's keys").clone()
    }
}

#[derive(Clone, Default)]
struct Cached {
    keys: Arc<KeyMap>,
    fetched_at: Option<Instant>,
}

impl Cached {
    fn fresh_key(&self, kid: &str, ttl: Duration) -> Option<Arc<IssuerKey>> {
        let fresh = self.fetched_at.is_some_and(|at| at.elapsed() < ttl);
        if fresh { self.keys.get(kid).cloned() } else { None }
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

#[derive(Deserialize)]
struct KeySet {
    keys: Vec<Value>,
}

impl KeyCache {
    pub fn new(config: OidcConfig) -> Result<KeyCache, Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(config.fetch_timeout)
            .timeout(config.fetch_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(PublicResolver { allow_private: config.issuers.allow_private })
            .build()
            .map_err(|e| Error::internal(format!("the OIDC HTTP client: {e}")))?;
        Ok(KeyCache { http, config, issuers: Mutex::default() })
    }

    /// The key `kid` of `issuer`, from the cache or, when the cache is stale or lacks it
    /// and the issuer was not asked within the refetch window, from the issuer.
    pub async fn key(&self, issuer: &str, kid: &str) -> Result<Arc<IssuerKey>, Error> {
        let entry = self.issuers.lock().expect("the issuer map").entry(issuer.to_owned()).or_default().clone();
        let ttl = self.config.jwks_ttl;
        if let Some(key) = entry.cached().fresh_key(kid, ttl) {
            return Ok(key);
        }
        let mut attempted_at = entry.fetching.lock().await;
        // Another caller may have fetched while this one waited.
        let mut cached = entry.cached();
        if let Some(key) = cached.fresh_key(kid, ttl) {
            return Ok(key);
        }
        let now = Instant::now();
        let mut fetch_failed = false;
        if attempted_at.is_none_or(|at| now.duration_since(at) >= self.config.refetch_interval) {
            *attempted_at = Some(now);
            match self.fetch(issuer).await {
                Ok(keys) => cached = Cached { keys: Arc::new(keys), fetched_at: Some(Instant::now()) },
                Err(why) => {
                    // Keys fetched before stay usable while the issuer is unreachable, for
                    // a while: a key it stopped publishing must not live on for ever.
                    tracing::warn!(issuer, "fetching the OIDC issuer's signing keys failed: {why}");
                    fetch_failed = true;
                    if cached.fetched_at.is_none_or(|at| now.duration_since(at) >= ttl + self.config.max_stale) {
                        cached.keys = Arc::default();
                    }
                }
            }
            *entry.cached.lock().expect("an issuer's keys") = cached.clone();
        }
        match cached.keys.get(kid) {
            Some(key) => Ok(key.clone()),
            None if fetch_failed => Err(refused("the trusted issuer's signing keys could not be fetched")),
            None => Err(refused("the ID token is signed by a key its issuer does not publish (unknown `kid`)")),
        }
    }

    /// The issuer's discovery document, then its JWKS. Errors are for the log only.
    async fn fetch(&self, issuer: &str) -> Result<KeyMap, String> {
        self.config.issuers.check_issuer(issuer)?;
        let discovery_url = format!("{}/.well-known/openid-configuration", issuer.trim_end_matches('/'));
        let discovery: Discovery = self.get_json(&discovery_url).await?;
        if discovery.issuer != issuer {
            return Err(format!("its discovery document names the issuer {:?}", discovery.issuer));
        }
        self.config.issuers.check_url(&discovery.jwks_uri).map_err(|why| format!("its jwks_uri: {why}"))?;
        let set: KeySet = self.get_json(&discovery.jwks_uri).await?;
        Ok(set.keys.into_iter().filter_map(verification_key).collect())
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, String> {
        let limit = self.config.max_document_bytes;
        let mut response = self.http.get(url).send().await.map_err(|e| format!("GET {url}: {}", chain(&e)))?;
        if !response.status().is_success() {
            return Err(format!("GET {url} answered {}", response.status()));
        }
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(format!("GET {url}: the document exceeds {limit} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| format!("GET {url}: {e}"))? {
            if body.len() + chunk.len() > limit {
                return Err(format!("GET {url}: the document exceeds {limit} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("GET {url}: {e}"))
    }
}

/// An error with its causes (a refused address is the resolver's error, two levels down).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}

/// A JWK Berth can verify signatures with: it has a `kid`, is not for encryption, and is
/// an asymmetric key (a symmetric `oct` key in a public JWKS is never trusted). Keys of
/// other kinds are skipped, not fatal: issuers publish what they like.
fn verification_key(value: Value) -> Option<(String, Arc<IssuerKey>)> {
    let jwk: Jwk = serde_json::from_value(value).ok()?;
    let kid = jwk.common.key_id.clone()?;
    if matches!(jwk.common.public_key_use, Some(ref usage) if *usage != PublicKeyUse::Signature) {
        return None;
    }
    if matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_)) {
        return None;
    }
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    let algorithm = match jwk.common.key_algorithm {
        Some(alg) => Some(Algorithm::from_str(&alg.to_string()).ok()?),
        None => None,
    };
    Some((kid, Arc::new(IssuerKey { key, algorithm })))
}
