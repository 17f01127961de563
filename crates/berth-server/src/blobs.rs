//! Blob endpoints: pull (`GET`/`HEAD` with ranges) and delete. Uploads are in
//! `uploads.rs`.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use berth_core::{Digest, Error, ErrorKind, RepoName};
use berth_federation::BlobSource;
use berth_meta::BlobInfo;
use berth_storage::StorageError;
use futures_util::StreamExt;

use crate::ctx::Ctx;
use crate::range::parse_range;
use crate::response::{empty, header_value};
use berth_access::{Access, Action};

pub(crate) fn blob_location(repo: &RepoName, digest: &Digest) -> String {
    format!("/v2/{repo}/blobs/{digest}")
}

pub(crate) async fn get(ctx: Ctx<'_>, repo: &RepoName, digest: &Digest) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let reg = ctx.registry;
    let unknown = || Error::new(ErrorKind::BlobUnknown).with_detail(digest.to_string());
    let stored = match ctx.proxy(repo) {
        Some((federation, via)) => {
            let head = *ctx.method == Method::HEAD;
            let whole = ctx.header("range").is_none();
            let found = federation.blob(&via, repo, digest, head, whole).await;
            let source = match &found {
                Ok(Some(BlobSource::Stored(_)) | None) => "cache",
                Ok(Some(_)) => "upstream",
                Err(_) => "error",
            };
            reg.metrics.proxy_pull(via.upstream(), "blob", source);
            match found?.ok_or_else(unknown)? {
                BlobSource::Stored(info) => Some(info),
                BlobSource::Fetching { size, body } => return uncached(digest, size, Body::from_stream(body)),
                BlobSource::Remote { size } => return uncached(digest, Some(size), Body::empty()),
            }
        }
        None => reg.meta.repo_blob(repo, digest).await?,
    };
    let BlobInfo { size, key } = stored.ok_or_else(unknown)?;

    // Checked here even when redirecting, so a bad range gets the registry's error.
    let range = match ctx.header("range") {
        Some(value) => parse_range(value, size)?,
        None => None,
    };
    if let Some(ttl) = reg.config.redirect_ttl
        && *ctx.method == Method::GET
    {
        // The client repeats the request (its `Range` too) at the store's URL.
        match reg.blobs.presign_get(&key, ttl).await {
            Ok(Some(url)) => return redirect(digest, &url),
            Ok(None) => {}
            // Served through Berth instead: the pull still works, and the cause is logged.
            Err(e) => tracing::warn!(%digest, error = %e, "presigning failed; serving the blob directly"),
        }
    }
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", header_value(digest.as_str()))
        .header(header::ETAG, header_value(&format!("\"{digest}\"")))
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::CACHE_CONTROL, "max-age=31536000");
    let (status, length) = match &range {
        Some(r) => {
            builder = builder.header(header::CONTENT_RANGE, format!("bytes {}-{}/{size}", r.start, r.end - 1));
            (StatusCode::PARTIAL_CONTENT, r.end - r.start)
        }
        None => (StatusCode::OK, size),
    };
    builder = builder.status(status).header(header::CONTENT_LENGTH, length);
    let body = if *ctx.method == Method::HEAD {
        Body::empty()
    } else {
        // Always the range meant, so a stored file shorter than recorded fails here, with
        // a clean error, rather than as a short body.
        let stream = reg.blobs.read_blob(&key, Some(range.unwrap_or(0..size))).await.map_err(|e| match e {
            // Metadata says it exists; the bytes must too.
            StorageError::NotFound => Error::internal(format!("blob {digest} is recorded but missing from storage")),
            other => Error::internal(format!("blob {digest}: {other}")),
        })?;
        // A failure once the body has started can only cut the response short: logged
        // here, once, since no error response can follow.
        let digest = digest.clone();
        Body::from_stream(stream.inspect(move |chunk| {
            if let Err(e) = chunk {
                tracing::error!(%digest, error = %e, "reading a blob failed while it was served");
            }
        }))
    };
    builder.body(body).map_err(Error::internal)
}

/// A whole blob that is not stored yet: its bytes as the pull-through cache fetches them
/// (or none, for a `HEAD`), with its length when the upstream said it.
fn uncached(digest: &Digest, size: Option<u64>, body: Body) -> Result<Response, Error> {
    let mut builder = Response::builder()
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header("docker-content-digest", header_value(digest.as_str()))
        .header(header::ETAG, header_value(&format!("\"{digest}\"")));
    if let Some(size) = size {
        builder = builder.header(header::CONTENT_LENGTH, size);
    }
    builder.body(body).map_err(Error::internal)
}

/// `307 Temporary Redirect` to `url`, which serves the blob `digest`.
fn redirect(digest: &Digest, url: &str) -> Result<Response, Error> {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header(header::LOCATION, HeaderValue::try_from(url).map_err(Error::internal)?)
        .header("docker-content-digest", header_value(digest.as_str()))
        .header(header::CONTENT_LENGTH, 0)
        .body(Body::empty())
        .map_err(Error::internal)
}

pub(crate) async fn delete(ctx: Ctx<'_>, repo: &RepoName, digest: &Digest) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Delete)).await?;
    // Only the link goes: the bytes belong to every repository that still links them,
    // and garbage collection removes them once none does.
    if !ctx.registry.meta.unlink_blob(repo, digest).await? {
        return Err(Error::new(ErrorKind::BlobUnknown).with_detail(digest.to_string()));
    }
    Ok(empty(StatusCode::ACCEPTED))
}
