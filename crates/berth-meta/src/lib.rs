//! The metadata store: the registry's single source of truth.
//!
//! Repositories, which blobs each may read, manifests with their references, tags and
//! upload sessions live here. A blob is visible to a repository only once a row here
//! says so; every registry operation is one transaction. This crate knows nothing of
//! HTTP or of where blob bytes are kept.
//!
//! # The stores
//!
//! `MetadataStore` trait; `SqliteStore` and `PgStore`, one SQL implementation for both
//! (`sql.rs`, the `sql_store!` macro: `$N` placeholders work in both dialects);
//! `CachedStore`, a read cache for the embedded store, bounded in bytes by `clock.rs`.
//! Migrations live in `migrations/<dialect>/` and are embedded (`0002_bounds.sql`: the
//! referrers index, and `upload_locks`, one row per repository that PostgreSQL locks to
//! serialise `create_upload`'s count-and-insert); referrers are read a page at a time
//! (cursor, count and byte bounds); `create_upload` refuses past the per-repository limit
//! in the transaction that inserts; `suite.rs` is the shared behaviour test, run
//! against SQLite, cached SQLite and a real PostgreSQL.
//!
//! # Invariants
//!
//! Every registry operation is one transaction. A manifest put
//! checks, in the transaction that inserts it, that each blob it names is `live` and linked
//! to the repository and each child manifest exists there. The blob table arbitrates
//! dedupe: the first key recorded for a digest wins and `link_blob` returns it. An upload
//! advances only from the size it was read at (`advance_upload ... WHERE size = $from`),
//! with the SHA-256 state over exactly the acknowledged bytes. SQLite runs in WAL mode with
//! a single writer connection (no lock-upgrade `SQLITE_BUSY`) and group commit: the writer
//! commits with `synchronous = NORMAL`, and every write that acknowledges something (blob
//! link, manifest, tag, delete) returns only after an fsync of the WAL that started after
//! its commit, one fsync shared by every request that arrived meanwhile (`WalSync`).
//! Upload progress is atomic but not fsynced on its own (see the trait's docs).
//! **A write answers only after its commit is known to have succeeded** (issue 17, the full
//! disk): a statement that writes and reads rows back (`… RETURNING`) runs in a transaction
//! whose `COMMIT` is checked, never alone on the pool, where SQLite commits at the
//! statement's reset and sqlx's `fetch_one` ignores what the reset reports (a source test,
//! `db_error.rs`, keeps it so); and the writer connection is checked each time it returns to
//! its pool (`out_of_transaction` in `sqlite.rs`): one that SQLite or sqlx still counts inside
//! a transaction (a failed write's rollback can leave sqlx's count behind, and the next
//! "transaction" would then be a savepoint inside one that never commits) is closed and
//! replaced. With the disk full a write is `507 insufficient storage` (`SQLITE_FULL`,
//! PostgreSQL's `disk_full`), and works again once space is freed (`tests/it/disk_full.rs`).
//! Manifest bytes are kept in the database, not the blob store: they are small (≤ 4 MiB),
//! read on every pull, and must appear atomically with their references and tags.
//! `CachedStore` invalidates after each write it passes through and never inserts a value
//! read concurrently with a write (a generation counter); it is only used when one process
//! owns the database. It is bounded by bytes, keys included (`--manifest-cache-bytes`),
//! evicting by CLOCK; a manifest's bytes are held once per repository and digest, and a
//! tag entry holds only its digest.
//!
//! Garbage collection (issue 10) has its own store, `gc/` (`GcStore`: due candidates,
//! decisions, removals, run records; `gc/sql.rs`, the `gc_store!` macro, and the `queue_*`
//! statements; `gc/suite.rs` run on SQLite, cached SQLite and PostgreSQL). Migration
//! `0004_gc.sql`: the review queues `gc_blob_review` and `gc_manifest_review` (a candidate
//! and when it was queued: it is due once older than the grace period, a GC setting, so the
//! write path needs none), `gc_runs`, and the indexes GC reads by. `CachedStore` implements
//! `GcStore` too, so what GC removes leaves the cache.
//!
//! # GC queues
//!
//!  every write that can make content unreferenced
//! queues its candidates in its own transaction: `link_blob` (an upload or mount: maybe
//! never referenced), `unlink_blob`, `put_manifest` (the manifest a moved tag leaves, and a
//! manifest pushed without a tag), `delete_tag` (the manifest it named), `delete_manifest`
//! (the blobs and child manifests it referenced, and its referrers). Queueing again moves
//! the candidate's time forward (its grace restarts). A tag's row is inserted or locked
//! (`put_manifest`), or deleted (`delete_tag`), before the manifest it named is read and
//! queued: of two writers moving one tag at once, the second reads the first's outcome
//! (PostgreSQL reads committed rows), so the manifest each displaces is queued, and both
//! take the tag row before the review row, as `delete_manifest` does. A link a quota
//! refuses still records the blob (unlinked) and queues it: its bytes were stored before
//! the refusal, and go with the next run instead of waiting for a full sweep.
//!
//! Beside `MetadataStore`, in the same database but behind traits of their own (the registry
//! trait does not grow): `identity/` (`IdentityStore`: users, projects, members, robots
//! with their grants, token-signing keys; every listing is paged in the database by name,
//! a page of robots selecting the names first and then all their grants) and `audit/` (`AuditStore`: append a batch, query
//! with filters and pages, prune). Each has one SQL implementation for both dialects
//! (`identity/sql.rs`, the `identity_store!` macro; `audit/sql.rs`, `audit_store!`) and a
//! shared suite (`identity/suite.rs`, `audit/suite.rs`) run on SQLite and a real
//! PostgreSQL. `retention/` (`RetentionStore`, migration `0006_retention.sql`): last-pulled
//! times per manifest (`manifest_pulls`) and per tag (`tag_pulls`), upserted in batches that
//! keep the later time, in tables of their own so a flush never locks the rows pushes and
//! pulls use; each project's retention policy as JSON; and the view of a repository a
//! retention run decides on (tags with push and pull times, top-level manifests). It deletes
//! nothing of the registry's: runs delete through `MetadataStore`. Migration `0003_identity.sql` creates their tables and the public `library`
//! project. A robot's grants are a child table, one row per project with its permissions
//! comma-joined, read with the robot in one statement. `SqliteStore` and `PgStore` are
//! `Clone` (the clones share the pools): `berth::open` hands one database to the read cache
//! and, uncached, to the identity and audit stores.
//!
//! `policy/` (`PolicyStore`, issue 10) manages a project's immutable tag rules and its quota
//! (`policy/sql.rs`, `policy_store!`; `policy/suite.rs` on SQLite and PostgreSQL); migration
//! `0005_policies.sql` creates their tables. Enforcement is not the policy store's: the
//! registry operations check, in their own transactions (`policy_checks!`, called from
//! `sql_store!`), that a tag matching a rule (a glob, `berth_core::glob`: `*` any run, `?`
//! one character) is not moved to another digest (the tag row is inserted or locked first,
//! then compared, so two racing pushes cannot both win) nor deleted, alone or with its
//! manifest, and that a blob new to a project keeps it within its quota (the project's
//! usage row is locked first, as the triggers do, so concurrent links in one project are
//! serialised on PostgreSQL). Usage counts a blob once per project (`project_blobs` with a
//! reference count, `project_usage` the sum), kept by triggers on `repo_blobs` in each
//! dialect's migration, so any code that links or unlinks (pushes, mounts, blob deletes,
//! garbage collection) keeps it exact without code of its own. Manifest bytes are not
//! counted. A manifest put into a project already over its (lowered) quota is refused;
//! lowering a quota deletes nothing. Refusals are `DENIED` naming the rule, or giving the
//! usage and the limit, and are audited with that message as the detail (`manifest.push`,
//! `tag.delete`, `manifest.delete`, and `blob.push`, which is audited only when refused).
//!
//! `scrub/` (`ScrubStore`) holds the integrity scrub's runs (`scrub_runs`, counters updated
//! as a run goes), what each found (`scrub_findings`) and the blobs damaged now
//! (`blob_damage`). A damaged blob is not live: `repo_blob`, `blob`, `repos_with_blob` and a
//! manifest put's check skip it (a `NOT EXISTS` probe into that small table's primary key;
//! in embedded mode the read cache answers pulls anyway, and the scrub drops the blob's
//! entry with `MetadataStore::forget_blob`). A `GET`/`HEAD` of a damaged blob answers 404
//! `BLOB_UNKNOWN`, not a 500: a client pushing an image that needs it then uploads it again
//! instead of trusting it, and a puller gets a clear "unknown" instead of bytes that fail its
//! digest check. The scrub then removes the bad bytes, so that a push of the right bytes
//! stores them afresh: `link_blob` takes their key and the blob is live again (a later run
//! that finds bytes restored by hand sound does the same).
//!
//! # Identity and audit
//!
//! Secrets are stored only as hashes
//! (`password_hash`, `secret_hash`), except the signing keys' private halves, which every
//! node must sign with. Creating a name that exists is `CONFLICT`, changing one that does
//! not is `NOT_FOUND` (unique and foreign-key violations, mapped in `identity/sql.rs`).
//! At most one signing key signs: rotation retires the others in its transaction, serialised
//! on PostgreSQL by a locked row (`identity_locks`), and a partial unique index backs it;
//! revoking a key deletes it, and only a retired one (the key that signs is never deleted).
//! `delete_project` refuses while a repository of the project exists (`PROJECT/…`, and for
//! `library` the one-component names), checked in its transaction; it takes the project's
//! members and its own robots (`robot$PROJECT+…`) with it. The audit log is append-only:
//! rows are only inserted (a batch per transaction, ids increasing) and deleted by the
//! pruning job, oldest first.
//!
//! `ops/` (`OpsStore`) is what an operator watches in the database, never on a request's
//! path: `check_ready` (a query, and every migration this build knows applied),
//! `pool_usage` (the sqlx pools, no query) and `storage_by_project` (one scan of
//! `repo_blobs` ⋈ `blobs`, a blob counted once per project; the project is a repository
//! name's first component, `library` for one-component names); and the registry-wide
//! settings an administrator switches at run time (`setting`/`set_setting`, table
//! `settings`, migration `0009_settings.sql`: read-only mode). One SQL implementation
//! (`ops/sql.rs`, `ops_store!`, the dialect's project expression passed in) and a shared
//! suite on SQLite and PostgreSQL.
//!
//! `replication/` (`ReplicationStore`, migration `0013_replication.sql`) keeps replication's
//! state: the remote registries (a password sealed), the rules (a registry in use is not
//! deleted), and each rule's executions, made of one task per artifact. Tasks are claimed
//! oldest first by moving their due time to when the claim ends (`FOR UPDATE SKIP LOCKED` on
//! PostgreSQL: two nodes never take one task), and a result updates its task and its
//! execution's counts in one transaction, the last one finishing it; a result for a task
//! already final counts nothing. Event-triggered executions are started in the outbox's
//! fan-out transaction (`insert_execution!`, the statements `start_execution` runs too).
//! One SQL implementation (`replication/sql.rs`, `replication_store!`) and a shared suite on
//! SQLite and PostgreSQL, with two claims, and two last results, at once.

use async_trait::async_trait;
use berth_core::{Descriptor, Digest, Error, ParsedManifest, Reference, RepoName, Tag};
use bytes::Bytes;

pub mod audit;
mod cache;
mod clock;
mod column;
mod db_error;
pub mod federation;
pub mod gc;
pub mod identity;
pub mod ops;
pub mod outbox;
pub mod policy;
mod postgres;
mod projects;
pub mod replication;
pub mod retention;
pub mod scrub;
mod sql;
mod sqlite;
#[cfg(test)]
mod suite;
pub mod webhooks;

pub use audit::{AuditEvent, AuditQuery, AuditRecord, AuditStore};
pub use cache::{CachedStore, DEFAULT_CACHE_BYTES};
pub use federation::{FederationStore, Upstream};
pub use gc::{GarbageBlob, GarbageManifest, GcKind, GcRun, GcStore};
pub use identity::{IdentityStore, Member, Project, Robot, RobotGrant, RobotUpdate, SigningKey, User, UserUpdate};
pub use ops::{OpsStore, PoolUsage};
pub use outbox::{EventKind, NewEvent, OutboxEvent, OutboxStore};
pub use policy::{ImmutableRule, PolicyStore, Quota};
pub use postgres::{PgStore, PoolConfig};
pub use projects::project_repositories;
pub use replication::{
    Direction, Execution, ExecutionState, NewTask, ReplicationRegistry, ReplicationRule, ReplicationStore, Task,
    TaskOp, TaskResult, TaskState, Trigger,
};
pub use retention::{Pull, RepoState, RetentionStore, TagState, TopManifest};
pub use scrub::{Finding, ScrubRun, ScrubStore, StoredBlob};
pub use sqlite::SqliteStore;
pub use webhooks::{Attempt, Delivery, DeliveryState, NewDelivery, Webhook, WebhookStore};

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

    /// Stores a manifest a proxy project fetched from its upstream: as `put_manifest`,
    /// except that the blobs and child manifests it names need not be cached yet (each is
    /// fetched from the upstream when first pulled). Its references are recorded all the
    /// same, so garbage collection keeps what it names once that arrives.
    async fn cache_manifest(&self, manifest: NewManifest<'_>) -> Result<(), Error>;

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
