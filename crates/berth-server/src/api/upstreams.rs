//! Upstreams: the registries proxy projects cache (`berth_federation`). System
//! administrators only. A password goes in and never comes out: a view says only
//! whether one is stored.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Error, ErrorKind};
use berth_federation::{Federation, UpstreamSpec, UpstreamView};

use super::{Caller, Change, Reply, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::Access;

fn federation(registry: &Registry) -> Result<&Federation, Error> {
    registry
        .federation
        .as_deref()
        .ok_or_else(|| Error::new(ErrorKind::NotFound).with_message("this registry has no pull-through cache"))
}

#[utoipa::path(get, path = "/api/v1/upstreams", tag = "upstreams",
    responses((status = 200, description = "Every upstream", body = [UpstreamView]),
        (status = 403, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    Ok(json(StatusCode::OK, &federation(&registry)?.upstreams().await?))
}

#[utoipa::path(get, path = "/api/v1/upstreams/{name}", tag = "upstreams", params(("name" = String, Path)),
    responses((status = 200, body = UpstreamView), (status = 404, body = super::ErrorBody)))]
pub async fn get(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    caller.authorize(&registry, Access::System).await?;
    let all = federation(&registry)?.upstreams().await?;
    let upstream = all.into_iter().find(|u| u.name == name).ok_or_else(|| unknown("upstream", &name))?;
    Ok(json(StatusCode::OK, &upstream))
}

#[utoipa::path(post, path = "/api/v1/upstreams", tag = "upstreams", request_body = UpstreamSpec,
    responses((status = 201, body = UpstreamView), (status = 400, body = super::ErrorBody),
        (status = 404, description = "No such project", body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let spec: UpstreamSpec = parse_body(&body)?;
    let view = federation(&registry)?.put_upstream(spec, true).await?;
    audit(&registry, &caller, &principal, "upstream.create", &view).await;
    Ok(json(StatusCode::CREATED, &view))
}

#[utoipa::path(put, path = "/api/v1/upstreams/{name}", tag = "upstreams", params(("name" = String, Path)),
    request_body = UpstreamSpec,
    responses((status = 200, description = "Replaced; a password left out is kept", body = UpstreamView),
        (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn replace(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    let spec: UpstreamSpec = parse_body(&body)?;
    if spec.name != name {
        return Err(Error::new(ErrorKind::BadRequest).with_message("the body names another upstream").into());
    }
    let view = federation(&registry)?.put_upstream(spec, false).await?;
    audit(&registry, &caller, &principal, "upstream.update", &view).await;
    Ok(json(StatusCode::OK, &view))
}

#[utoipa::path(delete, path = "/api/v1/upstreams/{name}", tag = "upstreams", params(("name" = String, Path)),
    responses((status = 204, description = "Gone; the project keeps what it cached"),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = caller.authorize(&registry, Access::System).await?;
    if !federation(&registry)?.delete_upstream(&name).await? {
        return Err(unknown("upstream", &name).into());
    }
    let change = Change { operation: "upstream.delete", project: None, resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

/// Records a change to an upstream: its name, project and URL, never its credentials.
async fn audit(
    registry: &Registry,
    caller: &Caller,
    principal: &berth_access::Principal,
    operation: &'static str,
    view: &UpstreamView,
) {
    let detail = Some(format!("project={} url={} default={}", view.project, view.url, view.default));
    let change = Change { operation, project: Some(&view.project), resource: &view.name, detail };
    caller.audit(registry, principal, change).await;
}
