//! The real `flotilla` binary with the default configuration keeps
//! everything in `.flotilla-data/flotilla.db` across a restart:
//! definitions, runs with their status and events, history lists and the
//! local engine's logs.
#![cfg(unix)]

mod binary;

use std::time::Duration;

use binary::Server;
use serde_json::json;

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
