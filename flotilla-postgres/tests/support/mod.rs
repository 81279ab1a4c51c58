//! Test support: a real PostgreSQL for every test, and a counting engine.
//!
//! - [`fresh_db`] gives each test its own database `t_<random>` on the
//!   shared server: the one named by `FLOTILLA_TEST_DATABASE_URL` when set,
//!   otherwise a throwaway cluster started from the installed server
//!   binaries (`/usr/lib/postgresql/*/bin`, or `FLOTILLA_PG_BIN`) as the
//!   `postgres` user when running as root, on a free port of 127.0.0.1, one
//!   per test binary, stopped and removed when the binary exits (a guard
//!   process watches a pipe from this process).
//! - [`PgCluster::start`] starts a private cluster a test controls
//!   (restart, stop), removed on drop.
//! - If PostgreSQL is neither reachable nor installed, tests fail when `CI`
//!   is set, and print a loud warning and return early otherwise.
#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use flotilla::{Capabilities, Definition, Engine, Run, StatusUpdate, Submitted, TaskState};
use flotilla_postgres::{PgOptions, PgStore};

/// Where to get help when PostgreSQL is missing.
pub const HOW: &str = "set FLOTILLA_TEST_DATABASE_URL=postgres://USER@HOST:PORT/DB (a role that may CREATE DATABASE), \
or install the PostgreSQL server binaries (apt-get install postgresql) so the tests start a throwaway cluster \
from /usr/lib/postgresql/*/bin (or FLOTILLA_PG_BIN)";

/// The directory with `initdb`, `pg_ctl`, `pgbench`, if installed.
pub fn pg_bin() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("FLOTILLA_PG_BIN") {
        let p = PathBuf::from(dir);
        return p.join("initdb").exists().then_some(p);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Says PostgreSQL is missing: a failure in CI, a loud warning elsewhere.
pub fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}: PostgreSQL is required in CI and none is available: {HOW}");
    }
    // Straight to the process's stderr: the harness does not capture it,
    // so the skip shows even when the test passes.
    let _ = std::io::stderr().write_all(
        format!(
            "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
             !!! SKIPPED {what}: no PostgreSQL available.\n!!! {HOW}\n\
             !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
        )
        .as_bytes(),
    );
}

fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false)
    })
}

/// Runs a server binary, as `postgres` when we are root.
fn pg_command(bin: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(tool));
        c
    } else {
        Command::new(bin.join(tool))
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

/// A PostgreSQL cluster started from the installed binaries.
pub struct PgCluster {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub port: u16,
    /// Closing this pipe (at drop or process exit) makes the guard stop
    /// the server and remove `dir`.
    guard: Option<std::process::ChildStdin>,
    guard_child: Option<std::process::Child>,
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PgCluster(127.0.0.1:{})", self.port)
    }
}

impl PgCluster {
    /// Starts a cluster with test settings plus `extra` `name=value`
    /// settings; `None` when the binaries are not installed.
    pub fn start(extra: &[&str]) -> Option<PgCluster> {
        let bin = pg_bin()?;
        let dir = std::env::temp_dir().join(format!(
            "flotilla-pg-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        std::fs::create_dir_all(&dir).expect("create cluster dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("run chown");
            assert!(ok.success(), "chown {} to postgres failed", dir.display());
        }
        // The guard outlives us: when our end of its stdin closes (normal
        // exit, panic, SIGKILL), it stops the server and removes the dir.
        let stop = format!(
            "{} -D {} stop -m immediate >/dev/null 2>&1",
            pg_command_line(&bin, "pg_ctl"),
            dir.join("data").display()
        );
        let mut guard_child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat >/dev/null; {stop}; rm -rf '{}'",
                dir.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the cluster guard");
        let guard = guard_child.stdin.take();
        let out = pg_command(&bin, "initdb")
            .arg("-D")
            .arg(dir.join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let mut settings = vec![
            "listen_addresses=127.0.0.1".to_string(),
            format!("port={port}"),
            format!("unix_socket_directories={}", dir.display()),
            "fsync=off".into(),
            "synchronous_commit=off".into(),
            "full_page_writes=off".into(),
            "max_connections=400".into(),
        ];
        settings.extend(extra.iter().map(|s| s.to_string()));
        let mut conf = String::new();
        for s in &settings {
            let (k, v) = s.split_once('=').expect("setting is name=value");
            conf.push_str(&format!("{k} = '{v}'\n"));
        }
        let conf_path = dir.join("data").join("postgresql.auto.conf");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&conf_path)
            .expect("open postgresql.auto.conf");
        f.write_all(conf.as_bytes()).expect("write settings");
        let cluster = PgCluster {
            bin,
            dir,
            port,
            guard,
            guard_child: Some(guard_child),
        };
        cluster.pg_ctl(&["start"]);
        Some(cluster)
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = pg_command(&self.bin, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .arg("-w")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run pg_ctl");
        assert!(
            out.status.success(),
            "pg_ctl {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
        );
    }

    /// Restarts the server the hard way (`-m immediate`: every connection
    /// dies, crash recovery on start).
    pub fn restart(&self) {
        self.pg_ctl(&["restart", "-m", "immediate"]);
    }

    /// Stops the server (`-m immediate`).
    pub fn stop(&self) {
        self.pg_ctl(&["stop", "-m", "immediate"]);
    }

    /// Starts it again after [`PgCluster::stop`].
    pub fn start_again(&self) {
        self.pg_ctl(&["start"]);
    }

    /// URL of database `db`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }
}

fn pg_command_line(bin: &Path, tool: &str) -> String {
    let tool = bin.join(tool);
    if is_root() {
        format!("runuser -u postgres -- {}", tool.display())
    } else {
        tool.display().to_string()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Closing the pipe makes the guard stop the server and clean up.
        self.guard.take();
        if let Some(mut c) = self.guard_child.take() {
            let _ = c.wait();
        }
    }
}

/// The shared server of this test binary: an admin URL.
enum Server {
    External(String),
    Owned(PgCluster),
    Missing,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("FLOTILLA_TEST_DATABASE_URL")
            && !url.is_empty()
        {
            return Server::External(url);
        }
        match PgCluster::start(&[]) {
            Some(c) => Server::Owned(c),
            None => Server::Missing,
        }
    })
}

/// `url` with its database replaced by `db`.
pub fn with_database(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let prefix = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{prefix}/{db}?{q}"),
        None => format!("{prefix}/{db}"),
    }
}

/// A fresh database of the shared server.
#[derive(Debug, Clone)]
pub struct TestDb {
    pub url: String,
    pub name: String,
}

impl TestDb {
    /// A migrated store on this database.
    pub async fn store(&self) -> PgStore {
        self.store_with(PgOptions::default()).await
    }

    /// A migrated store with options.
    pub async fn store_with(&self, opts: PgOptions) -> PgStore {
        PgStore::connect(&self.url, opts)
            .await
            .expect("connect to the test database")
    }
}

/// Creates a database named `t_<random>` on the server at `admin_url`.
pub async fn create_database(admin_url: &str) -> TestDb {
    use sqlx::Connection;
    let name = format!("t_{:016x}", fastrand::u64(..));
    let mut c = sqlx::PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the test server {admin_url}: {e}. {HOW}"));
    // An identifier cannot be bound; the name is ours, hex only.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut c)
        .await
        .expect("CREATE DATABASE");
    let _ = c.close().await;
    TestDb {
        url: with_database(admin_url, &name),
        name,
    }
}

/// A fresh database for one test, or `None` (after a loud warning) when
/// PostgreSQL is unavailable outside CI. In CI it panics instead.
pub async fn fresh_db(test: &str) -> Option<TestDb> {
    let admin = match server() {
        Server::External(url) => url.clone(),
        Server::Owned(c) => c.url("postgres"),
        Server::Missing => {
            missing(test);
            return None;
        }
    };
    Some(create_database(&admin).await)
}

/// A private cluster for tests that restart it, or `None` (after a loud
/// warning) outside CI when the binaries are not installed.
pub fn private_cluster(test: &str, extra: &[&str]) -> Option<PgCluster> {
    let c = PgCluster::start(extra);
    if c.is_none() {
        missing(test);
    }
    c
}

/// Logs to stderr when `RUST_LOG` is set.
pub fn init_tracing() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

// ------------------------------------------------------------ counting engine

/// Submits per `(run_id, attempt)`, shared by every engine made from it,
/// and when each run was first submitted.
#[derive(Debug, Default, Clone)]
pub struct Counts(
    pub Arc<Mutex<HashMap<(String, u32), u32>>>,
    pub Arc<Mutex<HashMap<String, std::time::Instant>>>,
);

impl Counts {
    /// When `run_id` was first submitted.
    pub fn submitted_at(&self, run_id: &str) -> Option<std::time::Instant> {
        self.1.lock().expect("times lock").get(run_id).copied()
    }

    pub fn get(&self, run_id: &str, attempt: u32) -> u32 {
        self.0
            .lock()
            .expect("counts lock")
            .get(&(run_id.to_string(), attempt))
            .copied()
            .unwrap_or(0)
    }

    /// How many runs were submitted at least once.
    pub fn submitted(&self) -> usize {
        self.1.lock().expect("times lock").len()
    }

    pub fn snapshot(&self) -> HashMap<(String, u32), u32> {
        self.0.lock().expect("counts lock").clone()
    }
}

/// An instant engine: every submit is counted and the run is reported
/// STOPPED with exit code 0 at the next poll.
#[derive(Debug, Clone)]
pub struct CountingEngine {
    pub counts: Counts,
}

impl CountingEngine {
    pub fn new(counts: Counts) -> Self {
        CountingEngine { counts }
    }
}

#[async_trait]
impl Engine for CountingEngine {
    fn name(&self) -> &str {
        "counting"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn submit(&self, run: &Run, _definition: &Definition) -> flotilla::Result<Submitted> {
        self.counts
            .1
            .lock()
            .expect("times lock")
            .entry(run.run_id.clone())
            .or_insert_with(std::time::Instant::now);
        let mut m = self.counts.0.lock().expect("counts lock");
        *m.entry((run.run_id.clone(), run.attempt)).or_insert(0) += 1;
        Ok(Submitted {
            engine_ref: format!("counting:{}:{}", run.run_id, run.attempt),
            instance: None,
        })
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let m = self.counts.0.lock().expect("counts lock");
        Ok(runs
            .iter()
            .map(|r| {
                if m.contains_key(&(r.run_id.clone(), r.attempt)) {
                    let mut u = StatusUpdate::new(&r.run_id, r.attempt, TaskState::Stopped);
                    u.exit_code = Some(0);
                    u
                } else {
                    StatusUpdate::new(&r.run_id, r.attempt, TaskState::Missing)
                }
            })
            .collect())
    }

    async fn terminate(&self, _run: &Run, _reason: &str) -> flotilla::Result<()> {
        Ok(())
    }
}

/// A service config for fast tests: short leases and polls.
pub fn fast_config(replica: &str) -> flotilla::ServiceConfig {
    let mut cfg = flotilla::ServiceConfig {
        replica_id: replica.to_string(),
        ..Default::default()
    };
    let w = &mut cfg.workers;
    w.queue_lease = Duration::from_secs(5);
    w.receive_wait = Duration::from_secs(1);
    w.status_poll_interval = Duration::from_millis(100);
    w.poll_batch = 500;
    w.lease_ttl = Duration::from_millis(1500);
    w.reconcile_interval = Duration::from_secs(2);
    w.queued_stale_after = Duration::from_secs(20);
    w.missing_grace = Duration::from_secs(30);
    cfg
}
