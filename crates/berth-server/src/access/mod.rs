//! Identity and access: who a caller is (passwords, tokens, robots), what it may do
//! (`berth_core::access`'s matrix applied to the identity store's records), and the
//! token service that docker, podman and the other clients log in through.

pub mod authorizer;
pub mod cache;
pub mod grants;
pub mod keys;
pub mod limiter;
pub mod oidc;
pub mod password;
pub mod token_endpoint;
pub mod tokens;
