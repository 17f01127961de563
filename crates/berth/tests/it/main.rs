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
mod conformance;
mod crash;
mod fixtures;
mod health;
mod keyless;
mod logs;
mod management;
mod memory_bounds;
mod metrics;
mod multinode;
mod slow_clients;
mod upload_claims;
mod upload_limits;
mod upload_races;
