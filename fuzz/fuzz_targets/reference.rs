//! Fuzz target: `Tag::parse` and `Reference::parse` (a manifest URL's last segment)
//! against the distribution-spec's grammars.
//!
//! Checks: a tag parses exactly when the spec's tag expression accepts it; a reference
//! with a `:` is a digest (and answers as `Digest::parse` does), one without is a tag
//! (and answers as `Tag::parse` does); whatever parses displays as its input.
#![no_main]

use berth_core::{Digest, ErrorKind, Reference, Tag};
use berth_fuzz::{is_sha256_digest, is_tag};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let tag = Tag::parse(s);
    match &tag {
        Ok(t) => {
            assert!(is_tag(s), "accepted tag {s:?}");
            assert_eq!(t.as_str(), s);
        }
        Err(e) => {
            assert!(!is_tag(s), "refused tag {s:?}");
            assert_eq!(e.kind, ErrorKind::TagInvalid);
        }
    }
    let reference = Reference::parse(s);
    if let Ok(r) = &reference {
        assert_eq!(r.to_string(), s);
    }
    if s.contains(':') {
        assert!(tag.is_err(), "a tag holds no ':': {s:?}");
        assert_eq!(reference.is_ok(), is_sha256_digest(s), "{s:?}");
        match (reference, Digest::parse(s)) {
            (Ok(r), Ok(d)) => assert_eq!(r, Reference::Digest(d)),
            (Err(a), Err(b)) => assert_eq!(a.kind, b.kind),
            (r, d) => panic!("Reference::parse {r:?} disagrees with Digest::parse {d:?} on {s:?}"),
        }
    } else {
        match (reference, tag) {
            (Ok(r), Ok(t)) => assert_eq!(r, Reference::Tag(t)),
            (Err(a), Err(b)) => assert_eq!(a.kind, b.kind),
            (r, t) => panic!("Reference::parse {r:?} disagrees with Tag::parse {t:?} on {s:?}"),
        }
    }
});
