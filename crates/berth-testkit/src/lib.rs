//! Real services for tests, started on loopback in a temp directory and stopped on drop
//! (and, in [`oidc`], an OpenID Connect issuer played by the test).
//!
//! No mocks: [`Postgres`] is a throwaway cluster from Debian's postgresql package, and
//! [`Garage`] a one-node Garage (a production S3-compatible object store, crates.io
//! `garage`), [`Distribution`] Debian's docker-registry. A service that is not installed fails the test with a message saying what
//! `.ci/run` installs; it never skips. Not for production code: nothing here is hardened.

pub mod distribution;
pub mod oidc;

pub use distribution::{Distribution, DistributionConfig};

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `script` run by the postgres user: PostgreSQL refuses to run as root.
fn as_postgres(script: &str) -> Command {
    let mut c = Command::new("su");
    c.args(["postgres", "-s", "/bin/sh", "-c", script]);
    c
}

/// A PostgreSQL cluster of its own: `initdb` + `pg_ctl` in a temp directory.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    pub port: u16,
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|d| d.filter_map(Result::ok).map(|e| e.path().join("bin")).find(|b| b.join("initdb").exists()))
            .expect("PostgreSQL server binaries not found: install Debian's postgresql package (scripts/test.sh does)");
        let dir = tempfile::Builder::new().prefix("berth-pg").tempdir().unwrap();
        let port = free_port();
        let path = dir.path().to_str().unwrap().to_owned();
        run(Command::new("chown").args(["postgres", &path]));
        run(&mut as_postgres(&format!(
            "{}/initdb -D {path}/data -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null",
            bin.display()
        )));
        let mut pg = Postgres { dir, bin, port };
        // The port was free when picked, but another test's server may take it before this
        // one binds it (tests start in parallel): then pick another.
        for _ in 0..3 {
            if pg.start_command().output().is_ok_and(|out| out.status.success()) {
                return pg;
            }
            pg.port = free_port();
        }
        pg.start_again();
        pg
    }

    /// Starts the cluster (stopped by [`Postgres::stop`]) on the same port and data.
    pub fn start_again(&self) {
        run(&mut self.start_command());
    }

    fn start_command(&self) -> Command {
        let (path, port) = (self.dir.path().display(), self.port);
        as_postgres(&format!(
            "{}/pg_ctl -D {path}/data -l {path}/log -w -o \"-h 127.0.0.1 -p {port} -k {path} -c fsync=off -c max_connections=200\" start >/dev/null",
            self.bin.display()
        ))
    }

    /// Stops the cluster now (`immediate`: connections are cut, as by a crash).
    pub fn stop(&self) {
        run(&mut as_postgres(&self.stop_command()));
    }

    fn stop_command(&self) -> String {
        format!("{}/pg_ctl -D {}/data -m immediate stop >/dev/null", self.bin.display(), self.dir.path().display())
    }

    /// A connection URL for a fresh database `name` in this cluster.
    pub fn database(&self, name: &str) -> String {
        run(Command::new(self.bin.join("createdb")).args([
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            "postgres",
            name,
        ]));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Already stopped is fine.
        let _ = as_postgres(&self.stop_command()).status();
    }
}

/// `n` random bytes as lowercase hex (from the kernel; tests need no crypto crate).
fn random_hex(n: usize) -> String {
    let mut buf = vec![0u8; n];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("reading /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `garage` binary: on `PATH`, or where `cargo install garage` puts it.
fn garage_binary() -> PathBuf {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("garage")).collect())
        .unwrap_or_default();
    if let Some(cargo_home) = std::env::var_os("CARGO_HOME") {
        candidates.push(PathBuf::from(cargo_home).join("bin/garage"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".cargo/bin/garage"));
    }
    candidates.into_iter().find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("the `garage` binary was not found on PATH nor in ~/.cargo/bin: install it with `cargo install garage --version 2.5.0 --locked` (.ci/run does)")
    })
}

/// A one-node Garage S3 server on loopback with one bucket and one key allowed on it.
///
/// Path-style addressing, plain HTTP, region [`Garage::region`]. The server runs from a
/// temp directory (SQLite metadata, data blocks, log) and is killed on drop.
pub struct Garage {
    dir: tempfile::TempDir,
    child: Child,
    /// `http://127.0.0.1:PORT`, the S3 API.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl Garage {
    pub fn start() -> Garage {
        let bin = garage_binary();
        // Free ports are picked, released, then bound by Garage: another process may take
        // one in between. Then the server exits, and a new set of ports is tried.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut garage = Garage::spawn(&bin);
            match garage.setup(&bin) {
                Ok(()) => return garage,
                Err(e) if attempt < 3 && garage.exited() => eprintln!("Garage exited during setup ({e}); retrying"),
                Err(e) => {
                    let log = std::fs::read_to_string(garage.dir.path().join("garage.log")).unwrap_or_default();
                    panic!("Garage: {e}\n--- garage.log ---\n{log}")
                }
            }
        }
    }

    fn spawn(bin: &Path) -> Garage {
        let dir = tempfile::Builder::new().prefix("berth-garage").tempdir().unwrap();
        let (rpc, s3, admin) = (free_port(), free_port(), free_port());
        let region = "garage".to_owned();
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secret}"

[s3_api]
s3_region = "{region}"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{token}"
"#,
                d = dir.path().display(),
                secret = random_hex(32),
                token = random_hex(32),
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("garage.log")).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(dir.path().join("garage.toml"))
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()));
        Garage {
            dir,
            child,
            endpoint: format!("http://127.0.0.1:{s3}"),
            region,
            bucket: "berth-test".to_owned(),
            access_key_id: format!("GK{}", random_hex(12)),
            secret_access_key: random_hex(32),
        }
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn cli(&self, bin: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(bin)
            .arg("-c")
            .arg(self.dir.path().join("garage.toml"))
            .args(args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`garage {}`: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Waits until `port` accepts connections (and the server still runs).
    fn wait_for_port(&mut self, port: u16, deadline: Instant) -> Result<(), String> {
        loop {
            if self.exited() {
                return Err("the server exited".into());
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("nothing listens on port {port}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn setup(&mut self, bin: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = |addr: &str| addr.rsplit(':').next().and_then(|p| p.parse::<u16>().ok());
        let config = std::fs::read_to_string(self.dir.path().join("garage.toml")).unwrap();
        let rpc = config
            .lines()
            .find_map(|l| l.strip_prefix("rpc_bind_addr = "))
            .and_then(|a| port(a.trim_matches('"')))
            .unwrap();
        let s3 = port(&self.endpoint).unwrap();
        // The CLI talks to the server over RPC.
        self.wait_for_port(rpc, deadline)?;
        let node = self.cli(bin, &["node", "id", "-q"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        let (key, secret, bucket) = (self.access_key_id.clone(), self.secret_access_key.clone(), self.bucket.clone());
        for args in [
            &["layout", "assign", "-z", "dc1", "-c", "1G", &node][..],
            &["layout", "apply", "--version", "1"],
            &["key", "import", "--yes", "-n", "berth", &key, &secret],
            &["bucket", "create", &bucket],
            &["bucket", "allow", "--read", "--write", "--owner", &bucket, "--key", "berth"],
        ] {
            self.cli(bin, args)?;
        }
        // The S3 API answers once the layout is live: any HTTP response will do.
        self.wait_for_port(s3, deadline)?;
        loop {
            let answered = TcpStream::connect(("127.0.0.1", s3)).ok().and_then(|mut c| {
                c.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
                c.write_all(format!("GET /{bucket} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
                let mut head = [0u8; 12];
                c.read_exact(&mut head).ok()?;
                head.starts_with(b"HTTP/1.").then_some(())
            });
            if answered.is_some() {
                return Ok(());
            }
            if self.exited() {
                return Err("the server exited".into());
            }
            if Instant::now() > deadline {
                return Err("the S3 API did not answer".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
