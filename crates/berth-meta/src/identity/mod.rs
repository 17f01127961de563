//! The identity store: users, projects, members, robot accounts and token-signing keys.
//!
//! A store of its own beside [`MetadataStore`](crate::MetadataStore), in the same
//! database (the SQLite file in embedded mode, PostgreSQL in scale-out mode), with one SQL
//! implementation for both dialects and a shared behaviour suite. It holds records only:
//! what a role allows is `berth_core::access`, how passwords and tokens are checked is the
//! server's business. Secrets are stored only as hashes (`password_hash`, `secret_hash`),
//! except the token-signing keys, which every node must be able to sign with.

use async_trait::async_trait;
use berth_core::Error;
use berth_core::access::{Permission, Role};

use crate::PageSpec;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// A person (or a script) with a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A PHC string: `$argon2id$…`, or `$2y$…` for a user imported from htpasswd.
    pub password_hash: String,
    /// A system administrator: every permission in every project, and the system's
    /// management (users, projects).
    pub admin: bool,
    pub disabled: bool,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds of the last change (password, admin, disabled): caches of a verified
    /// credential compare it.
    pub updated_at: i64,
}

/// What changes in a user; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserUpdate {
    pub password_hash: Option<String>,
    pub admin: Option<bool>,
    pub disabled: Option<bool>,
}

/// A project: the first component of its repositories' names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    /// Anonymous callers may pull.
    pub public: bool,
    pub created_at: i64,
}

/// A user's role in a project.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub project: String,
    pub user: String,
    pub role: Role,
}

/// What a robot may do in one project: a subset of the permissions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RobotGrant {
    pub project: String,
    /// Sorted, without duplicates.
    pub permissions: Vec<Permission>,
}

/// A robot account: a name, a secret (or an external issuer it trusts), and grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Robot {
    /// The login name, `robot$PROJECT+NAME` (scoped to a project) or `robot$NAME`
    /// (created by a system administrator, possibly over several projects).
    pub name: String,
    pub description: String,
    /// A PHC string of the secret; `None` for a keyless robot that only accepts
    /// identity tokens of the issuer its `trust` names.
    pub secret_hash: Option<String>,
    pub disabled: bool,
    /// Unix seconds; `None` never expires.
    pub expires_at: Option<i64>,
    pub grants: Vec<RobotGrant>,
    /// Keyless robots: the external OIDC issuer and claim rules it trusts, as JSON
    /// (its shape is the server's; the store keeps it as it is given).
    pub trust: Option<String>,
    /// Who created it (a user's name).
    pub created_by: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// What changes in a robot; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct RobotUpdate {
    pub description: Option<String>,
    pub secret_hash: Option<Option<String>>,
    pub disabled: Option<bool>,
    pub expires_at: Option<Option<i64>>,
    pub grants: Option<Vec<RobotGrant>>,
    pub trust: Option<Option<String>>,
}

/// A key that signs registry tokens. Every node signs with the newest key that is not
/// retired and verifies with every key that is not past `retired_at` plus the longest
/// token lifetime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    /// The JWT `kid`.
    pub kid: String,
    /// The JWT `alg` (e.g. `ES256`).
    pub algorithm: String,
    /// PEM (PKCS#8). A secret: it never leaves the server.
    pub private_pem: String,
    pub public_pem: String,
    pub created_at: i64,
    /// Unix seconds when it stopped signing; `None` while it is the one that signs.
    pub retired_at: Option<i64>,
}

/// Users, projects, members, robots and signing keys.
///
/// Errors: creating something whose name exists is `ErrorKind::Conflict`; changing or
/// deleting something that does not exist is `ErrorKind::ResourceUnknown`.
/// Names are compared exactly (callers validate and normalize them).
#[async_trait]
pub trait IdentityStore: Send + Sync + 'static {
    // Users.
    async fn create_user(&self, name: &str, password_hash: &str, admin: bool) -> Result<User, Error>;
    async fn user(&self, name: &str) -> Result<Option<User>, Error>;
    /// Users sorted by name, after `page.last`.
    async fn users(&self, page: PageSpec<'_>) -> Result<Vec<User>, Error>;
    async fn update_user(&self, name: &str, update: &UserUpdate) -> Result<User, Error>;
    /// Whether any system administrator exists (first start creates one if not).
    async fn any_admin(&self) -> Result<bool, Error>;

    // Projects.
    async fn create_project(&self, name: &str, public: bool) -> Result<Project, Error>;
    async fn project(&self, name: &str) -> Result<Option<Project>, Error>;
    /// Projects sorted by name, after `page.last`.
    async fn projects(&self, page: PageSpec<'_>) -> Result<Vec<Project>, Error>;
    async fn set_project_public(&self, name: &str, public: bool) -> Result<Project, Error>;
    /// Deletes a project with its members and the robots scoped to it, only if no
    /// repository of the registry belongs to it (checked in the same transaction):
    /// `ErrorKind::Conflict` otherwise.
    async fn delete_project(&self, name: &str) -> Result<(), Error>;

    // Members.
    /// Adds `user` to `project` with `role`, or changes its role.
    async fn set_member(&self, project: &str, user: &str, role: Role) -> Result<Member, Error>;
    async fn remove_member(&self, project: &str, user: &str) -> Result<bool, Error>;
    /// A project's members sorted by user name, after `page.last`.
    async fn members(&self, project: &str, page: PageSpec<'_>) -> Result<Vec<Member>, Error>;
    /// Every project `user` is a member of, with its role, sorted by project.
    async fn memberships(&self, user: &str) -> Result<Vec<Member>, Error>;

    // Robots.
    async fn create_robot(&self, robot: &Robot) -> Result<Robot, Error>;
    async fn robot(&self, name: &str) -> Result<Option<Robot>, Error>;
    /// Robots with a grant in `project` (every robot if `None`), sorted by name, after
    /// `page.last`.
    async fn robots(&self, project: Option<&str>, page: PageSpec<'_>) -> Result<Vec<Robot>, Error>;
    async fn update_robot(&self, name: &str, update: &RobotUpdate) -> Result<Robot, Error>;
    async fn delete_robot(&self, name: &str) -> Result<bool, Error>;

    // Signing keys.
    /// Every key not retired before `retired_after` (Unix seconds), newest first.
    async fn signing_keys(&self, retired_after: i64) -> Result<Vec<SigningKey>, Error>;
    /// Adds a key and retires (at its `created_at`) every key that still signs, in one
    /// transaction: after it, `key` is the only one that signs.
    async fn rotate_signing_key(&self, key: &SigningKey) -> Result<(), Error>;
    /// Removes a retired key (a revocation: a node that has reloaded its keys verifies
    /// nothing with it). `false` if no retired key has the id; the key that signs is never
    /// removed (rotate first).
    async fn revoke_signing_key(&self, kid: &str) -> Result<bool, Error>;
}
