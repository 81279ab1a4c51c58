//! The real `flotilla` binary, killed with SIGKILL and restarted, runs
//! every job exactly once and reports its real exit code — on PostgreSQL
//! and on the embedded default (SQLite), with the local engine.
//!
//! Each job appends `started` and `finished` to a marker file of its own
//! (`$MARKS/$FLOTILLA_RUN_ID`), so executions are counted by the jobs' side
//! effects, not by flotilla's records. Three crash points:
//! - (a) runs RUNNING when the server dies, finishing while it is down;
//! - (b) runs RUNNING when the server dies and still running at restart;
//! - (c) between the engine's submit and the PENDING write (the
//!   `submit-after-engine` failpoint pauses there; feature `failpoints`).
//!
//! `missing_grace` is short (2 s), so a restarted server that took adopted
//! work for lost would retry it within the test and be caught.
#![cfg(unix)]

mod binary;
mod common;

use std::path::PathBuf;
use std::time::Duration;

use binary::{Server, toml_string};
use serde_json::json;

/// The PostgreSQL tests share one database, where only one replica may run
/// the local engine at a time: they take turns.
static POSTGRES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where the server keeps its state.
enum Backend {
    /// `store = queue = "postgres"` on this database.
    Postgres(String),
    /// The default: SQLite in the data directory.
    Sqlite,
}

/// A server's directory, configuration and the jobs' marker directory.
struct Site {
    dir: tempfile::TempDir,
    marks: PathBuf,
    backend: Backend,
    cluster: String,
}

impl Site {
    fn new(backend: Backend) -> Site {
        let dir = tempfile::tempdir().expect("dir");
        let marks = dir.path().join("marks");
        std::fs::create_dir(&marks).expect("marks dir");
        Site {
            dir,
            marks,
            backend,
            // A cluster of its own, so a shared database's other runs are
            // not this test's.
            cluster: format!("crash-{}", uuid::Uuid::now_v7().simple()),
        }
    }

    /// Writes a configuration with the given workers and returns its path.
    fn config(&self, workers: &[&str]) -> PathBuf {
        let store = match &self.backend {
            Backend::Postgres(url) => format!(
                "store = \"postgres\"\nqueue = \"postgres\"\ndatabase_url = {}\n",
                toml_string(url)
            ),
            Backend::Sqlite => String::new(),
        };
        let text = format!(
            "{store}data_dir = {data}\ndefault_cluster = \"{c}\"\nclusters = [\"{c}\"]\n\
             enabled_workers = [{w}]\n\n[workers]\nqueue_lease = 3000\nreceive_wait = 200\n\
             status_poll_interval = 300\nlease_ttl = 3000\nreconcile_interval = 1000\n\
             missing_grace = 2000\n",
            data = toml_string(&self.dir.path().join("data").to_string_lossy()),
            c = self.cluster,
            w = workers
                .iter()
                .map(|w| format!("\"{w}\""))
                .collect::<Vec<_>>()
                .join(", "),
        );
        let path = self
            .dir
            .path()
            .join(format!("flotilla-{}.toml", workers.len()));
        std::fs::write(&path, text).expect("config");
        path
    }

    async fn start(&self) -> Server {
        self.start_with(&["submit", "status", "retry", "reconcile"], &[])
            .await
    }

    async fn start_with(&self, workers: &[&str], env: &[(&str, &str)]) -> Server {
        let config = self.config(workers);
        Server::start_with(self.dir.path(), Some(&config), env).await
    }

    /// Defines the counting job.
    async fn define(&self, s: &Server) {
        let def = json!({
            "alias": self.cluster, "group_name": "crash", "image": "busybox",
            "memory": 16,
            "command": "echo started >> \"$MARKS/$FLOTILLA_RUN_ID\"; sleep \"$NAP\"; \
                        echo finished >> \"$MARKS/$FLOTILLA_RUN_ID\"; exit \"$CODE\"",
            "env": [{"name": "MARKS", "value": self.marks.to_string_lossy()}],
        });
        s.post("/task", &def).await;
    }

    /// Executes `n` runs that sleep `nap` seconds; their exit codes cycle
    /// through 0, 3 and 42. Returns `(run_id, exit code)`.
    async fn execute(&self, s: &Server, n: usize, nap: u32) -> Vec<(String, i64)> {
        let mut runs = Vec::new();
        for i in 0..n {
            let code = [0, 3, 42][i % 3];
            let run = s
                .put(
                    &format!("/task/alias/{}/execute", self.cluster),
                    &json!({
                        "cluster": self.cluster,
                        "env": [{"name": "NAP", "value": nap.to_string()},
                                {"name": "CODE", "value": code.to_string()}],
                        "run_tags": {"owner_id": "crash"},
                    }),
                )
                .await;
            runs.push((run["run_id"].as_str().expect("run id").to_string(), code));
        }
        runs
    }

    /// The lines of a run's marker file.
    fn marks_of(&self, run_id: &str) -> Vec<String> {
        std::fs::read_to_string(self.marks.join(run_id))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Waits until every run's job has written `finished`.
    async fn wait_jobs_finished(&self, runs: &[(String, i64)]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !runs
            .iter()
            .all(|(id, _)| self.marks_of(id).iter().any(|l| l == "finished"))
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "jobs never finished"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every run ends STOPPED with its job's exit code, in attempt 1, and
    /// its job ran exactly once.
    async fn assert_each_ran_once(&self, s: &Server, runs: &[(String, i64)], what: &str) {
        for (id, code) in runs {
            let run = s
                .wait_run(id, Duration::from_secs(90), |r| r["status"] == "STOPPED")
                .await;
            assert_eq!(run["exit_code"], json!(code), "{what}: exit code of {run}");
            assert_eq!(run["attempt"], 1, "{what}: attempt of {run}");
            assert_eq!(
                self.marks_of(id),
                ["started", "finished"],
                "{what}: executions of {id} (by its marker file)"
            );
        }
    }
}

async fn wait_all_running(s: &Server, runs: &[(String, i64)]) {
    for (id, _) in runs {
        s.wait_run(id, Duration::from_secs(60), |r| r["status"] == "RUNNING")
            .await;
    }
}

/// Scenarios (a) and (b), then (c) when the failpoints are compiled in.
async fn kill_and_restart(site: Site) {
    let s = site.start().await;
    site.define(&s).await;

    // (a) Killed while RUNNING; the jobs finish while the server is down.
    let a = site.execute(&s, 5, 1).await;
    wait_all_running(&s, &a).await;
    s.kill().await;
    site.wait_jobs_finished(&a).await;
    // The supervisor records the exit status just after the job's last
    // line; the restart comes after that.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = site.start().await;
    site.assert_each_ran_once(&s, &a, "(a) finished during the outage")
        .await;

    // (b) Killed while RUNNING; still running at restart.
    let b = site.execute(&s, 5, 6).await;
    wait_all_running(&s, &b).await;
    s.kill().await;
    let s = site.start().await;
    let alive: Vec<bool> = b
        .iter()
        .map(|(id, _)| !site.marks_of(id).iter().any(|l| l == "finished"))
        .collect();
    assert!(alive.iter().any(|a| *a), "(b) needs jobs alive at restart");
    site.assert_each_ran_once(&s, &b, "(b) running at restart")
        .await;

    #[cfg(feature = "failpoints")]
    {
        // (c) Queued with no submit worker, then a server whose submit
        // pauses after the engine started the job and before PENDING is
        // written: killed there, restarted.
        s.stop().await;
        let s = site
            .start_with(&["status", "retry", "reconcile"], &[])
            .await;
        let c = site.execute(&s, 3, 1).await;
        s.stop().await;
        let s = site
            .start_with(
                &["submit", "status", "retry", "reconcile"],
                // One submit at a time: the paused failpoint blocks its
                // thread, and a second submit caught half-way through its
                // spawn by the kill would be a different scenario (an
                // attempt whose start is unknown, never retried).
                &[
                    ("FAILPOINTS", "submit-after-engine=pause"),
                    ("FLOTILLA_WORKERS__SUBMIT_CONCURRENCY", "1"),
                ],
            )
            .await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !c.iter().any(|(id, _)| !site.marks_of(id).is_empty()) {
            assert!(tokio::time::Instant::now() < deadline, "(c) no job started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        s.kill().await;
        let s = site.start().await;
        site.assert_each_ran_once(&s, &c, "(c) killed between submit and PENDING")
            .await;
        s.stop().await;
    }
    #[cfg(not(feature = "failpoints"))]
    s.stop().await;
}

#[tokio::test]
async fn a_killed_default_server_runs_each_job_once() {
    kill_and_restart(Site::new(Backend::Sqlite)).await;
}

#[tokio::test]
async fn a_killed_postgres_server_runs_each_job_once() {
    let Some(url) = common::test_database_url("a_killed_postgres_server_runs_each_job_once") else {
        return;
    };
    let _turn = POSTGRES.lock().await;
    kill_and_restart(Site::new(Backend::Postgres(url))).await;
}

/// #10 item 13: a second replica with the local engine on the same store
/// would take the first one's processes for lost; it is refused at start,
/// naming why. Once the first one is killed, a replacement starts (after
/// at most the lease's time to live).
async fn one_replica_runs_the_local_engine(site: Site) {
    let first = site.start().await;
    let config = site.config(&["submit", "status", "retry", "reconcile"]);
    let (status, stderr) = binary::run_to_exit(site.dir.path(), &config).await;
    assert!(!status.success(), "a second replica was refused: {stderr}");
    assert!(
        stderr.contains("runs the local engine on this store") && stderr.contains("one replica"),
        "the refusal says why: {stderr}"
    );
    first.kill().await;
    let replacement = site.start().await;
    replacement.stop().await;
}

#[tokio::test]
async fn a_second_local_engine_replica_on_sqlite_is_refused() {
    one_replica_runs_the_local_engine(Site::new(Backend::Sqlite)).await;
}

#[tokio::test]
async fn a_second_local_engine_replica_on_postgres_is_refused() {
    let Some(url) =
        common::test_database_url("a_second_local_engine_replica_on_postgres_is_refused")
    else {
        return;
    };
    let _turn = POSTGRES.lock().await;
    one_replica_runs_the_local_engine(Site::new(Backend::Postgres(url))).await;
}
