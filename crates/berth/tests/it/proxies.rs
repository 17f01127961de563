//! Trusted reverse proxies: `X-Forwarded-For` names the client (as the audit log records
//! it) only when the peer is a configured proxy; from anyone else it is ignored.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::Api;
use crate::support::TestServer;

/// Turns read-only mode off (an audited management write) with `forwarded` as
/// `X-Forwarded-For`; returns the address the audit log recorded for it.
async fn recorded_address(server: &TestServer, forwarded: &str) -> String {
    let api = Api::new(server.url());
    let r = api
        .req(Method::PUT, "/api/v1/system/read-only")
        .header("x-forwarded-for", forwarded)
        .json(&json!({ "read_only": false }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..100 {
        let entries: Value =
            api.send(Method::GET, "/api/v1/audit?operation=system.read-only").await.json().await.unwrap();
        if let Some(address) = entries[0]["address"].as_str() {
            return address.to_owned();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the change never reached the audit log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_names_the_client_and_anyone_else_is_taken_at_its_address() {
    let trusted = tokio::task::spawn_blocking(|| {
        TestServer::start_with(|c| {
            c.listen.trusted_proxies = berth_server::TrustedProxies(vec!["127.0.0.0/8".parse().unwrap()])
        })
    })
    .await
    .unwrap();
    // The rightmost address that is not a trusted proxy is the client's.
    assert_eq!(recorded_address(&trusted, "198.51.100.1, 203.0.113.7, 127.0.0.5").await, "203.0.113.7");
    tokio::task::spawn_blocking(move || drop(trusted)).await.unwrap();

    let untrusted = tokio::task::spawn_blocking(TestServer::start).await.unwrap();
    assert_eq!(recorded_address(&untrusted, "203.0.113.7").await, "127.0.0.1");
    tokio::task::spawn_blocking(move || drop(untrusted)).await.unwrap();
}
