//! The `berth` management subcommands, run as the built binary: against a running server
//! (`login`, `project`, `robot`), and offline on a stopped server's data
//! (`user import-htpasswd`, `admin reset-password`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use berth_access::password;
use berth_meta::IdentityStore;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::Mgmt;
use crate::api::Api;
use crate::support::{BerthProcess, Creds, TestServer, admin, run_with_input};

/// `berth ARGS` with a login directory of its own and no credentials from the
/// environment the tests run in.
pub fn berth(config_dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_berth"));
    cmd.env("BERTH_CONFIG_DIR", config_dir);
    for var in ["BERTH_URL", "BERTH_USER", "BERTH_PASSWORD", "BERTH_ADMIN_PASSWORD", "BERTH_ADMIN_PASSWORD_FILE"] {
        cmd.env_remove(var);
    }
    cmd
}

pub fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"))
}

pub fn stdout_of(cmd: &mut Command) -> String {
    let out = output(cmd);
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{cmd:?} failed: {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout.into_owned()
}

#[tokio::test]
async fn login_writes_a_file_only_its_owner_reads_and_the_commands_that_follow_use_it() {
    let server = TestServer::start();
    let config = server.scratch("config");
    let login =
        berth(&config).args(["login", &server.url(), "--user", "admin"]).stdin(std::process::Stdio::piped()).spawn();
    drop(login.unwrap().wait()); // no password on stdin: refused, nothing written
    assert!(!config.join("login.json").exists());
    run_with_input(
        berth(&config).args(["login", &server.url(), "--user", "admin"]),
        &format!("{}\n", admin().password),
    );
    let file = config.join("login.json");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!((&saved["url"], &saved["user"]), (&json!(server.url()), &json!("admin")));

    // No URL or credentials on the command line: they come from the file.
    assert!(stdout_of(berth(&config).args(["project", "create", "team"])).contains("created project team"));
    let created =
        stdout_of(berth(&config).args(["robot", "create", "ci", "--project", "team", "--permissions", "pull,push"]));
    assert!(created.contains("created robot robot$team+ci"), "{created}");
    let secret = created.lines().find_map(|l| l.strip_prefix("secret: ")).expect("the secret is printed").to_owned();
    assert!(secret.len() >= 32, "{created}");
    let listed = stdout_of(berth(&config).args(["robot", "list", "--project", "team"]));
    assert_eq!(listed, "robot$team+ci\tenabled\tteam=pull,push\n");
    assert!(!listed.contains(&secret));
    let api = Mgmt::new(&server, Some(&admin()));
    let robot = api.expect(StatusCode::OK, Method::GET, "/robots/robot$team+ci", None).await;
    assert_eq!(robot["grants"], json!([{"project": "team", "permissions": ["pull", "push"]}]));

    // A keyless robot from a trust file: no secret to print.
    // GitLab.com: an issuer the defaults allow (`[auth] oidc_issuers`).
    let trust = json!({"issuer": "https://gitlab.com", "audiences": ["berth"], "subject": "project_path:g/p:*"});
    let trust_file = server.scratch("trust").join("trust.json");
    std::fs::write(&trust_file, trust.to_string()).unwrap();
    let mut cmd = berth(&config);
    cmd.args(["robot", "create", "gitlab", "--project", "team", "--permissions", "push", "--trust"]).arg(&trust_file);
    assert_eq!(stdout_of(&mut cmd), "created robot robot$team+gitlab\n");
    let robot = api.expect(StatusCode::OK, Method::GET, "/robots/robot$team+gitlab", None).await;
    assert_eq!((&robot["keyless"], &robot["trust"]), (&json!(true), &trust));

    // A refusal is the server's code and message, and a failing exit.
    let out = output(berth(&config).args(["project", "create", "team"]));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("409 CONFLICT"), "{stderr}");
    // Flags win over the file.
    let out = output(berth(&config).args(["project", "list", "--url", "http://127.0.0.1:1"]));
    assert!(!out.status.success(), "the flag's URL was not used");
}

/// `berth keys rotate` makes a new key sign: a token issued before verifies still, a new
/// one names the new `kid`, `berth keys list` shows both (the old one retired) and no key
/// material; a non-administrator may do neither; the rotation is in the audit log. Then
/// `berth keys revoke` ends every token of the old key at once (and is audited too).
#[tokio::test]
async fn keys_rotate_signs_with_a_new_key_while_tokens_of_the_old_one_still_verify() {
    let server = TestServer::start();
    let config = server.scratch("config");
    let kid_of = |token: &str| -> String {
        use base64::Engine;
        let head = token.split('.').next().unwrap();
        let head = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head).unwrap();
        serde_json::from_slice::<serde_json::Value>(&head).unwrap()["kid"].as_str().unwrap().to_owned()
    };
    let anon = reqwest::Client::new();
    let token = |scope: &'static str| {
        let (anon, url, admin) = (anon.clone(), server.url(), admin());
        async move {
            let r = anon
                .get(format!("{url}/token?service=berth&scope={scope}"))
                .basic_auth(&admin.user, Some(&admin.password))
                .send()
                .await
                .unwrap();
            r.json::<serde_json::Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
        }
    };
    let before = token("repository:library/app:pull").await;
    let old_kid = kid_of(&before);

    let creds = ["--url", &server.url(), "--user", "admin"];
    let env = ("BERTH_PASSWORD", admin().password);
    let rotated = stdout_of(berth(&config).args(["keys", "rotate"]).args(creds).env(env.0, &env.1));
    let new_kid = rotated.trim().strip_prefix("signing with the new key ").expect(&rotated).to_owned();
    assert_ne!(new_kid, old_kid);
    let listed = stdout_of(berth(&config).args(["keys", "list"]).args(creds).env(env.0, &env.1));
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(rows.len(), 2, "{listed}");
    let row = |kid: &str| rows.iter().find(|r| r[0] == kid).unwrap_or_else(|| panic!("{kid} not in {listed}")).clone();
    assert_eq!(row(&new_kid)[3], "null", "the new key signs: {listed}");
    assert_ne!(row(&old_kid)[3], "null", "the old key is retired: {listed}");
    assert!(!listed.contains("PRIVATE"), "{listed}");

    let after = token("repository:library/app:pull").await;
    assert_eq!(kid_of(&after), new_kid);
    for t in [&before, &after] {
        let r = Api::with_token(server.url(), t).send(Method::GET, "/v2/").await;
        assert_eq!(r.status(), StatusCode::OK, "a token of either key verifies");
    }
    let api = Mgmt::new(&server, Some(&admin()));
    let user = json!({"name": "carol", "password": "carol-is-not-an-admin"});
    api.expect(StatusCode::CREATED, Method::POST, "/users", Some(user)).await;
    let carol = Mgmt::new(&server, Some(&Creds::new("carol", "carol-is-not-an-admin")));
    carol.refused(StatusCode::FORBIDDEN, "DENIED", Method::POST, "/signing-keys", None).await;
    carol.refused(StatusCode::FORBIDDEN, "DENIED", Method::GET, "/signing-keys", None).await;
    let log = api.expect(StatusCode::OK, Method::GET, "/audit?operation=key.rotate", None).await;
    assert_eq!((&log[0]["actor"], &log[0]["resource"]), (&json!("admin"), &json!(new_kid)), "{log}");

    // `berth keys revoke` ends the old key's tokens at once; the new key's still verify.
    carol.refused(StatusCode::FORBIDDEN, "DENIED", Method::DELETE, &format!("/signing-keys/{old_kid}"), None).await;
    let revoked = stdout_of(berth(&config).args(["keys", "revoke", &old_kid]).args(creds).env(env.0, &env.1));
    assert_eq!(revoked.trim(), format!("revoked the key {old_kid}"));
    let r = Api::with_token(server.url(), &before).send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a token of the revoked key");
    let r = Api::with_token(server.url(), &after).send(Method::GET, "/v2/").await;
    assert_eq!(r.status(), StatusCode::OK);
    let listed = stdout_of(berth(&config).args(["keys", "list"]).args(creds).env(env.0, &env.1));
    assert!(!listed.contains(&old_kid), "{listed}");
    let out = output(berth(&config).args(["keys", "revoke", &old_kid]).args(creds).env(env.0, &env.1));
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("404"), "{out:?}");
    let log = api.expect(StatusCode::OK, Method::GET, "/audit?operation=key.revoke", None).await;
    assert_eq!((&log[0]["actor"], &log[0]["resource"]), (&json!("admin"), &json!(old_kid)), "{log}");
}

/// Starts `berth serve` on `data_dir`, waits until it serves, and kills it: a server's
/// data, stopped.
fn stopped_server_data(data_dir: &Path) {
    BerthProcess::spawn(data_dir).kill9();
}

async fn stored_user(data_dir: &Path, name: &str) -> berth_meta::User {
    let store = berth_meta::SqliteStore::open(&data_dir.join("berth.db")).await.unwrap();
    store.user(name).await.unwrap().unwrap_or_else(|| panic!("no user {name}"))
}

#[tokio::test]
async fn reset_password_sets_a_new_password_on_a_stopped_servers_data_and_refuses_a_running_one() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("config");
    {
        let _running = BerthProcess::spawn(&data);
        let out = output(berth(&config).args(["admin", "reset-password", "--data-dir"]).arg(&data));
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another berth process"));
    }
    stopped_server_data(&data);
    // Generated and printed when not given.
    let printed = stdout_of(berth(&config).args(["admin", "reset-password", "--data-dir"]).arg(&data));
    let generated = printed.trim();
    assert!(generated.len() >= 32, "{printed}");
    let user = stored_user(&data, "admin").await;
    assert!(user.admin && !user.disabled);
    assert!(password::verify(generated, &user.password_hash));
    // Taken from BERTH_ADMIN_PASSWORD, and not printed.
    let mut cmd = berth(&config);
    cmd.args(["admin", "reset-password", "--user", "admin", "--data-dir"]).arg(&data);
    let printed = stdout_of(cmd.env("BERTH_ADMIN_PASSWORD", "chosen-recovery-password"));
    assert_eq!(printed, "");
    let user = stored_user(&data, "admin").await;
    assert!(password::verify("chosen-recovery-password", &user.password_hash));
    assert!(!password::verify(generated, &user.password_hash));
}

#[tokio::test]
async fn imported_htpasswd_users_keep_their_bcrypt_passwords() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stopped_server_data(&data);
    let hash = bcrypt::hash("carol-old-password", 5).unwrap().replace("$2b$", "$2y$");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("# from the old registry\ncarol:{hash}\n")).unwrap();
    let out = stdout_of(berth(dir.path()).args(["user", "import-htpasswd"]).arg(&file).arg("--data-dir").arg(&data));
    assert_eq!(out, "imported 1 users, skipped 0\n");
    let carol = stored_user(&data, "carol").await;
    assert_eq!(carol.password_hash, hash, "the bcrypt hash is kept as it is");
    assert!(password::verify("carol-old-password", &carol.password_hash));
    assert!(!carol.admin);
    // Again: nothing changes.
    let out = stdout_of(berth(dir.path()).args(["user", "import-htpasswd"]).arg(&file).arg("--data-dir").arg(&data));
    assert_eq!(out, "imported 0 users, skipped 1\n");
    // A file with a weak hash is refused whole, naming the line.
    std::fs::write(&file, format!("dave:{hash}\neve:$apr1$abc$def\n")).unwrap();
    let out = output(berth(dir.path()).args(["user", "import-htpasswd"]).arg(&file).arg("--data-dir").arg(&data));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(":2:"), "{}", String::from_utf8_lossy(&out.stderr));
    let store = berth_meta::SqliteStore::open(&data.join("berth.db")).await.unwrap();
    assert!(store.user("dave").await.unwrap().is_none());
}

#[tokio::test]
async fn an_imported_htpasswd_user_logs_in_with_the_old_password() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    stopped_server_data(&data);
    let hash = bcrypt::hash("frank-old-password", 5).unwrap().replace("$2b$", "$2y$");
    let file = dir.path().join("htpasswd");
    std::fs::write(&file, format!("frank:{hash}\n")).unwrap();
    stdout_of(berth(dir.path()).args(["user", "import-htpasswd"]).arg(&file).arg("--data-dir").arg(&data));
    let server = BerthProcess::spawn(&data);
    let frank = crate::support::Creds::new("frank", "frank-old-password");
    let me = crate::api::Api::as_user(server.url(), Some(&frank)).send(Method::GET, "/api/v1/me").await;
    assert_eq!(me.status(), StatusCode::OK);
    let wrong = crate::support::Creds::new("frank", "not-his-password");
    let r = crate::api::Api::as_user(server.url(), Some(&wrong)).send(Method::GET, "/api/v1/me").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

/// `berth repo list`, `repo tags` and `repo delete` against a running server: the listings
/// as the API gives them, a refusal as a failing exit naming the server's code, and a
/// deleted repository gone from the listing and from `/v2`.
#[tokio::test]
async fn repo_lists_a_projects_repositories_and_their_tags_and_deletes_one() {
    let server = TestServer::start();
    let config = server.scratch("config");
    run_with_input(
        berth(&config).args(["login", &server.url(), "--user", "admin"]),
        &format!("{}\n", admin().password),
    );
    stdout_of(berth(&config).args(["project", "create", "team"]));
    let registry = Api::new(server.url());
    for (repo, tag, seed) in [("team/app", "1", 51), ("team/app", "2", 52), ("team/tools/lint", "1", 53)] {
        registry.push_image(repo, tag, crate::fixtures::OCI_MANIFEST, seed).await;
    }
    assert_eq!(stdout_of(berth(&config).args(["repo", "list", "team"])), "team/app\nteam/tools/lint\n");
    assert_eq!(stdout_of(berth(&config).args(["repo", "tags", "team/app"])), "1\n2\n");

    let out = output(berth(&config).args(["repo", "tags", "team/absent"]));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME_UNKNOWN"), "{out:?}");

    assert_eq!(stdout_of(berth(&config).args(["repo", "delete", "team/app"])), "deleted repository team/app\n");
    assert_eq!(stdout_of(berth(&config).args(["repo", "list", "team"])), "team/tools/lint\n");
    let r = registry.send(Method::GET, "/v2/team/app/tags/list").await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let out = output(berth(&config).args(["repo", "delete", "team/app"]));
    assert!(!out.status.success(), "a second delete finds nothing");
}
