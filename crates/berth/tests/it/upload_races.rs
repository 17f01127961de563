//! Attacks on one upload session over real sockets, HTTP/1.1 and HTTP/2 (h2c): requests race
//! on the same upload (PATCH∥PATCH, PATCH∥PUT, PATCH∥DELETE), and a body broken off
//! mid-stream (socket closed, or stream reset) is followed by the client's retry. Who wins
//! may differ per round; what must hold every round is: no 5xx, only the outcomes listed
//! for the scenario, and every blob the registry serves hashes to its digest, through the
//! API (whole and a range) and in its store (files under the data directory, or objects in
//! the bucket). Afterwards a correct push of every content involved pulls back right: a
//! digest holding other bytes would make those pushes dedupe onto the wrong bytes.

mod wire;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use axum::http::Method;
use object_store::ObjectStoreExt;
use tokio::sync::oneshot;

use crate::api::{random_bytes, sha256};
use crate::crash::Rng;
use crate::support::{ScaleOut, TestServer};
use wire::{Client, Gate, Outcome, Reply, Req, Wire};

const KIB: usize = 1024;
/// The racing chunk: big enough (in 64 KiB pieces 1 ms apart) that the server's writer is
/// mid-write when the other request lands; odd, so nothing lines up with a buffer.
const CHUNK: usize = 2 * 1024 * KIB + 4099;
/// Bytes the closing PUT carries.
const TAIL: usize = 1000;
/// Rounds per scenario: at least `MIN_ROUNDS`, at most `ROUNDS`, and no new round after `TIME_CAP`.
const ROUNDS: usize = 16;
const MIN_ROUNDS: usize = 4;
const TIME_CAP: Duration = Duration::from_secs(10);

const OK: &str = "";
const INVALID: &str = "BLOB_UPLOAD_INVALID";
const UNKNOWN: &str = "BLOB_UPLOAD_UNKNOWN";

/// A chunk racing another from the same offset: one is acknowledged, the other finds the
/// upload busy (400) or moved on (416).
const PATCH_VS_PATCH: &[(u16, &str)] = &[(202, OK), (400, INVALID), (416, INVALID)];
/// The same, plus: the upload was completed (or deleted) by the other request.
const PATCH_VS_END: &[(u16, &str)] = &[(202, OK), (400, INVALID), (416, INVALID), (404, UNKNOWN)];
const PUT_VS_PATCH: &[(u16, &str)] = &[(201, OK), (400, INVALID), (416, INVALID)];
const DELETE_VS_PATCH: &[(u16, &str)] = &[(204, OK), (400, INVALID)];
/// A retry from where the server says the upload is, after a broken-off body: it must
/// succeed (a busy upload waits for the broken request to end; issue 8).
const RETRY: &[(u16, &str)] = &[(202, OK)];

/// Content that may end up under its digest.
struct Candidate {
    repo: String,
    digest: String,
    bytes: Vec<u8>,
    /// The registry answered 201 for it: it must be served.
    committed: bool,
}

/// An upload session with the bytes acknowledged before the race.
struct Upload {
    repo: String,
    loc: String,
    prefix: Vec<u8>,
}

/// One scenario's server, client and record of what happened.
struct Arena {
    server: TestServer,
    client: Client,
    scenario: &'static str,
    rng: Rng,
    candidates: Vec<Candidate>,
    outcomes: BTreeMap<String, usize>,
    rounds: usize,
    started: Instant,
    /// How long a gated request took to answer once its last piece was released (a
    /// running average): where the next round aims the other request.
    end_latency: Duration,
}

impl Arena {
    async fn start(wire: Wire, scenario: &'static str) -> Arena {
        let server = TestServer::start();
        let client = Client::connect(wire, server.addr).await;
        let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1;
        eprintln!("{scenario} over {wire:?}: seed {seed}");
        Arena {
            server,
            client,
            scenario,
            rng: Rng::new(seed),
            candidates: Vec::new(),
            outcomes: BTreeMap::new(),
            rounds: 0,
            started: Instant::now(),
            end_latency: Duration::from_millis(2),
        }
    }

    /// Whether to play another round.
    fn more(&self) -> bool {
        self.rounds < MIN_ROUNDS || (self.rounds < ROUNDS && self.started.elapsed() < TIME_CAP)
    }

    async fn send(&self, req: Req) -> Reply {
        let what = format!("{} {}", req.method, req.path);
        self.client.send(req).await.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// Opens an upload; on odd rounds acknowledges a first chunk, so that the race starts
    /// past bytes a stale writer could truncate.
    async fn open(&mut self) -> Upload {
        let repo = format!("races/{}", self.scenario);
        let r = self.send(Req::new(Method::POST, format!("/v2/{repo}/blobs/uploads/"))).await;
        assert_eq!(r.status, 202, "POST: {r:?}");
        let loc = r.location.expect("Location");
        let prefix = match self.rounds % 2 {
            0 => Vec::new(),
            _ => random_bytes(256 * KIB + self.rng.below(4096) as usize, self.rng.next()),
        };
        if !prefix.is_empty() {
            let r = self.send(patch(&loc, 0, prefix.clone())).await;
            assert_eq!(r.status, 202, "first chunk: {r:?}");
        }
        Upload { repo, loc, prefix }
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        random_bytes(len, self.rng.next())
    }

    /// Records `prefix + chunk + tail` as content that may end up stored; returns its index.
    fn candidate(&mut self, up: &Upload, chunk: &[u8], tail: &[u8]) -> usize {
        let bytes = [&up.prefix[..], chunk, tail].concat();
        let digest = sha256(&bytes);
        self.candidates.push(Candidate { repo: up.repo.clone(), digest, bytes, committed: false });
        self.candidates.len() - 1
    }

    /// [`Arena::note`] for one of two racing requests, which may also get no reply: a
    /// server that refuses a request before reading its body (416, 404) answers and closes,
    /// and a client still sending may see the reset before the answer (HTTP/1.1 allows
    /// that). Such a request counts as refused (status 0): never acknowledged, and the
    /// round's checks of what the upload and the store hold still apply.
    fn note_race(&mut self, who: &str, outcome: &Outcome, allowed: &[(u16, &str)]) -> u16 {
        match outcome {
            Err(e) => {
                *self.outcomes.entry(format!("{who} no reply ({e:.60})")).or_default() += 1;
                0
            }
            Ok(_) => self.note(who, outcome, allowed),
        }
    }

    /// Checks an outcome against the allowed ones and tallies it; returns its status.
    fn note(&mut self, who: &str, outcome: &Outcome, allowed: &[(u16, &str)]) -> u16 {
        let reply = match outcome {
            Ok(reply) => reply,
            Err(e) => panic!("{}: {who} got no reply: {e}", self.scenario),
        };
        assert!(reply.status < 500, "{}: {who} answered {}: {:?}", self.scenario, reply.status, reply.body);
        let code = reply.code().unwrap_or_default();
        assert!(
            allowed.iter().any(|(status, c)| *status == reply.status && *c == code),
            "{}: {who} answered {} {code}, expected one of {allowed:?}: {:?}",
            self.scenario,
            reply.status,
            reply.body
        );
        let outcome = match reply.message() {
            Some(message) => format!("{who} {} {code} ({message})", reply.status),
            None => format!("{who} {}", reply.status),
        };
        *self.outcomes.entry(outcome).or_default() += 1;
        reply.status
    }

    /// Races `a` and `b`. One round in four lands `b` somewhere in `a`'s body; the others
    /// land it just as `a` ends (when `a` has a body): a request that read the upload
    /// before `a` advanced it must not claim it after.
    async fn race(&mut self, mut a: Req, b: Req) -> (Outcome, Outcome) {
        let at_the_end = !self.rounds.is_multiple_of(4) && !a.body.is_empty();
        let mut gate = None;
        if at_the_end {
            let (armed_tx, armed_rx) = oneshot::channel();
            let (release_tx, release_rx) = oneshot::channel();
            a.gate = Some(Gate { armed: armed_tx, release: release_rx });
            gate = Some((armed_rx, release_tx));
        }
        let client = self.client.clone();
        let first = tokio::spawn(async move {
            let outcome = client.send(a).await;
            (outcome, Instant::now())
        });
        let mut released = None;
        match gate {
            Some((armed, release)) => {
                armed.await.expect("the gated body reached its last piece");
                let _ = release.send(());
                released = Some(Instant::now());
                // Anywhere up to a little past when the last round's `a` answered: about
                // when its writer ends and the upload advances. A timer this fine needs a spin.
                let spread = (self.end_latency * 6 / 5).as_micros().max(300) as u64;
                let until = Instant::now() + Duration::from_micros(self.rng.below(spread));
                while Instant::now() < until {
                    tokio::task::yield_now().await;
                }
            }
            None => tokio::time::sleep(Duration::from_micros(self.rng.below(40_000))).await,
        }
        let client = self.client.clone();
        let second = tokio::spawn(async move { client.send(b).await });
        let (first, answered) = first.await.expect("first racer");
        if let (Some(released), Ok(Reply { status: 200..=299, .. })) = (released, &first) {
            self.end_latency = (self.end_latency + answered.duration_since(released)) / 2;
        }
        (first, second.await.expect("second racer"))
    }

    /// Where the server says the upload is (`None`: it is gone, 404).
    async fn offset(&mut self, up: &Upload) -> Option<usize> {
        let r = self.client.send(Req::new(Method::GET, &up.loc)).await;
        match self.note("GET status", &r, &[(204, OK), (404, UNKNOWN)]) {
            404 => None,
            _ => Some(offset_of(&r.unwrap())),
        }
    }

    /// Closes the upload with the rest of candidate `idx`, after checking that the server
    /// holds exactly `acked` bytes (`None`: the upload must be gone). Returns the PUT's status.
    async fn close(&mut self, up: &Upload, idx: usize, acked: Option<usize>) -> Option<u16> {
        let at = self.offset(up).await;
        assert_eq!(at, acked, "{}: upload status after the race", self.scenario);
        let at = at?;
        let c = &self.candidates[idx];
        let put = Req::new(Method::PUT, with_query(&up.loc, &format!("digest={}", c.digest)))
            .header("content-range", format!("{at}-{}", c.bytes.len() - 1))
            .body(c.bytes[at..].to_vec());
        let r = self.send(put).await;
        assert_eq!(r.status, 201, "{}: closing PUT from {at}: {r:?}", self.scenario);
        self.candidates[idx].committed = true;
        Some(r.status)
    }

    /// Candidate `idx` is served whole and in a range with exactly its bytes, or (if it
    /// was never acknowledged) not at all.
    async fn check_served(&mut self, idx: usize) {
        let (repo, digest, len, committed) = {
            let c = &self.candidates[idx];
            (c.repo.clone(), c.digest.clone(), c.bytes.len(), c.committed)
        };
        let path = format!("/v2/{repo}/blobs/{digest}");
        let r = self.send(Req::new(Method::GET, &path)).await;
        if r.status == 404 && !committed {
            assert_eq!(r.code().as_deref(), Some("BLOB_UNKNOWN"));
            return;
        }
        assert_eq!(r.status, 200, "{}: GET {path}: {r:?}", self.scenario);
        assert_eq!(sha256(&r.body), digest, "{}: the registry serves other bytes under {digest}", self.scenario);
        let start = self.rng.below((len - 64 * KIB) as u64) as usize;
        let end = start + 64 * KIB - 1;
        let r = self.send(Req::new(Method::GET, &path).header("range", format!("bytes={start}-{end}"))).await;
        assert_eq!(r.status, 206, "{}: range of {digest}: {r:?}", self.scenario);
        assert!(
            r.body[..] == self.candidates[idx].bytes[start..=end],
            "{}: bytes {start}-{end} served under {digest} differ",
            self.scenario
        );
    }

    /// After the rounds: everything served and stored verifies, and a correct push of
    /// every content involved succeeds and pulls back right.
    async fn finish(mut self) {
        // Let anything the races left running end before looking.
        tokio::time::sleep(Duration::from_millis(300)).await;
        for idx in 0..self.candidates.len() {
            self.check_served(idx).await;
        }
        let digests: HashSet<String> = self.candidates.iter().map(|c| c.digest.clone()).collect();
        let any_committed = self.candidates.iter().any(|c| c.committed);
        match &self.server.backend().scaleout {
            None => assert_files_verify(&self.server).await,
            Some(scale) => assert_bucket_verifies(scale, &digests, any_committed).await,
        }
        let repo = format!("races/{}-clean", self.scenario);
        for idx in 0..self.candidates.len() {
            let (digest, bytes) = (self.candidates[idx].digest.clone(), self.candidates[idx].bytes.clone());
            let post = Req::new(Method::POST, format!("/v2/{repo}/blobs/uploads/?digest={digest}")).body(bytes.clone());
            let r = self.send(post).await;
            assert_eq!(r.status, 201, "{}: a correct push of {digest} after the races: {r:?}", self.scenario);
            let r = self.send(Req::new(Method::GET, format!("/v2/{repo}/blobs/{digest}"))).await;
            assert_eq!(r.status, 200);
            assert!(r.body[..] == bytes[..], "{}: a correct push of {digest} pulls back other bytes", self.scenario);
        }
        match &self.server.backend().scaleout {
            None => assert_files_verify(&self.server).await,
            // Every content is committed now: the bucket must hold objects, all verifying.
            Some(scale) => assert_bucket_verifies(scale, &digests, true).await,
        }
        let committed = self.candidates.iter().filter(|c| c.committed).count();
        eprintln!(
            "{} over {:?}: {} rounds, {committed} blobs committed, outcomes {:?}",
            self.scenario,
            self.client.wire(),
            self.rounds,
            self.outcomes
        );
    }
}

fn patch(loc: &str, from: usize, chunk: Vec<u8>) -> Req {
    Req::new(Method::PATCH, loc).header("content-range", format!("{from}-{}", from + chunk.len() - 1)).body(chunk)
}

fn with_query(url: &str, query: &str) -> String {
    if url.contains('?') { format!("{url}&{query}") } else { format!("{url}?{query}") }
}

/// The upload's size from its `Range: 0-<last>` (`0-0` is empty: no upload here is 1 byte).
fn offset_of(r: &Reply) -> usize {
    let range = r.range.as_deref().expect("Range header");
    let last: usize = range.strip_prefix("0-").and_then(|l| l.parse().ok()).expect("Range: 0-<n>");
    if last == 0 { 0 } else { last + 1 }
}

/// Every blob object in the bucket hashes to its digest: each recorded blob (digest,
/// key `sha256/<hex>/<id>`) whose object `objects/<id>` is there must hash to that digest;
/// an object no record names (a duplicate left behind) must still be one of the contents
/// the test sent whole.
/// Every blob file under the data directory hashes to its name.
async fn assert_files_verify(server: &TestServer) {
    let storage = server.storage();
    for (digest, entry) in storage.blobs_by_digest().await {
        assert_eq!(sha256(&storage.read(&entry).await), digest, "blob file {entry} is corrupt");
    }
}

/// Keys of the objects under `registry/<sub>` in the test bucket.
async fn bucket_objects(scale: &ScaleOut, sub: &str) -> Vec<String> {
    use futures_util::StreamExt;
    let s3 = scale.bucket();
    let prefix = object_store::path::Path::from(format!("registry/{sub}"));
    let mut list = object_store::ObjectStore::list(&s3, Some(&prefix));
    let mut keys = Vec::new();
    while let Some(meta) = list.next().await {
        keys.push(meta.unwrap().location.to_string());
    }
    keys
}

async fn assert_bucket_verifies(scale: &ScaleOut, sent: &HashSet<String>, expect_objects: bool) {
    let s3 = scale.bucket();
    let get = |key: String| {
        let s3 = &s3;
        async move { s3.get(&object_store::path::Path::from(key)).await }
    };
    let mut named = HashSet::new();
    for (digest, key) in scale.recorded_blobs().await {
        let id = key.rsplit('/').next().unwrap().to_owned();
        assert_eq!(key, format!("sha256/{}/{id}", digest.trim_start_matches("sha256:")), "the key of {digest}");
        named.insert(id.clone());
        match get(format!("registry/objects/{id}")).await {
            Ok(object) => {
                let bytes = object.bytes().await.unwrap();
                assert_eq!(sha256(&bytes), digest, "object of {key} holds other bytes");
            }
            // No garbage collection runs here: a recorded blob without its bytes is lost.
            Err(e) => panic!("reading the object of recorded blob {key}: {e}"),
        }
    }
    let objects = bucket_objects(scale, "objects").await;
    // Rounds where every cancel won commit nothing; otherwise an empty listing means the
    // check looked in the wrong place.
    assert!(!expect_objects || !objects.is_empty(), "no blob objects in the bucket");
    for object in objects {
        let id = object.rsplit('/').next().unwrap();
        if named.contains(id) {
            continue;
        }
        let bytes = get(object.clone()).await.unwrap().bytes().await.unwrap();
        assert!(sent.contains(&sha256(&bytes)), "object {object} holds bytes no client sent as a blob");
    }
}

/// PATCH∥PATCH: two different chunks from the same offset.
async fn patch_against_patch(wire: Wire) {
    let mut arena = Arena::start(wire, "patch-patch").await;
    while arena.more() {
        let up = arena.open().await;
        let (x, y, tail) = (arena.bytes(CHUNK), arena.bytes(CHUNK), arena.bytes(TAIL));
        let (cx, cy) = (arena.candidate(&up, &x, &tail), arena.candidate(&up, &y, &tail));
        let p = up.prefix.len();
        let (a, b) = arena.race(patch(&up.loc, p, x), patch(&up.loc, p, y)).await;
        let won: Vec<usize> =
            [(arena.note_race("PATCH", &a, PATCH_VS_PATCH), cx), (arena.note_race("PATCH", &b, PATCH_VS_PATCH), cy)]
                .into_iter()
                .filter(|(status, _)| *status == 202)
                .map(|(_, idx)| idx)
                .collect();
        assert!(won.len() <= 1, "both chunks from offset {p} were acknowledged");
        let acked = p + won.len() * CHUNK;
        arena.close(&up, won.first().copied().unwrap_or(cx), Some(acked)).await;
        arena.check_served(cx).await;
        arena.check_served(cy).await;
        arena.rounds += 1;
    }
    arena.finish().await;
}

/// PATCH∥PUT: a chunk racing the closing PUT (its own last chunk and a digest), either first.
async fn patch_against_put(wire: Wire) {
    let mut arena = Arena::start(wire, "patch-put").await;
    while arena.more() {
        let up = arena.open().await;
        let (x, y, tail) = (arena.bytes(CHUNK), arena.bytes(CHUNK), arena.bytes(TAIL));
        let (cx, cy) = (arena.candidate(&up, &x, &tail), arena.candidate(&up, &y, &tail));
        let p = up.prefix.len();
        let put = Req::new(Method::PUT, with_query(&up.loc, &format!("digest={}", arena.candidates[cy].digest)))
            .header("content-range", format!("{p}-{}", p + CHUNK + TAIL - 1))
            .body([&y[..], &tail[..]].concat());
        let patch = patch(&up.loc, p, x);
        let put_first = (arena.rounds / 4) % 2 == 1;
        let (patched, put) = if put_first {
            let (put, patched) = arena.race(put, patch).await;
            (patched, put)
        } else {
            arena.race(patch, put).await
        };
        let patched = arena.note_race("PATCH", &patched, PATCH_VS_END) == 202;
        let put = arena.note_race("PUT", &put, PUT_VS_PATCH) == 201;
        assert!(!(patched && put), "both the chunk and the closing PUT from offset {p} were acknowledged");
        if put {
            arena.candidates[cy].committed = true;
            arena.close(&up, cx, None).await;
        } else {
            arena.close(&up, cx, Some(p + if patched { CHUNK } else { 0 })).await;
        }
        arena.check_served(cx).await;
        arena.check_served(cy).await;
        arena.rounds += 1;
    }
    arena.finish().await;
}

/// PATCH∥DELETE: a chunk racing the upload's cancellation.
async fn patch_against_delete(wire: Wire) {
    let mut arena = Arena::start(wire, "patch-delete").await;
    while arena.more() {
        let up = arena.open().await;
        let (x, tail) = (arena.bytes(CHUNK), arena.bytes(TAIL));
        let cx = arena.candidate(&up, &x, &tail);
        let p = up.prefix.len();
        let (patched, deleted) = arena.race(patch(&up.loc, p, x), Req::new(Method::DELETE, &up.loc)).await;
        let patched = arena.note_race("PATCH", &patched, PATCH_VS_END) == 202;
        let deleted = arena.note_race("DELETE", &deleted, DELETE_VS_PATCH) == 204;
        if deleted {
            arena.close(&up, cx, None).await;
        } else {
            arena.close(&up, cx, Some(p + if patched { CHUNK } else { 0 })).await;
        }
        arena.check_served(cx).await;
        arena.rounds += 1;
    }
    arena.finish().await;
}

/// A chunk broken off mid-body (HTTP/1.1: the socket closed before the declared length;
/// HTTP/2: the stream reset), then at once the client's retry from the offset the server
/// reports, which must succeed. Rounds 0 and 1 of every 4 retry the same bytes (an honest
/// client), the others other bytes (a stale writer of the broken request would mix them in).
async fn broken_chunk_then_retry(wire: Wire) {
    let scenario = match wire {
        Wire::Http1 => "cut-retry",
        Wire::Http2 => "reset-retry",
    };
    let mut arena = Arena::start(wire, scenario).await;
    while arena.more() {
        let up = arena.open().await;
        let (x, tail) = (arena.bytes(CHUNK), arena.bytes(TAIL));
        let y = if arena.rounds % 4 < 2 { x.clone() } else { arena.bytes(CHUNK) };
        let cx = arena.candidate(&up, &x, &tail);
        let p = up.prefix.len();
        let keep = CHUNK / 4 + arena.rng.below(CHUNK as u64 / 2) as usize;
        arena.client.send_broken(patch(&up.loc, p, y), keep).await;
        // At once, as a client does: where is the upload? Then the chunk again from there.
        let at = arena.offset(&up).await.expect("the upload outlives a broken chunk");
        assert_eq!(at, p, "{scenario}: a broken-off chunk moved the upload");
        let r = arena.client.send(patch(&up.loc, at, x)).await;
        arena.note("retry PATCH", &r, RETRY);
        arena.close(&up, cx, Some(p + CHUNK)).await;
        arena.check_served(cx).await;
        arena.rounds += 1;
    }
    arena.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_chunks_from_one_offset_never_store_wrong_bytes_over_http1() {
    patch_against_patch(Wire::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_chunks_from_one_offset_never_store_wrong_bytes_over_http2() {
    patch_against_patch(Wire::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_racing_the_closing_put_never_stores_wrong_bytes_over_http1() {
    patch_against_put(Wire::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_racing_the_closing_put_never_stores_wrong_bytes_over_http2() {
    patch_against_put(Wire::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_racing_cancellation_never_stores_wrong_bytes_over_http1() {
    patch_against_delete(Wire::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_racing_cancellation_never_stores_wrong_bytes_over_http2() {
    patch_against_delete(Wire::Http2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_off_mid_chunk_then_retried_stores_only_the_retry() {
    broken_chunk_then_retry(Wire::Http1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_reset_mid_chunk_then_retried_stores_only_the_retry() {
    broken_chunk_then_retry(Wire::Http2).await;
}

/// Clients that stream a body (hyper's, Go's) end an HTTP/2 request with an empty DATA
/// frame carrying END_STREAM; the chunk is an ordinary one and must be accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_chunk_ending_in_an_empty_data_frame_is_accepted() {
    let mut arena = Arena::start(Wire::Http2, "empty-end").await;
    let up = arena.open().await;
    let (x, tail) = (arena.bytes(CHUNK), arena.bytes(TAIL));
    let cx = arena.candidate(&up, &x, &tail);
    let mut chunk = patch(&up.loc, 0, x);
    chunk.empty_end = true;
    let r = arena.client.send(chunk).await;
    assert_eq!(arena.note("PATCH", &r, &[(202, OK)]), 202);
    arena.close(&up, cx, Some(CHUNK)).await;
    arena.rounds += 1;
    arena.finish().await;
}
