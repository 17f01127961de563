//! Webhooks: a project's events sent to the receivers its managers name, at least once,
//! without slowing the pushes and pulls they tell of.
//!
//! A change writes its event into the outbox in its own transaction (`berth_meta::outbox`).
//! The dispatcher ([`dispatch`]), one node at a time under the `outbox` lease, fans each
//! event out into a delivery per webhook that wants it (its body rendered then,
//! [`payload`], with an event id that stays the same across retries) and sends the due
//! deliveries with bounded concurrency, overall and per webhook, each within a timeout
//! ([`send`]). A failed attempt is retried with exponential backoff and jitter until its
//! attempts run out; failures in a row disable the webhook at its limit (an audit entry
//! says so) and its deliveries wait until it is enabled again. Nothing of this runs on a
//! request's path: a hung receiver holds a delivery slot, never a push.
//!
//! Managing webhooks ([`Webhooks`], with [`spec`]): a project's managers, through the
//! management API; the secret and the extra header are sealed with the federation key
//! and never shown again.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Error, ErrorKind};
use berth_jobs::Jobs;
use berth_meta::{EventKind, NewEvent, OutboxStore, Webhook, WebhookStore};
use tokio::sync::Notify;

use crate::seal::SealKey;

mod dispatch;
pub mod payload;
pub mod send;
pub mod spec;

pub use payload::Origin;
pub use send::{Outcome, Sender};
pub use spec::{DeliveryView, WebhookSpec, WebhookView};

/// How webhooks are delivered (`[webhooks]` in the configuration).
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    /// Receivers at loopback, private and link-local addresses may be reached.
    pub allow_private: bool,
    /// For one attempt, connecting included.
    pub timeout: Duration,
    /// Attempts of one delivery before it is given up.
    pub max_attempts: u32,
    /// The wait after the first failed attempt; it doubles with each one, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// Deliveries in flight at once, and of one webhook.
    pub concurrency: u32,
    pub per_webhook: u32,
    /// How often the dispatcher looks at the outbox.
    pub poll: Duration,
    /// How long finished deliveries stay in the log.
    pub keep: Duration,
    /// The registry's external host, for the payloads.
    pub origin: Origin,
}

impl Default for WebhookConfig {
    fn default() -> WebhookConfig {
        WebhookConfig {
            allow_private: false,
            timeout: Duration::from_secs(10),
            max_attempts: 10,
            retry_base: Duration::from_secs(10),
            retry_max: Duration::from_secs(3600),
            concurrency: 16,
            per_webhook: 2,
            poll: Duration::from_secs(1),
            keep: Duration::from_secs(14 * 24 * 3600),
            origin: Origin::default(),
        }
    }
}

/// The webhook service: managing a project's webhooks, and their dispatcher.
pub struct Webhooks {
    pub(crate) store: Arc<dyn WebhookStore>,
    pub(crate) outbox: Arc<dyn OutboxStore>,
    pub(crate) jobs: Arc<Jobs>,
    key: Option<SealKey>,
    pub(crate) sender: Sender,
    pub(crate) config: WebhookConfig,
    /// Deliveries being sent from this node, by webhook.
    pub(crate) in_flight: Mutex<HashMap<(String, String), u32>>,
    /// Wakes the dispatcher (a delivery finished, a test asked for a pass).
    pub(crate) wake: Notify,
    /// The deliveries being sent, waited for at shutdown.
    pub(crate) sending: tokio_util::task::TaskTracker,
    /// Projects with an enabled webhook for `quota.exceeded` (as of the last pass).
    pub(crate) quota_wanted: Mutex<HashSet<String>>,
    /// When this node last announced a project's quota refusal.
    quota_announced: Mutex<HashMap<String, Instant>>,
    /// Replication, whose rules turn events into tasks in the fan-out's transaction.
    pub(crate) replication: std::sync::OnceLock<Arc<crate::replication::Replication>>,
}

/// A project's quota refusals are announced at most once in this time per node: a client
/// retrying a refused push costs no write per retry.
pub const QUOTA_EVENT_EVERY: Duration = Duration::from_secs(60);

/// What a test delivery found.
#[derive(Clone, Debug, serde::Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct TestOutcome {
    pub delivered: bool,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
}

impl Webhooks {
    pub fn new(
        store: Arc<dyn WebhookStore>,
        outbox: Arc<dyn OutboxStore>,
        jobs: Arc<Jobs>,
        key: Option<SealKey>,
        config: WebhookConfig,
    ) -> Result<Webhooks, Error> {
        let sender = Sender::new(config.timeout, config.allow_private)?;
        Ok(Webhooks {
            store,
            outbox,
            jobs,
            key,
            sender,
            config,
            in_flight: Mutex::default(),
            wake: Notify::new(),
            sending: tokio_util::task::TaskTracker::new(),
            quota_wanted: Mutex::default(),
            quota_announced: Mutex::default(),
            replication: std::sync::OnceLock::new(),
        })
    }

    /// Fans events out into `replication`'s tasks too.
    pub fn with_replication(self, replication: Arc<crate::replication::Replication>) -> Webhooks {
        let _ = self.replication.set(replication);
        self
    }

    /// Announces that a push into `repo` was refused for `project`'s quota (`message`
    /// says by how much), if a webhook of the project wants to know and this node has not
    /// said so within [`QUOTA_EVENT_EVERY`]. The refused change wrote nothing, so this is
    /// an outbox write of its own, after the refusal.
    pub async fn quota_exceeded(&self, project: &str, repo: &str, message: &str) {
        if !self.quota_wanted.lock().unwrap().contains(project) {
            return;
        }
        {
            let mut announced = self.quota_announced.lock().unwrap();
            let now = Instant::now();
            if announced.get(project).is_some_and(|at| now.duration_since(*at) < QUOTA_EVENT_EVERY) {
                return;
            }
            announced.retain(|_, at| now.duration_since(*at) < QUOTA_EVENT_EVERY);
            announced.insert(project.to_owned(), now);
        }
        let event = NewEvent {
            kind: EventKind::QuotaExceeded,
            repo: repo.to_owned(),
            digest: None,
            media_type: None,
            tags: Vec::new(),
            size: None,
            detail: Some(message.to_owned()),
            at_ms: berth_meta::now_ms(),
        };
        match self.outbox.append(&[event]).await {
            Ok(()) => self.wake.notify_one(),
            Err(e) => tracing::warn!(error = %e, project, "announcing a quota refusal failed"),
        }
    }

    /// A project's webhooks, as the API shows them.
    pub async fn list(&self, project: &str) -> Result<Vec<WebhookView>, Error> {
        let hooks = self.store.webhooks(project).await?;
        hooks.iter().map(|w| self.view(w)).collect()
    }

    pub async fn get(&self, project: &str, name: &str) -> Result<WebhookView, Error> {
        self.view(&self.stored(project, name).await?)
    }

    /// Creates (`create`) or replaces a webhook of `project`.
    pub async fn put(&self, project: &str, spec: WebhookSpec, create: bool) -> Result<WebhookView, Error> {
        let stored = self.store.webhooks(project).await?.into_iter().find(|w| w.name == spec.name);
        let key = self.key.as_ref();
        let webhook = spec.into_webhook(
            project,
            stored.as_ref(),
            |url| self.sender.check_url(url),
            |name, value| match key {
                Some(key) => Ok(key.seal(name, value)),
                None => Err(Error::new(ErrorKind::BadRequest).with_message(
                    "no federation key is configured (federation.key_file), so Berth cannot store a webhook's secret",
                )),
            },
        )?;
        let stored = self.store.put_webhook(&webhook, create).await?;
        self.wake.notify_one();
        self.view(&stored)
    }

    /// Removes a webhook and its log; `false` if there was none.
    pub async fn delete(&self, project: &str, name: &str) -> Result<bool, Error> {
        self.store.delete_webhook(project, name).await
    }

    /// A page of a webhook's log, newest first, before delivery `before`.
    pub async fn deliveries(
        &self,
        project: &str,
        name: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryView>, Error> {
        self.stored(project, name).await?;
        let page = self.store.deliveries(project, name, before, limit).await?;
        Ok(page.into_iter().map(DeliveryView::from).collect())
    }

    /// Sends a `ping` event to the webhook now and says how it went (not retried, not
    /// counted against it, not in its log).
    pub async fn test(&self, project: &str, name: &str) -> Result<TestOutcome, Error> {
        let webhook = self.stored(project, name).await?;
        let id = uuid::Uuid::new_v4().to_string();
        let body = payload::render_ping(&webhook.format, project, name, &id, &self.config.origin);
        let (secret, header) = self.secrets(&webhook)?;
        let outcome = self
            .sender
            .send(&send::Outgoing {
                url: &webhook.url,
                body: &body,
                content_type: payload::content_type(&webhook.format),
                kind: "ping",
                event_id: &id,
                delivery: 0,
                secret: secret.as_deref(),
                header: header.as_deref().map(spec::header_name).transpose()?,
            })
            .await;
        Ok(TestOutcome {
            delivered: outcome.error.is_none(),
            status_code: outcome.status_code,
            duration_ms: outcome.duration.as_millis() as u64,
            error: outcome.error,
        })
    }

    async fn stored(&self, project: &str, name: &str) -> Result<Webhook, Error> {
        let hooks = self.store.webhooks(project).await?;
        hooks.into_iter().find(|w| w.name == name).ok_or_else(|| {
            Error::new(ErrorKind::ResourceUnknown).with_message(format!("no webhook {name} in project {project}"))
        })
    }

    /// The webhook's secret and extra header, opened.
    pub(crate) fn secrets(&self, w: &Webhook) -> Result<(Option<String>, Option<String>), Error> {
        let open = |sealed: &Option<Vec<u8>>, what: &str| -> Result<Option<String>, Error> {
            let Some(sealed) = sealed else { return Ok(None) };
            let key = self.key.as_ref().ok_or_else(|| {
                Error::internal(format!(
                    "webhook {}/{} has a stored {what} but no federation key is configured (federation.key_file)",
                    w.project, w.name
                ))
            })?;
            key.open(&format!("webhook {}/{} {what}", w.project, w.name), sealed).map(Some).map_err(|_| {
                Error::internal(format!(
                    "the stored {what} of webhook {}/{} does not open with this federation key",
                    w.project, w.name
                ))
            })
        };
        Ok((open(&w.sealed_secret, "secret")?, open(&w.sealed_header, "header")?))
    }

    fn view(&self, w: &Webhook) -> Result<WebhookView, Error> {
        let header_name = match self.secrets(w) {
            Ok((_, Some(h))) => spec::header_name(&h).ok().map(|(n, _)| n.to_owned()),
            _ => w.sealed_header.as_ref().map(|_| "(sealed)".to_owned()),
        };
        Ok(WebhookView {
            project: w.project.clone(),
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.iter().map(|e| e.as_str().to_owned()).collect(),
            format: w.format.clone(),
            has_secret: w.sealed_secret.is_some(),
            auth_header_name: header_name,
            enabled: w.enabled,
            failures: w.failures,
            disable_after: w.disable_after,
            created_at: w.created_at,
            updated_at: w.updated_at,
        })
    }
}
