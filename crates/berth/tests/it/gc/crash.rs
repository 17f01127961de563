//! A SIGKILL in the middle of a GC run loses nothing, and the next run finishes the job:
//! blobs marked `deleting` when the process died are removed by the next run, bytes and
//! record, and everything in use still pulls.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use super::{Image, assert_pulls, collect_all, push, rand_u64, run_gc};
use crate::api::{Api, random_bytes};
use crate::support::{Backend, http_client};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_run_killed_midway_loses_nothing_and_the_next_run_finishes_it() {
    let backend = Backend::from_env();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let envs = [("BERTH_GC_GRACE", "0s"), ("BERTH_GC_DELETE_UNTAGGED", "true")];
    let server = backend.spawn_env(&data, &envs);
    let api = Api::new(server.url());
    let shared = random_bytes(3000, rand_u64());
    let mut kept: Vec<(String, Image)> = Vec::new();
    let mut garbage: Vec<Image> = Vec::new();
    // Enough garbage that the run lasts well past the kill's window (each removed blob is
    // a transaction and an fsync): with 35 images, a fast disk finished it within 65 ms.
    for i in 0..120 {
        let layers = [shared.clone(), random_bytes(500, rand_u64()), random_bytes(700, rand_u64())];
        let image = push(&api, "crash/app", &format!("t{i}"), &layers, None).await;
        if i % 8 == 0 {
            kept.push((format!("t{i}"), image));
        } else {
            let r = api.send(Method::DELETE, &format!("/v2/crash/app/manifests/t{i}")).await;
            assert_eq!(r.status(), StatusCode::ACCEPTED);
            garbage.push(image);
        }
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // The untagged manifests go in this run; kill it partway.
    let base = server.url();
    let run = tokio::spawn(async move {
        let client = http_client().build().unwrap();
        client.post(format!("{base}/api/v1/gc")).json(&serde_json::json!({})).send().await
    });
    tokio::time::sleep(Duration::from_millis(5 + rand_u64() % 60)).await;
    server.kill9();
    assert!(run.await.unwrap().is_err(), "the run finished before the kill: nothing was tested");

    let server = backend.spawn_env(&data, &envs);
    let api = Api::new(server.url());
    for (tag, image) in &kept {
        assert_pulls(&api, "crash/app", tag, image).await;
    }
    // The dead process's `gc` lease holds until it expires; then this node runs.
    let client = http_client().build().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = client.post(format!("{}/api/v1/gc", server.url())).json(&serde_json::json!({})).send().await.unwrap();
        match r.status() {
            StatusCode::OK => break,
            StatusCode::CONFLICT if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await
            }
            other => panic!("GC after the restart: {other} {}", r.text().await.unwrap()),
        }
    }
    collect_all(&server.url()).await;
    run_gc(&server.url(), false, true).await;
    for (tag, image) in &kept {
        assert_pulls(&api, "crash/app", tag, image).await;
    }
    for image in &garbage {
        let r = api.send(Method::GET, &format!("/v2/crash/app/manifests/{}", image.digest)).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        for blob in &image.blobs {
            if blob == &kept[0].1.blobs[1] {
                continue; // the shared layer
            }
            let r = api.send(Method::HEAD, &format!("/v2/crash/app/blobs/{blob}")).await;
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{blob}");
        }
    }
    let in_use: std::collections::BTreeSet<&String> = kept.iter().flat_map(|(_, i)| &i.blobs).collect();
    assert_eq!(backend.storage(&data).blobs().await.len(), in_use.len(), "stored blobs vs blobs in use");
}
