//! Crash safety: clients push concurrently while the `berth` process is killed with
//! SIGKILL at random moments; after each restart every acknowledged blob, manifest and
//! tag is there and verifies byte for byte, every blob the registry serves hashes to its
//! digest, the blob store holds under each digest nothing but that digest's content (the
//! files on disk, or the objects in the bucket), and interrupted uploads either resume or
//! fail cleanly. Any status the protocol does not allow fails the test.
//!
//! Runs on the stores `BERTH_TEST_BACKEND` selects: the embedded ones, or (`scaleout`) a
//! real PostgreSQL and a real Garage S3 server that outlive every kill.
//!
//! - The test prints its seed first (`crash test seed N`); `BERTH_CRASH_SEED=N` replays the
//!   same blob sizes and contents, chunk splits and kill delays (request timing still
//!   varies from run to run, so a replay is likely, not certain, to hit the same moment).
//! - 6 rounds (kill, restart, verify) by default; `BERTH_CRASH_ROUNDS=N` runs N, and
//!   `BERTH_LONG=1` runs 50 (a few minutes).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::api::{Api, image_manifest, random_bytes, sha256};
use crate::support::{Backend, Storage};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const DEFAULT_ROUNDS: u64 = 6;
const LONG_ROUNDS: u64 = 50;

/// A blob a pusher sent: regenerated from its seed when checked.
#[derive(Clone)]
struct Blob {
    repo: String,
    digest: String,
    seed: u64,
    len: usize,
}

impl Blob {
    fn bytes(&self) -> Vec<u8> {
        random_bytes(self.len, self.seed)
    }
}

#[derive(Default)]
struct Ledger {
    /// Blobs the server answered 201 for.
    blobs: Vec<Blob>,
    /// Every blob a pusher started to upload, acknowledged or not.
    attempted: Vec<Blob>,
    /// (repo, tag, body): manifests the server answered 201 for.
    manifests: Vec<(String, String, Vec<u8>)>,
    /// (upload path, blob): chunked uploads cut short.
    interrupted: Vec<(String, Blob)>,
}

impl Ledger {
    /// Adds what a round's pushers recorded.
    fn absorb(&mut self, round: Ledger) {
        self.blobs.extend(round.blobs);
        self.attempted.extend(round.attempted);
        self.manifests.extend(round.manifests);
        self.interrupted.extend(round.interrupted);
    }
}

/// xorshift64: every random choice of a run comes from the run's seed.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Rng {
        // Spread the seed's bits (splitmix64 step); xorshift needs a nonzero state.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }
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

fn env_number(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    Some(value.parse().unwrap_or_else(|_| panic!("{name}={value:?} is not a number")))
}

fn client(base: &str) -> Api {
    let mut api = Api::new(base.to_owned());
    api.client = crate::support::http_client().timeout(Duration::from_secs(10)).build().unwrap();
    api
}

/// What a pusher sees of the server: `killed` is set just before the SIGKILL, so a
/// failed request while it is unset is a failure of the server, not of the test.
struct Pusher {
    api: Api,
    worker: u64,
    round: u64,
    rng: Rng,
    killed: Arc<AtomicBool>,
    ledger: Arc<Mutex<Ledger>>,
}

impl Pusher {
    /// A request's outcome: `Some(response)`, or `None` if the server is gone (killed).
    fn answered(&self, result: reqwest::Result<reqwest::Response>, what: &str) -> Option<reqwest::Response> {
        match result {
            Ok(r) => Some(r),
            Err(_) if self.killed.load(Ordering::SeqCst) => None,
            Err(e) => panic!("worker {} round {}: {what} failed while the server was up: {e}", self.worker, self.round),
        }
    }

    /// Fails the test unless `r` has the status the protocol requires; returns it.
    async fn expect(&self, r: reqwest::Response, status: StatusCode, what: &str) -> reqwest::Response {
        if r.status() != status {
            let got = r.status();
            let body = r.text().await.unwrap_or_default();
            panic!("worker {} round {}: {what} answered {got}, expected {status}: {body}", self.worker, self.round);
        }
        r
    }

    /// Pushes blobs and manifests until the server goes away; records what was acknowledged.
    async fn run(mut self) {
        let repo = format!("crash/w{}", self.worker);
        for i in 0.. {
            let seed = self.rng.next();
            // At least 2 bytes, so that a `Range: 0-0` after an acknowledged chunk (which
            // is at least 2 bytes) can only mean an empty upload.
            let len = 2 + self.rng.below(3 * 1024 * 1024) as usize;
            let bytes = random_bytes(len, seed);
            let blob = Blob { repo: repo.clone(), digest: sha256(&bytes), seed, len };
            // Half the uploads are monolithic; the others are chunked: a PATCH of the first
            // `split` bytes, then the closing PUT with the rest, or (one in four) a PATCH of
            // everything and a closing PUT with no body.
            let split = match self.rng.below(8) {
                0..4 => None,
                4..7 => Some(2 + self.rng.below(len as u64 - 1) as usize),
                _ => Some(len),
            };
            self.ledger.lock().unwrap().attempted.push(blob.clone());

            let post = self.api.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/")).send().await;
            let Some(r) = self.answered(post, "POST upload") else { return };
            let loc = crate::api::location(&self.expect(r, StatusCode::ACCEPTED, "POST upload").await);
            let mut acked = 0;
            if let Some(split) = split {
                let patch = self
                    .api
                    .req(Method::PATCH, &loc)
                    .header("content-range", format!("0-{}", split - 1))
                    .body(bytes[..split].to_vec())
                    .send()
                    .await;
                let Some(r) = self.answered(patch, "PATCH") else {
                    self.ledger.lock().unwrap().interrupted.push((loc, blob));
                    return;
                };
                self.expect(r, StatusCode::ACCEPTED, "PATCH").await;
                acked = split;
            }
            let put = close_upload(&self.api, &loc, &blob, &bytes, acked).await;
            let Some(r) = self.answered(put, "closing PUT") else {
                if split.is_some() {
                    self.ledger.lock().unwrap().interrupted.push((loc, blob));
                }
                return;
            };
            self.expect(r, StatusCode::CREATED, "closing PUT").await;
            self.ledger.lock().unwrap().blobs.push(blob.clone());

            // A manifest naming that blob as its only layer, under a fresh tag.
            let config = b"{}";
            let post = self
                .api
                .req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={}", sha256(config)))
                .body(config.to_vec())
                .send()
                .await;
            let Some(r) = self.answered(post, "config blob POST") else { return };
            self.expect(r, StatusCode::CREATED, "config blob POST").await;
            let body = image_manifest(OCI_MANIFEST, (&sha256(config), 2), &[(&blob.digest, len)], None);
            let tag = format!("r{}-{i}", self.round);
            let put = self
                .api
                .req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"))
                .header("content-type", OCI_MANIFEST)
                .body(body.clone())
                .send()
                .await;
            let Some(r) = self.answered(put, "manifest PUT") else { return };
            self.expect(r, StatusCode::CREATED, "manifest PUT").await;
            self.ledger.lock().unwrap().manifests.push((repo.clone(), tag, body));
        }
    }
}

/// The closing `PUT` of an upload holding the first `offset` bytes of `bytes`: the rest
/// rides on it, or, when every byte is there already, it carries no body.
async fn close_upload(
    api: &Api,
    loc: &str,
    blob: &Blob,
    bytes: &[u8],
    offset: usize,
) -> reqwest::Result<reqwest::Response> {
    let mut put = api.req(Method::PUT, &format!("{loc}?digest={}", blob.digest));
    if offset < bytes.len() {
        put = put.header("content-range", format!("{offset}-{}", bytes.len() - 1)).body(bytes[offset..].to_vec());
    }
    put.send().await
}

/// Every blob the store files under a digest holds exactly that digest's content, and
/// every acknowledged blob is among them. Blobs are immutable once stored, so each is
/// read once (`checked` remembers).
async fn assert_stored_blobs_verify(storage: &Storage, ledger: &Ledger, checked: &mut HashSet<String>) {
    let mut stored = HashSet::new();
    for (digest, entry) in storage.blobs_by_digest().await {
        if checked.insert(entry.clone()) {
            assert_eq!(sha256(&storage.read(&entry).await), digest, "stored blob {entry} is corrupt");
        }
        stored.insert(digest);
    }
    for blob in &ledger.blobs {
        assert!(stored.contains(&blob.digest), "acknowledged blob {} is not in the store", blob.digest);
    }
}

/// Everything acknowledged is there: blobs acknowledged from `ledger.blobs[full_from..]`
/// are read back whole, older ones by HEAD (their bytes were read in an earlier round);
/// every manifest is read back. Every blob that was attempted but not acknowledged is
/// either unknown or served with exactly its content.
async fn verify(api: &Api, ledger: &Ledger, full_from: usize) {
    for (n, blob) in ledger.blobs.iter().enumerate() {
        let path = format!("/v2/{}/blobs/{}", blob.repo, blob.digest);
        let method = if n >= full_from { Method::GET } else { Method::HEAD };
        let r = api.send(method.clone(), &path).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged blob {path} is missing");
        assert_eq!(r.headers()["docker-content-digest"], blob.digest.as_str());
        assert_eq!(r.headers()["content-length"], blob.len.to_string().as_str());
        if method == Method::GET {
            assert!(r.bytes().await.unwrap().as_ref() == &blob.bytes()[..], "blob {path} differs");
        }
    }
    let acked: HashSet<&str> = ledger.blobs.iter().map(|b| b.digest.as_str()).collect();
    for blob in ledger.attempted.iter().filter(|b| !acked.contains(b.digest.as_str())) {
        let r = api.send(Method::GET, &format!("/v2/{}/blobs/{}", blob.repo, blob.digest)).await;
        match r.status() {
            StatusCode::NOT_FOUND => {}
            StatusCode::OK => {
                assert!(r.bytes().await.unwrap().as_ref() == &blob.bytes()[..], "{} differs", blob.digest)
            }
            other => panic!("GET of unacknowledged blob {} answered {other}", blob.digest),
        }
    }
    for (repo, tag, body) in &ledger.manifests {
        let r = api.send(Method::GET, &format!("/v2/{repo}/manifests/{tag}")).await;
        assert_eq!(r.status(), StatusCode::OK, "acknowledged manifest {repo}:{tag} is missing");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
    }
}

/// Resumes a chunked upload cut short by a kill from where the server says it stands;
/// returns the blob if the upload was still there (it is then acknowledged).
async fn resume(api: &Api, loc: &str, blob: &Blob) -> Option<Blob> {
    let r = api.send(Method::GET, loc).await;
    if r.status() == StatusCode::NOT_FOUND {
        // Closed before the kill (its blob is checked with the attempted ones).
        return None;
    }
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "status of {loc}");
    let range = r.headers()["range"].to_str().unwrap().to_owned();
    let end: usize = range.strip_prefix("0-").and_then(|e| e.parse().ok()).unwrap_or_else(|| panic!("Range {range}"));
    let offset = if end == 0 { 0 } else { end + 1 };
    let r = close_upload(api, loc, blob, &blob.bytes(), offset).await.unwrap();
    let status = r.status();
    let len = blob.len;
    assert_eq!(status, StatusCode::CREATED, "resuming {loc} at {offset} of {len}: {}", r.text().await.unwrap());
    Some(blob.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_pushes_survive_sigkill_at_random_moments() {
    let seed = env_number("BERTH_CRASH_SEED").unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    let long = std::env::var("BERTH_LONG").is_ok_and(|v| v == "1");
    let rounds = env_number("BERTH_CRASH_ROUNDS").unwrap_or(if long { LONG_ROUNDS } else { DEFAULT_ROUNDS });
    let backend = Backend::from_env();
    let stores = if backend.is_embedded() { "embedded" } else { "scaleout" };
    eprintln!("crash test seed {seed}, {rounds} rounds on the {stores} stores (replay: BERTH_CRASH_SEED={seed})");

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let storage = backend.storage(&data);
    let mut rng = Rng::new(seed);
    let mut ledger = Ledger::default();
    let mut checked = HashSet::new();
    let (mut resumed, mut verified) = (0, 0);
    for round in 0..rounds {
        let server = backend.spawn(&data);
        let api = client(&server.url());
        // What earlier rounds acknowledged is all there.
        verify(&api, &ledger, verified).await;
        verified = ledger.blobs.len();
        // Interrupted uploads resume from the acknowledged offset, or are gone.
        for (loc, blob) in std::mem::take(&mut ledger.interrupted) {
            if let Some(blob) = resume(&api, &loc, &blob).await {
                ledger.blobs.push(blob);
                resumed += 1;
            }
        }

        let round_ledger = Arc::new(Mutex::new(Ledger::default()));
        let killed = Arc::new(AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|worker| {
                let pusher = Pusher {
                    api: client(&server.url()),
                    worker,
                    round,
                    rng: Rng::new(seed ^ (round << 8) ^ (worker + 1)),
                    killed: Arc::clone(&killed),
                    ledger: Arc::clone(&round_ledger),
                };
                tokio::spawn(pusher.run())
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300 + rng.below(1200))).await;
        killed.store(true, Ordering::SeqCst);
        server.kill9();
        for w in workers {
            if let Err(e) = w.await {
                panic!("a pusher failed (seed {seed}): {e}");
            }
        }
        ledger.absorb(Arc::into_inner(round_ledger).expect("the pushers are done").into_inner().unwrap());
        assert_stored_blobs_verify(&storage, &ledger, &mut checked).await;
    }
    let server = backend.spawn(&data);
    verify(&client(&server.url()), &ledger, 0).await;
    let (blobs, manifests) = (ledger.blobs.len(), ledger.manifests.len());
    let stored = checked.len();
    eprintln!(
        "verified {blobs} blobs, {manifests} manifests, {resumed} resumed uploads, {stored} stored blobs (seed {seed})"
    );
    assert!(manifests as u64 >= rounds, "too little was pushed to prove anything (seed {seed})");
}
