//! The federation service's state ([`Federation`]: its stores, the upstreams as this
//! node last read them, the blob fetches in flight) and the management of upstreams.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use berth_core::{Error, ErrorKind, RepoName};
use berth_jobs::Jobs;
use berth_meta::{FederationStore, Upstream};

use crate::client::{Timeouts, UpstreamClient};
use crate::seal::SealKey;
use crate::upstreams::{UpstreamSpec, UpstreamView};

/// How often each node re-reads the upstreams.
pub const REFRESH: Duration = Duration::from_secs(5);

/// An upstream as routing sees it: its record (the password sealed) and its client.
pub(crate) struct Proxy {
    pub(crate) upstream: Upstream,
    pub(crate) client: UpstreamClient,
}

/// The upstreams as this node last read them.
#[derive(Default)]
pub(crate) struct Snapshot {
    pub(crate) by_project: HashMap<String, Arc<Proxy>>,
    pub(crate) by_host: HashMap<String, Arc<Proxy>>,
    pub(crate) default: Option<Arc<Proxy>>,
}

/// One blob being fetched on this node (`cache.rs`): its outcome, once known.
pub(crate) struct Flight {
    pub(crate) done: tokio::sync::watch::Sender<Option<Result<(), Error>>>,
}

/// The federation service: routing, the cache, and managing upstreams.
pub struct Federation {
    pub(crate) store: Arc<dyn FederationStore>,
    pub(crate) jobs: Arc<Jobs>,
    key: Option<SealKey>,
    timeouts: Timeouts,
    snapshot: RwLock<Arc<Snapshot>>,
    /// Blobs being fetched from an upstream on this node, by digest (`cache.rs`).
    pub(crate) flights: Mutex<HashMap<berth_core::Digest, Arc<Flight>>>,
    /// Whether repositories exist here, as last found (`route.rs`).
    pub(crate) exists: RwLock<HashMap<RepoName, (bool, std::time::Instant)>>,
    /// The webhooks and the outbox's dispatcher ([`Federation::with_webhooks`]).
    pub webhooks: Option<Arc<crate::Webhooks>>,
    /// Replication to other registries ([`Federation::with_replication`]).
    pub replication: Option<Arc<crate::replication::Replication>>,
}

impl Federation {
    /// `key` seals and opens upstream passwords; without one, an upstream with a password
    /// is refused.
    pub fn new(
        store: Arc<dyn FederationStore>,
        jobs: Arc<Jobs>,
        key: Option<SealKey>,
        timeouts: Timeouts,
    ) -> Federation {
        Federation {
            store,
            jobs,
            key,
            timeouts,
            snapshot: RwLock::default(),
            flights: Mutex::default(),
            exists: RwLock::default(),
            webhooks: None,
            replication: None,
        }
    }

    /// Replicates with `replication`.
    pub fn with_replication(mut self, replication: Arc<crate::replication::Replication>) -> Federation {
        self.replication = Some(replication);
        self
    }

    /// Delivers webhooks (and empties the outbox) with `webhooks`.
    pub fn with_webhooks(mut self, webhooks: Arc<crate::Webhooks>) -> Federation {
        self.webhooks = Some(webhooks);
        self
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot.read().unwrap())
    }

    /// Re-reads the upstreams. An upstream whose client cannot be built (its password
    /// does not open with this node's key) is left out, and the reason logged.
    pub async fn refresh(&self) -> Result<(), Error> {
        let mut snapshot = Snapshot::default();
        for upstream in self.store.upstreams().await? {
            let credentials = match (&upstream.username, &upstream.sealed_password) {
                (Some(user), Some(sealed)) => match self.open(&upstream.name, sealed) {
                    Ok(password) => Some((user.clone(), password)),
                    Err(e) => {
                        tracing::error!(upstream = %upstream.name, error = %e.message(), "upstream left out");
                        continue;
                    }
                },
                (Some(user), None) => Some((user.clone(), String::new())),
                _ => None,
            };
            let client = match UpstreamClient::new(
                &upstream.name,
                &upstream.url,
                upstream.ca_pem.as_deref(),
                credentials,
                self.timeouts,
            ) {
                Ok(client) => client,
                Err(e) => {
                    tracing::error!(upstream = %upstream.name, error = %e.message(), "upstream left out");
                    continue;
                }
            };
            let proxy = Arc::new(Proxy { upstream, client });
            for host in &proxy.upstream.hosts {
                snapshot.by_host.insert(host.to_ascii_lowercase(), Arc::clone(&proxy));
            }
            if proxy.upstream.is_default {
                snapshot.default = Some(Arc::clone(&proxy));
            }
            snapshot.by_project.insert(proxy.upstream.project.clone(), proxy);
        }
        *self.snapshot.write().unwrap() = Arc::new(snapshot);
        Ok(())
    }

    /// Refreshes every [`REFRESH`] until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(REFRESH) => {}
            }
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "reading the upstreams failed; keeping the ones read before");
            }
        }
    }

    fn open(&self, name: &str, sealed: &[u8]) -> Result<String, Error> {
        match &self.key {
            Some(key) => key.open(name, sealed),
            None => Err(Error::internal(format!(
                "upstream {name} has a stored password but no federation key is configured (federation.key_file)"
            ))),
        }
    }

    /// Every upstream, as the API shows them.
    pub async fn upstreams(&self) -> Result<Vec<UpstreamView>, Error> {
        Ok(self.store.upstreams().await?.iter().map(UpstreamView::from).collect())
    }

    /// Creates (`create`) or replaces an upstream.
    pub async fn put_upstream(&self, spec: UpstreamSpec, create: bool) -> Result<UpstreamView, Error> {
        let stored = self.store.upstreams().await?.into_iter().find(|u| u.name == spec.name);
        let key = self.key.as_ref();
        let upstream = spec.into_upstream(stored.as_ref(), |name, password| match key {
            Some(key) => Ok(key.seal(name, password)),
            None => Err(Error::new(ErrorKind::BadRequest).with_message(
                "no federation key is configured (federation.key_file), so Berth cannot store a password",
            )),
        })?;
        let stored = self.store.put_upstream(&upstream, create).await?;
        self.refresh().await?;
        Ok(UpstreamView::from(&stored))
    }

    /// Removes an upstream; `false` if there was none.
    pub async fn delete_upstream(&self, name: &str) -> Result<bool, Error> {
        let deleted = self.store.delete_upstream(name).await?;
        self.refresh().await?;
        Ok(deleted)
    }

    /// Refuses a write (a push, an upload) into a proxy project's repository: its content
    /// comes from its upstream.
    pub fn check_writable(&self, repo: &RepoName) -> Result<(), Error> {
        match self.proxy(repo) {
            Some(via) => Err(Error::new(ErrorKind::Denied).with_message(format!(
                "{} is a proxy project caching upstream {} ({}): push to the upstream instead",
                via.proxy.upstream.project, via.proxy.upstream.name, via.proxy.upstream.url
            ))),
            None => Ok(()),
        }
    }
}
