//! `berth upstream`: the registries proxy projects cache (docs/federation.md), through a
//! running server's management API. A password is read from standard input, never from
//! the command line (where `ps` would show it).

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use super::client::{Client, segment};
use crate::BoxError;

#[derive(Subcommand)]
pub enum UpstreamCommand {
    /// Every upstream: name, project, URL, whether it is the default, whether a password is
    /// stored.
    List,
    /// Add an upstream (`--replace`: replace the one of that name; a password left out is
    /// kept).
    Add {
        name: String,
        /// The registry's base URL, e.g. https://registry-1.docker.io.
        upstream_url: String,
        /// The proxy project (it must exist).
        #[arg(long)]
        project: String,
        #[arg(long)]
        username: Option<String>,
        /// Read the upstream's password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// A PEM file of CA certificates the upstream's certificate may chain to.
        #[arg(long)]
        upstream_ca: Option<std::path::PathBuf>,
        /// Seconds a cached tag is served before it is checked again (default 300).
        #[arg(long)]
        tag_ttl_secs: Option<i64>,
        /// A host name mirror requests name it by (`ns`); repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Map one-component names to library/… (default: on for Docker Hub).
        #[arg(long)]
        short_names: Option<bool>,
        /// Mirror requests without `ns` (docker's registry-mirrors) go to this upstream.
        #[arg(long)]
        default: bool,
        #[arg(long)]
        replace: bool,
    },
    /// Remove an upstream; its project keeps what it cached.
    Remove { name: String },
}

pub(super) async fn upstream(command: UpstreamCommand, client: &Client) -> Result<(), BoxError> {
    match command {
        UpstreamCommand::List => {
            for u in client.get("/upstreams").await?.as_array().cloned().unwrap_or_default() {
                println!("{}", line(&u));
            }
            Ok(())
        }
        UpstreamCommand::Add {
            name,
            upstream_url,
            project,
            username,
            password_stdin,
            upstream_ca,
            tag_ttl_secs,
            hosts,
            short_names,
            default,
            replace,
        } => {
            let mut spec = json!({ "name": name, "url": upstream_url, "project": project, "default": default });
            let fields = spec.as_object_mut().expect("an object");
            if let Some(username) = username {
                fields.insert("username".into(), Value::String(username));
            }
            if password_stdin {
                fields.insert("password".into(), Value::String(super::or_stdin(None, "password")?));
            }
            if let Some(path) = upstream_ca {
                let pem = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                fields.insert("ca_pem".into(), Value::String(pem));
            }
            if let Some(ttl) = tag_ttl_secs {
                fields.insert("tag_ttl_secs".into(), json!(ttl));
            }
            if !hosts.is_empty() {
                fields.insert("hosts".into(), json!(hosts));
            }
            if let Some(short) = short_names {
                fields.insert("short_names".into(), json!(short));
            }
            let stored = if replace {
                client.call(Method::PUT, &format!("/upstreams/{}", segment(&name)), Some(spec)).await?
            } else {
                client.call(Method::POST, "/upstreams", Some(spec)).await?
            };
            println!("{}", line(&stored));
            Ok(())
        }
        UpstreamCommand::Remove { name } => {
            client.call(Method::DELETE, &format!("/upstreams/{}", segment(&name)), None).await?;
            println!("removed upstream {name}");
            Ok(())
        }
    }
}

/// `NAME  PROJECT  URL  [default]  [password stored]`
fn line(u: &Value) -> String {
    let text = |k: &str| u[k].as_str().unwrap_or_default().to_owned();
    let mut out = format!("{}\t{}\t{}", text("name"), text("project"), text("url"));
    if u["default"] == true {
        out.push_str("\tdefault");
    }
    if u["has_password"] == true {
        out.push_str("\tpassword stored");
    }
    out
}
