//! Graceful shutdown of the built binary: SIGTERM in the middle of a chunked push; the
//! process drains for `shutdown_timeout` and exits 0; restarted on the same stores, the
//! client asks where its upload is, continues from there, and the blob verifies.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::{Method, StatusCode};

use crate::api::{Api, header, location, random_bytes, sha256};
use crate::support::Backend;

const CHUNK: usize = 1 << 20;

fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') { format!("{url}&{query}") } else { format!("{url}?{query}") }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_cut_by_sigterm_resumes_after_the_restart_and_the_blob_verifies() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let blob = random_bytes(3 * CHUNK, 41);
    let digest = sha256(&blob);
    let envs = [("BERTH_SHUTDOWN_TIMEOUT", "2s")];

    let server = backend.spawn_env(&data, &envs);
    let api = Api::new(server.url());
    let upload = api.start_upload("library/drained").await;
    let r = api.req(Method::PATCH, &upload).body(blob[..CHUNK].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let upload = location(&r);

    // The second chunk: its first bytes sent, then the client stalls mid-body.
    let partial = bytes::Bytes::copy_from_slice(&blob[CHUNK..CHUNK + CHUNK / 4]);
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(partial) })
        .chain(futures_util::stream::pending());
    let stalled = api.req(Method::PATCH, &upload).body(reqwest::Body::wrap_stream(stream)).send();
    let stalled = tokio::spawn(stalled);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let sent = Instant::now();
    let status = tokio::task::spawn_blocking(move || server.terminate(Duration::from_secs(15))).await.unwrap();
    assert!(status.success(), "berth exited with {status} after SIGTERM");
    let took = sent.elapsed();
    assert!(took >= Duration::from_secs(2), "the request in flight was not given its 2 s ({took:?})");
    assert!(took < Duration::from_secs(10), "shutdown took {took:?} with a 2 s deadline");
    assert!(stalled.await.unwrap().is_err(), "the cut request was answered as if it had succeeded");

    let server = backend.spawn_env(&data, &envs);
    let api = Api::new(server.url());
    // The registry says where the upload is: the cut chunk was not acknowledged.
    let r = api.send(Method::GET, &upload).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&r, "range").as_deref(), Some(format!("0-{}", CHUNK - 1).as_str()));
    let r = api.req(Method::PATCH, &upload).body(blob[CHUNK..].to_vec()).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let done = location(&r);
    let r = api.send(Method::PUT, &with_query(&done, &format!("digest={digest}"))).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = api.send(Method::GET, &format!("/v2/library/drained/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest);
}
