//! Runtime control of this replica's workers: which of them run, changed
//! while the service runs ([`Flotilla::workers`], [`Flotilla::set_worker`]).
//!
//! Each worker is one loop per replica, so its count is 0 (stopped here) or
//! 1 (running here). The singletons (status, retry, reconcile) do their work
//! only while this replica holds their lease: a count of 1 makes this
//! replica a candidate, 0 stops it and gives the lease up for another
//! replica. Starting a worker again waits until its previous loop has ended
//! (drained its in-flight submits, released its lease), so one replica never
//! runs two loops of one worker.
//!
//! The change is this process's: it is not stored, and a restart starts the
//! workers of the config (`workers.enabled`) again.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::{Error, Result};
use crate::service::{EnabledWorkers, Flotilla};

/// A worker of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WorkerKind {
    /// Receives queued runs and submits them (every replica).
    Submit,
    /// Follows active runs (singleton, by lease).
    Status,
    /// Queues NEEDS_RETRY runs again (singleton, by lease).
    Retry,
    /// Re-enqueues stale QUEUED runs (singleton, by lease).
    Reconcile,
}

impl WorkerKind {
    /// Every worker, in a stable order.
    pub const ALL: [WorkerKind; 4] = [
        WorkerKind::Submit,
        WorkerKind::Status,
        WorkerKind::Retry,
        WorkerKind::Reconcile,
    ];

    /// Its name: `submit`, `status`, `retry`, `reconcile`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerKind::Submit => "submit",
            WorkerKind::Status => "status",
            WorkerKind::Retry => "retry",
            WorkerKind::Reconcile => "reconcile",
        }
    }

    /// Whether one replica at a time does its work (by lease).
    pub fn is_singleton(self) -> bool {
        !matches!(self, WorkerKind::Submit)
    }

    fn enabled_in(self, e: &EnabledWorkers) -> bool {
        match self {
            WorkerKind::Submit => e.submit,
            WorkerKind::Status => e.status,
            WorkerKind::Retry => e.retry,
            WorkerKind::Reconcile => e.reconcile,
        }
    }
}

impl fmt::Display for WorkerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkerKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        WorkerKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                Error::not_found(format!(
                    "worker '{s}' does not exist; workers: submit, status, retry, reconcile"
                ))
            })
    }
}

/// One worker on this replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerState {
    /// Which worker.
    pub kind: WorkerKind,
    /// Loops of it on this replica: 0 (stopped) or 1.
    pub count: u32,
    /// The most loops it may have per replica (1 for every worker here).
    pub max_count: u32,
    /// Whether only the replica holding its lease does its work.
    pub singleton: bool,
}

/// The most loops of one worker per replica.
pub const MAX_WORKER_COUNT: u32 = 1;

struct Running {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    /// Which workers should run (the config's until changed).
    desired: HashMap<WorkerKind, bool>,
    /// The service's token and tracker once `start()` ran.
    started: Option<(CancellationToken, TaskTracker)>,
    running: HashMap<WorkerKind, Running>,
}

/// The workers' runtime state, in the service.
#[derive(Default)]
pub(crate) struct WorkerControl {
    state: Mutex<State>,
    /// Serialises [`Flotilla::set_worker`] calls.
    changing: tokio::sync::Mutex<()>,
}

impl WorkerControl {
    pub(crate) fn new(enabled: &EnabledWorkers) -> Self {
        let desired = WorkerKind::ALL
            .into_iter()
            .map(|k| (k, k.enabled_in(enabled)))
            .collect();
        WorkerControl {
            state: Mutex::new(State {
                desired,
                ..State::default()
            }),
            changing: tokio::sync::Mutex::new(()),
        }
    }
}

fn spawn(
    f: &Flotilla,
    kind: WorkerKind,
    parent: &CancellationToken,
    tracker: &TaskTracker,
) -> Running {
    let cancel = parent.child_token();
    let task = match kind {
        WorkerKind::Submit => tracker.spawn(super::submit::submit_loop(f.clone(), cancel.clone())),
        WorkerKind::Status => tracker.spawn(super::status::status_loop(f.clone(), cancel.clone())),
        WorkerKind::Retry => tracker.spawn(super::retry::retry_loop(f.clone(), cancel.clone())),
        WorkerKind::Reconcile => {
            tracker.spawn(super::reconcile::reconcile_loop(f.clone(), cancel.clone()))
        }
    };
    Running { cancel, task }
}

/// Spawns the desired workers under the service's token and tracker.
pub(crate) fn start(f: &Flotilla, cancel: &CancellationToken, tracker: &TaskTracker) {
    let Ok(mut st) = f.inner.workers.state.lock() else {
        return;
    };
    st.started = Some((cancel.clone(), tracker.clone()));
    for kind in WorkerKind::ALL {
        if st.desired.get(&kind).copied().unwrap_or(false) && !st.running.contains_key(&kind) {
            let r = spawn(f, kind, cancel, tracker);
            st.running.insert(kind, r);
        }
    }
}

fn poisoned() -> Error {
    Error::internal("worker control state poisoned")
}

impl Flotilla {
    /// This replica's workers and how many loops of each run here (0 or 1).
    /// Before [`Flotilla::start`], the counts are those `start` will use.
    pub fn workers(&self) -> Vec<WorkerState> {
        let st = self.inner.workers.state.lock();
        WorkerKind::ALL
            .into_iter()
            .map(|kind| WorkerState {
                kind,
                count: st
                    .as_ref()
                    .map(|s| u32::from(s.desired.get(&kind).copied().unwrap_or(false)))
                    .unwrap_or(0),
                max_count: MAX_WORKER_COUNT,
                singleton: kind.is_singleton(),
            })
            .collect()
    }

    /// Starts (`count` 1) or stops (`count` 0) `kind` on this replica. A
    /// stop cancels the loop and waits for it to end: the submit worker
    /// lets its in-flight submits finish, a singleton gives its lease up.
    /// Fails with `InvalidInput` for a count above [`MAX_WORKER_COUNT`].
    /// Not stored: a restart runs the config's workers again.
    pub async fn set_worker(&self, kind: WorkerKind, count: u32) -> Result<WorkerState> {
        if count > MAX_WORKER_COUNT {
            return Err(Error::invalid(format!(
                "count: worker '{kind}' runs at most {MAX_WORKER_COUNT} loop per replica{}",
                if kind.is_singleton() {
                    " (a singleton: one replica at a time does its work, by lease)"
                } else {
                    " (its parallelism is workers.submit_concurrency)"
                }
            )));
        }
        let want = count == 1;
        let ctl = &self.inner.workers;
        let _one_at_a_time = ctl.changing.lock().await;
        let previous = {
            let mut st = ctl.state.lock().map_err(|_| poisoned())?;
            st.desired.insert(kind, want);
            if want { None } else { st.running.remove(&kind) }
        };
        if let Some(r) = previous {
            r.cancel.cancel();
            if let Err(e) = r.task.await {
                tracing::warn!(worker = %kind, error = %e, "worker ended abnormally");
            }
            tracing::info!(worker = %kind, "worker stopped on this replica");
        }
        if want {
            let mut st = ctl.state.lock().map_err(|_| poisoned())?;
            let finished = st.running.get(&kind).is_some_and(|r| r.task.is_finished());
            if finished {
                st.running.remove(&kind);
            }
            if !st.running.contains_key(&kind)
                && let Some((cancel, tracker)) = st.started.clone()
                && !cancel.is_cancelled()
            {
                let r = spawn(self, kind, &cancel, &tracker);
                st.running.insert(kind, r);
                tracing::info!(worker = %kind, "worker started on this replica");
            }
        }
        Ok(WorkerState {
            kind,
            count,
            max_count: MAX_WORKER_COUNT,
            singleton: kind.is_singleton(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_names_round_trip_and_unknown_ones_are_not_found() {
        for k in WorkerKind::ALL {
            assert_eq!(k.as_str().parse::<WorkerKind>().expect("known"), k);
        }
        let e = "bogus".parse::<WorkerKind>().expect_err("unknown");
        assert_eq!(e.kind(), crate::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn a_change_before_start_is_what_start_runs_and_counts_above_one_are_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let f = Flotilla::builder()
            .build_local(dir.path())
            .expect("service");
        assert!(f.workers().iter().all(|w| w.count == 1));
        f.set_worker(WorkerKind::Retry, 0).await.expect("stop");
        let retry = |f: &Flotilla| {
            f.workers()
                .into_iter()
                .find(|w| w.kind == WorkerKind::Retry)
                .map(|w| w.count)
        };
        assert_eq!(retry(&f), Some(0));
        let e = f
            .set_worker(WorkerKind::Submit, 2)
            .await
            .expect_err("two loops");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        let handle = f.start();
        f.set_worker(WorkerKind::Retry, 1).await.expect("start");
        assert_eq!(retry(&f), Some(1));
        handle.shutdown().await;
    }
}
