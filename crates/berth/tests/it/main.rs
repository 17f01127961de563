//! Berth's integration tests: the real server on a loopback socket, driven over HTTP
//! and by real registry clients. One test binary for the crate.
//!
//! # The tests, by file
//!
//! `access/` (the token flow, challenges, `/token`, refresh
//! tokens, robots, the filtered catalog, and the attacks refused with their exact errors:
//! forged, foreign-key, unsigned and expired tokens, escaping scopes, password guessing;
//! `matrix.rs`, the permission matrix generated from `access::MATRIX` for every caller ×
//! every permission with an endpoint × a public and a private project, and what `/token`
//! grants each caller, and every grant-changing operation for every permission and role;
//! `grants.rs`, the reported escalations one by one; `lifetimes.rs`, tokens bounded by the
//! robot's expiry and the TTLs, retired and revoked keys; `secrets.rs`, no secret in a debug-level log, the audit log or a later
//! API answer), `keyless.rs` (keyless robots against an OIDC issuer the test plays: skopeo
//! pushes with an ID token as the password, the token-exchange grant, every mismatch
//! refused, keys rotated in and out, no refresh token for an ID token (`docker login` keeps none), issuers refused by
//! the default policy), `api.rs` (every endpoint and error over HTTP, headers and
//! bodies asserted), `api/stores.rs` (what refused, cancelled, expired and deduplicated
//! uploads leave in the blob store, and a blob lost from storage: a 500 whose body reveals
//! nothing), `conformance.rs` (what the official conformance suite expects beyond the
//! happy path), `crash.rs` (SIGKILL during concurrent pushes; seeded and replayable with
//! `BERTH_CRASH_SEED`, longer with `BERTH_CRASH_ROUNDS`/`BERTH_LONG`), `upload_races.rs`
//! (requests racing on one upload session over HTTP/1.1 and HTTP/2, bodies cut off or
//! streams reset and retried; after each round every blob served, and every blob file or
//! bucket object, hashes to its digest), `upload_claims.rs` (a request on a busy upload
//! waits; a retried chunk learns where the upload is), `upload_limits.rs` (open uploads
//! per repository, janitor batches), `slow_clients.rs` (idle connections and stalled
//! uploads against the real binary: pulls stay fast, timeouts end the rest),
//! `retention.rs` (policies through the API, count and pattern rules, the dry run equal to
//! the real run, audit entries, untagged manifests, an index's child pushed first kept,
//! pull times flushed and kept over a graceful restart), `policies.rs` (immutable tags and quotas: the exact refusals and their audit entries, usage exact after concurrent pushes of shared layers), `scrub.rs` (a corrupted and a truncated blob reported by `berth scrub` and refused, the rest served; a push racing the removal of its bad bytes keeps what it stored; a start whose client hangs up), `disk_full.rs` (the embedded stores on a small tmpfs the test mounts and fills: every management write and push succeeds and stays or fails with 507, and everything acknowledged is there after space is freed and after a restart), `memory_bounds.rs` (resident memory under a manifest read through many tags; paged
//! referrers), `management.rs` (the management API with credentials; `management/cli.rs`:
//! the `berth` subcommands as the built binary, online and on a stopped server's data), `clients_*.rs` (docker on a private dockerd; skopeo, podman, buildah; oras
//! from PyPI via `oras_client.py`; `clients_login.rs`: logging in, and what anonymous
//! clients may do), `redirect.rs` (blob GETs redirected to presigned URLs, followed by curl
//! with a `Range` and by skopeo; always on its own scale-out stores), `deploy.rs` (the files
//! of `deploy/`), `multinode.rs` (three processes on one PostgreSQL and one bucket; a
//! token one node issues is good on another, and dead on it within a minute once its key is
//! revoked through the first), `audit.rs` (pushes, pulls and deletes over
//! HTTP found in the audit log with address, resource and outcome; thousands of concurrent
//! pulls, none lost; the pruning job), `fixtures.rs` (OCI layouts built on the fly), `metrics.rs` (`/metrics` parsed with a
//! Prometheus text parser before and after a push and a pull; authentication failures; the
//! storage gauge; who may read it), `health.rs` (`/healthz`, `/readyz`; PostgreSQL stopped and
//! started again under a running server, always on PostgreSQL + Garage), `logs.rs` (a `berth`
//! process's JSON log: request ids as the response had them, errors once, no secrets),
//! `federation.rs` (the pull-through cache against Debian's docker-registry as the
//! upstream: skopeo through a proxy project's prefix with htpasswd credentials, one upstream
//! GET for 8 concurrent first pulls, tags moving after their TTL, the cache outliving its
//! upstream, containerd's `ctr` with a `hosts.toml` mirror and a dockerd with
//! `registry-mirrors`), `webhooks.rs` (a real receiver on loopback: HMAC checked, CloudEvents and
//! Harbor payloads, retries after 500s, a restart, auto-disable, a hung receiver's cost to
//! pushes measured, pulls coalesced, quota refusals), `support.rs` (the server on `127.0.0.1:0`, in-process or as a killable child; `Storage`,
//! the blob store seen from outside: the data directory's files or the bucket's objects
//! through a plain S3 client). **Invariant:** every server a test starts has the system
//! administrator `admin` with a password drawn once per run (`support::admin()`), and every
//! client the harness builds sends it (Basic; `Api::anonymous` and `Clients::logged_out` send
//! none), so the suite runs unchanged whether or not the server enforces access. `BERTH_TEST_BACKEND=scaleout` runs all but the embedded-only tests again on
//! PostgreSQL + Garage (`scripts/test.sh` does); `multinode` always runs there. Only the
//! data-directory lock test is embedded-only (the lock guards SQLite).

mod support;

mod access;
mod api;
mod audit;
mod clients_docker;
mod clients_login;
mod clients_oras;
mod clients_skopeo_podman;
mod config;
mod conformance;
mod crash;
mod deploy;
mod disk_full;
mod federation;
mod fixtures;
mod gc;
mod health;
mod keyless;
mod logs;
mod management;
mod memory_bounds;
mod metrics;
mod multinode;
mod policies;
mod proxies;
mod read_only;
mod redirect;
mod replication;
mod retention;
mod scrub;
mod shutdown;
mod slow_clients;
mod tls;
mod upload_claims;
mod upload_limits;
mod upload_races;
mod webhooks;
