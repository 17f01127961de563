//! Token-signing keys: ES256 key pairs, and the key ring every node signs and verifies
//! registry tokens with.
//!
//! Keys live in the identity store, so a token one node issues verifies on every other.
//! A node signs with the one key that is not retired. A retired key verifies only what it
//! can still have signed and that is still current: registry tokens for the token TTL
//! after its retirement (plus [`SIGNER_REFRESH`], during which another node may still
//! sign with it), refresh tokens for the refresh TTL (they are checked against the store
//! on every use); the caller says which window applies ([`KeyRing::verifier`]). A token
//! naming a `kid` this node has not loaded makes it reload the keys from the store (at
//! most once per [`RELOAD_AT_MOST_EVERY`]), and the keys are re-read after
//! [`SIGNER_REFRESH`], so a rotation or a revocation on one node reaches the others.
//!
//! Revoking ([`KeyRing::revoke`]) removes a key from the store: this node verifies
//! nothing with it at once, every other node once it re-reads its keys (within
//! [`SIGNER_REFRESH`]). Revoking the key that signs rotates first, so tokens are still
//! issued.
//!
//! First start creates a key when none signs. Two nodes starting together may both create
//! one: each rotation retires the keys that signed before it, so one of the two ends up
//! the signer; the other was retired at once but still verifies for the token lifetime
//! (and the refresh), so the tokens its node signed until its next refresh stay valid.
//! Harmless.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use berth_core::Error;
use berth_meta::{IdentityStore, SigningKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};

use super::password::{base64url, random_bytes};

/// The only algorithm Berth signs and accepts registry tokens with.
pub const ALGORITHM: &str = "ES256";
/// An unknown `kid` reloads the keys at most this often (a flood of tokens with made-up
/// key ids costs at most one store read per interval).
pub const RELOAD_AT_MOST_EVERY: Duration = Duration::from_secs(5);
/// The key a node signs with is re-read this often (another node may have rotated).
pub const SIGNER_REFRESH: Duration = Duration::from_secs(60);

/// A new ES256 key pair, created at `now` (Unix seconds), not retired.
pub fn generate(now: i64) -> Result<SigningKey, Error> {
    // A random 32-byte string is a valid P-256 scalar unless it is zero or at least the
    // group order (odds about 2^-32); draw again then.
    let secret = loop {
        if let Ok(secret) = p256::SecretKey::from_slice(&random_bytes::<32>()) {
            break secret;
        }
    };
    let private_pem =
        secret.to_pkcs8_pem(LineEnding::LF).map_err(|e| Error::internal(format!("encoding a key: {e}")))?;
    let public = secret.public_key();
    let public_der = public.to_public_key_der().map_err(|e| Error::internal(format!("encoding a key: {e}")))?;
    let public_pem =
        public.to_public_key_pem(LineEnding::LF).map_err(|e| Error::internal(format!("encoding a key: {e}")))?;
    Ok(SigningKey {
        kid: kid_of(public_der.as_bytes()),
        algorithm: ALGORITHM.into(),
        private_pem: private_pem.to_string(),
        public_pem,
        created_at: now,
        retired_at: None,
    })
}

/// The key that signs with `key`.
pub fn signer_of(key: &SigningKey) -> Result<EncodingKey, Error> {
    EncodingKey::from_ec_pem(key.private_pem.as_bytes())
        .map_err(|e| Error::internal(format!("signing key {}: {e}", key.kid)))
}

/// A key id derived from the public key: 128 bits of its SHA-256, base64url.
fn kid_of(public_der: &[u8]) -> String {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(public_der);
    base64url(&hash[..16])
}

/// A key that verifies, and when it stopped signing (Unix seconds; `None`: it signs).
#[derive(Clone)]
pub struct Verifier {
    pub key: DecodingKey,
    pub retired_at: Option<i64>,
}

/// The keys as loaded from the store once.
pub struct Loaded {
    /// `(kid, key)` of the key that signs; `None` if the store has none.
    pub signer: Option<(String, EncodingKey)>,
    pub verifiers: HashMap<String, Verifier>,
    at: Instant,
}

impl Loaded {
    fn from_keys(keys: &[SigningKey]) -> Result<Loaded, Error> {
        let mut verifiers = HashMap::new();
        let mut signer = None;
        for key in keys.iter().filter(|k| k.algorithm == ALGORITHM) {
            let decoding = DecodingKey::from_ec_pem(key.public_pem.as_bytes())
                .map_err(|e| Error::internal(format!("signing key {}: {e}", key.kid)))?;
            verifiers.insert(key.kid.clone(), Verifier { key: decoding, retired_at: key.retired_at });
            // Newest first: the first key not retired signs.
            if signer.is_none() && key.retired_at.is_none() {
                signer = Some((key.kid.clone(), signer_of(key)?));
            }
        }
        Ok(Loaded { signer, verifiers, at: Instant::now() })
    }
}

/// Every node's view of the signing keys.
pub struct KeyRing {
    store: Arc<dyn IdentityStore>,
    /// How long a retired key is loaded at all: the longest lifetime of a token it signed
    /// (the refresh TTL); [`KeyRing::verifier`] narrows it per kind of token.
    keep_retired: Duration,
    loaded: RwLock<Arc<Loaded>>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
}

impl KeyRing {
    /// Loads the keys, creating one if none signs (first start).
    pub async fn open(store: Arc<dyn IdentityStore>, keep_retired: Duration) -> Result<KeyRing, Error> {
        let ring = KeyRing {
            store,
            keep_retired,
            loaded: RwLock::new(Arc::new(Loaded::from_keys(&[])?)),
            reloading: tokio::sync::Mutex::new(()),
        };
        if ring.reload().await?.signer.is_none() {
            ring.rotate().await?;
        }
        Ok(ring)
    }

    /// Makes a new key the one that signs; the old ones verify until their tokens expire.
    /// Returns the new key's id.
    pub async fn rotate(&self) -> Result<String, Error> {
        let key = generate(berth_meta::now())?;
        self.store.rotate_signing_key(&key).await?;
        self.reload().await?;
        Ok(key.kid)
    }

    /// Revokes `kid` at once: it verifies nothing more, here now and on the other nodes
    /// once they re-read the keys. The key that signs is replaced first. `false` if no key
    /// has that id.
    pub async fn revoke(&self, kid: &str) -> Result<bool, Error> {
        let loaded = self.reload().await?;
        if loaded.signer.as_ref().is_some_and(|(signing, _)| signing == kid) {
            self.rotate().await?;
        }
        let revoked = self.store.revoke_signing_key(kid).await?;
        self.reload().await?;
        Ok(revoked)
    }

    /// The keys that still verify (the one that signs and those retired within the
    /// lifetime of a token), newest first as the store lists them.
    pub async fn list(&self) -> Result<Vec<berth_meta::SigningKey>, Error> {
        let retired_after = berth_meta::now() - i64::try_from(self.keep_retired.as_secs()).unwrap_or(i64::MAX);
        self.store.signing_keys(retired_after).await
    }

    fn current(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The keys, re-read if they were loaded longer than `max_age` ago (a caller that
    /// waited for another's reload takes its result).
    async fn loaded_within(&self, max_age: Duration) -> Result<Arc<Loaded>, Error> {
        let current = self.current();
        if current.at.elapsed() < max_age {
            return Ok(current);
        }
        let _one = self.reloading.lock().await;
        let current = self.current();
        if current.at.elapsed() < max_age {
            return Ok(current);
        }
        self.load().await
    }

    async fn reload(&self) -> Result<Arc<Loaded>, Error> {
        let _one = self.reloading.lock().await;
        self.load().await
    }

    /// Reads the keys; the caller holds `reloading`.
    async fn load(&self) -> Result<Arc<Loaded>, Error> {
        let keys = self.list().await?;
        let loaded = Arc::new(Loaded::from_keys(&keys)?);
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&loaded);
        Ok(loaded)
    }

    /// The key to sign with and its id.
    pub async fn signer(&self) -> Result<(String, EncodingKey), Error> {
        let loaded = self.loaded_within(SIGNER_REFRESH).await?;
        loaded.signer.clone().ok_or_else(|| Error::internal("no token-signing key"))
    }

    /// The keys as of at most [`SIGNER_REFRESH`] ago, for verifying. Requests do not queue
    /// behind a re-read: while one is in flight the others use the keys loaded before it.
    /// If the store cannot be read, the last keys serve for another interval (verifying a
    /// cached token must not depend on the store, nor try it on every request).
    async fn recent(&self) -> Arc<Loaded> {
        let current = self.current();
        if current.at.elapsed() < SIGNER_REFRESH {
            return current;
        }
        let Ok(_one) = self.reloading.try_lock() else { return current };
        match self.load().await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::warn!("re-reading the token-signing keys failed: {}", e.message());
                let kept = Arc::new(Loaded {
                    signer: current.signer.clone(),
                    verifiers: current.verifiers.clone(),
                    at: Instant::now(),
                });
                *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&kept);
                kept
            }
        }
    }

    /// Whether `kid` still verifies anything (it was not revoked), as this node last read
    /// the keys (at most [`SIGNER_REFRESH`] ago).
    pub async fn knows(&self, kid: &str) -> bool {
        self.recent().await.verifiers.contains_key(kid)
    }

    /// The key that verifies tokens signed by `kid` that are current at most `lifetime`
    /// after they were issued (their lifetime and the clock leeway): the key that signs,
    /// or one retired so recently that such a token it signed may be current (within
    /// `lifetime` + [`SIGNER_REFRESH`]).
    pub async fn verifier(&self, kid: &str, lifetime: Duration) -> Result<Option<DecodingKey>, Error> {
        let mut loaded = self.recent().await;
        if !loaded.verifiers.contains_key(kid) && loaded.at.elapsed() >= RELOAD_AT_MOST_EVERY {
            loaded = self.loaded_within(RELOAD_AT_MOST_EVERY).await?;
        }
        let window = lifetime + SIGNER_REFRESH;
        let oldest = berth_meta::now().saturating_sub(i64::try_from(window.as_secs()).unwrap_or(i64::MAX));
        Ok(loaded.verifiers.get(kid).filter(|v| v.retired_at.is_none_or(|at| at >= oldest)).map(|v| v.key.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_and_verify_es256() {
        let key = generate(1_700_000_000).unwrap();
        assert_eq!(key.algorithm, "ES256");
        assert!(key.private_pem.starts_with("-----BEGIN PRIVATE KEY-----"), "PKCS#8");
        assert!(key.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        assert_eq!(key.kid.len(), 22);
        let loaded = Loaded::from_keys(std::slice::from_ref(&key)).unwrap();
        let (kid, signer) = loaded.signer.as_ref().unwrap();
        assert_eq!(kid, &key.kid);
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        let claims = serde_json::json!({ "exp": 4_000_000_000u64 });
        let token = jsonwebtoken::encode(&header, &claims, signer).unwrap();
        let validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::decode::<serde_json::Value>(&token, &loaded.verifiers[&key.kid].key, &validation).unwrap();
        // Another key's signature does not verify.
        let other = generate(1_700_000_000).unwrap();
        assert_ne!(other.kid, key.kid);
        let other = Loaded::from_keys(&[other]).unwrap();
        let verifier = &other.verifiers.values().next().unwrap().key;
        assert!(jsonwebtoken::decode::<serde_json::Value>(&token, verifier, &validation).is_err());
    }

    #[test]
    fn the_newest_key_not_retired_signs_and_every_listed_key_verifies() {
        let mut old = generate(100).unwrap();
        old.retired_at = Some(200);
        let new = generate(200).unwrap();
        let loaded = Loaded::from_keys(&[new.clone(), old.clone()]).unwrap();
        assert_eq!(loaded.signer.as_ref().unwrap().0, new.kid);
        assert!(loaded.verifiers.contains_key(&old.kid) && loaded.verifiers.contains_key(&new.kid));
        let retired_only = Loaded::from_keys(&[old]).unwrap();
        assert!(retired_only.signer.is_none());
    }
}
