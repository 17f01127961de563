//! Content digests (`algorithm:encoded`), and the streaming hasher that produces them.
//!
//! Berth stores content under SHA-256 only. Other well-formed algorithms parse (so that
//! a descriptor naming one can be reported precisely) but are refused where content is
//! addressed, with [`ErrorKind::DigestUnsupported`].

use std::fmt;
use std::str::FromStr;

use sha2::digest::common::hazmat::SerializableState;
use sha2::{Digest as _, Sha256};

use crate::error::{Error, ErrorKind};

/// A verified `sha256:<64 lowercase hex>` digest.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    const PREFIX: &'static str = "sha256:";

    /// The SHA-256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        let mut hasher = DigestHasher::new();
        hasher.update(bytes);
        hasher.finish()
    }

    /// The lowercase hex part, without the algorithm.
    pub fn hex(&self) -> &str {
        &self.0[Self::PREFIX.len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Parses a digest as it appears in a URL, query or descriptor.
    ///
    /// Grammar (OCI image-spec): `algorithm ":" encoded`, where algorithm is
    /// `[a-z0-9]+([+._-][a-z0-9]+)*` and encoded is `[a-zA-Z0-9=_-]+`.
    pub fn parse(s: &str) -> Result<Digest, Error> {
        let invalid = || Error::new(ErrorKind::DigestInvalid).with_detail(s);
        let (algorithm, encoded) = s.split_once(':').ok_or_else(invalid)?;
        if !valid_algorithm(algorithm)
            || encoded.is_empty()
            || !encoded.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
        {
            return Err(invalid());
        }
        if algorithm != "sha256" {
            return Err(Error::new(ErrorKind::DigestUnsupported).with_detail(s));
        }
        if encoded.len() != 64 || !encoded.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid());
        }
        Ok(Digest(s.to_owned()))
    }
}

fn valid_algorithm(algorithm: &str) -> bool {
    !algorithm.is_empty()
        && algorithm.split(['+', '.', '_', '-']).all(|component| {
            !component.is_empty() && component.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest, Error> {
        Digest::parse(s)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Incremental SHA-256 over a stream of chunks, with the byte count alongside.
#[derive(Clone, Default)]
pub struct DigestHasher {
    hasher: Sha256,
    len: u64,
}

impl DigestHasher {
    pub fn new() -> DigestHasher {
        DigestHasher::default()
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hasher's internal state as bytes, to resume hashing elsewhere (another
    /// request, process or node) with [`DigestHasher::resume`].
    pub fn to_state(&self) -> Vec<u8> {
        let mut out = self.len.to_be_bytes().to_vec();
        out.extend_from_slice(&self.hasher.serialize());
        out
    }

    /// Rebuilds a hasher from [`DigestHasher::to_state`]'s bytes; `None` if they are not.
    pub fn resume(state: &[u8]) -> Option<DigestHasher> {
        let (len, core) = state.split_at_checked(8)?;
        let len = u64::from_be_bytes(len.try_into().ok()?);
        let core = core.try_into().ok()?;
        Some(DigestHasher { hasher: Sha256::deserialize(core).ok()?, len })
    }

    pub fn finish(self) -> Digest {
        Digest(format!("{}{}", Digest::PREFIX, hex::encode(self.hasher.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_of_empty_input_is_the_well_known_value() {
        assert_eq!(Digest::of(b"").as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    }

    #[test]
    fn incremental_hashing_matches_one_shot() {
        let mut h = DigestHasher::new();
        h.update(b"hello ");
        h.update(b"world");
        assert_eq!(h.len(), 11);
        assert_eq!(h.finish(), Digest::of(b"hello world"));
    }

    #[test]
    fn hashing_resumes_from_serialized_state() {
        let mut h = DigestHasher::new();
        h.update(&[7u8; 100]);
        let mut resumed = DigestHasher::resume(&h.to_state()).unwrap();
        assert_eq!(resumed.len(), 100);
        resumed.update(b"tail");
        h.update(b"tail");
        assert_eq!(resumed.finish(), h.finish());
        assert!(DigestHasher::resume(b"short").is_none());
    }

    #[test]
    fn parse_rejects_malformed_and_unsupported_digests() {
        let kind = |s: &str| Digest::parse(s).unwrap_err().kind;
        assert_eq!(kind("sha256"), ErrorKind::DigestInvalid);
        assert_eq!(kind("sha256:abc"), ErrorKind::DigestInvalid);
        assert_eq!(kind(&format!("sha256:{}", "A".repeat(64))), ErrorKind::DigestInvalid);
        assert_eq!(kind(&format!("sha512:{}", "a".repeat(128))), ErrorKind::DigestUnsupported);
        assert_eq!(kind("SHA256:abc"), ErrorKind::DigestInvalid);
        assert_eq!(kind("sha256:../../etc"), ErrorKind::DigestInvalid);
        let good = format!("sha256:{}", "a".repeat(64));
        assert_eq!(Digest::parse(&good).unwrap().hex(), "a".repeat(64));
    }
}
