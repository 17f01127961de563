//! What the rules read and what they report: packages, source files, violations.

use std::fmt;

/// A workspace crate and the dependencies its manifest declares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub dependencies: Vec<Dependency>,
}

/// One declared dependency (by package name, whatever it is renamed to).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dependency {
    pub name: String,
    pub kind: DepKind,
    /// `cfg(...)` or a target triple, for a `[target.….dependencies]` entry.
    pub target: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DepKind {
    Normal,
    Dev,
    Build,
}

/// One `.rs` file: its crate, its path inside the crate's directory (`/`-separated,
/// `src/lib.rs`, `tests/it/main.rs`) and its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceFile {
    pub krate: String,
    pub path: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(krate: &str, path: &str, text: &str) -> SourceFile {
        SourceFile { krate: krate.into(), path: path.into(), text: text.into() }
    }
}

/// Everything the rules look at.
#[derive(Clone, Debug, Default)]
pub struct Workspace {
    pub packages: Vec<Package>,
    pub sources: Vec<SourceFile>,
}

/// The rules, by the name a violation is printed with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    HttpEdge,
    CoreNoIo,
    ConcreteBackends,
    FileDocs,
    ModuleCycles,
    FileLength,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::HttpEdge => "http-edge",
            Rule::CoreNoIo => "core-no-io",
            Rule::ConcreteBackends => "concrete-backends",
            Rule::FileDocs => "file-docs",
            Rule::ModuleCycles => "module-cycles",
            Rule::FileLength => "file-length",
        }
    }

    /// The rule as ARCHITECTURE.md would state it.
    pub fn statement(self) -> &'static str {
        match self {
            Rule::HttpEdge => {
                "only the HTTP edge speaks HTTP: a service crate neither depends on nor names axum/hyper/tower"
            }
            Rule::CoreNoIo => {
                "berth-core knows no I/O: no runtime, database, network or file crate, no std::fs/net/process"
            }
            Rule::ConcreteBackends => {
                "only the binary (and tests) name a concrete backend; every other crate takes the traits"
            }
            Rule::FileDocs => "every source file opens with a `//!` line saying what it is",
            Rule::ModuleCycles => {
                "no module imports from a module that depends on it (the top-level module graph is acyclic)"
            }
            Rule::FileLength => "no file over 800 lines of non-test code (split it, or list it in LONG_FILES with why)",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A broken rule: which rule, where (a crate, maybe a file and line), what.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Violation {
    pub rule: Rule,
    pub krate: String,
    pub file: Option<String>,
    pub line: Option<usize>,
    pub what: String,
}

impl Violation {
    pub(crate) fn in_crate(rule: Rule, krate: &str, what: String) -> Violation {
        Violation { rule, krate: krate.into(), file: None, line: None, what }
    }

    pub(crate) fn at(rule: Rule, file: &SourceFile, line: Option<usize>, what: String) -> Violation {
        Violation { rule, krate: file.krate.clone(), file: Some(file.path.clone()), line, what }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.rule, self.krate)?;
        if let Some(file) = &self.file {
            write!(f, " {file}")?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        write!(f, ": {}", self.what)
    }
}
