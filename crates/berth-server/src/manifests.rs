//! Manifest, tag, catalog and referrers endpoints.

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::manifest::{self, MAX_MANIFEST_SIZE};
use berth_core::{Digest, Error, ErrorKind, MediaType, Reference, RepoName, Tag};
use berth_meta::{NewManifest, Page};
use futures_util::StreamExt;

use crate::response::{empty, header_value};
use crate::{Access, Action, Ctx};

/// Largest page of tags or repositories returned at once.
const MAX_PAGE: u32 = 10_000;

pub(crate) async fn get(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let meta = &ctx.registry.meta;
    let unknown = || Error::new(ErrorKind::ManifestUnknown).with_detail(reference.to_string());
    let mut record = meta.manifest(repo, reference).await?.ok_or_else(unknown)?;

    // Content negotiation: a client that cannot read what is stored gets the default
    // platform's manifest of an index it asked for by tag, or a clear 404.
    let accept: Vec<&str> = ctx
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(manifest::essence)
        .filter(|t| !t.is_empty())
        .collect();
    if !manifest::accepts(&accept, &record.media_type) {
        let fallback = match reference {
            Reference::Tag(_) if MediaType::is_index(&record.media_type) => {
                manifest::default_child(&record.body).filter(|(_, child_type)| manifest::accepts(&accept, child_type))
            }
            _ => None,
        };
        record = match fallback {
            Some((child, _)) => meta.manifest(repo, &Reference::Digest(child)).await?.ok_or_else(unknown)?,
            None => {
                return Err(unknown().with_message(format!(
                    "the manifest is {}, which the Accept header does not allow",
                    record.media_type
                )));
            }
        };
    }
    let etag = format!("\"{}\"", record.digest);
    let not_modified = ctx.header("if-none-match").is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if not_modified {
        empty(StatusCode::NOT_MODIFIED)
    } else {
        let length = record.body.len();
        let mut r =
            if *ctx.method == Method::HEAD { empty(StatusCode::OK) } else { Response::new(Body::from(record.body)) };
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        r
    };
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, header_value(&record.media_type));
    h.insert("docker-content-digest", header_value(record.digest.as_str()));
    h.insert(header::ETAG, header_value(&etag));
    Ok(response)
}

pub(crate) async fn put(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference, body: Body) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    let too_large =
        || Error::new(ErrorKind::ManifestTooLarge).with_detail(format!("limit is {MAX_MANIFEST_SIZE} bytes"));
    let body = read_limited(body, MAX_MANIFEST_SIZE).await?.ok_or_else(too_large)?;
    let digest = Digest::of(&body);
    let mut tags = Vec::new();
    match reference {
        Reference::Digest(d) if *d != digest => {
            return Err(Error::new(ErrorKind::DigestInvalid)
                .with_detail(serde_json::json!({ "expected": d.as_str(), "actual": digest.as_str() })));
        }
        Reference::Digest(_) => {}
        Reference::Tag(t) => tags.push(t.clone()),
    }
    for tag in ctx.params("tag") {
        tags.push(Tag::parse(&tag)?);
    }
    let parsed = manifest::parse(ctx.header("content-type"), &body)?;
    ctx.registry
        .meta
        .put_manifest(NewManifest { repo, digest: &digest, parsed: &parsed, body: &body, tags: &tags })
        .await?;

    let mut response = empty(StatusCode::CREATED);
    let h = response.headers_mut();
    h.insert(header::LOCATION, header_value(&format!("/v2/{repo}/manifests/{digest}")));
    h.insert("docker-content-digest", header_value(digest.as_str()));
    if let Some(subject) = &parsed.subject {
        h.insert("oci-subject", header_value(subject.as_str()));
    }
    if matches!(reference, Reference::Digest(_)) {
        for tag in &tags {
            h.append("oci-tag", header_value(tag.as_str()));
        }
    }
    Ok(response)
}

/// How much of an oversize body is read and discarded so that the client, still
/// sending, gets the 413 instead of a broken connection.
const DRAIN_LIMIT: usize = 64 * 1024 * 1024;

/// The whole body, or `None` if it is longer than `limit`.
async fn read_limited(body: Body, limit: usize) -> Result<Option<Vec<u8>>, Error> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| Error::new(ErrorKind::ManifestInvalid).with_message(format!("reading the manifest: {e}")))?;
        seen += chunk.len();
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    Ok((seen <= limit).then_some(buf))
}

pub(crate) async fn delete(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Delete)).await?;
    let meta = &ctx.registry.meta;
    let deleted = match reference {
        Reference::Digest(d) => meta.delete_manifest(repo, d).await?,
        Reference::Tag(t) => meta.delete_tag(repo, t).await?,
    };
    if !deleted {
        return Err(Error::new(ErrorKind::ManifestUnknown).with_detail(reference.to_string()));
    }
    Ok(empty(StatusCode::ACCEPTED))
}

/// `n` and `last` of a paginated listing: `(limit, last)`.
fn pagination(ctx: Ctx<'_>) -> Result<(u32, Option<String>), Error> {
    let n = match ctx.param("n") {
        Some(n) => {
            n.parse::<u32>().map_err(|_| Error::new(ErrorKind::PaginationInvalid).with_detail(format!("n={n}")))?
        }
        None => MAX_PAGE,
    };
    Ok((n.min(MAX_PAGE), ctx.param("last")))
}

/// `Link: <path?n=N&last=LAST>; rel="next"` when more items follow.
fn link_next(response: &mut Response, path: &str, limit: u32, page: &Page) {
    if let (true, Some(last)) = (page.more, page.items.last()) {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &limit.to_string())
            .append_pair("last", last)
            .finish();
        response.headers_mut().insert(header::LINK, header_value(&format!("<{path}?{query}>; rel=\"next\"")));
    }
}

pub(crate) async fn tags(ctx: Ctx<'_>, repo: &RepoName) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let (limit, last) = pagination(ctx)?;
    let page = ctx
        .registry
        .meta
        .tags(repo, last.as_deref(), limit)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NameUnknown).with_detail(repo.to_string()))?;
    let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
    let mut response = json(body);
    link_next(&mut response, &format!("/v2/{repo}/tags/list"), limit, &page);
    Ok(response)
}

pub(crate) async fn catalog(ctx: Ctx<'_>) -> Result<Response, Error> {
    ctx.authorize(Access::Catalog).await?;
    let (limit, last) = pagination(ctx)?;
    let page = ctx.registry.meta.catalog(last.as_deref(), limit).await?;
    let mut response = json(serde_json::json!({ "repositories": page.items }));
    link_next(&mut response, "/v2/_catalog", limit, &page);
    Ok(response)
}

pub(crate) async fn referrers(ctx: Ctx<'_>, repo: &RepoName, subject: &Digest) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let filter = ctx.param("artifactType").filter(|t| !t.is_empty());
    let descriptors = ctx.registry.meta.referrers(repo, subject, filter.as_deref()).await?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": descriptors,
    });
    let mut response = json(index);
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(MediaType::OCI_INDEX));
    if filter.is_some() {
        h.insert("oci-filters-applied", HeaderValue::from_static("artifactType"));
    }
    Ok(response)
}

fn json(value: serde_json::Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}
