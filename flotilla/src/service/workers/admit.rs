//! The submit worker's admission side (the state and the rules are in
//! [`crate::service::admission`]): a received QUEUED run is held until it
//! fits on its cluster; the dispatcher submits held runs as capacity frees,
//! woken by the admission state, never by a timer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::submit::{Outcome, settle, submit_admitted};
use super::{failure_backoff, pause};
use crate::model::{Cluster, Run, RunStatus};
use crate::paging::run_pages;
use crate::query::RunQuery;
use crate::queue::Delivery;
use crate::service::Flotilla;
use crate::service::admission::Offer;

/// The store's PENDING and RUNNING runs (of `cluster`, or of every
/// cluster), every page of them.
async fn active_runs(f: &Flotilla, cluster: Option<&str>) -> crate::Result<Vec<Run>> {
    let mut query = RunQuery::all(f.inner.config.limits.max_page)
        .with_statuses(&[RunStatus::Pending, RunStatus::Running]);
    if let Some(c) = cluster {
        query.clusters = vec![c.to_string()];
    }
    let mut runs: Vec<Run> = Vec::new();
    let mut pages = run_pages(f.inner.store.as_ref(), query);
    while let Some(page) = pages.next().await {
        runs.extend(page?);
    }
    Ok(runs)
}

/// Rebuilds cluster usage from the store's PENDING and RUNNING runs, so a
/// restarted service counts the runs still active. Retries until it reads
/// them all, or the worker is cancelled.
pub(super) async fn load_usage(f: &Flotilla, cancel: &CancellationToken) {
    let mut failures = 0u32;
    loop {
        match active_runs(f, None).await {
            Ok(runs) => {
                f.inner.admission.reset();
                f.inner.admission.load(&runs);
                return;
            }
            Err(e) => tracing::warn!(error = %e, "reading active runs for admission failed"),
        }
        failures += 1;
        if !pause(cancel, failure_backoff(failures)).await {
            return;
        }
    }
}

/// Replaces `cluster`'s usage by its PENDING and RUNNING runs in the store.
async fn resync(f: &Flotilla, cluster: &str) {
    match active_runs(f, Some(cluster)).await {
        Ok(runs) => f.inner.admission.resync(cluster, &runs),
        Err(e) => {
            tracing::warn!(cluster, error = %e, "re-reading cluster usage failed; keeping the last");
        }
    }
}

/// The queues to receive from: all but those of clusters in maintenance
/// ([`crate::service::holds`]) and those whose cluster holds
/// [`crate::service::MAX_HELD`] waiting runs already.
pub(super) fn receivable(f: &Flotilla, queues: Vec<String>) -> Vec<String> {
    queues
        .into_iter()
        .filter(|q| !f.inner.holds.is_held(q) && !f.inner.admission.is_full(q))
        .collect()
}

/// Holds a QUEUED run (checked just now) until it fits; the dispatcher
/// submits it. `cluster` is the stored cluster, `None` for a configured one.
pub(super) async fn hold(
    f: &Flotilla,
    d: &Delivery,
    run: Run,
    cluster: Option<&Cluster>,
) -> Outcome {
    let capacity = match cluster {
        Some(c) => f.effective_capacity(c),
        None => f.effective_capacity(&Cluster::new(run.cluster.clone())),
    };
    match f.inner.admission.offer(run, d.clone(), capacity) {
        Offer::Held {
            replaced: Some(old),
        } => {
            // The same run delivered again: the newer delivery is held; the
            // older one is acked (a no-op when it is the same message).
            if let Err(e) = f.inner.queue.ack(std::slice::from_ref(&old)).await {
                tracing::debug!(run_id = %old.message.run_id, error = %e, "acking a replaced delivery failed");
            }
            // A held run came back after its lease: re-read the cluster's
            // usage, so stops and submits of other replicas count.
            if f.inner
                .admission
                .resync_due(&d.queue, Duration::from_secs(1))
            {
                resync(f, &d.queue).await;
            }
            Outcome::Held
        }
        Offer::Held { replaced: None } => Outcome::Held,
        Offer::Busy => {
            // Counted active here already: a duplicate of a delivery being
            // submitted (SQS delivers at least once), or a stale count
            // (another replica moved the run). Neither may sit on the
            // message until its lease ends: re-read the cluster's usage and
            // ask again shortly; by then a duplicate finds the run PENDING
            // and is acked.
            if f.inner
                .admission
                .resync_due(&d.queue, Duration::from_secs(1))
            {
                resync(f, &d.queue).await;
            }
            Outcome::Release(failure_backoff(d.delivery_count))
        }
    }
}

/// Submits held runs as they fit, each under a submit permit; woken by the
/// admission state (a run stopped, a run arrived, a capacity changed).
pub(super) async fn dispatch_loop(
    f: Flotilla,
    cancel: CancellationToken,
    permits: Arc<Semaphore>,
    ack_tx: mpsc::UnboundedSender<Delivery>,
    inflight: TaskTracker,
) {
    let admission = &f.inner.admission;
    loop {
        let notified = admission.wake.notified();
        let mut admitted = admission.admit().into_iter();
        while let Some(a) = admitted.next() {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.ok(),
                _ = cancel.cancelled() => None,
            };
            let Some(permit) = permit else {
                // Shutting down: give back what was admitted but not sent.
                for rest in std::iter::once(a).chain(admitted.by_ref()) {
                    admission.unreserve(&rest.run);
                    settle(&f, rest.delivery, Outcome::Release(Duration::ZERO), &ack_tx).await;
                }
                return;
            };
            let f = f.clone();
            let ack_tx = ack_tx.clone();
            inflight.spawn(async move {
                let outcome = submit_admitted(&f, &a.delivery, a.run.clone()).await;
                if matches!(outcome, Outcome::Release(_)) {
                    f.inner.admission.unreserve(&a.run);
                }
                settle(&f, a.delivery, outcome, &ack_tx).await;
                drop(permit);
            });
        }
        tokio::select! {
            _ = notified => {}
            _ = cancel.cancelled() => return,
        }
    }
}

/// On shutdown: every held delivery goes back to its queue at once, for
/// the next submit worker (here after a restart, or another replica).
pub(super) async fn release_held(f: &Flotilla) {
    for d in f.inner.admission.drain() {
        if let Err(e) = f.inner.queue.release(&d, Duration::ZERO).await {
            tracing::warn!(run_id = %d.message.run_id, error = %e, "releasing a held run failed; its lease will expire");
        }
    }
}
