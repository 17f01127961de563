//! Commands on a stopped server's data, opening its database the way `berth serve` does
//! (and taking the data directory's lock in embedded mode, so they refuse to run beside
//! a live server): importing htpasswd users, and the recovery path, resetting a password.

use std::path::{Path, PathBuf};

use berth_access::password;
use berth_core::ErrorKind;
use berth_meta::UserUpdate;
use clap::Subcommand;

use crate::BoxError;

/// Where the stopped server's data is.
#[derive(clap::Args, Clone, Debug)]
pub struct Offline {
    /// The data directory (embedded mode; its lock must be free).
    #[arg(long, env = "BERTH_DATA_DIR", default_value = "./berth-data")]
    pub data_dir: PathBuf,
    /// The shared database (`postgres://…`) of a scale-out deployment.
    #[arg(long, env = "BERTH_DATABASE")]
    pub database: Option<String>,
}

impl Offline {
    async fn open(&self) -> Result<crate::Stores, BoxError> {
        let mut config = crate::Config::with_data_dir(&self.data_dir);
        config.database.url = self.database.clone();
        crate::open_database(&config).await
    }
}

#[derive(Subcommand)]
pub enum AdminCommand {
    /// Give a user a new password and enable it, on a stopped server's data (the way back
    /// in when the administrator's password is lost). The password comes from
    /// BERTH_ADMIN_PASSWORD (or the file BERTH_ADMIN_PASSWORD_FILE names); otherwise a
    /// random one is generated and printed. A missing user is created as an administrator.
    ResetPassword {
        #[arg(long, default_value = "admin")]
        user: String,
        #[command(flatten)]
        offline: Offline,
    },
}

pub async fn admin(command: AdminCommand) -> Result<(), BoxError> {
    let AdminCommand::ResetPassword { user, offline } = command;
    let given = match (std::env::var("BERTH_ADMIN_PASSWORD"), std::env::var_os("BERTH_ADMIN_PASSWORD_FILE")) {
        (Ok(password), _) if !password.is_empty() => Some(password),
        (_, Some(file)) => Some(std::fs::read_to_string(&file)?.trim_end_matches(['\r', '\n']).to_owned()),
        _ => None,
    };
    let generated = given.is_none();
    let new = given.unwrap_or_else(password::random_secret);
    let hash = password::hash_blocking(new.clone()).await?;
    let stores = offline.open().await?;
    match stores.identity.user(&user).await? {
        Some(_) => {
            let update = UserUpdate { password_hash: Some(hash), disabled: Some(false), ..UserUpdate::default() };
            stores.identity.update_user(&user, &update).await?;
            eprintln!("password of {user} reset");
        }
        None => {
            stores.identity.create_user(&user, &hash, true).await?;
            eprintln!("created administrator {user}");
        }
    }
    if generated {
        println!("{new}");
    }
    Ok(())
}

/// Imports every `name:bcrypt-hash` line of `file`; users that exist already are left
/// as they are (and named).
pub async fn import_htpasswd(file: &Path, offline: &Offline) -> Result<(), BoxError> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    // Every line is checked before anything is written.
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let parsed = password::parse_htpasswd_line(line)
            .map_err(|e| format!("{}:{}: {}", file.display(), n + 1, e.message()))?;
        users.extend(parsed);
    }
    let stores = offline.open().await?;
    let (mut imported, mut skipped) = (0, 0);
    for (name, hash) in users {
        match stores.identity.create_user(name, hash, false).await {
            Ok(_) => imported += 1,
            Err(e) if e.kind == ErrorKind::Conflict => {
                eprintln!("{name} exists already: left as it is");
                skipped += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
    println!("imported {imported} users, skipped {skipped}");
    Ok(())
}
