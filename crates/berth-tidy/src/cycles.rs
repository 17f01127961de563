//! Rule 5: no module imports from a module that depends on it, as far as the guard can see.
//!
//! For each crate's `src/`, the nodes are its top-level modules (`src/foo.rs` and
//! everything under `src/foo/` is `foo`) and the root (`lib.rs`/`main.rs`, the node
//! `crate`). Edges come from non-test code only:
//!
//! - in a module's file, `crate::N…` (also inside `use crate::{…}` groups, nested braces
//!   too) is an edge to `N` when `N` is a top-level module, else (an item defined in or
//!   re-exported by the root, or a glob) to `crate`; a `super::` or `self::` path is
//!   resolved from the file's place (and any inline `mod x { … }` it is in) the same way,
//!   so `super::` from `src/foo/bar.rs` stays inside `foo` and is no edge;
//! - in the root, a path `N::…` (`pub use N::…`, `N::Type`) or `crate::N`/`self::N` with
//!   `N` a top-level module is an edge `crate` → `N`. A bare `mod N;` is not: declaring a
//!   module is not depending on it.
//!
//! Submodules importing their parent's or an ancestor's siblings is fine: only the
//! top-level graph matters. Not seen: paths a macro generates, items reached through a
//! glob re-export (`pub use foo::*` is one edge to `foo`, but what later code takes
//! from the root through it counts as `crate`), `#[path]` attributes, and `src/bin/`.
//! Every strongly connected component with more than one node is reported, with one
//! import (the first, by file and line) per edge inside it.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{Rule, SourceFile, Violation};
use crate::sources::{module_path, read_all};

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
        let mut edges: BTreeMap<(String, String), Evidence> = BTreeMap::new();
        for (r, module) in &files {
            let from = module.first().map_or(ROOT, String::as_str);
            for p in r.code.paths() {
                let here: Vec<String> = module.iter().chain(&p.inline).cloned().collect();
                let Some(to) = target(&here, &p.segments, &modules) else { continue };
                if to != from {
                    edges.entry((from.to_string(), to.to_string())).or_insert_with(|| Evidence {
                        file: r.file.path.clone(),
                        line: p.line,
                        path: p.text(),
                    });
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

/// The top-level node a path names, seen from the module `here` (`[]` is the root), or
/// `None` when it names nothing of this crate's (another crate, a local child module).
fn target<'m>(here: &[String], segments: &[String], modules: &'m BTreeSet<String>) -> Option<&'m str> {
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
        Some(first) => modules.get(first).map(String::as_str).or(Some(ROOT)),
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
