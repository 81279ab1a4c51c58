//! A definition's retry rules (`retry_strategy`, AWS Batch's shape) decide
//! retries of real processes on the local engine: a `RETRY` rule retries an
//! exit code the default would not, an `EXIT` rule stops what the default
//! would retry, and a run keeps the rules it was executed with.
//!
//! Each attempt appends its number to a marker file of its own run, so the
//! checks count executions, not only flotilla's records.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla::engine::{Capabilities, Engine, StatusUpdate, Submitted, TaskState};
use flotilla::local::LocalEngine;
use flotilla::memory::MemoryStore;
use flotilla::service::WorkerConfig;
use flotilla::{
    Actor, Definition, DefinitionUpdate, EvaluateOnExit, ExecuteRequest, FailureCategory, Flotilla,
    FlotillaHandle, NewDefinition, RetryAction, RetryStrategy, Run, RunStatus, ServiceConfig,
};

const WAIT: Duration = Duration::from_secs(60);

fn config() -> ServiceConfig {
    let mut c = ServiceConfig {
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(100),
            receive_wait: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(2),
            reconcile_interval: Duration::from_millis(300),
            queued_stale_after: Duration::from_secs(2),
            maintenance_delay: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    c.retry.base_backoff = Duration::from_millis(20);
    c.retry.max_backoff = Duration::from_millis(200);
    c
}

/// The local engine with some finished attempts reported as another
/// failure than their exit, as a container engine would classify them.
/// The process really ran (its marker is written); only its
/// classification is the test's.
#[derive(Debug)]
struct Reclassify {
    inner: LocalEngine,
    /// Only attempts that exited with this code; every one when `None`.
    exit_code: Option<i64>,
    failure: FailureCategory,
    reason: &'static str,
    /// Whether the exit code stays (an OOM kill has one; a lost host not).
    keep_exit_code: bool,
}

impl Reclassify {
    /// Every attempt's host is lost (`node_lost`, no exit code, an ECS-like
    /// reason), as a spot interruption would have it.
    fn node_lost(inner: LocalEngine) -> Self {
        Reclassify {
            inner,
            exit_code: None,
            failure: FailureCategory::NodeLost,
            reason: "Host EC2 (instance i-0123) terminated.",
            keep_exit_code: false,
        }
    }

    /// An attempt killed by SIGKILL (137) was the OOM killer, as Docker's
    /// `OOMKilled` would say.
    fn oom_on_137(inner: LocalEngine) -> Self {
        Reclassify {
            inner,
            exit_code: Some(137),
            failure: FailureCategory::Oom,
            reason: "OutOfMemoryError: Container killed due to memory usage",
            keep_exit_code: true,
        }
    }
}

#[async_trait]
impl Engine for Reclassify {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            push_events: false,
            ..self.inner.capabilities()
        }
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> flotilla::Result<Submitted> {
        self.inner.submit(run, definition).await
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let mut updates = self.inner.poll(runs).await?;
        for u in &mut updates {
            if u.state == TaskState::Stopped
                && self.exit_code.is_none_or(|c| u.exit_code == Some(c))
            {
                if !self.keep_exit_code {
                    u.exit_code = None;
                }
                u.failure = Some(self.failure);
                u.reason = Some(self.reason.into());
            }
        }
        Ok(updates)
    }

    async fn terminate(&self, run: &Run, reason: &str) -> flotilla::Result<()> {
        self.inner.terminate(run, reason).await
    }

    async fn finished(&self, run: &Run) -> flotilla::Result<()> {
        self.inner.finished(run).await
    }
}

struct Env {
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    marks: PathBuf,
    _dir: tempfile::TempDir,
}

impl Env {
    fn local() -> Env {
        Env::with(|data| Arc::new(LocalEngine::new(data).expect("local engine")))
    }

    fn reclassifying(how: fn(LocalEngine) -> Reclassify) -> Env {
        Env::with(|data| Arc::new(how(LocalEngine::new(data).expect("local engine"))))
    }

    fn with(engine: impl FnOnce(PathBuf) -> Arc<dyn Engine>) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let marks = dir.path().join("marks");
        std::fs::create_dir_all(&marks).expect("marks dir");
        let flotilla = Flotilla::builder()
            .store(Arc::new(MemoryStore::new()))
            .engine(engine(dir.path().join("data")))
            .config(config())
            .build()
            .expect("build");
        let handle = Some(flotilla.start());
        Env {
            flotilla,
            handle,
            marks,
            _dir: dir,
        }
    }

    /// A definition running `script` after appending the attempt number to
    /// the run's marker file.
    async fn define(
        &self,
        alias: &str,
        script: &str,
        rules: Option<RetryStrategy>,
        retry_on_app_exit: bool,
    ) -> Definition {
        let command = format!(
            "echo \"$FLOTILLA_RUN_ATTEMPT\" >> {}/\"$FLOTILLA_RUN_ID\"; {script}",
            self.marks.display()
        );
        let mut def = NewDefinition::new(alias, "ubuntu:latest").command(command);
        def.retry_strategy = rules;
        def.retry_on_app_exit = retry_on_app_exit;
        self.flotilla.define(def).await.expect("define")
    }

    async fn execute(&self, def: &Definition) -> Run {
        self.flotilla
            .execute(&def.definition_id, ExecuteRequest::owned_by("me"))
            .await
            .expect("execute")
    }

    async fn stopped(&self, run: &Run) -> Run {
        self.flotilla
            .wait_for_stop(&run.run_id, WAIT)
            .await
            .expect("run stops")
    }

    async fn run(&self, def: &Definition) -> Run {
        let run = self.execute(def).await;
        self.stopped(&run).await
    }

    /// The attempts that really executed, from the run's marker file.
    fn executions(&self, run: &Run) -> Vec<u32> {
        read_marks(&self.marks, &run.run_id)
    }

    async fn reasons(&self, run: &Run) -> Vec<String> {
        self.flotilla
            .run_events(&run.run_id)
            .await
            .expect("events")
            .into_iter()
            .filter_map(|e| e.reason)
            .collect()
    }

    async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

fn read_marks(marks: &Path, run_id: &str) -> Vec<u32> {
    std::fs::read_to_string(marks.join(run_id))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("an attempt number"))
        .collect()
}

/// `[{on_exit_code: "3", action: RETRY}, {on_exit_code: "*", action: EXIT}]`.
fn retry_3_else_exit() -> RetryStrategy {
    RetryStrategy {
        attempts: None,
        evaluate_on_exit: vec![
            EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3"),
            EvaluateOnExit::new(RetryAction::Exit).on_exit_code("*"),
        ],
    }
}

const EXIT_3_ON_ATTEMPT_1: &str = "if [ \"$FLOTILLA_RUN_ATTEMPT\" = 1 ]; then exit 3; fi; exit 0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_rule_retries_exit_3_which_the_default_would_not() {
    let env = Env::local();
    // retry_on_app_exit is off: without the rule exit 3 would be final.
    let def = env
        .define(
            "retry-3",
            EXIT_3_ON_ATTEMPT_1,
            Some(retry_3_else_exit()),
            false,
        )
        .await;
    let run = env.run(&def).await;
    assert_eq!(
        (run.status, run.exit_code, run.attempt, run.failure),
        (RunStatus::Stopped, Some(0), 2, None),
        "attempt 1 exited 3, the RETRY rule gave attempt 2, which succeeded: {run:?}"
    );
    assert_eq!(env.executions(&run), vec![1, 2], "two real executions");
    let reasons = env.reasons(&run).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("will retry by retry_strategy.evaluate_on_exit[0] (RETRY)")),
        "the timeline names the deciding rule: {reasons:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_rule_stops_exit_4_which_retry_on_app_exit_would_retry() {
    let env = Env::local();
    // retry_on_app_exit is on: without the EXIT rule exit 4 would run 3 times.
    let def = env
        .define("exit-4", "exit 4", Some(retry_3_else_exit()), true)
        .await;
    let run = env.run(&def).await;
    assert_eq!(
        (run.status, run.exit_code, run.attempt, run.failure),
        (
            RunStatus::Stopped,
            Some(4),
            1,
            Some(FailureCategory::AppExit)
        ),
        "one attempt only: {run:?}"
    );
    // Give a wrongly granted retry the time to run before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.executions(&run), vec![1], "exactly one real execution");
    let reasons = env.reasons(&run).await;
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("not retried by retry_strategy.evaluate_on_exit[1] (EXIT)")),
        "{reasons:?}"
    );
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempts_of_the_rules_cap_retries() {
    let env = Env::local();
    let rules = RetryStrategy {
        attempts: Some(2),
        evaluate_on_exit: vec![EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3")],
    };
    let mut def = NewDefinition::new("capped", "ubuntu:latest").command(format!(
        "echo \"$FLOTILLA_RUN_ATTEMPT\" >> {}/\"$FLOTILLA_RUN_ID\"; exit 3",
        env.marks.display()
    ));
    def.max_attempts = Some(5);
    def.retry_strategy = Some(rules);
    let def = env.flotilla.define(def).await.expect("define");
    let run = env.run(&def).await;
    assert_eq!(
        (run.status, run.exit_code, run.attempt, run.max_attempts),
        (RunStatus::Stopped, Some(3), 2, 2),
        "retry_strategy.attempts (2) wins over max_attempts (5): {run:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.executions(&run), vec![1, 2]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exit_rule_on_node_lost_stops_the_default_infrastructure_retry() {
    let env = Env::reclassifying(Reclassify::node_lost);
    let script = "sleep 0.1";
    let rules = RetryStrategy {
        attempts: None,
        evaluate_on_exit: vec![EvaluateOnExit::new(RetryAction::Exit).on_reason("node_lost")],
    };
    let stopping = env.define("lost-exit", script, Some(rules), false).await;
    let plain = env.define("lost-default", script, None, false).await;

    let run = env.run(&stopping).await;
    assert_eq!(
        (run.status, run.attempt, run.failure),
        (RunStatus::Stopped, 1, Some(FailureCategory::NodeLost)),
        "the EXIT rule ends the run after its first lost attempt: {run:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.executions(&run), vec![1], "exactly one real execution");

    // The same failure without the rule: the default retries node_lost up
    // to the default 3 attempts, so the rule is what stopped the first.
    let control = env.run(&plain).await;
    assert_eq!(
        (control.status, control.attempt, control.failure),
        (RunStatus::Stopped, 3, Some(FailureCategory::NodeLost)),
        "{control:?}"
    );
    assert_eq!(env.executions(&control), vec![1, 2, 3]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_the_rules_it_was_executed_with() {
    let env = Env::local();
    let go = env.marks.join("go");
    // Attempt 1 waits for the test's signal, then exits 3; attempt 2
    // succeeds.
    let script = format!(
        "if [ \"$FLOTILLA_RUN_ATTEMPT\" = 1 ]; then while [ ! -e {go} ]; do sleep 0.05; done; exit 3; fi; exit 0",
        go = go.display()
    );
    let def = env
        .define("edited", &script, Some(retry_3_else_exit()), false)
        .await;
    let first = env.execute(&def).await;
    let marks = env.marks.clone();
    let id = first.run_id.clone();
    tokio::time::timeout(WAIT, async {
        while read_marks(&marks, &id).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("attempt 1 started");
    // While attempt 1 runs, the definition loses its rules.
    let cleared = env
        .flotilla
        .update_definition(
            &def.definition_id,
            DefinitionUpdate {
                retry_strategy: Some(RetryStrategy::default()),
                ..Default::default()
            },
            &Actor::system(),
        )
        .await
        .expect("clear the rules");
    assert_eq!(cleared.retry_strategy, None);
    std::fs::write(&go, "").expect("signal");
    let first = env.stopped(&first).await;
    assert_eq!(
        (first.exit_code, first.attempt),
        (Some(0), 2),
        "the run executed with the rules is retried by them: {first:?}"
    );
    assert_eq!(env.executions(&first), vec![1, 2]);

    // A run executed after the edit has no rules: exit 3 is final.
    let second = env.run(&cleared).await;
    assert_eq!(
        (second.exit_code, second.attempt, second.failure),
        (Some(3), 1, Some(FailureCategory::AppExit)),
        "{second:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(env.executions(&second), vec![1]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_rule_on_oom_retries_and_adaptive_allocation_still_decides_the_memory() {
    let env = Env::reclassifying(Reclassify::oom_on_137);
    let script = "if [ \"$FLOTILLA_RUN_ATTEMPT\" = 1 ]; then kill -9 $$; fi; exit 0";
    let rules = RetryStrategy {
        attempts: None,
        evaluate_on_exit: vec![
            EvaluateOnExit::new(RetryAction::Retry)
                .on_reason("oom")
                .on_status_reason("OutOfMemoryError*"),
        ],
    };
    for (alias, adaptive, memory) in [("oom-fixed", false, 100), ("oom-grown", true, 200)] {
        let command = format!(
            "echo \"$FLOTILLA_RUN_ATTEMPT\" >> {}/\"$FLOTILLA_RUN_ID\"; {script}",
            env.marks.display()
        );
        let mut def = NewDefinition::new(alias, "ubuntu:latest").command(command);
        def.memory = Some(100);
        def.adaptive_resource_allocation = adaptive;
        def.retry_strategy = Some(rules.clone());
        let def = env.flotilla.define(def).await.expect("define");
        let run = env.run(&def).await;
        assert_eq!(
            (run.exit_code, run.attempt, run.memory),
            (Some(0), 2, Some(memory)),
            "oom on attempt 1 retried by the rule; memory grown only with adaptive allocation ({adaptive}): {run:?}"
        );
        assert_eq!(env.executions(&run), vec![1, 2]);
    }
    env.shutdown().await;
}
