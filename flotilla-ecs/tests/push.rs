//! The push path on moto: an EventBridge rule routes "ECS Task State Change"
//! events (which the moto wrapper publishes as ECS does) to an SQS status
//! queue that `EcsEngine::events` streams.

mod common;

use std::sync::Arc;
use std::time::Duration;

use flotilla::memory::{MemoryQueue, MemoryStore};
use flotilla::service::WorkerConfig;
use flotilla::{Engine, ExecuteRequest, Flotilla, NewDefinition, RunStatus, ServiceConfig};
use flotilla_ecs::{CloudWatchLogs, EcsEngine, EventSettings};

/// Engine with push enabled, on a prepared cluster.
async fn pushing_backend(endpoint: &str) -> (Arc<EcsEngine>, Arc<CloudWatchLogs>) {
    let (plain, logs) = common::backend(endpoint).await;
    let mut settings = plain.settings().clone();
    let t = common::token();
    settings.events = Some(EventSettings {
        status_queue: format!("status-{t}"),
        rule_name: format!("rule-{t}"),
        wait_seconds: 1,
        ..EventSettings::default()
    });
    let engine = EcsEngine::new(settings).await.expect("engine with push");
    assert!(engine.capabilities().push_events);
    (Arc::new(engine), logs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_suite_passes_with_push_events() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, logs) = pushing_backend(&endpoint).await;
    let probe = common::probe(&endpoint, engine.clone(), logs);
    flotilla::testkit::engine_suite(engine.as_ref(), &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushed_changes_stop_runs_without_waiting_for_a_poll() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, logs) = pushing_backend(&endpoint).await;
    let cluster = common::cluster(engine.settings());
    let config = ServiceConfig {
        default_cluster: cluster.clone(),
        clusters: vec![cluster.clone()],
        workers: WorkerConfig {
            receive_wait: Duration::from_secs(1),
            // Far longer than the test waits: only pushes can move runs.
            status_poll_interval: Duration::from_secs(3600),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let flotilla = Flotilla::builder()
        .store(Arc::new(MemoryStore::new()))
        .queue(Arc::new(MemoryQueue::new()))
        .engine(engine.clone())
        .log_source("ecs", logs)
        .config(config)
        .build()
        .expect("flotilla");
    let handle = flotilla.start();
    // Let the first (immediate) poll tick pass before any run exists.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut n =
        NewDefinition::new(format!("push-{}", common::token()), "busybox:latest").command("exit 3");
    n.memory = Some(64);
    let def = flotilla.define(n).await.expect("define");
    let run = flotilla
        .execute(&def.definition_id, ExecuteRequest::owned_by("tester"))
        .await
        .expect("execute");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    let running = loop {
        let r = flotilla.get_run(&run.run_id).await.expect("get");
        if r.status == RunStatus::Running {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "the pushed RUNNING change never arrived: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    common::finish_task(
        &endpoint,
        &engine,
        &running,
        Some(3),
        "EssentialContainerExited",
        "Essential container in task exited",
        None,
    )
    .await
    .expect("finish");
    let done = flotilla
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("the pushed STOPPED change arrives long before the next poll");
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.failure, Some(flotilla::FailureCategory::AppExit));
    handle.shutdown().await;
}
