//! Scale-out: three `berth` processes sharing one PostgreSQL database and one S3 bucket
//! (a real Garage server) serve one registry. Any node continues any upload, serves
//! what another pushed at once, and a node killed mid-push costs nothing acknowledged.
//! The nodes share one identity store: one admin, and a token one node issues is good on
//! every other.

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use reqwest::{Method, StatusCode};

use crate::api::{Api, random_bytes, sha256};
use crate::support::{BerthProcess, ScaleOut, admin, bearer_token};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const MIB: usize = 1024 * 1024;

async fn get_bytes(api: &Api, path: &str) -> Vec<u8> {
    let r = api.send(Method::GET, path).await;
    assert_eq!(r.status(), StatusCode::OK, "GET {path} on {}", api.base);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_postgres_and_s3_serve_one_registry() {
    let scale = ScaleOut::start();
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<BerthProcess>> = dirs.iter().map(|d| Some(scale.spawn(d.path()))).collect();
    let api: Vec<Api> = nodes.iter().map(|n| Api::new(n.as_ref().unwrap().url())).collect();

    // 1. An upload started on node 1, continued on node 2, finished on node 3.
    let blob = random_bytes(11 * MIB + 5, 1);
    let digest = sha256(&blob);
    let loc = api[0].start_upload("multi/upload").await;
    let r = api[1]
        .req(Method::PATCH, &loc)
        .header("content-range", format!("0-{}", 6 * MIB - 1))
        .body(blob[..6 * MIB].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api[2].send(Method::GET, &loc).await;
    assert_eq!(r.headers()["range"], format!("0-{}", 6 * MIB - 1).as_str());
    let r = api[2]
        .req(Method::PUT, &format!("{loc}?digest={digest}"))
        .header("content-range", format!("{}-{}", 6 * MIB, blob.len() - 1))
        .body(blob[6 * MIB..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(get_bytes(&api[0], &format!("/v2/multi/upload/blobs/{digest}")).await == blob);

    // 2. An image pushed through node 2 is pulled through nodes 1 and 3 at once.
    let (v1, v1_body) = api[1].push_image("multi/app", "v1", OCI_MANIFEST, 2).await;
    for n in [0, 2] {
        assert_eq!(get_bytes(&api[n], "/v2/multi/app/manifests/v1").await, v1_body);
        let m: serde_json::Value = serde_json::from_slice(&v1_body).unwrap();
        let layer = m["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(sha256(&get_bytes(&api[n], &format!("/v2/multi/app/blobs/{layer}")).await), layer);
    }

    // 3. A tag moved on node 3 is seen moved on node 1 at once, every time.
    for round in 0..5u64 {
        let (moved, body) = api[2].push_image("multi/app", "v1", OCI_MANIFEST, 100 + round).await;
        let r = api[0].send(Method::GET, "/v2/multi/app/manifests/v1").await;
        assert_eq!(r.headers()["docker-content-digest"], moved.as_str(), "round {round}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), &body[..]);
        assert_ne!(moved, v1);
    }

    // 4. The same layer pushed concurrently through all three nodes is stored once.
    let bucket = scale.storage();
    let objects_before = bucket.blobs().await.len();
    let layer = random_bytes(3 * MIB, 4);
    let pushes = (0..3).map(|n| {
        let api = Api::new(api[n].base.clone());
        let layer = layer.clone();
        tokio::spawn(async move { api.push_blob(&format!("multi/same{n}"), &layer).await })
    });
    let digests: Vec<String> = futures_util::future::join_all(pushes).await.into_iter().map(Result::unwrap).collect();
    assert!(digests.iter().all(|d| *d == sha256(&layer)));
    for node in &api {
        for repo in 0..3 {
            assert!(get_bytes(node, &format!("/v2/multi/same{repo}/blobs/{}", digests[0])).await == layer);
        }
    }
    let objects = bucket.blobs().await;
    assert_eq!(objects.len(), objects_before + 1, "one new object for one new layer: {objects:?}");

    // 5. Node 1 dies (SIGKILL) in the middle of a chunked push; nodes 2 and 3 keep
    //    serving, and the push resumes through node 2 and finishes on node 3.
    let big = random_bytes(20 * MIB, 5);
    let big_digest = sha256(&big);
    let loc = api[0].start_upload("multi/killed").await;
    let first = 9 * MIB;
    let r = api[0]
        .req(Method::PATCH, &loc)
        .header("content-range", format!("0-{}", first - 1))
        .body(big[..first].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // The next chunk trickles in; the node is killed while it does.
    let rest: Vec<Bytes> = big[first..].chunks(256 * 1024).map(Bytes::copy_from_slice).collect();
    let body = futures_util::stream::iter(rest).then(|chunk| async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, std::io::Error>(chunk)
    });
    let trickle = api[0]
        .req(Method::PATCH, &loc)
        .header("content-range", format!("{first}-{}", big.len() - 1))
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let trickle = tokio::spawn(trickle);
    tokio::time::sleep(Duration::from_millis(400)).await;
    nodes[0].take().unwrap().kill9();
    assert!(trickle.await.unwrap().is_err(), "the interrupted chunk must not be acknowledged");

    assert!(!get_bytes(&api[1], "/v2/multi/app/manifests/v1").await.is_empty());
    assert!(get_bytes(&api[2], &format!("/v2/multi/upload/blobs/{digest}")).await == blob);
    let r = api[1].send(Method::GET, &loc).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(r.headers()["range"], format!("0-{}", first - 1).as_str(), "only the acknowledged chunk counts");
    let r = api[1]
        .req(Method::PATCH, &loc)
        .header("content-range", format!("{first}-{}", 15 * MIB - 1))
        .body(big[first..15 * MIB].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = api[2]
        .req(Method::PUT, &format!("{loc}?digest={big_digest}"))
        .header("content-range", format!("{}-{}", 15 * MIB, big.len() - 1))
        .body(big[15 * MIB..].to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    for n in [1, 2] {
        assert!(get_bytes(&api[n], &format!("/v2/multi/killed/blobs/{big_digest}")).await == big);
    }
}

#[tokio::test]
async fn a_token_issued_by_one_node_is_accepted_by_another() {
    let scale = ScaleOut::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<BerthProcess> = dirs.iter().map(|d| scale.spawn(d.path())).collect();
    let token = bearer_token(&nodes[0].url(), Some(&admin()), "repository:multi/token:pull,push").await;

    // Pushed through node 2 and read back through both with node 1's token alone.
    let on: Vec<Api> = nodes.iter().map(|n| Api::with_token(n.url(), &token)).collect();
    let (digest, body) = on[1].push_image("multi/token", "v1", OCI_MANIFEST, 7).await;
    for api in &on {
        let r = api.req(Method::GET, "/v2/multi/token/manifests/v1").header("accept", OCI_MANIFEST).send().await;
        let r = r.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "GET through {}", api.base);
        assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
        assert_eq!(r.bytes().await.unwrap(), body);
    }
    // The token grants that repository only, on every node.
    for api in &on {
        let r = api.send(Method::POST, "/v2/multi/other/blobs/uploads/").await;
        assert!(
            [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN].contains(&r.status()),
            "POST to another repository through {} with a token for multi/token: {}",
            api.base,
            r.status()
        );
    }
}

/// A signing key revoked through one node verifies nothing on another once that node
/// re-reads its keys (at least every `SIGNER_REFRESH`), not even a token it had verified
/// and cached; on the node that revoked it, at once.
#[tokio::test]
async fn a_key_revoked_through_one_node_verifies_nothing_on_another_within_the_reload_interval() {
    use base64::Engine as _;
    let scale = ScaleOut::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<BerthProcess> = dirs.iter().map(|d| scale.spawn(d.path())).collect();
    let token = bearer_token(&nodes[0].url(), Some(&admin()), "repository:multi/revoked:pull").await;
    let on: Vec<Api> = nodes.iter().map(|n| Api::with_token(n.url(), &token)).collect();
    for api in &on {
        assert_eq!(
            api.send(Method::GET, "/v2/").await.status(),
            StatusCode::OK,
            "verified (and cached) by {}",
            api.base
        );
    }
    let header = token.split('.').next().unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    let kid = header["kid"].as_str().unwrap();
    let api = crate::management::Mgmt::at(nodes[0].url(), Some(&admin()));
    api.expect(StatusCode::NO_CONTENT, Method::DELETE, &format!("/signing-keys/{kid}"), None).await;
    assert_eq!(on[0].send(Method::GET, "/v2/").await.status(), StatusCode::UNAUTHORIZED, "at once where revoked");
    let started = std::time::Instant::now();
    let deadline = berth_access::keys::SIGNER_REFRESH + Duration::from_secs(10);
    while on[1].send(Method::GET, "/v2/").await.status() != StatusCode::UNAUTHORIZED {
        assert!(started.elapsed() < deadline, "the other node still accepts the token after {:?}", started.elapsed());
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // A new key signs: tokens are issued and verify on both nodes again.
    let fresh = bearer_token(&nodes[0].url(), Some(&admin()), "repository:multi/revoked:pull").await;
    for node in &nodes {
        let r = Api::with_token(node.url(), &fresh).send(Method::GET, "/v2/").await;
        assert_eq!(r.status(), StatusCode::OK, "a token of the new key on {}", node.url());
    }
}

/// A robot disabled through one node stops working on another that had its login cached
/// (for 30 s) within seconds: the other node hears of the change through the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_robot_disabled_through_one_node_is_refused_by_another_within_seconds() {
    use crate::management::{Mgmt, basic_login_status};
    use crate::support::Creds;
    let scale = ScaleOut::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<BerthProcess> = dirs.iter().map(|d| scale.spawn(d.path())).collect();
    let api = Mgmt::at(nodes[0].url(), Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(serde_json::json!({"name": "team"}))).await;
    let robot = serde_json::json!({"name": "ci", "grants": [{"project": "team", "permissions": ["pull"]}]});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot)).await;
    let creds = Creds::new("robot$team+ci", created["secret"].as_str().unwrap());
    for node in &nodes {
        assert_eq!(basic_login_status(&node.url(), &creds).await, StatusCode::OK);
    }
    let body = serde_json::json!({"disabled": true});
    api.expect(StatusCode::OK, Method::PATCH, "/robots/robot$team+ci", Some(body)).await;
    assert_eq!(basic_login_status(&nodes[0].url(), &creds).await, StatusCode::UNAUTHORIZED);
    let disabled = std::time::Instant::now();
    while basic_login_status(&nodes[1].url(), &creds).await == StatusCode::OK {
        assert!(disabled.elapsed() < Duration::from_secs(10), "node 2 still took the disabled robot's login");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("node 2 refused the disabled robot {:?} after the change", disabled.elapsed());
}
