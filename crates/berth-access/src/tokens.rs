//! Registry tokens (Docker's token specification): ES256 JWTs that name a subject and
//! the actions granted on each resource (`access`), issued by `/token` and presented as
//! `Authorization: Bearer` on every request.
//!
//! Verification pins the algorithm to ES256 (no `none`, no HMAC with a public key), needs
//! a `kid` of a key in the ring that may still have signed a current token of its kind,
//! and checks `iss`, `aud`, `exp` and `nbf` (with [`LEEWAY_SECS`] for clocks between
//! nodes), and that the token lives no longer than its kind's TTL (`exp` − `iat` at most
//! the TTL and the leeway: a token minted with a far `exp` is refused). A verified token is
//! cached by the SHA-256 of its text until its `exp` (never past `iat` + the TTL), so
//! presenting it again costs a hash and a map lookup: no signature check, no store read;
//! a revoked key's tokens are dropped from the cache (on this node at once, on the others
//! once they re-read the keys).
//!
//! Refresh tokens (`offline_token=true`, OAuth2's `refresh_token` grant) are JWTs signed
//! the same way with another audience (`<service>/refresh`) and no `access`, so neither
//! kind passes for the other. They live [`DEFAULT_REFRESH_TTL`] (30 days, like a login
//! that is remembered; a robot's end by its expiry, a keyless robot gets none) and are
//! only worth what the store says when they are used: the user or robot must exist, be
//! enabled (a robot also unexpired), and must not have changed since the token was issued
//! (a new password, or being disabled and enabled again, ends every refresh token issued
//! before).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::scope::{Resource, Scope, ScopeAction};
use berth_core::{Error, ErrorKind, RepoName};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::cache::{Bounds, TtlCache, Weigh, digest};
use super::keys::KeyRing;
use super::password::{base64url, random_bytes};
use crate::auth::{Access, Action, Grants, Subject};

/// Clock difference between nodes tolerated on `exp` and `nbf`.
pub const LEEWAY_SECS: u64 = 10;
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(300);
pub const DEFAULT_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// Verified tokens kept at once.
pub const TOKEN_CACHE_ENTRIES: usize = 100_000;
/// The bytes they may take, keys and grants counted: a token grants as many scopes as
/// its client asked for, and a request head may carry one of up to 256 KiB.
pub const TOKEN_CACHE_BYTES: usize = 32 << 20;
/// Grants heavier than this (dozens of repositories; docker asks for one to a few) are
/// not cached: such a token's signature is checked on every use.
pub const MAX_CACHED_GRANTS: usize = 8 << 10;

/// One entry of the `access` claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub actions: Vec<String>,
}

impl AccessEntry {
    /// The entry for `scope` granting `actions` (possibly none, as distribution does).
    pub fn granted(scope: &Scope, actions: &BTreeSet<ScopeAction>) -> AccessEntry {
        let actions = actions.iter().map(|a| a.as_str().to_owned()).collect();
        match &scope.resource {
            Resource::Repository(name) => AccessEntry { kind: "repository".into(), name: name.to_string(), actions },
            Resource::Catalog => AccessEntry { kind: "registry".into(), name: "catalog".into(), actions },
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub aud: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access: Vec<AccessEntry>,
}

/// The subject a token's `sub` names: robots' names start with `robot$`.
pub fn subject_of(sub: Option<&str>) -> Subject {
    match sub {
        None => Subject::Anonymous,
        Some(name) if name.starts_with("robot$") => Subject::Robot(name.to_owned()),
        Some(name) => Subject::User(name.to_owned()),
    }
}

/// What a verified access token grants: exactly its `access` claim.
#[derive(Debug)]
pub struct TokenGrants {
    pub subject: Subject,
    repositories: Vec<(RepoName, BTreeSet<ScopeAction>)>,
    catalog: bool,
    /// Unix seconds.
    pub expires_at: i64,
    /// The key that signed it: revoking the key ends the token at once.
    kid: String,
}

impl TokenGrants {
    fn from_claims(claims: &Claims, kid: String) -> Result<TokenGrants, Error> {
        let mut grants = TokenGrants {
            subject: subject_of(claims.sub.as_deref()),
            repositories: Vec::new(),
            catalog: false,
            expires_at: claims.exp,
            kid,
        };
        for entry in &claims.access {
            let mut actions = BTreeSet::new();
            for action in &entry.actions {
                match ScopeAction::ALL.into_iter().find(|a| a.as_str() == action) {
                    Some(a) => _ = actions.insert(a),
                    None if action == "*" => actions.extend(ScopeAction::ALL),
                    None => return Err(invalid()),
                }
            }
            match (entry.kind.as_str(), entry.name.as_str()) {
                ("registry", "catalog") => grants.catalog |= !actions.is_empty(),
                ("repository", name) => {
                    grants.repositories.push((RepoName::parse(name).map_err(|_| invalid())?, actions));
                }
                _ => return Err(invalid()),
            }
        }
        Ok(grants)
    }

    /// Whether the token carries `registry:catalog` with some action.
    pub fn catalog(&self) -> bool {
        self.catalog
    }
}

impl Weigh for Arc<TokenGrants> {
    fn weight(&self) -> usize {
        // A non-empty `BTreeSet` allocates one leaf node, about this much for a few actions.
        const ACTIONS_NODE: usize = 64;
        let subject = match &self.subject {
            Subject::User(name) | Subject::Robot(name) => name.len(),
            Subject::Anonymous => 0,
        };
        let repositories = self.repositories.iter().map(|(name, actions)| {
            std::mem::size_of::<(RepoName, BTreeSet<ScopeAction>)>()
                + name.as_str().len()
                + if actions.is_empty() { 0 } else { ACTIONS_NODE }
        });
        std::mem::size_of::<TokenGrants>() + subject + self.kid.len() + repositories.sum::<usize>()
    }
}

impl Grants for TokenGrants {
    fn may(&self, access: Access<'_>) -> bool {
        match access {
            Access::Base => true,
            Access::Catalog => self.catalog,
            Access::Repository(repo, action) => {
                let wanted = match action {
                    Action::Pull => ScopeAction::Pull,
                    Action::Push => ScopeAction::Push,
                    Action::Delete => ScopeAction::Delete,
                };
                self.repositories.iter().any(|(name, actions)| name == repo && actions.contains(&wanted))
            }
            // Management needs the subject's records, not a registry token's scopes.
            Access::Project(..) | Access::Authenticated | Access::System => false,
        }
    }
}

fn invalid() -> Error {
    Error::new(ErrorKind::Unauthorized).with_message("the token is invalid")
}

fn expired() -> Error {
    Error::new(ErrorKind::Unauthorized).with_message("the token has expired")
}

fn expired_login() -> Error {
    Error::new(ErrorKind::Unauthorized).with_message("the credentials have expired")
}

/// Signs `claims` with `key`, naming it `kid`.
pub fn sign(claims: &Claims, kid: &str, key: &EncodingKey) -> Result<String, Error> {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, claims, key).map_err(|e| Error::internal(format!("signing a token: {e}")))
}

/// The `kid` of a token whose header asks for ES256; anything else is invalid.
pub fn kid(token: &str) -> Result<String, Error> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid())?;
    match (header.alg, header.kid) {
        (Algorithm::ES256, Some(kid)) => Ok(kid),
        _ => Err(invalid()),
    }
}

/// The claims of `token` if `key` signed it for `audience` from `issuer`, it is current,
/// and it lives at most `lifetime` (with the leeway) from its `iat` or `nbf`, whichever is
/// earlier. `key` is `None` when the token names a key that is not in the ring (or one
/// that cannot have signed a current token of this kind).
pub fn check(
    token: &str,
    key: Option<&DecodingKey>,
    issuer: &str,
    audience: &str,
    lifetime: Duration,
) -> Result<Claims, Error> {
    let key = key.ok_or_else(invalid)?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.leeway = LEEWAY_SECS;
    validation.validate_nbf = true;
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    validation.set_required_spec_claims(&["exp", "nbf", "iat", "iss", "aud"]);
    let longest = i64::try_from(lifetime.as_secs() + LEEWAY_SECS).unwrap_or(i64::MAX);
    match jsonwebtoken::decode::<Claims>(token, key, &validation) {
        // No token of ours lives longer than its TTL, whatever its `exp` says.
        Ok(data) if data.claims.exp.saturating_sub(data.claims.iat.min(data.claims.nbf)) > longest => Err(invalid()),
        Ok(data) => Ok(data.claims),
        Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::ExpiredSignature => Err(expired()),
        Err(_) => Err(invalid()),
    }
}

/// A token just issued.
pub struct Issued {
    pub token: String,
    /// Seconds.
    pub expires_in: u64,
    /// Unix seconds.
    pub issued_at: i64,
}

const CACHE_BOUNDS: Bounds =
    Bounds { max_entries: TOKEN_CACHE_ENTRIES, max_bytes: TOKEN_CACHE_BYTES, max_entry_bytes: MAX_CACHED_GRANTS };

/// Issues and verifies tokens with the key ring; caches verified access tokens.
pub struct TokenService {
    pub keys: KeyRing,
    /// `iss` and `aud` of access tokens.
    pub service: String,
    pub ttl: Duration,
    pub refresh_ttl: Duration,
    verified: TtlCache<[u8; 32], Arc<TokenGrants>>,
}

impl TokenService {
    pub fn new(keys: KeyRing, service: String, ttl: Duration, refresh_ttl: Duration) -> TokenService {
        TokenService { keys, service, ttl, refresh_ttl, verified: TtlCache::new(CACHE_BOUNDS) }
    }

    fn refresh_audience(&self) -> String {
        format!("{}/refresh", self.service)
    }

    /// Claims for `ttl` from now, ending by `not_after` (Unix seconds) if that is sooner:
    /// a token never outlives the credential it was issued on.
    async fn issue_claims(
        &self,
        audience: String,
        sub: Option<&str>,
        ttl: Duration,
        not_after: Option<i64>,
        access: Vec<AccessEntry>,
    ) -> Result<Issued, Error> {
        let now = berth_meta::now();
        let mut exp = now.saturating_add(i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX / 2));
        if let Some(at) = not_after {
            exp = exp.min(at);
        }
        if exp <= now {
            return Err(expired_login());
        }
        let expires_in = u64::try_from(exp - now).unwrap_or(1);
        let claims = Claims {
            iss: self.service.clone(),
            sub: sub.map(str::to_owned),
            aud: audience,
            exp,
            nbf: now,
            iat: now,
            jti: base64url(&random_bytes::<16>()),
            access,
        };
        let (kid, key) = self.keys.signer().await?;
        Ok(Issued { token: sign(&claims, &kid, &key)?, expires_in, issued_at: now })
    }

    /// An access token for `sub` (`None`: anonymous) granting `access`, expiring by
    /// `not_after` (Unix seconds) if that comes before the TTL.
    pub async fn issue(
        &self,
        sub: Option<&str>,
        access: Vec<AccessEntry>,
        not_after: Option<i64>,
    ) -> Result<Issued, Error> {
        self.issue_claims(self.service.clone(), sub, self.ttl, not_after, access).await
    }

    /// A refresh token for `sub`, expiring by `not_after` if that is sooner.
    pub async fn issue_refresh(&self, sub: &str, not_after: Option<i64>) -> Result<Issued, Error> {
        self.issue_claims(self.refresh_audience(), Some(sub), self.refresh_ttl, not_after, Vec::new()).await
    }

    /// What a presented access token grants, from the cache after its first use (while
    /// the key that signed it is not revoked).
    pub async fn verify(&self, token: &str) -> Result<Arc<TokenGrants>, Error> {
        let key = digest(&[token.as_bytes()]);
        if let Some(grants) = self.verified.get(&key) {
            if self.keys.knows(&grants.kid).await {
                return Ok(grants);
            }
            self.verified.retain(|cached| cached.kid != grants.kid);
        }
        let (claims, kid) = self.verify_signed(token, &self.service, self.ttl).await?;
        let grants = Arc::new(TokenGrants::from_claims(&claims, kid)?);
        let until = claims.exp.min(claims.iat.saturating_add(i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)));
        let left = u64::try_from(until - berth_meta::now()).unwrap_or(0);
        self.verified.insert(key, Arc::clone(&grants), Instant::now() + Duration::from_secs(left));
        Ok(grants)
    }

    /// The claims of a refresh token (not cached: each use is checked against the store).
    pub async fn verify_refresh(&self, token: &str) -> Result<Claims, Error> {
        let (claims, _) = self.verify_signed(token, &self.refresh_audience(), self.refresh_ttl).await?;
        if claims.sub.is_none() {
            return Err(invalid());
        }
        Ok(claims)
    }

    /// Revokes the key `kid` (see [`KeyRing::revoke`]) and drops the tokens it signed from
    /// this node's cache. `false` if no key has that id.
    pub async fn revoke(&self, kid: &str) -> Result<bool, Error> {
        let revoked = self.keys.revoke(kid).await?;
        self.verified.retain(|grants| grants.kid != kid);
        Ok(revoked)
    }

    /// The claims of a token of a kind living at most `lifetime`, and its key's id.
    async fn verify_signed(&self, token: &str, audience: &str, lifetime: Duration) -> Result<(Claims, String), Error> {
        let kid = kid(token)?;
        let key = self.keys.verifier(&kid, lifetime + Duration::from_secs(LEEWAY_SECS)).await?;
        Ok((check(token, key.as_ref(), &self.service, audience, lifetime)?, kid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys;

    const TTL: Duration = DEFAULT_TOKEN_TTL;

    struct Pair {
        kid: String,
        signer: EncodingKey,
        verifier: DecodingKey,
    }

    fn pair() -> Pair {
        let key = keys::generate(0).unwrap();
        Pair {
            kid: key.kid.clone(),
            signer: EncodingKey::from_ec_pem(key.private_pem.as_bytes()).unwrap(),
            verifier: DecodingKey::from_ec_pem(key.public_pem.as_bytes()).unwrap(),
        }
    }

    fn claims(access: Vec<AccessEntry>) -> Claims {
        let now = berth_meta::now();
        Claims {
            iss: "berth".into(),
            sub: Some("alice".into()),
            aud: "berth".into(),
            exp: now + 300,
            nbf: now,
            iat: now,
            jti: "j".into(),
            access,
        }
    }

    fn pull_push(repo: &str) -> AccessEntry {
        AccessEntry { kind: "repository".into(), name: repo.into(), actions: vec!["pull".into(), "push".into()] }
    }

    fn message(result: Result<Claims, Error>) -> String {
        let e = result.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unauthorized);
        e.message().to_owned()
    }

    #[test]
    fn a_signed_token_verifies_and_grants_exactly_its_access() {
        let p = pair();
        let token = sign(&claims(vec![pull_push("team/app")]), &p.kid, &p.signer).unwrap();
        assert_eq!(kid(&token).unwrap(), p.kid);
        let checked = check(&token, Some(&p.verifier), "berth", "berth", TTL).unwrap();
        let grants = TokenGrants::from_claims(&checked, p.kid.clone()).unwrap();
        assert_eq!(grants.subject, Subject::User("alice".into()));
        let app = RepoName::parse("team/app").unwrap();
        let other = RepoName::parse("team/other").unwrap();
        assert!(grants.may(Access::Repository(&app, Action::Pull)));
        assert!(grants.may(Access::Repository(&app, Action::Push)));
        assert!(!grants.may(Access::Repository(&app, Action::Delete)));
        assert!(!grants.may(Access::Repository(&other, Action::Pull)));
        assert!(!grants.may(Access::Catalog));
        assert!(!grants.may(Access::System));
    }

    #[test]
    fn tampered_foreign_unsigned_expired_and_misaddressed_tokens_are_refused() {
        let (p, foreign) = (pair(), pair());
        let token = sign(&claims(vec![pull_push("team/app")]), &p.kid, &p.signer).unwrap();

        // The payload changed after signing (another repository).
        let parts: Vec<&str> = token.split('.').collect();
        let forged = serde_json::to_vec(&claims(vec![pull_push("team/secret")])).unwrap();
        let tampered = format!("{}.{}.{}", parts[0], base64url(&forged), parts[2]);
        assert_eq!(message(check(&tampered, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");

        // Signed by a key that is not ours.
        let signed_elsewhere = sign(&claims(vec![]), &p.kid, &foreign.signer).unwrap();
        assert_eq!(message(check(&signed_elsewhere, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");

        // alg: none, and HS256 keyed with anything: refused before any key is looked up.
        let none = format!("{}.{}.", base64url(br#"{"alg":"none","kid":"x"}"#), parts[1]);
        assert!(kid(&none).is_err());
        let hs = jsonwebtoken::encode(
            &Header { kid: Some(p.kid.clone()), ..Header::new(Algorithm::HS256) },
            &claims(vec![]),
            &EncodingKey::from_secret(b"k"),
        )
        .unwrap();
        assert!(kid(&hs).is_err());
        assert_eq!(message(check(&hs, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");

        // Expired beyond the leeway; not yet valid.
        let mut old = claims(vec![]);
        old.exp = berth_meta::now() - 60;
        let old = sign(&old, &p.kid, &p.signer).unwrap();
        assert_eq!(message(check(&old, Some(&p.verifier), "berth", "berth", TTL)), "the token has expired");
        let mut early = claims(vec![]);
        early.nbf = berth_meta::now() + 600;
        let early = sign(&early, &p.kid, &p.signer).unwrap();
        assert_eq!(message(check(&early, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");

        // Another service's token, or a refresh token presented as an access token.
        assert!(check(&token, Some(&p.verifier), "berth", "other", TTL).is_err());
        assert!(check(&token, Some(&p.verifier), "other", "berth", TTL).is_err());
        assert!(check(&token, Some(&p.verifier), "berth", "berth/refresh", TTL).is_err());
        assert!(check(&token, None, "berth", "berth", TTL).is_err(), "unknown kid");
    }

    #[test]
    fn a_token_living_longer_than_its_kinds_ttl_is_refused() {
        let p = pair();
        let mut long = claims(vec![]);
        long.exp = long.iat + 300 + i64::try_from(LEEWAY_SECS).unwrap() + 1;
        let long = sign(&long, &p.kid, &p.signer).unwrap();
        assert_eq!(message(check(&long, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");
        assert!(check(&long, Some(&p.verifier), "berth", "berth", Duration::from_secs(3600)).is_ok());
        // Backdating `nbf` does not make room either.
        let mut early = claims(vec![]);
        early.nbf = early.iat - 3600;
        let early = sign(&early, &p.kid, &p.signer).unwrap();
        assert_eq!(message(check(&early, Some(&p.verifier), "berth", "berth", TTL)), "the token is invalid");
    }

    #[test]
    fn an_access_claim_naming_an_invalid_resource_invalidates_the_token() {
        let bad = AccessEntry { kind: "repository".into(), name: "../etc".into(), actions: vec!["pull".into()] };
        assert!(TokenGrants::from_claims(&claims(vec![bad]), "k".into()).is_err());
        let odd = AccessEntry { kind: "repository".into(), name: "a".into(), actions: vec!["admin".into()] };
        assert!(TokenGrants::from_claims(&claims(vec![odd]), "k".into()).is_err());
        let catalog = AccessEntry { kind: "registry".into(), name: "catalog".into(), actions: vec!["*".into()] };
        assert!(TokenGrants::from_claims(&claims(vec![catalog]), "k".into()).unwrap().catalog());
    }

    #[test]
    fn robots_are_named_by_their_prefix() {
        assert_eq!(subject_of(Some("robot$team+ci")), Subject::Robot("robot$team+ci".into()));
        assert_eq!(subject_of(Some("alice")), Subject::User("alice".into()));
        assert_eq!(subject_of(None), Subject::Anonymous);
    }
}
