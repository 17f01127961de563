//! End-to-end tests of Berth driven by the Docker engine and CLI (Debian's docker.io): import,
//! tag, push, rmi, pull back, second tags, cross-repository mounts and `pull --platform` out
//! of a multi-platform index. The pushing test logs in first (`docker login` as the admin);
//! the `--platform` test pulls anonymously from the public project `library`.
//!
//! Each test starts a private `dockerd` (vfs storage, no networking features, its own data
//! and exec roots, socket, pid file and an empty daemon config in a temp directory under
//! `/tmp`) and runs the CLI with `DOCKER_HOST` pointing at it and a private `DOCKER_CONFIG`.
//! The daemon is stopped with SIGTERM when its guard drops, also when a test panics, and the
//! guard makes sure neither dockerd nor the containerd it started outlives the test.
//! cargo nextest runs every test in a process of its own, so a daemon can't be shared:
//! starting one costs seconds, so each test covers several scenarios.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::{
    DOCKER_MANIFEST, ImageIndex, OCI_INDEX, OCI_MANIFEST, Platform, blob_path, oci_index_layout, rootfs_tar,
    sha256_digest,
};
use crate::support::{Creds, TestServer, require, run_with_input};

/// Variables that must not reach dockerd or the CLI from the machine: another daemon or
/// context, TLS settings, proxies (a proxy would see the loopback registry's traffic), CA
/// bundles (plain HTTP on loopback must not depend on them).
const SCRUBBED_ENV: &[&str] = &[
    "DOCKER_HOST",
    "DOCKER_CONTEXT",
    "DOCKER_CONFIG",
    "DOCKER_TLS_VERIFY",
    "DOCKER_CERT_PATH",
    "DOCKER_DEFAULT_PLATFORM",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "AWS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
];

/// A private Docker engine. Dropping it stops dockerd (SIGTERM, then SIGKILL after 60 s)
/// and the containerd it manages.
pub(crate) struct Dockerd {
    /// Short, under `/tmp`: the socket path must fit in a `sockaddr_un` (~100 bytes).
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Dockerd {
    pub(crate) fn start() -> Dockerd {
        Dockerd::start_with_config(&serde_json::json!({}))
    }

    /// A private Docker engine whose `daemon.json` is `config` (mirrors, insecure registries).
    pub(crate) fn start_with_config(config: &Value) -> Dockerd {
        require("dockerd");
        require("docker");
        require("containerd");
        let dir = tempfile::Builder::new().prefix("bd-").tempdir_in("/tmp").expect("temp dir under /tmp");
        let p = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
        // Without `--config-file` dockerd would read the machine's /etc/docker/daemon.json;
        // [`Dockerd::start`]'s is empty: no insecure-registries entry, no mirrors.
        std::fs::write(p("daemon.json"), config.to_string()).unwrap();
        std::fs::create_dir_all(p("cli")).unwrap();
        let mut cmd = Command::new("dockerd");
        for var in SCRUBBED_ENV {
            cmd.env_remove(var);
        }
        let child = cmd
            .args(["--config-file", &p("daemon.json")])
            .args(["--data-root", &p("data"), "--exec-root", &p("exec"), "--pidfile", &p("docker.pid")])
            .args(["-H", &format!("unix://{}", p("d.sock"))])
            .args(["--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--bridge=none"])
            .args(["--ip-masq=false", "--ip-forward=false"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(p("dockerd.log")).unwrap())
            .stderr(std::fs::File::create(p("dockerd.err.log")).unwrap())
            .spawn()
            .expect("start dockerd");
        let mut docker = Dockerd { dir, child: Some(child) };
        docker.wait_ready();
        docker
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("dockerd exited with {status} while starting:\n{}", self.log());
            }
            let out = self.cmd().args(["version", "--format", "{{.Server.Version}}"]).output().unwrap();
            if out.status.success() && !out.stdout.is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("dockerd did not answer `docker version` within 90 s:\n{}", self.log());
    }

    fn log(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("dockerd.log"), read("dockerd.err.log"))
    }

    /// The CLI, talking to this daemon only.
    fn cmd(&self) -> Command {
        let mut c = Command::new("docker");
        for var in SCRUBBED_ENV {
            c.env_remove(var);
        }
        c.env("DOCKER_HOST", format!("unix://{}", self.dir.path().join("d.sock").display()))
            .env("DOCKER_CONFIG", self.dir.path().join("cli"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker ARGS`, panicking with its output (and the daemon's log) if it fails.
    pub(crate) fn run(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.try_run(args);
        assert!(
            ok,
            "docker {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}\ndockerd log (tail):\n{}",
            tail(&self.log(), 60)
        );
        stdout
    }

    /// Runs `docker ARGS`; returns (success, stdout, stderr).
    pub(crate) fn try_run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.cmd().args(args).output().unwrap_or_else(|e| panic!("running docker {args:?}: {e}"));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `docker login HOST` with the password on stdin; the CLI keeps the credentials in
    /// this daemon's private `DOCKER_CONFIG`. Returns the CLI's stdout.
    pub(crate) fn login(&self, host: &str, creds: &Creds) -> String {
        let mut login = self.cmd();
        login.args(["login", "--username", &creds.user, "--password-stdin", host]);
        run_with_input(&mut login, &creds.password)
    }

    /// The CLI's `config.json`: what `docker login` kept.
    pub(crate) fn cli_config(&self) -> Value {
        let path = self.dir.path().join("cli").join("config.json");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
            .unwrap()
    }

    pub(crate) fn inspect(&self, image: &str) -> Value {
        let out = self.run(&["image", "inspect", image]);
        let mut list: Vec<Value> = serde_json::from_str(&out).unwrap();
        assert_eq!(list.len(), 1, "{out}");
        list.remove(0)
    }

    /// The pid of the containerd this dockerd started, from its pid file.
    fn containerd_pid(&self) -> Option<u32> {
        let exec = self.dir.path().join("exec");
        ["containerd/containerd.pid", "containerd.pid"]
            .iter()
            .find_map(|f| std::fs::read_to_string(exec.join(f)).ok())
            .and_then(|s| s.trim().parse().ok())
    }

    /// Stops dockerd and waits for it and its containerd to be gone; returns their pids.
    fn shut_down(&mut self) -> Vec<u32> {
        let Some(mut child) = self.child.take() else { return Vec::new() };
        let containerd = self.containerd_pid();
        let pid = child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if child.try_wait().ok().flatten().is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // dockerd stops its containerd before exiting; if it was killed, containerd is not.
        let mut pids = vec![pid];
        if let Some(c) = containerd {
            pids.push(c);
            let deadline = Instant::now() + Duration::from_secs(20);
            while alive(c) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive(c) {
                let _ = Command::new("kill").args(["-KILL", &c.to_string()]).status();
            }
        }
        pids
    }

    /// Stops the daemon now and asserts that neither dockerd nor containerd is left.
    fn stop(mut self) {
        let pids = self.shut_down();
        assert_eq!(
            pids.len(),
            2,
            "dockerd started no containerd of its own (pid file missing)?\n{}",
            tail(&self.log(), 40)
        );
        for pid in pids {
            assert!(!alive(pid), "process {pid} outlived the daemon's shutdown");
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Whether `pid` names a live process (a zombie is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The `digest: sha256:…` that `docker push` reports, or `Digest: sha256:…` of `docker pull`.
pub(crate) fn reported_digest(output: &str) -> String {
    output
        .split(|c: char| c.is_whitespace())
        .skip_while(|w| !w.eq_ignore_ascii_case("digest:"))
        .nth(1)
        .unwrap_or_else(|| panic!("no digest in docker's output:\n{output}"))
        .to_owned()
}

/// The bytes of the file `name` in a tar stream.
fn file_in_tar(tar: &[u8], name: &str) -> Vec<u8> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path().unwrap().to_str().unwrap().trim_start_matches("./").trim_start_matches('/') == name {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            return bytes;
        }
    }
    panic!("{name} is not in the tar");
}

/// A response from the registry, read whole.
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// Plain HTTP to the registry as the admin, to check what clients stored and to push fixtures.
struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Http {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let client = crate::support::http_client().build().unwrap();
        Http { rt, client, base: server.url() }
    }

    fn send(&self, method: &str, path_or_url: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            format!("{}{path_or_url}", self.base)
        };
        let mut req = self.client.request(reqwest::Method::from_bytes(method.as_bytes()).unwrap(), &url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(body.to_vec());
        self.rt.block_on(async {
            let r = req.send().await.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let body = r.bytes().await.unwrap().to_vec();
            Reply { status, headers, body }
        })
    }

    fn get(&self, path: &str, accept: &str) -> Reply {
        self.send("GET", path, &[("accept", accept)], b"")
    }

    /// POST then PUT `?digest=`: a monolithic blob upload.
    fn push_blob(&self, repo: &str, bytes: &[u8]) {
        let digest = sha256_digest(bytes);
        let r = self.send("POST", &format!("/v2/{repo}/blobs/uploads/"), &[], b"");
        assert_eq!(r.status, 202, "start upload: {}", String::from_utf8_lossy(&r.body));
        let location = r.header("location").expect("upload Location").to_owned();
        let sep = if location.contains('?') { '&' } else { '?' };
        let r = self.send(
            "PUT",
            &format!("{location}{sep}digest={digest}"),
            &[("content-type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(r.status, 201, "finish upload of {digest}: {}", String::from_utf8_lossy(&r.body));
    }

    fn put_manifest(&self, repo: &str, reference: &str, media_type: &str, body: &[u8]) {
        let r = self.send("PUT", &format!("/v2/{repo}/manifests/{reference}"), &[("content-type", media_type)], body);
        assert_eq!(r.status, 201, "PUT manifest {repo}:{reference}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("docker-content-digest"), Some(sha256_digest(body).as_str()));
    }

    fn tags(&self, repo: &str) -> Value {
        let r = self.get(&format!("/v2/{repo}/tags/list"), "application/json");
        assert_eq!(r.status, 200);
        r.json()["tags"].clone()
    }

    /// Pushes every blob and manifest of a fixture index (as written, byte for byte), and
    /// the index itself tagged `tag`.
    fn push_index(&self, layout: &Path, repo: &str, tag: &str, index: &ImageIndex) {
        for image in &index.images {
            for digest in image.blob_digests() {
                self.push_blob(repo, &std::fs::read(blob_path(layout, digest)).unwrap());
            }
            self.put_manifest(repo, &image.manifest_digest, OCI_MANIFEST, &image.manifest);
        }
        self.put_manifest(repo, tag, OCI_INDEX, &index.index);
    }
}

const ACCEPT_DOCKER: &str = "application/vnd.docker.distribution.manifest.v2+json";

#[test]
fn docker_push_then_pull_round_trips_the_image_and_reuses_layers_already_in_the_registry() {
    let server = TestServer::start();
    let http = Http::new(&server);
    let host = server.host();
    let docker = Dockerd::start();
    // The daemon is configured with nothing: no mirrors, and its only insecure registries
    // are the built-in loopback ranges (newer engines add ::1/128).
    let registry_config: Value =
        serde_json::from_str(&docker.run(&["info", "--format", "{{json .RegistryConfig}}"])).unwrap();
    let insecure = registry_config["InsecureRegistryCIDRs"].as_array().unwrap();
    assert!(insecure.iter().any(|c| c == "127.0.0.0/8"), "{registry_config}");
    assert!(insecure.iter().all(|c| c == "127.0.0.0/8" || c == "::1/128"), "{registry_config}");
    assert_eq!(registry_config["Mirrors"], serde_json::json!([]));
    let login = docker.login(&host, &server.admin());
    assert!(login.contains("Login Succeeded"), "{login}");

    // docker import: a one-layer image from a root filesystem tarball of random bytes.
    let scratch = server.scratch("docker");
    let rootfs = scratch.join("rootfs.tar");
    rootfs_tar(&rootfs, 3 * 1024 * 1024 + 123);
    let payload = file_in_tar(&std::fs::read(&rootfs).unwrap(), "payload.bin");
    let id = docker.run(&["import", rootfs.to_str().unwrap(), "berth-test/imported:1"]).trim().to_owned();
    assert!(id.starts_with("sha256:"), "docker import printed {id:?}");

    // tag + push over plain HTTP: the daemon has an empty config (no insecure-registries
    // entry); loopback registries are trusted without one.
    let app1 = format!("{host}/dock/app:1");
    docker.run(&["tag", "berth-test/imported:1", &app1]);
    let push = docker.run(&["push", &app1]);
    assert!(push.contains("Pushed"), "the layer was uploaded:\n{push}");
    let digest = reported_digest(&push);

    // Berth serves exactly what docker pushed: a Docker v2 manifest naming the image's config.
    let r = http.get("/v2/dock/app/manifests/1", ACCEPT_DOCKER);
    assert_eq!(r.status, 200);
    assert_eq!(sha256_digest(&r.body), digest);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));
    assert_eq!(r.header("content-type"), Some(DOCKER_MANIFEST));
    let manifest = r.json();
    assert_eq!(manifest["mediaType"], DOCKER_MANIFEST);
    assert_eq!(manifest["config"]["digest"], id.as_str(), "the image id is its config's digest");
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "{manifest}");
    let layer = layers[0]["digest"].as_str().unwrap().to_owned();
    let r = http.send("HEAD", &format!("/v2/dock/app/blobs/{layer}"), &[], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length").map(|s| s.parse::<u64>().unwrap()), layers[0]["size"].as_u64());
    assert_eq!(http.tags("dock/app"), serde_json::json!(["1"]));

    // A second tag in the same repository: every blob is already there, nothing is uploaded.
    let app2 = format!("{host}/dock/app:2");
    docker.run(&["tag", &app1, &app2]);
    let push = docker.run(&["push", &app2]);
    assert!(push.contains("Layer already exists"), "{push}");
    assert!(!push.contains("Pushed"), "nothing should be uploaded again:\n{push}");
    assert_eq!(reported_digest(&push), digest);
    assert_eq!(http.tags("dock/app"), serde_json::json!(["1", "2"]));

    // Another repository: docker remembers where the layer came from and asks Berth to
    // mount it (`POST /v2/dock/other/blobs/uploads/?mount=…&from=dock/app`) instead of
    // uploading it again.
    let other = format!("{host}/dock/other:1");
    docker.run(&["tag", &app1, &other]);
    let push = docker.run(&["push", &other]);
    assert!(push.contains("Mounted from dock/app"), "{push}");
    assert!(!push.contains("Pushed"), "nothing should be uploaded again:\n{push}");
    assert_eq!(reported_digest(&push), digest);
    assert_eq!(http.send("HEAD", &format!("/v2/dock/other/blobs/{layer}"), &[], b"").status, 200);
    assert_eq!(http.send("HEAD", &format!("/v2/dock/other/blobs/{id}"), &[], b"").status, 200);
    let r = http.get("/v2/dock/other/manifests/1", ACCEPT_DOCKER);
    assert_eq!(r.header("docker-content-digest"), Some(digest.as_str()));

    // rmi every name, so the image is gone from the engine, then pull it back.
    docker.run(&["rmi", "berth-test/imported:1", &app1, &app2, &other]);
    let (found, _, _) = docker.try_run(&["image", "inspect", &id]);
    assert!(!found, "the image is still in the engine after rmi");
    let pull = docker.run(&["pull", &app1]);
    assert_eq!(reported_digest(&pull), digest);
    let image = docker.inspect(&app1);
    assert_eq!(image["Id"], id.as_str(), "the pulled image is the pushed one");
    assert_eq!(image["RepoDigests"], serde_json::json!([format!("{host}/dock/app@{digest}")]));
    assert_eq!(image["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));

    // And the content came back byte for byte: a container's filesystem holds the payload.
    let container = docker.run(&["create", "--network", "none", &app1, "/payload.bin"]).trim().to_owned();
    let export = docker.cmd().args(["export", &container]).output().unwrap();
    assert!(export.status.success(), "docker export: {}", String::from_utf8_lossy(&export.stderr));
    assert!(file_in_tar(&export.stdout, "payload.bin") == payload, "payload.bin differs after the round trip");
    docker.run(&["rm", &container]);

    // Pulling by digest gives the same image.
    let by_digest = format!("{host}/dock/other@{digest}");
    docker.run(&["pull", &by_digest]);
    assert_eq!(docker.inspect(&by_digest)["Id"], id.as_str());

    // A robot of `dock` logs in like a user (`robot$dock+ci`: a `$` and a `+` in the
    // name), pushes a new tag and pulls it back; outside its project it is refused.
    let robot = serde_json::json!({"name": "ci", "grants": [{"project": "dock", "permissions": ["pull", "push"]}]});
    let json = [("content-type", "application/json")];
    let r = http.send("POST", "/api/v1/projects/dock/robots", &json, robot.to_string().as_bytes());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let created = r.json();
    let robot = Creds::new(created["robot"]["name"].as_str().unwrap(), created["secret"].as_str().unwrap());
    assert_eq!(robot.user, "robot$dock+ci");
    docker.run(&["logout", &host]);
    let login = docker.login(&host, &robot);
    assert!(login.contains("Login Succeeded"), "{login}");
    let app3 = format!("{host}/dock/app:3");
    docker.run(&["tag", &app1, &app3]);
    let push = docker.run(&["push", &app3]);
    assert_eq!(reported_digest(&push), digest, "the robot pushed the same image:\n{push}");
    assert_eq!(http.tags("dock/app"), serde_json::json!(["1", "2", "3"]));
    docker.run(&["rmi", &app3, &app1]);
    assert_eq!(reported_digest(&docker.run(&["pull", &app3])), digest);
    let elsewhere = format!("{host}/other-team/app:1");
    docker.run(&["tag", &app3, &elsewhere]);
    let (pushed, _, stderr) = docker.try_run(&["push", &elsewhere]);
    let refused = stderr.contains("denied") || stderr.contains("unauthorized");
    assert!(!pushed && refused, "a robot of dock pushed elsewhere: {stderr}");

    docker.stop();
}

#[test]
fn docker_pull_with_platform_picks_the_matching_image_out_of_a_multi_arch_index() {
    let server = TestServer::start();
    let http = Http::new(&server);
    let host = server.host();

    // An OCI index of linux/amd64 and linux/arm64 images, pushed as written into a
    // one-component repository: the public project `library`, which docker pulls from
    // without logging in.
    let layout: PathBuf = server.scratch("multi");
    let index = oci_index_layout(&layout, "v1", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[400_000, 20_000]);
    http.push_index(&layout, "multi", "1", &index);
    let r = http.get("/v2/multi/manifests/1", OCI_INDEX);
    assert_eq!((r.status, r.body.as_slice()), (200, index.index.as_slice()));

    let docker = Dockerd::start();
    let multi = format!("{host}/multi:1");
    for (platform, image) in [("linux/arm64", &index.images[1]), ("linux/amd64", &index.images[0])] {
        let pull = docker.run(&["pull", "--platform", platform, &multi]);
        assert_eq!(reported_digest(&pull), index.digest, "docker reports the index's digest");
        let inspected = docker.inspect(&multi);
        assert_eq!(
            (inspected["Os"].as_str(), inspected["Architecture"].as_str()),
            (Some(image.platform.os), Some(image.platform.architecture)),
            "pull --platform {platform}"
        );
        assert_eq!(inspected["Id"], image.config_digest.as_str(), "pull --platform {platform}");
        assert_eq!(inspected["RootFS"]["Layers"], serde_json::json!(image.diff_ids), "pull --platform {platform}");
        assert_eq!(inspected["RepoDigests"], serde_json::json!([format!("{host}/multi@{}", index.digest)]));
        // Remove it (tag and digest reference) before the next platform: the engine keeps
        // one image per digest reference, and both platforms share the index's digest.
        docker.run(&["rmi", &image.config_digest]);
        assert!(!docker.try_run(&["image", "inspect", &image.config_digest]).0, "rmi left {platform}'s image");
    }

    // Without --platform docker picks the machine's own platform.
    let native = match std::env::consts::ARCH {
        "x86_64" => Some(&index.images[0]),
        "aarch64" => Some(&index.images[1]),
        _ => None,
    };
    if let Some(image) = native {
        docker.run(&["pull", &multi]);
        assert_eq!(docker.inspect(&multi)["Id"], image.config_digest.as_str(), "pull with no --platform");
    }

    // A platform the index does not list: docker refuses, naming the platform.
    let (ok, stdout, stderr) = docker.try_run(&["pull", "--platform", "linux/s390x", &multi]);
    assert!(!ok, "pulling linux/s390x succeeded:\n{stdout}");
    assert!(stderr.contains("no matching manifest for linux/s390x"), "{stderr}");

    // A child manifest pulled by digest: the arm64 image itself.
    let arm = format!("{host}/multi@{}", index.images[1].manifest_digest);
    docker.run(&["pull", "--platform", "linux/arm64", &arm]);
    assert_eq!(docker.inspect(&arm)["Architecture"], "arm64");

    docker.stop();
}
