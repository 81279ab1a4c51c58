//! The trust guarantees on ECS (moto): finished work that ECS forgets while
//! flotilla is down is never run again, and runs through a fault-injecting
//! wrapper around the ECS engine each execute exactly once. Executions are
//! counted at ECS (tasks carrying each run's tag, RunTask calls that
//! started tasks), not from flotilla's records.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecs::types::{DesiredStatus, TaskField};
use flotilla::service::WorkerConfig;
use flotilla::testkit::{FaultPlan, FaultyEngine};
use flotilla::{
    ExecuteRequest, FailureCategory, Flotilla, NewDefinition, Run, RunQuery, RunStatus,
    ServiceConfig, Store,
};
use flotilla_ecs::{CloudWatchLogs, EcsEngine, EventSettings, RUN_TAG};

/// Tasks at ECS per run id (from the tasks' run tag), running and stopped.
async fn tasks_per_run(engine: &EcsEngine, cluster: &str) -> HashMap<String, usize> {
    let client = engine.client();
    let mut per_run = HashMap::new();
    for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
        let mut token: Option<String> = None;
        loop {
            let out = client
                .list_tasks()
                .cluster(cluster)
                .desired_status(desired.clone())
                .set_next_token(token.take())
                .send()
                .await
                .expect("list tasks");
            for chunk in out.task_arns().chunks(100) {
                let described = client
                    .describe_tasks()
                    .cluster(cluster)
                    .set_tasks(Some(chunk.to_vec()))
                    .include(TaskField::Tags)
                    .send()
                    .await
                    .expect("describe tasks");
                for t in described.tasks() {
                    if let Some(run_id) = t
                        .tags()
                        .iter()
                        .find(|x| x.key() == Some(RUN_TAG))
                        .and_then(|x| x.value())
                    {
                        *per_run.entry(run_id.to_string()).or_default() += 1;
                    }
                }
            }
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
    }
    per_run
}

/// RunTask calls that started tasks on `cluster` so far (the wrapper's
/// count).
async fn run_task_count(endpoint: &str, cluster: &str) -> i64 {
    let path = format!("/_flotilla/ecs/run-task-count?cluster={cluster}");
    common::control(endpoint, &path, None)
        .await
        .expect("run-task-count")["count"]
        .as_i64()
        .expect("a count")
}

fn config(cluster: &str, grace: Duration) -> ServiceConfig {
    let mut c = ServiceConfig {
        default_cluster: cluster.to_string(),
        clusters: vec![cluster.to_string()],
        workers: WorkerConfig {
            receive_wait: Duration::from_millis(500),
            status_poll_interval: Duration::from_millis(200),
            lease_ttl: Duration::from_secs(3),
            reconcile_interval: Duration::from_millis(500),
            missing_grace: grace,
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    c.retry.base_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(200);
    c
}

async fn service(
    db: &std::path::Path,
    engine: Arc<EcsEngine>,
    logs: Arc<CloudWatchLogs>,
    cfg: ServiceConfig,
) -> (Flotilla, flotilla::FlotillaHandle) {
    let store = flotilla_sqlite::SqliteStore::open(db, flotilla_sqlite::SqliteOptions::default())
        .await
        .expect("sqlite store");
    let queue = store.queue();
    let f = Flotilla::builder()
        .store(Arc::new(store))
        .queue(Arc::new(queue))
        .engine(engine)
        .log_source("ecs", logs)
        .config(cfg)
        .build()
        .expect("flotilla");
    let h = f.start();
    (f, h)
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs RUNNING at ECS, then flotilla stops; while it is down they finish
/// (exit 0 or 3) and ECS forgets them (as it does about an hour after a
/// task stops). `push` says whether the ECS event queue is on.
async fn down_while_ecs_forgets(push: bool) -> (Flotilla, Vec<Run>, Vec<i64>, tempfile::TempDir) {
    let endpoint = common::endpoint().expect("checked by the caller");
    let (plain, logs) = common::backend(&endpoint).await;
    let engine = if push {
        let mut settings = plain.settings().clone();
        let t = common::token();
        settings.events = Some(EventSettings {
            status_queue: format!("status-{t}"),
            rule_name: format!("rule-{t}"),
            wait_seconds: 1,
            visibility_timeout: 2,
            ..EventSettings::default()
        });
        Arc::new(EcsEngine::new(settings).await.expect("engine with push"))
    } else {
        plain
    };
    let cluster = common::cluster(engine.settings());
    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("flotilla.db");
    // A grace far shorter than the outage (only the rule that a run which
    // had started is never re-run keeps them from another attempt), above
    // the status queue's visibility timeout and long poll.
    let cfg = config(&cluster, Duration::from_secs(5));
    let (f, h) = service(&db, engine.clone(), logs.clone(), cfg.clone()).await;
    let mut n = NewDefinition::new(format!("forget-{}", common::token()), "busybox:latest")
        .command("echo work");
    n.memory = Some(64);
    let def = f.define(n).await.expect("define");
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(
            f.execute(&def.definition_id, ExecuteRequest::owned_by("tester"))
                .await
                .expect("execute"),
        );
    }
    until("all running", || async {
        let q = RunQuery::all(1).with_statuses(&[RunStatus::Running]);
        f.list_runs(q).await.expect("list").total == runs.len() as u64
    })
    .await;
    let mut running = Vec::new();
    for r in &runs {
        running.push(f.get_run(&r.run_id).await.expect("get"));
    }
    let started = run_task_count(&endpoint, &cluster).await;
    h.shutdown().await;

    // Flotilla is down: the tasks finish, then ECS forgets them.
    let codes: Vec<i64> = (0..running.len() as i64).map(|i| (i % 2) * 3).collect();
    for (run, code) in running.iter().zip(&codes) {
        common::finish_task(
            &endpoint,
            &engine,
            run,
            Some(*code),
            "EssentialContainerExited",
            "Essential container in task exited",
            None,
        )
        .await
        .expect("finish");
    }
    let forgotten = common::control(
        &endpoint,
        "/_flotilla/ecs/forget-stopped-tasks",
        Some(serde_json::json!({"cluster": cluster})),
    )
    .await
    .expect("forget");
    assert_eq!(
        forgotten["forgotten"].as_array().map(Vec::len),
        Some(running.len()),
        "ECS forgot every stopped task: {forgotten}"
    );

    // Flotilla comes back, on the same store, longer than the grace later.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (f, h) = service(&db, engine.clone(), logs, cfg).await;
    until("all stopped after the restart", || async {
        let q = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
        f.list_runs(q).await.expect("list").total == running.len() as u64
    })
    .await;
    // Some more polls and retry rounds: nothing starts again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        run_task_count(&endpoint, &cluster).await,
        started,
        "no task was started after the restart"
    );
    let at_ecs = tasks_per_run(&engine, &cluster).await;
    assert!(
        running
            .iter()
            .all(|r| !at_ecs.contains_key(&flotilla_ecs::taskdef::tag_value(&r.run_id))),
        "no task of these runs exists at ECS after the restart: {at_ecs:?}"
    );
    let mut done = Vec::new();
    for r in &running {
        done.push(f.get_run(&r.run_id).await.expect("get"));
    }
    h.shutdown().await;
    (f, done, codes, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_forgetting_finished_tasks_while_flotilla_is_down_keeps_their_outcome_from_the_event_queue()
 {
    let Some(_endpoint) = common::endpoint() else {
        return;
    };
    let (_f, done, codes, _dir) = down_while_ecs_forgets(true).await;
    for (run, code) in done.iter().zip(&codes) {
        assert_eq!(
            (run.status, run.attempt, run.exit_code),
            (RunStatus::Stopped, 1, Some(*code)),
            "the real outcome, from the status queue that kept it: {run:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_forgetting_finished_tasks_while_flotilla_is_down_never_runs_them_again() {
    let Some(_endpoint) = common::endpoint() else {
        return;
    };
    let (f, done, _codes, _dir) = down_while_ecs_forgets(false).await;
    for run in &done {
        assert_eq!(
            (run.status, run.attempt, run.failure),
            (RunStatus::Stopped, 1, Some(FailureCategory::Unknown)),
            "an outcome ECS forgot is unknown, and never retried: {run:?}"
        );
        let events = f.run_events(&run.run_id).await.expect("events");
        assert!(
            !events.iter().any(|e| e.to == RunStatus::NeedsRetry),
            "{events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecs_runs_through_injected_faults_each_execute_exactly_once() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let runs_wanted: usize = 1_000;
    let (engine, logs) = common::backend(&endpoint).await;
    let cluster = common::cluster(engine.settings());
    let inner =
        EcsEngine::from_client(engine.client().clone(), engine.settings().clone()).expect("engine");
    let faulty = Arc::new(FaultyEngine::new(inner, FaultPlan::spread(11, 10)));
    let grace = Duration::from_secs(3);
    let mut cfg = config(&cluster, grace);
    cfg.workers.submit_concurrency = 16;
    let store = Arc::new(flotilla::memory::MemoryStore::new());
    let f = Flotilla::builder()
        .store(store.clone())
        .engine(faulty.clone())
        .log_source("ecs", logs)
        .config(cfg)
        .build()
        .expect("flotilla");
    let h = f.start();
    let mut n = NewDefinition::new(format!("faults-{}", common::token()), "busybox:latest")
        .command("echo once");
    n.memory = Some(4);
    let def = f.define(n).await.expect("define");
    let started_before = run_task_count(&endpoint, &cluster).await;
    let mut ids = Vec::new();
    for _ in 0..runs_wanted {
        let run = f
            .execute(&def.definition_id, ExecuteRequest::owned_by("tester"))
            .await
            .expect("execute");
        ids.push(run.run_id);
    }
    // The tasks "run" and exit 0 as they appear at ECS.
    let finisher = {
        let endpoint = endpoint.clone();
        let cluster = cluster.clone();
        let client = engine.client().clone();
        tokio::spawn(async move {
            loop {
                let mut token: Option<String> = None;
                loop {
                    let Ok(out) = client
                        .list_tasks()
                        .cluster(&cluster)
                        .desired_status(DesiredStatus::Running)
                        .set_next_token(token.take())
                        .send()
                        .await
                    else {
                        break;
                    };
                    for arn in out.task_arns() {
                        let _ = common::control(
                            &endpoint,
                            "/_flotilla/ecs/finish-task",
                            Some(serde_json::json!({"cluster": cluster, "task": arn, "exit_code": 0})),
                        )
                        .await;
                    }
                    match out.next_token() {
                        Some(t) if !t.is_empty() => token = Some(t.to_string()),
                        _ => break,
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    until("every run stopped", || async {
        let q = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
        store.list_runs(&q).await.expect("list").total == runs_wanted as u64
    })
    .await;
    finisher.abort();
    let per_run = tasks_per_run(&engine, &cluster).await;
    for id in &ids {
        let run = f.get_run(id).await.expect("run");
        let events = f.run_events(id).await.expect("events");
        assert_eq!(
            (run.exit_code, run.attempt, run.failure),
            (Some(0), 1, None),
            "declared lost or retried under faults: {run:?} {events:#?}"
        );
        let tasks = per_run.get(&flotilla_ecs::taskdef::tag_value(id)).copied();
        assert_eq!(tasks, Some(1), "run {id} has {tasks:?} tasks at ECS");
    }
    assert_eq!(
        run_task_count(&endpoint, &cluster).await - started_before,
        runs_wanted as i64,
        "one RunTask that started a task per run"
    );
    let counts = faulty.counts();
    assert!(
        counts.missing > 0 && counts.lost_submits > 0 && counts.unavailable > 0,
        "the schedule injected every kind of fault: {counts:?}"
    );
    eprintln!("faults injected over {runs_wanted} ECS runs on moto: {counts:?}");
    h.shutdown().await;
}
