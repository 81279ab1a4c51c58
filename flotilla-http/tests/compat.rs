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
const RUN_KEYS: &[&str] = &[
    "run_id",
    "definition_id",
    "alias",
    "image",
    "cluster",
    "status",
    "exit_code",
    "queued_at",
    "started_at",
    "finished_at",
    "env",
    "task_arn",
    "instance",
    "group_name",
];

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
    keys(&run, RUN_KEYS);
    let (code, run2) = s.put("/task/alias/compat/execute", &body).await;
    assert_eq!(code, 200, "{run2}");
    let run_id = run["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&run_id).await;
    s.wait_stopped(run2["run_id"].as_str().expect("id")).await;
    keys(&done, RUN_KEYS);
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
        keys(r, RUN_KEYS);
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
