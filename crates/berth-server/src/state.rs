//! The registry's state as the HTTP edge holds it: its stores, its authorizer, the
//! services behind it, and per-node upload state. Built once by the binary's wiring
//! (`berth::open`) and shared by every handler.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use berth_access::Authorizer;
use berth_access::authorizer::TokenAuthorizer;
use berth_federation::Federation;
use berth_jobs::Jobs;
use berth_meta::{IdentityStore, MetadataStore, PolicyStore};
use berth_storage::BlobStore;
use tokio::sync::Semaphore;

use crate::{claims, observe};

/// Tunables of the registry core. The defaults are `berth serve`'s.
#[derive(Clone, Debug)]
pub struct RegistryConfig {
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
            busy_wait: Duration::from_secs(10),
            max_open_uploads: 1000,
            body_idle_timeout: Duration::from_secs(60),
            max_uploads: 1024,
            redirect_ttl: None,
        }
    }
}

/// The registry: its stores, its authorizer, the jobs behind it, and per-node upload
/// state.
pub struct Registry {
    pub blobs: Arc<dyn BlobStore>,
    pub meta: Arc<dyn MetadataStore>,
    /// Users, projects, members, robots and signing keys.
    pub identity: Arc<dyn IdentityStore>,
    /// Immutable tag rules and quotas (enforced by `meta`'s own transactions).
    pub policy: Arc<dyn PolicyStore>,
    pub auth: Arc<dyn Authorizer>,
    /// The background jobs' state: the audit log, blob locks, pull times, GC, the scrub
    /// (`berth_jobs`).
    pub jobs: Arc<Jobs>,
    pub config: RegistryConfig,
    /// Uploads a request on this node works on right now.
    pub(crate) claims: Arc<claims::Claims>,
    /// One permit per request carrying upload bytes (`config.max_uploads`).
    pub(crate) uploads: Semaphore,
    /// The token service behind `/token`, when the authorizer is the token authorizer.
    pub tokens: Option<Arc<TokenAuthorizer>>,
    /// Read-only mode: pushes, deletes and management writes are refused (one load per
    /// write request; reads never look): the registry-wide switch as this node last
    /// read it (`system.rs`).
    pub read_only: AtomicBool,
    /// The stored generation of accounts, memberships and projects this node's caches
    /// were last cleared for (`system.rs`).
    pub(crate) access_generation: std::sync::Mutex<String>,
    /// This node's metrics (`observe`); enabled unless configured off.
    pub metrics: Arc<observe::Metrics>,
    /// What `/readyz` and `/metrics` read of the database; `None`: not checked.
    pub ops: Option<Arc<dyn berth_meta::OpsStore>>,
    /// Proxy projects and the mirror (`berth_federation`); `None`: no pull-through cache.
    pub federation: Option<Arc<Federation>>,
}

impl Registry {
    pub fn new(
        blobs: Arc<dyn BlobStore>,
        meta: Arc<dyn MetadataStore>,
        identity: Arc<dyn IdentityStore>,
        policy: Arc<dyn PolicyStore>,
        auth: Arc<dyn Authorizer>,
        jobs: Arc<Jobs>,
        config: RegistryConfig,
    ) -> Registry {
        let uploads = Semaphore::new(config.max_uploads);
        Registry {
            blobs,
            meta,
            identity,
            policy,
            auth,
            jobs,
            config,
            claims: Arc::default(),
            uploads,
            tokens: None,
            read_only: AtomicBool::new(false),
            access_generation: Default::default(),
            metrics: Arc::new(observe::Metrics::new(true)),
            ops: None,
            federation: None,
        }
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

    /// Serves proxy projects and mirror requests through `federation`.
    pub fn with_federation(mut self, federation: Arc<Federation>) -> Registry {
        self.federation = Some(federation);
        self
    }

    /// Authorizes with `tokens` and serves its `/token`.
    pub fn with_token_auth(mut self, tokens: Arc<TokenAuthorizer>) -> Registry {
        self.auth = Arc::clone(&tokens) as Arc<dyn Authorizer>;
        self.tokens = Some(tokens);
        self
    }
}
