//! What a run is: its command line ([`Args`]), the workloads' [`Sizes`], and the fixed
//! parameters the benchmark page reports (connections per load, the disk's settle pause).
//!
//! A leaf: the harness (`main.rs`) runs by them, the loads (`metrics_off.rs`) and the page
//! (`report.rs`) read them, and the harness calls both.

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser, Clone)]
pub(crate) struct Args {
    /// The berth binary (a release build).
    #[arg(long, default_value = "target/release/berth")]
    pub(crate) berth: PathBuf,
    /// distribution's binary.
    #[arg(long, default_value = "/usr/bin/docker-registry")]
    pub(crate) registry: PathBuf,
    /// Where to write the markdown table [default: docs/benchmarks.md for a full run;
    /// target/bench-data/benchmarks-partial.md with --quick or --only, so a smoke run never
    /// replaces the published table].
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    /// Run only these workloads (comma-separated): big (1 GiB push/pull), small (200 small
    /// layers), manifest, head, get (1 MiB blob GET), list (tag list and catalog), auth
    /// (Berth only: manifest GETs on a public project with a bearer token ÷ anonymous), push
    /// (Berth only: manifest PUTs with the outbox ÷ without), gc
    /// (a 10,000-blob store, a tenth made garbage, each collector timed; Berth's GC with 100
    /// garbage blobs in 10,000 and in 100,000), proxy (a cold and a warm pull of an
    /// 8-layer image through Berth's proxy project and distribution's proxy mode).
    /// Start-up time and memory are always reported.
    #[arg(long, value_delimiter = ',', value_parser = WORKLOADS)]
    pub(crate) only: Vec<String>,
    /// Scratch space for the servers' data (on the disk being measured).
    #[arg(long, default_value = "target/bench-data")]
    pub(crate) scratch: PathBuf,
    /// Small sizes and one run: a smoke test of the harness, not a measurement.
    #[arg(long)]
    pub(crate) quick: bool,
    /// Runs per server (medians are reported).
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Chunk size of the chunked push and the ranged pull, in MiB.
    #[arg(long, default_value_t = 16)]
    pub(crate) chunk_mib: usize,
    /// Seconds of each fixed-time load (manifest, HEAD, 1 MiB GET, tag list, catalog).
    #[arg(long, default_value_t = 5.0)]
    pub(crate) seconds: f64,
    /// Also run Berth on S3 (a local Garage) + PostgreSQL, started by the harness.
    #[arg(long)]
    pub(crate) scaleout: bool,
    /// The command line to print in the report.
    #[arg(long, default_value = "bash bench/run.sh")]
    pub(crate) command: String,
}

/// Sizes of one run.
#[derive(Clone, Copy)]
pub(crate) struct Sizes {
    pub(crate) big: usize,
    pub(crate) chunk: usize,
    pub(crate) small_layers: usize,
    pub(crate) repos: usize,
    pub(crate) tags: usize,
    pub(crate) seconds: f64,
    /// Each of the 8 layers of the pull-through cache's image.
    pub(crate) proxy_layer: usize,
}

const WORKLOADS: [&str; 10] = ["big", "small", "manifest", "head", "get", "list", "auth", "push", "gc", "proxy"];
pub(crate) const CONNS: usize = 64;
pub(crate) const MIB: usize = 1 << 20;

/// The pause of `settle_disk` (main.rs) after `sync` returns; the page states it.
pub(crate) const SETTLE_SECS: u64 = 5;
