//! The webhook store: a project's webhooks, and their deliveries, which are the delivery
//! queue and the delivery log in one table.
//!
//! Deliveries are made by the outbox's fan-out (`OutboxStore::fan_out`), one per event and
//! webhook, with the body rendered then; the dispatcher `claim`s the due ones, sends them,
//! and records each attempt ([`WebhookStore::record_attempt`]), which in the same
//! transaction counts the webhook's failures in a row and disables it at its limit. A
//! webhook's secret and extra header arrive sealed (`berth-federation`'s `seal.rs`).

use async_trait::async_trait;
use berth_core::Error;

use crate::outbox::EventKind;
pub use crate::outbox::NewDelivery;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// Where a project's events are sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Webhook {
    pub project: String,
    /// `[a-z0-9]` and inner `-` (checked by the caller).
    pub name: String,
    pub url: String,
    /// The kinds it receives, sorted.
    pub events: Vec<EventKind>,
    /// `harbor` or `cloudevents` (the caller's to check).
    pub format: String,
    /// The HMAC-SHA256 key, sealed.
    pub sealed_secret: Option<Vec<u8>>,
    /// An extra header (`Name: value`), sealed.
    pub sealed_header: Option<Vec<u8>>,
    pub enabled: bool,
    /// Failed attempts in a row.
    pub failures: u32,
    /// Failed attempts in a row that disable it.
    pub disable_after: u32,
    /// Unix seconds.
    pub created_at: i64,
    pub updated_at: i64,
}

/// Where a delivery is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryState {
    /// Not delivered yet; due at `due_ms`.
    Pending,
    Delivered,
    /// Given up after its attempts.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub(crate) fn parse(s: &str) -> DeliveryState {
        match s {
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            _ => DeliveryState::Pending,
        }
    }
}

/// A delivery, as the log shows it and the dispatcher sends it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub id: i64,
    pub project: String,
    pub webhook: String,
    pub event_id: String,
    pub kind: String,
    pub body: Vec<u8>,
    pub state: DeliveryState,
    pub attempts: u32,
    pub due_ms: i64,
    pub created_ms: i64,
    /// The latest attempt: when it ended, the receiver's status (none if no answer came),
    /// how long it took, and why it failed.
    pub last_ms: Option<i64>,
    pub status_code: Option<u16>,
    pub duration_ms: Option<u64>,
    pub error: Option<String>,
}

/// How one attempt went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub delivery: i64,
    /// Unix milliseconds when it ended.
    pub at_ms: i64,
    pub status_code: Option<u16>,
    pub duration_ms: u64,
    /// `None`: delivered.
    pub error: Option<String>,
    /// When to try again if it failed; `None`: give up.
    pub retry_at_ms: Option<i64>,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Every webhook, sorted by project and name (the dispatcher's view).
    async fn all_webhooks(&self) -> Result<Vec<Webhook>, Error>;

    /// A project's webhooks, sorted by name.
    async fn webhooks(&self, project: &str) -> Result<Vec<Webhook>, Error>;

    /// Creates (`create`; `CONFLICT` if the name is taken, `NOT_FOUND` without the project)
    /// or replaces a webhook (`NOT_FOUND` if there is none), keeping its `created_at`;
    /// replacing it resets its failures.
    async fn put_webhook(&self, webhook: &Webhook, create: bool) -> Result<Webhook, Error>;

    /// Removes a webhook and its deliveries; `false` if there was none.
    async fn delete_webhook(&self, project: &str, name: &str) -> Result<bool, Error>;

    /// Takes up to `limit` pending deliveries due at `now_ms` of enabled webhooks, the
    /// longest due first, none of a webhook that has `per_webhook` claimed already
    /// (`busy` lists the webhooks in flight and how many), and moves each one's due time to
    /// `until_ms`: a node that dies while sending it leaves it due again then.
    async fn claim_deliveries(
        &self,
        now_ms: i64,
        until_ms: i64,
        limit: u32,
        per_webhook: u32,
        busy: &[((String, String), u32)],
    ) -> Result<Vec<Delivery>, Error>;

    /// Records an attempt: delivered, retried at `retry_at_ms`, or given up. Counts the
    /// webhook's failures in a row (a success resets them) and disables it at its limit, in
    /// the same transaction; `true` if this attempt disabled it.
    async fn record_attempt(&self, attempt: &Attempt) -> Result<bool, Error>;

    /// A webhook's deliveries, newest first, before id `before` (exclusive).
    async fn deliveries(
        &self,
        project: &str,
        webhook: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<Delivery>, Error>;

    /// Deletes up to `limit` finished deliveries made before `before_ms`; returns how many.
    async fn prune_deliveries(&self, before_ms: i64, limit: u32) -> Result<u64, Error>;
}
