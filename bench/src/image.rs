//! The images the workloads push: deterministic random layers and the Docker v2 manifest
//! that lists them.
//!
//! Shared by the harness (`main.rs`) and the workloads it calls (`gc.rs`,
//! `metrics_off.rs`), so it lives below all of them.

use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, full};

pub(crate) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// Deterministic incompressible bytes.
pub(crate) fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub(crate) fn manifest(config: (&str, usize), layers: &[(String, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": config.0, "size": config.1 },
        "layers": layers.iter().map(|(d, s)| serde_json::json!({ "mediaType": DOCKER_LAYER, "digest": d, "size": s })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

pub(crate) async fn put_manifest(c: &mut Conn, repo: &str, tag: &str, body: &[u8]) -> Result<(), BoxError> {
    c.expect(
        Method::PUT,
        &format!("/v2/{repo}/manifests/{tag}"),
        &[("content-type", DOCKER_MANIFEST)],
        full(body.to_vec()),
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}
