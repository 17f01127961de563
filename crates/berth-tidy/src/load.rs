//! Reading the real workspace: `cargo metadata` for the packages, std::fs for the sources.
//!
//! The packages are `cargo metadata --format-version 1 --no-deps` (the workspace's own
//! crates and what their manifests declare; nothing is resolved or downloaded). The
//! sources are every `.rs` file under each package's directory, skipping `target/` and
//! hidden directories, plus `fuzz/src` and `fuzz/fuzz_targets` (fuzz/ is its own
//! workspace, so `cargo metadata` does not list it; it is read under its package name).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::model::{DepKind, Dependency, Package, SourceFile, Workspace};

/// The workspace this crate is built in: two levels above its manifest.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The packages and sources of the workspace at `root`, sorted by crate and path.
pub fn load(root: &Path) -> Result<Workspace, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(&cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("running {cargo} metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("{cargo} metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let metadata: Value =
        serde_json::from_slice(&output.stdout).map_err(|e| format!("reading cargo metadata's output: {e}"))?;
    let mut workspace = Workspace::default();
    for p in metadata["packages"].as_array().ok_or("cargo metadata without packages")? {
        let name = p["name"].as_str().ok_or("a package without a name")?.to_string();
        let manifest = PathBuf::from(p["manifest_path"].as_str().ok_or("a package without a manifest_path")?);
        let dir = manifest.parent().ok_or("a manifest_path without a directory")?;
        workspace.packages.push(Package { name: name.clone(), dependencies: dependencies(p)? });
        read_tree(&name, dir, dir, &mut workspace.sources)?;
    }
    let fuzz = root.join("fuzz");
    if let Ok(manifest) = std::fs::read_to_string(fuzz.join("Cargo.toml")) {
        let name = package_name(&manifest).unwrap_or_else(|| "fuzz".into());
        for sub in ["src", "fuzz_targets"] {
            if fuzz.join(sub).is_dir() {
                read_tree(&name, &fuzz, &fuzz.join(sub), &mut workspace.sources)?;
            }
        }
    }
    workspace.packages.sort_by(|a, b| a.name.cmp(&b.name));
    workspace.sources.sort_by(|a, b| (&a.krate, &a.path).cmp(&(&b.krate, &b.path)));
    Ok(workspace)
}

fn dependencies(package: &Value) -> Result<Vec<Dependency>, String> {
    let mut out = Vec::new();
    for d in package["dependencies"].as_array().ok_or("a package without dependencies")? {
        let kind = match d["kind"].as_str() {
            None => DepKind::Normal,
            Some("dev") => DepKind::Dev,
            Some("build") => DepKind::Build,
            Some(other) => return Err(format!("unknown dependency kind {other}")),
        };
        out.push(Dependency {
            name: d["name"].as_str().ok_or("a dependency without a name")?.to_string(),
            kind,
            target: d["target"].as_str().map(String::from),
        });
    }
    Ok(out)
}

/// `name = "…"` in the manifest's `[package]` table.
fn package_name(manifest: &str) -> Option<String> {
    let mut in_package = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package && let Some(value) = line.strip_prefix("name").map(str::trim_start) {
            return value.strip_prefix('=')?.trim().trim_matches('"').to_string().into();
        }
    }
    None
}

/// Every `.rs` file under `dir`, as a path relative to `crate_dir`. A directory with its
/// own Cargo.toml is another package and is left to it.
fn read_tree(krate: &str, crate_dir: &Path, dir: &Path, out: &mut Vec<SourceFile>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name == "target" || name.starts_with('.') || path.join("Cargo.toml").exists() {
                continue;
            }
            read_tree(krate, crate_dir, &path, out)?;
        } else if name.ends_with(".rs") {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            let relative = path.strip_prefix(crate_dir).map_err(|e| e.to_string())?;
            let relative: Vec<&str> = relative.components().filter_map(|c| c.as_os_str().to_str()).collect();
            out.push(SourceFile { krate: krate.into(), path: relative.join("/"), text });
        }
    }
    Ok(())
}
