//! Which requests the cache serves: a repository of a proxy project (the prefix form,
//! [`Federation::proxy`]), and a mirror request ([`Federation::mirror`]) that names the
//! upstream's repository itself and is routed to the proxy project of the upstream it
//! means: the one whose mirror hosts hold the request's `ns` (containerd), or, without
//! `ns` (docker's `registry-mirrors`), the default upstream, when no repository of
//! that name exists here.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_core::access::project_of;
use berth_core::{Error, RepoName};

use crate::service::{Federation, Proxy};

/// How long an answer of [`Federation::exists_here`] is kept.
pub(crate) const EXISTS_TTL: Duration = Duration::from_secs(5);
/// At most this many answers are kept.
pub(crate) const EXISTS_ENTRIES: usize = 16_384;

/// A proxy repository's upstream, and the upstream's name for the repository.
#[derive(Clone)]
pub struct Via {
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) remote: String,
}

impl Via {
    /// The upstream's name.
    pub fn upstream(&self) -> &str {
        &self.proxy.upstream.name
    }
}

impl Federation {
    /// The upstream `repo` caches, when its project is a proxy project. No I/O.
    pub fn proxy(&self, repo: &RepoName) -> Option<Via> {
        let snapshot = self.snapshot();
        if snapshot.by_project.is_empty() {
            return None;
        }
        let project = project_of(repo);
        let proxy = snapshot.by_project.get(project)?;
        let rest = repo.as_str().strip_prefix(project).and_then(|r| r.strip_prefix('/')).unwrap_or(repo.as_str());
        // Docker Hub's official images: `hub/nginx` is `library/nginx` there.
        let remote =
            if proxy.upstream.short_names && !rest.contains('/') { format!("library/{rest}") } else { rest.to_owned() };
        Some(Via { proxy: Arc::clone(proxy), remote })
    }

    /// Whether a repository named `name` exists here, as found at most [`EXISTS_TTL`] ago
    /// on this node: the default route asks it on every pull of a name without a proxy
    /// prefix, so the answer is kept (a repository pushed or deleted meanwhile is seen
    /// within that time; the table is emptied when it holds [`EXISTS_ENTRIES`]).
    async fn exists_here(&self, name: &RepoName) -> Result<bool, Error> {
        let now = Instant::now();
        if let Some((exists, at)) = self.exists.read().unwrap().get(name)
            && now.duration_since(*at) < EXISTS_TTL
        {
            return Ok(*exists);
        }
        let exists = self.jobs.meta.repo_exists(name).await?;
        let mut table = self.exists.write().unwrap();
        if table.len() >= EXISTS_ENTRIES {
            table.clear();
        }
        table.insert(name.clone(), (exists, now));
        Ok(exists)
    }

    /// The proxy repository a pull of `requested` goes to when it is a mirror request,
    /// `None` when it is an ordinary one. `ns` is the request's `ns` parameter. Without
    /// `ns`, a name that exists here is always served from here (one query, made only
    /// when a default upstream is configured).
    pub async fn mirror(&self, requested: &RepoName, ns: Option<&str>) -> Result<Option<RepoName>, Error> {
        let snapshot = self.snapshot();
        let proxy = match ns {
            Some(ns) => match snapshot.by_host.get(&ns.to_ascii_lowercase()) {
                Some(proxy) => proxy,
                // A registry Berth does not cache (or Berth itself): an ordinary request.
                None => return Ok(None),
            },
            None => {
                let Some(default) = &snapshot.default else { return Ok(None) };
                if snapshot.by_project.contains_key(project_of(requested)) || self.exists_here(requested).await? {
                    return Ok(None);
                }
                default
            }
        };
        RepoName::parse(&format!("{}/{requested}", proxy.upstream.project)).map(Some)
    }
}
