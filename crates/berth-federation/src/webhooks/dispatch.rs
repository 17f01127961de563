//! The dispatcher: one node at a time (the `outbox` lease), each pass fans the outbox out
//! into deliveries and starts the due ones, up to the concurrency bounds; each delivery
//! runs as a task of its own and records its attempt when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::Error;
use berth_jobs::JobOutcome;
use berth_meta::{Attempt, AuditEvent, Delivery, EventKind, NewDelivery, NewTask, Webhook};
use tokio_util::sync::CancellationToken;

use super::{Webhooks, payload, send, spec};

/// Events read per fan-out transaction.
const FAN_OUT_BATCH: u32 = 500;
/// How long the lease lasts past a pass (renewed each pass, released at a graceful stop):
/// a node that dies holding it delays deliveries by at most this.
const LEASE_SECS: i64 = 10;
/// Finished deliveries pruned per statement, and how often.
const PRUNE_BATCH: u32 = 5000;
const PRUNE_EVERY: Duration = Duration::from_secs(300);

impl Webhooks {
    /// Dispatches until `shutdown` is cancelled (deliveries in flight then are retried by
    /// the next holder of the lease once their claim runs out: at least once).
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut pruned = Instant::now() - PRUNE_EVERY;
        loop {
            // Every node, leader or not, learns which events are wanted: its own pulls and
            // quota refusals are announced only then.
            let pass = match self.store.all_webhooks().await {
                Ok(hooks) => {
                    self.note_interest(&hooks);
                    let lease = self.jobs.meta.try_lease("outbox", &self.jobs.node_id, LEASE_SECS).await;
                    let recorder = &*self.jobs.recorder;
                    berth_jobs::leased_pass(recorder, "outbox", lease, self.pass(&hooks)).await.map(drop)
                }
                Err(e) => Err(e),
            };
            if let Err(e) = pass {
                tracing::warn!(error = %e, "dispatching webhooks failed; trying again");
            } else if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let before = berth_meta::now_ms() - self.config.keep.as_millis() as i64;
                match self.store.prune_deliveries(before, PRUNE_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "webhook delivery log pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning the webhook delivery log failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.config.poll) => {}
                () = self.wake.notified() => {}
            }
        }
        // Deliveries in flight finish (each within its timeout) and record their attempt,
        // so the next holder of the lease neither waits for their claims nor sends them
        // twice; then the lease is let go.
        self.sending.close();
        if tokio::time::timeout(self.config.timeout + Duration::from_secs(1), self.sending.wait()).await.is_err() {
            tracing::warn!("webhook deliveries still in flight at shutdown; they are sent again later");
        }
        if let Err(e) = self.jobs.meta.try_lease("outbox", &self.jobs.node_id, -1).await {
            tracing::warn!(error = %e, "releasing the outbox lease failed; another node takes it when it runs out");
        }
    }

    /// Which events an enabled webhook wants, for the announcements made on this node.
    fn note_interest(&self, hooks: &[Webhook]) {
        let wants = |kind| hooks.iter().any(|w| w.enabled && w.events.contains(&kind));
        self.jobs.pulls.set_announce(wants(EventKind::ArtifactPulled));
        let quota = hooks.iter().filter(|w| w.enabled && w.events.contains(&EventKind::QuotaExceeded));
        *self.quota_wanted.lock().unwrap() = quota.map(|w| w.project.clone()).collect();
    }

    /// One pass with `hooks` (every webhook): every pending event fanned out, then the due
    /// deliveries started.
    pub async fn pass(self: &Arc<Self>, hooks: &[Webhook]) -> Result<(), Error> {
        // The rules as stored now: an event is matched against the rules of its time.
        if let Some(r) = self.replication.get() {
            r.refresh_rules().await?;
        }
        loop {
            let events = self.outbox.pending(FAN_OUT_BATCH).await?;
            if events.is_empty() {
                break;
            }
            let ids: Vec<i64> = events.iter().map(|e| e.id).collect();
            let deliveries: Vec<NewDelivery> =
                events.iter().filter_map(|e| e.event.as_ref()).flat_map(|e| self.deliveries_of(hooks, e)).collect();
            // Replication's tasks join the same transaction: an event is delivered and
            // replicated, or neither is recorded yet.
            let replication = self.replication.get();
            let tasks: Vec<NewTask> = match replication {
                Some(r) => events.iter().filter_map(|e| e.event.as_ref()).flat_map(|e| r.event_tasks(e)).collect(),
                None => Vec::new(),
            };
            let full = events.len() == FAN_OUT_BATCH as usize;
            if !self.outbox.fan_out(&ids, &deliveries, &tasks).await? {
                // Another node holds the lease now.
                return Ok(());
            }
            if let (Some(r), false) = (replication, tasks.is_empty()) {
                r.wake();
            }
            if !full {
                break;
            }
        }
        self.start_due(hooks).await
    }

    fn deliveries_of(&self, hooks: &[Webhook], event: &berth_meta::NewEvent) -> Vec<NewDelivery> {
        let project = event.kind.project_of(&event.repo);
        let id = uuid::Uuid::new_v4().to_string();
        hooks
            .iter()
            .filter(|w| w.enabled && w.project == project && w.events.contains(&event.kind))
            .map(|w| NewDelivery {
                project: w.project.clone(),
                webhook: w.name.clone(),
                event_id: id.clone(),
                kind: event.kind.as_str().to_owned(),
                body: payload::render(&w.format, event, &id, &self.config.origin),
                created_ms: berth_meta::now_ms(),
            })
            .collect()
    }

    /// Claims the due deliveries there is room for and starts each one.
    async fn start_due(self: &Arc<Self>, hooks: &[Webhook]) -> Result<(), Error> {
        let busy: Vec<((String, String), u32)> =
            self.in_flight.lock().unwrap().iter().map(|(k, n)| (k.clone(), *n)).collect();
        let running: u32 = busy.iter().map(|(_, n)| n).sum();
        let room = self.config.concurrency.saturating_sub(running);
        if room == 0 {
            return Ok(());
        }
        let now = berth_meta::now_ms();
        // A node that dies mid-send leaves the delivery due again after this.
        let until = now + (self.config.timeout + Duration::from_secs(30)).as_millis() as i64;
        let claimed = self.store.claim_deliveries(now, until, room, self.config.per_webhook, &busy).await?;
        if claimed.is_empty() {
            return Ok(());
        }
        for delivery in claimed {
            let Some(hook) = hooks.iter().find(|w| w.project == delivery.project && w.name == delivery.webhook) else {
                continue;
            };
            let key = (hook.project.clone(), hook.name.clone());
            *self.in_flight.lock().unwrap().entry(key.clone()).or_default() += 1;
            let (this, hook) = (Arc::clone(self), hook.clone());
            self.sending.spawn(async move {
                this.deliver(&hook, &delivery).await;
                let mut in_flight = this.in_flight.lock().unwrap();
                if let Some(n) = in_flight.get_mut(&key) {
                    *n -= 1;
                    if *n == 0 {
                        in_flight.remove(&key);
                    }
                }
                drop(in_flight);
                this.wake.notify_one();
            });
        }
        Ok(())
    }

    /// Sends one delivery and records the attempt.
    async fn deliver(&self, hook: &Webhook, d: &Delivery) {
        let outcome = match self.secrets(hook) {
            Ok((secret, header)) => {
                let header = header.as_deref().map(spec::header_name).transpose();
                match header {
                    Ok(header) => {
                        let out = send::Outgoing {
                            url: &hook.url,
                            body: &d.body,
                            content_type: payload::content_type(&hook.format),
                            kind: &d.kind,
                            event_id: &d.event_id,
                            delivery: d.id,
                            secret: secret.as_deref(),
                            header,
                        };
                        self.sender.send(&out).await
                    }
                    Err(e) => send::Outcome {
                        status_code: None,
                        duration: Duration::ZERO,
                        error: Some(e.message().to_string()),
                    },
                }
            }
            Err(e) => {
                send::Outcome { status_code: None, duration: Duration::ZERO, error: Some(e.message().to_string()) }
            }
        };
        let outcome_kind = if outcome.error.is_none() { JobOutcome::Ok } else { JobOutcome::Failed };
        self.jobs.recorder.job_run("webhook-delivery", outcome_kind, outcome.duration);
        let attempts = d.attempts + 1;
        let retry_at_ms = match &outcome.error {
            Some(_) if attempts < self.config.max_attempts => {
                Some(berth_meta::now_ms() + self.backoff(attempts).as_millis() as i64)
            }
            _ => None,
        };
        let attempt = Attempt {
            delivery: d.id,
            at_ms: berth_meta::now_ms(),
            status_code: outcome.status_code,
            duration_ms: outcome.duration.as_millis() as u64,
            error: outcome.error.clone(),
            retry_at_ms,
        };
        match self.store.record_attempt(&attempt).await {
            Ok(true) => {
                let last = outcome.error.unwrap_or_default();
                tracing::warn!(project = %hook.project, webhook = %hook.name, error = %last,
                    "webhook disabled after {} failed deliveries in a row", hook.disable_after);
                let event = AuditEvent {
                    at_ms: berth_meta::now_ms(),
                    actor: Some("berth".to_owned()),
                    address: "internal".to_owned(),
                    operation: "webhook.disable".to_owned(),
                    project: Some(hook.project.clone()),
                    resource: Some(hook.name.clone()),
                    outcome: "success".to_owned(),
                    detail: Some(format!("{} failed deliveries in a row; the last: {last}", hook.disable_after)),
                    count: 1,
                };
                self.jobs.audit.record(event).await;
            }
            Ok(false) => {}
            // The claim runs out and the delivery is sent again: at least once.
            Err(e) => tracing::warn!(error = %e, delivery = d.id, "recording a webhook delivery failed"),
        }
    }

    /// The wait after `attempts` failed attempts: `retry_base` doubled each time, at most
    /// `retry_max`, then a random half of it taken off (jitter: retries of many deliveries
    /// that failed together spread out).
    fn backoff(&self, attempts: u32) -> Duration {
        backoff_of(&self.config, attempts)
    }
}

fn backoff_of(config: &super::WebhookConfig, attempts: u32) -> Duration {
    crate::backoff(config.retry_base, config.retry_max, attempts)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let config = super::super::WebhookConfig {
            retry_base: std::time::Duration::from_secs(10),
            retry_max: std::time::Duration::from_secs(60),
            ..Default::default()
        };
        let d = |n: u32| {
            let lo = config.retry_base.saturating_mul(1 << (n - 1)).min(config.retry_max);
            (lo / 2, lo)
        };
        for n in 1..=8 {
            let (lo, hi) = d(n);
            let got = super::backoff_of(&config, n);
            assert!(got >= lo && got <= hi, "attempt {n}: {got:?} not in {lo:?}..={hi:?}");
        }
    }
}
