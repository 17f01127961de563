//! The authorization seam. Every handler states the access it needs, as a typed
//! [`Access`], and calls [`Authorizer::authorize`] before touching anything; access
//! control plugs in here without changing a handler.

use async_trait::async_trait;
use axum::http::HeaderMap;
use berth_core::{Error, RepoName};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Pull,
    Push,
    Delete,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access<'a> {
    /// `GET /v2/`: is the caller known at all.
    Base,
    /// Listing every repository.
    Catalog,
    Repository(&'a RepoName, Action),
}

/// Who is calling, once authorized.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Principal {
    /// `None` for anonymous access.
    pub name: Option<String>,
}

#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Decides whether the request (its credentials are in `headers`) may have `access`.
    async fn authorize(&self, headers: &HeaderMap, access: Access<'_>) -> Result<Principal, Error>;
}

/// Everything is allowed to everyone: the only policy until access control exists.
pub struct AllowAll;

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize(&self, _headers: &HeaderMap, _access: Access<'_>) -> Result<Principal, Error> {
        Ok(Principal::default())
    }
}
