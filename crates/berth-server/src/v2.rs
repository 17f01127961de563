//! The `/v2` surface: every request is parsed into an [`Endpoint`], its method checked,
//! writes refused in read-only mode, then handed to one handler (`manifests`, `blobs`,
//! `uploads`), whose error is rendered as the OCI error JSON.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};
use berth_access::Access;
use berth_core::{Error, ErrorKind, RepoName};
use berth_federation::Federation;

use crate::ctx::Ctx;
use crate::endpoint::Endpoint;
use crate::response::ApiError;
use crate::state::Registry;
use crate::{blobs, idle, listen, manifests, observe, track, uploads};

pub(crate) async fn dispatch(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = idle::with_idle_timeout(body, registry.config.body_idle_timeout);
    let peer = parts.extensions.get::<listen::PeerAddr>().map(|p| p.0.ip());
    let principal = parts.extensions.get::<track::PrincipalSlot>();
    let ctx = Ctx {
        registry: &registry,
        method: &parts.method,
        headers: &parts.headers,
        query: parts.uri.query(),
        peer,
        principal,
    };
    let (route, result) = match Endpoint::parse(parts.uri.path()) {
        Ok(endpoint) if !endpoint.allows(&parts.method) => {
            (observe::Route::of(&endpoint), Err(Error::new(ErrorKind::MethodNotAllowed)))
        }
        Ok(endpoint)
            if !matches!(parts.method, Method::GET | Method::HEAD) && registry.read_only.load(Ordering::Relaxed) =>
        {
            (observe::Route::of(&endpoint), Err(Error::new(ErrorKind::ReadOnly)))
        }
        Ok(endpoint) => (observe::Route::of(&endpoint), handle(ctx, endpoint, body).await),
        Err(e) => (observe::Route::Unknown, Err(e)),
    };
    let mut response = result.unwrap_or_else(|e| ApiError(e).into_response());
    response.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response.extensions_mut().insert(route);
    response
}

async fn handle(ctx: Ctx<'_>, endpoint: Endpoint, body: Body) -> Result<Response, Error> {
    let m = ctx.method;
    let endpoint = match &ctx.registry.federation {
        Some(federation) if matches!(*m, Method::GET | Method::HEAD) => mirrored(federation, ctx, endpoint).await?,
        _ => endpoint,
    };
    match endpoint {
        Endpoint::Base => {
            ctx.authorize(Access::Base).await?;
            Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], "{}").into_response())
        }
        Endpoint::Catalog => manifests::catalog(ctx).await,
        Endpoint::Tags(repo) => manifests::tags(ctx, &repo).await,
        Endpoint::Referrers(repo, digest) => manifests::referrers(ctx, &repo, &digest).await,
        Endpoint::Manifest(repo, reference) => match *m {
            Method::PUT => manifests::put(ctx, &repo, &reference, body).await,
            Method::DELETE => manifests::delete(ctx, &repo, &reference).await,
            _ => manifests::get(ctx, &repo, &reference).await,
        },
        Endpoint::InvalidReference(repo, reference, why) => {
            manifests::invalid_reference(ctx, &repo, &reference, why).await
        }
        Endpoint::Blob(repo, digest) => match *m {
            Method::DELETE => blobs::delete(ctx, &repo, &digest).await,
            _ => blobs::get(ctx, &repo, &digest).await,
        },
        Endpoint::UploadStart(repo) => uploads::start(ctx, &repo, body).await,
        Endpoint::Upload(repo, id) => {
            // Only ids this registry could have issued; anything else is unknown.
            let id = uuid::Uuid::try_parse(&id)
                .map_err(|_| Error::new(ErrorKind::BlobUploadUnknown))?
                .hyphenated()
                .to_string();
            match *m {
                Method::GET => uploads::status(ctx, &repo, &id).await,
                Method::PATCH => uploads::patch(ctx, &repo, &id, body).await,
                Method::PUT => uploads::finish(ctx, &repo, &id, body).await,
                _ => uploads::cancel(ctx, &repo, &id).await,
            }
        }
    }
}

/// A pull that is a mirror request (`berth_federation::route`) goes to its proxy
/// repository; anything else is left as it is.
async fn mirrored(federation: &Federation, ctx: Ctx<'_>, endpoint: Endpoint) -> Result<Endpoint, Error> {
    let ns = ctx.param("ns");
    let route = async |repo: RepoName| -> Result<RepoName, Error> {
        Ok(federation.mirror(&repo, ns.as_deref()).await?.unwrap_or(repo))
    };
    Ok(match endpoint {
        Endpoint::Manifest(repo, reference) => Endpoint::Manifest(route(repo).await?, reference),
        Endpoint::Blob(repo, digest) => Endpoint::Blob(route(repo).await?, digest),
        Endpoint::Tags(repo) => Endpoint::Tags(route(repo).await?),
        Endpoint::Referrers(repo, digest) => Endpoint::Referrers(route(repo).await?, digest),
        other => other,
    })
}
