//! Garbage collection, end to end on the real server (either backend): what a run removes
//! and keeps (indexes, referrers), dry runs against real runs, the full sweep of the blob
//! store, a SIGKILL in the middle of a run (`gc/crash.rs`), and GC in a loop under
//! concurrent pushes, retags, deletes and pulls (`gc/stress.rs`), mounts racing a run
//! (`gc/races.rs`), and the run's lease when its client hangs up (`gc/lease.rs`). The blob
//! store is looked at directly (`Storage`), not through the server.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, image_manifest, random_bytes, sha256};
use crate::support::{TestServer, admin, http_client};

mod crash;
mod lease;
mod races;
mod stress;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// Runs GC through the management API; the report.
pub async fn run_gc(base: &str, dry_run: bool, full: bool) -> Value {
    let client = http_client().build().unwrap();
    let r = client.post(format!("{base}/api/v1/gc")).json(&json!({ "dry_run": dry_run, "full": full })).send().await;
    let r = r.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// With a grace of 0 s a candidate is due once queued: runs GC until a run removes nothing
/// (what a removal leaves unreferenced is queued anew, for the next run).
pub async fn collect_all(base: &str) {
    for _ in 0..6 {
        let run = &run_gc(base, false, false).await["run"];
        if run["manifests_removed"] == 0 && run["blobs_removed"] == 0 {
            return;
        }
    }
    panic!("garbage collection did not settle");
}

/// `(digest, size)` of every blob a report lists, and `repo@digest` of its manifests.
fn listed(report: &Value) -> (BTreeSet<(String, u64)>, BTreeSet<String>) {
    let blobs = report["blobs"].as_array().unwrap().iter();
    let blobs = blobs.map(|b| (b["digest"].as_str().unwrap().to_owned(), b["size"].as_u64().unwrap())).collect();
    let manifests = report["manifests"].as_array().unwrap().iter();
    let manifests =
        manifests.map(|m| format!("{}@{}", m["repository"].as_str().unwrap(), m["digest"].as_str().unwrap()));
    (blobs, manifests.collect())
}

/// An image of a config and `layers` (their bytes), pushed and tagged; (digest, body, blob digests).
async fn push(api: &Api, repo: &str, tag: &str, layers: &[Vec<u8>], subject: Option<(&str, usize)>) -> Image {
    let config = format!("{{\"tag\":\"{tag}\",\"n\":{}}}", rand_u64());
    let config_digest = api.push_blob(repo, config.as_bytes()).await;
    let mut blobs = vec![config_digest.clone()];
    let mut refs = Vec::new();
    for layer in layers {
        blobs.push(api.push_blob(repo, layer).await);
        refs.push((blobs.last().unwrap().clone(), layer.len()));
    }
    let refs: Vec<(&str, usize)> = refs.iter().map(|(d, n)| (d.as_str(), *n)).collect();
    let body = image_manifest(OCI_MANIFEST, (&config_digest, config.len()), &refs, subject);
    let r = api.put_manifest(repo, tag, OCI_MANIFEST, &body).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    Image { digest: sha256(&body), body, blobs }
}

#[derive(Clone, Debug)]
pub struct Image {
    pub digest: String,
    pub body: Vec<u8>,
    pub blobs: Vec<String>,
}

fn rand_u64() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    nanos ^ NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The status of `method` on `path`.
async fn status(api: &Api, method: Method, path: &str) -> StatusCode {
    api.send(method, path).await.status()
}

/// Pulls `image` from `repo` by `reference` and checks every byte.
pub async fn assert_pulls(api: &Api, repo: &str, reference: &str, image: &Image) {
    let r = api.send(Method::GET, &format!("/v2/{repo}/manifests/{reference}")).await;
    assert_eq!(r.status(), StatusCode::OK, "{repo}:{reference}");
    assert_eq!(r.bytes().await.unwrap().to_vec(), image.body, "{repo}:{reference} manifest bytes");
    for blob in &image.blobs {
        let r = api.send(Method::GET, &format!("/v2/{repo}/blobs/{blob}")).await;
        assert_eq!(r.status(), StatusCode::OK, "{repo}@{blob} of {reference}");
        assert_eq!(sha256(&r.bytes().await.unwrap()), *blob, "{repo}@{blob} bytes");
    }
}

/// Blob digests the blob store holds, listed directly (embedded: file names; S3: the
/// number of objects, as object names carry no digest).
pub async fn stored_blob_count(server: &TestServer) -> usize {
    server.storage().blobs().await.len()
}

fn index(children: &[(&str, usize)]) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": children.iter().map(|(d, s)| json!({
            "mediaType": OCI_MANIFEST, "digest": d, "size": s,
            "platform": { "architecture": "amd64", "os": "linux" },
        })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

fn gc_server(delete_untagged: bool) -> TestServer {
    TestServer::start_with(|c| {
        c.jobs.gc_grace = Duration::ZERO;
        c.jobs.gc_delete_untagged = delete_untagged;
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untagged_manifest_an_index_references_survives_and_an_orphaned_referrer_goes() {
    let server = gc_server(true);
    let api = Api::new(server.url());
    let repo = "gc/app";
    let layer = |seed| random_bytes(3000, seed);
    let child = push(&api, repo, "child", &[layer(rand_u64())], None).await;
    let r = api.put_manifest(repo, "multi", OCI_INDEX, &index(&[(&child.digest, child.body.len())])).await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(status(&api, Method::DELETE, &format!("/v2/{repo}/manifests/child")).await, StatusCode::ACCEPTED);
    // A referrer whose subject is then deleted.
    let subject = push(&api, repo, "subject", &[layer(rand_u64())], None).await;
    let referrer = push(&api, repo, "sig", &[layer(rand_u64())], Some((&subject.digest, subject.body.len()))).await;
    assert_eq!(status(&api, Method::DELETE, &format!("/v2/{repo}/manifests/sig")).await, StatusCode::ACCEPTED);
    let path = format!("/v2/{repo}/manifests/{}", subject.digest);
    assert_eq!(status(&api, Method::DELETE, &path).await, StatusCode::ACCEPTED);

    collect_all(&server.url()).await;
    // The index's child stays, untagged, with its blobs.
    assert_pulls(&api, repo, &child.digest, &child).await;
    // The referrer, its subject and every blob only they used are gone: metadata and bytes.
    for gone in [&referrer, &subject] {
        let path = format!("/v2/{repo}/manifests/{}", gone.digest);
        assert_eq!(status(&api, Method::GET, &path).await, StatusCode::NOT_FOUND, "{}", gone.digest);
        for blob in &gone.blobs {
            let path = format!("/v2/{repo}/blobs/{blob}");
            assert_eq!(status(&api, Method::HEAD, &path).await, StatusCode::NOT_FOUND, "{blob}");
        }
    }
    assert_eq!(stored_blob_count(&server).await, child.blobs.len(), "only the child's blobs are stored");

    // Without the index's tag, the index and then its child go too.
    assert_eq!(status(&api, Method::DELETE, &format!("/v2/{repo}/manifests/multi")).await, StatusCode::ACCEPTED);
    collect_all(&server.url()).await;
    let path = format!("/v2/{repo}/manifests/{}", child.digest);
    assert_eq!(status(&api, Method::GET, &path).await, StatusCode::NOT_FOUND);
    assert_eq!(stored_blob_count(&server).await, 0);

    // Each removed manifest is in the audit log, done by `gc`.
    let client = http_client().build().unwrap();
    let url = format!("{}/api/v1/audit?operation=gc.manifest.delete", server.url());
    let mut resources = BTreeSet::new();
    for _ in 0..50 {
        let entries: Value = client.get(&url).send().await.unwrap().json().await.unwrap();
        resources = entries.as_array().unwrap().iter().map(|e| e["resource"].as_str().unwrap().to_owned()).collect();
        assert!(entries.as_array().unwrap().iter().all(|e| e["actor"] == "gc" && e["project"] == "gc"));
        if resources.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // (The subject was deleted by a client, not by GC.)
    let expected: BTreeSet<String> = [&child, &referrer]
        .iter()
        .map(|i| format!("{repo}@{}", i.digest))
        .chain([format!("{repo}@{}", sha256(&index(&[(&child.digest, child.body.len())])))])
        .collect();
    assert_eq!(resources, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_lists_exactly_what_the_next_real_run_removes() {
    let server = gc_server(false);
    let api = Api::new(server.url());
    let (repo, other) = ("dry/app", "dry/other");
    let shared = random_bytes(2000, rand_u64());
    let kept = push(&api, repo, "kept", std::slice::from_ref(&shared), None).await;
    let retagged = push(&api, repo, "moving", &[shared.clone(), random_bytes(1500, rand_u64())], None).await;
    push(&api, repo, "moving", &[random_bytes(1700, rand_u64())], None).await;
    let deleted = push(&api, other, "x", &[random_bytes(900, rand_u64())], None).await;
    let path = format!("/v2/{other}/manifests/{}", deleted.digest);
    assert_eq!(status(&api, Method::DELETE, &path).await, StatusCode::ACCEPTED);
    let loose = api.push_blob(repo, &random_bytes(777, rand_u64())).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    // The CLI's dry run, then the API's, then the real run.
    let out = crate::support::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["gc", "--dry-run", "--url", &server.url(), "--user", "admin"])
            .env("BERTH_PASSWORD", admin().password)
            .env("BERTH_CONFIG_DIR", server.scratch("cli")),
    );
    let dry = run_gc(&server.url(), true, false).await;
    let (dry_blobs, dry_manifests) = listed(&dry);
    for (digest, _) in &dry_blobs {
        assert!(out.contains(&format!("would remove blob {digest}")), "{out}");
    }
    assert!(out.contains("(dry run)"), "{out}");
    // Untagged manifests are kept by default; the deleted manifest's blobs, the loose
    // blob and the moved tag's unshared layer... are not yet: the tag moved, so its old
    // manifest is untagged and kept, and with it its blobs.
    assert!(dry_manifests.is_empty(), "{dry}");
    let expected: BTreeSet<String> = deleted.blobs.iter().cloned().chain([loose.clone()]).collect();
    assert_eq!(dry_blobs.iter().map(|(d, _)| d.clone()).collect::<BTreeSet<_>>(), expected, "{dry}");
    let bytes: u64 = dry_blobs.iter().map(|(_, n)| n).sum();
    assert_eq!(dry["run"]["bytes_freed"], bytes);
    assert_eq!(dry["run"]["dry_run"], true);
    // Nothing went.
    assert_eq!(status(&api, Method::HEAD, &format!("/v2/{repo}/blobs/{loose}")).await, StatusCode::OK);

    let real = run_gc(&server.url(), false, false).await;
    assert_eq!(listed(&real), (dry_blobs.clone(), dry_manifests), "{real}");
    assert_eq!(real["run"]["bytes_freed"], bytes);
    assert_eq!(status(&api, Method::HEAD, &format!("/v2/{repo}/blobs/{loose}")).await, StatusCode::NOT_FOUND);
    assert_pulls(&api, repo, "kept", &kept).await;
    assert_pulls(&api, repo, &retagged.digest, &retagged).await;

    // Both runs are on record, newest first.
    let client = http_client().build().unwrap();
    let runs: Value =
        client.get(format!("{}/api/v1/gc/runs", server.url())).send().await.unwrap().json().await.unwrap();
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 3, "the CLI's, the API's dry run, the real run: {runs:?}");
    assert_eq!((runs[0]["dry_run"].clone(), runs[1]["dry_run"].clone()), (json!(false), json!(true)));
    assert_eq!(runs[0]["blobs_removed"], dry_blobs.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_full_sweep_removes_an_old_orphan_in_the_blob_store_and_keeps_a_fresh_one() {
    let server = TestServer::start_with(|c| c.jobs.gc_grace = Duration::from_secs(3));
    let api = Api::new(server.url());
    let image = push(&api, "sweep/app", "1", &[random_bytes(1000, rand_u64())], None).await;
    let storage = server.storage();
    let before = storage.blobs().await;
    // Named as each store names its blobs: by digest in files, by upload id in a bucket.
    let name = |bytes: &[u8]| {
        if server.backend().is_embedded() {
            let hex = sha256(bytes)["sha256:".len()..].to_owned();
            format!("sha256/{}/{hex}", &hex[..2])
        } else {
            format!("0000{:016x}-0000-4000-8000-000000000000", rand_u64())
        }
    };
    let (old, fresh) = (random_bytes(4321, rand_u64()), random_bytes(1234, rand_u64()));
    storage.put_blob(&name(&old), &old).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    storage.put_blob(&name(&fresh), &fresh).await;
    assert_eq!(storage.blobs().await.len(), before.len() + 2);

    let report = run_gc(&server.url(), false, true).await;
    assert_eq!(report["run"]["kind"], "full");
    assert_eq!(report["run"]["orphans_removed"], 1, "{report}");
    assert_eq!(report["run"]["orphan_bytes"], old.len());
    let mut after = storage.blobs().await;
    after.sort();
    let mut expected: Vec<(String, u64)> = before.clone();
    expected.extend(after.iter().filter(|(_, n)| *n == fresh.len() as u64).cloned());
    expected.sort();
    assert_eq!(after, expected, "the fresh orphan and the image's blobs stay");
    assert_pulls(&api, "sweep/app", "1", &image).await;
}

/// Issue 17: with `--gc-delete-untagged`, every OCI 1.1 referrer (untagged by design) went
/// an hour after its push while its subject was tagged and live. A referrer lives as long
/// as its subject; once the subject goes, so does it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_delete_untagged_keeps_a_referrer_as_long_as_its_subject_lives() {
    let server = gc_server(true);
    let api = Api::new(server.url());
    let repo = "gc/signed";
    let subject = push(&api, repo, "v1", &[random_bytes(2000, rand_u64())], None).await;
    let subject_ref = Some((subject.digest.as_str(), subject.body.len()));
    // A signature and an SBOM: pushed, then left untagged, as referrers are.
    let mut referrers = Vec::new();
    for name in ["sig", "sbom"] {
        referrers.push(push(&api, repo, name, &[random_bytes(300, rand_u64())], subject_ref).await);
        assert_eq!(status(&api, Method::DELETE, &format!("/v2/{repo}/manifests/{name}")).await, StatusCode::ACCEPTED);
    }

    collect_all(&server.url()).await;
    for referrer in &referrers {
        assert_pulls(&api, repo, &referrer.digest, referrer).await;
    }
    let listed: Value =
        api.send(Method::GET, &format!("/v2/{repo}/referrers/{}", subject.digest)).await.json().await.unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 2, "{listed}");

    // The subject untagged goes (untagged manifests go), and its referrers after it.
    assert_eq!(status(&api, Method::DELETE, &format!("/v2/{repo}/manifests/v1")).await, StatusCode::ACCEPTED);
    collect_all(&server.url()).await;
    for gone in referrers.iter().chain([&subject]) {
        let path = format!("/v2/{repo}/manifests/{}", gone.digest);
        assert_eq!(status(&api, Method::GET, &path).await, StatusCode::NOT_FOUND, "{}", gone.digest);
    }
    assert_eq!(stored_blob_count(&server).await, 0);
}

/// Issue 17: review times were whole seconds, so with `--gc-grace 0s` a run in the same
/// second as the delete that queued a candidate skipped it (`berth gc` right after a
/// delete left its layer). Due means queued by the run's start: every round removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grace_of_zero_collects_a_deleted_manifests_layer_in_a_run_right_after_the_delete() {
    let server = gc_server(false);
    let api = Api::new(server.url());
    let repo = "gc/prompt";
    for round in 0..6 {
        let image = push(&api, repo, "t", &[random_bytes(1500, rand_u64())], None).await;
        let path = format!("/v2/{repo}/manifests/{}", image.digest);
        assert_eq!(status(&api, Method::DELETE, &path).await, StatusCode::ACCEPTED);
        // As a user would, with the CLI, and through the API.
        let report = if round % 2 == 0 {
            crate::support::run(
                std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                    .args(["gc", "--url", &server.url(), "--user", "admin"])
                    .env("BERTH_PASSWORD", admin().password)
                    .env("BERTH_CONFIG_DIR", server.scratch("cli")),
            )
        } else {
            run_gc(&server.url(), false, false).await.to_string()
        };
        for blob in &image.blobs {
            let path = format!("/v2/{repo}/blobs/{blob}");
            assert_eq!(status(&api, Method::HEAD, &path).await, StatusCode::NOT_FOUND, "round {round}: {report}");
        }
    }
    assert_eq!(stored_blob_count(&server).await, 0);
}
