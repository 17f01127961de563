//! Managing replication: the registries copies go to ([`RegistrySpec`], a password sealed
//! like an upstream's and never shown), and the rules that say what goes where
//! ([`RuleSpec`]: repositories and tags by glob or regex, referrers, deletes, overwrites,
//! a bandwidth and a concurrency limit), checked before they are stored.

use berth_core::glob::glob_matches;
use berth_core::{Error, ErrorKind};
use berth_meta::{Direction, ReplicationRegistry, ReplicationRule};
use serde::{Deserialize, Serialize};

/// Tasks of one rule run at once unless it says otherwise.
pub const DEFAULT_CONCURRENCY: u32 = 2;
const MAX_CONCURRENCY: u32 = 16;
const MAX_PATTERNS: usize = 64;
const MAX_PATTERN: usize = 256;

fn bad(message: String) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(message)
}

/// A registry replication copies to, as an administrator describes it.
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrySpec {
    pub name: String,
    /// `https://registry.example.com` (`http://` for loopback or a trusted network).
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    /// On a replace, leaving it out keeps the stored one; `""` removes it.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM certificates to trust for it, beside the system's.
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// A registry as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RegistryView {
    pub name: String,
    pub url: String,
    pub username: Option<String>,
    /// Whether a password is stored (it is never shown).
    pub has_password: bool,
    pub ca_pem: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<&ReplicationRegistry> for RegistryView {
    fn from(r: &ReplicationRegistry) -> RegistryView {
        RegistryView {
            name: r.name.clone(),
            url: r.url.clone(),
            username: r.username.clone(),
            has_password: r.sealed_password.is_some(),
            ca_pem: r.ca_pem.clone(),
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl RegistrySpec {
    /// The record to store, the password sealed by `seal` (the stored one kept when the
    /// spec gives none).
    pub(crate) fn into_registry(
        self,
        stored: Option<&ReplicationRegistry>,
        seal: impl FnOnce(&str) -> Result<Vec<u8>, Error>,
    ) -> Result<ReplicationRegistry, Error> {
        crate::upstreams::check_name_of("registry", &self.name)?;
        crate::upstreams::authority("registry", &self.url)?;
        let kept = stored.and_then(|s| s.sealed_password.as_ref());
        let sealed_password =
            crate::upstreams::sealed_password(self.password.as_deref(), kept, self.username.as_deref(), seal)?;
        Ok(ReplicationRegistry {
            name: self.name,
            url: self.url.trim_end_matches('/').to_owned(),
            username: self.username,
            sealed_password,
            ca_pem: self.ca_pem,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// What a rule copies and how: the part of a rule the store keeps as JSON.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleOptions {
    /// Repositories of the project to copy, as globs of the whole name (`team/app-*`);
    /// empty: all of them.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// Tags to copy, as globs (`v*`); empty (and no regex): all of them.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Tags to copy, as a regular expression over the whole tag, beside the globs.
    #[serde(default)]
    pub tag_regex: Option<String>,
    /// The destination's first path component in place of the project's (`prod` copies
    /// `team/app` as `prod/app`); default: the same names.
    #[serde(default)]
    pub destination_namespace: Option<String>,
    /// Copy every manifest's referrers (signatures, SBOMs, attestations), default on.
    #[serde(default = "yes")]
    pub referrers: bool,
    /// Propagate deletes of manifests (default off).
    #[serde(default)]
    pub deletes: bool,
    /// Move a destination tag that points elsewhere (default on).
    #[serde(default = "yes")]
    pub overwrite: bool,
    /// Bytes per second this rule's transfers send at most, together.
    #[serde(default)]
    pub bandwidth_bytes_per_sec: Option<u64>,
    /// Tasks of the rule run at once (1–16, default 2).
    #[serde(default)]
    pub concurrency: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A rule as an administrator describes it (an unknown field is refused by the
/// flattened options, which see what the rule's own fields leave).
#[derive(Clone, Debug, Deserialize, utoipa::ToSchema)]
pub struct RuleSpec {
    pub name: String,
    /// The registry copies go to.
    pub registry: String,
    /// `push` (this registry → the other, the default) or `pull` (the other → this one).
    #[serde(default = "push")]
    pub direction: String,
    /// Push: the local project whose repositories the rule copies. Pull: the local project
    /// they are copied into (`PROJECT/<the other registry's name>`).
    pub project: String,
    /// Push rules: copy each push (and delete, with `deletes`) as it happens, from the
    /// outbox (default on). Manual runs (`POST …/run`, `berth replication run`) and
    /// schedules copy everything that matches.
    #[serde(default = "yes")]
    pub on_event: bool,
    /// Run it on this schedule: cron syntax (`minute hour day month weekday`, with an
    /// optional leading seconds field), UTC.
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(flatten)]
    pub options: RuleOptions,
}

fn push() -> String {
    "push".to_owned()
}

/// A rule as the API shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RuleView {
    pub name: String,
    pub registry: String,
    pub direction: String,
    pub project: String,
    pub on_event: bool,
    pub cron: Option<String>,
    /// When the schedule runs it next (Unix milliseconds).
    pub next_run_ms: Option<i64>,
    pub enabled: bool,
    #[serde(flatten)]
    pub options: RuleOptions,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RuleSpec {
    pub(crate) fn into_rule(self) -> Result<ReplicationRule, Error> {
        crate::upstreams::check_name_of("rule", &self.name)?;
        let direction = match self.direction.as_str() {
            "push" => Direction::Push,
            "pull" => Direction::Pull,
            other => return Err(bad(format!("direction {other:?}: push or pull"))),
        };
        if let Some(cron) = &self.cron {
            schedule(cron)?;
        }
        if direction == Direction::Pull && self.options.deletes {
            return Err(bad("deletes: a pull rule copies, it does not propagate deletes".into()));
        }
        Matcher::new(&self.options)?;
        if let Some(ns) = &self.options.destination_namespace {
            berth_core::RepoName::parse(&format!("{ns}/x"))
                .map_err(|_| bad(format!("destination_namespace {ns:?} is not a repository name component")))?;
        }
        if let Some(c) = self.options.concurrency
            && !(1..=MAX_CONCURRENCY).contains(&c)
        {
            return Err(bad(format!("concurrency must be 1–{MAX_CONCURRENCY}")));
        }
        Ok(ReplicationRule {
            name: self.name,
            registry: self.registry,
            direction,
            project: self.project,
            on_event: self.on_event && direction == Direction::Push,
            cron: self.cron,
            next_run_ms: None,
            enabled: self.enabled,
            spec: serde_json::to_string(&self.options).map_err(Error::internal)?,
            created_at: 0,
            updated_at: 0,
        })
    }
}

/// The stored rule's options.
pub(crate) fn options(rule: &ReplicationRule) -> Result<RuleOptions, Error> {
    serde_json::from_str(&rule.spec).map_err(|e| Error::internal(format!("rule {}: stored options: {e}", rule.name)))
}

impl RuleView {
    pub(crate) fn of(rule: &ReplicationRule) -> Result<RuleView, Error> {
        Ok(RuleView {
            name: rule.name.clone(),
            registry: rule.registry.clone(),
            direction: rule.direction.as_str().to_owned(),
            project: rule.project.clone(),
            on_event: rule.on_event,
            cron: rule.cron.clone(),
            next_run_ms: rule.next_run_ms,
            enabled: rule.enabled,
            options: options(rule)?,
            created_at: rule.created_at,
            updated_at: rule.updated_at,
        })
    }
}

/// Which repositories and tags a rule copies.
pub(crate) struct Matcher {
    repositories: Vec<String>,
    tags: Vec<String>,
    regex: Option<regex::Regex>,
}

impl Matcher {
    pub(crate) fn new(o: &RuleOptions) -> Result<Matcher, Error> {
        for p in o.repositories.iter().chain(&o.tags) {
            if p.is_empty() || p.len() > MAX_PATTERN {
                return Err(bad(format!("a pattern is 1–{MAX_PATTERN} characters")));
            }
        }
        if o.repositories.len() > MAX_PATTERNS || o.tags.len() > MAX_PATTERNS {
            return Err(bad(format!("at most {MAX_PATTERNS} patterns each")));
        }
        let regex = match &o.tag_regex {
            Some(r) => Some(
                regex::RegexBuilder::new(&format!("^(?:{r})$"))
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| bad(format!("tag_regex: invalid regex ({e})")))?,
            ),
            None => None,
        };
        Ok(Matcher { repositories: o.repositories.clone(), tags: o.tags.clone(), regex })
    }

    pub(crate) fn repository(&self, repo: &str) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|p| glob_matches(p, repo))
    }

    pub(crate) fn tag(&self, tag: &str) -> bool {
        (self.tags.is_empty() && self.regex.is_none())
            || self.tags.iter().any(|p| glob_matches(p, tag))
            || self.regex.as_ref().is_some_and(|r| r.is_match(tag))
    }
}

/// A rule's schedule, checked.
pub(crate) fn schedule(cron: &str) -> Result<croner::Cron, Error> {
    cron.parse::<croner::Cron>().map_err(|e| bad(format!("cron {cron:?}: {e}")))
}

/// When `cron` next fires after `after_ms` (Unix milliseconds), if ever.
pub(crate) fn next_run(cron: &croner::Cron, after_ms: i64) -> Option<i64> {
    let after = chrono::DateTime::from_timestamp_millis(after_ms)?;
    cron.find_next_occurrence(&after, false).ok().map(|t| t.timestamp_millis())
}

/// Whether a pattern of a pull rule names one repository rather than matching many (a
/// name is asked for; a glob needs the other registry's catalog).
pub(crate) fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

/// The local name of the other registry's `remote` under a pull rule's project.
pub(crate) fn local_name(project: &str, remote: &str) -> String {
    format!("{project}/{remote}")
}

/// The destination's name of local repository `repo`.
pub(crate) fn destination(o: &RuleOptions, repo: &str) -> String {
    match (&o.destination_namespace, repo.split_once('/')) {
        (Some(ns), Some((_, rest))) => format!("{ns}/{rest}"),
        (Some(ns), None) => format!("{ns}/{repo}"),
        (None, _) => repo.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(v: serde_json::Value) -> RuleOptions {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_rule_matches_by_glob_and_regex_and_names_its_destination() {
        let o =
            opts(serde_json::json!({"repositories": ["team/app-*"], "tags": ["v*"], "tag_regex": "release-[0-9]+"}));
        let m = Matcher::new(&o).unwrap();
        assert!(m.repository("team/app-web") && !m.repository("team/db"));
        assert!(m.tag("v1.2") && m.tag("release-12") && !m.tag("release-x") && !m.tag("latest"));
        let all = Matcher::new(&opts(serde_json::json!({}))).unwrap();
        assert!(all.repository("team/x") && all.tag("anything"));
        assert!(o.referrers && o.overwrite && !o.deletes);
        let moved = opts(serde_json::json!({"destination_namespace": "prod"}));
        assert_eq!(destination(&moved, "team/app/web"), "prod/app/web");
        assert_eq!(destination(&o, "team/app"), "team/app");
    }

    #[test]
    fn bad_rules_are_refused_with_the_reason() {
        let rule = |v: serde_json::Value| -> Result<ReplicationRule, Error> {
            let mut base = serde_json::json!({"name": "r", "registry": "dr", "project": "team"});
            base.as_object_mut().unwrap().extend(v.as_object().unwrap().clone());
            serde_json::from_value::<RuleSpec>(base).unwrap().into_rule()
        };
        assert!(rule(serde_json::json!({})).is_ok());
        let pull = rule(serde_json::json!({"direction": "pull", "cron": "*/5 * * * *"})).unwrap();
        assert_eq!((pull.direction, pull.on_event), (Direction::Pull, false), "a pull rule has no events");
        let every_five = schedule("*/5 * * * *").unwrap();
        // 2026-12-08T00:01:00Z → 00:05:00Z.
        assert_eq!(next_run(&every_five, 1_796_688_060_000), Some(1_796_688_300_000));
        let seconds = schedule("*/2 * * * * *").unwrap();
        assert_eq!(next_run(&seconds, 1_796_688_060_000), Some(1_796_688_062_000), "an optional seconds field");
        for (v, says) in [
            (serde_json::json!({"tag_regex": "v(1"}), "invalid regex"),
            (serde_json::json!({"direction": "pull", "deletes": true}), "does not propagate deletes"),
            (serde_json::json!({"direction": "sideways"}), "direction"),
            (serde_json::json!({"cron": "every tuesday"}), "cron"),
            (serde_json::json!({"concurrency": 0}), "concurrency"),
            (serde_json::json!({"destination_namespace": "Bad!"}), "destination_namespace"),
            (serde_json::json!({"name": "R"}), "rule name"),
        ] {
            let e = rule(v.clone()).unwrap_err();
            assert!(e.message().contains(says), "{v}: {}", e.message());
        }
    }
}
