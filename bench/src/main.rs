//! berth-bench: runs the same workloads against Berth and the reference registry
//! (distribution, Debian's `docker-registry`) in one run, alternating, and writes the
//! medians and ratios to a markdown table with this machine's physical limits.
//!
//! Not a test: nothing here passes or fails on a number. `bench/run.sh` is the one
//! documented way to run it.

mod http;
mod servers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, empty, full, push_chunked, push_monolithic, sha256};
use crate::servers::Server;

#[derive(Parser, Clone)]
struct Args {
    /// The berth binary (a release build).
    #[arg(long, default_value = "target/release/berth")]
    berth: PathBuf,
    /// distribution's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    registry: PathBuf,
    /// Where to write the markdown table.
    #[arg(long, default_value = "docs/benchmarks.md")]
    out: PathBuf,
    /// Scratch space for the servers' data (on the disk being measured).
    #[arg(long, default_value = "target/bench-data")]
    scratch: PathBuf,
    /// Small sizes and one run: a smoke test of the harness, not a measurement.
    #[arg(long)]
    quick: bool,
    /// Runs per server (medians are reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also run Berth on S3 (a local Garage) + PostgreSQL, started by the harness.
    #[arg(long)]
    scaleout: bool,
    /// The command line to print in the report.
    #[arg(long, default_value = "bash bench/run.sh")]
    command: String,
}

/// Sizes of one run.
#[derive(Clone, Copy)]
struct Sizes {
    big: usize,
    chunk: usize,
    small_layers: usize,
    repos: usize,
    tags: usize,
    seconds: f64,
}

const CONNS: usize = 64;
const MIB: usize = 1 << 20;
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One figure of the table.
#[derive(Clone, Copy)]
struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
}

const METRICS: &[Metric] = &[
    Metric { key: "push_mono", label: "1 GiB layer push, monolithic", unit: "MB/s", higher_is_better: true },
    Metric { key: "push_chunked", label: "1 GiB layer push, 16 MiB chunks", unit: "MB/s", higher_is_better: true },
    Metric { key: "pull_big", label: "1 GiB layer pull", unit: "MB/s", higher_is_better: true },
    Metric { key: "small_layers", label: "200 small layers (4–64 KiB), 8 concurrent", unit: "s", higher_is_better: false },
    Metric { key: "manifest_rps", label: "manifest GET by tag, 64 conns", unit: "req/s", higher_is_better: true },
    Metric { key: "manifest_p50", label: "manifest GET p50", unit: "ms", higher_is_better: false },
    Metric { key: "manifest_p99", label: "manifest GET p99", unit: "ms", higher_is_better: false },
    Metric { key: "head_rps", label: "blob HEAD, 64 conns", unit: "req/s", higher_is_better: true },
    Metric { key: "get_1m", label: "1 MiB blob GET, 64 conns", unit: "MB/s", higher_is_better: true },
    Metric { key: "tags_rps", label: "tag list (1,000 repos × 20 tags), 64 conns", unit: "req/s", higher_is_better: true },
    Metric { key: "catalog_rps", label: "catalog, n=100, 64 conns", unit: "req/s", higher_is_better: true },
    Metric { key: "idle_rss", label: "idle resident memory", unit: "MB", higher_is_better: false },
    Metric { key: "peak_rss", label: "peak resident memory", unit: "MB", higher_is_better: false },
    Metric { key: "startup", label: "start to first 200 on /v2/", unit: "ms", higher_is_better: false },
];

/// Deterministic incompressible bytes.
fn random(len: usize, seed: u64) -> Vec<u8> {
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

fn manifest(config: (&str, usize), layers: &[(String, usize)]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": { "mediaType": DOCKER_CONFIG, "digest": config.0, "size": config.1 },
        "layers": layers.iter().map(|(d, s)| serde_json::json!({ "mediaType": DOCKER_LAYER, "digest": d, "size": s })).collect::<Vec<_>>(),
    }))
    .unwrap()
}

async fn put_manifest(c: &mut Conn, repo: &str, tag: &str, body: &[u8]) -> Result<(), BoxError> {
    c.expect(Method::PUT, &format!("/v2/{repo}/manifests/{tag}"), &[("content-type", DOCKER_MANIFEST)], full(body.to_vec()), StatusCode::CREATED).await?;
    Ok(())
}

/// Every workload against one freshly started server.
async fn run_server(server: &Server, sizes: Sizes, big: &mut Vec<u8>, round: u64) -> Result<BTreeMap<&'static str, f64>, BoxError> {
    let mut out = BTreeMap::new();
    let addr = server.addr;
    out.insert("startup", server.startup.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.insert("idle_rss", server.memory().0);

    let mut c = Conn::open(addr).await?;
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);
    push_monolithic(&mut c, "bench/big", Bytes::from_static(config), &config_digest).await?;

    // 1. The big layer: monolithic push, pull, chunked push (fresh content each time).
    big[..8].copy_from_slice(&(round * 2).to_le_bytes());
    let digest = sha256(big);
    let t = Instant::now();
    push_monolithic(&mut c, "bench/big", Bytes::from(big.clone()), &digest).await?;
    out.insert("push_mono", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    put_manifest(&mut c, "bench/big", "mono", &manifest((&config_digest, config.len()), &[(digest.clone(), big.len())])).await?;
    let t = Instant::now();
    let r = c.expect(Method::GET, &format!("/v2/bench/big/blobs/{digest}"), &[], empty(), StatusCode::OK).await?;
    assert_eq!(r.len, big.len() as u64);
    out.insert("pull_big", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    big[..8].copy_from_slice(&(round * 2 + 1).to_le_bytes());
    let digest = sha256(big);
    let t = Instant::now();
    push_chunked(&mut c, "bench/big", Bytes::from(big.clone()), &digest, sizes.chunk).await?;
    out.insert("push_chunked", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);

    // 2. Many small layers, 8 uploads at a time, then the manifest naming them all.
    let layers: Vec<Vec<u8>> = (0..sizes.small_layers)
        .map(|i| random(4096 + (i * 7919) % (60 * 1024), round * 1000 + i as u64))
        .collect();
    let t = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mine: Vec<Vec<u8>> = layers.iter().skip(worker).step_by(8).cloned().collect();
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            for l in mine {
                let d = sha256(&l);
                push_monolithic(&mut c, "bench/small", Bytes::from(l), &d).await?;
            }
            Ok::<_, BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    push_monolithic(&mut c, "bench/small", Bytes::from_static(config), &config_digest).await?;
    let descriptors: Vec<(String, usize)> = layers.iter().map(|l| (sha256(l), l.len())).collect();
    put_manifest(&mut c, "bench/small", "v1", &manifest((&config_digest, config.len()), &descriptors)).await?;
    out.insert("small_layers", t.elapsed().as_secs_f64());

    // 3–5. Fixed-time loads.
    let duration = Duration::from_secs_f64(sizes.seconds);
    let accept = format!("{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json");
    let l = http::load(addr, CONNS, duration, Arc::new(move |_| (Method::GET, "/v2/bench/small/manifests/v1".into(), vec![("accept", accept.clone())])), StatusCode::OK).await?;
    out.insert("manifest_rps", l.rps());
    out.insert("manifest_p50", l.p50_ms);
    out.insert("manifest_p99", l.p99_ms);
    let head = format!("/v2/bench/small/blobs/{}", descriptors[0].0);
    let l = http::load(addr, CONNS, duration, Arc::new(move |_| (Method::HEAD, head.clone(), vec![])), StatusCode::OK).await?;
    out.insert("head_rps", l.rps());
    let one = random(MIB, round + 77);
    let one_digest = sha256(&one);
    push_monolithic(&mut c, "bench/one", Bytes::from(one), &one_digest).await?;
    let path = format!("/v2/bench/one/blobs/{one_digest}");
    let l = http::load(addr, CONNS, duration, Arc::new(move |_| (Method::GET, path.clone(), vec![])), StatusCode::OK).await?;
    out.insert("get_1m", l.mbps());

    // 6. Many repositories and tags: each repository mounts the base blobs and gets the
    //    same manifest under `tags` tags.
    let body = manifest((&config_digest, config.len()), &descriptors[..1]);
    let first = descriptors[0].0.clone();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let (body, first, config_digest) = (body.clone(), first.clone(), config_digest.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            for r in (worker..sizes.repos).step_by(16) {
                let repo = format!("many/r{r:04}");
                for d in [&config_digest, &first] {
                    c.expect(Method::POST, &format!("/v2/{repo}/blobs/uploads/?mount={d}&from=bench/small"), &[], empty(), StatusCode::CREATED).await?;
                }
                for t in 0..sizes.tags {
                    put_manifest(&mut c, &repo, &format!("t{t:02}"), &body).await?;
                }
            }
            Ok::<_, BoxError>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let repos = sizes.repos as u64;
    let l = http::load(addr, CONNS, duration, Arc::new(move |i| (Method::GET, format!("/v2/many/r{:04}/tags/list", i % repos), vec![])), StatusCode::OK).await?;
    out.insert("tags_rps", l.rps());
    let l = http::load(addr, CONNS, duration, Arc::new(|_| (Method::GET, "/v2/_catalog?n=100".into(), vec![])), StatusCode::OK).await?;
    out.insert("catalog_rps", l.rps());

    out.insert("peak_rss", server.memory().1);
    Ok(out)
}

/// This machine's ceilings, measured the same way every run.
struct Limits {
    sha256_mbps: f64,
    disk_mbps: f64,
    loopback_mbps: f64,
    client_rps: f64,
}

async fn limits(scratch: &std::path::Path, big: &[u8]) -> Result<Limits, BoxError> {
    let t = Instant::now();
    let _ = sha256(big);
    let sha256_mbps = big.len() as f64 / t.elapsed().as_secs_f64() / 1e6;

    let path = scratch.join("disk-probe");
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        for chunk in big.chunks(MIB) {
            f.write_all(chunk)?;
        }
        f.sync_all()?;
    }
    let disk_mbps = big.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(&path)?;

    // Loopback: one socket, a reader draining it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let total = big.len() * 2;
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let (mut s, _) = listener.accept().await?;
        let mut buf = vec![0u8; MIB];
        let mut n = 0;
        while n < total {
            let r = s.read(&mut buf).await?;
            if r == 0 {
                break;
            }
            n += r;
        }
        Ok::<_, std::io::Error>(n)
    });
    let t = Instant::now();
    {
        use tokio::io::AsyncWriteExt;
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        for _ in 0..2 {
            for chunk in big.chunks(MIB) {
                s.write_all(chunk).await?;
            }
        }
    }
    let n = reader.await??;
    let loopback_mbps = n as f64 / t.elapsed().as_secs_f64() / 1e6;

    // The client's own ceiling: a trivial in-process endpoint.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from_static(b"{}"))))
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(s), svc).await;
            });
        }
    });
    let l = http::load(addr, CONNS, Duration::from_secs(3), Arc::new(|_| (Method::GET, "/v2/".into(), vec![])), StatusCode::OK).await?;
    server.abort();
    Ok(Limits { sha256_mbps, disk_mbps, loopback_mbps, client_rps: l.rps() })
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn fmt(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn sh(cmd: &str) -> String {
    std::process::Command::new("sh").args(["-c", cmd]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()).unwrap_or_default()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let sizes = if args.quick {
        Sizes { big: 64 * MIB, chunk: 16 * MIB, small_layers: 20, repos: 50, tags: 5, seconds: 1.0 }
    } else {
        Sizes { big: 1024 * MIB, chunk: 16 * MIB, small_layers: 200, repos: 1000, tags: 20, seconds: 5.0 }
    };
    let runs = if args.quick { 1 } else { args.runs };
    std::fs::create_dir_all(&args.scratch)?;
    let mut big = random(sizes.big, 42);
    eprintln!("measuring this machine's limits");
    let lim = limits(&args.scratch, &big).await?;

    let scaleout = args.scaleout.then(|| {
        let pg = berth_testkit::Postgres::start();
        let garage = berth_testkit::Garage::start();
        (pg, garage)
    });

    let mut results: BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>> = BTreeMap::new();
    let mut names = vec!["Berth", "distribution"];
    if scaleout.is_some() {
        names.push("Berth (S3+PG)");
    }
    for run in 0..runs {
        for (i, name) in names.iter().enumerate() {
            let dir = args.scratch.join(format!("run{run}-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let server = match *name {
                "Berth" => servers::berth(&args.berth, &dir, None),
                "distribution" => servers::distribution(&args.registry, &dir),
                _ => {
                    let (pg, g) = scaleout.as_ref().unwrap();
                    let db = pg.database(&format!("bench{run}"));
                    let s = servers::ScaleOut {
                        storage: format!("s3://{}/run{run}?endpoint={}&region={}&path_style=true", g.bucket, g.endpoint, g.region),
                        database: db,
                        env: vec![
                            ("AWS_ACCESS_KEY_ID".into(), g.access_key_id.clone()),
                            ("AWS_SECRET_ACCESS_KEY".into(), g.secret_access_key.clone()),
                        ],
                    };
                    servers::berth(&args.berth, &dir, Some(&s))
                }
            };
            eprintln!("run {}/{runs}: {name}", run + 1);
            let got = run_server(&server, sizes, &mut big, run as u64 * 10 + i as u64).await?;
            for (k, v) in got {
                eprintln!("  {k}: {}", fmt(v));
                results.entry(name).or_default().entry(k).or_default().push(v);
            }
            drop(server);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    let med = |name: &str, key: &str| results.get(name).and_then(|m| m.get(key)).map(|v| median(v)).unwrap_or(f64::NAN);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\nBerth against the reference registry (distribution 2.8, Debian's `docker-registry`), measured\n");
    md.push_str("side by side in one run by `berth-bench`: the same client, the same machine, servers on loopback,\n");
    md.push_str(&format!("alternating, {runs} run(s) each, medians. Each run starts each server fresh on an empty data directory.\n\n"));
    md.push_str(&format!("Produced by: `{}`{}\n\n", args.command, if args.quick { " (quick mode: small sizes, NOT a measurement)" } else { "" }));
    md.push_str("## Machine\n\n");
    md.push_str(&format!("- CPU: {} ({} cores)\n", sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"), sh("nproc")));
    md.push_str(&format!("- Memory: {}\n", sh("grep MemTotal /proc/meminfo | awk '{printf \"%.1f GiB\", $2/1048576}'")));
    md.push_str(&format!("- Kernel: {}\n", sh("uname -r")));
    md.push_str(&format!("- Load average when the run ended: {}\n", sh("cut -d' ' -f1-3 /proc/loadavg")));
    md.push_str(&format!("- Date: {}\n\n", sh("date -u +%Y-%m-%dT%H:%MZ")));
    md.push_str("## Physical limits (measured by the harness)\n\n| limit | value |\n|---|---|\n");
    md.push_str(&format!("| SHA-256, one core | {} MB/s |\n", fmt(lim.sha256_mbps)));
    md.push_str(&format!("| sequential write + fsync ({} MiB) | {} MB/s |\n", sizes.big / MIB, fmt(lim.disk_mbps)));
    md.push_str(&format!("| loopback TCP, one stream | {} MB/s |\n", fmt(lim.loopback_mbps)));
    md.push_str(&format!("| the client's own ceiling (trivial endpoint, 64 conns) | {} req/s |\n\n", fmt(lim.client_rps)));
    md.push_str("## Results\n\n");
    let mut header = "| workload | unit |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for n in &names {
        header.push_str(&format!(" {n} |"));
        rule.push_str("---|");
    }
    for n in names.iter().filter(|n| **n != "distribution") {
        header.push_str(&format!(" {n} ÷ distribution |"));
        rule.push_str("---|");
    }
    md.push_str(&format!("{header}\n{rule}\n"));
    for m in METRICS {
        let mut row = format!("| {} | {} |", m.label, m.unit);
        for n in &names {
            row.push_str(&format!(" {} |", fmt(med(n, m.key))));
        }
        for n in names.iter().filter(|n| **n != "distribution") {
            let (b, d) = (med(n, m.key), med("distribution", m.key));
            let ratio = b / d;
            let better = if m.higher_is_better { ratio >= 1.0 } else { ratio <= 1.0 };
            row.push_str(&format!(" {}× {} |", fmt(ratio), if better { "(better)" } else { "(worse)" }));
        }
        md.push_str(&format!("{row}\n"));
    }
    let bound = lim.sha256_mbps.min(lim.disk_mbps);
    md.push_str("\n## Berth against the limits\n\n");
    md.push_str(&format!(
        "- 1 GiB push: {} MB/s monolithic, {} MB/s chunked = {:.0}% / {:.0}% of min(SHA-256, disk) = {} MB/s.\n",
        fmt(med("Berth", "push_mono")),
        fmt(med("Berth", "push_chunked")),
        100.0 * med("Berth", "push_mono") / bound,
        100.0 * med("Berth", "push_chunked") / bound,
        fmt(bound)
    ));
    md.push_str(&format!(
        "- 1 GiB pull: {} MB/s = {:.0}% of loopback.\n",
        fmt(med("Berth", "pull_big")),
        100.0 * med("Berth", "pull_big") / lim.loopback_mbps
    ));
    md.push_str(&format!(
        "- Manifest GET: {} req/s = {:.0}% of the client's ceiling; client and servers share the same {} cores.\n",
        fmt(med("Berth", "manifest_rps")),
        100.0 * med("Berth", "manifest_rps") / lim.client_rps,
        sh("nproc")
    ));
    std::fs::create_dir_all(args.out.parent().unwrap_or(std::path::Path::new(".")))?;
    std::fs::write(&args.out, md)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
