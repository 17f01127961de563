//! The deployment files under `deploy/`: the systemd unit passes `systemd-analyze verify`;
//! the image built from `deploy/Dockerfile` (a static binary `FROM scratch`) by a private
//! dockerd is pushed to Berth, pulled back unchanged, and serves the registry when run;
//! the Kubernetes manifests parse (python3's yaml: no YAML crate for this alone) and say
//! what docs/deployment.md promises.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::clients_docker::{Dockerd, reported_digest};
use crate::support::{TestServer, admin, require, run};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The value of the first `key=` line of a unit file (`Some("")` for `key=` alone).
fn directive<'a>(unit: &'a str, key: &str) -> Option<&'a str> {
    unit.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// `systemd-analyze verify` of `unit` (its `ExecStart` binary replaced by the one cargo
/// built, which verify checks is executable); returns its exit success and stderr.
fn verify_unit(unit: &str) -> (bool, String) {
    require("systemd-analyze");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/berth", env!("CARGO_BIN_EXE_berth"))).unwrap();
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify_and_is_hardened() {
    let unit = read(&deploy_dir().join("systemd/berth.service"));
    let (ok, stderr) = verify_unit(&unit);
    // verify reports unknown keys and bad values on stderr while still exiting 0.
    assert!(ok && stderr.trim().is_empty(), "systemd-analyze verify: {stderr}");
    let (_, stderr) = verify_unit(&format!("{unit}\n[Service]\nProtectSystm=strict\n"));
    assert!(stderr.contains("ProtectSystm"), "a misspelt directive must be reported: {stderr:?}");

    for (key, value) in [
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("SystemCallFilter", "@system-service"),
        ("Restart", "on-failure"),
        ("ReadWritePaths", "/var/lib/berth"),
        ("User", "berth"),
    ] {
        assert_eq!(directive(&unit, key), Some(value), "{key}");
    }
    assert!(directive(&unit, "EnvironmentFile").is_some_and(|f| f.contains("/etc/berth/")));
    assert!(directive(&unit, "LimitNOFILE").is_some_and(|n| n.parse::<u64>().unwrap() >= 65536));
    let exec = directive(&unit, "ExecStart").unwrap();
    assert!(exec.contains(" serve ") && exec.contains("--data-dir /var/lib/berth"), "{exec}");
    // SIGKILL comes only after the shutdown deadline (30 s) and the same grace Kubernetes gives.
    let stop = directive(&unit, "TimeoutStopSec").unwrap();
    assert_eq!(
        stop,
        format!("{}s", kubernetes()["Deployment"][0]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])
    );
    assert!(stop.trim_end_matches('s').parse::<u64>().unwrap() > 30, "{stop}");
}

/// Every object of `deploy/kubernetes/*.yaml`, parsed by python3's yaml and grouped by
/// `kind`; checks that kustomization.yaml lists every other file.
fn kubernetes() -> serde_json::Map<String, Value> {
    require("python3");
    let dir = deploy_dir().join("kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let script = "import json, sys, yaml\n\
                  print(json.dumps([d for f in sys.argv[1:] for d in yaml.safe_load_all(open(f)) if d]))";
    let out = run(Command::new("python3").arg("-c").arg(script).args(&files));
    let docs: Vec<Value> = serde_json::from_str(&out).unwrap();
    let mut by_kind = serde_json::Map::new();
    for doc in docs {
        let kind = doc["kind"].as_str().expect("every object has a kind").to_owned();
        by_kind.entry(kind).or_insert_with(|| Value::Array(vec![])).as_array_mut().unwrap().push(doc);
    }
    let listed: BTreeSet<&str> =
        by_kind["Kustomization"][0]["resources"].as_array().unwrap().iter().map(|r| r.as_str().unwrap()).collect();
    let names: Vec<String> = files.iter().map(|f| f.file_name().unwrap().to_str().unwrap().to_owned()).collect();
    let present: BTreeSet<&str> = names.iter().map(String::as_str).filter(|n| *n != "kustomization.yaml").collect();
    assert_eq!(listed, present, "kustomization.yaml's resources");
    by_kind
}

#[test]
fn the_kubernetes_manifests_parse_and_run_replicas_with_probes_and_secrets() {
    let k = kubernetes();
    for kind in ["Deployment", "Service", "Secret", "ConfigMap", "PodDisruptionBudget"] {
        assert_eq!(k.get(kind).and_then(Value::as_array).map(Vec::len), Some(1), "one {kind}");
    }
    let deployment = &k["Deployment"][0]["spec"];
    assert!(deployment["replicas"].as_u64().unwrap() >= 2, "scale-out runs several replicas");
    let labels = &deployment["template"]["metadata"]["labels"];
    assert_eq!(&deployment["selector"]["matchLabels"], labels);
    assert_eq!(&k["Service"][0]["spec"]["selector"], labels);
    let pod = &deployment["template"]["spec"];
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["ports"][0]["containerPort"], 5000);
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    // /data, the only path Berth writes (it creates the data directory even in scale-out mode).
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/data");

    // Settings come from the ConfigMap and the Secret, by name.
    let sources: Vec<(&str, &str)> = c["envFrom"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| s.as_object().unwrap().iter())
        .map(|(kind, r)| (kind.as_str(), r["name"].as_str().unwrap()))
        .collect();
    let secret = &k["Secret"][0];
    let config = &k["ConfigMap"][0];
    assert!(sources.contains(&("secretRef", secret["metadata"]["name"].as_str().unwrap())), "{sources:?}");
    assert!(sources.contains(&("configMapRef", config["metadata"]["name"].as_str().unwrap())), "{sources:?}");
    for key in ["BERTH_DATABASE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "BERTH_ADMIN_PASSWORD"] {
        assert!(secret["stringData"][key].is_string(), "the Secret holds {key}");
        assert!(config["data"].get(key).is_none(), "{key} is a secret, not ConfigMap data");
    }
    assert!(secret["stringData"]["BERTH_DATABASE"].as_str().unwrap().starts_with("postgres://"));
    // Behind the Ingress the client is named by its pods (the pod network is trusted),
    // and nobody else is believed.
    let proxies: Vec<berth_server::proxies::Cidr> = config["data"]["BERTH_TRUSTED_PROXIES"]
        .as_str()
        .expect("the ConfigMap sets BERTH_TRUSTED_PROXIES")
        .split(',')
        .map(|cidr| cidr.parse().unwrap_or_else(|e| panic!("{cidr}: {e}")))
        .collect();
    let trusted = |ip: &str| proxies.iter().any(|c| c.contains(ip.parse().unwrap()));
    for pod in ["10.244.1.7", "10.42.0.12", "192.168.3.4", "172.20.0.9"] {
        assert!(trusted(pod), "a pod address of a common pod network: {pod}");
    }
    for client in ["203.0.113.7", "8.8.8.8", "2001:db8::1"] {
        assert!(!trusted(client), "a public address is no proxy: {client}");
    }
    // The storage URL in the ConfigMap is one Berth accepts.
    let storage = config["data"]["BERTH_STORAGE"].as_str().unwrap();
    berth::S3Config::from_url(storage).unwrap_or_else(|e| panic!("{storage}: {e}"));
}

/// A port free right now on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `GET /v2/` without credentials until it answers (at most 30 s); returns the response head.
fn anonymous_v2(port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut answer = String::new();
            if s.write_all(b"GET /v2/ HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").is_ok()
                && s.read_to_string(&mut answer).is_ok()
                && !answer.is_empty()
            {
                return answer;
            }
        }
        assert!(Instant::now() < deadline, "the container did not answer on port {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_image_from_the_dockerfile_round_trips_through_berth_and_serves_the_registry() {
    // The static binary and the build context (deploy/image-context.sh, as an operator runs
    // it, but of the unoptimised profile: a release build would add about ten minutes to
    // CI and check nothing more about the image).
    let context = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let script = deploy_dir().join("image-context.sh");
    let out = run(Command::new("bash").arg(&script).arg(context.path()).env("BERTH_IMAGE_PROFILE", "dev"));
    eprintln!("static build and context: {:.0?} ({})", started.elapsed(), out.trim());

    let docker = Dockerd::start();
    let server = TestServer::start();
    let host = server.host();
    let image = format!("{host}/deploy/berth:test");
    docker.run(&["build", "-q", "-t", &image, context.path().to_str().unwrap()]);
    let built = docker.inspect(&image);
    let id = built["Id"].as_str().unwrap().to_owned();
    assert_eq!(built["Config"]["User"], "65532:65532");
    assert_eq!(built["Config"]["ExposedPorts"], serde_json::json!({"5000/tcp": {}}));
    assert_eq!(built["Config"]["Entrypoint"], serde_json::json!(["/usr/local/bin/berth"]));

    // Pushed to a running Berth with credentials, removed, pulled back: the same image.
    docker.login(&host, &admin());
    let digest = reported_digest(&docker.run(&["push", &image]));
    docker.run(&["rmi", &image]);
    assert!(!docker.try_run(&["image", "inspect", &id]).0, "rmi left the image");
    let by_digest = format!("{host}/deploy/berth@{digest}");
    docker.run(&["pull", &by_digest]);
    let pulled = docker.inspect(&by_digest);
    assert_eq!(pulled["Id"], id.as_str(), "the pulled image is the built one");
    assert_eq!(pulled["RepoDigests"], serde_json::json!([by_digest]));

    // Run once, as its own user on a read-only root: the registry answers with a challenge.
    let port = free_port();
    let container = docker
        .run(&[
            "run",
            "-d",
            "--network",
            "host",
            "--read-only",
            "-e",
            &format!("BERTH_LISTEN=127.0.0.1:{port}"),
            "-e",
            "BERTH_ADMIN_PASSWORD=deploy-test-password",
            &by_digest,
        ])
        .trim()
        .to_owned();
    let answer = anonymous_v2(port);
    let logs = docker.try_run(&["logs", &container]);
    docker.run(&["rm", "-f", &container]);
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}\ncontainer log:\n{}{}", logs.1, logs.2);
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("www-authenticate: bearer realm="), "{answer}");
}
