//! End-to-end test of Berth driven by PyPI's `oras` client (oras-py; there is no oras CLI on
//! these machines): artifacts with typed files and configs pushed whole and in chunks,
//! pulled back, tags listed, referrers (OCI 1.1 `subject`) attached and discovered.
//!
//! The client side lives in `oras_client.py` beside this file, run with `python3`; it exits
//! non-zero with `FAILED: …` on the first mismatch and otherwise reports the digests it
//! pushed, which this test then checks against the registry over plain HTTP itself.
//! The script authenticates as the admin: oras-py's `login()` breaks (it goes through
//! docker-py), so it sets the credentials on its client's `basic` auth backend, which
//! answers each 401 with Basic credentials straight to `/v2` (its `token` backend can't
//! push to a registry that issues tokens per scope: see the script's docstring).

use std::process::Command;

use serde_json::Value;

use crate::support::{TestServer, require};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One HTTP GET to the server; returns status, the named response header, and the body.
fn get(server: &TestServer, path: &str, accept: &str, header: &str) -> (u16, Option<String>, Vec<u8>) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let client = crate::support::http_client().build().unwrap();
        let r = client.get(format!("{}{path}", server.url())).header("accept", accept).send().await.unwrap();
        let value = r.headers().get(header).map(|v| v.to_str().unwrap().to_owned());
        (r.status().as_u16(), value, r.bytes().await.unwrap().to_vec())
    })
}

#[test]
fn oras_pushes_and_pulls_artifacts_and_discovers_referrers_by_artifact_type() {
    require("python3");
    let server = TestServer::start();
    let work = server.scratch("oras");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/oras_client.py");
    let mut cmd = Command::new("python3");
    // Plain HTTP on loopback depends on no CA bundle and no proxy from the machine.
    for var in [
        "AWS_CA_BUNDLE",
        "SSL_CERT_FILE",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        cmd.env_remove(var);
    }
    let admin = server.admin();
    // The credentials go in the environment, not on the command line.
    cmd.env("BERTH_TEST_USER", &admin.user).env("BERTH_TEST_PASSWORD", &admin.password);
    let out = cmd.arg(script).arg(server.host()).arg(&work).env("PYTHONUNBUFFERED", "1").output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "oras_client.py failed ({}):\n{stdout}\n{stderr}\n(if `import oras` failed: `pip install oras`, as .ci/run does)",
        out.status,
    );
    let result: Value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line in:\n{stdout}"));
    let digest = |key: &str| result[key].as_str().unwrap_or_else(|| panic!("{key} missing in {result}")).to_owned();

    // What the client saw is what the registry holds.
    assert_eq!(result["tags"], serde_json::json!(["sbom", "v1", "v2"]));
    let (status, _, body) = get(&server, "/v2/oras/artifact/tags/list", "application/json", "content-type");
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap()["tags"], result["tags"]);
    for (tag, key) in [("v1", "v1"), ("v2", "v2"), ("sbom", "sbom")] {
        let (status, served, _) =
            get(&server, &format!("/v2/oras/artifact/manifests/{tag}"), OCI_MANIFEST, "docker-content-digest");
        assert_eq!((status, served), (200, Some(digest(key))), "manifest {tag}");
    }

    // The SBOM is v1's one referrer left (the script deleted the signature), and it names
    // v1 as its subject.
    let v1 = digest("v1");
    let (status, content_type, body) =
        get(&server, &format!("/v2/oras/artifact/referrers/{v1}"), OCI_INDEX, "content-type");
    assert_eq!((status, content_type.as_deref()), (200, Some(OCI_INDEX)));
    let index: Value = serde_json::from_slice(&body).unwrap();
    let referrers = index["manifests"].as_array().unwrap();
    assert_eq!(referrers.len(), 1, "{index}");
    assert_eq!(referrers[0]["digest"], digest("sbom").as_str());
    assert_eq!(referrers[0]["artifactType"], "application/vnd.example.sbom.v1");
    let (status, _, _) =
        get(&server, &format!("/v2/oras/artifact/manifests/{}", digest("signature")), OCI_MANIFEST, "content-type");
    assert_eq!(status, 404, "the deleted signature is gone");
    let (_, _, sbom) = get(&server, "/v2/oras/artifact/manifests/sbom", OCI_MANIFEST, "content-type");
    let sbom: Value = serde_json::from_slice(&sbom).unwrap();
    assert_eq!(sbom["subject"]["digest"], v1.as_str());
}
