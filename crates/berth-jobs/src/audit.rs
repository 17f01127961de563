//! The audit log as the server writes it: [`AuditLog::record`] enqueues an event, one
//! writer task appends what is queued in batches (group commit), and `prune.rs`'s `AuditPruner`
//! removes entries past the retention. Not the store (`berth_meta::AuditStore`), and not
//! the query API.
//!
//! Nothing is dropped: the channel is bounded, and a full channel makes `record` wait
//! (back-pressure: a database that cannot keep up slows the requests that record, it
//! does not lose their events); a failed append is retried with backoff, the batch kept.
//! The hot path only enqueues: no request waits for a database write unless the
//! channel is full.
//!
//! Retrying cures an outage, not a batch the database refuses for what it holds (a value
//! PostgreSQL cannot store): such a batch would be retried forever, the queue would fill
//! and every request that records would hang. So a refused batch is split in halves,
//! each appended (and retried) on its own, until every good event is stored and each
//! refused one stands alone; that one is stored sanitized (control characters replaced,
//! strings cut to a bound, marked so in its detail), and only if even that is refused is
//! it given up, logged with what it was and counted. The writer's state is in the
//! metrics (`berth_audit_*`), and an append failing for longer than [`STALL_ALERT`] is
//! logged as a stall at error level, once a minute while it lasts.
//!
//! # What is recorded
//!
//! Events carry names, never secrets. Recorded so far: `manifest.push`,
//! `manifest.pull` (GET, not HEAD), `manifest.delete`, `tag.delete`, `retention.tag.delete` and
//! `retention.manifest.delete` (actor `retention`, one per deletion), `retention.run`,
//! `retention.policy.set`/`.delete`, `gc.manifest.delete` (actor `gc`, address `-`, one
//! per manifest garbage collection removes), with the principal's
//! name, the client's address, the project, the resource (`repo:tag` or `repo@digest`) and
//! the outcome (`failure` carries the error code). Pulls queued together that differ only in
//! time are one entry with a `count` (the writer merges them, `coalesce`; only
//! operations listed in `COALESCED`, which change nothing): under a pull load the log grows by
//! a few entries a second, not one per pull, and the count keeps every pull accounted for.
//! Each `INSERT` carries at most 16 rows: sqlx binds a SQLite parameter by a lookup that
//! scans the statement's parameters, so binding costs the square of their number.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use berth_core::ErrorKind;
use berth_meta::{AuditEvent, AuditStore};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Events queued at most; `record` waits beyond.
pub const QUEUE: usize = 8192;
/// Events appended at most in one transaction.
pub const BATCH: usize = 512;
/// How long the writer waits for more events after the first of a batch.
const GATHER: Duration = Duration::from_millis(5);
/// Longest wait between two attempts at a failing append.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long a stopping writer keeps retrying a failing append before it gives up (and
/// logs how many events it could not store).
const STOP_PATIENCE: Duration = Duration::from_secs(30);
/// How long appends fail before the writer logs a stall (at error level, then once a
/// minute while it lasts).
pub const STALL_ALERT: Duration = Duration::from_secs(10);
/// Characters a string of a sanitized event keeps at most.
const SANITIZED_MAX: usize = 256;

enum Message {
    Event(AuditEvent),
    /// Answered once every event queued before it is stored.
    Flush(oneshot::Sender<()>),
    /// Stores what is queued, answers, and ends the writer.
    Stop(oneshot::Sender<()>),
}

/// What the writer reports of itself (shared with the node's
/// [`Metrics`](crate::observe::Metrics), which
/// registers the same series: `berth_audit_append_failures_total`,
/// `berth_audit_events_sanitized_total`, `berth_audit_events_unstorable_total`,
/// `berth_audit_writer_failing`).
#[derive(Clone, Default)]
pub struct WriterMetrics {
    /// Appends that failed (each attempt).
    pub append_failures: Counter,
    /// Events stored sanitized because the database refused them as they were.
    pub sanitized: Counter,
    /// Events the database refused even sanitized: logged, not stored.
    pub unstorable: Counter,
    /// 1 while the last append failed, else 0.
    pub failing: Gauge,
}

/// The server's handle on the audit log.
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    queue: mpsc::Sender<Message>,
    /// The writer, until [`AuditLog::start`] runs it.
    writer: Mutex<Option<Writer>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Cancelled by [`AuditLog::stop`]: a writer retrying a failing append gives up
    /// [`STOP_PATIENCE`] after it, even in the middle of a batch.
    stopping: CancellationToken,
}

impl AuditLog {
    /// A log over `store`; its writer runs once [`start`](AuditLog::start) is called.
    pub fn new(store: Arc<dyn AuditStore>) -> AuditLog {
        AuditLog::with_queue(store, QUEUE)
    }

    /// A log whose queue holds `capacity` events.
    pub fn with_queue(store: Arc<dyn AuditStore>, capacity: usize) -> AuditLog {
        let (queue, receiver) = mpsc::channel(capacity);
        let stopping = CancellationToken::new();
        let writer = Writer {
            store: Arc::clone(&store),
            receiver,
            metrics: WriterMetrics::default(),
            stopping: stopping.clone(),
            deadline: OnceLock::new(),
        };
        AuditLog { store, queue, writer: Mutex::new(Some(writer)), task: Mutex::default(), stopping }
    }

    /// Reports the writer's state into `metrics` (before [`start`](AuditLog::start)).
    pub fn with_metrics(self, metrics: WriterMetrics) -> AuditLog {
        if let Some(writer) = self.writer.lock().expect("audit writer lock").as_mut() {
            writer.metrics = metrics;
        }
        self
    }

    /// Events queued and not yet taken by the writer.
    pub fn queued(&self) -> usize {
        self.queue.max_capacity() - self.queue.capacity()
    }

    /// The store, for reading the log.
    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Starts the writer task (once; later calls do nothing).
    pub fn start(&self) {
        if let Some(writer) = self.writer.lock().expect("audit writer lock").take() {
            *self.task.lock().expect("audit task lock") = Some(tokio::spawn(writer.run()));
        }
    }

    /// Queues `event`; waits while the queue is full. After [`stop`](AuditLog::stop)
    /// the event cannot be stored: it is logged as lost.
    pub async fn record(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError(Message::Event(e))) = self.queue.send(Message::Event(event)).await {
            tracing::error!(operation = %e.operation, "audit event recorded after the log stopped: not stored");
        }
    }

    /// Returns once every event recorded before the call is stored (or the writer has
    /// stopped). Starts the writer if it was not.
    pub async fn flush(&self) {
        self.start();
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Stores what is queued and ends the writer (started first if it was not, so that
    /// nothing queued is left behind); events recorded later are not stored.
    pub async fn stop(&self) {
        self.start();
        self.stopping.cancel();
        let (done, wait) = oneshot::channel();
        if self.queue.send(Message::Stop(done)).await.is_ok() {
            let _ = wait.await;
        }
        let task = self.task.lock().expect("audit task lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

/// The one task that appends.
struct Writer {
    store: Arc<dyn AuditStore>,
    receiver: mpsc::Receiver<Message>,
    metrics: WriterMetrics,
    stopping: CancellationToken,
    /// When a stopping writer gives up on appends that keep failing: set when it first
    /// finds the log stopping.
    deadline: OnceLock<Instant>,
}

impl Writer {
    async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        let mut flushes = Vec::new();
        while let Some(first) = self.receiver.recv().await {
            // Everything queued now, and what arrives within `GATHER` of the first, up to a
            // batch, goes in one append (a flush or a stop ends the wait at once): under a
            // pull load the writer wakes and syncs a few hundred times a second, not once
            // per event.
            let mut stop = None;
            let mut next = Some(first);
            let gather_until = tokio::time::Instant::now() + GATHER;
            while let Some(message) = next {
                match message {
                    Message::Event(e) => batch.push(e),
                    Message::Flush(done) => flushes.push(done),
                    Message::Stop(done) => {
                        stop = Some(done);
                        // Nothing new gets in; what is already queued is still read.
                        self.receiver.close();
                    }
                }
                if batch.len() >= BATCH || stop.is_some() || !flushes.is_empty() {
                    break;
                }
                next = match self.receiver.try_recv() {
                    Ok(message) => Some(message),
                    Err(_) => tokio::time::timeout_at(gather_until, self.receiver.recv()).await.ok().flatten(),
                };
            }
            coalesce(&mut batch);
            self.append(&batch).await;
            batch.clear();
            for done in flushes.drain(..) {
                let _ = done.send(());
            }
            if let Some(done) = stop {
                // Closed: the rest of the queue, then the end.
                while let Ok(message) = self.receiver.try_recv() {
                    match message {
                        Message::Event(e) => batch.push(e),
                        Message::Flush(done) | Message::Stop(done) => flushes.push(done),
                    }
                }
                coalesce(&mut batch);
                for chunk in batch.chunks(BATCH) {
                    self.append(chunk).await;
                }
                for done in flushes.drain(..) {
                    let _ = done.send(());
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// When a stopping writer stops retrying; `None` while the log is not stopping.
    fn patience(&self) -> Option<Instant> {
        self.stopping.is_cancelled().then(|| *self.deadline.get_or_init(|| Instant::now() + STOP_PATIENCE))
    }

    /// Appends `batch`, retrying with backoff until it is stored, or, once the log is
    /// stopping, until [`STOP_PATIENCE`] has passed. A batch the database refuses for its
    /// content is split ([`Writer::refused`]).
    async fn append(&self, batch: &[AuditEvent]) {
        if batch.is_empty() {
            return;
        }
        let mut backoff = Duration::from_millis(50);
        let failing_since = Instant::now();
        let mut alerted: Option<Instant> = None;
        loop {
            let e = match self.store.append(batch).await {
                Ok(()) => {
                    self.metrics.failing.set(0);
                    if alerted.is_some() {
                        tracing::warn!(events = batch.len(), failed_for = ?failing_since.elapsed(), "audit writer recovered");
                    }
                    return;
                }
                Err(e) if e.kind == ErrorKind::BadRequest => return Box::pin(self.refused(batch)).await,
                Err(e) => e,
            };
            self.metrics.append_failures.inc();
            self.metrics.failing.set(1);
            if self.patience().is_some_and(|p| Instant::now() >= p) {
                tracing::error!(error = %e, events = batch.len(), "audit events could not be stored before the stop");
                return;
            }
            let failed_for = failing_since.elapsed();
            if failed_for >= STALL_ALERT && alerted.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                alerted = Some(Instant::now());
                tracing::error!(
                    error = %e, events = batch.len(), ?failed_for,
                    "audit writer stalled: events are not being stored, and once the queue is full every request that records one waits"
                );
            } else {
                tracing::warn!(error = %e, events = batch.len(), retry_in = ?backoff, "appending audit events failed");
            }
            // A stop ends the wait: its patience runs from now.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = self.stopping.cancelled(), if self.deadline.get().is_none() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// `batch` was refused for what it holds: its halves are appended apart (each
    /// retried as any append), so that every event the database takes is stored; an
    /// event refused alone is stored sanitized, or, refused even so, logged and counted.
    async fn refused(&self, batch: &[AuditEvent]) {
        if batch.len() > 1 {
            let (first, second) = batch.split_at(batch.len() / 2);
            self.append(first).await;
            self.append(second).await;
            return;
        }
        let event = &batch[0];
        let clean = sanitized(event);
        if clean != *event {
            tracing::warn!(operation = %clean.operation, actor = ?clean.actor, "the database refused an audit event: storing it sanitized");
            self.metrics.sanitized.inc();
            return self.append(std::slice::from_ref(&clean)).await;
        }
        self.metrics.unstorable.inc();
        tracing::error!(event = ?clean, "the database refused an audit event even sanitized: not stored");
    }
}

/// `event` with every control character of its strings replaced by U+FFFD and each cut
/// to [`SANITIZED_MAX`] characters; a changed event's detail says it was. The same event
/// when there was nothing to change.
fn sanitized(event: &AuditEvent) -> AuditEvent {
    fn clean(s: &str) -> String {
        s.chars().take(SANITIZED_MAX).map(|c| if c.is_control() { '\u{FFFD}' } else { c }).collect()
    }
    let opt = |s: &Option<String>| s.as_deref().map(clean);
    let mut out = AuditEvent {
        at_ms: event.at_ms,
        actor: opt(&event.actor),
        address: clean(&event.address),
        operation: clean(&event.operation),
        project: opt(&event.project),
        resource: opt(&event.resource),
        outcome: clean(&event.outcome),
        detail: opt(&event.detail),
        count: event.count,
    };
    if out != *event {
        let note = "[sanitized: the database refused the event as recorded]";
        out.detail = Some(match out.detail {
            Some(d) => format!("{d} {note}"),
            None => note.to_owned(),
        });
    }
    out
}

/// Operations whose events queued together, when they differ only in time, are stored as
/// one entry with a count: a fleet pulling one image at 25,000 pulls a second would
/// otherwise cost as many inserts (a quarter of the server's CPU, measured), and
/// nobody reads the log pull by pull. Nothing that changes anything is coalesced.
const COALESCED: &[&str] = &["manifest.pull", "access.denied"];

/// Merges the events of `batch` that [`COALESCED`] allows and that differ only in time
/// into the first of them (its count the sum, its time the first's); the order of the
/// entries that remain is kept.
fn coalesce(batch: &mut Vec<AuditEvent>) {
    type Key = (Option<String>, String, String, Option<String>, Option<String>, String, Option<String>);
    let mut first: std::collections::HashMap<Key, usize> = std::collections::HashMap::new();
    let mut kept: Vec<AuditEvent> = Vec::with_capacity(batch.len());
    for event in batch.drain(..) {
        if !COALESCED.contains(&event.operation.as_str()) {
            kept.push(event);
            continue;
        }
        let key = (
            event.actor.clone(),
            event.address.clone(),
            event.operation.clone(),
            event.project.clone(),
            event.resource.clone(),
            event.outcome.clone(),
            event.detail.clone(),
        );
        match first.get(&key) {
            Some(&at) => kept[at].count = kept[at].count.saturating_add(event.count),
            None => {
                first.insert(key, kept.len());
                kept.push(event);
            }
        }
    }
    *batch = kept;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use berth_meta::{AuditEvent, AuditQuery, AuditStore, SqliteStore};

    use super::AuditLog;

    fn event(n: usize) -> AuditEvent {
        AuditEvent {
            at_ms: n as i64,
            actor: Some(format!("user{n}")),
            address: "192.0.2.1".to_owned(),
            operation: "login".to_owned(),
            project: None,
            resource: None,
            outcome: "success".to_owned(),
            detail: None,
            count: 1,
        }
    }

    async fn stored(store: &SqliteStore) -> Vec<AuditEvent> {
        let records = store.query(&AuditQuery { limit: 1000, ..Default::default() }).await.unwrap();
        records.into_iter().rev().map(|r| r.event).collect()
    }

    #[tokio::test]
    async fn record_waits_while_the_queue_is_full_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        let log = Arc::new(AuditLog::with_queue(Arc::new(store.clone()), 4));
        let recording = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                for n in 0..10 {
                    log.record(event(n)).await;
                }
            })
        };
        // No writer yet: four events fit, the fifth waits.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!recording.is_finished(), "record returned with the queue full");
        assert!(stored(&store).await.is_empty());
        log.start();
        recording.await.unwrap();
        log.flush().await;
        assert_eq!(stored(&store).await, (0..10).map(event).collect::<Vec<_>>());
    }

    /// The table is renamed away behind the store's back (a real failure of the real
    /// database), then brought back: the batch that failed is stored, in order, once.
    #[tokio::test]
    async fn a_failed_append_is_retried_without_losing_its_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        let log = AuditLog::new(Arc::new(store.clone()));
        log.start();
        sqlx::raw_sql("ALTER TABLE audit_log RENAME TO audit_log_away").execute(&side).await.unwrap();
        for n in 0..5 {
            log.record(event(n)).await;
        }
        let flushed = log.flush();
        tokio::pin!(flushed);
        assert!(
            tokio::time::timeout(Duration::from_millis(500), &mut flushed).await.is_err(),
            "flush returned while the table was missing"
        );
        sqlx::raw_sql("ALTER TABLE audit_log_away RENAME TO audit_log").execute(&side).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), flushed).await.expect("flush after the table came back");
        assert_eq!(stored(&store).await, (0..5).map(event).collect::<Vec<_>>());
        log.record(event(5)).await;
        log.stop().await;
        assert_eq!(stored(&store).await.len(), 6, "stop stores what is queued");
    }

    /// Issue 17: a batch the database refused for a value it held was retried forever.
    /// Now its good events are stored, a refused one sanitized, one refused even so is
    /// counted and left, and the flush returns.
    #[tokio::test]
    async fn a_batch_the_database_refuses_is_split_and_its_good_events_stored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        // Real refusals by the real database: an escape character in a detail, and an
        // actor refused whatever it holds.
        sqlx::raw_sql(
            "CREATE TRIGGER refuse_escape BEFORE INSERT ON audit_log \
                WHEN instr(NEW.detail, char(27)) > 0 BEGIN SELECT RAISE(ABORT, 'escape'); END; \
             CREATE TRIGGER refuse_actor BEFORE INSERT ON audit_log \
                WHEN NEW.actor = 'refused' BEGIN SELECT RAISE(ABORT, 'actor'); END;",
        )
        .execute(&side)
        .await
        .unwrap();
        let metrics = super::WriterMetrics::default();
        let log = AuditLog::new(Arc::new(store.clone())).with_metrics(metrics.clone());
        let escaped = AuditEvent { detail: Some("red \u{1b}[31m".to_owned()), ..event(1) };
        let refused = AuditEvent { actor: Some("refused".to_owned()), ..event(3) };
        for e in [event(0), escaped.clone(), event(2), refused, event(4)] {
            log.record(e).await;
        }
        tokio::time::timeout(Duration::from_secs(10), log.flush()).await.expect("the flush returns");
        let note = "[sanitized: the database refused the event as recorded]";
        let clean = AuditEvent { detail: Some(format!("red \u{FFFD}[31m {note}")), ..escaped };
        assert_eq!(stored(&store).await, [event(0), clean, event(2), event(4)]);
        assert_eq!((metrics.sanitized.get(), metrics.unstorable.get(), metrics.failing.get()), (1, 1, 0));
        // The writer goes on as before.
        log.record(event(5)).await;
        log.flush().await;
        assert_eq!(stored(&store).await.len(), 5);
    }

    /// The same on PostgreSQL, whose `TEXT` refuses U+0000: the event is stored with the
    /// NUL replaced, the rest of its batch as it was.
    #[tokio::test]
    async fn a_nul_refused_by_postgres_is_stored_sanitized_and_its_batch_kept() {
        let pg = berth_testkit::Postgres::start();
        let store = Arc::new(berth_meta::PgStore::open(&pg.database("audit")).await.unwrap());
        let log = AuditLog::new(Arc::clone(&store) as Arc<dyn AuditStore>);
        let nul = AuditEvent { actor: Some("\0admin".to_owned()), ..event(1) };
        for e in [event(0), nul, event(2)] {
            log.record(e).await;
        }
        tokio::time::timeout(Duration::from_secs(10), log.flush()).await.expect("the flush returns");
        let records = store.query(&AuditQuery { limit: 10, ..Default::default() }).await.unwrap();
        let actors: Vec<_> = records.iter().rev().map(|r| r.event.actor.clone().unwrap()).collect();
        assert_eq!(actors, ["user0", "\u{FFFD}admin", "user2"]);
    }

    /// A writer retrying an append that keeps failing (the disk full, the table gone) did
    /// not read the stop queued behind it, and `berth serve` never ended. Now the stop
    /// ends the retries after `STOP_PATIENCE`.
    #[tokio::test]
    async fn a_stop_ends_an_append_that_keeps_failing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.db");
        let store = SqliteStore::open(&path).await.unwrap();
        let side = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
        sqlx::raw_sql("ALTER TABLE audit_log RENAME TO audit_log_away").execute(&side).await.unwrap();
        let log = AuditLog::new(Arc::new(store));
        log.start();
        log.record(event(0)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let started = std::time::Instant::now();
        let limit = super::STOP_PATIENCE + Duration::from_secs(10);
        tokio::time::timeout(limit, log.stop()).await.expect("the stop returned");
        assert!(started.elapsed() >= super::STOP_PATIENCE - Duration::from_secs(1), "{:?}", started.elapsed());
    }

    fn pull(at_ms: i64, actor: &str, resource: &str) -> AuditEvent {
        AuditEvent {
            operation: "manifest.pull".to_owned(),
            actor: Some(actor.to_owned()),
            resource: Some(resource.to_owned()),
            project: Some("library".to_owned()),
            ..event(at_ms as usize)
        }
    }

    /// Pulls queued before the writer starts reach it together: identical ones (but for
    /// their time) become one entry with their count at the first one's time; a pull by
    /// someone else, of something else, and every other operation stay apart, in order.
    #[tokio::test]
    async fn pulls_queued_together_are_stored_once_with_their_count() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("berth.db")).await.unwrap();
        let log = AuditLog::new(Arc::new(store.clone()));
        let queued = [
            pull(10, "ann", "library/a:1"),
            event(11),
            pull(12, "ann", "library/a:1"),
            pull(13, "bob", "library/a:1"),
            pull(14, "ann", "library/a:2"),
            pull(15, "ann", "library/a:1"),
            event(11),
        ];
        for e in queued.clone() {
            log.record(e).await;
        }
        log.flush().await;
        let expected = vec![
            AuditEvent { count: 3, ..queued[0].clone() },
            queued[1].clone(),
            queued[3].clone(),
            queued[4].clone(),
            queued[6].clone(),
        ];
        assert_eq!(stored(&store).await, expected);
    }
}
