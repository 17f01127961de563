//! Test harness: Berth started for real, on `127.0.0.1:0`, with a fresh data directory.
//!
//! [`TestServer`] runs the server in-process on its own thread and runtime, so tests may
//! be plain synchronous functions that run client programs. [`BerthProcess`] runs the
//! built `berth` binary as a child process, for tests that kill it. [`Storage`] looks at
//! what a server's blob store holds from outside the server, on either backend.
//!
//! Every server has a system administrator `admin` whose password is random per test run
//! ([`admin`]); every client the harness builds sends its credentials unless a test asks
//! for none ([`http_client`], [`Creds::header_line`]).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;

use futures_util::StreamExt;
use object_store::aws::AmazonS3;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;

/// A user name and password, as a client sends them.
#[derive(Clone, Debug)]
pub struct Creds {
    pub user: String,
    pub password: String,
}

impl Creds {
    pub fn new(user: &str, password: &str) -> Creds {
        Creds { user: user.to_owned(), password: password.to_owned() }
    }

    /// `USER:PASSWORD`, as skopeo's `--creds` and podman's `--creds` take them.
    pub fn pair(&self) -> String {
        format!("{}:{}", self.user, self.password)
    }

    /// `Basic …`, the value of an `Authorization` header.
    pub fn basic(&self) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(self.pair()))
    }

    /// `Authorization: Basic …\r\n`, for tests that write requests on raw sockets.
    pub fn header_line(&self) -> String {
        format!("Authorization: {}\r\n", self.basic())
    }

    /// A containers-auth.json / docker `config.json` holding these credentials for `host`.
    pub fn auth_file(&self, host: &str) -> String {
        let auth = base64::engine::general_purpose::STANDARD.encode(self.pair());
        serde_json::json!({ "auths": { host: { "auth": auth } } }).to_string()
    }
}

/// The system administrator of every server the tests start: `admin`, with a password
/// drawn at random once per test run (a server reads it from `Config.admin_password`, a
/// `berth` process from `BERTH_ADMIN_PASSWORD`).
pub fn admin() -> Creds {
    static PASSWORD: OnceLock<String> = OnceLock::new();
    Creds::new("admin", PASSWORD.get_or_init(berth_access::password::random_secret))
}

/// What every test server is configured with for access: the admin's password, and
/// pushes by a system administrator create the project they name (tests push to many
/// projects and have no management API to create them with).
pub fn configure_access(config: &mut berth::Config) {
    config.auth.admin_password = Some(admin().password);
    config.auth.auto_create_projects = true;
}

/// The environment of a `berth` process for the same (see [`configure_access`]).
fn access_env() -> [(&'static str, String); 2] {
    [("BERTH_ADMIN_PASSWORD", admin().password), ("BERTH_AUTO_CREATE_PROJECTS", "true".to_owned())]
}

/// An HTTP client builder that sends the admin's credentials on every request (and never
/// goes through a proxy); [`anonymous_client`] sends none.
pub fn http_client() -> reqwest::ClientBuilder {
    client_as(Some(&admin()))
}

/// An HTTP client builder that sends `creds` (Basic) on every request, or nothing.
pub fn client_as(creds: Option<&Creds>) -> reqwest::ClientBuilder {
    client_authorized(creds.map(Creds::basic))
}

/// An HTTP client builder that sends `authorization` (`Basic …`, `Bearer …`) as the
/// `Authorization` header of every request, or none.
pub fn client_authorized(authorization: Option<String>) -> reqwest::ClientBuilder {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(value) = authorization {
        let mut value = reqwest::header::HeaderValue::from_str(&value).unwrap();
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder().no_proxy().default_headers(headers)
}

/// A registry token from `GET /token` at `base` (Docker's token protocol) for `scope`,
/// asked for as `creds` or anonymously. Panics with the answer when none is issued; a
/// server without a token endpoint answers 404.
pub async fn bearer_token(base: &str, creds: Option<&Creds>, scope: &str) -> String {
    let client = client_as(creds).build().unwrap();
    // `:`, `/` and `,` are valid in a query as they are; Docker's clients send them so.
    let r = client.get(format!("{base}/token?service=berth&scope={scope}")).send().await;
    let r = r.unwrap_or_else(|e| panic!("GET {base}/token: {e}"));
    let status = r.status();
    let body = r.text().await.unwrap();
    assert_eq!(status, reqwest::StatusCode::OK, "GET {base}/token?scope={scope} issued no token: {body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let token = answer["token"].as_str().or(answer["access_token"].as_str());
    token.unwrap_or_else(|| panic!("no token in {body}")).to_owned()
}

/// The stores a [`TestServer`] runs on. `BERTH_TEST_BACKEND=scaleout` runs the same tests
/// on the scale-out stores, a real PostgreSQL cluster and a real Garage S3 server
/// started for the server; unset, they run on the embedded ones.
pub struct Backend {
    pub scaleout: Option<ScaleOut>,
}

/// PostgreSQL and S3, running.
pub struct ScaleOut {
    pub postgres: berth_testkit::Postgres,
    pub garage: berth_testkit::Garage,
    pub database: String,
    /// The federation key every node shares (upstream passwords are sealed with it).
    pub federation_key: PathBuf,
    _keys: tempfile::TempDir,
}

impl ScaleOut {
    pub fn start() -> ScaleOut {
        let postgres = berth_testkit::Postgres::start();
        let database = postgres.database("berth");
        let keys = tempfile::tempdir().unwrap();
        let federation_key = keys.path().join("federation.key");
        berth_federation::SealKey::load_or_create(&federation_key).unwrap();
        ScaleOut { postgres, garage: berth_testkit::Garage::start(), database, federation_key, _keys: keys }
    }

    pub fn s3(&self) -> berth::S3Config {
        let g = &self.garage;
        berth::S3Config {
            bucket: g.bucket.clone(),
            prefix: "registry".into(),
            region: g.region.clone(),
            endpoint: Some(g.endpoint.clone()),
            path_style: true,
            access_key_id: Some(g.access_key_id.clone()),
            secret_access_key: Some(g.secret_access_key.clone()),
            ..berth::S3Config::default()
        }
    }

    /// A plain S3 client of the bucket, to look at what the registry stored.
    pub fn bucket(&self) -> object_store::aws::AmazonS3 {
        let g = &self.garage;
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&g.bucket)
            .with_region(&g.region)
            .with_endpoint(&g.endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_access_key_id(&g.access_key_id)
            .with_secret_access_key(&g.secret_access_key)
            .build()
            .unwrap()
    }

    /// `--storage` for a `berth` process; credentials go in its environment.
    pub fn storage_url(&self) -> String {
        let g = &self.garage;
        format!("s3://{}/registry?endpoint={}&region={}&path_style=true", g.bucket, g.endpoint, g.region)
    }

    /// Starts `berth serve` as a child process on these stores (`data_dir` holds nothing).
    pub fn spawn(&self, data_dir: &Path) -> BerthProcess {
        self.spawn_env(data_dir, &[])
    }

    /// The same, with more environment variables.
    pub fn spawn_env(&self, data_dir: &Path, envs: &[(&str, &str)]) -> BerthProcess {
        let g = &self.garage;
        let key = self.federation_key.to_str().unwrap();
        let mut all = vec![
            ("AWS_ACCESS_KEY_ID", g.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", &g.secret_access_key),
            ("BERTH_FEDERATION_KEY_FILE", key),
        ];
        all.extend_from_slice(envs);
        BerthProcess::spawn_with(data_dir, &["--storage", &self.storage_url(), "--database", &self.database], &all)
    }

    /// The bucket as a plain S3 client sees it, not through Berth's S3 store.
    pub fn storage(&self) -> Storage {
        Storage::Bucket(self.bucket(), self.database.clone())
    }

    /// `(digest, storage key)` of every blob the metadata records, live or being removed.
    pub async fn recorded_blobs(&self) -> Vec<(String, String)> {
        recorded_blobs(&self.database).await
    }
}

/// `(digest, storage key)` of every blob recorded in the PostgreSQL database at `url`.
async fn recorded_blobs(url: &str) -> Vec<(String, String)> {
    use berth_meta::GcStore;
    let store = berth_meta::PgStore::open(url).await.expect("the test database");
    let mut all: Vec<(String, String)> = Vec::new();
    loop {
        let page = store.blob_keys(all.last().map(|(d, _)| d.as_str()), 1000).await.unwrap();
        let done = page.len() < 1000;
        all.extend(page);
        if done {
            return all;
        }
    }
}

/// A server's blob store looked at from outside the server, so that a test checks what
/// was kept instead of trusting the server's answers: the files under an embedded data
/// directory, or the objects in the bucket (under the prefix `registry/`, the layout in
/// the module doc of berth-storage's `s3.rs`). Entries are named by path or object key.
pub enum Storage {
    Files(PathBuf),
    /// The bucket, and the database whose records say which object holds which digest.
    Bucket(AmazonS3, String),
}

impl Storage {
    /// Staged upload bytes: files under `uploads/`; segment and multipart-marker objects
    /// under `registry/uploads/` (the parts of a multipart upload are not objects until
    /// it completes; its marker stands for them).
    pub async fn staged(&self) -> Vec<(String, u64)> {
        match self {
            Storage::Files(data) => files(&data.join("uploads")),
            Storage::Bucket(s3, _) => objects(s3, "registry/uploads").await,
        }
    }

    /// Stored blob bytes: files under `blobs/`; objects under `registry/objects/`.
    pub async fn blobs(&self) -> Vec<(String, u64)> {
        match self {
            Storage::Files(data) => files(&data.join("blobs")),
            Storage::Bucket(s3, _) => objects(s3, "registry/objects").await,
        }
    }

    /// `(digest, entry)` for every blob the store files under a digest: a file's name is
    /// its digest; in the bucket, the object `objects/<id>` of each recorded storage key
    /// `sha256/<hex>/<id>` that is there (the bucket itself names no digest: S3 objects are
    /// named after their upload, and the metadata says what each holds).
    pub async fn blobs_by_digest(&self) -> Vec<(String, String)> {
        match self {
            Storage::Files(data) => files(&data.join("blobs/sha256"))
                .into_iter()
                .map(|(path, _)| (format!("sha256:{}", path.rsplit('/').next().unwrap()), path))
                .collect(),
            Storage::Bucket(s3, database) => {
                let present: std::collections::HashSet<String> =
                    objects(s3, "registry/objects").await.into_iter().map(|(path, _)| path).collect();
                let mut out = Vec::new();
                for (digest, key) in recorded_blobs(database).await {
                    let (_, id) = key.rsplit_once('/').unwrap_or_else(|| panic!("storage key {key:?}"));
                    let path = format!("registry/objects/{id}");
                    if present.contains(&path) {
                        out.push((digest, path));
                    }
                }
                out
            }
        }
    }

    /// An entry's bytes.
    pub async fn read(&self, entry: &str) -> Vec<u8> {
        match self {
            Storage::Files(_) => std::fs::read(entry).unwrap_or_else(|e| panic!("reading {entry}: {e}")),
            Storage::Bucket(s3, _) => {
                let got = s3.get(&object_store::path::Path::from(entry)).await;
                let body = got.unwrap_or_else(|e| panic!("GET {entry}: {e}")).bytes().await;
                body.unwrap_or_else(|e| panic!("reading the body of {entry}: {e:?}")).to_vec()
            }
        }
    }

    /// Replaces an entry's bytes behind the server's back.
    pub async fn overwrite(&self, entry: &str, bytes: &[u8]) {
        match self {
            Storage::Files(_) => std::fs::write(entry, bytes).unwrap_or_else(|e| panic!("writing {entry}: {e}")),
            Storage::Bucket(s3, _) => {
                let payload = object_store::PutPayload::from(bytes.to_vec());
                s3.put(&object_store::path::Path::from(entry), payload).await.unwrap();
            }
        }
    }

    /// Writes an entry behind the server's back: `name` below `blobs/` (a file) or below
    /// `registry/objects/` (an object).
    pub async fn put_blob(&self, name: &str, bytes: &[u8]) {
        match self {
            Storage::Files(data) => {
                let path = data.join("blobs").join(name);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
            }
            Storage::Bucket(s3, _) => {
                let path = object_store::path::Path::from(format!("registry/objects/{name}"));
                s3.put(&path, bytes.to_vec().into()).await.unwrap();
            }
        }
    }

    /// Removes an entry behind the server's back.
    pub async fn remove(&self, entry: &str) {
        match self {
            Storage::Files(_) => std::fs::remove_file(entry).unwrap_or_else(|e| panic!("removing {entry}: {e}")),
            Storage::Bucket(s3, _) => s3.delete(&object_store::path::Path::from(entry)).await.unwrap(),
        }
    }
}

/// Every file below `dir` (none if it does not exist), with its size.
fn files(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            let len = std::fs::metadata(&path).unwrap().len();
            out.push((path.to_str().expect("UTF-8 test paths").to_owned(), len));
        }
    }
    out
}

/// Every object under `prefix/`, with its size.
async fn objects(s3: &AmazonS3, prefix: &str) -> Vec<(String, u64)> {
    let prefix = object_store::path::Path::from(prefix);
    let mut list = s3.list(Some(&prefix));
    let mut out = Vec::new();
    while let Some(meta) = list.next().await {
        let meta = meta.expect("listing the bucket");
        out.push((meta.location.to_string(), meta.size));
    }
    out
}

impl Backend {
    pub fn from_env() -> Backend {
        match std::env::var("BERTH_TEST_BACKEND").as_deref() {
            Ok("scaleout") => Backend { scaleout: Some(ScaleOut::start()) },
            Ok("embedded") | Err(_) => Backend { scaleout: None },
            Ok(other) => panic!("BERTH_TEST_BACKEND={other}: expected embedded or scaleout"),
        }
    }

    pub fn configure(&self, config: &mut berth::Config) {
        if let Some(s) = &self.scaleout {
            config.database.url = Some(s.database.clone());
            config.storage.url = Some(s.s3().into());
            config.federation.key_file = Some(s.federation_key.clone());
        }
    }

    pub fn is_embedded(&self) -> bool {
        self.scaleout.is_none()
    }

    /// Starts `berth serve` as a child process on these stores over `data_dir`.
    pub fn spawn(&self, data_dir: &Path) -> BerthProcess {
        self.spawn_env(data_dir, &[])
    }

    /// The same, with more environment variables (`BERTH_LOG=debug`, say).
    pub fn spawn_env(&self, data_dir: &Path, envs: &[(&str, &str)]) -> BerthProcess {
        match &self.scaleout {
            Some(s) => s.spawn_env(data_dir, envs),
            None => BerthProcess::spawn_with(data_dir, &[], envs),
        }
    }

    /// What the blob store holds, seen from outside; `data_dir` for the embedded store.
    pub fn storage(&self, data_dir: &Path) -> Storage {
        match &self.scaleout {
            Some(s) => s.storage(),
            None => Storage::Files(data_dir.to_owned()),
        }
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    backend: std::sync::Arc<Backend>,
    dir: tempfile::TempDir,
    shutdown: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// Starts a registry with default settings and an empty data directory.
    pub fn start() -> TestServer {
        TestServer::start_with(|_| {})
    }

    /// Starts a registry on the embedded stores whatever `BERTH_TEST_BACKEND` says, for
    /// tests that look into the data directory.
    pub fn start_embedded() -> TestServer {
        TestServer::start_embedded_with(|_| {})
    }

    /// [`TestServer::start_embedded`], after `configure` has adjusted its config.
    pub fn start_embedded_with(configure: impl FnOnce(&mut berth::Config)) -> TestServer {
        let backend = std::sync::Arc::new(Backend { scaleout: None });
        TestServer::start_in(backend, tempfile::tempdir().expect("temp dir"), configure)
    }

    /// Starts a registry on the scale-out stores whatever `BERTH_TEST_BACKEND` says (this
    /// pass's PostgreSQL and Garage, or its own), for tests of what only S3 can do.
    pub fn start_scaleout(configure: impl FnOnce(&mut berth::Config)) -> TestServer {
        let mut backend = Backend::from_env();
        if backend.is_embedded() {
            backend = Backend { scaleout: Some(ScaleOut::start()) };
        }
        TestServer::start_in(std::sync::Arc::new(backend), tempfile::tempdir().expect("temp dir"), configure)
    }

    /// Starts a registry after `configure` has adjusted its config.
    pub fn start_with(configure: impl FnOnce(&mut berth::Config)) -> TestServer {
        let backend = std::sync::Arc::new(Backend::from_env());
        TestServer::start_in(backend, tempfile::tempdir().expect("temp dir"), configure)
    }

    /// Stops the server (gracefully) and starts a new one on the same data directory.
    pub fn restart(self) -> TestServer {
        self.restart_with(|_| {})
    }

    /// [`TestServer::restart`], after `configure` has adjusted the new server's config.
    pub fn restart_with(mut self, configure: impl FnOnce(&mut berth::Config)) -> TestServer {
        self.stop();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestServer::start_in(std::sync::Arc::clone(&self.backend), dir, configure)
    }

    fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn start_in(
        backend: std::sync::Arc<Backend>,
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut berth::Config),
    ) -> TestServer {
        // The server logs why a request failed (a 5xx body says nothing); nextest shows a
        // failing test's stderr, so the cause comes with the failure.
        let _ = tracing_subscriber::fmt().with_env_filter("warn").try_init();
        let mut config = berth::Config::with_data_dir(dir.path().join("data"));
        backend.configure(&mut config);
        configure_access(&mut config);
        configure(&mut config);
        let tls = config.tls.cert.is_some();
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                berth::serve(config, listener, stop).await.expect("server failed");
            });
        });
        let server = TestServer { addr, backend, dir, shutdown, thread: Some(thread) };
        if tls {
            wait_ready_tls(addr)
        } else {
            wait_ready(addr)
        }
        server
    }

    /// `127.0.0.1:PORT`, as clients name a registry.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// What the server's blob store holds, seen from outside the server.
    pub fn storage(&self) -> Storage {
        self.backend.storage(&self.data_dir())
    }

    /// The system administrator's credentials (see [`admin`]).
    pub fn admin(&self) -> Creds {
        admin()
    }

    /// A scratch directory that lives as long as the server.
    pub fn scratch(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("scratch").join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `GET /v2/` (as the admin) until it answers 200 (at most 10 s).
pub fn wait_ready(addr: SocketAddr) {
    let request = format!("GET /v2/ HTTP/1.1\r\nHost: x\r\n{}Connection: close\r\n\r\n", admin().header_line());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        if let Ok(mut s) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            if s.write_all(request.as_bytes()).is_ok() {
                let mut buf = String::new();
                let _ = s.read_to_string(&mut buf);
                if buf.starts_with("HTTP/1.1 200") {
                    return;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("registry at {addr} did not become ready");
}

/// Polls `GET /v2/` over HTTPS (as the admin, any certificate accepted) until it answers
/// 200 (at most 10 s).
pub fn wait_ready_tls(addr: SocketAddr) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let url = format!("https://{addr}/v2/");
    while std::time::Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u", &admin().pair(), &url])
            .output()
            .expect("run curl");
        if out.stdout == b"200" {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("registry at https://{addr} did not become ready");
}

/// The address in `serving addr=HOST:PORT` (text log) or `"addr":"HOST:PORT"` (JSON).
fn reported_addr(line: &str) -> Option<&str> {
    if let Some(rest) = line.split(" addr=").nth(1) {
        return rest.split_whitespace().next();
    }
    line.split("\"addr\":\"").nth(1).and_then(|rest| rest.split('"').next())
}

/// The `berth` binary running as a child process (killable).
pub struct BerthProcess {
    pub addr: SocketAddr,
    child: Child,
    /// Everything it has written on stderr (its log) so far.
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

impl BerthProcess {
    /// Starts `berth serve` on a free loopback port over `data_dir`.
    pub fn spawn(data_dir: &Path) -> BerthProcess {
        BerthProcess::spawn_with(data_dir, &[], &[])
    }

    /// Starts `berth serve` with extra arguments and environment variables, and the
    /// admin's password in its environment.
    pub fn spawn_with(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> BerthProcess {
        let process = BerthProcess::launch(data_dir, args, envs);
        wait_ready(process.addr);
        process
    }

    /// The same, returning as soon as it logs its address, without asking it anything
    /// (for a server that speaks TLS).
    pub fn launch(data_dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> BerthProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .args(args)
            .env("BERTH_LOG", "info")
            .envs(access_env())
            .envs(envs.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth");
        // The server logs `serving addr=HOST:PORT`; read until it does, then keep
        // draining its output so it never blocks on a full pipe.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut kept = kept.lock().unwrap();
                kept.push_str(&line);
                kept.push('\n');
                drop(kept);
                if let Some(addr) = reported_addr(&line)
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(addr.to_owned());
                }
            }
        });
        let addr: SocketAddr = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("berth did not report its address")
            .parse()
            .expect("berth reported a bad address");
        BerthProcess { addr, child, log }
    }

    /// What the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then its exit status once it has exited (panics if it takes over `within`).
    pub fn terminate(mut self, within: Duration) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is touched.
        assert_eq!(unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) }, 0, "SIGTERM");
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berth still running {within:?} after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for BerthProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Panics unless `program` is on PATH. Client tests never skip: `.ci/run` installs
/// every client, and a machine without one fails loudly.
pub fn require(program: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is not installed; .ci/run installs it (see README)");
}

/// Runs a command with `input` on its stdin (a password, never an argument), panicking
/// with its output if it fails; returns stdout.
pub fn run_with_input(cmd: &mut Command, input: &str) -> String {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}", out.status);
    stdout
}

/// Runs a command, panicking with its output if it fails; returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\nstdout:\n{stdout}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stdout
}
