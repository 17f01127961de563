//! Upstream credentials at rest: sealed with AES-256-GCM under the federation key, which
//! lives in a file beside the configuration (never in the database), with the upstream's
//! name as associated data, so a sealed password copied to another upstream's row does
//! not open. Format: a version byte (1), the 12-byte nonce, the ciphertext and its tag.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use berth_core::Error;

const VERSION: u8 = 1;

/// The federation key: 32 bytes, kept as 64 hex digits in a file. Cloning shares it.
#[derive(Clone)]
pub struct SealKey(Arc<LessSafeKey>);

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(…)")
    }
}

impl SealKey {
    pub fn from_bytes(bytes: &[u8; 32]) -> SealKey {
        SealKey(Arc::new(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key"))))
    }

    /// Reads the key file: 64 hex digits (surrounding whitespace ignored).
    pub fn load(path: &Path) -> Result<SealKey, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let bytes = hex::decode(text.trim())
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| format!("{} must hold 64 hex digits (a 256-bit key)", path.display()))?;
        Ok(SealKey::from_bytes(&bytes))
    }

    /// Reads the key file, first creating it (mode 0600, a fresh random key) if missing.
    pub fn load_or_create(path: &Path) -> Result<SealKey, String> {
        if !path.exists() {
            let mut bytes = [0u8; 32];
            SystemRandom::new().fill(&mut bytes).map_err(|_| "the system's random source failed".to_owned())?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    file.write_all(hex::encode(bytes).as_bytes())
                        .and_then(|()| file.sync_all())
                        .map_err(|e| format!("writing {}: {e}", path.display()))?;
                }
                // Another process made it first: read theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(format!("creating {}: {e}", path.display())),
            }
        }
        SealKey::load(path)
    }

    /// Seals `secret` for the upstream `name`.
    pub fn seal(&self, name: &str, secret: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random source");
        let mut sealed = secret.as_bytes().to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(name.as_bytes()), &mut sealed)
            .expect("AES-GCM sealing of a short secret");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`SealKey::seal`] sealed for `name`; an error if another key sealed it,
    /// for another upstream, or it was altered.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<String, Error> {
        let refused = || {
            Error::internal(format!(
                "the stored credentials of upstream {name} do not open with this federation key \
                 (another key sealed them, or they were altered)"
            ))
        };
        let (version, rest) = sealed.split_first().ok_or_else(refused)?;
        if *version != VERSION || rest.len() < NONCE_LEN {
            return Err(refused());
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| refused())?;
        let mut buf = ciphertext.to_vec();
        let plain = self.0.open_in_place(nonce, Aad::from(name.as_bytes()), &mut buf).map_err(|_| refused())?;
        String::from_utf8(plain.to_vec()).map_err(|_| refused())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_name() {
        let key = SealKey::from_bytes(&[7; 32]);
        let sealed = key.seal("hub", "s3cret");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"), "the secret is not in the clear");
        assert_ne!(sealed, key.seal("hub", "s3cret"), "a fresh nonce each time");
        assert_eq!(key.open("hub", &sealed).unwrap(), "s3cret");
        assert!(key.open("ghcr", &sealed).is_err(), "bound to the upstream's name");
        assert!(SealKey::from_bytes(&[8; 32]).open("hub", &sealed).is_err(), "bound to the key");
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(key.open("hub", &altered).is_err(), "tampering is detected");
        assert!(key.open("hub", &[]).is_err());
    }

    #[test]
    fn a_key_file_is_created_once_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("federation.key");
        let sealed = SealKey::load_or_create(&path).unwrap().seal("hub", "pw");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(SealKey::load_or_create(&path).unwrap().open("hub", &sealed).unwrap(), "pw", "the same key again");
        std::fs::write(&path, "not hex").unwrap();
        assert!(SealKey::load(&path).unwrap_err().contains("64 hex digits"));
    }
}
