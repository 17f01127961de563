//! The behaviour every [`AuditStore`] backend must show; each backend's tests call [`run`].

use super::{AuditEvent, AuditQuery, AuditStore};

fn event(at_ms: i64, actor: Option<&str>, operation: &str, project: Option<&str>) -> AuditEvent {
    AuditEvent {
        at_ms,
        actor: actor.map(str::to_owned),
        address: "192.0.2.7".to_owned(),
        operation: operation.to_owned(),
        project: project.map(str::to_owned),
        resource: project.map(|p| format!("{p}/app:1")),
        outcome: if actor.is_some() { "success" } else { "denied" }.to_owned(),
        detail: actor.is_none().then(|| "anonymous".to_owned()),
        count: 1,
    }
}

fn query() -> AuditQuery {
    AuditQuery { limit: 1000, ..Default::default() }
}

/// The events `store` returns for `q`, newest first.
async fn read(store: &dyn AuditStore, q: AuditQuery) -> Vec<AuditEvent> {
    store.query(&q).await.unwrap().into_iter().map(|r| r.event).collect()
}

pub async fn run(store: &dyn AuditStore) {
    store.append(&[]).await.unwrap();
    assert!(store.query(&query()).await.unwrap().is_empty());
    let events = vec![
        event(1_000, Some("alice"), "manifest.push", Some("team")),
        event(2_000, None, "manifest.pull", Some("team")),
        event(3_000, Some("bob"), "robot.create", Some("tools")),
        event(4_000, Some("alice"), "robot.delete", Some("team")),
        event(5_000, Some("alice"), "robots.listed", None),
        event(6_000, Some("bob"), "robot", None),
        event(7_000, Some("alice"), "login", None),
    ];
    store.append(&events[..3]).await.unwrap();
    store.append(&events[3..]).await.unwrap();

    // Everything, newest first, ids decreasing, events as recorded.
    let all = store.query(&query()).await.unwrap();
    assert_eq!(all.iter().map(|r| r.event.clone()).rev().collect::<Vec<_>>(), events);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id));

    // Filters, alone and together.
    let ops = |v: Vec<AuditEvent>| v.into_iter().map(|e| e.operation).collect::<Vec<_>>();
    let by_actor = read(store, AuditQuery { actor: Some("alice".into()), ..query() }).await;
    assert_eq!(ops(by_actor), ["login", "robots.listed", "robot.delete", "manifest.push"]);
    let by_project = read(store, AuditQuery { project: Some("team".into()), ..query() }).await;
    assert_eq!(ops(by_project), ["robot.delete", "manifest.pull", "manifest.push"]);
    let exact = read(store, AuditQuery { operation: Some("robot".into()), ..query() }).await;
    assert_eq!(ops(exact), ["robot"], "an operation without a dot is exact");
    let prefix = read(store, AuditQuery { operation: Some("robot.".into()), ..query() }).await;
    assert_eq!(ops(prefix), ["robot.delete", "robot.create"], "a prefix ending in a dot");
    let both =
        read(store, AuditQuery { actor: Some("alice".into()), operation: Some("robot.".into()), ..query() }).await;
    assert_eq!(ops(both), ["robot.delete"]);
    let window = read(store, AuditQuery { since_ms: Some(2_000), until_ms: Some(4_000), ..query() }).await;
    assert_eq!(ops(window), ["robot.create", "manifest.pull"], "since inclusive, until exclusive");
    let anonymous = read(store, AuditQuery { project: Some("team".into()), until_ms: Some(3_000), ..query() }).await;
    assert_eq!(anonymous[0], events[1]);

    // Pages continue from the last id of the previous one.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store.query(&AuditQuery { before_id: before, limit: 3, ..query() }).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        seen.extend(page.into_iter().map(|r| r.event));
    }
    assert_eq!(seen.into_iter().rev().collect::<Vec<_>>(), events);
    let filtered = AuditQuery { actor: Some("alice".into()), before_id: Some(all[1].id), limit: 2, ..query() };
    assert_eq!(ops(read(store, filtered).await), ["robots.listed", "robot.delete"]);

    // A batch larger than one statement keeps its order, and each entry its count.
    let many: Vec<_> = (0..250)
        .map(|i| AuditEvent {
            count: (i % 7 + 1) as u32,
            ..event(10_000 + i, Some("ci"), "manifest.pull", Some("bulk"))
        })
        .collect();
    store.append(&many).await.unwrap();
    let bulk = read(store, AuditQuery { project: Some("bulk".into()), ..query() }).await;
    assert_eq!(bulk.into_iter().rev().collect::<Vec<_>>(), many);

    // Pruning: the oldest first, at most `limit`, only those before the time.
    assert_eq!(store.prune(3_500, 2).await.unwrap(), 2);
    let left = read(store, AuditQuery { until_ms: Some(10_000), ..query() }).await;
    assert_eq!(ops(left), ["login", "robot", "robots.listed", "robot.delete", "robot.create"]);
    assert_eq!(store.prune(3_500, 100).await.unwrap(), 1);
    assert_eq!(store.prune(3_500, 100).await.unwrap(), 0);
    assert_eq!(store.prune(10_100, 1000).await.unwrap(), 104);
    let left = store.query(&query()).await.unwrap();
    assert_eq!(left.len(), 150);
    assert!(left.iter().all(|r| r.event.at_ms >= 10_100));
    // Ids keep increasing after a prune.
    store.append(&[event(1, Some("late"), "login", None)]).await.unwrap();
    let newest = store.query(&AuditQuery { limit: 1, ..query() }).await.unwrap();
    assert_eq!((newest[0].event.actor.as_deref(), newest[0].id > left[0].id), (Some("late"), true));
}

/// A failed login by `actor`.
pub fn login_by(actor: &str) -> AuditEvent {
    AuditEvent { outcome: "failure".to_owned(), ..event(1, Some(actor), "login", None) }
}

/// A batch holding `poison`, an event this database refuses for a value it carries (each
/// backend's test makes it so), fails as `BadRequest` and stores nothing of the batch;
/// the store is not left broken: the batch's other events append at once afterwards.
pub async fn refused_batches(store: &dyn AuditStore, poison: AuditEvent) {
    let before = store.query(&query()).await.unwrap().len();
    let good = |n: i64| event(50_000 + n, Some("fine"), "manifest.push", Some("team"));
    let batch = [good(1), poison, good(2)];
    let e = store.append(&batch).await.unwrap_err();
    assert_eq!(e.kind, berth_core::ErrorKind::BadRequest, "{e:?}");
    assert_eq!(store.query(&query()).await.unwrap().len(), before, "a refused batch stores nothing");
    store.append(&[good(1), good(2)]).await.unwrap();
    let stored = read(store, AuditQuery { actor: Some("fine".into()), ..query() }).await;
    assert_eq!(stored, [good(2), good(1)]);
}
