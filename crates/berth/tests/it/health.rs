//! `/healthz` and `/readyz` seen from outside: both answer without credentials; `/readyz`
//! turns 503, naming the failed check, while PostgreSQL is stopped, and 200 again once it
//! is back (the pool reconnects, the process was never restarted).

use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::Api;
use crate::support::{ScaleOut, TestServer};

async fn probe(api: &Api, path: &str) -> (StatusCode, Value) {
    let r = api.send(Method::GET, path).await;
    let status = r.status();
    (status, r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_and_readyz_answer_without_credentials() {
    let server = TestServer::start();
    let anonymous = Api::anonymous(server.url());
    assert_eq!(probe(&anonymous, "/healthz").await, (StatusCode::OK, json!({ "status": "ok" })));
    let ready = json!({ "status": "ready", "checks": { "database": "ok", "blob_store": "ok" } });
    assert_eq!(probe(&anonymous, "/readyz").await, (StatusCode::OK, ready));
}

/// Always on PostgreSQL and Garage (started here, whatever `BERTH_TEST_BACKEND` says):
/// the database must be stopped and started again under the running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_postgresql_is_stopped_and_recovers_when_it_is_back() {
    let scaleout = ScaleOut::start();
    let server = TestServer::start_with(|c| {
        c.database.url = Some(scaleout.database.clone());
        c.storage.url = Some(scaleout.s3().into());
        c.database.acquire_timeout = Duration::from_secs(2);
    });
    let api = Api::anonymous(server.url());
    assert_eq!(probe(&api, "/readyz").await.0, StatusCode::OK);

    scaleout.postgres.stop();
    let started = Instant::now();
    let (status, body) = probe(&api, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable", "{body}");
    assert!(body["checks"]["database"] == "failed" || body["checks"]["database"] == "timeout", "{body}");
    assert_eq!(body["checks"]["blob_store"], "ok", "{body}");
    // Bounded by the probe's own timeout, not the pool's.
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // The process still serves.
    assert_eq!(probe(&api, "/healthz").await.0, StatusCode::OK);
    // A request that needs the database is told to come back (503 with Retry-After, the
    // OCI error JSON), not that the server broke (500).
    let r = Api::new(server.url()).send(Method::GET, "/v2/library/absent/tags/list").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNKNOWN", "{body}");
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.starts_with("the database is"), "{body}");
    assert!(!message.contains("postgres") && !message.contains("127.0.0.1"), "nothing internal: {body}");

    scaleout.postgres.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = probe(&api, "/readyz").await;
        if status == StatusCode::OK {
            assert_eq!(body["checks"]["database"], "ok", "{body}");
            break;
        }
        assert!(Instant::now() < deadline, "still not ready 30 s after PostgreSQL came back: {body}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the registry works on it again.
    assert_eq!(Api::new(server.url()).send(Method::GET, "/v2/").await.status(), StatusCode::OK);
}
