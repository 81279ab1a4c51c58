//! The real `flotilla` binary with the default configuration keeps
//! everything in `.flotilla-data/flotilla.db` across a restart:
//! definitions, runs with their status and events, history lists and the
//! local engine's logs.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// A `flotilla` server process started in `dir` with no configuration.
struct Server {
    child: std::process::Child,
    url: String,
    http: reqwest::Client,
}

impl Server {
    async fn start(dir: &Path) -> Server {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
            .current_dir(dir)
            .env("FLOTILLA_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the address line, then keeps draining so the server never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            for _ in lines {}
        });
        let line = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server printed its address")
            .expect("a line");
        let url = line.trim().rsplit(' ').next().expect("url").to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        flotilla_http::install_crypto_provider();
        Server {
            child,
            url,
            http: reqwest::Client::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> Value {
        let (code, body) = self
            .send(self.http.get(format!("{}/api/v6{path}", self.url)))
            .await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// SIGTERM, and a clean exit.
    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
        let status = tokio::task::spawn_blocking(move || self.child.wait().expect("wait"))
            .await
            .expect("join");
        assert!(status.success(), "{status:?}");
    }
}

#[tokio::test]
async fn the_default_binary_keeps_definitions_runs_events_and_logs_across_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let s = Server::start(dir.path()).await;
    let (code, def) = s
        .send(
            s.http.post(format!("{}/api/v6/task", s.url)).body(
                json!({"alias": "kept", "image": "ubuntu:latest", "group_name": "restart",
                   "command": "echo kept-across-restarts", "tags": ["durable"]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    let definition_id = def["definition_id"].as_str().expect("id").to_string();
    let (code, run) = s
        .send(
            s.http
                .put(format!("{}/api/v6/task/alias/kept/execute", s.url))
                .body(json!({"run_tags": {"owner_id": "alice"}}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let stopped = loop {
        let run = s.get(&format!("/history/{run_id}")).await;
        if run["status"] == "STOPPED" {
            break run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never stopped: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stopped["exit_code"], 0, "{stopped}");
    let events = s.get(&format!("/{run_id}/events")).await;
    assert!(events["total"].as_u64().expect("total") >= 3, "{events}");
    let log = s.get(&format!("/{run_id}/logs")).await;
    assert!(
        log["log"]
            .as_str()
            .unwrap_or("")
            .contains("kept-across-restarts"),
        "{log}"
    );
    s.stop().await;
    assert!(
        dir.path()
            .join(".flotilla-data")
            .join("flotilla.db")
            .is_file(),
        "the database is in the default data dir"
    );

    let s = Server::start(dir.path()).await;
    let again = s.get(&format!("/task/{definition_id}")).await;
    assert_eq!(again, def, "the definition");
    assert_eq!(
        s.get("/task/alias/kept").await["definition_id"],
        definition_id
    );
    assert_eq!(s.get("/tags").await["tags"], json!(["durable"]));
    let run_again = s.get(&format!("/history/{run_id}")).await;
    assert_eq!(run_again["status"], "STOPPED");
    assert_eq!(run_again["exit_code"], 0);
    assert_eq!(run_again, stopped, "the run as it was");
    assert_eq!(
        s.get(&format!("/{run_id}/events")).await,
        events,
        "its events"
    );
    let history = s.get("/history?status=STOPPED").await;
    assert_eq!(history["total"], 1, "{history}");
    assert_eq!(history["history"][0]["run_id"], run_id.as_str());
    let log_again = s.get(&format!("/{run_id}/logs")).await;
    assert!(
        log_again["log"]
            .as_str()
            .unwrap_or("")
            .contains("kept-across-restarts"),
        "the log after the restart: {log_again}"
    );
    s.stop().await;
}
