//! Which refusals by the authorizer belong in the audit log, and as what event: a
//! failed login with Basic credentials (401, or 429 past the guessing limit; `login`,
//! failure, the reason), and an authenticated caller denied an access (403;
//! `access.denied`, the project, the repository, what was asked). An anonymous caller's
//! 401 is a challenge, not an event. The caller's name on a denial is the one its
//! credentials proved: the Basic name, or a bearer token's subject (verified again, from
//! the cache).

use berth_core::access::project_of;
use berth_core::{Error, ErrorKind};
use berth_meta::AuditEvent;

use crate::auth::{Access, Credentials, Subject};
use crate::authorizer::{Presented, TokenAuthorizer};

/// The event `error`, a refusal of `access` to `credentials`, is logged as, if any;
/// `tokens` verifies a bearer token's subject (`None`: no token service).
pub async fn refusal_event(
    tokens: Option<&TokenAuthorizer>,
    credentials: &Credentials<'_>,
    access: Access<'_>,
    error: &Error,
) -> Option<AuditEvent> {
    let (operation, outcome, actor) = match (&error.kind, Presented::of(credentials)) {
        (ErrorKind::Unauthorized | ErrorKind::TooManyRequests, Presented::Basic(name, _)) => {
            ("login", "failure", Some(name))
        }
        (ErrorKind::Denied, Presented::Basic(name, _)) => ("access.denied", "denied", Some(name)),
        (ErrorKind::Denied, Presented::Bearer(token)) => {
            let subject = match tokens {
                Some(tokens) => tokens.tokens.verify(&token).await.ok().map(|g| g.subject.clone()),
                None => None,
            };
            let name = match subject {
                Some(Subject::User(name) | Subject::Robot(name)) => Some(name),
                _ => None,
            };
            ("access.denied", "denied", name)
        }
        _ => return None,
    };
    let (project, resource, asked) = match access {
        Access::Repository(repo, action) => {
            (Some(project_of(repo).to_owned()), Some(repo.to_string()), format!("{action:?}").to_lowercase())
        }
        Access::Project(project, permission) => (Some(project.to_owned()), None, permission.as_str().to_owned()),
        Access::Catalog => (None, None, "catalog".to_owned()),
        Access::System => (None, None, "system".to_owned()),
        Access::Base | Access::Authenticated => (None, None, "login".to_owned()),
    };
    let login = operation == "login";
    let detail = if login { error.message().to_owned() } else { format!("{asked}: {}", error.message()) };
    Some(AuditEvent {
        at_ms: berth_meta::now_ms(),
        actor,
        address: credentials.peer.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string()),
        operation: operation.to_owned(),
        project: if login { None } else { project },
        resource: if login { None } else { resource },
        outcome: outcome.to_owned(),
        detail: Some(detail),
        count: 1,
    })
}
