//! Replication against real destinations: Debian's `docker-registry` (distribution 2.8)
//! with htpasswd Basic auth, and a second Berth (token auth: its challenge sends the
//! client to its `/token`). Images go in with skopeo (an OCI index with two platforms),
//! a cosign-style signature as an OCI 1.1 referrer; what arrives is checked byte for
//! byte by digest, through each destination's own API.

use std::time::{Duration, Instant};

use berth_testkit::{Distribution, DistributionConfig};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, sha256};
use crate::clients_skopeo_podman::{Clients, oci_ref};
use crate::fixtures::{ImageIndex, Platform, oci_index_layout};
use crate::management::Mgmt;
use crate::support::{Creds, TestServer, admin};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const ACCEPT_ANY: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, \
    application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";

/// The bytes and media type of `name@reference` at `api`'s registry, if it has it.
async fn fetch(api: &Api, name: &str, reference: &str) -> Option<(String, Vec<u8>)> {
    let r = api
        .req(Method::GET, &format!("/v2/{name}/manifests/{reference}"))
        .header("accept", ACCEPT_ANY)
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return None;
    }
    assert_eq!(r.status(), StatusCode::OK, "{name}:{reference}");
    let media_type = r.headers()["content-type"].to_str().unwrap().to_owned();
    Some((media_type, r.bytes().await.unwrap().to_vec()))
}

/// Waits up to `within` for `check` to hold.
async fn until<F: AsyncFn() -> bool>(what: &str, within: Duration, check: F) {
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// An index with two platforms at `berth`'s `repo:tag` (pushed by skopeo), and a
/// signature for it (an OCI 1.1 referrer, pushed by digest); returns both.
async fn push_signed_index(berth: &TestServer, repo: &str, tag: &str) -> (ImageIndex, String) {
    let layout = berth.scratch(&format!("layout-{tag}"));
    let index = oci_index_layout(&layout, tag, &[Platform::LINUX_AMD64, Platform::LINUX_ARM64], &[3000, 70_000]);
    Clients::new(berth).skopeo(&[
        "copy",
        "--all",
        "--dest-tls-verify=false",
        &oci_ref(&layout, tag),
        &format!("docker://{}/{repo}:{tag}", berth.host()),
    ]);
    let api = Api::new(berth.url());
    let empty = api.push_blob(repo, b"{}").await;
    let payload = format!(r#"{{"critical":{{"image":{{"docker-manifest-digest":"{}"}}}}}}"#, index.digest);
    let layer = api.push_blob(repo, payload.as_bytes()).await;
    let signature = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.dev.cosign.artifact.sig.v1+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2 },
        "layers": [{ "mediaType": "application/vnd.dev.cosign.simplesigning.v1+json", "digest": layer,
            "size": payload.len() }],
        "subject": { "mediaType": OCI_INDEX, "digest": index.digest, "size": index.index.len() },
    }))
    .unwrap();
    let digest = sha256(&signature);
    let r = api.put_manifest(repo, &digest, OCI_MANIFEST, &signature).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{}", r.text().await.unwrap());
    (index, digest)
}

/// Everything of `index` and its signature is at `dest` under `repo`, byte for byte, and
/// `tag` names the index.
async fn assert_arrived(dest: &Api, repo: &str, tag: &str, index: &ImageIndex, signature: &str) {
    let (media_type, body) = fetch(dest, repo, tag).await.expect("the tag arrived");
    assert_eq!((media_type.as_str(), sha256(&body)), (OCI_INDEX, index.digest.clone()), "{repo}:{tag}");
    for image in &index.images {
        let (_, body) = fetch(dest, repo, &image.manifest_digest).await.expect("each platform arrived");
        assert_eq!(body, image.manifest);
        for blob in image.blob_digests() {
            let r = dest.send(Method::GET, &format!("/v2/{repo}/blobs/{blob}")).await;
            assert_eq!(r.status(), StatusCode::OK, "{repo}@{blob}");
            assert_eq!(sha256(&r.bytes().await.unwrap()), blob);
        }
    }
    let (_, body) = fetch(dest, repo, signature).await.expect("the signature arrived");
    assert_eq!(sha256(&body), signature);
}

async fn registry(mgmt: &Mgmt, name: &str, url: &str, creds: &Creds) -> Value {
    let spec = json!({ "name": name, "url": url, "username": creds.user, "password": creds.password });
    mgmt.expect(StatusCode::CREATED, Method::POST, "/replication/registries", Some(spec)).await
}

async fn rule(mgmt: &Mgmt, spec: Value) -> Value {
    mgmt.expect(StatusCode::CREATED, Method::POST, "/replication/rules", Some(spec)).await
}

/// The executions of `rule`, once none is running and their tasks add up to at least
/// `tasks`, all succeeded.
async fn finished(mgmt: &Mgmt, rule: &str, tasks: u64) -> Vec<Value> {
    let path = format!("/replication/executions?rule={rule}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = mgmt.expect(StatusCode::OK, Method::GET, &path, None).await;
        let list = all.as_array().unwrap().clone();
        let total: u64 = list.iter().map(|e| e["total"].as_u64().unwrap()).sum();
        if total >= tasks && list.iter().all(|e| e["state"] != "running") {
            for e in &list {
                assert_eq!(e["state"], "succeeded", "{e}");
            }
            return list;
        }
        assert!(Instant::now() < deadline, "rule {rule}: executions not done: {all}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_rule_copies_each_push_with_its_platforms_and_signature_to_distribution_and_to_a_second_berth() {
    let dr_creds = Creds::new("replicator", "destination-secret-31415");
    let dr = Distribution::start(DistributionConfig {
        basic: Some((dr_creds.user.clone(), dr_creds.password.clone())),
        ..Default::default()
    });
    let second = TestServer::start();
    let source = TestServer::start_with(|c| c.webhooks.allow_private = true);
    let mgmt = Mgmt::new(&source, Some(&admin()));
    for server in [&source, &second] {
        let m = Mgmt::new(server, Some(&admin()));
        m.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" }))).await;
    }
    // The project's webhook hears of every finished execution.
    let (receiver, url) = crate::webhooks::Receiver::start().await;
    let hook = json!({ "name": "repl", "url": url, "events": ["replication.finished"], "format": "cloudevents" });
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects/team/webhooks", Some(hook)).await;
    let view = registry(&mgmt, "dr", &dr.url(), &dr_creds).await;
    assert_eq!((view["has_password"].clone(), view.get("password")), (json!(true), None));
    registry(&mgmt, "second", &second.url(), &admin()).await;
    rule(&mgmt, json!({ "name": "to-dr", "registry": "dr", "project": "team" })).await;
    // To the second Berth under another project name; only release tags.
    let moved = json!({ "name": "to-second", "registry": "second", "project": "team", "tags": ["v*"],
        "destination_namespace": "prod" });
    Mgmt::new(&second, Some(&admin()))
        .expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "prod" })))
        .await;
    rule(&mgmt, moved).await;

    let (index, signature) = push_signed_index(&source, "team/app", "v1").await;
    let dr_api = Api::as_user(dr.url(), Some(&dr_creds));
    let second_api = Api::new(second.url());
    // The tag goes last; the signature may come with it or after it, on its own.
    until("the image and its signature at distribution", Duration::from_secs(60), async || {
        fetch(&dr_api, "team/app", &signature).await.is_some() && fetch(&dr_api, "team/app", "v1").await.is_some()
    })
    .await;
    until("the image and its signature at the second Berth", Duration::from_secs(60), async || {
        fetch(&second_api, "prod/app", &signature).await.is_some()
            && fetch(&second_api, "prod/app", "v1").await.is_some()
    })
    .await;
    assert_arrived(&dr_api, "team/app", "v1", &index, &signature).await;
    assert_arrived(&second_api, "prod/app", "v1", &index, &signature).await;
    // The second Berth lists the signature as a referrer of the index, as the source does.
    let r = second_api.send(Method::GET, &format!("/v2/prod/app/referrers/{}", index.digest)).await;
    let referrers: Value = r.json().await.unwrap();
    let listed: Vec<&str> =
        referrers["manifests"].as_array().unwrap().iter().map(|m| m["digest"].as_str().unwrap()).collect();
    assert_eq!(listed, [signature.as_str()]);

    // A tag the second rule leaves out goes to distribution only.
    let (dev, _) = push_signed_index(&source, "team/app", "dev").await;
    until("dev at distribution", Duration::from_secs(60), async || fetch(&dr_api, "team/app", "dev").await.is_some())
        .await;
    assert_eq!(sha256(&fetch(&dr_api, "team/app", "dev").await.unwrap().1), dev.digest);
    let executions = finished(&mgmt, "to-dr", 4).await;
    assert!(executions.iter().all(|e| e["trigger"] == "event"), "{executions:?}");
    finished(&mgmt, "to-second", 1).await;
    assert!(fetch(&second_api, "prod/app", "dev").await.is_none(), "dev matches no tag filter of to-second");
    for image in &dev.images {
        let child = fetch(&second_api, "prod/app", &image.manifest_digest).await;
        assert!(child.is_none(), "an untagged child goes with its index, or not at all");
    }

    // Each execution lists its artifacts; what was sent adds up.
    let id = executions.last().unwrap()["id"].as_i64().unwrap();
    let tasks = mgmt.expect(StatusCode::OK, Method::GET, &format!("/replication/executions/{id}/tasks"), None).await;
    assert!(tasks.as_array().unwrap().iter().all(|t| t["state"] == "succeeded" && t["op"] == "copy"), "{tasks}");
    let bytes: u64 = executions.iter().map(|e| e["bytes"].as_u64().unwrap()).sum();
    assert!(bytes >= 73_000, "{bytes} bytes sent for indexes of 73 kB layers");

    // Each finished execution was announced, with what it did.
    let announced = receiver.delivered("replication.finished", 2, Duration::from_secs(20)).await;
    let events: Vec<Value> = announced.iter().map(|r| r.json()).collect();
    for event in &events {
        assert_eq!(event["type"], "io.berth.replication.finished");
        assert_eq!(event["source"], "/api/v1/projects/team");
        assert_eq!(event["data"]["state"], "succeeded", "{event}");
    }
    assert!(events.iter().any(|e| e["data"]["rule"] == "to-second" && e["subject"] == "replication/rules/to-second"));

    // The password never comes back, and the audit log has the changes.
    for seen in mgmt.seen.borrow().iter() {
        assert!(!seen.contains(&dr_creds.password), "{seen}");
    }
    let audit = mgmt.expect(StatusCode::OK, Method::GET, "/audit?operation=replication.", None).await;
    assert_eq!(audit.as_array().unwrap().len(), 4, "{audit}");
    assert!(audit.to_string().contains("replication.rule.create"), "{audit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_down_for_a_while_gets_the_image_once_it_is_back_and_a_manual_run_copies_what_matches() {
    let dr_creds = Creds::new("replicator", "destination-secret-27182");
    let mut dr = Distribution::start(DistributionConfig {
        basic: Some((dr_creds.user.clone(), dr_creds.password.clone())),
        ..Default::default()
    });
    let source = TestServer::start();
    let mgmt = Mgmt::new(&source, Some(&admin()));
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" }))).await;
    registry(&mgmt, "dr", &dr.url(), &dr_creds).await;
    rule(&mgmt, json!({ "name": "live", "registry": "dr", "project": "team", "repositories": ["team/live*"] })).await;

    dr.stop();
    let (index, signature) = push_signed_index(&source, "team/live", "v1").await;
    // The copy fails while the destination is down, and is tried again.
    until("a failed attempt", Duration::from_secs(30), async || {
        let all = mgmt.expect(StatusCode::OK, Method::GET, "/replication/executions?rule=live", None).await;
        for e in all.as_array().unwrap() {
            let path = format!("/replication/executions/{}/tasks", e["id"]);
            let tasks = mgmt.expect(StatusCode::OK, Method::GET, &path, None).await;
            if tasks.as_array().unwrap().iter().any(|t| t["state"] == "pending" && t["attempts"].as_u64() >= Some(1)) {
                assert!(tasks.to_string().contains("unreachable"), "{tasks}");
                return true;
            }
        }
        false
    })
    .await;
    dr.start_again();
    let dr_api = Api::as_user(dr.url(), Some(&dr_creds));
    until("the image after the outage", Duration::from_secs(60), async || {
        fetch(&dr_api, "team/live", &signature).await.is_some() && fetch(&dr_api, "team/live", "v1").await.is_some()
    })
    .await;
    assert_arrived(&dr_api, "team/live", "v1", &index, &signature).await;

    // A rule that copies nothing by itself: a manual run copies the tags it matches, with
    // their signatures, and nothing else.
    let (old, old_signature) = push_signed_index(&source, "team/old", "release-1").await;
    push_signed_index(&source, "team/old", "scratch").await;
    let manual = json!({ "name": "backfill", "registry": "dr", "project": "team", "on_event": false,
        "repositories": ["team/old"], "tag_regex": "release-[0-9]+" });
    rule(&mgmt, manual).await;
    // Through the CLI, which waits for the execution and says how it went.
    let out = tokio::task::spawn_blocking({
        let (url, dir) = (source.url(), source.scratch("cli"));
        move || {
            crate::support::run(
                std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
                    .args(["replication", "run", "backfill", "--wait", "--url", &url, "--user", "admin"])
                    .env("BERTH_PASSWORD", admin().password)
                    .env("BERTH_CONFIG_DIR", dir),
            )
        }
    })
    .await
    .unwrap();
    assert!(out.contains("\tbackfill\tmanual\tsucceeded\t1/1 succeeded"), "{out}");
    let executions = finished(&mgmt, "backfill", 1).await;
    assert_eq!((executions.len(), executions[0]["total"].as_u64()), (1, Some(1)), "{executions:?}");
    assert_arrived(&dr_api, "team/old", "release-1", &old, &old_signature).await;
    assert!(fetch(&dr_api, "team/old", "scratch").await.is_none());
    let r = dr_api.send(Method::GET, "/v2/team/old/tags/list").await;
    let tags: Value = r.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["release-1"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_killed_mid_copy_resumes_after_a_restart_and_the_destination_gets_every_artifact_once() {
    const LAYER: usize = 8 << 20;
    let dr = Distribution::start(DistributionConfig::default());
    let backend = crate::support::Backend::from_env();
    let data = tempfile::tempdir().unwrap();
    let source = backend.spawn(data.path());
    let mgmt = Mgmt::at(source.url(), Some(&admin()));
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "big" }))).await;
    let spec = json!({ "name": "dr", "url": dr.url() });
    mgmt.expect(StatusCode::CREATED, Method::POST, "/replication/registries", Some(spec)).await;
    // 4 MB/s: the three 8 MiB layers take about six seconds, in 4 MiB chunks.
    let slow = json!({ "name": "slow", "registry": "dr", "project": "big", "concurrency": 1,
        "bandwidth_bytes_per_sec": 4_000_000 });
    rule(&mgmt, slow).await;

    let api = Api::new(source.url());
    let config = api.push_blob("big/app", br#"{"architecture":"amd64","os":"linux"}"#).await;
    let mut layers = Vec::new();
    for seed in 0..3 {
        layers.push(api.push_blob("big/app", &crate::api::random_bytes(LAYER, 900 + seed)).await);
    }
    let refs: Vec<(&str, usize)> = layers.iter().map(|d| (d.as_str(), LAYER)).collect();
    let manifest = crate::api::image_manifest(OCI_MANIFEST, (&config, 37), &refs, None);
    let r = api.put_manifest("big/app", "1.0", OCI_MANIFEST, &manifest).await;
    assert_eq!(r.status(), StatusCode::CREATED);

    // Killed once the first layer is there and before the last is.
    // The closing PUT of its upload, answered 201 (the query's `:` is percent-encoded).
    let uploaded = |digest: &str| {
        let hex = digest.trim_start_matches("sha256:");
        dr.log().lines().any(|l| l.contains("\"PUT ") && l.contains(hex) && l.contains("\" 201 "))
    };
    let waited = Instant::now();
    while !uploaded(&layers[0]) {
        assert!(waited.elapsed() < Duration::from_secs(30), "no upload:\n{}", dr.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!uploaded(&layers[2]), "the copy was over before the kill");
    source.kill9();

    let source = backend.spawn(data.path());
    let mgmt = Mgmt::at(source.url(), Some(&admin()));
    let dr_api = Api::anonymous(dr.url());
    // The dead node's claim runs out, and the copy goes on from what the destination has.
    until("the image after the restart", Duration::from_secs(120), async || {
        fetch(&dr_api, "big/app", "1.0").await.is_some()
    })
    .await;
    let (_, body) = fetch(&dr_api, "big/app", "1.0").await.unwrap();
    assert_eq!(body, manifest);
    for digest in layers.iter().chain([&config]) {
        let r = dr_api.send(Method::GET, &format!("/v2/big/app/blobs/{digest}")).await;
        assert_eq!(sha256(&r.bytes().await.unwrap()), *digest);
    }
    let executions = finished(&mgmt, "slow", 1).await;
    assert_eq!(executions.len(), 1, "{executions:?}");
    assert_eq!((executions[0]["succeeded"].as_u64(), executions[0]["failed"].as_u64()), (Some(1), Some(0)));
    let sent = executions[0]["bytes"].as_u64().unwrap();
    assert!(sent < 3 * LAYER as u64, "the restarted copy skipped what had arrived: {sent} bytes");
    let tags: Value = dr_api.send(Method::GET, "/v2/big/app/tags/list").await.json().await.unwrap();
    assert_eq!(tags["tags"], json!(["1.0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_rule_on_a_schedule_brings_an_index_and_its_signature_from_another_berth() {
    let other = TestServer::start();
    Mgmt::new(&other, Some(&admin()))
        .expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" })))
        .await;
    let (index, signature) = push_signed_index(&other, "team/app", "v1").await;
    push_signed_index(&other, "team/app", "nightly").await;

    let local = TestServer::start();
    let mgmt = Mgmt::new(&local, Some(&admin()));
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "mirror" }))).await;
    registry(&mgmt, "other", &other.url(), &admin()).await;
    // Every two seconds (a leading seconds field), the release tags of team/app.
    let pull = json!({ "name": "from-other", "registry": "other", "direction": "pull", "project": "mirror",
        "repositories": ["team/app"], "tags": ["v*"], "cron": "*/2 * * * * *" });
    let view = rule(&mgmt, pull).await;
    assert_eq!((view["direction"].as_str(), view["on_event"].as_bool()), (Some("pull"), Some(false)), "{view}");

    let api = Api::new(local.url());
    // Tags last: once the tag is here, so is all it names.
    until("the pulled index", Duration::from_secs(30), async || fetch(&api, "mirror/team/app", "v1").await.is_some())
        .await;
    assert_arrived(&api, "mirror/team/app", "v1", &index, &signature).await;
    // The signature is a referrer of the index here too.
    let r = api.send(Method::GET, &format!("/v2/mirror/team/app/referrers/{}", index.digest)).await;
    let referrers: Value = r.json().await.unwrap();
    assert_eq!(referrers["manifests"][0]["digest"], signature.as_str(), "{referrers}");
    assert!(fetch(&api, "mirror/team/app", "nightly").await.is_none(), "no tag filter matches nightly");
    // The schedule keeps running; what is here already is not fetched again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let executions = finished(&mgmt, "from-other", 1).await;
    assert!(executions.len() >= 2 && executions.iter().all(|e| e["trigger"] == "schedule"), "{executions:?}");
    assert_eq!(executions[0]["bytes"], 0, "a later run finds everything here: {executions:?}");
    let rule_now = mgmt.expect(StatusCode::OK, Method::GET, "/replication/rules/from-other", None).await;
    assert!(rule_now["next_run_ms"].as_i64().unwrap() > executions[0]["started_ms"].as_i64().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_that_propagates_deletes_removes_a_deleted_manifest_at_the_destination_and_one_that_does_not_keeps_it() {
    let keep_dr = Distribution::start(DistributionConfig::default());
    let mirror_dr = Distribution::start(DistributionConfig::default());
    let source = TestServer::start();
    let mgmt = Mgmt::new(&source, Some(&admin()));
    mgmt.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({ "name": "team" }))).await;
    for (name, dr) in [("keep", &keep_dr), ("mirror", &mirror_dr)] {
        let spec = json!({ "name": name, "url": dr.url() });
        mgmt.expect(StatusCode::CREATED, Method::POST, "/replication/registries", Some(spec)).await;
    }
    rule(&mgmt, json!({ "name": "keeps", "registry": "keep", "project": "team" })).await;
    rule(&mgmt, json!({ "name": "mirrors", "registry": "mirror", "project": "team", "deletes": true })).await;
    let api = Api::new(source.url());
    let (digest, _) = api.push_image("team/app", "1.0", OCI_MANIFEST, 77).await;
    let (keep, mirror) = (Api::anonymous(keep_dr.url()), Api::anonymous(mirror_dr.url()));
    until("the image at both", Duration::from_secs(30), async || {
        fetch(&keep, "team/app", "1.0").await.is_some() && fetch(&mirror, "team/app", "1.0").await.is_some()
    })
    .await;

    // Another repository with the same layer: the layer is mounted there from team/app,
    // not sent again.
    let layer_bytes = crate::api::random_bytes(1000, 77);
    let layer = api.push_blob("team/other", &layer_bytes).await;
    let config = api.push_blob("team/other", b"{\"other\":1}").await;
    let other = crate::api::image_manifest(OCI_MANIFEST, (&config, 11), &[(&layer, 1000)], None);
    assert_eq!(api.put_manifest("team/other", "1.0", OCI_MANIFEST, &other).await.status(), StatusCode::CREATED);
    until("team/other at the mirror", Duration::from_secs(30), async || {
        fetch(&mirror, "team/other", "1.0").await.is_some()
    })
    .await;
    let hex = layer.trim_start_matches("sha256:");
    let mounted = mirror_dr.log().lines().any(|l| {
        l.contains("\"POST /v2/team/other/blobs/uploads/?")
            && l.contains("mount=")
            && l.contains(hex)
            && l.contains("\" 201 ")
    });
    assert!(mounted, "no mount of {layer} from team/app:\n{}", mirror_dr.log());

    let r = api.send(Method::DELETE, &format!("/v2/team/app/manifests/{digest}")).await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    until("the delete at the mirror", Duration::from_secs(30), async || {
        fetch(&mirror, "team/app", &digest).await.is_none()
    })
    .await;
    let executions = finished(&mgmt, "mirrors", 2).await;
    let last = executions[0]["id"].as_i64().unwrap();
    let tasks = mgmt.expect(StatusCode::OK, Method::GET, &format!("/replication/executions/{last}/tasks"), None).await;
    assert_eq!(tasks[0]["op"], "delete", "{tasks}");
    finished(&mgmt, "keeps", 1).await;
    assert!(fetch(&keep, "team/app", &digest).await.is_some(), "a rule without deletes keeps what it copied");
}
