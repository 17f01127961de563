//! Real services for tests, started on loopback in a temp directory and stopped on drop.
//!
//! No mocks: [`Postgres`] is a throwaway cluster from Debian's postgresql package. A
//! service that is not installed fails the test with a message saying what `.ci/run`
//! installs; it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

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
        // PostgreSQL refuses to run as root: the cluster belongs to the postgres user.
        let as_postgres = |script: String| {
            let mut c = Command::new("su");
            c.args(["postgres", "-s", "/bin/sh", "-c", &script]);
            c
        };
        run(Command::new("chown").args(["postgres", &path]));
        run(&mut as_postgres(format!(
            "{}/initdb -D {path}/data -U postgres -A trust --no-sync -E UTF8 --locale=C.UTF-8 >/dev/null",
            bin.display()
        )));
        run(&mut as_postgres(format!(
            "{}/pg_ctl -D {path}/data -l {path}/log -w -o \"-h 127.0.0.1 -p {port} -k {path} -c fsync=off -c max_connections=200\" start >/dev/null",
            bin.display()
        )));
        Postgres { dir, bin, port }
    }

    /// A connection URL for a fresh database `name` in this cluster.
    pub fn database(&self, name: &str) -> String {
        run(Command::new(self.bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", name]));
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("su")
            .args([
                "postgres",
                "-s",
                "/bin/sh",
                "-c",
                &format!("{}/pg_ctl -D {}/data -m immediate stop >/dev/null", self.bin.display(), self.dir.path().display()),
            ])
            .status();
    }
}
