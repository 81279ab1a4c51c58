//! The service's guarantees under engine faults: one execution per attempt,
//! nothing finished re-run, `Missing` only after a continuous absence,
//! fenced leaders, every stale run handled, scoped idempotence keys, and
//! the cluster deciding the engine.
//!
//! Each engine here counts its own side effects (submits, terminations), so
//! the checks do not rest on flotilla's own records alone; the 1,000-run
//! fault test counts the executions of real processes in marker files.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flotilla::engine::{Capabilities, Engine, StatusUpdate, Submitted, TaskState};
use flotilla::local::LocalEngine;
use flotilla::memory::MemoryStore;
use flotilla::model::{Actor, Cluster, ClusterStatus, FailureCategory};
use flotilla::service::WorkerConfig;
use flotilla::testkit::{FaultPlan, FaultyEngine};
use flotilla::{
    Definition, ErrorKind, ExecuteRequest, Flotilla, NewDefinition, Run, RunEvent, RunQuery,
    RunStatus, RunTags, ServiceConfig, Store,
};

const WAIT: Duration = Duration::from_secs(90);

/// What a [`ScriptEngine`] does with a new attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OnSubmit {
    /// It runs until the test says otherwise.
    Run,
    /// It exits with this code at once.
    Exit(i64),
    /// Attempt 1 is accepted but never appears (a lost submit); later
    /// attempts exit 0.
    SwallowFirst,
}

#[derive(Debug, Clone)]
struct Task {
    state: TaskState,
    exit: Option<i64>,
}

/// An in-memory engine the test scripts: it records every submit and
/// terminate (its side effects) and answers polls from its task table.
#[derive(Debug)]
struct ScriptEngine {
    name: String,
    on_submit: OnSubmit,
    tasks: Mutex<HashMap<(String, u32), Task>>,
    /// `"submit <run> <attempt>"` / `"terminate <run> <attempt>"`, in order.
    log: Mutex<Vec<String>>,
    /// Remaining `Missing` answers per run (API blips).
    blips: Mutex<HashMap<String, u32>>,
    /// How long each poll takes.
    poll_delay: Mutex<Duration>,
}

impl ScriptEngine {
    fn new(name: &str, on_submit: OnSubmit) -> Arc<Self> {
        Arc::new(ScriptEngine {
            name: name.into(),
            on_submit,
            tasks: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            blips: Mutex::new(HashMap::new()),
            poll_delay: Mutex::new(Duration::ZERO),
        })
    }

    fn set(&self, run: &Run, state: TaskState, exit: Option<i64>) {
        self.tasks
            .lock()
            .expect("lock")
            .insert((run.run_id.clone(), run.attempt), Task { state, exit });
    }

    fn forget(&self, run: &Run) {
        self.tasks
            .lock()
            .expect("lock")
            .remove(&(run.run_id.clone(), run.attempt));
    }

    fn blip(&self, run: &Run, answers: u32) {
        self.blips
            .lock()
            .expect("lock")
            .insert(run.run_id.clone(), answers);
    }

    fn log(&self) -> Vec<String> {
        self.log.lock().expect("lock").clone()
    }

    fn count(&self, what: &str) -> usize {
        self.log()
            .iter()
            .filter(|l| l.starts_with(&format!("{what} ")))
            .count()
    }
}

#[async_trait]
impl Engine for ScriptEngine {
    fn name(&self) -> &str {
        &self.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn submit(&self, run: &Run, _def: &Definition) -> flotilla::Result<Submitted> {
        let key = (run.run_id.clone(), run.attempt);
        let mut tasks = self.tasks.lock().expect("lock");
        let mut log = self.log.lock().expect("lock");
        let known = log
            .iter()
            .any(|l| l == &format!("submit {} {}", run.run_id, run.attempt));
        if !known {
            log.push(format!("submit {} {}", run.run_id, run.attempt));
            let task = match self.on_submit {
                OnSubmit::Run => Some(Task {
                    state: TaskState::Running,
                    exit: None,
                }),
                OnSubmit::Exit(code) => Some(Task {
                    state: TaskState::Stopped,
                    exit: Some(code),
                }),
                OnSubmit::SwallowFirst if run.attempt == 1 => None,
                OnSubmit::SwallowFirst => Some(Task {
                    state: TaskState::Stopped,
                    exit: Some(0),
                }),
            };
            if let Some(t) = task {
                tasks.insert(key, t);
            }
        }
        Ok(Submitted {
            engine_ref: format!("{}-{}", run.run_id, run.attempt),
            instance: None,
        })
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let delay = *self.poll_delay.lock().expect("lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let tasks = self.tasks.lock().expect("lock").clone();
        let mut blips = self.blips.lock().expect("lock");
        Ok(runs
            .iter()
            .map(|r| {
                if let Some(n) = blips.get_mut(&r.run_id)
                    && *n > 0
                {
                    *n -= 1;
                    return StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Missing);
                }
                match tasks.get(&(r.run_id.clone(), r.attempt)) {
                    Some(t) => {
                        let mut u = StatusUpdate::new(r.run_id.clone(), r.attempt, t.state);
                        u.exit_code = t.exit;
                        u
                    }
                    None => StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Missing),
                }
            })
            .collect())
    }

    async fn terminate(&self, run: &Run, _reason: &str) -> flotilla::Result<()> {
        self.log
            .lock()
            .expect("lock")
            .push(format!("terminate {} {}", run.run_id, run.attempt));
        Ok(())
    }
}

fn config(grace: Duration) -> ServiceConfig {
    let mut c = ServiceConfig {
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(100),
            receive_wait: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(2),
            reconcile_interval: Duration::from_millis(200),
            queued_stale_after: Duration::from_millis(500),
            maintenance_delay: Duration::from_millis(200),
            missing_grace: grace,
            ..WorkerConfig::default()
        },
        clusters: vec!["default".into(), "held".into(), "mixed".into()],
        ..ServiceConfig::default()
    };
    c.retry.base_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(200);
    c
}

fn service(engines: &[Arc<ScriptEngine>], store: Arc<MemoryStore>, cfg: ServiceConfig) -> Flotilla {
    let mut b = Flotilla::builder().store(store).config(cfg);
    for e in engines {
        b = b.engine(e.clone());
    }
    b.build().expect("build")
}

fn owned(owner: &str) -> ExecuteRequest {
    ExecuteRequest {
        run_tags: Some(RunTags {
            owner_id: owner.into(),
            ..RunTags::default()
        }),
        ..ExecuteRequest::default()
    }
}

async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn status_of(f: &Flotilla, run_id: &str) -> RunStatus {
    f.get_run(run_id).await.expect("run").status
}

/// A started service with `engine` alone on `store`, and one run of a new
/// definition `alias`, executed by "me" and (when `running`) seen RUNNING.
async fn started(
    engine: &Arc<ScriptEngine>,
    store: Arc<MemoryStore>,
    cfg: ServiceConfig,
    alias: &str,
    running: bool,
) -> (Flotilla, flotilla::FlotillaHandle, Run) {
    let f = service(std::slice::from_ref(engine), store, cfg);
    let workers = f.start();
    let def = f
        .define(NewDefinition::new(alias, "busybox").command("true"))
        .await
        .expect("define");
    let run = f
        .execute(&def.definition_id, owned("me"))
        .await
        .expect("run");
    if running {
        until("running", || async {
            status_of(&f, &run.run_id).await == RunStatus::Running
        })
        .await;
    }
    (f, workers, run)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_missing_answer_is_not_a_lost_run() {
    let engine = ScriptEngine::new("script", OnSubmit::Run);
    let (f, workers, run) = started(
        &engine,
        Arc::new(MemoryStore::new()),
        config(Duration::from_millis(800)),
        "blip",
        true,
    )
    .await;
    // Quiet for longer than the grace, then one blip of the engine's API.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let running = f.get_run(&run.run_id).await.expect("run");
    engine.blip(&running, 1);
    tokio::time::sleep(Duration::from_millis(500)).await;
    engine.set(&running, TaskState::Stopped, Some(0));
    let done = f.wait_for_stop(&run.run_id, WAIT).await.expect("stops");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.attempt, 1, "one blip must not make a new attempt");
    assert_eq!(engine.count("submit"), 1);
    assert_eq!(engine.count("terminate"), 0);
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_vanished_after_it_started_is_unknown_and_never_retried() {
    let engine = ScriptEngine::new("script", OnSubmit::Run);
    let (f, workers, run) = started(
        &engine,
        Arc::new(MemoryStore::new()),
        config(Duration::from_millis(500)),
        "vanish",
        true,
    )
    .await;
    let running = f.get_run(&run.run_id).await.expect("run");
    engine.forget(&running);
    let done = f.wait_for_stop(&run.run_id, WAIT).await.expect("stops");
    assert_eq!(done.failure, Some(FailureCategory::Unknown), "{done:?}");
    assert_eq!(
        done.attempt, 1,
        "a run that may have finished is not run again"
    );
    assert_eq!(done.exit_code, None);
    // Given time, the retry worker still does not start it again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(engine.count("submit"), 1, "{:?}", engine.log());
    assert_eq!(
        engine.count("terminate"),
        1,
        "the lost attempt is stopped: {:?}",
        engine.log()
    );
    let events = f.run_events(&run.run_id).await.expect("events");
    assert!(
        events.iter().any(|e| e
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("old attempt was terminated")),
        "{events:?}"
    );
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_pending_run_is_terminated_before_its_next_attempt() {
    let engine = ScriptEngine::new("script", OnSubmit::SwallowFirst);
    let (f, workers, run) = started(
        &engine,
        Arc::new(MemoryStore::new()),
        config(Duration::from_millis(400)),
        "swallowed",
        false,
    )
    .await;
    let done = f.wait_for_stop(&run.run_id, WAIT).await.expect("stops");
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.attempt, 2);
    let id = &run.run_id;
    assert_eq!(
        engine.log(),
        vec![
            format!("submit {id} 1"),
            format!("terminate {id} 1"),
            format!("submit {id} 2"),
        ],
        "the old attempt is terminated before the new one starts"
    );
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_lease_ran_out_writes_nothing() {
    let engine = ScriptEngine::new("script", OnSubmit::Run);
    let store = Arc::new(MemoryStore::new());
    let mut cfg = config(Duration::from_secs(60));
    cfg.workers.lease_ttl = Duration::from_millis(600);
    let (f, workers, run) = started(&engine, store.clone(), cfg, "fenced", true).await;
    // The next poll takes longer than the lease; meanwhile another replica
    // takes the status lease, and the run's outcome is there to be read.
    *engine.poll_delay.lock().expect("lock") = Duration::from_millis(1500);
    tokio::time::sleep(Duration::from_millis(150)).await;
    let running = f.get_run(&run.run_id).await.expect("run");
    engine.set(&running, TaskState::Stopped, Some(0));
    until("the intruder takes the lease", || async {
        store
            .try_lease("status", "intruder", Duration::from_secs(30))
            .await
            .expect("lease")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        status_of(&f, &run.run_id).await,
        RunStatus::Running,
        "a replica that lost its lease wrote the run's outcome beside the new leader"
    );
    *engine.poll_delay.lock().expect("lock") = Duration::ZERO;
    store
        .release_lease("status", "intruder")
        .await
        .expect("release");
    let done = f.wait_for_stop(&run.run_id, WAIT).await.expect("stops");
    assert_eq!((done.exit_code, done.attempt), (Some(0), 1));
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_status_leader_keeps_its_lease_between_polls() {
    let engine = ScriptEngine::new("script", OnSubmit::Run);
    let store = Arc::new(MemoryStore::new());
    let mut cfg = config(Duration::from_secs(60));
    // Polls far apart, a short lease: only renewals between polls keep it.
    cfg.workers.status_poll_interval = Duration::from_secs(30);
    cfg.workers.lease_ttl = Duration::from_millis(600);
    let f = service(std::slice::from_ref(&engine), store.clone(), cfg);
    let workers = f.start();
    until("the status lease is taken", || async {
        !store
            .try_lease("status", "observer", Duration::from_millis(1))
            .await
            .expect("lease")
    })
    .await;
    // For several lease lifetimes another replica never gets it.
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !store
                .try_lease("status", "intruder", Duration::from_secs(30))
                .await
                .expect("lease"),
            "the idle leader's lease lapsed between polls"
        );
    }
    workers.shutdown().await;
}

/// Stores `n` runs of `def` directly (as if left by a crashed replica).
async fn left_behind(
    store: &MemoryStore,
    def: &Definition,
    cluster: &str,
    status: RunStatus,
    n: usize,
) -> Vec<String> {
    let old = flotilla::model::now() - chrono::TimeDelta::minutes(10);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        let mut run = Run::queued(def, cluster, "script", "me");
        run.status = status;
        run.queued_at = Some(old);
        run.updated_at = old;
        if status == RunStatus::NeedsRetry {
            run.failure = Some(FailureCategory::NodeLost);
        }
        let event = RunEvent {
            run_id: run.run_id.clone(),
            at: old,
            from: None,
            to: status,
            attempt: 1,
            reason: None,
        };
        store.create_run(&run, &event).await.expect("create");
        ids.push(run.run_id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stale_queued_and_needs_retry_run_is_handled() {
    let engine = ScriptEngine::new("script", OnSubmit::Exit(0));
    let store = Arc::new(MemoryStore::new());
    let mut cfg = config(Duration::from_secs(60));
    // Retries that are not due for an hour sort first and fill more than a
    // page; so do queued runs of a cluster in maintenance.
    cfg.retry.max_backoff = Duration::from_secs(7200);
    let f = service(std::slice::from_ref(&engine), store.clone(), cfg);
    let def = f
        .define(NewDefinition::new("stale", "busybox").command("true"))
        .await
        .expect("define");
    let mut held = Cluster::new("held");
    held.status = ClusterStatus::Maintenance;
    f.put_cluster(held).await.expect("cluster");
    let mut not_due = Vec::new();
    for id in left_behind(&store, &def, "default", RunStatus::NeedsRetry, 1_200).await {
        let mut run = store.get_run(&id).await.expect("run");
        let expected = flotilla::Expected::of(&run);
        run.attempt = 18;
        run.max_attempts = 20;
        run.updated_at = flotilla::model::now();
        store
            .update_run(&run, expected, None)
            .await
            .expect("update");
        not_due.push(id);
    }
    left_behind(&store, &def, "held", RunStatus::Queued, 1_200).await;
    let retried = left_behind(&store, &def, "default", RunStatus::NeedsRetry, 2_500).await;
    let queued = left_behind(&store, &def, "default", RunStatus::Queued, 2_500).await;
    let workers = f.start();
    let mut query = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
    query.clusters = vec!["default".into()];
    until("all 5,000 due runs stopped", || async {
        f.list_runs(query.clone()).await.expect("list").total >= 5_000
    })
    .await;
    for id in &queued {
        let r = f.get_run(id).await.expect("run");
        assert_eq!(
            (r.status, r.attempt, r.exit_code),
            (RunStatus::Stopped, 1, Some(0))
        );
    }
    for id in &retried {
        let r = f.get_run(id).await.expect("run");
        assert_eq!(
            (r.status, r.attempt, r.exit_code),
            (RunStatus::Stopped, 2, Some(0))
        );
    }
    for id in &not_due {
        assert_eq!(status_of(&f, id).await, RunStatus::NeedsRetry);
    }
    assert_eq!(engine.count("submit"), 5_000, "one submit per attempt");
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotence_keys_are_scoped_and_follow_flotilla_os_window() {
    let engine = ScriptEngine::new("script", OnSubmit::Run);
    let f = service(
        std::slice::from_ref(&engine),
        Arc::new(MemoryStore::new()),
        config(Duration::from_secs(60)),
    );
    let workers = f.start();
    let a = f
        .define(NewDefinition::new("key-a", "busybox").command("true"))
        .await
        .expect("define");
    let b = f
        .define(NewDefinition::new("key-b", "busybox").command("true"))
        .await
        .expect("define");
    let keyed = |owner: &str| ExecuteRequest {
        idempotence_key: Some("nightly-2026-12-02".into()),
        ..owned(owner)
    };
    let first = f
        .execute(&a.definition_id, keyed("ann"))
        .await
        .expect("run");
    let again = f
        .execute(&a.definition_id, keyed("ann"))
        .await
        .expect("run");
    assert_eq!(again.run_id, first.run_id, "a live run keeps its key");
    let other_def = f.execute(&b.definition_id, keyed("ann")).await;
    assert_eq!(
        other_def.as_ref().map_err(|e| e.kind()).err(),
        Some(ErrorKind::Conflict),
        "another definition's key must not return this run: {other_def:?}"
    );
    let other_owner = f.execute(&a.definition_id, keyed("bob")).await;
    assert_eq!(
        other_owner.as_ref().map_err(|e| e.kind()).err(),
        Some(ErrorKind::Conflict),
        "another owner's key must not return this run: {other_owner:?}"
    );
    // The keyed run fails: the same request runs the job again.
    until("running", || async {
        status_of(&f, &first.run_id).await == RunStatus::Running
    })
    .await;
    engine.set(&first, TaskState::Stopped, Some(3));
    f.wait_for_stop(&first.run_id, WAIT).await.expect("stops");
    let rerun = f
        .execute(&a.definition_id, keyed("ann"))
        .await
        .expect("run");
    assert_ne!(rerun.run_id, first.run_id, "a failed run gives its key up");
    // It succeeds: the key returns it from now on.
    until("running", || async {
        status_of(&f, &rerun.run_id).await == RunStatus::Running
    })
    .await;
    engine.set(&rerun, TaskState::Stopped, Some(0));
    f.wait_for_stop(&rerun.run_id, WAIT).await.expect("stops");
    let after = f
        .execute(&a.definition_id, keyed("ann"))
        .await
        .expect("run");
    assert_eq!(after.run_id, rerun.run_id, "a succeeded run keeps its key");
    workers.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_decides_the_engine_and_local_is_for_admins() {
    let ecs = ScriptEngine::new("ecs", OnSubmit::Run);
    let local = ScriptEngine::new("local", OnSubmit::Run);
    let f = service(
        &[ecs.clone(), local.clone()],
        Arc::new(MemoryStore::new()),
        config(Duration::from_secs(60)),
    );
    let def = f
        .define(NewDefinition::new("engines", "busybox").command("id"))
        .await
        .expect("define");
    let user = Actor::user("mallory");
    let with_engine = |engine: &str, cluster: &str| ExecuteRequest {
        engine: Some(engine.into()),
        cluster: Some(cluster.into()),
        ..owned("mallory")
    };
    let refused = f
        .execute_as(&def.definition_id, with_engine("local", "default"), &user)
        .await;
    assert_eq!(
        refused.as_ref().map_err(|e| e.kind()).err(),
        Some(ErrorKind::InvalidInput),
        "a request must not pick an engine its cluster does not allow: {refused:?}"
    );
    let mut mixed = Cluster::new("mixed");
    mixed.engines = vec!["ecs".into(), "local".into()];
    f.put_cluster(mixed).await.expect("cluster");
    let forbidden = f
        .execute_as(&def.definition_id, with_engine("local", "mixed"), &user)
        .await;
    assert_eq!(
        forbidden.as_ref().map_err(|e| e.kind()).err(),
        Some(ErrorKind::Forbidden),
        "non-admins never reach the host engine beside others: {forbidden:?}"
    );
    let admin = Actor {
        name: "root".into(),
        admin: true,
    };
    let by_admin = f
        .execute_as(&def.definition_id, with_engine("local", "mixed"), &admin)
        .await
        .expect("admin may");
    assert_eq!(by_admin.engine, "local");
    // flotilla-os clients always send "eks": set aside for the cluster's own.
    let compat = f
        .execute_as(&def.definition_id, with_engine("eks", "default"), &user)
        .await
        .expect("eks is set aside");
    assert_eq!(compat.engine, "ecs");
    let events = f.run_events(&compat.run_id).await.expect("events");
    assert!(
        events[0]
            .reason
            .as_deref()
            .unwrap_or("")
            .contains("'eks' is not configured here"),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_runs_through_injected_faults_each_execute_exactly_once() {
    let dir = tempfile::tempdir().expect("temp dir");
    let marks = dir.path().join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let local = LocalEngine::new(dir.path().join("data")).expect("local engine");
    let faulty = Arc::new(FaultyEngine::new(local, FaultPlan::spread(7, 10)));
    let mut cfg = config(Duration::from_secs(3));
    cfg.workers.submit_concurrency = 32;
    let f = Flotilla::builder()
        .store(Arc::new(MemoryStore::new()))
        .engine(faulty.clone())
        .config(cfg)
        .build()
        .expect("build");
    let workers = f.start();
    let def = f
        .define(
            NewDefinition::new("counted", "busybox")
                .command(format!("echo x >> {}/$FLOTILLA_RUN_ID", marks.display())),
        )
        .await
        .expect("define");
    let mut ids = Vec::new();
    for _ in 0..1_000 {
        let run = f
            .execute(&def.definition_id, owned("me"))
            .await
            .expect("run");
        ids.push(run.run_id);
    }
    let query = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
    until("all 1,000 runs stopped", || async {
        f.list_runs(query.clone()).await.expect("list").total >= 1_000
    })
    .await;
    for id in &ids {
        let run = f.get_run(id).await.expect("run");
        let events = f.run_events(id).await.expect("events");
        assert_eq!(
            (run.exit_code, run.attempt, run.failure),
            (Some(0), 1, None),
            "declared lost or retried under faults: {run:?} {events:#?}"
        );
        let executions = std::fs::read_to_string(marks.join(id))
            .unwrap_or_default()
            .lines()
            .count();
        assert_eq!(executions, 1, "run {id} executed {executions} times");
    }
    let counts = faulty.counts();
    assert!(
        counts.missing > 0 && counts.lost_submits > 0 && counts.unavailable > 0,
        "the schedule injected every kind of fault: {counts:?}"
    );
    eprintln!("faults injected over 1,000 runs: {counts:?}");
    workers.shutdown().await;
}
