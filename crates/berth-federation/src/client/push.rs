//! The client's writes, what replication sends to a destination: blob existence checks,
//! cross-repository mounts, uploads (one `PUT` for a small blob; `PATCH` chunks for a
//! large one, resumed from the offset the destination reports after a failed chunk),
//! manifests and deletes.
//!
//! A blob's bytes come from a reader the caller gives, one chunk at a time at an offset,
//! so a chunk can be read again for a retry and no more than one chunk is ever in
//! memory per transfer.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use berth_core::{Digest, Error, ErrorKind};
use bytes::Bytes;
use reqwest::header::LOCATION;
use reqwest::{Method, Url};

use super::{Request, UpstreamClient};

/// Attempts of one chunk before the upload is given up (the next run starts it over).
const CHUNK_ATTEMPTS: u32 = 3;

/// How a blob got to the destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// It was there already (`HEAD`).
    Present,
    /// Mounted from another repository of the destination.
    Mounted,
    /// Uploaded: this many bytes sent (more than its size if chunks were sent again).
    Uploaded(u64),
}

/// A blob to put at the destination: its digest and size, and a repository of the
/// destination known to hold it (a mount's source), if any.
#[derive(Clone, Copy, Debug)]
pub struct BlobToPush<'a> {
    pub digest: &'a Digest,
    pub size: u64,
    pub mount_from: Option<&'a str>,
}

/// Bytes sent so far, for a bandwidth limit shared by a rule's transfers.
pub struct Sent {
    /// Bytes per second; `None`: no limit.
    rate: Option<u64>,
    state: Mutex<(Instant, u64)>,
}

impl Sent {
    pub fn new(rate: Option<u64>) -> Sent {
        Sent { rate: rate.filter(|r| *r > 0), state: Mutex::new((Instant::now(), 0)) }
    }

    /// The largest chunk worth sending at once: a second's worth under a limit.
    fn chunk(&self, chunk: usize) -> usize {
        self.rate.map_or(chunk, |r| chunk.min(r.max(64 * 1024) as usize))
    }

    /// Counts `n` bytes sent and waits until the limit allows them.
    async fn pace(&self, n: u64) {
        let Some(rate) = self.rate else { return };
        let wait = {
            let mut state = self.state.lock().unwrap();
            state.1 += n;
            let due = Duration::from_secs_f64(state.1 as f64 / rate as f64);
            due.saturating_sub(state.0.elapsed())
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

impl UpstreamClient {
    fn write<'a>(&self, method: Method, url: Url, repo: &'a str) -> Request<'a> {
        let headers = Vec::new();
        Request { method, url, repo, actions: "pull,push", accept: None, body: None, headers, timed: true, scope: None }
    }

    /// Whether the destination has blob `digest` in `repo`.
    pub async fn has_blob(&self, repo: &str, digest: &Digest) -> Result<bool, Error> {
        let url = self.url(&format!("{repo}/blobs/{digest}"))?;
        let response = self.exchange(self.write(Method::HEAD, url, repo)).await?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(self.refused(status)),
        }
    }

    /// Starts an upload into `repo`, first asking to mount `digest` from `from` (a
    /// repository of the destination known to hold it): `Ok(None)` if it was mounted, else
    /// the upload's location.
    async fn start_upload(&self, repo: &str, mount: Option<(&Digest, &str)>) -> Result<Option<Url>, Error> {
        let mut url = self.url(&format!("{repo}/blobs/uploads/"))?;
        if let Some((digest, from)) = mount {
            url.query_pairs_mut().append_pair("mount", digest.as_str()).append_pair("from", from);
        }
        let response = self.exchange(self.write(Method::POST, url, repo)).await?;
        match response.status().as_u16() {
            201 if mount.is_some() => Ok(None),
            202 => Ok(Some(self.location(&response)?)),
            status => Err(self.refused(status)),
        }
    }

    fn location(&self, response: &reqwest::Response) -> Result<Url, Error> {
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| self.unreachable("answered an upload without a Location"))?;
        self.resolve(location)
    }

    /// Puts `blob` into `repo`: nothing if it is there, a mount from its `mount_from` if
    /// that works, else an upload of what `read(offset, len)` returns, in chunks of `chunk`
    /// bytes when it is larger, paced by `sent`.
    pub async fn push_blob<R, F>(
        &self,
        repo: &str,
        blob: BlobToPush<'_>,
        chunk: usize,
        sent: &Sent,
        read: R,
    ) -> Result<Pushed, Error>
    where
        R: Fn(u64, usize) -> F,
        F: Future<Output = Result<Bytes, Error>>,
    {
        let BlobToPush { digest, size, mount_from } = blob;
        if self.has_blob(repo, digest).await? {
            return Ok(Pushed::Present);
        }
        let Some(mut location) = self.start_upload(repo, mount_from.map(|from| (digest, from))).await? else {
            return Ok(Pushed::Mounted);
        };
        let chunk = sent.chunk(chunk).max(1);
        let mut total = 0u64;
        if size <= chunk as u64 {
            // One request: the closing PUT carries the whole blob.
            let bytes = read(0, size as usize).await?;
            total += bytes.len() as u64;
            self.close(repo, location, digest, bytes).await?;
            sent.pace(total).await;
            return Ok(Pushed::Uploaded(total));
        }
        let mut offset = 0u64;
        let mut failures = 0;
        while offset < size {
            let len = chunk.min((size - offset) as usize);
            let bytes = read(offset, len).await?;
            let sent_now = bytes.len() as u64;
            match self.patch(repo, &location, offset, bytes).await {
                Ok(next) => {
                    location = next;
                    offset += sent_now;
                    total += sent_now;
                    sent.pace(sent_now).await;
                }
                Err(e) => {
                    failures += 1;
                    total += sent_now;
                    if failures >= CHUNK_ATTEMPTS {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, repo, %digest, offset, "a chunk failed; resuming from the destination's offset");
                    let (next, at) = self.upload_status(repo, &location).await?;
                    location = next;
                    offset = at;
                }
            }
        }
        self.close(repo, location, digest, Bytes::new()).await?;
        Ok(Pushed::Uploaded(total))
    }

    /// Sends one chunk at `offset`; the upload's next location.
    async fn patch(&self, repo: &str, location: &Url, offset: u64, bytes: Bytes) -> Result<Url, Error> {
        let end = offset + bytes.len() as u64 - 1;
        let mut request = self.write(Method::PATCH, location.clone(), repo);
        request.headers.push(("content-range", format!("{offset}-{end}")));
        request.body = Some(("application/octet-stream", bytes));
        request.timed = false;
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            202 => self.location(&response),
            status => Err(self.refused(status)),
        }
    }

    /// Where an upload is: its location and the bytes the destination holds.
    async fn upload_status(&self, repo: &str, location: &Url) -> Result<(Url, u64), Error> {
        let response = self.exchange(self.write(Method::GET, location.clone(), repo)).await?;
        if response.status().as_u16() != 204 {
            return Err(self.refused(response.status().as_u16()));
        }
        // `Range: 0-N` holds N + 1 bytes; an empty upload may say `0-0` or nothing.
        let held = response
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|r| r.rsplit('-').next())
            .and_then(|n| n.parse::<u64>().ok())
            .map_or(0, |end| end + 1);
        let location =
            if response.headers().contains_key(LOCATION) { self.location(&response)? } else { location.clone() };
        Ok((location, held))
    }

    /// The closing `PUT ?digest=`, with the last bytes (or none).
    async fn close(&self, repo: &str, mut location: Url, digest: &Digest, bytes: Bytes) -> Result<(), Error> {
        location.query_pairs_mut().append_pair("digest", digest.as_str());
        let mut request = self.write(Method::PUT, location, repo);
        request.body = Some(("application/octet-stream", bytes));
        request.timed = false;
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            201 => Ok(()),
            400 => Err(Error::new(ErrorKind::DigestInvalid)
                .with_message(format!("the destination refused blob {digest}: its bytes do not match"))),
            status => Err(self.refused(status)),
        }
    }

    /// Puts a manifest under `reference` (a tag or its digest), byte for byte.
    pub async fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: Bytes) -> Result<(), Error> {
        let url = self.url(&format!("{repo}/manifests/{reference}"))?;
        let mut request = self.write(Method::PUT, url, repo);
        request.body = Some((media_type, body));
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            400 => {
                let text = super::read_limited(response, 64 * 1024).await.unwrap_or_default();
                Err(Error::new(ErrorKind::ManifestInvalid).with_message(format!(
                    "the destination refused manifest {repo}:{reference}: {}",
                    String::from_utf8_lossy(&text).chars().take(300).collect::<String>()
                )))
            }
            status => Err(self.refused(status)),
        }
    }

    /// Deletes manifest `digest` of `repo`; `false` if it was not there.
    pub async fn delete_manifest(&self, repo: &str, digest: &Digest) -> Result<bool, Error> {
        let url = self.url(&format!("{repo}/manifests/{digest}"))?;
        let mut request = self.write(Method::DELETE, url, repo);
        request.actions = "pull,push,delete";
        let response = self.exchange(request).await?;
        match response.status().as_u16() {
            200..=299 => Ok(true),
            404 => Ok(false),
            status => Err(self.refused(status)),
        }
    }
}
