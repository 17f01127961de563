//! The integrity scrub: one blob's bytes corrupted and another's truncated behind the
//! server's back (files in the data directory, or objects overwritten in the bucket) are
//! both reported by `berth scrub` (the built binary, against the running server) and no
//! longer served, while everything else still is; a push of the right bytes repairs one. Runs on the embedded and the scale-out stores (`BERTH_TEST_BACKEND`).
//! And a push racing the scrub's removal of the same content's bad bytes keeps what it
//! stored (the filesystem, where every copy of a digest has one key); a start whose client
//! hangs up leaves the node able to scrub.

use std::time::Duration;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::api::{Api, assert_error, image_manifest, random_bytes, sha256};
use crate::audit::Server;
use crate::management::cli::{berth, stdout_of};
use crate::support::{TestServer, admin};

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// Waits for scrub run `id` to end; returns it with its findings.
async fn finished(api: &Api, id: i64) -> Value {
    for _ in 0..300 {
        let run: Value = api.send(Method::GET, &format!("/api/v1/scrub/runs/{id}")).await.json().await.unwrap();
        if run["state"] != "running" {
            return run;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("scrub run {id} did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_and_a_truncated_blob_are_reported_by_berth_scrub_and_refused_while_the_rest_is_served() {
    let server = Server::start().await;
    let api = &server.api;
    let mut images = Vec::new();
    for seed in 0..3u64 {
        let (digest, body) = api.push_image("scrub/app", &format!("t{seed}"), OCI, seed).await;
        images.push((digest, body));
    }
    // The layers of images 0 and 1 (1000 random bytes each) are damaged; image 2 is not.
    let layers: Vec<(String, Vec<u8>)> = (0..3u64)
        .map(|seed| {
            let bytes = random_bytes(1000, seed);
            (crate::api::sha256(&bytes), bytes)
        })
        .collect();
    let storage = server.storage();
    let entries = storage.blobs_by_digest().await;
    let entry = |digest: &str| entries.iter().find(|(d, _)| d == digest).map(|(_, e)| e.clone()).unwrap();
    let (corrupted, truncated) = (&layers[0], &layers[1]);
    let mut flipped = corrupted.1.clone();
    flipped[500] ^= 0xff;
    storage.overwrite(&entry(&corrupted.0), &flipped).await;
    storage.overwrite(&entry(&truncated.0), &truncated.1[..400]).await;

    let config = tempfile::tempdir().unwrap();
    let out = stdout_of(
        berth(config.path())
            .args(["scrub", "--url", &api.base, "--user", berth::ADMIN])
            .env("BERTH_PASSWORD", admin().password),
    );
    assert!(out.contains(&format!("{}\tmismatch: 1000 bytes hashing to sha256:", corrupted.0)), "{out}");
    assert!(out.contains(&format!("{}\ttruncated: 400 of 1000 bytes", truncated.0)), "{out}");
    assert!(out.trim_end().ends_with(", 2 damaged"), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("sha256:")).count(), 2, "only the two are reported: {out}");

    // Refused, and their bad bytes removed from the blob store.
    let kept = storage.blobs_by_digest().await;
    for digest in [&corrupted.0, &truncated.0] {
        assert!(!kept.iter().any(|(d, _)| d == digest), "{digest} still stored");
        for method in [Method::GET, Method::HEAD] {
            let r = api.send(method.clone(), &format!("/v2/scrub/app/blobs/{digest}")).await;
            if method == Method::GET {
                assert_error(r, StatusCode::NOT_FOUND, "BLOB_UNKNOWN").await;
            } else {
                assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {digest}");
            }
        }
    }
    let served = api.send(Method::GET, &format!("/v2/scrub/app/blobs/{}", layers[2].0)).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(served.bytes().await.unwrap(), layers[2].1);
    for (digest, body) in &images {
        let r = api.send(Method::GET, &format!("/v2/scrub/app/manifests/{digest}")).await;
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    // A manifest naming a damaged blob is refused, so that a client uploads it again.
    let config_digest = api.push_blob("scrub/app", b"{\"other\":1}").await;
    let body = image_manifest(OCI, (&config_digest, 11), &[(&truncated.0, 1000)], None);
    let r = api.put_manifest("scrub/app", "needs-damaged", OCI, &body).await;
    assert_error(r, StatusCode::BAD_REQUEST, "MANIFEST_BLOB_UNKNOWN").await;

    let runs: Value = api.send(Method::GET, "/api/v1/scrub/runs").await.json().await.unwrap();
    let run = &runs[0];
    assert_eq!(
        (run["state"].as_str(), run["damaged"].as_u64(), run["error"].is_null()),
        (Some("finished"), Some(2), true)
    );
    assert_eq!(run["checked"], run["blobs_total"]);
    // Its findings come a page at a time, each page linking to the next.
    let id = run["id"].as_i64().unwrap();
    let r = api.send(Method::GET, &format!("/api/v1/scrub/runs/{id}?n=1")).await;
    let link = r.headers()["link"].to_str().unwrap().to_owned();
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["findings"].as_array().unwrap().len(), 1, "{first}");
    let after = first["findings"][0]["digest"].as_str().unwrap();
    assert_eq!(link, format!("</api/v1/scrub/runs/{id}?n=1&last={}>; rel=\"next\"", after.replace(':', "%3A")));
    let next = api.send(Method::GET, link.trim_start_matches('<').split('>').next().unwrap()).await;
    assert!(next.headers().get("link").is_none(), "the second page is the last");
    let second: Value = next.json().await.unwrap();
    assert_eq!(second["findings"].as_array().unwrap().len(), 1, "{second}");
    assert!(second["findings"][0]["digest"].as_str().unwrap() > after, "{second}");

    // The truncated blob pushed again: its new bytes are served, and a manifest naming it
    // goes in; the next run finds only the corrupted one (whose bad bytes it removed).
    api.push_blob("scrub/app", &truncated.1).await;
    let r = api.send(Method::GET, &format!("/v2/scrub/app/blobs/{}", truncated.0)).await;
    assert_eq!(r.bytes().await.unwrap(), truncated.1);
    assert_eq!(api.put_manifest("scrub/app", "needs-damaged", OCI, &body).await.status(), StatusCode::CREATED);
    let r = api.send(Method::POST, "/api/v1/scrub/runs").await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let id = r.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
    let run = finished(&server.api, id).await;
    assert_eq!((run["state"].as_str(), run["damaged"].as_u64()), (Some("finished"), Some(1)), "{run}");
    let findings: Vec<(&str, &str)> = run["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["digest"].as_str().unwrap(), f["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(findings, vec![(corrupted.0.as_str(), "missing")]);
    assert_error(
        api.send(Method::GET, &format!("/v2/scrub/app/blobs/{}", corrupted.0)).await,
        StatusCode::NOT_FOUND,
        "BLOB_UNKNOWN",
    )
    .await;
    let r = api.send(Method::GET, &format!("/v2/scrub/app/blobs/{}", layers[2].0)).await;
    assert_eq!(r.bytes().await.unwrap(), layers[2].1);
}

/// Issue 17: the scrub removed a damaged blob's bytes without the digest's lock, so a push
/// of the same content that landed between the scrub's finding and its removal (its commit
/// stored the bytes again and its link repaired the record) lost the bytes it was told
/// were stored: 201, then a blob recorded live that no GET could serve. Every pushed blob
/// must be served after the run, whichever came first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_racing_the_scrub_of_its_missing_bytes_keeps_what_it_was_told_was_stored() {
    const BLOBS: u64 = 24;
    let server = TestServer::start_embedded();
    let api = Api::new(server.url());
    let storage = server.storage();
    for round in 0..6u64 {
        let repo = format!("scrub/race{round}");
        let blobs: Vec<Vec<u8>> = (0..BLOBS).map(|i| random_bytes(800, 1000 * (round + 1) + i)).collect();
        for bytes in &blobs {
            api.push_blob(&repo, bytes).await;
        }
        // Their bytes lost behind the server's back; the scrub finds them missing while
        // the same content is pushed again, each push a little later than the one before.
        let entries = storage.blobs_by_digest().await;
        for bytes in &blobs {
            let digest = sha256(bytes);
            storage.remove(&entries.iter().find(|(d, _)| *d == digest).unwrap().1).await;
        }
        let pushes = blobs.iter().enumerate().map(|(i, bytes)| {
            let (api, repo) = (&api, &repo);
            async move {
                tokio::time::sleep(Duration::from_millis(i as u64 * (round + 1))).await;
                api.push_blob(repo, bytes).await
            }
        });
        let (started, _) = tokio::join!(api.send(Method::POST, "/api/v1/scrub/runs"), join_all(pushes));
        assert_eq!(started.status(), StatusCode::ACCEPTED);
        let id = started.json::<Value>().await.unwrap()["id"].as_i64().unwrap();
        let run = finished(&api, id).await;
        assert_eq!(run["state"], "finished", "{run}");
        for bytes in &blobs {
            let digest = sha256(bytes);
            let r = api.send(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await;
            assert_eq!(r.status(), StatusCode::OK, "round {round}: {digest}, pushed (201), is not served: {run}");
            assert!(r.bytes().await.unwrap() == *bytes, "round {round}: {digest}'s bytes");
        }
    }
}

/// Issue 17, the class of the `gc` lease's: a `POST /scrub/runs` whose client hung up while
/// the run was being started dropped the handler between taking this node's "a scrub is
/// running" flag and handing it to the run, so the flag stayed set: 409 for every later
/// start on this node until a restart. The start now happens on the run's own task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrub_start_whose_client_hangs_up_leaves_the_node_able_to_scrub() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    api.push_blob("scrub/hangup", b"hung up").await;
    let request =
        format!("POST /api/v1/scrub/runs HTTP/1.1\r\nHost: x\r\n{}Content-Length: 0\r\n\r\n", admin().header_line());
    for round in 0..40u64 {
        // Hung up at once, or a little later each round: somewhere in the start.
        let mut socket = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        socket.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_micros(round * 150)).await;
        drop(socket);
        // Whatever the hang-up cut short, a start goes through once a run in progress ends.
        let mut started = None;
        for _ in 0..100 {
            let r = api.send(Method::POST, "/api/v1/scrub/runs").await;
            if r.status() == StatusCode::ACCEPTED {
                started = r.json::<Value>().await.unwrap()["id"].as_i64();
                break;
            }
            assert_eq!(r.status(), StatusCode::CONFLICT, "round {round}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let id = started.unwrap_or_else(|| panic!("round {round}: no scrub could start for 5 s after a hang-up"));
        assert_eq!(finished(&api, id).await["state"], "finished");
    }
}
