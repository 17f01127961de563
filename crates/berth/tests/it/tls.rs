//! Native TLS: a certificate authority and a server certificate generated in the test
//! (rcgen), trusted by real clients through their own options (curl `--cacert`, skopeo
//! `--dest-cert-dir`/`--src-cert-dir`, podman `--cert-dir`), HTTP/2 chosen by ALPN, and a
//! certificate replaced on disk while the server runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

use crate::clients_skopeo_podman::Clients;
use crate::fixtures::oci_layout;
use crate::support::{TestServer, admin, require};

/// A certificate authority, and a server certificate for 127.0.0.1 it signed.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn pki(name: &str) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki { ca_pem: ca_cert.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() }
}

impl Pki {
    /// Writes the server's pair as `tls.crt`/`tls.key` (replacing by rename, as
    /// certificate tools do) and the CA as `ca.crt` in its own directory (what skopeo and
    /// podman read); returns that directory.
    fn install(&self, dir: &Path, ca_dir_name: &str) -> PathBuf {
        for (name, text) in [("tls.crt", &self.cert_pem), ("tls.key", &self.key_pem)] {
            std::fs::write(dir.join(format!("{name}.new")), text).unwrap();
            std::fs::rename(dir.join(format!("{name}.new")), dir.join(name)).unwrap();
        }
        let ca_dir = dir.join(ca_dir_name);
        std::fs::create_dir_all(&ca_dir).unwrap();
        std::fs::write(ca_dir.join("ca.crt"), &self.ca_pem).unwrap();
        ca_dir
    }
}

/// A server on the embedded or scale-out stores serving TLS from `dir`'s pair.
fn tls_server(dir: &Path) -> TestServer {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    TestServer::start_with(move |c| {
        c.tls.cert = Some(cert);
        c.tls.key = Some(key);
    })
}

/// `curl --cacert CA` of `GET /v2/` as the admin: (HTTP version, status).
fn curl(url: &str, ca: &Path, http2: bool) -> (String, String) {
    require("curl");
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-o", "/dev/null", "-w", "%{http_version} %{http_code}", "--cacert"])
        .arg(ca)
        .args(["-u", &admin().pair()]);
    if http2 {
        cmd.arg("--http2");
    }
    let out = cmd.arg(format!("{url}/v2/")).output().unwrap();
    assert!(out.status.success(), "curl {url}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let (version, status) = text.split_once(' ').unwrap();
    (version.to_owned(), status.to_owned())
}

#[test]
fn curl_trusting_the_ca_negotiates_http2_by_alpn_and_http1_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let ca = pki("curl").install(dir.path(), "ca").join("ca.crt");
    let server = tls_server(dir.path());
    let url = format!("https://{}", server.host());
    assert_eq!(curl(&url, &ca, true), ("2".to_owned(), "200".to_owned()));
    let out = Command::new("curl")
        .args(["-sS", "--http1.1", "--cacert"])
        .arg(&ca)
        .args(["-o", "/dev/null", "-w", "%{http_version}", "-u", &admin().pair(), &format!("{url}/v2/")])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "1.1");
    // A client that does not trust the CA is refused by its own verification.
    let out = Command::new("curl").args(["-sS", "--cacert", "/dev/null", &format!("{url}/v2/")]).output().unwrap();
    assert!(!out.status.success(), "curl trusted a certificate of an unknown CA");
    // Plain HTTP on the TLS port gets no answer from the registry.
    let out = Command::new("curl")
        .args(["-sS", "-u", &admin().pair(), &format!("http://{}/v2/", server.host())])
        .output()
        .unwrap();
    assert!(!out.status.success(), "plain HTTP was served on the TLS port");
}

/// The management CLI over TLS: `berth login --ca-cert` verifies the server with the CA,
/// keeps the CA's path with the login, and the commands that follow use both; without the
/// CA the certificate is refused.
#[test]
fn the_cli_verifies_the_server_with_the_ca_given_at_login() {
    use crate::management::cli::{berth, output, stdout_of};
    let dir = tempfile::tempdir().unwrap();
    let ca = pki("cli").install(dir.path(), "ca").join("ca.crt");
    let server = tls_server(dir.path());
    let url = format!("https://{}", server.host());
    let config = dir.path().join("config");
    let password = admin().password;

    let out = output(berth(&config).args(["login", &url, "--user", "admin", "--password", &password]));
    assert!(!out.status.success(), "logged in to a server whose CA it does not trust");
    assert!(String::from_utf8_lossy(&out.stderr).contains("certificate"), "{out:?}");
    assert!(!config.join("login.json").exists());

    let mut login = berth(&config);
    login.args(["login", &url, "--user", "admin", "--password", &password, "--ca-cert"]).arg(&ca);
    assert!(stdout_of(&mut login).contains("logged in as admin"));
    assert_eq!(stdout_of(berth(&config).args(["project", "create", "team"])), "created project team (private)\n");
    assert!(stdout_of(berth(&config).args(["project", "list"])).contains("team\tprivate\n"));
    // The flag names another CA file: the server's certificate is refused again.
    let other = dir.path().join("other-ca.crt");
    std::fs::write(&other, pki("other").ca_pem).unwrap();
    let out = output(berth(&config).args(["project", "list", "--ca-cert"]).arg(&other));
    assert!(!out.status.success(), "trusted a certificate the given CA did not sign");
}

#[test]
fn skopeo_and_podman_verify_the_certificate_with_the_ca_and_push_and_pull() {
    let dir = tempfile::tempdir().unwrap();
    let certs = pki("clients").install(dir.path(), "certs.d");
    let certs = certs.to_str().unwrap();
    let server = tls_server(dir.path());
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[300_000, 2_000]);
    let remote = format!("docker://{}/library/tls:v1", server.host());
    let layout = format!("oci:{}:v1", src.display());
    clients.skopeo(&["copy", "--dest-tls-verify=true", "--dest-cert-dir", certs, &layout, &remote]);
    let back = server.scratch("back");
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=true",
        "--src-cert-dir",
        certs,
        &remote,
        &format!("oci:{}:v1", back.display()),
    ]);
    let copied = crate::fixtures::tagged_digest(&back, "v1").expect("skopeo wrote no v1 into the layout");
    assert_eq!(copied, image.manifest_digest);
    // Without the CA, verification fails: the certificate is really checked.
    let err = clients.skopeo_fails(&["inspect", "--tls-verify=true", &remote]);
    assert!(err.contains("certificate"), "{err}");
    let reference = format!("{}/library/tls:v1", server.host());
    clients.podman(&["pull", "--tls-verify=true", "--cert-dir", certs, &reference]);
    let id = clients.podman(&["image", "inspect", "--format", "{{.Id}}", &reference]);
    assert_eq!(format!("sha256:{}", id.trim()), image.config_digest);
}

/// A client that trusts only `ca_pem`, keeping its connections open between requests.
fn client_trusting(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap();
    crate::support::http_client().tls_certs_only([ca]).http1_only().pool_max_idle_per_host(1).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_to_new_connections_while_open_ones_continue() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (pki("old"), pki("new"));
    old.install(dir.path(), "old-ca");
    let path = dir.path().to_owned();
    let server = tokio::task::spawn_blocking(move || tls_server(&path)).await.unwrap();
    let url = format!("https://{}/v2/", server.host());

    let open = client_trusting(&old.ca_pem);
    assert_eq!(open.get(&url).send().await.unwrap().status(), 200);
    new.install(dir.path(), "new-ca");

    // A new connection sees the new certificate once the server has looked at the files
    // (at most a second later): a client trusting only the new CA gets through.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match client_trusting(&new.ca_pem).get(&url).send().await {
            Ok(r) => break assert_eq!(r.status(), 200),
            Err(e) => assert!(std::time::Instant::now() < deadline, "the new certificate was never served: {e:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // New connections no longer get the old one.
    let err =
        client_trusting(&old.ca_pem).get(&url).send().await.expect_err("a new connection got the old certificate");
    assert!(err.is_connect(), "{err:?}");
    // The connection opened before the change still works: a new one could not have
    // been made by this client (it trusts only the old CA).
    assert_eq!(open.get(&url).send().await.unwrap().status(), 200);
    drop(open);
    tokio::task::spawn_blocking(move || drop(server)).await.unwrap();
}
