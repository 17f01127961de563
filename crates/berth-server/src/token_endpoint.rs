//! `/token`'s HTTP side: reads the query of a `GET` or the form of a `POST` (at most
//! [`MAX_FORM`] bytes, no control character in it), hands it to `berth_access::token`,
//! renders the token or the error (never cached), and records what the request did in
//! the audit log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use berth_access::authorizer::Presented;
use berth_access::token::{self, Outcome};
use berth_core::{Error, ErrorKind, RepoName};
use futures_util::StreamExt;

use crate::response::ApiError;
use crate::state::Registry;
use crate::{listen, seam};

/// Largest `POST /token` form read.
const MAX_FORM: usize = 64 * 1024;

pub(crate) async fn token(State(registry): State<Arc<Registry>>, request: Request) -> Response {
    let Some(auth) = registry.tokens.as_deref() else {
        return ApiError(Error::new(ErrorKind::NotFound)).into_response();
    };
    let (parts, body) = request.into_parts();
    let peer = parts.extensions.get::<listen::PeerAddr>().map(|p| p.0.ip());
    let mut outcome = Outcome::default();
    let result = if !matches!(parts.method, Method::GET | Method::POST) {
        Err(Error::new(ErrorKind::MethodNotAllowed))
    } else if parts.method == Method::POST {
        match read_form(body).await {
            Ok(mut form) => match mirrored_scopes(&registry, &mut form).await {
                Ok(()) => token::oauth(auth, &form, peer, &mut outcome).await,
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        }
    } else {
        let mut query = parse_pairs(parts.uri.query().unwrap_or(""));
        match mirrored_scopes(&registry, &mut query).await {
            Ok(()) => {
                let presented = Presented::of(&seam::credentials(&parts.headers, peer));
                token::docker(auth, presented, &query, peer, &mut outcome).await
            }
            Err(e) => Err(e),
        }
    };
    if let Some(event) = outcome.event(&result, peer) {
        registry.jobs.audit.record(event).await;
    }
    let mut response = match result {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response(),
        Err(e) => ApiError(e).into_response(),
    };
    response.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    response
}

/// A pull scope for a name a mirror request would route to a proxy repository
/// (`berth_federation::route`) is asked of that repository: the token then grants what
/// the `/v2` request, routed the same way, checks. The client never reads the claims.
async fn mirrored_scopes(registry: &Registry, pairs: &mut [(String, String)]) -> Result<(), Error> {
    let Some(federation) = &registry.federation else { return Ok(()) };
    let ns = pairs.iter().find(|(k, _)| k == "ns").map(|(_, v)| v.clone());
    for (_, value) in pairs.iter_mut().filter(|(k, _)| k == "scope") {
        let mut scopes = Vec::new();
        for scope in value.split(' ') {
            let pull = scope.strip_prefix("repository:").and_then(|s| s.strip_suffix(":pull"));
            let routed = match pull.map(RepoName::parse) {
                Some(Ok(repo)) => federation.mirror(&repo, ns.as_deref()).await?,
                _ => None,
            };
            scopes.push(routed.map_or_else(|| scope.to_owned(), |repo| format!("repository:{repo}:pull")));
        }
        *value = scopes.join(" ");
    }
    Ok(())
}

fn parse_pairs(s: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(s.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

async fn read_form(body: Body) -> Result<Vec<(String, String)>, Error> {
    let bad_request = |message: String| Error::new(ErrorKind::BadRequest).with_message(message);
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| bad_request(format!("reading the form: {e}")))?;
        if buf.len() + chunk.len() > MAX_FORM {
            return Err(bad_request("the form is too large".to_owned()));
        }
        buf.extend_from_slice(&chunk);
    }
    let pairs = parse_pairs(&String::from_utf8_lossy(&buf));
    crate::text::check_pairs(&pairs)?;
    Ok(pairs)
}
