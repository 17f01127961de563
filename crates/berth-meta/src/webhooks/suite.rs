//! The behaviour every [`WebhookStore`] backend must show; each backend's tests call [`run`]
//! with the same database as an [`OutboxStore`](crate::OutboxStore) (whose fan-out makes
//! deliveries).

use berth_core::ErrorKind;

use super::{Attempt, DeliveryState, NewDelivery, WebhookStore};
use crate::outbox::suite_webhook as webhook;
use crate::{IdentityStore, OutboxStore};

pub async fn run(hooks: &dyn WebhookStore, outbox: &dyn OutboxStore, identity: &dyn IdentityStore) {
    identity.create_project("hooks-a", false).await.unwrap();
    identity.create_project("hooks-b", false).await.unwrap();
    webhooks_round_trip(hooks).await;
    deliveries_are_claimed_fairly_and_attempts_disable_at_the_limit(hooks, outbox).await;
}

async fn webhooks_round_trip(hooks: &dyn WebhookStore) {
    let made = hooks.put_webhook(&webhook("hooks-a", "ci"), true).await.unwrap();
    assert!(made.created_at > 0 && made.updated_at == made.created_at);
    assert_eq!(
        made,
        super::Webhook { created_at: made.created_at, updated_at: made.updated_at, ..webhook("hooks-a", "ci") }
    );
    let err = hooks.put_webhook(&webhook("hooks-a", "ci"), true).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Conflict);
    let err = hooks.put_webhook(&webhook("hooks-nope", "ci"), true).await.unwrap_err();
    assert_eq!((err.kind, err.message()), (ErrorKind::ResourceUnknown, "no project hooks-nope"));
    let err = hooks.put_webhook(&webhook("hooks-a", "other"), false).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ResourceUnknown);
    hooks.put_webhook(&webhook("hooks-b", "audit"), true).await.unwrap();
    let changed =
        super::Webhook { url: "https://elsewhere.example/".into(), sealed_secret: None, ..webhook("hooks-a", "ci") };
    let replaced = hooks.put_webhook(&changed, false).await.unwrap();
    assert_eq!(
        (replaced.created_at, replaced.url.as_str(), replaced.sealed_secret.clone()),
        (made.created_at, "https://elsewhere.example/", None)
    );
    assert_eq!(hooks.webhooks("hooks-a").await.unwrap(), [replaced]);
    let all: Vec<(String, String)> =
        hooks.all_webhooks().await.unwrap().into_iter().map(|w| (w.project, w.name)).collect();
    assert!(all.contains(&("hooks-a".into(), "ci".into())) && all.contains(&("hooks-b".into(), "audit".into())));
    assert!(hooks.delete_webhook("hooks-b", "audit").await.unwrap());
    assert!(!hooks.delete_webhook("hooks-b", "audit").await.unwrap());
}

async fn deliveries_are_claimed_fairly_and_attempts_disable_at_the_limit(
    hooks: &dyn WebhookStore,
    outbox: &dyn OutboxStore,
) {
    hooks.put_webhook(&webhook("hooks-a", "slow"), true).await.unwrap();
    hooks.put_webhook(&webhook("hooks-b", "fast"), true).await.unwrap();
    let delivery = |project: &str, hook: &str, n: u32| NewDelivery {
        project: project.into(),
        webhook: hook.into(),
        event_id: format!("{hook}-{n}"),
        kind: "artifact.pushed".into(),
        body: format!("{{\"n\":{n}}}").into_bytes(),
        created_ms: 1000 + i64::from(n),
    };
    // A backlog of one webhook, then one delivery of another.
    let mut made: Vec<NewDelivery> = (0..5).map(|n| delivery("hooks-a", "slow", n)).collect();
    made.push(delivery("hooks-b", "fast", 9));
    assert!(outbox.fan_out(&[], &made, &[]).await.unwrap());

    // At most 2 per webhook, the oldest first: the other webhook's one is not hidden.
    let claimed = hooks.claim_deliveries(2000, 60_000, 10, 2, &[]).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|d| d.event_id.as_str()).collect();
    assert_eq!(ids, ["slow-0", "slow-1", "fast-9"]);
    assert_eq!(claimed[0].body, b"{\"n\":0}");
    assert!(
        hooks.claim_deliveries(2000, 60_000, 10, 2, &[]).await.unwrap().iter().all(|d| d.event_id.starts_with("slow")),
        "claimed ones are not due again before their claim ends"
    );
    // One in flight already leaves room for one more.
    let busy = [(("hooks-a".to_string(), "slow".to_string()), 1)];
    let more = hooks.claim_deliveries(2000, 60_000, 10, 2, &busy).await.unwrap();
    assert_eq!(more.len(), 1);

    // Attempts: delivered resets the failures, a failure with a retry stays pending, the
    // failure that reaches the limit (3) disables the webhook, once.
    let attempt = |d: i64, error: Option<&str>, retry: Option<i64>| Attempt {
        delivery: d,
        at_ms: 3000,
        status_code: if error.is_some() { Some(500) } else { Some(204) },
        duration_ms: 12,
        error: error.map(Into::into),
        retry_at_ms: retry,
    };
    let slow = &claimed[0];
    assert!(!hooks.record_attempt(&attempt(slow.id, Some("500 Internal Server Error"), Some(4000))).await.unwrap());
    assert!(!hooks.record_attempt(&attempt(claimed[1].id, Some("timed out"), Some(4000))).await.unwrap());
    assert!(!hooks.record_attempt(&attempt(claimed[2].id, None, None)).await.unwrap());
    let log = hooks.deliveries("hooks-a", "slow", None, 10).await.unwrap();
    let first = log.iter().find(|d| d.id == slow.id).unwrap();
    assert_eq!(
        (first.state, first.attempts, first.due_ms, first.status_code, first.duration_ms, first.last_ms),
        (DeliveryState::Pending, 1, 4000, Some(500), Some(12), Some(3000))
    );
    let fast = &hooks.deliveries("hooks-b", "fast", None, 10).await.unwrap()[0];
    assert_eq!((fast.state, fast.error.as_deref()), (DeliveryState::Delivered, None));
    assert!(
        hooks.record_attempt(&attempt(more[0].id, Some("refused"), None)).await.unwrap(),
        "the third failure in a row"
    );
    let slow_hook = hooks.webhooks("hooks-a").await.unwrap().into_iter().find(|w| w.name == "slow").unwrap();
    assert_eq!((slow_hook.enabled, slow_hook.failures), (false, 3));
    let gave_up = hooks.deliveries("hooks-a", "slow", None, 10).await.unwrap().into_iter().find(|d| d.id == more[0].id);
    assert_eq!(gave_up.unwrap().state, DeliveryState::Failed);
    assert!(
        hooks.claim_deliveries(i64::MAX, i64::MAX, 10, 2, &[]).await.unwrap().is_empty(),
        "a disabled webhook's deliveries wait"
    );
    // Replacing it (enabled again) resets the count, and its deliveries are due again.
    hooks.put_webhook(&webhook("hooks-a", "slow"), false).await.unwrap();
    assert_eq!(hooks.claim_deliveries(i64::MAX - 1, i64::MAX, 10, 10, &[]).await.unwrap().len(), 4);

    // The log pages by id, newest first; pruning takes only finished deliveries.
    let page = hooks.deliveries("hooks-a", "slow", None, 2).await.unwrap();
    let next = hooks.deliveries("hooks-a", "slow", Some(page[1].id), 10).await.unwrap();
    assert_eq!((page.len(), next.len()), (2, 3));
    assert!(page[0].id > page[1].id && page[1].id > next[0].id);
    assert_eq!(hooks.prune_deliveries(i64::MAX, 100).await.unwrap(), 2, "the delivered and the given-up one");
    assert_eq!(hooks.deliveries("hooks-a", "slow", None, 10).await.unwrap().len(), 4);
}
