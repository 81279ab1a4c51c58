//! flotilla-os compatibility: replays the request shapes its clients send
//! and checks the response keys they read.

mod common;

use common::start;
use serde_json::{Value, json};

fn keys(v: &Value, expected: &[&str]) {
    for k in expected {
        assert!(v.get(*k).is_some(), "missing key {k} in {v}");
    }
}

const DEFINITION_KEYS: &[&str] = &[
    "definition_id",
    "alias",
    "group_name",
    "image",
    "command",
    "memory",
    "env",
    "tags",
];
/// Keys flotilla-os emits on every run (`state/models.go`); `exit_code`,
/// `started_at` and `finished_at` are left out until known.
const RUN_KEYS: &[&str] = &[
    "run_id",
    "definition_id",
    "alias",
    "image",
    "cluster",
    "status",
    "queued_at",
    "env",
    "task_arn",
    "instance",
    "group_name",
    "user",
    "engine",
    "pod_events",
    "cloudtrail_notifications",
    "execution_request_custom",
    "attempt_count",
    "description",
];

/// What flotilla-os clients read of a run, with its type: objects they
/// index without checks, and no `null` where flotilla-os emits a number or
/// leaves the field out.
fn check_run_types(run: &Value) {
    keys(run, RUN_KEYS);
    assert!(run["instance"]["instance_id"].is_string(), "{run}");
    assert!(run["instance"]["dns_name"].is_string(), "{run}");
    assert!(run["pod_events"].is_array(), "{run}");
    assert!(
        run["cloudtrail_notifications"]["Records"].is_array(),
        "{run}"
    );
    assert!(run["execution_request_custom"].is_object(), "{run}");
    assert!(run["task_arn"].is_string(), "{run}");
    assert!(run["user"].is_string(), "{run}");
    assert!(run["attempt_count"].is_u64(), "{run}");
    for (k, v) in run.as_object().expect("object") {
        assert!(!v.is_null(), "{k} is null in {run}");
    }
    if run["status"] == "STOPPED" {
        assert!(run["exit_code"].is_i64(), "{run}");
        assert!(run["finished_at"].is_string(), "{run}");
    }
}

#[tokio::test]
async fn flotilla_os_request_shapes_and_response_keys() {
    let s = start().await;
    // create (flotilla-os sends extra keys and nulls; both are accepted)
    let (code, def) = s
        .post("/task", &json!({
            "alias": "compat", "group_name": "g", "image": "ubuntu:latest", "memory": 512,
            "cpu": null, "env": [{"name": "A", "value": "1"}], "command": "echo \"compat ${A}\"",
            "tags": ["x"], "container_name": "ignored", "privileged": false
        }))
        .await;
    assert_eq!(code, 200, "{def}");
    keys(&def, DEFINITION_KEYS);
    assert!(def["env"].is_array());
    let id = def["definition_id"].as_str().expect("id").to_string();
    // update (flotilla-os PUTs the whole definition back)
    let mut whole = def.clone();
    whole["memory"] = json!(1024);
    let (code, upd) = s.put(&format!("/task/{id}"), &whole).await;
    assert_eq!(code, 200, "{upd}");
    assert_eq!(upd["memory"], 1024);
    // get, alias
    let (code, got) = s.get(&format!("/task/{id}")).await;
    assert_eq!(code, 200);
    keys(&got, DEFINITION_KEYS);
    let (code, got) = s.get("/task/alias/compat").await;
    assert_eq!((code, got["definition_id"].clone()), (200, json!(id)));
    // list
    let (_, list) = s
        .get("/task?limit=50&offset=0&sort_by=alias&order=asc&alias=compat")
        .await;
    keys(
        &list,
        &[
            "total",
            "definitions",
            "limit",
            "offset",
            "sort_by",
            "order",
            "env_filters",
            "alias",
        ],
    );
    assert_eq!(list["alias"], json!(["compat"]));
    // execute by id (v4 shape) and by alias
    let body = json!({"cluster": "default", "env": [{"name": "A", "value": "2"}], "run_tags": {"owner_id": "flotilla-os"}, "command": null, "memory": null, "cpu": null, "gpu": null});
    let (code, run) = s.put(&format!("/task/{id}/execute"), &body).await;
    assert_eq!(code, 200, "{run}");
    check_run_types(&run);
    let (code, run2) = s.put("/task/alias/compat/execute", &body).await;
    assert_eq!(code, 200, "{run2}");
    let run_id = run["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&run_id).await;
    s.wait_stopped(run2["run_id"].as_str().expect("id")).await;
    check_run_types(&done);
    assert_eq!(done["exit_code"], 0);
    // list runs with two statuses + cluster + env filter, echoed as lists
    let (code, h) = s
        .get("/history?limit=100&offset=0&sort_by=started_at&order=desc&status=STOPPED&status=RUNNING&cluster_name=default&env=A%7C2")
        .await;
    assert_eq!(code, 200, "{h}");
    keys(
        &h,
        &[
            "total",
            "history",
            "limit",
            "offset",
            "sort_by",
            "order",
            "env_filters",
            "status",
            "cluster_name",
        ],
    );
    assert_eq!(h["status"], json!(["STOPPED", "RUNNING"]));
    assert_eq!(h["cluster_name"], json!(["default"]));
    assert_eq!(h["env_filters"], json!({"A": "2"}));
    assert_eq!(h["total"], 2);
    for r in h["history"].as_array().expect("history") {
        check_run_types(r);
    }
    // logs
    let (code, logs) = s.get(&format!("/{run_id}/logs")).await;
    assert_eq!(code, 200);
    keys(&logs, &["log", "last_seen"]);
    assert!(logs["log"].as_str().expect("log").contains("compat 2"));
    // terminate
    s.define("long", "sleep 30").await;
    let (_, long) = s.put("/task/alias/long/execute", &body).await;
    let long_id = long["run_id"].as_str().expect("id");
    let long_def = long["definition_id"].as_str().expect("def");
    let (code, t) = s
        .delete(&format!("/task/{long_def}/history/{long_id}"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(t["terminated"], true);
    // delete definition
    let (code, d) = s.delete(&format!("/task/{id}")).await;
    assert_eq!((code, d), (200, json!({"deleted": true})));
    // groups, tags, clusters
    let (_, g) = s.get("/groups").await;
    keys(&g, &["total", "groups"]);
    let (_, t) = s.get("/tags").await;
    keys(&t, &["total", "tags"]);
    let (_, c) = s.get("/clusters").await;
    keys(&c, &["clusters"]);
    s.server.shutdown().await;
}

#[tokio::test]
async fn flotilla_os_v2_and_v4_execute_routes_events_and_unknown_definitions() {
    let s = start().await;
    let def = s.define("legacy", "echo legacy").await;
    let id = def["definition_id"].as_str().expect("id").to_string();
    let raw = |v: &str, path: &str| format!("{}/api/{v}{path}", s.url);
    // v2: run_tags must carry owner_email and team_name; the owner is the
    // e-mail.
    let (code, err) = s
        .send(
            s.http
                .put(raw("v2", &format!("/task/{id}/execute")))
                .body(json!({"cluster": "default", "run_tags": {"owner_id": "x"}}).to_string()),
        )
        .await;
    assert_eq!(code, 400, "{err}");
    assert_eq!(
        err["error"],
        "run_tags must exist in body and contain [owner_email] and [team_name]"
    );
    let (code, v2) = s
        .send(
            s.http.put(raw("v2", &format!("/task/{id}/execute"))).body(
                json!({"cluster": "default", "env": [{"name": "A", "value": "1"}],
                       "run_tags": {"owner_email": "ada@example.com", "team_name": "ds"}})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(code, 200, "{v2}");
    check_run_types(&v2);
    assert_eq!(v2["user"], "ada@example.com");
    let v2_id = v2["run_id"].as_str().expect("id").to_string();
    let (code, got) = s
        .send(s.http.get(raw("v2", &format!("/history/{v2_id}"))))
        .await;
    assert_eq!((code, got["run_id"].clone()), (200, json!(v2_id)));
    // v6's payload route: a definition's run was executed with nothing
    // custom, an unknown run is a 404.
    let (code, payload) = s.get(&format!("/history/{v2_id}/payload")).await;
    assert_eq!((code, payload), (200, json!({})));
    let (code, err) = s.get("/history/no-such-run/payload").await;
    assert_eq!(code, 404, "{err}");
    assert!(err["error"].is_string(), "{err}");
    // v4: owner_id and the overrides, keys in flotilla-os's Go casing.
    let (code, v4) = s
        .send(
            s.http.put(raw("v4", &format!("/task/{id}/execute"))).body(
                json!({"cluster": "default", "run_tags": {"owner_id": "bob"},
                       "Command": "echo v4", "Memory": 64, "Cpu": null})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(code, 200, "{v4}");
    check_run_types(&v4);
    assert_eq!(
        (v4["user"].clone(), v4["memory"].clone()),
        (json!("bob"), json!(64))
    );
    let v4_id = v4["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&v4_id).await;
    check_run_types(&done);
    assert!(s.log_text(&v4_id).await.contains("v4"));
    // The events reply: flotilla-os's {total, pod_events} beside flotilla's
    // status changes.
    let (code, ev) = s.get(&format!("/{v4_id}/events")).await;
    assert_eq!(code, 200, "{ev}");
    let pod_events = ev["pod_events"].as_array().expect("pod_events");
    assert_eq!(ev["total"].as_u64(), Some(pod_events.len() as u64));
    assert!(
        pod_events.len() >= 3,
        "queued, pending/running, stopped: {ev}"
    );
    for e in pod_events {
        for k in [
            "timestamp",
            "event_type",
            "reason",
            "source_object",
            "message",
        ] {
            assert!(e[k].is_string(), "{k} in {e}");
        }
    }
    assert_eq!(pod_events.last().expect("last")["reason"], "STOPPED");
    assert_eq!(
        ev["events"].as_array().map(Vec::len),
        Some(pod_events.len())
    );
    // The runs of a definition that does not exist: 404, not an empty list.
    let (code, err) = s.get("/task/no-such-definition/history").await;
    assert_eq!(code, 404, "{err}");
    assert!(err["error"].is_string());
    // The served document describes the legacy routes with typed bodies.
    let (_, doc) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    for path in [
        "/api/v2/task/{definition_id}/execute",
        "/api/v2/history/{run_id}",
        "/api/v4/task/{definition_id}/execute",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    assert!(doc["components"]["schemas"]["RunBody"].is_object());
    assert!(doc["components"]["schemas"]["ExecuteRequest"].is_object());
    s.server.shutdown().await;
}
