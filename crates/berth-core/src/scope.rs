//! The `scope` of Docker token authentication: what a token is asked for and grants,
//! `repository:team/app:pull,push` or `registry:catalog:*`.
//!
//! Parsed strictly: the resource type is `repository` (optionally with a class,
//! `repository(plugin)`) or `registry`; a repository name must be a valid [`RepoName`]
//! (no `..`, no empty component, no separator smuggled in: the name is everything
//! between the first and the last `:`, and a name cannot hold a `:`); actions are
//! `pull`, `push`, `delete` or `*`. Anything else is refused as a whole, never
//! granted in part.

use std::collections::BTreeSet;
use std::fmt;

use crate::name::RepoName;

/// Longest scope string considered (a name is at most 255 bytes).
pub const MAX_SCOPE_LEN: usize = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeAction {
    Pull,
    Push,
    Delete,
}

impl ScopeAction {
    pub const ALL: [ScopeAction; 3] = [ScopeAction::Pull, ScopeAction::Push, ScopeAction::Delete];

    pub fn as_str(self) -> &'static str {
        match self {
            ScopeAction::Pull => "pull",
            ScopeAction::Push => "push",
            ScopeAction::Delete => "delete",
        }
    }
}

/// What a scope is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Repository(RepoName),
    /// `registry:catalog`: listing repositories.
    Catalog,
}

/// One parsed scope: a resource and the actions asked for on it (never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    pub resource: Resource,
    pub actions: BTreeSet<ScopeAction>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid scope: {0}")]
pub struct ScopeError(pub String);

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        let invalid = |why: &str| ScopeError(format!("{why}: {:?}", truncate(s)));
        if s.len() > MAX_SCOPE_LEN {
            return Err(invalid("too long"));
        }
        let (kind, rest) = s.split_once(':').ok_or_else(|| invalid("expected TYPE:NAME:ACTIONS"))?;
        let (name, actions) = rest.rsplit_once(':').ok_or_else(|| invalid("expected TYPE:NAME:ACTIONS"))?;
        let mut asked = BTreeSet::new();
        for action in actions.split(',') {
            match action {
                "*" => asked.extend(ScopeAction::ALL),
                "pull" => _ = asked.insert(ScopeAction::Pull),
                "push" => _ = asked.insert(ScopeAction::Push),
                "delete" => _ = asked.insert(ScopeAction::Delete),
                _ => return Err(invalid("unknown action")),
            }
        }
        let resource = match kind {
            "registry" if name == "catalog" => Resource::Catalog,
            "registry" => return Err(invalid("the only registry resource is catalog")),
            _ if is_repository_type(kind) => {
                Resource::Repository(RepoName::parse(name).map_err(|_| invalid("invalid repository name"))?)
            }
            _ => return Err(invalid("unknown resource type")),
        };
        Ok(Scope { resource, actions: asked })
    }

    /// Every scope in the `scope` parameters of a token request: each parameter may hold
    /// several, separated by spaces (OAuth2).
    pub fn parse_all<'a>(params: impl IntoIterator<Item = &'a str>) -> Result<Vec<Scope>, ScopeError> {
        params.into_iter().flat_map(|p| p.split(' ')).filter(|s| !s.is_empty()).map(Scope::parse).collect()
    }
}

/// `repository` or `repository(CLASS)` with a lowercase alphanumeric class.
fn is_repository_type(kind: &str) -> bool {
    match kind.strip_prefix("repository") {
        Some("") => true,
        Some(class) => class
            .strip_prefix('(')
            .and_then(|c| c.strip_suffix(')'))
            .is_some_and(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())),
        None => false,
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.resource {
            Resource::Repository(name) => write!(f, "repository:{name}:")?,
            Resource::Catalog => write!(f, "registry:catalog:")?,
        }
        let actions: Vec<&str> = self.actions.iter().map(|a| a.as_str()).collect();
        f.write_str(&actions.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(list: &[ScopeAction]) -> BTreeSet<ScopeAction> {
        list.iter().copied().collect()
    }

    #[test]
    fn scopes_docker_and_oras_send() {
        let s = Scope::parse("repository:team/app:pull,push").unwrap();
        assert_eq!(s.resource, Resource::Repository(RepoName::parse("team/app").unwrap()));
        assert_eq!(s.actions, actions(&[ScopeAction::Pull, ScopeAction::Push]));
        assert_eq!(s.to_string(), "repository:team/app:pull,push");
        let s = Scope::parse("repository(plugin):vieux/sshfs:pull").unwrap();
        assert_eq!(s.to_string(), "repository:vieux/sshfs:pull");
        let s = Scope::parse("registry:catalog:*").unwrap();
        assert_eq!(s.resource, Resource::Catalog);
        assert_eq!(s.actions.len(), 3);
        assert_eq!(Scope::parse("repository:a:*").unwrap().to_string(), "repository:a:pull,push,delete");
    }

    #[test]
    fn several_scopes_in_one_parameter_or_many() {
        let all = Scope::parse_all(["repository:a:pull repository:b:push", "registry:catalog:*"]).unwrap();
        assert_eq!(all.len(), 3);
        assert!(Scope::parse_all(["repository:a:pull repository:../b:push"]).is_err());
    }

    #[test]
    fn traversal_injected_separators_and_unknown_parts_are_refused() {
        for bad in [
            "repository:../etc:pull",
            "repository:a/../b:pull",
            "repository:a:pull:push",
            "repository:a:pull,admin",
            "repository:a:",
            "repository::pull",
            "repository:A:pull",
            "repository:a/b%2f..:pull",
            "repository:a\npull",
            "repository(Plugin):a:pull",
            "repository():a:pull",
            "registry:users:*",
            "user:admin:*",
            "repository",
            "",
        ] {
            assert!(Scope::parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(Scope::parse(&format!("repository:{}:pull", "a".repeat(600))).is_err());
    }
}
