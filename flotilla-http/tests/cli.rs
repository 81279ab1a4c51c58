//! The `flotilla` binary: the client commands against a live server.

mod common;

use std::process::Command;

use common::{hello_world, start};

fn flotilla(server: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    c.env("FLOTILLA_SERVER", server)
        .env_remove("FLOTILLA_TOKEN")
        .env("RUST_LOG", "warn");
    c
}

async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().expect("flotilla runs"))
        .await
        .expect("join")
}

#[tokio::test]
async fn cli_define_run_follow_logs_history_stop() {
    let s = start().await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("hello.json");
    std::fs::write(&file, hello_world()).expect("write");
    // define
    let mut c = flotilla(&s.url);
    c.arg("define").arg(&file);
    let out = output(c).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("defined hello-flotilla"));
    // run --follow: status changes, the log, the run's exit code
    let mut c = flotilla(&s.url);
    c.args([
        "run",
        "hello-flotilla",
        "--env",
        "USERNAME=me",
        "--owner",
        "me",
        "--follow",
    ]);
    let out = output(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello me"), "{stdout}");
    assert!(stderr.contains("STOPPED (exit code 0)"), "{stderr}");
    // a failing run: the exit code comes through
    s.define("fails", "echo bye; exit 7").await;
    let mut c = flotilla(&s.url);
    c.args([
        "run",
        "fails",
        "--owner",
        "me",
        "--follow",
        "--cluster",
        "default",
    ]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("bye"));
    // run without --follow prints the id; logs and history; --json
    let mut c = flotilla(&s.url);
    c.args(["--json", "run", "fails", "--owner", "me"]);
    let out = output(c).await;
    assert!(out.status.success());
    let run: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json run");
    let run_id = run["run_id"].as_str().expect("id").to_string();
    s.wait_stopped(&run_id).await;
    let mut c = flotilla(&s.url);
    c.args(["logs", &run_id]);
    let out = output(c).await;
    assert_eq!(String::from_utf8_lossy(&out.stdout), "bye\n");
    let mut c = flotilla(&s.url);
    c.args(["history", "--status", "stopped"]);
    let out = output(c).await;
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{table}");
    assert!(
        table.contains(&run_id) && table.contains("3 of 3 runs"),
        "{table}"
    );
    // stop
    s.define("long", "sleep 30").await;
    let long = s.execute("long", "me").await;
    let long_id = long["run_id"].as_str().expect("id").to_string();
    s.wait_running(&long_id).await;
    let mut c = flotilla(&s.url);
    c.args(["stop", &long_id]);
    let out = output(c).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = s.wait_stopped(&long_id).await;
    assert_eq!(stopped["failure"], "terminated");
    // errors are readable and fail
    let mut c = flotilla(&s.url);
    c.args(["run", "no-such-alias", "--owner", "me"]);
    let out = output(c).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("404"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn serve_rejects_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("flotilla.toml");
    std::fs::write(&file, "[http]\nbody_limit_bytes = \"lots\"\n").expect("write");
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    c.arg("serve").arg("--config").arg(&file);
    let out = output(c).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("body_limit_bytes"), "{err}");
    let mut c = Command::new(env!("CARGO_BIN_EXE_flotilla"));
    c.env("FLOTILLA_AUTH", "tokens")
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0");
    let out = output(c).await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("tokens"));
}

#[cfg(unix)]
#[tokio::test]
async fn serve_by_default_and_stop_gracefully_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().expect("dir");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_flotilla"))
        .current_dir(dir.path())
        .env("FLOTILLA_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let line = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stderr).lines();
        lines.next().expect("a line").expect("utf8")
    })
    .await
    .expect("join");
    let url = line.trim().rsplit(' ').next().expect("url").to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    flotilla_http::install_crypto_provider();
    let h = reqwest::get(format!("{url}/health")).await.expect("health");
    assert_eq!(h.status().as_u16(), 200);
    assert!(
        dir.path().join(".flotilla-data").is_dir(),
        "default data dir"
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("sigterm");
    let status = tokio::task::spawn_blocking(move || child.wait().expect("wait"))
        .await
        .expect("join");
    assert!(status.success(), "{status:?}");
}
