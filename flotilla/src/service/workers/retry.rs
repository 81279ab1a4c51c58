//! The retry worker (singleton): NEEDS_RETRY → QUEUED after the backoff, or
//! STOPPED when attempts are spent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::pause;
use crate::error::ErrorKind;
use crate::hash::stable_hash;
use crate::model::{self, Run, RunStatus};
use crate::paging::run_pages;
use crate::query::RunQuery;
use crate::service::Flotilla;

/// Deterministic jitter seed for a run attempt, so every look at a run
/// computes the same due time.
fn seed(run: &Run) -> u64 {
    stable_hash(&[run.run_id.as_bytes(), &run.attempt.to_le_bytes()])
}

pub(crate) async fn retry_loop(f: Flotilla, cancel: CancellationToken) {
    let mut lease = Lease::new(&f, "retry");
    let idle = Duration::from_secs(30);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if !lease.hold().await {
            if !pause(&cancel, lease.wait()).await {
                break;
            }
            continue;
        }
        let mut wait = idle.min(lease.wait());
        let query = RunQuery::all(RETRY_PAGE).with_statuses(&[RunStatus::NeedsRetry]);
        let mut pages = run_pages(f.inner.store.as_ref(), query);
        'pages: while let Some(page) = pages.next().await {
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "listing runs to retry failed");
                    break;
                }
            };
            if !lease.hold().await {
                break;
            }
            let now = model::now();
            for run in page {
                if !lease.valid() {
                    break 'pages;
                }
                if let Some(left) = retry_one(&f, &run, now).await {
                    wait = wait.min(left);
                }
            }
        }
        drop(pages);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = f.inner.retry_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    lease.release().await;
}

/// Page size of the walk through NEEDS_RETRY runs.
const RETRY_PAGE: usize = 500;

/// Requeues `run` when its backoff is over (or stops it when its attempts
/// are spent); otherwise returns how long until it is due.
async fn retry_one(f: &Flotilla, run: &Run, now: DateTime<Utc>) -> Option<Duration> {
    if run.attempt >= run.max_attempts {
        let mut next = run.clone();
        next.status = RunStatus::Stopped;
        let reason = format!("no attempts left after {}", run.attempt);
        if let Err(e) = f.transition(run, next, Some(reason)).await
            && e.kind() != ErrorKind::Conflict
        {
            tracing::warn!(run_id = %run.run_id, error = %e, "stopping a spent run failed");
        }
        return None;
    }
    let delay = f.inner.config.retry.backoff_seeded(run.attempt, seed(run));
    let due = run.updated_at + chrono::Duration::from_std(delay).unwrap_or_default();
    if due > now {
        return Some((due - now).to_std().unwrap_or_default());
    }
    if let Err(e) = f.requeue(run).await
        && e.kind() != ErrorKind::Conflict
    {
        tracing::warn!(run_id = %run.run_id, error = %e, "requeue failed");
    }
    None
}
