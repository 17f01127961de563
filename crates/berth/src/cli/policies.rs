//! `berth project quota` and `berth project immutable`: a project's quota and its
//! immutable tag rules, through a running server's management API.

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, segment};
use crate::BoxError;

#[derive(Subcommand)]
pub enum ImmutableCommand {
    /// Tags matching PATTERN (a glob: `*` any run of characters, `?` one) never move to
    /// another digest and are never deleted.
    Add {
        project: String,
        pattern: String,
    },
    List {
        project: String,
    },
    Rm {
        project: String,
        pattern: String,
    },
}

pub(super) async fn immutable(command: ImmutableCommand, client: &Client) -> Result<(), BoxError> {
    let rules = |project: &str| format!("/projects/{}/immutable-rules", segment(project));
    match command {
        ImmutableCommand::Add { project, pattern } => {
            client.call(Method::POST, &rules(&project), Some(json!({ "pattern": pattern }))).await?;
            println!("tags matching {pattern} are immutable in {project}");
        }
        ImmutableCommand::List { project } => {
            for rule in client.get(&rules(&project)).await?.as_array().into_iter().flatten() {
                println!("{}", rule["pattern"].as_str().unwrap_or_default());
            }
        }
        ImmutableCommand::Rm { project, pattern } => {
            client.call(Method::DELETE, &format!("{}/{}", rules(&project), segment(&pattern)), None).await?;
            println!("removed the immutable rule {pattern} of {project}");
        }
    }
    Ok(())
}

/// Sets (`SIZE`: `500`, `10MiB`, `2GB`, …) or clears (`none`) a project's quota.
pub(super) async fn quota(name: &str, size: &str, client: &Client) -> Result<(), BoxError> {
    let limit = parse_size(size)?;
    let path = format!("/projects/{}", segment(name));
    let project = client.call(Method::PATCH, &path, Some(json!({ "quota_bytes": limit }))).await?;
    println!("{}", describe(&project));
    Ok(())
}

/// `NAME: USED of LIMIT used` for a project's JSON.
fn describe(project: &Value) -> String {
    let used = project["used_bytes"].as_u64().unwrap_or(0);
    match project["quota_bytes"].as_u64() {
        Some(limit) => format!("{}: {used} of {limit} bytes used", project["name"].as_str().unwrap_or_default()),
        None => format!("{}: {used} bytes used, no quota", project["name"].as_str().unwrap_or_default()),
    }
}

/// `none` (no limit), or a number of bytes with an optional unit: `K`/`KiB` (1024),
/// `KB` (1000), and likewise `M`, `G`, `T`; case-insensitive.
fn parse_size(size: &str) -> Result<Option<u64>, BoxError> {
    let lower = size.trim().to_ascii_lowercase();
    if lower == "none" {
        return Ok(None);
    }
    let split = lower.find(|c: char| !c.is_ascii_digit()).unwrap_or(lower.len());
    let (number, unit) = lower.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("invalid size {size:?}: a number of bytes, or none"))?;
    let multiplier: u64 = match unit.trim() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(
                format!("invalid size unit {other:?} in {size:?}: B, KiB, MiB, GiB, TiB, KB, MB, GB, TB").into()
            );
        }
    };
    Ok(Some(number.checked_mul(multiplier).ok_or_else(|| format!("size {size:?} is too large"))?))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_take_binary_and_decimal_units() {
        let parse = |s| super::parse_size(s).unwrap();
        assert_eq!(parse("none"), None);
        assert_eq!(parse("500"), Some(500));
        assert_eq!(parse("10MiB"), Some(10 << 20));
        assert_eq!(parse("10m"), Some(10 << 20));
        assert_eq!(parse("2GB"), Some(2_000_000_000));
        assert!(super::parse_size("ten").is_err());
        assert!(super::parse_size("1 parsec").is_err());
    }
}
