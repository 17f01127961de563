//! `berth repo`: a project's repositories, a repository's tags, and deleting a whole
//! repository, through a running server's management API.

use clap::Subcommand;
use reqwest::Method;

use super::client::{Client, segment};
use crate::BoxError;

/// Names read per request (the server's largest page).
const PAGE: usize = 1000;

#[derive(Subcommand)]
pub enum RepoCommand {
    /// The repositories of a project.
    List { project: String },
    /// The tags of a repository (`team/app`).
    Tags { name: String },
    /// Delete a repository: its manifests, tags and blob links, in one step (project
    /// admins and maintainers). Garbage collection then frees the bytes nothing else uses.
    Delete { name: String },
}

pub(super) async fn repo(command: RepoCommand, client: &Client) -> Result<(), BoxError> {
    match command {
        RepoCommand::List { project } => names(client, &format!("/projects/{}/repositories", segment(&project))).await,
        RepoCommand::Tags { name } => names(client, &format!("/repositories/{}/tags", segment(&name))).await,
        RepoCommand::Delete { name } => {
            client.call(Method::DELETE, &format!("/repositories/{}", segment(&name)), None).await?;
            println!("deleted repository {name}");
            Ok(())
        }
    }
}

/// Prints the `name` of every entry of a paged listing, a page at a time.
async fn names(client: &Client, path: &str) -> Result<(), BoxError> {
    let mut last: Option<String> = None;
    loop {
        let after = last.as_deref().map(|l| format!("&last={}", segment(l))).unwrap_or_default();
        let page = client.get(&format!("{path}?n={PAGE}{after}")).await?;
        let entries = page.as_array().cloned().unwrap_or_default();
        for entry in &entries {
            println!("{}", entry["name"].as_str().unwrap_or_default());
        }
        match entries.last().and_then(|e| e["name"].as_str()) {
            Some(name) if entries.len() == PAGE => last = Some(name.to_owned()),
            _ => return Ok(()),
        }
    }
}
