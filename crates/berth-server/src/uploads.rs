//! The upload protocol: monolithic, chunked and resumable uploads, cancel, and
//! cross-repository mount.
//!
//! Bytes stream into the blob store's staging area while SHA-256 runs over them; the
//! upload's acknowledged size, with the hash state over exactly those bytes, moves
//! forward in the metadata store only after the bytes are written, so any request on any
//! node can continue the upload. On the closing `PUT` the digest is checked, the staged
//! bytes become the blob durably, and only then does a metadata transaction make it
//! visible.
//!
//! Every request that reads or changes an upload's record or bytes does so holding the
//! upload's [`Claim`](crate::claims::Claim), taken before the record is read and held by
//! the task that works until it ends: the hash of record is computed by that task over
//! exactly the chunks it hands to the blob store, and no other writer exists meanwhile.
//!
//! # The write path's invariants, in full
//!
//! 1. **Blob first, metadata second; metadata removed first, blob second.** An upload's
//!    bytes go to staging while SHA-256 runs over them. The upload's acknowledged size
//!    advances in the database only after the bytes are written. On the closing `PUT` the
//!    digest is checked, the staged bytes are fsynced and renamed into place, and only
//!    then does a transaction record the blob and link it to the repository.
//! 2. **Nothing acknowledged is lost.** kill -9 at any instant: a staged append that was
//!    not acknowledged is truncated away on the next append (the database size wins); a
//!    blob renamed into place but not yet recorded is recorded when the client closes the
//!    upload again (a closing `PUT` past offset 0 records its progress first, so the
//!    retry finds it; one from offset 0 carries the whole blob again and starts over);
//!    every acknowledgement waits for its records' fsync. A power loss may set an upload
//!    back (neither its progress nor its staged bytes are fsynced before the close), and
//!    the client resumes from where the registry says. `crash.rs` checks this, on the
//!    embedded and the scale-out stores.
//! 3. **Nothing half-visible.** A digest mismatch deletes the upload and its bytes; a
//!    manifest naming missing content is refused as a whole; a blob file's name is always
//!    the digest of its content.
//! 4. **Uploads are resumable anywhere.** Each acknowledged append records the size, the
//!    SHA-256 state and the blob store's state in one row; the next request, on any node,
//!    continues from there.
//! 5. **A digest always names its bytes.** The bytes stored under a digest hash to that
//!    digest, whoever pushes, because the hash of record cannot diverge from the bytes
//!    kept: (a) within a node, a request takes the upload's claim (`claims.rs`) *before* it
//!    reads the upload's record, and the claim lives in the task that appends, records and
//!    commits until that task ends (a dropped handler future cannot release it early); a
//!    second request waits for it (bounded), then reads what the first left; (b) the hash
//!    of record is computed by the claim holder over exactly the chunks it hands to the blob
//!    store, in order, and recorded only with the size it covers, moved only from the size
//!    read under the claim (`advance_upload ... WHERE size = $from`); (c) the blob store
//!    admits one writer per staged object (`FsBlobStore`'s upload locks; on S3 every part is
//!    named by its ETag in the recorded state, so a part overwritten by a racing append on
//!    another node fails the completion); (d) a commit whose staged bytes are shorter than
//!    the recorded size fails, and bytes past it (an append never acknowledged) are cut
//!    under the lock. A request whose chunk does not start where the upload is gets 416
//!    with `Range` and `Location` saying where it is.
//! 6. **Expiry.** Uploads idle longer than `--upload-ttl` are removed by the janitor (on the
//!    node holding the `janitor` lease), record first, bytes second; staged uploads without
//!    a record are removed when seen on two consecutive passes. A pass deletes records in
//!    batches (one statement each) until none is stale or a minute has passed, and removes
//!    their bytes 16 at a time. At most `--max-open-uploads` uploads are open per
//!    repository: the count and the insert are one transaction (a locked row per
//!    repository in `upload_locks` serializes them on PostgreSQL).

use std::future::Future;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{Digest, DigestHasher, Error, ErrorKind, Reference, RepoName};
use berth_meta::UploadRecord;
use berth_storage::ByteStream;
use futures_util::StreamExt;

use berth_storage::{storage_err, upload_err};

use crate::blobs::blob_location;
use crate::ctx::Ctx;
use crate::range::parse_content_range;
use crate::response::{ApiError, empty, header_value};
use crate::state::Registry;
use berth_access::{Access, Action, Principal};

fn upload_location(repo: &RepoName, id: &str) -> String {
    format!("/v2/{repo}/blobs/uploads/{id}")
}

/// `Range: 0-<last byte>` as uploads report it (`0-0` when empty, as distribution does).
fn upload_range(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

fn created(repo: &RepoName, digest: &Digest) -> Response {
    let mut r = empty(StatusCode::CREATED);
    let h = r.headers_mut();
    h.insert(header::LOCATION, header_value(&blob_location(repo, digest)));
    h.insert("docker-content-digest", header_value(digest.as_str()));
    r
}

/// `Location`, `Range` and the upload's id: where an upload stands and where to go on.
fn resume_headers(h: &mut HeaderMap, repo: &RepoName, id: &str, size: u64) {
    h.insert(header::LOCATION, header_value(&upload_location(repo, id)));
    h.insert(header::RANGE, header_value(&upload_range(size)));
    h.insert("docker-upload-uuid", header_value(id));
}

fn accepted(status: StatusCode, repo: &RepoName, id: &str, size: u64) -> Response {
    let mut r = empty(status);
    resume_headers(r.headers_mut(), repo, id, size);
    r
}

/// The chunk a request declares: `Content-Length` and `Content-Range`, read before the
/// work moves to a task of its own.
#[derive(Clone, Copy)]
struct Declared {
    length: Option<u64>,
    /// `(start, length)` from `Content-Range`.
    range: Option<(u64, u64)>,
}

impl Declared {
    fn of(ctx: Ctx<'_>) -> Result<Declared, Error> {
        let length = ctx
            .headers
            .get(header::CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|s| s.parse().ok()).ok_or_else(|| Error::new(ErrorKind::SizeInvalid)))
            .transpose()?;
        let range = ctx.header("content-range").map(parse_content_range).transpose()?;
        if let (Some(l), Some((_, chunk))) = (length, range)
            && l != chunk
        {
            return Err(Error::new(ErrorKind::SizeInvalid)
                .with_detail(format!("Content-Range is {chunk} bytes, Content-Length {l}")));
        }
        Ok(Declared { length, range })
    }

    /// The bytes the body must carry, checked against where the upload is.
    fn expected_at(&self, offset: u64) -> Result<Option<u64>, Error> {
        match self.range {
            Some((start, _)) if start != offset => Err(Error::new(ErrorKind::UploadRangeInvalid)
                .with_detail(format!("upload is at {offset}, chunk starts at {start}"))),
            Some((_, chunk)) => Ok(Some(chunk)),
            None => Ok(self.length),
        }
    }
}

/// `POST /v2/<name>/blobs/uploads/`: mount, monolithic upload, or a new session.
pub(crate) async fn start(ctx: Ctx<'_>, repo: &RepoName, body: Body) -> Result<Response, Error> {
    // A mount from `from` needs that repository's pull too: the challenge names it, so
    // that a client's token asked for the challenged scopes lets the mount happen.
    let source = ctx.param("mount").and(ctx.param("from")).and_then(|from| RepoName::parse(&from).ok());
    let also: Vec<Access<'_>> = source.iter().map(|from| Access::Repository(from, Action::Pull)).collect();
    let principal = ctx.authorize_also(Access::Repository(repo, Action::Push), &also).await?;
    ctx.check_writable(repo)?;
    let reg = ctx.registry;

    if let Some(mount) = ctx.param("mount") {
        let digest = Digest::parse(&mount)?;
        if try_mount(ctx, repo, &digest).await? {
            return Ok(created(repo, &digest));
        }
        // Not mountable: the spec's answer is a normal upload session.
    }
    if let Some(algorithm) = ctx.param("digest-algorithm")
        && algorithm != "sha256"
    {
        return Err(Error::new(ErrorKind::DigestUnsupported).with_detail(algorithm));
    }
    let monolithic = ctx.param("digest").map(|d| Digest::parse(&d)).transpose()?;
    let declared = Declared::of(ctx)?;
    let _permit = monolithic.as_ref().map(|_| ctx.upload_permit()).transpose()?;

    let id = uuid::Uuid::new_v4().hyphenated().to_string();
    let state = reg.blobs.create_upload(&id).await.map_err(storage_err)?;
    let max = reg.config.max_open_uploads;
    if !reg.meta.create_upload(&id, repo, &state, max).await? {
        // Best effort: the janitor removes staged bytes that no record owns.
        let _ = reg.blobs.delete_upload(&id, &state).await;
        return Err(Error::new(ErrorKind::TooManyRequests).with_message(format!(
            "{repo} has {max} uploads open, the most allowed: finish or cancel one, or retry once abandoned ones expire"
        )));
    }

    match monolithic {
        Some(digest) => {
            let closed = close(ctx, repo, &id, body, declared, digest.clone()).await;
            audit_refusal(ctx, &principal, repo, &digest, closed.as_ref().err().cloned()).await;
            closed
        }
        None => Ok(accepted(StatusCode::ACCEPTED, repo, &id, 0)),
    }
}

/// Links `digest` into `repo` from `from`, or, without `from`, from any repository the
/// caller may pull from. `false` if the blob is not mountable.
async fn try_mount(ctx: Ctx<'_>, repo: &RepoName, digest: &Digest) -> Result<bool, Error> {
    let meta = &ctx.registry.meta;
    let candidates = match ctx.param("from") {
        Some(from) => match RepoName::parse(&from) {
            Ok(from) => vec![from],
            Err(_) => return Ok(false),
        },
        None => meta.repos_with_blob(digest, 16).await?,
    };
    for from in &candidates {
        if ctx.authorize(Access::Repository(from, Action::Pull)).await.is_err() {
            continue;
        }
        // The key read and the link made under the digest's stripe, as a commit links:
        // GC removing these bytes (and, on the filesystem, their record) in between would
        // leave the link a fresh live record of bytes that are gone.
        let _stripe = ctx.registry.jobs.blob_locks.lock(digest).await;
        if let Some(info) = meta.repo_blob(from, digest).await? {
            match meta.link_blob(repo, digest, &info, None).await {
                Ok(_) => return Ok(true),
                // Garbage collection is removing it right now: not mountable.
                Err(e) if e.kind == ErrorKind::BlobUnknown => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(false)
}

/// Runs `work` holding upload `id`'s claim, in a task of its own, with the upload's record
/// as read under the claim (see the module doc).
async fn with_upload<T, F, Fut>(ctx: Ctx<'_>, repo: &RepoName, id: &str, work: F) -> Result<T, Error>
where
    T: Send + 'static,
    F: FnOnce(Arc<Registry>, UploadRecord) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let reg = ctx.registry;
    let claim = reg.claims.claim(id, reg.config.busy_wait).await?;
    let (reg, repo, id) = (Arc::clone(reg), repo.clone(), id.to_owned());
    claim
        .run(async move {
            let upload = find_upload(&reg, &repo, &id).await?;
            work(reg, upload).await
        })
        .await
}

async fn find_upload(reg: &Registry, repo: &RepoName, id: &str) -> Result<UploadRecord, Error> {
    reg.meta.upload(repo, id).await?.ok_or_else(|| Error::new(ErrorKind::BlobUploadUnknown).with_detail(id.to_owned()))
}

pub(crate) async fn status(ctx: Ctx<'_>, repo: &RepoName, id: &str) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    let upload = find_upload(ctx.registry, repo, id).await?;
    Ok(accepted(StatusCode::NO_CONTENT, repo, id, upload.size))
}

pub(crate) async fn cancel(ctx: Ctx<'_>, repo: &RepoName, id: &str) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    with_upload(ctx, repo, id, |reg, upload| async move {
        // Record first: once it is gone nobody can write to the staged bytes.
        reg.meta.delete_upload(&upload.id).await?;
        reg.blobs.delete_upload(&upload.id, &upload.state).await.map_err(storage_err)?;
        Ok(empty(StatusCode::NO_CONTENT))
    })
    .await
}

pub(crate) async fn patch(ctx: Ctx<'_>, repo: &RepoName, id: &str, body: Body) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    ctx.check_writable(repo)?;
    let _permit = ctx.upload_permit()?;
    let declared = Declared::of(ctx)?;
    let appended = with_upload(ctx, repo, id, move |reg, upload| async move {
        append(&reg, upload, body, declared, Closing::No).await
    })
    .await;
    match appended {
        Ok(progress) => Ok(accepted(StatusCode::ACCEPTED, repo, id, progress.size)),
        Err(e) => with_resume(ctx, repo, id, e).await,
    }
}

pub(crate) async fn finish(ctx: Ctx<'_>, repo: &RepoName, id: &str, body: Body) -> Result<Response, Error> {
    let principal = ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    ctx.check_writable(repo)?;
    let _permit = ctx.upload_permit()?;
    let digest = ctx
        .param("digest")
        .ok_or_else(|| Error::new(ErrorKind::DigestInvalid).with_message("the closing PUT needs a digest parameter"))?;
    let digest = Digest::parse(&digest)?;
    let declared = Declared::of(ctx)?;
    let closed = close(ctx, repo, id, body, declared, digest.clone()).await;
    audit_refusal(ctx, &principal, repo, &digest, closed.as_ref().err().cloned()).await;
    match closed {
        Ok(response) => Ok(response),
        Err(e) => with_resume(ctx, repo, id, e).await,
    }
}

/// Records a blob push that a policy refused (a quota): successful blob pushes are not
/// audited (their manifest's push is), refusals say why.
async fn audit_refusal(ctx: Ctx<'_>, principal: &Principal, repo: &RepoName, digest: &Digest, closed: Option<Error>) {
    if let Some(e) = closed.filter(|e| e.kind == ErrorKind::Denied) {
        let refused: Result<(), Error> = Err(e);
        ctx.audit(principal, "blob.push", repo, &Reference::Digest(digest.clone()), &refused, None).await;
    }
}

/// Appends the closing request's body and commits the blob.
async fn close(
    ctx: Ctx<'_>,
    repo: &RepoName,
    id: &str,
    body: Body,
    declared: Declared,
    digest: Digest,
) -> Result<Response, Error> {
    let repo2 = repo.clone();
    with_upload(ctx, repo, id, move |reg, upload| async move {
        let progress = append(&reg, upload, body, declared, Closing::Yes).await?;
        commit(&reg, &repo2, progress, &digest).await?;
        Ok(created(&repo2, &digest))
    })
    .await
}

/// A chunk that does not start where the upload is: the 416 says where it is, so the
/// client can resume from there (a retry of a chunk that did land, after a timeout).
async fn with_resume(ctx: Ctx<'_>, repo: &RepoName, id: &str, e: Error) -> Result<Response, Error> {
    if e.kind != ErrorKind::UploadRangeInvalid {
        return Err(e);
    }
    let upload = find_upload(ctx.registry, repo, id).await?;
    let mut response = ApiError(e).into_response();
    resume_headers(response.headers_mut(), repo, id, upload.size);
    Ok(response)
}

/// An upload after an append: its acknowledged size, the hash over exactly those bytes,
/// and the blob store's state.
struct Progress {
    id: String,
    size: u64,
    hasher: DigestHasher,
    state: String,
}

/// Whether an append is the request that completes its upload.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Closing {
    Yes,
    No,
}

/// Appends the request body to an upload, checking the declared chunk against where the
/// upload is, and records the new size, hash state and blob-store state. The caller holds
/// the upload's claim.
///
/// A closing append records too, unless it starts from nothing: a crash between its
/// commit and the metadata transaction must leave an upload that says all its bytes are
/// in, so that the repeated close finds the committed blob without the earlier chunks it
/// no longer carries. A close from nothing carries the whole blob again: the blob store
/// starts the upload over and its commit finds the blob committed before, so that
/// request (every monolithic push) skips a metadata write.
async fn append(
    reg: &Registry,
    upload: UploadRecord,
    body: Body,
    declared: Declared,
    closing: Closing,
) -> Result<Progress, Error> {
    let offset = upload.size;
    let hasher = match &upload.hash_state {
        Some(state) => DigestHasher::resume(state)
            .filter(|h| h.len() == offset)
            .ok_or_else(|| Error::internal(format!("upload {} has a corrupt hash state", upload.id)))?,
        None if offset == 0 => DigestHasher::new(),
        None => return Err(Error::internal(format!("upload {} has no hash state", upload.id))),
    };
    let expected = declared.expected_at(offset)?;
    let unchanged =
        Progress { id: upload.id.clone(), size: offset, hasher: hasher.clone(), state: upload.state.clone() };
    if expected == Some(0) || axum::body::HttpBody::is_end_stream(&body) {
        return Ok(unchanged);
    }

    // The hash of record: exactly the chunks handed to the blob store, in order.
    let hasher = Arc::new(Mutex::new(hasher));
    let tap = Arc::clone(&hasher);
    let stream: ByteStream = Box::pin(body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(std::io::Error::other)?;
        tap.lock().unwrap().update(&chunk);
        Ok(chunk)
    }));
    let (written, state) =
        reg.blobs.append_upload(&upload.id, &upload.state, offset, stream).await.map_err(upload_err)?;
    if expected.is_some_and(|e| e != written) {
        // Not acknowledged: the next append discards these bytes.
        return Err(Error::new(ErrorKind::SizeInvalid)
            .with_detail(format!("expected {} bytes, received {written}", expected.unwrap_or(0))));
    }
    let hasher = Arc::try_unwrap(hasher)
        .map_err(|_| Error::internal("the body stream outlived the append"))?
        .into_inner()
        .unwrap();
    let size = offset + written;
    if closing == Closing::Yes && offset == 0 {
        return Ok(Progress { id: upload.id, size, hasher, state });
    }
    if !reg.meta.advance_upload(&upload.id, offset, size, &hasher.to_state(), &state).await? {
        return Err(Error::new(ErrorKind::UploadRangeInvalid).with_message("the upload moved on concurrently"));
    }
    Ok(Progress { id: upload.id, size, hasher, state })
}

/// Verifies the digest of a finished upload and makes it a visible blob of `repo`.
async fn commit(reg: &Registry, repo: &RepoName, upload: Progress, digest: &Digest) -> Result<(), Error> {
    let Progress { id, size, hasher, state } = upload;
    let actual = hasher.finish();
    if actual != *digest {
        // A failed upload leaves nothing behind.
        reg.meta.delete_upload(&id).await?;
        reg.blobs.delete_upload(&id, &state).await.map_err(storage_err)?;
        return Err(Error::new(ErrorKind::DigestInvalid)
            .with_detail(serde_json::json!({ "expected": digest.as_str(), "actual": actual.as_str() })));
    }
    berth_jobs::commit::commit_and_link(&reg.jobs, repo, digest, &id, &state, size).await
}
