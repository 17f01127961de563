//! What the fuzz targets share: `berth-server`'s pure parsers, and oracles (the OCI
//! specs' grammars written as the specs write them, as regular expressions, independently
//! of the hand-written parsers in `berth-core`) so a target can check a parser's every
//! answer, not only that it returns.

use std::sync::LazyLock;

/// `berth_server::endpoint`, the very source file, compiled here with only what it
/// imports (`berth-core`, `axum::http`) instead of the whole server crate. If it ever
/// imports from elsewhere in `berth-server`, this build fails and says so.
#[path = "../../crates/berth-server/src/endpoint.rs"]
pub mod endpoint;

/// `berth_server::range`, the very source file, compiled here as `endpoint` is.
#[path = "../../crates/berth-server/src/range.rs"]
pub mod range;

use regex::Regex;

fn anchored(pattern: &str) -> Regex {
    Regex::new(&format!("^(?:{pattern})$")).expect("oracle pattern compiles")
}

/// distribution-spec: `<name>` (and at most 255 bytes, as Berth and distribution bound it).
pub fn is_repo_name(s: &str) -> bool {
    static NAME: LazyLock<Regex> =
        LazyLock::new(|| anchored(r"[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*"));
    s.len() <= berth_core::name::MAX_NAME_LEN && NAME.is_match(s)
}

/// distribution-spec: `<reference>` as a tag.
pub fn is_tag(s: &str) -> bool {
    static TAG: LazyLock<Regex> = LazyLock::new(|| anchored(r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"));
    TAG.is_match(s)
}

/// image-spec: any well-formed digest, whatever its algorithm.
pub fn is_well_formed_digest(s: &str) -> bool {
    static DIGEST: LazyLock<Regex> = LazyLock::new(|| anchored(r"[a-z0-9]+([+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"));
    DIGEST.is_match(s)
}

/// image-spec: a SHA-256 digest, the only algorithm Berth stores content under.
pub fn is_sha256_digest(s: &str) -> bool {
    static SHA256: LazyLock<Regex> = LazyLock::new(|| anchored(r"sha256:[a-f0-9]{64}"));
    SHA256.is_match(s)
}
