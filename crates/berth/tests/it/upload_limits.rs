//! Uploads created faster than they expire: the bound on open uploads per repository,
//! and a janitor pass that keeps up with thousands of abandoned ones.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};

use crate::api::{Api, assert_error, location, sha256};
use crate::support::{Backend, TestServer};

async fn post(api: &Api, repo: &str) -> reqwest::Response {
    api.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await
}

#[tokio::test]
async fn uploads_beyond_the_open_upload_limit_of_a_repository_are_refused_with_429() {
    let server = TestServer::start_with(|c| c.limits.max_open_uploads = 3);
    let api = Api::new(server.url());
    let layer = api.push_blob("limited/source", b"a layer to mount").await;

    let mut open = Vec::new();
    for _ in 0..3 {
        let r = post(&api, "limited/repo").await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        open.push(location(&r));
    }
    let body = assert_error(post(&api, "limited/repo").await, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    let message = body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("limited/repo has 3 uploads open"), "{message}");
    // A monolithic upload opens one too; a mount does not.
    let r = api.send(Method::POST, &format!("/v2/limited/repo/blobs/uploads/?digest={}", sha256(b"x"))).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "TOOMANYREQUESTS").await;
    let r = api.send(Method::POST, &format!("/v2/limited/repo/blobs/uploads/?mount={layer}&from=limited/source")).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    // The bound is per repository.
    assert_eq!(post(&api, "limited/other").await.status(), StatusCode::ACCEPTED);

    // Finishing or cancelling an upload frees its slot.
    let r = api.req(Method::PUT, &format!("{}?digest={}", open[0], sha256(b"done"))).body("done").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(post(&api, "limited/repo").await.status(), StatusCode::ACCEPTED);
    assert_eq!(api.send(Method::DELETE, &open[1]).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(post(&api, "limited/repo").await.status(), StatusCode::ACCEPTED);
    assert_eq!(post(&api, "limited/repo").await.status(), StatusCode::TOO_MANY_REQUESTS);

    // Concurrent POSTs never pass the bound.
    let statuses: Vec<StatusCode> = futures_util::stream::iter(0..30)
        .map(|_| async { post(&api, "limited/race").await.status() })
        .buffer_unordered(30)
        .collect()
        .await;
    assert_eq!(statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count(), 3, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == StatusCode::ACCEPTED || *s == StatusCode::TOO_MANY_REQUESTS));
}

/// 3,000 abandoned uploads (1,000, the default bound, in each of three repositories),
/// some with staged bytes, all gone after one janitor pass: records and bytes. The
/// registry runs in-process here (on the stores `BERTH_TEST_BACKEND` names) so that the
/// test can run that pass itself.
#[tokio::test]
async fn one_janitor_pass_expires_3000_abandoned_uploads() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::Config::with_data_dir(dir.path().join("data"));
    backend.configure(&mut config);
    crate::support::configure_access(&mut config);
    config.jobs.upload_ttl = Duration::from_secs(1);
    let node = berth::open(&config).await.unwrap();
    let registry = Arc::clone(&node.registry);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(axum::serve(listener, berth_server::app(Arc::clone(&registry))).into_future());
    let api = Api::new(format!("http://{addr}"));

    let repos = ["abandoned/a", "abandoned/b", "abandoned/c"];
    let locations: Vec<String> = futures_util::stream::iter((0..3000).map(|i| repos[i % 3]))
        .map(|repo| async { location(&post(&api, repo).await) })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(post(&api, "abandoned/a").await.status(), StatusCode::TOO_MANY_REQUESTS);
    for loc in locations.iter().take(40) {
        let r = api.req(Method::PATCH, loc).body(vec![7u8; 1000]).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
    }
    // Files list every upload; S3 lists only those with bytes staged.
    let staged = registry.blobs.list_uploads().await.unwrap().len();
    assert!(staged == 3000 || (backend.scaleout.is_some() && staged == 40), "{staged} staged before the pass");

    tokio::time::sleep(Duration::from_millis(2100)).await;
    let sweep = berth_jobs::janitor::Janitor::new(Arc::clone(&registry.jobs)).run_once().await.unwrap();
    assert_eq!(sweep.expired, 3000);
    assert!(registry.blobs.list_uploads().await.unwrap().is_empty(), "staged bytes left after the pass");
    for loc in locations.iter().step_by(97) {
        assert_eq!(api.send(Method::GET, loc).await.status(), StatusCode::NOT_FOUND, "{loc}");
    }
    if backend.is_embedded() {
        assert_eq!(std::fs::read_dir(config.data_dir.join("uploads")).unwrap().count(), 0);
    }
    // Their slots are free again.
    for repo in repos {
        assert_eq!(post(&api, repo).await.status(), StatusCode::ACCEPTED);
    }
    server.abort();
}
