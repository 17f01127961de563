//! The S3 backend's tests, against a real Garage server (`berth_testkit::Garage`).

use berth_testkit::Garage;

use crate::suite::bytes;

use super::*;

fn config(g: &Garage, prefix: &str) -> S3Config {
    S3Config {
        bucket: g.bucket.clone(),
        prefix: prefix.to_owned(),
        region: g.region.clone(),
        endpoint: Some(g.endpoint.clone()),
        path_style: true,
        access_key_id: Some(g.access_key_id.clone()),
        secret_access_key: Some(g.secret_access_key.clone()),
        ..S3Config::default()
    }
}

fn store(g: &Garage, prefix: &str) -> S3BlobStore {
    S3BlobStore::new(config(g, prefix)).unwrap()
}

fn body(parts: Vec<Vec<u8>>) -> ByteStream {
    Box::pin(stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p))).collect::<Vec<_>>()))
}

/// `first`, then the client goes away.
fn failing_body(first: Vec<u8>) -> ByteStream {
    Box::pin(stream::iter(vec![Ok(Bytes::from(first)), Err(io::Error::new(io::ErrorKind::UnexpectedEof, "gone"))]))
}

async fn collect(s: ByteStream) -> Vec<u8> {
    s.try_fold(Vec::new(), |mut v, b| async move {
        v.extend_from_slice(&b);
        Ok(v)
    })
    .await
    .unwrap()
}

fn parsed(state: &str) -> State {
    serde_json::from_str(state).unwrap()
}

async fn objects_under(store: &S3BlobStore, rel: &str) -> Vec<String> {
    // One path part per component: a part holding a `/` would be escaped, and list nothing.
    let parts: Vec<&str> = rel.split('/').collect();
    let prefix = store.at(&parts);
    store.s3.list(Some(&prefix)).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
}

const MIB: usize = 1 << 20;

#[tokio::test]
async fn s3_store_passes_the_shared_suite() {
    let garage = Garage::start();
    let store = store(&garage, "suite");
    crate::suite::run(&store).await;
    assert!(objects_under(&store, "uploads").await.is_empty());
}

#[tokio::test]
async fn an_upload_continues_on_another_node_whatever_happened_before() {
    let garage = Garage::start();
    let (a, b) = (store(&garage, "p/q"), store(&garage, "p/q"));
    let content = bytes(30 * MIB + 12_345, 7);
    let id = "0000bbbb-0000-4000-8000-000000000001";
    let st = a.create_upload(id).await.unwrap();

    // Node A: 3 MiB, a pending segment only.
    let (n, st) = a.append_upload(id, &st, 0, body(vec![content[..3 * MIB].to_vec()])).await.unwrap();
    assert_eq!(n as usize, 3 * MIB);
    assert!(parsed(&st).multipart.is_none());

    // Node B: a body that fails after filling a part (with A's segment) leaves the
    // state as it was, though a multipart upload and a part were made.
    let err =
        b.append_upload(id, &st, 3 * MIB as u64, failing_body(content[3 * MIB..12 * MIB].to_vec())).await.unwrap_err();
    assert!(matches!(err, StorageError::Body(_)), "{err:?}");

    // Node B: an append that succeeds but is never recorded (the server saw a short
    // body), with different bytes than the real ones.
    let (_, unrecorded) = b.append_upload(id, &st, 3 * MIB as u64, body(vec![bytes(7 * MIB, 99)])).await.unwrap();
    assert_eq!(parsed(&unrecorded).parts.len(), 1);

    // Node A continues from the recorded state: 6 MiB fills part 1 with the 3 MiB
    // segment and leaves 1 MiB pending.
    let (_, st) =
        a.append_upload(id, &st, 3 * MIB as u64, body(vec![content[3 * MIB..9 * MIB].to_vec()])).await.unwrap();
    let s = parsed(&st);
    assert_eq!((s.parts.len(), s.pending_len() as usize, s.consumed.len()), (1, MIB, 1));
    assert!(s.multipart.is_some());

    // A restart of node B: a new instance takes over, in small and large chunks.
    drop(b);
    let b = store(&garage, "p/q");
    let mut offset = 9 * MIB;
    let mut st = st;
    for end in [9 * MIB + 10, 9 * MIB + 100_000, 20 * MIB, content.len()] {
        let chunk = content[offset..end].to_vec();
        let node = if end % 2 == 0 { &a } else { &b };
        let (n, next) = node.append_upload(id, &st, offset as u64, body(vec![chunk])).await.unwrap();
        assert_eq!(n as usize, end - offset);
        (st, offset) = (next, end);
    }
    assert_eq!(parsed(&st).parts.len(), 3);
    // The wrong offset is refused.
    assert!(matches!(
        a.append_upload(id, &st, 5, body(vec![b"x".to_vec()])).await,
        Err(StorageError::OffsetMismatch { expected: 5, .. })
    ));

    let key = a.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
    assert!(collect(b.read_blob(&key, None).await.unwrap()).await == content, "content differs");
    assert!(a.list_uploads().await.unwrap().is_empty());
    assert_eq!(objects_under(&a, "uploads").await, Vec::<String>::new());
}

#[tokio::test]
async fn small_blobs_are_one_put_and_large_ones_multipart() {
    let garage = Garage::start();
    let store = store(&garage, "");
    // Several small appends up to just under a part: no multipart upload.
    let content = bytes(DEFAULT_PART_SIZE - 1, 3);
    let id = "0000cccc-0000-4000-8000-000000000001";
    let mut st = store.create_upload(id).await.unwrap();
    let mut offset = 0;
    for end in [10, 5 * MIB, content.len()] {
        (_, st) = store.append_upload(id, &st, offset as u64, body(vec![content[offset..end].to_vec()])).await.unwrap();
        offset = end;
    }
    let s = parsed(&st);
    assert!(s.multipart.is_none() && s.parts.is_empty(), "{s:?}");
    assert_eq!(s.pending.len(), 3);
    assert!(objects_under(&store, &format!("uploads/{id}")).await.iter().all(|o| !o.ends_with("/multipart")));
    let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);

    // One append of a small blob: committed by copying its one segment.
    let id = "0000cccc-0000-4000-8000-000000000002";
    let st = store.create_upload(id).await.unwrap();
    let (_, st) = store.append_upload(id, &st, 0, body(vec![b"{}".to_vec()])).await.unwrap();
    assert_eq!(parsed(&st).pending.len(), 1);
    let key = store.commit_upload(id, &st, 2, &Digest::of(b"{}")).await.unwrap();
    assert_eq!(collect(store.read_blob(&key, None).await.unwrap()).await, b"{}");

    // The empty blob.
    let id = "0000cccc-0000-4000-8000-000000000003";
    let st = store.create_upload(id).await.unwrap();
    let key = store.commit_upload(id, &st, 0, &Digest::of(b"")).await.unwrap();
    assert_eq!(store.blob_size(&key).await.unwrap(), Some(0));
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await.is_empty());

    // Exactly one part: multipart, with nothing pending.
    let content = bytes(DEFAULT_PART_SIZE, 4);
    let id = "0000cccc-0000-4000-8000-000000000004";
    let st = store.create_upload(id).await.unwrap();
    let (_, st) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
    let s = parsed(&st);
    assert!(s.multipart.is_some() && s.parts.len() == 1 && s.pending.is_empty(), "{s:?}");
    let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);
    assert!(store.list_uploads().await.unwrap().is_empty());
}

#[tokio::test]
async fn ranges_across_parts() {
    let garage = Garage::start();
    let store = store(&garage, "r");
    let content = bytes(2 * DEFAULT_PART_SIZE + 1000, 5);
    let id = "0000dddd-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    let (_, st) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
    let key = store.commit_upload(id, &st, content.len() as u64, &Digest::of(&content)).await.unwrap();
    let p = DEFAULT_PART_SIZE as u64;
    let len = content.len() as u64;
    for r in [0..1, p - 5..p + 5, 2 * p - 1..2 * p + 1, len - 1..len, 0..len, 12..3 * MIB as u64] {
        let got = collect(store.read_blob(&key, Some(r.clone())).await.unwrap()).await;
        assert!(got == content[r.start as usize..r.end as usize], "range {r:?}");
    }
    assert!(collect(store.read_blob(&key, Some(7..7)).await.unwrap()).await.is_empty());
    let missing = format!("sha256/{}/0000dddd-0000-4000-8000-000000000002", "0".repeat(64));
    assert!(matches!(store.read_blob(&missing, Some(0..5)).await, Err(StorageError::NotFound)));
    assert!(matches!(store.read_blob(&missing, Some(5..5)).await, Err(StorageError::NotFound)));
    for bad in ["", "../x", "sha256/abc/0000", &format!("sha256/{}/../x", "0".repeat(64))] {
        assert!(matches!(store.read_blob(bad, None).await, Err(StorageError::NotFound)), "{bad}");
    }
}

#[tokio::test]
async fn commits_keep_their_own_bytes_and_repeat() {
    let garage = Garage::start();
    let store = store(&garage, "d");
    let content = bytes(9 * MIB, 6);
    let digest = Digest::of(&content);
    let len = content.len() as u64;
    let upload = |id: &'static str| {
        let store = &store;
        let content = content.clone();
        async move {
            let st = store.create_upload(id).await.unwrap();
            store.append_upload(id, &st, 0, body(vec![content])).await.unwrap().1
        }
    };
    let (u1, u2, u3) = (
        "0000eeee-0000-4000-8000-000000000001",
        "0000eeee-0000-4000-8000-000000000002",
        "0000eeee-0000-4000-8000-000000000003",
    );
    let (s1, s2) = (upload(u1).await, upload(u2).await);
    let k1 = store.commit_upload(u1, &s1, len, &digest).await.unwrap();
    assert_eq!(k1, format!("sha256/{}/{u1}", digest.hex()));
    // Same digest, another upload: its own bytes under its own key, never u1's (the
    // metadata store deduplicates, and the caller deletes the copy it does not keep).
    let k2 = store.commit_upload(u2, &s2, len, &digest).await.unwrap();
    assert_eq!(k2, format!("sha256/{}/{u2}", digest.hex()));
    assert!(store.list_uploads().await.unwrap().is_empty());
    assert!(collect(store.read_blob(&k2, None).await.unwrap()).await == content);
    // A repeated commit (a crash before the metadata recorded the first) returns the
    // same key.
    assert_eq!(store.commit_upload(u1, &s1, len, &digest).await.unwrap(), k1);
    assert_eq!(store.commit_upload(u1, &s1, len, &digest).await.unwrap(), k1);

    // A crash after completing u3 but before the commit returned: the retry answers
    // u3's own key.
    let s3 = upload(u3).await;
    store.complete(u3, &parsed(&s3)).await.unwrap();
    let k3 = store.commit_upload(u3, &s3, len, &digest).await.unwrap();
    assert_eq!(k3, format!("sha256/{}/{u3}", digest.hex()));
    assert!(collect(store.read_blob(&k3, None).await.unwrap()).await == content);

    // Deleting one copy keeps the others; deleting it again succeeds.
    store.delete_blob(&k1).await.unwrap();
    store.delete_blob(&k1).await.unwrap();
    assert_eq!(store.blob_size(&k1).await.unwrap(), None);
    assert_eq!(store.blob_size(&k2).await.unwrap(), Some(len));
    assert_eq!(store.blob_size(&k3).await.unwrap(), Some(len));
    // Nothing but the objects and no staging is left.
    assert_eq!(objects_under(&store, "objects").await.len(), 2);
    assert!(objects_under(&store, "uploads").await.is_empty());
}

#[tokio::test]
async fn orphans_are_listed_and_removed_without_their_state() {
    let garage = Garage::start();
    let store = store(&garage, "o");
    let id = "0000ffff-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty(), "nothing staged yet");
    let (_, st) = store.append_upload(id, &st, 0, body(vec![bytes(9 * MIB, 8)])).await.unwrap();
    let m = parsed(&st).multipart.unwrap();
    assert_eq!(store.list_uploads().await.unwrap(), vec![id.to_owned()]);
    // The record is lost: the janitor passes an empty state.
    store.delete_upload(id, "").await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
    assert!(objects_under(&store, "uploads").await.is_empty());
    let err = store.s3.put_part(&store.object(id), &m, 3, PutPayload::from_static(b"x")).await;
    assert!(err.is_err(), "the multipart upload is aborted");
    store.delete_upload(id, "").await.unwrap();

    // A multipart upload made by an append that was never recorded is aborted too.
    let id = "0000ffff-0000-4000-8000-000000000002";
    let st = store.create_upload(id).await.unwrap();
    let (_, unrecorded) = store.append_upload(id, &st, 0, body(vec![bytes(9 * MIB, 9)])).await.unwrap();
    store.delete_upload(id, &st).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
    let m = parsed(&unrecorded).multipart.unwrap();
    assert!(store.s3.put_part(&store.object(id), &m, 3, PutPayload::from_static(b"x")).await.is_err());
}

#[tokio::test]
async fn presigned_get_serves_the_blob() {
    let garage = Garage::start();
    let store = store(&garage, "s");
    let id = "0000abab-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    let (_, st) = store.append_upload(id, &st, 0, body(vec![b"hello world".to_vec()])).await.unwrap();
    let key = store.commit_upload(id, &st, 11, &Digest::of(b"hello world")).await.unwrap();
    let url = store.presign_get(&key, Duration::from_secs(60)).await.unwrap().unwrap();
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(&resp.bytes().await.unwrap()[..], b"hello world");
    assert!(matches!(store.presign_get("not-a-key", Duration::from_secs(60)).await, Err(StorageError::NotFound)));
}

/// The URL is signed for the public endpoint (its host is part of the signature), so a
/// client that reaches the bucket by that name is served, and the internal name is not
/// what it is sent to.
#[tokio::test]
async fn presigned_get_is_signed_for_the_public_endpoint() {
    let garage = Garage::start();
    let public = garage.endpoint.replace("127.0.0.1", "localhost");
    assert_ne!(public, garage.endpoint);
    let store = store(&garage, "p").with_public_endpoint(&config(&garage, "p"), &public).unwrap();
    let id = "0000abab-0000-4000-8000-000000000002";
    let st = store.create_upload(id).await.unwrap();
    let (_, st) = store.append_upload(id, &st, 0, body(vec![b"public bytes".to_vec()])).await.unwrap();
    let key = store.commit_upload(id, &st, 12, &Digest::of(b"public bytes")).await.unwrap();
    let url = store.presign_get(&key, Duration::from_secs(60)).await.unwrap().unwrap();
    assert!(url.starts_with(&format!("{public}/")), "{url}");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 200, "{url}");
    assert_eq!(&resp.bytes().await.unwrap()[..], b"public bytes");
    // The same signature presented under the internal name does not verify.
    let internal = url.replacen(&public, &garage.endpoint, 1);
    assert_eq!(reqwest::get(&internal).await.unwrap().status(), 403, "{internal}");
    assert!(store.with_public_endpoint(&config(&garage, "p"), "s3.example.com").is_err());
}

#[tokio::test]
async fn parts_of_unrecorded_appends_never_reach_a_blob() {
    let garage = Garage::start();
    let store = store(&garage, "x");
    let part = DEFAULT_PART_SIZE;
    // A part uploaded past the recorded ones by an append that was never recorded is
    // left out of the completed object.
    let id = "0000a0a0-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    let content = bytes(part, 1);
    let (_, recorded) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
    let (_, unrecorded) = store.append_upload(id, &recorded, part as u64, body(vec![bytes(part, 2)])).await.unwrap();
    assert_eq!(parsed(&unrecorded).parts.len(), 2);
    let key = store.commit_upload(id, &recorded, part as u64, &Digest::of(&content)).await.unwrap();
    assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content);

    // Two nodes appending from the same state at once (a misbehaving client): the
    // loser's part overwrites the winner's, and the server refuses to complete with
    // the winner's ETag. The commit fails; it never makes other bytes the blob.
    let id = "0000a0a0-0000-4000-8000-000000000002";
    let st = store.create_upload(id).await.unwrap();
    let content = bytes(part + 10, 3);
    let (_, winner) = store.append_upload(id, &st, 0, body(vec![content.clone()])).await.unwrap();
    let (_, _loser) = store.append_upload(id, &st, 0, body(vec![bytes(part + 10, 4)])).await.unwrap();
    let err = store.commit_upload(id, &winner, content.len() as u64, &Digest::of(&content)).await.unwrap_err();
    assert!(matches!(err, StorageError::Conflict(_)), "{err:?}");
    assert_eq!(store.size_of(&store.object(id)).await.unwrap(), None);
    store.delete_upload(id, &winner).await.unwrap();
    assert!(store.list_uploads().await.unwrap().is_empty());
}

/// A store whose appends share a budget of two minimum-size parts.
fn tight_store(g: &Garage, prefix: &str) -> S3BlobStore {
    let config = S3Config { part_size: MIN_PART_SIZE, append_budget: 2 * MIN_PART_SIZE, ..config(g, prefix) };
    S3BlobStore::new(config).unwrap()
}

#[tokio::test]
async fn a_stalled_append_gives_its_memory_back_to_the_budget() {
    let garage = Garage::start();
    let store = std::sync::Arc::new(tight_store(&garage, "stall"));
    let id = "0000d0d0-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    // 3 MiB, then the client sends nothing more and never ends.
    let data: ByteStream = Box::pin(stream::iter(vec![Ok(Bytes::from(bytes(3 * MIB, 1)))]).chain(stream::pending()));
    let stalled = {
        let store = std::sync::Arc::clone(&store);
        tokio::spawn(async move { store.append_upload(id, &st, 0, data).await })
    };
    let total = store.budget.available();
    let mut held = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        held = held.max(total - store.budget.available());
    }
    assert!(held >= 3 * MIB, "the append held {held} bytes of its 3 MiB");
    tokio::time::sleep(SPILL_IDLE + Duration::from_millis(1500)).await;
    assert_eq!(store.budget.available(), total, "the stalled append still holds budget");
    assert!(!stalled.is_finished());
    assert_eq!(objects_under(&store, &format!("uploads/{id}")).await.len(), 1, "its bytes went to a segment");
    stalled.abort();
}

#[tokio::test]
async fn appends_beyond_the_memory_budget_wait_and_all_complete() {
    let garage = Garage::start();
    let store = std::sync::Arc::new(tight_store(&garage, "budget"));
    // Six appends of 2.4 parts each at once, in 256 KiB chunks: together they would hold
    // six parts; the budget has two. Each must finish, with its own bytes.
    let tasks: Vec<_> = (0..6u8)
        .map(|i| {
            let store = std::sync::Arc::clone(&store);
            tokio::spawn(async move {
                let id = format!("0000e0e0-0000-4000-8000-00000000000{i}");
                let content = bytes(MIN_PART_SIZE * 12 / 5, 10 + i);
                let st = store.create_upload(&id).await.unwrap();
                let chunks: Vec<Vec<u8>> = content.chunks(256 << 10).map(<[u8]>::to_vec).collect();
                let (n, st) = store.append_upload(&id, &st, 0, body(chunks)).await.unwrap();
                assert_eq!(n as usize, content.len());
                let key = store.commit_upload(&id, &st, n, &Digest::of(&content)).await.unwrap();
                assert!(collect(store.read_blob(&key, None).await.unwrap()).await == content, "upload {i}");
            })
        })
        .collect();
    let all = futures_util::future::join_all(tasks);
    let done = tokio::time::timeout(Duration::from_secs(300), all).await.expect("appends deadlocked on the budget");
    for d in done {
        d.unwrap();
    }
    assert_eq!(store.budget.available(), 2 * MIN_PART_SIZE, "budget leaked");
}

/// Peak resident memory of this process (nextest runs each test in its own).
fn peak_rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib = status.lines().find_map(|l| l.strip_prefix("VmHWM:")).unwrap().trim().trim_end_matches(" kB");
    kib.trim().parse::<usize>().unwrap() * 1024
}

#[tokio::test]
async fn memory_stays_bounded_whatever_the_blob_size() {
    let garage = Garage::start();
    let store = store(&garage, "m");
    let size = 400 * MIB;
    // A fresh allocation per chunk, as a request body gives: buffering shows in RSS.
    let chunk = |i: usize| vec![i as u8; MIB];
    let before = peak_rss();
    let id = "0000c0c0-0000-4000-8000-000000000001";
    let st = store.create_upload(id).await.unwrap();
    let data: ByteStream = Box::pin(stream::iter((0..size / MIB).map(move |i| Ok(Bytes::from(chunk(i))))));
    let (n, st) = store.append_upload(id, &st, 0, data).await.unwrap();
    assert_eq!(n as usize, size);
    let mut hasher = berth_core::DigestHasher::new();
    for i in 0..size / MIB {
        hasher.update(&chunk(i));
    }
    let key = store.commit_upload(id, &st, size as u64, &hasher.finish()).await.unwrap();
    let mut read = 0;
    let mut body = store.read_blob(&key, None).await.unwrap();
    while let Some(b) = body.next().await {
        read += b.unwrap().len();
    }
    assert_eq!(read, size);
    let grown = peak_rss().saturating_sub(before);
    assert!(grown < 64 * MIB, "peak memory grew by {} MiB for a {} MiB blob", grown / MIB, size / MIB);
}

#[test]
fn config_from_url() {
    let c = S3Config::from_url(
        "s3://my-bucket/some/prefix/?endpoint=http%3A%2F%2F127.0.0.1%3A3900&region=garage&path_style=true",
    )
    .unwrap();
    assert_eq!((c.bucket.as_str(), c.prefix.as_str(), c.region.as_str()), ("my-bucket", "some/prefix", "garage"));
    assert_eq!(c.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    assert!(c.path_style && !c.allow_http);
    assert_eq!(c.part_size, DEFAULT_PART_SIZE);

    let c = S3Config::from_url("s3://b").unwrap();
    assert_eq!(
        (c.bucket.as_str(), c.prefix.as_str(), c.region.as_str(), c.endpoint.as_deref()),
        ("b", "", "us-east-1", None)
    );
    assert!(!c.path_style);

    let c =
        S3Config::from_url("s3://b/p?endpoint=http://minio.internal:9000&allow_http=true&part_size=16777216").unwrap();
    assert!(c.allow_http);
    assert_eq!(c.part_size, 16 << 20);

    for bad in [
        "http://b/p",
        "s3://",
        "s3:///p",
        "s3://b/p?bogus=1",
        "s3://b?path_style=yes",
        "s3://b?part_size=1024",
        "s3://b?part_size=lots",
        "s3://b?endpoint=minio:9000",
        "s3://b?endpoint=http://minio.internal:9000",
        "s3://b/a//c",
        "s3://b?region=",
    ] {
        assert!(S3Config::from_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn loopback_endpoints_may_be_plain_http() {
    for url in ["http://127.0.0.1:3900", "http://localhost", "http://[::1]:9000/", "http://127.8.9.10"] {
        assert!(is_loopback(url), "{url}");
    }
    for url in ["http://10.0.0.1", "http://127.0.0.1.example.com", "http://example.com/127.0.0.1", "http://[::2]"] {
        assert!(!is_loopback(url), "{url}");
    }
    let c = S3Config { bucket: "b".into(), endpoint: Some("http://127.0.0.1:1".into()), ..S3Config::default() };
    assert!(S3BlobStore::new(c).is_ok());
    let c = S3Config { bucket: "b".into(), endpoint: Some("http://10.1.1.1:1".into()), ..S3Config::default() };
    assert!(S3BlobStore::new(c).is_err());
    let c = S3Config { bucket: "b".into(), access_key_id: Some("k".into()), ..S3Config::default() };
    assert!(S3BlobStore::new(c).is_err(), "a key id without a secret");
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let c = S3Config {
        secret_access_key: Some("hunter2".into()),
        session_token: Some("tok".into()),
        ..S3Config::default()
    };
    let shown = format!("{c:?}");
    assert!(!shown.contains("hunter2") && !shown.contains("tok\""), "{shown}");
}

#[test]
fn chunks_split_without_losing_bytes() {
    let mut c = Chunks::default();
    for part in [&b"abc"[..], b"defgh", b"i"] {
        c.push(Bytes::copy_from_slice(part));
    }
    let first: Vec<u8> = c.take(4).concat();
    assert_eq!(first, b"abcd");
    assert_eq!(c.len, 5);
    assert_eq!(c.take(5).concat(), b"efghi");
    assert_eq!(c.len, 0);
}
