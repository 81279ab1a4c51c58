//! AWS API calls per run: `FLOTILLA_BENCH_RUNS` runs (default 1000) through
//! `Flotilla` (in-memory store, `SqsQueue`, `EcsEngine`) on moto, every SDK
//! call counted by an interceptor. Prints RunTask per attempt and
//! DescribeTasks per run per poll cycle beside flotilla-os's pattern (one
//! DescribeTasks per run per poll).
//!
//! Needs `FLOTILLA_TEST_AWS_ENDPOINT` (start moto with
//! `test-support/moto/start.sh`). Run: `cargo bench -p flotilla-ecs --bench api_calls`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_ecs::operation::describe_tasks::DescribeTasksInput;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use flotilla::memory::MemoryStore;
use flotilla::service::WorkerConfig;
use flotilla::{ExecuteRequest, Flotilla, NewDefinition, RunQuery, RunStatus, ServiceConfig};
use flotilla_ecs::{ApiCallCounter, CloudWatchLogs, EcsEngine, EcsSettings, StaticCredentials};
use flotilla_sqs::aws_sdk_sqs;
use flotilla_sqs::{SqsQueue, SqsSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Counts the tasks named in DescribeTasks requests: the run-polls.
#[derive(Debug, Clone, Default)]
struct DescribedTasks(Arc<AtomicU64>);

impl Intercept for DescribedTasks {
    fn name(&self) -> &'static str {
        "bench::DescribedTasks"
    }

    fn read_before_serialization(
        &self,
        context: &BeforeSerializationInterceptorContextRef<'_>,
        _rc: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(input) = context.input().downcast_ref::<DescribeTasksInput>() {
            let n = input.tasks().len() as u64;
            self.0.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }
}

async fn control(endpoint: &str, path: &str, body: serde_json::Value) -> Result<(), String> {
    let hostport = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .map_err(|e| e.to_string())?;
    let payload = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    s.write_all(req.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        Err(text.into_owned())
    }
}

fn main() {
    let Some(endpoint) = std::env::var("FLOTILLA_TEST_AWS_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
    else {
        let how = "start moto with `eval \"$(test-support/moto/start.sh)\"` and export FLOTILLA_TEST_AWS_ENDPOINT";
        if std::env::var_os("CI").is_some() {
            panic!("FLOTILLA_TEST_AWS_ENDPOINT is not set: {how}");
        }
        eprintln!("api_calls bench skipped: FLOTILLA_TEST_AWS_ENDPOINT is not set ({how})");
        return;
    };
    let runs: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    rt.block_on(bench(endpoint.trim_end_matches('/').to_string(), runs));
}

async fn bench(endpoint: String, n: usize) {
    let token = format!("{:08x}", fastrand::u32(..));
    let cluster = format!("bench-{token}");
    let settings = EcsSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.clone()),
        credentials: Some(StaticCredentials::new("test", "test")),
        clusters: vec![cluster.clone()],
        log_group: format!("/flotilla/bench-{token}"),
        family_prefix: format!("bench{token}"),
        ..EcsSettings::default()
    };
    let sdk = flotilla_ecs::sdk_config(
        &settings.region,
        settings.endpoint_url.as_deref(),
        settings.credentials.as_ref(),
        settings.max_attempts,
    )
    .await;
    let counter = ApiCallCounter::new();
    let described = DescribedTasks::default();
    let ecs = aws_sdk_ecs::Client::from_conf(
        aws_sdk_ecs::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .interceptor(described.clone())
            .build(),
    );
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&sdk)
            .interceptor(counter.clone())
            .build(),
    );
    let engine = Arc::new(EcsEngine::from_client(ecs, settings.clone()).expect("engine"));
    let logs = Arc::new(
        CloudWatchLogs::new(settings.clone())
            .await
            .expect("log source"),
    );
    engine
        .client()
        .create_cluster()
        .cluster_name(&cluster)
        .send()
        .await
        .expect("create cluster");
    for _ in 0..2 {
        control(
            &endpoint,
            "/_flotilla/ecs/add-container-instance",
            serde_json::json!({"cluster": cluster}),
        )
        .await
        .expect("container instance");
    }
    let queue = SqsQueue::from_client(
        sqs,
        SqsSettings {
            queue_namespace: format!("bench-{token}"),
            ..SqsSettings::default()
        },
    )
    .expect("queue");
    let poll_interval = Duration::from_millis(500);
    let config = ServiceConfig {
        default_cluster: cluster.clone(),
        clusters: vec![cluster.clone()],
        workers: WorkerConfig {
            status_poll_interval: poll_interval,
            receive_wait: Duration::from_secs(2),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let flotilla = Flotilla::builder()
        .store(Arc::new(MemoryStore::new()))
        .queue(Arc::new(queue))
        .engine(engine.clone())
        .log_source("ecs", logs)
        .config(config)
        .build()
        .expect("flotilla");
    let mut def = NewDefinition::new(format!("bench-{token}"), "busybox:latest").command("true");
    def.memory = Some(4);
    let def = flotilla.define(def).await.expect("define");
    counter.reset();
    described.0.store(0, Ordering::Relaxed);

    let handle = flotilla.start();
    let started = Instant::now();
    for _ in 0..n {
        flotilla
            .execute(&def.definition_id, ExecuteRequest::owned_by("bench"))
            .await
            .expect("execute");
    }
    let executed_in = started.elapsed();

    // Finish running tasks with exit 0 as they show up; count active runs
    // at each look to estimate poll cycles independently.
    let finished = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let q = RunQuery::all(1000).with_statuses(&[RunStatus::Running]);
        let running = flotilla.store().list_runs(&q).await.expect("list running");
        let todo: Vec<_> = running
            .items
            .into_iter()
            .filter(|r| {
                finished
                    .lock()
                    .map(|f| !f.contains(&r.run_id))
                    .unwrap_or(true)
            })
            .collect();
        let calls = todo.into_iter().map(|r| {
            let endpoint = endpoint.clone();
            let finished = finished.clone();
            async move {
                let Some(task) = r.engine_ref.clone() else {
                    return;
                };
                let body = serde_json::json!({
                    "cluster": r.cluster, "task": task, "exit_code": 0,
                    "stop_code": "EssentialContainerExited",
                    "stopped_reason": "Essential container in task exited",
                });
                if control(&endpoint, "/_flotilla/ecs/finish-task", body)
                    .await
                    .is_ok()
                    && let Ok(mut f) = finished.lock()
                {
                    f.insert(r.run_id.clone());
                }
            }
        });
        futures::future::join_all(calls).await;
        let q = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
        let stopped = flotilla
            .store()
            .list_runs(&q)
            .await
            .expect("list stopped")
            .total;
        if stopped as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {stopped} of {n} runs stopped within 15 minutes"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    handle.shutdown().await;

    let mut q = RunQuery::all(1000).with_statuses(&[RunStatus::Stopped]);
    let mut attempts = 0u64;
    let mut succeeded = 0u64;
    loop {
        let page = flotilla.store().list_runs(&q).await.expect("list");
        for r in &page.items {
            attempts += u64::from(r.attempt);
            succeeded += u64::from(r.succeeded());
        }
        match page.next_cursor {
            Some(c) if page.items.len() == 1000 => q.cursor = Some(c),
            _ => break,
        }
    }
    let run_task = counter.calls("ECS.RunTask");
    let describe = counter.calls("ECS.DescribeTasks");
    let run_polls = described.0.load(Ordering::Relaxed);
    let per_run = |c: u64| c as f64 / n as f64;
    println!("api_calls: {n} runs through Flotilla (MemoryStore, SqsQueue, EcsEngine) on moto");
    println!(
        "  executed in {:.1} s, all stopped after {:.1} s; {succeeded} succeeded, {attempts} attempts; status poll every {:?}",
        executed_in.as_secs_f64(),
        elapsed.as_secs_f64(),
        poll_interval
    );
    println!(
        "  RunTask:       {run_task} calls = {:.3} per attempt (flotilla-os: 1 per attempt)",
        run_task as f64 / attempts.max(1) as f64
    );
    println!(
        "  DescribeTasks: {describe} calls covering {run_polls} run-polls = {:.4} per run per poll cycle (flotilla-os: 1 per run per poll cycle)",
        describe as f64 / run_polls.max(1) as f64
    );
    println!("  every AWS call, per run:");
    for (op, calls) in counter.snapshot() {
        println!("    {op:<36} {calls:>7}  {:.3}/run", per_run(calls));
    }
    println!(
        "  AWS calls per run in total: {:.3}",
        per_run(counter.snapshot().values().sum())
    );
}
