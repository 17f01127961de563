//! Crash safety: clients push concurrently while the server is killed with SIGKILL at
//! random moments; after each restart every acknowledged blob, manifest and tag is there
//! and verifies byte for byte, no blob file on disk holds anything but its digest's
//! content, and interrupted uploads either resume or fail cleanly.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::api::{Api, image_manifest, random_bytes, sha256};
use crate::support::BerthProcess;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Default)]
struct Ledger {
    /// (repo, digest, seed, len): blobs the server answered 201 for.
    blobs: Vec<(String, String, u64, usize)>,
    /// (repo, tag, body): manifests the server answered 201 for.
    manifests: Vec<(String, String, Vec<u8>)>,
    /// (upload path, seed, len, acknowledged bytes): chunked uploads cut short.
    interrupted: Vec<(String, u64, usize, usize)>,
}

pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn client(base: &str) -> Api {
    let mut api = Api::new(base.to_owned());
    api.client = reqwest::Client::builder().no_proxy().timeout(Duration::from_secs(10)).build().unwrap();
    api
}

/// Pushes blobs and manifests until the server goes away; records what was acknowledged.
async fn pusher(base: String, worker: u64, round: u64, ledger: Arc<Mutex<Ledger>>) {
    let api = client(&base);
    let mut rng = Rng(0x5eed ^ (worker << 32) ^ (round << 48) ^ 1);
    for i in 0.. {
        let repo = format!("crash/w{worker}");
        let seed = (round << 40) ^ (worker << 32) ^ i;
        // At least 2 bytes, so that an acknowledged `Range: 0-0` means an empty upload.
        let len = 2 + rng.below(3 * 1024 * 1024) as usize;
        let bytes = random_bytes(len, seed);
        let digest = sha256(&bytes);
        let chunked = rng.below(2) == 0;
        let Ok(r) = api.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await else { return };
        if r.status() != StatusCode::ACCEPTED {
            return;
        }
        let loc = crate::api::location(&r);
        let mut acked = 0usize;
        let result = if chunked {
            let mid = len / 2;
            let patch = api
                .req(Method::PATCH, &loc)
                .header("content-range", format!("0-{}", mid.max(1) - 1))
                .body(bytes[..mid.max(1)].to_vec())
                .send()
                .await;
            match patch {
                Ok(r) if r.status() == StatusCode::ACCEPTED => {
                    acked = mid.max(1);
                    api.req(Method::PUT, &format!("{loc}?digest={digest}"))
                        .header("content-range", format!("{acked}-{}", len - 1))
                        .body(bytes[acked..].to_vec())
                        .send()
                        .await
                }
                other => other,
            }
        } else {
            api.req(Method::PUT, &format!("{loc}?digest={digest}")).body(bytes.clone()).send().await
        };
        match result {
            Ok(r)
                if r.status() == StatusCode::CREATED
                    || (acked == len && r.status() == StatusCode::RANGE_NOT_SATISFIABLE) =>
            {
                if r.status() == StatusCode::CREATED {
                    ledger.lock().unwrap().blobs.push((repo.clone(), digest.clone(), seed, len));
                }
            }
            Ok(r) => {
                panic!("unexpected {} while the server was up: {}", r.status(), r.text().await.unwrap_or_default())
            }
            Err(_) => {
                if chunked {
                    ledger.lock().unwrap().interrupted.push((loc, seed, len, acked));
                }
                return;
            }
        }
        // A manifest naming that blob as its only layer, under a fresh tag.
        let config = b"{}";
        let Ok(r) = api
            .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(config)))
            .body(config.to_vec())
            .send()
            .await
        else {
            return;
        };
        if r.status() != StatusCode::CREATED {
            return;
        }
        let body = image_manifest(OCI_MANIFEST, (&sha256(config), 2), &[(&digest, len)], None);
        let tag = format!("r{round}-{i}");
        let put = api
            .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
            .header("content-type", OCI_MANIFEST)
            .body(body.clone())
            .send()
            .await;
        match put {
            Ok(r) if r.status() == StatusCode::CREATED => ledger.lock().unwrap().manifests.push((repo, tag, body)),
            Ok(r) => panic!("manifest push answered {}", r.status()),
            Err(_) => return,
        }
    }
}

/// Every file under `blobs/` must hold exactly the content its name says.
pub(crate) fn assert_blob_files_verify(data: &std::path::Path) {
    for shard in std::fs::read_dir(data.join("blobs/sha256")).unwrap() {
        for file in std::fs::read_dir(shard.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            let content = std::fs::read(&path).unwrap();
            assert_eq!(sha256(&content), format!("sha256:{name}"), "blob file {path:?} is corrupt");
        }
    }
}

async fn verify(api: &Api, ledger: &Ledger) {
    for (repo, digest, seed, len) in &ledger.blobs {
        let r = api.send(Method::GET, &format!("/v2/{repo}/blobs/{digest}")).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {digest} in {repo} is missing");
        let got = r.bytes().await.unwrap();
        assert_eq!(got.len(), *len);
        assert_eq!(got.as_ref(), &random_bytes(*len, *seed)[..], "blob {digest} differs");
    }
    for (repo, tag, body) in &ledger.manifests {
        let r = api.send(Method::GET, &format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged manifest {repo}:{tag} is missing");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut resumed = 0;
    for round in 0..6 {
        let server = BerthProcess::spawn(&data);
        let api = client(&server.url());
        // What earlier rounds acknowledged is all there.
        verify(&api, &ledger.lock().unwrap()).await;
        // Interrupted uploads resume from the acknowledged offset, or are gone.
        let interrupted = std::mem::take(&mut ledger.lock().unwrap().interrupted);
        for (loc, seed, len, _) in interrupted {
            let r = api.send(Method::GET, &loc).await;
            if r.status() == StatusCode::NOT_FOUND {
                continue;
            }
            assert_eq!(r.status(), StatusCode::NO_CONTENT, "status of {loc}");
            let range = r.headers()["range"].to_str().unwrap().to_owned();
            let end: usize = range.trim_start_matches("0-").parse().unwrap();
            let offset = if end == 0 { 0 } else { end + 1 };
            let bytes = random_bytes(len, seed);
            let digest = sha256(&bytes);
            let mut put = api.req(Method::PUT, &format!("{loc}?digest={digest}"));
            if offset < len {
                // Otherwise every byte was acknowledged before the kill; only the close is left.
                put = put.header("content-range", format!("{offset}-{}", len - 1)).body(bytes[offset..].to_vec());
            }
            let r = put.send().await.unwrap();
            let status = r.status();
            assert_eq!(status, StatusCode::CREATED, "resuming {loc} at {offset} of {len}: {}", r.text().await.unwrap());
            let repo = loc.trim_start_matches("/v2/").split("/blobs/").next().unwrap().to_owned();
            ledger.lock().unwrap().blobs.push((repo, digest, seed, len));
            resumed += 1;
        }

        let workers: Vec<_> =
            (0..4).map(|w| tokio::spawn(pusher(server.url(), w, round, Arc::clone(&ledger)))).collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        server.kill9();
        for w in workers {
            w.await.expect("a pusher panicked");
        }
        assert_blob_files_verify(&data);
    }
    let server = BerthProcess::spawn(&data);
    let ledger = ledger.lock().unwrap();
    verify(&client(&server.url()), &ledger).await;
    eprintln!("verified {} blobs, {} manifests, {resumed} resumed uploads", ledger.blobs.len(), ledger.manifests.len());
    assert!(ledger.manifests.len() >= 6, "too little was pushed to prove anything");
}
