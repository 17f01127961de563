//! Identity and access: who a caller is (passwords, tokens, robots, keyless robots'
//! OIDC trust), what it may do (`berth_core::access`'s matrix applied to the identity
//! store's records), and the token service that docker, podman and the other clients
//! log in through.
//!
//! The HTTP edge hands this crate what a request presents ([`auth::Credentials`]: the
//! `Authorization` value as bytes, the `Host`, the peer address) and gets a
//! [`auth::Principal`] or an error carrying its challenge; nothing here names an HTTP
//! type. [`token`] is `/token`'s logic, its form and rendering are the edge's.
//!
//! # The token flow
//!
//! A request's `Authorization` is read by [`authorizer::TokenAuthorizer`]. The flow a client follows: any request → 401 with
//! `WWW-Authenticate: Bearer realm="<external URL>/token",service,scope` (every scope the
//! request can use, space-separated: a mount's names its source's pull too) → `GET /token`
//! with Basic credentials (or none) → an ES256 JWT granting the requested actions the
//! caller holds → the request again with `Authorization: Bearer`. Invariants: **a token
//! never grants more than its caller holds** ([`token`] grants each requested
//! action only if `SubjectGrants::may` allows it, the same evaluation that decides Basic
//! and anonymous requests); **secrets are never logged nor cached in clear**: passwords,
//! tokens and `Authorization` headers appear in no log line and no error (logins are
//! logged by account name and address), the Basic-login cache is keyed by a salted
//! SHA-256, the token cache by the token's SHA-256, and signing keys never leave the
//! server. Keys live in the identity store; every node verifies every node's tokens.
//! The caches and their bounds are in `docs/bounds.md`.
//!
//! # The modules
//!
//! `password.rs` hashes
//! (at most one argon2id check per core at once; `berth::return_large_blocks` makes their
//! 19 MiB blocks go back to the system when freed) and secrets; `keys.rs` the token-signing key ring; `tokens.rs` registry tokens (issue,
//! verify, the verified-token cache); `grants.rs` what a caller holds (memberships, robot
//! grants, admin, public projects) and `SubjectGrants`, the one evaluation of the matrix;
//! `authorizer.rs` `TokenAuthorizer`, the real `Authorizer` (bearer, Basic, anonymous;
//! Basic logins missing the cache wait on a stripe lock by credential, so a crowd sending
//! the same credentials checks the password once; `access_changed` drops the cached logins
//! an `AccessChange` affects, and a login checked across a change is not cached);
//! `token.rs` `/token`'s logic (nothing it issues outlives what it was issued on: a
//! robot's expiry, a keyless robot's ID token, which buys no refresh token); `limiter.rs`
//! failed-login limits (a slowdown, never a lockout: a login past a limit waits its turn and
//! is then checked, so a right secret always gets in; keyless logins, an issuer's signed ID
//! token, are not limited); `cache.rs` the bounded expiring map both credential caches use
//! (in entries, and in bytes for tokens); `oidc/` verifies keyless robots' external ID tokens against a robot's trust
//! document (`trust.rs`: the document and its glob rules; `issuers.rs`: the administrator's
//! allowlist of issuers, https only, no private address unless allowed, names checked as
//! they resolve for the connection; `jwks.rs`: issuers' keys, fetched
//! only for issuers a trust names, cached, refetch rate-limited per issuer).
//!
//! The grant rule
//! (nobody grants what they do not hold, nor a robot that outlives them) is applied by
//! the management API (`berth-server`'s `api/robots.rs` and `api/members.rs`) to a robot
//! or role as it will be.

pub mod auth;
pub mod authorizer;
pub mod cache;
pub mod grants;
pub mod keys;
pub mod limiter;
pub mod oidc;
pub mod password;
pub mod refusal;
pub mod token;
pub mod tokens;

pub use auth::{Access, AccessChange, Action, AllowAll, Authorizer, Credentials, Grants, Principal, Subject};
