//! Which source files are test code, and which module a file is.
//!
//! Test code is: files under a `tests/` or `benches/` directory (the crate's integration
//! tests, or a `tests/` module directory inside `src/`), files named `tests.rs`, files of
//! a module declared `#[cfg(test)] mod name;` (and their submodules), whole files under
//! `#![cfg(test)]`, and inside any other file each `#[cfg(test)]` item (`lex.rs` cuts it
//! out). Berth keeps its test modules at the end of files, but a few `#[cfg(test)]` items
//! sit in the middle (`mod suite;` in `berth-meta`'s root, test-only helpers in
//! `clock.rs`), so the guard cuts the item, never "the rest of the file".
//!
//! Some rules also treat whole crates as test code (`berth-testkit`, `berth-bench`);
//! that is each rule's choice, not this module's.

use crate::lex::Code;
use crate::model::SourceFile;

/// A source file, lexed, with whether it is test code as a whole.
pub(crate) struct Read<'a> {
    pub file: &'a SourceFile,
    pub code: Code,
    pub test: bool,
}

pub(crate) fn read_all(sources: &[SourceFile]) -> Vec<Read<'_>> {
    let mut read: Vec<Read<'_>> = sources
        .iter()
        .map(|file| {
            let code = Code::read(&file.text);
            let test = is_test_path(&file.path) || code.whole_file_test;
            Read { file, code, test }
        })
        .collect();
    // `#[cfg(test)] mod suite;` makes `suite.rs` (and everything below it) test code.
    let mut test_modules: Vec<(&str, Vec<String>)> = Vec::new();
    for r in &read {
        if let Some(parent) = module_path(&r.file.path) {
            for name in &r.code.test_mods {
                let mut child = parent.clone();
                child.push(name.clone());
                test_modules.push((&r.file.krate, child));
            }
        }
    }
    for r in &mut read {
        if let Some(module) = module_path(&r.file.path)
            && test_modules.iter().any(|(krate, m)| *krate == r.file.krate && module.starts_with(m))
        {
            r.test = true;
        }
    }
    read
}

/// `tests.rs`, or anything under a `tests/` or `benches/` directory.
pub(crate) fn is_test_path(path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let Some((file, dirs)) = parts.split_last() else { return false };
    *file == "tests.rs" || dirs.iter().any(|d| *d == "tests" || *d == "benches")
}

/// The module a file under `src/` is: `src/lib.rs` and `src/main.rs` are the root (`[]`),
/// `src/a.rs` and `src/a/mod.rs` are `[a]`, `src/a/b.rs` is `[a, b]`. `None` outside
/// `src/` and for `src/bin/` (other crate roots).
pub(crate) fn module_path(path: &str) -> Option<Vec<String>> {
    let rest = path.strip_prefix("src/")?.strip_suffix(".rs")?;
    let mut parts: Vec<String> = rest.split('/').map(String::from).collect();
    if parts[0] == "bin" {
        return None;
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return Some(Vec::new());
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}
