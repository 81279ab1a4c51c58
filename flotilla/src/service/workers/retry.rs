//! The retry worker (singleton): NEEDS_RETRY → QUEUED after the backoff, or
//! STOPPED when attempts are spent.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use super::pause;
use crate::error::ErrorKind;
use crate::model::{self, Run, RunStatus};
use crate::query::RunQuery;
use crate::service::Flotilla;

/// Deterministic jitter seed for a run attempt, so every look at a run
/// computes the same due time.
fn seed(run: &Run) -> u64 {
    run.run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) ^ u64::from(run.attempt)
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
        let query = RunQuery::all(1000).with_statuses(&[RunStatus::NeedsRetry]);
        match f.inner.store.list_runs(&query).await {
            Ok(page) => {
                let now = model::now();
                for run in page.items {
                    if run.attempt >= run.max_attempts {
                        let mut next = run.clone();
                        next.status = RunStatus::Stopped;
                        let _ = f
                            .transition(
                                &run,
                                next,
                                Some(format!("no attempts left after {}", run.attempt)),
                            )
                            .await;
                        continue;
                    }
                    let delay = f.inner.config.retry.backoff_seeded(run.attempt, seed(&run));
                    let due =
                        run.updated_at + chrono::Duration::from_std(delay).unwrap_or_default();
                    if due <= now {
                        if let Err(e) = f.requeue(&run).await
                            && e.kind() != ErrorKind::Conflict
                        {
                            tracing::warn!(run_id = %run.run_id, error = %e, "requeue failed");
                        }
                    } else {
                        let left = (due - now).to_std().unwrap_or_default();
                        wait = wait.min(left);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing runs to retry failed"),
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = f.inner.retry_wake.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
    lease.release().await;
}
