//! Berth's integration tests: the real server on a loopback socket, driven over HTTP
//! and by real registry clients. One test binary for the crate (see ARCHITECTURE.md).

mod support;

mod api;
mod clients_docker;
mod clients_oras;
mod clients_skopeo_podman;
mod crash;
mod fixtures;
mod multinode;
mod upload_races;
