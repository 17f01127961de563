//! Blob pulls answered with a redirect (`--redirect`): a blob `GET` gets 307 to a
//! presigned URL of the bucket at the public endpoint (`--redirect-endpoint`), which curl
//! (with a `Range`) and skopeo follow; `HEAD` is still answered by Berth, and a caller who
//! may not pull never sees a URL.
//!
//! S3 only, so these tests run on the scale-out stores whatever `BERTH_TEST_BACKEND` says
//! (`TestServer::start_scaleout` starts PostgreSQL and Garage when the pass did not). The
//! public endpoint is Garage's own under the name `localhost` instead of `127.0.0.1`: a
//! name the client reaches, different from the one Berth uses, so the tests see that
//! clients are sent to the public one (and clients, which keep credentials to the host
//! that asked for them, send none of Berth's to the bucket).

use std::process::Command;

use reqwest::{Method, StatusCode, redirect::Policy};

use crate::api::{Api, header, random_bytes, sha256};
use crate::clients_skopeo_podman::{Clients, assert_layout_holds, oci_ref};
use crate::fixtures::oci_layout;
use crate::support::{Creds, TestServer, admin, client_as, require, run};

/// A registry on the scale-out stores with redirects on; returns it and the public endpoint.
fn redirecting_server() -> (TestServer, String) {
    let mut public = String::new();
    let server = TestServer::start_scaleout(|config| {
        let internal = config.s3().and_then(|s| s.endpoint.clone()).expect("an S3 endpoint");
        public = internal.replace("127.0.0.1", "localhost");
        assert_ne!(public, internal, "the public endpoint must differ from {internal}");
        config.storage.redirect = true;
        config.storage.redirect_endpoint = Some(public.clone());
    });
    (server, public)
}

/// A client that does not follow redirects, sending `creds`.
fn not_following(creds: Option<&Creds>) -> reqwest::Client {
    client_as(creds).redirect(Policy::none()).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_get_redirects_to_the_public_endpoint_and_curl_gets_exactly_the_range() {
    let (server, public) = redirecting_server();
    let blob = random_bytes(3 << 20, 7);
    let digest = Api::new(server.url()).push_blob("redirect/app", &blob).await;
    let url = format!("{}/v2/redirect/app/blobs/{digest}", server.url());

    let r = not_following(Some(&admin())).get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let location = header(&r, "location").unwrap();
    assert!(location.starts_with(&format!("{public}/")), "{location} is not at {public}");
    assert!(location.contains("X-Amz-Signature="), "{location} is not presigned");
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(digest.as_str()));
    assert!(r.bytes().await.unwrap().is_empty());

    // HEAD is answered by Berth itself.
    let r = not_following(Some(&admin())).head(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-length"), Some(blob.len().to_string()));
    assert_eq!(header(&r, "location"), None);

    // curl follows the redirect with its Range and gets exactly those bytes from S3.
    require("curl");
    let out = server.scratch("curl").join("range");
    let written = run(Command::new("curl")
        .args(["-sS", "--noproxy", "*", "-L", "-u", &admin().pair(), "-H", "Range: bytes=1000000-1999999"])
        .args(["-o", out.to_str().unwrap(), "-w", "%{http_code} %{num_redirects} %{url_effective}", &url]));
    let fields: Vec<&str> = written.split(' ').collect();
    assert_eq!(&fields[..2], ["206", "1"], "curl: {written}");
    assert!(fields[2].starts_with(&public), "curl ended at {}", fields[2]);
    assert!(std::fs::read(&out).unwrap() == blob[1_000_000..2_000_000], "the range's bytes differ");

    // A range the blob cannot satisfy gets the registry's error, not the bucket's.
    let r = not_following(Some(&admin())).get(&url).header("range", "bytes=4000000-").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&r, "location"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_who_may_not_pull_never_gets_a_location() {
    let (server, _) = redirecting_server();
    let api = Api::new(server.url());
    let digest = api.push_blob("redirect/private", b"private bytes").await;
    let path = format!("/v2/redirect/private/blobs/{digest}");
    let url = format!("{}{path}", server.url());

    let wrong = Creds::new(&admin().user, "not-the-password");
    for (who, creds) in [("anonymous", None), ("wrong password", Some(&wrong))] {
        let r = not_following(creds).get(&url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{who}");
        assert_eq!(header(&r, "location"), None, "{who}");
        let body = r.text().await.unwrap();
        assert!(!body.contains("X-Amz"), "{who}: {body}");
    }
    // Allowed to pull a repository that never linked the blob: unknown, no Location.
    api.push_blob("redirect/other", b"other bytes").await;
    let r = not_following(Some(&admin()))
        .get(format!("{}/v2/redirect/other/blobs/{digest}", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(header(&r, "location"), None);
    // The admin may, and is redirected.
    let r = not_following(Some(&admin())).request(Method::GET, &url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(sha256(&reqwest::get(header(&r, "location").unwrap()).await.unwrap().bytes().await.unwrap()), digest);
}

#[test]
fn skopeo_copies_an_image_out_through_redirects_and_it_verifies() {
    let (server, _) = redirecting_server();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[2_000_000, 300_000]);
    let remote = format!("docker://{}/redirect/skopeo:v1", server.host());
    clients.skopeo(&["copy", "--dest-tls-verify=false", &oci_ref(&src, "v1"), &remote]);

    let back = server.scratch("back");
    clients.skopeo(&["copy", "--src-tls-verify=false", &remote, &oci_ref(&back, "copied")]);
    assert_layout_holds(&back, "copied", &image);
}

#[tokio::test]
async fn redirects_on_the_filesystem_store_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = berth::Config::with_data_dir(dir.path());
    config.storage.redirect = true;
    let err = berth::open(&config).await.err().expect("redirects on the filesystem store must be refused");
    assert!(err.to_string().contains("need S3 storage"), "{err}");
}
