//! The reconcile worker (singleton): re-enqueues runs left QUEUED past the
//! stale threshold, and keeps every replica's queue list current.

use std::collections::{HashMap, HashSet};

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::pause;
use crate::model::{self, Run, RunStatus};
use crate::paging::run_pages;
use crate::query::{RunQuery, TimeRange};
use crate::queue::Message;
use crate::service::Flotilla;
use crate::service::holds::holds_queue;

pub(crate) async fn reconcile_loop(f: Flotilla, cancel: CancellationToken) {
    let mut lease = Lease::new(&f, "reconcile");
    let interval = f.inner.config.workers.reconcile_interval;
    let mut last: Option<Instant> = None;
    loop {
        if lease.hold().await {
            if last.is_none_or(|t| t.elapsed() >= interval) {
                reconcile_once(&f, &mut lease).await;
                last = Some(Instant::now());
            }
        } else if last.is_none_or(|t| t.elapsed() >= interval) {
            // Every replica still learns new clusters' queues.
            refresh_queues(&f).await;
            last = Some(Instant::now());
        }
        // Wake often enough to keep the lease renewed.
        if !pause(&cancel, interval.min(lease.wait())).await {
            break;
        }
    }
    lease.release().await;
}

/// Learns the stored clusters' queues; returns the clusters in maintenance
/// (their runs wait in their queues on purpose).
async fn refresh_queues(f: &Flotilla) -> HashSet<String> {
    match f.inner.store.list_clusters().await {
        Ok(list) => {
            for c in &list {
                f.add_queue(&c.name);
            }
            list.into_iter()
                .filter(|c| holds_queue(c.status))
                .map(|c| c.name)
                .collect()
        }
        Err(e) => {
            tracing::warn!(error = %e, "listing clusters failed");
            HashSet::new()
        }
    }
}

/// Re-enqueues QUEUED runs older than the stale threshold: a crash between
/// storing a run and enqueuing it, or a lost message, loses nothing.
pub(crate) async fn reconcile_once(f: &Flotilla, lease: &mut Lease) {
    let held = refresh_queues(f).await;
    let stale =
        chrono::Duration::from_std(f.inner.config.workers.queued_stale_after).unwrap_or_default();
    let mut query = RunQuery::all(RECONCILE_PAGE).with_statuses(&[RunStatus::Queued]);
    query.queued = TimeRange {
        since: None,
        until: Some(model::now() - stale),
    };
    let mut pages = run_pages(f.inner.store.as_ref(), query);
    while let Some(page) = pages.next().await {
        let page = match page {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "listing stale queued runs failed");
                return;
            }
        };
        if !lease.hold().await {
            return;
        }
        enqueue_again(f, page, &held).await;
    }
}

/// Page size of the walk through stale QUEUED runs.
const RECONCILE_PAGE: usize = 500;

async fn enqueue_again(f: &Flotilla, runs: Vec<Run>, held: &HashSet<String>) {
    let mut by_queue: HashMap<String, Vec<Message>> = HashMap::new();
    // A run held back by admission here has its message (it waits for
    // capacity, it is not lost); so has one of a cluster in maintenance (it
    // waits in its queue, unclaimed: enqueuing it again every interval
    // would grow the queue without end).
    for run in runs
        .into_iter()
        .filter(|r| !held.contains(&r.cluster) && !f.inner.admission.holds(&r.cluster, &r.run_id))
    {
        by_queue
            .entry(run.cluster.clone())
            .or_default()
            .push(Message::new(run.run_id, run.attempt));
    }
    for (queue, messages) in by_queue {
        f.add_queue(&queue);
        tracing::info!(queue = %queue, count = messages.len(), "re-enqueuing stale queued runs");
        if let Err(e) = f.inner.queue.enqueue(&queue, &messages).await {
            tracing::warn!(queue = %queue, error = %e, "re-enqueue failed");
        }
    }
}
