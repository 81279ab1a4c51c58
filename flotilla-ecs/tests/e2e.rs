//! End to end on moto through `Flotilla`: in-memory store, `SqsQueue`,
//! `EcsEngine` and `CloudWatchLogs`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use flotilla::memory::MemoryStore;
use flotilla::service::WorkerConfig;
use flotilla::{
    ExecuteRequest, FailureCategory, Flotilla, FlotillaHandle, Message, NewDefinition, RetryPolicy,
    Run, RunStatus, ServiceConfig,
};
use flotilla_ecs::{CloudWatchLogs, EcsEngine};
use flotilla_sqs::{SqsQueue, SqsSettings};

struct Env {
    endpoint: String,
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    engine: Arc<EcsEngine>,
    logs: Arc<CloudWatchLogs>,
    cluster: String,
}

impl Env {
    async fn start(endpoint: &str) -> Env {
        let (engine, logs) = common::backend(endpoint).await;
        let cluster = common::cluster(engine.settings());
        let queue = SqsQueue::new(SqsSettings {
            region: "us-east-1".into(),
            endpoint_url: Some(endpoint.to_string()),
            credentials: Some(flotilla_sqs::StaticCredentials::new("test", "test")),
            queue_namespace: format!("e2e-{}", common::token()),
            ..SqsSettings::default()
        })
        .await
        .expect("sqs queue");
        let config = ServiceConfig {
            default_cluster: cluster.clone(),
            clusters: vec![cluster.clone()],
            mode: "test".into(),
            retry: RetryPolicy {
                base_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(500),
                ..RetryPolicy::default()
            },
            workers: WorkerConfig {
                receive_wait: Duration::from_secs(1),
                status_poll_interval: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        };
        let flotilla = Flotilla::builder()
            .store(Arc::new(MemoryStore::new()))
            .queue(Arc::new(queue))
            .engine(engine.clone())
            .log_source("ecs", logs.clone())
            .config(config)
            .build()
            .expect("flotilla");
        let handle = Some(flotilla.start());
        Env {
            endpoint: endpoint.to_string(),
            flotilla,
            handle,
            engine,
            logs,
            cluster,
        }
    }

    async fn define(&self, command: &str) -> flotilla::Definition {
        let mut n = NewDefinition::new(format!("e2e-{}", common::token()), "busybox:latest")
            .command(command);
        n.memory = Some(128);
        self.flotilla.define(n).await.expect("define")
    }

    async fn execute(&self, def: &flotilla::Definition) -> Run {
        self.flotilla
            .execute(&def.definition_id, ExecuteRequest::owned_by("tester"))
            .await
            .expect("execute")
    }

    /// Waits until the run is in `status` (and attempt).
    async fn wait_status(&self, run_id: &str, status: RunStatus, attempt: u32) -> Run {
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let run = self.flotilla.get_run(run_id).await.expect("get run");
            if run.status == status && run.attempt == attempt {
                return run;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "run {run_id} never reached {status} on attempt {attempt}: {run:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn finish(&self, run: &Run, exit: Option<i64>, stop: &str, reason: &str) {
        common::finish_task(&self.endpoint, &self.engine, run, exit, stop, reason, None)
            .await
            .expect("finish task");
    }

    async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

fn statuses(events: &[flotilla::RunEvent]) -> Vec<(RunStatus, u32)> {
    events.iter().map(|e| (e.to, e.attempt)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_succeeds_with_logs_and_a_duplicate_delivery_starts_one_task() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint).await;
    let def = env.define("echo hello").await;
    let run = env.execute(&def).await;
    assert_eq!(run.status, RunStatus::Queued);
    // SQS delivers at least once: the same message again, at once.
    env.flotilla
        .queue()
        .enqueue(&env.cluster, &[Message::new(run.run_id.clone(), 1)])
        .await
        .expect("duplicate enqueue");
    let running = env.wait_status(&run.run_id, RunStatus::Running, 1).await;
    let arn = running.engine_ref.clone().expect("engine_ref");
    assert!(arn.contains(":task/"), "{arn}");
    let text: String = (0..30)
        .map(|i| format!("line {i}: grüße 🚀 from the container\n"))
        .collect();
    common::write_log(&env.logs, &running, &text)
        .await
        .expect("write log");
    // Let the duplicate delivery be handled before counting tasks.
    let give_up = tokio::time::Instant::now() + Duration::from_secs(20);
    while env
        .flotilla
        .queue()
        .depth(&env.cluster)
        .await
        .expect("depth")
        > 0
    {
        assert!(
            tokio::time::Instant::now() < give_up,
            "duplicate never handled"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let tasks = common::tasks_of(&env.engine, &running)
        .await
        .expect("tasks");
    assert_eq!(tasks, vec![arn.clone()], "one task for two deliveries");

    env.finish(
        &running,
        Some(0),
        "EssentialContainerExited",
        "Essential container in task exited",
    )
    .await;
    let done = env
        .flotilla
        .wait_for_stop(&run.run_id, Duration::from_secs(60))
        .await
        .expect("stops");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.failure, None);
    assert!(
        done.instance
            .is_some_and(|i| i.instance_id.starts_with("i-")),
        "EC2 instance id recorded"
    );
    let events = env.flotilla.run_events(&run.run_id).await.expect("events");
    assert_eq!(
        statuses(&events),
        vec![
            (RunStatus::Queued, 1),
            (RunStatus::Pending, 1),
            (RunStatus::Running, 1),
            (RunStatus::Stopped, 1)
        ],
        "{events:?}"
    );
    // The log, page by page.
    let mut got = String::new();
    let mut cursor: Option<String> = None;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, chunk) = env
            .flotilla
            .logs(&run.run_id, cursor.as_deref(), 64)
            .await
            .expect("logs");
        assert!(
            chunk.log.len() <= 64 + 3,
            "page of {} bytes",
            chunk.log.len()
        );
        got.push_str(&chunk.log);
        if chunk.cursor.is_some() {
            cursor = chunk.cursor;
        }
        if chunk.complete {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "log never complete: {got:?}"
        );
        if chunk.log.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(got, text);
    // The container got the run's environment and command.
    let described = env
        .engine
        .client()
        .describe_tasks()
        .cluster(&env.cluster)
        .tasks(&arn)
        .send()
        .await
        .expect("describe");
    let task = &described.tasks()[0];
    let ov = &task.overrides().expect("overrides").container_overrides()[0];
    let env_names: Vec<&str> = ov.environment().iter().filter_map(|e| e.name()).collect();
    assert!(env_names.contains(&"FLOTILLA_RUN_ID"), "{env_names:?}");
    assert_eq!(ov.command(), ["sh", "-c", "echo hello"]);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_3_is_a_failed_stop() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint).await;
    let def = env.define("exit 3").await;
    let run = env.execute(&def).await;
    let running = env.wait_status(&run.run_id, RunStatus::Running, 1).await;
    env.finish(
        &running,
        Some(3),
        "EssentialContainerExited",
        "Essential container in task exited",
    )
    .await;
    let done = env
        .flotilla
        .wait_for_stop(&run.run_id, Duration::from_secs(60))
        .await
        .expect("stops");
    assert_eq!(done.status, RunStatus::Stopped);
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.failure, Some(FailureCategory::AppExit));
    assert!(!done.succeeded());
    assert_eq!(done.attempt, 1, "app exits are not retried");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_pull_failure_is_retried_and_attempt_2_succeeds() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint).await;
    let def = env.define("echo retry").await;
    let run = env.execute(&def).await;
    let first = env.wait_status(&run.run_id, RunStatus::Running, 1).await;
    common::finish_task(
        &env.endpoint,
        &env.engine,
        &first,
        None,
        "TaskFailedToStart",
        "CannotPullContainerError: pull image manifest has been retried 5 time(s)",
        Some("CannotPullContainerError: ref not found"),
    )
    .await
    .expect("fail the pull");
    let second = env.wait_status(&run.run_id, RunStatus::Running, 2).await;
    assert_ne!(
        second.engine_ref, first.engine_ref,
        "attempt 2 is a new task"
    );
    env.finish(
        &second,
        Some(0),
        "EssentialContainerExited",
        "Essential container in task exited",
    )
    .await;
    let done = env
        .flotilla
        .wait_for_stop(&run.run_id, Duration::from_secs(60))
        .await
        .expect("stops");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.attempt, 2);
    let seen = statuses(&env.flotilla.run_events(&run.run_id).await.expect("events"));
    assert_eq!(
        seen,
        vec![
            (RunStatus::Queued, 1),
            (RunStatus::Pending, 1),
            (RunStatus::Running, 1),
            (RunStatus::NeedsRetry, 1),
            (RunStatus::Queued, 2),
            (RunStatus::Pending, 2),
            (RunStatus::Running, 2),
            (RunStatus::Stopped, 2)
        ]
    );
    let events = env.flotilla.run_events(&run.run_id).await.expect("events");
    let retry = events
        .iter()
        .find(|e| e.to == RunStatus::NeedsRetry)
        .and_then(|e| e.reason.clone())
        .unwrap_or_default();
    assert!(
        retry.contains("image_pull") && retry.contains("CannotPullContainerError"),
        "{retry}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_calls_stop_task() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint).await;
    let def = env.define("sleep 3600").await;
    let run = env.execute(&def).await;
    let running = env.wait_status(&run.run_id, RunStatus::Running, 1).await;
    let stopped = env
        .flotilla
        .terminate(&run.run_id, "alice")
        .await
        .expect("terminate");
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert_eq!(stopped.failure, Some(FailureCategory::Terminated));
    let arn = running.engine_ref.clone().expect("engine_ref");
    let described = env
        .engine
        .client()
        .describe_tasks()
        .cluster(&env.cluster)
        .tasks(&arn)
        .send()
        .await
        .expect("describe");
    let task = &described.tasks()[0];
    assert_eq!(task.last_status(), Some("STOPPED"), "StopTask was called");
    assert_eq!(task.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
    assert!(
        task.stopped_reason().is_some_and(|r| r.contains("alice")),
        "{:?}",
        task.stopped_reason()
    );
    env.stop().await;
}

/// ECS refusing to place a task (`RESOURCE:MEMORY`: more memory than any
/// container instance has) is not the run's failure: it stays QUEUED, its
/// message is released with backoff and asked again, its `waiting` reason
/// quotes ECS, other runs of the cluster still run, and it can be
/// terminated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ecs_cannot_place_stays_queued_and_does_not_block_the_cluster() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint).await;
    let mut n = NewDefinition::new(format!("e2e-big-{}", common::token()), "busybox:latest")
        .command("echo big");
    n.memory = Some(1_000_000);
    let big_def = env.flotilla.define(n).await.expect("define");
    let big = env.execute(&big_def).await;
    // A normal run behind it on the same cluster is placed and runs.
    let small_def = env.define("echo small").await;
    let small = env.execute(&small_def).await;
    let running = env.wait_status(&small.run_id, RunStatus::Running, 1).await;
    env.finish(&running, Some(0), "EssentialContainerExited", "done")
        .await;
    env.wait_status(&small.run_id, RunStatus::Stopped, 1).await;
    // Several submit attempts later the big run is still QUEUED, unfailed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let still = env.flotilla.get_run(&big.run_id).await.expect("get");
    assert_eq!(
        (still.status, still.attempt, still.failure),
        (RunStatus::Queued, 1, None),
        "{still:?}"
    );
    let waiting = still.waiting.as_ref().expect("it says why it waits");
    assert!(
        waiting.reason.contains("the engine refused")
            && waiting.reason.contains("could place the task"),
        "the placement failure is the reason: {waiting:?}"
    );
    let events = env.flotilla.run_events(&big.run_id).await.expect("events");
    assert_eq!(statuses(&events), [(RunStatus::Queued, 1)], "{events:?}");
    let done = env
        .flotilla
        .terminate(&big.run_id, "tester")
        .await
        .expect("terminate");
    assert_eq!(done.status, RunStatus::Stopped);
    assert_eq!(done.failure, Some(FailureCategory::Terminated));
    env.stop().await;
}
