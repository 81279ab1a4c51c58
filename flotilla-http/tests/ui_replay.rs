//! The flotilla-os UI, page by page: the exact requests its
//! `FlotillaClient` (`ui/src/helpers/FlotillaClient.ts`, the `/v6` one)
//! sends for each page, against the real server (the embedded default:
//! SQLite store and queue, local engine, a real socket), and every field
//! that page reads with the type `ui/src/types.ts` gives it.
//!
//! Pages: the task list (`Tasks.tsx`), a task (`Task.tsx`: the definition
//! and its runs), the run form (`RunForm.tsx` with
//! `getInitialValuesForTaskRun`'s EKS body and `runTask`'s `OWNER_ID` run
//! tag, `ClusterSelect.tsx`), the run page (`Run.tsx` polling
//! `getRun`), its logs (`LogRequester.tsx`'s `last_seen` paging and the
//! EKS `raw_text` mode), its events tab, and the runs list (`Runs.tsx`'s
//! initial query and filters), with the stop button.

mod common;

use std::time::Duration;

use common::{TestServer, start};
use serde_json::{Value, json};

/// `constants.ts`'s page size.
const PAGE_SIZE: usize = 20;

/// The UI's `axios` base: `FlotillaClient` URLs start with `/v6`.
fn ui(s: &TestServer, path: &str) -> String {
    format!("{}/api{path}", s.url)
}

async fn ui_get(s: &TestServer, path: &str) -> (u16, Value) {
    s.send(s.http.get(ui(s, path))).await
}

/// As axios sends a JSON body.
async fn ui_send(
    s: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: &Value,
) -> (u16, Value) {
    s.send(
        s.http
            .request(method, ui(s, path))
            .header("content-type", "application/json")
            .body(body.to_string()),
    )
    .await
}

fn string(v: &Value, k: &str) -> String {
    assert!(v[k].is_string(), "{k} must be a string: {v}");
    v[k].as_str().unwrap_or_default().to_string()
}

fn number(v: &Value, k: &str) {
    assert!(v[k].is_number(), "{k} must be a number: {v}");
}

/// `number | null | undefined`, `string | null | undefined` and the like:
/// absent or null or of the type.
fn optional(v: &Value, k: &str, ok: fn(&Value) -> bool) {
    let f = &v[k];
    assert!(f.is_null() || ok(f), "{k} has the wrong type: {v}");
}

fn env_list(v: &Value, k: &str) {
    let env = v[k]
        .as_array()
        .unwrap_or_else(|| panic!("{k} must be a list: {v}"));
    for e in env {
        assert!(e["name"].is_string(), "{k}[].name: {v}");
        assert!(!e["value"].is_null(), "{k}[].value: {v}");
    }
}

/// `Task` of `types.ts`, as the task list, task page and run form read it.
fn check_task(t: &Value) {
    string(t, "definition_id");
    string(t, "alias");
    string(t, "group_name");
    string(t, "image");
    string(t, "command");
    number(t, "memory");
    optional(t, "cpu", Value::is_number);
    optional(t, "gpu", Value::is_number);
    env_list(t, "env");
    assert!(t["tags"].is_array(), "tags: {t}");
    assert!(
        t["tags"]
            .as_array()
            .into_iter()
            .flatten()
            .all(Value::is_string),
        "tags: {t}"
    );
    assert!(t["adaptive_resource_allocation"].is_boolean(), "{t}");
}

const STATUSES: [&str; 5] = ["PENDING", "QUEUED", "RUNNING", "STOPPED", "NEEDS_RETRY"];

/// `Run` of `types.ts`, as the run page, the runs lists and `RunTag` read
/// it.
fn check_run(r: &Value) {
    string(r, "run_id");
    string(r, "definition_id");
    string(r, "alias");
    string(r, "cluster");
    string(r, "image");
    string(r, "group_name");
    string(r, "task_arn");
    string(r, "engine");
    string(r, "executable_id");
    assert_eq!(r["executable_type"], "task_definition", "{r}");
    let status = string(r, "status");
    assert!(STATUSES.contains(&status.as_str()), "{r}");
    number(r, "attempt_count");
    number(r, "cpu");
    number(r, "memory");
    env_list(r, "env");
    string(&r["instance"], "dns_name");
    string(&r["instance"], "instance_id");
    optional(&r["cloudtrail_notifications"], "Records", Value::is_array);
    assert!(r["cloudtrail_notifications"].is_object(), "{r}");
    assert!(r.get("execution_request_custom").is_some(), "{r}");
    optional(r, "queued_at", Value::is_string);
    optional(r, "started_at", Value::is_string);
    optional(r, "finished_at", Value::is_string);
    optional(r, "exit_code", Value::is_number);
    optional(r, "exit_reason", Value::is_string);
    optional(r, "command", Value::is_string);
    optional(r, "gpu", Value::is_number);
    optional(r, "max_cpu_used", Value::is_number);
    optional(r, "max_memory_used", Value::is_number);
    optional(r, "pod_name", Value::is_string);
    // `exit_code?: number`: a run stopped before it exited (terminated)
    // has none, and `getEnhancedRunStatus` shows it FAILED.
    if status == "STOPPED" {
        string(r, "finished_at");
    }
}

/// `ListResponse` of `types.ts`.
fn check_list(l: &Value, key: &str) -> Vec<Value> {
    number(l, "total");
    number(l, "offset");
    number(l, "limit");
    l[key]
        .as_array()
        .unwrap_or_else(|| panic!("{key} must be a list: {l}"))
        .clone()
}

/// `CreateTaskPayload` from `CreateTaskForm.tsx`.
async fn create_task(s: &TestServer, alias: &str, command: &str) -> Value {
    let (code, t) = ui_send(
        s,
        reqwest::Method::POST,
        "/v6/task",
        &json!({
            "alias": alias, "group_name": "ui-group", "image": "ubuntu:latest",
            "memory": 512, "cpu": 256, "command": command,
            "env": [{"name": "GREETING", "value": "hello"}], "tags": ["ui"],
            "adaptive_resource_allocation": false
        }),
    )
    .await;
    assert_eq!(code, 200, "{t}");
    check_task(&t);
    t
}

/// `getInitialValuesForTaskRun`'s EKS values after `runTask`: `owner_id`
/// moved into `run_tags.OWNER_ID`.
fn run_form_body(task: &Value, cluster: &str) -> Value {
    json!({
        "cluster": cluster,
        "node_lifecycle": "spot",
        "env": task["env"],
        "cpu": 512,
        "memory": task["memory"],
        "engine": "eks",
        "command": task["command"],
        "run_tags": {"OWNER_ID": "flotilla-ui"}
    })
}

/// `Run.tsx` polling `getRun` every `RUN_FETCH_INTERVAL_MS` until STOPPED,
/// every reply checked.
async fn poll_run_page(s: &TestServer, run_id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, r) = ui_get(s, &format!("/v6/task/history/{run_id}")).await;
        assert_eq!(code, 200, "{r}");
        check_run(&r);
        if r["status"] == "STOPPED" {
            return r;
        }
        assert!(tokio::time::Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `LogRequester.tsx`: `last_seen` starts empty; after the run stopped it
/// asks again while a page has text and moves `last_seen`.
async fn read_logs_like_the_ui(s: &TestServer, run_id: &str) -> String {
    let mut last_seen = String::new();
    let mut logs = String::new();
    for _ in 0..1000 {
        let (code, page) = ui_get(
            s,
            &format!("/v6/{run_id}/logs?last_seen={}", urlencode(&last_seen)),
        )
        .await;
        assert_eq!(code, 200, "{page}");
        let log = string(&page, "log");
        optional(&page, "last_seen", Value::is_string);
        if log.is_empty() {
            return logs;
        }
        let next = page["last_seen"].as_str().map(str::to_string);
        if next.as_deref() == Some(last_seen.as_str()) {
            return logs;
        }
        logs.push_str(&log);
        match next {
            Some(n) => last_seen = n,
            None => return logs,
        }
    }
    panic!("the log of {run_id} never ended: {logs}");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[tokio::test]
async fn the_flotilla_os_ui_pages_read_what_they_need() {
    let s = start().await;
    let echo = create_task(
        &s,
        "ui-echo",
        "for i in 1 2 3 4 5; do echo \"$GREETING line $i\"; done",
    )
    .await;
    create_task(&s, "ui-sleep", "sleep 30").await;
    let def_id = string(&echo, "definition_id");

    // Task list: `Tasks.tsx`'s initial query, then its alias filter.
    let (code, list) = ui_get(
        &s,
        &format!("/v6/task?sort_by=alias&order=asc&offset=0&limit={PAGE_SIZE}"),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    let tasks = check_list(&list, "definitions");
    assert_eq!(list["total"], 2, "{list}");
    for t in &tasks {
        check_task(t);
    }
    assert_eq!(tasks[0]["alias"], "ui-echo", "sorted by alias: {list}");
    let (code, list) = ui_get(
        &s,
        &format!(
            "/v6/task?sort_by=alias&order=asc&alias=ui-echo&group_name=ui-group&image=ubuntu&offset=0&limit={PAGE_SIZE}"
        ),
    )
    .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(check_list(&list, "definitions").len(), 1, "{list}");
    // Its group select and the tags.
    for (path, key) in [
        ("/v6/groups?offset=0&limit=10000", "groups"),
        ("/v6/tags?offset=0&limit=10000", "tags"),
    ] {
        let (code, l) = ui_get(&s, path).await;
        assert_eq!(code, 200, "{l}");
        let items = l[key].as_array().expect("list");
        assert!(items.iter().all(Value::is_string), "{l}");
    }

    // Task page: the definition and its runs.
    let (code, t) = ui_get(&s, &format!("/v6/task/{def_id}")).await;
    assert_eq!(code, 200, "{t}");
    check_task(&t);
    let (code, t) = ui_get(&s, "/v6/task/alias/ui-echo").await;
    assert_eq!((code, string(&t, "definition_id")), (200, def_id.clone()));
    let task_runs = format!(
        "/v6/task/{def_id}/history?sort_by=started_at&order=desc&offset=0&limit={PAGE_SIZE}"
    );
    let (code, runs) = ui_get(&s, &task_runs).await;
    assert_eq!(code, 200, "{runs}");
    assert!(check_list(&runs, "history").is_empty(), "{runs}");

    // Run form: the cluster select reads `clusters` as names.
    let (code, clusters) = ui_get(&s, "/v6/clusters").await;
    assert_eq!(code, 200, "{clusters}");
    let names = clusters["clusters"].as_array().expect("clusters");
    assert!(names.iter().all(Value::is_string), "{clusters}");
    assert!(names.contains(&json!("default")), "{clusters}");
    let (code, run) = ui_send(
        &s,
        reqwest::Method::PUT,
        &format!("/v6/task/{def_id}/execute"),
        &run_form_body(&t, "default"),
    )
    .await;
    assert_eq!(code, 200, "{run}");
    check_run(&run);
    let run_id = string(&run, "run_id");
    assert_eq!(run["run_tags"]["owner_id"], "flotilla-ui", "{run}");

    // Run page: polled until STOPPED.
    let done = poll_run_page(&s, &run_id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    string(&done, "started_at");
    let expected: String = (1..=5).map(|i| format!("hello line {i}\n")).collect();

    // Logs, `last_seen` mode.
    let logs = read_logs_like_the_ui(&s, &run_id).await;
    assert_eq!(logs, expected, "no line lost or repeated");
    // Logs, EKS raw-text mode: the whole log as the body.
    let resp = s
        .http
        .get(ui(&s, &format!("/v6/{run_id}/logs")))
        .query(&[("raw_text", "true")])
        .send()
        .await
        .expect("sent");
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.text().await.expect("text"), expected);

    // Events tab.
    let (code, ev) = ui_get(&s, &format!("/v6/{run_id}/events")).await;
    assert_eq!(code, 200, "{ev}");
    number(&ev, "total");
    let events = ev["pod_events"].as_array().expect("pod_events");
    assert_eq!(ev["total"].as_u64(), Some(events.len() as u64), "{ev}");
    for e in events {
        for k in [
            "timestamp",
            "event_type",
            "reason",
            "source_object",
            "message",
        ] {
            string(e, k);
        }
    }

    // The task page's runs now list it.
    let (_, runs) = ui_get(&s, &task_runs).await;
    let history = check_list(&runs, "history");
    assert_eq!(history.len(), 1, "{runs}");
    check_run(&history[0]);

    // Runs list: `Runs.tsx`'s initial query (active runs) shows a running
    // one; the stop button stops it.
    let sleep_def = ui_get(&s, "/v6/task/alias/ui-sleep").await.1;
    let (code, long) = ui_send(
        &s,
        reqwest::Method::PUT,
        &format!("/v6/task/{}/execute", string(&sleep_def, "definition_id")),
        &run_form_body(&sleep_def, "default"),
    )
    .await;
    assert_eq!(code, 200, "{long}");
    let long_id = string(&long, "run_id");
    s.wait_running(&long_id).await;
    let active = format!(
        "/v6/history?sort_by=started_at&order=desc&status=PENDING&status=QUEUED&status=RUNNING&offset=0&limit={PAGE_SIZE}"
    );
    let (code, l) = ui_get(&s, &active).await;
    assert_eq!(code, 200, "{l}");
    let items = check_list(&l, "history");
    assert_eq!(items.len(), 1, "{l}");
    check_run(&items[0]);
    assert_eq!(items[0]["run_id"], json!(long_id));
    // Its filters: alias, cluster, env (`NAME|VALUE`) and time bounds.
    let filtered = format!(
        "/v6/history?sort_by=started_at&order=desc&status=STOPPED&alias=ui-echo&cluster=default&env=GREETING%7Chello&started_at_since=2020-01-01T00%3A00%3A00Z&finished_at_until=2100-01-01T00%3A00%3A00Z&offset=0&limit={PAGE_SIZE}"
    );
    let (code, l) = ui_get(&s, &filtered).await;
    assert_eq!(code, 200, "{l}");
    let items = check_list(&l, "history");
    assert_eq!(items.len(), 1, "{l}");
    assert_eq!(items[0]["run_id"], json!(run_id), "{l}");
    assert_eq!(l["cluster"], json!(["default"]), "filters are echoed: {l}");
    assert_eq!(l["env_filters"], json!({"GREETING": "hello"}), "{l}");
    // Stop (`StopRunModal`).
    let (code, stopped) = s
        .send(s.http.delete(ui(
            &s,
            &format!(
                "/v6/task/{}/history/{long_id}",
                string(&sleep_def, "definition_id")
            ),
        )))
        .await;
    assert_eq!(code, 200, "{stopped}");
    let stopped = poll_run_page(&s, &long_id).await;
    check_run(&stopped);
    s.server.shutdown().await;
}
