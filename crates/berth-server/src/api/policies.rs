//! A project's immutable tag rules: list (whoever may pull from the project), add and
//! remove (`manage-tag-policies`: project admins and system administrators). The rules
//! are enforced by the metadata store, in the transaction of each tag write or delete.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use berth_core::access::Permission;
use berth_meta::ImmutableRule;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Caller, Change, Reply, bad_request, json, parse_body, unknown};
use crate::state::Registry;
use berth_access::Access;

/// Longest pattern accepted (a tag is at most 128 characters).
const MAX_PATTERN: usize = 128;

#[derive(Serialize, ToSchema)]
pub struct RuleView {
    /// A glob: `*` matches any run of characters, `?` one; everything else itself.
    pattern: String,
    /// Unix seconds.
    created_at: i64,
}

impl From<&ImmutableRule> for RuleView {
    fn from(r: &ImmutableRule) -> RuleView {
        RuleView { pattern: r.pattern.clone(), created_at: r.created_at }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    /// Tags matching it never move to another digest and are never deleted (`v*`,
    /// `release-*`, `1.?`).
    pattern: String,
}

#[utoipa::path(get, path = "/api/v1/projects/{project}/immutable-rules", tag = "policies",
    params(("project" = String, Path)),
    responses((status = 200, body = [RuleView]), (status = 403, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn list(State(registry): State<Arc<Registry>>, caller: Caller, Path(project): Path<String>) -> Reply {
    caller.authorize(&registry, Access::Project(&project, Permission::Pull)).await?;
    registry.identity.project(&project).await?.ok_or_else(|| unknown("project", &project))?;
    let rules = registry.policy.immutable_rules(&project).await?;
    Ok(json(StatusCode::OK, &rules.iter().map(RuleView::from).collect::<Vec<_>>()))
}

#[utoipa::path(post, path = "/api/v1/projects/{project}/immutable-rules", tag = "policies",
    params(("project" = String, Path)), request_body = NewRule,
    responses((status = 201, body = RuleView), (status = 400, body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn add(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(project): Path<String>,
    body: Bytes,
) -> Reply {
    let principal = caller.authorize(&registry, Access::Project(&project, Permission::ManageTagPolicies)).await?;
    let new: NewRule = parse_body(&body)?;
    check_pattern(&new.pattern)?;
    let rule = registry.policy.add_immutable_rule(&project, &new.pattern).await?;
    let change = Change { operation: "immutable.add", project: Some(&project), resource: &rule.pattern, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(json(StatusCode::CREATED, &RuleView::from(&rule)))
}

#[utoipa::path(delete, path = "/api/v1/projects/{project}/immutable-rules/{pattern}", tag = "policies",
    params(("project" = String, Path), ("pattern" = String, Path, description = "The pattern, percent-encoded")),
    responses((status = 204, description = "Removed"), (status = 404, body = super::ErrorBody)))]
pub async fn remove(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path((project, pattern)): Path<(String, String)>,
) -> Reply {
    let principal = caller.authorize(&registry, Access::Project(&project, Permission::ManageTagPolicies)).await?;
    if !registry.policy.remove_immutable_rule(&project, &pattern).await? {
        return Err(unknown("immutable rule", &pattern).into());
    }
    let change = Change { operation: "immutable.remove", project: Some(&project), resource: &pattern, detail: None };
    caller.audit(&registry, &principal, change).await;
    Ok(crate::response::empty(StatusCode::NO_CONTENT))
}

/// A pattern can match a tag: tag characters (`[A-Za-z0-9_.-]`) and the wildcards.
fn check_pattern(pattern: &str) -> Result<(), berth_core::Error> {
    let valid = !pattern.is_empty()
        && pattern.len() <= MAX_PATTERN
        && pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '*' | '?'));
    if valid {
        Ok(())
    } else {
        Err(bad_request(format!(
            "invalid pattern {pattern:?}: tag characters (letters, digits, '_', '.', '-') and the wildcards '*' \
             and '?', at most {MAX_PATTERN} characters"
        )))
    }
}
