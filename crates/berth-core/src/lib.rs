//! Berth's domain: the vocabulary of the OCI Distribution Specification as types.
//!
//! This crate knows nothing of HTTP, SQL or files. Everything a client sends is parsed
//! into these types once, at the edge; downstream code never sees an unchecked `&str`.

pub mod access;
pub mod digest;
pub mod error;
pub mod glob;
pub mod manifest;
pub mod name;
pub mod net;
pub mod scope;
pub mod text;

pub use digest::{Digest, DigestHasher};
pub use error::{Error, ErrorKind};
pub use manifest::{Descriptor, MediaType, ParsedManifest};
pub use name::{Reference, RepoName, Tag};
pub use scope::{Resource, Scope, ScopeAction, ScopeError};
