//! Shared test support: a real server on 127.0.0.1:0 with the memory
//! backends, the local engine and short worker intervals.
#![allow(dead_code)]

use std::time::Duration;

use flotilla_http::{Config, RunningServer};
use serde_json::Value;

/// A running server and its data directory.
pub struct TestServer {
    pub server: RunningServer,
    pub url: String,
    pub http: reqwest::Client,
    _dir: tempfile::TempDir,
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        data_dir: dir.to_path_buf(),
        ..Config::default()
    };
    config.workers.receive_wait = Duration::from_millis(200);
    config.workers.status_poll_interval = Duration::from_millis(200);
    config.workers.reconcile_interval = Duration::from_millis(500);
    config.workers.lease_ttl = Duration::from_secs(3);
    config.http.stream_poll_ms = 100;
    config.http.shutdown_grace_ms = 3000;
    config
}

/// Starts a server with the test configuration changed by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> TestServer {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = test_config(dir.path());
    tweak(&mut config);
    flotilla_http::install_crypto_provider();
    let server = flotilla_http::spawn(config).await.expect("server starts");
    let url = server.url();
    TestServer {
        server,
        url,
        http: reqwest::Client::new(),
        _dir: dir,
    }
}

pub async fn start() -> TestServer {
    start_with(|_| {}).await
}

impl TestServer {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/v6{path}", self.url)
    }

    /// Sends and returns status and JSON body (Null when not JSON).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body read");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(self.api(path))).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.post(self.api(path)).body(body.to_string()))
            .await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.send(self.http.put(self.api(path)).body(body.to_string()))
            .await
    }

    pub async fn delete(&self, path: &str) -> (u16, Value) {
        self.send(self.http.delete(self.api(path))).await
    }

    /// Defines `alias` running `command`.
    pub async fn define(&self, alias: &str, command: &str) -> Value {
        let (code, def) = self
            .post(
                "/task",
                &serde_json::json!({"alias": alias, "image": "ubuntu:latest", "group_name": "tests", "command": command, "tags": ["t1"]}),
            )
            .await;
        assert_eq!(code, 200, "define {alias}: {def}");
        def
    }

    /// Executes `alias` as `owner`.
    pub async fn execute(&self, alias: &str, owner: &str) -> Value {
        let (code, run) = self
            .put(
                &format!("/task/alias/{alias}/execute"),
                &serde_json::json!({"run_tags": {"owner_id": owner}}),
            )
            .await;
        assert_eq!(code, 200, "execute {alias}: {run}");
        run
    }

    /// Polls `GET /history/{run_id}` until the run is STOPPED.
    pub async fn wait_stopped(&self, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (code, run) = self.get(&format!("/history/{run_id}")).await;
            assert_eq!(code, 200, "{run}");
            if run["status"] == "STOPPED" {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not stop: {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Polls until the run is RUNNING.
    pub async fn wait_running(&self, run_id: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let (_, run) = self.get(&format!("/history/{run_id}")).await;
            if run["status"] == "RUNNING" {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run {run_id} did not start: {run}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The whole log of a run.
    pub async fn log_text(&self, run_id: &str) -> String {
        let (code, body) = self.get(&format!("/{run_id}/logs")).await;
        assert_eq!(code, 200, "{body}");
        body["log"].as_str().unwrap_or("").to_string()
    }
}

/// The quick-start definition of flotilla-os.
pub fn hello_world() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/hello-world.json"
    ))
    .expect("examples/hello-world.json")
}

/// A server on PostgreSQL at `url` (store and queue) with a cluster of its
/// own, its default, so runs of other users of the database are not picked
/// up; returns the server and the cluster.
pub async fn start_on_postgres(url: String) -> (TestServer, String) {
    let cluster = format!("http-{}", uuid::Uuid::now_v7().simple());
    let c2 = cluster.clone();
    let s = start_with(move |c| {
        c.store = flotilla_http::StoreKind::Postgres;
        c.queue = flotilla_http::QueueKind::Postgres;
        c.database_url = Some(url);
        c.default_cluster = c2.clone();
        c.clusters = vec![c2];
    })
    .await;
    (s, cluster)
}

/// The PostgreSQL the tests may write to (`FLOTILLA_TEST_DATABASE_URL`).
/// Without it `test` fails when `CI` is set, and otherwise says loudly
/// that it did not run.
pub fn test_database_url(test: &str) -> Option<String> {
    if let Ok(url) = std::env::var("FLOTILLA_TEST_DATABASE_URL") {
        return Some(url);
    }
    let how = "set FLOTILLA_TEST_DATABASE_URL=postgres://USER@127.0.0.1:PORT/DB";
    if std::env::var_os("CI").is_some() {
        panic!("{test}: PostgreSQL is required in CI: {how}");
    }
    eprintln!("WARNING: {test} did not run: {how}");
    None
}
