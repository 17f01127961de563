//! berth-bench: runs the same workloads against Berth and the reference registry
//! (distribution, Debian's `docker-registry`) in one run, alternating, and writes the
//! medians and ratios to a markdown table with this machine's physical limits. Berth is
//! asked with credentials (the admin's Basic on every request; a bearer token per
//! connection for the authenticated row), distribution without (it runs with no auth).
//!
//! Not a test: nothing here passes or fails on a number. `bench/run.sh` is the one
//! documented way to run it.

mod auth;
mod gc;
mod http;
mod image;
mod metrics_off;
mod outbox_off;
mod params;
mod proxy;
mod report;
mod servers;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use hyper::{Method, StatusCode};

use crate::http::{BoxError, Conn, Target, empty, push_chunked, push_monolithic, sha256};
use crate::image::{DOCKER_MANIFEST, manifest, put_manifest, random};
use crate::params::{Args, CONNS, MIB, SETTLE_SECS, Sizes};
use crate::report::{fmt, report, sh};
use crate::servers::Server;

/// Every selected workload against one freshly started server. Workloads the selection
/// leaves out but a selected one builds on (the small image, the 1,000 repositories) are
/// still set up, untimed.
async fn run_server(
    server: &Server,
    scratch: &std::path::Path,
    sizes: Sizes,
    big: &mut [u8],
    round: u64,
    on: &dyn Fn(&str) -> bool,
) -> Result<BTreeMap<&'static str, f64>, BoxError> {
    let mut out = BTreeMap::new();
    let target = server.target();
    // Progress on stderr (a full run takes minutes), with the memory high-water mark so far.
    let phase = |what: &str| eprintln!("  … {what} (peak RSS so far {:.0} MB)", server.memory().1);
    out.insert("startup", server.startup.as_secs_f64() * 1000.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    out.insert("idle_rss", server.memory().0);

    let mut c = Conn::open(&target).await?;
    let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let config_digest = sha256(config);

    // 1. The big layer: monolithic push, pull in one GET and in ranges, chunked push
    //    (fresh content each push, so nothing dedupes). Copies happen before the clock starts.
    if on("big") {
        push_monolithic(&mut c, "bench/big", Bytes::from_static(config), &config_digest).await?;
        let mut pushed = Vec::new();
        for (n, chunked) in [false, true].into_iter().enumerate() {
            big[..8].copy_from_slice(&(round * 2 + n as u64).to_le_bytes());
            let digest = sha256(big);
            // The disk's rate moves between minutes (see settle_disk): each push is also
            // compared with a probe taken right before it, from the same settled state.
            let probe = disk_probe(scratch, big).await?;
            let data = Bytes::from(big.to_vec());
            settle_disk().await;
            let t = Instant::now();
            if chunked {
                phase("push, chunked");
                let closing = push_chunked(&mut c, "bench/big", data, &digest, sizes.chunk).await?;
                eprintln!(
                    "    chunked push: {:.2} s in all, {:.2} s of it in the closing PUT",
                    t.elapsed().as_secs_f64(),
                    closing.as_secs_f64()
                );
                out.insert("push_chunked", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
                out.insert("push_chunked_probe", 100.0 * out["push_chunked"] / probe);
            } else {
                phase("push, monolithic");
                let cpu = server.cpu_seconds() + servers::proc_cpu_seconds("/proc/self/stat");
                push_monolithic(&mut c, "bench/big", data, &digest).await?;
                let cpu = server.cpu_seconds() + servers::proc_cpu_seconds("/proc/self/stat") - cpu;
                out.insert("push_mono_cores", cpu / t.elapsed().as_secs_f64());
                eprintln!("    monolithic push: {:.2} s", t.elapsed().as_secs_f64());
                out.insert("push_mono", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
                out.insert("push_mono_probe", 100.0 * out["push_mono"] / probe);
            }
            let tag = if chunked { "chunked" } else { "mono" };
            put_manifest(
                &mut c,
                "bench/big",
                tag,
                &manifest((&config_digest, config.len()), &[(digest.clone(), big.len())]),
            )
            .await?;
            pushed.push(digest);
        }
        // Pull the first layer pushed: whole, then in ranges.
        let path = format!("/v2/bench/big/blobs/{}", pushed[0]);
        phase("pull");
        let t = Instant::now();
        let r = c.expect(Method::GET, &path, &[], empty(), StatusCode::OK).await?;
        if r.len != big.len() as u64 {
            return Err(format!("pulled {} bytes of {}", r.len, big.len()).into());
        }
        out.insert("pull_big", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        let mut offset = 0;
        while offset < big.len() {
            let end = (offset + sizes.chunk).min(big.len());
            let range = format!("bytes={offset}-{}", end - 1);
            let r = c.expect(Method::GET, &path, &[("range", &range)], empty(), StatusCode::PARTIAL_CONTENT).await?;
            if r.len != (end - offset) as u64 {
                return Err(format!("range {range}: {} bytes", r.len).into());
            }
            offset = end;
        }
        out.insert("pull_ranged", big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
    }

    // 2. Many small layers, 8 uploads at a time, then the manifest naming them all.
    let need_small = ["small", "manifest", "head", "list", "auth", "push"].iter().any(|w| on(w));
    let mut descriptors = Vec::new();
    if need_small {
        let layers: Vec<Bytes> = (0..sizes.small_layers)
            .map(|i| Bytes::from(random(4096 + (i * 7919) % (60 * 1024), round * 1000 + i as u64)))
            .collect();
        descriptors = layers.iter().map(|l| (sha256(l), l.len())).collect::<Vec<(String, usize)>>();
        phase("small layers");
        let t = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..8 {
            let mine: Vec<(Bytes, String)> = layers
                .iter()
                .zip(&descriptors)
                .skip(worker)
                .step_by(8)
                .map(|(l, (d, _))| (l.clone(), d.clone()))
                .collect();
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(&target).await?;
                for (l, d) in mine {
                    push_monolithic(&mut c, "bench/small", l, &d).await?;
                }
                Ok::<_, BoxError>(())
            }));
        }
        for task in tasks {
            task.await??;
        }
        push_monolithic(&mut c, "bench/small", Bytes::from_static(config), &config_digest).await?;
        put_manifest(&mut c, "bench/small", "v1", &manifest((&config_digest, config.len()), &descriptors)).await?;
        if on("small") {
            out.insert("small_layers", t.elapsed().as_secs_f64());
        }
        // A manifest of a typical size (config + 5 layers, about 1 KB) for the GET load.
        put_manifest(&mut c, "bench/small", "app", &manifest((&config_digest, config.len()), &descriptors[..5]))
            .await?;
    }

    // 3–5. Fixed-time loads.
    let duration = Duration::from_secs_f64(sizes.seconds);
    if on("manifest") {
        phase("manifest GET load");
        let l = metrics_off::manifest_load(&target, duration).await?;
        out.insert("manifest_rps", l.rps());
        out.insert("manifest_p50", l.p50_ms);
        out.insert("manifest_p99", l.p99_ms);
    }
    if on("head") {
        let head = format!("/v2/bench/small/blobs/{}", descriptors[0].0);
        phase("blob HEAD load");
        let l = http::load(
            &target,
            CONNS,
            duration,
            Arc::new(move |_| (Method::HEAD, head.clone(), vec![])),
            StatusCode::OK,
        )
        .await?;
        out.insert("head_rps", l.rps());
    }
    if on("get") {
        let one = random(MIB, round + 77);
        let one_digest = sha256(&one);
        push_monolithic(&mut c, "bench/one", Bytes::from(one), &one_digest).await?;
        let path = format!("/v2/bench/one/blobs/{one_digest}");
        phase("1 MiB GET load");
        let l = http::load(
            &target,
            CONNS,
            duration,
            Arc::new(move |_| (Method::GET, path.clone(), vec![])),
            StatusCode::OK,
        )
        .await?;
        if l.bytes != l.requests * MIB as u64 {
            return Err(format!("1 MiB GET: {} bytes in {} responses", l.bytes, l.requests).into());
        }
        out.insert("get_1m", l.mbps());
    }

    // 6. Many repositories and tags: each repository mounts the small image's config and
    //    first layer from bench/small and gets one manifest under `tags` tags.
    if on("list") {
        let body = manifest((&config_digest, config.len()), &descriptors[..1]);
        let first = descriptors[0].0.clone();
        phase("repositories and tags setup");
        let t = Instant::now();
        let mut tasks = Vec::new();
        for worker in 0..16 {
            let (body, first, config_digest) = (body.clone(), first.clone(), config_digest.clone());
            let target = target.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = Conn::open(&target).await?;
                for r in (worker..sizes.repos).step_by(16) {
                    let repo = format!("many/r{r:04}");
                    for d in [&config_digest, &first] {
                        c.expect(
                            Method::POST,
                            &format!("/v2/{repo}/blobs/uploads/?mount={d}&from=bench/small"),
                            &[],
                            empty(),
                            StatusCode::CREATED,
                        )
                        .await?;
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
        out.insert("setup_puts", (sizes.repos * (2 + sizes.tags)) as f64 / t.elapsed().as_secs_f64());
        let repos = sizes.repos as u64;
        phase("tag list load");
        let l = http::load(
            &target,
            CONNS,
            duration,
            Arc::new(move |i| (Method::GET, format!("/v2/many/r{:04}/tags/list", i % repos), vec![])),
            StatusCode::OK,
        )
        .await?;
        out.insert("tags_rps", l.rps());
        phase("catalog load");
        let l = http::load(
            &target,
            CONNS,
            duration,
            Arc::new(|_| (Method::GET, "/v2/_catalog?n=100".into(), vec![])),
            StatusCode::OK,
        )
        .await?;
        out.insert("catalog_rps", l.rps());
    }

    // 7. Berth only: the same ~1 KB manifest in a public project (`benchpub`, a one-component
    //    name, is in `library`), asked for anonymously and with a bearer token that each
    //    connection fetched once from `/token` before the clock started.
    if on("auth") && server.authorization.is_some() {
        // A connection of its own: the one above sat idle through the loads, longer than
        // a server keeps an idle connection (Berth: 30 s, its header timeout).
        let mut c = Conn::open(&target).await?;
        let body = manifest((&config_digest, config.len()), &descriptors[..5]);
        for d in std::iter::once(&config_digest).chain(descriptors[..5].iter().map(|(d, _)| d)) {
            let mount = format!("/v2/benchpub/blobs/uploads/?mount={d}&from=bench/small");
            c.expect(Method::POST, &mount, &[], empty(), StatusCode::CREATED).await?;
        }
        put_manifest(&mut c, "benchpub", "app", &body).await?;
        let accept = format!("{DOCKER_MANIFEST}, application/vnd.oci.image.manifest.v1+json");
        let get =
            Arc::new(move |_| (Method::GET, "/v2/benchpub/manifests/app".to_owned(), vec![("accept", accept.clone())]));
        phase("manifest GET load, anonymous, public project");
        let anonymous = http::load(&target.anonymous(), CONNS, duration, get.clone(), StatusCode::OK).await?;
        phase("manifest GET load, bearer token, public project");
        let setup: http::Setup = Arc::new(|conn: &mut Conn| {
            Box::pin(async move {
                let token = auth::token(conn, "repository:benchpub:pull").await?;
                Ok(vec![("authorization", format!("Bearer {token}"))])
            })
        });
        let token = http::load_with(&target, CONNS, duration, get, StatusCode::OK, Some(setup)).await?;
        out.insert("manifest_anon_rps", anonymous.rps());
        out.insert("manifest_token_rps", token.rps());
        out.insert("token_ratio", 100.0 * token.rps() / anonymous.rps());
    }

    // 8. Berth only: the mirror's routing, without and with a default upstream.
    if on("proxy") && server.authorization.is_some() {
        phase("manifest GET load, with and without a default upstream");
        out.extend(proxy::routing_cost(&target, duration).await?);
    }

    out.insert("peak_rss", server.memory().1);
    Ok(out)
}

/// Lets the disk finish what earlier workloads wrote before a timed write starts. This
/// VM's disk takes about 1 GiB at its full rate and then slows to its sustained rate until
/// the host has drained it (seen here: 900 MB/s for the first GiB after a pause, 350–450 MB/s
/// sustained), so every timed big write, the probe's and each push, starts from the same
/// settled state.
async fn settle_disk() {
    let _ = tokio::task::spawn_blocking(|| std::process::Command::new("sync").status()).await;
    tokio::time::sleep(Duration::from_secs(SETTLE_SECS)).await;
}

/// Sequential write of `big` in 1 MiB writes, then fsync, from a settled disk: MB/s.
async fn disk_probe(scratch: &std::path::Path, big: &[u8]) -> Result<f64, BoxError> {
    let path = scratch.join("disk-probe");
    settle_disk().await;
    let t = Instant::now();
    {
        let mut f = std::fs::File::create(&path)?;
        for chunk in big.chunks(MIB) {
            f.write_all(chunk)?;
        }
        f.sync_all()?;
    }
    let mbps = big.len() as f64 / t.elapsed().as_secs_f64() / 1e6;
    std::fs::remove_file(&path)?;
    Ok(mbps)
}

/// Buffered writes of `big` without fsync: after a settled pause, then again right after
/// the first file's pages were freed. On a VM that hands freed guest memory back to the
/// host, the first pays for the host backing each fresh page again.
async fn page_cache_probe(scratch: &std::path::Path, big: &[u8]) -> Result<(f64, f64), BoxError> {
    settle_disk().await;
    let mut rates = Vec::new();
    for _ in 0..2 {
        let path = scratch.join("page-cache-probe");
        let t = Instant::now();
        {
            let mut f = std::fs::File::create(&path)?;
            for chunk in big.chunks(MIB) {
                f.write_all(chunk)?;
            }
        }
        rates.push(big.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        std::fs::remove_file(&path)?;
    }
    Ok((rates[0], rates[1]))
}

/// This machine's ceilings, measured the same way every run.
struct Limits {
    sha256_mbps: f64,
    disk_mbps: f64,
    cold_mbps: f64,
    warm_mbps: f64,
    loopback_mbps: f64,
    client_rps: f64,
}

async fn limits(scratch: &std::path::Path, big: &[u8]) -> Result<Limits, BoxError> {
    let t = Instant::now();
    let _ = sha256(big);
    let sha256_mbps = big.len() as f64 / t.elapsed().as_secs_f64() / 1e6;

    let disk_mbps = disk_probe(scratch, big).await?;
    let (cold_mbps, warm_mbps) = page_cache_probe(scratch, big).await?;

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
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"{}"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let l = http::load(
        &Target { addr, authorization: None },
        CONNS,
        Duration::from_secs(3),
        Arc::new(|_| (Method::GET, "/v2/".into(), vec![])),
        StatusCode::OK,
    )
    .await?;
    server.abort();
    Ok(Limits { sha256_mbps, disk_mbps, cold_mbps, warm_mbps, loopback_mbps, client_rps: l.rps() })
}

/// CPU seconds so far: `(busy on the whole machine, used by this process and its waited-for
/// children)`. Their difference over a run is what other processes (and kernel threads,
/// writeback included) took from the machine meanwhile.
fn cpu_seconds() -> (f64, f64) {
    let tick = 100.0; // USER_HZ, fixed at 100 on Linux
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<f64> =
        stat.lines().next().unwrap_or("").split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = [0, 1, 2, 5, 6, 7].iter().filter_map(|&i| f.get(i)).sum::<f64>() / tick;
    let me = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name; utime is field 14 overall.
    let rest: Vec<f64> = me
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(4)
        .filter_map(|x| x.parse().ok())
        .collect();
    (busy, rest.iter().sum::<f64>() / tick)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let args = Args::parse();
    let sizes = if args.quick {
        Sizes { big: 64 * MIB, chunk: 16 * MIB, small_layers: 20, repos: 50, tags: 5, seconds: 1.0, proxy_layer: MIB }
    } else {
        Sizes {
            big: 1024 * MIB,
            chunk: args.chunk_mib * MIB,
            small_layers: 200,
            repos: 1000,
            tags: 20,
            seconds: args.seconds,
            proxy_layer: 16 * MIB,
        }
    };
    let runs = if args.quick { 1 } else { args.runs };
    let partial = args.quick || !args.only.is_empty();
    let out_path = args.out.clone().unwrap_or_else(|| {
        if partial { args.scratch.join("benchmarks-partial.md") } else { PathBuf::from("docs/benchmarks.md") }
    });
    let only = args.only.clone();
    let on = move |w: &str| only.is_empty() || only.iter().any(|o| o == w);
    std::fs::create_dir_all(&args.scratch)?;
    let load_at_start = sh("cut -d' ' -f1-3 /proc/loadavg");
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mut big = random(sizes.big, 42);
    let admin_password = auth::random_password();

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
        eprintln!("run {}/{runs}: this machine's limits", run + 1);
        let lim = limits(&args.scratch, &big).await?;
        for (k, v) in [
            ("sha256", lim.sha256_mbps),
            ("disk", lim.disk_mbps),
            ("cold", lim.cold_mbps),
            ("warm", lim.warm_mbps),
            ("loopback", lim.loopback_mbps),
            ("client", lim.client_rps),
        ] {
            eprintln!("  {k}: {}", fmt(v));
            results.entry("limits").or_default().entry(k).or_default().push(v);
        }
        // Alternate the order from run to run so neither server always goes first.
        let mut order: Vec<usize> = (0..names.len()).collect();
        if run % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let name = names[i];
            let dir = args.scratch.join(format!("run{run}-{i}"));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let (busy0, own0, wall0) = {
                let (b, o) = cpu_seconds();
                (b, o, Instant::now())
            };
            let server = match name {
                "Berth" => servers::berth(&args.berth, &dir, None, &admin_password),
                "distribution" => servers::distribution(&args.registry, &dir),
                _ => {
                    let (pg, g) = scaleout.as_ref().unwrap();
                    let db = pg.database(&format!("bench{run}"));
                    let s = servers::ScaleOut {
                        storage: format!(
                            "s3://{}/run{run}?endpoint={}&region={}&path_style=true",
                            g.bucket, g.endpoint, g.region
                        ),
                        database: db,
                        env: vec![
                            ("AWS_ACCESS_KEY_ID".into(), g.access_key_id.clone()),
                            ("AWS_SECRET_ACCESS_KEY".into(), g.secret_access_key.clone()),
                        ],
                    };
                    servers::berth(&args.berth, &dir, Some(&s), &admin_password)
                }
            };
            eprintln!("run {}/{runs}: {name}", run + 1);
            let got = run_server(&server, &args.scratch, sizes, &mut big, run as u64 * 10 + i as u64, &on).await?;
            for (k, v) in got {
                eprintln!("  {k}: {}", fmt(v));
                results.entry(name).or_default().entry(k).or_default().push(v);
            }
            drop(server);
            if name == "Berth" && on("manifest") {
                let got = results.entry(name).or_default();
                metrics_off::measure(&args.berth, &dir, &admin_password, sizes.seconds, got).await?;
            }
            if name == "Berth" && on("push") {
                let got = results.entry(name).or_default();
                outbox_off::measure(&args.berth, &dir, &admin_password, sizes.seconds, got).await?;
            }
            let (busy1, own1) = cpu_seconds();
            let others =
                ((busy1 - busy0) - (own1 - own0)).max(0.0) / (wall0.elapsed().as_secs_f64() * cores as f64) * 100.0;
            eprintln!("  CPU taken by other processes meanwhile: {others:.0}% of the machine");
            results.entry(name).or_default().entry("others_cpu").or_default().push(others);
            if on("gc") && name != "Berth (S3+PG)" {
                let bin = if name == "Berth" { &args.berth } else { &args.registry };
                let scale = if args.quick { 10 } else { 1 };
                let seed = run as u64 * 10 + i as u64;
                let got = gc::measure(name, bin, &dir, &admin_password, run == 0, scale, seed).await?;
                for (k, v) in got {
                    eprintln!("  {k}: {}", fmt(v));
                    results.entry(name).or_default().entry(k).or_default().push(v);
                }
            }
            if on("proxy") && name != "Berth (S3+PG)" {
                let layer = sizes.proxy_layer;
                let seed = run as u64 * 10 + i as u64;
                let got =
                    proxy::measure(name, &args.berth, &args.registry, &dir.join("proxy"), &admin_password, layer, seed)
                        .await?;
                for (k, v) in got {
                    eprintln!("  {k}: {}", fmt(v));
                    results.entry(name).or_default().entry(k).or_default().push(v);
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    let md = report(&args, sizes, runs, &names, &results, &load_at_start);
    if let Some(parent) = out_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&out_path, md)?;
    eprintln!("wrote {}", out_path.display());
    Ok(())
}
