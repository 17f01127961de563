//! What the API leaves in the stores, checked from outside the server: refused, cancelled,
//! expired and deduplicated uploads, and a blob lost from storage. Each test runs on the
//! stores `BERTH_TEST_BACKEND` selects and looks at the data directory's files or the
//! bucket's objects ([`Storage`]), unless it says why it cannot.

use std::time::{Duration, Instant};

use super::*;
use crate::support::Storage;

/// Polls `check` every 100 ms until it holds; fails after `limit`.
async fn eventually<F: Future<Output = bool>>(limit: Duration, what: &str, mut check: impl FnMut() -> F) {
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nothing staged and no blob bytes: the store is as it started.
async fn assert_nothing_stored(storage: &Storage) {
    assert_eq!(storage.staged().await, [], "staged upload bytes remain");
    assert_eq!(storage.blobs().await, [], "blob bytes remain");
}

#[tokio::test]
async fn digest_mismatch_on_put_is_rejected_and_leaves_nothing() {
    let (s, api) = setup();
    let loc = api.start_upload("mismatch").await;
    let claimed = sha256(b"the bytes the client meant");
    let r = api
        .req(Method::PUT, &with_query(&loc, &format!("digest={claimed}")))
        .body(b"other bytes".to_vec())
        .send()
        .await
        .unwrap();
    let body = assert_error(r, StatusCode::BAD_REQUEST, "DIGEST_INVALID").await;
    assert_eq!(body["errors"][0]["detail"]["expected"], claimed);
    assert_eq!(api.send(Method::HEAD, &format!("/v2/mismatch/blobs/{claimed}")).await.status(), StatusCode::NOT_FOUND);
    let actual = sha256(b"other bytes");
    assert_eq!(api.send(Method::HEAD, &format!("/v2/mismatch/blobs/{actual}")).await.status(), StatusCode::NOT_FOUND);
    assert_error(api.send(Method::GET, &loc).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    // Neither the staged bytes nor a blob remain.
    assert_nothing_stored(&s.storage()).await;
}

#[tokio::test]
async fn cancelled_upload_is_gone_with_its_bytes() {
    let (s, api) = setup();
    let loc = api.start_upload("cancel").await;
    let r = api.req(Method::PATCH, &loc).body(vec![1u8; 100]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let storage = s.storage();
    assert_eq!(storage.staged().await.iter().map(|(_, len)| len).sum::<u64>(), 100, "the chunk is staged");
    let r = api.send(Method::DELETE, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_error(api.send(Method::GET, &loc).await, StatusCode::NOT_FOUND, "BLOB_UPLOAD_UNKNOWN").await;
    assert_nothing_stored(&storage).await;
}

#[tokio::test]
async fn invalid_names_are_refused_before_anything_happens() {
    let (s, api) = setup();
    for path in [
        "/v2/Upper/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/..%2F..%2Fetc/tags/list",
        "/v2//lead/tags/list",
        "/v2/a/./b/blobs/uploads/",
        "/v2/trail-/manifests/latest",
    ] {
        let method = if path.ends_with("uploads/") { Method::POST } else { Method::GET };
        // reqwest normalises `..` away; send the raw path over a socket instead.
        let (status, body) = raw_request(s.addr, method.as_str(), path, b"");
        assert_eq!(status, 400, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["errors"][0]["code"], "NAME_INVALID", "{path}");
    }
    // A body sent with the refused upload is not staged either.
    let (status, _) = raw_request(s.addr, "POST", "/v2/a/./b/blobs/uploads/?digest=sha256:00", b"bytes");
    assert_eq!(status, 400);
    assert_nothing_stored(&s.storage()).await;
    let r = api.send(Method::GET, "/v2/_catalog").await;
    assert_eq!(r.json::<Value>().await.unwrap()["repositories"], json!([]));
}

#[tokio::test]
async fn abandoned_uploads_expire_and_their_bytes_are_removed() {
    let s = TestServer::start_with(|c| {
        c.jobs.upload_ttl = Duration::from_secs(1);
        c.jobs.janitor_interval = Duration::from_millis(200);
    });
    let api = Api::new(s.url());
    let loc = api.start_upload("expire").await;
    let r = api.req(Method::PATCH, &loc).body(vec![7u8; 4096]).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let storage = s.storage();
    assert_eq!(storage.staged().await.iter().map(|(_, len)| len).sum::<u64>(), 4096, "the chunk is staged");
    // The janitor removes the record first, the bytes second: wait for both.
    eventually(Duration::from_secs(5), "the abandoned upload expires", || async {
        api.send(Method::GET, &loc).await.status() == StatusCode::NOT_FOUND
    })
    .await;
    eventually(Duration::from_secs(5), "the expired upload's bytes are removed", || async {
        storage.staged().await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn a_layer_pushed_to_many_repositories_is_stored_once() {
    let (s, api) = setup();
    let layer = random_bytes(2 * 1024 * 1024, 9);
    for i in 0..10 {
        let repo = format!("dedupe/r{i}");
        let digest = api.push_blob(&repo, &layer).await;
        let config = api.push_blob(&repo, format!("{{\"n\":{i}}}").as_bytes()).await;
        let body = image_manifest(OCI_MANIFEST, (&config, 8), &[(&digest, layer.len())], None);
        assert_eq!(api.put_manifest(&repo, "v1", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);
    }
    let stored = s.storage().blobs().await;
    let total: u64 = stored.iter().map(|(_, len)| len).sum();
    // One copy of the 2 MiB layer plus ten tiny configs.
    assert!(total >= layer.len() as u64 && total < layer.len() as u64 + 1000, "{total} bytes of blobs: {stored:?}");
    let copies = stored.iter().filter(|(_, len)| *len == layer.len() as u64).count();
    assert_eq!(copies, 1, "{stored:?}");
    assert_eq!(s.storage().staged().await, [], "the duplicates' staged bytes are dropped");
}

#[tokio::test]
async fn a_blob_lost_from_storage_is_a_500_that_reveals_nothing() {
    let (s, api) = setup();
    let bytes = random_bytes(4096, 12);
    let digest = api.push_blob("lost", &bytes).await;
    let storage = s.storage();
    let (_, entry) = storage.blobs_by_digest().await.into_iter().find(|(d, _)| *d == digest).expect("the blob's bytes");
    // An operator's mistake (or a failed disk): the bytes go, the record stays.
    storage.remove(&entry).await;

    let r = api.send(Method::GET, &format!("/v2/lost/blobs/{digest}")).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/json"));
    let body = r.text().await.unwrap();
    let v: Value = serde_json::from_str(&body).expect("a 5xx body is the spec's error JSON");
    let errors = v["errors"].as_array().expect("an errors array");
    assert_eq!(errors.len(), 1, "{body}");
    assert_eq!(errors[0]["code"], "UNKNOWN", "{body}");
    assert!(errors[0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let fields: Vec<&String> = errors[0].as_object().unwrap().keys().collect();
    assert_eq!(fields, ["code", "message"], "a 5xx carries no detail: {body}");
    // Nothing of what the server knows internally: where the bytes were, what failed.
    let mut internal = vec![
        entry,
        s.data_dir().display().to_string(),
        "blobs/".into(),
        "objects/".into(),
        "registry/".into(),
        "no such file".into(),
        "os error".into(),
        "not found".into(),
        "recorded".into(),
        "missing".into(),
        "storage".into(),
        "sqlite".into(),
        "postgres".into(),
        "select ".into(),
    ];
    if let Some(scale) = &s.backend().scaleout {
        let g = &scale.garage;
        internal.extend([g.endpoint.clone(), g.bucket.clone(), g.access_key_id.clone(), scale.database.clone()]);
    }
    let lowercase = body.to_lowercase();
    for secret in internal {
        assert!(!lowercase.contains(&secret.to_lowercase()), "the 500 body reveals {secret:?}: {body}");
    }

    // One request failed, not the server.
    let other = random_bytes(4096, 13);
    let other_digest = api.push_blob("lost", &other).await;
    let r = api.send(Method::GET, &format!("/v2/lost/blobs/{other_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().as_ref(), &other[..]);
}

#[tokio::test]
async fn a_blob_file_truncated_while_it_is_served_cuts_that_response_only() {
    // Embedded whatever BERTH_TEST_BACKEND says: a file that shrinks under its reader is the
    // filesystem store's failure (an S3 object never changes once written). Memory-mapped
    // serving made it a SIGBUS that killed the process.
    let s = TestServer::start_embedded();
    let api = Api::new(s.url());
    // Far more than the socket buffers hold, so most of it is still unread on disk when
    // the file is cut.
    let bytes = random_bytes(64 << 20, 21);
    let digest = api.push_blob("cut", &bytes).await;
    let (_, path) = s.storage().blobs_by_digest().await.into_iter().find(|(d, _)| *d == digest).expect("the blob file");

    let path_of = format!("/v2/cut/blobs/{digest}");
    let mut r = api.send(Method::GET, &path_of).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.content_length(), Some(bytes.len() as u64));
    let first = r.chunk().await.unwrap().expect("a first chunk");
    // An operator's mistake (or a failing disk) while the blob is being sent.
    std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(0).unwrap();
    let mut got = first.to_vec();
    let cut = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => got.extend_from_slice(&chunk),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut, "a body shorter than its Content-Length must end in an error, not a clean end");
    assert!(got.len() < bytes.len(), "the response was cut ({} of {} bytes)", got.len(), bytes.len());
    assert!(got[..] == bytes[..got.len()], "what was sent before the cut is the blob's bytes");

    // One response failed, not the server: the short file is now refused before the
    // headers, and every other blob is served.
    let r = api.send(Method::GET, &path_of).await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let v: Value = serde_json::from_str(&r.text().await.unwrap()).expect("the spec's error JSON");
    assert_eq!(v["errors"][0]["code"], "UNKNOWN");
    let other = random_bytes(3 << 20, 22);
    let other_digest = api.push_blob("cut", &other).await;
    let r = api.send(Method::GET, &format!("/v2/cut/blobs/{other_digest}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.bytes().await.unwrap()[..] == other[..]);
}

#[tokio::test]
async fn a_second_process_on_the_same_embedded_data_directory_is_refused() {
    // Embedded stores whatever BERTH_TEST_BACKEND says: the lock guards the SQLite
    // database, which only embedded mode has (scale-out nodes share PostgreSQL on purpose).
    let s = TestServer::start_embedded();
    let err = berth::open(&berth::Config::with_data_dir(s.data_dir())).await.err().expect("second open must fail");
    assert!(err.to_string().contains("in use by another berth process"), "{err}");
}
