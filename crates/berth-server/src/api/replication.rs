//! Replication (`berth_federation::replication`): the registries copies go to, the rules
//! that say what goes where, manual runs, and executions with their per-artifact tasks.
//! System administrators only. A registry's password goes in and never comes out.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::{Error, ErrorKind};
use berth_federation::replication::{
    ExecutionView, RegistrySpec, RegistryView, Replication, RuleSpec, RuleView, TaskView,
};
use utoipa::IntoParams;

use super::{Caller, Change, MAX_PAGE, Reply, bad_request, json, next_link, parse_body, unknown};
use crate::state::Registry;
use berth_access::{Access, Principal};

fn replication(registry: &Registry) -> Result<&Replication, Error> {
    registry
        .federation
        .as_deref()
        .and_then(|f| f.replication.as_deref())
        .ok_or_else(|| Error::new(ErrorKind::NotFound).with_message("this registry does not replicate"))
}

/// The query's parameters (documentation; they are read from the query string).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct ExecutionPage {
    /// Executions of this rule only.
    rule: Option<String>,
    /// Executions older than this id (the last id of the previous page).
    before: Option<i64>,
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
}

/// The query's parameters (documentation; they are read from the query string).
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TaskPage {
    /// Tasks after this id (the last id of the previous page).
    after: Option<i64>,
    /// At most this many (1–1000, default 100).
    limit: Option<u32>,
}

/// An execution's id from the path: not a number is no such execution (a 404 in the
/// error JSON, not the router's plain-text rejection).
fn execution_id(id: &str) -> Result<i64, Error> {
    id.parse().map_err(|_| unknown("execution", id))
}

fn limit(caller: &Caller) -> Result<u32, Error> {
    let limit = caller.number::<u32>("limit")?.unwrap_or(super::DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(bad_request(format!("limit must be between 1 and {MAX_PAGE}")));
    }
    Ok(limit)
}

async fn admin(registry: &Registry, caller: &Caller) -> Result<Principal, Error> {
    caller.authorize(registry, Access::System).await
}

async fn audit(registry: &Registry, caller: &Caller, p: &Principal, op: &'static str, name: &str, detail: String) {
    let change = Change { operation: op, project: None, resource: name, detail: Some(detail) };
    caller.audit(registry, p, change).await;
}

#[utoipa::path(get, path = "/api/v1/replication/registries", tag = "replication",
    responses((status = 200, body = [RegistryView]), (status = 403, body = super::ErrorBody)))]
pub async fn registries(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    admin(&registry, &caller).await?;
    Ok(json(StatusCode::OK, &replication(&registry)?.registries().await?))
}

#[utoipa::path(get, path = "/api/v1/replication/registries/{name}", tag = "replication",
    params(("name" = String, Path)),
    responses((status = 200, body = RegistryView), (status = 404, body = super::ErrorBody)))]
pub async fn get_registry(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    admin(&registry, &caller).await?;
    let all = replication(&registry)?.registries().await?;
    Ok(json(StatusCode::OK, &all.into_iter().find(|r| r.name == name).ok_or_else(|| unknown("registry", &name))?))
}

#[utoipa::path(post, path = "/api/v1/replication/registries", tag = "replication", request_body = RegistrySpec,
    responses((status = 201, body = RegistryView), (status = 400, body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create_registry(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = admin(&registry, &caller).await?;
    let view = replication(&registry)?.put_registry(parse_body(&body)?, true).await?;
    audit(&registry, &caller, &principal, "replication.registry.create", &view.name, format!("url={}", view.url)).await;
    Ok(json(StatusCode::CREATED, &view))
}

#[utoipa::path(put, path = "/api/v1/replication/registries/{name}", tag = "replication",
    params(("name" = String, Path)), request_body = RegistrySpec,
    responses((status = 200, description = "Replaced; a password left out is kept", body = RegistryView),
        (status = 400, body = super::ErrorBody), (status = 404, body = super::ErrorBody)))]
pub async fn replace_registry(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = admin(&registry, &caller).await?;
    let spec: RegistrySpec = parse_body(&body)?;
    if spec.name != name {
        return Err(bad_request("the body names another registry").into());
    }
    let view = replication(&registry)?.put_registry(spec, false).await?;
    audit(&registry, &caller, &principal, "replication.registry.update", &view.name, format!("url={}", view.url)).await;
    Ok(json(StatusCode::OK, &view))
}

#[utoipa::path(delete, path = "/api/v1/replication/registries/{name}", tag = "replication",
    params(("name" = String, Path)),
    responses((status = 204), (status = 404, body = super::ErrorBody),
        (status = 409, description = "Rules still use it: the message names them", body = super::ErrorBody)))]
pub async fn delete_registry(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = admin(&registry, &caller).await?;
    if !replication(&registry)?.delete_registry(&name).await? {
        return Err(unknown("registry", &name).into());
    }
    audit(&registry, &caller, &principal, "replication.registry.delete", &name, String::new()).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(get, path = "/api/v1/replication/rules", tag = "replication",
    responses((status = 200, body = [RuleView]), (status = 403, body = super::ErrorBody)))]
pub async fn rules(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    admin(&registry, &caller).await?;
    Ok(json(StatusCode::OK, &replication(&registry)?.rules().await?))
}

#[utoipa::path(get, path = "/api/v1/replication/rules/{name}", tag = "replication", params(("name" = String, Path)),
    responses((status = 200, body = RuleView), (status = 404, body = super::ErrorBody)))]
pub async fn get_rule(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    admin(&registry, &caller).await?;
    let all = replication(&registry)?.rules().await?;
    Ok(json(StatusCode::OK, &all.into_iter().find(|r| r.name == name).ok_or_else(|| unknown("rule", &name))?))
}

/// A rule's audit detail: where it copies what.
fn rule_detail(view: &RuleView) -> String {
    format!("registry={} project={} on_event={} enabled={}", view.registry, view.project, view.on_event, view.enabled)
}

/// The rule's project must exist.
async fn check_project(registry: &Registry, spec: &RuleSpec) -> Result<(), Error> {
    registry.identity.project(&spec.project).await?.map(|_| ()).ok_or_else(|| unknown("project", &spec.project))
}

#[utoipa::path(post, path = "/api/v1/replication/rules", tag = "replication", request_body = RuleSpec,
    responses((status = 201, body = RuleView), (status = 400, body = super::ErrorBody),
        (status = 404, description = "No such project or registry", body = super::ErrorBody),
        (status = 409, body = super::ErrorBody)))]
pub async fn create_rule(State(registry): State<Arc<Registry>>, caller: Caller, body: Bytes) -> Reply {
    let principal = admin(&registry, &caller).await?;
    let spec: RuleSpec = parse_body(&body)?;
    check_project(&registry, &spec).await?;
    let view = replication(&registry)?.put_rule(spec, true).await?;
    audit(&registry, &caller, &principal, "replication.rule.create", &view.name, rule_detail(&view)).await;
    Ok(json(StatusCode::CREATED, &view))
}

#[utoipa::path(put, path = "/api/v1/replication/rules/{name}", tag = "replication", params(("name" = String, Path)),
    request_body = RuleSpec,
    responses((status = 200, body = RuleView), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn replace_rule(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = admin(&registry, &caller).await?;
    let spec: RuleSpec = parse_body(&body)?;
    if spec.name != name {
        return Err(bad_request("the body names another rule").into());
    }
    check_project(&registry, &spec).await?;
    let view = replication(&registry)?.put_rule(spec, false).await?;
    audit(&registry, &caller, &principal, "replication.rule.update", &view.name, rule_detail(&view)).await;
    Ok(json(StatusCode::OK, &view))
}

#[utoipa::path(delete, path = "/api/v1/replication/rules/{name}", tag = "replication", params(("name" = String, Path)),
    responses((status = 204, description = "Gone, with its executions"), (status = 404, body = super::ErrorBody)))]
pub async fn delete_rule(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = admin(&registry, &caller).await?;
    if !replication(&registry)?.delete_rule(&name).await? {
        return Err(unknown("rule", &name).into());
    }
    audit(&registry, &caller, &principal, "replication.rule.delete", &name, String::new()).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

#[utoipa::path(post, path = "/api/v1/replication/rules/{name}/run", tag = "replication", params(("name" = String, Path)),
    responses((status = 201, description = "An execution copying everything the rule matches, started", body = ExecutionView),
        (status = 404, body = super::ErrorBody)))]
pub async fn run(State(registry): State<Arc<Registry>>, caller: Caller, Path(name): Path<String>) -> Reply {
    let principal = admin(&registry, &caller).await?;
    let execution = replication(&registry)?.run(&name).await?;
    let detail = format!("execution={} tasks={}", execution.id, execution.total);
    audit(&registry, &caller, &principal, "replication.run", &name, detail).await;
    Ok(json(StatusCode::CREATED, &ExecutionView::from(&execution)))
}

#[utoipa::path(get, path = "/api/v1/replication/executions", tag = "replication", params(ExecutionPage),
    responses((status = 200, description = "Newest first", body = [ExecutionView])))]
pub async fn executions(State(registry): State<Arc<Registry>>, caller: Caller) -> Reply {
    admin(&registry, &caller).await?;
    let limit = limit(&caller)?;
    let rule = caller.param("rule");
    let store = replication(&registry)?.store();
    let mut page = store.executions(rule.as_deref(), caller.number("before")?, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let views: Vec<ExecutionView> = page.iter().map(ExecutionView::from).collect();
    let mut response = json(StatusCode::OK, &views);
    if let (true, Some(last)) = (more, page.last()) {
        let mut next = form_urlencoded::Serializer::new(String::new());
        if let Some(rule) = &rule {
            next.append_pair("rule", rule);
        }
        next.append_pair("limit", &limit.to_string()).append_pair("before", &last.id.to_string());
        next_link(&mut response, &format!("/api/v1/replication/executions?{}", next.finish()));
    }
    Ok(response)
}

#[utoipa::path(get, path = "/api/v1/replication/executions/{id}", tag = "replication", params(("id" = i64, Path)),
    responses((status = 200, body = ExecutionView), (status = 404, body = super::ErrorBody)))]
pub async fn execution(State(registry): State<Arc<Registry>>, caller: Caller, Path(id): Path<String>) -> Reply {
    admin(&registry, &caller).await?;
    let id = execution_id(&id)?;
    let found = replication(&registry)?.store().execution(id).await?;
    let execution = found.ok_or_else(|| unknown("execution", &id.to_string()))?;
    Ok(json(StatusCode::OK, &ExecutionView::from(&execution)))
}

#[utoipa::path(get, path = "/api/v1/replication/executions/{id}/tasks", tag = "replication",
    params(("id" = i64, Path), TaskPage),
    responses((status = 200, description = "In the order they run", body = [TaskView]),
        (status = 404, body = super::ErrorBody)))]
pub async fn tasks(State(registry): State<Arc<Registry>>, caller: Caller, Path(id): Path<String>) -> Reply {
    admin(&registry, &caller).await?;
    let id = execution_id(&id)?;
    let limit = limit(&caller)?;
    let store = replication(&registry)?.store();
    store.execution(id).await?.ok_or_else(|| unknown("execution", &id.to_string()))?;
    let mut page = store.tasks(id, caller.number("after")?, limit + 1).await?;
    let more = page.len() > limit as usize;
    page.truncate(limit as usize);
    let views: Vec<TaskView> = page.iter().map(TaskView::from).collect();
    let mut response = json(StatusCode::OK, &views);
    if let (true, Some(last)) = (more, page.last()) {
        let target = format!("/api/v1/replication/executions/{id}/tasks?limit={limit}&after={}", last.id);
        next_link(&mut response, &target);
    }
    Ok(response)
}
