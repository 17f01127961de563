//! Repository names, tags and manifest references, validated by the spec's grammar.

use std::fmt;

use crate::digest::Digest;
use crate::error::{Error, ErrorKind};

/// Longest repository name accepted (as distribution does).
pub const MAX_NAME_LEN: usize = 255;

/// A repository name: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
///
/// The grammar excludes `..`, empty components and leading or trailing slashes, so a
/// name can never address anything outside its own namespace.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(s: &str) -> Result<RepoName, Error> {
        if s.is_empty() || s.len() > MAX_NAME_LEN || !s.split('/').all(valid_component) {
            return Err(Error::new(ErrorKind::NameInvalid).with_detail(s));
        }
        Ok(RepoName(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: alphanumeric runs joined by `.`, `_`, `__` or one or more `-`.
fn valid_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    if bytes.is_empty() || !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if alnum(b) {
            i += 1;
            continue;
        }
        // A separator run, necessarily followed by an alphanumeric (last byte is one).
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &component[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Tag, Error> {
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= 128
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes[1..].iter().all(|&b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok {
            return Err(Error::new(ErrorKind::TagInvalid).with_detail(s));
        }
        Ok(Tag(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest URL names: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reference {
    Tag(Tag),
    Digest(Digest),
}

impl Reference {
    /// A reference containing `:` is a digest; anything else must be a tag.
    pub fn parse(s: &str) -> Result<Reference, Error> {
        if s.contains(':') { Digest::parse(s).map(Reference::Digest) } else { Tag::parse(s).map(Reference::Tag) }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reference::Tag(t) => t.fmt(f),
            Reference::Digest(d) => d.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_parse() {
        for name in ["a", "library/alpine", "a.b_c__d---e/f0", "x/y/z", "0"] {
            assert!(RepoName::parse(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn traversal_uppercase_and_malformed_names_are_rejected() {
        for name in [
            "",
            "/a",
            "a/",
            "a//b",
            "..",
            "a/../b",
            "./a",
            "A",
            "library/Alpine",
            "a..b",
            "a___b",
            "-a",
            "a-",
            "a/.b",
            "a b",
            "a%2fb",
            "a\\b",
        ] {
            let err = RepoName::parse(name).unwrap_err();
            assert_eq!(err.kind, ErrorKind::NameInvalid, "{name}");
        }
        assert!(RepoName::parse(&"a".repeat(MAX_NAME_LEN + 1)).is_err());
        assert!(RepoName::parse(&"a".repeat(MAX_NAME_LEN)).is_ok());
    }

    #[test]
    fn tags_follow_the_spec_grammar() {
        for tag in ["latest", "_x", "1.0.0-rc_1", &"a".repeat(128)] {
            assert!(Tag::parse(tag).is_ok(), "{tag}");
        }
        for tag in ["", ".x", "-x", "a/b", "a:b", &"a".repeat(129)] {
            assert!(Tag::parse(tag).is_err(), "{tag}");
        }
    }

    #[test]
    fn reference_with_colon_is_a_digest() {
        assert!(matches!(Reference::parse("v1").unwrap(), Reference::Tag(_)));
        let d = format!("sha256:{}", "0".repeat(64));
        assert!(matches!(Reference::parse(&d).unwrap(), Reference::Digest(_)));
        assert_eq!(Reference::parse("sha256:zz").unwrap_err().kind, ErrorKind::DigestInvalid);
    }
}
