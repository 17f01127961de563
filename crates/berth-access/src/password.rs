//! Passwords and secrets: argon2id hashes for everything Berth creates, bcrypt
//! verification for users imported from an Apache htpasswd file, and random secrets.
//!
//! Hashing is deliberately slow (tens of milliseconds) and takes memory (argon2id's
//! default cost: 19 MiB per hash): call it through [`hash_blocking`] and
//! [`verify_blocking`], which run it on a blocking thread and at most
//! [`max_concurrent_hashes`] at once, so a crowd of logins (or of guesses) queues for the
//! CPU instead of taking memory without bound.

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use berth_core::{Error, ErrorKind};

/// Bytes of randomness in a generated password or robot secret (base64url: 43 characters).
const SECRET_BYTES: usize = 32;

/// The argon2id PHC string of `password`, with a fresh random salt.
pub fn hash(password: &str) -> Result<String, Error> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::internal(format!("argon2: {e}")))
}

/// Whether `password` matches `stored`: an argon2 PHC string, or a bcrypt hash
/// (`$2y$`, `$2b$`, `$2a$`) from htpasswd. An unreadable hash matches nothing.
pub fn verify(password: &str, stored: &str) -> bool {
    if stored.starts_with("$2") {
        return bcrypt::verify(password, stored).unwrap_or(false);
    }
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Password hashes computed at once: one per core, at least two.
pub fn max_concurrent_hashes() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
}

fn hashing() -> &'static tokio::sync::Semaphore {
    static PERMITS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    PERMITS.get_or_init(|| tokio::sync::Semaphore::new(max_concurrent_hashes()))
}

pub async fn hash_blocking(password: String) -> Result<String, Error> {
    let _permit = hashing().acquire().await.map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| Error::internal(format!("hashing task: {e}")))?
}

pub async fn verify_blocking(password: String, stored: String) -> bool {
    let Ok(_permit) = hashing().acquire().await else { return false };
    tokio::task::spawn_blocking(move || verify(&password, &stored)).await.unwrap_or(false)
}

/// A new random secret (a generated password, a robot secret), URL-safe.
pub fn random_secret() -> String {
    base64url(&random_bytes::<SECRET_BYTES>())
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).expect("the OS random source");
    bytes
}

/// Unpadded base64url.
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// One line of an Apache htpasswd file: `name:hash`. Only bcrypt hashes are accepted
/// (`htpasswd -B`); the older schemes (MD5-crypt, SHA-1, crypt) are too weak to keep.
pub fn parse_htpasswd_line(line: &str) -> Result<Option<(&str, &str)>, Error> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (name, hash) = line
        .split_once(':')
        .ok_or_else(|| Error::new(ErrorKind::BadRequest).with_message("an htpasswd line is NAME:HASH"))?;
    if !(hash.starts_with("$2y$") || hash.starts_with("$2b$") || hash.starts_with("$2a$")) {
        return Err(Error::new(ErrorKind::BadRequest)
            .with_message(format!("user {name:?}: only bcrypt hashes (htpasswd -B) can be imported")));
    }
    Ok(Some((name, hash)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argon2id_hashes_verify_and_differ_per_salt() {
        let (a, b) = (hash("s3cret").unwrap(), hash("s3cret").unwrap());
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b);
        assert!(verify("s3cret", &a));
        assert!(!verify("s3cret!", &a));
        assert!(!verify("s3cret", "not a hash"));
    }

    #[test]
    fn htpasswd_bcrypt_hashes_verify() {
        // What `htpasswd -nbB alice wonderland` writes: Apache's `$2y$` prefix.
        let hashed = bcrypt::hash_with_result("wonderland", 5).unwrap().format_for_version(bcrypt::Version::TwoY);
        let line = format!("alice:{hashed}\n");
        let (name, hash) = parse_htpasswd_line(&line).unwrap().unwrap();
        assert_eq!((name, hash), ("alice", hashed.as_str()));
        assert!(hash.starts_with("$2y$05$"), "{hash}");
        assert!(verify("wonderland", hash));
        assert!(!verify("Wonderland", hash));
        assert!(parse_htpasswd_line("bob:{SHA}abc").is_err());
        assert!(parse_htpasswd_line("no separator").is_err());
        assert_eq!(parse_htpasswd_line("# comment").unwrap(), None);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hashes_run_at_most_max_concurrent_at_once() {
        let stored = hash("s3cret").unwrap();
        let checks: Vec<_> = (0..max_concurrent_hashes() * 3)
            .map(|_| tokio::spawn(verify_blocking("s3cret".into(), stored.clone())))
            .collect();
        let mut fewest_free = usize::MAX;
        while !checks.iter().all(|c| c.is_finished()) {
            fewest_free = fewest_free.min(hashing().available_permits());
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        assert_eq!(fewest_free, 0, "the checks queued for the permits");
        for check in checks {
            assert!(check.await.unwrap());
        }
        assert_eq!(hashing().available_permits(), max_concurrent_hashes());
    }

    #[test]
    fn secrets_are_random_and_url_safe() {
        let (a, b) = (random_secret(), random_secret());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
    }
}
