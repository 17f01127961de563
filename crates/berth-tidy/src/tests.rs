//! The guard's tests: each rule fails on a small synthetic workspace and passes on a
//! clean one, and the real workspace keeps its shape.

use crate::*;

fn package(name: &str, deps: &[(&str, DepKind, Option<&str>)]) -> Package {
    Package {
        name: name.into(),
        dependencies: deps
            .iter()
            .map(|(d, kind, target)| Dependency { name: (*d).into(), kind: *kind, target: target.map(String::from) })
            .collect(),
    }
}

fn file(krate: &str, path: &str, text: &str) -> SourceFile {
    SourceFile::new(krate, path, text)
}

fn shown(violations: &[Violation]) -> Vec<String> {
    violations.iter().map(ToString::to_string).collect()
}

// Rule 1: the HTTP edge.

#[test]
fn a_service_crate_declaring_an_http_crate_is_reported_whatever_the_kind_or_target() {
    let packages = [package(
        "berth-jobs",
        &[
            ("axum", DepKind::Normal, None),
            ("hyper", DepKind::Dev, Some("cfg(unix)")),
            ("serde", DepKind::Normal, None),
        ],
    )];
    assert_eq!(
        shown(&http_edge(&packages, &[])),
        ["http-edge: berth-jobs: depends on axum", "http-edge: berth-jobs: depends on hyper (dev) for cfg(unix)"]
    );
}

#[test]
fn a_service_crate_naming_axum_or_status_code_outside_its_tests_is_reported() {
    let text = "//! Jobs.\nuse axum::{Router, body::Body};\n// axum::Router in a comment is no use\nfn f() -> StatusCode { todo!() }\nconst S: &str = \"hyper::Body\";\n#[cfg(test)]\nmod tests {\n    use hyper::Request;\n}\n";
    assert_eq!(
        shown(&http_edge(&[], &[file("berth-jobs", "src/lib.rs", text)])),
        [
            "http-edge: berth-jobs src/lib.rs:2: names axum::Router",
            "http-edge: berth-jobs src/lib.rs:2: names axum::body::Body",
            "http-edge: berth-jobs src/lib.rs:4: names StatusCode",
        ]
    );
}

#[test]
fn edge_crates_excepted_dependencies_and_clean_service_crates_pass_the_http_rule() {
    let packages = [
        package("berth-server", &[("axum", DepKind::Normal, None), ("tower", DepKind::Normal, None)]),
        package("berth", &[("hyper-util", DepKind::Normal, None)]),
        package("berth-storage", &[("http", DepKind::Normal, None), ("object_store", DepKind::Normal, None)]),
    ];
    let sources = [
        file("berth-server", "src/lib.rs", "//! Edge.\nuse axum::Router;\nuse http::StatusCode;\n"),
        file("berth-storage", "src/s3.rs", "//! S3.\nuse http::Method;\nuse berth_core::Digest;\n"),
        file("berth-jobs", "tests/it.rs", "//! Tests.\nuse axum::Router;\n"),
        file("berth-fuzz", "fuzz_targets/endpoint.rs", "//! Fuzzes the edge's parser.\nuse axum::http::Method;\n"),
    ];
    assert_eq!(shown(&http_edge(&packages, &sources)), Vec::<String>::new());
}

// Rule 2: berth-core knows no I/O.

#[test]
fn berth_core_declaring_an_io_crate_is_reported() {
    let packages = [package("berth-core", &[("tokio", DepKind::Dev, None), ("sha2", DepKind::Normal, None)])];
    assert_eq!(shown(&core_knows_no_io(&packages, &[])), ["core-no-io: berth-core: depends on tokio (dev)"]);
}

#[test]
fn berth_core_naming_std_fs_is_reported_even_inside_a_use_group() {
    let text = "//! Core.\nuse std::{fmt, net::TcpStream};\nfn f() {\n    let _ = std::fs::read(\"x\");\n    let _ = ::tokio::spawn;\n}\n";
    assert_eq!(
        shown(&core_knows_no_io(&[], &[file("berth-core", "src/digest.rs", text)])),
        [
            "core-no-io: berth-core src/digest.rs:2: names std::net::TcpStream",
            "core-no-io: berth-core src/digest.rs:4: names std::fs::read",
            "core-no-io: berth-core src/digest.rs:5: names tokio::spawn",
        ]
    );
}

#[test]
fn pure_berth_core_code_and_io_in_its_tests_or_in_other_crates_pass() {
    let packages = [
        package("berth-core", &[("serde", DepKind::Normal, None), ("thiserror", DepKind::Normal, None)]),
        package("berth-meta", &[("tokio", DepKind::Normal, None)]),
    ];
    let sources = [
        file(
            "berth-core",
            "src/lib.rs",
            "//! Core.\nuse std::fmt;\n/// Not std::fs.\npub struct Fsck;\n#[cfg(test)]\nmod tests {\n    use std::fs;\n}\n",
        ),
        file("berth-meta", "src/sqlite.rs", "//! SQLite.\nuse std::fs;\nuse tokio::sync::Mutex;\n"),
    ];
    assert_eq!(shown(&core_knows_no_io(&packages, &sources)), Vec::<String>::new());
}

// Rule 3: only the binary names a concrete backend.

#[test]
fn a_backend_named_in_a_server_file_is_reported_but_not_in_its_test_module() {
    let text = "//! Audit.\nuse berth_meta::MetadataStore;\npub fn open() -> berth_meta::SqliteStore { todo!() }\n\n#[cfg(test)]\nmod tests {\n    use berth_meta::SqliteStore;\n    fn s(_: SqliteStore) {}\n}\n";
    assert_eq!(
        shown(&only_the_binary_names_backends(&[file("berth-server", "src/audit.rs", text)])),
        ["concrete-backends: berth-server src/audit.rs:3: names SqliteStore outside tests"]
    );
}

#[test]
fn a_cfg_test_item_in_the_middle_of_a_file_hides_only_that_item() {
    let lib = "//! Server.\n#[cfg(test)]\nmod suite;\n#[cfg(test)]\nfn helper() -> SqliteStore {\n    todo!()\n}\npub fn f(_: PgStore) {}\n";
    let suite = "//! A suite.\nuse berth_storage::FsBlobStore;\n";
    assert_eq!(
        shown(&only_the_binary_names_backends(&[
            file("berth-server", "src/lib.rs", lib),
            file("berth-server", "src/suite.rs", suite),
        ])),
        ["concrete-backends: berth-server src/lib.rs:8: names PgStore outside tests"]
    );
}

#[test]
fn backends_named_by_the_wiring_their_own_crate_and_test_code_pass() {
    let sources = [
        file(
            "berth",
            "src/lib.rs",
            "//! Wiring.\nuse berth_meta::{PgStore, SqliteStore};\nuse berth_storage::S3BlobStore;\n",
        ),
        file("berth-meta", "src/lib.rs", "//! Meta.\npub use sqlite::SqliteStore;\npub use postgres::PgStore;\n"),
        file("berth-storage", "src/fs.rs", "//! Fs.\npub struct FsBlobStore;\n"),
        file("berth-server", "tests/it/main.rs", "//! It.\nuse berth_meta::SqliteStore;\n"),
        file("berth-server", "src/access/tests.rs", "//! Tests.\nuse berth_meta::SqliteStore;\n"),
        file("berth-server", "src/access/tests/more.rs", "//! Tests.\nuse berth_meta::PgStore;\n"),
        file("berth-server", "src/lib.rs", "//! Edge: names no SqliteStore.\npub struct SqliteStoreConfig;\n"),
        file("berth-testkit", "src/lib.rs", "//! Harness.\nuse berth_storage::FsBlobStore;\n"),
        file("berth-bench", "src/servers.rs", "//! Servers.\nuse berth_meta::PgStore;\n"),
    ];
    assert_eq!(shown(&only_the_binary_names_backends(&sources)), Vec::<String>::new());
}

// Rule 4: file docs.

#[test]
fn a_file_that_does_not_open_with_a_doc_line_is_reported() {
    let sources = [
        file("berth-core", "src/name.rs", "use std::fmt;\n//! Too late.\n"),
        file("berth-core", "src/empty.rs", ""),
        file("berth-core", "src/lib.rs", "/// An item doc, not a file doc.\npub struct A;\n"),
    ];
    assert_eq!(
        shown(&every_file_opens_with_a_doc(&sources)),
        [
            "file-docs: berth-core src/name.rs:1: opens with `use std::fmt;`, not a `//!` line saying what the file is",
            "file-docs: berth-core src/empty.rs:1: opens with ``, not a `//!` line saying what the file is",
            "file-docs: berth-core src/lib.rs:1: opens with `/// An item doc, not a file doc.`, not a `//!` line saying what the file is",
        ]
    );
}

#[test]
fn files_that_open_with_a_doc_line_pass() {
    let sources =
        [file("berth-core", "src/lib.rs", "//! Core.\n"), file("berth", "tests/it/main.rs", "//! It.\nmod api;\n")];
    assert_eq!(shown(&every_file_opens_with_a_doc(&sources)), Vec::<String>::new());
}

// Rule 5: module cycles.

#[test]
fn two_modules_importing_each_other_are_a_cycle() {
    let sources = [
        file("berth-jobs", "src/lib.rs", "//! Jobs.\nmod a;\nmod b;\n"),
        file("berth-jobs", "src/a.rs", "//! A.\nuse crate::b::B;\npub struct A;\n"),
        file("berth-jobs", "src/b.rs", "//! B.\n\nuse crate::a::A;\npub struct B;\n"),
    ];
    assert_eq!(
        shown(&no_module_cycles(&sources)),
        [
            "module-cycles: berth-jobs: modules a, b import each other:\n    a -> b: src/a.rs:2 crate::b::B\n    b -> a: src/b.rs:3 crate::a::A"
        ]
    );
}

#[test]
fn a_three_module_cycle_through_the_root_is_reported() {
    let sources = [
        file(
            "berth-jobs",
            "src/lib.rs",
            "//! Jobs.\nmod a;\nmod b;\npub use a::A;\npub struct Registry;\npub fn first() -> A {\n    todo!()\n}\n",
        ),
        file("berth-jobs", "src/a.rs", "//! A.\nuse crate::b::B;\npub struct A;\n"),
        file("berth-jobs", "src/b/mod.rs", "//! B.\nmod c;\n"),
        file("berth-jobs", "src/b/c.rs", "//! C: a submodule reaching the root.\nuse super::super::Registry;\n"),
    ];
    assert_eq!(
        shown(&no_module_cycles(&sources)),
        [
            "module-cycles: berth-jobs: modules crate, a, b import each other:\n    a -> b: src/a.rs:2 crate::b::B\n    b -> crate: src/b/c.rs:2 super::super::Registry\n    crate -> a: src/lib.rs:6 A"
        ]
    );
}

#[test]
fn a_root_that_only_reexports_from_a_module_using_its_trait_is_no_cycle() {
    // berth-storage's shape: the root defines the trait and re-exports the backend.
    let sources = [
        file(
            "berth-storage",
            "src/lib.rs",
            "//! Storage.\nmod fs;\npub use fs::{FsBlobStore, FsConfig as Config};\npub(crate) use self::fs::sync_dir;\npub trait BlobStore {}\n",
        ),
        file("berth-storage", "src/fs.rs", "//! Fs.\nuse crate::BlobStore;\npub struct FsBlobStore;\n"),
    ];
    assert_eq!(shown(&no_module_cycles(&sources)), Vec::<String>::new());
}

#[test]
fn a_path_to_a_reexported_item_is_an_edge_to_the_module_it_comes_from() {
    // `crate::Y` is `b::X`: an edge a -> b (here closing a cycle with b -> a), not a -> crate.
    let sources = [
        file(
            "berth-jobs",
            "src/lib.rs",
            "//! Jobs.\nmod a;\nmod b;\npub use b::X as Y;\npub use berth_core::Digest;\n",
        ),
        file("berth-jobs", "src/a.rs", "//! A.\nuse crate::{Digest, Y};\npub struct A;\n"),
        file("berth-jobs", "src/b.rs", "//! B.\npub struct X(crate::a::A);\n"),
    ];
    assert_eq!(
        shown(&no_module_cycles(&sources)),
        [
            "module-cycles: berth-jobs: modules a, b import each other:\n    a -> b: src/a.rs:2 crate::Y\n    b -> a: src/b.rs:2 crate::a::A"
        ]
    );
}

#[test]
fn a_root_whose_own_code_calls_a_module_using_a_root_item_is_a_cycle() {
    let sources = [
        file(
            "berth-jobs",
            "src/lib.rs",
            "//! Jobs.\nmod a;\npub use a::f;\npub struct Jobs;\npub fn start() {\n    a::f();\n}\n",
        ),
        file("berth-jobs", "src/a.rs", "//! A.\npub fn f() -> crate::Jobs {\n    crate::Jobs\n}\n"),
    ];
    assert_eq!(
        shown(&no_module_cycles(&sources)),
        [
            "module-cycles: berth-jobs: modules crate, a import each other:\n    a -> crate: src/a.rs:2 crate::Jobs\n    crate -> a: src/lib.rs:6 a::f"
        ]
    );
}

#[test]
fn nested_use_groups_and_super_paths_are_edges() {
    let sources = [
        file("berth-jobs", "src/lib.rs", "//! Jobs.\nmod a;\nmod b;\nmod c;\n"),
        file("berth-jobs", "src/a/mod.rs", "//! A.\nuse crate::{\n    b::x,\n    c::{d, e::{F, G}},\n};\n"),
        file("berth-jobs", "src/c.rs", "//! C.\nuse super::a::Y;\n"),
    ];
    assert_eq!(
        shown(&no_module_cycles(&sources)),
        [
            "module-cycles: berth-jobs: modules a, c import each other:\n    a -> c: src/a/mod.rs:4 crate::c::d\n    c -> a: src/c.rs:2 super::a::Y"
        ]
    );
}

#[test]
fn declarations_submodule_imports_tests_and_strings_are_not_edges() {
    let sources = [
        // The root declares every module and uses none: no edge from the root.
        file(
            "berth-jobs",
            "src/lib.rs",
            "//! Jobs.\npub mod a;\nmod b;\n/// See crate::b::run.\npub struct Registry;\n",
        ),
        file("berth-jobs", "src/a.rs", "//! A.\nuse crate::b::run;\nuse crate::Registry;\n"),
        file(
            "berth-jobs",
            "src/b/mod.rs",
            "//! B.\nmod inner;\npub fn run() {}\nconst S: &str = \"crate::a\";\n#[cfg(test)]\nmod tests {\n    use crate::a;\n}\n",
        ),
        // Reaching a sibling inside its own top-level module is no edge.
        file(
            "berth-jobs",
            "src/b/inner.rs",
            "//! Inner.\nuse super::run;\nuse super::super::b::run as again;\nuse crate::b::run as third;\n",
        ),
        file("berth-jobs", "src/b/tests.rs", "//! Tests.\nuse crate::a::A;\n"),
        file("berth-jobs", "tests/it.rs", "//! It.\nuse berth_jobs::a;\n"),
    ];
    assert_eq!(shown(&no_module_cycles(&sources)), Vec::<String>::new());
}

#[test]
fn an_inline_module_resolves_super_from_where_it_sits() {
    // `super::` inside `mod duration { … }` in src/config.rs is `config`, not the root.
    let sources = [
        file("berth", "src/lib.rs", "//! Berth.\nmod config;\npub use config::Config;\n"),
        file("berth", "src/config.rs", "//! Config.\npub struct Config;\nmod duration {\n    use super::Config;\n}\n"),
    ];
    assert_eq!(shown(&no_module_cycles(&sources)), Vec::<String>::new());
}

// Rule 6: long files.

#[test]
fn a_file_over_800_lines_of_non_test_code_is_reported() {
    let text = format!("//! Long.\n{}", "fn f() {}\n".repeat(800));
    assert_eq!(
        shown(&no_long_files(&[file("berth-jobs", "src/lib.rs", &text)])),
        ["file-length: berth-jobs src/lib.rs: 801 lines of non-test code (at most 800)"]
    );
}

#[test]
fn test_lines_do_not_count_toward_a_files_length() {
    let text = format!(
        "//! Long.\n{}#[cfg(test)]\nmod tests {{\n{}}}\n",
        "fn f() {}\n".repeat(700),
        "fn t() {}\n".repeat(300)
    );
    let sources = [file("berth-jobs", "src/lib.rs", &text), file("berth-jobs", "tests/long.rs", &"//\n".repeat(2000))];
    assert_eq!(shown(&no_long_files(&sources)), Vec::<String>::new());
}

// The lexer under the rules.

#[test]
fn comments_strings_and_char_literals_name_nothing() {
    let text = "//! Jobs: axum::Router is not ours.\n/* axum::a /* nested axum::b */ */\nconst A: &str = r#\"axum::c \"quoted\"\"#;\nconst B: char = '\"';\nconst C: &[u8] = b\"axum::d\";\nfn f<'a>(_: &'a str) -> axum::Real { todo!() }\n";
    assert_eq!(
        shown(&http_edge(&[], &[file("berth-jobs", "src/lib.rs", text)])),
        ["http-edge: berth-jobs src/lib.rs:6: names axum::Real"]
    );
}

// The real workspace.

#[test]
fn loading_the_workspace_finds_its_crates_dependencies_and_sources() {
    let workspace = load(&workspace_root()).expect("the workspace loads");
    let core = workspace.packages.iter().find(|p| p.name == CORE).expect("berth-core is a workspace member");
    assert!(core.dependencies.iter().any(|d| d.name == "serde_json" && d.kind == DepKind::Normal));
    let has = |krate: &str, path: &str| workspace.sources.iter().any(|f| f.krate == krate && f.path == path);
    assert!(has("berth-core", "src/lib.rs"));
    assert!(has("berth-tidy", "src/tests.rs"));
    assert!(has("berth-fuzz", "src/lib.rs"));
    assert!(!workspace.sources.iter().any(|f| f.path.starts_with("target/")));
}

#[test]
fn the_workspace_keeps_its_shape() {
    let workspace = load(&workspace_root()).expect("the workspace loads");
    let violations = check(&workspace);
    let mut report = String::new();
    let mut rules: Vec<Rule> = violations.iter().map(|v| v.rule).collect();
    rules.dedup();
    for rule in rules {
        report.push_str(&format!("\n{rule}: {}\n", rule.statement()));
        for v in violations.iter().filter(|v| v.rule == rule) {
            report.push_str(&format!("  {v}\n"));
        }
    }
    assert!(violations.is_empty(), "{} violations of the workspace's shape:\n{report}", violations.len());
}
