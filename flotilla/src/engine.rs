//! The `Engine` trait: where runs execute (ECS, Kubernetes, local processes).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Definition, FailureCategory, Instance, Run};

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
        }
    }
}

/// An item of an engine's push stream.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineEvent {
    /// A change.
    Update(StatusUpdate),
    /// Changes may have been missed (a lagging subscriber, a broken
    /// watch): poll every active run.
    Resync,
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
///   ECS DescribeTasks 100 at a time) and returns one update per run it was
///   given, `Missing` for runs it has no record of.
/// - `events`, when the engine can push changes, returns a stream of
///   updates; the service takes it once and still polls as a safety net.
/// - `terminate` stops the run's current attempt; terminating a finished or
///   unknown run is not an error.
/// - `capabilities` says what the engine honours; callers never find out by
///   failing.
#[async_trait]
pub trait Engine: Send + Sync + std::fmt::Debug {
    /// The engine's name, as in `Run::engine`.
    fn name(&self) -> &str;
    /// What the engine supports.
    fn capabilities(&self) -> Capabilities;
    /// Starts the run's current attempt (idempotent per `(run_id, attempt)`).
    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted>;
    /// Observes runs, one update per run.
    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>>;
    /// Stops the run's current attempt; `reason` names who asked.
    async fn terminate(&self, run: &Run, reason: &str) -> Result<()>;
    /// A push stream of changes, if the engine has one.
    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        None
    }
}
