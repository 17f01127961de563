//! The benchmark page: its rows (`METRICS`), and the measured runs turned into
//! `docs/benchmarks.md` (or the partial page of a filtered run).

use std::collections::BTreeMap;

use crate::params::{Args, CONNS, MIB, SETTLE_SECS, Sizes};

/// One figure of the table.
#[derive(Clone, Copy)]
pub(crate) struct Metric {
    key: &'static str,
    label: &'static str,
    unit: &'static str,
    higher_is_better: bool,
}

pub(crate) const METRICS: &[Metric] = &[
    Metric { key: "push_mono", label: "{big} layer push, monolithic", unit: "MB/s", higher_is_better: true },
    Metric { key: "push_chunked", label: "{big} layer push, {chunk} chunks", unit: "MB/s", higher_is_better: true },
    Metric {
        key: "push_mono_probe",
        label: "{big} monolithic push ÷ a disk probe run just before it",
        unit: "%",
        higher_is_better: true,
    },
    Metric {
        key: "push_chunked_probe",
        label: "{big} chunked push ÷ a disk probe run just before it",
        unit: "%",
        higher_is_better: true,
    },
    Metric {
        key: "push_mono_cores",
        label: "CPU during the monolithic push: server + client, in cores (of 2)",
        unit: "cores",
        higher_is_better: false,
    },
    Metric { key: "pull_big", label: "{big} layer pull, one GET", unit: "MB/s", higher_is_better: true },
    Metric { key: "pull_ranged", label: "{big} layer pull, {chunk} ranges", unit: "MB/s", higher_is_better: true },
    Metric {
        key: "small_layers",
        label: "push of {small} small layers (4–64 KiB), 8 concurrent",
        unit: "s",
        higher_is_better: false,
    },
    Metric {
        key: "manifest_rps",
        label: "manifest GET by tag (~1 KB), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "manifest_metrics_rps",
        label: "manifest GET by tag, metrics on (same data, Berth restarted; mean of the 1st and 4th load), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "manifest_nometrics_rps",
        label: "manifest GET by tag, metrics off (`--metrics false`, same data; mean of the 2nd and 3rd load), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "metrics_ratio",
        label: "manifest GETs with metrics ÷ without (the two rows above; ≥ 95 % required)",
        unit: "%",
        higher_is_better: true,
    },
    Metric { key: "manifest_p50", label: "manifest GET p50", unit: "ms", higher_is_better: false },
    Metric { key: "manifest_p99", label: "manifest GET p99", unit: "ms", higher_is_better: false },
    Metric { key: "head_rps", label: "blob HEAD, 64 conns", unit: "req/s", higher_is_better: true },
    Metric { key: "get_1m", label: "1 MiB blob GET, 64 conns", unit: "MB/s", higher_is_better: true },
    Metric {
        key: "setup_puts",
        label: "setup of the next two: {repos} × (2 mounts + {tags} manifest PUTs), 16 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "push_outbox_rps",
        label: "manifest PUTs (new manifests, blobs present), outbox on (Berth restarted; mean of the 1st and 4th load), 16 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "push_nooutbox_rps",
        label: "manifest PUTs, outbox off (`BERTH_BENCH_OUTBOX_OFF=1`; mean of the 2nd and 3rd load), 16 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "outbox_ratio",
        label: "manifest PUTs with the outbox ÷ without (the two rows above; ≥ 90 % required)",
        unit: "%",
        higher_is_better: true,
    },
    Metric {
        key: "tags_rps",
        label: "tag list ({repos} repos × {tags} tags), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "catalog_rps",
        label: "catalog, n=100 ({repos} repos), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "manifest_anon_rps",
        label: "manifest GET, public project, anonymous, 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "manifest_token_rps",
        label: "manifest GET, public project, bearer token (one `/token` per connection), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "token_ratio",
        label: "authenticated ÷ anonymous manifest GETs (the two rows above; ≥ 80 % required)",
        unit: "%",
        higher_is_better: true,
    },
    Metric {
        key: "idle_rss",
        label: "idle resident memory (VmRSS 0.5 s after start)",
        unit: "MB",
        higher_is_better: false,
    },
    Metric {
        key: "peak_rss",
        label: "peak resident memory (VmHWM after all workloads)",
        unit: "MB",
        higher_is_better: false,
    },
    Metric {
        key: "startup",
        label: "start to first 200 on /v2/, empty data directory",
        unit: "ms",
        higher_is_better: false,
    },
    Metric {
        key: "restart",
        label: "start to first 200 on /v2/, restarted on the run's data",
        unit: "ms",
        higher_is_better: false,
    },
    Metric {
        key: "gc_s",
        label: "GC of a 10,000-blob store, a tenth garbage (Berth online; distribution stopped)",
        unit: "s",
        higher_is_better: false,
    },
    Metric { key: "gc_freed_mb", label: "bytes that GC freed on disk", unit: "MB", higher_is_better: true },
    Metric {
        key: "manifest_route_off_rps",
        label: "manifest GET of a local repository, no upstream (mean of the 1st and 4th load), 64 conns",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "manifest_route_on_rps",
        label: "the same with a default upstream (mirror routing: one existence check per pull; mean of the 2nd and 3rd load)",
        unit: "req/s",
        higher_is_better: true,
    },
    Metric {
        key: "route_ratio",
        label: "manifest GETs with a default upstream ÷ without (the two rows above)",
        unit: "%",
        higher_is_better: true,
    },
    Metric {
        key: "proxy_cold_s",
        label: "pull-through cache, cold pull of an 8-layer image ({proxy} layers, 4 at a time)",
        unit: "s",
        higher_is_better: false,
    },
    Metric {
        key: "proxy_cold_upstream",
        label: "requests the upstream served for that cold pull",
        unit: "requests",
        higher_is_better: false,
    },
    Metric {
        key: "proxy_warm_s",
        label: "pull-through cache, warm pull of the same image",
        unit: "s",
        higher_is_better: false,
    },
    Metric {
        key: "proxy_warm_upstream",
        label: "requests the upstream served for that warm pull",
        unit: "requests",
        higher_is_better: false,
    },
    Metric {
        key: "gc_small_s",
        label: "GC with 100 garbage blobs in a store of 10,000",
        unit: "s",
        higher_is_better: false,
    },
    Metric {
        key: "gc_large_s",
        label: "GC with 100 garbage blobs in a store of 100,000",
        unit: "s",
        higher_is_better: false,
    },
];

impl Metric {
    /// The label with this run's sizes filled in.
    fn label(&self, s: Sizes) -> String {
        let size = |b: usize| if b >= 1 << 30 { format!("{} GiB", b >> 30) } else { format!("{} MiB", b >> 20) };
        self.label
            .replace("{big}", &size(s.big))
            .replace("{chunk}", &size(s.chunk))
            .replace("{small}", &s.small_layers.to_string())
            .replace("{proxy}", &size(s.proxy_layer))
            .replace("{repos}", &s.repos.to_string())
            .replace("{tags}", &s.tags.to_string())
    }
}

/// The markdown page: how it was produced, the machine, its limits, the table, every run.
pub(crate) fn report(
    args: &Args,
    sizes: Sizes,
    runs: usize,
    names: &[&str],
    results: &BTreeMap<&'static str, BTreeMap<&'static str, Vec<f64>>>,
    load_at_start: &str,
) -> String {
    let med = |name: &str, key: &str| results.get(name).and_then(|m| m.get(key)).map(|v| median(v)).unwrap_or(f64::NAN);
    let lim = |key: &str| med("limits", key);
    let mut md = String::new();
    md.push_str("# Benchmarks\n\n");
    md.push_str("Berth against the reference registry (distribution 2.8, Debian's `docker-registry`), measured\n");
    md.push_str("side by side in one run by `berth-bench` (`bench/`): the same client, the same machine, both\n");
    md.push_str(&format!(
        "servers on loopback, alternating, {runs} run(s) each; every figure is the median of the runs.\n"
    ));
    md.push_str("Each run starts each server fresh on an empty data directory on the same disk. The client is\n");
    md.push_str(&format!(
        "hyper's HTTP/1.1 with keep-alive connections; the fixed-time loads run {} s each at {CONNS} connections,\n",
        sizes.seconds
    ));
    md.push_str("each connection sending its next request when the previous answer has been read (a closed loop).\n");
    md.push_str("Layers are incompressible (xorshift), pushed as Docker schema 2 images with real digests.\n\n");
    let mut flags = Vec::new();
    if args.quick {
        flags.push("quick mode: small sizes, one run — a smoke test, NOT a measurement".to_owned());
    }
    if !args.only.is_empty() {
        flags.push(format!("only: {}", args.only.join(",")));
    }
    md.push_str(&format!(
        "Produced by: `{}`{}\n\n",
        args.command,
        if flags.is_empty() { String::new() } else { format!(" ({})", flags.join("; ")) }
    ));
    md.push_str("## Machine\n\n");
    md.push_str(&format!(
        "- CPU: {} × {} (`nproc`: {})\n",
        sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs"),
        sh("grep -c ^processor /proc/cpuinfo"),
        sh("nproc")
    ));
    md.push_str(&format!(
        "- CPU flags of note: {}\n",
        sh("grep -m1 ^flags /proc/cpuinfo | tr ' ' '\\n' | grep -xE 'sha_ni|avx2|aes|avx512f' | xargs")
    ));
    md.push_str(&format!(
        "- Memory (`free -m`): {}\n",
        sh("free -m | awk '/^Mem:/ {print $2\" MB total, \"$7\" MB available\"}'")
    ));
    md.push_str(&format!("- Kernel: {}\n", sh("uname -srm")));
    md.push_str(&format!(
        "- Disk under the data directories: {}\n",
        sh(&format!("df -hT {} | awk 'NR==2 {{print $2\" (\"$1\"), \"$3\" total\"}}'", args.scratch.display()))
    ));
    md.push_str(&format!(
        "- Servers: Berth {} (release build), {}\n",
        sh("git rev-parse --short HEAD 2>/dev/null || echo '?'"),
        sh(&format!("{} --version 2>&1 | head -1", args.registry.display()))
    ));
    md.push_str(&format!("- Load average (1, 5, 15 min) before the run: {load_at_start}; after: {} (the run itself keeps both cores busy)\n", sh("cut -d' ' -f1-3 /proc/loadavg")));
    let others: Vec<f64> =
        names.iter().filter_map(|n| results.get(n).and_then(|m| m.get("others_cpu"))).flatten().copied().collect();
    md.push_str(&format!(
        "- CPU taken by other processes while a server was measured (busy time in /proc/stat minus the harness's and its servers'; \
         kernel writeback threads count here too): median {:.0}%, worst run {:.0}% of the machine\n",
        median(&others),
        others.iter().copied().fold(0.0, f64::max)
    ));
    md.push_str(&format!("- Date: {}\n\n", sh("date -u +%Y-%m-%dT%H:%MZ")));

    md.push_str("## Physical limits (measured by the harness, medians)\n\n| limit | value |\n|---|---|\n");
    md.push_str(&format!("| SHA-256 of {} MiB, one core | {} MB/s |\n", sizes.big / MIB, fmt(lim("sha256"))));
    md.push_str(&format!(
        "| sequential write of {} MiB in 1 MiB writes, then fsync | {} MB/s |\n",
        sizes.big / MIB,
        fmt(lim("disk"))
    ));
    md.push_str(&format!(
        "| the same without fsync, after a {SETTLE_SECS} s pause (fresh guest memory; page cache only) | {} MB/s |\n",
        fmt(lim("cold"))
    ));
    md.push_str(&format!(
        "| the same again right after the first file was deleted (memory just freed) | {} MB/s |\n",
        fmt(lim("warm"))
    ));
    md.push_str(&format!("| loopback TCP, one stream, 1 MiB writes | {} MB/s |\n", fmt(lim("loopback"))));
    md.push_str(&format!(
        "| the client's own ceiling: a trivial in-process hyper endpoint, {CONNS} conns | {} req/s |\n\n",
        fmt(lim("client"))
    ));

    md.push_str("## Results\n\n");
    md.push_str("Ratio = Berth ÷ distribution. For MB/s and req/s higher is better (ratio > 1 favours Berth);\n");
    md.push_str("for s, ms and MB of memory lower is better (ratio < 1 favours Berth). Each ratio says which.\n\n");
    let mut header = "| workload | unit |".to_owned();
    let mut rule = "|---|---|".to_owned();
    for n in names {
        header.push_str(&format!(" {n} |"));
        rule.push_str("---:|");
    }
    for n in names.iter().filter(|n| **n != "distribution") {
        header.push_str(&format!(" {n} ÷ distribution |"));
        rule.push_str("---|");
    }
    md.push_str(&format!("{header}\n{rule}\n"));
    let shown: Vec<&Metric> = METRICS.iter().filter(|m| names.iter().any(|n| !med(n, m.key).is_nan())).collect();
    for m in &shown {
        let mut row = format!("| {} | {} |", m.label(sizes), m.unit);
        for n in names {
            row.push_str(&format!(" {} |", fmt(med(n, m.key))));
        }
        for n in names.iter().filter(|n| **n != "distribution") {
            let (b, d) = (med(n, m.key), med("distribution", m.key));
            if b.is_nan() || d.is_nan() {
                row.push_str(" – |");
                continue;
            }
            let ratio = b / d;
            let better = if m.higher_is_better { ratio >= 1.0 } else { ratio <= 1.0 };
            let dir = if m.higher_is_better { "higher" } else { "lower" };
            row.push_str(&format!(
                " {}× ({}; {dir} is better) |",
                fmt(ratio),
                if better { "Berth better" } else { "Berth worse" }
            ));
        }
        md.push_str(&format!("{row}\n"));
    }

    if names.len() > 2 {
        md.push_str(
            "\nBerth (S3+PG): Berth with `--storage s3://…` on a one-node Garage and `--database postgres://…` on a\n\
            throwaway PostgreSQL cluster (berth-testkit; `fsync=off`), both on this machine and sharing its 2 cores.\n",
        );
    }
    md.push_str("\n## Berth against the limits\n\n");
    let frac = |v: f64, limit: f64| if v.is_nan() { "–".to_owned() } else { format!("{:.0}%", 100.0 * v / limit) };
    let bound = lim("sha256").min(lim("disk"));
    let gib = METRICS[0].label(sizes).replace(" layer push, monolithic", "");
    let chunk = format!("{} MiB", sizes.chunk / MIB);
    let b = |k: &str| med("Berth", k);
    if !b("push_mono").is_nan() {
        md.push_str(&format!(
            "- {} push: {} MB/s monolithic, {} MB/s chunked = {} / {} of min(SHA-256 one core, disk with fsync) = {} MB/s. \
             A push must hash every byte and make it durable. The probe writes everything, then fsyncs; Berth \
             starts writeback while the upload arrives, so it can beat the probe. This virtual disk's rate \
             varies a lot from one probe to the next (see every run below); against a probe run right before \
             it, from the same settled state, the median push is {}% monolithic and {}% chunked.\n",
            gib, fmt(b("push_mono")), fmt(b("push_chunked")), frac(b("push_mono"), bound), frac(b("push_chunked"), bound), fmt(bound),
            fmt(b("push_mono_probe")), fmt(b("push_chunked_probe")),
        ));
        md.push_str(&format!(
            "- {} pull: {} MB/s in one GET, {} MB/s in {} ranges = {} / {} of loopback (the blob is in the page cache).\n",
            gib, fmt(b("pull_big")), fmt(b("pull_ranged")), chunk, frac(b("pull_big"), lim("loopback")), frac(b("pull_ranged"), lim("loopback"))
        ));
    }
    if !b("get_1m").is_nan() {
        md.push_str(&format!("- 1 MiB blob GET at {CONNS} conns: {} MB/s = {} of one loopback stream's throughput (it uses {CONNS} streams).\n", fmt(b("get_1m")), frac(b("get_1m"), lim("loopback"))));
    }
    for (k, what) in [
        ("manifest_rps", "manifest GET"),
        ("head_rps", "blob HEAD"),
        ("tags_rps", "tag list"),
        ("catalog_rps", "catalog"),
    ] {
        if !b(k).is_nan() {
            md.push_str(&format!(
                "- {what}: {} req/s = {} of the client's ceiling.\n",
                fmt(b(k)),
                frac(b(k), lim("client"))
            ));
        }
    }
    if !b("gc_small_s").is_nan() {
        md.push_str(&format!(
            "- GC in proportion to change: 100 garbage blobs took {} s in a store of 10,000 blobs and {} s in one of \
             100,000 ({}× for ten times the store). Berth's collector reviews what changed since its last run (a \
             queue filled by the writes themselves); distribution's `garbage-collect` walks the whole store, with \
             the registry stopped.\n",
            fmt(b("gc_small_s")),
            fmt(b("gc_large_s")),
            fmt(b("gc_large_s") / b("gc_small_s"))
        ));
    }
    let d = |k: &str| med("distribution", k);
    if !b("startup").is_nan() && !b("restart").is_nan() {
        md.push_str(&format!(
            "- Start: {} ms on an empty data directory, {} ms restarted on its data. A first start creates the \
             database and the system administrator, whose password it hashes with argon2id; on either, the \
             harness's first request proves the admin's Basic credentials, one more argon2id verification \
             (distribution runs here without authentication).\n",
            fmt(b("startup")),
            fmt(b("restart"))
        ));
    }
    if !b("gc_freed_mb").is_nan() && !d("gc_freed_mb").is_nan() {
        md.push_str(&format!(
            "- Bytes GC freed: Berth {} MB, the garbage blobs' bytes exactly; distribution {} MB, which also counts \
             the deleted images' manifests: it stores a manifest as a blob file, removed only by `garbage-collect`, \
             while Berth keeps manifests in its database and drops one when it is deleted.\n",
            fmt(b("gc_freed_mb")),
            fmt(d("gc_freed_mb"))
        ));
    }
    md.push_str(&format!(
        "\nThe client, the server under test and the kernel share the same {} cores, so request rates near the\n\
         client's ceiling are bounded by the machine, not by the server alone.\n",
        sh("nproc")
    ));

    md.push_str("\n## How to read it\n\n");
    md.push_str(
        "- Both servers make an upload durable before acknowledging it. Berth fsyncs the blob and its directory\n\
        before recording it, and answers once an fsync of SQLite's write-ahead log has covered the record (one fsync\n\
        shared by all requests waiting at that moment). distribution's filesystem driver fsyncs each file it writes\n\
        when its writer commits or closes (the data and every link file), and no directories.\n",
    );
    md.push_str(&format!("- This VM's disk takes about 1 GiB at its full rate after a pause, then slows to its sustained rate until\n\
        the host has drained it (seen here: 900 MB/s, then 350–450 MB/s). The harness runs `sync` and waits {SETTLE_SECS} s\n\
        before the disk probe and before each big push, yet the disk's rate still moves from run to run: compare a\n\
        push with the probe and with distribution of the same run (every run is listed below).\n"));
    md.push_str(
        "- Request rates near the client's ceiling measure the machine as much as the server: the client, the server\n\
        and the kernel's TCP stack share the 2 cores.\n",
    );
    md.push_str(
        "- Berth runs secure by default: every request to it carries the admin's Basic credentials (distribution runs\n\
        without auth and gets none). The two `public project` rows ask Berth alone for the same manifest in the public\n\
        project `library`, once anonymously and once with a bearer token each connection fetched from `/token` before\n\
        the clock started; their ratio is what verifying a token on every request costs.\n",
    );
    md.push_str(
        "- `peak resident memory` is the high-water mark over every workload. Berth's includes its blob-serving buffers\n\
        (256 KiB each: about two per response being sent, at most 64 kept for reuse).\n",
    );
    md.push_str(
        "\n## Every run\n\nValues in run order (the harness alternates which server goes first).\n\n| figure | ",
    );
    let keys: Vec<&str> = std::iter::once("limits").chain(names.iter().copied()).collect();
    md.push_str(&keys.join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---|".repeat(keys.len()));
    md.push('\n');
    let lim_rows = [
        ("sha256", "SHA-256 MB/s"),
        ("disk", "disk + fsync MB/s"),
        ("cold", "page cache, cold MB/s"),
        ("warm", "page cache, warm MB/s"),
        ("loopback", "loopback MB/s"),
        ("client", "client ceiling req/s"),
    ];
    let all = |name: &str, key: &str| {
        results
            .get(name)
            .and_then(|m| m.get(key))
            .map(|v| v.iter().map(|x| fmt(*x)).collect::<Vec<_>>().join(", "))
            .unwrap_or_else(|| "–".into())
    };
    for (k, label) in lim_rows {
        md.push_str(&format!("| {label} | {} |{}\n", all("limits", k), " |".repeat(names.len())));
    }
    for m in &shown {
        md.push_str(&format!("| {} ({}) | |", m.label(sizes), m.unit));
        for n in names {
            md.push_str(&format!(" {} |", all(n, m.key)));
        }
        md.push('\n');
    }
    md.push_str("| CPU taken by other processes meanwhile (% of the machine) | |");
    for n in names {
        md.push_str(&format!(" {} |", all(n, "others_cpu")));
    }
    md.push('\n');
    md
}

/// The middle of the runs (the upper one of an even count), NaN for none.
pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// A figure as the page (and the progress lines) write it: no decimals from 100, one from
/// 10, two below; `–` for none.
pub(crate) fn fmt(v: f64) -> String {
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

/// The trimmed output of a shell command, empty if it fails (the page describes the
/// machine with these).
pub(crate) fn sh(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}
