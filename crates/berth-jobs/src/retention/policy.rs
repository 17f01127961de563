//! Retention policies: what a project's owners ask to keep, validated, and the decision
//! it makes on a repository's tags and manifests (a pure function of the repository's
//! state and the time; no I/O).
//!
//! A policy is a list of rules; each rule applies to the repositories its `repositories`
//! globs match (all of the project's when it names none). On a repository:
//! - no rule applies: nothing is deleted;
//! - a tag is kept if ANY keep entry of ANY applying rule keeps it, and deleted otherwise;
//!   with no keep entry at all, every tag is kept (a rule may only clean untagged manifests);
//! - with `delete_untagged` on an applying rule, a top-level manifest (not a child of an
//!   index, not a referrer, and pushed longer ago than the GC grace period: the caller
//!   leaves younger ones out of the state) is deleted when no tag is left on it: untagged
//!   already, or because all its tags go in this run.
//!
//! Keep entries (Harbor's and zot's vocabulary): the N most recently pushed tags (ties by
//! name), the N most recently pulled (tags never pulled since their push are not counted),
//! tags pushed or pulled within D days, tags matching a glob (`*`, `?`) or a regular
//! expression (matched against the whole tag).

use berth_core::{Error, ErrorKind};
use berth_meta::{RepoState, TagState};
use regex::Regex;
use serde::{Deserialize, Serialize};

use berth_core::glob::glob_matches;

/// Rules in a policy, keep entries in a rule, patterns' length: at most.
const MAX_RULES: usize = 100;
const MAX_KEEPS: usize = 100;
const MAX_PATTERN: usize = 256;
/// Bytes a compiled regular expression may take.
const REGEX_SIZE: usize = 1 << 20;
const DAY: i64 = 86_400;

/// A project's retention policy, as the API takes and returns it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Globs on full repository names (`team/app-*`); none: every repository of the project.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<String>,
    /// What to keep; a tag no entry keeps is deleted. None: every tag is kept.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<Keep>,
    /// Delete manifests left without a tag.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete_untagged: bool,
}

/// One keep entry: `{"most_recently_pushed": 5}`, `{"pulled_within_days": 30}`,
/// `{"tags_matching": {"regex": "^v[0-9]+$"}}`, …
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Keep {
    MostRecentlyPushed(u32),
    MostRecentlyPulled(u32),
    PushedWithinDays(u32),
    PulledWithinDays(u32),
    TagsMatching(TagPattern),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TagPattern {
    /// `*` any run of characters, `?` one.
    Glob(String),
    /// A regular expression that must match the whole tag.
    Regex(String),
}

impl std::fmt::Display for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Keep::MostRecentlyPushed(n) => write!(f, "most_recently_pushed {n}"),
            Keep::MostRecentlyPulled(n) => write!(f, "most_recently_pulled {n}"),
            Keep::PushedWithinDays(d) => write!(f, "pushed_within_days {d}"),
            Keep::PulledWithinDays(d) => write!(f, "pulled_within_days {d}"),
            Keep::TagsMatching(TagPattern::Glob(g)) => write!(f, "tags_matching glob {g:?}"),
            Keep::TagsMatching(TagPattern::Regex(r)) => write!(f, "tags_matching regex {r:?}"),
        }
    }
}

/// A validated policy, its expressions compiled.
#[derive(Debug)]
pub struct Compiled {
    pub policy: Policy,
    /// Per rule, per keep entry: the compiled regex of a `regex` entry.
    regexes: Vec<Vec<Option<Regex>>>,
}

/// What a run does to one repository, and why.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Verdict {
    /// Tags that stay, each with the keep entries that keep it.
    pub kept: Vec<KeptTag>,
    /// Tags that go (none of the keep entries kept them).
    pub deleted_tags: Vec<DeletedTag>,
    /// Manifests that go, left without a tag (`delete_untagged`).
    pub deleted_manifests: Vec<DeletedManifest>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct KeptTag {
    pub tag: String,
    pub digest: String,
    pub reasons: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeletedTag {
    pub tag: String,
    pub digest: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeletedManifest {
    pub digest: String,
    pub reason: String,
}

fn invalid(at: &str, what: String) -> Error {
    Error::new(ErrorKind::BadRequest).with_message(format!("retention policy: {at}: {what}"))
}

/// Whether `pattern` could match names made of `allowed` characters (besides `*`, `?`).
fn check_glob(at: &str, pattern: &str, allowed: impl Fn(char) -> bool) -> Result<(), Error> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN {
        return Err(invalid(at, format!("a glob has 1 to {MAX_PATTERN} characters")));
    }
    match pattern.chars().find(|&c| c != '*' && c != '?' && !allowed(c)) {
        Some(c) => Err(invalid(at, format!("glob {pattern:?} has {c:?}, which no name can contain"))),
        None => Ok(()),
    }
}

impl Policy {
    /// Validates the policy and compiles its expressions; the error names the rule and
    /// entry at fault and what is wrong (a bad regex's parser message too).
    pub fn compile(self) -> Result<Compiled, Error> {
        if self.rules.len() > MAX_RULES {
            return Err(invalid("rules", format!("at most {MAX_RULES}")));
        }
        let mut regexes = Vec::with_capacity(self.rules.len());
        for (r, rule) in self.rules.iter().enumerate() {
            for pattern in &rule.repositories {
                let at = format!("rules[{r}].repositories");
                check_glob(&at, pattern, |c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))?;
            }
            if rule.keep.len() > MAX_KEEPS {
                return Err(invalid(&format!("rules[{r}].keep"), format!("at most {MAX_KEEPS} entries")));
            }
            let mut compiled = Vec::with_capacity(rule.keep.len());
            for (k, keep) in rule.keep.iter().enumerate() {
                let at = format!("rules[{r}].keep[{k}]");
                compiled.push(None);
                match keep {
                    Keep::MostRecentlyPushed(0)
                    | Keep::MostRecentlyPulled(0)
                    | Keep::PushedWithinDays(0)
                    | Keep::PulledWithinDays(0) => {
                        return Err(invalid(&at, format!("{keep} keeps nothing: use at least 1")));
                    }
                    Keep::TagsMatching(TagPattern::Glob(g)) => {
                        check_glob(&at, g, |c| c.is_ascii_alphanumeric() || "._-".contains(c))?
                    }
                    Keep::TagsMatching(TagPattern::Regex(re)) => {
                        if re.len() > MAX_PATTERN {
                            return Err(invalid(&at, format!("a regex has at most {MAX_PATTERN} characters")));
                        }
                        let built = regex::RegexBuilder::new(&format!("^(?:{re})$"))
                            .size_limit(REGEX_SIZE)
                            .build()
                            .map_err(|e| invalid(&at, format!("invalid regex {re:?}: {e}")))?;
                        compiled[k] = Some(built);
                    }
                    _ => {}
                }
            }
            regexes.push(compiled);
        }
        Ok(Compiled { policy: self, regexes })
    }
}

impl Compiled {
    /// What the policy does to `repo` at `now` (Unix seconds); `None` if no rule applies.
    pub fn decide(&self, repo: &str, state: &RepoState, now: i64) -> Option<Verdict> {
        let applying: Vec<usize> = (0..self.policy.rules.len())
            .filter(|&r| {
                let globs = &self.policy.rules[r].repositories;
                globs.is_empty() || globs.iter().any(|g| glob_matches(g, repo))
            })
            .collect();
        if applying.is_empty() {
            return None;
        }
        let mut reasons: Vec<Vec<String>> = vec![Vec::new(); state.tags.len()];
        let mut any_keep = false;
        for &r in &applying {
            for (k, keep) in self.policy.rules[r].keep.iter().enumerate() {
                any_keep = true;
                for i in self.keeps(keep, self.regexes[r][k].as_ref(), &state.tags, now) {
                    reasons[i].push(keep.to_string());
                }
            }
        }
        let mut verdict = Verdict::default();
        for (tag, mut why) in state.tags.iter().zip(reasons) {
            if !any_keep {
                why.push("no keep entry: every tag is kept".to_owned());
            }
            if why.is_empty() {
                let reason = "no keep entry keeps it".to_owned();
                verdict.deleted_tags.push(DeletedTag { tag: tag.tag.clone(), digest: tag.digest.clone(), reason });
            } else {
                why.dedup();
                verdict.kept.push(KeptTag { tag: tag.tag.clone(), digest: tag.digest.clone(), reasons: why });
            }
        }
        if applying.iter().any(|&r| self.policy.rules[r].delete_untagged) {
            for m in &state.manifests {
                let had_tags = state.tags.iter().any(|t| t.digest == m.digest);
                if verdict.kept.iter().any(|t| t.digest == m.digest) {
                    continue;
                }
                let reason =
                    if had_tags { "delete_untagged: its tags are deleted" } else { "delete_untagged: untagged" };
                verdict.deleted_manifests.push(DeletedManifest { digest: m.digest.clone(), reason: reason.to_owned() });
            }
        }
        Some(verdict)
    }

    /// The indexes of the tags `keep` keeps.
    fn keeps(&self, keep: &Keep, regex: Option<&Regex>, tags: &[TagState], now: i64) -> Vec<usize> {
        let all = 0..tags.len();
        match keep {
            Keep::MostRecentlyPushed(n) => {
                let mut order: Vec<usize> = all.collect();
                order.sort_by(|&a, &b| tags[b].pushed_at.cmp(&tags[a].pushed_at).then(tags[a].tag.cmp(&tags[b].tag)));
                order.truncate(*n as usize);
                order
            }
            Keep::MostRecentlyPulled(n) => {
                let mut order: Vec<usize> = all.filter(|&i| tags[i].last_pulled_at.is_some()).collect();
                order.sort_by(|&a, &b| {
                    tags[b].last_pulled_at.cmp(&tags[a].last_pulled_at).then(tags[a].tag.cmp(&tags[b].tag))
                });
                order.truncate(*n as usize);
                order
            }
            Keep::PushedWithinDays(d) => all.filter(|&i| tags[i].pushed_at >= now - i64::from(*d) * DAY).collect(),
            Keep::PulledWithinDays(d) => {
                all.filter(|&i| tags[i].last_pulled_at.is_some_and(|at| at >= now - i64::from(*d) * DAY)).collect()
            }
            Keep::TagsMatching(TagPattern::Glob(g)) => all.filter(|&i| glob_matches(g, &tags[i].tag)).collect(),
            Keep::TagsMatching(TagPattern::Regex(_)) => {
                let re = regex.expect("a regex entry is compiled");
                all.filter(|&i| re.is_match(&tags[i].tag)).collect()
            }
        }
    }
}

#[cfg(test)]
mod tests;
