//! The embedded stores on a full disk (issue 17): the data directory on a small tmpfs
//! the test mounts and fills to the last page. Every metadata write (identity, policies,
//! settings, audit) and every push either succeeds and stays, or fails with the clear
//! `507 insufficient storage`; nothing acknowledged before, during or after the fault is
//! missing once space is freed, nor after a restart.
//!
//! Always on the embedded stores (the scale-out ones keep no data directory). Mounting
//! needs root (as CI and these machines run): a test that cannot mount fails.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use reqwest::{Client, Method, StatusCode};

use crate::support::{TestServer, http_client};

/// A tmpfs of `size` mounted on a fresh directory, unmounted when dropped.
struct SmallDisk {
    _dir: tempfile::TempDir,
    mount: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let mount = dir.path().join("disk");
        std::fs::create_dir(&mount).unwrap();
        let options = format!("size={size}");
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(&mount).output();
        let out = out.expect("run mount");
        assert!(out.status.success(), "mounting a tmpfs (needs root): {}", String::from_utf8_lossy(&out.stderr));
        SmallDisk { _dir: dir, mount }
    }

    /// Writes a filler file until the file system refuses another byte; the space comes
    /// back when the returned guard is dropped (first, if the test fails, so that the
    /// server then stops on a disk with room).
    fn fill(&self) -> Filler {
        let path = self.mount.join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        for chunk in [1 << 20, 4096, 1] {
            let buf = vec![0u8; chunk];
            while f.write_all(&buf).is_ok() {}
        }
        let _ = f.sync_all();
        let probe = std::fs::File::create(self.mount.join("probe")).and_then(|mut p| p.write_all(&[0; 4096]));
        let _ = std::fs::remove_file(self.mount.join("probe"));
        assert!(probe.is_err(), "the disk is full");
        Filler(path)
    }
}

struct Filler(PathBuf);

impl Drop for Filler {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// One management write and how to find what it made.
struct Write {
    method: Method,
    path: String,
    body: serde_json::Value,
    /// A GET that answers 200 with `expect` in its body once the write is stored.
    check: (String, String),
}

/// The writes of round `n`: a project, a user, the user's membership, a robot, an
/// immutable rule, a retention policy, and the read-only switch (set to what it is).
fn writes(n: usize) -> Vec<Write> {
    let p = format!("p{n}");
    let u = format!("u{n}");
    let w = |method, path: String, body, check: String, expect: String| Write {
        method,
        path,
        body,
        check: (check, expect),
    };
    vec![
        w(
            Method::POST,
            "/api/v1/projects".into(),
            serde_json::json!({"name": p}),
            format!("/api/v1/projects/{p}"),
            p.clone(),
        ),
        w(
            Method::POST,
            "/api/v1/users".into(),
            serde_json::json!({"name": u, "password": "a long password"}),
            format!("/api/v1/users/{u}"),
            u.clone(),
        ),
        w(
            Method::PUT,
            format!("/api/v1/projects/{p}/members/{u}"),
            serde_json::json!({"role": "developer"}),
            format!("/api/v1/projects/{p}/members"),
            u.clone(),
        ),
        w(
            Method::POST,
            format!("/api/v1/projects/{p}/robots"),
            serde_json::json!({"name": "ci", "grants": [{"project": p, "permissions": ["pull"]}]}),
            format!("/api/v1/robots/robot${p}+ci"),
            format!("robot${p}+ci"),
        ),
        w(
            Method::POST,
            format!("/api/v1/projects/{p}/immutable-rules"),
            serde_json::json!({"pattern": "v*"}),
            format!("/api/v1/projects/{p}/immutable-rules"),
            "v*".into(),
        ),
        w(
            Method::PUT,
            format!("/api/v1/projects/{p}/retention"),
            serde_json::json!({"rules": [{"keep": [{"most_recently_pushed": 3}]}]}),
            format!("/api/v1/projects/{p}/retention"),
            "most_recently_pushed".into(),
        ),
        w(
            Method::PUT,
            "/api/v1/system/read-only".into(),
            serde_json::json!({"read_only": false}),
            "/api/v1/system/read-only".into(),
            "false".into(),
        ),
    ]
}

/// Sends round `n`'s writes; returns the checks of those acknowledged. A write that is
/// not acknowledged must fail with 507 `insufficient storage` (a clear error), or, a
/// write of a round whose first writes failed, with what follows from their absence.
async fn send_round(client: &Client, base: &str, n: usize, refusals: &mut Vec<String>) -> Vec<(String, String)> {
    let mut acknowledged = Vec::new();
    let mut failed = false;
    for w in writes(n) {
        let r = client.request(w.method.clone(), format!("{base}{}", w.path)).json(&w.body).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        if status.is_success() {
            acknowledged.push(w.check);
        } else if status == StatusCode::INSUFFICIENT_STORAGE {
            assert!(text.contains("insufficient storage") || text.contains("disk is full"), "{text}");
            refusals.push(format!("{} {}", w.method, w.path));
            failed = true;
        } else {
            // Only a write that needs what an earlier refused write would have made (a
            // project, a user) may fail otherwise, and then as unknown.
            let unknown = matches!(status, StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST) && text.contains("no ");
            assert!(failed && unknown, "{} {}: {status} {text}", w.method, w.path);
        }
    }
    acknowledged
}

async fn assert_stored(client: &Client, base: &str, acknowledged: &[(String, String)], when: &str) {
    for (path, expect) in acknowledged {
        let r = client.get(format!("{base}{path}")).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status == StatusCode::OK && body.contains(expect.as_str()),
            "{when}: {path} was acknowledged, now {status}: {body}"
        );
    }
}

fn start_on(data_dir: &Path) -> TestServer {
    let data_dir = data_dir.to_owned();
    TestServer::start_embedded_with(move |config| config.data_dir = data_dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_writes_with_the_disk_full_fail_cleanly_and_lose_nothing_acknowledged() {
    let disk = SmallDisk::mount("24m");
    let data_dir = disk.mount.join("data");
    let server = start_on(&data_dir);
    let base = server.url();
    let client = http_client().build().unwrap();
    let mut acknowledged = Vec::new();
    let mut refusals = Vec::new();
    for n in 0..3 {
        acknowledged.extend(send_round(&client, &base, n, &mut refusals).await);
    }
    assert!(refusals.is_empty(), "refused before the fault: {refusals:?}");

    let filler = disk.fill();
    for n in 3..33 {
        acknowledged.extend(send_round(&client, &base, n, &mut refusals).await);
    }
    // A push with the disk full: refused as the writes are, or stored.
    let push = client.post(format!("{base}/v2/p0/app/blobs/uploads/?digest={}", crate::api::sha256(b"full")));
    let r = push.body(&b"full"[..]).send().await.unwrap();
    assert!(matches!(r.status(), StatusCode::CREATED | StatusCode::INSUFFICIENT_STORAGE), "{:?}", r.status());
    assert!(!refusals.is_empty(), "the full disk refused nothing: the test tested nothing");
    assert_stored(&client, &base, &acknowledged, "with the disk full").await;

    drop(filler);
    for n in 33..36 {
        let before = refusals.len();
        acknowledged.extend(send_round(&client, &base, n, &mut refusals).await);
        assert_eq!(refusals.len(), before, "refused after space was freed: {:?}", &refusals[before..]);
    }
    assert_stored(&client, &base, &acknowledged, "after space was freed").await;
    drop(server);

    let server = start_on(&data_dir);
    let base = server.url();
    assert_stored(&client, &base, &acknowledged, "after a restart").await;
    // The audit events queued while the disk was full were stored once it was not.
    let audit = client.get(format!("{base}/api/v1/audit?operation=project.create&limit=1000")).send().await.unwrap();
    let audit: serde_json::Value = audit.json().await.unwrap();
    let logged = audit.as_array().map_or(0, Vec::len);
    let projects = acknowledged
        .iter()
        .filter(|(path, _)| path.matches('/').count() == 4 && path.starts_with("/api/v1/projects/"))
        .count();
    assert_eq!(logged, projects, "every acknowledged project's creation is in the audit log: {audit:#}");
}
