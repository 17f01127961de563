//! Webhooks over real sockets, against a real HTTP receiver started by each test (an axum
//! server on loopback that records what it gets and answers as the test tells it: 200,
//! 500, or never). Managed through the management API; every body's HMAC is checked here
//! with an HMAC-SHA256 written from RFC 2104 over `sha2` (not Berth's own code); a push is
//! seen as a CloudEvent and as Harbor's JSON; a 500 is retried with the same event id; what
//! is in the outbox survives a restart; failures in a row disable the webhook with an audit
//! entry; a receiver that never answers costs the pushes nothing (measured against the same
//! pushes with no webhook); pulls arrive coalesced; a quota's refusal is an event too.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use crate::api::Api;
use crate::management::Mgmt;
use crate::support::{Creds, TestServer, admin};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const SECRET: &str = "webhook-test-secret";

/// What the receiver answers.
const ANSWER_OK: u8 = 0;
const ANSWER_500: u8 = 1;
const ANSWER_NEVER: u8 = 2;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    headers: HeaderMap,
    body: Vec<u8>,
    /// What it answered.
    answered: u8,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn event_id(&self) -> &str {
        self.header("x-berth-event-id").expect("X-Berth-Event-Id")
    }
}

#[derive(Default)]
pub(crate) struct Receiver {
    answer: AtomicU8,
    got: Mutex<Vec<Received>>,
    /// Requests still waiting for an answer that never comes.
    hanging: AtomicUsize,
}

impl Receiver {
    /// Starts one on `127.0.0.1:0`; its URL is `http://127.0.0.1:PORT/hook`.
    pub(crate) async fn start() -> (Arc<Receiver>, String) {
        let receiver = Arc::new(Receiver::default());
        let app = axum::Router::new().route("/hook", axum::routing::post(receive)).with_state(Arc::clone(&receiver));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (receiver, url)
    }

    fn set(&self, answer: u8) {
        self.answer.store(answer, Ordering::SeqCst);
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// What arrived of event type `kind` (`X-Berth-Event`) and was answered 200, once
    /// `count` of them have (waits up to `within`).
    pub(crate) async fn delivered(&self, kind: &str, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Received> = self
                .got()
                .into_iter()
                .filter(|r| r.header("x-berth-event") == Some(kind) && r.answered == ANSWER_OK)
                .collect();
            if got.len() >= count {
                return got;
            }
            assert!(Instant::now() < deadline, "{} of {count} {kind} deliveries within {within:?}", got.len());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn receive(State(r): State<Arc<Receiver>>, headers: HeaderMap, body: Bytes) -> AxumStatus {
    let answer = r.answer.load(Ordering::SeqCst);
    r.got.lock().unwrap().push(Received { headers, body: body.to_vec(), answered: answer });
    match answer {
        ANSWER_OK => AxumStatus::OK,
        ANSWER_500 => AxumStatus::INTERNAL_SERVER_ERROR,
        _ => {
            r.hanging.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
            unreachable!()
        }
    }
}

/// HMAC-SHA256 (RFC 2104) of `body` under `key`, as `sha256=<hex>`.
fn hmac_sha256(key: &[u8], body: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(body).finalize();
    let outer = Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize();
    format!("sha256={}", hex(&outer))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body is signed with `SECRET` exactly as received.
fn assert_signed(r: &Received) {
    assert_eq!(r.header("x-berth-signature-256"), Some(hmac_sha256(SECRET.as_bytes(), &r.body).as_str()), "{r:?}");
}

/// Webhooks that may reach loopback, retried quickly.
fn fast_retries(c: &mut berth::Config) {
    c.webhooks.allow_private = true;
    c.webhooks.retry_base = Duration::from_millis(200);
    c.webhooks.retry_max = Duration::from_millis(800);
    c.webhooks.timeout = Duration::from_secs(2);
    c.webhooks.max_attempts = 50;
}

async fn create_project(mgmt: &Mgmt, name: &str) {
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": name }))).await;
}

async fn create_webhook(mgmt: &Mgmt, project: &str, spec: Value) -> Value {
    mgmt.expect(StatusCode::CREATED, Method::POST, &format!("/projects/{project}/webhooks"), Some(spec)).await
}

/// The dispatcher learns which events a new webhook wants on its next pass (every second);
/// pulls and quota refusals made before then are not announced.
async fn until_the_dispatcher_has_seen_it() {
    tokio::time::sleep(Duration::from_millis(2500)).await;
}

#[tokio::test]
async fn webhooks_are_managed_by_maintainers_never_show_their_secret_and_answer_a_test_ping() {
    let server = TestServer::start_with(fast_retries);
    let mgmt = Mgmt::new(&server, Some(&admin()));
    create_project(&mgmt, "hooks").await;
    let (receiver, url) = Receiver::start().await;
    let path = "/projects/hooks/webhooks";

    // Refused with a message naming what is wrong; nothing stored.
    for (bad, says) in [
        (json!({"name": "h", "url": "ftp://example.com/", "events": ["artifact.pushed"]}), "scheme"),
        (json!({"name": "h", "url": "http://u:p@example.com/", "events": ["artifact.pushed"]}), "auth_header"),
        (json!({"name": "h", "url": &url, "events": ["artifact.exploded"]}), "artifact.exploded"),
        (json!({"name": "H!", "url": &url, "events": ["artifact.pushed"]}), "name"),
        (json!({"name": "h", "url": &url, "events": ["artifact.pushed"], "format": "xml"}), "format"),
    ] {
        let e = mgmt.expect(StatusCode::BAD_REQUEST, Method::POST, path, Some(bad.clone())).await;
        let message = e["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(says) && !message.contains("u:p@"), "{bad}: {message}");
    }
    assert_eq!(mgmt.expect(StatusCode::OK, Method::GET, path, None).await, json!([]));

    let spec = json!({"name": "deploy", "url": &url, "events": ["artifact.pushed", "artifact.deleted"],
        "format": "cloudevents", "secret": SECRET, "auth_header": "Authorization: Bearer receiver-token-123"});
    let view = create_webhook(&mgmt, "hooks", spec.clone()).await;
    assert_eq!(view["has_secret"], true);
    assert_eq!(view["auth_header_name"], "Authorization");
    assert_eq!(view["enabled"], true);
    mgmt.refused(StatusCode::CONFLICT, "CONFLICT", Method::POST, path, Some(spec)).await;
    let one = mgmt.expect(StatusCode::OK, Method::GET, "/projects/hooks/webhooks/deploy", None).await;
    assert_eq!(one, view);

    // A test ping: delivered now, signed, with the extra header; not in the log.
    let outcome = mgmt.expect(StatusCode::OK, Method::POST, "/projects/hooks/webhooks/deploy/test", None).await;
    assert_eq!((outcome["delivered"].clone(), outcome["status_code"].clone()), (json!(true), json!(200)), "{outcome}");
    let ping = receiver.delivered("ping", 1, Duration::from_secs(5)).await.remove(0);
    assert_signed(&ping);
    assert_eq!(ping.header("authorization"), Some("Bearer receiver-token-123"));
    assert_eq!(ping.json()["type"], "io.berth.ping");
    receiver.set(ANSWER_500);
    let outcome = mgmt.expect(StatusCode::OK, Method::POST, "/projects/hooks/webhooks/deploy/test", None).await;
    assert_eq!((outcome["delivered"].clone(), outcome["status_code"].clone()), (json!(false), json!(500)), "{outcome}");
    let log = mgmt.expect(StatusCode::OK, Method::GET, "/projects/hooks/webhooks/deploy/deliveries", None).await;
    assert_eq!(log, json!([]));

    // Replaced without the secret: the secret stays; the events change.
    let replace = json!({"name": "deploy", "url": &url, "events": ["artifact.pushed"], "format": "harbor"});
    let replaced =
        mgmt.expect(StatusCode::OK, Method::PUT, "/projects/hooks/webhooks/deploy", Some(replace.clone())).await;
    assert_eq!((replaced["has_secret"].clone(), replaced["events"].clone()), (json!(true), json!(["artifact.pushed"])));
    let other = json!({"name": "other", "url": &url, "events": ["artifact.pushed"]});
    mgmt.refused(StatusCode::BAD_REQUEST, "BAD_REQUEST", Method::PUT, "/projects/hooks/webhooks/deploy", Some(other))
        .await;

    // A developer may not see or change webhooks; a maintainer may; nobody anonymous.
    for (name, role) in [("dev", "developer"), ("maint", "maintainer")] {
        let user = json!({"name": name, "password": "webhook-test-password"});
        mgmt.expect(StatusCode::CREATED, Method::POST, "/users", Some(user)).await;
        let member = format!("/projects/hooks/members/{name}");
        mgmt.expect(StatusCode::OK, Method::PUT, &member, Some(json!({ "role": role }))).await;
    }
    let dev = Mgmt::new(&server, Some(&Creds::new("dev", "webhook-test-password")));
    dev.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, path, None).await;
    dev.refused(StatusCode::FORBIDDEN, "DENIED", Method::POST, "/projects/hooks/webhooks/deploy/test", None).await;
    let maint = Mgmt::new(&server, Some(&Creds::new("maint", "webhook-test-password")));
    assert_eq!(maint.expect(StatusCode::OK, Method::GET, path, None).await.as_array().unwrap().len(), 1);
    Mgmt::new(&server, None).refused(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", Method::GET, path, None).await;
    mgmt.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::GET, "/projects/nowhere/webhooks", None).await;

    // No response, and no audit entry, ever held the secret or the header's value.
    let audit = mgmt.expect(StatusCode::OK, Method::GET, "/audit?project=hooks&operation=webhook.", None).await;
    let operations: Vec<&str> = audit.as_array().unwrap().iter().map(|e| e["operation"].as_str().unwrap()).collect();
    assert_eq!(operations, ["webhook.update", "webhook.create"]);
    for seen in mgmt.seen.borrow().iter().chain(maint.seen.borrow().iter()) {
        assert!(!seen.contains(SECRET) && !seen.contains("receiver-token-123"), "{seen}");
    }

    mgmt.expect(StatusCode::NO_CONTENT, Method::DELETE, "/projects/hooks/webhooks/deploy", None).await;
    mgmt.refused(StatusCode::NOT_FOUND, "NOT_FOUND", Method::GET, "/projects/hooks/webhooks/deploy", None).await;
    drop(receiver);

    // Without `allow_private`, a receiver on loopback is refused.
    let strict = TestServer::start();
    let mgmt = Mgmt::new(&strict, Some(&admin()));
    create_project(&mgmt, "hooks").await;
    let e = mgmt
        .expect(
            StatusCode::BAD_REQUEST,
            Method::POST,
            path,
            Some(json!({"name": "h", "url": &url, "events": ["artifact.pushed"]})),
        )
        .await;
    assert!(e["errors"][0]["message"].as_str().unwrap().contains("allow_private"), "{e}");
}

#[tokio::test]
async fn a_push_arrives_signed_as_a_cloudevent_and_as_harbor_json_retried_after_500s_with_one_event_id() {
    let server = TestServer::start_with(fast_retries);
    let mgmt = Mgmt::new(&server, Some(&admin()));
    let api = Api::new(server.url());
    create_project(&mgmt, "ship").await;
    let (receiver, url) = Receiver::start().await;
    receiver.set(ANSWER_500);
    for (name, format) in [("ce", "cloudevents"), ("harbor", "harbor")] {
        let spec = json!({"name": name, "url": format!("{url}?as={name}"), "events": ["artifact.pushed"],
            "format": format, "secret": SECRET});
        create_webhook(&mgmt, "ship", spec).await;
    }
    let (digest, body) = api.push_image("ship/app", "1.0", OCI_MANIFEST, 7).await;

    // Three attempts each answered 500, then 200.
    let deadline = Instant::now() + Duration::from_secs(20);
    while receiver.got().iter().filter(|r| r.answered == ANSWER_500).count() < 6 {
        assert!(Instant::now() < deadline, "too few attempts: {:?}", receiver.got().len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.set(ANSWER_OK);
    let delivered = receiver.delivered("artifact.pushed", 2, Duration::from_secs(10)).await;
    assert_eq!(delivered.len(), 2, "each webhook's delivery arrives once it is answered 200");
    let all = receiver.got();
    for r in &all {
        assert_signed(r);
    }
    let (ce, harbor): (Vec<&Received>, Vec<&Received>) = delivered
        .iter()
        .partition(|r| r.header("content-type").is_some_and(|t| t.starts_with("application/cloudevents+json")));
    let (ce, harbor) = (ce[0], harbor[0]);
    // The same event, one id, on every attempt of both webhooks.
    let id = ce.event_id().to_owned();
    assert!(all.iter().all(|r| r.event_id() == id), "{all:?}");

    let event = ce.json();
    assert_eq!(event["specversion"], "1.0");
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["type"], "io.berth.artifact.pushed");
    assert_eq!(event["source"], "/api/v1/projects/ship");
    assert_eq!(event["subject"], "ship/app:1.0");
    assert_eq!(event["datacontenttype"], "application/json");
    let time = event["time"].as_str().unwrap();
    assert!(time.len() == 24 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "{time}");
    assert_eq!(event["data"]["digest"], digest.as_str());
    assert_eq!(event["data"]["media_type"], OCI_MANIFEST);
    assert_eq!(event["data"]["size"], body.len());
    assert_eq!(event["data"]["tags"], json!(["1.0"]));

    let h = harbor.json();
    assert_eq!(h["type"], "PUSH_ARTIFACT");
    assert_eq!(h["event_id"], id.as_str());
    assert_eq!(h["event_data"]["repository"]["repo_full_name"], "ship/app");
    assert_eq!(h["event_data"]["repository"]["namespace"], "ship");
    assert_eq!(h["event_data"]["resources"][0]["digest"], digest.as_str());
    assert_eq!(h["event_data"]["resources"][0]["tag"], "1.0");

    // The log: delivered, after every attempt, the 500s counted, newest first, paged.
    let deadline = Instant::now() + Duration::from_secs(5);
    let log = loop {
        let log = mgmt.expect(StatusCode::OK, Method::GET, "/projects/ship/webhooks/ce/deliveries", None).await;
        if log[0]["state"] == "delivered" || Instant::now() > deadline {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let entry = &log[0];
    assert_eq!((entry["state"].as_str(), entry["event_id"].as_str()), (Some("delivered"), Some(id.as_str())), "{log}");
    let attempts = all
        .iter()
        .filter(|r| r.header("content-type").is_some_and(|t| t.starts_with("application/cloudevents+json")))
        .count();
    assert_eq!(entry["attempts"], attempts, "{log}");
    assert!(attempts >= 4, "{log}");
    let view = mgmt.expect(StatusCode::OK, Method::GET, "/projects/ship/webhooks/ce", None).await;
    assert_eq!(view["failures"], 0, "a success ends the failures in a row");

    // Deletes too, only to the webhook that wants them; the log pages.
    let spec = json!({"name": "ce", "url": format!("{url}?as=ce"), "events": ["artifact.pushed", "tag.deleted"],
        "format": "cloudevents"});
    mgmt.expect(StatusCode::OK, Method::PUT, "/projects/ship/webhooks/ce", Some(spec)).await;
    assert_eq!(api.send(Method::DELETE, "/v2/ship/app/manifests/1.0").await.status(), StatusCode::ACCEPTED);
    let deleted = receiver.delivered("tag.deleted", 1, Duration::from_secs(10)).await;
    assert_eq!(deleted[0].json()["subject"], "ship/app:1.0");
    assert_signed(&deleted[0]);
    let (status, link, page) = mgmt.call(Method::GET, "/projects/ship/webhooks/ce/deliveries?limit=1", None).await;
    assert_eq!((status, page.as_array().unwrap().len()), (StatusCode::OK, 1));
    let link = link.expect("a next page");
    let next = link.trim_start_matches("</api/v1").split('>').next().unwrap().to_owned();
    let second = mgmt.expect(StatusCode::OK, Method::GET, &next, None).await;
    assert_eq!(second[0]["event_id"], id.as_str(), "{second}");
}

#[tokio::test]
async fn events_waiting_for_a_dead_receiver_survive_a_restart_and_all_arrive_once_it_answers() {
    let server = TestServer::start_with(fast_retries);
    let mgmt = Mgmt::new(&server, Some(&admin()));
    create_project(&mgmt, "keep").await;
    let (receiver, url) = Receiver::start().await;
    receiver.set(ANSWER_500);
    let spec = json!({"name": "all", "url": &url, "events": ["artifact.pushed"], "secret": SECRET});
    create_webhook(&mgmt, "keep", spec).await;
    let api = Api::new(server.url());
    let mut pushed = Vec::new();
    for i in 0..5 {
        pushed.push(api.push_image("keep/app", &format!("v{i}"), OCI_MANIFEST, 100 + i).await.0);
    }
    let server = server.restart_with(fast_retries);
    let api = Api::new(server.url());
    for i in 5..8 {
        pushed.push(api.push_image("keep/app", &format!("v{i}"), OCI_MANIFEST, 100 + i).await.0);
    }
    receiver.set(ANSWER_OK);
    let delivered = receiver.delivered("artifact.pushed", 8, Duration::from_secs(20)).await;
    let mut ids: Vec<&str> = delivered.iter().map(Received::event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8, "one event per push, each delivered: {delivered:?}");
    let mut digests: Vec<String> = delivered
        .iter()
        .map(|r| r.json()["event_data"]["resources"][0]["digest"].as_str().unwrap().to_owned())
        .collect();
    digests.sort();
    digests.dedup();
    pushed.sort();
    assert_eq!(digests, pushed);
}

#[tokio::test]
async fn failures_in_a_row_disable_a_webhook_with_an_audit_entry_and_it_can_be_enabled_again() {
    let server = TestServer::start_with(fast_retries);
    let mgmt = Mgmt::new(&server, Some(&admin()));
    create_project(&mgmt, "flaky").await;
    let (receiver, url) = Receiver::start().await;
    receiver.set(ANSWER_500);
    let spec = json!({"name": "down", "url": &url, "events": ["artifact.pushed"], "disable_after": 3});
    create_webhook(&mgmt, "flaky", spec.clone()).await;
    let api = Api::new(server.url());
    api.push_image("flaky/app", "1", OCI_MANIFEST, 1).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let view = loop {
        let view = mgmt.expect(StatusCode::OK, Method::GET, "/projects/flaky/webhooks/down", None).await;
        if view["enabled"] == false {
            break view;
        }
        assert!(Instant::now() < deadline, "not disabled: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(view["failures"], 3);
    // Disabled: nothing more is sent, even for new pushes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let attempts = receiver.got().len();
    assert_eq!(attempts, 3, "{:?}", receiver.got());
    api.push_image("flaky/app", "2", OCI_MANIFEST, 2).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.got().len(), 3);

    let deadline = Instant::now() + Duration::from_secs(10);
    let entry = loop {
        let audit =
            mgmt.expect(StatusCode::OK, Method::GET, "/audit?project=flaky&operation=webhook.disable", None).await;
        if let Some(entry) = audit.as_array().unwrap().first() {
            break entry.clone();
        }
        assert!(Instant::now() < deadline, "no webhook.disable entry");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((entry["resource"].as_str(), entry["actor"].as_str()), (Some("down"), Some("berth")), "{entry}");
    assert!(entry["detail"].as_str().unwrap().contains("500"), "{entry}");

    // Enabled again, with the receiver up: what was held back arrives.
    receiver.set(ANSWER_OK);
    mgmt.expect(StatusCode::OK, Method::PUT, "/projects/flaky/webhooks/down", Some(spec)).await;
    let delivered = receiver.delivered("artifact.pushed", 1, Duration::from_secs(20)).await;
    assert!(!delivered.is_empty());
}

/// `count` pushes of small images into `repo`, and how long they took.
async fn timed_pushes(api: &Api, repo: &str, count: u64, seed: u64) -> Duration {
    let started = Instant::now();
    for i in 0..count {
        api.push_image(repo, &format!("t{i}"), OCI_MANIFEST, seed + i).await;
    }
    started.elapsed()
}

#[tokio::test]
async fn a_receiver_that_never_answers_does_not_slow_pushes() {
    let server = TestServer::start_with(|c| {
        fast_retries(c);
        c.webhooks.timeout = Duration::from_secs(10);
    });
    let mgmt = Mgmt::new(&server, Some(&admin()));
    let api = Api::new(server.url());
    create_project(&mgmt, "quiet").await;
    create_project(&mgmt, "loud").await;
    let (receiver, url) = Receiver::start().await;
    receiver.set(ANSWER_NEVER);
    let spec = json!({"name": "hung", "url": &url, "events": ["artifact.pushed"]});
    create_webhook(&mgmt, "loud", spec).await;
    // Warm up both paths until the receiver holds the webhook's delivery slots, then the
    // same pushes without and with the hung webhook, twice interleaved so that a slow
    // moment of the machine falls on both.
    timed_pushes(&api, "quiet/warm", 5, 0).await;
    timed_pushes(&api, "loud/warm", 5, 100).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.hanging.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < deadline, "the hung receiver got no deliveries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut without, mut with) = (Duration::ZERO, Duration::ZERO);
    for round in 0..2 {
        without += timed_pushes(&api, &format!("quiet/app{round}"), 20, 1000 * round).await;
        with += timed_pushes(&api, &format!("loud/app{round}"), 20, 1000 * round + 500).await;
    }
    eprintln!("40 pushes: {without:?} without a webhook, {with:?} with one that never answers");
    assert!(
        with < without * 2 + Duration::from_secs(1),
        "pushes with a hung webhook took {with:?}, without {without:?}"
    );
}

#[tokio::test]
async fn pulls_arrive_coalesced_one_event_per_manifest_and_flush() {
    let server = TestServer::start_with(|c| {
        fast_retries(c);
        c.jobs.pull_flush_interval = Duration::from_secs(3);
    });
    let mgmt = Mgmt::new(&server, Some(&admin()));
    let api = Api::new(server.url());
    create_project(&mgmt, "pulled").await;
    let (digest, _) = api.push_image("pulled/app", "1.0", OCI_MANIFEST, 3).await;
    let (receiver, url) = Receiver::start().await;
    let spec = json!({"name": "pulls", "url": &url, "events": ["artifact.pulled"], "format": "cloudevents"});
    create_webhook(&mgmt, "pulled", spec).await;
    until_the_dispatcher_has_seen_it().await;
    for _ in 0..50 {
        let r =
            api.req(Method::GET, "/v2/pulled/app/manifests/1.0").header("accept", OCI_MANIFEST).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    receiver.delivered("artifact.pulled", 1, Duration::from_secs(15)).await;
    // Let any later flush land too: 50 pulls in well under one flush interval are one
    // event, or two if a flush fell between them.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let pulled: Vec<Received> =
        receiver.got().into_iter().filter(|r| r.header("x-berth-event") == Some("artifact.pulled")).collect();
    assert!((1..=2).contains(&pulled.len()), "{} events for 50 pulls", pulled.len());
    let event = pulled[0].json();
    assert_eq!(event["type"], "io.berth.artifact.pulled");
    assert_eq!(event["data"]["digest"], digest.as_str());
    assert_eq!(event["data"]["repository"], "pulled/app");
}

#[tokio::test]
async fn a_push_refused_by_the_quota_is_announced_once_per_minute() {
    let server = TestServer::start_with(fast_retries);
    let mgmt = Mgmt::new(&server, Some(&admin()));
    let api = Api::new(server.url());
    let project = json!({"name": "full", "quota_bytes": 2000});
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(project)).await;
    let (receiver, url) = Receiver::start().await;
    let spec = json!({"name": "quota", "url": &url, "events": ["quota.exceeded"], "secret": SECRET});
    create_webhook(&mgmt, "full", spec).await;
    until_the_dispatcher_has_seen_it().await;
    for seed in 0..3 {
        let bytes = crate::api::random_bytes(5000, seed);
        let location = api.start_upload("full/app").await;
        let digest = crate::api::sha256(&bytes);
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = api.req(Method::PUT, &format!("{location}{sep}digest={digest}")).body(bytes).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
    let got = receiver.delivered("quota.exceeded", 1, Duration::from_secs(10)).await;
    assert_signed(&got[0]);
    let h = got[0].json();
    assert_eq!(h["type"], "QUOTA_EXCEED");
    assert_eq!(h["event_data"]["repository"]["repo_full_name"], "full/app");
    let details = h["event_data"]["custom_attributes"]["details"].as_str().unwrap();
    assert!(details.contains("quota exceeded for project \"full\""), "{details}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = receiver.got().into_iter().filter(|r| r.header("x-berth-event") == Some("quota.exceeded")).count();
    assert_eq!(all, 1, "three refusals within a minute are one event");
}
