//! `/metrics` seen from outside, parsed with a Prometheus text parser (`prometheus-parse`),
//! never grepped: a push and a pull move the request counters, the byte totals and the
//! store operation counts by exactly what was sent; refused requests are counted as
//! authentication failures; the storage gauge counts a project's blobs once; who may read
//! `/metrics` on the main address and on `--metrics-listen`; metrics switched off.
//! On the stores `BERTH_TEST_BACKEND` names.

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use reqwest::{Method, StatusCode};

use crate::api::{Api, image_manifest, random_bytes};
use crate::support::TestServer;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const REQUESTS: &str = "berth_http_request_duration_seconds_count";

/// One scrape, parsed.
struct Metrics(Scrape);

impl Metrics {
    async fn scrape(api: &Api) -> Metrics {
        let r = api.send(Method::GET, "/metrics").await;
        assert_eq!(r.status(), StatusCode::OK);
        Metrics::parse(&r.text().await.unwrap())
    }

    fn parse(text: &str) -> Metrics {
        Metrics(Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("a Prometheus text exposition"))
    }

    /// The value of the one series `name` whose labels include `labels`; 0 when there is
    /// none yet (a series appears with its first observation).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                ref other => panic!("{name} is not a scalar: {other:?}"),
            })
            .collect();
        assert!(found.len() <= 1, "{name}{labels:?} names {} series", found.len());
        found.first().copied().unwrap_or(0.0)
    }
}

fn requests(endpoint: &str, method: &str, status: &str) -> [(&'static str, String); 3] {
    [("endpoint", endpoint.to_owned()), ("method", method.to_owned()), ("status", status.to_owned())]
}

/// `after - before` for one series.
fn delta(before: &Metrics, after: &Metrics, name: &str, labels: &[(&str, &str)]) -> f64 {
    after.value(name, labels) - before.value(name, labels)
}

fn request_delta(before: &Metrics, after: &Metrics, endpoint: &str, method: &str, status: &str) -> f64 {
    let labels = requests(endpoint, method, status);
    let labels: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    delta(before, after, REQUESTS, &labels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_and_a_pull_move_request_counts_byte_totals_and_store_operations_by_what_was_sent() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    let repo = "library/metered";
    let layer = random_bytes(300_000, 11);
    let config = br#"{"architecture":"amd64"}"#.to_vec();

    let before = Metrics::scrape(&api).await;
    let layer_digest = api.push_blob(repo, &layer).await;
    let config_digest = api.push_blob(repo, &config).await;
    let manifest = image_manifest(OCI_MANIFEST, (&config_digest, config.len()), &[(&layer_digest, layer.len())], None);
    assert_eq!(api.put_manifest(repo, "v1", OCI_MANIFEST, &manifest).await.status(), StatusCode::CREATED);
    let pulled = api.send(Method::GET, &format!("/v2/{repo}/manifests/v1")).await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap(), manifest);
    let pulled = api.send(Method::GET, &format!("/v2/{repo}/blobs/{layer_digest}")).await;
    assert_eq!(pulled.status(), StatusCode::OK);
    assert_eq!(pulled.bytes().await.unwrap().len(), layer.len());
    let after = Metrics::scrape(&api).await;

    // Requests, by endpoint kind, method and status.
    assert_eq!(request_delta(&before, &after, "upload_start", "POST", "202"), 2.0);
    assert_eq!(request_delta(&before, &after, "upload", "PUT", "201"), 2.0);
    assert_eq!(request_delta(&before, &after, "manifest", "PUT", "201"), 1.0);
    assert_eq!(request_delta(&before, &after, "manifest", "GET", "200"), 1.0);
    assert_eq!(request_delta(&before, &after, "blob", "GET", "200"), 1.0);
    assert_eq!(request_delta(&before, &after, "blob", "GET", "404"), 0.0);
    // The scrape before is counted by the scrape after.
    assert_eq!(request_delta(&before, &after, "metrics", "GET", "200"), 1.0);

    // Body bytes, received and sent.
    let received = "berth_http_request_body_bytes_total";
    let sent = "berth_http_response_body_bytes_total";
    assert_eq!(delta(&before, &after, received, &[("endpoint", "upload")]), (layer.len() + config.len()) as f64);
    assert_eq!(delta(&before, &after, received, &[("endpoint", "manifest")]), manifest.len() as f64);
    assert_eq!(delta(&before, &after, sent, &[("endpoint", "blob")]), layer.len() as f64);
    assert_eq!(delta(&before, &after, sent, &[("endpoint", "manifest")]), manifest.len() as f64);

    // Store operations, timed by the decorators.
    let ops = "berth_store_operation_duration_seconds_count";
    let op = |store, operation| [("store", store), ("operation", operation), ("outcome", "ok")];
    assert_eq!(delta(&before, &after, ops, &op("blobs", "commit_upload")), 2.0);
    assert_eq!(delta(&before, &after, ops, &op("blobs", "read_blob")), 1.0);
    assert_eq!(delta(&before, &after, ops, &op("database", "link_blob")), 2.0);
    assert_eq!(delta(&before, &after, ops, &op("database", "put_manifest")), 1.0);

    // Nothing is uploading now; the database pools are reported.
    assert_eq!(after.value("berth_uploads_in_progress", &[]), 0.0);
    let pools = after.0.samples.iter().filter(|s| s.metric == "berth_db_pool_max_connections").count();
    assert!(pools >= 1, "no database pool reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_are_counted_as_authentication_failures_by_what_they_presented() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    let before = Metrics::scrape(&api).await;
    let anonymous = Api::anonymous(server.url());
    assert_eq!(anonymous.send(Method::GET, "/v2/").await.status(), StatusCode::UNAUTHORIZED);
    let wrong = crate::support::Creds::new("admin", "not-the-password");
    let guesser = Api::as_user(server.url(), Some(&wrong));
    assert_eq!(guesser.send(Method::GET, "/v2/").await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(guesser.send(Method::GET, "/v2/").await.status(), StatusCode::UNAUTHORIZED);
    let after = Metrics::scrape(&api).await;

    let failures = "berth_auth_failures_total";
    assert_eq!(delta(&before, &after, failures, &[("credentials", "none"), ("code", "UNAUTHORIZED")]), 1.0);
    assert_eq!(delta(&before, &after, failures, &[("credentials", "basic"), ("code", "UNAUTHORIZED")]), 2.0);
    assert_eq!(request_delta(&before, &after, "base", "GET", "401"), 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_per_project_counts_a_blob_once_however_many_repositories_link_it() {
    let server = TestServer::start_with(|c| c.metrics.storage_interval = Duration::from_millis(200));
    let api = Api::new(server.url());
    let shared = random_bytes(50_000, 21);
    let own = random_bytes(7_000, 22);
    api.push_blob("library/one", &shared).await;
    api.push_blob("library/two", &shared).await;
    api.push_blob("library/two", &own).await;
    let expected = (shared.len() + own.len()) as f64;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let now = Metrics::scrape(&api).await;
        let stored = now.value("berth_storage_bytes", &[("project", "library")]);
        if stored == expected {
            // The job that computes it ran, and says so.
            assert!(now.value("berth_job_runs_total", &[("job", "storage-usage"), ("outcome", "ok")]) >= 2.0);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "berth_storage_bytes{{project=library}} is {stored}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_a_system_administrators_on_the_main_address_and_open_on_their_own() {
    let port = berth_testkit::free_port();
    let server = TestServer::start_with(|c| c.metrics.listen = Some(([127, 0, 0, 1], port).into()));
    let anonymous = Api::anonymous(server.url());
    assert_eq!(anonymous.send(Method::GET, "/metrics").await.status(), StatusCode::UNAUTHORIZED);
    let admin = Api::new(server.url());
    assert_eq!(admin.send(Method::GET, "/metrics").await.status(), StatusCode::OK);

    let own = Api::anonymous(format!("http://127.0.0.1:{port}"));
    let metrics = Metrics::scrape(&own).await;
    // The main address's requests are in it: one node, one set of series.
    assert_eq!(metrics.value(REQUESTS, &[("endpoint", "metrics"), ("method", "GET"), ("status", "401")]), 1.0);
    assert_eq!(own.send(Method::GET, "/healthz").await.status(), StatusCode::OK);
    // Nothing of the registry is served there.
    assert_eq!(own.send(Method::GET, "/v2/").await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_switched_off_answer_404() {
    let server = TestServer::start_with(|c| c.metrics.enabled = false);
    let api = Api::new(server.url());
    assert_eq!(api.send(Method::GET, "/v2/").await.status(), StatusCode::OK);
    let r = api.send(Method::GET, "/metrics").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNSUPPORTED", "{body}");
}
