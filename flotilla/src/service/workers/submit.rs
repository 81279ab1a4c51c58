//! The submit worker (every replica): receives deliveries in batches, submits
//! them with bounded concurrency, moves QUEUED → PENDING and acks in batches.
//! It is woken by the queue itself, never by a fixed sleep.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{failure_backoff, pause};
use crate::error::ErrorKind;
use crate::model::{self, Cluster, ClusterStatus, FailureCategory, Run, RunStatus};
use crate::queue::Delivery;
use crate::service::Flotilla;

pub(super) enum Outcome {
    Ack,
    Release(Duration),
    /// Held by admission until it fits on its cluster ([`super::admit`]).
    Held,
}

pub(crate) async fn submit_loop(f: Flotilla, cancel: CancellationToken) {
    let cfg = f.inner.config.workers.clone();
    let permits = Arc::new(Semaphore::new(cfg.submit_concurrency.max(1)));
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Delivery>();
    let acker = tokio::spawn(ack_loop(f.clone(), ack_rx));
    let inflight = TaskTracker::new();
    let mut clusters = ClusterCache::default();
    let mut failures = 0u32;
    super::admit::load_usage(&f, &cancel).await;
    // Learn the clusters in maintenance before the first receive.
    clusters.refresh(&f).await;
    let dispatcher = tokio::spawn(super::admit::dispatch_loop(
        f.clone(),
        cancel.clone(),
        permits.clone(),
        ack_tx.clone(),
        inflight.clone(),
    ));
    loop {
        let first = tokio::select! {
            p = permits.clone().acquire_owned() => p,
            _ = cancel.cancelled() => break,
        };
        let Ok(first) = first else { break };
        let want = (permits.available_permits() + 1).min(cfg.submit_batch.max(1));
        // Registered before the held clusters are read: a change after the
        // read still ends the receive below.
        let changed = f.inner.holds.changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let recheck = clusters.recheck_at(&f, cfg.maintenance_delay);
        if recheck.is_some_and(|at| at <= Instant::now()) {
            clusters.refresh(&f).await;
        }
        let recheck = clusters.recheck_at(&f, cfg.maintenance_delay);
        let queues: Vec<String> = f
            .inner
            .queues
            .read()
            .map(|q| q.iter().cloned().collect())
            .unwrap_or_default();
        let queues = super::admit::receivable(&f, queues);
        let receive = async {
            if queues.is_empty() {
                // Every cluster held or full: wait as long as a receive
                // would, without asking the queue (some answer at once).
                tokio::time::sleep(cfg.receive_wait).await;
                return Ok(Vec::new());
            }
            f.inner
                .queue
                .receive(&queues, want, cfg.queue_lease, cfg.receive_wait)
                .await
        };
        let received = tokio::select! {
            r = receive => r,
            // A cluster was held or let go (or a queue added): receive
            // again from the new set of queues.
            _ = &mut changed => continue,
            _ = sleep_until_some(recheck) => continue,
            _ = cancel.cancelled() => break,
        };
        let mut deliveries = match received {
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
        let mut read = read_runs(&f, &mut deliveries).await.into_iter();
        let mut first = Some(first);
        for d in deliveries {
            let prefetched = read.next().unwrap_or(Prefetched::NotRead);
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
                let outcome = submit_one(&f, &d, prefetched, &statuses).await;
                settle(&f, d, outcome, &ack_tx).await;
                drop(permit);
            });
        }
    }
    let _ = dispatcher.await;
    super::admit::release_held(&f).await;
    // Drain: let in-flight submits finish and their acks go out.
    inflight.close();
    inflight.wait().await;
    drop(ack_tx);
    let _ = acker.await;
}

/// Acks or releases a delivery as `outcome` says; a held one stays leased.
pub(super) async fn settle(
    f: &Flotilla,
    d: Delivery,
    outcome: Outcome,
    ack_tx: &mpsc::UnboundedSender<Delivery>,
) {
    match outcome {
        Outcome::Ack => {
            let _ = ack_tx.send(d);
        }
        Outcome::Release(delay) => {
            if let Err(e) = f.inner.queue.release(&d, delay).await {
                tracing::warn!(run_id = %d.message.run_id, error = %e, "release failed; the lease will expire");
            }
        }
        Outcome::Held => {}
    }
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

/// Stored clusters, re-read from the store at most every few seconds, and
/// at once after this process changed one. Every read also refreshes the
/// held clusters ([`crate::service::holds`]).
#[derive(Default)]
struct ClusterCache {
    at: Option<Instant>,
    /// The held clusters' version the map was read at.
    version: u64,
    map: Arc<HashMap<String, Cluster>>,
}

impl ClusterCache {
    async fn get(&mut self, f: &Flotilla) -> Arc<HashMap<String, Cluster>> {
        let fresh = self
            .at
            .is_some_and(|at| at.elapsed() < Duration::from_secs(5))
            && self.version == f.inner.holds.version();
        if !fresh {
            self.refresh(f).await;
        }
        self.map.clone()
    }

    async fn refresh(&mut self, f: &Flotilla) {
        let version = f.inner.holds.version();
        match f.inner.store.list_clusters().await {
            Ok(list) => {
                f.inner.holds.replace(&list, version);
                self.map = Arc::new(list.into_iter().map(|c| (c.name.clone(), c)).collect());
                self.version = version;
            }
            Err(e) => tracing::warn!(error = %e, "cluster list failed; using the last one"),
        }
        // A failed read is tried again when next due, not at once.
        self.at = Some(Instant::now());
    }

    /// While a cluster is held, when the stored clusters are due to be read
    /// again (a change through another replica has no event here).
    fn recheck_at(&self, f: &Flotilla, every: Duration) -> Option<Instant> {
        if !f.inner.holds.any() {
            return None;
        }
        Some(self.at.map_or_else(Instant::now, |at| at + every))
    }
}

/// Sleeps until `at`; never returns for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A delivery's run as read with its batch.
enum Prefetched {
    Found(Box<Run>),
    Unknown,
    /// The batch read failed: the run is read on its own.
    NotRead,
}

/// The runs of a batch of deliveries: as read with the claim where the
/// queue did ([`crate::Claimed`]; the run is moved out of the delivery, which
/// may wait for capacity a long time), the others in one store read.
async fn read_runs(f: &Flotilla, deliveries: &mut [Delivery]) -> Vec<Prefetched> {
    let found = |r: Option<Run>| r.map_or(Prefetched::Unknown, |r| Prefetched::Found(Box::new(r)));
    let mut out: Vec<Option<Prefetched>> = deliveries
        .iter_mut()
        .map(|d| {
            let c = d.claimed.as_mut()?;
            let run = match std::sync::Arc::get_mut(c) {
                Some(c) => c.run.take(),
                None => c.run.clone(),
            };
            Some(found(run))
        })
        .collect();
    let ids: Vec<String> = deliveries
        .iter()
        .zip(&out)
        .filter(|(_, read)| read.is_none())
        .map(|(d, _)| d.message.run_id.clone())
        .collect();
    if !ids.is_empty() {
        match f.inner.store.get_runs(&ids).await {
            Ok(runs) if runs.len() == ids.len() => {
                let mut runs = runs.into_iter();
                for slot in out.iter_mut().filter(|s| s.is_none()) {
                    *slot = runs.next().map(found);
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(count = ids.len(), error = %e, "batched run read failed; reading them one by one");
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or(Prefetched::NotRead))
        .collect()
}

async fn submit_one(
    f: &Flotilla,
    d: &Delivery,
    prefetched: Prefetched,
    clusters: &HashMap<String, Cluster>,
) -> Outcome {
    let store = &f.inner.store;
    let retry_later = Outcome::Release(failure_backoff(d.delivery_count));
    let read = match prefetched {
        Prefetched::Found(r) => Ok(*r),
        Prefetched::Unknown => Err(crate::Error::not_found(format!(
            "run {} not found",
            d.message.run_id
        ))),
        Prefetched::NotRead => store.get_run(&d.message.run_id).await,
    };
    let run = match read {
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
    match clusters.get(&run.cluster).map(|c| c.status) {
        Some(ClusterStatus::Maintenance) => {
            // Put in maintenance through another replica: leave the queue
            // alone from now on; this message waits in it, visible.
            f.inner.holds.hold(&run.cluster);
            return Outcome::Release(Duration::ZERO);
        }
        Some(ClusterStatus::Offline) => {
            let reason = format!("cluster '{}' is offline", run.cluster);
            return stop_before_submit(f, &run, &reason).await;
        }
        _ => {}
    }
    let cluster = clusters.get(&run.cluster);
    super::admit::hold(f, d, run, cluster).await
}

/// Submits a run admission let through: engine, definition, submit,
/// QUEUED → PENDING.
pub(super) async fn submit_admitted(f: &Flotilla, d: &Delivery, run: Run) -> Outcome {
    let store = &f.inner.store;
    let retry_later = Outcome::Release(failure_backoff(d.delivery_count));
    let Some(engine) = f.inner.engines.get(&run.engine) else {
        let reason = format!("engine '{}' is not configured", run.engine);
        return stop_before_submit(f, &run, &reason).await;
    };
    // A template run executes its template version (immutable, so what
    // was rendered at execute), with the command rendered then.
    let def = match &run.template {
        Some(t) => store
            .get_template(&t.template_id)
            .await
            .map(|tpl| tpl.as_definition(run.command.clone())),
        None => match d
            .claimed
            .as_ref()
            .and_then(|c| c.fresh_definition(&run.definition_id))
        {
            Some(def) => Ok(def.clone()),
            None => {
                f.inner
                    .definition_reads
                    .definition(store, &run.definition_id)
                    .await
            }
        },
    };
    let def = match def {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => run.snapshot_definition(),
        Err(e) => {
            tracing::warn!(run_id = %run.run_id, error = %e, "definition read failed");
            return retry_later;
        }
    };
    match engine.submit(&run, &def).await {
        Ok(submitted) => {
            // Fault injection (feature `failpoints`, armed by the
            // `FAILPOINTS` variable): the crash window between the engine's
            // submit and the PENDING write.
            #[cfg(feature = "failpoints")]
            fail::fail_point!("submit-after-engine");
            if let Some(q) = run.queued_at {
                let waited = (model::now() - q).to_std().unwrap_or_default();
                metrics::histogram!("flotilla_submit_latency_seconds").record(waited.as_secs_f64());
            }
            let mut next = run.clone();
            next.status = RunStatus::Pending;
            next.engine_ref = Some(submitted.engine_ref.clone());
            next.instance = submitted.instance.clone().or(run.instance.clone());
            let reason = format!("submitted to {} as {}", engine.name(), submitted.engine_ref);
            // Written with the PENDING transitions of the other submits in
            // flight (one statement for all); its own compare-and-set.
            let written = f
                .transition_batched(&f.inner.submit_writes, &run, next, Some(reason))
                .await;
            match written {
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
            f.inner.admission.refused(&run, e.message());
            Outcome::Release(f.inner.config.retry.backoff(d.delivery_count))
        }
        Err(e) => stop_before_submit(f, &run, e.message()).await,
    }
}

/// The run moved while it was being submitted: it was terminated (stop what
/// was just started), or the engine's own report got there first (record
/// the engine handle). The status worker may move the run again while the
/// handle is written: a conflict reads the run again and tries once more,
/// as the status worker itself does, so the handle is not lost to a race.
async fn after_submit_conflict(f: &Flotilla, run: &Run, engine_ref: &str) {
    for _ in 0..5 {
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
            return;
        }
        if now.engine_ref.is_some() {
            return;
        }
        let mut patched = now.clone();
        patched.engine_ref = Some(engine_ref.to_string());
        match f
            .inner
            .store
            .update_run(&patched, crate::store::Expected::of(&now), None)
            .await
        {
            Err(e) if e.kind() == ErrorKind::Conflict => continue,
            Err(e) => {
                tracing::warn!(run_id = %run.run_id, error = %e, "recording the engine handle failed");
                return;
            }
            Ok(_) => return,
        }
    }
    tracing::warn!(run_id = %run.run_id, "the run kept moving; its engine handle was not recorded");
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
