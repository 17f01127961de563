//! Identity and access: who a caller is (passwords, tokens, robots, keyless robots'
//! OIDC trust), what it may do (`berth_core::access`'s matrix applied to the identity
//! store's records), and the token service that docker, podman and the other clients
//! log in through.
//!
//! The HTTP edge hands this crate what a request presents ([`auth::Credentials`]: the
//! `Authorization` value as bytes, the `Host`, the peer address) and gets a
//! [`auth::Principal`] or an error carrying its challenge; nothing here names an HTTP
//! type. [`token`] is `/token`'s logic, its form and rendering are the edge's.

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
