//! What the official conformance suite (opencontainers/distribution-spec) expects where
//! the spec leaves room: manifest references that are neither a tag nor a digest.

use reqwest::{Method, StatusCode};

use crate::api::{Api, assert_error, image_manifest};
use crate::support::TestServer;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

#[tokio::test]
async fn manifest_references_neither_tag_nor_digest_are_unknown_to_reads_and_deletes_and_invalid_to_puts() {
    let server = TestServer::start();
    let api = Api::new(server.url());
    api.push_image("conform", "v1", OCI_MANIFEST, 50).await;
    let config = api.push_blob("conform", b"{}").await;
    let body = image_manifest(OCI_MANIFEST, (&config, 2), &[], None);

    // The suite's `nonexistentManifest`, a malformed digest, an unsupported algorithm, a
    // tag over 128 characters.
    let long = "t".repeat(129);
    for reference in [".INVALID_MANIFEST_NAME", "sha256:baddigeststring", "sha512:abc", long.as_str()] {
        let path = format!("/v2/conform/manifests/{reference}");
        let r = api.send(Method::GET, &path).await;
        let err = assert_error(r, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        assert_eq!(err["errors"][0]["detail"], reference);
        let r = api.send(Method::HEAD, &path).await;
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "HEAD {reference}");
        assert_error(api.send(Method::DELETE, &path).await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN").await;
        let r = api.put_manifest("conform", reference, OCI_MANIFEST, &body).await;
        let code = if reference.contains(':') { "DIGEST_INVALID" } else { "MANIFEST_INVALID" };
        let err = assert_error(r, StatusCode::BAD_REQUEST, code).await;
        if code == "MANIFEST_INVALID" {
            assert_eq!(err["errors"][0]["message"], "invalid tag");
        }
    }
    // An invalid name is still refused as such, before the reference is looked at.
    let r = api.send(Method::GET, "/v2/Conform/manifests/.INVALID_MANIFEST_NAME").await;
    assert_error(r, StatusCode::BAD_REQUEST, "NAME_INVALID").await;
    // Nothing was stored by any of it.
    let r = api.send(Method::GET, "/v2/conform/tags/list").await;
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["tags"], serde_json::json!(["v1"]));
}
