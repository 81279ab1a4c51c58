//! The workers: submit, status, retry and reconcile.
//!
//! - **submit** (every replica) receives deliveries in batches, submits them
//!   with bounded concurrency, moves QUEUED → PENDING and acks in batches.
//!   It is woken by the queue itself (`receive` returns as soon as a message
//!   arrives), never by a fixed sleep.
//! - **status**, **retry**, **reconcile** are singletons: each runs only
//!   while this replica holds its lease in the store.
//!
//! Which of them run on a replica can change while it runs ([`control`]).

mod admit;
pub(crate) mod control;
mod lease;
mod missing;
mod reconcile;
mod retry;
mod status;
mod submit;

pub(crate) use control::WorkerControl;
pub use control::{MAX_WORKER_COUNT, WorkerKind, WorkerState};
pub(crate) use missing::MissingTracker;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::service::Flotilla;

pub(crate) fn spawn_all(f: &Flotilla, cancel: &CancellationToken, tracker: &TaskTracker) {
    control::start(f, cancel, tracker);
}

/// Sleeps `d` unless cancelled first; returns false when cancelled.
pub(crate) async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Backoff for worker-level failures (store or queue unreachable).
pub(crate) fn failure_backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(7));
    Duration::from_millis(ms.min(10_000))
}
