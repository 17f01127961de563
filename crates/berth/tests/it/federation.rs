//! The pull-through cache against a real upstream: Debian's `docker-registry`
//! (distribution 2.8) on loopback, with htpasswd Basic auth where a test needs
//! credentials, its access log counting what it served. Clients: skopeo through a proxy
//! project's prefix, containerd's `ctr` with a `hosts.toml` naming Berth as the mirror of
//! the upstream's host (which sends `?ns=`), and a private dockerd whose `registry-mirrors`
//! is Berth, with Berth's default upstream playing Docker Hub.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_testkit::{Distribution, DistributionConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, assert_error, header, sha256};
use crate::clients_docker::Dockerd;
use crate::clients_skopeo_podman::{Clients, oci_ref};
use crate::fixtures::{OCI_MANIFEST, Platform, blob_path, oci_index_layout, oci_layout, random_bytes};
use crate::support::{Creds, ScaleOut, TestServer, require, run};

const ACCEPT_ANY: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// Creates project `project` (`public` or not) and binds it to `upstream` as an upstream
/// named `name`, with `extra` fields (credentials, TTL, default); returns the API's view.
async fn proxy_project(berth: &str, name: &str, project: &str, public: bool, upstream: &str, extra: Value) -> Value {
    let api = Api::new(berth.to_owned());
    let r = api
        .req(Method::POST, "/api/v1/projects")
        .json(&json!({ "name": project, "public": public }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    let mut spec = json!({ "name": name, "url": upstream, "project": project });
    spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    let r = api.req(Method::POST, "/api/v1/upstreams").json(&spec).send().await.unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// `GET /v2/{name}/manifests/{reference}` at `base` as `api` with every manifest type accepted.
async fn manifest(api: &Api, name: &str, reference: &str) -> reqwest::Response {
    api.req(Method::GET, &format!("/v2/{name}/manifests/{reference}"))
        .header("accept", ACCEPT_ANY)
        .send()
        .await
        .unwrap()
}

async fn digest_of(api: &Api, name: &str, reference: &str) -> String {
    let r = manifest(api, name, reference).await;
    assert_eq!(r.status(), StatusCode::OK, "{name}:{reference}");
    let digest = header(&r, "docker-content-digest").unwrap();
    assert_eq!(sha256(&r.bytes().await.unwrap()), digest, "the body is what the digest says");
    digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_project_pulls_an_index_and_a_docker_image_through_an_authenticated_upstream_byte_for_byte() {
    let upstream_creds = Creds::new("puller", "upstream-secret-2718");
    let upstream = Distribution::start(DistributionConfig {
        basic: Some((upstream_creds.user.clone(), upstream_creds.password.clone())),
        ..Default::default()
    });
    let berth = TestServer::start();
    let clients = Clients::new(&berth);
    let creds = format!("--dest-creds={}", upstream_creds.pair());
    // An OCI index with two platforms, and a Docker schema 2 image, at the upstream.
    let layout = berth.scratch("layout");
    let index = oci_index_layout(&layout, "multi", &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[3000, 5000]);
    let up = upstream.host();
    clients.skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &creds,
        &oci_ref(&layout, "multi"),
        &format!("docker://{up}/team/app:1"),
    ]);
    oci_layout(&layout, "single", &[4000]);
    clients.skopeo(&[
        "copy",
        "--format",
        "v2s2",
        "--dest-tls-verify=false",
        &creds,
        &oci_ref(&layout, "single"),
        &format!("docker://{up}/team/docker:1"),
    ]);

    let view = proxy_project(
        &berth.url(),
        "up",
        "mirror",
        false,
        &upstream.url(),
        json!({ "username": upstream_creds.user, "password": upstream_creds.password }),
    )
    .await;
    assert_eq!(view["has_password"], true);
    let listed = Api::new(berth.url()).send(Method::GET, "/api/v1/upstreams").await.text().await.unwrap();
    assert!(!listed.contains(&upstream_creds.password), "the password never comes back: {listed}");

    // skopeo copies the whole index out of the cache: every platform, every digest kept.
    let host = berth.host();
    let back = berth.scratch("back");
    clients.skopeo(&[
        "copy",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{host}/mirror/team/app:1"),
        &oci_ref(&back, "copied"),
    ]);
    assert_eq!(crate::fixtures::tagged_digest(&back, "copied").as_deref(), Some(index.digest.as_str()));
    for image in &index.images {
        for digest in image.blob_digests().into_iter().chain([image.manifest_digest.as_str()]) {
            let bytes = std::fs::read(blob_path(&back, digest)).unwrap_or_else(|e| panic!("{digest}: {e}"));
            assert_eq!(sha256(&bytes), digest, "every platform's content arrives intact");
        }
    }
    let raw = clients.inspect_raw(&format!("{host}/mirror/team/app:1"));
    assert!(raw == index.index, "the index is served as the upstream has it");
    // Docker schema 2 stays Docker schema 2, byte for byte.
    let berth_api = Api::new(berth.url());
    let up_api = Api::as_user(upstream.url(), Some(&upstream_creds));
    let r = manifest(&berth_api, "mirror/team/docker", "1").await;
    assert_eq!(header(&r, "content-type").as_deref(), Some("application/vnd.docker.distribution.manifest.v2+json"));
    let cached = r.bytes().await.unwrap();
    let original = manifest(&up_api, "team/docker", "1").await.bytes().await.unwrap();
    assert_eq!(cached, original);

    // What the cache holds obeys the project: anonymous callers get nothing of a private one.
    let anonymous = Api::anonymous(berth.url());
    assert_eq!(manifest(&anonymous, "mirror/team/app", "1").await.status(), StatusCode::UNAUTHORIZED);
    // An upstream 404 is a 404.
    assert_error(manifest(&berth_api, "mirror/team/app", "nope").await, StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        .await;
    // Nothing can be pushed into a proxy project, whoever asks.
    let refused = clients.skopeo_fails(&[
        "copy",
        "--dest-tls-verify=false",
        &oci_ref(&layout, "single"),
        &format!("docker://{host}/mirror/team/mine:1"),
    ]);
    assert!(refused.contains("proxy project"), "{refused}");
    let r = berth_api.send(Method::POST, "/v2/mirror/team/mine/blobs/uploads/").await;
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("upstream up"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_pulls_fetch_a_blob_once_tags_move_after_their_ttl_and_the_cache_outlives_its_upstream() {
    let mut upstream = Distribution::start(DistributionConfig::default());
    let berth = TestServer::start();
    let up = Api::anonymous(upstream.url());
    // An image with a 50 MB layer.
    let config = up.push_blob("team/big", br#"{"architecture":"amd64","os":"linux"}"#).await;
    let big = random_bytes(50 << 20);
    let layer = up.push_blob("team/big", &big).await;
    let body = crate::api::image_manifest(OCI_MANIFEST, (&config, 37), &[(&layer, big.len())], None);
    let first = sha256(&body);
    assert_eq!(up.put_manifest("team/big", "1", OCI_MANIFEST, &body).await.status(), StatusCode::CREATED);

    proxy_project(&berth.url(), "up", "cache", true, &upstream.url(), json!({ "tag_ttl_secs": 3 })).await;
    let api = Api::new(berth.url());
    assert_eq!(digest_of(&api, "cache/team/big", "1").await, first);

    // 8 clients at once, none cached yet: the upstream serves the layer once.
    let path = format!("/v2/cache/team/big/blobs/{layer}");
    let pulls: Vec<_> = (0..8)
        .map(|_| {
            let request = api.req(Method::GET, &path);
            tokio::spawn(async move {
                let r = request.send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                sha256(&r.bytes().await.unwrap())
            })
        })
        .collect();
    for pull in pulls {
        assert_eq!(pull.await.unwrap(), layer, "every client gets the verified bytes");
    }
    assert_eq!(upstream.served("GET", &format!("/blobs/{layer}")), 1, "one upstream GET for 8 first pulls");
    let r = api.send(Method::GET, &format!("/v2/cache/team/big/blobs/{config}")).await;
    assert_eq!(r.status(), StatusCode::OK);

    // The tag moves upstream: seen after its TTL, not before. (First a check renewed
    // now, whatever the pulls above took: past the TTL, a pull revalidates the tag.)
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(digest_of(&api, "cache/team/big", "1").await, first, "revalidated: unchanged upstream");
    let body2 = crate::api::image_manifest(OCI_MANIFEST, (&config, 37), &[], None);
    let second = sha256(&body2);
    assert_eq!(up.put_manifest("team/big", "1", OCI_MANIFEST, &body2).await.status(), StatusCode::CREATED);
    assert_eq!(digest_of(&api, "cache/team/big", "1").await, first, "within the TTL the cached tag is served");
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(digest_of(&api, "cache/team/big", "1").await, second, "after the TTL the tag is checked and moves");
    let heads = upstream.served("HEAD", "/manifests/1");
    assert_eq!(digest_of(&api, "cache/team/big", "1").await, second);
    assert_eq!(upstream.served("HEAD", "/manifests/1"), heads, "a fresh check is not repeated within the TTL");

    // The upstream goes away: everything cached still pulls, the tag marked stale.
    upstream.stop();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let r = manifest(&api, "cache/team/big", "1").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest").as_deref(), Some(second.as_str()));
    assert!(header(&r, "warning").is_some_and(|w| w.contains("stale") && w.contains("up")), "{:?}", r.headers());
    assert_eq!(digest_of(&api, "cache/team/big", &first).await, first, "by digest, forever");
    let r = api.send(Method::GET, &path).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    // What was never fetched cannot be served: a clear error naming the upstream.
    let r = api.send(Method::GET, "/v2/cache/team/other/manifests/1").await;
    let body = assert_error(r, StatusCode::SERVICE_UNAVAILABLE, "UNKNOWN").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("upstream up"), "{body}");
    // Each kind of answer is counted per upstream.
    let metrics = api.send(Method::GET, "/metrics").await.text().await.unwrap();
    for series in [
        r#"berth_proxy_pulls_total{upstream="up",kind="blob",source="upstream"} "#,
        r#"berth_proxy_pulls_total{upstream="up",kind="manifest",source="cache"} "#,
        r#"berth_proxy_pulls_total{upstream="up",kind="manifest",source="stale"} "#,
        r#"berth_proxy_pulls_total{upstream="up",kind="manifest",source="error"} "#,
    ] {
        assert!(metrics.lines().any(|l| l.starts_with(series)), "no {series} in:\n{metrics}");
    }
    upstream.start_again();
}

/// A private containerd: its own root, state and socket under `/tmp`.
struct Containerd {
    dir: tempfile::TempDir,
    child: Child,
}

impl Containerd {
    fn start() -> Containerd {
        require("containerd");
        require("ctr");
        let dir = tempfile::Builder::new().prefix("bc-").tempdir_in("/tmp").unwrap();
        let p = |name: &str| dir.path().join(name).display().to_string();
        let config = format!(
            "version = 2\nroot = \"{}\"\nstate = \"{}\"\n[grpc]\n  address = \"{}\"\n\
             [plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
            p("root"),
            p("state"),
            p("c.sock")
        );
        std::fs::write(p("config.toml"), config).unwrap();
        let child = Command::new("containerd")
            .args(["--config", &p("config.toml")])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(p("containerd.log")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !Path::new(&p("c.sock")).exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Containerd { dir, child }
    }

    fn ctr(&self, args: &[&str]) -> String {
        run(Command::new("ctr").args(["-a", &self.dir.path().join("c.sock").display().to_string()]).args(args))
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containerd_and_docker_pull_through_berth_as_a_mirror_without_a_prefix() {
    let upstream = Distribution::start(DistributionConfig::default());
    let berth = TestServer::start();
    let clients = Clients::new(&berth);
    // Real images (gzip'd tar layers, a config naming their diff ids) as Docker schema 2.
    let layout = berth.scratch("layout");
    oci_layout(&layout, "v1", &[2000, 3000]);
    let up = upstream.host();
    for target in ["team/app:1", "library/alpine:3"] {
        clients.skopeo(&[
            "copy",
            "--format",
            "v2s2",
            "--dest-tls-verify=false",
            &oci_ref(&layout, "v1"),
            &format!("docker://{up}/{target}"),
        ]);
    }
    let up_api = Api::anonymous(upstream.url());
    let app = digest_of(&up_api, "team/app", "1").await;
    let official = digest_of(&up_api, "library/alpine", "3").await;
    // Not the default upstream yet: containerd's requests reach it by their `ns` alone.
    proxy_project(&berth.url(), "hub", "hub", true, &upstream.url(), json!({ "short_names": true })).await;

    // containerd: `hosts.toml` names Berth as the mirror of the upstream's host; it adds
    // `?ns=<that host>` and Berth routes by it.
    let containerd = Containerd::start();
    let hosts = containerd.dir.path().join("hosts");
    std::fs::create_dir_all(hosts.join(upstream.host())).unwrap();
    std::fs::write(
        hosts.join(upstream.host()).join("hosts.toml"),
        format!(
            "server = \"{}\"\n[host.\"{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.url(),
            berth.url()
        ),
    )
    .unwrap();
    let hosts_dir = hosts.display().to_string();
    // Pulled and unpacked (the native snapshotter works on any filesystem).
    containerd.ctr(&[
        "images",
        "pull",
        "--snapshotter",
        "native",
        "--hosts-dir",
        &hosts_dir,
        &format!("{up}/team/app:1"),
    ]);
    let listed = containerd.ctr(&["images", "ls"]);
    assert!(listed.contains(&app), "ctr holds the upstream's digest: {listed}");
    let log = upstream.log();
    assert!(!log.contains("containerd/"), "containerd asked Berth, never the upstream:\n{log}");
    assert!(log.contains("berth/"), "Berth fetched it:\n{log}");
    let api = Api::new(berth.url());
    assert_eq!(digest_of(&api, "hub/team/app", "1").await, app, "cached in the proxy project");

    // Without `ns` and with no default upstream, a name is this registry's own.
    let anonymous = Api::anonymous(berth.url());
    assert_eq!(manifest(&anonymous, "library/alpine", "3").await.status(), StatusCode::NOT_FOUND);

    // The loopback registry now plays Docker Hub: the default upstream.
    let spec = json!({ "name": "hub", "url": upstream.url(), "project": "hub", "short_names": true, "default": true });
    let r = api.req(Method::PUT, "/api/v1/upstreams/hub").json(&spec).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    // docker: `registry-mirrors` sends Docker Hub pulls to Berth, without any prefix.
    let dockerd = Dockerd::start_with_config(&json!({
        "registry-mirrors": [berth.url()],
        "insecure-registries": [berth.host()],
    }));
    dockerd.run(&["pull", "alpine:3"]);
    let image = dockerd.inspect("alpine:3");
    let repo_digests = image["RepoDigests"].to_string();
    assert!(repo_digests.contains(&official), "docker keeps the upstream's digest: {repo_digests}");
    // No public registry is reachable here: the pull can only have come through Berth.
    assert!(!upstream.log().contains("\"docker/"), "docker asked Berth, never the upstream");
    assert_eq!(digest_of(&api, "hub/library/alpine", "3").await, official, "cached through the default upstream");
    // A local repository of the same name is served from here, never from the mirror.
    let (local, _) = api.push_image("team/local", "1", OCI_MANIFEST, 9).await;
    assert_eq!(digest_of(&Api::new(berth.url()), "team/local", "1").await, local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blob_cached_through_one_node_is_served_by_another_without_asking_the_upstream() {
    let upstream = Distribution::start(DistributionConfig::default());
    let up = Api::anonymous(upstream.url());
    let (digest, body) = up.push_image("team/app", "1", OCI_MANIFEST, 11).await;
    let manifest_json: Value = serde_json::from_slice(&body).unwrap();
    let layer = manifest_json["layers"][0]["digest"].as_str().unwrap().to_owned();
    let scale = ScaleOut::start();
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let nodes: Vec<_> = dirs.iter().map(|d| scale.spawn(d.path())).collect();
    let (a, b) = (Api::new(nodes[0].url()), Api::new(nodes[1].url()));
    proxy_project(&nodes[0].url(), "up", "cache", false, &upstream.url(), json!({})).await;

    assert_eq!(digest_of(&a, "cache/team/app", "1").await, digest);
    let r = a.send(Method::GET, &format!("/v2/cache/team/app/blobs/{layer}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    let served = |method: &str, suffix: &str| upstream.served(method, suffix);
    let (blob_gets, manifest_gets, heads) =
        (served("GET", &format!("/blobs/{layer}")), served("GET", "/manifests/1"), served("HEAD", "/manifests/1"));
    assert_eq!(blob_gets, 1);

    // Node B reads the upstreams within its refresh interval, then serves what A cached.
    tokio::time::sleep(berth_federation::REFRESH + Duration::from_secs(1)).await;
    assert_eq!(digest_of(&b, "cache/team/app", "1").await, digest);
    let r = b.send(Method::GET, &format!("/v2/cache/team/app/blobs/{layer}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    assert_eq!(served("GET", &format!("/blobs/{layer}")), blob_gets, "no upstream GET of the blob through B");
    assert_eq!(served("GET", "/manifests/1"), manifest_gets);
    assert_eq!(served("HEAD", "/manifests/1"), heads, "the tag's check is shared through the database");
    // B knows the project is a proxy project: it refuses a push there.
    let r = b.send(Method::POST, "/v2/cache/team/app/blobs/uploads/").await;
    assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_come_from_the_config_file_and_the_cli_and_their_passwords_never_come_back() {
    use crate::management::cli::{berth, stdout_of};
    let upstream = Distribution::start(DistributionConfig::default());
    let secrets = tempfile::tempdir().unwrap();
    let password_file = secrets.path().join("hub-token");
    std::fs::write(&password_file, "file-secret-31415\n").unwrap();
    let url = upstream.url();
    let entry = json!({
        "name": "hub", "url": url, "project": "library", "username": "u",
        "password_file": password_file.display().to_string(), "default": true,
    });
    let berth_server = TestServer::start_with(|config| {
        config.federation.upstreams = vec![entry.as_object().unwrap().clone()];
    });
    let api = Api::new(berth_server.url());
    let listed: Value = api.send(Method::GET, "/api/v1/upstreams").await.json().await.unwrap();
    assert_eq!(listed[0]["name"], "hub");
    assert_eq!(listed[0]["has_password"], true);
    assert_eq!(listed[0]["default"], true);
    assert!(!listed.to_string().contains("file-secret"), "{listed}");

    // The CLI: the password on standard input, never on the command line.
    let r = api.req(Method::POST, "/api/v1/projects").json(&json!({ "name": "ghcr" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let config = berth_server.scratch("cli");
    let admin = berth_server.admin();
    let remote = ["--url", &berth_server.url(), "--user", &admin.user, "--password", &admin.password];
    let mut add = berth(&config);
    add.args(["upstream", "add", "ghcr", &url, "--project", "ghcr", "--username", "bot", "--password-stdin"])
        .args(["--host", "ghcr.io", "--tag-ttl-secs", "60"])
        .args(remote);
    let added = crate::support::run_with_input(&mut add, "cli-secret-27182\n");
    assert!(added.contains("ghcr\tghcr\t") && added.contains("password stored"), "{added}");
    let list = stdout_of(berth(&config).args(["upstream", "list"]).args(remote));
    assert!(list.contains("hub\tlibrary\t") && list.contains("default") && list.contains("ghcr\tghcr"), "{list}");
    let shown: Value = api.send(Method::GET, "/api/v1/upstreams/ghcr").await.json().await.unwrap();
    assert_eq!(shown["hosts"], json!(["ghcr.io"]));
    assert_eq!(shown["tag_ttl_secs"], 60);
    let audit = api.send(Method::GET, "/api/v1/audit?operation=upstream.create").await.text().await.unwrap();
    assert!(audit.contains("ghcr") && !audit.contains("cli-secret"), "{audit}");
    assert!(
        stdout_of(berth(&config).args(["upstream", "remove", "ghcr"]).args(remote)).contains("removed upstream ghcr")
    );
    let r = api.send(Method::GET, "/api/v1/upstreams/ghcr").await;
    assert_error(r, StatusCode::NOT_FOUND, "NOT_FOUND").await;

    // A restart applies the file again: the upstream is replaced, not duplicated.
    let berth_server = berth_server.restart();
    let listed: Value = Api::new(berth_server.url()).send(Method::GET, "/api/v1/upstreams").await.json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_content_counts_toward_the_quota_and_retention_expires_what_is_not_pulled() {
    let upstream = Distribution::start(DistributionConfig::default());
    let up = Api::anonymous(upstream.url());
    let (old, _) = up.push_image("team/app", "old", OCI_MANIFEST, 21).await;
    let (new, _) = up.push_image("team/app", "new", OCI_MANIFEST, 22).await;
    let berth = TestServer::start_with(|c| c.jobs.pull_flush_interval = Duration::from_millis(200));
    proxy_project(&berth.url(), "up", "cache", false, &upstream.url(), json!({})).await;
    let api = Api::new(berth.url());
    let used = async || -> u64 {
        let p: Value = api.send(Method::GET, "/api/v1/projects/cache").await.json().await.unwrap();
        p["used_bytes"].as_u64().unwrap()
    };
    assert_eq!(used().await, 0);
    // Both images cached (manifests and their config and layer), `new` pulled last.
    for (tag, digest) in [("old", &old), ("new", &new)] {
        assert_eq!(&digest_of(&api, "cache/team/app", tag).await, digest);
        let m: Value = manifest(&api, "cache/team/app", tag).await.json().await.unwrap();
        for blob in [&m["config"]["digest"], &m["layers"][0]["digest"]] {
            let r = api.send(Method::GET, &format!("/v2/cache/team/app/blobs/{}", blob.as_str().unwrap())).await;
            assert_eq!(sha256(&r.bytes().await.unwrap()), blob.as_str().unwrap());
        }
    }
    // A fetched blob is recorded just after its last byte went out: polled, for at most 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    while used().await < 2000 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(used().await >= 2000, "the cached layers count toward the project's usage: {}", used().await);

    // "Delete cached images not pulled lately": keep the tag pulled last.
    let policy = json!({ "rules": [{ "keep": [{ "most_recently_pulled": 1 }], "delete_untagged": true }] });
    let r = api.req(Method::PUT, "/api/v1/projects/cache/retention").json(&policy).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    let deleted = loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = api.req(Method::POST, "/api/v1/projects/cache/retention/run").json(&json!({ "dry_run": true }));
        let report: Value = r.send().await.unwrap().json().await.unwrap();
        let tags: Vec<String> = report["repositories"][0]["deleted_tags"]
            .as_array()
            .map(|t| t.iter().map(|t| t["tag"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default();
        // Until the pull recorder has flushed, nothing counts as pulled.
        if tags == ["old"] || Instant::now() > deadline {
            break tags;
        }
    };
    assert_eq!(deleted, ["old"]);
    let r = api.req(Method::POST, "/api/v1/projects/cache/retention/run").json(&json!({ "dry_run": false }));
    assert_eq!(r.send().await.unwrap().status(), StatusCode::OK);
    let r = api.req(Method::GET, &format!("/api/v1/repositories/{}/artifacts", "cache%2Fteam%2Fapp"));
    let artifacts: Value = r.send().await.unwrap().json().await.unwrap();
    let tags_of =
        |digest: &str| artifacts.as_array().unwrap().iter().find(|a| a["digest"] == digest).map(|a| a["tags"].clone());
    // The manifest itself stays for the GC grace period (a client may be pushing an index).
    assert_eq!(tags_of(&old), Some(json!([])), "{artifacts}");
    assert_eq!(tags_of(&new), Some(json!(["new"])), "{artifacts}");
    // Expired from the cache, not from the upstream: the next pull fetches it again.
    assert_eq!(digest_of(&api, "cache/team/app", "old").await, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_berth_with_token_auth_is_an_upstream_through_the_docker_token_flow() {
    // The upstream: another Berth, its `team` project private, a robot that may only pull.
    let upstream = TestServer::start();
    let up_api = Api::new(upstream.url());
    let r = up_api.req(Method::POST, "/api/v1/projects").json(&json!({ "name": "team" })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (digest, _) = up_api.push_image("team/app", "1", OCI_MANIFEST, 31).await;
    let robot = json!({ "name": "puller", "grants": [{ "project": "team", "permissions": ["pull"] }] });
    let r = up_api.req(Method::POST, "/api/v1/projects/team/robots").json(&robot).send().await.unwrap();
    let status = r.status();
    let created: Value = r.json().await.unwrap();
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (user, secret) = (created["robot"]["name"].as_str().unwrap(), created["secret"].as_str().unwrap());

    let berth = TestServer::start();
    let spec = json!({ "username": user, "password": secret });
    proxy_project(&berth.url(), "peer", "peer", false, &upstream.url(), spec).await;
    let api = Api::new(berth.url());
    assert_eq!(digest_of(&api, "peer/team/app", "1").await, digest);
    let m: Value = manifest(&api, "peer/team/app", "1").await.json().await.unwrap();
    let layer = m["layers"][0]["digest"].as_str().unwrap();
    let r = api.send(Method::GET, &format!("/v2/peer/team/app/blobs/{layer}")).await;
    assert_eq!(sha256(&r.bytes().await.unwrap()), layer);
    // The upstream saw Berth's robot take tokens for the repository, and nothing else.
    let audit: Value = up_api.send(Method::GET, "/api/v1/audit?operation=token.issue").await.json().await.unwrap();
    assert!(audit.to_string().contains(user), "{audit}");

    // Wrong credentials: a clear error naming the upstream, nothing cached.
    let wrong =
        json!({ "name": "peer", "url": upstream.url(), "project": "peer", "username": user, "password": "wrong" });
    let r = api.req(Method::PUT, "/api/v1/upstreams/peer").json(&wrong).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = api.send(Method::GET, "/v2/peer/team/app/manifests/other").await;
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert!(body["errors"][0]["message"].as_str().unwrap().contains("upstream peer refused"), "{body}");
}
