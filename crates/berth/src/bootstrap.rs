//! First start: the system administrator `admin`, created when no administrator exists.
//!
//! Its password is `auth.admin_password` (which the config takes from the file, the file
//! `auth.admin_password_file` names, `BERTH_ADMIN_PASSWORD` or `BERTH_ADMIN_PASSWORD_FILE`),
//! or a random one printed once on stderr (straight to stderr, not through the log, so
//! that log collection never keeps it).

use berth_access::password;
use berth_core::ErrorKind;
use berth_meta::{IdentityStore, UserUpdate};

use crate::BoxError;

pub const ADMIN: &str = "admin";

/// Where the first administrator's password comes from.
fn admin_password(configured: Option<&str>) -> Result<(String, bool), BoxError> {
    if let Some(p) = configured {
        return Ok((p.to_owned(), false));
    }
    Ok((password::random_secret(), true))
}

/// Creates `admin` unless a system administrator exists.
pub async fn ensure_admin(identity: &dyn IdentityStore, configured: Option<&str>) -> Result<(), BoxError> {
    if identity.any_admin().await? {
        return Ok(());
    }
    let (password, generated) = admin_password(configured)?;
    if password.is_empty() {
        return Err("the admin password is empty".into());
    }
    let hash = password::hash_blocking(password.clone()).await?;
    match identity.create_user(ADMIN, &hash, true).await {
        Ok(_) => {}
        // Another node created an administrator meanwhile: it printed its own password.
        Err(e) if e.kind == ErrorKind::Conflict && identity.any_admin().await? => return Ok(()),
        // A user named admin exists but no administrator does: it becomes one again,
        // with this password (the documented recovery).
        Err(e) if e.kind == ErrorKind::Conflict => {
            let update = UserUpdate { password_hash: Some(hash), admin: Some(true), disabled: Some(false) };
            identity.update_user(ADMIN, &update).await?;
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(user = ADMIN, generated, "created the system administrator");
    if generated {
        eprintln!(
            "berth: created the system administrator {ADMIN:?} with the password {password}\n\
             berth: it is shown only this once; log in and change it"
        );
    }
    Ok(())
}
