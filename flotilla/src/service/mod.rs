//! The embeddable service: the operations the API exposes, and the workers
//! that move runs through their life cycle.
//!
//! The facade ([`Flotilla`]) lives here; each concept has its own file:
//! [`builder`](FlotillaBuilder), `config`, `definitions`, `clusters`, `runs`,
//! `reports`, the retry policy and the `workers`.

mod admission;
mod artifacts;
mod batch;
mod builder;
mod clusters;
mod config;
mod definitions;
pub(crate) mod holds;
mod idempotence;
mod reports;
mod retry;
mod runs;
mod templates;
mod workers;

pub use admission::MAX_HELD;
#[cfg(feature = "testkit")]
pub use admission::{Admission, Admitted, Offer};
pub use builder::FlotillaBuilder;
pub(crate) use config::duration_ms;
pub use config::{
    ENV_OWNER_ID, ENV_PARENT_RUN_ID, ENV_RUN_ID, ENV_SERVER_MODE, EnabledWorkers, ServiceConfig,
    WorkerConfig,
};
pub use idempotence::IDEMPOTENCE_WINDOW;
pub use retry::{RetryDecision, RetryPolicy};
pub use templates::{ENV_TEMPLATE_ID, ENV_TEMPLATE_NAME, ENV_TEMPLATE_VERSION};
pub use workers::{MAX_WORKER_COUNT, WorkerKind, WorkerState};

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::Engine;
use crate::error::Result;
use crate::logs::LogSource;
use crate::model::{self, Run, RunEvent};
use crate::queue::Queue;
use crate::state::check_transition;
use crate::store::{Expected, Store};

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) engines: HashMap<String, Arc<dyn Engine>>,
    logs: HashMap<String, Arc<dyn LogSource>>,
    default_engine: String,
    pub(crate) config: ServiceConfig,
    /// Queues (clusters) the submit worker receives from.
    pub(crate) queues: RwLock<BTreeSet<String>>,
    /// Every run change this process made.
    changes: broadcast::Sender<Run>,
    /// Wakes the retry worker when a run enters NEEDS_RETRY.
    pub(crate) retry_wake: tokio::sync::Notify,
    /// Continuous absences of active runs from their engines.
    pub(crate) missing: workers::MissingTracker,
    /// Which workers run on this replica, changed at run time.
    pub(crate) workers: workers::WorkerControl,
    /// Cluster usage and waiting runs ([`admission`]).
    pub(crate) admission: admission::Admission,
    /// Clusters whose queues are left unclaimed ([`holds`]).
    pub(crate) holds: holds::ClusterHolds,
    /// Where run inputs are staged and outputs read back, if anywhere.
    pub(crate) artifacts: Option<crate::artifacts::Artifacts>,
    /// Group commit of the submit worker's QUEUED → PENDING writes.
    pub(crate) submit_writes: batch::Batcher,
    /// Group commit of the status worker's transitions.
    pub(crate) status_writes: batch::Batcher,
    /// Definition reads shared by concurrent submits of one definition.
    pub(crate) definition_reads: batch::SharedReads,
}

/// The embeddable scheduler: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Flotilla {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Flotilla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flotilla")
            .field("store", &self.inner.store)
            .field("queue", &self.inner.queue)
            .field("engines", &self.inner.engines.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Running workers; `shutdown` stops them gracefully.
#[derive(Debug)]
pub struct FlotillaHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl FlotillaHandle {
    /// Stops taking new work, lets in-flight submits and updates finish,
    /// gives leases up, and waits for every worker to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// A token cancelled when shutdown begins.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Flotilla {
    /// A builder.
    pub fn builder() -> FlotillaBuilder {
        FlotillaBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.queue
    }

    /// The settings in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// Names of the configured engines.
    pub fn engine_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.engines.keys().cloned().collect();
        v.sort();
        v
    }

    /// An engine by name.
    pub fn engine(&self, name: &str) -> Option<&Arc<dyn Engine>> {
        self.inner.engines.get(name)
    }

    /// Starts the workers enabled in the config (or since changed with
    /// [`Flotilla::set_worker`]).
    pub fn start(&self) -> FlotillaHandle {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        workers::spawn_all(self, &cancel, &tracker);
        FlotillaHandle { cancel, tracker }
    }

    /// Every run change made by this process, as it happens. Changes made by
    /// other replicas are not seen here: re-read to follow those.
    pub fn subscribe(&self) -> broadcast::Receiver<Run> {
        self.inner.changes.subscribe()
    }

    fn limit(&self, requested: usize) -> usize {
        let max = self.inner.config.limits.max_page;
        if requested == 0 {
            max
        } else {
            requested.min(max)
        }
    }

    // ----- definitions -----

    /// Checks `run.status → next.status`, compare-and-sets it with an event
    /// and publishes the change.
    pub(crate) async fn transition(
        &self,
        run: &Run,
        next: Run,
        reason: Option<String>,
    ) -> Result<Run> {
        let item = Self::transition_item(run, next, reason)?;
        let stored = self
            .inner
            .store
            .update_run(&item.run, item.expected, item.event.as_ref())
            .await?;
        self.transitioned(&stored);
        Ok(stored)
    }

    /// [`Flotilla::transition`] written in the next batch of `batcher`
    /// (one [`Store::update_runs`] call for the transitions asked for
    /// meanwhile); still its own compare-and-set.
    pub(crate) async fn transition_batched(
        &self,
        batcher: &batch::Batcher,
        run: &Run,
        next: Run,
        reason: Option<String>,
    ) -> Result<Run> {
        let item = Self::transition_item(run, next, reason)?;
        let stored = batcher.update(&self.inner.store, item).await?;
        self.transitioned(&stored);
        Ok(stored)
    }

    /// The checked compare-and-set of `run → next`, with its event.
    fn transition_item(
        run: &Run,
        mut next: Run,
        reason: Option<String>,
    ) -> Result<crate::store::RunUpdate> {
        check_transition(run.status, next.status)?;
        let now = model::now();
        next.updated_at = now;
        let event = RunEvent {
            run_id: run.run_id.clone(),
            at: now,
            from: Some(run.status),
            to: next.status,
            attempt: next.attempt,
            reason,
        };
        Ok(crate::store::RunUpdate::new(
            next,
            Expected::of(run),
            Some(event),
        ))
    }

    /// After a stored transition: counted, seen by admission, published.
    fn transitioned(&self, stored: &Run) {
        metrics::counter!("flotilla_run_transitions_total", "to" => stored.status.as_str())
            .increment(1);
        self.inner.admission.observe(stored);
        self.publish(stored);
    }

    fn publish(&self, run: &Run) {
        if self.inner.changes.receiver_count() > 0 {
            let _ = self.inner.changes.send(run.clone());
        }
    }
}
