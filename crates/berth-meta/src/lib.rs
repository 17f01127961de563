//! The metadata store: the registry's single source of truth.
//!
//! Repositories, which blobs each may read, manifests with their references, tags and
//! upload sessions live here. A blob is visible to a repository only once a row here
//! says so; every registry operation is one transaction. This crate knows nothing of
//! HTTP or of where blob bytes are kept.

use async_trait::async_trait;
use berth_core::{Descriptor, Digest, Error, ParsedManifest, Reference, RepoName, Tag};
use bytes::Bytes;

pub mod audit;
mod cache;
mod clock;
mod column;
mod db_error;
pub mod gc;
pub mod identity;
pub mod ops;
pub mod policy;
mod postgres;
mod projects;
pub mod retention;
pub mod scrub;
mod sql;
mod sqlite;
#[cfg(test)]
mod suite;

pub use audit::{AuditEvent, AuditQuery, AuditRecord, AuditStore};
pub use cache::{CachedStore, DEFAULT_CACHE_BYTES};
pub use gc::{GarbageBlob, GarbageManifest, GcKind, GcRun, GcStore};
pub use identity::{IdentityStore, Member, Project, Robot, RobotGrant, RobotUpdate, SigningKey, User, UserUpdate};
pub use ops::{OpsStore, PoolUsage};
pub use policy::{ImmutableRule, PolicyStore, Quota};
pub use postgres::{PgStore, PoolConfig};
pub use projects::project_repositories;
pub use retention::{Pull, RepoState, RetentionStore, TagState, TopManifest};
pub use scrub::{Finding, ScrubRun, ScrubStore, StoredBlob};
pub use sqlite::SqliteStore;

/// A live blob as the registry knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobInfo {
    pub size: u64,
    /// Where the blob store keeps it.
    pub key: String,
}

/// A stored manifest, as served.
#[derive(Clone, Debug)]
pub struct ManifestRecord {
    pub digest: Digest,
    pub media_type: String,
    pub body: Bytes,
}

/// An upload session.
#[derive(Clone, Debug, PartialEq)]
pub struct UploadRecord {
    pub id: String,
    pub repo: RepoName,
    /// Bytes acknowledged so far.
    pub size: u64,
    /// Unix seconds of the last accepted chunk (or of the start).
    pub updated_at: i64,
    /// SHA-256 state over the acknowledged bytes (`None` while empty).
    pub hash_state: Option<Vec<u8>>,
    /// The blob store's progress record.
    pub state: String,
}

/// A manifest to store, already parsed and validated.
pub struct NewManifest<'a> {
    pub repo: &'a RepoName,
    pub digest: &'a Digest,
    pub parsed: &'a ParsedManifest,
    pub body: &'a [u8],
    pub tags: &'a [Tag],
}

/// One page of a sorted listing.
#[derive(Clone, Debug, PartialEq)]
pub struct Page {
    pub items: Vec<String>,
    /// More items follow the last one.
    pub more: bool,
}

/// Which slice of a listing sorted by a unique key to return.
#[derive(Clone, Copy, Debug)]
pub struct PageSpec<'a> {
    /// Items after this key (exclusive); `None` from the start.
    pub last: Option<&'a str>,
    /// At most this many items.
    pub limit: u32,
    /// Items stop before the one that would take the page past about this many bytes;
    /// a page with room for one item holds one, however large.
    pub max_bytes: usize,
}

/// What a tag named when it was looked at: a delete conditioned on it leaves a tag pushed
/// since alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TagTarget {
    pub digest: Digest,
    /// Unix seconds of the tag's last push.
    pub pushed_at: i64,
}

/// What [`MetadataStore::delete_manifest`] requires of the manifest, checked in the
/// deleting transaction under the manifest's lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeleteIf {
    /// Nothing: a client's delete (its tags go with it).
    Any,
    /// That nothing holds on to it: untagged, no manifest of its repository references it
    /// (an index's child is not top-level), not a referrer (it lives as long as its
    /// subject), and first pushed at or before `pushed_by` (Unix seconds). Retention's
    /// untagged deletion: a child pushed by digest for an index that is accepted after the
    /// run read the repository stays.
    Unheld { pushed_by: i64 },
}

/// A manifest of a repository as a listing shows it (the management API's artifacts).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Artifact {
    pub digest: Digest,
    pub media_type: String,
    pub artifact_type: Option<String>,
    /// Bytes of the manifest itself.
    pub size: u64,
    /// Unix seconds when the manifest was first pushed.
    pub pushed_at: i64,
    /// The tags on it, sorted.
    pub tags: Vec<String>,
}

/// One page of artifacts, sorted by digest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Artifacts {
    pub items: Vec<Artifact>,
    /// More artifacts follow the last one.
    pub more: bool,
}

/// One page of referrers, sorted by digest.
#[derive(Clone, Debug, Default)]
pub struct Referrers {
    pub descriptors: Vec<Descriptor>,
    /// More referrers follow the last one.
    pub more: bool,
}

/// Seconds since the Unix epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Durability: a write that acknowledges something to a client (a blob link, a manifest,
/// a tag, a delete) is durable when its method returns. Upload progress
/// (`create_upload`, `advance_upload`) is atomic but may be durable only with the next
/// durable write: after a power loss an upload can be behind or unknown, which the
/// upload protocol already handles (the client asks where to resume, or starts again),
/// and staged bytes are not fsynced before the closing `PUT` either. A process crash
/// loses neither.
#[async_trait]
pub trait MetadataStore: Send + Sync + 'static {
    /// A live blob readable by `repo`.
    async fn repo_blob(&self, repo: &RepoName, digest: &Digest) -> Result<Option<BlobInfo>, Error>;

    /// A live blob, whichever repository holds it.
    async fn blob(&self, digest: &Digest) -> Result<Option<BlobInfo>, Error>;

    /// Up to `limit` repositories that may read a live blob.
    async fn repos_with_blob(&self, digest: &Digest, limit: u32) -> Result<Vec<RepoName>, Error>;

    /// Records a verified, durable blob and lets `repo` read it (one transaction).
    /// Completes the upload `upload_id`, if given, in the same transaction. The blob
    /// table is the arbiter of dedupe: if the digest is already recorded (and not being
    /// deleted), its existing key stays and is returned, and the caller drops the bytes
    /// it just committed under another key. Returns the key that holds the blob.
    async fn link_blob(
        &self,
        repo: &RepoName,
        digest: &Digest,
        blob: &BlobInfo,
        upload_id: Option<&str>,
    ) -> Result<String, Error>;

    /// Stops `repo` from reading a blob. `false` if it could not.
    async fn unlink_blob(&self, repo: &RepoName, digest: &Digest) -> Result<bool, Error>;

    /// Records a new upload, unless `repo` has `max_open` uploads already (then `false`).
    /// The count and the insert are atomic: concurrent creations never pass the bound.
    async fn create_upload(&self, id: &str, repo: &RepoName, state: &str, max_open: u32) -> Result<bool, Error>;

    async fn upload(&self, repo: &RepoName, id: &str) -> Result<Option<UploadRecord>, Error>;

    /// Moves an upload from `from` to `to` bytes, with the hash and blob-store state
    /// that go with `to`; `false` if it was not at `from` (another request moved it).
    async fn advance_upload(&self, id: &str, from: u64, to: u64, hash_state: &[u8], state: &str)
    -> Result<bool, Error>;

    async fn delete_upload(&self, id: &str) -> Result<bool, Error>;

    /// Deletes up to `limit` uploads with no activity since `before` (Unix seconds), the
    /// longest idle first, in one statement; returns `(id, blob-store state)` of each, whose
    /// staged bytes the caller then removes.
    async fn expire_uploads(&self, before: i64, limit: u32) -> Result<Vec<(String, String)>, Error>;

    /// Whether each of `ids` is a known upload (a few statements, however many ids).
    async fn known_uploads(&self, ids: &[String]) -> Result<Vec<bool>, Error>;

    /// Stores a manifest with its references and tags, after checking in the same
    /// transaction that every blob and child manifest it names is live in the repository.
    async fn put_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error>;

    async fn manifest(&self, repo: &RepoName, reference: &Reference) -> Result<Option<ManifestRecord>, Error>;

    /// Deletes a manifest and every tag on it, if it meets `condition` (checked in the
    /// same transaction). `false` if it did not exist (or did not meet it). Refused
    /// (`DENIED`) when a tag on it is immutable.
    async fn delete_manifest(&self, repo: &RepoName, digest: &Digest, condition: DeleteIf) -> Result<bool, Error>;

    /// Deletes a tag (with `expected`, only if it still names that manifest since that
    /// time, checked in the same statement). `false` if it did not exist (or had moved).
    /// Refused (`DENIED`) when the tag is immutable.
    async fn delete_tag(&self, repo: &RepoName, tag: &Tag, expected: Option<&TagTarget>) -> Result<bool, Error>;

    /// Deletes a repository: its manifests (with their tags), its blob links, and its
    /// name (gone from the catalog); what they used is queued for garbage collection.
    /// Returns how many manifests went, `None` if it did not exist. Refused (`DENIED`) when
    /// a tag in it is immutable. A later push creates it anew.
    async fn delete_repository(&self, repo: &RepoName) -> Result<Option<u64>, Error>;

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, Error>;

    /// Tags after `last`, sorted bytewise; `None` if the repository does not exist.
    async fn tags(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Page>, Error>;

    /// Repository names after `last`, sorted bytewise.
    async fn catalog(&self, last: Option<&str>, limit: u32) -> Result<Page, Error>;

    /// The manifests of `repo` after digest `last`, sorted by digest, with their tags;
    /// `None` if the repository does not exist. A listing for people, not the hot path.
    async fn artifacts(&self, repo: &RepoName, last: Option<&str>, limit: u32) -> Result<Option<Artifacts>, Error>;

    /// Drops whatever a cache in front of the store holds about a blob whose state changed
    /// behind it (the scrub found it damaged, or sound again). A store without a cache has
    /// nothing to drop.
    fn uncache_blob(&self, _digest: &Digest) {}

    /// Takes or renews the lease `name` for `holder` until `ttl_secs` from now; `false`
    /// if another holder's lease has not expired.
    async fn try_lease(&self, name: &str, holder: &str, ttl_secs: i64) -> Result<bool, Error>;

    /// One page of the manifests in `repo` whose subject is `subject`, optionally of one
    /// artifact type, sorted by digest (`page.last` is a digest).
    async fn referrers(
        &self,
        repo: &RepoName,
        subject: &Digest,
        artifact_type: Option<&str>,
        page: PageSpec<'_>,
    ) -> Result<Referrers, Error>;
}
