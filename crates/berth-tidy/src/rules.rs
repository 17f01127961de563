//! The rules about what a crate may depend on and name, and about each file's shape.
//!
//! Each rule is one function and its lists are `const`s, so changing what a crate may
//! do is a visible edit with its reason next to it. Module cycles are `cycles.rs`.

use std::collections::BTreeSet;

use crate::lex::PathRef;
use crate::model::{DepKind, Dependency, Package, Rule, SourceFile, Violation};
use crate::sources::{Read, read_all};

/// The crates allowed to speak HTTP, and why. Every other workspace crate is a service
/// crate, so a new crate is strict until it is listed here.
pub const EDGE_CRATES: &[(&str, &str)] = &[
    ("berth-server", "the HTTP edge"),
    ("berth", "the binary and its wiring"),
    ("berth-testkit", "the test harness drives the server over HTTP"),
    ("berth-bench", "the load generator is an HTTP client"),
    ("berth-tidy", "this guard: names the HTTP crates only to forbid them"),
];

/// The crates a service crate must not depend on (any kind, any target).
pub const HTTP_CRATES: &[&str] = &[
    "axum",
    "axum-core",
    "hyper",
    "hyper-util",
    "tower",
    "tower-http",
    "tower-service",
    "http-body",
    "http-body-util",
];

/// Path roots and identifiers a service crate's non-test code must not name.
const HTTP_PATHS: &[&str] = &["axum", "hyper"];
const HTTP_IDENTS: &[&str] = &["StatusCode"];

/// (crate, dependency, why): a service crate's allowed HTTP dependency. Empty of real
/// exceptions today; the one entry records a decision rather than lifting a ban.
pub const HTTP_EXCEPTIONS: &[(&str, &str, &str)] = &[
    // `http` is not in HTTP_CRATES (it is the vocabulary types, no server), so this
    // entry changes nothing: it says why berth-storage has it.
    ("berth-storage", "http", "object_store's presigned URLs take an http::Method"),
];

pub const CORE: &str = "berth-core";

/// What `berth-core` must not depend on (any kind, any target: a core whose tests need
/// a runtime is a core that does I/O).
pub const CORE_IO_CRATES: &[&str] = &[
    "tokio",
    "tokio-util",
    "async-std",
    "mio",
    "sqlx",
    "libsqlite3-sys",
    "reqwest",
    "object_store",
    "hyper",
    "axum",
    "rustls",
    "tokio-rustls",
    "tracing-subscriber",
];

/// Path prefixes `berth-core`'s non-test code must not name.
const CORE_IO_PATHS: &[&[&str]] = &[&["std", "fs"], &["std", "net"], &["std", "process"], &["tokio"]];

/// The concrete backends and the crate defining each.
pub const BACKENDS: &[(&str, &str)] = &[
    ("SqliteStore", "berth-meta"),
    ("PgStore", "berth-meta"),
    ("FsBlobStore", "berth-storage"),
    ("S3BlobStore", "berth-storage"),
];

/// The crate that chooses the backends.
pub const WIRING: &str = "berth";

/// Crates that are test code as a whole: they may name anything a test may.
pub const TEST_CRATES: &[&str] = &[
    "berth-testkit", // the test harness
    "berth-bench",   // the benchmarks
    "berth-fuzz",    // fuzz targets (fuzz/, its own workspace): they feed the edge's parsers
];

/// Non-test lines a file may have.
pub const MAX_LINES: usize = 800;

/// (crate, path, why): files allowed over MAX_LINES until they are split. None today.
pub const LONG_FILES: &[(&str, &str, &str)] = &[];

fn is_edge(krate: &str) -> bool {
    EDGE_CRATES.iter().any(|(c, _)| *c == krate)
}

fn describe(dep: &Dependency) -> String {
    let kind = match dep.kind {
        DepKind::Normal => "",
        DepKind::Dev => " (dev)",
        DepKind::Build => " (build)",
    };
    let target = dep.target.as_ref().map(|t| format!(" for {t}")).unwrap_or_default();
    format!("depends on {}{kind}{target}", dep.name)
}

/// Non-test paths of non-test files matching `hit`, one violation per line and path.
fn named_paths<'a>(
    rule: Rule,
    read: &[Read<'a>],
    crates: impl Fn(&str) -> bool,
    hit: impl Fn(&PathRef) -> bool,
    idents: &[&str],
) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in read.iter().filter(|r| !r.test && crates(&r.file.krate)) {
        let mut seen = BTreeSet::new();
        for p in r.code.paths().iter().filter(|p| hit(p)) {
            seen.insert((p.line, p.text()));
        }
        for (ident, line) in r.code.idents().filter(|(i, _)| idents.contains(i)) {
            seen.insert((line, ident.to_string()));
        }
        out.extend(
            seen.into_iter().map(|(line, name)| Violation::at(rule, r.file, Some(line), format!("names {name}"))),
        );
    }
    out
}

/// Rule 1: a service crate neither declares an HTTP crate nor names `axum::`, `hyper::`
/// or `StatusCode` outside its tests.
pub fn http_edge(packages: &[Package], sources: &[SourceFile]) -> Vec<Violation> {
    let mut out = Vec::new();
    for p in packages.iter().filter(|p| !is_edge(&p.name)) {
        for d in &p.dependencies {
            let excepted = HTTP_EXCEPTIONS.iter().any(|(c, dep, _)| *c == p.name && *dep == d.name);
            if HTTP_CRATES.contains(&d.name.as_str()) && !excepted {
                out.push(Violation::in_crate(Rule::HttpEdge, &p.name, describe(d)));
            }
        }
    }
    let read = read_all(sources);
    let hit = |p: &PathRef| p.segments.len() > 1 && HTTP_PATHS.contains(&p.segments[0].as_str());
    let service = |k: &str| !is_edge(k) && !TEST_CRATES.contains(&k);
    out.extend(named_paths(Rule::HttpEdge, &read, service, hit, HTTP_IDENTS));
    out
}

/// Rule 2: `berth-core` declares no I/O crate and names no `std::fs`, `std::net`,
/// `std::process` or `tokio::` outside its tests.
pub fn core_knows_no_io(packages: &[Package], sources: &[SourceFile]) -> Vec<Violation> {
    let mut out = Vec::new();
    for p in packages.iter().filter(|p| p.name == CORE) {
        for d in p.dependencies.iter().filter(|d| CORE_IO_CRATES.contains(&d.name.as_str())) {
            out.push(Violation::in_crate(Rule::CoreNoIo, &p.name, describe(d)));
        }
    }
    let read = read_all(sources);
    let hit = |p: &PathRef| {
        CORE_IO_PATHS
            .iter()
            .any(|prefix| p.segments.len() >= prefix.len() && p.segments.iter().zip(*prefix).all(|(a, b)| a == b))
    };
    out.extend(named_paths(Rule::CoreNoIo, &read, |k| k == CORE, hit, &[]));
    out
}

/// Rule 3: `SqliteStore`, `PgStore`, `FsBlobStore` and `S3BlobStore` are named only by
/// the wiring (`berth`), the crate defining each, and test code.
pub fn only_the_binary_names_backends(sources: &[SourceFile]) -> Vec<Violation> {
    let mut out = Vec::new();
    let read = read_all(sources);
    for r in read.iter().filter(|r| !r.test && r.file.krate != WIRING && !TEST_CRATES.contains(&r.file.krate.as_str()))
    {
        let mut seen = BTreeSet::new();
        for (ident, line) in r.code.idents() {
            if BACKENDS.iter().any(|(name, home)| *name == ident && *home != r.file.krate) {
                seen.insert((line, ident));
            }
        }
        out.extend(seen.into_iter().map(|(line, name)| {
            Violation::at(Rule::ConcreteBackends, r.file, Some(line), format!("names {name} outside tests"))
        }));
    }
    out
}

/// Rule 4: the first line of every source file is a `//!` doc line.
pub fn every_file_opens_with_a_doc(sources: &[SourceFile]) -> Vec<Violation> {
    sources
        .iter()
        .filter(|f| !f.text.lines().next().is_some_and(|l| l.starts_with("//!")))
        .map(|f| {
            let first: String = f.text.lines().next().unwrap_or("").chars().take(60).collect();
            Violation::at(
                Rule::FileDocs,
                f,
                Some(1),
                format!("opens with `{first}`, not a `//!` line saying what the file is"),
            )
        })
        .collect()
}

/// Rule 6: no file has more than MAX_LINES lines outside its test items, unless
/// LONG_FILES lists it; an entry of LONG_FILES that is no longer needed is reported too.
pub fn no_long_files(sources: &[SourceFile]) -> Vec<Violation> {
    let mut out = Vec::new();
    for r in read_all(sources).iter().filter(|r| !r.test) {
        let lines = r.code.non_test_lines();
        let listed = LONG_FILES.iter().any(|(k, p, _)| *k == r.file.krate && *p == r.file.path);
        if lines > MAX_LINES && !listed {
            out.push(Violation::at(
                Rule::FileLength,
                r.file,
                None,
                format!("{lines} lines of non-test code (at most {MAX_LINES})"),
            ));
        } else if lines <= MAX_LINES && listed {
            out.push(Violation::at(
                Rule::FileLength,
                r.file,
                None,
                format!("{lines} lines now: remove it from LONG_FILES"),
            ));
        }
    }
    out
}
