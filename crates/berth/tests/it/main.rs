//! Berth's integration tests: the real server on a loopback socket, driven over HTTP
//! and by real registry clients. One test binary for the crate (see ARCHITECTURE.md).

mod support;

mod api;
mod clients;
mod crash;
mod layout;
mod multinode;
