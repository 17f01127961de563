//! A project's webhooks (`berth_federation::webhooks`): create, read, replace, delete,
//! send a test event, read the delivery log. Project administrators and maintainers
//! (`manage-webhooks`) and system administrators. A secret or an extra header goes in and
//! never comes out: a view says only whether there is one.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::Permission;
use berth_core::{Error, ErrorKind};
use berth_federation::webhooks::{DeliveryView, TestOutcome};
use berth_federation::{WebhookSpec, WebhookView, Webhooks};
use utoipa::IntoParams;

use super::{Caller, Change, MAX_PAGE, Reply, bad_request, json, next_link, parse_body, unknown};
use crate::state::Registry;
use berth_access::{Access, Principal};

/// The query's parameters (documentation; they are read from the query string).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct LogPage {
    /// Deliveries older than this id (the last id of the previous page).
    before: Option<i64>,
    /// At most this many deliveries (1–1000, default 100).
    limit: Option<u32>,
}

fn webhooks(registry: &Registry) -> Result<&Webhooks, Error> {
    registry
        .federation
        .as_deref()
        .and_then(|f| f.webhooks.as_deref())
        .ok_or_else(|| Error::new(ErrorKind::NotFound).with_message("this registry sends no webhooks"))
}

/// The caller, if it may manage `project`'s webhooks, and the project exists.
async fn manager(registry: &Registry, caller: &Caller, project: &str) -> Result<Principal, Error> {
    let principal = caller.authorize(registry, Access::Project(project, Permission::ManageWebhooks)).await?;
    registry.identity.project(project).await?.ok_or_else(|| unknown("project", project))?;
    Ok(principal)
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks", tag = "webhooks",
    params(("project" = String, Path)),
    responses((status = 200, description = "The project's webhooks", body = [WebhookView]),
        (status = 403, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller, Path(project): Path<String>) -> Reply {
    manager(&registry, &caller, &project).await?;
    Ok(json(StatusCode::OK, &webhooks(&registry)?.list(&project).await?))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks/{name}", tag = "webhooks",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = WebhookView), (status = 404, body = super::ErrorBody)))]
pub async fn get(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Reply {
    manager(&registry, &caller, &project).await?;
    Ok(json(StatusCode::OK, &webhooks(&registry)?.get(&project, &name).await?))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/webhooks", tag = "webhooks",
    params(("project" = String, Path)), request_body = WebhookSpec,
    responses((status = 201, body = WebhookView),
        (status = 400, description = "An invalid spec: the message names the field", body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn create(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = manager(&registry, &caller, &project).await?;
    let spec: WebhookSpec = parse_body(&body)?;
    let view = webhooks(&registry)?.put(&project, spec, true).await?;
    audit(&registry, &caller, &principal, "webhook.create", &view).await;
    Ok(json(StatusCode::CREATED, &view))
}

#[utoipa::path(put, path = "/api/v1/projects/{project}/webhooks/{name}", tag = "webhooks",
    params(("project" = String, Path), ("name" = String, Path)), request_body = WebhookSpec,
    responses((status = 200, description = "Replaced; a secret or header left out is kept", body = WebhookView),
        (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn replace(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
    body: Bytes,
) -> Reply {
    let principal = manager(&registry, &caller, &project).await?;
    let spec: WebhookSpec = parse_body(&body)?;
    if spec.name != name {
        return Err(bad_request("the body names another webhook").into());
    }
    let view = webhooks(&registry)?.put(&project, spec, false).await?;
    audit(&registry, &caller, &principal, "webhook.update", &view).await;
    Ok(json(StatusCode::OK, &view))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/webhooks/{name}", tag = "webhooks",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 204, description = "Gone, with its delivery log and pending deliveries"),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Reply {
    let principal = manager(&registry, &caller, &project).await?;
    if !webhooks(&registry)?.delete(&project, &name).await? {
        return Err(unknown("webhook", &name).into());
    }
    let change = Change { operation: "webhook.delete", project: Some(&project), resource: &name, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/webhooks/{name}/test", tag = "webhooks",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "A `ping` event was sent now (not retried, not logged): how it went",
        body = TestOutcome), (status = 404, body = super::ErrorBody)))]
pub async fn test(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Reply {
    manager(&registry, &caller, &project).await?;
    Ok(json(StatusCode::OK, &webhooks(&registry)?.test(&project, &name).await?))
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/webhooks/{name}/deliveries", tag = "webhooks",
    params(("project" = String, Path), ("name" = String, Path), LogPage),
    responses((status = 200, description = "The delivery log, newest first", body = [DeliveryView]),
        (status = 404, body = super::ErrorBody)))]
pub async fn deliveries(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, name)): Path<(String, String)>,
) -> Reply {
    manager(&registry, &caller, &project).await?;
    let limit = caller.number::<u32>("limit")?.unwrap_or(super::DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad_request(format!("limit must be between 1 and {MAX_PAGE}")).into());
    }
    let before = caller.number("before")?;
    let mut page = webhooks(&registry)?.deliveries(&project, &name, before, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let mut response = json(StatusCode::OK, &page);
    if let (true, Some(last)) = (more, page.last()) {
        let target = format!("/api/v1/projects/{project}/webhooks/{name}/deliveries?limit={limit}&before={}", last.id);
        next_link(&mut response, &target);
    }
    Ok(response)
}

/// Records a change to a webhook: its URL and events, never its secret or header.
async fn audit(
    registry: &Registry,
    caller: &Caller,
    principal: &Principal,
    operation: &'static str,
    view: &WebhookView,
) {
    let detail = Some(format!(
        "url={} events={} format={} enabled={}",
        view.url,
        view.events.join(","),
        view.format,
        view.enabled
    ));
    let change = Change { operation, project: Some(&view.project), resource: &view.name, detail };
    caller.audit(registry, principal, change).await;
}
