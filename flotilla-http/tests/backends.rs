//! The server wired to the AWS and Kubernetes backends: SQS queue + ECS
//! engine + CloudWatch Logs on moto (with flotilla's control endpoint,
//! `test-support/moto/`), and the EKS engine's configuration.
//!
//! The moto tests need `FLOTILLA_TEST_AWS_ENDPOINT`
//! (`eval "$(test-support/moto/start.sh)"; export FLOTILLA_TEST_AWS_ENDPOINT`):
//! without it they fail under `CI` and print a loud warning elsewhere.

mod common;

use std::time::Duration;

use flotilla_ecs::StaticCredentials;
use flotilla_ecs::aws_sdk_cloudwatchlogs::types::InputLogEvent;
use flotilla_http::{Config, EngineKind, QueueKind};
use serde_json::{Value, json};

/// The moto endpoint from `FLOTILLA_TEST_AWS_ENDPOINT`. Without it: a
/// failure under CI, a loud warning and `None` elsewhere.
fn endpoint() -> Option<String> {
    let [endpoint] = flotilla::testkit::service_env(
        &["FLOTILLA_TEST_AWS_ENDPOINT"],
        "SQS/ECS server",
        "start moto with `eval \"$(test-support/moto/start.sh)\"` and export \
         FLOTILLA_TEST_AWS_ENDPOINT (it prints FLOTILLA_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT)",
    )?
    .try_into()
    .ok()?;
    Some(endpoint.trim_end_matches('/').to_string())
}

/// A short unique token.
fn token() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 10..].to_string()
}

/// POSTs JSON to moto's control endpoint.
async fn control(endpoint: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{endpoint}{path}"))
        .json(&body)
        .send()
        .await
        .expect("control endpoint answers");
    let status = resp.status();
    let text = resp.text().await.expect("control body");
    assert!(status.is_success(), "control {path}: {status} {text}");
    serde_json::from_str(&text).expect("control answers JSON")
}

/// Points a configuration at SQS and ECS on moto, with a fresh queue
/// namespace, ECS cluster name, log group and family prefix.
fn use_aws(c: &mut Config, endpoint: &str, t: &str) {
    let creds = StaticCredentials::new("test", "test");
    let cluster = format!("c-{t}");
    c.queue = QueueKind::Sqs;
    c.sqs.region = "us-east-1".into();
    c.sqs.endpoint_url = Some(endpoint.to_string());
    c.sqs.credentials = Some(creds.clone());
    c.sqs.queue_namespace = format!("q{t}");
    c.sqs.max_wait_seconds = 1;
    c.engines = vec![EngineKind::Ecs];
    c.ecs.region = "us-east-1".into();
    c.ecs.endpoint_url = Some(endpoint.to_string());
    c.ecs.credentials = Some(creds);
    c.ecs.clusters = vec![cluster.clone()];
    c.ecs.log_group = format!("/flotilla/http-{t}");
    c.ecs.family_prefix = format!("h{t}");
    c.ecs.log_settle_seconds = 1;
    c.default_cluster = cluster.clone();
    c.clusters = vec![cluster];
}

/// Polls `GET /history/{run_id}` until `done` holds (60 s at most).
async fn wait_for(
    server: &common::TestServer,
    run_id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (code, run) = server.get(&format!("/history/{run_id}")).await;
        assert_eq!(code, 200, "{run}");
        if done(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "run {run_id} never became {what}: {run}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_queue_and_ecs_engine_run_the_quick_start_over_http() {
    let Some(endpoint) = endpoint() else { return };
    let t = token();
    let cluster = format!("c-{t}");
    let log_group = format!("/flotilla/http-{t}");

    // The ECS cluster with one container instance, as an operator would
    // have it before starting the server.
    let sdk = flotilla_ecs::sdk_config(
        "us-east-1",
        Some(&endpoint),
        Some(&StaticCredentials::new("test", "test")),
        3,
    )
    .await;
    flotilla_ecs::aws_sdk_ecs::Client::new(&sdk)
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("create the ECS cluster in moto");
    control(
        &endpoint,
        "/_flotilla/ecs/add-container-instance",
        json!({"cluster": cluster}),
    )
    .await;

    let s = common::start_with(|c| use_aws(c, &endpoint, &t)).await;

    // The quick start: define, execute.
    let (code, def) = s
        .send(s.http.post(s.api("/task")).body(common::hello_world()))
        .await;
    assert_eq!(code, 200, "define: {def}");
    let run = s.execute("hello-flotilla", "ecs-tester").await;
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(run["engine"], "ecs", "{run}");
    assert_eq!(run["cluster"], cluster.as_str(), "{run}");

    // Through SQS to the submit worker, then RunTask.
    let submitted = wait_for(&s, &run_id, "submitted", |r| {
        r["engine_ref"].as_str().is_some_and(|a| !a.is_empty())
    })
    .await;
    let task_arn = submitted["engine_ref"]
        .as_str()
        .expect("engine_ref")
        .to_string();
    assert!(
        task_arn.starts_with("arn:aws:ecs:us-east-1:"),
        "engine_ref is a task ARN: {submitted}"
    );
    assert!(
        matches!(
            submitted["status"].as_str(),
            Some("PENDING" | "RUNNING" | "STOPPED")
        ),
        "{submitted}"
    );
    wait_for(&s, &run_id, "RUNNING", |r| r["status"] == "RUNNING").await;

    // The container writes its line through the awslogs driver.
    let task_id = task_arn.rsplit('/').next().unwrap_or_default().to_string();
    let stream = format!("flotilla/main/{task_id}");
    let logs = flotilla_ecs::aws_sdk_cloudwatchlogs::Client::new(&sdk);
    logs.create_log_stream()
        .log_group_name(&log_group)
        .log_stream_name(&stream)
        .send()
        .await
        .expect("the server created the log group; the stream is new");
    logs.put_log_events()
        .log_group_name(&log_group)
        .log_stream_name(&stream)
        .log_events(
            InputLogEvent::builder()
                .timestamp(chrono::Utc::now().timestamp_millis())
                .message("hello _fill_me_in_")
                .build()
                .expect("a log event"),
        )
        .send()
        .await
        .expect("put the task's output");

    // The task ends with exit code 0.
    control(
        &endpoint,
        "/_flotilla/ecs/finish-task",
        json!({
            "cluster": cluster, "task": task_arn, "exit_code": 0,
            "stop_code": "EssentialContainerExited",
            "stopped_reason": "Essential container in task exited",
        }),
    )
    .await;
    let stopped = s.wait_stopped(&run_id).await;
    assert_eq!(stopped["exit_code"], 0, "{stopped}");
    assert_eq!(stopped["engine_ref"], task_arn.as_str(), "{stopped}");

    // The run's log comes from CloudWatch Logs, the source registered for
    // the engine.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let text = s.log_text(&run_id).await;
        if text.contains("hello _fill_me_in_") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the run's log never showed the task's output: {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    s.server.shutdown().await;
}

#[tokio::test]
async fn sqs_and_ecs_start_errors_name_the_section() {
    // Rejected before any AWS call: no endpoint needed.
    let endpoint = "http://127.0.0.1:1".to_string();
    let dir = tempfile::tempdir().expect("temp dir");
    let t = token();
    let base = common::test_config(dir.path());
    let mut c = base.clone();
    use_aws(&mut c, &endpoint, &t);
    c.ecs.network_mode = Some("wifi".into());
    let e = flotilla_http::build_service(&c)
        .await
        .expect_err("bad network mode");
    assert!(e.to_string().starts_with("ecs.network_mode:"), "{e}");
    let mut c = base;
    use_aws(&mut c, &endpoint, &t);
    c.sqs.max_wait_seconds = 0;
    let e = flotilla_http::build_service(&c)
        .await
        .expect_err("bad long poll");
    assert!(e.to_string().starts_with("sqs.max_wait_seconds:"), "{e}");
}

/// A cluster whose API server does not answer: the engine builds (its
/// watches retry in the background, as they do when a cluster is briefly
/// unreachable), and runs on the other engines work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eks_engine_with_an_unreachable_cluster_builds_next_to_local() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let s = common::start_with(|c| {
        c.engines = vec![EngineKind::Local, EngineKind::Eks];
        c.eks.clusters = vec![flotilla_http::config::EksClusterConfig {
            name: "k8s".into(),
            api_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        }];
        // Pod logs, then the S3 archive: built without calling S3.
        c.eks.s3_bucket = Some("archive".into());
        c.eks.region = Some("us-east-1".into());
        c.eks.endpoint_url = Some(format!("http://127.0.0.1:{port}"));
    })
    .await;
    let flotilla = s.server.state().flotilla();
    assert!(flotilla.engine("eks").is_some(), "eks engine registered");
    assert!(
        flotilla.engine("local").is_some(),
        "local engine registered"
    );
    s.define("hi", "echo hi-from-local").await;
    let run = s.execute("hi", "mixed").await;
    assert_eq!(run["engine"], "local", "local is the default: {run}");
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    let stopped = s.wait_stopped(&run_id).await;
    assert_eq!(stopped["exit_code"], 0, "{stopped}");
    assert!(s.log_text(&run_id).await.contains("hi-from-local"));
    s.server.shutdown().await;
}

#[tokio::test]
async fn eks_config_errors_name_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut c = common::test_config(dir.path());
    c.engines = vec![EngineKind::Eks];
    c.eks.clusters = vec![flotilla_http::config::EksClusterConfig {
        name: "k8s".into(),
        api_url: Some("not a url".into()),
        ..Default::default()
    }];
    let e = flotilla_http::build_service(&c)
        .await
        .expect_err("bad api_url");
    assert!(e.to_string().starts_with("eks.clusters[k8s]:"), "{e}");
    c.eks.clusters = vec![flotilla_http::config::EksClusterConfig {
        name: "k8s".into(),
        kubeconfig: Some(dir.path().join("missing-kubeconfig")),
        ..Default::default()
    }];
    let e = flotilla_http::build_service(&c)
        .await
        .expect_err("missing kubeconfig");
    assert!(e.to_string().starts_with("eks.clusters[k8s]:"), "{e}");
    let parsed = Config::from_toml(
        "engines = [\"eks\"]\n[[eks.clusters]]\nname = \"k8s\"\napi_url = \"http://127.0.0.1:1\"\n",
    )
    .expect("parses");
    assert_eq!(
        parsed.eks.engine_settings().capacity_type_label,
        "karpenter.sh/capacity-type"
    );
}

/// The shell through `engine`: on a server with the local engine beside
/// another, a token holder's request cannot pick `local` — not on a
/// cluster that does not allow it (400), not at all without admin rights
/// (403) — while an admin may, and flotilla-os's `"engine": "eks"` on a
/// cluster that does not allow it is a clear 400, never a run elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_holder_cannot_reach_the_local_engine_through_the_request() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let s = common::start_with(|c| {
        c.engines = vec![EngineKind::Eks, EngineKind::Local];
        c.default_engine = Some("eks".into());
        c.eks.clusters = vec![flotilla_http::config::EksClusterConfig {
            name: "k8s".into(),
            api_url: Some(format!("http://127.0.0.1:{port}")),
            ..Default::default()
        }];
        c.auth = flotilla_http::config::AuthMode::Tokens;
        c.tokens = vec![
            flotilla_http::config::TokenConfig {
                token: "alice-secret".into(),
                owner: "alice".into(),
                ..Default::default()
            },
            flotilla_http::config::TokenConfig {
                token: "root-secret1".into(),
                owner: "root".into(),
                admin: true,
                ..Default::default()
            },
        ];
    })
    .await;
    let (code, def) = s
        .send(
            s.http
                .post(s.api("/task"))
                .bearer_auth("alice-secret")
                .body(json!({"alias": "sh", "image": "x", "command": "id"}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    let run_on = |token: &'static str, body: Value| {
        s.http
            .put(s.api("/task/alias/sh/execute"))
            .bearer_auth(token)
            .body(body.to_string())
    };
    let body = json!({"cluster": "default", "engine": "local", "run_tags": {"owner_id": "alice"}});
    let (code, err) = s.send(run_on("alice-secret", body.clone())).await;
    assert_eq!(code, 400, "the default cluster runs on eks only: {err}");
    assert!(
        err["error"].as_str().unwrap_or("").starts_with("engine:"),
        "{err}"
    );
    // An admin opens a cluster to both engines: still not for alice.
    let (code, c) = s
        .send(
            s.http
                .post(s.api("/clusters"))
                .bearer_auth("root-secret1")
                .body(
                    json!({"name": "mixed", "engine": "eks", "engines": ["eks", "local"]})
                        .to_string(),
                ),
        )
        .await;
    assert!(code == 200 || code == 201, "{c}");
    let mixed = json!({"cluster": "mixed", "engine": "local", "run_tags": {"owner_id": "alice"}});
    let (code, err) = s.send(run_on("alice-secret", mixed.clone())).await;
    assert_eq!(code, 403, "a shell on the server for a token holder: {err}");
    let (code, run) = s.send(run_on("root-secret1", mixed)).await;
    assert_eq!(code, 200, "{run}");
    assert_eq!(run["engine"], "local", "{run}");
    s.server.shutdown().await;
}
