//! Keyless robots: verifying an external OIDC issuer's ID token (a GitHub Actions or
//! GitLab CI job's, a Kubernetes service account's) against the [`Trust`] a robot keeps.
//!
//! [`OidcVerifier::verify`] checks, in order: the token's size and header (an asymmetric
//! `alg`, a `kid`), that its `iss` is the trusted issuer (before anything is fetched, so
//! only trusted issuers are ever contacted), the signature with the issuer's published
//! key ([`jwks`]), `exp`/`nbf`/`iat` with a small leeway, `iss`, `aud`, then the trust's
//! subject and claim rules. Every refusal is `UNAUTHORIZED` with a message that says what
//! failed and never echoes the token or its claims. Issuers are those the server's
//! [`IssuerPolicy`] allows, fetched over https from public addresses only, unless the
//! policy allows private ones (and then plain http to a loopback address: an issuer a test
//! plays on this machine); see [`issuers`].
//!
//! Not here: which robot a token logs in as and what it may then do (the token
//! endpoint's business).

pub mod exchange;
pub mod issuers;
mod jwks;
#[cfg(test)]
mod tests;
mod trust;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_core::Error;
use jsonwebtoken::{Algorithm, Validation, decode, decode_header, errors::ErrorKind as JwtError};
use serde::Deserialize;
use serde_json::{Map, Value};

pub use exchange::{TOKEN_EXCHANGE_GRANT, TokenExchange};
pub use issuers::IssuerPolicy;
use trust::refused;
pub use trust::{Trust, glob_matches};

/// The signature algorithms an ID token may use: asymmetric ones only (never `none`,
/// never the HMAC family, whose "key" would be public).
const ACCEPTED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Largest ID token looked at (GitHub's are about 1.5 KiB).
const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// Tunables of the verifier; the defaults are `berth serve`'s.
#[derive(Clone, Debug)]
pub struct OidcConfig {
    /// How long a fetched JWKS is used before it is fetched again.
    pub jwks_ttl: Duration,
    /// At most one fetch per issuer in this window, whatever `kid`s arrive.
    pub refetch_interval: Duration,
    /// While the issuer cannot be reached, the last JWKS serves this long past `jwks_ttl`.
    pub max_stale: Duration,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Connect and whole-request timeout of each fetch.
    pub fetch_timeout: Duration,
    /// Largest discovery document or JWKS read.
    pub max_document_bytes: usize,
    /// Which issuers may be trusted and fetched, from which addresses.
    pub issuers: IssuerPolicy,
}

impl Default for OidcConfig {
    fn default() -> OidcConfig {
        OidcConfig {
            jwks_ttl: Duration::from_secs(15 * 60),
            refetch_interval: Duration::from_secs(30),
            max_stale: Duration::from_secs(3600),
            leeway: Duration::from_secs(30),
            fetch_timeout: Duration::from_secs(10),
            max_document_bytes: 64 * 1024,
            issuers: IssuerPolicy::default(),
        }
    }
}

/// Who a verified ID token says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedIdentity {
    pub issuer: String,
    pub subject: String,
    /// The token's `exp`, Unix seconds: a registry token issued for it need not outlive it.
    pub expires_at: i64,
}

/// Verifies ID tokens of trusted issuers; one per process, shared (it holds the key cache).
pub struct OidcVerifier {
    keys: jwks::KeyCache,
    leeway: Duration,
    issuers: IssuerPolicy,
}

#[derive(Deserialize)]
struct UnverifiedIssuer {
    iss: Option<String>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Result<OidcVerifier, Error> {
        let (leeway, issuers) = (config.leeway, config.issuers.clone());
        Ok(OidcVerifier { keys: jwks::KeyCache::new(config)?, leeway, issuers })
    }

    /// Verifies `id_token` against `trust`; see the module documentation for the checks.
    pub async fn verify(&self, id_token: &str, trust: &Trust) -> Result<VerifiedIdentity, Error> {
        if id_token.len() > MAX_TOKEN_BYTES {
            return Err(refused(format!("the ID token exceeds {MAX_TOKEN_BYTES} bytes")));
        }
        let header = match decode_header(id_token) {
            Ok(header) if ACCEPTED_ALGORITHMS.contains(&header.alg) => header,
            _ => {
                return Err(refused(
                    "the ID token is not a JWT signed with an accepted algorithm (only asymmetric \
                     signatures: RS*, PS*, ES256, ES384, EdDSA)",
                ));
            }
        };
        let kid = header.kid.as_deref().ok_or_else(|| refused("the ID token's header names no key (`kid`)"))?;
        let unverified: UnverifiedIssuer = jsonwebtoken::dangerous::insecure_decode_claims(id_token)
            .map_err(|_| refused("the ID token's claims are unreadable"))?;
        if unverified.iss.as_deref() != Some(trust.issuer.as_str()) {
            return Err(refused("the ID token's issuer is not the issuer the robot trusts"));
        }
        // The allowlist may have changed since the trust was made.
        if let Err(why) = self.issuers.check_issuer(&trust.issuer) {
            return Err(refused(format!("the robot's issuer is no longer allowed: {why}")));
        }
        let key = self.keys.key(&trust.issuer, kid).await?;
        if key.algorithm.is_some_and(|alg| alg != header.alg) {
            return Err(refused("the ID token's algorithm is not the one its key is published for"));
        }

        let mut validation = Validation::new(header.alg);
        validation.leeway = self.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_issuer(&[&trust.issuer]);
        validation.set_audience(&trust.audiences);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        let claims = decode::<Map<String, Value>>(id_token, &key.key, &validation).map_err(rejection)?.claims;

        let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or_default();
        match claims.get("iat") {
            None => {}
            Some(iat) => match iat.as_f64() {
                Some(iat) if iat <= now + self.leeway.as_secs_f64() => {}
                Some(_) => return Err(refused("the ID token was issued in the future (`iat`)")),
                None => return Err(refused("the ID token's `iat` is not a number")),
            },
        }
        trust.check_rules(&claims)?;
        Ok(VerifiedIdentity {
            issuer: trust.issuer.clone(),
            subject: claims.get("sub").and_then(Value::as_str).unwrap_or_default().to_owned(),
            expires_at: claims.get("exp").and_then(Value::as_f64).unwrap_or_default() as i64,
        })
    }
}

/// The `exp` of an ID token (or any JWT), read without checking its signature: only for a
/// token that has just been verified ([`OidcVerifier::verify`], a registry token's check),
/// to bound what Berth issues on it.
pub fn expiry_of(id_token: &str) -> Option<i64> {
    let claims: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(id_token).ok()?;
    claims.get("exp").and_then(Value::as_f64).map(|exp| exp as i64)
}

/// What a failed signature or claim check tells the client.
fn rejection(error: jsonwebtoken::errors::Error) -> Error {
    match error.kind() {
        JwtError::ExpiredSignature => refused("the ID token has expired"),
        JwtError::ImmatureSignature => refused("the ID token is not valid yet (`nbf`)"),
        JwtError::InvalidAudience => refused("the ID token's audience is not one the robot trusts"),
        JwtError::InvalidIssuer => refused("the ID token's issuer is not the issuer the robot trusts"),
        JwtError::InvalidSignature => refused("the ID token's signature does not verify"),
        JwtError::MissingRequiredClaim(claim) => refused(format!("the ID token has no `{claim}` claim")),
        JwtError::InvalidAlgorithm | JwtError::InvalidKeyFormat | JwtError::InvalidEcdsaKey => {
            refused("the ID token's algorithm does not fit its key")
        }
        _ => refused("the ID token is malformed"),
    }
}
