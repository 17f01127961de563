//! GC in a loop (grace 0 s, untagged manifests removed) while clients push images that
//! share layers across repositories, retag, delete tags and manifests, and pull. At the
//! end every tagged image pulls byte for byte, and every blob no tagged image uses is gone
//! from the metadata and from the blob store (listed directly).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};

use super::{Image, assert_pulls, collect_all, rand_u64, run_gc, stored_blob_count};
use crate::api::{Api, image_manifest, random_bytes, sha256};
use crate::support::TestServer;

const WORKERS: u64 = 3;
const LOAD: Duration = Duration::from_secs(20);

#[derive(Default)]
struct Ledger {
    /// What each tag names now.
    tags: HashMap<(String, String), Image>,
    /// Every blob uploaded, by repository.
    uploaded: BTreeSet<(String, String)>,
}

/// Uploads a blob; a commit that met GC removing the same bytes fails cleanly
/// (`BLOB_UNKNOWN`) and is retried.
async fn upload(api: &Api, repo: &str, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    for _ in 0..10 {
        let r = api.send(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let loc = crate::api::location(&r);
        let sep = if loc.contains('?') { '&' } else { '?' };
        let r = api.req(Method::PUT, &format!("{loc}{sep}digest={digest}")).body(bytes.to_vec()).send().await.unwrap();
        match r.status() {
            StatusCode::CREATED => return digest,
            StatusCode::NOT_FOUND => continue,
            other => panic!("upload of {digest}: {other} {}", r.text().await.unwrap()),
        }
    }
    panic!("upload of {digest} kept failing");
}

/// Pushes an image with one shared and one own layer under `tag`, uploading again what GC
/// took before the manifest named it (`MANIFEST_BLOB_UNKNOWN`).
async fn push(api: &Api, repo: &str, tag: &str, shared: &[u8]) -> Image {
    let config = format!("{{\"tag\":\"{tag}\",\"n\":{}}}", rand_u64());
    let own = random_bytes(600, rand_u64());
    for _ in 0..20 {
        let blobs = vec![
            upload(api, repo, config.as_bytes()).await,
            upload(api, repo, shared).await,
            upload(api, repo, &own).await,
        ];
        let body = image_manifest(
            super::OCI_MANIFEST,
            (&blobs[0], config.len()),
            &[(&blobs[1], shared.len()), (&blobs[2], own.len())],
            None,
        );
        let r = api.put_manifest(repo, tag, super::OCI_MANIFEST, &body).await;
        match r.status() {
            StatusCode::CREATED => return Image { digest: sha256(&body), body, blobs },
            StatusCode::BAD_REQUEST => {
                let text = r.text().await.unwrap();
                assert!(text.contains("MANIFEST_BLOB_UNKNOWN"), "{text}");
            }
            other => panic!("put {repo}:{tag}: {other} {}", r.text().await.unwrap()),
        }
    }
    panic!("{repo}:{tag} could not be pushed");
}

async fn worker(base: String, id: u64, shared: Arc<Vec<Vec<u8>>>, ledger: Arc<Mutex<Ledger>>, until: Instant) {
    let api = Api::new(base);
    let mut rng = rand_u64() | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    while Instant::now() < until {
        let repo = format!("stress/r{}", next(2));
        let tag = format!("w{id}-{}", next(4));
        let key = (repo.clone(), tag.clone());
        let known = ledger.lock().unwrap().tags.get(&key).cloned();
        match (next(10), known) {
            (0..=4, _) | (_, None) => {
                let image = push(&api, &repo, &tag, &shared[next(shared.len() as u64) as usize]).await;
                let mut l = ledger.lock().unwrap();
                l.uploaded.extend(image.blobs.iter().map(|b| (repo.clone(), b.clone())));
                l.tags.insert(key, image);
            }
            (5..=6, Some(_)) => {
                let r = api.send(Method::DELETE, &format!("/v2/{repo}/manifests/{tag}")).await;
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                ledger.lock().unwrap().tags.remove(&key);
            }
            (7, Some(image)) => {
                let r = api.send(Method::DELETE, &format!("/v2/{repo}/manifests/{}", image.digest)).await;
                assert_eq!(r.status(), StatusCode::ACCEPTED);
                ledger.lock().unwrap().tags.remove(&key);
            }
            (_, Some(image)) => assert_pulls(&api, &repo, &tag, &image).await,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gc_in_a_loop_under_pushes_retags_deletes_and_pulls_loses_nothing_and_leaves_no_garbage() {
    let server = TestServer::start_with(|c| {
        c.jobs.gc_grace = Duration::ZERO;
        c.jobs.gc_delete_untagged = true;
    });
    let shared: Arc<Vec<Vec<u8>>> = Arc::new((0..4).map(|_| random_bytes(4000, rand_u64())).collect());
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let until = Instant::now() + LOAD;
    let workers: Vec<_> = (0..WORKERS)
        .map(|id| tokio::spawn(worker(server.url(), id, Arc::clone(&shared), Arc::clone(&ledger), until)))
        .collect();
    let mut runs = 0;
    let mut removed = 0;
    while Instant::now() < until {
        let report = run_gc(&server.url(), false, runs % 5 == 4).await;
        removed += report["run"]["blobs_removed"].as_u64().unwrap();
        runs += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for w in workers {
        w.await.expect("a worker failed");
    }
    collect_all(&server.url()).await;
    run_gc(&server.url(), false, true).await;
    let ledger = Arc::into_inner(ledger).unwrap().into_inner().unwrap();
    eprintln!("{runs} GC runs removed {removed} blobs under load; {} tags at the end", ledger.tags.len());
    assert!(removed > 0 && runs > 10, "the load made no garbage for GC to collect under it");

    // Every tagged image, whole.
    let api = Api::new(server.url());
    let mut used: BTreeSet<(String, String)> = BTreeSet::new();
    let mut digests: BTreeSet<String> = BTreeSet::new();
    for ((repo, tag), image) in &ledger.tags {
        assert_pulls(&api, repo, tag, image).await;
        used.extend(image.blobs.iter().map(|b| (repo.clone(), b.clone())));
        digests.extend(image.blobs.iter().cloned());
    }
    // Nothing else: not in the metadata (no repository serves it) ...
    for (repo, blob) in ledger.uploaded.difference(&used) {
        if digests.contains(blob) {
            continue; // used by another repository: its link here may stay (a mount, a push).
        }
        let r = api.send(Method::HEAD, &format!("/v2/{repo}/blobs/{blob}")).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{repo}@{blob} is garbage but still served");
    }
    // ... and not in the blob store: exactly one stored blob per digest in use.
    assert_eq!(stored_blob_count(&server).await, digests.len(), "stored blobs vs blobs in use");
}
