//! Test support: moto (with flotilla's control endpoint), an ECS cluster with
//! a container instance, and the `EngineProbe` the core suites drive tasks
//! with.
#![allow(dead_code)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use aws_sdk_ecs::types::TaskField;
use flotilla::testkit::EngineProbe;
use flotilla::testkit::engine::{RunSpec, TaskEnd};
use flotilla::{Definition, Error, NewDefinition, Result, Run};
use flotilla_ecs::{
    ATTEMPT_TAG, CloudWatchLogs, EcsEngine, EcsSettings, RUN_TAG, StaticCredentials,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The endpoint from `FLOTILLA_TEST_AWS_ENDPOINT`. Without it: a failure
/// under CI, a loud warning and `None` elsewhere.
pub fn endpoint() -> Option<String> {
    let [endpoint] = flotilla::testkit::service_env(
        &["FLOTILLA_TEST_AWS_ENDPOINT"],
        "ECS",
        "start moto with `eval \"$(test-support/moto/start.sh)\"` and export \
         FLOTILLA_TEST_AWS_ENDPOINT (it prints FLOTILLA_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT)",
    )?
    .try_into()
    .ok()?;
    Some(endpoint.trim_end_matches('/').to_string())
}

/// A short unique token.
pub fn token() -> String {
    format!("{:010x}", fastrand::u64(..) & 0xff_ffff_ffff)
}

/// POSTs (or GETs, with `body` None) JSON to the control endpoint.
pub async fn control(
    endpoint: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let hostport = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| Error::invalid("endpoint: must be http://host:port"))?;
    let mut stream = tokio::net::TcpStream::connect(hostport)
        .await
        .map_err(|e| Error::unavailable(format!("control endpoint: {e}")))?;
    let (method, payload) = match &body {
        Some(b) => ("POST", b.to_string()),
        None => ("GET", String::new()),
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| Error::unavailable(format!("control endpoint: {e}")))?;
    let mut resp = Vec::new();
    stream
        .read_to_end(&mut resp)
        .await
        .map_err(|e| Error::unavailable(format!("control endpoint: {e}")))?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| Error::internal("control endpoint: no response body"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        return Err(Error::internal(format!(
            "control endpoint {path}: {head} {body}"
        )));
    }
    serde_json::from_str(body)
        .map_err(|e| Error::internal(format!("control endpoint: {e}: {body}")))
}

/// Settings for moto with a fresh cluster and log group.
pub fn settings(endpoint: &str) -> EcsSettings {
    let t = token();
    EcsSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(StaticCredentials::new("test", "test")),
        clusters: vec![format!("c-{t}")],
        log_group: format!("/flotilla/test-{t}"),
        log_settle_seconds: 1,
        family_prefix: format!("t{t}"),
        ..EcsSettings::default()
    }
}

/// The one cluster of `settings`.
pub fn cluster(settings: &EcsSettings) -> String {
    settings.clusters[0].clone()
}

/// Creates the cluster (with one container instance when `instance`) and
/// the log group.
pub async fn prepare(endpoint: &str, engine: &EcsEngine, logs: &CloudWatchLogs, instance: bool) {
    let cluster = cluster(engine.settings());
    engine
        .client()
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("create cluster");
    if instance {
        control(
            endpoint,
            "/_flotilla/ecs/add-container-instance",
            Some(serde_json::json!({"cluster": cluster})),
        )
        .await
        .expect("add a container instance");
    }
    logs.ensure_log_group().await.expect("log group");
}

/// A queued run of `def` on `cluster`, as the service would make it.
pub fn run_of(def: &Definition, cluster: &str, engine: &str) -> Run {
    let run_id = flotilla::model::new_id();
    let mut run: Run = serde_json::from_value(serde_json::json!({
        "run_id": run_id, "definition_id": def.definition_id, "alias": def.alias,
        "image": def.image, "cluster": cluster, "engine": engine, "status": "QUEUED",
        "attempt": 1, "max_attempts": 3, "updated_at": flotilla::model::now(),
        "owner": "tester", "run_tags": {"owner_id": "tester"},
    }))
    .expect("a run");
    run.command = def.command.clone();
    run.memory = def.memory;
    run.env = vec![
        flotilla::EnvVar::new("FLOTILLA_RUN_ID", run_id),
        flotilla::EnvVar::new("FLOTILLA_SERVER_MODE", "test"),
    ];
    run
}

/// Tasks of `run`'s current attempt, found at ECS by their tags.
pub async fn tasks_of(engine: &EcsEngine, run: &Run) -> Result<Vec<String>> {
    let client = engine.client();
    let family = flotilla_ecs::taskdef::family(engine.settings(), &run.definition_id);
    let listed = client
        .list_tasks()
        .cluster(&run.cluster)
        .family(&family)
        .send()
        .await
        .map_err(|e| flotilla_ecs::map_sdk_error("ListTasks", e))?;
    let arns = listed.task_arns().to_vec();
    if arns.is_empty() {
        return Ok(Vec::new());
    }
    let described = client
        .describe_tasks()
        .cluster(&run.cluster)
        .set_tasks(Some(arns))
        .include(TaskField::Tags)
        .send()
        .await
        .map_err(|e| flotilla_ecs::map_sdk_error("DescribeTasks", e))?;
    let attempt = run.attempt.to_string();
    Ok(described
        .tasks()
        .iter()
        .filter(|t| {
            let tag = |k: &str| {
                t.tags()
                    .iter()
                    .find(|x| x.key() == Some(k))
                    .and_then(|x| x.value())
            };
            tag(RUN_TAG) == Some(run.run_id.as_str()) && tag(ATTEMPT_TAG) == Some(attempt.as_str())
        })
        .filter_map(|t| t.task_arn().map(str::to_string))
        .collect())
}

/// The one task of `run`'s current attempt.
pub async fn task_of(engine: &EcsEngine, run: &Run) -> Result<String> {
    if let Some(r) = run.engine_ref.clone() {
        return Ok(r);
    }
    tasks_of(engine, run)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found(format!("no task for run {}", run.run_id)))
}

/// Ends `run`'s task through the control endpoint.
pub async fn finish_task(
    endpoint: &str,
    engine: &EcsEngine,
    run: &Run,
    exit_code: Option<i64>,
    stop_code: &str,
    reason: &str,
    container_reason: Option<&str>,
) -> Result<()> {
    let task = task_of(engine, run).await?;
    control(
        endpoint,
        "/_flotilla/ecs/finish-task",
        Some(serde_json::json!({
            "cluster": run.cluster, "task": task, "exit_code": exit_code,
            "stop_code": stop_code, "stopped_reason": reason,
            "container_reason": container_reason,
        })),
    )
    .await
    .map(|_| ())
}

/// Writes `text` into the run's stream, one event per line, as the
/// awslogs driver would.
pub async fn write_log(logs: &CloudWatchLogs, run: &Run, text: &str) -> Result<()> {
    let (group, stream) = logs
        .stream_of(run)
        .ok_or_else(|| Error::invalid("run has no task"))?;
    let client = logs.client();
    if let Err(e) = client
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
    {
        let exists = e
            .as_service_error()
            .is_some_and(|s| s.is_resource_already_exists_exception());
        if !exists {
            return Err(flotilla_ecs::map_sdk_error("CreateLogStream", e));
        }
    }
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    if text.is_empty() {
        return Ok(());
    }
    let now = chrono::Utc::now().timestamp_millis();
    let mut req = client
        .put_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream);
    for line in lines {
        let ev = InputLogEvent::builder()
            .timestamp(now)
            .message(line)
            .build()
            .map_err(|e| Error::internal(e.to_string()))?;
        req = req.log_events(ev);
    }
    req.send()
        .await
        .map_err(|e| flotilla_ecs::map_sdk_error("PutLogEvents", e))?;
    Ok(())
}

/// The probe the core suites drive ECS-on-moto tasks with.
pub fn probe(endpoint: &str, engine: Arc<EcsEngine>, logs: Arc<CloudWatchLogs>) -> EngineProbe {
    let outputs: Arc<Mutex<std::collections::HashMap<String, String>>> = Arc::default();
    let written: Arc<Mutex<HashSet<(String, u32)>>> = Arc::default();
    let cluster = cluster(engine.settings());
    let name = engine.settings().name.clone();
    let make = {
        let outputs = outputs.clone();
        move |spec: RunSpec| {
            let outputs = outputs.clone();
            let cluster = cluster.clone();
            let name = name.clone();
            async move {
                let mut n = NewDefinition::new(format!("suite-{}", token()), "busybox:latest")
                    .command("echo start; sleep 3600");
                n.memory = Some(128);
                let def = n.into_definition();
                let mut run = run_of(&def, &cluster, &name);
                run.active_deadline_seconds = spec.active_deadline_seconds;
                if let Ok(mut o) = outputs.lock() {
                    o.insert(run.run_id.clone(), spec.output.clone());
                }
                Ok((run, def))
            }
        }
    };
    let finish = {
        let engine = engine.clone();
        let endpoint = endpoint.to_string();
        move |run: Run, end: TaskEnd| {
            let engine = engine.clone();
            let endpoint = endpoint.clone();
            async move {
                match end {
                    TaskEnd::Exit(code) => {
                        finish_task(
                            &endpoint,
                            &engine,
                            &run,
                            Some(code),
                            "EssentialContainerExited",
                            "Essential container in task exited",
                            None,
                        )
                        .await
                    }
                    _ => {
                        finish_task(
                            &endpoint,
                            &engine,
                            &run,
                            None,
                            "SpotInterruption",
                            "Your Spot Task was interrupted.",
                            None,
                        )
                        .await
                    }
                }
            }
        }
    };
    let started = {
        let engine = engine.clone();
        move |run: Run| {
            let engine = engine.clone();
            async move { tasks_of(&engine, &run).await.map(|t| t.len()) }
        }
    };
    let start = {
        let engine = engine.clone();
        move |run: Run| {
            let engine = engine.clone();
            let logs = logs.clone();
            let outputs = outputs.clone();
            let written = written.clone();
            async move {
                let key = (run.run_id.clone(), run.attempt);
                let text = outputs
                    .lock()
                    .ok()
                    .and_then(|o| o.get(&run.run_id).cloned())
                    .unwrap_or_default();
                let first = written.lock().map(|mut w| w.insert(key)).unwrap_or(false);
                if !first || text.is_empty() {
                    return Ok(());
                }
                // The task "starts" and writes its output.
                let mut with_task = run.clone();
                with_task.engine_ref = Some(task_of(&engine, &run).await?);
                write_log(&logs, &with_task, &text).await
            }
        }
    };
    EngineProbe::new(make, finish, started).with_start(start)
}

/// Engine and log source for moto, with the cluster prepared.
pub async fn backend(endpoint: &str) -> (Arc<EcsEngine>, Arc<CloudWatchLogs>) {
    let settings = settings(endpoint);
    let engine = Arc::new(EcsEngine::new(settings.clone()).await.expect("engine"));
    let logs = Arc::new(CloudWatchLogs::new(settings).await.expect("logs"));
    prepare(endpoint, &engine, &logs, true).await;
    (engine, logs)
}
