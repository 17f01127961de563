//! The servers under test, started as child processes on loopback: Berth on embedded
//! defaults (or S3 + PostgreSQL when given), and distribution (`docker-registry`) on
//! its filesystem driver. Start-up time and resident memory come from here. Berth runs
//! with an admin password of the run's choosing (`BERTH_ADMIN_PASSWORD`), and every request
//! to it carries the admin's Basic credentials; distribution runs with no auth, as ever.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http::Target;

pub struct Server {
    pub addr: SocketAddr,
    /// The `Authorization` header of every request (Berth's admin, Basic); none for distribution.
    pub authorization: Option<Arc<str>>,
    child: Child,
    /// From spawn to the first 200 on `/v2/`.
    pub startup: Duration,
    /// Where its access log goes, when kept.
    pub log: Option<PathBuf>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn ready(addr: SocketAddr, authorization: Option<&str>) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(addr) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let auth = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
    if s.write_all(format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.1 200")
}

fn wait(
    name: &'static str,
    mut child: Child,
    addr: SocketAddr,
    authorization: Option<Arc<str>>,
    started: Instant,
) -> Server {
    loop {
        if ready(addr, authorization.as_deref()) {
            return Server { addr, authorization, child, startup: started.elapsed(), log: None };
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{name} exited during start-up: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(30), "{name} did not start");
        std::thread::sleep(Duration::from_micros(500));
    }
}

/// Scale-out settings for Berth: `--storage` and `--database`, and the bucket's keys.
#[derive(Clone)]
pub struct ScaleOut {
    pub storage: String,
    pub database: String,
    pub env: Vec<(String, String)>,
}

/// Starts Berth with `admin_password` for its `admin` (whose pushes create the projects
/// they name, as the workloads push to several).
pub fn berth(bin: &Path, dir: &Path, scaleout: Option<&ScaleOut>, admin_password: &str) -> Server {
    berth_with(bin, dir, scaleout, admin_password, &[])
}

/// [`berth`] with more environment variables (settings such as `BERTH_GC_GRACE`).
pub fn berth_with(
    bin: &Path,
    dir: &Path,
    scaleout: Option<&ScaleOut>,
    admin_password: &str,
    env: &[(&str, &str)],
) -> Server {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", &addr.to_string(), "--data-dir"]).arg(dir.join("berth"));
    if let Some(s) = scaleout {
        cmd.args(["--storage", &s.storage, "--database", &s.database]);
        cmd.envs(s.env.iter().map(|(k, v)| (k, v)));
    }
    cmd.env("BERTH_ADMIN_PASSWORD", admin_password).env("BERTH_AUTO_CREATE_PROJECTS", "true");
    // Warnings and errors (or `BERTH_BENCH_LOG`'s level) go to a file beside the data
    // directory: a failed run says why.
    let log = std::fs::File::create(dir.join("berth.log")).expect("create berth.log");
    let level = std::env::var("BERTH_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned());
    cmd.env("BERTH_LOG", level).stdout(Stdio::null()).stderr(log);
    cmd.envs(env.iter().copied());
    let authorization = Some(Arc::from(crate::auth::basic(crate::auth::ADMIN, admin_password)));
    let started = Instant::now();
    let child = cmd.spawn().expect("spawn berth");
    wait(if scaleout.is_some() { "Berth (S3+PG)" } else { "Berth" }, child, addr, authorization, started)
}

pub fn distribution(bin: &Path, dir: &Path) -> Server {
    start_distribution(bin, dir, "  accesslog:\n    disabled: true\n", "", None)
}

/// distribution with its access log kept (for [`requests_served`]), and, with
/// `proxy_of`, in its pull-through cache mode in front of that registry.
pub fn distribution_upstream(bin: &Path, dir: &Path, proxy_of: Option<&str>) -> Server {
    std::fs::create_dir_all(dir).unwrap();
    let log = dir.join("access.log");
    let proxy = proxy_of.map(|url| format!("proxy:\n  remoteurl: {url}\n")).unwrap_or_default();
    start_distribution(bin, dir, "  accesslog:\n    disabled: false\n", &proxy, Some(log))
}

/// The requests a [`distribution_upstream`] has logged so far.
pub fn requests_served(server: &Server) -> usize {
    let Some(log) = &server.log else { return 0 };
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter(|l| l.contains("\"GET /v2/") || l.contains("\"HEAD /v2/")).count()
}

fn start_distribution(bin: &Path, dir: &Path, accesslog: &str, extra: &str, log: Option<PathBuf>) -> Server {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let root: PathBuf = dir.join("distribution");
    std::fs::create_dir_all(&root).unwrap();
    let config = dir.join("distribution.yml");
    // Its defaults for a filesystem deployment: in-memory blob descriptor cache, deletes
    // on (as Berth), upload purging off (Berth's janitor is idle during a run too).
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: error\n{accesslog}storage:\n  filesystem:\n    rootdirectory: {}\n  cache:\n    blobdescriptor: inmemory\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      enabled: false\nhttp:\n  addr: {addr}\n{extra}",
            root.display()
        ),
    )
    .unwrap();
    let stdout = match &log {
        Some(path) => Stdio::from(std::fs::File::create(path).expect("create the access log")),
        None => Stdio::null(),
    };
    let started = Instant::now();
    let child = Command::new(bin)
        .arg("serve")
        .arg(&config)
        .env_remove("AWS_CA_BUNDLE")
        .stdout(stdout)
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn docker-registry");
    let mut server = wait("distribution", child, addr, None, started);
    server.log = log;
    server
}

impl Server {
    /// Where the load generator sends requests, with this server's credentials.
    pub fn target(&self) -> Target {
        Target { addr: self.addr, authorization: self.authorization.clone() }
    }

    /// CPU seconds the server has used (user + system).
    pub fn cpu_seconds(&self) -> f64 {
        proc_cpu_seconds(&format!("/proc/{}/stat", self.child.id()))
    }

    /// `(VmRSS, VmHWM)` in MB.
    pub fn memory(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .map(|kb| kb / 1024.0)
                .unwrap_or(f64::NAN)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// utime + stime of a `/proc/<pid>/stat` file, in seconds.
pub fn proc_cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest: Vec<f64> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|x| x.parse().ok())
        .collect();
    rest.iter().sum::<f64>() / 100.0 // USER_HZ, fixed at 100 on Linux
}
