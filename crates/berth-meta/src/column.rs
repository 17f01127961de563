//! Stored columns read back as their types: a repository name or a digest that no longer
//! parses is a corrupt row, an internal error.
//!
//! A leaf: the SQL store (`sql.rs`) and the GC's SQL (`gc/sql.rs`) both read these
//! columns, and the store's body uses the GC, so the readers cannot live in `sql.rs`.

use berth_core::{Digest, Error, RepoName};

pub(crate) fn repo_name(s: String) -> Result<RepoName, Error> {
    RepoName::parse(&s).map_err(|_| Error::internal(format!("corrupt repository name {s:?}")))
}

pub(crate) fn digest(s: String) -> Result<Digest, Error> {
    Digest::parse(&s).map_err(|_| Error::internal(format!("corrupt digest {s:?}")))
}
