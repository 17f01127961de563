//! `/token`'s logic: Docker's token endpoint (`GET`, Basic or anonymous) and its OAuth2
//! form (`POST`, grant types `password`, `refresh_token` and the token exchange). The
//! HTTP edge reads the query or form and renders what this returns.
//!
//! A token grants, for each requested scope, the requested actions the caller holds, and
//! never more; a scope the caller holds nothing of is granted with no actions, as
//! distribution does. A malformed scope refuses the whole request (400). Refresh tokens
//! are issued on `offline_token=true` (`GET`) or `access_type=offline` (`POST`) to an
//! authenticated caller, and checked against the store every time they are used.
//!
//! Nothing issued here outlives what it was issued on ([`Login::not_after`]): a robot's
//! tokens end by its `expires_at`, and a keyless robot's registry token ends by its ID
//! token's `exp` and it gets no refresh token at all (not on any grant), so a CI job's
//! ten-minute ID token never buys a credential that lives longer. A refresh grant issues
//! no new refresh token, so a refresh token never extends itself.

use std::sync::Arc;

use berth_core::scope::{Resource, Scope, ScopeAction};
use berth_core::{Error, ErrorKind};
use berth_meta::AuditEvent;

use crate::auth::{Access, Action, Grants, Subject};
use crate::authorizer::{Presented, TokenAuthorizer};
use crate::grants::{Holdings, SubjectGrants};
use crate::tokens::{AccessEntry, Issued};

/// A token request's parameters, decoded: a `GET`'s query, a `POST`'s form.
pub type Pairs = [(String, String)];

/// What a `/token` request did, for the audit log: who asked (never a password or a
/// token), and what was granted.
#[derive(Default)]
pub struct Outcome {
    /// The account named (Basic user, OAuth2 `username`, a refresh token's subject).
    account: Option<String>,
    /// `login` while credentials are checked, `token.refresh` for a refresh grant.
    operation: Option<&'static str>,
    /// The scopes granted, once a token is issued.
    granted: Option<String>,
}

impl Outcome {
    /// The event a request that ended in `result` is logged as, if any.
    pub fn event<T>(&self, result: &Result<T, Error>, peer: Option<std::net::IpAddr>) -> Option<AuditEvent> {
        let (operation, outcome, detail) = match (result, self.operation) {
            (Ok(_), _) => ("token.issue", "success", self.granted.clone()),
            (Err(e), Some(operation)) if matches!(e.kind, ErrorKind::Unauthorized | ErrorKind::TooManyRequests) => {
                (operation, "failure", Some(e.message().to_owned()))
            }
            _ => return None,
        };
        Some(AuditEvent {
            at_ms: berth_meta::now_ms(),
            actor: self.account.clone(),
            address: peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
            operation: operation.to_owned(),
            project: None,
            resource: None,
            outcome: outcome.to_owned(),
            detail,
            count: 1,
        })
    }
}

fn first<'a>(pairs: &'a Pairs, key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn all<'a>(pairs: &'a Pairs, key: &'a str) -> impl Iterator<Item = &'a str> {
    pairs.iter().filter(move |(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn bad_request(message: impl Into<String>) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

fn check_service(auth: &TokenAuthorizer, service: Option<&str>) -> Result<(), Error> {
    match service {
        Some(s) if s != auth.config.service => Err(bad_request(format!("unknown service {s:?}"))),
        _ => Ok(()),
    }
}

fn parse_scopes<'a>(params: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, Error> {
    Scope::parse_all(params).map_err(|e| bad_request(e.to_string()))
}

/// `GET /token?service=…&scope=…[&scope=…][&offline_token=true]`, Basic or anonymous.
pub async fn docker(
    auth: &TokenAuthorizer,
    presented: Presented,
    query: &Pairs,
    peer: Option<std::net::IpAddr>,
    outcome: &mut Outcome,
) -> Result<serde_json::Value, Error> {
    check_service(auth, first(query, "service"))?;
    let scopes = parse_scopes(all(query, "scope"))?;
    let login = match presented {
        Presented::Nothing => Login::new(Arc::new(Holdings::anonymous()), None),
        Presented::Basic(name, password) => {
            (outcome.account, outcome.operation) = (Some(name.clone()), Some("login"));
            Login::new(auth.login(&name, &password, peer).await?, Some(&password))
        }
        Presented::Bearer(_) | Presented::Unreadable => {
            return Err(Error::new(ErrorKind::Unauthorized).with_message("the token endpoint takes Basic credentials"));
        }
    };
    let offline = first(query, "offline_token") == Some("true");
    respond(auth, login, &scopes, offline, None, outcome).await
}

/// `POST /token` with `grant_type=password`, `grant_type=refresh_token`, or the OAuth2
/// token exchange (RFC 8693) of a keyless robot's external ID token
/// (`subject_token`, `subject_token_type=…:id_token`, the robot in `robot` or `client_id`),
/// which logs in exactly as that ID token given as the robot's Basic password does.
pub async fn oauth(
    auth: &TokenAuthorizer,
    form: &Pairs,
    peer: Option<std::net::IpAddr>,
    outcome: &mut Outcome,
) -> Result<serde_json::Value, Error> {
    check_service(auth, first(form, "service"))?;
    let scopes = parse_scopes(all(form, "scope"))?;
    match first(form, "grant_type") {
        Some("password") => {
            let (Some(name), Some(password)) = (first(form, "username"), first(form, "password")) else {
                return Err(bad_request("grant_type=password needs username and password"));
            };
            (outcome.account, outcome.operation) = (Some(name.to_owned()), Some("login"));
            let login = Login::new(auth.login(name, password, peer).await?, Some(password));
            let offline = first(form, "access_type") == Some("offline");
            respond(auth, login, &scopes, offline, Some(&scopes), outcome).await
        }
        Some("refresh_token") => {
            let token = first(form, "refresh_token").ok_or_else(|| bad_request("refresh_token is missing"))?;
            let claims = auth.tokens.verify_refresh(token).await?;
            let subject = crate::tokens::subject_of(claims.sub.as_deref());
            (outcome.account, outcome.operation) = (claims.sub.clone(), Some("token.refresh"));
            let no_longer_valid =
                || Error::new(ErrorKind::Unauthorized).with_message("the refresh token is no longer valid");
            let holdings = auth.holdings_of(&subject, Some(claims.iat)).await?.ok_or_else(|| {
                tracing::info!(subject = ?subject, "refresh token of a disabled, changed or deleted account refused");
                no_longer_valid()
            })?;
            // None is issued to a keyless robot; one minted before that rule is refused.
            if holdings.keyless {
                tracing::info!(subject = ?subject, "refresh token of a keyless robot refused");
                return Err(no_longer_valid());
            }
            respond(auth, Login::new(Arc::new(holdings), None), &scopes, false, Some(&scopes), outcome).await
        }
        Some(crate::oidc::exchange::TOKEN_EXCHANGE_GRANT) => {
            let exchange =
                crate::oidc::exchange::TokenExchange::from_form(form.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
            (outcome.account, outcome.operation) = (Some(exchange.robot.clone()), Some("login"));
            // A robot with a secret does not exchange it for a token this way.
            let keyless = auth.store.robot(&exchange.robot).await?.is_some_and(|r| r.trust.is_some());
            if !keyless {
                return Err(
                    Error::new(ErrorKind::Unauthorized).with_message("only a keyless robot exchanges an ID token")
                );
            }
            let login =
                Login::new(auth.login(&exchange.robot, &exchange.id_token, peer).await?, Some(&exchange.id_token));
            respond(auth, login, &scopes, false, Some(&scopes), outcome).await
        }
        Some(other) => Err(bad_request(format!("unsupported grant_type {other:?}"))),
        None => Err(bad_request("grant_type is missing")),
    }
}

/// A caller that has just logged in, and the latest its credentials may live to.
struct Login {
    holdings: Arc<Holdings>,
    /// Unix seconds: the robot's `expires_at`, and a keyless robot's ID token's `exp`.
    not_after: Option<i64>,
}

impl Login {
    /// `password` is what the caller logged in with: a keyless robot's is the ID token
    /// [`TokenAuthorizer::login`] has just verified (the login cache is keyed by it too).
    fn new(holdings: Arc<Holdings>, password: Option<&str>) -> Login {
        let id_token_exp = match (holdings.keyless, password) {
            // A verified ID token has an `exp`; one unreadable now ends the login now.
            (true, Some(id_token)) => Some(crate::oidc::expiry_of(id_token).unwrap_or(i64::MIN)),
            (true, None) => Some(i64::MIN),
            (false, _) => None,
        };
        let not_after = [holdings.expires_at, id_token_exp].into_iter().flatten().min();
        Login { holdings, not_after }
    }
}

/// For each scope, the asked actions the caller holds.
async fn grant(auth: &TokenAuthorizer, holdings: Arc<Holdings>, scopes: &[Scope]) -> Result<Vec<AccessEntry>, Error> {
    let grants = SubjectGrants { holdings, projects: auth.projects().await? };
    Ok(scopes
        .iter()
        .map(|scope| {
            let held = scope
                .actions
                .iter()
                .copied()
                .filter(|action| match &scope.resource {
                    Resource::Catalog => grants.may(Access::Catalog),
                    Resource::Repository(repo) => grants.may(Access::Repository(repo, action_of(*action))),
                })
                .collect();
            AccessEntry::granted(scope, &held)
        })
        .collect())
}

fn action_of(action: ScopeAction) -> Action {
    match action {
        ScopeAction::Pull => Action::Pull,
        ScopeAction::Push => Action::Push,
        ScopeAction::Delete => Action::Delete,
    }
}

/// The token response's JSON; `oauth_scopes` adds OAuth2's `scope` (what was granted).
async fn respond(
    auth: &TokenAuthorizer,
    login: Login,
    scopes: &[Scope],
    offline: bool,
    oauth_scopes: Option<&[Scope]>,
    outcome: &mut Outcome,
) -> Result<serde_json::Value, Error> {
    let Login { holdings, not_after } = login;
    let sub = match &holdings.subject {
        Subject::Anonymous => None,
        Subject::User(name) | Subject::Robot(name) => Some(name.clone()),
    };
    let keyless = holdings.keyless;
    let access = grant(auth, holdings, scopes).await?;
    let granted: Vec<String> = access
        .iter()
        .filter(|e| !e.actions.is_empty())
        .map(|e| format!("{}:{}:{}", e.kind, e.name, e.actions.join(",")))
        .collect();
    outcome.account = sub.clone();
    outcome.granted = Some(granted.join(" "));
    let Issued { token, expires_in, issued_at } = auth.tokens.issue(sub.as_deref(), access, not_after).await?;
    let mut body = serde_json::json!({
        "token": token,
        "access_token": token,
        "expires_in": expires_in,
        "issued_at": rfc3339(issued_at),
    });
    // A keyless robot asking for offline access (`docker login` always does) gets none:
    // its client keeps the ID token, which expires on its own.
    if let (true, Some(sub), false) = (offline, &sub, keyless) {
        body["refresh_token"] = auth.tokens.issue_refresh(sub, not_after).await?.token.into();
    }
    if oauth_scopes.is_some() {
        body["scope"] = granted.join(" ").into();
    }
    Ok(body)
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
