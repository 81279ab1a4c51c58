//! The `Engine` trait: where runs execute (ECS, Kubernetes, local processes).

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Capacity, Definition, FailureCategory, Instance, Run};

/// What an engine supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Capabilities {
    /// Runs may ask for GPUs.
    pub gpu: bool,
    /// Definitions may expose ports.
    pub ports: bool,
    /// A log source exists for this engine.
    pub logs: bool,
    /// `active_deadline_seconds` is enforced.
    pub deadline: bool,
    /// `events()` pushes status changes.
    pub push_events: bool,
    /// The image is honoured (false for the local engine).
    pub images: bool,
    /// Runs may carry an input zip and get their output uploaded
    /// ([`crate::artifacts`]): the engine unpacks `input_url` before the job
    /// starts and reports [`StatusUpdate::output_url`].
    pub artifacts: bool,
}

/// The result of a submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The engine's handle: task ARN, Job name, pid.
    pub engine_ref: String,
    /// Where it was placed, if known already.
    pub instance: Option<Instance>,
}

/// The state an engine observes for one run attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskState {
    /// Accepted, not yet running (pulling, scheduling).
    Pending,
    /// Running.
    Running,
    /// Finished: see `exit_code`, `reason`, `failure`.
    Stopped,
    /// The engine has no record of it (never submitted, or gone).
    Missing,
}

/// One observation of one run attempt by an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusUpdate {
    /// The run.
    pub run_id: String,
    /// The attempt observed; updates for another attempt are ignored.
    pub attempt: u32,
    /// What the engine sees.
    pub state: TaskState,
    /// Exit code, for `Stopped` when the program exited.
    pub exit_code: Option<i64>,
    /// Why it stopped, for people (stop code, reason, signal).
    pub reason: Option<String>,
    /// The engine's classification, for `Stopped` with a failure. `None`
    /// with exit code 0 is success; `None` with another exit code is
    /// `app_exit`.
    pub failure: Option<FailureCategory>,
    /// Where it runs.
    pub instance: Option<Instance>,
    /// When it started, if the engine knows.
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped, if the engine knows.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the attempt's output zip was uploaded, for `Stopped`.
    pub output_url: Option<String>,
}

impl StatusUpdate {
    /// An update with only the state set.
    pub fn new(run_id: impl Into<String>, attempt: u32, state: TaskState) -> Self {
        StatusUpdate {
            run_id: run_id.into(),
            attempt,
            state,
            exit_code: None,
            reason: None,
            failure: None,
            instance: None,
            started_at: None,
            finished_at: None,
            output_url: None,
        }
    }
}

/// An item of an engine's push stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A change.
    Update(StatusUpdate),
    /// A change from a durable source (e.g. an SQS queue of ECS events):
    /// the service calls [`EventAck::applied`] once the update is stored or
    /// found stale, and never when applying it failed, so the source keeps
    /// (redelivers) what was not applied.
    Durable {
        /// The change.
        update: StatusUpdate,
        /// Tells the source the change is applied.
        ack: EventAck,
    },
    /// Changes may have been missed (a lagging subscriber, a broken
    /// watch): poll every active run.
    Resync,
}

type AckFn = Box<dyn FnOnce() + Send>;

/// The acknowledgement of a durable engine event: calling
/// [`applied`](EventAck::applied) (on any clone) runs the source's callback
/// once; dropping every clone without it leaves the event unacknowledged.
#[derive(Clone)]
pub struct EventAck(Arc<Mutex<Option<AckFn>>>);

impl EngineEvent {
    /// The push stream of an engine that broadcasts its changes: every
    /// subscriber gets each change; one that fell behind gets a
    /// [`EngineEvent::Resync`] in place of what it missed.
    pub fn broadcast_stream(
        rx: tokio::sync::broadcast::Receiver<EngineEvent>,
    ) -> BoxStream<'static, EngineEvent> {
        use futures::StreamExt;
        use tokio_stream::wrappers::BroadcastStream;
        use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
        BroadcastStream::new(rx)
            .map(|item| match item {
                Ok(ev) => ev,
                Err(BroadcastStreamRecvError::Lagged(_)) => EngineEvent::Resync,
            })
            .boxed()
    }
}

impl EventAck {
    /// An acknowledgement that runs `f` when the event is applied.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Self {
        EventAck(Arc::new(Mutex::new(Some(Box::new(f)))))
    }

    /// Marks the event applied; only the first call on any clone runs the
    /// callback.
    pub fn applied(&self) {
        let f = self.0.lock().ok().and_then(|mut g| g.take());
        if let Some(f) = f {
            f();
        }
    }
}

impl std::fmt::Debug for EventAck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pending = self.0.lock().map(|g| g.is_some()).unwrap_or(false);
        f.debug_struct("EventAck")
            .field("pending", &pending)
            .finish()
    }
}

impl PartialEq for EventAck {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

/// Where runs execute.
///
/// # Contract
/// - `submit` starts the run's current attempt and is idempotent per
///   `(run_id, attempt)`: submitting the same attempt again (a redelivered
///   message, a retry after a crash) never starts a second container; it
///   returns the same `engine_ref`. A new attempt of the same run starts
///   anew. Errors of a retryable kind (`Unavailable`, `RateLimited`) mean
///   "try again later, nothing started"; any other kind is permanent and
///   the run stops with the message as reason (`submit_rejected`).
/// - `poll` observes runs in one call (backends batch their API calls:
///   ECS DescribeTasks 100 at a time) and returns at most one update per run
///   it was given, `Missing` for runs it has no record of. A run it could
///   not observe (its cluster's API failed, its files could not be read) is
///   left out: no update is "no news", never `Missing`. One bad run or one
///   failing cluster must not hide the others; `Err` means nothing could be
///   observed at all.
/// - `events`, when the engine can push changes, returns a stream of
///   updates; the service takes it once and still polls as a safety net.
/// - `terminate` stops the run's current attempt; terminating a finished or
///   unknown run is not an error.
/// - `capabilities` says what the engine honours; callers never find out by
///   failing.
/// - `finished` is called after the attempt's outcome is stored; only then
///   may an engine delete what records it.
/// - A push stream that is not polled must not consume anything: only the
///   status worker's lease holder polls it, and a durable source
///   ([`EngineEvent::Durable`]) deletes an event only once it is acked.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The engine's name, as in `Run::engine`.
    fn name(&self) -> &str;
    /// What the engine supports.
    fn capabilities(&self) -> Capabilities;
    /// What a cluster of this engine holds when its own `capacity` leaves a
    /// dimension unset: the host's cores and memory for engines that run on
    /// this machine (local, Docker). The default, `None`, is unlimited.
    fn default_capacity(&self) -> Option<Capacity> {
        None
    }
    /// Starts the run's current attempt (idempotent per `(run_id, attempt)`).
    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted>;
    /// Observes runs, at most one update per run (see the contract).
    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>>;
    /// Stops the run's current attempt; `reason` names who asked.
    async fn terminate(&self, run: &Run, reason: &str) -> Result<()>;
    /// A push stream of changes, if the engine has one.
    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        None
    }

    /// Called once the final outcome of the run's current attempt (STOPPED,
    /// or NEEDS_RETRY before another attempt) is stored. Engines that keep
    /// finished work only for a while on their own (a Kubernetes Job's TTL)
    /// clean it up here instead, so nothing is forgotten before it is
    /// recorded. Best effort; the default does nothing.
    async fn finished(&self, run: &Run) -> Result<()> {
        let _ = run;
        Ok(())
    }
}
