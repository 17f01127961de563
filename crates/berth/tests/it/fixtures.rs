//! Test images built on disk for client tests: OCI image layouts (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) holding single-platform images or a multi-platform image index, with
//! random (incompressible) gzip'd tar layers; and plain root-filesystem tarballs for
//! `docker import`. Nothing here talks to a registry.
//!
//! Every call writes fresh random content, so two images never share a layer by accident.
//! The returned [`Image`] / [`ImageIndex`] carry the exact manifest bytes and every digest,
//! so a test can check what a registry serves, or what a client copied back, byte for byte.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `index.json` annotation that names a tag in an OCI layout.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image's target platform, as written in its config and in an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: &'static str,
    pub architecture: &'static str,
}

impl Platform {
    pub const LINUX_AMD64: Platform = Platform { os: "linux", architecture: "amd64" };
    pub const LINUX_ARM64: Platform = Platform { os: "linux", architecture: "arm64" };
}

/// One image written into a layout.
#[derive(Clone, Debug)]
pub struct Image {
    /// `sha256:…` of [`Image::manifest`].
    pub manifest_digest: String,
    /// The OCI image manifest, exactly as written.
    pub manifest: Vec<u8>,
    /// `sha256:…` of [`Image::config`]; podman and docker use it as the image id.
    pub config_digest: String,
    pub config: Vec<u8>,
    /// The gzip'd layer blobs, in manifest order.
    pub layer_digests: Vec<String>,
    /// `sha256:…` of each uncompressed layer tar (the config's `rootfs.diff_ids`).
    pub diff_ids: Vec<String>,
    pub platform: Platform,
}

impl Image {
    /// The config and every layer: the blobs a registry must hold for this image.
    pub fn blob_digests(&self) -> Vec<&str> {
        std::iter::once(self.config_digest.as_str()).chain(self.layer_digests.iter().map(String::as_str)).collect()
    }
}

/// A multi-platform OCI image index written into a layout, with its images.
#[derive(Clone, Debug)]
pub struct ImageIndex {
    /// `sha256:…` of [`ImageIndex::index`].
    pub digest: String,
    /// The OCI image index, exactly as written.
    pub index: Vec<u8>,
    /// One image per platform, in the order asked for (and listed in the index).
    pub images: Vec<Image>,
}

/// Writes a linux/amd64 image tagged `tag` into the OCI layout at `dir` (created if
/// missing), with one random layer per entry of `layers`, each holding that many bytes.
/// A layout may hold several tags: an existing `index.json` keeps its other entries.
pub fn oci_layout(dir: &Path, tag: &str, layers: &[usize]) -> Image {
    oci_platform_layout(dir, tag, Platform::LINUX_AMD64, layers)
}

/// Like [`oci_layout`], for an image of `platform`.
pub fn oci_platform_layout(dir: &Path, tag: &str, platform: Platform, layers: &[usize]) -> Image {
    let image = write_image(dir, platform, layers);
    tag_in_layout(dir, tag, OCI_MANIFEST, &image.manifest_digest, image.manifest.len());
    image
}

/// Writes one image per platform, each with `layers` as in [`oci_layout`], and an OCI
/// image index of them tagged `tag`, into the layout at `dir`.
pub fn oci_index_layout(dir: &Path, tag: &str, platforms: &[Platform], layers: &[usize]) -> ImageIndex {
    let images: Vec<Image> = platforms.iter().map(|&p| write_image(dir, p, layers)).collect();
    let index = to_json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().map(|image| json!({
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.manifest.len(),
            "platform": { "architecture": image.platform.architecture, "os": image.platform.os },
        })).collect::<Vec<_>>(),
    }));
    let digest = put_blob(dir, &index);
    tag_in_layout(dir, tag, OCI_INDEX, &digest, index.len());
    ImageIndex { digest, index, images }
}

/// Where the layout at `dir` keeps the blob `digest` (`sha256:…`).
pub fn blob_path(dir: &Path, digest: &str) -> PathBuf {
    let hex = digest.strip_prefix("sha256:").unwrap_or_else(|| panic!("not a sha256 digest: {digest}"));
    dir.join("blobs/sha256").join(hex)
}

/// The manifest (or index) digest that `tag` names in the layout at `dir`, if any.
pub fn tagged_digest(dir: &Path, tag: &str) -> Option<String> {
    let index: Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).ok()?).unwrap();
    index["manifests"]
        .as_array()?
        .iter()
        .find(|m| m["annotations"][REF_NAME] == tag)
        .map(|m| m["digest"].as_str().unwrap().to_owned())
}

/// Writes a plain (uncompressed) tar holding one file, `payload.bin`, of `bytes` random
/// bytes: a root filesystem for `docker import` or `podman import`.
pub fn rootfs_tar(path: &Path, bytes: usize) {
    std::fs::write(path, random_tar("payload.bin", bytes)).unwrap();
}

/// A tar holding one file `name` of `len` random bytes.
pub fn random_tar(name: &str, len: usize) -> Vec<u8> {
    let data = random_bytes(len);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append_data(&mut header, name, &data[..]).unwrap();
    builder.into_inner().unwrap()
}

/// `len` pseudo-random bytes, different on every call (and in every process).
pub fn random_bytes(len: usize) -> Vec<u8> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let process = {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos());
        h.finish()
    };
    // splitmix64: fast, and its output does not compress.
    let mut state = process ^ CALLS.fetch_add(1, Ordering::Relaxed).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// `sha256:<hex>` of `bytes`: an OCI digest.
pub fn sha256_digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let mut out = String::with_capacity(71);
    out.push_str("sha256:");
    for b in hash.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The bytes of a gzip stream, decompressed.
pub fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz).read_to_end(&mut out).expect("valid gzip");
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn to_json_bytes(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

/// Stores `bytes` as a blob of the layout at `dir`; returns its digest.
fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    let path = blob_path(dir, &digest);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    digest
}

/// Writes an image's layers, config and manifest as blobs of the layout at `dir` (no tag).
fn write_image(dir: &Path, platform: Platform, layers: &[usize]) -> Image {
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for (i, &len) in layers.iter().enumerate() {
        let tar = random_tar(&format!("layer{i}.bin"), len);
        let gz = gzip(&tar);
        diff_ids.push(sha256_digest(&tar));
        let digest = put_blob(dir, &gz);
        descriptors.push(json!({ "mediaType": OCI_LAYER_GZIP, "digest": digest, "size": gz.len() }));
        layer_digests.push(digest);
    }
    let config = to_json_bytes(&json!({
        "created": "2024-01-01T00:00:00Z",
        "architecture": platform.architecture,
        "os": platform.os,
        "config": { "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": layers.iter().enumerate().map(|(i, len)| json!({
            "created": "2024-01-01T00:00:00Z",
            "created_by": format!("berth test fixture: layer{i}.bin, {len} random bytes"),
        })).collect::<Vec<_>>(),
    }));
    let config_digest = put_blob(dir, &config);
    let manifest = to_json_bytes(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": OCI_CONFIG, "digest": config_digest, "size": config.len() },
        "layers": descriptors,
    }));
    let manifest_digest = put_blob(dir, &manifest);
    Image { manifest_digest, manifest, config_digest, config, layer_digests, diff_ids, platform }
}

/// Points `tag` at a manifest or index in the layout at `dir`, writing `oci-layout` and
/// creating or updating `index.json` (another entry with that tag is replaced).
fn tag_in_layout(dir: &Path, tag: &str, media_type: &str, digest: &str, size: usize) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let path = dir.join("index.json");
    let mut entries: Vec<Value> = match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice::<Value>(&bytes).unwrap()["manifests"].as_array().cloned().unwrap_or_default()
        }
        Err(_) => Vec::new(),
    };
    entries.retain(|m| m["annotations"][REF_NAME] != tag);
    entries.push(json!({ "mediaType": media_type, "digest": digest, "size": size, "annotations": { REF_NAME: tag } }));
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
    std::fs::write(path, to_json_bytes(&index)).unwrap();
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::support::{require, run};

    fn read_json(path: &Path) -> Value {
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    #[test]
    fn a_layout_holds_every_blob_under_its_digest_with_diff_ids_of_the_uncompressed_layers() {
        let dir = tempfile::tempdir().unwrap();
        let image = oci_layout(dir.path(), "v1", &[100_000, 0, 5_000]);

        assert_eq!(read_json(&dir.path().join("oci-layout"))["imageLayoutVersion"], "1.0.0");
        assert_eq!(tagged_digest(dir.path(), "v1").as_deref(), Some(image.manifest_digest.as_str()));
        let manifest = std::fs::read(blob_path(dir.path(), &image.manifest_digest)).unwrap();
        assert_eq!(manifest, image.manifest);
        assert_eq!(sha256_digest(&manifest), image.manifest_digest);

        let manifest: Value = serde_json::from_slice(&manifest).unwrap();
        let config: Value = serde_json::from_slice(&image.config).unwrap();
        assert_eq!(manifest["config"]["digest"], image.config_digest);
        assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("linux"), Some("amd64")));
        assert_eq!(config["rootfs"]["diff_ids"], json!(image.diff_ids));
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (i, (descriptor, payload)) in layers.iter().zip([100_000, 0, 5_000]).enumerate() {
            let gz = std::fs::read(blob_path(dir.path(), descriptor["digest"].as_str().unwrap())).unwrap();
            assert_eq!(descriptor["digest"], image.layer_digests[i]);
            assert_eq!(descriptor["size"], gz.len());
            assert_eq!(sha256_digest(&gz), image.layer_digests[i]);
            let tar = gunzip(&gz);
            assert_eq!(sha256_digest(&tar), image.diff_ids[i]);
            assert!(gz.len() >= payload, "layer {i} compressed to {} bytes: the payload is not random", gz.len());
            let mut archive = tar::Archive::new(&tar[..]);
            let entry = archive.entries().unwrap().next().unwrap().unwrap();
            assert_eq!(entry.header().size().unwrap(), payload as u64);
        }
    }

    #[test]
    fn every_image_gets_fresh_content_and_a_layout_keeps_all_its_tags() {
        let dir = tempfile::tempdir().unwrap();
        let a = oci_layout(dir.path(), "a", &[1_000]);
        let b = oci_layout(dir.path(), "b", &[1_000]);
        assert_ne!(a.layer_digests, b.layer_digests);
        assert_ne!(a.manifest_digest, b.manifest_digest);
        assert_eq!(tagged_digest(dir.path(), "a"), Some(a.manifest_digest));
        assert_eq!(tagged_digest(dir.path(), "b"), Some(b.manifest_digest.clone()));
        // Retagging replaces the entry rather than adding a second one.
        let c = oci_layout(dir.path(), "a", &[1_000]);
        assert_eq!(tagged_digest(dir.path(), "a"), Some(c.manifest_digest));
        assert_eq!(read_json(&dir.path().join("index.json"))["manifests"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn an_index_layout_lists_one_manifest_per_platform() {
        let dir = tempfile::tempdir().unwrap();
        let index = oci_index_layout(dir.path(), "multi", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[2_000]);
        assert_eq!(tagged_digest(dir.path(), "multi"), Some(index.digest.clone()));
        assert_eq!(std::fs::read(blob_path(dir.path(), &index.digest)).unwrap(), index.index);
        let parsed: Value = serde_json::from_slice(&index.index).unwrap();
        assert_eq!(parsed["mediaType"], OCI_INDEX);
        let children = parsed["manifests"].as_array().unwrap();
        let archs: Vec<&str> = children.iter().map(|m| m["platform"]["architecture"].as_str().unwrap()).collect();
        assert_eq!(archs, ["amd64", "arm64"]);
        for (child, image) in children.iter().zip(&index.images) {
            assert_eq!(child["digest"], image.manifest_digest);
            let config: Value = serde_json::from_slice(&image.config).unwrap();
            assert_eq!(config["architecture"], child["platform"]["architecture"]);
        }
    }

    #[test]
    fn skopeo_reads_the_layouts_as_written() {
        require("skopeo");
        let dir = tempfile::tempdir().unwrap();
        let image = oci_platform_layout(dir.path(), "one", Platform::LINUX_ARM64, &[3_000, 4_000]);
        let index = oci_index_layout(dir.path(), "multi", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[2_000]);
        let skopeo = |args: &[&str]| run(Command::new("skopeo").arg("--insecure-policy").args(args));

        let one = format!("oci:{}:one", dir.path().display());
        assert_eq!(skopeo(&["inspect", "--raw", &one]).into_bytes(), image.manifest);
        assert_eq!(skopeo(&["inspect", "--config", "--raw", &one]).into_bytes(), image.config);
        let info: Value = serde_json::from_str(&skopeo(&["inspect", &one])).unwrap();
        assert_eq!(info["Architecture"], "arm64");
        assert_eq!(info["Layers"], json!(image.layer_digests));

        let multi = format!("oci:{}:multi", dir.path().display());
        assert_eq!(skopeo(&["inspect", "--raw", &multi]).into_bytes(), index.index);
        let arm: Value = serde_json::from_str(&skopeo(&["--override-arch", "arm64", "inspect", &multi])).unwrap();
        assert_eq!(arm["Architecture"], "arm64");
        assert_eq!(arm["Layers"], json!(index.images[1].layer_digests));
    }
}
