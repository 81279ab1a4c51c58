//! The workers: submit, status, retry and reconcile.
//!
//! - **submit** (every replica) receives deliveries in batches, submits them
//!   with bounded concurrency, moves QUEUED → PENDING and acks in batches.
//!   It is woken by the queue itself (`receive` returns as soon as a message
//!   arrives), never by a fixed sleep.
//! - **status**, **retry**, **reconcile** are singletons: each runs only
//!   while this replica holds its lease in the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, SelectAll, StreamExt};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Flotilla;
use crate::engine::{EngineEvent, StatusUpdate, TaskState};
use crate::error::ErrorKind;
use crate::model::{self, ClusterStatus, FailureCategory, Run, RunStatus};
use crate::query::{RunQuery, TimeRange};
use crate::queue::{Delivery, Message};

pub(crate) fn spawn_all(f: &Flotilla, cancel: &CancellationToken, tracker: &TaskTracker) {
    let enabled = f.inner.config.workers.enabled.clone();
    if enabled.submit {
        tracker.spawn(submit_loop(f.clone(), cancel.clone()));
    }
    if enabled.status {
        tracker.spawn(status_loop(f.clone(), cancel.clone()));
    }
    if enabled.retry {
        tracker.spawn(retry_loop(f.clone(), cancel.clone()));
    }
    if enabled.reconcile {
        tracker.spawn(reconcile_loop(f.clone(), cancel.clone()));
    }
}

/// Sleeps `d` unless cancelled first; returns false when cancelled.
async fn pause(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(d) => true,
    }
}

/// Backoff for worker-level failures (store or queue unreachable).
fn failure_backoff(failures: u32) -> Duration {
    let ms = 100u64.saturating_mul(1 << failures.min(7));
    Duration::from_millis(ms.min(10_000))
}

// ---------------------------------------------------------------- leases

/// A singleton lease, renewed at a third of its TTL.
struct Lease {
    f: Flotilla,
    name: &'static str,
    renew_at: Option<Instant>,
}

impl Lease {
    fn new(f: &Flotilla, name: &'static str) -> Self {
        Lease {
            f: f.clone(),
            name,
            renew_at: None,
        }
    }

    async fn hold(&mut self) -> bool {
        if let Some(at) = self.renew_at
            && Instant::now() < at
        {
            return true;
        }
        let cfg = &self.f.inner.config;
        let ttl = cfg.workers.lease_ttl;
        match self
            .f
            .inner
            .store
            .try_lease(self.name, &cfg.replica_id, ttl)
            .await
        {
            Ok(true) => {
                if self.renew_at.is_none() {
                    tracing::info!(lease = self.name, replica = %cfg.replica_id, "lease taken");
                }
                self.renew_at = Some(Instant::now() + ttl / 3);
                true
            }
            Ok(false) => {
                self.renew_at = None;
                false
            }
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "lease check failed");
                self.renew_at = None;
                false
            }
        }
    }

    async fn release(&mut self) {
        if self.renew_at.take().is_some() {
            let cfg = &self.f.inner.config;
            if let Err(e) = self
                .f
                .inner
                .store
                .release_lease(self.name, &cfg.replica_id)
                .await
            {
                tracing::warn!(lease = self.name, error = %e, "lease release failed");
            }
        }
    }

    fn wait(&self) -> Duration {
        self.f.inner.config.workers.lease_ttl / 3
    }
}

// ---------------------------------------------------------------- submit

enum Outcome {
    Ack,
    Release(Duration),
}

async fn submit_loop(f: Flotilla, cancel: CancellationToken) {
    let cfg = f.inner.config.workers.clone();
    let permits = Arc::new(Semaphore::new(cfg.submit_concurrency.max(1)));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Delivery>();
    let acker = tokio::spawn(ack_loop(f.clone(), ack_rx));
    let inflight = TaskTracker::new();
    let mut clusters = ClusterCache::default();
    let mut failures = 0u32;
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = cancel.cancelled() => break,
        };
        let Ok(first) = first else { break };
        let want = (permits.available_permits() + 1).min(cfg.submit_batch.max(1));
        let queues: Vec<String> = f
            .inner
            .queues
            .read()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        let received = tokio::select! {
            r = f.inner.queue.receive(&queues, want, cfg.queue_lease, cfg.receive_wait) => r,
            _ = cancel.cancelled() => break,
        };
        let deliveries = match received {
            Ok(d) => {
                failures = 0;
                d
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %e, "receive failed");
                drop(first);
                if !pause(&cancel, failure_backoff(failures)).await {
                    break;
                }
                continue;
            }
        };
        if deliveries.is_empty() {
            continue;
        }
        let statuses = clusters.get(&f).await;
        let mut first = Some(first);
        for d in deliveries {
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let f = f.clone();
            let ack_tx = ack_tx.clone();
            let statuses = statuses.clone();
            inflight.spawn(async move {
                let outcome = submit_one(&f, &d, &statuses).await;
                match outcome {
                    Outcome::Ack => {
                        let _ = ack_tx.send(d);
                    }
                    Outcome::Release(delay) => {
                        if let Err(e) = f.inner.queue.release(&d, delay).await {
                            tracing::warn!(run_id = %d.message.run_id, error = %e, "release failed; the lease will expire");
                        }
                    }
                }
                drop(permit);
            });
        }
    }
    // Drain: let in-flight submits finish and their acks go out.
    inflight.close();
    inflight.wait().await;
    drop(ack_tx);
    let _ = acker.await;
}

/// Acks in batches: whatever has piled up while the last ack ran.
async fn ack_loop(f: Flotilla, mut rx: mpsc::UnboundedReceiver<Delivery>) {
    while let Some(d) = rx.recv().await {
        let mut batch = vec![d];
        while batch.len() < 100 {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        if let Err(e) = f.inner.queue.ack(&batch).await {
            // Redelivered after the lease; submit is idempotent and stale
            // deliveries are acked then.
            tracing::warn!(count = batch.len(), error = %e, "ack failed");
        }
    }
}

/// Cluster statuses, re-read from the store at most every few seconds.
#[derive(Default)]
struct ClusterCache {
    at: Option<Instant>,
    map: Arc<HashMap<String, ClusterStatus>>,
}

impl ClusterCache {
    async fn get(&mut self, f: &Flotilla) -> Arc<HashMap<String, ClusterStatus>> {
        let fresh = self
            .at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(5));
        if !fresh {
            match f.inner.store.list_clusters().await {
                Ok(list) => {
                    self.map = Arc::new(list.into_iter().map(|c| (c.name, c.status)).collect());
                    self.at = Some(Instant::now());
                }
                Err(e) => tracing::warn!(error = %e, "cluster list failed; using the last one"),
            }
        }
        self.map.clone()
    }
}

async fn submit_one(
    f: &Flotilla,
    d: &Delivery,
    clusters: &HashMap<String, ClusterStatus>,
) -> Outcome {
    let store = &f.inner.store;
    let retry_later = Outcome::Release(failure_backoff(d.delivery_count));
    let run = match store.get_run(&d.message.run_id).await {
        Ok(r) => r,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            tracing::warn!(run_id = %d.message.run_id, "delivery for an unknown run dropped");
            return Outcome::Ack;
        }
        Err(e) => {
            tracing::warn!(run_id = %d.message.run_id, error = %e, "run read failed");
            return retry_later;
        }
    };
    if run.status != RunStatus::Queued || run.attempt != d.message.attempt {
        // A duplicate or stale delivery: this attempt was handled already.
        return Outcome::Ack;
    }
    match clusters.get(&run.cluster) {
        Some(ClusterStatus::Maintenance) => {
            return Outcome::Release(f.inner.config.workers.maintenance_delay);
        }
        Some(ClusterStatus::Offline) => {
            let reason = format!("cluster '{}' is offline", run.cluster);
            return stop_before_submit(f, &run, &reason).await;
        }
        _ => {}
    }
    let Some(engine) = f.inner.engines.get(&run.engine) else {
        let reason = format!("engine '{}' is not configured", run.engine);
        return stop_before_submit(f, &run, &reason).await;
    };
    let def = match store.get_definition(&run.definition_id).await {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => run.snapshot_definition(),
        Err(e) => {
            tracing::warn!(run_id = %run.run_id, error = %e, "definition read failed");
            return retry_later;
        }
    };
    match engine.submit(&run, &def).await {
        Ok(submitted) => {
            if let Some(q) = run.queued_at {
                let waited = (model::now() - q).to_std().unwrap_or_default();
                metrics::histogram!("flotilla_submit_latency_seconds").record(waited.as_secs_f64());
            }
            let mut next = run.clone();
            next.status = RunStatus::Pending;
            next.engine_ref = Some(submitted.engine_ref.clone());
            next.instance = submitted.instance.clone().or(run.instance.clone());
            let reason = format!("submitted to {} as {}", engine.name(), submitted.engine_ref);
            match f.transition(&run, next, Some(reason)).await {
                Ok(_) => Outcome::Ack,
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    after_submit_conflict(f, &run, &submitted.engine_ref).await;
                    Outcome::Ack
                }
                Err(e) => {
                    // Redelivered later; submit is idempotent per attempt.
                    tracing::warn!(run_id = %run.run_id, error = %e, "recording the submit failed");
                    retry_later
                }
            }
        }
        Err(e) if e.is_retryable() => {
            tracing::info!(run_id = %run.run_id, error = %e, "engine busy; the run stays queued");
            Outcome::Release(f.inner.config.retry.backoff(d.delivery_count))
        }
        Err(e) => stop_before_submit(f, &run, e.message()).await,
    }
}

/// The run moved while it was being submitted: it was terminated (stop what
/// was just started), or the engine's own report got there first (record
/// the engine handle).
async fn after_submit_conflict(f: &Flotilla, run: &Run, engine_ref: &str) {
    let Ok(now) = f.inner.store.get_run(&run.run_id).await else {
        return;
    };
    if now.attempt != run.attempt {
        return;
    }
    if now.status == RunStatus::Stopped && now.failure == Some(FailureCategory::Terminated) {
        let mut started = run.clone();
        started.engine_ref = Some(engine_ref.to_string());
        if let Some(engine) = f.inner.engines.get(&run.engine)
            && let Err(e) = engine
                .terminate(&started, now.exit_reason.as_deref().unwrap_or("terminated"))
                .await
        {
            tracing::warn!(run_id = %run.run_id, error = %e, "terminating a run started during its termination failed");
        }
    } else if now.engine_ref.is_none() {
        let mut patched = now.clone();
        patched.engine_ref = Some(engine_ref.to_string());
        let _ = f
            .inner
            .store
            .update_run(&patched, crate::store::Expected::of(&now), None)
            .await;
    }
}

async fn stop_before_submit(f: &Flotilla, run: &Run, reason: &str) -> Outcome {
    let mut next = run.clone();
    next.status = RunStatus::Stopped;
    next.failure = Some(FailureCategory::SubmitRejected);
    next.exit_reason = Some(reason.to_string());
    next.finished_at = Some(model::now());
    match f.transition(run, next, Some(reason.to_string())).await {
        Ok(_) => Outcome::Ack,
        Err(e) if e.kind() == ErrorKind::Conflict => Outcome::Ack,
        Err(e) => {
            tracing::warn!(run_id = %run.run_id, error = %e, "stopping a rejected run failed");
            Outcome::Release(Duration::from_secs(1))
        }
    }
}

// ---------------------------------------------------------------- status

async fn status_loop(f: Flotilla, cancel: CancellationToken) {
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
            // Not the leader: drop pushed events (the leader sees them) and
            // wait for the lease.
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(lease.wait()) => {}
                _ = events.next(), if !events.is_empty() => {}
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
                apply_events(&f, batch).await;
            }
            _ = tick.tick() => poll_all(&f).await,
        }
    }
    lease.release().await;
}

async fn apply_events(f: &Flotilla, batch: Vec<EngineEvent>) {
    let mut resync = false;
    let mut by_run: HashMap<String, Vec<StatusUpdate>> = HashMap::new();
    for ev in batch {
        match ev {
            EngineEvent::Update(u) => by_run.entry(u.run_id.clone()).or_default().push(u),
            EngineEvent::Resync => resync = true,
        }
    }
    // Runs in parallel, each run's updates in order.
    stream::iter(by_run.into_values())
        .for_each_concurrent(32, |updates| async move {
            for u in updates {
                apply_update(f, u, None).await;
            }
        })
        .await;
    if resync {
        poll_all(f).await;
    }
}

/// Polls every active run of every engine, a batch at a time.
async fn poll_all(f: &Flotilla) {
    let batch = f.inner.config.workers.poll_batch.max(1);
    for (name, engine) in &f.inner.engines {
        let mut query =
            RunQuery::all(batch).with_statuses(&[RunStatus::Pending, RunStatus::Running]);
        query.engine = Some(name.clone());
        loop {
            let page = match f.inner.store.list_runs(&query).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(engine = %name, error = %e, "listing active runs failed");
                    break;
                }
            };
            if page.items.is_empty() {
                break;
            }
            match engine.poll(&page.items).await {
                Ok(updates) => {
                    let runs: HashMap<&str, &Run> =
                        page.items.iter().map(|r| (r.run_id.as_str(), r)).collect();
                    stream::iter(updates)
                        .for_each_concurrent(32, |u| {
                            let known = runs.get(u.run_id.as_str()).map(|r| (*r).clone());
                            async move { apply_update(f, u, known).await }
                        })
                        .await;
                }
                Err(e) => tracing::warn!(engine = %name, error = %e, "poll failed"),
            }
            match page.next_cursor {
                Some(c) if page.items.len() == batch => query.cursor = Some(c),
                _ => break,
            }
        }
    }
}

/// Applies one engine observation through the state machine. Stale
/// observations (another attempt, a finished run) are ignored; a
/// compare-and-set conflict re-reads and tries again.
pub(crate) async fn apply_update(f: &Flotilla, u: StatusUpdate, known: Option<Run>) {
    let mut known = known;
    for _ in 0..5 {
        let run = match known.take() {
            Some(r) => r,
            None => match f.inner.store.get_run(&u.run_id).await {
                Ok(r) => r,
                Err(e) => {
                    if e.kind() != ErrorKind::NotFound {
                        tracing::warn!(run_id = %u.run_id, error = %e, "run read failed");
                    }
                    return;
                }
            },
        };
        if run.attempt != u.attempt
            || run.status.is_terminal()
            || run.status == RunStatus::NeedsRetry
        {
            return;
        }
        let Some((next, reason)) = plan(f, &run, &u) else {
            return;
        };
        match f.transition(&run, next, Some(reason)).await {
            Ok(stored) => {
                if stored.status == RunStatus::NeedsRetry {
                    f.inner.retry_wake.notify_one();
                }
                if stored.status == u_target(&u) || stored.status.is_terminal() {
                    return;
                }
                // QUEUED runs seen by the engine go through PENDING first.
                known = Some(stored);
            }
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => {
                tracing::warn!(run_id = %u.run_id, error = %e, "status update failed; the next poll retries");
                return;
            }
        }
    }
}

fn u_target(u: &StatusUpdate) -> RunStatus {
    match u.state {
        TaskState::Pending => RunStatus::Pending,
        TaskState::Running => RunStatus::Running,
        TaskState::Stopped | TaskState::Missing => RunStatus::Stopped,
    }
}

/// The next run for observation `u`, or `None` when nothing changes.
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
            Some(finish(f, run, next, failure))
        }
        TaskState::Missing => {
            if !run.status.is_active() {
                return None;
            }
            let quiet = (now - run.updated_at).to_std().unwrap_or_default();
            if quiet < f.inner.config.workers.missing_grace {
                return None;
            }
            let reason = format!("engine '{}' has no record of this run", run.engine);
            next.exit_reason = Some(reason);
            next.finished_at = Some(now);
            next.failure = Some(FailureCategory::NodeLost);
            Some(finish(f, run, next, Some(FailureCategory::NodeLost)))
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
    match failure {
        None => {
            next.status = RunStatus::Stopped;
            (next, "exited 0".into())
        }
        Some(c) if f.inner.config.retry.should_retry(run, c) => {
            next.status = RunStatus::NeedsRetry;
            let reason = format!(
                "attempt {} failed ({c}{}); will retry",
                run.attempt,
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            (next, reason)
        }
        Some(c) => {
            next.status = RunStatus::Stopped;
            let code = next
                .exit_code
                .map(|x| format!("exited {x}"))
                .unwrap_or_else(|| "stopped".into());
            let reason = format!(
                "{code} ({c}{})",
                why.map(|w| format!(": {w}")).unwrap_or_default()
            );
            (next, reason)
        }
    }
}

// ---------------------------------------------------------------- retry

/// Deterministic jitter seed for a run attempt, so every look at a run
/// computes the same due time.
fn seed(run: &Run) -> u64 {
    run.run_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) ^ u64::from(run.attempt)
}

async fn retry_loop(f: Flotilla, cancel: CancellationToken) {
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

// ---------------------------------------------------------------- reconcile

async fn reconcile_loop(f: Flotilla, cancel: CancellationToken) {
    let mut lease = Lease::new(&f, "reconcile");
    let interval = f.inner.config.workers.reconcile_interval;
    let mut last: Option<Instant> = None;
    loop {
        if lease.hold().await {
            if last.is_none_or(|t| t.elapsed() >= interval) {
                reconcile_once(&f).await;
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

async fn refresh_queues(f: &Flotilla) {
    match f.inner.store.list_clusters().await {
        Ok(list) => {
            for c in list {
                f.add_queue(&c.name);
            }
        }
        Err(e) => tracing::warn!(error = %e, "listing clusters failed"),
    }
}

/// Re-enqueues QUEUED runs older than the stale threshold: a crash between
/// storing a run and enqueuing it, or a lost message, loses nothing.
pub(crate) async fn reconcile_once(f: &Flotilla) {
    refresh_queues(f).await;
    let stale =
        chrono::Duration::from_std(f.inner.config.workers.queued_stale_after).unwrap_or_default();
    let mut query = RunQuery::all(1000).with_statuses(&[RunStatus::Queued]);
    query.queued = TimeRange {
        since: None,
        until: Some(model::now() - stale),
    };
    let page = match f.inner.store.list_runs(&query).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "listing stale queued runs failed");
            return;
        }
    };
    let mut by_queue: HashMap<String, Vec<Message>> = HashMap::new();
    for run in page.items {
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
