//! The config file as `berth` reads it: the built binary, started with a file, environment
//! variables and flags; `berth config check` and `berth config example`.

use std::path::Path;
use std::process::Command;

use crate::support::{BerthProcess, client_as};

/// The `service` a server names in its challenge to an anonymous `GET /v2/`.
fn service_of(server: &BerthProcess) -> String {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = client_as(None).build().unwrap().get(format!("{}/v2/", server.url())).send().await.unwrap();
        let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
        let service = challenge.split("service=\"").nth(1).unwrap_or_else(|| panic!("no service in {challenge}"));
        service.split('"').next().unwrap().to_owned()
    })
}

fn write_file(dir: &Path, contents: &str) -> String {
    let path = dir.join("berth.toml");
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

fn berth(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_berth")).args(args).output().expect("run berth")
}

#[test]
fn a_setting_comes_from_the_file_then_the_environment_then_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "[auth]\nservice_name = \"from-file\"\n");
    let data = dir.path().join("data");
    type Case<'a> = (&'a str, &'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        ("from-file", &["--config", &file], &[]),
        ("from-env", &["--config", &file], &[("BERTH_SERVICE_NAME", "from-env")]),
        ("from-flag", &["--config", &file, "--service-name", "from-flag"], &[("BERTH_SERVICE_NAME", "from-env")]),
    ];
    for (expected, args, envs) in cases {
        let server = BerthProcess::spawn_with(&data, args, envs);
        assert_eq!(service_of(&server), expected, "berth serve {args:?} with {envs:?}");
    }
}

#[test]
fn an_unknown_key_stops_the_start_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "[limits]\nmax_conections = 100\n");
    let data = dir.path().join("data");
    for args in [vec!["serve", "--config", &file, "--data-dir", data.to_str().unwrap()], vec!["config", "check", &file]]
    {
        let out = berth(&args);
        assert_eq!(out.status.code(), Some(1), "berth {args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr, format!("error: {file}: unknown key \"limits.max_conections\"\n"), "berth {args:?}");
    }
    assert!(!data.exists(), "a refused start created the data directory");
}

#[test]
fn an_invalid_value_stops_the_start_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = write_file(dir.path(), "[limits]\nbody_idle_timeout = \"3O s\"\n");
    let out = berth(&["serve", "--config", &file]);
    assert_eq!(out.status.code(), Some(1));
    let expected = format!("error: {file}: limits.body_idle_timeout: invalid duration \"3O s\"\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), expected);
    let out = berth(&["config", "check", &file]);
    assert_eq!((out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned()), (Some(1), expected));
}

#[test]
fn the_printed_example_passes_the_check_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let out = berth(&["config", "example"]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).unwrap();
    assert!(example.contains("[listen]") && example.contains("# "), "not a commented example: {example}");
    let file = write_file(dir.path(), &example);
    let out = berth(&["config", "check", &file]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("{file}: ok\n"));
    // The example is a working configuration (its listen address and data directory
    // overridden by the harness's flags).
    let server = BerthProcess::spawn_with(&dir.path().join("data"), &["--config", &file], &[]);
    assert_eq!(service_of(&server), "berth");
}

#[test]
fn a_secret_is_read_from_the_file_its_file_key_names() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin-password");
    std::fs::write(&secret, format!("{}\n", crate::support::admin().password)).unwrap();
    let file = write_file(dir.path(), &format!("[auth]\nadmin_password_file = {:?}\n", secret.to_str().unwrap()));
    // Without BERTH_ADMIN_PASSWORD in its environment: the admin's password comes from
    // the file (the harness's readiness probe logs in with it).
    let server =
        BerthProcess::spawn_with(&dir.path().join("data"), &["--config", &file], &[("BERTH_ADMIN_PASSWORD", "")]);
    assert_eq!(service_of(&server), "berth");
}
