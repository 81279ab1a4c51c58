//! The [`Engine`] conformance suite and the [`EngineProbe`] a backend's test
//! supplies so the suite can drive tasks it does not control.
//!
//! ```no_run
//! use flotilla::testkit::engine::{RunSpec, TaskEnd};
//! use flotilla::testkit::{EngineProbe, engine_suite};
//! use flotilla::{Definition, Engine, Run};
//!
//! # async fn demo(engine: &dyn Engine, make: fn(RunSpec) -> (Run, Definition)) {
//! let probe = EngineProbe::new(
//!     // A (Run, Definition) for this backend whose task behaves as `spec` says.
//!     move |spec: RunSpec| async move { Ok(make(spec)) },
//!     // Make the task of `run.attempt` end as `end` says.
//!     |_run: Run, _end: TaskEnd| async move { Ok(()) },
//!     // How many tasks the backend started for `run.attempt`.
//!     |_run: Run| async move { Ok(1) },
//! );
//! engine_suite(engine, &probe).await;
//! # }
//! ```
//!
//! The suite panics (with a message saying what broke) on the first
//! violation of the [`Engine`] contract. It waits for conditions with a
//! generous limit ([`WAIT_LIMIT`]) and never asserts durations.

use std::collections::HashSet;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::BoxStream;

use crate::engine::{Engine, EngineEvent, StatusUpdate, Submitted, TaskState};
use crate::error::Result;
use crate::model::{Definition, FailureCategory, Run, RunStatus};

/// How long the suites wait for a condition before failing.
pub const WAIT_LIMIT: Duration = Duration::from_secs(30);

/// What the task of a run made by [`EngineProbe::make_run`] does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RunSpec {
    /// Text the task writes to its log (standard output) as soon as it
    /// starts, exactly as given (the suites end every line with `\n`). The
    /// task then keeps running until [`EngineProbe::finish`] ends it, the
    /// engine terminates it, or its deadline passes.
    pub output: String,
    /// `active_deadline_seconds` to put on the run.
    pub active_deadline_seconds: Option<i64>,
}

impl RunSpec {
    /// A task that writes nothing and runs until finished.
    pub fn new() -> Self {
        RunSpec::default()
    }

    /// Sets the text the task writes when it starts.
    pub fn output(mut self, text: impl Into<String>) -> Self {
        self.output = text.into();
        self
    }

    /// Sets the run's deadline.
    pub fn deadline(mut self, seconds: i64) -> Self {
        self.active_deadline_seconds = Some(seconds);
        self
    }
}

/// How [`EngineProbe::finish`] makes a task end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskEnd {
    /// The program exits with this code. The engine must then report
    /// `Stopped` with this `exit_code` and no failure (or `app_exit` for a
    /// non-zero code).
    Exit(i64),
    /// The host loses the task (ECS: a spot interruption stop code;
    /// Kubernetes: the pod is evicted). The engine must report `Stopped`
    /// with failure [`FailureCategory::NodeLost`]. A backend whose tasks
    /// run on the engine's own host (local processes) cannot lose it: its
    /// probe answers `Unsupported`, and the suite leaves the check out.
    HostLost,
}

type MakeRunFn = dyn Fn(RunSpec) -> BoxFuture<'static, Result<(Run, Definition)>> + Send + Sync;
type FinishFn = dyn Fn(Run, TaskEnd) -> BoxFuture<'static, Result<()>> + Send + Sync;
type StartedFn = dyn Fn(Run) -> BoxFuture<'static, Result<usize>> + Send + Sync;
type StartFn = dyn Fn(Run) -> BoxFuture<'static, Result<()>> + Send + Sync;

/// What the suites need from a backend's test to drive tasks the suite does
/// not control: a set of async closures the test supplies.
///
/// - `make_run(spec)` returns a fresh `(Run, Definition)` ready to submit to
///   the engine under test: a new unique `run_id`, `attempt = 1`,
///   `status = Queued`, `engine` = the engine's name, a cluster the engine
///   serves, and a command/image that makes the task behave as [`RunSpec`]
///   says (write `spec.output`, then keep running until finished). Local:
///   a shell command; ECS on moto: a task definition the control endpoint
///   drives; Kubernetes: a Job the fake API server's kubelet helpers drive.
/// - `finish(run, end)` makes the task of `run`'s current attempt
///   (`run.attempt`) end as [`TaskEnd`] says. The suite calls it only after
///   the engine reported the attempt `Running`.
/// - `started(run)` says how many tasks (processes, ECS tasks, pods) the
///   backend really started for `run`'s current attempt, counted at the
///   backend (not through the engine), so the suite can check that
///   duplicate submits start one.
/// - `start(run)` (optional, [`EngineProbe::with_start`]; default: nothing)
///   is called right after each submit for backends whose fake scheduler
///   must be told to start the task (the fake kubelet moves the pod to
///   Running). After it the engine must reach `Running` by itself.
pub struct EngineProbe {
    make_run: Box<MakeRunFn>,
    finish: Box<FinishFn>,
    started: Box<StartedFn>,
    start: Option<Box<StartFn>>,
}

impl std::fmt::Debug for EngineProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineProbe")
            .field("start", &self.start.is_some())
            .finish_non_exhaustive()
    }
}

impl EngineProbe {
    /// A probe from its three required closures (see the type's docs).
    pub fn new<M, MF, F, FF, S, SF>(make_run: M, finish: F, started: S) -> Self
    where
        M: Fn(RunSpec) -> MF + Send + Sync + 'static,
        MF: Future<Output = Result<(Run, Definition)>> + Send + 'static,
        F: Fn(Run, TaskEnd) -> FF + Send + Sync + 'static,
        FF: Future<Output = Result<()>> + Send + 'static,
        S: Fn(Run) -> SF + Send + Sync + 'static,
        SF: Future<Output = Result<usize>> + Send + 'static,
    {
        EngineProbe {
            make_run: Box::new(move |spec| Box::pin(make_run(spec))),
            finish: Box::new(move |run, end| Box::pin(finish(run, end))),
            started: Box::new(move |run| Box::pin(started(run))),
            start: None,
        }
    }

    /// Adds the closure called right after every submit to make the
    /// backend's fake scheduler start the task.
    pub fn with_start<T, TF>(mut self, start: T) -> Self
    where
        T: Fn(Run) -> TF + Send + Sync + 'static,
        TF: Future<Output = Result<()>> + Send + 'static,
    {
        self.start = Some(Box::new(move |run| Box::pin(start(run))));
        self
    }

    /// A fresh run (and its definition) whose task behaves as `spec` says.
    pub async fn make_run(&self, spec: RunSpec) -> Result<(Run, Definition)> {
        (self.make_run)(spec).await
    }

    /// Makes the task of `run`'s current attempt end as `end` says.
    pub async fn finish(&self, run: &Run, end: TaskEnd) -> Result<()> {
        (self.finish)(run.clone(), end).await
    }

    /// How many tasks the backend started for `run`'s current attempt.
    pub async fn started(&self, run: &Run) -> Result<usize> {
        (self.started)(run.clone()).await
    }

    /// Tells the backend's fake scheduler to start `run`'s task (no-op
    /// unless [`EngineProbe::with_start`] was used).
    pub async fn start(&self, run: &Run) -> Result<()> {
        match &self.start {
            Some(f) => f(run.clone()).await,
            None => Ok(()),
        }
    }
}

/// Runs every check of the [`Engine`] contract against `engine`, driving
/// tasks through `probe`. Panics on the first violation.
///
/// Checks: submit then poll reaches `Running` and, once finished, `Stopped`
/// with exit code 0 and no failure; a non-zero exit code is recorded;
/// submitting one attempt twice, in turn or at the same time, starts one
/// task and returns one `engine_ref`; a new attempt of the same run starts
/// anew; an unknown run polls `Missing`; one poll of many runs answers once
/// per run; terminate stops a running task (failure `terminated`) and is
/// `Ok` for unknown and finished runs; a lost host is `node_lost` (where a
/// host can be lost, see [`TaskEnd::HostLost`]); and the
/// capabilities hold: with `push_events` the stream delivers the stop, with
/// `deadline` an overdue run stops with `timeout`.
pub async fn engine_suite(engine: &dyn Engine, probe: &EngineProbe) {
    let caps = engine.capabilities();
    let mut events = if caps.push_events {
        Some(
            engine
                .events()
                .expect("capabilities().push_events is true, so events() must be Some"),
        )
    } else {
        None
    };

    let finished = success(engine, probe, events.as_mut()).await;
    exit_code(engine, probe).await;
    idempotent_submit(engine, probe).await;
    new_attempt(engine, probe, &finished).await;
    unknown_runs(engine, probe).await;
    poll_many(engine, probe).await;
    terminate(engine, probe, &finished).await;
    host_lost(engine, probe).await;
    if caps.deadline {
        deadline(engine, probe).await;
    }
}

/// Makes a run, panicking with the probe's error.
pub(crate) async fn make(probe: &EngineProbe, spec: RunSpec) -> (Run, Definition) {
    let (run, def) = probe
        .make_run(spec)
        .await
        .expect("EngineProbe::make_run failed");
    assert_eq!(run.attempt, 1, "make_run must return attempt 1");
    (run, def)
}

/// Submits, tells the probe to start the task, and returns the submit result.
pub(crate) async fn submit(
    engine: &dyn Engine,
    probe: &EngineProbe,
    run: &Run,
    def: &Definition,
) -> Submitted {
    let s = engine
        .submit(run, def)
        .await
        .unwrap_or_else(|e| panic!("submit of run {} failed: {e} ({})", run.run_id, e.kind()));
    assert!(
        !s.engine_ref.is_empty(),
        "submit of run {} returned an empty engine_ref",
        run.run_id
    );
    probe
        .start(run)
        .await
        .unwrap_or_else(|e| panic!("EngineProbe::start of run {} failed: {e}", run.run_id));
    s
}

/// Polls `run` alone and checks the answer is about it.
pub(crate) async fn poll_one(engine: &dyn Engine, run: &Run) -> StatusUpdate {
    let updates = engine
        .poll(std::slice::from_ref(run))
        .await
        .unwrap_or_else(|e| panic!("poll of run {} failed: {e} ({})", run.run_id, e.kind()));
    assert_eq!(
        updates.len(),
        1,
        "poll of one run must return one update, got {updates:?}"
    );
    let u = updates.into_iter().next().unwrap_or_else(|| unreachable!());
    assert_eq!(u.run_id, run.run_id, "poll answered about another run");
    u
}

/// Polls `run` until `done` holds, failing after [`WAIT_LIMIT`].
pub(crate) async fn wait_for(
    engine: &dyn Engine,
    run: &Run,
    what: &str,
    done: impl Fn(&StatusUpdate) -> bool,
) -> StatusUpdate {
    let give_up = tokio::time::Instant::now() + WAIT_LIMIT;
    loop {
        let u = poll_one(engine, run).await;
        if u.attempt == run.attempt && done(&u) {
            return u;
        }
        if tokio::time::Instant::now() > give_up {
            panic!(
                "run {} attempt {}: waited {WAIT_LIMIT:?} for {what}; last update {u:?}",
                run.run_id, run.attempt
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the attempt is running (or already stopped).
pub(crate) async fn wait_running(engine: &dyn Engine, run: &Run) -> StatusUpdate {
    wait_for(engine, run, "Running", |u| {
        matches!(u.state, TaskState::Running | TaskState::Stopped)
    })
    .await
}

/// Waits until the attempt stopped.
pub(crate) async fn wait_stopped(engine: &dyn Engine, run: &Run) -> StatusUpdate {
    wait_for(engine, run, "Stopped", |u| u.state == TaskState::Stopped).await
}

/// Ends the task through the probe.
pub(crate) async fn finish(probe: &EngineProbe, run: &Run, end: TaskEnd) {
    probe
        .finish(run, end)
        .await
        .unwrap_or_else(|e| panic!("EngineProbe::finish of run {} failed: {e}", run.run_id));
}

async fn started(probe: &EngineProbe, run: &Run) -> usize {
    probe
        .started(run)
        .await
        .unwrap_or_else(|e| panic!("EngineProbe::started of run {} failed: {e}", run.run_id))
}

/// The run as the service would hold it after a submit.
fn submitted(run: &Run, s: &Submitted) -> Run {
    let mut r = run.clone();
    r.status = RunStatus::Pending;
    r.engine_ref = Some(s.engine_ref.clone());
    if s.instance.is_some() {
        r.instance = s.instance.clone();
    }
    r
}

/// Runs a whole attempt to a clean exit; returns the stopped run.
async fn success(
    engine: &dyn Engine,
    probe: &EngineProbe,
    events: Option<&mut BoxStream<'static, EngineEvent>>,
) -> Run {
    let (run, def) = make(
        probe,
        RunSpec::new().output("hello from the engine suite\n"),
    )
    .await;
    let before = poll_one(engine, &run).await;
    assert_eq!(
        before.state,
        TaskState::Missing,
        "a run never submitted must poll Missing"
    );
    let s = submit(engine, probe, &run, &def).await;
    let run = submitted(&run, &s);
    let u = wait_running(engine, &run).await;
    assert_eq!(u.attempt, run.attempt);
    finish(probe, &run, TaskEnd::Exit(0)).await;
    let u = wait_stopped(engine, &run).await;
    assert_eq!(u.exit_code, Some(0), "exit 0 must be recorded: {u:?}");
    assert_eq!(u.failure, None, "exit 0 is success, not a failure: {u:?}");
    assert_eq!(started(probe, &run).await, 1, "one submit, one task");
    if let Some(events) = events {
        let give_up = tokio::time::Instant::now() + WAIT_LIMIT;
        loop {
            let next = tokio::time::timeout_at(give_up, events.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "push_events: no Stopped update for run {} within {WAIT_LIMIT:?}",
                        run.run_id
                    )
                });
            // A durable source's events are acknowledged as the service
            // would once applied (here: once seen).
            let update = match next {
                Some(EngineEvent::Update(u)) => Some(u),
                Some(EngineEvent::Durable { update, ack }) => {
                    ack.applied();
                    Some(update)
                }
                Some(EngineEvent::Resync) => None,
                None => panic!("push_events: the event stream ended"),
            };
            match update {
                Some(u)
                    if u.run_id == run.run_id
                        && u.attempt == run.attempt
                        && u.state == TaskState::Stopped =>
                {
                    assert_eq!(u.exit_code, Some(0), "pushed stop must carry the exit code");
                    break;
                }
                _ => continue,
            }
        }
    }
    let mut done = run;
    done.status = RunStatus::Stopped;
    done.exit_code = Some(0);
    done
}

async fn exit_code(engine: &dyn Engine, probe: &EngineProbe) {
    let (run, def) = make(probe, RunSpec::new()).await;
    let s = submit(engine, probe, &run, &def).await;
    let run = submitted(&run, &s);
    wait_running(engine, &run).await;
    finish(probe, &run, TaskEnd::Exit(3)).await;
    let u = wait_stopped(engine, &run).await;
    assert_eq!(u.exit_code, Some(3), "exit code 3 must be recorded: {u:?}");
    assert!(
        matches!(u.failure, None | Some(FailureCategory::AppExit)),
        "a non-zero exit is app_exit (failure None or AppExit): {u:?}"
    );
}

async fn idempotent_submit(engine: &dyn Engine, probe: &EngineProbe) {
    // One after the other.
    let (run, def) = make(probe, RunSpec::new()).await;
    let first = submit(engine, probe, &run, &def).await;
    let second = submit(engine, probe, &run, &def).await;
    assert_eq!(
        first.engine_ref, second.engine_ref,
        "submitting one attempt twice must return one engine_ref"
    );
    // At the same time.
    let (run2, def2) = make(probe, RunSpec::new()).await;
    let (a, b, c) = futures::join!(
        engine.submit(&run2, &def2),
        engine.submit(&run2, &def2),
        engine.submit(&run2, &def2)
    );
    let refs: HashSet<String> = [a, b, c]
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|e| panic!("concurrent submit failed: {e} ({})", e.kind()))
                .engine_ref
        })
        .collect();
    assert_eq!(
        refs.len(),
        1,
        "concurrent submits of one attempt must return one engine_ref: {refs:?}"
    );
    probe
        .start(&run2)
        .await
        .unwrap_or_else(|e| panic!("EngineProbe::start failed: {e}"));
    let run = submitted(&run, &first);
    let run2 = submitted(
        &run2,
        &Submitted {
            engine_ref: refs.into_iter().next().unwrap_or_default(),
            instance: None,
        },
    );
    for r in [&run, &run2] {
        wait_running(engine, r).await;
        finish(probe, r, TaskEnd::Exit(0)).await;
        let u = wait_stopped(engine, r).await;
        assert_eq!(u.exit_code, Some(0), "{u:?}");
        assert_eq!(
            started(probe, r).await,
            1,
            "duplicate submits of run {} started more than one task",
            r.run_id
        );
    }
    // Submitting a finished attempt again starts nothing either.
    let again = engine
        .submit(&run, &def)
        .await
        .unwrap_or_else(|e| panic!("resubmit of a finished attempt failed: {e}"));
    assert_eq!(again.engine_ref, first.engine_ref);
    assert_eq!(
        started(probe, &run).await,
        1,
        "resubmit after the end restarted the task"
    );
    assert_eq!(wait_stopped(engine, &run).await.exit_code, Some(0));
}

async fn new_attempt(engine: &dyn Engine, probe: &EngineProbe, finished: &Run) {
    let mut next = finished.clone();
    next.attempt += 1;
    next.status = RunStatus::Queued;
    next.exit_code = None;
    next.engine_ref = None;
    let def = next.snapshot_definition();
    let s = submit(engine, probe, &next, &def).await;
    assert_ne!(
        Some(&s.engine_ref),
        finished.engine_ref.as_ref(),
        "a new attempt must start a new task, not return the old one"
    );
    let next = submitted(&next, &s);
    let u = wait_running(engine, &next).await;
    assert_eq!(
        u.attempt, next.attempt,
        "poll must answer for the run's current attempt"
    );
    finish(probe, &next, TaskEnd::Exit(0)).await;
    let u = wait_stopped(engine, &next).await;
    assert_eq!(u.exit_code, Some(0));
    assert_eq!(
        started(probe, &next).await,
        1,
        "attempt 2 must start one task"
    );
}

async fn unknown_runs(engine: &dyn Engine, probe: &EngineProbe) {
    let (run, _def) = make(probe, RunSpec::new()).await;
    let u = poll_one(engine, &run).await;
    assert_eq!(u.state, TaskState::Missing, "unknown run must poll Missing");
    engine
        .terminate(&run, "engine suite: unknown run")
        .await
        .unwrap_or_else(|e| panic!("terminate of an unknown run must be Ok, got {e}"));
    assert_eq!(
        started(probe, &run).await,
        0,
        "terminate must not start anything"
    );
}

async fn poll_many(engine: &dyn Engine, probe: &EngineProbe) {
    let mut runs = Vec::new();
    for i in 0..6 {
        let (run, def) = make(probe, RunSpec::new()).await;
        if i % 2 == 0 {
            let s = submit(engine, probe, &run, &def).await;
            runs.push((submitted(&run, &s), true));
        } else {
            runs.push((run, false));
        }
    }
    let all: Vec<Run> = runs.iter().map(|(r, _)| r.clone()).collect();
    let updates = engine
        .poll(&all)
        .await
        .unwrap_or_else(|e| panic!("poll of {} runs failed: {e}", all.len()));
    assert_eq!(
        updates.len(),
        all.len(),
        "poll must return one update per run: {updates:?}"
    );
    for (run, was_submitted) in &runs {
        let mine: Vec<&StatusUpdate> = updates.iter().filter(|u| u.run_id == run.run_id).collect();
        assert_eq!(
            mine.len(),
            1,
            "run {} got {} updates",
            run.run_id,
            mine.len()
        );
        let u = mine[0];
        if *was_submitted {
            assert!(
                matches!(u.state, TaskState::Pending | TaskState::Running),
                "a submitted, unfinished run must be Pending or Running: {u:?}"
            );
            assert_eq!(u.attempt, run.attempt);
        } else {
            assert_eq!(u.state, TaskState::Missing, "never submitted: {u:?}");
        }
    }
    for (run, was_submitted) in &runs {
        if *was_submitted {
            wait_running(engine, run).await;
            finish(probe, run, TaskEnd::Exit(0)).await;
        }
    }
    for (run, was_submitted) in &runs {
        if *was_submitted {
            assert_eq!(wait_stopped(engine, run).await.exit_code, Some(0));
        }
    }
}

async fn terminate(engine: &dyn Engine, probe: &EngineProbe, finished: &Run) {
    let (run, def) = make(probe, RunSpec::new().output("waiting to be terminated\n")).await;
    let s = submit(engine, probe, &run, &def).await;
    let run = submitted(&run, &s);
    let u = wait_running(engine, &run).await;
    assert_eq!(
        u.state,
        TaskState::Running,
        "the task must run until terminated: {u:?}"
    );
    engine
        .terminate(&run, "terminated by the engine suite")
        .await
        .unwrap_or_else(|e| panic!("terminate failed: {e} ({})", e.kind()));
    let u = wait_stopped(engine, &run).await;
    assert_eq!(
        u.failure,
        Some(FailureCategory::Terminated),
        "a terminated run stops with failure terminated: {u:?}"
    );
    engine
        .terminate(&run, "terminated twice")
        .await
        .unwrap_or_else(|e| panic!("terminating a stopped run must be Ok, got {e}"));
    engine
        .terminate(finished, "terminated after it finished")
        .await
        .unwrap_or_else(|e| panic!("terminating a finished run must be Ok, got {e}"));
    let u = wait_stopped(engine, finished).await;
    assert_eq!(
        u.exit_code,
        Some(0),
        "terminate must not change a finished run: {u:?}"
    );
}

async fn host_lost(engine: &dyn Engine, probe: &EngineProbe) {
    let (run, def) = make(probe, RunSpec::new()).await;
    let s = submit(engine, probe, &run, &def).await;
    let run = submitted(&run, &s);
    wait_running(engine, &run).await;
    match probe.finish(&run, TaskEnd::HostLost).await {
        Ok(()) => {}
        Err(e) if e.kind() == crate::ErrorKind::Unsupported => {
            // Tasks on the engine's own host: there is no host to lose.
            engine
                .terminate(&run, "engine suite: host loss does not apply")
                .await
                .unwrap_or_else(|e| panic!("terminate failed: {e} ({})", e.kind()));
            wait_stopped(engine, &run).await;
            return;
        }
        Err(e) => panic!("EngineProbe::finish of run {} failed: {e}", run.run_id),
    }
    let u = wait_stopped(engine, &run).await;
    assert_eq!(
        u.failure,
        Some(FailureCategory::NodeLost),
        "a task lost with its host is node_lost: {u:?}"
    );
}

async fn deadline(engine: &dyn Engine, probe: &EngineProbe) {
    let (run, def) = make(probe, RunSpec::new().deadline(1)).await;
    assert_eq!(
        run.active_deadline_seconds,
        Some(1),
        "make_run must put the spec's deadline on the run"
    );
    let s = submit(engine, probe, &run, &def).await;
    let run = submitted(&run, &s);
    let u = wait_stopped(engine, &run).await;
    assert_eq!(
        u.failure,
        Some(FailureCategory::Timeout),
        "capabilities().deadline is true, so an overdue run stops with timeout: {u:?}"
    );
}
