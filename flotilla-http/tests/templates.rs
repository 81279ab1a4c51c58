//! Templates (flotilla-os v7) through a real server on 127.0.0.1: version
//! semantics, schema errors naming fields, Go-template rendering with sprig
//! functions, deep-merged defaults, dry runs, the history routes, and
//! template runs reaching STOPPED with exit 0 on the local engine, on
//! SQLite (the default store) and on PostgreSQL.

mod common;

use common::{TestServer, start, start_with};
use flotilla_http::AuthMode;
use flotilla_http::config::TokenConfig;
use serde_json::{Value, json};

fn v7(s: &TestServer, path: &str) -> String {
    format!("{}/api/v7{path}", s.url)
}

async fn get7(s: &TestServer, path: &str) -> (u16, Value) {
    s.send(s.http.get(v7(s, path))).await
}

async fn post7(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    s.send(s.http.post(v7(s, path)).body(body.to_string()))
        .await
}

async fn put7(s: &TestServer, path: &str, body: &Value) -> (u16, Value) {
    s.send(s.http.put(v7(s, path)).body(body.to_string())).await
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::now_v7().simple())
}

/// A template in the shape flotilla-os's UI posts, with sprig functions.
fn report_template(name: &str) -> Value {
    json!({
        "template_name": name,
        "image": "ubuntu:latest",
        "memory": 256,
        "cpu": 250,
        "avatar_uri": "https://example.com/report.png",
        "env": [{"name": "MODE", "value": "batch"}],
        "schema": {
            "type": "object",
            "required": ["dataset", "rows"],
            "properties": {
                "dataset": {"type": "string", "minLength": 1},
                "rows": {"type": "integer", "minimum": 1, "maximum": 1000},
                "format": {"type": "string", "enum": ["csv", "json"]},
                "columns": {"type": "array", "items": {"type": "string"}},
                "output": {
                    "type": "object",
                    "properties": {
                        "bucket": {"type": "string"},
                        "prefix": {"type": "string"}
                    }
                }
            }
        },
        "defaults": {
            "format": "csv",
            "columns": ["id", "name"],
            "output": {"bucket": "reports", "prefix": "daily"}
        },
        "command_template": "echo report {{ .dataset | upper | quote }} rows={{ .rows }} format={{ .format | default \"csv\" }} cols={{ join \",\" .columns }} to={{ .output.bucket }}/{{ .output.prefix | replace \"/\" \"_\" }} mode=$MODE"
    })
}

async fn create(s: &TestServer, body: &Value) -> Value {
    let (code, reply) = post7(s, "/template", body).await;
    assert_eq!(code, 200, "create: {reply}");
    reply
}

/// Creates the template; its version's id.
async fn create_id(s: &TestServer, body: &Value) -> String {
    let reply = create(s, body).await;
    reply["template"]["template_id"]
        .as_str()
        .expect("template id")
        .to_string()
}

fn error_of(body: &Value) -> String {
    body["error"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_template_gets_a_new_version_only_when_its_content_changes() {
    let s = start().await;
    let name = unique("versions");
    let body = report_template(&name);
    let first = create(&s, &body).await;
    assert_eq!(first["did_create"], true, "{first}");
    assert_eq!(first["template"]["version"], 1, "a new name is version 1");
    let id1 = first["template"]["template_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert!(id1.starts_with("tpl-"), "{id1}");

    let again = create(&s, &body).await;
    assert_eq!(
        again["did_create"], false,
        "the same content again: {again}"
    );
    assert_eq!(
        again["template"]["template_id"],
        first["template"]["template_id"]
    );
    assert_eq!(again["template"]["version"], 1);

    let mut changed = body.clone();
    changed["command_template"] = json!("echo v2 {{ .dataset }}");
    let second = create(&s, &changed).await;
    assert_eq!(second["did_create"], true, "{second}");
    assert_eq!(
        second["template"]["version"], 2,
        "changed content is version + 1"
    );
    let id2 = second["template"]["template_id"]
        .as_str()
        .expect("id")
        .to_string();
    assert_ne!(id1, id2);

    // Version 1 is unchanged (immutable) and still readable by id.
    let (code, v1) = get7(&s, &format!("/template/{id1}")).await;
    assert_eq!(code, 200, "{v1}");
    assert_eq!(v1["command_template"], body["command_template"]);
    assert_eq!(v1["schema"], body["schema"]);
    assert_eq!(v1["defaults"], body["defaults"]);
    assert_eq!(v1["avatar_uri"], "https://example.com/report.png");

    // Racing writers of new content get consecutive versions, none lost.
    let posts = (0..6).map(|i| {
        let mut b = body.clone();
        b["command_template"] = json!(format!("echo race {i} {{{{ .dataset }}}}"));
        let s = &s;
        async move { create(s, &b).await }
    });
    let replies = futures::future::join_all(posts).await;
    let mut versions: Vec<u64> = replies
        .iter()
        .map(|r| r["template"]["version"].as_u64().expect("version"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, vec![3, 4, 5, 6, 7, 8], "{replies:?}");

    // Lists: every version of the name, latest only, sort, paging.
    let (code, all) = get7(&s, &format!("/template?template_name={name}")).await;
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["total"], 8);
    let (_, latest) = get7(
        &s,
        &format!("/template?template_name={name}&latest_only=true"),
    )
    .await;
    assert_eq!(latest["total"], 1, "{latest}");
    assert_eq!(latest["templates"][0]["version"], 8);
    let (_, page) = get7(
        &s,
        &format!("/template?template_name={name}&sort_by=version&order=desc&limit=2&offset=1"),
    )
    .await;
    assert_eq!(page["total"], 8, "{page}");
    let got: Vec<u64> = page["templates"]
        .as_array()
        .expect("templates")
        .iter()
        .map(|t| t["version"].as_u64().expect("version"))
        .collect();
    assert_eq!(got, vec![7, 6]);
    let (code, bad) = get7(&s, "/template?sort_by=image").await;
    assert_eq!(code, 400, "{bad}");
    assert!(error_of(&bad).starts_with("sort_by"), "{bad}");
    let (code, missing) = get7(&s, "/template/tpl-no-such").await;
    assert_eq!(code, 404, "{missing}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_bad_template_is_refused_naming_the_field() {
    let s = start().await;
    let name = unique("bad");
    for (field, value, want) in [
        ("schema", json!({"type": "no-such-type"}), "schema:"),
        ("schema", json!({}), "schema:"),
        ("command_template", json!("echo {{ .x"), "command_template:"),
        (
            "command_template",
            json!("echo {{ nosuch .x }}"),
            "command_template:",
        ),
        (
            "command_template",
            json!(r#"{{define "a"}}{{template "a"}}{{end}}{{template "a"}}"#),
            "command_template:",
        ),
        ("template_name", json!("has space"), "template_name:"),
        ("image", json!(""), "image:"),
    ] {
        let mut body = report_template(&name);
        body[field] = value;
        let (code, reply) = post7(&s, "/template", &body).await;
        assert_eq!(code, 400, "{field}: {reply}");
        assert!(error_of(&reply).starts_with(want), "{field}: {reply}");
    }
    let (code, list) = get7(&s, &format!("/template?template_name={name}")).await;
    assert_eq!(code, 200);
    assert_eq!(list["total"], 0, "nothing refused was stored: {list}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_payload_breaking_the_schema_is_a_400_naming_each_field() {
    let s = start().await;
    let name = unique("schema");
    let id = create_id(&s, &report_template(&name)).await;
    let (code, reply) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({
            "owner_id": "ada",
            "template_payload": {"rows": 0, "format": "xml", "output": {"bucket": 7}}
        }),
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    let e = error_of(&reply);
    for field in [
        "template_payload.dataset:",
        "template_payload.rows:",
        "template_payload.format:",
        "template_payload.output.bucket:",
    ] {
        assert!(e.contains(field), "{field} not named in: {e}");
    }
    // A payload that is not an object, and a missing owner, are 400s too.
    let (code, reply) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({"owner_id": "ada", "template_payload": [1, 2]}),
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    assert!(error_of(&reply).contains("template_payload"), "{reply}");
    let (code, reply) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({"template_payload": {"dataset": "d", "rows": 1}}),
    )
    .await;
    assert_eq!(code, 400, "{reply}");
    assert!(error_of(&reply).contains("owner_id"), "{reply}");
    // Nothing was queued.
    let (_, h) = get7(&s, &format!("/template/{id}/history")).await;
    assert_eq!(h["total"], 0, "{h}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_flotilla_os_template_renders_as_go_does_and_runs_to_exit_0() {
    let s = start().await;
    let name = unique("report");
    let id = create_id(&s, &report_template(&name)).await;
    let (code, run) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({
            "owner_id": "ada",
            "cluster_name": "default",
            "template_payload": {"dataset": "sales q3", "rows": 20, "output": {"prefix": "a/b"}}
        }),
    )
    .await;
    assert_eq!(code, 200, "{run}");
    // What Go's text/template with sprig renders for this payload.
    let want =
        r#"echo report "SALES Q3" rows=20 format=csv cols=id,name to=reports/a_b mode=$MODE"#;
    assert_eq!(run["command"], want, "{run}");
    assert_eq!(run["executable_type"], "template");
    assert_eq!(run["executable_id"], id.as_str());
    assert_eq!(run["alias"], name.as_str());
    assert_eq!(run["memory"], 256);
    let payload = &run["execution_request_custom"]["template_payload"];
    assert_eq!(
        payload,
        &json!({
            "dataset": "sales q3", "rows": 20, "format": "csv", "columns": ["id", "name"],
            "output": {"bucket": "reports", "prefix": "a/b"}
        }),
        "the merged payload is kept: {run}"
    );
    let run_id = run["run_id"].as_str().expect("run id").to_string();
    let done = s.wait_stopped(&run_id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let log = s.log_text(&run_id).await;
    assert!(
        log.contains("report SALES Q3 rows=20 format=csv cols=id,name to=reports/a_b mode=batch"),
        "{log}"
    );
    let (code, custom) = s.get(&format!("/history/{run_id}/payload")).await;
    assert_eq!(code, 200);
    assert_eq!(&custom["template_payload"], payload);
    s.server.shutdown().await;
}

#[tokio::test]
async fn defaults_deep_merge_under_the_payload() {
    let s = start().await;
    let name = unique("merge");
    let mut body = report_template(&name);
    body["command_template"] =
        json!("echo {{ .output.bucket }} {{ .output.prefix }} {{ .format }} {{ toJson .columns }}");
    create(&s, &body).await;
    let (code, run) = put7(
        &s,
        &format!("/template/name/{name}/version/latest/execute"),
        &json!({
            "run_tags": {"owner_id": "ada"},
            "dry_run": true,
            "template_payload": {"dataset": "d", "rows": 1, "columns": ["x"], "output": {"bucket": "mine"}}
        }),
    )
    .await;
    assert_eq!(code, 200, "{run}");
    // `output.prefix` comes from the defaults beside the payload's
    // `output.bucket`; the payload's list replaces the default list.
    assert_eq!(run["command"], r#"echo mine daily csv ["x"]"#, "{run}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_dry_run_stores_and_queues_nothing() {
    let s = start().await;
    let name = unique("dry");
    let id = create_id(&s, &report_template(&name)).await;
    let (code, run) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({"owner_id": "ada", "dry_run": true, "template_payload": {"dataset": "d", "rows": 3}}),
    )
    .await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["status"], "QUEUED");
    assert!(
        run["command"].as_str().expect("command").contains("rows=3"),
        "{run}"
    );
    let run_id = run["run_id"].as_str().expect("run id");
    let (code, _) = s.get(&format!("/history/{run_id}")).await;
    assert_eq!(code, 404, "a dry run is not stored");
    let (_, h) = get7(&s, &format!("/template/{id}/history")).await;
    assert_eq!(h["total"], 0, "{h}");
    let (_, all) = s
        .get("/history?status=QUEUED&status=PENDING&status=RUNNING")
        .await;
    assert!(
        all["history"]
            .as_array()
            .expect("history")
            .iter()
            .all(|r| r["executable_id"] != id.as_str()),
        "a dry run is not queued: {all}"
    );
    // A real run afterwards is the first the template has.
    let (code, real) = put7(
        &s,
        &format!("/template/{id}/execute"),
        &json!({"owner_id": "ada", "template_payload": {"dataset": "d", "rows": 3}}),
    )
    .await;
    assert_eq!(code, 200, "{real}");
    let done = s.wait_stopped(real["run_id"].as_str().expect("id")).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let (_, h) = get7(&s, &format!("/template/{id}/history")).await;
    assert_eq!(h["total"], 1, "{h}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn history_routes_list_read_and_terminate_template_runs() {
    let s = start().await;
    let name = unique("hist");
    let mut body = report_template(&name);
    body["command_template"] = json!("echo v1 {{ .dataset }}");
    let v1 = create(&s, &body).await["template"].clone();
    body["command_template"] = json!("sleep {{ .rows }}");
    let v2 = create(&s, &body).await["template"].clone();
    let (id1, id2) = (
        v1["template_id"].as_str().expect("id").to_string(),
        v2["template_id"].as_str().expect("id").to_string(),
    );
    let payload = json!({"owner_id": "ada", "template_payload": {"dataset": "d", "rows": 300}});
    let (code, r1) = put7(
        &s,
        &format!("/template/name/{name}/version/1/execute"),
        &payload,
    )
    .await;
    assert_eq!(code, 200, "{r1}");
    assert_eq!(r1["executable_id"], id1.as_str(), "version 1 by number");
    let (code, r2) = put7(
        &s,
        &format!("/template/name/{name}/version/latest/execute"),
        &payload,
    )
    .await;
    assert_eq!(code, 200, "{r2}");
    assert_eq!(
        r2["executable_id"],
        id2.as_str(),
        "a non-number version is the latest"
    );
    let (rid1, rid2) = (
        r1["run_id"].as_str().expect("id").to_string(),
        r2["run_id"].as_str().expect("id").to_string(),
    );
    // A definition's run with the same alias is in no template history.
    s.define(&name, "echo not a template").await;
    let def_run = s.execute(&name, "ada").await;
    let def_run_id = def_run["run_id"].as_str().expect("id").to_string();

    let ids_of = |h: &Value| -> Vec<String> {
        let mut ids: Vec<String> = h["history"]
            .as_array()
            .expect("history")
            .iter()
            .map(|r| r["run_id"].as_str().expect("id").to_string())
            .collect();
        ids.sort();
        ids
    };
    let (code, h1) = get7(&s, &format!("/template/{id1}/history")).await;
    assert_eq!(code, 200, "{h1}");
    assert_eq!(ids_of(&h1), vec![rid1.clone()]);
    let (_, h2) = get7(&s, &format!("/template/{id2}/history")).await;
    assert_eq!(ids_of(&h2), vec![rid2.clone()]);
    let (code, by_name) = get7(&s, &format!("/template/name/{name}/history")).await;
    assert_eq!(code, 200, "{by_name}");
    let mut both = vec![rid1.clone(), rid2.clone()];
    both.sort();
    assert_eq!(
        ids_of(&by_name),
        both,
        "every version's runs, no definition's"
    );
    let (_, filtered) = get7(&s, &format!("/template/name/{name}/history?status=STOPPED")).await;
    assert!(
        ids_of(&filtered).iter().all(|r| r != &rid2),
        "filters apply: {filtered}"
    );

    let (code, one) = get7(&s, &format!("/template/history/{rid2}")).await;
    assert_eq!(code, 200, "{one}");
    assert_eq!(one["run_id"], rid2.as_str());
    let (code, _) = get7(&s, &format!("/template/history/{def_run_id}")).await;
    assert_eq!(code, 404, "a definition's run is not a template run");
    let (code, one) = get7(&s, &format!("/template/{id2}/history/{rid2}")).await;
    assert_eq!(code, 200, "{one}");
    let (code, _) = get7(&s, &format!("/template/{id1}/history/{rid2}")).await;
    assert_eq!(code, 404, "a run of another version");
    let (code, _) = get7(&s, "/template/tpl-none/history").await;
    assert_eq!(code, 404);
    let (code, _) = get7(&s, "/template/name/no-such-template/history").await;
    assert_eq!(code, 404);

    s.wait_running(&rid2).await;
    let (code, t) = s
        .send(
            s.http
                .delete(v7(&s, &format!("/template/{id2}/history/{rid2}"))),
        )
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["terminated"], true);
    let done = s.wait_stopped(&rid2).await;
    assert_ne!(done["exit_code"], 0, "terminated, not finished: {done}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn only_the_owner_or_an_admin_terminates_a_template_run() {
    let s = start_with(|c| {
        c.auth = AuthMode::Tokens;
        c.tokens = vec![
            TokenConfig {
                token: "ada-token-123".into(),
                owner: "ada".into(),
                ..Default::default()
            },
            TokenConfig {
                token: "bob-token-123".into(),
                owner: "bob".into(),
                ..Default::default()
            },
        ];
    })
    .await;
    let as_ = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token.to_string());
    let name = unique("authz");
    let mut body = report_template(&name);
    body["command_template"] = json!("sleep {{ .rows }}");
    let (code, t) = s
        .send(as_("ada-token-123", s.http.post(v7(&s, "/template"))).body(body.to_string()))
        .await;
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["template"]["owner"], "ada");
    let id = t["template"]["template_id"]
        .as_str()
        .expect("id")
        .to_string();
    // The owner is the caller, whatever the body says.
    let (code, run) = s
        .send(
            as_(
                "ada-token-123",
                s.http.put(v7(&s, &format!("/template/{id}/execute"))),
            )
            .body(
                json!({"owner_id": "mallory", "template_payload": {"dataset": "d", "rows": 300}})
                    .to_string(),
            ),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["owner"], "ada", "{run}");
    let rid = run["run_id"].as_str().expect("id").to_string();
    let path = format!("/template/{id}/history/{rid}");
    let (code, e) = s
        .send(as_("bob-token-123", s.http.delete(v7(&s, &path))))
        .await;
    assert_eq!(code, 403, "{e}");
    let (code, e) = s.send(s.http.delete(v7(&s, &path))).await;
    assert_eq!(code, 401, "{e}");
    let (code, t) = s
        .send(as_("ada-token-123", s.http.delete(v7(&s, &path))))
        .await;
    assert_eq!(code, 200, "{t}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_template_run_completes_on_postgres() {
    let Some(url) = common::test_database_url("a_template_run_completes_on_postgres") else {
        return;
    };
    let (s, _cluster) = common::start_on_postgres(url).await;
    let name = unique("pg");
    let t = create(&s, &report_template(&name)).await;
    assert_eq!(t["template"]["version"], 1);
    assert_eq!(
        create(&s, &report_template(&name)).await["did_create"],
        false
    );
    let (code, run) = put7(
        &s,
        &format!("/template/name/{name}/version/1/execute"),
        &json!({"owner_id": "ada", "template_payload": {"dataset": "pg", "rows": 5}}),
    )
    .await;
    assert_eq!(code, 200, "{run}");
    let run_id = run["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&run_id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert_eq!(done["executable_type"], "template");
    assert!(s.log_text(&run_id).await.contains("report PG rows=5"));
    let (_, h) = get7(&s, &format!("/template/name/{name}/history")).await;
    assert_eq!(h["total"], 1, "{h}");
    s.server.shutdown().await;
}
