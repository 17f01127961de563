//! Fuzz target: `RepoName::parse` against the distribution-spec's `<name>` grammar.
//!
//! Checks: a string parses exactly when the spec's regular expression (and the 255-byte
//! bound) accepts it; a parsed name displays as its input and so can never hold `..`, an
//! empty component, a leading or trailing `/`, or anything outside `[a-z0-9._/-]`.
#![no_main]

use berth_core::{ErrorKind, RepoName};
use berth_fuzz::is_repo_name;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match RepoName::parse(s) {
        Ok(name) => {
            assert!(is_repo_name(s), "accepted {s:?}");
            assert_eq!(name.as_str(), s);
            assert!(!s.split('/').any(|c| c.is_empty() || c == "." || c == ".."), "{s:?}");
            assert!(s.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/')), "{s:?}");
        }
        Err(e) => {
            assert!(!is_repo_name(s), "refused {s:?}");
            assert_eq!(e.kind, ErrorKind::NameInvalid);
        }
    }
});
