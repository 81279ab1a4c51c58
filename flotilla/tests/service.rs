//! End to end through the `Flotilla` service with the in-memory backends and
//! the local engine: real processes, real logs, real workers.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use flotilla::service::{ServiceConfig, WorkerConfig};
use flotilla::{
    Cluster, ClusterStatus, ErrorKind, ExecuteRequest, FailureCategory, Flotilla, FlotillaHandle,
    NewDefinition, Run, RunQuery, RunStatus, StatusReport,
};

const WAIT: Duration = Duration::from_secs(60);

fn test_config() -> ServiceConfig {
    let defaults = ServiceConfig::default();
    ServiceConfig {
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(200),
            receive_wait: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(2),
            reconcile_interval: Duration::from_millis(300),
            queued_stale_after: Duration::from_secs(2),
            maintenance_delay: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        retry: flotilla::RetryPolicy {
            base_backoff: Duration::from_millis(50),
            ..defaults.retry.clone()
        },
        clusters: vec!["default".into(), "other".into()],
        ..defaults
    }
}

struct Env {
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        Env::with_config(test_config())
    }

    fn with_config(config: ServiceConfig) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let flotilla = Flotilla::builder()
            .config(config)
            .build_local(dir.path().join("data"))
            .expect("build");
        let handle = Some(flotilla.start());
        Env {
            flotilla,
            handle,
            dir,
        }
    }

    async fn define(&self, alias: &str, command: &str) -> String {
        self.flotilla
            .define(NewDefinition::new(alias, "ubuntu:latest").command(command))
            .await
            .expect("define")
            .definition_id
    }

    /// A definition whose non-zero exits are retried too.
    async fn define_retrying(&self, alias: &str, command: &str) -> String {
        let mut def = NewDefinition::new(alias, "ubuntu:latest").command(command);
        def.retry_on_app_exit = true;
        self.flotilla
            .define(def)
            .await
            .expect("define")
            .definition_id
    }

    async fn run(&self, definition_id: &str, request: ExecuteRequest) -> Run {
        let run = self
            .flotilla
            .execute(definition_id, request)
            .await
            .expect("execute");
        self.flotilla
            .wait_for_stop(&run.run_id, WAIT)
            .await
            .expect("run stops")
    }

    async fn log(&self, run_id: &str) -> String {
        let mut text = String::new();
        let mut cursor: Option<String> = None;
        loop {
            let (_, chunk) = self
                .flotilla
                .logs(run_id, cursor.as_deref(), 4096)
                .await
                .expect("logs");
            let done = chunk.log.is_empty();
            text.push_str(&chunk.log);
            cursor = chunk.cursor;
            if done {
                return text;
            }
        }
    }

    async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

fn me() -> ExecuteRequest {
    ExecuteRequest::owned_by("me")
}

#[tokio::test]
async fn a_successful_run_reaches_stopped_with_its_log() {
    let env = Env::new();
    let def = env.define("hello", "echo \"hello $USERNAME\"").await;
    let run = env.run(&def, me().env("USERNAME", "flotilla")).await;
    assert_eq!(run.status, RunStatus::Stopped);
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert!(run.succeeded());
    assert!(run.failure.is_none());
    assert!(run.engine_ref.is_some(), "engine_ref recorded: {run:?}");
    assert!(run.started_at.is_some() && run.finished_at.is_some());
    assert_eq!(run.env_value("FLOTILLA_RUN_ID"), Some(run.run_id.as_str()));
    assert_eq!(run.env_value("FLOTILLA_RUN_OWNER_ID"), Some("me"));
    assert_eq!(run.env_value("FLOTILLA_SERVER_MODE"), Some("dev"));
    assert!(env.log(&run.run_id).await.contains("hello flotilla"));
    let events = env.flotilla.run_events(&run.run_id).await.expect("events");
    let path: Vec<RunStatus> = events.iter().map(|e| e.to).collect();
    assert_eq!(
        path,
        vec![
            RunStatus::Queued,
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Stopped
        ],
        "{events:?}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn a_failing_run_records_its_exit_code() {
    let env = Env::new();
    let def = env.define("fails", "echo before; exit 3").await;
    let run = env.run(&def, me()).await;
    assert_eq!(run.status, RunStatus::Stopped);
    assert_eq!(run.exit_code, Some(3));
    assert_eq!(run.failure, Some(FailureCategory::AppExit));
    assert_eq!(run.attempt, 1, "app_exit is not retried by default");
    assert!(!run.succeeded());
    env.shutdown().await;
}

#[tokio::test]
async fn a_long_run_is_terminated_with_who_did_it() {
    let env = Env::new();
    let def = env.define("sleeper", "echo started; sleep 60").await;
    let run = env.flotilla.execute(&def, me()).await.expect("execute");
    // Wait until it runs.
    let mut changes = env.flotilla.subscribe();
    loop {
        let now = env.flotilla.get_run(&run.run_id).await.expect("get");
        if now.status == RunStatus::Running {
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.recv()).await;
    }
    let stopped = env
        .flotilla
        .terminate(&run.run_id, "alice")
        .await
        .expect("terminate");
    assert_eq!(stopped.status, RunStatus::Stopped);
    assert_eq!(stopped.failure, Some(FailureCategory::Terminated));
    assert!(
        stopped
            .exit_reason
            .as_deref()
            .is_some_and(|r| r.contains("alice")),
        "{stopped:?}"
    );
    // Terminating again is harmless and changes nothing.
    let again = env
        .flotilla
        .terminate(&run.run_id, "bob")
        .await
        .expect("terminate again");
    assert_eq!(again.version, stopped.version);
    env.shutdown().await;
}

#[tokio::test]
async fn a_deadline_stops_the_run_as_timeout() {
    let env = Env::new();
    let def = env.define("slow", "sleep 30").await;
    let mut req = me();
    req.active_deadline_seconds = Some(1);
    let run = env.run(&def, req).await;
    assert_eq!(run.status, RunStatus::Stopped);
    assert_eq!(run.failure, Some(FailureCategory::Timeout), "{run:?}");
    env.shutdown().await;
}

#[tokio::test]
async fn a_retriable_failure_succeeds_on_attempt_two() {
    let env = Env::new();
    // The first attempt dies of a signal flotilla did not send: app_exit,
    // retried since the definition asks for it.
    let def = env
        .define_retrying(
            "flaky",
            "echo \"attempt $FLOTILLA_RUN_ATTEMPT\"; if [ \"$FLOTILLA_RUN_ATTEMPT\" = 1 ]; then kill -9 $$; fi; echo done",
        )
        .await;
    let run = env.run(&def, me()).await;
    assert_eq!(run.status, RunStatus::Stopped);
    assert_eq!(run.exit_code, Some(0), "{run:?}");
    assert_eq!(run.attempt, 2);
    let events = env.flotilla.run_events(&run.run_id).await.expect("events");
    let path: Vec<(u32, RunStatus)> = events.iter().map(|e| (e.attempt, e.to)).collect();
    assert!(
        path.contains(&(1, RunStatus::NeedsRetry)),
        "timeline shows the failed attempt: {path:?}"
    );
    assert!(path.contains(&(2, RunStatus::Queued)), "{path:?}");
    assert_eq!(path.last(), Some(&(2, RunStatus::Stopped)), "{path:?}");
    let log = env.log(&run.run_id).await;
    assert!(log.contains("attempt 2") && log.contains("done"), "{log}");
    env.shutdown().await;
}

#[tokio::test]
async fn retries_stop_when_attempts_are_spent() {
    let env = Env::new();
    let def = env.define_retrying("always-killed", "kill -9 $$").await;
    let run = env.run(&def, me()).await;
    assert_eq!(run.status, RunStatus::Stopped);
    assert_eq!(run.attempt, 3, "default max_attempts is 3: {run:?}");
    assert_eq!(run.failure, Some(FailureCategory::AppExit));
    env.shutdown().await;
}

#[tokio::test]
async fn a_thousand_concurrent_runs_all_stop_exactly_once() {
    let env = Env::new();
    let ledger = env.dir.path().join("ledger");
    let cmd = format!("echo \"$FLOTILLA_RUN_ID\" >> {}", ledger.display());
    let def = env.define("many", &cmd).await;
    let mut ids = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..1000 {
        let f = env.flotilla.clone();
        let def = def.clone();
        tasks.spawn(async move { f.execute(&def, me()).await.expect("execute").run_id });
    }
    while let Some(id) = tasks.join_next().await {
        ids.push(id.expect("task"));
    }
    for id in &ids {
        let run = env
            .flotilla
            .wait_for_stop(id, Duration::from_secs(180))
            .await
            .expect("stops");
        assert_eq!(run.exit_code, Some(0), "{run:?}");
        assert_eq!(run.attempt, 1);
    }
    let text = std::fs::read_to_string(&ledger).expect("ledger");
    let lines: Vec<&str> = text.lines().collect();
    let unique: HashSet<&str> = lines.iter().copied().collect();
    assert_eq!(lines.len(), 1000, "every run ran exactly once");
    assert_eq!(unique.len(), 1000);
    for id in &ids {
        assert!(unique.contains(id.as_str()), "run {id} ran");
    }
    let page = env
        .flotilla
        .list_runs(RunQuery::all(10).with_statuses(&[RunStatus::Stopped]))
        .await
        .expect("list");
    assert_eq!(page.total, 1000);
    env.shutdown().await;
}

#[tokio::test]
async fn an_idempotence_key_returns_the_first_run() {
    let env = Env::new();
    let def = env.define("once", "true").await;
    let mut req = me();
    req.idempotence_key = Some("key-1".into());
    let a = env
        .flotilla
        .execute(&def, req.clone())
        .await
        .expect("first");
    let b = env.flotilla.execute(&def, req).await.expect("second");
    assert_eq!(a.run_id, b.run_id);
    env.shutdown().await;
}

#[tokio::test]
async fn terminate_reaches_child_runs() {
    let env = Env::new();
    let def = env.define("family", "sleep 60").await;
    let parent = env.flotilla.execute(&def, me()).await.expect("parent");
    let child = env
        .flotilla
        .execute(
            &def,
            me().env("PARENT_FLOTILLA_RUN_ID", parent.run_id.clone()),
        )
        .await
        .expect("child");
    env.flotilla
        .terminate(&parent.run_id, "alice")
        .await
        .expect("terminate");
    let child = env
        .flotilla
        .wait_for_stop(&child.run_id, WAIT)
        .await
        .expect("child stops");
    assert_eq!(child.failure, Some(FailureCategory::Terminated));
    env.shutdown().await;
}

#[tokio::test]
async fn bad_input_is_refused_with_the_field_named() {
    let env = Env::new();
    let def = env.define("valid", "true").await;
    let e = env
        .flotilla
        .execute(&def, ExecuteRequest::default())
        .await
        .expect_err("owner required");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("owner_id"));
    let e = env
        .flotilla
        .execute(&def, me().cluster("nowhere"))
        .await
        .expect_err("unknown cluster");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().starts_with("cluster"), "{}", e.message());
    let e = env
        .flotilla
        .execute(&def, me().env("FLOTILLA_RUN_ID", "x"))
        .await
        .expect_err("reserved env");
    assert!(e.message().contains("reserved"));
    let e = env
        .flotilla
        .define(NewDefinition::new("valid", "img"))
        .await
        .expect_err("duplicate alias");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let e = env
        .flotilla
        .execute("no-such-definition", me())
        .await
        .expect_err("unknown definition");
    assert_eq!(e.kind(), ErrorKind::NotFound);
    env.shutdown().await;
}

#[tokio::test]
async fn external_status_reports_go_through_the_state_machine() {
    // No workers: the run stays QUEUED until a client reports.
    let dir = tempfile::tempdir().expect("dir");
    let f = Flotilla::builder()
        .config(test_config())
        .build_local(dir.path())
        .expect("build");
    let def = f
        .define(NewDefinition::new("reported", "img").command("true"))
        .await
        .expect("define")
        .definition_id;
    let run = f.execute(&def, me()).await.expect("execute");
    let report = |status, exit_code| StatusReport {
        status,
        exit_code,
        exit_reason: None,
    };
    let e = f
        .update_status(&run.run_id, report(RunStatus::Running, None))
        .await
        .expect_err("QUEUED → RUNNING needs a submit");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    let stopped = f
        .update_status(&run.run_id, report(RunStatus::Stopped, Some(0)))
        .await
        .expect("QUEUED → STOPPED");
    assert!(stopped.succeeded());
    let e = f
        .update_status(&run.run_id, report(RunStatus::Running, None))
        .await
        .expect_err("STOPPED is terminal");
    assert_eq!(e.kind(), ErrorKind::Conflict);
}

#[tokio::test]
async fn clusters_in_maintenance_hold_runs_and_offline_ones_refuse() {
    let env = Env::new();
    let def = env.define("held", "echo held").await;
    let mut other = Cluster::new("other");
    other.status = ClusterStatus::Maintenance;
    env.flotilla.put_cluster(other.clone()).await.expect("put");
    // Let the submit worker's cluster cache expire so it sees maintenance.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let run = env
        .flotilla
        .execute(&def, me().cluster("other"))
        .await
        .expect("accepted while in maintenance");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = env.flotilla.get_run(&run.run_id).await.expect("get");
    assert_eq!(held.status, RunStatus::Queued, "held in the queue");
    other.status = ClusterStatus::Active;
    env.flotilla.put_cluster(other.clone()).await.expect("put");
    let done = env
        .flotilla
        .wait_for_stop(&run.run_id, WAIT)
        .await
        .expect("released after maintenance");
    assert!(done.succeeded());
    other.status = ClusterStatus::Offline;
    env.flotilla.put_cluster(other).await.expect("put");
    let e = env
        .flotilla
        .execute(&def, me().cluster("other"))
        .await
        .expect_err("offline");
    assert!(e.message().contains("offline"));
    env.shutdown().await;
}

#[tokio::test]
async fn a_run_whose_definition_was_deleted_still_runs() {
    let dir = tempfile::tempdir().expect("dir");
    let f = Flotilla::builder()
        .config(test_config())
        .build_local(dir.path())
        .expect("build");
    let def = f
        .define(NewDefinition::new("gone", "img").command("echo still here"))
        .await
        .expect("define")
        .definition_id;
    let run = f.execute(&def, me()).await.expect("execute");
    f.delete_definition(&def, &flotilla::Actor::admin("test"))
        .await
        .expect("delete");
    let handle = f.start();
    let done = f.wait_for_stop(&run.run_id, WAIT).await.expect("stops");
    assert!(done.succeeded(), "{done:?}");
    handle.shutdown().await;
}

#[tokio::test]
async fn a_run_stored_but_never_enqueued_is_recovered_by_reconcile() {
    // Simulates a crash between storing a run and enqueuing it.
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(flotilla::memory::MemoryStore::new());
    let f = Flotilla::builder()
        .store(store.clone())
        .config(test_config())
        .build_local(dir.path())
        .expect("build");
    let def = f
        .define(NewDefinition::new("lost", "img").command("echo recovered"))
        .await
        .expect("define")
        .definition_id;
    // Store a QUEUED run directly, bypassing the queue.
    let template = f.execute(&def, me()).await.expect("execute");
    let mut orphan = template.clone();
    orphan.run_id = flotilla::model::new_id();
    orphan.env.retain(|e| e.name != "FLOTILLA_RUN_ID");
    orphan.queued_at = Some(flotilla::model::now() - chrono::Duration::seconds(10));
    let event = flotilla::RunEvent {
        run_id: orphan.run_id.clone(),
        at: flotilla::model::now(),
        from: None,
        to: RunStatus::Queued,
        attempt: 1,
        reason: None,
    };
    flotilla::Store::create_run(store.as_ref(), &orphan, &event)
        .await
        .expect("create");
    let handle = f.start();
    let done = f
        .wait_for_stop(&orphan.run_id, WAIT)
        .await
        .expect("reconcile enqueues it");
    assert!(done.succeeded(), "{done:?}");
    handle.shutdown().await;
}
