//! The behaviour every [`ReplicationStore`] backend must show; each backend's tests call
//! [`run`] with the same database as an [`OutboxStore`] (whose fan-out starts
//! event-triggered executions), and [`concurrent_claims_never_share_a_task`].
//!
//! Times are small made-up milliseconds (below 1 000 only in the pruning test, which prunes
//! below that), except for executions the fan-out starts, which start now.

use std::collections::BTreeSet;

use berth_core::ErrorKind;

use super::{
    Direction, Execution, ExecutionState, NewTask, ReplicationRegistry, ReplicationRule, ReplicationStore, TaskOp,
    TaskResult, TaskState, Trigger,
};
use crate::OutboxStore;
use crate::outbox::{EventKind, NewEvent};

fn registry(name: &str) -> ReplicationRegistry {
    ReplicationRegistry {
        name: name.to_owned(),
        url: format!("https://{name}.example"),
        username: Some("robot".to_owned()),
        sealed_password: Some(vec![0, 1, 2, 255]),
        ca_pem: Some("-----BEGIN CERTIFICATE-----\n…\n-----END CERTIFICATE-----\n".to_owned()),
        created_at: 0,
        updated_at: 0,
    }
}

fn rule(name: &str, registry: &str) -> ReplicationRule {
    ReplicationRule {
        name: name.to_owned(),
        registry: registry.to_owned(),
        direction: Direction::Push,
        project: "library".to_owned(),
        on_event: true,
        cron: None,
        next_run_ms: None,
        enabled: true,
        spec: r#"{"repositories":["**"],"tags":["v*"]}"#.to_owned(),
        created_at: 0,
        updated_at: 0,
    }
}

/// Task `n` of `rule`: a copy of `repo-N`, tagged.
fn task(rule: &str, n: u32) -> NewTask {
    NewTask {
        rule: rule.to_owned(),
        op: TaskOp::Copy,
        repo: format!("library/repo-{n}"),
        digest: Some(format!("sha256:{n:064}")),
        tags: vec![format!("v{n}"), "latest".to_owned()],
    }
}

fn result(task: i64, at_ms: i64, error: Option<&str>, retry_at_ms: Option<i64>) -> TaskResult {
    TaskResult { task, at_ms, bytes: 100, duration_ms: 7, error: error.map(Into::into), retry_at_ms }
}

/// A registry and a rule using it, both named `name`.
async fn rule_of_its_own(repl: &dyn ReplicationStore, name: &str) {
    repl.put_registry(&registry(name), true).await.unwrap();
    repl.put_rule(&rule(name, name), true).await.unwrap();
}

pub async fn run(repl: &dyn ReplicationStore, outbox: &dyn OutboxStore) {
    registries_round_trip_and_stay_while_rules_use_them(repl).await;
    rules_round_trip_and_take_their_executions_with_them(repl).await;
    executions_start_whole(repl).await;
    tasks_are_claimed_oldest_first_and_held_until_their_claim_ends(repl).await;
    results_are_counted_once_and_the_last_finishes_the_execution(repl).await;
    event_tasks_join_the_fan_out(repl, outbox).await;
    executions_and_tasks_page_and_finished_executions_are_pruned(repl).await;
}

async fn registries_round_trip_and_stay_while_rules_use_them(repl: &dyn ReplicationStore) {
    let made = repl.put_registry(&registry("harbor"), true).await.unwrap();
    assert!(made.created_at > 0 && made.updated_at == made.created_at);
    assert_eq!(
        made,
        ReplicationRegistry { created_at: made.created_at, updated_at: made.updated_at, ..registry("harbor") }
    );
    assert_eq!(repl.all_registries().await.unwrap(), std::slice::from_ref(&made), "every field comes back as written");

    let again = repl.put_registry(&registry("harbor"), true).await.unwrap_err();
    assert_eq!((again.kind, again.detail), (ErrorKind::Conflict, Some("harbor".into())), "a name is taken once");
    let missing = repl.put_registry(&registry("quay"), false).await.unwrap_err();
    assert_eq!((missing.kind, missing.message()), (ErrorKind::ResourceUnknown, "no replication registry quay"));

    let changed = ReplicationRegistry { username: None, sealed_password: None, ca_pem: None, ..registry("harbor") };
    let replaced = repl.put_registry(&changed, false).await.unwrap();
    assert_eq!(replaced.created_at, made.created_at, "a replace keeps the creation time");
    repl.put_registry(&registry("quay"), true).await.unwrap();
    let listed = repl.all_registries().await.unwrap();
    assert_eq!(listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["harbor", "quay"]);
    assert_eq!((listed[0].username.as_deref(), listed[0].sealed_password.as_deref()), (None, None));

    // A registry in use stays, and the refusal names the rules.
    repl.put_rule(&rule("to-quay", "quay"), true).await.unwrap();
    repl.put_rule(&rule("also-to-quay", "quay"), true).await.unwrap();
    let used = repl.delete_registry("quay").await.unwrap_err();
    assert_eq!(used.kind, ErrorKind::Conflict);
    assert_eq!(used.message(), "replication registry quay is used by the replication rules also-to-quay, to-quay");
    assert!(repl.delete_rule("to-quay").await.unwrap());
    assert!(repl.delete_rule("also-to-quay").await.unwrap());
    assert!(repl.delete_registry("quay").await.unwrap());
    assert!(!repl.delete_registry("quay").await.unwrap(), "a second delete finds nothing");
    assert_eq!(repl.all_registries().await.unwrap(), [replaced]);
}

async fn rules_round_trip_and_take_their_executions_with_them(repl: &dyn ReplicationStore) {
    let unknown = repl.put_rule(&rule("nowhere", "nope"), true).await.unwrap_err();
    assert_eq!((unknown.kind, unknown.message()), (ErrorKind::ResourceUnknown, "no replication registry nope"));
    let pull = ReplicationRule {
        direction: Direction::Pull,
        on_event: false,
        cron: Some("0 3 * * *".into()),
        next_run_ms: Some(86_400_000),
        enabled: false,
        ..rule("from-harbor", "harbor")
    };
    let made = repl.put_rule(&pull, true).await.unwrap();
    assert!(made.created_at > 0 && made.updated_at == made.created_at);
    assert_eq!(made, ReplicationRule { created_at: made.created_at, updated_at: made.updated_at, ..pull.clone() });
    let again = repl.put_rule(&rule("from-harbor", "harbor"), true).await.unwrap_err();
    assert_eq!((again.kind, again.detail), (ErrorKind::Conflict, Some("from-harbor".into())));
    let missing = repl.put_rule(&rule("to-harbor", "harbor"), false).await.unwrap_err();
    assert_eq!((missing.kind, missing.message()), (ErrorKind::ResourceUnknown, "no replication rule to-harbor"));
    let elsewhere = repl.put_rule(&rule("from-harbor", "nope"), false).await.unwrap_err();
    assert_eq!((elsewhere.kind, elsewhere.message()), (ErrorKind::ResourceUnknown, "no replication registry nope"));
    repl.put_rule(&rule("a-first", "harbor"), true).await.unwrap();
    let listed = repl.all_rules().await.unwrap();
    assert_eq!(listed.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["a-first", "from-harbor"]);
    assert_eq!(listed[1], made, "every field comes back as written");

    let replaced = repl.put_rule(&ReplicationRule { enabled: true, ..pull }, false).await.unwrap();
    assert_eq!((replaced.created_at, replaced.enabled), (made.created_at, true));
    assert!(repl.set_next_run("from-harbor", Some(172_800_000)).await.unwrap());
    assert!(!repl.set_next_run("nope", None).await.unwrap());
    let listed = repl.all_rules().await.unwrap();
    assert_eq!((listed[1].next_run_ms, listed[1].enabled), (Some(172_800_000), true));
    assert!(repl.set_next_run("from-harbor", None).await.unwrap());
    assert_eq!(repl.all_rules().await.unwrap()[1].next_run_ms, None, "no next run");

    // Deleting a rule takes its executions and their tasks.
    let tasks = [task("a-first", 1), task("a-first", 2)];
    let running = repl.start_execution("a-first", Trigger::Manual, &tasks, 1000).await.unwrap();
    let done = repl.start_execution("a-first", Trigger::Manual, &[], 1000).await.unwrap();
    assert_eq!(repl.pending_tasks("a-first").await.unwrap(), 2);
    assert!(repl.delete_rule("a-first").await.unwrap());
    assert!(!repl.delete_rule("a-first").await.unwrap());
    for e in [running.id, done.id] {
        assert_eq!(repl.execution(e).await.unwrap(), None);
        assert_eq!(repl.tasks(e, None, 10).await.unwrap(), []);
    }
    assert_eq!(repl.pending_tasks("a-first").await.unwrap(), 0);
    assert_eq!(repl.executions(Some("a-first"), None, 10).await.unwrap(), []);
}

async fn executions_start_whole(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "starts").await;
    // Nothing to do: done at once.
    let empty = repl.start_execution("starts", Trigger::Schedule, &[], 1500).await.unwrap();
    assert_eq!(
        (empty.trigger, empty.state, empty.started_ms, empty.finished_ms, empty.total),
        (Trigger::Schedule, ExecutionState::Succeeded, 1500, Some(1500), 0)
    );
    assert_eq!(repl.execution(empty.id).await.unwrap(), Some(empty.clone()));

    let delete = NewTask { op: TaskOp::Delete, digest: None, tags: vec![], ..task("starts", 3) };
    let tasks = [task("starts", 1), task("starts", 2), delete.clone()];
    let e = repl.start_execution("starts", Trigger::Manual, &tasks, 2000).await.unwrap();
    assert!(e.id > empty.id);
    let expected = Execution {
        id: e.id,
        rule: "starts".into(),
        trigger: Trigger::Manual,
        state: ExecutionState::Running,
        started_ms: 2000,
        finished_ms: None,
        total: 3,
        succeeded: 0,
        failed: 0,
        bytes: 0,
        error: None,
    };
    assert_eq!(e, expected);
    assert_eq!(repl.execution(e.id).await.unwrap(), Some(expected));
    let stored = repl.tasks(e.id, None, 10).await.unwrap();
    assert_eq!(stored.len(), 3);
    for (t, new) in stored.iter().zip(&tasks) {
        assert_eq!(
            (&t.rule, t.op, &t.repo, &t.digest, &t.tags),
            (&new.rule, new.op, &new.repo, &new.digest, &new.tags),
            "in their order, as given"
        );
        assert_eq!(
            (t.execution, t.state, t.attempts, t.due_ms, t.created_ms),
            (e.id, TaskState::Pending, 0, 2000, 2000)
        );
        assert_eq!((t.finished_ms, t.bytes, t.duration_ms, t.error.as_deref()), (None, 0, None, None));
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id));
    assert_eq!(stored[2].tags, Vec::<String>::new(), "no tags round-trip as none");

    let unknown = repl.start_execution("nope", Trigger::Manual, &[task("nope", 1)], 2000).await.unwrap_err();
    assert_eq!((unknown.kind, unknown.message()), (ErrorKind::ResourceUnknown, "no replication rule nope"));
    let foreign = repl.start_execution("starts", Trigger::Manual, &[task("other", 1)], 2000).await.unwrap_err();
    assert_eq!(foreign.kind, ErrorKind::Internal, "a task of another rule is the caller's mistake");
    assert_eq!(repl.executions(Some("starts"), None, 10).await.unwrap().len(), 2, "neither wrote anything");
}

async fn tasks_are_claimed_oldest_first_and_held_until_their_claim_ends(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "claims").await;
    rule_of_its_own(repl, "claims-other").await;
    let tasks: Vec<NewTask> = (0..5).map(|n| task("claims", n)).collect();
    let e = repl.start_execution("claims", Trigger::Manual, &tasks, 1000).await.unwrap();
    repl.start_execution("claims-other", Trigger::Manual, &[task("claims-other", 9)], 1000).await.unwrap();
    let ids: Vec<i64> = repl.tasks(e.id, None, 10).await.unwrap().iter().map(|t| t.id).collect();
    assert_eq!(repl.pending_tasks("claims").await.unwrap(), 5);

    assert_eq!(repl.claim_tasks("claims", 999, 5000, 10).await.unwrap(), [], "not due yet");
    let first = repl.claim_tasks("claims", 1000, 5000, 2).await.unwrap();
    assert_eq!(first.iter().map(|t| t.id).collect::<Vec<_>>(), ids[..2], "the oldest first, up to the limit");
    assert!(first.iter().all(|t| t.due_ms == 5000 && t.state == TaskState::Pending && t.rule == "claims"));
    let rest = repl.claim_tasks("claims", 1000, 5000, 10).await.unwrap();
    assert_eq!(rest.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..], "only this rule's");
    assert_eq!(repl.claim_tasks("claims", 1000, 5000, 10).await.unwrap(), [], "claimed ones are not due again");
    assert_eq!(repl.claim_tasks("claims", 4999, 9000, 10).await.unwrap(), [], "not before their claim ends");
    let stored = repl.tasks(e.id, None, 10).await.unwrap();
    assert!(stored.iter().all(|t| t.due_ms == 5000 && t.attempts == 0), "a claim is no attempt");

    // A node that took them and died: due again once the claim ends, in their order.
    let again = repl.claim_tasks("claims", 5000, 9000, 10).await.unwrap();
    assert_eq!(again.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    assert_eq!(repl.pending_tasks("claims").await.unwrap(), 5, "claimed tasks are pending still");
    assert_eq!(repl.claim_tasks("claims-other", 1000, 5000, 10).await.unwrap().len(), 1);

    // A node still copying renews its claim on two of them: those stay its own.
    repl.extend_claims(&ids[..2], 20_000).await.unwrap();
    let due = repl.claim_tasks("claims", 9000, 30_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|t| t.id).collect::<Vec<_>>(), ids[2..], "renewed claims are not taken over");
    let renewed = repl.tasks(e.id, None, 10).await.unwrap();
    assert_eq!(renewed.iter().map(|t| t.due_ms).collect::<Vec<_>>(), [20_000, 20_000, 30_000, 30_000, 30_000]);
    repl.extend_claims(&[], 1).await.unwrap();
}

async fn results_are_counted_once_and_the_last_finishes_the_execution(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "results").await;
    let tasks: Vec<NewTask> = (0..3).map(|n| task("results", n)).collect();
    let e = repl.start_execution("results", Trigger::Event, &tasks, 1000).await.unwrap();
    let ids: Vec<i64> = repl.claim_tasks("results", 1000, 60_000, 10).await.unwrap().iter().map(|t| t.id).collect();
    let execution = e.id;
    let task_of =
        move |id: i64| async move { repl.tasks(execution, None, 10).await.unwrap().into_iter().find(|t| t.id == id) };

    // Success: final, counted.
    assert_eq!(repl.record_task(&result(ids[0], 2000, None, None)).await.unwrap(), None, "others are pending");
    let t = task_of(ids[0]).await.unwrap();
    assert_eq!(
        (t.state, t.attempts, t.finished_ms, t.bytes, t.duration_ms, t.error.as_deref()),
        (TaskState::Succeeded, 1, Some(2000), 100, Some(7), None)
    );
    let counted = repl.execution(e.id).await.unwrap().unwrap();
    assert_eq!((counted.state, counted.succeeded, counted.failed, counted.bytes), (ExecutionState::Running, 1, 0, 100));
    // The same result again (a node whose claim ran out): nothing changes.
    assert_eq!(repl.record_task(&result(ids[0], 2500, Some("late"), None)).await.unwrap(), None);
    assert_eq!(repl.execution(e.id).await.unwrap().unwrap(), counted, "not counted twice");
    assert_eq!(task_of(ids[0]).await.unwrap(), t, "a final task keeps its first result");

    // A failure to retry: pending, due then, its error kept; not counted.
    assert_eq!(repl.record_task(&result(ids[1], 2100, Some("502 Bad Gateway"), Some(3000))).await.unwrap(), None);
    let t = task_of(ids[1]).await.unwrap();
    assert_eq!(
        (t.state, t.attempts, t.due_ms, t.finished_ms, t.error.as_deref()),
        (TaskState::Pending, 1, 3000, None, Some("502 Bad Gateway"))
    );
    assert_eq!(repl.execution(e.id).await.unwrap().unwrap(), counted);
    assert_eq!(repl.claim_tasks("results", 2999, 60_000, 10).await.unwrap(), []);
    let retried = repl.claim_tasks("results", 3000, 60_000, 10).await.unwrap();
    assert_eq!(retried.iter().map(|t| t.id).collect::<Vec<_>>(), [ids[1]]);
    // Given up: final, counted as failed.
    assert_eq!(repl.record_task(&result(ids[1], 3100, Some("401 Unauthorized"), None)).await.unwrap(), None);
    let t = task_of(ids[1]).await.unwrap();
    assert_eq!(
        (t.state, t.attempts, t.finished_ms, t.error.as_deref()),
        (TaskState::Failed, 2, Some(3100), Some("401 Unauthorized"))
    );
    assert_eq!(repl.pending_tasks("results").await.unwrap(), 1);

    // The last one finishes the execution: some failed, some succeeded.
    let finished = repl.record_task(&result(ids[2], 3200, None, None)).await.unwrap().expect("the last result");
    let expected = Execution {
        state: ExecutionState::Partial,
        finished_ms: Some(3200),
        succeeded: 2,
        failed: 1,
        bytes: 300,
        ..e.clone()
    };
    assert_eq!(finished, expected);
    assert_eq!(repl.execution(e.id).await.unwrap(), Some(expected));
    assert_eq!(repl.record_task(&result(ids[2], 3300, None, None)).await.unwrap(), None, "finished once");
    assert_eq!(repl.pending_tasks("results").await.unwrap(), 0);
    assert_eq!(repl.record_task(&result(i64::MAX, 3300, None, None)).await.unwrap(), None, "no such task");

    // All failed; all succeeded.
    for (ok, state) in [(false, ExecutionState::Failed), (true, ExecutionState::Succeeded)] {
        let e = repl.start_execution("results", Trigger::Manual, &tasks[..2], 4000).await.unwrap();
        let claimed = repl.claim_tasks("results", 4000, 60_000, 10).await.unwrap();
        assert_eq!(claimed.len(), 2);
        let error = (!ok).then_some("refused");
        assert_eq!(repl.record_task(&result(claimed[0].id, 4100, error, None)).await.unwrap(), None);
        let finished = repl.record_task(&result(claimed[1].id, 4200, error, None)).await.unwrap().unwrap();
        assert_eq!(
            (finished.id, finished.state, finished.finished_ms, finished.succeeded + finished.failed),
            (e.id, state, Some(4200), 2)
        );
    }
}

async fn event_tasks_join_the_fan_out(repl: &dyn ReplicationStore, outbox: &dyn OutboxStore) {
    rule_of_its_own(repl, "ev-a").await;
    rule_of_its_own(repl, "ev-b").await;
    rule_of_its_own(repl, "ev-gone").await;
    let event = |n: u8| NewEvent {
        kind: EventKind::ArtifactPushed,
        repo: "library/app".into(),
        digest: Some(berth_core::Digest::of(&[n]).to_string()),
        media_type: None,
        tags: vec![],
        size: None,
        detail: None,
        at_ms: 1,
    };
    outbox.append(&[event(1), event(2)]).await.unwrap();
    let ids: Vec<i64> = outbox.pending(10).await.unwrap().iter().map(|e| e.id).collect();
    // A rule deleted after the dispatcher read them gets nothing.
    assert!(repl.delete_rule("ev-gone").await.unwrap());
    let made = [task("ev-a", 1), task("ev-b", 2), task("ev-gone", 3), task("ev-a", 4)];
    let before = crate::now_ms();
    assert!(outbox.fan_out(&ids, &[], &made).await.unwrap());
    assert!(outbox.pending(10).await.unwrap().is_empty());

    let a = repl.executions(Some("ev-a"), None, 10).await.unwrap();
    let b = repl.executions(Some("ev-b"), None, 10).await.unwrap();
    assert_eq!((a.len(), b.len()), (1, 1), "one execution per rule");
    let (a, b) = (&a[0], &b[0]);
    assert!(a.id < b.id, "the rules in the order their first task came");
    assert_eq!((a.trigger, a.state, a.total, a.finished_ms), (Trigger::Event, ExecutionState::Running, 2, None));
    assert!(a.started_ms >= before, "started at the fan-out");
    assert_eq!(b.total, 1);
    let repos =
        |tasks: Vec<super::Task>| tasks.into_iter().map(|t| (t.rule, t.repo, t.due_ms >= before)).collect::<Vec<_>>();
    assert_eq!(
        repos(repl.tasks(a.id, None, 10).await.unwrap()),
        [
            ("ev-a".to_owned(), "library/repo-1".to_owned(), true),
            ("ev-a".to_owned(), "library/repo-4".to_owned(), true)
        ],
        "its tasks in their order, due now"
    );
    assert_eq!(
        repos(repl.tasks(b.id, None, 10).await.unwrap()),
        [("ev-b".to_owned(), "library/repo-2".to_owned(), true)]
    );
    assert_eq!(repl.executions(Some("ev-gone"), None, 10).await.unwrap(), []);

    // A second dispatcher fanning out the same events writes no task either.
    outbox.append(&[event(3)]).await.unwrap();
    let mut ids = ids;
    ids.extend(outbox.pending(10).await.unwrap().iter().map(|e| e.id));
    assert!(!outbox.fan_out(&ids, &[], &[task("ev-a", 5), task("ev-b", 6)]).await.unwrap());
    assert_eq!(repl.executions(Some("ev-a"), None, 10).await.unwrap().len(), 1);
    assert_eq!(repl.executions(Some("ev-b"), None, 10).await.unwrap().len(), 1);
    assert_eq!((repl.pending_tasks("ev-a").await.unwrap(), repl.pending_tasks("ev-b").await.unwrap()), (2, 1));
    assert_eq!(outbox.pending(10).await.unwrap().len(), 1, "the new event is still there");
    let last: Vec<i64> = outbox.pending(10).await.unwrap().iter().map(|e| e.id).collect();
    assert!(outbox.fan_out(&last, &[], &[]).await.unwrap(), "no task: no execution");
    assert_eq!(repl.executions(Some("ev-a"), None, 10).await.unwrap().len(), 1);
}

async fn executions_and_tasks_page_and_finished_executions_are_pruned(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "pages").await;
    // One running since 10, five finished (with no task) at 100 … 500, one with tasks
    // finished at 550.
    let running = repl.start_execution("pages", Trigger::Schedule, &[task("pages", 0)], 10).await.unwrap();
    let mut finished = Vec::new();
    for at in [100, 200, 300, 400, 500] {
        finished.push(repl.start_execution("pages", Trigger::Schedule, &[], at).await.unwrap().id);
    }
    let tasks: Vec<NewTask> = (1..=3).map(|n| task("pages", n)).collect();
    let with_tasks = repl.start_execution("pages", Trigger::Manual, &tasks, 50).await.unwrap();

    // Executions page newest first; tasks in id order.
    let page = repl.executions(Some("pages"), None, 4).await.unwrap();
    let next = repl.executions(Some("pages"), Some(page[3].id), 4).await.unwrap();
    let ids: Vec<i64> = page.iter().chain(&next).map(|e| e.id).collect();
    let mut all: Vec<i64> = finished.iter().copied().chain([running.id, with_tasks.id]).collect();
    all.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(ids, all, "newest first, every one once");
    let everyone = repl.executions(None, None, 1000).await.unwrap();
    assert!(everyone.windows(2).all(|w| w[0].id > w[1].id) && everyone.len() > all.len(), "of every rule");
    let first = repl.tasks(with_tasks.id, None, 2).await.unwrap();
    let rest = repl.tasks(with_tasks.id, Some(first[1].id), 2).await.unwrap();
    let repos: Vec<&str> = first.iter().chain(&rest).map(|t| t.repo.as_str()).collect();
    assert_eq!(repos, ["library/repo-1", "library/repo-2", "library/repo-3"]);
    for t in repl.claim_tasks("pages", 50, 60_000, 10).await.unwrap() {
        if t.execution == with_tasks.id {
            repl.record_task(&result(t.id, 550, None, None)).await.unwrap();
        }
    }
    assert_eq!(repl.execution(with_tasks.id).await.unwrap().unwrap().finished_ms, Some(550));

    // Pruning takes the earliest finished first, never a running one, and their tasks.
    assert_eq!(repl.prune_executions(600, 1).await.unwrap(), 1);
    assert_eq!(repl.execution(finished[0]).await.unwrap(), None, "the one finished at 100");
    assert!(repl.execution(finished[1]).await.unwrap().is_some());
    assert_eq!(repl.prune_executions(600, 100).await.unwrap(), 5);
    assert_eq!(repl.tasks(with_tasks.id, None, 10).await.unwrap(), [], "its tasks went with it");
    let left = repl.executions(Some("pages"), None, 10).await.unwrap();
    assert_eq!(left.iter().map(|e| e.id).collect::<Vec<_>>(), [running.id], "running since 10: it stays");
    assert_eq!(repl.pending_tasks("pages").await.unwrap(), 1);
    assert_eq!(repl.prune_executions(600, 100).await.unwrap(), 0);
}

/// Two claims at once (two nodes) on ten due tasks: each task goes to exactly one of them.
pub async fn concurrent_claims_never_share_a_task(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "race").await;
    let tasks: Vec<NewTask> = (0..10).map(|n| task("race", n)).collect();
    for round in 0..5 {
        // Each round's tasks are due at its start; the earlier rounds' are claimed till later.
        let now = 1000 + round;
        let e = repl.start_execution("race", Trigger::Manual, &tasks, now).await.unwrap();
        let (a, b) =
            tokio::join!(repl.claim_tasks("race", now, 1_000_000, 10), repl.claim_tasks("race", now, 1_000_000, 10));
        let (a, b) = (a.unwrap(), b.unwrap());
        let a: BTreeSet<i64> = a.iter().map(|t| t.id).collect();
        let b: BTreeSet<i64> = b.iter().map(|t| t.id).collect();
        assert!(a.is_disjoint(&b), "round {round}: both claimed {:?}", a.intersection(&b).collect::<Vec<_>>());
        let all: BTreeSet<i64> = repl.tasks(e.id, None, 100).await.unwrap().iter().map(|t| t.id).collect();
        assert_eq!(a.union(&b).copied().collect::<BTreeSet<_>>(), all, "round {round}: every task claimed");
    }
}

/// The last two results of an execution recorded at once (two nodes): exactly one of them
/// finishes it, with both counted.
pub async fn results_at_once_finish_an_execution_once(repl: &dyn ReplicationStore) {
    rule_of_its_own(repl, "photo-finish").await;
    let tasks: Vec<NewTask> = (0..2).map(|n| task("photo-finish", n)).collect();
    for round in 0..5 {
        let e = repl.start_execution("photo-finish", Trigger::Manual, &tasks, 1000).await.unwrap();
        let claimed = repl.claim_tasks("photo-finish", 1000, 1_000_000, 10).await.unwrap();
        let (ok, refused) =
            (result(claimed[0].id, 2000, None, None), result(claimed[1].id, 2000, Some("refused"), None));
        let (a, b) = tokio::join!(repl.record_task(&ok), repl.record_task(&refused));
        let finished: Vec<Execution> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(finished.len(), 1, "round {round}: finished by exactly one result");
        assert_eq!(
            (finished[0].id, finished[0].state, finished[0].succeeded, finished[0].failed),
            (e.id, ExecutionState::Partial, 1, 1),
            "round {round}"
        );
    }
}
