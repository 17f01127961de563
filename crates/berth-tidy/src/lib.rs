//! Berth's architecture guard: the workspace's shape as tests that fail.
//!
//! In the manner of rust-analyzer's `tidy` tests, the rules ARCHITECTURE.md states in
//! prose are checked here against `cargo metadata` (which crate declares which
//! dependency) and the sources (what each file names):
//!
//! 1. the HTTP edge is the only crate that speaks HTTP ([`http_edge`]);
//! 2. `berth-core` knows no I/O ([`core_knows_no_io`]);
//! 3. only the binary names a concrete backend ([`only_the_binary_names_backends`]);
//! 4. every source file opens with a `//!` line ([`every_file_opens_with_a_doc`]);
//! 5. no module imports from a module that depends on it ([`no_module_cycles`]);
//! 6. no file is over 800 lines of non-test code ([`no_long_files`]).
//!
//! Every rule is a pure function of parsed inputs ([`Package`]s, [`SourceFile`]s) that
//! returns [`Violation`]s, so each can be shown to fail on a small synthetic workspace;
//! [`load`] reads the real one. The sources are read by a lexer, not a compiler (see
//! `lex.rs`): what a macro generates or a glob import brings in is invisible. A rule
//! belongs here when a reviewer would otherwise have to remember it on every change.

mod cycles;
mod lex;
mod load;
mod model;
mod rules;
mod sources;
#[cfg(test)]
mod tests;

pub use cycles::no_module_cycles;
pub use load::{load, workspace_root};
pub use model::{DepKind, Dependency, Package, Rule, SourceFile, Violation, Workspace};
pub use rules::{
    BACKENDS, CORE, CORE_IO_CRATES, EDGE_CRATES, HTTP_CRATES, HTTP_EXCEPTIONS, LONG_FILES, MAX_LINES, TEST_CRATES,
    WIRING, core_knows_no_io, every_file_opens_with_a_doc, http_edge, no_long_files, only_the_binary_names_backends,
};

/// Every rule over the whole workspace, in rule order.
pub fn check(workspace: &Workspace) -> Vec<Violation> {
    let (packages, sources) = (&workspace.packages, &workspace.sources);
    let mut all = http_edge(packages, sources);
    all.extend(core_knows_no_io(packages, sources));
    all.extend(only_the_binary_names_backends(sources));
    all.extend(every_file_opens_with_a_doc(sources));
    all.extend(no_module_cycles(sources));
    all.extend(no_long_files(sources));
    all
}
