//! Fuzz target: `Scope::parse` and `Scope::parse_all`, the `scope` of a token request.
//!
//! Checks: a parsed scope names a repository whose name is valid by itself (no `..`,
//! no empty component, no `:` smuggled in) or the catalog, and asks for at least one
//! action; its canonical form re-parses to the same scope; nothing that parses is longer
//! than the bound; `parse_all` accepts a space-separated list exactly when each member
//! parses.
#![no_main]

use berth_core::{RepoName, Resource, Scope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else { return };
    if let Ok(scope) = Scope::parse(value) {
        assert!(value.len() <= berth_core::scope::MAX_SCOPE_LEN);
        assert!(!scope.actions.is_empty(), "{value:?}: no action");
        if let Resource::Repository(name) = &scope.resource {
            assert!(!name.as_str().contains(':') && !name.as_str().contains(".."), "{value:?}");
            assert!(RepoName::parse(name.as_str()).is_ok_and(|n| &n == name), "{value:?}");
            assert!(value.contains(&format!(":{name}:")), "{value:?}: the name is not what was asked");
        }
        let canonical = scope.to_string();
        assert_eq!(Scope::parse(&canonical).as_ref(), Ok(&scope), "{value:?} -> {canonical:?}");
    }
    let each: Result<Vec<Scope>, _> = value.split(' ').filter(|s| !s.is_empty()).map(Scope::parse).collect();
    assert_eq!(Scope::parse_all([value]).is_ok(), each.is_ok(), "{value:?}");
});
