//! The registry's state as the HTTP edge holds it: its stores, its authorizer, the
//! services behind it, and per-node upload state. Built once by the binary's wiring
//! (`berth::open`) and shared by every handler.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use berth_access::Authorizer;
use berth_access::authorizer::TokenAuthorizer;
use berth_meta::{IdentityStore, MetadataStore, PolicyStore, RetentionStore, ScrubStore};
use berth_storage::BlobStore;
use tokio::sync::Semaphore;

use crate::{audit, claims, lifecycle, observe, retention};

/// Tunables of the registry core. The defaults are `berth serve`'s.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
    /// An upload with no activity for this long is abandoned and its bytes removed.
    pub upload_ttl: Duration,
    /// How long a request waits for another request on the same upload to end before it
    /// is refused (a client retrying after a timeout while its first attempt still runs).
    pub busy_wait: Duration,
    /// Uploads open at once in one repository; a `POST` beyond is refused (429).
    pub max_open_uploads: u32,
    /// A request body that delivers no bytes for this long fails (nginx's
    /// `client_body_timeout` is 60 s too).
    pub body_idle_timeout: Duration,
    /// Requests carrying upload bytes (a monolithic `POST`, `PATCH`, the closing `PUT`)
    /// in flight on this node at once; more are answered 429 with `Retry-After`.
    pub max_uploads: usize,
    /// Blob `GET`s are answered 307 to a presigned URL of the blob store valid this long
    /// (when the store can make one); `None` serves the bytes through Berth.
    pub redirect_ttl: Option<Duration>,
}

impl Default for RegistryConfig {
    fn default() -> RegistryConfig {
        RegistryConfig {
            upload_ttl: Duration::from_secs(24 * 3600),
            busy_wait: Duration::from_secs(10),
            max_open_uploads: 1000,
            body_idle_timeout: Duration::from_secs(60),
            max_uploads: 1024,
            redirect_ttl: None,
        }
    }
}

/// The registry: its stores, its authorizer, and per-node upload state.
pub struct Registry {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    /// Users, projects, members, robots and signing keys.
    pub identity: Arc<dyn IdentityStore>,
    /// Immutable tag rules and quotas (enforced by `meta`'s own transactions).
    pub policy: Arc<dyn PolicyStore>,
    /// The integrity scrub's runs and findings (`scrub.rs`).
    pub scrub: Arc<dyn ScrubStore>,
    pub auth: Arc<dyn Authorizer>,
    /// Where events are recorded (`audit.rs`).
    pub audit: audit::AuditLog,
    pub config: RegistryConfig,
    /// This process's name in leases.
    pub node_id: String,
    /// Uploads a request on this node works on right now.
    pub(crate) claims: Arc<claims::Claims>,
    /// One permit per request carrying upload bytes (`config.max_uploads`).
    pub(crate) uploads: Semaphore,
    /// A scrub run goes on on this node (`scrub.rs`).
    pub(crate) scrubbing: AtomicBool,
    /// The token service behind `/token`, when the authorizer is the token authorizer.
    pub tokens: Option<Arc<TokenAuthorizer>>,
    /// Pull times and retention policies (`retention/`), set by [`Registry::with_retention`].
    pub retention: Option<Arc<dyn RetentionStore>>,
    /// When manifests and tags were last pulled, held until the next flush.
    pub pulls: retention::PullRecorder,
    /// Read-only mode: pushes, deletes and management writes are refused (one load per
    /// write request; reads never look): the registry-wide switch as this node last
    /// read it (`system.rs`).
    pub read_only: AtomicBool,
    /// The stored generation of accounts, memberships and projects this node's caches
    /// were last cleared for (`system.rs`).
    pub(crate) access_generation: std::sync::Mutex<String>,
    /// The garbage collector, when configured (`with_gc`).
    pub gc: Option<lifecycle::gc::Gc>,
    /// Held by an upload's commit-and-link and by GC's removal of the same digest.
    pub blob_locks: lifecycle::BlobLocks,
    /// This node's metrics (`observe`); enabled unless configured off.
    pub metrics: Arc<observe::Metrics>,
    /// What `/readyz` and `/metrics` read of the database; `None`: not checked.
    pub ops: Option<Arc<dyn berth_meta::OpsStore>>,
}

impl Registry {
    // One store per concern, each a trait object handed in by the wiring (`berth::open`,
    // its one caller): a struct of them would only rename this list.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        identity: Arc<dyn IdentityStore>,
        policy: Arc<dyn PolicyStore>,
        scrub: Arc<dyn ScrubStore>,
        auth: Arc<dyn Authorizer>,
        audit: audit::AuditLog,
        config: RegistryConfig,
    ) -> Registry {
        let uploads = Semaphore::new(config.max_uploads);
        Registry {
            blobs,
            meta,
            identity,
            policy,
            scrub,
            auth,
            audit,
            config,
            node_id: uuid::Uuid::new_v4().to_string(),
            claims: Arc::default(),
            uploads,
            scrubbing: Default::default(),
            tokens: None,
            retention: None,
            pulls: retention::PullRecorder::default(),
            read_only: AtomicBool::new(false),
            access_generation: Default::default(),
            gc: None,
            blob_locks: lifecycle::BlobLocks::default(),
            metrics: Arc::new(observe::Metrics::new(true)),
            ops: None,
        }
    }

    /// Collects garbage with `gc` (scheduled by `lifecycle::gc::Collector`, on demand
    /// through the management API).
    pub fn with_gc(mut self, gc: lifecycle::gc::Gc) -> Registry {
        self.gc = Some(gc);
        self
    }

    /// Keeps pull times and retention policies in `store`.
    pub fn with_retention(mut self, store: Arc<dyn RetentionStore>) -> Registry {
        self.retention = Some(store);
        self
    }

    /// Records into `metrics` (the ones the stores were wrapped with, see
    /// [`observe::stores::Timed`]) and checks the database's readiness with `ops`.
    pub fn with_observability(
        mut self,
        metrics: Arc<observe::Metrics>,
        ops: Arc<dyn berth_meta::OpsStore>,
    ) -> Registry {
        self.metrics = metrics;
        self.ops = Some(ops);
        self
    }

    /// Requests carrying upload bytes running now (the upload permits taken).
    pub fn uploads_in_progress(&self) -> usize {
        self.config.max_uploads.saturating_sub(self.uploads.available_permits())
    }

    /// Authorizes with `tokens` and serves its `/token`.
    pub fn with_token_auth(mut self, tokens: Arc<TokenAuthorizer>) -> Registry {
        self.auth = Arc::clone(&tokens) as Arc<dyn Authorizer>;
        self.tokens = Some(tokens);
        self
    }
}
