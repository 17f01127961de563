//! Berth's integration tests: the real server on a loopback socket, driven over HTTP
//! and by real registry clients. One test binary for the crate (see ARCHITECTURE.md).

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
mod retention;
mod scrub;
mod shutdown;
mod slow_clients;
mod tls;
mod upload_claims;
mod upload_limits;
mod upload_races;
