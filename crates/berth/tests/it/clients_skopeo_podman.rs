//! End-to-end tests of Berth driven by the containers/image clients from Debian's packages:
//! skopeo (copy, copy --all, inspect, list-tags, delete, sync), podman (pull, load, push,
//! manifest lists) and buildah (images built from scratch, pushed as OCI and Docker v2s2).
//!
//! Each test starts its own server and gives the clients a private configuration (a
//! permissive signature policy, a registries.conf without search registries, an auth file
//! holding the server's admin credentials, as `podman login --authfile` writes it, vfs
//! storage in temp directories), so nothing depends on the machine's state. No client is
//! optional: a missing one fails its test. Logging in itself is `clients_login.rs`'s.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::fixtures::{
    DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, Image, OCI_CONFIG, OCI_INDEX, OCI_LAYER_GZIP, OCI_MANIFEST,
    Platform, blob_path, gunzip, oci_index_layout, oci_layout, oci_platform_layout, random_bytes, sha256_digest,
    tagged_digest,
};
use crate::support::{TestServer, require, run};

/// Every manifest type a client may ask for.
const ACCEPT_ANY_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json, \
    application/vnd.oci.image.index.v1+json, \
    application/vnd.docker.distribution.manifest.v2+json, \
    application/vnd.docker.distribution.manifest.list.v2+json";

/// skopeo, podman and buildah with settings of their own in the server's scratch space:
/// signature policy, registries.conf, auth file (the admin's credentials for the server),
/// containers.conf, `$HOME`, and storage (vfs) never come from the machine. (skopeo, run as root, still keeps its blob-info cache in
/// `/var/lib/containers/cache`; no flag moves it, and it only records where blobs were seen.)
pub(crate) struct Clients {
    dir: PathBuf,
}

impl Clients {
    pub(crate) fn new(server: &TestServer) -> Clients {
        Clients::with_auth_file(server, &server.admin().auth_file(&server.host()))
    }

    /// Clients with an empty auth file: they send credentials only when told to.
    pub(crate) fn logged_out(server: &TestServer) -> Clients {
        Clients::with_auth_file(server, r#"{"auths":{}}"#)
    }

    fn with_auth_file(server: &TestServer, auth_file: &str) -> Clients {
        let dir = server.scratch("containers");
        let write = |name: &str, text: &str| std::fs::write(dir.join(name), text).unwrap();
        let policy = r#"{"default":[{"type":"insecureAcceptAnything"}]}"#;
        write("policy.json", policy);
        // Commands without a policy flag (`podman manifest …`) read $HOME's before /etc's.
        std::fs::create_dir_all(dir.join("home/.config/containers")).unwrap();
        write("home/.config/containers/policy.json", policy);
        write("registries.conf", "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n");
        write("auth.json", auth_file);
        write("containers.conf", "[engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n");
        write(
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = \"{}\"\nrunroot = \"{}\"\n",
                dir.join("root").display(),
                dir.join("run").display()
            ),
        );
        for sub in ["registries.d", "tmp", "libpod-tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        Clients { dir }
    }

    pub(crate) fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_owned()
    }

    pub(crate) fn policy(&self) -> String {
        self.path("policy.json")
    }

    /// `program` with the private configuration in its environment.
    fn command(&self, program: &str) -> Command {
        require(program);
        let mut cmd = Command::new(program);
        cmd.env("CONTAINERS_REGISTRIES_CONF", self.path("registries.conf"))
            .env("CONTAINERS_CONF", self.path("containers.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.path("storage.conf"))
            .env("REGISTRY_AUTH_FILE", self.path("auth.json"))
            .env("HOME", self.path("home"))
            .env("TMPDIR", self.path("tmp"));
        cmd
    }

    fn skopeo_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command("skopeo");
        cmd.args(["--policy", &self.policy(), "--registries.d", &self.path("registries.d")]).args(args);
        cmd
    }

    pub(crate) fn skopeo(&self, args: &[&str]) -> String {
        run(&mut self.skopeo_command(args))
    }

    /// Runs skopeo expecting it to fail; returns its stderr.
    pub(crate) fn skopeo_fails(&self, args: &[&str]) -> String {
        let out = self.skopeo_command(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "skopeo {args:?} succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        stderr
    }

    /// `skopeo inspect` of `reference` (`HOST/NAME:TAG` or `HOST/NAME@DIGEST`), parsed.
    fn inspect(&self, reference: &str) -> Value {
        serde_json::from_str(&self.skopeo(&["inspect", "--tls-verify=false", &format!("docker://{reference}")]))
            .unwrap()
    }

    /// `skopeo inspect --raw`: the manifest bytes exactly as the registry served them.
    pub(crate) fn inspect_raw(&self, reference: &str) -> Vec<u8> {
        self.skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{reference}")]).into_bytes()
    }

    fn list_tags(&self, repository: &str) -> Value {
        let out = self.skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{repository}")]);
        serde_json::from_str::<Value>(&out).unwrap()["Tags"].clone()
    }

    pub(crate) fn podman(&self, args: &[&str]) -> String {
        run(&mut self.podman_command(args))
    }

    /// `podman ARGS` with the private configuration and storage, not yet run.
    pub(crate) fn podman_command(&self, args: &[&str]) -> Command {
        let mut cmd = self.command("podman");
        cmd.args(["--root", &self.path("root"), "--runroot", &self.path("run"), "--storage-driver", "vfs"])
            .args(["--tmpdir", &self.path("libpod-tmp"), "--events-backend", "file", "--cgroup-manager", "cgroupfs"])
            .args(args);
        cmd
    }

    fn buildah(&self, args: &[&str]) -> String {
        let mut cmd = self.command("buildah");
        cmd.args(["--root", &self.path("root"), "--runroot", &self.path("run"), "--storage-driver", "vfs"])
            .args(["--registries-conf", &self.path("registries.conf")])
            .args(args);
        run(&mut cmd)
    }
}

/// A response read off the wire.
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body is not JSON: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// `GET path` with an `Accept` header, over a plain TCP connection (the test crate's
/// reqwest is async-only). Handles fixed-length and chunked bodies.
fn http_get(server: &TestServer, path: &str, accept: &str) -> HttpResponse {
    let mut stream = std::net::TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(30))).unwrap();
    let (host, auth) = (server.host(), server.admin().header_line());
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Accept: {accept}\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response head");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_field = std::str::from_utf8(&data[..eol]).unwrap();
        let size = usize::from_str_radix(size_field.split(';').next().unwrap().trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[eol + 2..eol + 2 + size]);
        data = &data[eol + 2 + size + 2..];
    }
}

/// Asserts that the registry serves `bytes` as the manifest `reference` of `name`, with
/// its media type and digest in the headers.
pub(crate) fn assert_serves_manifest(server: &TestServer, name: &str, reference: &str, bytes: &[u8], media_type: &str) {
    let r = http_get(server, &format!("/v2/{name}/manifests/{reference}"), ACCEPT_ANY_MANIFEST);
    assert_eq!(r.status, 200, "GET {name}:{reference}: {}", String::from_utf8_lossy(&r.body));
    assert!(r.body == bytes, "GET {name}:{reference} served other bytes:\n{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.header("content-type"), Some(media_type), "{name}:{reference}");
    assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(bytes).as_str()), "{name}:{reference}");
}

/// Asserts that `GET /v2/<name>/manifests/<reference>` answers 404 MANIFEST_UNKNOWN.
fn assert_manifest_unknown(server: &TestServer, name: &str, reference: &str) {
    let r = http_get(server, &format!("/v2/{name}/manifests/{reference}"), ACCEPT_ANY_MANIFEST);
    assert_eq!(r.status, 404, "GET {name}:{reference}: {}", String::from_utf8_lossy(&r.body));
    let body = r.json();
    let codes: Vec<&str> =
        body["errors"].as_array().map(|e| e.iter().filter_map(|e| e["code"].as_str()).collect()).unwrap_or_default();
    assert_eq!(codes, ["MANIFEST_UNKNOWN"], "GET {name}:{reference}");
}

/// `oci:DIR:TAG`.
pub(crate) fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// Asserts that the layout `copy` holds byte-identical copies of `image`'s manifest, config
/// and layers, with the manifest tagged `tag`.
pub(crate) fn assert_layout_holds(copy: &Path, tag: &str, image: &Image) {
    assert_eq!(
        tagged_digest(copy, tag).as_deref(),
        Some(image.manifest_digest.as_str()),
        "{tag} in {}",
        copy.display()
    );
    assert!(std::fs::read(blob_path(copy, &image.manifest_digest)).unwrap() == image.manifest);
    assert!(std::fs::read(blob_path(copy, &image.config_digest)).unwrap() == image.config);
    for (digest, diff_id) in image.layer_digests.iter().zip(&image.diff_ids) {
        let layer = std::fs::read(blob_path(copy, digest)).unwrap_or_else(|e| panic!("layer {digest}: {e}"));
        assert_eq!(sha256_digest(&layer), *digest);
        assert_eq!(sha256_digest(&gunzip(&layer)), *diff_id);
    }
}

/// A directory whose path is all lowercase: podman names an image pulled from an `oci:`
/// layout after the layout's path, and image names must be lowercase.
pub(crate) fn lowercase_dir() -> tempfile::TempDir {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    let dir = tempfile::Builder::new()
        .prefix(&format!("berth-oci-{}-{nanos}-{n}", std::process::id()))
        .rand_bytes(0)
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert_eq!(dir.path().to_str().unwrap(), dir.path().to_str().unwrap().to_lowercase());
    dir
}

/// The bare hex of a `sha256:…` digest, as podman prints image ids.
pub(crate) fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap()
}

// ---------------------------------------------------------------------------------------
// skopeo

#[test]
fn skopeo_copy_round_trips_an_oci_layout_byte_for_byte() {
    let server = TestServer::start();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[1_500_000, 200_000, 3_000]);
    let remote = format!("docker://{}/skopeo/round-trip:v1", server.host());

    clients.skopeo(&["copy", "--dest-tls-verify=false", &oci_ref(&src, "v1"), &remote]);
    assert_serves_manifest(&server, "skopeo/round-trip", "v1", &image.manifest, OCI_MANIFEST);
    assert_serves_manifest(&server, "skopeo/round-trip", &image.manifest_digest, &image.manifest, OCI_MANIFEST);

    let back = server.scratch("back");
    clients.skopeo(&["copy", "--src-tls-verify=false", &remote, &oci_ref(&back, "copied")]);
    assert_layout_holds(&back, "copied", &image);
}

#[test]
fn skopeo_copy_all_pushes_a_multi_platform_index_and_serves_every_child_by_digest() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let index = oci_index_layout(&src, "v1", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[300_000, 20_000]);

    clients.skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &oci_ref(&src, "v1"),
        &format!("docker://{host}/skopeo/multi:v1"),
    ]);

    // The index and each platform's manifest are served as pushed: tag and digest.
    assert_serves_manifest(&server, "skopeo/multi", "v1", &index.index, OCI_INDEX);
    assert_serves_manifest(&server, "skopeo/multi", &index.digest, &index.index, OCI_INDEX);
    for image in &index.images {
        assert_serves_manifest(&server, "skopeo/multi", &image.manifest_digest, &image.manifest, OCI_MANIFEST);
    }
    let served: Value = serde_json::from_slice(&clients.inspect_raw(&format!("{host}/skopeo/multi:v1"))).unwrap();
    let platforms: Vec<(&str, &str)> = served["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["platform"]["os"].as_str().unwrap(), m["platform"]["architecture"].as_str().unwrap()))
        .collect();
    assert_eq!(platforms, [("linux", "amd64"), ("linux", "arm64")]);

    // A client picking a platform out of the index gets that platform's image.
    let arm = &index.images[1];
    let picked: Value = serde_json::from_str(&clients.skopeo(&[
        "--override-arch",
        "arm64",
        "inspect",
        "--tls-verify=false",
        &format!("docker://{host}/skopeo/multi:v1"),
    ]))
    .unwrap();
    // (skopeo reports the digest of the reference it was given: the index's.)
    assert_eq!(picked["Digest"], index.digest);
    assert_eq!(picked["Architecture"], "arm64");
    assert_eq!(picked["Layers"], json!(arm.layer_digests));

    // One child pulled by digest comes back whole.
    let dst = server.scratch("arm64");
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/skopeo/multi@{}", arm.manifest_digest),
        &oci_ref(&dst, "arm64"),
    ]);
    assert_layout_holds(&dst, "arm64", arm);
}

#[test]
fn skopeo_inspect_reports_the_pushed_image_and_raw_returns_its_exact_manifest_and_config() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let image = oci_platform_layout(&src, "v1", Platform::LINUX_ARM64, &[50_000, 60_000]);
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci_ref(&src, "v1"),
        &format!("docker://{host}/skopeo/inspected:v1"),
    ]);

    for reference in
        [format!("{host}/skopeo/inspected:v1"), format!("{host}/skopeo/inspected@{}", image.manifest_digest)]
    {
        let info = clients.inspect(&reference);
        assert_eq!(info["Name"], format!("{host}/skopeo/inspected"), "{reference}");
        assert_eq!(info["Digest"], image.manifest_digest, "{reference}");
        assert_eq!((info["Os"].as_str(), info["Architecture"].as_str()), (Some("linux"), Some("arm64")), "{reference}");
        assert_eq!(info["Layers"], json!(image.layer_digests), "{reference}");
        assert_eq!(info["Created"], "2024-01-01T00:00:00Z", "{reference}");
        assert_eq!(info["RepoTags"], json!(["v1"]), "{reference}");

        assert!(clients.inspect_raw(&reference) == image.manifest, "{reference}: raw manifest differs");
        let config =
            clients.skopeo(&["inspect", "--config", "--raw", "--tls-verify=false", &format!("docker://{reference}")]);
        assert!(config.as_bytes() == image.config, "{reference}: raw config differs");
    }

    let missing =
        clients.skopeo_fails(&["inspect", "--tls-verify=false", &format!("docker://{host}/skopeo/inspected:nope")]);
    assert!(missing.contains("manifest unknown"), "{missing}");
}

#[test]
fn skopeo_list_tags_returns_every_pushed_tag_of_the_repository_in_lexical_order() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[10_000]);
    let other = oci_layout(&src, "other", &[10_000]);
    let tags = ["v1", "1.0", "latest", "1.1-rc.1", "Stable", "a_b", "z"];
    for tag in tags {
        clients.skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &oci_ref(&src, "v1"),
            &format!("docker://{host}/skopeo/tags:{tag}"),
        ]);
    }
    // Tags of another repository are not listed.
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci_ref(&src, "other"),
        &format!("docker://{host}/skopeo/tags-elsewhere:x"),
    ]);

    let mut expected: Vec<&str> = tags.to_vec();
    expected.sort();
    assert_eq!(clients.list_tags(&format!("{host}/skopeo/tags")), json!(expected));
    assert_eq!(clients.list_tags(&format!("{host}/skopeo/tags-elsewhere")), json!(["x"]));
    for tag in tags {
        assert_serves_manifest(&server, "skopeo/tags", tag, &image.manifest, OCI_MANIFEST);
    }

    // Pushing another image to a tag moves it.
    clients.skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &oci_ref(&src, "other"),
        &format!("docker://{host}/skopeo/tags:latest"),
    ]);
    assert_eq!(clients.inspect(&format!("{host}/skopeo/tags:latest"))["Digest"], other.manifest_digest);
    assert_eq!(clients.list_tags(&format!("{host}/skopeo/tags")), json!(expected));
}

#[test]
fn skopeo_delete_by_digest_removes_the_manifest_and_every_tag_on_it() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let doomed = oci_layout(&src, "doomed", &[20_000]);
    let kept = oci_layout(&src, "kept", &[20_000]);
    for (layout_tag, tag) in [("doomed", "a"), ("doomed", "b"), ("kept", "c")] {
        clients.skopeo(&[
            "copy",
            "--dest-tls-verify=false",
            &oci_ref(&src, layout_tag),
            &format!("docker://{host}/skopeo/delete:{tag}"),
        ]);
    }

    clients.skopeo(&[
        "delete",
        "--tls-verify=false",
        &format!("docker://{host}/skopeo/delete@{}", doomed.manifest_digest),
    ]);

    for reference in ["a", "b", doomed.manifest_digest.as_str()] {
        assert_manifest_unknown(&server, "skopeo/delete", reference);
    }
    let gone = clients.skopeo_fails(&["inspect", "--tls-verify=false", &format!("docker://{host}/skopeo/delete:a")]);
    assert!(gone.contains("manifest unknown"), "{gone}");
    assert_serves_manifest(&server, "skopeo/delete", "c", &kept.manifest, OCI_MANIFEST);
    assert_eq!(clients.list_tags(&format!("{host}/skopeo/delete")), json!(["c"]));
    // The other image is still whole.
    let back = server.scratch("back");
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/skopeo/delete:c"),
        &oci_ref(&back, "c"),
    ]);
    assert_layout_holds(&back, "c", &kept);
}

#[test]
fn skopeo_sync_mirrors_every_tag_of_a_repository_into_another_repository() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let src = server.scratch("src");
    let one = oci_layout(&src, "one", &[100_000]);
    let two = oci_layout(&src, "two", &[100_000, 5_000]);
    let multi = oci_index_layout(&src, "multi", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[30_000]);
    for (tag, all) in [("one", false), ("two", false), ("multi", true)] {
        let mut args = vec!["copy", "--dest-tls-verify=false"];
        if all {
            args.push("--all");
        }
        let (from, to) = (oci_ref(&src, tag), format!("docker://{host}/skopeo/source:{tag}"));
        args.extend([from.as_str(), to.as_str()]);
        clients.skopeo(&args);
    }

    // sync names the destination after the source's last path component: mirror/source.
    clients.skopeo(&[
        "sync",
        "--all",
        "--preserve-digests",
        "--src",
        "docker",
        "--dest",
        "docker",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("{host}/skopeo/source"),
        &format!("{host}/mirror"),
    ]);

    assert_eq!(clients.list_tags(&format!("{host}/mirror/source")), json!(["multi", "one", "two"]));
    assert_serves_manifest(&server, "mirror/source", "one", &one.manifest, OCI_MANIFEST);
    assert_serves_manifest(&server, "mirror/source", "two", &two.manifest, OCI_MANIFEST);
    assert_serves_manifest(&server, "mirror/source", "multi", &multi.index, OCI_INDEX);
    for image in &multi.images {
        assert_serves_manifest(&server, "mirror/source", &image.manifest_digest, &image.manifest, OCI_MANIFEST);
    }
    // The mirror's blobs are all there: a copy out of it is complete.
    let back = server.scratch("back");
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/mirror/source:two"),
        &oci_ref(&back, "two"),
    ]);
    assert_layout_holds(&back, "two", &two);
    let arm = &multi.images[1];
    clients.skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{host}/mirror/source@{}", arm.manifest_digest),
        &oci_ref(&back, "arm"),
    ]);
    assert_layout_holds(&back, "arm", arm);
}

// ---------------------------------------------------------------------------------------
// podman

#[test]
fn podman_push_then_pull_returns_the_same_image_id_and_digest() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let policy = clients.policy();
    let layout = lowercase_dir();
    let image = oci_layout(layout.path(), "v1", &[400_000, 30_000]);

    // The image id is the config digest.
    let id = clients.podman(&["pull", "-q", "--signature-policy", &policy, &oci_ref(layout.path(), "v1")]);
    assert_eq!(id.trim(), hex(&image.config_digest));

    let digest_file = clients.path("pushed.digest");
    let remote = format!("{host}/podman/app:v1");
    clients.podman(&[
        "push",
        "-q",
        "--tls-verify=false",
        "--signature-policy",
        &policy,
        "--digestfile",
        &digest_file,
        hex(&image.config_digest),
        &format!("docker://{remote}"),
    ]);
    let pushed = std::fs::read_to_string(&digest_file).unwrap();
    let served = clients.inspect_raw(&remote);
    assert_eq!(sha256_digest(&served), pushed, "the digest podman reports is the served manifest's");
    let manifest: Value = serde_json::from_slice(&served).unwrap();
    assert_eq!(manifest["config"]["digest"], image.config_digest);
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 2);

    clients.podman(&["rmi", "-a", "-f"]);
    assert_eq!(clients.podman(&["images", "-q"]).trim(), "", "local storage is empty");

    let pulled = clients.podman(&["pull", "-q", "--tls-verify=false", "--signature-policy", &policy, &remote]);
    assert_eq!(pulled.trim(), hex(&image.config_digest));
    let inspected = clients.podman(&["image", "inspect", "--format", "{{.Id}} {{.Digest}} {{.Architecture}}", &remote]);
    assert_eq!(inspected.trim(), format!("{} {pushed} amd64", hex(&image.config_digest)));

    // By digest too.
    clients.podman(&["rmi", "-a", "-f"]);
    let by_digest = clients.podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--signature-policy",
        &policy,
        &format!("{host}/podman/app@{pushed}"),
    ]);
    assert_eq!(by_digest.trim(), hex(&image.config_digest));
}

#[test]
fn podman_manifest_push_all_serves_an_index_of_both_platforms() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let policy = clients.policy();

    // amd64 pulled from a layout, arm64 loaded from an OCI archive; both pushed.
    let amd_layout = lowercase_dir();
    let amd = oci_platform_layout(amd_layout.path(), "v1", Platform::LINUX_AMD64, &[80_000]);
    clients.podman(&["pull", "-q", "--signature-policy", &policy, &oci_ref(amd_layout.path(), "v1")]);
    let arm_layout = server.scratch("arm-layout");
    let arm = oci_platform_layout(&arm_layout, "podman-arm:v1", Platform::LINUX_ARM64, &[90_000]);
    let archive = server.scratch("archives").join("arm.tar");
    {
        let mut tar = tar::Builder::new(std::fs::File::create(&archive).unwrap());
        tar.append_dir_all(".", &arm_layout).unwrap();
        tar.finish().unwrap();
    }
    let loaded = clients.podman(&["load", "--signature-policy", &policy, "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("podman-arm:v1"), "{loaded}");

    let mut pushed = Vec::new();
    for (image, arch) in [(&amd, "amd64"), (&arm, "arm64")] {
        let digest_file = clients.path(&format!("{arch}.digest"));
        clients.podman(&[
            "push",
            "-q",
            "--tls-verify=false",
            "--signature-policy",
            &policy,
            "--digestfile",
            &digest_file,
            hex(&image.config_digest),
            &format!("docker://{host}/podman/multi:{arch}"),
        ]);
        pushed.push(std::fs::read_to_string(&digest_file).unwrap());
    }

    clients.podman(&["manifest", "create", "berth-test-list"]);
    for arch in ["amd64", "arm64"] {
        clients.podman(&[
            "manifest",
            "add",
            "--tls-verify=false",
            "berth-test-list",
            &format!("docker://{host}/podman/multi:{arch}"),
        ]);
    }
    let list_digest_file = clients.path("list.digest");
    clients.podman(&[
        "manifest",
        "push",
        "--all",
        "-q",
        "--tls-verify=false",
        "--digestfile",
        &list_digest_file,
        "berth-test-list",
        &format!("docker://{host}/podman/multi:index"),
    ]);

    let raw = clients.inspect_raw(&format!("{host}/podman/multi:index"));
    assert_eq!(sha256_digest(&raw), std::fs::read_to_string(&list_digest_file).unwrap());
    let list: Value = serde_json::from_slice(&raw).unwrap();
    let media_type = list["mediaType"].as_str().unwrap();
    assert!([OCI_INDEX, DOCKER_MANIFEST_LIST].contains(&media_type), "{media_type}");
    assert_serves_manifest(&server, "podman/multi", "index", &raw, media_type);
    let children: Vec<(String, String)> = list["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["platform"]["architecture"].as_str().unwrap().to_owned(), m["digest"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(children, [("amd64".to_owned(), pushed[0].clone()), ("arm64".to_owned(), pushed[1].clone())]);
    for digest in &pushed {
        let r = http_get(&server, &format!("/v2/podman/multi/manifests/{digest}"), ACCEPT_ANY_MANIFEST);
        assert_eq!(r.status, 200, "child {digest}");
        assert_eq!(sha256_digest(&r.body), *digest);
    }

    // podman picks the requested platform out of the list.
    clients.podman(&["rmi", "-a", "-f"]);
    let id = clients.podman(&[
        "pull",
        "-q",
        "--tls-verify=false",
        "--signature-policy",
        &policy,
        "--arch",
        "arm64",
        &format!("{host}/podman/multi:index"),
    ]);
    assert_eq!(id.trim(), hex(&arm.config_digest));
    let arch = clients.podman(&["image", "inspect", "--format", "{{.Architecture}}", id.trim()]);
    assert_eq!(arch.trim(), "arm64");
}

// ---------------------------------------------------------------------------------------
// buildah

#[test]
fn buildah_pushes_oci_and_docker_v2s2_manifests_that_skopeo_pulls_back_intact() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::new(&server);
    let policy = clients.policy();
    let payload = random_bytes(150_000);
    let file = server.scratch("context").join("payload.bin");
    std::fs::write(&file, &payload).unwrap();

    let container = clients.buildah(&["from", "--signature-policy", &policy, "scratch"]).trim().to_owned();
    clients.buildah(&["copy", &container, file.to_str().unwrap(), "/payload.bin"]);
    clients.buildah(&["config", "--label", "org.berth.test=buildah", &container]);
    clients.buildah(&["commit", "-q", "--signature-policy", &policy, &container, "berth-buildah-image"]);

    let cases = [
        ("oci", OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP),
        ("v2s2", DOCKER_MANIFEST, DOCKER_CONFIG, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ];
    for (format, manifest_type, config_type, layer_type) in cases {
        let remote = format!("{host}/buildah/image:{format}");
        let digest_file = clients.path(&format!("{format}.digest"));
        clients.buildah(&[
            "push",
            "-q",
            "--tls-verify=false",
            "--signature-policy",
            &policy,
            "--format",
            format,
            "--digestfile",
            &digest_file,
            "berth-buildah-image",
            &format!("docker://{remote}"),
        ]);

        let raw = clients.inspect_raw(&remote);
        assert_eq!(sha256_digest(&raw), std::fs::read_to_string(&digest_file).unwrap(), "{format}");
        let manifest: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(manifest["mediaType"], manifest_type, "{format}");
        assert_eq!(manifest["config"]["mediaType"], config_type, "{format}");
        let layers = manifest["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 1, "{format}");
        assert_eq!(layers[0]["mediaType"], layer_type, "{format}");
        assert_serves_manifest(&server, "buildah/image", format, &raw, manifest_type);
        let info = clients.inspect(&remote);
        assert_eq!(info["Labels"]["org.berth.test"], "buildah", "{format}");

        // Pulled back into a `dir:` copy: the same manifest, and the file inside the layer.
        let dir = server.scratch(&format!("pulled-{format}"));
        clients.skopeo(&[
            "copy",
            "--src-tls-verify=false",
            &format!("docker://{remote}"),
            &format!("dir:{}", dir.display()),
        ]);
        assert!(std::fs::read(dir.join("manifest.json")).unwrap() == raw, "{format}");
        let layer_digest = layers[0]["digest"].as_str().unwrap();
        let layer = std::fs::read(dir.join(hex(layer_digest))).unwrap();
        assert_eq!(sha256_digest(&layer), layer_digest);
        let tar = gunzip(&layer);
        let mut archive = tar::Archive::new(&tar[..]);
        let mut found = None;
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().to_str().unwrap().trim_start_matches("./").trim_start_matches('/') == "payload.bin"
            {
                let mut bytes = Vec::new();
                entry.read_to_end(&mut bytes).unwrap();
                found = Some(bytes);
            }
        }
        assert!(found.as_deref() == Some(&payload[..]), "{format}: payload.bin missing or different in the layer");
    }
}
