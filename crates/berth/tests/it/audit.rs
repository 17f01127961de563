//! The audit log seen from outside: manifest pushes, pulls and deletes made over HTTP
//! appear in the store with who, from where, what and how it ended; many concurrent
//! pulls lose no event; the pruning job removes only entries past the retention.
//!
//! The registry runs in-process (on the stores `BERTH_TEST_BACKEND` names), served by
//! Berth's own accept loop so that requests carry the client's address, and the test
//! reads the log through the server's store handle (the query API is not here yet).

use std::sync::Arc;
use std::time::Duration;

use berth_jobs::prune::AuditPruner;
use berth_meta::now_ms;
use berth_meta::{AuditEvent, AuditQuery, AuditRecord};
use berth_server::Registry;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::api::{Api, image_manifest, sha256};
use crate::support::{Backend, admin};

/// A registry serving on loopback (its audit writer runs from `berth::open`); the
/// policy and scrub tests use it too.
pub(crate) struct Server {
    pub(crate) registry: Arc<Registry>,
    pub(crate) api: Api,
    shutdown: CancellationToken,
    _node: berth::Node,
    _backend: Backend,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start() -> Server {
        Server::start_with(|_| {}).await
    }

    pub(crate) async fn start_with(configure: impl FnOnce(&mut berth::Config)) -> Server {
        let backend = Backend::from_env();
        let dir = tempfile::tempdir().unwrap();
        let mut config = berth::Config::with_data_dir(dir.path().join("data"));
        backend.configure(&mut config);
        crate::support::configure_access(&mut config);
        configure(&mut config);
        let node = berth::open(&config).await.unwrap();
        let registry = Arc::clone(&node.registry);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api::new(format!("http://{}", listener.local_addr().unwrap()));
        let shutdown = CancellationToken::new();
        let app = berth_server::app(Arc::clone(&registry));
        let limits = berth_server::listen::ServeLimits::default();
        tokio::spawn(berth_server::listen::serve(listener, app, limits, shutdown.clone()));
        Server { registry, api, shutdown, _node: node, _backend: backend, _dir: dir }
    }

    /// The blob store seen from outside the server.
    pub(crate) fn storage(&self) -> crate::support::Storage {
        self._backend.storage(&self._dir.path().join("data"))
    }

    /// Every entry, oldest first.
    pub(crate) async fn log(&self) -> Vec<AuditRecord> {
        let query = AuditQuery { limit: 100_000, ..Default::default() };
        let mut records = self.registry.jobs.audit.store().query(&query).await.unwrap();
        records.reverse();
        records
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn expected(
    operation: &str,
    resource: &str,
    outcome: &str,
    detail: Option<&str>,
) -> (String, String, String, Option<String>) {
    (operation.to_owned(), resource.to_owned(), outcome.to_owned(), detail.map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_push_pull_and_delete_are_audited_with_actor_address_resource_and_outcome() {
    let server = Server::start().await;
    let api = &server.api;
    let started = now_ms();
    let (digest, _) = api.push_image("audited/app", "v1", "application/vnd.oci.image.manifest.v1+json", 7).await;
    assert_eq!(api.send(Method::GET, "/v2/audited/app/manifests/v1").await.status(), StatusCode::OK);
    assert_eq!(api.send(Method::HEAD, "/v2/audited/app/manifests/v1").await.status(), StatusCode::OK);
    let by_digest = format!("/v2/audited/app/manifests/{digest}");
    assert_eq!(api.send(Method::GET, &by_digest).await.status(), StatusCode::OK);
    assert_eq!(api.send(Method::GET, "/v2/audited/app/manifests/nope").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(api.send(Method::DELETE, "/v2/audited/app/manifests/v1").await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.send(Method::DELETE, &by_digest).await.status(), StatusCode::ACCEPTED);
    // A one-component name belongs to `library`.
    let never_pushed = sha256(b"never pushed");
    let body = image_manifest("application/vnd.oci.image.manifest.v1+json", (&never_pushed, 12), &[], None);
    let r = api.put_manifest("solo", "latest", "application/vnd.oci.image.manifest.v1+json", &body).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "the config blob is unknown");
    server.registry.jobs.audit.flush().await;
    let ended = now_ms();

    let log = server.log().await;
    let seen: Vec<_> = log
        .iter()
        .map(|r| {
            let e = &r.event;
            (e.operation.clone(), e.resource.clone().unwrap(), e.outcome.clone(), e.detail.clone())
        })
        .collect();
    let tagged = "audited/app:v1";
    let pinned = format!("audited/app@{digest}");
    assert_eq!(
        seen,
        [
            expected("manifest.push", tagged, "success", Some(&digest)),
            expected("manifest.pull", tagged, "success", Some(&digest)),
            expected("manifest.pull", &pinned, "success", None),
            expected("manifest.pull", "audited/app:nope", "failure", Some("MANIFEST_UNKNOWN")),
            expected("tag.delete", tagged, "success", None),
            expected("manifest.delete", &pinned, "success", None),
            expected("manifest.push", "solo:latest", "failure", Some("MANIFEST_BLOB_UNKNOWN")),
        ],
        "HEAD is not a pull"
    );
    // The client sent the admin's credentials: the actor is whom the server's own
    // authorizer takes them for (no one while it is `AllowAll`, `admin` after).
    let basic = admin().basic();
    let credentials = berth_access::Credentials {
        authorization: Some(basic.as_bytes()),
        host: None,
        peer: Some([127, 0, 0, 1].into()),
    };
    let principal = server.registry.auth.authorize(credentials, berth_access::Access::Base).await.unwrap();
    for record in &log {
        let AuditEvent { at_ms, actor, address, project, .. } = &record.event;
        assert!((started..=ended).contains(at_ms), "{record:?}");
        assert_eq!(actor.as_deref(), principal.name());
        assert_eq!(address, "127.0.0.1");
        let project = project.as_deref().unwrap();
        assert_eq!(
            project,
            if record.event.resource.as_deref().unwrap().starts_with("solo") { "library" } else { "audited" }
        );
    }
    assert!(log.windows(2).all(|w| w[0].id < w[1].id), "ids increase in the order of recording");
}

/// An authenticated caller refused an access is recorded (`access.denied`, with the name
/// its credentials proved, what it asked for and why), whether it sent Basic credentials
/// or a bearer token, on `/v2` and on the management API; several identical refusals
/// queued together are one entry with their count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_authenticated_callers_are_audited_with_what_they_asked() {
    let server = Server::start().await;
    let admin_api = &server.api;
    let base = admin_api.base.clone();
    let user = serde_json::json!({"name": "mallory", "password": "mallory-has-no-rights"});
    let r = admin_api.req(Method::POST, "/api/v1/users").json(&user).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let project = serde_json::json!({"name": "locked"});
    let r = admin_api.req(Method::POST, "/api/v1/projects").json(&project).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    let mallory = crate::support::Creds::new("mallory", "mallory-has-no-rights");
    let basic = Api::as_user(base.clone(), Some(&mallory));
    for _ in 0..3 {
        let r = basic.send(Method::POST, "/v2/locked/app/blobs/uploads/").await;
        crate::api::assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    }
    let r = basic.send(Method::GET, "/api/v1/users").await;
    crate::api::assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    let token: serde_json::Value = basic
        .req(Method::GET, "/token?service=berth&scope=repository:locked/app:pull")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bearer = Api::with_token(base, token["token"].as_str().unwrap());
    let r = bearer.send(Method::GET, "/v2/locked/app/tags/list").await;
    crate::api::assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;

    server.registry.jobs.audit.flush().await;
    let denied: Vec<AuditEvent> =
        server.log().await.into_iter().map(|r| r.event).filter(|e| e.operation == "access.denied").collect();
    let seen: Vec<_> = denied
        .iter()
        .map(|e| {
            let detail = e.detail.as_deref().unwrap_or("");
            (e.actor.as_deref(), e.project.as_deref(), e.resource.as_deref(), detail.split(':').next(), &e.outcome)
        })
        .collect();
    let mallory = Some("mallory");
    let denied_outcome = "denied".to_owned();
    let push = (mallory, Some("locked"), Some("locked/app"), Some("push"), &denied_outcome);
    let system = (mallory, None, None, Some("system"), &denied_outcome);
    let pull = (mallory, Some("locked"), Some("locked/app"), Some("pull"), &denied_outcome);
    assert!(seen.contains(&push) && seen.contains(&system) && seen.contains(&pull), "{denied:#?}");
    let pushes: u32 =
        denied.iter().filter(|e| e.detail.as_deref().unwrap_or("").starts_with("push")).map(|e| e.count).sum();
    assert_eq!(pushes, 3, "each refused push counted once: {denied:#?}");
    assert!(denied.iter().all(|e| e.address == "127.0.0.1"), "{denied:#?}");
}

/// Issue 17: a NUL in a project name in a management URL, or in a Basic user name, was
/// copied into an audit event; PostgreSQL's `TEXT` refuses U+0000, the writer retried that
/// batch forever, and once the queue filled every audited request hung. Now each is a 400
/// (or an unreadable credential) before anything else happens, pulls after them answer
/// at once, and the events around them are all stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_in_a_user_or_project_name_stalls_no_audit_write() {
    let server = Server::start().await;
    let api = &server.api;
    let base = api.base.clone();
    api.push_image("nul/app", "v1", "application/vnd.oci.image.manifest.v1+json", 11).await;
    let user = serde_json::json!({"name": "plain", "password": "plain-user-password"});
    let r = api.req(Method::POST, "/api/v1/users").json(&user).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let plain = Api::as_user(base.clone(), Some(&crate::support::Creds::new("plain", "plain-user-password")));
    for path in ["/api/v1/projects/a%00b/members", "/api/v1/audit?actor=%00x", "/token?service=berth&account=%00x"] {
        let r = plain.send(Method::GET, path).await;
        crate::api::assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
    }
    let r = api.send(Method::GET, "/v2/_catalog?last=a%00").await;
    crate::api::assert_error(r, StatusCode::BAD_REQUEST, "UNSUPPORTED").await;
    let form = "grant_type=password&service=berth&username=%00admin&password=wrong&client_id=test";
    let r = crate::support::client_as(None).build().unwrap().post(format!("{base}/token")).body(form);
    let r = r.header("content-type", "application/x-www-form-urlencoded").send().await.unwrap();
    crate::api::assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;
    let nul = Api::as_user(base.clone(), Some(&crate::support::Creds::new("\0admin", "wrong")));
    for _ in 0..3 {
        let r = nul.send(Method::GET, "/v2/nul/app/manifests/v1").await;
        crate::api::assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
    let robot = serde_json::json!({
        "name": "ci", "description": "a\u{0}b", "grants": [{"project": "nul", "permissions": ["pull"]}]
    });
    let r = api.req(Method::POST, "/api/v1/robots").json(&robot).send().await.unwrap();
    crate::api::assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;

    for _ in 0..20 {
        let pull = api.send(Method::GET, "/v2/nul/app/manifests/v1");
        let r = tokio::time::timeout(Duration::from_secs(1), pull).await.expect("a pull answered within 1 s");
        assert_eq!(r.status(), StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(10), server.registry.jobs.audit.flush())
        .await
        .expect("the audit writer stores what was queued");
    let log: Vec<AuditEvent> = server.log().await.into_iter().map(|r| r.event).collect();
    let count = |op: &str| log.iter().filter(|e| e.operation == op).map(|e| e.count).sum::<u32>();
    assert_eq!((count("manifest.push"), count("manifest.pull"), count("user.create")), (1, 20, 1), "{log:#?}");
    let text = |e: &AuditEvent| [e.actor.clone(), e.project.clone(), e.resource.clone(), e.detail.clone()];
    assert!(log.iter().flat_map(text).flatten().all(|s| !s.contains('\0')), "{log:#?}");
}

/// Many more pulls at once than fit in one batch, through the stop that ends a server:
/// each one is counted, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_lose_no_audit_event() {
    let server = Server::start().await;
    let api = &server.api;
    let (_, _) = api.push_image("busy/app", "v1", "application/vnd.oci.image.manifest.v1+json", 3).await;
    const PULLS: usize = 3000;
    let statuses: Vec<StatusCode> = futures_util::stream::iter(0..PULLS)
        .map(|_| async { api.send(Method::GET, "/v2/busy/app/manifests/v1").await.status() })
        .buffer_unordered(64)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == StatusCode::OK));
    // The stop that ends `berth serve`: what is queued is stored first.
    server.registry.jobs.audit.stop().await;
    let log = server.log().await;
    // Identical pulls queued together are one entry with their count: the counts add up
    // to every pull, each counted once.
    let pulls: Vec<_> = log.iter().filter(|r| r.event.operation == "manifest.pull").collect();
    assert_eq!(pulls.iter().map(|r| r.event.count as usize).sum::<usize>(), PULLS);
    assert_eq!(log.len(), pulls.len() + 1, "the push and the pulls, nothing else");
    let mut ids: Vec<i64> = log.iter().map(|r| r.id).collect();
    ids.dedup();
    assert_eq!(ids.len(), log.len());
}

fn event(at_ms: i64, n: usize) -> AuditEvent {
    AuditEvent {
        at_ms,
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

/// More old entries than one statement deletes, and recent ones on both sides of the
/// boundary: one pass of the job removes exactly the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruning_job_removes_only_entries_past_the_retention() {
    let server = Server::start().await;
    let store = server.registry.jobs.audit.store();
    let day = 24 * 3600 * 1000;
    let now = now_ms();
    let old: Vec<_> = (0..12_000).map(|i| event(now - 120 * day + i as i64, i)).collect();
    for chunk in old.chunks(2000) {
        store.append(chunk).await.unwrap();
    }
    let kept = vec![event(now - 89 * day, 1), event(now - day, 2), event(now, 3)];
    store.append(&[event(now - 91 * day, 0), kept[0].clone()]).await.unwrap();
    store.append(&kept[1..]).await.unwrap();

    let pruner = AuditPruner::new(Arc::clone(&server.registry.jobs), Duration::from_secs(90 * 24 * 3600));
    assert_eq!(pruner.run_once().await.unwrap(), 12_001);
    let left: Vec<AuditEvent> = server.log().await.into_iter().map(|r| r.event).collect();
    assert_eq!(left, kept);
    assert_eq!(pruner.run_once().await.unwrap(), 0, "a second pass finds nothing");
}
