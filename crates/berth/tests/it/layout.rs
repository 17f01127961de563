//! Test images built on the fly: OCI image layouts on disk (`oci-layout`, `index.json`,
//! `blobs/sha256/…`) with random, incompressible, gzip'd tar layers, single-platform or
//! multi-platform, and plain root-filesystem tarballs for `docker import`.

use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;

use crate::api::{random_bytes, sha256};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// An image written into a layout.
#[derive(Clone, Debug)]
pub struct Image {
    pub manifest_digest: String,
    pub manifest: Vec<u8>,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

/// A tar holding one file of `len` random bytes.
pub fn tar_of_one_file(name: &str, len: usize, seed: u64) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let data = random_bytes(len, seed);
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(1_700_000_000);
    header.set_cksum();
    builder.append_data(&mut header, name, &data[..]).unwrap();
    builder.into_inner().unwrap()
}

/// Writes a root-filesystem tarball (for `docker import`).
pub fn rootfs_tar(path: &Path, len: usize, seed: u64) {
    std::fs::write(path, tar_of_one_file("payload.bin", len, seed)).unwrap();
}

fn put_blob(dir: &Path, bytes: &[u8]) -> String {
    let digest = sha256(bytes);
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    std::fs::write(blobs.join(&digest[7..]), bytes).unwrap();
    digest
}

/// Writes one image for `arch` into the layout at `dir` (blobs only; no index entry).
fn write_image(dir: &Path, arch: &str, layers: &[usize], seed: u64) -> Image {
    let mut layer_digests = Vec::new();
    let mut diff_ids = Vec::new();
    let mut descriptors = Vec::new();
    for (i, &len) in layers.iter().enumerate() {
        let tar = tar_of_one_file(&format!("layer{i}.bin"), len, seed * 100 + i as u64);
        let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
        std::io::Write::write_all(&mut gz, &tar).unwrap();
        let gz = gz.finish().unwrap();
        diff_ids.push(sha256(&tar));
        let digest = put_blob(dir, &gz);
        descriptors.push(json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": gz.len() }));
        layer_digests.push(digest);
    }
    let config = serde_json::to_vec(&json!({
        "architecture": arch, "os": "linux",
        "config": { "Env": [format!("SEED={seed}")] },
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_digest = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": descriptors,
    }))
    .unwrap();
    let manifest_digest = put_blob(dir, &manifest);
    Image { manifest_digest, manifest, config_digest, layer_digests }
}

fn write_index_json(dir: &Path, entries: serde_json::Value) {
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// A layout at `dir` holding one linux/amd64 image tagged `tag`, with layers of the
/// given sizes.
pub fn oci_layout(dir: &Path, tag: &str, layers: &[usize], seed: u64) -> Image {
    oci_platform_layout(dir, tag, "amd64", layers, seed)
}

/// Like [`oci_layout`], for a linux image of another architecture.
pub fn oci_platform_layout(dir: &Path, tag: &str, arch: &str, layers: &[usize], seed: u64) -> Image {
    let image = write_image(dir, arch, layers, seed);
    write_index_json(
        dir,
        json!([{ "mediaType": OCI_MANIFEST, "digest": image.manifest_digest, "size": image.manifest.len(),
                 "annotations": { "org.opencontainers.image.ref.name": tag } }]),
    );
    image
}

/// A layout at `dir` holding a multi-platform image index tagged `tag`: one image per
/// architecture. Returns the index digest and the images in `archs` order.
pub fn oci_index_layout(dir: &Path, tag: &str, archs: &[&str], seed: u64) -> (String, Vec<Image>) {
    let images: Vec<Image> =
        archs.iter().enumerate().map(|(i, arch)| write_image(dir, arch, &[20_000 + i * 1000], seed + i as u64)).collect();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": images.iter().zip(archs).map(|(img, arch)| json!({
            "mediaType": OCI_MANIFEST, "digest": img.manifest_digest, "size": img.manifest.len(),
            "platform": { "architecture": arch, "os": "linux" },
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index_digest = put_blob(dir, &index);
    write_index_json(
        dir,
        json!([{ "mediaType": OCI_INDEX, "digest": index_digest, "size": index.len(),
                 "annotations": { "org.opencontainers.image.ref.name": tag } }]),
    );
    (index_digest, images)
}
