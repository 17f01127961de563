//! Berth's integration tests: the real server on a loopback socket, driven over HTTP
//! and by real registry clients.
