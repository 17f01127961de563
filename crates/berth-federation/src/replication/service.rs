//! The replication service: registries and rules managed through it, executions started
//! by a manual run or by the outbox's events, and the executor that works their tasks.
//!
//! The executor runs on every node. Each pass reads the rules; for each enabled rule with
//! room (its concurrency less the tasks this node runs for it) it takes the rule's lease
//! (`replication:<rule>`: one node works a rule at a time), claims due tasks and runs each
//! as a task of its own. A claim lasts [`CLAIM`], renewed while the copy runs: a node that
//! dies mid-copy leaves its tasks due again once it runs out, and the copy starts over where the destination is (every blob
//! and manifest it has is skipped after a `HEAD`), so an artifact is neither lost nor
//! copied twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_core::{Digest, Error, ErrorKind, Reference, RepoName, Tag};
use berth_jobs::Jobs;
use berth_meta::{
    Direction, EventKind, Execution, NewEvent, NewTask, OutboxStore, ReplicationRegistry, ReplicationRule,
    ReplicationStore, Task, TaskOp, TaskResult, Trigger,
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::copy::{Copier, Placed};
use super::pull::Puller;
use super::spec::{self, Matcher, RegistrySpec, RegistryView, RuleSpec, RuleView};
use crate::client::{Sent, Timeouts, UpstreamClient};
use crate::seal::SealKey;

/// How long a claimed task is this node's unless renewed (every [`RENEW`] while it runs);
/// another node, or this one restarted, takes it over after that.
pub const CLAIM: Duration = Duration::from_secs(15);
const RENEW: Duration = Duration::from_secs(5);
/// How long a rule's lease lasts past a pass (renewed every pass).
const LEASE_SECS: i64 = 30;
/// Attempts of a task before it is given up (the next run copies it again).
const MAX_ATTEMPTS: u32 = 8;
const RETRY_BASE: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(600);
/// How often the executor looks for work.
const POLL: Duration = Duration::from_secs(1);
/// Finished executions are kept this long, pruned this many at a time this often.
const KEEP: Duration = Duration::from_secs(30 * 24 * 3600);
const PRUNE_BATCH: u32 = 1000;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);
/// Repositories and tags read per page when a manual run lists what to copy.
const PAGE: u32 = 1000;

/// The replication service of one node.
pub struct Replication {
    store: Arc<dyn ReplicationStore>,
    /// Where finished executions are announced.
    outbox: Arc<dyn OutboxStore>,
    jobs: Arc<Jobs>,
    key: Option<SealKey>,
    timeouts: Timeouts,
    /// Clients by registry, rebuilt when the registry changes.
    clients: Mutex<HashMap<String, (i64, Arc<UpstreamClient>)>>,
    /// Where copies to each registry have placed which blob (mounts' sources).
    placed: Mutex<HashMap<String, Arc<Placed>>>,
    /// Bandwidth shared by a rule's transfers on this node, with the limit it was made for.
    sent: Mutex<HashMap<String, Bandwidth>>,
    /// Tasks this node runs, by rule.
    running: Mutex<HashMap<String, u32>>,
    /// Their ids, whose claims the executor renews.
    claimed: Mutex<std::collections::BTreeSet<i64>>,
    /// The push rules that copy on events as of the last refresh, with their options and
    /// compiled filters, for matching the outbox's events.
    on_event: Mutex<Vec<EventRule>>,
    wake: Notify,
    tasks: TaskTracker,
}

impl Replication {
    pub fn new(
        store: Arc<dyn ReplicationStore>,
        outbox: Arc<dyn OutboxStore>,
        jobs: Arc<Jobs>,
        key: Option<SealKey>,
        timeouts: Timeouts,
    ) -> Self {
        Replication {
            store,
            outbox,
            jobs,
            key,
            timeouts,
            clients: Mutex::default(),
            sent: Mutex::default(),
            placed: Mutex::default(),
            running: Mutex::default(),
            claimed: Mutex::default(),
            on_event: Mutex::default(),
            wake: Notify::new(),
            tasks: TaskTracker::new(),
        }
    }

    pub async fn registries(&self) -> Result<Vec<RegistryView>, Error> {
        Ok(self.store.all_registries().await?.iter().map(RegistryView::from).collect())
    }

    pub async fn put_registry(&self, spec: RegistrySpec, create: bool) -> Result<RegistryView, Error> {
        let stored = self.store.all_registries().await?.into_iter().find(|r| r.name == spec.name);
        let name = spec.name.clone();
        let key = self.key.as_ref();
        let registry = spec.into_registry(stored.as_ref(), |password| match key {
            Some(key) => Ok(key.seal(&aad(&name), password)),
            None => Err(Error::new(ErrorKind::BadRequest).with_message(
                "no federation key is configured (federation.key_file), so Berth cannot store a password",
            )),
        })?;
        let stored = self.store.put_registry(&registry, create).await?;
        Ok(RegistryView::from(&stored))
    }

    pub async fn delete_registry(&self, name: &str) -> Result<bool, Error> {
        self.store.delete_registry(name).await
    }

    pub async fn rules(&self) -> Result<Vec<RuleView>, Error> {
        self.store.all_rules().await?.iter().map(RuleView::of).collect()
    }

    pub async fn rule(&self, name: &str) -> Result<ReplicationRule, Error> {
        self.store.all_rules().await?.into_iter().find(|r| r.name == name).ok_or_else(|| {
            Error::new(ErrorKind::ResourceUnknown).with_message(format!("no replication rule named {name:?}"))
        })
    }

    pub async fn put_rule(&self, spec: RuleSpec, create: bool) -> Result<RuleView, Error> {
        let stored = self.store.put_rule(&spec.into_rule()?, create).await?;
        self.refresh_rules().await?;
        RuleView::of(&stored)
    }

    pub async fn delete_rule(&self, name: &str) -> Result<bool, Error> {
        let gone = self.store.delete_rule(name).await?;
        self.refresh_rules().await?;
        Ok(gone)
    }

    /// Looks for due tasks now (new ones were written).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub fn store(&self) -> &dyn ReplicationStore {
        &*self.store
    }

    pub(crate) async fn refresh_rules(&self) -> Result<Vec<ReplicationRule>, Error> {
        let rules = self.store.all_rules().await?;
        let on_event = rules
            .iter()
            .filter(|r| r.enabled && r.on_event && r.direction == Direction::Push)
            .filter_map(|r| {
                let options = spec::options(r).ok()?;
                let matcher = Matcher::new(&options).ok()?;
                Some(EventRule { name: r.name.clone(), project: r.project.clone(), options, matcher })
            })
            .collect();
        *self.on_event.lock().unwrap() = on_event;
        Ok(rules)
    }

    /// Starts a manual run of `rule`: a task for every manifest of the project its
    /// filters match (with the tags that match), copied in the executor's passes.
    pub async fn run(&self, rule: &str) -> Result<Execution, Error> {
        self.run_as(&self.rule(rule).await?, Trigger::Manual).await
    }

    /// Starts an execution of `rule` over everything it matches.
    async fn run_as(&self, rule: &ReplicationRule, trigger: Trigger) -> Result<Execution, Error> {
        let tasks = match rule.direction {
            Direction::Push => self.local_tasks(rule).await?,
            Direction::Pull => self.remote_tasks(rule).await?,
        };
        let execution = self.store.start_execution(&rule.name, trigger, &tasks, berth_meta::now_ms()).await?;
        self.wake.notify_one();
        Ok(execution)
    }

    /// A push rule's tasks: every manifest of the project it matches.
    async fn local_tasks(&self, rule: &ReplicationRule) -> Result<Vec<NewTask>, Error> {
        let options = spec::options(rule)?;
        let matcher = Matcher::new(&options)?;
        let mut tasks = Vec::new();
        let mut last = None;
        loop {
            let repos = berth_meta::project_repositories(&*self.jobs.meta, &rule.project, last.clone(), PAGE).await?;
            for name in &repos {
                if matcher.repository(name) {
                    tasks.extend(self.repository_tasks(rule, name, &matcher).await?);
                }
            }
            if repos.len() < PAGE as usize {
                break;
            }
            last = repos.last().cloned();
        }
        Ok(tasks)
    }

    /// A pull rule's tasks: every manifest the other registry has under a matching name
    /// and tag (the names a rule spells out are asked for; globs match its catalog).
    async fn remote_tasks(&self, rule: &ReplicationRule) -> Result<Vec<NewTask>, Error> {
        let options = spec::options(rule)?;
        let matcher = Matcher::new(&options)?;
        let client = self.client(&rule.registry).await?;
        let mut names: Vec<String> = options.repositories.iter().filter(|p| spec::is_literal(p)).cloned().collect();
        if options.repositories.is_empty() || options.repositories.iter().any(|p| !spec::is_literal(p)) {
            names.extend(client.catalog().await?.into_iter().filter(|n| matcher.repository(n)));
        }
        names.sort();
        names.dedup();
        let mut tasks = Vec::new();
        for name in names {
            let Some(tags) = client.tags(&name).await? else { continue };
            let mut by_digest: Vec<(Digest, Vec<String>)> = Vec::new();
            for tag in tags.into_iter().filter(|t| matcher.tag(t)) {
                let digest = match client.head_manifest(&name, &tag).await? {
                    Some(Some(digest)) => digest,
                    // No digest in the answer: the manifest's bytes say it.
                    Some(None) => match client.manifest(&name, &tag).await? {
                        Some(m) => Digest::of(&m.body),
                        None => continue,
                    },
                    None => continue,
                };
                match by_digest.iter_mut().find(|(d, _)| *d == digest) {
                    Some((_, tags)) => tags.push(tag),
                    None => by_digest.push((digest, vec![tag])),
                }
            }
            tasks.extend(by_digest.into_iter().map(|(digest, tags)| NewTask {
                rule: rule.name.clone(),
                op: TaskOp::Copy,
                repo: name.clone(),
                digest: Some(digest.to_string()),
                tags,
            }));
        }
        Ok(tasks)
    }

    /// A task per manifest of `name` with a matching tag, its matching tags with it.
    async fn repository_tasks(&self, rule: &ReplicationRule, name: &str, m: &Matcher) -> Result<Vec<NewTask>, Error> {
        let repo = RepoName::parse(name)?;
        let mut by_digest: Vec<(Digest, Vec<String>)> = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let Some(page) = self.jobs.meta.tags(&repo, last.as_deref(), PAGE).await? else { break };
            for tag in page.items.iter().filter(|t| m.tag(t)) {
                let reference = Reference::Tag(Tag::parse(tag)?);
                let Some(record) = self.jobs.meta.manifest(&repo, &reference).await? else { continue };
                match by_digest.iter_mut().find(|(d, _)| *d == record.digest) {
                    Some((_, tags)) => tags.push(tag.clone()),
                    None => by_digest.push((record.digest, vec![tag.clone()])),
                }
            }
            if !page.more {
                break;
            }
            last = page.items.last().cloned();
        }
        Ok(by_digest
            .into_iter()
            .map(|(digest, tags)| NewTask {
                rule: rule.name.clone(),
                op: TaskOp::Copy,
                repo: name.to_owned(),
                digest: Some(digest.to_string()),
                tags,
            })
            .collect())
    }

    /// The tasks the outbox's `event` makes for the rules that copy on events: a push of a
    /// matching repository with a matching tag, or untagged when the rule copies referrers
    /// (which of those go is decided when the task runs: [`Replication::untagged_goes`]);
    /// a manifest delete when it propagates deletes.
    pub fn event_tasks(&self, event: &NewEvent) -> Vec<NewTask> {
        let rules = self.on_event.lock().unwrap();
        let project = event.kind.project_of(&event.repo);
        let mut tasks = Vec::new();
        for rule in rules.iter().filter(|r| r.project == project) {
            let (options, m) = (&rule.options, &rule.matcher);
            if !m.repository(&event.repo) {
                continue;
            }
            let (op, tags) = match event.kind {
                EventKind::ArtifactPushed => {
                    let tags: Vec<String> = event.tags.iter().filter(|t| m.tag(t)).cloned().collect();
                    if tags.is_empty() && !(event.tags.is_empty() && options.referrers) {
                        continue;
                    }
                    (TaskOp::Copy, tags)
                }
                EventKind::ArtifactDeleted if options.deletes => (TaskOp::Delete, Vec::new()),
                _ => continue,
            };
            tasks.push(NewTask {
                rule: rule.name.clone(),
                op,
                repo: event.repo.clone(),
                digest: event.digest.clone(),
                tags,
            });
        }
        tasks
    }

    /// Works tasks until `shutdown` is cancelled; then lets the ones running finish for
    /// up to `grace` (the rest are taken over when their claim runs out).
    pub async fn execute(self: Arc<Self>, shutdown: CancellationToken, grace: Duration) {
        let mut pruned = Instant::now() - PRUNE_EVERY;
        let mut renewed = Instant::now();
        loop {
            if renewed.elapsed() >= RENEW {
                renewed = Instant::now();
                let ids: Vec<i64> = self.claimed.lock().unwrap().iter().copied().collect();
                let until = berth_meta::now_ms() + CLAIM.as_millis() as i64;
                if let Err(e) = self.store.extend_claims(&ids, until).await {
                    tracing::warn!(error = %e, "renewing replication claims failed; they may be taken over");
                }
            }
            if let Err(e) = self.pass().await {
                tracing::warn!(error = %e, "a replication pass failed; trying again");
            } else if pruned.elapsed() >= PRUNE_EVERY {
                pruned = Instant::now();
                let before = berth_meta::now_ms() - KEEP.as_millis() as i64;
                match self.store.prune_executions(before, PRUNE_BATCH).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(deleted = n, "replication executions pruned"),
                    Err(e) => tracing::warn!(error = %e, "pruning replication executions failed"),
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(POLL) => {}
                () = self.wake.notified() => {}
            }
        }
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("replication tasks still running at shutdown; another pass takes them over");
        }
    }

    /// Claims and starts the due tasks of every rule there is room for.
    pub async fn pass(self: &Arc<Self>) -> Result<(), Error> {
        let rules = self.refresh_rules().await?;
        for rule in rules.iter().filter(|r| r.enabled && r.cron.is_some()) {
            if let Err(e) = self.scheduled(rule).await {
                tracing::warn!(rule = %rule.name, error = %e, "a scheduled replication run failed to start");
            }
        }
        for rule in rules.into_iter().filter(|r| r.enabled) {
            let concurrency = match spec::options(&rule) {
                Ok(o) => o.concurrency.unwrap_or(spec::DEFAULT_CONCURRENCY),
                Err(e) => {
                    tracing::error!(rule = %rule.name, error = %e, "a replication rule is left out");
                    continue;
                }
            };
            let running = self.running.lock().unwrap().get(&rule.name).copied().unwrap_or(0);
            let room = concurrency.saturating_sub(running);
            // Nothing to do: no write (the lease), only this read.
            if running == 0 && self.store.pending_tasks(&rule.name).await? == 0 {
                continue;
            }
            let lease = format!("replication:{}", rule.name);
            // Held while tasks run here, renewed each pass; taken when there is room.
            if !self.jobs.meta.try_lease(&lease, &self.jobs.node_id, LEASE_SECS).await? || room == 0 {
                continue;
            }
            let now = berth_meta::now_ms();
            let claimed = self.store.claim_tasks(&rule.name, now, now + CLAIM.as_millis() as i64, room).await?;
            for task in claimed {
                *self.running.lock().unwrap().entry(rule.name.clone()).or_default() += 1;
                self.claimed.lock().unwrap().insert(task.id);
                let (this, rule) = (Arc::clone(self), rule.clone());
                self.tasks.spawn(async move {
                    let result = this.work(&rule, &task).await;
                    match this.store.record_task(&result).await {
                        Ok(Some(done)) => this.finished(&rule, &done).await,
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, task = task.id, "recording a replication task failed"),
                    }
                    this.claimed.lock().unwrap().remove(&task.id);
                    if let Some(n) = this.running.lock().unwrap().get_mut(&rule.name) {
                        *n = n.saturating_sub(1);
                    }
                    this.wake.notify_one();
                });
            }
        }
        Ok(())
    }

    /// Logs a finished execution and announces it to the project's webhooks (an outbox
    /// event of its own: the execution is recorded already).
    async fn finished(&self, rule: &ReplicationRule, done: &Execution) {
        tracing::info!(rule = %rule.name, execution = done.id, state = done.state.as_str(),
            succeeded = done.succeeded, failed = done.failed, "replication execution finished");
        let summary = serde_json::json!({
            "rule": rule.name,
            "registry": rule.registry,
            "direction": rule.direction.as_str(),
            "execution": done.id,
            "trigger": done.trigger.as_str(),
            "state": done.state.as_str(),
            "total": done.total,
            "succeeded": done.succeeded,
            "failed": done.failed,
            "bytes": done.bytes,
            "started_ms": done.started_ms,
            "finished_ms": done.finished_ms,
        });
        let event = NewEvent {
            kind: EventKind::ReplicationFinished,
            repo: rule.project.clone(),
            digest: None,
            media_type: None,
            tags: Vec::new(),
            size: Some(done.bytes),
            detail: Some(summary.to_string()),
            at_ms: berth_meta::now_ms(),
        };
        if let Err(e) = self.outbox.append(&[event]).await {
            tracing::warn!(rule = %rule.name, error = %e, "announcing a finished replication failed");
        }
    }

    /// Starts `rule`'s scheduled run if it is due (on the node holding its lease), and sets
    /// its next one.
    async fn scheduled(&self, rule: &ReplicationRule) -> Result<(), Error> {
        let cron = spec::schedule(rule.cron.as_deref().unwrap_or_default())?;
        let now = berth_meta::now_ms();
        match rule.next_run_ms {
            None => {
                self.store.set_next_run(&rule.name, spec::next_run(&cron, now)).await?;
            }
            Some(at) if at <= now => {
                let lease = format!("replication:{}", rule.name);
                if self.jobs.meta.try_lease(&lease, &self.jobs.node_id, LEASE_SECS).await? {
                    self.store.set_next_run(&rule.name, spec::next_run(&cron, now)).await?;
                    let execution = self.run_as(rule, Trigger::Schedule).await?;
                    tracing::info!(rule = %rule.name, execution = execution.id, tasks = execution.total,
                        "scheduled replication run started");
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Does one task once and says how it went.
    async fn work(&self, rule: &ReplicationRule, task: &Task) -> TaskResult {
        let started = Instant::now();
        let outcome = self.copy_or_delete(rule, task).await;
        let (bytes, error, final_error) = match outcome {
            Ok(bytes) => (bytes, None, false),
            // Gone here since: nothing left to copy, and trying again will not change that.
            Err(e) if matches!(e.kind, ErrorKind::ManifestUnknown | ErrorKind::BlobUnknown) => {
                (0, Some(e.message().to_owned()), true)
            }
            Err(e) => (0, Some(e.message().to_owned()), false),
        };
        let attempts = task.attempts + 1;
        let retry_at_ms = match &error {
            Some(_) if !final_error && attempts < MAX_ATTEMPTS => {
                Some(berth_meta::now_ms() + crate::backoff(RETRY_BASE, RETRY_MAX, attempts).as_millis() as i64)
            }
            _ => None,
        };
        if let Some(e) = &error {
            tracing::warn!(rule = %rule.name, task = task.id, repo = %task.repo, error = %e, retry = retry_at_ms.is_some(),
                "a replication task failed");
        }
        self.jobs.recorder.job_run(
            "replication-task",
            if error.is_none() { berth_jobs::JobOutcome::Ok } else { berth_jobs::JobOutcome::Failed },
            started.elapsed(),
        );
        TaskResult {
            task: task.id,
            at_ms: berth_meta::now_ms(),
            bytes,
            duration_ms: started.elapsed().as_millis() as u64,
            error,
            retry_at_ms,
        }
    }

    async fn copy_or_delete(&self, rule: &ReplicationRule, task: &Task) -> Result<u64, Error> {
        let options = spec::options(rule)?;
        let client = self.client(&rule.registry).await?;
        let repo = RepoName::parse(&task.repo)?;
        let digest = Digest::parse(task.digest.as_deref().unwrap_or_default())?;
        if rule.direction == Direction::Pull {
            let local = RepoName::parse(&spec::local_name(&rule.project, &task.repo))?;
            let puller = Puller {
                jobs: &self.jobs,
                client: &client,
                referrers: options.referrers,
                overwrite: options.overwrite,
            };
            return Ok(puller.pull(&task.repo, &digest, &local, &task.tags).await?.bytes);
        }
        let dest = spec::destination(&options, repo.as_str());
        match task.op {
            TaskOp::Copy => {
                if task.tags.is_empty() && !self.untagged_goes(&client, &repo, &digest, &dest).await? {
                    return Ok(0);
                }
                let sent = self.sent_of(&rule.name, options.bandwidth_bytes_per_sec);
                let placed = Arc::clone(self.placed.lock().unwrap().entry(rule.registry.clone()).or_default());
                let copier = Copier {
                    jobs: &self.jobs,
                    client: &client,
                    sent: &sent,
                    referrers: options.referrers,
                    overwrite: options.overwrite,
                    placed: &placed,
                };
                let copied = copier.copy(&repo, &digest, &dest, &task.tags).await?;
                if !copied.tags_kept.is_empty() {
                    tracing::info!(rule = %rule.name, repo = %dest, tags = ?copied.tags_kept,
                        "destination tags point elsewhere and the rule does not overwrite: kept");
                }
                Ok(copied.bytes)
            }
            TaskOp::Delete => client.delete_manifest(&dest, &digest).await.map(|_| 0),
        }
    }

    /// Whether an untagged push is copied on its own: a referrer whose subject is at the
    /// destination already. A child of an index goes with its index, and so does a
    /// referrer of a subject not copied yet (a copy brings the referrers along); a subject
    /// the rule's filters leave out never gets there, and neither do its referrers.
    async fn untagged_goes(
        &self,
        client: &UpstreamClient,
        repo: &RepoName,
        digest: &Digest,
        dest: &str,
    ) -> Result<bool, Error> {
        let Some(record) = self.jobs.meta.manifest(repo, &Reference::Digest(digest.clone())).await? else {
            return Err(Error::new(ErrorKind::ManifestUnknown).with_message(format!("{repo}@{digest} is gone")));
        };
        let parsed = berth_core::manifest::parse(Some(&record.media_type), &record.body)?;
        match parsed.subject {
            Some(subject) => Ok(client.head_manifest(dest, subject.as_str()).await?.is_some()),
            None => Ok(false),
        }
    }

    /// The rule's bandwidth, shared by its transfers on this node (made anew when the rule's
    /// limit changed).
    fn sent_of(&self, rule: &str, rate: Option<u64>) -> Arc<Sent> {
        let mut sent = self.sent.lock().unwrap();
        match sent.get(rule) {
            Some((r, s)) if *r == rate => Arc::clone(s),
            _ => {
                let fresh = Arc::new(Sent::new(rate));
                sent.insert(rule.to_owned(), (rate, Arc::clone(&fresh)));
                fresh
            }
        }
    }

    /// The client of registry `name`, as stored now.
    async fn client(&self, name: &str) -> Result<Arc<UpstreamClient>, Error> {
        let registry = self.store.all_registries().await?.into_iter().find(|r| r.name == name).ok_or_else(|| {
            Error::new(ErrorKind::ResourceUnknown).with_message(format!("no replication registry named {name:?}"))
        })?;
        if let Some((at, client)) = self.clients.lock().unwrap().get(name)
            && *at == registry.updated_at
        {
            return Ok(Arc::clone(client));
        }
        let client = Arc::new(self.build_client(&registry)?);
        self.clients.lock().unwrap().insert(name.to_owned(), (registry.updated_at, Arc::clone(&client)));
        Ok(client)
    }

    fn build_client(&self, r: &ReplicationRegistry) -> Result<UpstreamClient, Error> {
        let credentials = match (&r.username, &r.sealed_password) {
            (Some(user), Some(sealed)) => {
                let key = self.key.as_ref().ok_or_else(|| {
                    Error::internal(format!(
                        "registry {} has a stored password but no federation key is configured",
                        r.name
                    ))
                })?;
                Some((user.clone(), key.open(&aad(&r.name), sealed)?))
            }
            (Some(user), None) => Some((user.clone(), String::new())),
            _ => None,
        };
        Ok(UpstreamClient::new(&r.name, &r.url, r.ca_pem.as_deref(), credentials, self.timeouts)?.for_replication())
    }
}

/// A rule's limit (bytes per second) and what its transfers sent under it.
type Bandwidth = (Option<u64>, Arc<Sent>);

/// A push rule that copies on events, ready to match them.
struct EventRule {
    name: String,
    project: String,
    options: spec::RuleOptions,
    matcher: Matcher,
}

/// What a registry's password is sealed with, beside the key: its name and purpose.
fn aad(name: &str) -> String {
    format!("replication registry {name} password")
}
