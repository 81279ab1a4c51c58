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

/// Messages on the status queue, visible or received and not yet deleted.
async fn queue_depth(engine: &EcsEngine) -> i64 {
    let ev = engine.settings().events.clone().expect("events");
    let mut settings = engine.settings().clone();
    settings.events = None;
    let config = flotilla_ecs::sdk_config(
        &settings.region,
        settings.endpoint_url.as_deref(),
        settings.credentials.as_ref(),
        1,
    )
    .await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let url = sqs
        .get_queue_url()
        .queue_name(&ev.status_queue)
        .send()
        .await
        .expect("queue url")
        .queue_url()
        .expect("url")
        .to_string();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(
            aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
        )
        .send()
        .await
        .expect("attributes");
    attrs
        .attributes()
        .map(|a| {
            a.values()
                .map(|v| v.parse::<i64>().unwrap_or(0))
                .sum::<i64>()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_apply_every_pushed_event_once() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (first, logs) = pushing_backend(&endpoint).await;
    let cluster = common::cluster(first.settings());
    // Three replicas, each with its own engine consuming the one status
    // queue, on one store (an SQLite file, as three processes would share).
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("flotilla.db");
    let mut engines = vec![first];
    for _ in 1..3 {
        let mut settings = engines[0].settings().clone();
        if let Some(ev) = settings.events.as_mut() {
            ev.install = false;
        }
        engines.push(Arc::new(
            EcsEngine::new(settings).await.expect("engine with push"),
        ));
    }
    let mut replicas = Vec::new();
    let mut handles = Vec::new();
    for (i, engine) in engines.iter().enumerate() {
        let store =
            flotilla_sqlite::SqliteStore::open(&db, flotilla_sqlite::SqliteOptions::default())
                .await
                .expect("sqlite store");
        let queue = store.queue();
        let config = ServiceConfig {
            default_cluster: cluster.clone(),
            clusters: vec![cluster.clone()],
            replica_id: format!("replica-{i}"),
            workers: WorkerConfig {
                receive_wait: Duration::from_secs(1),
                // Far longer than the test waits: only pushes move runs.
                status_poll_interval: Duration::from_secs(3600),
                // Longer than the test: one leader throughout, so events
                // taken by another replica are never applied by it.
                lease_ttl: Duration::from_secs(600),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        };
        let f = Flotilla::builder()
            .store(Arc::new(store))
            .queue(Arc::new(queue))
            .engine(engine.clone())
            .log_source("ecs", logs.clone())
            .config(config)
            .build()
            .expect("flotilla");
        handles.push(f.start());
        replicas.push(f);
    }
    // Let the first (immediate) poll ticks pass before any run exists.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut n =
        NewDefinition::new(format!("push3-{}", common::token()), "busybox:latest").command("true");
    n.memory = Some(64);
    let def = replicas[0].define(n).await.expect("define");
    const RUNS: usize = 24;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let run = replicas[i % 3]
            .execute(&def.definition_id, ExecuteRequest::owned_by("tester"))
            .await
            .expect("execute");
        runs.push(run);
    }
    let f = &replicas[0];
    let ids: &[flotilla::Run] = &runs;
    let wait_all = |status: RunStatus| async move {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let mut behind = Vec::new();
            for r in ids {
                let now = f.get_run(&r.run_id).await.expect("get");
                if now.status != status {
                    behind.push((now.run_id, now.status));
                }
            }
            if behind.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "pushed events were lost: {} of {RUNS} runs never became {status:?}: {behind:?}",
                behind.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    wait_all(RunStatus::Running).await;
    for (i, r) in runs.iter().enumerate() {
        let run = f.get_run(&r.run_id).await.expect("get");
        common::finish_task(
            &endpoint,
            &engines[0],
            &run,
            Some((i % 3) as i64),
            "EssentialContainerExited",
            "Essential container in task exited",
            None,
        )
        .await
        .expect("finish");
    }
    wait_all(RunStatus::Stopped).await;
    for (i, r) in runs.iter().enumerate() {
        let run = f.get_run(&r.run_id).await.expect("get");
        assert_eq!((run.exit_code, run.attempt), (Some((i % 3) as i64), 1));
        let events = f.run_events(&r.run_id).await.expect("events");
        for status in [RunStatus::Pending, RunStatus::Running, RunStatus::Stopped] {
            let n = events.iter().filter(|e| e.to == status).count();
            assert_eq!(n, 1, "one transition to {status:?}: {events:#?}");
        }
    }
    // Every message was deleted, once its update was applied.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let depth = queue_depth(&engines[0]).await;
        if depth == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{depth} status messages were never deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for h in handles {
        h.shutdown().await;
    }
}
