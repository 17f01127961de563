//! Read-only mode: pushes, deletes and management writes refused with UNSUPPORTED and a
//! message saying so, pulls served; set at start or turned on and off through the
//! management API.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::api::{Api, assert_error};
use crate::support::TestServer;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MESSAGE: &str = "the registry is read-only: pushes and deletes are refused";

async fn set_read_only(api: &Api, on: bool) {
    let r = api.req(Method::PUT, "/api/v1/system/read-only").json(&json!({ "read_only": on })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({ "read_only": on }));
}

async fn assert_read_only_refusal(r: reqwest::Response) {
    let body = assert_error(r, StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED").await;
    assert_eq!(body["errors"][0]["message"], MESSAGE, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_turned_on_through_the_api_refuses_pushes_and_deletes_and_serves_pulls() {
    let server = tokio::task::spawn_blocking(TestServer::start).await.unwrap();
    let api = Api::new(server.url());
    let (digest, manifest) = api.push_image("library/ro", "v1", OCI_MANIFEST, 11).await;
    set_read_only(&api, true).await;

    assert_read_only_refusal(api.send(Method::POST, "/v2/library/ro/blobs/uploads/").await).await;
    assert_read_only_refusal(api.put_manifest("library/ro", "v2", OCI_MANIFEST, &manifest).await).await;
    assert_read_only_refusal(api.send(Method::DELETE, &format!("/v2/library/ro/manifests/{digest}")).await).await;
    let r = api.req(Method::POST, "/api/v1/projects").json(&json!({ "name": "newproject" })).send().await.unwrap();
    assert_read_only_refusal(r).await;

    // Pulls continue.
    let r = api.send(Method::GET, "/v2/library/ro/manifests/v1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap(), manifest);
    let r = api.send(Method::GET, "/api/v1/system/read-only").await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({ "read_only": true }));

    // Turning it off is not refused, and pushes work again.
    set_read_only(&api, false).await;
    assert_eq!(api.put_manifest("library/ro", "v2", OCI_MANIFEST, &manifest).await.status(), StatusCode::CREATED);
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_set_at_start_refuses_uploads_and_only_an_administrator_turns_it_off() {
    let server = tokio::task::spawn_blocking(|| TestServer::start_with(|c| c.read_only = true)).await.unwrap();
    let api = Api::new(server.url());
    assert_read_only_refusal(api.send(Method::POST, "/v2/library/ro/blobs/uploads/").await).await;
    let anonymous = Api::anonymous(server.url());
    let r = anonymous.req(Method::PUT, "/api/v1/system/read-only").json(&json!({ "read_only": false })).send().await;
    assert_eq!(r.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_read_only_refusal(api.send(Method::POST, "/v2/library/ro/blobs/uploads/").await).await;
    set_read_only(&api, false).await;
    assert_eq!(api.send(Method::POST, "/v2/library/ro/blobs/uploads/").await.status(), StatusCode::ACCEPTED);
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}

/// Polls `check` every 100 ms until it holds (at most 10 s: the nodes re-read the switch
/// every 2 s).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The switch is the registry's, not one node's: set through one node, the other obeys
/// it; turned off through that other node, the first accepts pushes again. And it
/// survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_set_through_one_node_applies_to_every_node_and_survives_a_restart() {
    let scale = crate::support::ScaleOut::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<_> = dirs.iter().map(|d| scale.spawn(d.path())).collect();
    let apis: Vec<Api> = nodes.iter().map(|n| Api::new(n.url())).collect();
    let uploads = "/v2/library/ro/blobs/uploads/";
    assert_eq!(apis[1].send(Method::POST, uploads).await.status(), StatusCode::ACCEPTED);

    set_read_only(&apis[0], true).await;
    eventually("node 2 refusing pushes", async || {
        apis[1].send(Method::POST, uploads).await.status() == StatusCode::METHOD_NOT_ALLOWED
    })
    .await;
    assert_read_only_refusal(apis[1].send(Method::POST, uploads).await).await;
    let r = apis[1].send(Method::GET, "/api/v1/system/read-only").await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap(), json!({ "read_only": true }));

    // A node restarted (without --read-only) finds the registry read-only.
    drop(nodes.remove(1));
    let node = scale.spawn(dirs[1].path());
    let api = Api::new(node.url());
    assert_read_only_refusal(api.send(Method::POST, uploads).await).await;

    set_read_only(&api, false).await;
    eventually("node 1 accepting pushes", async || {
        apis[0].send(Method::POST, uploads).await.status() == StatusCode::ACCEPTED
    })
    .await;
}
