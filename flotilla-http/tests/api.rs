//! The API over real HTTP: a server on 127.0.0.1:0, the memory backends and
//! the local engine (real processes).

mod common;

use std::time::Duration;

use common::{TestServer, hello_world, start};
use futures::StreamExt;
use serde_json::{Value, json};

#[tokio::test]
async fn quick_start_of_flotilla_os_works_verbatim() {
    let s = start().await;
    // curl -XPOST localhost:3000/api/v6/task --data @examples/hello-world.json
    // (curl sends application/x-www-form-urlencoded)
    let (code, def) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(hello_world()),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    assert_eq!(def["alias"], "hello-flotilla");
    let (code, run) = s
        .send(
            s.http
                .put(s.api("/task/alias/hello-flotilla/execute"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(r#"{"cluster":"default","env":[{"name":"USERNAME","value":"me"}],"run_tags":{"owner_id":"me"}}"#),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(run["status"], "QUEUED");
    let done = s.wait_stopped(&run_id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert!(s.log_text(&run_id).await.contains("hello me"));
    // The flotilla-os spelling of the same log.
    let (code, body) = s.get(&format!("/{run_id}/logs?raw_text=true")).await;
    assert_eq!(code, 200);
    assert_eq!(body, Value::Null, "raw text is not JSON");
    let text = s
        .http
        .get(s.api(&format!("/{run_id}/logs?raw_text=true")))
        .send()
        .await
        .expect("raw")
        .text()
        .await
        .expect("text");
    assert!(text.contains("hello me"), "{text}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn definitions_crud_lists_groups_and_tags() {
    let s = start().await;
    let a = s.define("alpha", "echo a").await;
    let (code, _) = s
        .post(
            "/task",
            &json!({"alias": "beta", "image": "busybox:1", "group_name": "other", "memory": 1024, "tags": ["t2", "t1"], "env": [{"name": "K", "value": "V"}]}),
        )
        .await;
    assert_eq!(code, 200);
    // duplicate alias
    let (code, body) = s
        .post("/task", &json!({"alias": "alpha", "image": "x"}))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(body["error"].is_string());
    let id = a["definition_id"].as_str().expect("id");
    let (code, got) = s.get(&format!("/task/{id}")).await;
    assert_eq!((code, got["alias"].clone()), (200, json!("alpha")));
    let (code, got) = s.get("/task/alias/beta").await;
    assert_eq!((code, got["memory"].clone()), (200, json!(1024)));
    // update: fields replace, alias cannot change
    let (code, upd) = s
        .put(
            &format!("/task/{id}"),
            &json!({"alias": "alpha", "memory": 2048, "command": "echo b"}),
        )
        .await;
    assert_eq!(code, 200, "{upd}");
    assert_eq!(upd["memory"], 2048);
    assert_eq!(upd["command"], "echo b");
    let (code, body) = s
        .put(&format!("/task/{id}"), &json!({"alias": "renamed"}))
        .await;
    assert_eq!(code, 400);
    assert!(body["error"].as_str().expect("msg").contains("alias"));
    // list, filters, sort, echo
    let (code, list) = s.get("/task?sort_by=memory&order=desc&limit=10").await;
    assert_eq!(code, 200, "{list}");
    for key in [
        "total",
        "definitions",
        "limit",
        "offset",
        "sort_by",
        "order",
        "env_filters",
    ] {
        assert!(list.get(key).is_some(), "missing {key}: {list}");
    }
    assert_eq!(list["total"], 2);
    assert_eq!(list["sort_by"], "memory");
    let (_, list) = s.get("/task?group_name=other").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["group_name"], json!(["other"]));
    let (_, list) = s.get("/task?alias=alp").await;
    assert_eq!(list["definitions"][0]["alias"], "alpha");
    let (_, list) = s.get("/task?image=busy").await;
    assert_eq!(list["total"], 1);
    let (_, list) = s.get("/task?env=K%7CV").await;
    assert_eq!(list["total"], 1);
    assert_eq!(list["env_filters"], json!({"K": "V"}));
    // groups and tags are real distinct values
    let (code, groups) = s.get("/groups").await;
    assert_eq!(code, 200);
    assert_eq!(groups["groups"], json!(["other", "tests"]));
    assert_eq!(groups["total"], 2);
    let (_, tags) = s.get("/tags").await;
    assert_eq!(tags["tags"], json!(["t1", "t2"]));
    let (_, tags) = s.get("/tags?name=2").await;
    assert_eq!(tags["tags"], json!(["t2"]));
    // delete
    let (code, body) = s.delete(&format!("/task/{id}")).await;
    assert_eq!((code, body), (200, json!({"deleted": true})));
    let (code, _) = s.get(&format!("/task/{id}")).await;
    assert_eq!(code, 404);
    let (code, _) = s.delete(&format!("/task/{id}")).await;
    assert_eq!(code, 404);
    s.server.shutdown().await;
}

fn error_of(body: &Value) -> String {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("not a JSON error: {body}"))
        .to_string()
}

#[tokio::test]
async fn error_paths_are_json_and_name_the_problem() {
    let s = start_with_small_body().await;
    s.define("e1", "true").await;
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            s.http.post(s.api("/task")).body("{not json"),
            400,
            "malformed JSON",
        ),
        (s.http.post(s.api("/task")).body(""), 400, "request body"),
        (
            s.http.post(s.api("/task")).body("[1,2]"),
            400,
            "JSON object",
        ),
        (
            s.http
                .post(s.api("/task"))
                .body(r#"{"alias":"x","image":"y","memory":"lots"}"#),
            400,
            "memory",
        ),
        (
            s.http.post(s.api("/task")).body(r#"{"alias":"x"}"#),
            400,
            "image",
        ),
        (
            s.http
                .post(s.api("/task"))
                .body(r#"{"alias":"bad alias!","image":"y"}"#),
            400,
            "alias",
        ),
        (
            s.http
                .post(s.api("/task"))
                .body(r#"{"alias":"x","image":"y","env":[{"name":"FLOTILLA_X","value":"1"}]}"#),
            400,
            "env[0].name",
        ),
        (
            s.http.post(s.api("/task")).body(format!(
                r#"{{"alias":"big","image":"y","command":"{}"}}"#,
                "x".repeat(5000)
            )),
            413,
            "larger than",
        ),
        (
            s.http.put(s.api("/task/alias/e1/execute")).body("{}"),
            400,
            "run_tags must exist in body and contain [owner_id]",
        ),
        (
            s.http
                .put(s.api("/task/alias/e1/execute"))
                .body(r#"{"run_tags":{"owner_id":""}}"#),
            400,
            "run_tags must exist in body and contain [owner_id]",
        ),
        (
            s.http
                .put(s.api("/task/alias/nope/execute"))
                .body(r#"{"run_tags":{"owner_id":"me"}}"#),
            404,
            "",
        ),
        (
            s.http
                .put(s.api("/task/alias/e1/execute"))
                .body(r#"{"run_tags":{"owner_id":"me"},"cluster":"nowhere"}"#),
            400,
            "cluster",
        ),
        (
            s.http
                .put(s.api("/task/alias/e1/execute"))
                .body(r#"{"run_tags":{"owner_id":"me"},"memory":"x"}"#),
            400,
            "memory",
        ),
        (
            s.http
                .put(s.api("/task/alias/e1/execute"))
                .body(r#"{"run_tags":{"owner_id":"me"},"cluster":"nowhere"}"#),
            400,
            "cluster",
        ),
        (s.http.get(s.api("/task?sort_by=cpu")), 400, "sort_by"),
        (s.http.get(s.api("/task?order=sideways")), 400, "order"),
        (s.http.get(s.api("/task?limit=-1")), 400, "limit"),
        (s.http.get(s.api("/task?colour=red")), 400, "colour"),
        (s.http.get(s.api("/task?env=NOPIPE")), 400, "env"),
        (s.http.get(s.api("/history?status=DONE")), 400, "status"),
        (s.http.get(s.api("/history?sort_by=memory")), 400, "sort_by"),
        (
            s.http.get(s.api("/history?started_at_since=yesterday")),
            400,
            "started_at_since",
        ),
        (s.http.get(s.api("/history?cursor=zz")), 400, "cursor"),
        (s.http.get(s.api("/history/nope")), 404, ""),
        (s.http.get(s.api("/task/history/nope")), 404, ""),
        (s.http.delete(s.api("/task/x/history/nope")), 404, ""),
        (s.http.get(s.api("/nope/status")), 404, ""),
        (
            s.http
                .put(s.api("/nope/status"))
                .body(r#"{"status":"RUNNING"}"#),
            404,
            "",
        ),
        (s.http.get(s.api("/nope/events")), 404, ""),
        (s.http.get(s.api("/nope/logs")), 404, ""),
        (s.http.get(s.api("/nope/logs/stream")), 404, ""),
        (s.http.get(s.api("/task/nope")), 404, ""),
        (s.http.get(s.api("/task/alias/nope")), 404, ""),
        (s.http.get(s.api("/clusters/nope")), 404, ""),
        (s.http.get(s.api("/groups?limit=x")), 400, "limit"),
        (
            s.http.get(format!("{}/api/v6/no/such/route/here", s.url)),
            404,
            "no route",
        ),
        (s.http.patch(s.api("/task")), 405, "not allowed"),
    ];
    for (req, code, needle) in cases {
        let (got, body) = s.send(req).await;
        assert_eq!(got, code, "{body}");
        let msg = error_of(&body);
        assert!(msg.contains(needle), "{msg:?} should mention {needle:?}");
    }
    s.server.shutdown().await;
}

async fn start_with_small_body() -> TestServer {
    common::start_with(|c| c.http.body_limit_bytes = 4096).await
}

#[tokio::test]
async fn runs_history_filters_terminate_status_and_events() {
    let s = start().await;
    let def = s.define("sleeper", "sleep 30").await;
    let def_id = def["definition_id"].as_str().expect("id").to_string();
    s.define("quick", "echo quick").await;
    // a cluster in maintenance keeps runs QUEUED
    let (code, c) = s
        .post(
            "/clusters",
            &json!({"name": "parked", "status": "maintenance"}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    // case-insensitive keys of flotilla-os clients
    let (code, run) = s
        .put(
            "/task/alias/quick/execute",
            &json!({"Cluster": "default", "ENV": [{"NAME": "COLOR", "VALUE": "blue"}], "run_tags": {"OWNER_ID": "carol"}}),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["owner"], "carol");
    let quick_id = run["run_id"].as_str().expect("id").to_string();
    s.wait_stopped(&quick_id).await;
    // execute by id
    let (code, sleeping) = s
        .put(&format!("/task/{def_id}/execute"), &json!({"run_tags": {"owner_id": "dave"}, "labels": {"Team": "x"}, "description": "long"}))
        .await;
    assert_eq!(code, 200, "{sleeping}");
    let sleep_id = sleeping["run_id"].as_str().expect("id").to_string();
    s.wait_running(&sleep_id).await;
    let (_, parked) = s
        .put(
            "/task/alias/quick/execute",
            &json!({"cluster": "parked", "run_tags": {"owner_id": "erin"}}),
        )
        .await;
    let parked_id = parked["run_id"].as_str().expect("id").to_string();
    assert_eq!(parked["status"], "QUEUED");

    // history: two statuses, cluster and env filters, echoed as lists
    let (code, h) = s.get("/history?status=RUNNING&status=STOPPED&cluster_name=default&sort_by=queued_at&order=asc").await;
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["total"], 2);
    assert_eq!(h["status"], json!(["RUNNING", "STOPPED"]));
    assert_eq!(h["cluster_name"], json!(["default"]));
    assert_eq!(h["history"][0]["run_id"], quick_id.as_str());
    let (_, h) = s.get("/history?env=COLOR%7Cblue").await;
    assert_eq!(h["total"], 1);
    assert_eq!(h["env_filters"], json!({"COLOR": "blue"}));
    let (_, h) = s.get("/history?owner=erin").await;
    assert_eq!(h["history"][0]["run_id"], parked_id.as_str());
    let (_, h) = s.get("/history?status=QUEUED").await;
    assert_eq!(h["total"], 1);
    let (_, h) = s.get(&format!("/task/{def_id}/history")).await;
    assert_eq!(h["total"], 1);
    assert_eq!(h["definition_id"], json!([def_id]));
    let (_, h) = s
        .get("/history?queued_at_since=2000-01-01T00:00:00Z&finished_at_until=2999-01-01T00:00:00Z")
        .await;
    assert_eq!(h["total"], 1, "only the stopped run has a finish time: {h}");
    let (_, h) = s.get("/history?limit=100000").await;
    assert_eq!(h["limit"], 1024, "limits are capped");
    let (_, h) = s.get("/history?limit=1&sort_by=run_id&order=asc").await;
    assert_eq!(h["history"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["limit"], 1);
    // one run, three spellings
    for path in [
        format!("/history/{sleep_id}"),
        format!("/task/history/{sleep_id}"),
        format!("/task/{def_id}/history/{sleep_id}"),
    ] {
        let (code, r) = s.get(&path).await;
        assert_eq!(code, 200, "{path}");
        assert_eq!(r["run_id"], sleep_id.as_str());
        assert!(r.get("task_arn").is_some());
    }
    let (code, _) = s.get(&format!("/task/{def_id}/history/{quick_id}")).await;
    assert_eq!(code, 404, "a run of another definition");
    // terminate
    let (code, t) = s
        .delete(&format!("/task/{def_id}/history/{sleep_id}"))
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["terminated"], true);
    let r = s.wait_stopped(&sleep_id).await;
    assert_eq!(r["failure"], "terminated");
    // external status updates through the state machine; a queued run
    // becomes RUNNING only through a submit
    let (code, u) = s
        .put(
            &format!("/{parked_id}/status"),
            &json!({"status": "RUNNING"}),
        )
        .await;
    assert_eq!(code, 409, "{u}");
    assert!(error_of(&u).contains("submit worker"), "{u}");
    let (code, u) = s
        .put(
            &format!("/{parked_id}/status"),
            &json!({"status": "STOPPED", "exit_code": 3, "exit_reason": "done elsewhere"}),
        )
        .await;
    assert_eq!(code, 200, "{u}");
    assert_eq!(u["updated"], true);
    assert_eq!(u["run"]["exit_code"], 3);
    let (code, u) = s
        .put(
            &format!("/{parked_id}/status"),
            &json!({"status": "RUNNING"}),
        )
        .await;
    assert_eq!(code, 409, "STOPPED is terminal: {u}");
    let (code, u) = s
        .put(&format!("/{parked_id}/status"), &json!({"status": "DONE"}))
        .await;
    assert_eq!(code, 400, "{u}");
    assert!(error_of(&u).contains("status"));
    // the timeline
    let (code, ev) = s.get(&format!("/{parked_id}/events")).await;
    assert_eq!(code, 200);
    let tos: Vec<&str> = ev["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["to"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(tos, vec!["QUEUED", "STOPPED"]);
    assert_eq!(ev["total"], 2);
    s.server.shutdown().await;
}

#[tokio::test]
async fn v1_is_the_same_api_and_owns_runs_as_v1_unknown() {
    let s = start().await;
    s.define("v1job", "echo v1").await;
    let (code, run) = s
        .send(
            s.http
                .put(format!("{}/api/v1/task/alias/v1job/execute", s.url))
                .body(r#"{"cluster":"default"}"#),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["owner"], "v1-unknown");
    let (code, list) = s.send(s.http.get(format!("{}/api/v1/task", s.url))).await;
    assert_eq!(code, 200);
    assert_eq!(list["total"], 1);
    s.server.shutdown().await;
}

#[tokio::test]
async fn clusters_crud_and_offline_refusal() {
    let s = start().await;
    s.define("c1", "true").await;
    let (code, list) = s.get("/clusters").await;
    assert_eq!(code, 200);
    assert_eq!(list["clusters"][0], "default");
    assert_eq!(list["cluster_details"][0]["name"], "default");
    let (code, c) = s
        .post(
            "/clusters",
            &json!({"name": "gpu", "allowed_tiers": ["prod"]}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["status"], "active");
    let (code, _) = s.post("/clusters", &json!({"name": "gpu"})).await;
    assert_eq!(code, 409);
    let (code, c) = s
        .put(
            "/clusters/gpu",
            &json!({"status": "offline", "status_reason": "upgrade"}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    let (code, e) = s
        .put(
            "/task/alias/c1/execute",
            &json!({"cluster": "gpu", "run_tags": {"owner_id": "me"}}),
        )
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&e).contains("offline"), "{e}");
    let (code, e) = s.put("/clusters/gpu", &json!({"status": "sleeping"})).await;
    assert_eq!(code, 400);
    assert!(error_of(&e).contains("status"));
    let (code, e) = s.put("/clusters/gpu", &json!({"name": "other"})).await;
    assert_eq!(code, 400, "{e}");
    let (code, e) = s.post("/clusters", &json!({"status": "active"})).await;
    assert_eq!(code, 400);
    assert!(error_of(&e).contains("name"));
    let (code, e) = s
        .post("/clusters", &json!({"name": "x", "colour": "red"}))
        .await;
    assert_eq!(code, 400);
    assert!(error_of(&e).contains("colour"), "{e}");
    let (code, c) = s.get("/clusters/gpu").await;
    assert_eq!((code, c["status"].clone()), (200, json!("offline")));
    let (_, list) = s.get("/clusters").await;
    assert_eq!(list["total"], 2);
    let (code, _) = s.delete("/clusters/gpu").await;
    assert_eq!(code, 200);
    let (code, _) = s.get("/clusters/gpu").await;
    assert_eq!(code, 404);
    s.server.shutdown().await;
}

#[tokio::test]
async fn status_has_an_etag_and_answers_304_while_unchanged() {
    let s = start().await;
    s.define("etag", "true").await;
    s.post(
        "/clusters",
        &json!({"name": "hold", "status": "maintenance"}),
    )
    .await;
    let (_, run) = s
        .put(
            "/task/alias/etag/execute",
            &json!({"cluster": "hold", "run_tags": {"owner_id": "me"}}),
        )
        .await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let resp = s
        .http
        .get(s.api(&format!("/{id}/status")))
        .send()
        .await
        .expect("status");
    assert_eq!(resp.status().as_u16(), 200);
    let etag = resp
        .headers()
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("ascii")
        .to_string();
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "QUEUED");
    let resp = s
        .http
        .get(s.api(&format!("/{id}/status")))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("304");
    assert_eq!(resp.status().as_u16(), 304);
    assert_eq!(
        resp.headers().get("etag").and_then(|v| v.to_str().ok()),
        Some(etag.as_str())
    );
    let (code, u) = s
        .put(&format!("/{id}/status"), &json!({"status": "STOPPED"}))
        .await;
    assert_eq!(code, 200, "{u}");
    let resp = s
        .http
        .get(s.api(&format!("/{id}/status")))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("200");
    assert_eq!(resp.status().as_u16(), 200);
    let new_tag = resp
        .headers()
        .get("etag")
        .expect("etag")
        .to_str()
        .expect("ascii")
        .to_string();
    assert_ne!(new_tag, etag);
    s.server.shutdown().await;
}

#[tokio::test]
async fn sse_stream_pushes_the_log_of_a_running_process() {
    let s = start().await;
    s.define(
        "talker",
        "echo first-line; sleep 1; echo second-line; sleep 1; echo third-line",
    )
    .await;
    let run = s.execute("talker", "me").await;
    let id = run["run_id"].as_str().expect("id").to_string();
    s.wait_running(&id).await;
    let resp = s
        .http
        .get(s.api(&format!("/{id}/logs/stream")))
        .send()
        .await
        .expect("stream");
    assert_eq!(resp.status().as_u16(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .expect("ct")
            .starts_with("text/event-stream")
    );
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !text.contains("event: end") {
        let next = tokio::time::timeout_at(deadline, body.next())
            .await
            .expect("stream ended in time");
        match next {
            Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk.expect("chunk"))),
            None => break,
        }
    }
    assert!(text.contains("event: status"), "{text}");
    assert!(text.contains("event: log"), "{text}");
    let first = text.find("first-line").expect("first line streamed");
    let third = text.find("third-line").expect("third line streamed");
    assert!(first < third);
    assert!(text.contains("event: end"), "{text}");
    assert!(text.contains("\"STOPPED\""), "{text}");
    // resuming with the last cursor yields nothing more but the end
    let (_, logs) = s.get(&format!("/{id}/logs")).await;
    let cursor = logs["last_seen"].as_str().expect("cursor").to_string();
    let rest = s
        .http
        .get(s.api(&format!("/{id}/logs/stream")))
        .header("last-event-id", cursor)
        .send()
        .await
        .expect("resume")
        .text()
        .await
        .expect("text");
    assert!(!rest.contains("event: log"), "{rest}");
    assert!(rest.contains("event: end"), "{rest}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn logs_page_with_last_seen() {
    let s = start().await;
    s.define("pager", "echo one; echo two").await;
    let run = s.execute("pager", "me").await;
    let id = run["run_id"].as_str().expect("id").to_string();
    s.wait_stopped(&id).await;
    let (code, page) = s.get(&format!("/{id}/logs")).await;
    assert_eq!(code, 200);
    assert_eq!(page["log"], "one\ntwo\n");
    let cursor = page["last_seen"].as_str().expect("cursor");
    let (code, next) = s.get(&format!("/{id}/logs?last_seen={cursor}")).await;
    assert_eq!(code, 200);
    assert_eq!(next["log"], "");
    let (code, bad) = s.get(&format!("/{id}/logs?last_seen=garbage")).await;
    assert_eq!(code, 400, "{bad}");
    let (code, _) = s.get(&format!("/{id}/logs?raw_text=maybe")).await;
    assert_eq!(code, 400);
    s.server.shutdown().await;
}

#[tokio::test]
async fn health_metrics_and_ui() {
    let s = start().await;
    s.define("m", "true").await;
    let (code, h) = s.send(s.http.get(format!("{}/health", s.url))).await;
    assert_eq!((code, h["status"].clone()), (200, json!("ok")));
    let (code, h) = s.get("/health").await;
    assert_eq!((code, h["status"].clone()), (200, json!("ok")));
    let m = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics");
    assert_eq!(m.status().as_u16(), 200);
    let text = m.text().await.expect("text");
    assert!(text.contains("flotilla_http_requests_total"), "{text}");
    assert!(text.contains("route=\"/api/v6/task\""), "{text}");
    assert!(text.contains("flotilla_runs{status=\"QUEUED\"}"), "{text}");
    assert!(
        text.contains("flotilla_queue_depth{queue=\"default\"}"),
        "{text}"
    );
    let page = s
        .http
        .get(format!("{}/", s.url))
        .send()
        .await
        .expect("ui")
        .text()
        .await
        .expect("html");
    assert!(page.contains("/api/openapi.json"));
    s.server.shutdown().await;
}

/// Every route the router serves is in the OpenAPI document, and every
/// documented operation is served.
#[tokio::test]
async fn openapi_covers_every_route() {
    let s = start().await;
    let (code, doc) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let expected = [
        ("get", "/task"),
        ("post", "/task"),
        ("get", "/task/{definition_id}"),
        ("put", "/task/{definition_id}"),
        ("delete", "/task/{definition_id}"),
        ("get", "/task/alias/{alias}"),
        ("put", "/task/{definition_id}/execute"),
        ("put", "/task/alias/{alias}/execute"),
        ("get", "/history"),
        ("get", "/task/{definition_id}/history"),
        ("get", "/history/{run_id}"),
        ("get", "/history/{run_id}/payload"),
        ("get", "/task/history/{run_id}"),
        ("get", "/task/{definition_id}/history/{run_id}"),
        ("delete", "/task/{definition_id}/history/{run_id}"),
        ("put", "/{run_id}/status"),
        ("get", "/{run_id}/status"),
        ("get", "/{run_id}/events"),
        ("get", "/{run_id}/logs"),
        ("get", "/{run_id}/logs/stream"),
        ("get", "/{run_id}/output"),
        ("get", "/groups"),
        ("get", "/tags"),
        ("get", "/clusters"),
        ("post", "/clusters"),
        ("get", "/clusters/{cluster_id}"),
        ("put", "/clusters/{cluster_id}"),
        ("delete", "/clusters/{cluster_id}"),
        ("get", "/clusters/{cluster_id}/usage"),
        ("get", "/health"),
    ];
    let mut ids = std::collections::HashSet::new();
    for version in ["v6", "v1"] {
        for (method, path) in expected {
            let full = format!("/api/{version}{path}");
            let op = &paths
                .get(&full)
                .unwrap_or_else(|| panic!("{full} not documented"))[method];
            assert!(op.is_object(), "{method} {full} not documented");
            assert!(ids.insert(op["operationId"].as_str().expect("operationId").to_string()));
        }
    }
    // and every documented operation answers (never "no route" / 405)
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let url = format!("{}{}", s.url, path.replace('{', "x").replace('}', ""));
            let req = s
                .http
                .request(method.to_uppercase().parse().expect("method"), url)
                .body("{}");
            let (code, body) = s.send(req).await;
            assert_ne!(code, 405, "{method} {path}");
            if code == 404 {
                assert!(
                    !error_of(&body).contains("no route"),
                    "{method} {path}: {body}"
                );
            }
        }
    }
    // flotilla-os's v2, v4, v5 and v7 routes
    for (method, full) in [
        ("put", "/api/v2/task/{definition_id}/execute"),
        ("get", "/api/v2/history/{run_id}"),
        ("put", "/api/v4/task/{definition_id}/execute"),
        ("get", "/api/v5/worker"),
        ("put", "/api/v5/worker"),
        ("get", "/api/v5/worker/{worker_type}"),
        ("put", "/api/v5/worker/{worker_type}"),
        ("get", "/api/v7/template"),
        ("post", "/api/v7/template"),
        ("get", "/api/v7/template/{template_id}"),
        ("put", "/api/v7/template/{template_id}/execute"),
        (
            "put",
            "/api/v7/template/name/{name}/version/{version}/execute",
        ),
        ("get", "/api/v7/template/{template_id}/history"),
        ("get", "/api/v7/template/name/{name}/history"),
        ("get", "/api/v7/template/history/{run_id}"),
        ("get", "/api/v7/template/{template_id}/history/{run_id}"),
        ("delete", "/api/v7/template/{template_id}/history/{run_id}"),
        ("get", "/batch/"),
        ("post", "/batch/"),
        ("get", "/batch/{id}"),
        ("delete", "/batch/{id}"),
    ] {
        let op = &paths
            .get(full)
            .unwrap_or_else(|| panic!("{full} not documented"))[method];
        assert!(ids.insert(op["operationId"].as_str().expect("operationId").to_string()));
    }
    assert_eq!(
        paths.len(),
        2 * 22 + 3 + 2 + 8 + 2,
        "no undocumented extra paths"
    );
    s.server.shutdown().await;
}

#[tokio::test]
async fn cors_origins_come_from_the_config() {
    let s =
        common::start_with(|c| c.http.cors_origins = vec!["https://ui.example.com".into()]).await;
    let resp = s
        .http
        .get(s.api("/task"))
        .header("origin", "https://ui.example.com")
        .send()
        .await
        .expect("cors");
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://ui.example.com")
    );
    let resp = s
        .http
        .get(s.api("/task"))
        .header("origin", "https://evil.example.com")
        .send()
        .await
        .expect("cors");
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    s.server.shutdown().await;
}

#[tokio::test]
async fn slow_responses_time_out_with_a_json_408() {
    let s = common::start_with(|c| c.http.write_timeout_ms = 1).await;
    // A body that never finishes arrives slower than 1 ms.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    tx.send(Ok(b"{".to_vec())).await.expect("first chunk");
    let body = reqwest::Body::wrap_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    let (code, body) = s.send(s.http.post(s.api("/task")).body(body)).await;
    drop(tx);
    assert_eq!(code, 408, "{body}");
    assert!(body["error"].as_str().expect("msg").contains("ms"));
    s.server.shutdown().await;
}
