//! Real clients logging in: podman (`podman login` into a private auth file), skopeo
//! (`--dest-creds` / `--src-creds`, as the admin, as a project's developer and as its
//! robot), and what a client without credentials may do: pull from the public project
//! `library`, and nothing else.
//!
//! Every other client test authenticates too (an auth file holding the admin's
//! credentials; `docker login` in `clients_docker.rs`; oras-py's token backend in
//! `clients_oras.rs`); these tests are about the login itself and the anonymous caller.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::api::{Api, assert_error, header};
use crate::clients_skopeo_podman::{Clients, assert_serves_manifest, hex, lowercase_dir, oci_ref};
use crate::fixtures::{OCI_MANIFEST, oci_layout, sha256_digest};
use crate::management::Mgmt;
use crate::support::{Creds, TestServer, admin, run_with_input};

/// The challenge Berth answers an anonymous request for `scope` with (the service's
/// default name, the realm at the server's own address).
fn challenge(server: &TestServer, scope: &str) -> String {
    format!(r#"Bearer realm="{}/token",service="berth",scope="{scope}""#, server.url())
}

#[test]
fn podman_login_then_push_and_pull_a_private_project() {
    let server = TestServer::start();
    let host = server.host();
    let clients = Clients::logged_out(&server);
    let policy = clients.policy();
    let layout = lowercase_dir();
    let image = oci_layout(layout.path(), "v1", &[200_000, 3_000]);
    clients.podman(&["pull", "-q", "--signature-policy", &policy, &oci_ref(layout.path(), "v1")]);

    let admin = server.admin();
    let authfile = podman_login(&clients, &host, &admin, "login.json");

    // Pushed into `team`, which the admin's push creates (private).
    let remote = format!("{host}/team/podman:v1");
    let pushed = clients.path("pushed.digest");
    let auth = ["--tls-verify=false", "--signature-policy", &policy, "--authfile", &authfile];
    let push = [&["push", "-q", "--digestfile", &pushed][..], &auth, &[hex(&image.config_digest), &remote]].concat();
    clients.podman(&push);
    let pushed = std::fs::read_to_string(&pushed).unwrap();
    let creds = admin.pair();
    let served =
        clients.skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &format!("docker://{remote}")]);
    assert_eq!(sha256_digest(served.as_bytes()), pushed, "the digest podman reports is the served manifest's");
    let manifest: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(manifest["config"]["digest"], image.config_digest);

    clients.podman(&["rmi", "-a", "-f"]);
    let pulled = clients.podman(&[&["pull", "-q"][..], &auth, &[&remote]].concat());
    assert_eq!(pulled.trim(), hex(&image.config_digest));
}

/// `podman login` as `creds`: it checks the credentials against the registry and writes
/// them into the auth file `name` under the clients' directory (never the user's), whose
/// path it returns.
fn podman_login(clients: &Clients, host: &str, creds: &Creds, name: &str) -> String {
    let authfile = clients.path(name);
    let mut login = clients.podman_command(&["login", "--tls-verify=false", "--authfile", &authfile]);
    login.args(["--username", &creds.user, "--password-stdin", host]);
    let stdout = run_with_input(&mut login, &creds.password);
    assert!(stdout.contains("Login Succeeded"), "{stdout}");
    let saved = std::fs::read_to_string(&authfile).unwrap();
    assert!(saved.contains(host), "podman login saved no credentials for {host}: {saved}");
    authfile
}

/// A robot (`robot$team+ci`) logs in with `podman login` like a user, pushes into its
/// project and pulls back; a push outside its project is refused.
#[tokio::test]
async fn podman_login_as_a_robot_then_push_and_pull_its_project() {
    let server = TestServer::start();
    let host = server.host();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let grants = json!([{"project": "team", "permissions": ["pull", "push"]}]);
    let robot = json!({"name": "ci", "grants": grants});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot)).await;
    let robot = Creds::new(created["robot"]["name"].as_str().unwrap(), created["secret"].as_str().unwrap());

    let clients = Clients::logged_out(&server);
    let policy = clients.policy();
    let layout = lowercase_dir();
    let image = oci_layout(layout.path(), "v1", &[120_000, 1_000]);
    clients.podman(&["pull", "-q", "--signature-policy", &policy, &oci_ref(layout.path(), "v1")]);
    let authfile = podman_login(&clients, &host, &robot, "robot.json");
    let auth = ["--tls-verify=false", "--signature-policy", &policy, "--authfile", &authfile];
    let config = hex(&image.config_digest);

    let remote = format!("{host}/team/robot-pushed:v1");
    clients.podman(&[&["push", "-q"][..], &auth, &[config, &remote]].concat());
    assert_serves_manifest_config(&server, "team/robot-pushed", "v1", &image.config_digest).await;
    clients.podman(&["rmi", "-a", "-f"]);
    let pulled = clients.podman(&[&["pull", "-q"][..], &auth, &[&remote]].concat());
    assert_eq!(pulled.trim(), config);

    let elsewhere = format!("{host}/library/robot-pushed:v1");
    let out = clients.podman_command(&[&["push", "-q"][..], &auth, &[config, &elsewhere]].concat()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a robot of team pushed into library");
    assert!(stderr.contains("denied") || stderr.contains("unauthorized"), "{stderr}");
}

/// The config a tag's manifest names, read as the admin.
async fn assert_serves_manifest_config(server: &TestServer, repo: &str, tag: &str, config: &str) {
    let api = Api::new(server.url());
    let r = api.send(Method::GET, &format!("/v2/{repo}/manifests/{tag}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    let manifest: serde_json::Value = r.json().await.unwrap();
    assert_eq!(manifest["config"]["digest"], config);
}

#[test]
fn skopeo_copy_with_creds_pushes_and_pulls_back_a_private_project() {
    let server = TestServer::start();
    let clients = Clients::logged_out(&server);
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[300_000, 2_000]);
    let remote = format!("docker://{}/team/skopeo:v1", server.host());
    let creds = server.admin().pair();

    clients.skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &oci_ref(&src, "v1"), &remote]);
    assert_serves_manifest(&server, "team/skopeo", "v1", &image.manifest, OCI_MANIFEST);

    let back = server.scratch("back");
    clients.skopeo(&["copy", "--src-tls-verify=false", "--src-creds", &creds, &remote, &oci_ref(&back, "copied")]);
    let copied = crate::fixtures::tagged_digest(&back, "copied");
    assert_eq!(copied.as_deref(), Some(image.manifest_digest.as_str()));
    let raw = clients.skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", &creds, &remote]);
    assert_eq!(sha256_digest(raw.as_bytes()), image.manifest_digest);
}

/// A user who is a developer of `team` and a robot of `team` with pull and push, both made
/// through the management API, push into `team` with `skopeo copy --dest-creds` and read
/// back with `--src-creds`.
#[tokio::test]
async fn skopeo_copy_with_dest_creds_of_a_developer_and_of_a_robot_pushes_into_their_project() {
    let server = TestServer::start();
    let api = Mgmt::new(&server, Some(&admin()));
    api.expect(StatusCode::CREATED, Method::POST, "/projects", Some(json!({"name": "team"}))).await;
    let alice = Creds::new("alice", "alice-pushes-with-skopeo");
    let user = json!({"name": alice.user, "password": alice.password});
    api.expect(StatusCode::CREATED, Method::POST, "/users", Some(user)).await;
    let role = json!({"role": "developer"});
    api.expect(StatusCode::OK, Method::PUT, "/projects/team/members/alice", Some(role)).await;
    let grants = json!([{"project": "team", "permissions": ["pull", "push"]}]);
    let robot = json!({"name": "ci", "grants": grants});
    let created = api.expect(StatusCode::CREATED, Method::POST, "/projects/team/robots", Some(robot)).await;
    let robot = Creds::new(created["robot"]["name"].as_str().unwrap(), created["secret"].as_str().unwrap());
    assert_eq!(robot.user, "robot$team+ci");

    let clients = Clients::logged_out(&server);
    let src = server.scratch("src");
    for (n, creds) in [&alice, &robot].into_iter().enumerate() {
        let image = oci_layout(&src, &format!("v{n}"), &[50_000 + n]);
        let remote = format!("docker://{}/team/app:v{n}", server.host());
        let pair = creds.pair();
        let layout = oci_ref(&src, &format!("v{n}"));
        clients.skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &pair, &layout, &remote]);
        assert_serves_manifest(&server, "team/app", &format!("v{n}"), &image.manifest, OCI_MANIFEST);
        let raw = clients.skopeo(&["inspect", "--raw", "--tls-verify=false", "--creds", &pair, &remote]);
        assert_eq!(sha256_digest(raw.as_bytes()), image.manifest_digest, "{} reads back", creds.user);
    }
}

/// An image pushed (as the admin) into a one-component repository is in the public project
/// `library`: skopeo without credentials pulls it. Without credentials nothing is pushed,
/// there or anywhere, and a private project's image is not pulled.
#[test]
fn anonymous_clients_pull_public_projects_only_and_push_nowhere() {
    let server = TestServer::start();
    let clients = Clients::logged_out(&server);
    let creds = server.admin().pair();
    let src = server.scratch("src");
    let image = oci_layout(&src, "v1", &[100_000]);
    let public = format!("docker://{}/hello:v1", server.host());
    let private = format!("docker://{}/team/hidden:v1", server.host());
    for remote in [&public, &private] {
        clients.skopeo(&["copy", "--dest-tls-verify=false", "--dest-creds", &creds, &oci_ref(&src, "v1"), remote]);
    }

    let back = server.scratch("back");
    clients.skopeo(&["copy", "--src-tls-verify=false", &public, &oci_ref(&back, "anonymous")]);
    let copied = crate::fixtures::tagged_digest(&back, "anonymous");
    assert_eq!(copied.as_deref(), Some(image.manifest_digest.as_str()), "anonymous pull of library/hello");

    // skopeo words a 401 with Berth's error JSON as `unauthorized: authentication required`,
    // one without a body (the answer to a HEAD) as `requested access … is denied`, and a
    // manifest read refused after its token dance as `reading manifest …: unauthorized`.
    let refusal =
        ["unauthorized: authentication required", "requested access to the resource is denied", ": unauthorized"];
    let refused = clients.skopeo_fails(&["inspect", "--raw", "--tls-verify=false", &private]);
    assert!(refusal.iter().any(|r| refused.contains(r)), "{refused}");
    for target in [format!("docker://{}/hello:v2", server.host()), format!("docker://{}/team/hidden:v2", server.host())]
    {
        let refused = clients.skopeo_fails(&["copy", "--dest-tls-verify=false", &oci_ref(&src, "v1"), &target]);
        assert!(refusal.iter().any(|r| refused.contains(r)), "{target}: {refused}");
    }
}

/// The same over HTTP, with the exact answers: an anonymous push gets 401 UNAUTHORIZED
/// and the challenge naming the scope it needs; an anonymous pull of a private project,
/// the same for pull; an anonymous pull of a public one, the manifest.
#[tokio::test]
async fn anonymous_push_is_refused_with_a_challenge_and_public_pulls_are_served() {
    let server = TestServer::start();
    let admin = Api::new(server.url());
    let anonymous = Api::anonymous(server.url());
    let (public, _) = admin.push_image("hello", "v1", OCI_MANIFEST, 1).await;
    admin.push_image("team/hidden", "v1", OCI_MANIFEST, 2).await;

    let r = anonymous.req(Method::GET, "/v2/hello/manifests/v1").header("accept", OCI_MANIFEST).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "docker-content-digest"), Some(public));

    for (method, path, scope) in [
        (Method::POST, "/v2/hello/blobs/uploads/", "repository:hello:pull,push"),
        (Method::POST, "/v2/team/new/blobs/uploads/", "repository:team/new:pull,push"),
        (Method::GET, "/v2/team/hidden/manifests/v1", "repository:team/hidden:pull"),
    ] {
        let r = anonymous.send(method.clone(), path).await;
        assert_eq!(header(&r, "www-authenticate"), Some(challenge(&server, scope)), "{method} {path}");
        assert_error(r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED").await;
    }
}
