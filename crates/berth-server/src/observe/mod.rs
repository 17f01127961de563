//! What an operator counts of a running node: Prometheus metrics ([`Metrics`]), and the
//! store decorators that time every blob-store and database operation (`stores.rs`).
//! The access log and request ids are `track.rs`'s, `/healthz`, `/readyz` and `/metrics`
//! `probes.rs`'s.
//!
//! Not the audit log (`berth_jobs::audit`: who did what, kept in the database). Nothing here keeps a
//! lock across requests: a request's series is resolved once into a slot of a fixed table
//! (an atomic load afterwards), and label values come from small fixed sets (the
//! [`Route`], the method, the status), never from a path, so the series are bounded.

use std::sync::OnceLock;
use std::time::Duration;

pub use berth_jobs::JobOutcome;
use berth_jobs::JobRecorder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry as PromRegistry;

pub mod stores;

/// What a request was, as a metric label: the typed endpoint's kind for `/v2`, else the
/// surface it reached. A fixed set, so request series stay bounded whatever the paths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Base,
    Catalog,
    Tags,
    Manifest,
    Blob,
    UploadStart,
    Upload,
    Referrers,
    Token,
    Api,
    Metrics,
    Health,
    /// A path that names nothing (404) or a request refused before its endpoint was known.
    Unknown,
}

impl Route {
    const ALL: [Route; 13] = [
        Route::Base,
        Route::Catalog,
        Route::Tags,
        Route::Manifest,
        Route::Blob,
        Route::UploadStart,
        Route::Upload,
        Route::Referrers,
        Route::Token,
        Route::Api,
        Route::Metrics,
        Route::Health,
        Route::Unknown,
    ];

    /// A `/v2` request's route: its endpoint's kind.
    pub fn of(endpoint: &crate::endpoint::Endpoint) -> Route {
        use crate::endpoint::Endpoint as E;
        match endpoint {
            E::Base => Route::Base,
            E::Catalog => Route::Catalog,
            E::Tags(_) => Route::Tags,
            E::Manifest(..) | E::InvalidReference(..) => Route::Manifest,
            E::Blob(..) => Route::Blob,
            E::UploadStart(_) => Route::UploadStart,
            E::Upload(..) => Route::Upload,
            E::Referrers(..) => Route::Referrers,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Base => "base",
            Route::Catalog => "catalog",
            Route::Tags => "tags",
            Route::Manifest => "manifest",
            Route::Blob => "blob",
            Route::UploadStart => "upload_start",
            Route::Upload => "upload",
            Route::Referrers => "referrers",
            Route::Token => "token",
            Route::Api => "api",
            Route::Metrics => "metrics",
            Route::Health => "health",
            Route::Unknown => "unknown",
        }
    }

    /// Whether a request here is logged at debug rather than info (probes and scrapes
    /// come every few seconds and say nothing).
    pub fn is_probe(self) -> bool {
        matches!(self, Route::Metrics | Route::Health)
    }
}

/// Methods with a series of their own; any other is `OTHER`.
const METHODS: [&str; 8] = ["GET", "HEAD", "PUT", "POST", "PATCH", "DELETE", "OPTIONS", "OTHER"];
/// Statuses with a cached slot; another status still gets its series, through the
/// family's lock.
const STATUSES: [u16; 20] =
    [200, 201, 202, 204, 206, 301, 304, 307, 400, 401, 403, 404, 405, 413, 416, 429, 500, 502, 503, 504];
const SLOTS: usize = Route::ALL.len() * METHODS.len() * STATUSES.len();

/// Request latency buckets, in seconds: a cached manifest GET takes well under a
/// millisecond, a large blob minutes.
const LATENCY_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0];
/// Store operation and job buckets, in seconds.
const OPERATION_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0];

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    endpoint: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabel {
    endpoint: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    /// `none`, `basic` or `bearer`: what the refused request presented.
    credentials: &'static str,
    /// The error code it got (`UNAUTHORIZED`, `DENIED`, `TOOMANYREQUESTS`).
    code: &'static str,
}

/// A pull through the pull-through cache: the upstream (a name an administrator chose:
/// a handful), what was pulled and where it came from.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProxyLabels {
    upstream: String,
    /// `manifest` or `blob`.
    kind: &'static str,
    /// `cache` (served from what Berth holds, checked current), `upstream` (fetched),
    /// `stale` (a cached tag served when the upstream could not be asked), `error`.
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    job: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OperationLabels {
    pub store: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectLabel {
    project: String,
}

/// A node's metrics. Disabled (`--metrics=false`), every recording method returns at once
/// and `/metrics` answers 404.
pub struct Metrics {
    enabled: bool,
    registry: PromRegistry,
    requests: HistogramFamily<RequestLabels>,
    /// `requests`' series resolved once: index = (route, method, status slot).
    slots: Box<[OnceLock<Histogram>]>,
    received: Vec<Counter>,
    sent: Vec<Counter>,
    uploads_in_progress: Gauge,
    auth_failures: Family<AuthLabels, Counter>,
    job_runs: Family<JobLabels, Counter>,
    proxy_pulls: Family<ProxyLabels, Counter>,
    job_seconds: HistogramFamily<JobLabels>,
    pub(crate) operations: HistogramFamily<OperationLabels>,
    pool_size: Family<PoolLabels, Gauge>,
    pool_idle: Family<PoolLabels, Gauge>,
    pool_max: Family<PoolLabels, Gauge>,
    storage_bytes: Family<ProjectLabel, Gauge>,
    audit_queued: Gauge,
    audit_writer: berth_jobs::audit::WriterMetrics,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn operation_histogram() -> Histogram {
    Histogram::new(OPERATION_BUCKETS)
}

impl Metrics {
    pub fn new(enabled: bool) -> Metrics {
        let mut registry = PromRegistry::with_prefix("berth");
        let requests = HistogramFamily::<RequestLabels>::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "HTTP requests by endpoint kind, method and status: time from the request head to the last byte of the response body (the _count is the number of requests)",
            requests.clone(),
        );
        let received = Family::<EndpointLabel, Counter>::default();
        registry.register("http_request_body_bytes", "Request body bytes received, by endpoint kind", received.clone());
        let sent = Family::<EndpointLabel, Counter>::default();
        registry.register("http_response_body_bytes", "Response body bytes sent, by endpoint kind", sent.clone());
        let per_route = |f: &Family<EndpointLabel, Counter>| {
            Route::ALL.iter().map(|r| f.get_or_create_owned(&EndpointLabel { endpoint: r.as_str() })).collect()
        };
        let (received, sent) = (per_route(&received), per_route(&sent));
        let uploads_in_progress = Gauge::default();
        registry.register(
            "uploads_in_progress",
            "Requests carrying upload bytes (monolithic POST, PATCH, closing PUT) running on this node",
            uploads_in_progress.clone(),
        );
        let auth_failures = Family::<AuthLabels, Counter>::default();
        registry.register(
            "auth_failures",
            "Requests refused by authorization, by what they presented and the error code",
            auth_failures.clone(),
        );
        let proxy_pulls = Family::<ProxyLabels, Counter>::default();
        registry.register(
            "proxy_pulls",
            "Manifest and blob pulls through a proxy project, by upstream, kind and where the answer came from",
            proxy_pulls.clone(),
        );
        let job_runs = Family::<JobLabels, Counter>::default();
        registry.register("job_runs", "Background job passes on this node, by job and outcome", job_runs.clone());
        let job_seconds = HistogramFamily::<JobLabels>::new_with_constructor(operation_histogram as fn() -> Histogram);
        registry.register("job_duration_seconds", "Background job passes' duration", job_seconds.clone());
        let operations =
            HistogramFamily::<OperationLabels>::new_with_constructor(operation_histogram as fn() -> Histogram);
        registry.register(
            "store_operation_duration_seconds",
            "Blob store and metadata store operations, by store, operation and outcome",
            operations.clone(),
        );
        let (pool_size, pool_idle, pool_max) = (Family::default(), Family::default(), Family::default());
        registry.register("db_pool_connections", "Database connections open, by pool", pool_size.clone());
        registry.register("db_pool_idle_connections", "Database connections open and idle, by pool", pool_idle.clone());
        registry.register("db_pool_max_connections", "The most connections a pool opens", pool_max.clone());
        let storage_bytes = Family::<ProjectLabel, Gauge>::default();
        registry.register(
            "storage_bytes",
            "Bytes of blobs each project's repositories may read, a blob counted once per project (computed periodically)",
            storage_bytes.clone(),
        );
        let audit_queued = Gauge::default();
        registry.register(
            "audit_queued_events",
            "Audit events queued and not yet taken by the writer",
            audit_queued.clone(),
        );
        let audit_writer = berth_jobs::audit::WriterMetrics::default();
        registry.register(
            "audit_writer_failing",
            "1 while the audit writer's last append failed (events wait in the queue; a full queue makes requests wait)",
            audit_writer.failing.clone(),
        );
        let counters = [
            ("audit_append_failures", "Audit appends that failed (each attempt)", &audit_writer.append_failures),
            (
                "audit_events_sanitized",
                "Audit events the database refused as recorded, stored with their control characters replaced",
                &audit_writer.sanitized,
            ),
            (
                "audit_events_unstorable",
                "Audit events the database refused even sanitized: logged at error level, not stored",
                &audit_writer.unstorable,
            ),
        ];
        for (name, help, counter) in counters {
            registry.register(name, help, counter.clone());
        }
        Metrics {
            enabled,
            registry,
            requests,
            slots: (0..SLOTS).map(|_| OnceLock::new()).collect(),
            received,
            sent,
            uploads_in_progress,
            auth_failures,
            job_runs,
            proxy_pulls,
            job_seconds,
            operations,
            pool_size,
            pool_idle,
            pool_max,
            storage_bytes,
            audit_queued,
            audit_writer,
        }
    }

    /// The series the audit writer reports into (`AuditLog::with_metrics`).
    pub fn audit_writer(&self) -> berth_jobs::audit::WriterMetrics {
        self.audit_writer.clone()
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// One request, when its response body ended (or was dropped).
    pub(crate) fn request(
        &self,
        route: Route,
        method: &axum::http::Method,
        status: u16,
        elapsed: Duration,
        io: (u64, u64),
    ) {
        if !self.enabled {
            return;
        }
        let r = Route::ALL.iter().position(|x| *x == route).unwrap_or(Route::ALL.len() - 1);
        let m = method_index(method);
        let seconds = elapsed.as_secs_f64();
        match STATUSES.iter().position(|s| *s == status) {
            Some(s) => {
                let slot = &self.slots[(r * METHODS.len() + m) * STATUSES.len() + s];
                slot.get_or_init(|| self.requests.get_or_create_owned(&labels(route, m, status))).observe(seconds);
            }
            None => self.requests.get_or_create(&labels(route, m, status)).observe(seconds),
        }
        let (received, sent) = io;
        if received > 0 {
            self.received[r].inc_by(received);
        }
        if sent > 0 {
            self.sent[r].inc_by(sent);
        }
    }

    /// A request authorization refused (a refusal path: nothing on a request that passes).
    pub(crate) fn auth_failure(&self, credentials: &'static str, code: &'static str) {
        if self.enabled {
            self.auth_failures.get_or_create(&AuthLabels { credentials, code }).inc();
        }
    }

    /// One pass of background job `job` (a name of a few fixed words: `janitor`,
    /// `audit-prune`, `gc`, …) and how long it took ([`JobRecorder`]; the storage-usage
    /// gauge's refresh calls this too).
    pub fn job_run(&self, job: &'static str, outcome: JobOutcome, elapsed: Duration) {
        if !self.enabled {
            return;
        }
        let labels = JobLabels { job, outcome: outcome.as_str() };
        self.job_runs.get_or_create(&labels).inc();
        if outcome != JobOutcome::Skipped {
            self.job_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a pull through a proxy project (see [`ProxyLabels`]).
    pub fn proxy_pull(&self, upstream: &str, kind: &'static str, source: &'static str) {
        if self.enabled {
            self.proxy_pulls.get_or_create(&ProxyLabels { upstream: upstream.to_owned(), kind, source }).inc();
        }
    }

    /// Replaces the bytes-per-project gauges with `usage` (projects gone are dropped).
    pub fn set_storage(&self, usage: &[(String, u64)]) {
        if !self.enabled {
            return;
        }
        self.storage_bytes.clear();
        for (project, bytes) in usage {
            let bytes = i64::try_from(*bytes).unwrap_or(i64::MAX);
            self.storage_bytes.get_or_create(&ProjectLabel { project: project.clone() }).set(bytes);
        }
    }

    /// The text exposition, after setting the gauges read at scrape time.
    pub(crate) fn render(
        &self,
        uploads_in_progress: usize,
        audit_queued: usize,
        pools: &[berth_meta::PoolUsage],
    ) -> String {
        self.uploads_in_progress.set(i64::try_from(uploads_in_progress).unwrap_or(i64::MAX));
        self.audit_queued.set(i64::try_from(audit_queued).unwrap_or(i64::MAX));
        for p in pools {
            let labels = PoolLabels { pool: p.pool };
            self.pool_size.get_or_create(&labels).set(i64::from(p.size));
            self.pool_idle.get_or_create(&labels).set(i64::from(p.idle));
            self.pool_max.get_or_create(&labels).set(i64::from(p.max));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl JobRecorder for Metrics {
    fn job_run(&self, job: &'static str, outcome: JobOutcome, elapsed: Duration) {
        Metrics::job_run(self, job, outcome, elapsed);
    }
}

fn labels(route: Route, method: usize, status: u16) -> RequestLabels {
    RequestLabels { endpoint: route.as_str(), method: METHODS[method], status }
}

fn method_index(method: &axum::http::Method) -> usize {
    let name = method.as_str();
    METHODS[..METHODS.len() - 1].iter().position(|m| *m == name).unwrap_or(METHODS.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_counted_in_its_series_whether_its_status_has_a_slot_or_not() {
        let m = Metrics::new(true);
        m.request(Route::Manifest, &axum::http::Method::GET, 200, Duration::from_millis(2), (0, 10));
        m.request(Route::Manifest, &axum::http::Method::GET, 200, Duration::from_millis(3), (0, 10));
        m.request(
            Route::Blob,
            &axum::http::Method::from_bytes(b"BREW").unwrap(),
            418,
            Duration::from_millis(1),
            (5, 0),
        );
        let text = m.render(0, 0, &[]);
        assert!(
            text.contains(
                r#"berth_http_request_duration_seconds_count{endpoint="manifest",method="GET",status="200"} 2"#
            )
        );
        assert!(
            text.contains(
                r#"berth_http_request_duration_seconds_count{endpoint="blob",method="OTHER",status="418"} 1"#
            )
        );
        assert!(text.contains(r#"berth_http_response_body_bytes_total{endpoint="manifest"} 20"#));
        assert!(text.contains(r#"berth_http_request_body_bytes_total{endpoint="blob"} 5"#));
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let m = Metrics::new(false);
        m.request(Route::Manifest, &axum::http::Method::GET, 200, Duration::from_millis(2), (0, 10));
        m.job_run("janitor", JobOutcome::Ok, Duration::from_millis(1));
        let text = m.render(0, 0, &[]);
        assert!(!text.contains("status=\"200\""));
        assert!(!text.contains("janitor"));
    }
}
