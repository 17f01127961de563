//! The pull-through cache, side by side: Berth's proxy project and distribution's own
//! proxy mode (`proxy: remoteurl:`), each in front of a fresh upstream (another
//! `docker-registry`, its access log kept) holding one multi-layer image. A cold pull
//! (nothing cached: manifest, config and layers fetched through the cache, layers 4 at a
//! time, as docker does) and then a warm pull of the same image; the upstream's access log
//! counts the requests each pull cost it.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, Target, full, push_monolithic, sha256};
use crate::image::{DOCKER_MANIFEST, manifest, put_manifest, random};
use crate::servers::{self, Server};

/// Layers of the image, and how many are fetched at once.
const LAYERS: usize = 8;
const PARALLEL: usize = 4;

/// `proxy_cold_s`, `proxy_warm_s`, `proxy_cold_upstream`, `proxy_warm_upstream` for one
/// server. `layer` bytes per layer.
pub async fn measure(
    name: &str,
    berth: &Path,
    registry: &Path,
    dir: &Path,
    admin_password: &str,
    layer: usize,
    seed: u64,
) -> Result<BTreeMap<&'static str, f64>, BoxError> {
    let upstream = servers::distribution_upstream(registry, &dir.join("upstream"), None);
    let mut c = Conn::open(&upstream.target()).await?;
    let config = format!(r#"{{"architecture":"amd64","os":"linux","seed":{seed}}}"#).into_bytes();
    let config_digest = sha256(&config);
    push_monolithic(&mut c, "team/app", Bytes::from(config.clone()), &config_digest).await?;
    let mut layers = Vec::new();
    for i in 0..LAYERS {
        let bytes = random(layer, seed * 100 + i as u64);
        let digest = sha256(&bytes);
        push_monolithic(&mut c, "team/app", Bytes::from(bytes), &digest).await?;
        layers.push((digest, layer));
    }
    put_manifest(&mut c, "team/app", "1", &manifest((&config_digest, config.len()), &layers)).await?;

    std::fs::create_dir_all(dir.join("cache"))?;
    let (cache, repo) = match name {
        "distribution" => {
            let url = format!("http://{}", upstream.addr);
            (servers::distribution_upstream(registry, &dir.join("cache"), Some(&url)), "team/app".to_owned())
        }
        _ => {
            let server = servers::berth(berth, &dir.join("cache"), None, admin_password);
            let mut api = Conn::open(&server.target()).await?;
            let json = |v: serde_json::Value| full(v.to_string());
            let ct = [("content-type", "application/json")];
            let project = json(serde_json::json!({ "name": "hub", "public": true }));
            api.expect(Method::POST, "/api/v1/projects", &ct, project, StatusCode::CREATED).await?;
            let spec =
                serde_json::json!({ "name": "up", "url": format!("http://{}", upstream.addr), "project": "hub" });
            api.expect(Method::POST, "/api/v1/upstreams", &ct, json(spec), StatusCode::CREATED).await?;
            (server, "hub/team/app".to_owned())
        }
    };
    let mut out = BTreeMap::new();
    for (time_key, count_key) in [("proxy_cold_s", "proxy_cold_upstream"), ("proxy_warm_s", "proxy_warm_upstream")] {
        let before = servers::requests_served(&upstream);
        let took = pull(&cache, &repo).await?;
        out.insert(time_key, took);
        out.insert(count_key, (servers::requests_served(&upstream) - before) as f64);
    }
    Ok(out)
}

/// Pulls `repo:1` through `cache` as a client does: the manifest, then the config and the
/// layers, [`PARALLEL`] at a time, each read whole. Seconds.
async fn pull(cache: &Server, repo: &str) -> Result<f64, BoxError> {
    let target = cache.target();
    let t = Instant::now();
    let mut c = Conn::open(&target).await?;
    let path = format!("/v2/{repo}/manifests/1");
    let m = c.expect(Method::GET, &path, &[("accept", DOCKER_MANIFEST)], full(Vec::new()), StatusCode::OK).await?;
    let body: serde_json::Value = serde_json::from_slice(&m.head)?;
    let mut digests = vec![body["config"]["digest"].as_str().ok_or("no config")?.to_owned()];
    for l in body["layers"].as_array().ok_or("no layers")? {
        digests.push(l["digest"].as_str().ok_or("no layer digest")?.to_owned());
    }
    let mut tasks = Vec::new();
    for part in digests.chunks(digests.len().div_ceil(PARALLEL)) {
        let (target, repo, part): (Target, String, Vec<String>) = (target.clone(), repo.to_owned(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(&target).await?;
            for digest in part {
                let path = format!("/v2/{repo}/blobs/{digest}");
                c.expect(Method::GET, &path, &[], full(Vec::new()), StatusCode::OK).await?;
            }
            Ok::<(), BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    Ok(t.elapsed().as_secs_f64())
}

/// Berth only: what the mirror's routing costs a pull of a local repository. Manifest
/// GETs of `benchroute/app:1` with no upstream, then with a default upstream configured
/// (every pull of a name without a project prefix then asks whether the repository exists
/// here), alternating off, on, on, off: `manifest_route_off_rps`, `manifest_route_on_rps`
/// (each the mean of its two loads) and `route_ratio` (on ÷ off, %).
pub async fn routing_cost(
    target: &Target,
    duration: std::time::Duration,
) -> Result<BTreeMap<&'static str, f64>, BoxError> {
    let mut c = Conn::open(target).await?;
    let config = br#"{"architecture":"amd64","os":"linux","route":true}"#;
    let config_digest = sha256(config);
    push_monolithic(&mut c, "benchroute/app", Bytes::from_static(config), &config_digest).await?;
    put_manifest(&mut c, "benchroute/app", "1", &manifest((&config_digest, config.len()), &[])).await?;
    let get = std::sync::Arc::new(move |_| {
        (Method::GET, "/v2/benchroute/app/manifests/1".to_owned(), vec![("accept", DOCKER_MANIFEST.to_owned())])
    });
    let load =
        async || crate::http::load(target, crate::params::CONNS, duration / 2, get.clone(), StatusCode::OK).await;
    let off1 = load().await?.rps();
    let ct = [("content-type", "application/json")];
    let project = full(serde_json::json!({ "name": "benchhub" }).to_string());
    c.expect(Method::POST, "/api/v1/projects", &ct, project, StatusCode::CREATED).await?;
    // Never asked: the pulls name a repository that exists here.
    let spec =
        serde_json::json!({ "name": "benchhub", "url": "http://127.0.0.1:9", "project": "benchhub", "default": true });
    c.expect(Method::POST, "/api/v1/upstreams", &ct, full(spec.to_string()), StatusCode::CREATED).await?;
    let on = (load().await?.rps() + load().await?.rps()) / 2.0;
    let off = (off1 + {
        c.expect(Method::DELETE, "/api/v1/upstreams/benchhub", &[], full(Vec::new()), StatusCode::NO_CONTENT).await?;
        load().await?.rps()
    }) / 2.0;
    Ok(BTreeMap::from([
        ("manifest_route_off_rps", off),
        ("manifest_route_on_rps", on),
        ("route_ratio", 100.0 * on / off),
    ]))
}
