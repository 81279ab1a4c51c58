//! flotilla-os's v5 worker routes change what really runs on this replica:
//! a real server on a socket (SQLite store, local engine), admin and user
//! tokens.

mod common;

use std::time::Duration;

use common::{TestServer, start_with};
use flotilla_http::AuthMode;
use flotilla_http::config::TokenConfig;
use serde_json::{Value, json};

const ADMIN: &str = "admin-token-1";
const USER: &str = "user-token-1";

async fn server() -> TestServer {
    start_with(|c| {
        c.auth = AuthMode::Tokens;
        c.tokens = vec![
            TokenConfig {
                token: ADMIN.into(),
                owner: "ops".into(),
                admin: true,
                ..Default::default()
            },
            TokenConfig {
                token: USER.into(),
                owner: "ada".into(),
                ..Default::default()
            },
        ];
    })
    .await
}

fn v(s: &TestServer, version: &str, path: &str) -> String {
    format!("{}/api/{version}{path}", s.url)
}

async fn get(s: &TestServer, token: &str, url: String) -> (u16, Value) {
    s.send(s.http.get(url).bearer_auth(token)).await
}

async fn put(s: &TestServer, token: &str, url: String, body: &Value) -> (u16, Value) {
    s.send(s.http.put(url).bearer_auth(token).body(body.to_string()))
        .await
}

async fn run_status(s: &TestServer, run_id: &str) -> Value {
    let (code, run) = get(s, USER, v(s, "v6", &format!("/history/{run_id}"))).await;
    assert_eq!(code, 200, "{run}");
    run
}

fn count_of(list: &Value, worker: &str) -> Value {
    list["workers"]
        .as_array()
        .expect("workers")
        .iter()
        .find(|w| w["worker_type"] == worker)
        .map(|w| w["count_per_instance"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn submit_worker_count_0_keeps_new_runs_queued_and_1_runs_them() {
    let s = server().await;
    let (code, def) = s
        .send(s.http.post(v(&s, "v6", "/task")).bearer_auth(USER).body(
            json!({"alias": "w", "image": "ubuntu:latest", "group_name": "g", "command": "echo after-restart"})
                .to_string(),
        ))
        .await;
    assert_eq!(code, 200, "{def}");
    // Anyone may read the workers: flotilla-os's shape, all running.
    let (code, list) = get(&s, USER, v(&s, "v5", "/worker")).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["total"], 4, "{list}");
    for w in list["workers"].as_array().expect("workers") {
        assert!(w["worker_type"].is_string(), "{w}");
        assert_eq!(w["count_per_instance"], 1, "{w}");
        assert_eq!(w["engine"], "local", "{w}");
    }
    // Only an admin may change them.
    let stop = json!({"worker_type": "submit", "count_per_instance": 0, "engine": "eks"});
    let (code, err) = put(&s, USER, v(&s, "v5", "/worker/submit"), &stop).await;
    assert_eq!(code, 403, "{err}");
    assert!(err["error"].is_string(), "{err}");
    let (code, batch_err) = put(&s, USER, v(&s, "v5", "/worker"), &json!([stop])).await;
    assert_eq!(code, 403, "{batch_err}");
    let (_, still) = get(&s, USER, v(&s, "v5", "/worker/submit")).await;
    assert_eq!(
        still["count_per_instance"], 1,
        "a refused change changes nothing"
    );

    // Count 0: the submit worker stops on this replica; a new run stays
    // QUEUED.
    let (code, w) = put(&s, ADMIN, v(&s, "v5", "/worker/submit"), &stop).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(
        w,
        json!({"worker_type": "submit", "count_per_instance": 0, "engine": "local"})
    );
    let (_, w) = get(&s, USER, v(&s, "v5", "/worker/submit")).await;
    assert_eq!(w["count_per_instance"], 0, "{w}");
    let (code, run) = s
        .send(
            s.http
                .put(v(&s, "v6", "/task/alias/w/execute"))
                .bearer_auth(USER)
                .body(json!({"run_tags": {"owner_id": "ada"}}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    // Ten receive waits of the test config (200 ms): a running submit
    // worker takes one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let queued = run_status(&s, &run_id).await;
    assert_eq!(queued["status"], "QUEUED", "{queued}");

    // Count 1: it starts again and the waiting run runs.
    let start = json!({"count_per_instance": 1});
    let (code, w) = put(&s, ADMIN, v(&s, "v5", "/worker/submit"), &start).await;
    assert_eq!(code, 200, "{w}");
    assert_eq!(w["count_per_instance"], 1, "{w}");
    let done = s
        .send(
            s.http
                .get(v(&s, "v6", &format!("/history/{run_id}")))
                .bearer_auth(USER),
        )
        .await;
    assert_eq!(done.0, 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = run_status(&s, &run_id).await;
        if r["status"] == "STOPPED" {
            assert_eq!(r["exit_code"], 0, "{r}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn worker_changes_this_server_cannot_make_are_400_naming_the_field() {
    let s = server().await;
    let cases = [
        (
            "/worker/submit",
            json!({"count_per_instance": 2}),
            "count_per_instance",
        ),
        (
            "/worker/status",
            json!({"count_per_instance": 3}),
            "singleton",
        ),
        (
            "/worker/retry",
            json!({"count_per_instance": -1}),
            "count_per_instance",
        ),
        (
            "/worker/bogus",
            json!({"count_per_instance": 1}),
            "worker_type",
        ),
        (
            "/worker/retry",
            json!({"worker_type": "status", "count_per_instance": 1}),
            "worker_type",
        ),
        (
            "/worker/retry",
            json!({"count_per_instance": 1, "engine": "ecs"}),
            "engine",
        ),
        ("/worker/retry", json!({}), "count_per_instance"),
    ];
    for (path, body, field) in cases {
        let (code, err) = put(&s, ADMIN, v(&s, "v5", path), &body).await;
        assert_eq!(code, 400, "{path} {body}: {err}");
        let msg = err["error"].as_str().expect("error");
        assert!(msg.contains(field), "{path} {body}: {msg}");
    }
    // A batch is checked whole before anything changes.
    let (code, err) = put(
        &s,
        ADMIN,
        v(&s, "v5", "/worker"),
        &json!([{"worker_type": "retry", "count_per_instance": 0}, {"count_per_instance": 0}]),
    )
    .await;
    assert_eq!(code, 400, "{err}");
    assert!(
        err["error"]
            .as_str()
            .expect("error")
            .starts_with("[1].worker_type"),
        "{err}"
    );
    let (_, list) = get(&s, ADMIN, v(&s, "v5", "/worker")).await;
    assert_eq!(count_of(&list, "retry"), 1, "{list}");
    let (code, err) = get(&s, ADMIN, v(&s, "v5", "/worker/bogus")).await;
    assert_eq!(code, 400, "{err}");
    // A valid batch applies in order and answers every worker.
    let (code, list) = put(
        &s,
        ADMIN,
        v(&s, "v5", "/worker"),
        &json!([
            {"worker_type": "retry", "count_per_instance": 0, "engine": "eks"},
            {"worker_type": "reconcile", "count_per_instance": 0},
            {"worker_type": "reconcile", "count_per_instance": 1}
        ]),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["total"], 4, "{list}");
    assert_eq!(count_of(&list, "retry"), 0, "{list}");
    assert_eq!(count_of(&list, "reconcile"), 1, "{list}");
    assert_eq!(count_of(&list, "submit"), 1, "{list}");
    s.server.shutdown().await;
}
