//! The `gc` lease of a run whose client hangs up (issue 17): `POST /gc` ran the collection
//! in the request's handler, so a client gone mid-run dropped the run halfway, unrecorded,
//! and left the lease's renewer running: no other node could run GC again. Now the run
//! goes to its end on a task of its own, is recorded, and frees the lease. (Embedded
//! stores: the test opens the database as a second node would.)

use std::time::{Duration, Instant};

use berth_meta::MetadataStore;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use super::rand_u64;
use crate::api::{Api, random_bytes};
use crate::support::{TestServer, admin};

/// Garbage blobs: enough that the run outlasts the hang-up below by far.
const GARBAGE: usize = 400;
/// The `gc` lease's lifetime (`berth_jobs::gc`), and some slack.
const LEASE: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_run_whose_client_hangs_up_goes_to_its_end_and_frees_the_lease() {
    let server = TestServer::start_embedded_with(|c| c.jobs.gc_grace = Duration::ZERO);
    let api = Api::new(server.url());
    let pushes = (0..GARBAGE).map(|_| {
        let api = &api;
        async move { api.push_blob("lease/app", &random_bytes(300, rand_u64())).await }
    });
    let mut garbage = futures_util::stream::iter(pushes).buffer_unordered(8).collect::<Vec<_>>().await;
    garbage.sort();

    // `POST /gc`, and the client gone while the run goes on: once the first blob it removes
    // (they go in digest order, 64 at a time) is gone.
    let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let request = format!("POST /api/v1/gc HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\n\r\n", admin().header_line());
    socket.write_all(request.as_bytes()).await.unwrap();
    let first = format!("/v2/lease/app/blobs/{}", garbage[0]);
    let asked = Instant::now();
    while api.send(Method::HEAD, &first).await.status() == StatusCode::OK {
        assert!(asked.elapsed() < Duration::from_secs(10), "the run did not start");
    }
    drop(socket);

    // Another node, on the same database, gets the lease within its lifetime.
    let other = berth_meta::SqliteStore::open(&server.data_dir().join("berth.db")).await.unwrap();
    let hung_up = Instant::now();
    while !other.try_lease("gc", "another-node", 1).await.unwrap() {
        let waited = hung_up.elapsed();
        assert!(waited < LEASE + Duration::from_secs(5), "the gc lease is still held {waited:?} after its client left");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The run went to its end, and is on record.
    let runs: Value = api.send(Method::GET, "/api/v1/gc/runs").await.json().await.unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!((runs[0]["blobs_removed"].as_u64(), runs[0]["error"].is_null()), (Some(GARBAGE as u64), true));
    // Once the other node's lease (1 s, counted in whole seconds) expires, a run here goes ahead.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = api.req(Method::POST, "/api/v1/gc").json(&serde_json::json!({})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}
