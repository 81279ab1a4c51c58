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

fn stdout_of(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn cli_reads_runs_definitions_and_clusters_and_prints_whole_logs() {
    let s = start().await;
    // A log of 3 MB: several pages, all printed.
    s.define(
        "big",
        "head -c 3000000 /dev/zero | tr '\\0' 'x'; echo; echo the-end",
    )
    .await;
    // run with every execute flag; the idempotence key returns one run
    let run_args = [
        "--json",
        "run",
        "big",
        "--owner",
        "me",
        "--memory",
        "96",
        "--cpu",
        "250",
        "--label",
        "team=ds",
        "--idempotence-key",
        "k-1",
    ];
    let mut c = flotilla(&s.url);
    c.args(run_args);
    let first: serde_json::Value =
        serde_json::from_str(&stdout_of(&output(c).await)).expect("json");
    let mut c = flotilla(&s.url);
    c.args(run_args);
    let second: serde_json::Value =
        serde_json::from_str(&stdout_of(&output(c).await)).expect("json");
    let run_id = first["run_id"].as_str().expect("id").to_string();
    assert_eq!(
        second["run_id"], first["run_id"],
        "one run per idempotence key"
    );
    assert_eq!(first["memory"], 96);
    assert_eq!(first["cpu"], 250);
    assert_eq!(first["labels"]["team"], "ds");
    s.wait_stopped(&run_id).await;
    let mut c = flotilla(&s.url);
    c.args(["logs", &run_id]);
    let log = stdout_of(&output(c).await);
    assert_eq!(log.matches('x').count(), 3_000_000, "the whole log");
    assert!(log.ends_with("the-end\n"), "{}", &log[log.len() - 40..]);
    // get, status, events
    let mut c = flotilla(&s.url);
    c.args(["get", &run_id]);
    let got: serde_json::Value = serde_json::from_str(&stdout_of(&output(c).await)).expect("json");
    assert_eq!(got["status"], "STOPPED");
    let mut c = flotilla(&s.url);
    c.args(["status", &run_id]);
    let st = stdout_of(&output(c).await);
    assert!(st.contains("STOPPED (exit code 0)"), "{st}");
    let mut c = flotilla(&s.url);
    c.args(["events", &run_id]);
    let ev = stdout_of(&output(c).await);
    assert!(ev.contains("QUEUED") && ev.contains("STOPPED"), "{ev}");
    // definitions: list, get (by id and alias), update, delete
    let def_id = first["definition_id"].as_str().expect("def").to_string();
    let mut c = flotilla(&s.url);
    c.args(["definitions", "list"]);
    let list = stdout_of(&output(c).await);
    assert!(
        list.contains(&def_id) && list.contains("1 of 1 definitions"),
        "{list}"
    );
    let mut c = flotilla(&s.url);
    c.args(["definitions", "get", "big", "--alias"]);
    let def: serde_json::Value = serde_json::from_str(&stdout_of(&output(c).await)).expect("json");
    assert_eq!(def["definition_id"], def_id.as_str());
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("update.json");
    std::fs::write(&file, r#"{"memory": 128}"#).expect("write");
    let mut c = flotilla(&s.url);
    c.args(["definitions", "update", &def_id]).arg(&file);
    stdout_of(&output(c).await);
    let mut c = flotilla(&s.url);
    c.args(["definitions", "get", &def_id]);
    let def: serde_json::Value = serde_json::from_str(&stdout_of(&output(c).await)).expect("json");
    assert_eq!(def["memory"], 128);
    // clusters
    let mut c = flotilla(&s.url);
    c.arg("clusters");
    let cl = stdout_of(&output(c).await);
    assert!(cl.contains("default"), "{cl}");
    // --follow --timeout gives up with 124 while the run goes on
    s.define("slow", "sleep 30").await;
    let mut c = flotilla(&s.url);
    c.args(["run", "slow", "--owner", "me", "--follow", "--timeout", "1"]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(124),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // a stopped run that did not exit 0 never exits 0
    let slow_id = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    let (_, h) = s.get("/history?alias=slow").await;
    let slow_id = if slow_id.is_empty() {
        h["history"][0]["run_id"].as_str().expect("id").to_string()
    } else {
        slow_id
    };
    // An exit code of -1 (what a status report or an engine may record
    // for a killed job) used to become exit status 0.
    let (code, rep) = s
        .put(
            &format!("/{slow_id}/status"),
            &serde_json::json!({"status": "STOPPED", "exit_code": -1, "exit_reason": "killed"}),
        )
        .await;
    assert_eq!(code, 200, "{rep}");
    let stopped = s.wait_stopped(&slow_id).await;
    assert_eq!(stopped["exit_code"], -1);
    let mut c = flotilla(&s.url);
    c.args(["logs", "--follow", &slow_id]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(255),
        "exit code -1 is 255 to a shell, never success"
    );
    let mut c = flotilla(&s.url);
    c.args(["definitions", "delete", &def_id]);
    stdout_of(&output(c).await);
    let (code, _) = s.get(&format!("/task/{def_id}")).await;
    assert_eq!(code, 404);
    s.server.shutdown().await;
}

#[tokio::test]
async fn cli_template_run_renders_the_payload_and_follows_to_the_exit_code() {
    let s = start().await;
    let name = format!("cli-tpl-{}", uuid::Uuid::now_v7().simple());
    let template = |command: &str| {
        serde_json::json!({
            "template_name": name,
            "image": "ubuntu:latest",
            "schema": {"type": "object", "required": ["who"], "properties": {"who": {"type": "string"}}},
            "command_template": command
        })
    };
    for command in [
        "echo hello {{ .who | upper }}",
        "echo v2 {{ .who }}; exit 3",
    ] {
        let (code, reply) = s
            .send(
                s.http
                    .post(format!("{}/api/v7/template", s.url))
                    .body(template(command).to_string()),
            )
            .await;
        assert_eq!(code, 200, "{reply}");
    }
    // A payload file, an older version, --follow: its log and exit code.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("payload.json");
    std::fs::write(&file, r#"{"who": "ada"}"#).expect("write");
    let mut c = flotilla(&s.url);
    c.args([
        "template",
        "run",
        &name,
        "--version",
        "1",
        "--follow",
        "--owner",
        "me",
    ])
    .arg("--payload")
    .arg(&file);
    let out = output(c).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("hello ADA"), "{stdout}");
    assert!(stderr.contains("STOPPED (exit code 0)"), "{stderr}");
    // Inline JSON, the latest version: its exit code comes through.
    let mut c = flotilla(&s.url);
    c.args([
        "template",
        "run",
        &name,
        "--payload",
        r#"{"who": "bob"}"#,
        "--follow",
    ]);
    let out = output(c).await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("v2 bob"));
    // A payload breaking the schema: the server's error names the field.
    let mut c = flotilla(&s.url);
    c.args(["template", "run", &name, "--payload", r#"{"who": 5}"#]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("template_payload.who"), "{stderr}");
    // Not JSON, not an object.
    let mut c = flotilla(&s.url);
    c.args(["template", "run", &name, "--payload", "[1]"]);
    let out = output(c).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--payload"));
    s.server.shutdown().await;
}
