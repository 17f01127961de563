//! The management API under `/api/v1`: users, projects, members, robots, the audit log,
//! per-project listings (what a UI needs), retention policies, webhooks, upstreams, replication
//! and garbage collection, as JSON, and its OpenAPI document.
//!
//! Not the registry protocol (that is `/v2`, `v2.rs`). Every handler
//! authorizes through the same seam as `/v2` ([`berth_access::Authorizer`]) before touching a
//! store, and every error is the registry's error JSON (`response.rs`). Secrets
//! (passwords, robot secrets, hashes) never appear in a response, except a robot's
//! secret in the one response that creates or rotates it.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_core::{Error, ErrorKind};
use berth_meta::AuditEvent;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::OpenApi;

use crate::listen;
use crate::response::ApiError;
use crate::state::Registry;
use berth_access::{Access, Principal};

mod audit;
mod gc;
mod keys;
mod listings;
mod members;
mod policies;
mod projects;
mod replication;
mod repositories;
mod retention;
mod robots;
mod scrub;
mod system;
mod upstreams;
mod users;
mod webhooks;

/// Every route: (method, path under `/api/v1`), and the router serving them. The
/// OpenAPI document must list exactly these (a test checks it).
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        fn routes() -> Router<Arc<Registry>> {
            let mut router = Router::new();
            $( router = router.route($path, axum::routing::$method($handler)); )*
            router
        }
    };
}

routes! {
    get "/me" => users::me,
    get "/users" => users::list,
    post "/users" => users::create,
    get "/users/{name}" => users::get,
    patch "/users/{name}" => users::update,
    put "/users/{name}/password" => users::password,
    get "/projects" => projects::list,
    post "/projects" => projects::create,
    get "/projects/{project}" => projects::get,
    patch "/projects/{project}" => projects::update,
    delete "/projects/{project}" => projects::delete,
    get "/projects/{project}/immutable-rules" => policies::list,
    post "/projects/{project}/immutable-rules" => policies::add,
    delete "/projects/{project}/immutable-rules/{pattern}" => policies::remove,
    get "/projects/{project}/members" => members::list,
    put "/projects/{project}/members/{user}" => members::set,
    delete "/projects/{project}/members/{user}" => members::remove,
    get "/projects/{project}/robots" => robots::list_in_project,
    post "/projects/{project}/robots" => robots::create_in_project,
    get "/projects/{project}/repositories" => listings::repositories,
    get "/projects/{project}/retention" => retention::get,
    put "/projects/{project}/retention" => retention::set,
    delete "/projects/{project}/retention" => retention::remove,
    post "/projects/{project}/retention/run" => retention::run,
    get "/projects/{project}/webhooks" => webhooks::list,
    post "/projects/{project}/webhooks" => webhooks::create,
    get "/projects/{project}/webhooks/{name}" => webhooks::get,
    put "/projects/{project}/webhooks/{name}" => webhooks::replace,
    delete "/projects/{project}/webhooks/{name}" => webhooks::delete,
    post "/projects/{project}/webhooks/{name}/test" => webhooks::test,
    get "/projects/{project}/webhooks/{name}/deliveries" => webhooks::deliveries,
    delete "/repositories/{name}" => repositories::delete,
    get "/repositories/{name}/tags" => listings::tags,
    get "/repositories/{name}/artifacts" => listings::artifacts,
    get "/robots" => robots::list,
    post "/robots" => robots::create,
    get "/robots/{name}" => robots::get,
    patch "/robots/{name}" => robots::update,
    delete "/robots/{name}" => robots::delete,
    post "/robots/{name}/secret" => robots::rotate,
    get "/audit" => audit::query,
    get "/signing-keys" => keys::list,
    post "/signing-keys" => keys::rotate,
    delete "/signing-keys/{kid}" => keys::revoke,
    post "/scrub/runs" => scrub::start,
    get "/scrub/runs" => scrub::list,
    get "/scrub/runs/{id}" => scrub::get,
    get "/system/read-only" => system::get_read_only,
    put "/system/read-only" => system::put_read_only,
    get "/upstreams" => upstreams::list,
    post "/upstreams" => upstreams::create,
    get "/upstreams/{name}" => upstreams::get,
    put "/upstreams/{name}" => upstreams::replace,
    delete "/upstreams/{name}" => upstreams::delete,
    get "/replication/registries" => replication::registries,
    post "/replication/registries" => replication::create_registry,
    get "/replication/registries/{name}" => replication::get_registry,
    put "/replication/registries/{name}" => replication::replace_registry,
    delete "/replication/registries/{name}" => replication::delete_registry,
    get "/replication/rules" => replication::rules,
    post "/replication/rules" => replication::create_rule,
    get "/replication/rules/{name}" => replication::get_rule,
    put "/replication/rules/{name}" => replication::replace_rule,
    delete "/replication/rules/{name}" => replication::delete_rule,
    post "/replication/rules/{name}/run" => replication::run,
    get "/replication/executions" => replication::executions,
    get "/replication/executions/{id}" => replication::execution,
    get "/replication/executions/{id}/tasks" => replication::tasks,
    post "/gc" => gc::run,
    get "/gc/runs" => gc::runs,
    get "/openapi.json" => openapi,
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Berth management API",
        version = "1",
        description = "Users, projects, members, robot accounts, the audit log and listings. \
            Authenticate with HTTP Basic (a user's or robot's name and password) or a bearer token \
            from /token. Errors are `{\"errors\":[{\"code\",\"message\"}]}` with the status of the \
            registry's error table. Pages: `n` and `last` (or `limit` and `before` for the audit \
            log); a `Link: <…>; rel=\"next\"` header points to the next page."
    ),
    paths(
        users::me,
        users::list,
        users::create,
        users::get,
        users::update,
        users::password,
        projects::list,
        projects::create,
        projects::get,
        projects::update,
        projects::delete,
        policies::list,
        policies::add,
        policies::remove,
        members::list,
        members::set,
        members::remove,
        robots::list_in_project,
        robots::create_in_project,
        robots::list,
        robots::create,
        robots::get,
        robots::update,
        robots::delete,
        robots::rotate,
        listings::repositories,
        repositories::delete,
        listings::tags,
        listings::artifacts,
        retention::get,
        retention::set,
        retention::remove,
        retention::run,
        webhooks::list,
        webhooks::create,
        webhooks::get,
        webhooks::replace,
        webhooks::delete,
        webhooks::test,
        webhooks::deliveries,
        audit::query,
        keys::list,
        keys::rotate,
        keys::revoke,
        scrub::start,
        scrub::list,
        scrub::get,
        system::get_read_only,
        system::put_read_only,
        upstreams::list,
        upstreams::create,
        upstreams::get,
        upstreams::replace,
        upstreams::delete,
        replication::registries,
        replication::create_registry,
        replication::get_registry,
        replication::replace_registry,
        replication::delete_registry,
        replication::rules,
        replication::create_rule,
        replication::get_rule,
        replication::replace_rule,
        replication::delete_rule,
        replication::run,
        replication::executions,
        replication::execution,
        replication::tasks,
        gc::run,
        gc::runs,
        openapi,
    ),
    components(schemas(ErrorBody, ErrorEntry)),
    modifiers(&Security)
)]
pub struct ApiDoc;

/// The document's security schemes: Basic (a user's or robot's password) or a bearer
/// token from `/token`, either on every operation.
struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        components.add_security_scheme("bearer", SecurityScheme::Http(bearer));
        let none: [&str; 0] = [];
        openapi.security =
            Some(vec![SecurityRequirement::new("basic", none), SecurityRequirement::new("bearer", none)]);
    }
}

/// The API's router, mounted at `/api/v1` by [`crate::app`].
pub fn router() -> Router<Arc<Registry>> {
    routes()
        .method_not_allowed_fallback(|| async { ApiError(Error::new(ErrorKind::MethodNotAllowed)) })
        .fallback(|| async { ApiError(Error::new(ErrorKind::NotFound)) })
}

/// In read-only mode every management write is refused, except the one that turns
/// read-only mode off (or on).
pub(crate) async fn refuse_writes_when_read_only(
    State(registry): State<Arc<Registry>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let reads = matches!(*request.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    if !reads
        && registry.read_only.load(std::sync::atomic::Ordering::Relaxed)
        && !request.uri().path().ends_with("/system/read-only")
    {
        return ApiError(Error::new(ErrorKind::ReadOnly)).into_response();
    }
    next.run(request).await
}

/// The OpenAPI 3 document of this API.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json")))]
pub async fn openapi() -> Response {
    let doc = ApiDoc::openapi().to_json().expect("the OpenAPI document serializes");
    ([(header::CONTENT_TYPE, "application/json")], doc).into_response()
}

/// The error body every failed request gets (documentation only: `response.rs` renders it).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorBody {
    errors: Vec<ErrorEntry>,
}

#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ErrorEntry {
    /// `BAD_REQUEST`, `UNAUTHORIZED`, `DENIED`, `NOT_FOUND`, `CONFLICT`, …
    code: String,
    message: String,
}

type Reply = Result<Response, ApiError>;

/// The request as authorization and paging see it.
pub(crate) struct Caller {
    headers: HeaderMap,
    peer: Option<IpAddr>,
    query: Option<String>,
    /// Where the access log learns who the request was authorized as.
    principal: Option<crate::track::PrincipalSlot>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, Infallible> {
        Ok(Caller {
            headers: parts.headers.clone(),
            peer: parts.extensions.get::<listen::PeerAddr>().map(|p| p.0.ip()),
            query: parts.uri.query().map(str::to_owned),
            principal: parts.extensions.get::<crate::track::PrincipalSlot>().cloned(),
        })
    }
}

impl Caller {
    async fn authorize(&self, registry: &Registry, access: Access<'_>) -> Result<Principal, Error> {
        let credentials = crate::seam::credentials(&self.headers, self.peer);
        let result = registry.auth.authorize(credentials, access).await;
        if let Err(e) = &result {
            crate::seam::audit_refusal(registry, &credentials, access, e).await;
        }
        crate::track::authorized(registry, self.principal.as_ref(), &self.headers, &result);
        result
    }

    /// Records a change the caller made, once it succeeded: who, from where, what (a
    /// name, a role, a permission: never a secret). Every management change comes here,
    /// so a change to who may do what also tells every node's authorizer from here
    /// ([`Change::altered_access`]).
    async fn audit(&self, registry: &Registry, principal: &Principal, change: Change<'_>) {
        if let Some(altered) = change.altered_access() {
            crate::system::access_changed(registry, altered).await;
        }
        let event = AuditEvent {
            at_ms: berth_meta::now_ms(),
            actor: principal.name().map(str::to_owned),
            address: self.peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            operation: change.operation.to_owned(),
            project: change.project.map(str::to_owned),
            resource: Some(change.resource.to_owned()),
            outcome: "success".to_owned(),
            detail: change.detail,
            count: 1,
        };
        registry.jobs.audit.record(event).await;
    }

    /// The first value of query parameter `key`.
    fn param(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.query.as_deref().unwrap_or("").as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }

    /// Query parameter `key` as a number; a malformed one is a 400 naming it.
    fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, Error> {
        self.param(key)
            .map(|v| v.parse().map_err(|_| bad_request(format!("query parameter {key} must be a number"))))
            .transpose()
    }

    fn page(&self) -> Result<Paging, Error> {
        let n = self.number::<u32>("n")?.unwrap_or(DEFAULT_PAGE);
        if n == 0 || n > MAX_PAGE {
            return Err(bad_request(format!("n must be between 1 and {MAX_PAGE}")));
        }
        Ok(Paging { n, last: self.param("last") })
    }
}

/// A change to users, projects, members or robots, for the audit log.
struct Change<'a> {
    /// `user.create`, `project.delete`, `member.set`, `robot.rotate`, …
    operation: &'static str,
    project: Option<&'a str>,
    /// The user's, project's or robot's name.
    resource: &'a str,
    detail: Option<String>,
}

impl Change<'_> {
    /// What the change can alter of what callers may do: a user's or robot's account or
    /// memberships (the resource of `user.`, `robot.` and `member.` changes), or a
    /// project's existence or visibility.
    fn altered_access(&self) -> Option<berth_access::auth::AccessChange<'_>> {
        use berth_access::auth::AccessChange::{Account, Project};
        match self.operation.split_once('.')?.0 {
            "user" | "robot" | "member" => Some(Account(self.resource)),
            "project" => Some(Project(self.resource)),
            _ => None,
        }
    }
}

/// Items in a page unless the client says otherwise, and at most.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1000;

/// `n` and `last`: at most `n` items sorted by key, after the key `last`.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct Paging {
    /// At most this many items (1–1000, default 100).
    n: u32,
    /// Items after this key (the last key of the previous page).
    last: Option<String>,
}

impl Paging {
    /// Renders `items` (fetched with a limit of `n + 1`, so that one more says another
    /// page follows) as a JSON array, with a `Link` to the next page.
    fn respond<T, V>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str, path: &str) -> Response
    where
        V: Serialize + for<'a> From<&'a T>,
    {
        let more = items.len() > self.n as usize;
        items.truncate(self.n as usize);
        let views: Vec<V> = items.iter().map(V::from).collect();
        let mut response = json(StatusCode::OK, &views);
        if let (true, Some(last)) = (more, items.last()) {
            self.link_after(&mut response, path, key(last));
        }
        response
    }

    /// Adds the `Link` to the page of `path` after `last`.
    fn link_after(&self, response: &mut Response, path: &str, last: &str) {
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("n", &self.n.to_string())
            .append_pair("last", last)
            .finish();
        next_link(response, &format!("{path}?{query}"));
    }
}

/// Adds `Link: <target>; rel="next"`.
fn next_link(response: &mut Response, target: &str) {
    if let Ok(value) = HeaderValue::from_str(&format!("<{target}>; rel=\"next\"")) {
        response.headers_mut().insert(header::LINK, value);
    }
}

fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).expect("API views serialize");
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// A request body as `T`; what is wrong with it is a 400. String values are cut out of
/// the message: a misplaced password must not come back in an error (or reach a log).
/// A string holding a control character (but tab, line feed, carriage return) is a 400
/// too (`text.rs`).
fn parse_body<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| invalid_body(&e))?;
    crate::text::check_json(&value)?;
    serde_json::from_value(value).map_err(|e| invalid_body(&e))
}

fn invalid_body(e: &serde_json::Error) -> Error {
    let mut message = String::new();
    let mut quoted = false;
    for c in e.to_string().chars() {
        match (c, quoted) {
            ('"', false) => (quoted, message) = (true, message + "\"…"),
            ('"', true) => (quoted, message) = (false, message + "\""),
            (c, false) => message.push(c),
            (_, true) => {}
        }
    }
    bad_request(format!("invalid request body: {message}"))
}

fn bad_request(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

fn unknown(what: &str, name: &str) -> Error {
    Error::new(ErrorKind::ResourceUnknown).with_message(format!("no {what} named {name:?}"))
}

/// A name of a user, a project or a robot's own part: lowercase letters and digits,
/// separated by single `.`, `_` or `-`, at most 64 characters (a project name is then
/// also a valid first component of a repository name).
fn check_name(what: &str, name: &str) -> Result<(), Error> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
    if valid {
        Ok(())
    } else {
        Err(bad_request(format!(
            "invalid {what} name {name:?}: lowercase letters and digits separated by single '.', '_' or '-', \
             at most 64 characters"
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let documented: BTreeSet<(String, String)> = doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .flat_map(|(path, item)| item.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
            .collect();
        let served: BTreeSet<(String, String)> =
            ROUTES.iter().map(|(m, p)| (m.to_string(), format!("/api/v1{p}"))).collect();
        assert_eq!(documented, served);
        let schemes = &doc["components"]["securitySchemes"];
        assert_eq!((&schemes["basic"]["scheme"], &schemes["bearer"]["scheme"]), (&"basic".into(), &"bearer".into()));
    }

    #[test]
    fn names_are_lowercase_components() {
        for good in ["team", "a", "ci-bot", "a.b_c-d", "x1"] {
            assert!(check_name("test", good).is_ok(), "{good}");
        }
        for bad in ["", "Team", "a..b", "-a", "a-", "robot$x", "a/b", "a+b", &"x".repeat(65)] {
            assert_eq!(check_name("test", bad).unwrap_err().kind, ErrorKind::BadRequest, "{bad}");
        }
    }

    #[test]
    fn a_malformed_body_is_a_bad_request_that_does_not_echo_string_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            admin: bool,
        }
        let e = parse_body::<T>(br#"{"admin":"hunter2-secret"}"#).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest);
        assert!(!e.message().contains("hunter2"), "{}", e.message());
        assert!(e.message().contains("expected a boolean"), "{}", e.message());
    }
}
