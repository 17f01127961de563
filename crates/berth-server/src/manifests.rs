//! Manifest, tag, catalog and referrers endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::access::project_of;
use berth_core::manifest::{self, MAX_MANIFEST_SIZE};
use berth_core::{Digest, Error, ErrorKind, MediaType, Reference, RepoName, Tag};
use berth_federation::{Federation, Via};
use berth_meta::{ManifestRecord, NewManifest, Page, PageSpec};
use futures_util::StreamExt;

use crate::ctx::Ctx;
use crate::response::{empty, header_value};
use berth_access::grants::listing_of;
use berth_access::{Access, Action};

/// Largest page of tags or repositories returned at once.
const MAX_PAGE: u32 = 10_000;
/// Largest page of referrers returned at once.
const MAX_REFERRERS_PAGE: u32 = 1000;
/// About the most bytes of descriptors in one page of referrers: an index that a client
/// reads whole, so bounded like a manifest (with room for the index around them).
const MAX_REFERRERS_BYTES: usize = MAX_MANIFEST_SIZE - 4096;

pub(crate) async fn get(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference) -> Result<Response, Error> {
    let principal = ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let result = serve(ctx, repo, reference).await;
    // A pull is a GET; a HEAD only looks.
    if *ctx.method == Method::GET {
        if let Some(served) = result.as_ref().ok().and_then(|r| r.headers().get("docker-content-digest")) {
            // In memory only; flushed in batches (`retention/pulls.rs`).
            let tag = match reference {
                Reference::Tag(t) => Some(t.as_str()),
                Reference::Digest(_) => None,
            };
            ctx.registry.jobs.pulls.record(repo.as_str(), served.to_str().unwrap_or_default(), tag);
        }
        let digest = result.as_ref().ok().and_then(|r| served_digest(r, reference));
        ctx.audit(&principal, "manifest.pull", repo, reference, &result, digest).await;
    }
    result
}

/// The digest a response to a manifest request names, when the request named a tag.
fn served_digest(response: &Response, reference: &Reference) -> Option<String> {
    let digest = response.headers().get("docker-content-digest")?.to_str().ok()?;
    matches!(reference, Reference::Tag(_)).then(|| digest.to_owned())
}

/// A manifest of `repo`: stored, or, in a proxy project, through the cache (`true`: the
/// upstream could not be asked whether the tag moved, and this is what was cached).
async fn lookup(
    ctx: Ctx<'_>,
    proxy: Option<&(&Arc<Federation>, Via)>,
    repo: &RepoName,
    reference: &Reference,
) -> Result<Option<(ManifestRecord, bool)>, Error> {
    match proxy {
        Some((federation, via)) => {
            let served = federation.manifest(via, repo, reference).await;
            let source = match &served {
                Ok(Some(s)) if s.stale => "stale",
                Ok(Some(s)) if s.fetched => "upstream",
                Ok(_) => "cache",
                Err(_) => "error",
            };
            ctx.registry.metrics.proxy_pull(via.upstream(), "manifest", source);
            Ok(served?.map(|served| (served.record, served.stale)))
        }
        None => Ok(ctx.registry.meta.manifest(repo, reference).await?.map(|record| (record, false))),
    }
}

async fn serve(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference) -> Result<Response, Error> {
    let unknown = || Error::new(ErrorKind::ManifestUnknown).with_detail(reference.to_string());
    let proxy = ctx.proxy(repo);
    let (mut record, stale) = lookup(ctx, proxy.as_ref(), repo, reference).await?.ok_or_else(unknown)?;

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
            Some((child, _)) => {
                lookup(ctx, proxy.as_ref(), repo, &Reference::Digest(child)).await?.ok_or_else(unknown)?.0
            }
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
    if stale && let Some((_, via)) = &proxy {
        let warning = format!("110 berth \"Response is stale: upstream {} could not be asked\"", via.upstream());
        h.insert(header::WARNING, header_value(&warning));
    }
    Ok(response)
}

pub(crate) async fn put(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference, body: Body) -> Result<Response, Error> {
    let principal = ctx.authorize(Access::Repository(repo, Action::Push)).await?;
    ctx.check_writable(repo)?;
    let result = store(ctx, repo, reference, body).await;
    let digest = result.as_ref().ok().and_then(|r| served_digest(r, reference));
    ctx.audit(&principal, "manifest.push", repo, reference, &result, digest).await;
    result
}

async fn store(ctx: Ctx<'_>, repo: &RepoName, reference: &Reference, body: Body) -> Result<Response, Error> {
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

/// A manifest URL whose reference is neither a tag nor a digest (`why` says which error
/// parsing it gave). Nothing can be stored under it, so a read or a delete finds nothing:
/// 404 `MANIFEST_UNKNOWN`, as the conformance suite expects of `GET`/`HEAD` (`DELETE`
/// answers the same: the manifest is as unknown). A `PUT` is refused for its reference.
pub(crate) async fn invalid_reference(
    ctx: Ctx<'_>,
    repo: &RepoName,
    reference: &str,
    why: ErrorKind,
) -> Result<Response, Error> {
    let (action, error) = match *ctx.method {
        Method::PUT => (Action::Push, why),
        Method::DELETE => (Action::Delete, ErrorKind::ManifestUnknown),
        _ => (Action::Pull, ErrorKind::ManifestUnknown),
    };
    ctx.authorize(Access::Repository(repo, action)).await?;
    Err(Error::new(error).with_detail(reference))
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
    let principal = ctx.authorize(Access::Repository(repo, Action::Delete)).await?;
    let meta = &ctx.registry.meta;
    let (operation, deleted) = match reference {
        Reference::Digest(d) => ("manifest.delete", meta.delete_manifest(repo, d, berth_meta::DeleteIf::Any).await),
        Reference::Tag(t) => ("tag.delete", meta.delete_tag(repo, t, None).await),
    };
    let result = match deleted {
        Ok(true) => Ok(empty(StatusCode::ACCEPTED)),
        Ok(false) => Err(Error::new(ErrorKind::ManifestUnknown).with_detail(reference.to_string())),
        Err(e) => Err(e),
    };
    ctx.audit(&principal, operation, repo, reference, &result, None).await;
    result
}

/// `n` (at most `max`, `max` if absent) and `last` of a paginated listing: `(limit, last)`.
fn pagination(ctx: Ctx<'_>, max: u32) -> Result<(u32, Option<String>), Error> {
    let n = match ctx.param("n") {
        Some(n) => {
            n.parse::<u32>().map_err(|_| Error::new(ErrorKind::PaginationInvalid).with_detail(format!("n={n}")))?
        }
        None => max,
    };
    Ok((n.min(max), ctx.param("last")))
}

/// The `last` of the next page, if more items follow this one.
fn next_after(page: &Page) -> Option<&str> {
    page.items.last().filter(|_| page.more).map(String::as_str)
}

/// `Link: <path?n=N&last=LAST&…>; rel="next"` when `last` (more items follow it), with
/// the listing's other parameters `extra`.
fn link_next(response: &mut Response, path: &str, limit: u32, last: Option<&str>, extra: &[(&str, &str)]) {
    if let Some(last) = last {
        let mut query = form_urlencoded::Serializer::new(String::new());
        query.append_pair("n", &limit.to_string()).append_pair("last", last);
        for (k, v) in extra {
            query.append_pair(k, v);
        }
        let link = format!("<{path}?{}>; rel=\"next\"", query.finish());
        response.headers_mut().insert(header::LINK, header_value(&link));
    }
}

pub(crate) async fn tags(ctx: Ctx<'_>, repo: &RepoName) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let (limit, last) = pagination(ctx, MAX_PAGE)?;
    let unknown = || Error::new(ErrorKind::NameUnknown).with_detail(repo.to_string());
    let page = match ctx.proxy(repo) {
        Some((federation, via)) => {
            let mut tags = federation.tags(&via, repo).await?.ok_or_else(unknown)?;
            tags.sort_unstable();
            tags.dedup();
            let mut after: Vec<String> =
                tags.into_iter().filter(|t| last.as_deref().is_none_or(|last| t.as_str() > last)).collect();
            let more = after.len() > limit as usize;
            after.truncate(limit as usize);
            Page { items: after, more }
        }
        None => ctx.registry.meta.tags(repo, last.as_deref(), limit).await?.ok_or_else(unknown)?,
    };
    let body = serde_json::json!({ "name": repo.as_str(), "tags": page.items });
    let mut response = json(body);
    link_next(&mut response, &format!("/v2/{repo}/tags/list"), limit, next_after(&page), &[]);
    Ok(response)
}

/// The repositories the caller may list (`list-repositories` in their project, as the
/// management API's listing needs: [`listing_of`]), a page at a time: pages of the store's listing
/// are read and filtered until this page is full or the listing ends, so a page is short
/// only at the end (or when every name after it is hidden; its `Link` then leads to an
/// empty page).
pub(crate) async fn catalog(ctx: Ctx<'_>) -> Result<Response, Error> {
    let principal = ctx.authorize(Access::Catalog).await?;
    let (limit, last) = pagination(ctx, MAX_PAGE)?;
    let mut items = Vec::new();
    let mut cursor = last;
    let mut more = false;
    // `n=0` asks for nothing.
    while limit > 0 && items.len() < limit as usize {
        let page = ctx.registry.meta.catalog(cursor.as_deref(), limit).await?;
        let mut names = page.items.into_iter();
        for name in names.by_ref() {
            let visible = RepoName::parse(&name).is_ok_and(|repo| principal.may(listing_of(project_of(&repo))));
            if visible {
                items.push(name.clone());
            }
            cursor = Some(name);
            if items.len() == limit as usize {
                break;
            }
        }
        more = names.len() > 0 || page.more;
        if !page.more {
            break;
        }
    }
    let next = items.last().filter(|_| more).map(String::as_str);
    let mut response = json(serde_json::json!({ "repositories": items }));
    link_next(&mut response, "/v2/_catalog", limit, next, &[]);
    Ok(response)
}

/// Referrers a page at a time, by digest: at most `n` (default and cap
/// [`MAX_REFERRERS_PAGE`]) and about [`MAX_REFERRERS_BYTES`] of descriptors, with a `Link`
/// to the next page (carrying the filter) when more follow.
pub(crate) async fn referrers(ctx: Ctx<'_>, repo: &RepoName, subject: &Digest) -> Result<Response, Error> {
    ctx.authorize(Access::Repository(repo, Action::Pull)).await?;
    let filter = ctx.param("artifactType").filter(|t| !t.is_empty());
    let (limit, last) = pagination(ctx, MAX_REFERRERS_PAGE)?;
    let limit = limit.max(1);
    let spec = PageSpec { last: last.as_deref(), limit, max_bytes: MAX_REFERRERS_BYTES };
    let page = ctx.registry.meta.referrers(repo, subject, filter.as_deref(), spec).await?;
    let next = page.descriptors.last().filter(|_| page.more).map(|d| d.digest.clone());
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MediaType::OCI_INDEX,
        "manifests": page.descriptors,
    });
    let mut response = json(index);
    let extra: Vec<(&str, &str)> = filter.iter().map(|f| ("artifactType", f.as_str())).collect();
    link_next(&mut response, &format!("/v2/{repo}/referrers/{subject}"), limit, next.as_deref(), &extra);
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
