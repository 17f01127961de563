//! What every `/v2` handler gets besides its endpoint ([`Ctx`]): the registry, the
//! request's method, headers, query and peer, and the one way to authorize
//! ([`Ctx::authorize`], which also feeds the access log and audits refusals).

use std::sync::Arc;

use axum::http::Method;
use berth_access::{Access, Principal};
use berth_core::access::project_of;
use berth_core::{Error, ErrorKind, Reference, RepoName};
use berth_federation::{Federation, Via};
use berth_meta::AuditEvent;

use crate::state::Registry;
use crate::{seam, track};

/// What every handler gets besides its endpoint.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) registry: &'a Arc<Registry>,
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a axum::http::HeaderMap,
    pub(crate) query: Option<&'a str>,
    /// The client's address (`None` when served without [`listen::serve`]).
    pub(crate) peer: Option<std::net::IpAddr>,
    /// Where the access log learns who the request was authorized as.
    pub(crate) principal: Option<&'a track::PrincipalSlot>,
}

impl<'a> Ctx<'a> {
    pub(crate) async fn authorize(&self, access: Access<'_>) -> Result<Principal, Error> {
        self.authorize_also(access, &[]).await
    }

    /// [`Ctx::authorize`], a refusal's challenge naming `also` too ([`Authorizer::authorize_also`]).
    pub(crate) async fn authorize_also(&self, access: Access<'_>, also: &[Access<'_>]) -> Result<Principal, Error> {
        let credentials = seam::credentials(self.headers, self.peer);
        let result = self.registry.auth.authorize_also(credentials, access, also).await;
        track::authorized(self.registry, self.principal, self.headers, &result);
        if let Err(e) = &result {
            seam::audit_refusal(self.registry, &credentials, access, e).await;
        }
        result
    }

    /// The first value of query parameter `key`.
    pub(crate) fn param(&self, key: &str) -> Option<String> {
        self.params(key).into_iter().next()
    }

    /// Every value of query parameter `key`, in order.
    pub(crate) fn params(&self, key: &str) -> Vec<String> {
        form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
            .collect()
    }

    /// One of the `max_uploads` permits, for a request carrying upload bytes (a
    /// monolithic `POST`, `PATCH`, the closing `PUT`), held until its handler is done (or
    /// dropped with the request); past them, 429. Taken once the request is authorized, so
    /// that callers still being authorized (a password hashing) hold none.
    pub(crate) fn upload_permit(&self) -> Result<tokio::sync::SemaphorePermit<'a>, Error> {
        self.registry
            .uploads
            .try_acquire()
            .map_err(|_| Error::new(ErrorKind::TooManyRequests).with_message("too many uploads in flight; retry later"))
    }

    /// The cache and the upstream `repo` caches, when it is in a proxy project.
    pub(crate) fn proxy(&self, repo: &RepoName) -> Option<(&'a Arc<Federation>, Via)> {
        let federation: &'a Arc<Federation> = self.registry.federation.as_ref()?;
        Some((federation, federation.proxy(repo)?))
    }

    /// Refuses a write into a proxy project (after the caller was authorized for it).
    pub(crate) fn check_writable(&self, repo: &RepoName) -> Result<(), Error> {
        match &self.registry.federation {
            Some(federation) => federation.check_writable(repo),
            None => Ok(()),
        }
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl<'a> Ctx<'a> {
    /// Records what `principal` did to `repo` (`reference` names the object), from this
    /// request's address, with the outcome `result` says (an error's code is the detail
    /// of a failure; `detail` that of a success). The event is made before the returned
    /// future runs, which only enqueues it.
    pub(crate) fn audit<T>(
        self,
        principal: &Principal,
        operation: &str,
        repo: &RepoName,
        reference: &Reference,
        result: &Result<T, Error>,
        detail: Option<String>,
    ) -> impl Future<Output = ()> + Send + 'a {
        let resource = match reference {
            Reference::Tag(t) => format!("{repo}:{t}"),
            Reference::Digest(d) => format!("{repo}@{d}"),
        };
        let (outcome, detail) = match result {
            Ok(_) => ("success", detail),
            // A policy's refusal (an immutable tag, a quota) says which and why.
            Err(e) if e.kind == ErrorKind::Denied && e.message.is_some() => ("failure", Some(e.message().to_owned())),
            Err(e) => ("failure", Some(e.code().to_owned())),
        };
        let event = AuditEvent {
            at_ms: berth_meta::now_ms(),
            actor: principal.name().map(str::to_owned),
            address: self.peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            operation: operation.to_owned(),
            project: Some(project_of(repo).to_owned()),
            resource: Some(resource),
            outcome: outcome.to_owned(),
            detail,
            count: 1,
        };
        let registry: &'a Registry = self.registry;
        // A quota's refusal is an event for the project's webhooks too.
        if let Err(e) = result
            && let Some(project) = berth_meta::policy::quota_refused(e)
            && let Some(webhooks) = registry.federation.as_ref().and_then(|f| f.webhooks.clone())
        {
            let (project, repo, message) = (project.to_owned(), repo.to_string(), e.message().to_owned());
            tokio::spawn(async move { webhooks.quota_exceeded(&project, &repo, &message).await });
        }
        registry.jobs.audit.record(event)
    }
}
