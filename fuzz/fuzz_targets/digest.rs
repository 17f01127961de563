//! Fuzz target: `Digest::parse` against the image-spec grammar, and `Digest::of`.
//!
//! Checks: a string parses exactly when it is `sha256:` + 64 lowercase hex; a well-formed
//! digest of another algorithm is `DIGEST_UNSUPPORTED`, anything else `DIGEST_INVALID`; a
//! parsed digest displays as its input and is also a valid `Reference`; the digest of any
//! bytes parses back to itself.
#![no_main]

use berth_core::{Digest, ErrorKind, Reference};
use berth_fuzz::{is_sha256_digest, is_well_formed_digest};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let own = Digest::of(data);
    assert_eq!(Digest::parse(own.as_str()).expect("a computed digest parses"), own);

    let Ok(s) = std::str::from_utf8(data) else { return };
    match Digest::parse(s) {
        Ok(digest) => {
            assert!(is_sha256_digest(s), "accepted {s:?}");
            assert_eq!(digest.to_string(), s);
            assert_eq!(digest.hex(), &s["sha256:".len()..]);
            assert_eq!(Reference::parse(s).expect("a digest is a reference"), Reference::Digest(digest));
        }
        Err(e) => {
            assert!(!is_sha256_digest(s), "refused {s:?}");
            let expected = if is_well_formed_digest(s) && !s.starts_with("sha256:") {
                ErrorKind::DigestUnsupported
            } else {
                ErrorKind::DigestInvalid
            };
            assert_eq!(e.kind, expected, "{s:?}");
        }
    }
});
