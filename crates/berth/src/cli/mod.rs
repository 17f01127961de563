//! `berth` subcommands that manage a registry: `login`, `user`, `project`, `repo`
//! (`repos.rs`), `upstream` (`upstreams.rs`), `replication` (`replication.rs`), `member`, `robot`, `audit`, `retention`, `scrub` and `gc` (`gc.rs`) call
//! a running server's management API (`client.rs`); `user import-htpasswd` and `admin
//! reset-password` work on a stopped server's data (`offline.rs`). Not `berth serve`
//! (that is `main.rs`).

use std::io::BufRead;
use std::time::Duration;

use clap::Subcommand;
use reqwest::Method;
use serde_json::{Value, json};

use crate::BoxError;

pub mod client;
mod gc;
mod offline;
mod policies;
mod replication;
mod repos;
mod retention;
mod scrub;
mod upstreams;

use client::{Client, Login, Remote, segment};
pub use offline::{AdminCommand, Offline};
pub use policies::ImmutableCommand;
pub use replication::ReplicationCommand;
pub use repos::RepoCommand;
pub use retention::RetentionCommand;
pub use upstreams::UpstreamCommand;

#[derive(Subcommand)]
pub enum Command {
    /// Check credentials against a server and keep them in the login file (mode 0600)
    /// for the other commands.
    Login {
        /// The server, e.g. https://registry.example or http://127.0.0.1:5000.
        url: String,
        #[arg(long, env = "BERTH_USER")]
        user: String,
        /// The password; without it, read from the first line of standard input.
        #[arg(long, env = "BERTH_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// A PEM file of CA certificates trusted besides the system's; kept in the login
        /// file (as its path) for the commands that follow.
        #[arg(long, env = "BERTH_CA_CERT")]
        ca_cert: Option<std::path::PathBuf>,
    },
    /// Users: create, list, change passwords, disable, make administrators.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Projects: create, list, make public or private, delete when empty.
    Project {
        #[command(subcommand)]
        command: ProjectCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Repositories: list a project's, list a repository's tags, delete one.
    Repo {
        #[command(subcommand)]
        command: RepoCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Upstream registries that proxy projects cache (system administrators).
    Upstream {
        #[command(subcommand)]
        command: UpstreamCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Replication to other registries: list and run rules, see executions (system
    /// administrators).
    Replication {
        #[command(subcommand)]
        command: ReplicationCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// A project's members and their roles.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Robot accounts for CI: the secret is printed once, at creation or rotation.
    Robot {
        #[command(subcommand)]
        command: RobotCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Re-hash every stored blob on the server and report those missing, truncated or not
    /// matching their digest (they are no longer served); shows progress on a terminal.
    Scrub {
        #[command(flatten)]
        remote: Remote,
    },
    /// Read the audit log, newest first.
    Audit {
        /// Entries of this user or robot.
        #[arg(long)]
        actor: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// An operation (`manifest.push`) or a prefix ending in `.` (`robot.`).
        #[arg(long)]
        operation: Option<String>,
        /// Entries of the last DURATION (e.g. 1h, 7d).
        #[arg(long, value_parser = humantime::parse_duration)]
        since: Option<Duration>,
        /// Entries older than this id (to continue a listing).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        remote: Remote,
    },
    /// Token-signing keys: list them, rotate (a new key signs from now on; the old ones
    /// verify until their tokens expire), or revoke one (it verifies nothing more: at once
    /// on the node asked, within a minute on the others). System administrators.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retention policies: set, show, remove, run (or dry-run) them.
    Retention {
        #[command(subcommand)]
        command: RetentionCommand,
        #[command(flatten)]
        remote: Remote,
    },
    /// Garbage collection: run now (`--dry-run` lists what would go), or `runs`.
    Gc(gc::GcArgs),
    /// Recovery on a stopped server's data.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user; without --new-password a random one is generated and printed.
    Create {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Change a password (your own needs --old-password; administrators set anyone's).
    /// Without --new-password, read from the first line of standard input.
    Passwd {
        name: String,
        #[arg(long, env = "BERTH_NEW_PASSWORD", hide_env_values = true)]
        new_password: Option<String>,
        #[arg(long, env = "BERTH_OLD_PASSWORD", hide_env_values = true)]
        old_password: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
    Disable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    Enable {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Make a user a system administrator (--revoke: no longer one).
    Admin {
        name: String,
        #[arg(long)]
        revoke: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Import Apache htpasswd users (bcrypt, `htpasswd -B`) into a stopped server's data;
    /// they keep their passwords.
    ImportHtpasswd {
        file: std::path::PathBuf,
        #[command(flatten)]
        offline: Offline,
    },
}

#[derive(Subcommand)]
pub enum ProjectCommand {
    Create {
        name: String,
        /// Anonymous pulls allowed (private by default).
        #[arg(long)]
        public: bool,
    },
    List,
    /// Allow anonymous pulls.
    Public {
        name: String,
    },
    /// Members only.
    Private {
        name: String,
    },
    /// Delete a project that holds no repository, with its members and robots.
    Delete {
        name: String,
    },
    /// Limit the bytes of blobs a project's repositories hold: SIZE (`500`, `10MiB`,
    /// `2GB`) or `none`. Lowering it deletes nothing; pushes are refused past it.
    Quota {
        name: String,
        size: String,
    },
    /// Immutable tag rules: tags matching a pattern never move nor go.
    Immutable {
        #[command(subcommand)]
        command: ImmutableCommand,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// The keys that verify tokens now: id, algorithm, created, retired.
    List,
    /// Make a new key the one that signs.
    Rotate,
    /// Revoke a key at once: every token it signed stops verifying (the key that signs is
    /// replaced first).
    Revoke { kid: String },
}

#[derive(Subcommand)]
pub enum MemberCommand {
    /// Add a user to a project, or change its role: project-admin, maintainer, developer,
    /// guest or limited-guest.
    Set {
        project: String,
        user: String,
        role: String,
    },
    Rm {
        project: String,
        user: String,
    },
    List {
        project: String,
    },
}

#[derive(Subcommand)]
pub enum RobotCommand {
    /// Create `robot$PROJECT+NAME` (with --project) or a system robot `robot$NAME`
    /// (with --grant); prints its secret once.
    Create {
        name: String,
        /// The project the robot belongs to; --permissions are its permissions there.
        #[arg(long, requires = "permissions")]
        project: Option<String>,
        /// Comma-separated: pull, push, delete, list-repositories, …
        #[arg(long, value_delimiter = ',')]
        permissions: Vec<String>,
        /// A system robot's grant, PROJECT=PERM,PERM (repeatable).
        #[arg(long = "grant", conflicts_with = "project")]
        grants: Vec<String>,
        #[arg(long, default_value = "")]
        description: String,
        /// Expires after this long (e.g. 90d); never by default.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires_in: Option<Duration>,
        /// A keyless robot: a JSON file with the OIDC issuer, audiences, subject and claim
        /// rules it trusts (docs/access.md); it gets no secret.
        #[arg(long)]
        trust: Option<std::path::PathBuf>,
    },
    /// Every robot (system administrators), or a project's.
    List {
        #[arg(long)]
        project: Option<String>,
    },
    /// A new secret, printed once; the old one stops working.
    Rotate {
        name: String,
    },
    Disable {
        name: String,
    },
    Enable {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// Runs a management command.
pub async fn run(command: Command) -> Result<(), BoxError> {
    match command {
        Command::Login { url, user, password, ca_cert } => login(url, user, password, ca_cert).await,
        Command::User { command } => user(command).await,
        Command::Project { command, remote } => project(command, &Client::new(&remote)?).await,
        Command::Repo { command, remote } => repos::repo(command, &Client::new(&remote)?).await,
        Command::Upstream { command, remote } => upstreams::upstream(command, &Client::new(&remote)?).await,
        Command::Replication { command, remote } => replication::replication(command, &Client::new(&remote)?).await,
        Command::Member { command, remote } => member(command, &Client::new(&remote)?).await,
        Command::Robot { command, remote } => robot(command, &Client::new(&remote)?).await,
        Command::Scrub { remote } => scrub::scrub(&Client::new(&remote)?).await,
        Command::Audit { actor, project, operation, since, before, limit, remote } => {
            let mut query = form_urlencoded::Serializer::new(String::new());
            for (key, value) in [("user", actor), ("project", project), ("operation", operation)] {
                if let Some(value) = value {
                    query.append_pair(key, &value);
                }
            }
            if let Some(since) = since {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                query.append_pair("since", &now.saturating_sub(since).as_millis().to_string());
            }
            if let Some(before) = before {
                query.append_pair("before", &before.to_string());
            }
            query.append_pair("limit", &limit.to_string());
            let entries = Client::new(&remote)?.get(&format!("/audit?{}", query.finish())).await?;
            for e in entries.as_array().into_iter().flatten() {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    e["id"],
                    e["at_ms"],
                    text(&e["actor"]),
                    text(&e["address"]),
                    text(&e["operation"]),
                    text(&e["resource"]),
                    text(&e["outcome"]),
                    text(&e["detail"]),
                    e["count"],
                );
            }
            Ok(())
        }
        Command::Keys { command, remote } => keys(command, &Client::new(&remote)?).await,
        Command::Retention { command, remote } => retention::retention(command, &Client::new(&remote)?).await,
        Command::Gc(args) => gc::gc(args).await,
        Command::Admin { command } => offline::admin(command).await,
    }
}

async fn keys(command: KeysCommand, client: &Client) -> Result<(), BoxError> {
    let show = |k: &Value| {
        println!("{}\t{}\t{}\t{}", text(&k["kid"]), text(&k["algorithm"]), k["created_at"], k["retired_at"])
    };
    match command {
        KeysCommand::List => client.get("/signing-keys").await?.as_array().into_iter().flatten().for_each(show),
        KeysCommand::Rotate => {
            let key = client.call(Method::POST, "/signing-keys", None).await?;
            println!("signing with the new key {}", text(&key["kid"]));
        }
        KeysCommand::Revoke { kid } => {
            client.call(Method::DELETE, &format!("/signing-keys/{}", segment(&kid)), None).await?;
            println!("revoked the key {kid}");
        }
    }
    Ok(())
}

/// A JSON string as it is, anything else (`null`) as `-`.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or("-")
}

/// `given`, or the first line of standard input.
fn or_stdin(given: Option<String>, what: &str) -> Result<String, BoxError> {
    if let Some(given) = given {
        return Ok(given);
    }
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']).to_owned();
    if line.is_empty() {
        return Err(format!("no {what}: pass it as a flag or on standard input").into());
    }
    Ok(line)
}

async fn login(
    url: String,
    user: String,
    password: Option<String>,
    ca_cert: Option<std::path::PathBuf>,
) -> Result<(), BoxError> {
    let password = or_stdin(password, "password")?;
    // Kept as an absolute path: the commands that follow may run from elsewhere.
    let ca_cert = ca_cert.map(std::path::absolute).transpose()?;
    let client = Client::with(&url, user.clone(), password.clone(), ca_cert.as_deref())?;
    let me = client.get("/me").await?;
    let path = Login { url, user, password, ca_cert }.write()?;
    println!("logged in as {} (credentials in {})", text(&me["name"]), path.display());
    Ok(())
}

async fn user(command: UserCommand) -> Result<(), BoxError> {
    match command {
        UserCommand::Create { name, admin, new_password, remote } => {
            let generated = new_password.is_none();
            let password = new_password.unwrap_or_else(berth_access::password::random_secret);
            let body = json!({ "name": name, "password": password, "admin": admin });
            Client::new(&remote)?.call(Method::POST, "/users", Some(body)).await?;
            println!("created user {name}");
            if generated {
                println!("password: {password}");
            }
        }
        UserCommand::List { remote } => {
            for u in Client::new(&remote)?.get("/users?n=1000").await?.as_array().into_iter().flatten() {
                let flags = [(u["admin"] == true, "admin"), (u["disabled"] == true, "disabled")];
                let flags: Vec<&str> = flags.iter().filter(|(on, _)| *on).map(|(_, f)| *f).collect();
                println!("{}\t{}", text(&u["name"]), flags.join(","));
            }
        }
        UserCommand::Passwd { name, new_password, old_password, remote } => {
            let password = or_stdin(new_password, "new password")?;
            let body = json!({ "password": password, "old_password": old_password });
            let path = format!("/users/{}/password", segment(&name));
            Client::new(&remote)?.call(Method::PUT, &path, Some(body)).await?;
            println!("password of {name} changed");
        }
        UserCommand::Disable { name, remote } => patch_user(&remote, &name, json!({ "disabled": true })).await?,
        UserCommand::Enable { name, remote } => patch_user(&remote, &name, json!({ "disabled": false })).await?,
        UserCommand::Admin { name, revoke, remote } => patch_user(&remote, &name, json!({ "admin": !revoke })).await?,
        UserCommand::ImportHtpasswd { file, offline } => offline::import_htpasswd(&file, &offline).await?,
    }
    Ok(())
}

async fn patch_user(remote: &Remote, name: &str, body: Value) -> Result<(), BoxError> {
    let user = Client::new(remote)?.call(Method::PATCH, &format!("/users/{}", segment(name)), Some(body)).await?;
    println!("{}\tadmin={}\tdisabled={}", text(&user["name"]), user["admin"], user["disabled"]);
    Ok(())
}

async fn project(command: ProjectCommand, client: &Client) -> Result<(), BoxError> {
    let set_public = async |name: &str, public: bool| {
        client.call(Method::PATCH, &format!("/projects/{}", segment(name)), Some(json!({ "public": public }))).await
    };
    match command {
        ProjectCommand::Create { name, public } => {
            client.call(Method::POST, "/projects", Some(json!({ "name": name, "public": public }))).await?;
            println!("created project {name} ({})", if public { "public" } else { "private" });
        }
        ProjectCommand::List => {
            for p in client.get("/projects?n=1000").await?.as_array().into_iter().flatten() {
                println!("{}\t{}", text(&p["name"]), if p["public"] == true { "public" } else { "private" });
            }
        }
        ProjectCommand::Public { name } => {
            set_public(&name, true).await?;
            println!("project {name} is public");
        }
        ProjectCommand::Private { name } => {
            set_public(&name, false).await?;
            println!("project {name} is private");
        }
        ProjectCommand::Delete { name } => {
            client.call(Method::DELETE, &format!("/projects/{}", segment(&name)), None).await?;
            println!("deleted project {name}");
        }
        ProjectCommand::Quota { name, size } => policies::quota(&name, &size, client).await?,
        ProjectCommand::Immutable { command } => policies::immutable(command, client).await?,
    }
    Ok(())
}

async fn member(command: MemberCommand, client: &Client) -> Result<(), BoxError> {
    let path = |project: &str, user: &str| format!("/projects/{}/members/{}", segment(project), segment(user));
    match command {
        MemberCommand::Set { project, user, role } => {
            client.call(Method::PUT, &path(&project, &user), Some(json!({ "role": role }))).await?;
            println!("{user} is {role} in {project}");
        }
        MemberCommand::Rm { project, user } => {
            client.call(Method::DELETE, &path(&project, &user), None).await?;
            println!("{user} removed from {project}");
        }
        MemberCommand::List { project } => {
            let members = client.get(&format!("/projects/{}/members?n=1000", segment(&project))).await?;
            for m in members.as_array().into_iter().flatten() {
                println!("{}\t{}", text(&m["user"]), text(&m["role"]));
            }
        }
    }
    Ok(())
}

async fn robot(command: RobotCommand, client: &Client) -> Result<(), BoxError> {
    let at = |name: &str| format!("/robots/{}", segment(name));
    match command {
        RobotCommand::Create { name, project, permissions, grants, description, expires_in, trust } => {
            let trust: Option<Value> = match trust {
                Some(file) => Some(serde_json::from_slice(&std::fs::read(&file)?)?),
                None => None,
            };
            let expires_at = match expires_in {
                Some(d) => Some((std::time::SystemTime::now() + d).duration_since(std::time::UNIX_EPOCH)?.as_secs()),
                None => None,
            };
            let (path, grants) = match &project {
                Some(p) => (
                    format!("/projects/{}/robots", segment(p)),
                    vec![json!({ "project": p, "permissions": permissions })],
                ),
                None => ("/robots".to_owned(), grants.iter().map(|g| parse_grant(g)).collect::<Result<_, _>>()?),
            };
            let body = json!({
                "name": name, "description": description, "grants": grants, "expires_at": expires_at, "trust": trust,
            });
            let created = client.call(Method::POST, &path, Some(body)).await?;
            println!("created robot {}", text(&created["robot"]["name"]));
            if let Some(secret) = created["secret"].as_str() {
                println!("secret: {secret}");
            }
        }
        RobotCommand::List { project } => {
            let path = match project {
                Some(p) => format!("/projects/{}/robots?n=1000", segment(&p)),
                None => "/robots?n=1000".to_owned(),
            };
            for r in client.get(&path).await?.as_array().into_iter().flatten() {
                let grants: Vec<String> = r["grants"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|g| {
                        let perms: Vec<&str> = g["permissions"].as_array().into_iter().flatten().map(text).collect();
                        format!("{}={}", text(&g["project"]), perms.join(","))
                    })
                    .collect();
                let state = if r["disabled"] == true { "disabled" } else { "enabled" };
                println!("{}\t{state}\t{}", text(&r["name"]), grants.join(" "));
            }
        }
        RobotCommand::Rotate { name } => {
            let rotated = client.call(Method::POST, &format!("{}/secret", at(&name)), None).await?;
            println!("secret: {}", text(&rotated["secret"]));
        }
        RobotCommand::Disable { name } => {
            client.call(Method::PATCH, &at(&name), Some(json!({ "disabled": true }))).await?;
            println!("robot {name} disabled");
        }
        RobotCommand::Enable { name } => {
            client.call(Method::PATCH, &at(&name), Some(json!({ "disabled": false }))).await?;
            println!("robot {name} enabled");
        }
        RobotCommand::Delete { name } => {
            client.call(Method::DELETE, &at(&name), None).await?;
            println!("deleted robot {name}");
        }
    }
    Ok(())
}

/// `PROJECT=PERM,PERM` as the API's grant.
fn parse_grant(grant: &str) -> Result<Value, BoxError> {
    let (project, permissions) =
        grant.split_once('=').ok_or_else(|| format!("--grant {grant:?}: expected PROJECT=PERM,PERM"))?;
    Ok(json!({ "project": project, "permissions": permissions.split(',').collect::<Vec<_>>() }))
}
