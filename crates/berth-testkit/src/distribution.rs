//! The reference registry, distribution 2.8 (Debian's `docker-registry`), on loopback:
//! as an upstream for the pull-through cache (optionally behind htpasswd Basic auth),
//! and as distribution's own pull-through cache (`proxy: remoteurl:`). Its access log is
//! kept, so a test counts the requests it served.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

/// How a [`Distribution`] runs.
#[derive(Clone, Debug, Default)]
pub struct DistributionConfig {
    /// htpasswd Basic auth with this user and password (bcrypt-hashed, as it requires).
    pub basic: Option<(String, String)>,
    /// distribution's pull-through cache mode, mirroring this registry URL.
    pub proxy_of: Option<String>,
}

/// One `docker-registry serve` in a temp directory, stopped on drop.
pub struct Distribution {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

impl Distribution {
    pub fn start(config: DistributionConfig) -> Distribution {
        let bin = Path::new("/usr/bin/docker-registry");
        assert!(bin.exists(), "docker-registry not found: install Debian's docker-registry package (.ci/run does)");
        let dir = tempfile::Builder::new().prefix("berth-distribution").tempdir().unwrap();
        let port = free_port();
        let mut yaml = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    \
             rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = &config.basic {
            let hash = bcrypt::hash(password, 4).unwrap();
            std::fs::write(dir.path().join("htpasswd"), format!("{user}:{hash}\n")).unwrap();
            yaml.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: upstream\n    path: {}\n",
                dir.path().join("htpasswd").display()
            ));
        }
        if let Some(remote) = &config.proxy_of {
            yaml.push_str(&format!("proxy:\n  remoteurl: {remote}\n"));
        }
        std::fs::write(dir.path().join("config.yml"), yaml).unwrap();
        let mut registry = Distribution { dir, child: None, port };
        registry.start_again();
        registry
    }

    /// Starts it again after [`Distribution::stop`], on the same port and data.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log_path()).unwrap();
        let child = Command::new("/usr/bin/docker-registry")
            .arg("serve")
            .arg(self.dir.path().join("config.yml"))
            .env_remove("AWS_CA_BUNDLE")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn docker-registry");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not start:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops it (SIGKILL): the upstream is down.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT`
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    /// Everything it logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// How many `METHOD` requests for a path ending in `path_suffix` it has answered with
    /// 2xx or 3xx (its access log's lines, combined log format).
    pub fn served(&self, method: &str, path_suffix: &str) -> usize {
        self.log()
            .lines()
            .filter_map(|line| {
                let request = line.split('"').nth(1)?;
                let mut parts = request.split(' ');
                let (m, path) = (parts.next()?, parts.next()?);
                let status = line.split('"').nth(2)?.split_whitespace().next()?;
                Some(m == method && path.split('?').next()?.ends_with(path_suffix) && status.starts_with(['2', '3']))
            })
            .filter(|&hit| hit)
            .count()
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        self.stop();
    }
}
