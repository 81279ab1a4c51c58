//! The real `flotilla` binary as a child process: started in a directory
//! (optionally with a configuration file and extra environment), talked to
//! over its socket, stopped with SIGTERM or killed with SIGKILL.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

/// A `flotilla` server process.
pub struct Server {
    child: Option<std::process::Child>,
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A client for it.
    pub http: reqwest::Client,
}

impl Server {
    /// Starts the binary in `dir` with no configuration (the defaults).
    pub async fn start(dir: &Path) -> Server {
        Server::start_with(dir, None, &[]).await
    }

    /// Starts the binary in `dir`, with `config` as `FLOTILLA_CONFIG` and
    /// `env` added to its environment.
    pub async fn start_with(dir: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> Server {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
        cmd.current_dir(dir)
            .env("FLOTILLA_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .env_remove("FLOTILLA_CONFIG")
            .env_remove("FAILPOINTS")
            .stderr(std::process::Stdio::piped());
        if let Some(c) = config {
            cmd.env("FLOTILLA_CONFIG", c);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = tokio::sync::oneshot::channel();
        // Reads the address line, then keeps echoing so the server never
        // blocks on a full pipe and its warnings show in the test output.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stderr).lines();
            let first = lines.next().and_then(|l| l.ok()).unwrap_or_default();
            let _ = tx.send(first);
            for line in lines.map_while(Result::ok) {
                eprintln!("[server] {line}");
            }
        });
        let line = tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the server printed its address")
            .expect("a line");
        let url = line.trim().rsplit(' ').next().expect("url").to_string();
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        flotilla_http::install_crypto_provider();
        Server {
            child: Some(child),
            url,
            http: reqwest::Client::new(),
        }
    }

    /// Sends and returns the status and the JSON body (Null when not JSON).
    pub async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("request sent");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `GET /api/v6{path}`, which must answer 200.
    pub async fn get(&self, path: &str) -> Value {
        let (code, body) = self
            .send(self.http.get(format!("{}/api/v6{path}", self.url)))
            .await;
        assert_eq!(code, 200, "GET {path}: {body}");
        body
    }

    /// `POST /api/v6{path}` with a JSON body, which must answer 200.
    pub async fn post(&self, path: &str, body: &Value) -> Value {
        let (code, reply) = self
            .send(
                self.http
                    .post(format!("{}/api/v6{path}", self.url))
                    .body(body.to_string()),
            )
            .await;
        assert_eq!(code, 200, "POST {path}: {reply}");
        reply
    }

    /// `PUT /api/v6{path}` with a JSON body, which must answer 200.
    pub async fn put(&self, path: &str, body: &Value) -> Value {
        let (code, reply) = self
            .send(
                self.http
                    .put(format!("{}/api/v6{path}", self.url))
                    .body(body.to_string()),
            )
            .await;
        assert_eq!(code, 200, "PUT {path}: {reply}");
        reply
    }

    /// Waits (at most `limit`) until `GET /history/{run_id}` satisfies
    /// `done`, and returns that run.
    pub async fn wait_run(
        &self,
        run_id: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let run = self.get(&format!("/history/{run_id}")).await;
            if done(&run) {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gave up waiting: {run}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM, and a clean exit.
    pub async fn stop(mut self) {
        let status = self.signal(nix::sys::signal::Signal::SIGTERM).await;
        assert!(status.success(), "{status:?}");
    }

    /// SIGKILL: no shutdown, no flushing; the job processes live on.
    pub async fn kill(mut self) {
        let _ = self.signal(nix::sys::signal::Signal::SIGKILL).await;
    }

    async fn signal(&mut self, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal");
        tokio::task::spawn_blocking(move || child.wait().expect("wait"))
            .await
            .expect("join")
    }
}

impl Drop for Server {
    /// A server a failed test leaves behind is killed.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs the binary in `dir` with `config` until it exits on its own (a
/// server that refuses to start); returns its exit status and stderr.
pub async fn run_to_exit(dir: &Path, config: &Path) -> (std::process::ExitStatus, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_flotilla"));
    cmd.current_dir(dir)
        .env("FLOTILLA_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env("FLOTILLA_CONFIG", config)
        .env_remove("FAILPOINTS")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the binary exits on its own")
        .expect("ran");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `s` as a TOML string (a JSON string is one), for configuration files.
pub fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}
