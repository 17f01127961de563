//! Immutable tags and quotas over HTTP: the exact refusals (DENIED, naming the rule, or
//! giving the usage and the limit), their audit entries, and usage kept exact under
//! concurrent pushes of images that share layers. Runs on the embedded and the scale-out
//! stores (`BERTH_TEST_BACKEND`).

use std::time::Duration;

use berth_meta::AuditEvent;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::api::{Api, assert_error, image_manifest, random_bytes, sha256};
use crate::audit::Server;
use crate::management::cli::{berth, stdout_of};
use crate::support::admin;

const OCI: &str = "application/vnd.oci.image.manifest.v1+json";

/// Creates `project` through the management API, with a quota if given.
async fn create_project(api: &Api, project: &str, quota: Option<u64>) {
    let r = api
        .req(Method::POST, "/api/v1/projects")
        .json(&json!({ "name": project, "quota_bytes": quota }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
}

async fn project(api: &Api, project: &str) -> Value {
    let r = api.send(Method::GET, &format!("/api/v1/projects/{project}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.unwrap()
}

/// The first audit entry of `operation` on `resource` with `outcome`, waiting for the
/// writer to store it.
async fn audited(server: &Server, operation: &str, resource: &str, outcome: &str) -> AuditEvent {
    for _ in 0..100 {
        let found = server.log().await.into_iter().find(|r| {
            r.event.operation == operation
                && r.event.resource.as_deref() == Some(resource)
                && r.event.outcome == outcome
        });
        if let Some(record) = found {
            return record.event;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no audit entry {operation} on {resource} ({outcome})");
}

/// Asserts a DENIED with exactly `message`; returns the error's detail.
async fn assert_denied(r: reqwest::Response, message: &str) -> Value {
    let body = assert_error(r, StatusCode::FORBIDDEN, "DENIED").await;
    assert_eq!(body["errors"][0]["message"], message, "{body}");
    body["errors"][0]["detail"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_immutable_tag_cannot_move_nor_be_deleted_and_each_refusal_names_the_rule_and_is_audited() {
    let server = Server::start().await;
    let api = &server.api;
    create_project(api, "team", None).await;
    let r = api
        .req(Method::POST, "/api/v1/projects/team/immutable-rules")
        .json(&json!({ "pattern": "v*" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let rules: Value = api.send(Method::GET, "/api/v1/projects/team/immutable-rules").await.json().await.unwrap();
    assert_eq!(rules.as_array().unwrap().iter().map(|r| r["pattern"].clone()).collect::<Vec<_>>(), vec![json!("v*")]);
    let r = api
        .req(Method::POST, "/api/v1/projects/team/immutable-rules")
        .json(&json!({ "pattern": "v/*" }))
        .send()
        .await
        .unwrap();
    assert_error(r, StatusCode::BAD_REQUEST, "BAD_REQUEST").await;

    let (first, body) = api.push_image("team/app", "v1.0", OCI, 1).await;
    let message = r#"tag "v1.0" is immutable (rule "v*" of project "team")"#;
    // Pushing the same manifest under it again moves nothing.
    assert_eq!(api.put_manifest("team/app", "v1.0", OCI, &body).await.status(), StatusCode::CREATED);
    // Another image under it is refused, whole: the tag still names the first.
    let (_, other) = api.push_image("team/app", "latest", OCI, 2).await;
    let detail = assert_denied(api.put_manifest("team/app", "v1.0", OCI, &other).await, message).await;
    assert_eq!(detail, json!({ "tag": "v1.0", "rule": "v*", "project": "team" }));
    let r = api.send(Method::HEAD, "/v2/team/app/manifests/v1.0").await;
    assert_eq!(r.headers()["docker-content-digest"].to_str().unwrap(), first);
    // A tag outside the rule moves freely.
    assert_eq!(api.put_manifest("team/app", "latest", OCI, &body).await.status(), StatusCode::CREATED);

    assert_denied(api.send(Method::DELETE, "/v2/team/app/manifests/v1.0").await, message).await;
    assert_denied(api.send(Method::DELETE, &format!("/v2/team/app/manifests/{first}")).await, message).await;
    assert_eq!(api.send(Method::GET, "/v2/team/app/manifests/v1.0").await.status(), StatusCode::OK);

    for (operation, resource) in [
        ("manifest.push", "team/app:v1.0".to_owned()),
        ("tag.delete", "team/app:v1.0".to_owned()),
        ("manifest.delete", format!("team/app@{first}")),
    ] {
        let event = audited(&server, operation, &resource, "failure").await;
        assert_eq!((event.project.as_deref(), event.detail.as_deref()), (Some("team"), Some(message)), "{operation}");
        assert_eq!(event.actor.as_deref(), Some(berth::ADMIN));
    }

    // Without the rule, the tag goes.
    let r = api.send(Method::DELETE, "/api/v1/projects/team/immutable-rules/v%2A").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(api.send(Method::DELETE, "/v2/team/app/manifests/v1.0").await.status(), StatusCode::ACCEPTED);
    audited(&server, "immutable.remove", "v*", "success").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_counts_a_blob_once_refuses_past_the_limit_with_usage_and_limit_and_lowering_it_deletes_nothing() {
    let server = Server::start_with(|c| c.jobs.gc_grace = std::time::Duration::ZERO).await;
    let api = &server.api;
    create_project(api, "quota", Some(3000)).await;
    assert_eq!(
        (project(api, "quota").await["quota_bytes"].clone(), project(api, "quota").await["used_bytes"].clone()),
        (json!(3000), json!(0))
    );

    let shared = random_bytes(2000, 1);
    let digest = api.push_blob("quota/a", &shared).await;
    // The same blob in another repository of the project costs nothing more.
    api.push_blob("quota/b", &shared).await;
    assert_eq!(project(api, "quota").await["used_bytes"], 2000);

    let more = random_bytes(2000, 2);
    let location = api.start_upload("quota/a").await;
    let r =
        api.req(Method::PUT, &format!("{location}?digest={}", sha256(&more))).body(more.clone()).send().await.unwrap();
    let message = r#"quota exceeded for project "quota": 2.0 KiB used + 2.0 KiB > 2.9 KiB limit"#;
    let detail = assert_denied(r, message).await;
    assert_eq!(detail, json!({ "project": "quota", "used": 2000, "size": 2000, "limit": 3000 }));
    assert_eq!(
        api.send(Method::HEAD, &format!("/v2/quota/a/blobs/{}", sha256(&more))).await.status(),
        StatusCode::NOT_FOUND
    );
    let refusal = audited(&server, "blob.push", &format!("quota/a@{}", sha256(&more)), "failure").await;
    assert_eq!(refusal.detail.as_deref(), Some(message));
    assert_eq!(project(api, "quota").await["used_bytes"], 2000);

    // Lowered under the usage: nothing goes, the next manifest is refused.
    let r =
        api.req(Method::PATCH, "/api/v1/projects/quota").json(&json!({ "quota_bytes": 1000 })).send().await.unwrap();
    let view: Value = r.json().await.unwrap();
    assert_eq!((view["quota_bytes"].clone(), view["used_bytes"].clone()), (json!(1000), json!(2000)));
    assert_eq!(api.send(Method::GET, &format!("/v2/quota/b/blobs/{digest}")).await.bytes().await.unwrap(), shared);
    let body = image_manifest(OCI, (&digest, 2000), &[], None);
    let message = r#"quota exceeded for project "quota": 2.0 KiB used > 1000 B limit"#;
    assert_denied(api.put_manifest("quota/a", "v1", OCI, &body).await, message).await;
    let refusal = audited(&server, "manifest.push", "quota/a:v1", "failure").await;
    assert_eq!(refusal.detail.as_deref(), Some(message));
    let change = audited(&server, "project.update", "quota", "success").await;
    assert_eq!(change.detail.as_deref(), Some("quota=1000"));

    // Cleared: unlimited again.
    let r =
        api.req(Method::PATCH, "/api/v1/projects/quota").json(&json!({ "quota_bytes": null })).send().await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["quota_bytes"], Value::Null);
    assert_eq!(api.put_manifest("quota/a", "v1", OCI, &body).await.status(), StatusCode::CREATED);

    // The refused blob's bytes were stored before the refusal: they are recorded for
    // review and go with the next incremental collection, not only with a full sweep.
    assert_eq!(server.storage().blobs().await.len(), 2, "the shared blob and the refused one");
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let r = api.req(Method::POST, "/api/v1/gc").json(&json!({ "full": false })).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let run: Value = r.json().await.unwrap();
    assert_eq!((run["run"]["blobs_removed"].clone(), run["run"]["bytes_freed"].clone()), (json!(1), json!(2000)));
    assert_eq!(server.storage().blobs().await.len(), 1);
    assert_eq!(api.send(Method::GET, &format!("/v2/quota/a/blobs/{digest}")).await.bytes().await.unwrap(), shared);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_is_exact_after_concurrent_pushes_of_images_sharing_layers_into_two_repositories() {
    let server = Server::start().await;
    let api = &server.api;
    // A quota large enough for all: every link takes the quota check's path.
    create_project(api, "busy", Some(1 << 30)).await;
    let shared: Vec<Vec<u8>> = (0..3).map(|i| random_bytes(3000 + i * 100, 100 + i as u64)).collect();
    let own: Vec<Vec<u8>> = (0..8).map(|i| random_bytes(1000 + i * 10, 200 + i as u64)).collect();
    let pushes = (0..8).map(|i| {
        let (api, shared, layer) = (Api::new(api.base.clone()), shared.clone(), own[i].clone());
        tokio::spawn(async move {
            let repo = if i % 2 == 0 { "busy/one" } else { "busy/two" };
            let mut layers = Vec::new();
            for bytes in shared.iter().chain([&layer]) {
                layers.push((api.push_blob(repo, bytes).await, bytes.len()));
            }
            let config = api.push_blob(repo, format!("{{\"image\":{i}}}").as_bytes()).await;
            let refs: Vec<(&str, usize)> = layers.iter().map(|(d, s)| (d.as_str(), *s)).collect();
            let body = image_manifest(OCI, (&config, 11 + i.to_string().len()), &refs, None);
            let r = api.put_manifest(repo, &format!("i{i}"), OCI, &body).await;
            assert_eq!(r.status(), StatusCode::CREATED);
        })
    });
    for push in futures_util::future::join_all(pushes).await {
        push.unwrap();
    }
    let configs: usize = (0..8).map(|i| format!("{{\"image\":{i}}}").len()).sum();
    let expected = shared.iter().chain(&own).map(Vec::len).sum::<usize>() + configs;
    assert_eq!(project(api, "busy").await["used_bytes"], expected as u64);

    // Unlinking from one repository keeps what the other still holds.
    let layer = sha256(&shared[0]);
    assert_eq!(api.send(Method::DELETE, &format!("/v2/busy/one/blobs/{layer}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(project(api, "busy").await["used_bytes"], expected as u64);
    assert_eq!(api.send(Method::DELETE, &format!("/v2/busy/two/blobs/{layer}")).await.status(), StatusCode::ACCEPTED);
    assert_eq!(project(api, "busy").await["used_bytes"], (expected - shared[0].len()) as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn berth_project_immutable_and_quota_manage_rules_and_limits_on_a_running_server() {
    let server = Server::start().await;
    let api = &server.api;
    create_project(api, "cli", None).await;
    let config = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        stdout_of(
            berth(config.path())
                .args(args)
                .args(["--url", &api.base, "--user", berth::ADMIN])
                .env("BERTH_PASSWORD", admin().password),
        )
    };
    assert_eq!(
        cli(&["project", "immutable", "add", "cli", "release-*"]),
        "tags matching release-* are immutable in cli\n"
    );
    assert_eq!(cli(&["project", "immutable", "list", "cli"]), "release-*\n");
    api.push_image("cli/app", "release-1", OCI, 1).await;
    let (_, other) = api.push_image("cli/app", "dev", OCI, 2).await;
    let message = r#"tag "release-1" is immutable (rule "release-*" of project "cli")"#;
    assert_denied(api.put_manifest("cli/app", "release-1", OCI, &other).await, message).await;
    assert_eq!(
        cli(&["project", "immutable", "rm", "cli", "release-*"]),
        "removed the immutable rule release-* of cli\n"
    );
    assert_eq!(cli(&["project", "immutable", "list", "cli"]), "");
    assert_eq!(api.put_manifest("cli/app", "release-1", OCI, &other).await.status(), StatusCode::CREATED);

    let used = project(api, "cli").await["used_bytes"].as_u64().unwrap();
    assert!(used > 2000, "two images' blobs: {used}");
    assert_eq!(cli(&["project", "quota", "cli", "10MiB"]), format!("cli: {used} of 10485760 bytes used\n"));
    assert_eq!(project(api, "cli").await["quota_bytes"], 10 << 20);
    assert_eq!(cli(&["project", "quota", "cli", "none"]), format!("cli: {used} bytes used, no quota\n"));
    assert_eq!(project(api, "cli").await["quota_bytes"], Value::Null);
}
