//! Rule 5: no module imports from a module that depends on it, as far as the guard can see.
//!
//! For each crate's `src/`, the nodes are its top-level modules (`src/foo.rs` and
//! everything under `src/foo/` is `foo`) and the root (`lib.rs`/`main.rs`, the node
//! `crate`). Edges come from non-test code only:
//!
//! - in a module's file, `crate::N…` (also inside `use crate::{…}` groups, nested braces
//!   too) is an edge to `N` when `N` is a top-level module. `crate::X` for an item `X`
//!   the root imports from module `N` (`pub use N::X`, `pub use N::{X, …}`, `pub use
//!   N::X as Y` for `crate::Y`; a private `use N::X` too, children can name it) is an
//!   edge to `N`, where the item lives, and no edge at all when the root imports it from
//!   another crate. Only an item truly defined in the root file (or one the guard cannot
//!   place: see below) is an edge to `crate`. A `super::` or `self::` path is resolved
//!   from the file's place (and any inline `mod x { … }` it is in) the same way, so
//!   `super::` from `src/foo/bar.rs` stays inside `foo` and is no edge;
//! - in the root, a `pub use N::…` (or `pub(crate) use`, any `pub(…)` but `pub(self)`)
//!   is the crate's facade, not a dependency: no edge. The root's own code naming `N` is
//!   an edge `crate` → `N`: a path `N::…`, `crate::N`/`self::N`, a private `use N::…`,
//!   and a bare identifier spelled like a name the root re-exports from `N` (`fn open()
//!   -> Config` after `pub use config::Config`). A bare `mod N;` is no edge either:
//!   declaring a module is not depending on it.
//!
//! So a root that defines a trait and re-exports the modules implementing it is no
//! cycle, while a root whose functions call into a module that uses the root's items is.
//! Submodules importing their parent's or an ancestor's siblings is fine: only the
//! top-level graph matters. Not seen: paths a macro generates; what a glob brings in
//! (`crate::X` that only `pub use N::*` provides counts as `crate`, and `pub use N::*`
//! itself is facade, no edge); `use {a::X, b::Y}` groups without a leading path;
//! re-exports of re-exports are followed one step only; a local binding in the root
//! spelled like a re-exported name counts as naming it (a lexer cannot tell them
//! apart); `#[path]` attributes; `src/bin/`. Every strongly connected component with
//! more than one node is reported, with one import (the first, by file and line) per
//! edge inside it.

use std::collections::{BTreeMap, BTreeSet};

use crate::lex::{PathRef, Tok};
use crate::model::{Rule, SourceFile, Violation};
use crate::sources::{Read, module_path, read_all};

const ROOT: &str = "crate";

/// Where an edge was seen first.
struct Evidence {
    file: String,
    line: usize,
    path: String,
}

pub fn no_module_cycles(sources: &[SourceFile]) -> Vec<Violation> {
    let read = read_all(sources);
    let crates: BTreeSet<&str> = read.iter().map(|r| r.file.krate.as_str()).collect();
    let mut out = Vec::new();
    for krate in crates {
        let mut files: Vec<_> = read
            .iter()
            .filter(|r| r.file.krate == krate && !r.test)
            .filter_map(|r| module_path(&r.file.path).map(|m| (r, m)))
            .collect();
        files.sort_by(|a, b| a.0.file.path.cmp(&b.0.file.path));
        let modules: BTreeSet<String> = files.iter().filter_map(|(_, m)| m.first().cloned()).collect();
        let facade = facade(&files, &modules);
        let mut edges: BTreeMap<(String, String), Evidence> = BTreeMap::new();
        let mut add = |from: &str, to: &str, file: &SourceFile, line: usize, path: String| {
            if to != from {
                edges.entry((from.to_string(), to.to_string())).or_insert_with(|| Evidence {
                    file: file.path.clone(),
                    line,
                    path,
                });
            }
        };
        for (r, module) in &files {
            let from = module.first().map_or(ROOT, String::as_str);
            let in_root = module.is_empty();
            let mut reexports = Vec::new();
            for p in r.code.paths() {
                if in_root && is_reexport(&p) {
                    reexports.push(p.span);
                    continue;
                }
                let here: Vec<String> = module.iter().chain(&p.inline).cloned().collect();
                if let Some(to) = target(&here, &p.segments, &modules, &facade) {
                    add(from, to, r.file, p.line, p.text());
                }
            }
            if in_root {
                // The root's own code naming a re-exported item by its bare name
                // (`fn open() -> Config` after `pub use config::Config`) depends on the
                // module the item lives in, as `config::Config` would.
                let tokens = &r.code.tokens;
                for (k, t) in tokens.iter().enumerate() {
                    let Tok::Ident(name) = &t.tok else { continue };
                    let after_path_or_dot =
                        k.checked_sub(1).is_some_and(|p| matches!(tokens[p].tok, Tok::PathSep | Tok::Punct('.')));
                    if after_path_or_dot || reexports.iter().any(|&(s, e)| (s..e).contains(&k)) {
                        continue;
                    }
                    if let Some(Some(to)) = facade.get(name) {
                        add(ROOT, to, r.file, t.line, name.clone());
                    }
                }
            }
        }
        for component in cycles(&modules, &edges) {
            let mut what = format!("modules {} import each other:", component.join(", "));
            for ((from, to), e) in edges.iter().filter(|((f, t), _)| component.contains(f) && component.contains(t)) {
                what.push_str(&format!("\n    {from} -> {to}: {}:{} {}", e.file, e.line, e.path));
            }
            out.push(Violation::in_crate(Rule::ModuleCycles, krate, what));
        }
    }
    out
}

/// A leaf of a `pub use` (or `pub(crate) use`) item written in the root itself (not in
/// an inline module): part of the crate's facade.
fn is_reexport(p: &PathRef) -> bool {
    p.inline.is_empty() && p.import.as_ref().is_some_and(|i| i.public)
}

/// What each name the root imports (`pub use N::X`, `pub use N::X as Y` → `Y`, a private
/// `use N::X` too: a child may name it as `crate::X`) resolves to: `Some(node)` for a
/// module of this crate (or the root, for `use crate::X as Y`), `None` for another
/// crate's item. Globs and `as _` bind no name anyone can spell, so they are left out.
fn facade<'m>(files: &[(&Read<'_>, Vec<String>)], modules: &'m BTreeSet<String>) -> BTreeMap<String, Option<&'m str>> {
    let none = BTreeMap::new();
    let mut names = BTreeMap::new();
    for (r, _) in files.iter().filter(|(_, m)| m.is_empty()) {
        for p in r.code.paths().into_iter().filter(|p| p.inline.is_empty()) {
            let Some(import) = &p.import else { continue };
            if import.name == "*" || import.name == "_" {
                continue;
            }
            names.entry(import.name.clone()).or_insert_with(|| target(&[], &p.segments, modules, &none));
        }
    }
    names
}

/// The top-level node a path names, seen from the module `here` (`[]` is the root), or
/// `None` when it names nothing of this crate's (another crate, a local child module).
/// A path into the root (`crate::X`, `super::X` climbing to it) names the module `X`
/// when `X` is one, the module the root re-exports `X` from when `facade` says so (or
/// nothing of this crate's, when `X` is another crate's), else the root itself.
fn target<'m>(
    here: &[String],
    segments: &[String],
    modules: &'m BTreeSet<String>,
    facade: &BTreeMap<String, Option<&'m str>>,
) -> Option<&'m str> {
    let full: Vec<&String> = match segments[0].as_str() {
        "crate" => segments[1..].iter().collect(),
        "self" => here.iter().chain(&segments[1..]).collect(),
        "super" => {
            let ups = segments.iter().take_while(|s| *s == "super").count();
            let base = here.len().checked_sub(ups)?;
            here[..base].iter().chain(&segments[ups..]).collect()
        }
        // Outside the root a bare path is relative to its own module: a child, or another crate.
        first if here.is_empty() && modules.contains(first) => segments.iter().collect(),
        _ => return None,
    };
    match full.into_iter().find(|s| *s != "self") {
        Some(first) => match modules.get(first) {
            Some(module) => Some(module.as_str()),
            None => facade.get(first).copied().unwrap_or(Some(ROOT)),
        },
        None => Some(ROOT),
    }
}

/// Strongly connected components with more than one node, each listed root first then
/// by name, in that order too.
fn cycles(modules: &BTreeSet<String>, edges: &BTreeMap<(String, String), Evidence>) -> Vec<Vec<String>> {
    let mut nodes: Vec<String> = std::iter::once(ROOT.to_string()).chain(modules.iter().cloned()).collect();
    nodes.dedup();
    let reach = |start: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![start.to_string()];
        while let Some(n) = stack.pop() {
            for (_, to) in edges.keys().filter(|(f, _)| *f == n) {
                if seen.insert(to.clone()) {
                    stack.push(to.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = nodes.iter().map(|n| (n, reach(n))).collect();
    let mut done = BTreeSet::new();
    let mut out = Vec::new();
    for n in &nodes {
        if done.contains(n) {
            continue;
        }
        let component: Vec<String> =
            nodes.iter().filter(|m| *m == n || (reaches[n].contains(*m) && reaches[*m].contains(n))).cloned().collect();
        done.extend(component.iter().cloned());
        if component.len() > 1 {
            out.push(component);
        }
    }
    out
}
