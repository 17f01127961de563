//! The retention store: when manifests and tags were last pulled, each project's retention
//! policy, and the view of a repository a retention run decides on.
//!
//! Its own store beside [`MetadataStore`](crate::MetadataStore), in the same database, one
//! SQL implementation for both dialects (`sql.rs`) and a shared suite (`suite.rs`). It
//! deletes nothing of the registry's: a retention run deletes tags and manifests through
//! `MetadataStore` like any client. Policies are stored as the JSON the API validated;
//! their meaning is the server's (`berth_server::retention`).

use async_trait::async_trait;
use berth_core::{Error, RepoName};

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// A pull to record: `repo`'s manifest `digest` was served at `at` (Unix seconds), asked
/// for by `tag` if a tag was named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pull {
    pub repo: String,
    pub digest: String,
    pub tag: Option<String>,
    pub at: i64,
}

/// A tag as a retention run sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagState {
    pub tag: String,
    /// The manifest it points at.
    pub digest: String,
    /// Unix seconds of its last push (a move is a push).
    pub pushed_at: i64,
    /// Unix seconds of its last pull since it was last pushed: by this tag, or of its
    /// manifest by any reference. `None` if not pulled since.
    pub last_pulled_at: Option<i64>,
}

/// A manifest that nothing in its repository holds on to but its tags: not a child of an
/// index there, not a referrer (a manifest with a `subject` lives and dies with its subject,
/// which is GC's business).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopManifest {
    pub digest: String,
    /// Unix seconds of its first push.
    pub pushed_at: i64,
}

/// What a retention run decides on for one repository.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoState {
    /// Every tag, sorted by name.
    pub tags: Vec<TagState>,
    /// The top-level manifests (see [`TopManifest`]), sorted by digest.
    pub manifests: Vec<TopManifest>,
}

#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Records `pulls` in one transaction: each row keeps the latest time it was given.
    /// Not made durable on its own (nothing was acknowledged to a client): a power loss
    /// may lose the last flush, a process crash does not. With `announce`, an
    /// `artifact.pulled` event per manifest goes into the outbox in the same transaction
    /// (its tags those it was pulled by, its time the latest pull's): pulls are announced
    /// once per flush, never once per pull.
    async fn record_pulls(&self, pulls: &[Pull], announce: bool) -> Result<(), Error>;

    /// The tags and top-level manifests of `repo` (empty if it does not exist).
    async fn repo_state(&self, repo: &RepoName) -> Result<RepoState, Error>;

    /// Stores `project`'s policy (JSON), or removes it (`None`).
    async fn set_policy(&self, project: &str, policy: Option<&str>) -> Result<(), Error>;

    async fn policy(&self, project: &str) -> Result<Option<String>, Error>;

    /// Every project's policy: `(project, policy)`, sorted by project.
    async fn policies(&self) -> Result<Vec<(String, String)>, Error>;
}
