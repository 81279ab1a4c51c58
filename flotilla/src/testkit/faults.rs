//! A fault-injecting engine wrapper: [`FaultyEngine`] puts a deterministic
//! schedule of faults between the service and any engine, the ones real
//! engines' APIs produce:
//!
//! - **missing**: a poll answers `Missing` for a run the engine has (an API
//!   blip, a cold cache after a restart); a blip is one answer, never two in
//!   a row for the same run, so it never adds up to a continuous absence;
//! - **unavailable**: the call fails with `Unavailable` and does nothing;
//! - **lost**: the call was carried out but its answer is lost (a submit
//!   that started the container and then timed out; a poll whose update for
//!   a run never arrives);
//! - **slow**: the call is delayed.
//!
//! Each decision is drawn from `(seed, run, attempt, call, kind)` by a stable
//! hash, so a schedule is the same on every run of a test. Push events of
//! the wrapped engine are not passed on: every observation goes through the
//! faulty `poll`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::engine::{Capabilities, Engine, StatusUpdate, Submitted, TaskState};
use crate::error::{Error, Result};
use crate::hash::stable_hash;
use crate::model::{Definition, Run};

/// How often each fault is injected, in parts per thousand of calls (per run
/// for `poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultPlan {
    /// Seed of the schedule.
    pub seed: u64,
    /// A poll answers `Missing` for a run the engine has.
    pub missing: u16,
    /// A call fails with `Unavailable`, doing nothing.
    pub unavailable: u16,
    /// A call is carried out but its answer is lost.
    pub lost: u16,
    /// A call is delayed by `slow_by`.
    pub slow: u16,
    /// The delay of a slow call.
    pub slow_by: Duration,
}

impl FaultPlan {
    /// About `percent`% of calls faulty, spread evenly over the four kinds.
    pub fn spread(seed: u64, percent: u16) -> Self {
        let each = percent * 10 / 4;
        FaultPlan {
            seed,
            missing: each,
            unavailable: each,
            lost: each,
            slow: each,
            slow_by: Duration::from_millis(20),
        }
    }
}

/// How many faults of each kind were injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// `Missing` answers for runs the engine had.
    pub missing: u64,
    /// Calls refused with `Unavailable`.
    pub unavailable: u64,
    /// Submits carried out whose answer was lost.
    pub lost_submits: u64,
    /// Poll updates dropped.
    pub lost_updates: u64,
    /// Delayed calls.
    pub slow: u64,
}

#[derive(Debug, Default)]
struct Counters {
    missing: AtomicU64,
    unavailable: AtomicU64,
    lost_submits: AtomicU64,
    lost_updates: AtomicU64,
    slow: AtomicU64,
}

/// Wraps an engine and injects the faults of a [`FaultPlan`].
#[derive(Debug)]
pub struct FaultyEngine<E> {
    inner: E,
    plan: FaultPlan,
    calls: Mutex<HashMap<(String, u32), Calls>>,
    polls: AtomicU64,
    counts: Counters,
}

/// Per run attempt: calls so far, and whether the last poll answer was an
/// injected `Missing`.
#[derive(Debug, Default)]
struct Calls {
    n: u64,
    blipped: bool,
}

#[derive(Clone, Copy)]
enum Fault {
    Missing,
    Unavailable,
    Lost,
    Slow,
}

impl<E: Engine> FaultyEngine<E> {
    /// `inner` behind the faults of `plan`.
    pub fn new(inner: E, plan: FaultPlan) -> Self {
        FaultyEngine {
            inner,
            plan,
            calls: Mutex::new(HashMap::new()),
            polls: AtomicU64::new(0),
            counts: Counters::default(),
        }
    }

    /// The wrapped engine.
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// The faults injected so far.
    pub fn counts(&self) -> FaultCounts {
        let c = &self.counts;
        FaultCounts {
            missing: c.missing.load(Ordering::Relaxed),
            unavailable: c.unavailable.load(Ordering::Relaxed),
            lost_submits: c.lost_submits.load(Ordering::Relaxed),
            lost_updates: c.lost_updates.load(Ordering::Relaxed),
            slow: c.slow.load(Ordering::Relaxed),
        }
    }

    /// The fault, if any, of the next call about `run` (`op` names the
    /// operation so submits and polls draw apart). After an injected
    /// `Missing`, the next answer that reaches the service is the true one:
    /// answers lost in between do not count, or two blips with only a lost
    /// answer between them would look like a continuous absence.
    fn draw(&self, run: &Run, op: &str) -> Option<Fault> {
        let key = (run.run_id.clone(), run.attempt);
        let Ok(mut calls) = self.calls.lock() else {
            return None;
        };
        let c = calls.entry(key).or_default();
        c.n += 1;
        let h = stable_hash(&[
            &self.plan.seed.to_le_bytes(),
            run.run_id.as_bytes(),
            &run.attempt.to_le_bytes(),
            &c.n.to_le_bytes(),
            op.as_bytes(),
        ]);
        let mut x = (h % 1000) as u16;
        let p = &self.plan;
        let mut drawn = None;
        for (share, fault) in [
            (p.missing, Fault::Missing),
            (p.unavailable, Fault::Unavailable),
            (p.lost, Fault::Lost),
            (p.slow, Fault::Slow),
        ] {
            if x < share {
                drawn = Some(fault);
                break;
            }
            x -= share;
        }
        match drawn {
            Some(Fault::Missing) if c.blipped => {
                c.blipped = false;
                None
            }
            Some(Fault::Missing) => {
                c.blipped = true;
                drawn
            }
            // Nothing reaches the service: a pending blip stays pending.
            Some(Fault::Lost) | Some(Fault::Unavailable) => drawn,
            None | Some(Fault::Slow) => {
                c.blipped = false;
                drawn
            }
        }
    }

    async fn slow(&self) {
        self.counts.slow.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(self.plan.slow_by).await;
    }
}

#[async_trait]
impl<E: Engine> Engine for FaultyEngine<E> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            push_events: false,
            ..self.inner.capabilities()
        }
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted> {
        match self.draw(run, "submit") {
            Some(Fault::Unavailable) => {
                self.counts.unavailable.fetch_add(1, Ordering::Relaxed);
                Err(Error::unavailable("injected: engine unavailable"))
            }
            Some(Fault::Lost) => {
                self.inner.submit(run, definition).await?;
                self.counts.lost_submits.fetch_add(1, Ordering::Relaxed);
                Err(Error::unavailable(
                    "injected: submitted, but the answer was lost",
                ))
            }
            Some(Fault::Slow) => {
                self.slow().await;
                self.inner.submit(run, definition).await
            }
            Some(Fault::Missing) | None => self.inner.submit(run, definition).await,
        }
    }

    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>> {
        let call = self.polls.fetch_add(1, Ordering::Relaxed);
        let h = stable_hash(&[&self.plan.seed.to_le_bytes(), &call.to_le_bytes(), b"poll"]);
        if ((h % 1000) as u16) < self.plan.unavailable {
            self.counts.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(Error::unavailable("injected: engine unavailable"));
        }
        let updates = self.inner.poll(runs).await?;
        let by_id: HashMap<&str, &Run> = runs.iter().map(|r| (r.run_id.as_str(), r)).collect();
        let mut out = Vec::with_capacity(updates.len());
        for u in updates {
            let Some(run) = by_id.get(u.run_id.as_str()) else {
                out.push(u);
                continue;
            };
            match self.draw(run, "poll") {
                Some(Fault::Missing) if u.state != TaskState::Missing => {
                    self.counts.missing.fetch_add(1, Ordering::Relaxed);
                    out.push(StatusUpdate::new(
                        u.run_id.clone(),
                        u.attempt,
                        TaskState::Missing,
                    ));
                }
                Some(Fault::Lost) => {
                    self.counts.lost_updates.fetch_add(1, Ordering::Relaxed);
                }
                Some(Fault::Slow) => {
                    self.slow().await;
                    out.push(u);
                }
                _ => out.push(u),
            }
        }
        Ok(out)
    }

    async fn terminate(&self, run: &Run, reason: &str) -> Result<()> {
        self.inner.terminate(run, reason).await
    }

    async fn finished(&self, run: &Run) -> Result<()> {
        self.inner.finished(run).await
    }
}
