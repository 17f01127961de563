//! The authorization seam. Every handler states the access it needs, as a typed
//! [`Access`], and calls [`Authorizer::authorize`] before touching anything; access
//! control plugs in here without changing a handler.
//!
//! What an authorizer returns, a [`Principal`], also answers later questions about the
//! same caller without I/O ([`Principal::may`]): the catalog keeps only the repositories
//! the caller may pull.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use berth_core::access::Permission;
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
    /// Listing repositories (each one listed is then checked with [`Principal::may`]).
    Catalog,
    Repository(&'a RepoName, Action),
    /// A permission within a project (management API: members, robots, audit log …).
    Project(&'a str, Permission),
    /// Anything any authenticated caller may do for itself (`/api/v1/me`).
    Authenticated,
    /// The system's management: users, projects. System administrators only.
    System,
}

/// Who a caller is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Subject {
    #[default]
    Anonymous,
    User(String),
    Robot(String),
}

/// Answers, without I/O, whether the caller it was made for may have an access.
pub trait Grants: Send + Sync + std::fmt::Debug {
    fn may(&self, access: Access<'_>) -> bool;
}

/// Who is calling, once authorized, and what else it may do.
#[derive(Clone, Debug)]
pub struct Principal {
    pub subject: Subject,
    /// A system administrator. A bearer token on a registry access carries grants, not
    /// roles: its principal says `false` here whoever it names (management accesses read
    /// the account and say the truth).
    pub admin: bool,
    /// What the caller may do, as known when it was authorized.
    pub grants: Arc<dyn Grants>,
}

impl Principal {
    /// The user's or robot's name; `None` for an anonymous caller.
    pub fn name(&self) -> Option<&str> {
        match &self.subject {
            Subject::Anonymous => None,
            Subject::User(name) | Subject::Robot(name) => Some(name),
        }
    }

    pub fn may(&self, access: Access<'_>) -> bool {
        self.grants.may(access)
    }
}

/// What a request presents to be authorized, as the HTTP edge read it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Credentials<'a> {
    /// The `Authorization` header's value as sent (`None`: none was).
    pub authorization: Option<&'a [u8]>,
    /// The `Host` the request was sent to: a challenge's realm names it when no external
    /// URL is configured.
    pub host: Option<&'a str>,
    /// The client's address (for rate limits and the audit log).
    pub peer: Option<IpAddr>,
}

#[async_trait]
pub trait Authorizer: Send + Sync + 'static {
    /// Decides whether the request may have `access`: the caller, or `Unauthorized`
    /// (with the challenge the client needs) or `Denied`.
    async fn authorize(&self, credentials: Credentials<'_>, access: Access<'_>) -> Result<Principal, Error>;

    /// [`Authorizer::authorize`], with a refusal's challenge naming `also` besides
    /// `access`: further scopes the request can use (a mount's source, which the token
    /// must let it pull for the mount to happen), so that a client asking for exactly
    /// the challenged scopes gets a token that serves the whole request.
    async fn authorize_also(
        &self,
        credentials: Credentials<'_>,
        access: Access<'_>,
        _also: &[Access<'_>],
    ) -> Result<Principal, Error> {
        self.authorize(credentials, access).await
    }

    /// Accounts, memberships or projects changed (here or on another node): forget what
    /// was cached of them, so that the change applies to the next request.
    fn access_changed(&self, _change: AccessChange<'_>) {}
}

/// What a management change altered of who may do what.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccessChange<'a> {
    /// A user's or robot's record (password, secret, disabled, expiry, administrator)
    /// or what it holds (memberships, grants).
    Account(&'a str),
    /// A project's existence or visibility.
    Project(&'a str),
    /// Not known (another node's change): anything.
    Anything,
}

/// Everything is allowed to everyone (tests of the registry core that are not about
/// access control, and nothing else).
pub struct AllowAll;

#[derive(Debug)]
struct Everything;

impl Grants for Everything {
    fn may(&self, _access: Access<'_>) -> bool {
        true
    }
}

#[async_trait]
impl Authorizer for AllowAll {
    async fn authorize(&self, _credentials: Credentials<'_>, _access: Access<'_>) -> Result<Principal, Error> {
        Ok(Principal { subject: Subject::Anonymous, admin: true, grants: Arc::new(Everything) })
    }
}
