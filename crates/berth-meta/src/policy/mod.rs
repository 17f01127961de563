//! The policy store: a project's immutable tag rules and its quota, with the usage the
//! quota is checked against.
//!
//! A store of its own beside [`MetadataStore`](crate::MetadataStore), in the same
//! database. Managing rules and quotas is here; enforcing them is not: a tag move, a
//! delete and a blob link are checked inside the registry operation's own transaction
//! (`sql.rs`'s `policy_checks!`, called from `sql_store!`), so that no race between two
//! pushes can move an immutable tag or take a project past its quota.
//!
//! Usage counts each blob once per project, however many of its repositories link it
//! (`project_blobs`, kept by triggers on `repo_blobs`; see `0005_policies.sql`). Manifest
//! bytes, kept in the database, are not counted.

use async_trait::async_trait;
use berth_core::Error;

pub(crate) mod sql;
#[cfg(test)]
pub(crate) mod suite;

/// The project whose quota refused a change, if `e` is such a refusal (its detail is
/// `{project, used, size, limit}`).
pub fn quota_refused(e: &Error) -> Option<&str> {
    let detail = e.detail.as_ref().filter(|_| e.kind == berth_core::ErrorKind::Denied)?;
    detail.get("limit")?;
    detail.get("used")?;
    detail.get("project")?.as_str()
}

/// A pattern whose matching tags never move nor go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImmutableRule {
    pub project: String,
    /// A glob (`berth_core::glob`): `*` any run, `?` one character.
    pub pattern: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// A project's limit and what it uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    /// Bytes; `None`: unlimited.
    pub limit: Option<u64>,
    /// Bytes of the distinct blobs its repositories may read.
    pub used: u64,
}

#[async_trait]
pub trait PolicyStore: Send + Sync + 'static {
    /// A project's immutable tag rules, sorted by pattern.
    async fn immutable_rules(&self, project: &str) -> Result<Vec<ImmutableRule>, Error>;

    /// Adds a rule: `CONFLICT` if the project has it already, `NOT_FOUND` if there is no
    /// such project.
    async fn add_immutable_rule(&self, project: &str, pattern: &str) -> Result<ImmutableRule, Error>;

    /// Removes a rule; `false` if there was none.
    async fn remove_immutable_rule(&self, project: &str, pattern: &str) -> Result<bool, Error>;

    /// A project's quota and usage (no usage yet is 0).
    async fn quota(&self, project: &str) -> Result<Quota, Error>;

    /// Sets (`Some`) or clears a project's limit; `NOT_FOUND` if there is no such project.
    /// Lowering it below the usage deletes nothing: later pushes are refused.
    async fn set_quota(&self, project: &str, limit: Option<u64>) -> Result<Quota, Error>;
}

/// Bytes as people read them: `512 B`, `9.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytes_read_as_binary_units() {
        assert_eq!(super::human_bytes(512), "512 B");
        assert_eq!(super::human_bytes(10 << 20), "10.0 MiB");
        assert_eq!(super::human_bytes(9 * (1 << 20) + (1 << 19)), "9.5 MiB");
    }
}
