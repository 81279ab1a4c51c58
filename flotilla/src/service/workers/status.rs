//! The status worker (singleton): applies engine pushes and polls active runs
//! in batches, moving them through the state machine.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, SelectAll, StreamExt};
use tokio_util::sync::CancellationToken;

use super::lease::Lease;
use crate::engine::{EngineEvent, EventAck, StatusUpdate, TaskState};
use crate::error::ErrorKind;
use crate::model::{self, FailedAttempt, FailureCategory, RetryAction, Run, RunStatus};
use crate::query::RunQuery;
use crate::service::Flotilla;

/// Observations applied at once. Their writes share batches
/// ([`crate::service::Flotilla::transition_batched`]): as many as a batch
/// holds, bounded so a page of finished runs does not become as many
/// concurrent engine clean-ups (`Engine::finished`).
const APPLY_CONCURRENCY: usize = 256;

pub(crate) async fn status_loop(f: Flotilla, cancel: CancellationToken) {
    let mut lease = Lease::new(&f, "status");
    let mut events: SelectAll<_> = SelectAll::new();
    for engine in f.inner.engines.values() {
        if let Some(s) = engine.events() {
            events.push(s);
        }
    }
    let mut tick = tokio::time::interval(f.inner.config.workers.status_poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if cancel.is_cancelled() {
            break;
        }
        if !lease.hold().await {
            // Not the leader: leave pushed events alone (a durable source
            // keeps them for the leader) and wait for the lease.
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(lease.wait()) => {}
            }
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => break,
            ev = events.next(), if !events.is_empty() => {
                let Some(ev) = ev else { continue };
                let mut batch = vec![ev];
                while batch.len() < 512 {
                    match futures::FutureExt::now_or_never(events.next()) {
                        Some(Some(ev)) => batch.push(ev),
                        _ => break,
                    }
                }
                apply_events(&f, &mut lease, batch).await;
            }
            _ = tick.tick() => poll_all(&f, &mut lease).await,
            // Idle longer than the renewal: renew (at the loop's top), so
            // the lease does not lapse between polls.
            _ = tokio::time::sleep(lease.renew_in()) => {}
        }
    }
    lease.release().await;
}

async fn apply_events(f: &Flotilla, lease: &mut Lease, batch: Vec<EngineEvent>) {
    let mut resync = false;
    let mut by_run: HashMap<String, Vec<(StatusUpdate, Option<EventAck>)>> = HashMap::new();
    for ev in batch {
        match ev {
            EngineEvent::Update(u) => by_run.entry(u.run_id.clone()).or_default().push((u, None)),
            EngineEvent::Durable { update, ack } => by_run
                .entry(update.run_id.clone())
                .or_default()
                .push((update, Some(ack))),
            EngineEvent::Resync => resync = true,
        }
    }
    if !lease.hold().await {
        return;
    }
    let fence: &Lease = lease;
    // Runs in parallel, each run's updates in order; a durable event is
    // acked once applied, and left to its source when applying failed.
    stream::iter(by_run.into_values())
        .for_each_concurrent(APPLY_CONCURRENCY, |updates| async move {
            for (u, ack) in updates {
                let applied = apply_update(f, fence, u, None).await;
                if let Some(ack) = ack
                    && applied
                {
                    ack.applied();
                }
            }
        })
        .await;
    if resync {
        poll_all(f, lease).await;
    }
}

/// Polls every active run of every engine, a batch at a time, through all
/// pages. The lease is renewed between pages; once lost, polling stops.
async fn poll_all(f: &Flotilla, lease: &mut Lease) {
    let batch = f.inner.config.workers.poll_batch.max(1);
    let mut active: HashSet<(String, u32)> = HashSet::new();
    let mut complete = true;
    for (name, engine) in &f.inner.engines {
        let mut query = RunQuery::all(batch)
            .with_statuses(&[RunStatus::Pending, RunStatus::Running])
            .without_total();
        query.engine = Some(name.clone());
        loop {
            if !lease.hold().await {
                return;
            }
            let page = match f.inner.store.list_runs(&query).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(engine = %name, error = %e, "listing active runs failed");
                    complete = false;
                    break;
                }
            };
            if page.items.is_empty() {
                break;
            }
            active.extend(page.items.iter().map(|r| (r.run_id.clone(), r.attempt)));
            match engine.poll(&page.items).await {
                Ok(updates) => {
                    let runs: HashMap<&str, &Run> =
                        page.items.iter().map(|r| (r.run_id.as_str(), r)).collect();
                    let fence: &Lease = lease;
                    stream::iter(updates)
                        .for_each_concurrent(APPLY_CONCURRENCY, |u| {
                            let known = runs.get(u.run_id.as_str()).map(|r| (*r).clone());
                            async move {
                                apply_update(f, fence, u, known).await;
                            }
                        })
                        .await;
                }
                Err(e) => {
                    tracing::warn!(engine = %name, error = %e, "poll failed");
                    complete = false;
                }
            }
            match page.next_cursor {
                Some(c) if page.items.len() == batch => query.cursor = Some(c),
                _ => break,
            }
        }
    }
    if complete {
        f.inner.missing.retain_active(&active);
    }
}

/// Applies one engine observation through the state machine. Stale
/// observations (another attempt, a finished run) are ignored; a
/// compare-and-set conflict re-reads and tries again. Nothing is written
/// once `lease` is no longer certainly held. Returns false when the
/// observation could not be applied (a store error, a lost lease): the next
/// poll, or the durable source's redelivery, brings it again.
pub(crate) async fn apply_update(
    f: &Flotilla,
    lease: &Lease,
    u: StatusUpdate,
    known: Option<Run>,
) -> bool {
    let mut known = known;
    let grace = f.inner.config.workers.missing_grace;
    for _ in 0..5 {
        let run = match known.take() {
            Some(r) => r,
            None => match f.inner.store.get_run(&u.run_id).await {
                Ok(r) => r,
                Err(e) if e.kind() == ErrorKind::NotFound => return true,
                Err(e) => {
                    tracing::warn!(run_id = %u.run_id, error = %e, "run read failed");
                    return false;
                }
            },
        };
        if run.attempt != u.attempt
            || run.status.is_terminal()
            || run.status == RunStatus::NeedsRetry
        {
            return true;
        }
        let lost = if u.state == TaskState::Missing {
            if !run.status.is_active() || !f.inner.missing.absent(&run.run_id, run.attempt, grace) {
                return true;
            }
            true
        } else {
            f.inner.missing.present(&run.run_id, run.attempt);
            false
        };
        let Some((next, mut reason)) = plan(f, &run, &u) else {
            return true;
        };
        if !lease.valid() {
            tracing::warn!(run_id = %u.run_id, "status lease lost; the update is left to the new leader");
            return false;
        }
        if lost {
            // The old attempt may still run where the engine cannot see it:
            // stop it before anything else happens to the run.
            let engine = f.inner.engines.get(&run.engine);
            let stopped = match engine {
                Some(e) => e.terminate(&run, "lost by its engine").await,
                None => Ok(()),
            };
            reason = match stopped {
                Ok(()) => format!("{reason}; the old attempt was terminated"),
                Err(e) => format!("{reason}; terminating the old attempt failed: {e}"),
            };
        }
        // Written with the other observations being applied (one store call
        // per batch); its own compare-and-set.
        let written = f
            .transition_batched(&f.inner.status_writes, &run, next, Some(reason))
            .await;
        match written {
            Ok(stored) => {
                if stored.status == RunStatus::NeedsRetry || stored.status.is_terminal() {
                    f.inner.missing.present(&stored.run_id, stored.attempt);
                    attempt_recorded(f, &stored).await;
                }
                if stored.status == RunStatus::NeedsRetry {
                    f.inner.retry_wake.notify_one();
                }
                if stored.status == u_target(&u) || stored.status.is_terminal() {
                    return true;
                }
                // QUEUED runs seen by the engine go through PENDING first.
                known = Some(stored);
            }
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => {
                tracing::warn!(run_id = %u.run_id, error = %e, "status update failed; the next poll retries");
                return false;
            }
        }
    }
    false
}

/// The attempt's outcome is stored: the engine may now forget it.
async fn attempt_recorded(f: &Flotilla, run: &Run) {
    if let Some(engine) = f.inner.engines.get(&run.engine)
        && let Err(e) = engine.finished(run).await
    {
        tracing::warn!(run_id = %run.run_id, error = %e, "engine clean-up after the outcome failed");
    }
}

fn u_target(u: &StatusUpdate) -> RunStatus {
    match u.state {
        TaskState::Pending => RunStatus::Pending,
        TaskState::Running => RunStatus::Running,
        TaskState::Stopped | TaskState::Missing => RunStatus::Stopped,
    }
}

/// The next run for observation `u`, or `None` when nothing changes. A
/// `Missing` observation reaching here has persisted past the grace.
fn plan(f: &Flotilla, run: &Run, u: &StatusUpdate) -> Option<(Run, String)> {
    let mut next = run.clone();
    let now = model::now();
    if let Some(i) = &u.instance {
        next.instance = Some(i.clone());
    }
    // The engine has the run, so it was submitted: QUEUED → PENDING first.
    if run.status == RunStatus::Queued && u.state != TaskState::Missing {
        next.status = RunStatus::Pending;
        return Some((next, "seen by the engine".into()));
    }
    // The engine says the attempt started and already stopped (a fast job,
    // or a gap in the observations): PENDING → RUNNING first, so the
    // timeline keeps the transition the engine did not show.
    if run.status == RunStatus::Pending
        && u.state == TaskState::Stopped
        && let Some(started) = u.started_at
    {
        next.status = RunStatus::Running;
        next.started_at = Some(started);
        return Some((next, "running (seen when it had already stopped)".into()));
    }
    match u.state {
        TaskState::Pending => None,
        TaskState::Running => {
            if run.status != RunStatus::Pending {
                return None;
            }
            next.status = RunStatus::Running;
            next.started_at = u.started_at.or(Some(now));
            Some((next, "running".into()))
        }
        TaskState::Stopped => {
            let failure = match (u.failure, u.exit_code) {
                (Some(c), _) => Some(c),
                (None, Some(0)) => None,
                (None, Some(_)) => Some(FailureCategory::AppExit),
                (None, None) => Some(FailureCategory::Unknown),
            };
            next.exit_code = u.exit_code;
            next.exit_reason = u.reason.clone();
            next.finished_at = u.finished_at.or(Some(now));
            next.started_at = run.started_at.or(u.started_at);
            next.failure = failure;
            let (mut next, mut reason) = finish(f, run, next, failure);
            if let Some(url) = &u.output_url {
                next.output_url = Some(url.clone());
                reason = format!("{reason}; output uploaded to {url}");
            }
            Some((next, reason))
        }
        TaskState::Missing => {
            next.finished_at = Some(now);
            if run.status == RunStatus::Running || run.started_at.is_some() {
                // It ran: it may have finished, even successfully. Running it
                // again could do its work twice, so its fate is `unknown`,
                // which is never retried automatically.
                next.exit_reason = Some(format!(
                    "engine '{}' lost track of attempt {} after it started; its outcome is unknown",
                    run.engine, run.attempt
                ));
                next.failure = Some(FailureCategory::Unknown);
                Some(finish(f, run, next, Some(FailureCategory::Unknown)))
            } else {
                next.exit_reason = Some(format!(
                    "engine '{}' has no record of attempt {}",
                    run.engine, run.attempt
                ));
                next.failure = Some(FailureCategory::NodeLost);
                Some(finish(f, run, next, Some(FailureCategory::NodeLost)))
            }
        }
    }
}

/// STOPPED, or NEEDS_RETRY when the policy grants another attempt.
fn finish(
    f: &Flotilla,
    run: &Run,
    mut next: Run,
    failure: Option<FailureCategory>,
) -> (Run, String) {
    let why = next.exit_reason.clone();
    let Some(c) = failure else {
        next.status = RunStatus::Stopped;
        return (next, "exited 0".into());
    };
    // The run's own rules see the attempt's exit code, category and the
    // engine's reason text; without a matching rule the default decides.
    let attempt = FailedAttempt {
        failure: c,
        exit_code: next.exit_code,
        reason: why.as_deref(),
    };
    let decision = f.inner.config.retry.decide(run, &attempt);
    let by = decision
        .rule_text()
        .map(|r| format!(" by {r}"))
        .unwrap_or_default();
    let detail = why.as_deref().map(|w| format!(": {w}")).unwrap_or_default();
    if decision.retry {
        next.status = RunStatus::NeedsRetry;
        let reason = format!(
            "attempt {} failed ({c}{detail}); will retry{by}",
            run.attempt
        );
        return (next, reason);
    }
    next.status = RunStatus::Stopped;
    let code = next
        .exit_code
        .map(|x| format!("exited {x}"))
        .unwrap_or_else(|| "stopped".into());
    let reason = match (decision.rule, decision.rule_text()) {
        (Some((_, RetryAction::Exit)), _) => format!("{code} ({c}{detail}); not retried{by}"),
        (Some((_, RetryAction::Retry)), Some(rule)) => {
            let why_not = if c.rules_may_retry() {
                format!("no attempts left ({} of {})", run.attempt, run.max_attempts)
            } else {
                format!("{c} is never retried")
            };
            format!("{code} ({c}{detail}); {rule} matched, but {why_not}")
        }
        _ => format!("{code} ({c}{detail})"),
    };
    (next, reason)
}
