//! Native TLS (rustls, aws-lc-rs): a certificate chain and key from PEM files, re-read
//! when they change on disk, so a renewed certificate is served without a restart. Not
//! the accept loop: `listen.rs` runs each handshake in its connection's task.
//!
//! The files are looked at (a `stat` of each) by a handshake at most once per
//! [`RECHECK`]; when either changed (modification time, size or inode: a rename over it
//! counts), both are read again and the next handshakes use the new pair. A pair that
//! does not load (a half-written file, a key that does not match) is logged and the old
//! one kept. Connections already open keep the certificate they were made with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rustls::ServerConfig;
use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often, at most, a handshake looks whether the files changed.
pub const RECHECK: Duration = Duration::from_secs(1);

/// Where the certificate chain and its private key are (PEM).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A file's identity as far as reloading cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: m.modified().ok(), len: m.len(), inode: m.ino() })
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Option<Stamp>, Option<Stamp>),
    checked: Instant,
}

/// Serves the files' certificate, reloading it when they change.
pub struct Reloading {
    files: TlsFiles,
    current: Mutex<Current>,
}

impl std::fmt::Debug for Reloading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading").field("files", &self.files).finish()
    }
}

impl Reloading {
    /// Loads the pair once; a start with files that do not load fails.
    pub fn open(files: TlsFiles) -> Result<Reloading, String> {
        let stamps = (stamp(&files.cert), stamp(&files.key));
        let key = load(&files)?;
        Ok(Reloading { files, current: Mutex::new(Current { key, stamps, checked: Instant::now() }) })
    }

    fn key(&self) -> Arc<CertifiedKey> {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.checked.elapsed() >= RECHECK {
            current.checked = Instant::now();
            let stamps = (stamp(&self.files.cert), stamp(&self.files.key));
            if stamps != current.stamps {
                match load(&self.files) {
                    Ok(key) => {
                        tracing::info!(cert = %self.files.cert.display(), "TLS certificate reloaded");
                        current.key = key;
                        current.stamps = stamps;
                    }
                    // Perhaps caught between the two files' writes: tried again next time.
                    Err(e) => tracing::warn!(error = %e, "TLS certificate not reloaded; the previous one is served"),
                }
            }
        }
        Arc::clone(&current.key)
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.key())
    }
}

fn load(files: &TlsFiles) -> Result<Arc<CertifiedKey>, String> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", files.cert.display()))?;
    if certs.is_empty() {
        return Err(format!("TLS certificate {}: no certificate in the file", files.cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| format!("TLS key {}: {e}", files.key.display()))?;
    let key = CertifiedKey::from_der(certs, key, &aws_lc_rs::default_provider())
        .map_err(|e| format!("TLS key {} and certificate {}: {e}", files.key.display(), files.cert.display()))?;
    Ok(Arc::new(key))
}

/// An acceptor serving the files' certificate, offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(files: TlsFiles) -> Result<TlsAcceptor, String> {
    let resolver = Arc::new(Reloading::open(files)?);
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
