//! Real clients against the real server: skopeo, podman and buildah from Debian's
//! packages push, pull, copy, inspect, list, delete and sync images built on the fly.
//! No client is mocked and none is optional: a missing one fails its test.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::api::raw_request;
use crate::layout::{OCI_INDEX, OCI_MANIFEST, oci_index_layout, oci_layout, oci_platform_layout, tar_of_one_file};
use crate::support::{TestServer, require, run};

const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

fn skopeo(args: &[&str]) -> String {
    require("skopeo");
    run(Command::new("skopeo").args(args))
}

/// `skopeo inspect --raw` of a reference in the registry, parsed.
fn raw_manifest(server: &TestServer, reference: &str) -> (Value, Vec<u8>) {
    let out = skopeo(&["inspect", "--raw", "--tls-verify=false", &format!("docker://{}/{reference}", server.host())]);
    (serde_json::from_str(&out).unwrap(), out.into_bytes())
}

fn same_files(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn skopeo_copy_round_trips_an_oci_layout_byte_for_byte() {
    let server = TestServer::start();
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[300_000, 40_000], 1);
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", src.display()), &format!("docker://{}/sk/app:v1", server.host())]);

    // The registry serves exactly the pushed manifest.
    let (_, raw) = raw_manifest(&server, "sk/app:v1");
    assert_eq!(raw, image.manifest);
    let info: Value = serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{}/sk/app:v1", server.host())])).unwrap();
    assert_eq!(info["Digest"], image.manifest_digest);
    assert_eq!(info["Architecture"], "amd64");
    assert_eq!(info["Layers"].as_array().unwrap().len(), 2);

    // And back: every blob identical.
    let dst = server.scratch("dst");
    skopeo(&["copy", "--src-tls-verify=false", &format!("docker://{}/sk/app:v1", server.host()), &format!("oci:{}:v1", dst.display())]);
    for digest in image.layer_digests.iter().chain([&image.config_digest, &image.manifest_digest]) {
        let name = &digest[7..];
        assert!(same_files(&src.join("blobs/sha256").join(name), &dst.join("blobs/sha256").join(name)), "{digest}");
    }
}

#[test]
fn skopeo_copy_all_pushes_a_multi_platform_index() {
    let server = TestServer::start();
    let src = server.scratch("multi");
    let (_, images) = oci_index_layout(&src, "v1", &["amd64", "arm64"], 10);
    skopeo(&["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:v1", src.display()), &format!("docker://{}/sk/multi:v1", server.host())]);

    let (index, _) = raw_manifest(&server, "sk/multi:v1");
    assert_eq!(index["mediaType"], OCI_INDEX);
    let children = index["manifests"].as_array().unwrap();
    assert_eq!(children.len(), 2);
    // Each platform's manifest is served by digest, naming the config and layers built.
    // (skopeo re-serialises child manifests on copy, so compare what they name.)
    for (child, image) in children.iter().zip(&images) {
        let (manifest, raw) = raw_manifest(&server, &format!("sk/multi@{}", child["digest"].as_str().unwrap()));
        assert_eq!(crate::api::sha256(&raw), child["digest"].as_str().unwrap());
        assert_eq!(manifest["config"]["digest"], image.config_digest);
        assert_eq!(manifest["layers"][0]["digest"], image.layer_digests[0]);
    }
    let arm: Value = serde_json::from_str(&skopeo(&[
        "inspect", "--tls-verify=false", "--override-arch", "arm64", &format!("docker://{}/sk/multi:v1", server.host()),
    ]))
    .unwrap();
    assert_eq!(arm["Architecture"], "arm64");
    assert_eq!(arm["Layers"][0], images[1].layer_digests[0]);
}

#[test]
fn skopeo_lists_deletes_and_syncs() {
    let server = TestServer::start();
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[10_000], 20);
    let host = server.host();
    for tag in ["v1", "v2", "latest"] {
        skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", src.display()), &format!("docker://{host}/sk/tags:{tag}")]);
    }
    let tags: Value = serde_json::from_str(&skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{host}/sk/tags")])).unwrap();
    assert_eq!(tags["Tags"], serde_json::json!(["latest", "v1", "v2"]));

    // sync copies the repository, every tag, to another one.
    require("skopeo");
    run(Command::new("skopeo").args([
        "sync", "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
        &format!("{host}/sk/tags"), &format!("{host}/mirror"),
    ]));
    let mirrored: Value = serde_json::from_str(&skopeo(&["list-tags", "--tls-verify=false", &format!("docker://{host}/mirror/tags")])).unwrap();
    assert_eq!(mirrored["Tags"], serde_json::json!(["latest", "v1", "v2"]));

    // delete removes the manifest, and so every tag on it.
    skopeo(&["delete", "--tls-verify=false", &format!("docker://{host}/sk/tags@{}", image.manifest_digest)]);
    for tag in ["v1", "v2", "latest"] {
        let (status, _) = raw_request(server.addr, "GET", &format!("/v2/sk/tags/manifests/{tag}"), b"");
        assert_eq!(status, 404, "{tag}");
    }
    let (status, _) = raw_request(server.addr, "GET", "/v2/mirror/tags/manifests/v1", b"");
    assert_eq!(status, 200, "the mirror is untouched");
}

/// A directory whose path is all lowercase: podman names an image pulled from an
/// `oci:` layout after its path, and image names must be lowercase.
fn lowercase_dir() -> tempfile::TempDir {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    tempfile::Builder::new().prefix(&format!("berth{}x{nanos}", std::process::id())).rand_bytes(0).tempdir().unwrap()
}

/// podman with private storage (vfs) in the server's scratch space.
fn podman(server: &TestServer, args: &[&str]) -> String {
    require("podman");
    let root = server.scratch("podman");
    run(Command::new("podman")
        .arg("--root")
        .arg(root.join("root"))
        .arg("--runroot")
        .arg(root.join("run"))
        .args(["--storage-driver", "vfs", "--events-backend", "file", "--cgroup-manager", "cgroupfs"])
        .args(args))
}

#[test]
fn podman_pushes_pulls_and_builds_a_manifest_list() {
    let server = TestServer::start();
    let host = server.host();
    let layout = |arch: &str| {
        let dir = lowercase_dir();
        oci_platform_layout(dir.path(), "v1", arch, &[50_000], if arch == "amd64" { 31 } else { 32 });
        dir
    };

    // Pull from a layout, push to Berth, forget it, pull it back: the same image.
    let amd = layout("amd64");
    podman(&server, &["pull", "-q", &format!("oci:{}:v1", amd.path().display())]);
    let id = podman(&server, &["images", "-q", "--no-trunc"]).lines().next().unwrap().to_owned();
    podman(&server, &["push", "-q", "--tls-verify=false", &id, &format!("docker://{host}/pod/app:amd64")]);
    podman(&server, &["rmi", "-a", "-f"]);
    podman(&server, &["pull", "-q", "--tls-verify=false", &format!("{host}/pod/app:amd64")]);
    let pulled = podman(&server, &["images", "-q", "--no-trunc"]).lines().next().unwrap().to_owned();
    assert_eq!(pulled, id, "the pulled image is the pushed one");

    // A second platform, then a manifest list of both, pushed with --all.
    let arm = layout("arm64");
    skopeo(&["copy", "--dest-tls-verify=false", &format!("oci:{}:v1", arm.path().display()), &format!("docker://{host}/pod/app:arm64")]);
    podman(&server, &["manifest", "create", "pod-list"]);
    for arch in ["amd64", "arm64"] {
        podman(&server, &["manifest", "add", "--tls-verify=false", "pod-list", &format!("docker://{host}/pod/app:{arch}")]);
    }
    podman(&server, &["manifest", "push", "--all", "--tls-verify=false", "pod-list", &format!("docker://{host}/pod/app:multi")]);
    let (list, _) = raw_manifest(&server, "pod/app:multi");
    let archs: Vec<_> = list["manifests"].as_array().unwrap().iter().map(|m| m["platform"]["architecture"].as_str().unwrap().to_owned()).collect();
    assert_eq!(archs, ["amd64", "arm64"]);

    // podman pulls the right platform out of it.
    podman(&server, &["rmi", "-a", "-f"]);
    podman(&server, &["pull", "-q", "--tls-verify=false", "--arch", "arm64", &format!("{host}/pod/app:multi")]);
    let arch = podman(&server, &["image", "inspect", "--format", "{{.Architecture}}", &format!("{host}/pod/app:multi")]);
    assert_eq!(arch.trim(), "arm64");
}

#[test]
fn buildah_builds_from_scratch_and_pushes_oci_and_docker_formats() {
    require("buildah");
    let server = TestServer::start();
    let host = server.host();
    let root = server.scratch("buildah");
    let buildah = |args: &[&str]| {
        run(Command::new("buildah")
            .arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args))
    };
    let file = server.scratch("ctx").join("hello.bin");
    std::fs::write(&file, tar_of_one_file("x", 1000, 40)).unwrap();

    let ctr = buildah(&["from", "scratch"]).trim().to_owned();
    buildah(&["copy", &ctr, file.to_str().unwrap(), "/hello.bin"]);
    buildah(&["config", "--label", "built-by=berth-tests", &ctr]);
    buildah(&["commit", "-q", &ctr, "bud-image"]);
    for (format, media_type) in [("oci", OCI_MANIFEST), ("v2s2", DOCKER_MANIFEST)] {
        buildah(&["push", "-q", "--tls-verify=false", "--format", format, "bud-image", &format!("docker://{host}/bud/img:{format}")]);
        let (manifest, _) = raw_manifest(&server, &format!("bud/img:{format}"));
        assert_eq!(manifest["mediaType"], media_type, "{format}");
        let info: Value = serde_json::from_str(&skopeo(&["inspect", "--tls-verify=false", &format!("docker://{host}/bud/img:{format}")])).unwrap();
        assert_eq!(info["Labels"]["built-by"], "berth-tests");
    }
}

#[test]
fn oras_pushes_pulls_and_discovers_referrers() {
    require("python3");
    let server = TestServer::start();
    let work = server.scratch("oras");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/oras_client.py");
    let out = Command::new("python3").arg(script).arg(server.host()).arg(&work).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim_end().ends_with("OK"),
        "oras script failed ({}):\n{stdout}\n{}\n(install the client with `pip install oras`; scripts/test.sh does)",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private Docker engine: its own data, exec root and socket in a temp directory, no
/// networking features (none are needed to push and pull). Stopped with SIGTERM on drop.
struct Dockerd {
    dir: tempfile::TempDir,
    child: std::process::Child,
    config: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        require("dockerd");
        require("docker");
        // A short path: unix socket paths are limited to about 100 bytes.
        let dir = tempfile::Builder::new().prefix("bd").tempdir_in("/tmp").unwrap();
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        let child = Command::new("dockerd")
            .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("pid")])
            .args(["-H", &format!("unix://{}", p("d.sock"))])
            .args(["--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--ip-masq=false", "--ip-forward=false"])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(p("dockerd.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let docker = Dockerd { dir, child, config: tempfile::tempdir().unwrap() };
        for _ in 0..300 {
            if docker.cmd().arg("version").output().is_ok_and(|o| o.status.success()) {
                return docker;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let log = docker.dir.path().join("dockerd.log");
        panic!("dockerd did not start:\n{}", std::fs::read_to_string(log).unwrap_or_default());
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        c.env("DOCKER_HOST", format!("unix://{}", self.dir.path().join("d.sock").display()))
            .env("DOCKER_CONFIG", self.config.path());
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run(self.cmd().args(args))
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        // dockerd stops its containerd before it exits.
        let _ = self.child.wait();
    }
}

#[test]
fn docker_pushes_pulls_mounts_and_picks_platforms() {
    let server = TestServer::start();
    let host = server.host();
    let docker = Dockerd::start();

    // import → push: a loopback registry needs no insecure-registries setting.
    let rootfs = server.scratch("docker").join("rootfs.tar");
    crate::layout::rootfs_tar(&rootfs, 200_000, 50);
    let image = format!("{host}/dock/app:1");
    let id = docker.run(&["import", rootfs.to_str().unwrap(), &image]).trim().to_owned();
    let push = docker.run(&["push", &image]);
    let pushed_digest = push.split("digest: ").nth(1).and_then(|s| s.split_whitespace().next()).expect("push reports a digest").to_owned();
    let (manifest, raw) = raw_manifest(&server, "dock/app:1");
    assert_eq!(crate::api::sha256(&raw), pushed_digest);
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);

    // rmi → pull: the same image comes back.
    docker.run(&["rmi", &image]);
    docker.run(&["pull", &image]);
    let pulled = docker.run(&["image", "inspect", "--format", "{{.Id}} {{index .RepoDigests 0}}", &image]);
    assert_eq!(pulled.trim(), format!("{id} {host}/dock/app@{pushed_digest}"));

    // Pushing the image to another repository mounts its layer instead of uploading it.
    let other = format!("{host}/dock/other:1");
    docker.run(&["tag", &image, &other]);
    let push = docker.run(&["push", &other]);
    assert!(push.contains("Mounted from dock/app"), "{push}");

    // pull --platform picks the right image out of a multi-platform index.
    let src = server.scratch("docker-multi");
    let (_, images) = oci_index_layout(&src, "v1", &["amd64", "arm64"], 60);
    skopeo(&["copy", "--all", "--dest-tls-verify=false", &format!("oci:{}:v1", src.display()), &format!("docker://{host}/dock/multi:1")]);
    for (arch, image) in [("arm64", &images[1]), ("amd64", &images[0])] {
        let multi = format!("{host}/dock/multi:1");
        docker.run(&["pull", "--platform", &format!("linux/{arch}"), &multi]);
        let got = docker.run(&["image", "inspect", "--format", "{{.Architecture}} {{.Id}}", &multi]);
        assert_eq!(got.trim(), format!("{arch} {}", image.config_digest));
    }
}
