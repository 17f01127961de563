//! Identity and access over HTTP: the challenge, `/token`, bearer and Basic credentials,
//! the attacks a token service must refuse (each with its exact error), brute-force
//! limits and the filtered catalog. Users, memberships and robots are made through the
//! identity store on the server's own database (the management API is another slice's),
//! and every request a test makes carries credentials unless the test is about having none.

use std::sync::Arc;

use berth_access::password;
use berth_core::access::{Permission, Role};
use berth_meta::{AuditStore, IdentityStore, PgStore, Robot, RobotGrant, SqliteStore, UserUpdate};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};

use crate::support::{TestServer, admin};

mod attacks;
mod flow;
mod grants;
mod lifetimes;
mod matrix;
mod secrets;

pub const PASSWORD: &str = "correct horse battery staple";

/// A server with an admin and the identity store of its database, opened by the test.
pub struct Setup {
    pub server: TestServer,
    pub store: Arc<dyn IdentityStore>,
    pub audit: Arc<dyn AuditStore>,
    pub http: reqwest::Client,
}

impl Setup {
    pub async fn start() -> Setup {
        Setup::start_with(|_| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut berth::Config)) -> Setup {
        let server = TestServer::start_with(|c| {
            // The harness's admin password (`support::admin`) is set already.
            c.auth.auto_create_projects = true;
            configure(c);
        });
        let (store, audit): (Arc<dyn IdentityStore>, Arc<dyn AuditStore>) = match &server.backend().scaleout {
            Some(s) => {
                let db = PgStore::open(&s.database).await.unwrap();
                (Arc::new(db.clone()), Arc::new(db))
            }
            None => {
                let db = SqliteStore::open(&server.data_dir().join("berth.db")).await.unwrap();
                (Arc::new(db.clone()), Arc::new(db))
            }
        };
        Setup { server, store, audit, http: reqwest::Client::builder().no_proxy().build().unwrap() }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A user with [`PASSWORD`] and `role` in each of `projects` (created private if
    /// missing).
    pub async fn user(&self, name: &str, roles: &[(&str, Role)]) {
        let hash = password::hash_blocking(PASSWORD.into()).await.unwrap();
        self.store.create_user(name, &hash, false).await.unwrap();
        for (project, role) in roles {
            if self.store.project(project).await.unwrap().is_none() {
                self.store.create_project(project, false).await.unwrap();
            }
            self.store.set_member(project, name, *role).await.unwrap();
        }
    }

    /// A robot with secret [`PASSWORD`] and `permissions` in `project`.
    pub async fn robot(&self, name: &str, project: &str, permissions: &[Permission], expires_at: Option<i64>) {
        let robot = Robot {
            name: name.into(),
            description: String::new(),
            secret_hash: Some(password::hash_blocking(PASSWORD.into()).await.unwrap()),
            disabled: false,
            expires_at,
            grants: vec![RobotGrant { project: project.into(), permissions: permissions.to_vec() }],
            trust: None,
            created_by: "admin".into(),
            created_at: 0,
            updated_at: 0,
        };
        self.store.create_robot(&robot).await.unwrap();
    }

    pub async fn disable(&self, user: &str) {
        let update = UserUpdate { disabled: Some(true), ..UserUpdate::default() };
        self.store.update_user(user, &update).await.unwrap();
    }

    /// `GET /token` for `scopes`, as `user` (Basic, password [`PASSWORD`] or the admin's)
    /// or anonymously; the whole answer.
    pub async fn get_token(&self, user: Option<&str>, query: &str) -> Response {
        let r = self.req(Method::GET, &format!("/token?service=berth&{query}"));
        let r = match user {
            Some("admin") => r.basic_auth("admin", Some(admin().password)),
            Some(name) => r.basic_auth(name, Some(PASSWORD)),
            None => r,
        };
        r.send().await.unwrap()
    }

    /// `POST /token` with the form `pairs` (OAuth2).
    pub async fn post_token(&self, pairs: &[(&str, &str)]) -> Response {
        let form = form_urlencoded::Serializer::new(String::new()).extend_pairs(pairs).finish();
        let r = self.req(Method::POST, "/token").header("content-type", "application/x-www-form-urlencoded");
        r.body(form).send().await.unwrap()
    }

    /// A token for `scope` as `user`; panics unless one is issued.
    pub async fn token(&self, user: Option<&str>, scope: &str) -> String {
        let r = self.get_token(user, &format!("scope={scope}")).await;
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().await.unwrap();
        body["token"].as_str().unwrap().to_owned()
    }

    /// Pushes a one-blob image `repo:tag` with `auth`; returns the manifest's status.
    pub async fn push(&self, auth: &Auth, repo: &str, tag: &str) -> Response {
        let config = format!("{{\"repo\":\"{repo}\",\"tag\":\"{tag}\"}}");
        let digest = crate::api::sha256(config.as_bytes());
        let r = auth
            .on(self.req(Method::POST, &format!("/v2/{repo}/blobs/uploads/?digest={digest}")))
            .body(config.clone())
            .send()
            .await
            .unwrap();
        if r.status() != StatusCode::CREATED {
            return r;
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": config.len() },
            "layers": []
        });
        auth.on(self.req(Method::PUT, &format!("/v2/{repo}/manifests/{tag}")))
            .header("content-type", "application/vnd.oci.image.manifest.v1+json")
            .body(manifest.to_string())
            .send()
            .await
            .unwrap()
    }

    pub async fn push_as_admin(&self, repo: &str, tag: &str) {
        let r = self.push(&Auth::admin(), repo, tag).await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
    }

    /// `GET /v2/{repo}/manifests/{tag}` with `auth`.
    pub async fn pull(&self, auth: &Auth, repo: &str, tag: &str) -> Response {
        let r = self.req(Method::GET, &format!("/v2/{repo}/manifests/{tag}"));
        auth.on(r.header("accept", "application/vnd.oci.image.manifest.v1+json")).send().await.unwrap()
    }

    /// `Bearer realm="http://127.0.0.1:PORT/token",service="berth"`, then `rest`.
    pub fn challenge(&self, rest: &str) -> String {
        format!("Bearer realm=\"{}/token\",service=\"berth\"{rest}", self.server.url())
    }
}

/// How a request authenticates.
pub enum Auth {
    Anonymous,
    Basic(String, String),
    Bearer(String),
}

impl Auth {
    /// The harness's system administrator.
    pub fn admin() -> Auth {
        let admin = admin();
        Auth::Basic(admin.user, admin.password)
    }

    pub fn user(name: &str) -> Auth {
        Auth::Basic(name.into(), PASSWORD.into())
    }

    pub fn on(&self, r: RequestBuilder) -> RequestBuilder {
        match self {
            Auth::Anonymous => r,
            Auth::Basic(name, password) => r.basic_auth(name, Some(password)),
            Auth::Bearer(token) => r.bearer_auth(token),
        }
    }
}

/// The claims of a JWT the server issued, read without verifying it.
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

/// Asserts `r` is `status` with the single error `code` and `message`; returns the
/// `WWW-Authenticate` header, if any.
pub async fn assert_error(r: Response, status: StatusCode, code: &str, message: &str) -> Option<String> {
    assert_eq!(r.status(), status);
    let challenge = r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], code, "{body}");
    assert_eq!(body["errors"][0]["message"], message, "{body}");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    challenge
}
