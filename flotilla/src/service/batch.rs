//! Group commit of run transitions: compare-and-sets asked for by
//! concurrent tasks (the submit worker's submits, the status worker's
//! observations) are written by one [`Store::update_runs`] call per batch.
//!
//! A caller queues its item and waits for its own answer. When no flush is
//! running, the first caller starts one (a spawned task): it takes every
//! item queued so far (up to `max`), writes them in one call, answers each
//! caller, and goes on while items are queued; it ends when none are. So a
//! lone transition costs one round trip, as before, and transitions that
//! arrive while a batch is being written share the next one. Every item
//! stays its own compare-and-set: a conflict answers only its caller.
//!
//! [`SharedReads`] does the same for the submit worker's definition reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use tokio::sync::oneshot;

use crate::error::{Error, Result};
use crate::model::{Definition, Run};
use crate::store::{RunUpdate, Store};

struct Waiting {
    item: RunUpdate,
    answer: oneshot::Sender<Result<Run>>,
}

#[derive(Default)]
struct State {
    queued: Vec<Waiting>,
    /// Whether a flush task is running (it takes what is queued).
    flushing: bool,
}

/// Batches compare-and-sets into [`Store::update_runs`] calls.
pub(crate) struct Batcher {
    state: Arc<Mutex<State>>,
    /// Most items per call.
    max: usize,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").field("max", &self.max).finish()
    }
}

impl Batcher {
    /// A batcher writing at most `max` items per call.
    pub(crate) fn new(max: usize) -> Self {
        Batcher {
            state: Arc::default(),
            max: max.max(1),
        }
    }

    /// Applies `item` in the next batch written to `store`; its own answer.
    pub(crate) async fn update(&self, store: &Arc<dyn Store>, item: RunUpdate) -> Result<Run> {
        let (answer, rx) = oneshot::channel();
        let start = {
            let mut s = lock(&self.state);
            s.queued.push(Waiting { item, answer });
            !std::mem::replace(&mut s.flushing, true)
        };
        if start {
            tokio::spawn(flush(self.state.clone(), store.clone(), self.max));
        }
        rx.await
            .unwrap_or_else(|_| Err(Error::unavailable("the transition batch was dropped")))
    }
}

/// The batcher's state, even after a panic while it was held: it is a
/// list and a flag that no step leaves half-changed, so a poisoned lock
/// must not leave `flushing` set with nobody flushing.
fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Writes queued items, a batch per call, until none are left.
async fn flush(state: Arc<Mutex<State>>, store: Arc<dyn Store>, max: usize) {
    // Let the callers woken with the first one queue theirs too.
    tokio::task::yield_now().await;
    loop {
        let batch: Vec<Waiting> = {
            let mut s = lock(&state);
            if s.queued.is_empty() {
                s.flushing = false;
                return;
            }
            let n = s.queued.len().min(max);
            s.queued.drain(..n).collect()
        };
        let (items, answers): (Vec<RunUpdate>, Vec<_>) =
            batch.into_iter().map(|w| (w.item, w.answer)).unzip();
        metrics::histogram!("flotilla_transition_batch_size").record(items.len() as f64);
        match store.update_runs(&items).await {
            Ok(results) if results.len() == answers.len() => {
                for (answer, r) in answers.into_iter().zip(results) {
                    let _ = answer.send(r);
                }
            }
            Ok(results) => {
                let msg = format!(
                    "the store answered {} of {} batched updates",
                    results.len(),
                    answers.len()
                );
                for answer in answers {
                    let _ = answer.send(Err(Error::internal(msg.clone())));
                }
            }
            Err(e) => {
                // Each caller handles it as after a failed `update_run`
                // (re-read, the next poll or redelivery tries again).
                for answer in answers {
                    let _ = answer.send(Err(Error::new(e.kind(), e.message().to_string())));
                }
            }
        }
    }
}

type DefinitionRead = futures::future::Shared<
    futures::future::BoxFuture<
        'static,
        std::result::Result<Definition, (crate::error::ErrorKind, String)>,
    >,
>;

/// Single-flight definition reads: submits asking for a definition while a
/// read of it is in flight share that read's answer instead of sending
/// their own (a batch of runs of one definition costs one read). Nothing is
/// kept once the read is answered: the next submit reads afresh, so an
/// updated definition is seen as soon as without this.
#[derive(Default)]
pub(crate) struct SharedReads {
    inflight: Mutex<HashMap<String, DefinitionRead>>,
}

impl std::fmt::Debug for SharedReads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedReads").finish_non_exhaustive()
    }
}

impl SharedReads {
    /// `store.get_definition(id)`, shared with concurrent askers.
    pub(crate) async fn definition(&self, store: &Arc<dyn Store>, id: &str) -> Result<Definition> {
        let read = {
            let mut m = self
                .inflight
                .lock()
                .map_err(|_| Error::internal("definition reads poisoned"))?;
            match m.get(id) {
                Some(r) => r.clone(),
                None => {
                    let store = store.clone();
                    let key = id.to_string();
                    let r = async move {
                        store
                            .get_definition(&key)
                            .await
                            .map_err(|e| (e.kind(), e.message().to_string()))
                    }
                    .boxed()
                    .shared();
                    m.insert(id.to_string(), r.clone());
                    r
                }
            }
        };
        let answer = read.clone().await;
        if let Ok(mut m) = self.inflight.lock()
            && m.get(id).is_some_and(|cur| cur.ptr_eq(&read))
        {
            m.remove(id);
        }
        answer.map_err(|(kind, message)| Error::new(kind, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::model::{NewDefinition, RunEvent, RunStatus};
    use crate::store::Expected;

    /// Concurrent callers share batches, and each gets its own run's
    /// answer: the right run back, or the Conflict of its own stale item.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_caller_gets_its_own_answer_from_a_shared_batch() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let def = NewDefinition::new("batch", "img").into_definition();
        let mut runs = Vec::new();
        for _ in 0..64 {
            let r = Run::queued(&def, "c", "local", "test");
            store
                .create_run(&r, &RunEvent::created(&r))
                .await
                .expect("create");
            runs.push(store.get_run(&r.run_id).await.expect("get"));
        }
        let batcher = Arc::new(Batcher::new(16));
        let mut tasks = tokio::task::JoinSet::new();
        for (i, stored) in runs.into_iter().enumerate() {
            let (batcher, store) = (batcher.clone(), store.clone());
            tasks.spawn(async move {
                let mut expected = Expected::of(&stored);
                // Every eighth caller holds a stale version.
                if i % 8 == 3 {
                    expected.version += 1;
                }
                let mut next = stored.clone();
                next.status = RunStatus::Pending;
                next.engine_ref = Some(format!("task-{i}"));
                let got = batcher
                    .update(&store, RunUpdate::new(next, expected, None))
                    .await;
                (i, stored.run_id, got)
            });
        }
        let mut conflicts = 0;
        while let Some(done) = tasks.join_next().await {
            let (i, run_id, got) = done.expect("task");
            if i % 8 == 3 {
                let e = got.expect_err("a stale item conflicts");
                assert_eq!(e.kind(), crate::error::ErrorKind::Conflict, "{e}");
                conflicts += 1;
            } else {
                let run = got.expect("applied");
                assert_eq!(run.run_id, run_id, "caller {i} got another run's answer");
                assert_eq!(
                    run.engine_ref.as_deref(),
                    Some(format!("task-{i}").as_str())
                );
                assert_eq!(run.status, RunStatus::Pending);
            }
        }
        assert_eq!(conflicts, 8);
    }

    /// A panic while the state lock was held (poisoning it) does not stop
    /// later transitions from being written.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_poisoned_lock_does_not_stop_the_batcher() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let def = NewDefinition::new("batch", "img").into_definition();
        let r = Run::queued(&def, "c", "local", "test");
        store
            .create_run(&r, &RunEvent::created(&r))
            .await
            .expect("create");
        let stored = store.get_run(&r.run_id).await.expect("get");
        let batcher = Batcher::new(16);
        let state = batcher.state.clone();
        let poisoned = std::thread::spawn(move || {
            let _held = state.lock().expect("lock");
            panic!("poison the batcher's lock");
        })
        .join();
        assert!(poisoned.is_err() && batcher.state.is_poisoned());
        let mut next = stored.clone();
        next.status = RunStatus::Pending;
        let run = batcher
            .update(&store, RunUpdate::new(next, Expected::of(&stored), None))
            .await
            .expect("written after the poison");
        assert_eq!(run.status, RunStatus::Pending);
    }
}
