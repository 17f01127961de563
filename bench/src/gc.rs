//! The garbage-collection workload: the same store in both registries, a tenth of it made
//! garbage by deleting manifests, then each registry's collector timed, and the bytes it
//! freed measured on disk. Berth collects online (`POST /api/v1/gc`, the server serving);
//! distribution's `docker-registry garbage-collect` needs the registry stopped, so it
//! runs after the server is killed, on the same root directory. Then, Berth only: the
//! time of a run with 100 garbage blobs in a store of 10,000 blobs and in one of 100,000
//! (a collector proportional to change takes about the same time in both).
//!
//! Each image is a config and 9 layers of 8 KiB, all its own, so every deleted image
//! makes 10 blobs garbage. Berth runs with `BERTH_GC_GRACE=0s`; before the deletes, one
//! untimed run reviews what the pushes queued (each new blob is a candidate until a
//! manifest names it), as a scheduled run would have done while they happened.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, Target, empty, full, push_monolithic, sha256};
use crate::image::{DOCKER_MANIFEST, manifest, put_manifest, random};
use crate::servers::{self, Server};

/// Blobs per image: a config and `LAYERS` layers.
const LAYERS: usize = 9;
const LAYER_BYTES: usize = 8 * 1024;
/// Connections pushing at once.
const PUSHERS: usize = 16;

/// A pushed image: its repository and manifest digest.
struct Image {
    repo: String,
    digest: String,
}

/// Pushes `images` images (numbered from `first`) over `PUSHERS` connections, each into
/// a repository of its own pusher.
async fn push_images(target: &Target, first: usize, images: usize, seed: u64) -> Result<Vec<Image>, BoxError> {
    let mut tasks = Vec::new();
    for worker in 0..PUSHERS {
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&target).await?;
            let repo = format!("gc/repo{worker}");
            let mut pushed = Vec::new();
            for n in (first..first + images).skip(worker).step_by(PUSHERS) {
                let blob_seed = seed * 1_000_000_000 + n as u64 * 100;
                let config = Bytes::from(random(512, blob_seed));
                let config_digest = sha256(&config);
                push_monolithic(&mut c, &repo, config.clone(), &config_digest).await?;
                let mut layers = Vec::with_capacity(LAYERS);
                for l in 0..LAYERS {
                    let layer = Bytes::from(random(LAYER_BYTES, blob_seed + 1 + l as u64));
                    let digest = sha256(&layer);
                    push_monolithic(&mut c, &repo, layer, &digest).await?;
                    layers.push((digest, LAYER_BYTES));
                }
                let body = manifest((&config_digest, config.len()), &layers);
                put_manifest(&mut c, &repo, &format!("i{n}"), &body).await?;
                pushed.push(Image { repo: repo.clone(), digest: sha256(&body) });
            }
            Ok::<_, BoxError>(pushed)
        }));
    }
    let mut all = Vec::with_capacity(images);
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(all)
}

/// Deletes each image's manifest by digest (and with it its tag).
async fn delete_images(target: &Target, images: &[Image]) -> Result<(), BoxError> {
    let mut c = Conn::open(target).await?;
    for image in images {
        let path = format!("/v2/{}/manifests/{}", image.repo, image.digest);
        c.expect(Method::DELETE, &path, &[("accept", DOCKER_MANIFEST)], empty(), StatusCode::ACCEPTED).await?;
    }
    Ok(())
}

/// Bytes of the regular files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => bytes_under(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// One run of Berth's collector through the API; returns its wall time in seconds and
/// the run's record (read back from the list of runs: the answer to the run itself
/// lists every blob removed, more than the client keeps of a body).
async fn berth_gc(target: &Target) -> Result<(f64, serde_json::Value), BoxError> {
    // Queue times are whole seconds: with a grace of 0 s, what was queued this second is
    // due from the next one.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut c = Conn::open(target).await?;
    let body = full(br#"{"dry_run":false,"full":false}"#.to_vec());
    let t = Instant::now();
    c.expect(Method::POST, "/api/v1/gc", &[("content-type", "application/json")], body, StatusCode::OK).await?;
    let took = t.elapsed().as_secs_f64();
    let r = c.expect(Method::GET, "/api/v1/gc/runs?n=1", &[], empty(), StatusCode::OK).await?;
    let runs: serde_json::Value = serde_json::from_slice(&r.head)?;
    Ok((took, runs[0].clone()))
}

/// Berth: a store of `images` images, `garbage` of them deleted, one timed collection.
/// Returns (seconds, bytes freed on disk, blobs the run removed).
async fn berth_store(
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    images: usize,
    garbage: usize,
    seed: u64,
) -> Result<(f64, u64, u64), BoxError> {
    let server = servers::berth_with(bin, dir, None, admin_password, &[("BERTH_GC_GRACE", "0s")]);
    let target = server.target();
    let pushed = push_images(&target, 0, images, seed).await?;
    berth_gc(&target).await?;
    let blobs = dir.join("berth").join("blobs");
    let before = bytes_under(&blobs);
    delete_images(&target, &pushed[..garbage]).await?;
    let (took, run) = berth_gc(&target).await?;
    let freed = before.saturating_sub(bytes_under(&blobs));
    let removed = run["blobs_removed"].as_u64().unwrap_or(0);
    if removed != (garbage * (LAYERS + 1)) as u64 {
        return Err(format!("Berth's GC removed {removed} blobs, {} expected: {run}", garbage * (LAYERS + 1)).into());
    }
    drop(server);
    Ok((took, freed, removed))
}

/// distribution: the same store and deletes, then `garbage-collect` with the registry
/// stopped. Returns (seconds, bytes freed on disk).
async fn distribution_store(
    bin: &Path,
    dir: &Path,
    images: usize,
    garbage: usize,
    seed: u64,
) -> Result<(f64, u64), BoxError> {
    let server: Server = servers::distribution(bin, dir);
    let target = server.target();
    let pushed = push_images(&target, 0, images, seed).await?;
    delete_images(&target, &pushed[..garbage]).await?;
    drop(server);
    let blobs = dir.join("distribution");
    let before = bytes_under(&blobs);
    let t = Instant::now();
    let out = std::process::Command::new(bin).arg("garbage-collect").arg(dir.join("distribution.yml")).output()?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(format!("docker-registry garbage-collect: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok((took, before.saturating_sub(bytes_under(&blobs))))
}

/// The figures of one server in one run: `gc_s` and `gc_freed_mb` for both; for Berth in
/// the first run also `gc_small_s` and `gc_large_s` (100 garbage blobs in 10,000 and in
/// 100,000). `scale` divides the store sizes (a quick run).
pub async fn measure(
    name: &str,
    bin: &Path,
    dir: &Path,
    admin_password: &str,
    first_run: bool,
    scale: usize,
    seed: u64,
) -> Result<BTreeMap<&'static str, f64>, BoxError> {
    let blobs_per_image = LAYERS + 1;
    let images = 10_000 / blobs_per_image / scale;
    let mut out = BTreeMap::new();
    let sub = |what: &str| {
        let d = dir.join(what);
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).map(|_| d)
    };
    if name == "distribution" {
        eprintln!("  … GC: {} blobs, a tenth garbage", images * blobs_per_image);
        let (took, freed) = distribution_store(bin, &sub("gc")?, images, images / 10, seed).await?;
        out.insert("gc_s", took);
        out.insert("gc_freed_mb", freed as f64 / 1e6);
        return Ok(out);
    }
    eprintln!("  … GC: {} blobs, a tenth garbage", images * blobs_per_image);
    let (took, freed, _) = berth_store(bin, &sub("gc")?, admin_password, images, images / 10, seed).await?;
    out.insert("gc_s", took);
    out.insert("gc_freed_mb", freed as f64 / 1e6);
    if first_run {
        let garbage = 100 / blobs_per_image;
        for (key, blobs) in [("gc_small_s", 10_000 / scale), ("gc_large_s", 100_000 / scale)] {
            eprintln!("  … GC: {} garbage blobs in {blobs}", garbage * blobs_per_image);
            let (took, _, _) =
                berth_store(bin, &sub(key)?, admin_password, blobs / blobs_per_image, garbage, seed + 1).await?;
            out.insert(key, took);
        }
    }
    Ok(out)
}
