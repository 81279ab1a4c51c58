//! Admission: a QUEUED run is submitted only when it fits beside its
//! cluster's PENDING and RUNNING runs ([`Capacity`]), in a fair order across
//! owners, then by priority.
//!
//! # Design
//! - **Usage lives in memory**, per cluster: the demand (`cpu`, `memory`,
//!   `gpu`, one run) of every PENDING or RUNNING run. It is rebuilt from the
//!   store when the submit worker starts (every PENDING and RUNNING run),
//!   then kept by [`Admission::observe`], which [`Flotilla::transition`]
//!   calls on every change this process makes. Admitting a run reserves its
//!   demand before the engine is called; a submit that does not happen
//!   (engine busy, store error) gives it back.
//! - **Waiting runs are held in memory**, with their queue delivery, per
//!   cluster and per owner (at most [`MAX_HELD`] per cluster: beyond that the
//!   submit worker stops receiving from the cluster's queue, so the rest wait
//!   in the queue itself). Nothing is consumed while a run waits: its
//!   delivery is acked only once it is submitted. A held delivery's lease
//!   may end (`workers.queue_lease`); the message then comes back and
//!   replaces the held one. On shutdown held deliveries are released at once.
//! - **Wake-up is event-driven**: a run leaving PENDING/RUNNING (STOPPED,
//!   NEEDS_RETRY), a new waiting run, a reservation given back or a capacity
//!   change signal [`Admission::wake`]; the dispatcher then admits whatever
//!   fits. There is no polling interval.
//! - **Fairness**: the next run comes from the owner with the fewest active
//!   runs on the cluster; ties go to the owner served longest ago (round
//!   robin), then by name. **Priority** orders runs within one owner
//!   (higher first, then queue order); it never lets one owner pass
//!   another. The order is strict: when the chosen run does not fit,
//!   nothing else on the cluster is admitted before it (no backfill, so
//!   large runs are not starved by small ones).
//! - **Several replicas**: the store is the truth, read at start and again
//!   whenever a held run's delivery comes back after its lease (at most
//!   once a second per cluster): then the cluster's usage is replaced by
//!   its PENDING and RUNNING runs in the store, this replica's
//!   reservations kept. In between, each replica sees only the changes its
//!   own process makes. So capacity is exact with one replica running the
//!   submit and status workers; with several, a stop applied by another
//!   replica frees room here within `workers.queue_lease` (not at once),
//!   and two submit workers may each admit into the same free room before
//!   either sees the other's runs: over-admission is bounded by the number
//!   of submit replicas and lasts until the next resync.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::error::Result;
use crate::model::{self, Capacity, Cluster, ClusterUsage, Run, RunStatus, UsageRing, Waiting};
use crate::queue::Delivery;

use super::Flotilla;

/// The most waiting runs held in memory per cluster; more wait in the queue.
pub const MAX_HELD: usize = 10_000;

/// What one run takes from its cluster.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Demand {
    cpu: i64,
    memory: i64,
    gpu: i64,
}

impl Demand {
    fn of(run: &Run) -> Demand {
        Demand {
            cpu: run.cpu.unwrap_or(0).max(0),
            memory: run.memory.unwrap_or(0).max(0),
            gpu: run.gpu.unwrap_or(0).max(0),
        }
    }
}

/// A run admitted to be submitted now, with its delivery.
#[derive(Debug)]
pub struct Admitted {
    /// The run.
    pub run: Run,
    /// Its queue delivery, acked once the run is submitted.
    pub delivery: Delivery,
}

#[derive(Debug)]
struct Waiter {
    run: Run,
    delivery: Delivery,
}

/// Priority first (higher first), then queue time, then id (time-ordered).
type WaitKey = (Reverse<i32>, Option<DateTime<Utc>>, String);

#[derive(Debug, Default)]
struct ClusterState {
    capacity: Capacity,
    /// PENDING and RUNNING runs (and reservations): run id → (owner, demand).
    active: HashMap<String, (String, Demand)>,
    used: Demand,
    active_per_owner: HashMap<String, u32>,
    waiting: HashMap<String, BTreeMap<WaitKey, Waiter>>,
    /// Run id → (owner, key) of the waiting runs.
    waiting_ids: HashMap<String, (String, WaitKey)>,
    /// Owner → the tick it was last served (round robin among equals).
    served: HashMap<String, u64>,
    tick: u64,
    /// Admitted here, not yet seen PENDING (or given back): kept by a
    /// resync from the store, which does not know them yet.
    reserved: std::collections::HashSet<String>,
    /// When usage was last re-read from the store.
    resynced: Option<std::time::Instant>,
    /// Waiting runs' positions, until the state next changes.
    positions: Option<HashMap<String, usize>>,
    /// Waiting and active runs over the last hour.
    history: UsageRing,
    /// Runs that left the active set lately: id → the version that did.
    /// Two tasks may write a run one after the other (the submit worker
    /// PENDING, the status worker STOPPED) and report here in the other
    /// order; the older report must not count the run active again.
    finished: HashMap<String, u64>,
    /// `finished`'s ids, oldest first (at most [`RECENTLY_FINISHED`]).
    finished_order: std::collections::VecDeque<String>,
    /// Runs whose last submit the engine refused for now (busy, no room to
    /// place it): run id → the engine's words, until the run is submitted
    /// or stops (at most [`MAX_HELD`]).
    refusals: HashMap<String, String>,
}

/// The most of an engine's refusal kept for a waiting run's reason.
const REFUSAL_CHARS: usize = 300;

/// Finished runs remembered per cluster against late reports.
const RECENTLY_FINISHED: usize = 4096;

impl ClusterState {
    /// Remembers that `run_id` left the active set at `version`.
    fn note_finished(&mut self, run_id: &str, version: u64) {
        if self.finished.insert(run_id.to_string(), version).is_none() {
            self.finished_order.push_back(run_id.to_string());
        }
        while self.finished_order.len() > RECENTLY_FINISHED {
            if let Some(old) = self.finished_order.pop_front() {
                self.finished.remove(&old);
            }
        }
    }

    /// Whether a report of `run_id` at `version` is older than its finish.
    fn is_stale(&self, run_id: &str, version: u64) -> bool {
        self.finished.get(run_id).is_some_and(|v| *v >= version)
    }

    /// Records the current waiting and active counts in the history.
    fn sample(&mut self) {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        self.history.record(
            model::now(),
            count(self.waiting_ids.len()),
            count(self.active.len()),
        );
    }

    fn fits(&self, d: Demand) -> bool {
        let c = &self.capacity;
        let dim = |limit: Option<i64>, used: i64, want: i64| match limit {
            None => true,
            // A run larger than the cluster counts as all of it: alone.
            Some(l) => used.saturating_add(want.min(l.max(0))) <= l,
        };
        let runs_ok = c
            .runs
            .is_none_or(|r| self.active.len() < usize::try_from(r).unwrap_or(usize::MAX));
        runs_ok
            && dim(c.cpu, self.used.cpu, d.cpu)
            && dim(c.memory, self.used.memory, d.memory)
            && dim(c.gpu, self.used.gpu, d.gpu)
    }

    fn add_active(&mut self, run_id: &str, owner: &str, d: Demand) {
        if self.active.contains_key(run_id) {
            return;
        }
        self.positions = None;
        self.active
            .insert(run_id.to_string(), (owner.to_string(), d));
        self.used.cpu += d.cpu;
        self.used.memory += d.memory;
        self.used.gpu += d.gpu;
        *self.active_per_owner.entry(owner.to_string()).or_default() += 1;
    }

    fn remove_active(&mut self, run_id: &str) -> bool {
        let Some((owner, d)) = self.active.remove(run_id) else {
            return false;
        };
        self.positions = None;
        self.used.cpu -= d.cpu;
        self.used.memory -= d.memory;
        self.used.gpu -= d.gpu;
        if let Some(n) = self.active_per_owner.get_mut(&owner) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active_per_owner.remove(&owner);
            }
        }
        true
    }

    fn remove_waiting(&mut self, run_id: &str) -> Option<Waiter> {
        let (owner, key) = self.waiting_ids.remove(run_id)?;
        self.positions = None;
        let queue = self.waiting.get_mut(&owner)?;
        let w = queue.remove(&key);
        if queue.is_empty() {
            self.waiting.remove(&owner);
        }
        w
    }

    /// The owner whose run is admitted next: fewest active runs, then
    /// served longest ago, then by name.
    fn next_owner<'a>(
        owners: impl Iterator<Item = &'a String>,
        active: &HashMap<String, u32>,
        served: &HashMap<String, u64>,
    ) -> Option<&'a String> {
        owners.min_by_key(|o| {
            (
                active.get(*o).copied().unwrap_or(0),
                served.get(*o).copied().unwrap_or(0),
                o.as_str(),
            )
        })
    }

    /// The waiting runs' ids in the order they would be admitted (each one
    /// counted active as it goes): a heap of the owners' next runs, keyed
    /// as [`ClusterState::next_owner`] picks them, so O(n log owners).
    fn order(&self) -> Vec<&str> {
        let mut cursors: HashMap<
            &String,
            std::collections::btree_map::Values<'_, WaitKey, Waiter>,
        > = self.waiting.iter().map(|(o, q)| (o, q.values())).collect();
        let mut heads: BinaryHeap<Reverse<(u32, u64, &String)>> = self
            .waiting
            .keys()
            .map(|o| {
                let active = self.active_per_owner.get(o).copied().unwrap_or(0);
                Reverse((active, self.served.get(o).copied().unwrap_or(0), o))
            })
            .collect();
        let mut out = Vec::with_capacity(self.waiting_ids.len());
        let mut tick = self.tick;
        while let Some(Reverse((active, _, owner))) = heads.pop() {
            let Some(w) = cursors.get_mut(owner).and_then(|it| it.next()) else {
                continue;
            };
            out.push(w.run.run_id.as_str());
            tick += 1;
            heads.push(Reverse((active + 1, tick, owner)));
        }
        out
    }

    /// Each waiting run's 1-based position in the admission order, worked
    /// out once per change of the cluster's state.
    fn positions(&mut self) -> &HashMap<String, usize> {
        if self.positions.is_none() {
            let map = self
                .order()
                .into_iter()
                .enumerate()
                .map(|(i, id)| (id.to_string(), i + 1))
                .collect();
            self.positions = Some(map);
        }
        self.positions.get_or_insert_with(HashMap::new)
    }

    /// Text of the dimensions that keep a run of demand `d` out (all the
    /// limited ones when it would fit), e.g. "2 of 2 runs active".
    fn usage_text(&self, d: Demand) -> String {
        let c = &self.capacity;
        let mut all = Vec::new();
        let mut blocking = Vec::new();
        let mut dim = |text: String, blocks: bool| {
            if blocks {
                blocking.push(text.clone());
            }
            all.push(text);
        };
        if let Some(r) = c.runs {
            let n = self.active.len();
            dim(
                format!("{n} of {r} runs active"),
                n >= usize::try_from(r).unwrap_or(usize::MAX),
            );
        }
        let over = |limit: i64, used: i64, want: i64| used.saturating_add(want.min(limit)) > limit;
        if let Some(m) = c.memory {
            let u = self.used.memory;
            dim(
                format!("{u} of {m} MiB memory in use"),
                over(m, u, d.memory),
            );
        }
        if let Some(cpu) = c.cpu {
            let u = self.used.cpu;
            dim(
                format!("{u} of {cpu} millicores in use"),
                over(cpu, u, d.cpu),
            );
        }
        if let Some(g) = c.gpu {
            let u = self.used.gpu;
            dim(format!("{u} of {g} GPUs in use"), over(g, u, d.gpu));
        }
        if all.is_empty() {
            all.push(format!("{} runs active", self.active.len()));
        }
        if blocking.is_empty() {
            all.join(", ")
        } else {
            blocking.join(", ")
        }
    }
}

/// The admission state of this replica: usage and waiting runs per cluster
/// (public with feature `testkit`, for benchmarks).
#[derive(Debug, Default)]
pub struct Admission {
    clusters: Mutex<HashMap<String, ClusterState>>,
    /// Signalled when a waiting run may now fit.
    pub(crate) wake: Notify,
}

impl Admission {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, ClusterState>) -> T) -> Option<T> {
        self.clusters.lock().ok().map(|mut g| f(&mut g))
    }

    /// Counts `runs` (the store's PENDING and RUNNING runs) as active.
    pub(crate) fn load(&self, runs: &[Run]) {
        self.with(|cl| {
            for r in runs.iter().filter(|r| r.status.is_active()) {
                cl.entry(r.cluster.clone()).or_default().add_active(
                    &r.run_id,
                    &r.owner,
                    Demand::of(r),
                );
            }
            cl.values_mut().for_each(ClusterState::sample);
        });
        self.wake.notify_one();
    }

    /// Follows a change of `run` made by this process: PENDING and RUNNING
    /// runs count, others do not; a run leaving the active set wakes the
    /// dispatcher.
    pub fn observe(&self, run: &Run) {
        let freed = self
            .with(|cl| {
                let c = cl.entry(run.cluster.clone()).or_default();
                let freed = match run.status {
                    RunStatus::Pending | RunStatus::Running => {
                        c.refusals.remove(&run.run_id);
                        if !c.is_stale(&run.run_id, run.version) {
                            c.reserved.remove(&run.run_id);
                            c.remove_waiting(&run.run_id);
                            c.add_active(&run.run_id, &run.owner, Demand::of(run));
                        }
                        false
                    }
                    RunStatus::Queued => {
                        c.reserved.remove(&run.run_id);
                        c.note_finished(&run.run_id, run.version);
                        c.remove_active(&run.run_id)
                    }
                    RunStatus::Stopped | RunStatus::NeedsRetry => {
                        c.refusals.remove(&run.run_id);
                        c.reserved.remove(&run.run_id);
                        c.note_finished(&run.run_id, run.version);
                        // A waiting run terminated: its delivery comes back
                        // after its lease and is acked as stale then.
                        c.remove_waiting(&run.run_id);
                        c.remove_active(&run.run_id)
                    }
                };
                c.sample();
                freed
            })
            .unwrap_or(false);
        if freed {
            self.wake.notify_one();
        }
    }

    /// Holds `run` (QUEUED, read just now) until it fits on a cluster of
    /// `capacity`. Returns a delivery to ack: the one this replaces (a
    /// redelivery of a held run), if any. A run already active here (a
    /// redelivery during its submit) is not held: its new delivery is
    /// returned to be left alone.
    pub fn offer(&self, run: Run, delivery: Delivery, capacity: Capacity) -> Offer {
        let out = self
            .with(|cl| {
                let c = cl.entry(run.cluster.clone()).or_default();
                c.capacity = capacity;
                if c.active.contains_key(&run.run_id) {
                    return Offer::Busy;
                }
                let replaced = c.remove_waiting(&run.run_id).map(|w| w.delivery);
                c.positions = None;
                let key = (Reverse(run.priority), run.queued_at, run.run_id.clone());
                c.waiting_ids
                    .insert(run.run_id.clone(), (run.owner.clone(), key.clone()));
                c.waiting
                    .entry(run.owner.clone())
                    .or_default()
                    .insert(key, Waiter { run, delivery });
                c.sample();
                Offer::Held { replaced }
            })
            .unwrap_or(Offer::Busy);
        self.wake.notify_one();
        out
    }

    /// Takes every waiting run that fits now, in the fair order, reserving
    /// its demand.
    pub fn admit(&self) -> Vec<Admitted> {
        self.with(|cl| {
            let mut out = Vec::new();
            for c in cl.values_mut() {
                let before = out.len();
                loop {
                    let owner =
                        ClusterState::next_owner(c.waiting.keys(), &c.active_per_owner, &c.served)
                            .cloned();
                    let Some(owner) = owner else { break };
                    let Some(head) = c
                        .waiting
                        .get(&owner)
                        .and_then(|q| q.values().next())
                        .map(|w| (w.run.run_id.clone(), Demand::of(&w.run)))
                    else {
                        break;
                    };
                    if !c.fits(head.1) {
                        break;
                    }
                    let Some(w) = c.remove_waiting(&head.0) else {
                        break;
                    };
                    c.add_active(&head.0, &owner, head.1);
                    c.reserved.insert(head.0.clone());
                    c.tick += 1;
                    c.served.insert(owner, c.tick);
                    c.positions = None;
                    out.push(Admitted {
                        run: w.run,
                        delivery: w.delivery,
                    });
                }
                if out.len() > before {
                    c.sample();
                }
            }
            out
        })
        .unwrap_or_default()
    }

    /// Gives back the reservation of a run that was not submitted.
    pub(crate) fn unreserve(&self, run: &Run) {
        let freed = self
            .with(|cl| {
                cl.get_mut(&run.cluster).is_some_and(|c| {
                    c.reserved.remove(&run.run_id);
                    let freed = c.remove_active(&run.run_id);
                    c.sample();
                    freed
                })
            })
            .unwrap_or(false);
        if freed {
            self.wake.notify_one();
        }
    }

    /// Notes that the engine refused to take `run` for now (a retryable
    /// error: busy, or no room to place it); its waiting reason says so
    /// until it is submitted or stops.
    pub(crate) fn refused(&self, run: &Run, message: &str) {
        let cut = &message[..message.floor_char_boundary(REFUSAL_CHARS)];
        self.with(|cl| {
            let c = cl.entry(run.cluster.clone()).or_default();
            if c.refusals.len() < MAX_HELD || c.refusals.contains_key(&run.run_id) {
                c.refusals.insert(run.run_id.clone(), cut.to_string());
            }
        });
    }

    /// Whether `cluster`'s usage should be re-read from the store: it was
    /// not in the last `every`. Marks it re-read when true.
    pub(crate) fn resync_due(&self, cluster: &str, every: std::time::Duration) -> bool {
        self.with(|cl| {
            let c = cl.entry(cluster.to_string()).or_default();
            let due = c.resynced.is_none_or(|t| t.elapsed() >= every);
            if due {
                c.resynced = Some(std::time::Instant::now());
            }
            due
        })
        .unwrap_or(false)
    }

    /// Replaces `cluster`'s usage by `runs` (its PENDING and RUNNING runs in
    /// the store, whichever replica changed them), keeping this replica's
    /// reservations the store does not show yet.
    pub(crate) fn resync(&self, cluster: &str, runs: &[Run]) {
        self.with(|cl| {
            let c = cl.entry(cluster.to_string()).or_default();
            let kept: Vec<(String, (String, Demand))> = c
                .active
                .iter()
                .filter(|(id, _)| c.reserved.contains(*id))
                .map(|(id, v)| (id.clone(), v.clone()))
                .collect();
            c.active.clear();
            c.active_per_owner.clear();
            c.used = Demand::default();
            c.positions = None;
            for (id, (owner, d)) in kept {
                c.add_active(&id, &owner, d);
            }
            let fresh: Vec<&Run> = runs
                .iter()
                .filter(|r| {
                    r.status.is_active()
                        && r.cluster == cluster
                        && !c.is_stale(&r.run_id, r.version)
                })
                .collect();
            for r in fresh {
                c.reserved.remove(&r.run_id);
                c.add_active(&r.run_id, &r.owner, Demand::of(r));
            }
            c.sample();
        });
        self.wake.notify_one();
    }

    /// Sets a cluster's capacity (a change takes effect at once).
    pub(crate) fn set_capacity(&self, cluster: &str, capacity: Capacity) {
        self.with(|cl| cl.entry(cluster.to_string()).or_default().capacity = capacity);
        self.wake.notify_one();
    }

    /// Whether this replica holds `run_id` back on `cluster`.
    pub(crate) fn holds(&self, cluster: &str, run_id: &str) -> bool {
        self.with(|cl| {
            cl.get(cluster)
                .is_some_and(|c| c.waiting_ids.contains_key(run_id))
        })
        .unwrap_or(false)
    }

    /// Whether the cluster holds as many waiting runs as it may.
    pub(crate) fn is_full(&self, cluster: &str) -> bool {
        self.with(|cl| {
            cl.get(cluster)
                .is_some_and(|c| c.waiting_ids.len() >= MAX_HELD)
        })
        .unwrap_or(false)
    }

    /// Every held delivery, forgetting them (shutdown releases them).
    pub(crate) fn drain(&self) -> Vec<Delivery> {
        self.with(|cl| {
            let mut out = Vec::new();
            for c in cl.values_mut() {
                c.waiting_ids.clear();
                c.positions = None;
                for (_, q) in c.waiting.drain() {
                    out.extend(q.into_values().map(|w| w.delivery));
                }
            }
            out
        })
        .unwrap_or_default()
    }

    /// Forgets usage (before it is rebuilt from the store).
    pub(crate) fn reset(&self) {
        self.with(|cl| {
            for c in cl.values_mut() {
                c.active.clear();
                c.active_per_owner.clear();
                c.used = Demand::default();
                c.positions = None;
            }
        });
    }

    /// `cluster`'s waiting and active counts now, and its last hour.
    fn usage(&self, cluster: &str) -> (u32, u32, Vec<model::UsageSample>) {
        let now = model::now();
        self.with(|cl| match cl.get(cluster) {
            Some(c) => {
                let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                (
                    count(c.waiting_ids.len()),
                    count(c.active.len()),
                    c.history.samples(now),
                )
            }
            None => (0, 0, UsageRing::default().samples(now)),
        })
        .unwrap_or_default()
    }

    /// Why `run` waits, if this replica holds it or its engine refused it
    /// lately. A run released after a refusal (asked again after a
    /// backoff) is counted behind the runs held now.
    pub fn waiting(&self, run: &Run) -> Option<Waiting> {
        if run.status != RunStatus::Queued {
            return None;
        }
        self.with(|cl| {
            let c = cl.get_mut(&run.cluster)?;
            let refusal = c.refusals.get(&run.run_id).cloned();
            if !c.waiting_ids.contains_key(&run.run_id) {
                let refusal = refusal?;
                return Some(Waiting {
                    position: c.waiting_ids.len() + 1,
                    reason: format!(
                        "the engine refused to take it for now ({refusal}); asked again after a backoff on cluster {}",
                        run.cluster
                    ),
                });
            }
            let position = *c.positions().get(&run.run_id)?;
            let ahead = position - 1;
            let mut reason = format!(
                "waiting for capacity: {} on cluster {}",
                c.usage_text(Demand::of(run)),
                run.cluster
            );
            if ahead > 0 {
                reason.push_str(&format!(
                    "; {ahead} run{} ahead (fair order across owners, then priority)",
                    if ahead == 1 { "" } else { "s" }
                ));
            }
            if let Some(r) = refusal {
                reason.push_str(&format!("; the engine refused its last submit: {r}"));
            }
            Some(Waiting { position, reason })
        })
        .flatten()
    }
}

/// What [`Admission::offer`] did.
#[derive(Debug)]
pub enum Offer {
    /// Held; ack the delivery it replaced, if any.
    Held {
        /// The older delivery of the same run.
        replaced: Option<Delivery>,
    },
    /// The run is counted active already (being submitted, or a stale
    /// count): the new delivery is not held; the caller releases it to be
    /// asked again shortly.
    Busy,
}

impl Flotilla {
    /// The capacity admission uses for `cluster`: its own, with each unset
    /// dimension taken from the config's `capacities` for its name, then
    /// from its engine's default ([`crate::Engine::default_capacity`]).
    pub fn effective_capacity(&self, cluster: &Cluster) -> Capacity {
        let engine = cluster
            .engine
            .as_deref()
            .unwrap_or(&self.inner.default_engine);
        let fallback = self
            .inner
            .engines
            .get(engine)
            .and_then(|e| e.default_capacity());
        let configured = self.inner.config.capacities.get(&cluster.name).copied();
        cluster
            .capacity
            .unwrap_or_default()
            .or(configured)
            .or(fallback)
    }

    /// A cluster's capacity and usage, now and over the last hour, as this
    /// replica's admission sees them (its own waiting runs; the active runs
    /// of every replica as of its last read of the store).
    pub async fn cluster_usage(&self, name: &str) -> Result<ClusterUsage> {
        let cluster = self.get_cluster(name).await?;
        let (waiting, running, samples) = self.inner.admission.usage(name);
        Ok(ClusterUsage {
            capacity: self.effective_capacity(&cluster),
            cluster: cluster.name,
            waiting,
            running,
            bucket_seconds: u32::try_from(model::USAGE_BUCKET_SECS).unwrap_or(10),
            samples,
        })
    }

    /// Fills `run.waiting` from this replica's admission state.
    pub(crate) fn annotate_waiting(&self, run: &mut Run) {
        run.waiting = self.inner.admission.waiting(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Definition;

    fn run(owner: &str, priority: i32, memory: Option<i64>) -> Run {
        let def: Definition = serde_json::from_value(serde_json::json!({
            "definition_id": "d", "alias": "a", "image": "i",
            "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("definition");
        let mut r = Run::queued(&def, "c", "local", owner);
        r.priority = priority;
        r.memory = memory;
        r
    }

    fn delivery(r: &Run) -> Delivery {
        Delivery {
            queue: r.cluster.clone(),
            message: crate::queue::Message::new(r.run_id.clone(), 1),
            receipt: r.run_id.clone(),
            delivery_count: 1,
            claimed: None,
        }
    }

    fn offer(a: &Admission, r: &Run, cap: Capacity) {
        a.offer(r.clone(), delivery(r), cap);
    }

    #[test]
    fn a_single_run_of_another_owner_goes_before_a_burst() {
        let a = Admission::default();
        let cap = Capacity::runs(1);
        let burst: Vec<Run> = (0..5).map(|_| run("a", 0, None)).collect();
        for r in &burst {
            offer(&a, r, cap);
        }
        let first = a.admit();
        assert_eq!(first.len(), 1);
        let single = run("b", 0, None);
        offer(&a, &single, cap);
        assert_eq!(a.waiting(&single).map(|w| w.position), Some(1));
        let mut stopped = first[0].run.clone();
        stopped.status = RunStatus::Stopped;
        a.observe(&stopped);
        let next = a.admit();
        assert_eq!(next.len(), 1);
        assert_eq!(next[0].run.run_id, single.run_id);
    }

    #[test]
    fn priority_orders_one_owners_runs_and_memory_is_summed() {
        let a = Admission::default();
        let cap = Capacity {
            memory: Some(1000),
            ..Capacity::default()
        };
        let low: Vec<Run> = (0..3).map(|_| run("a", 0, Some(400))).collect();
        for r in &low {
            offer(&a, r, cap);
        }
        let high = run("a", 10, Some(400));
        offer(&a, &high, cap);
        let admitted = a.admit();
        assert_eq!(admitted.len(), 2, "1000 MiB hold two runs of 400");
        assert_eq!(admitted[0].run.run_id, high.run_id);
        let w = a.waiting(&low[2]).expect("waits");
        assert_eq!(w.position, 2);
        assert!(w.reason.contains("800 of 1000 MiB"), "{}", w.reason);
    }

    #[test]
    fn a_resync_takes_the_stores_runs_and_keeps_reservations() {
        let a = Admission::default();
        let cap = Capacity::runs(2);
        let mine = run("a", 0, None);
        offer(&a, &mine, cap);
        assert_eq!(a.admit().len(), 1, "reserved here, not yet PENDING");
        // Another replica stopped what it ran; the store shows one run of
        // another replica's.
        let mut elsewhere = run("b", 0, None);
        elsewhere.status = RunStatus::Running;
        a.resync("c", std::slice::from_ref(&elsewhere));
        let waiting = run("a", 0, None);
        offer(&a, &waiting, cap);
        assert!(
            a.admit().is_empty(),
            "2 of 2: the reservation and the store's run"
        );
        // It stopped (seen by another replica's status worker).
        a.resync("c", &[]);
        assert_eq!(a.admit().len(), 1, "the store's run stopped: room for one");
    }

    #[test]
    fn reported_positions_are_the_order_runs_are_admitted_in() {
        let a = Admission::default();
        let cap = Capacity::runs(1);
        let mut runs = Vec::new();
        for i in 0..60 {
            let owner = ["a", "b", "c", "d"][i % 4 * (i % 3) % 4];
            runs.push(run(owner, (i % 5) as i32, None));
        }
        for r in &runs {
            offer(&a, r, cap);
        }
        let first = a.admit();
        assert_eq!(first.len(), 1);
        let mut by_position: Vec<(usize, String)> = runs
            .iter()
            .filter_map(|r| a.waiting(r).map(|w| (w.position, r.run_id.clone())))
            .collect();
        by_position.sort();
        assert_eq!(by_position.len(), 59);
        let mut admitted = Vec::new();
        let mut current = first[0].run.clone();
        loop {
            a.observe(&Run {
                status: RunStatus::Stopped,
                ..current.clone()
            });
            let next = a.admit();
            let Some(n) = next.into_iter().next() else {
                break;
            };
            admitted.push(n.run.run_id.clone());
            current = n.run;
        }
        let expected: Vec<String> = by_position.into_iter().map(|(_, id)| id).collect();
        assert_eq!(admitted, expected, "positions predict the admission order");
    }

    #[test]
    fn a_late_pending_report_does_not_count_a_stopped_run_again() {
        let a = Admission::default();
        let cap = Capacity::runs(1);
        let first = run("a", 0, None);
        let second = run("a", 0, None);
        offer(&a, &first, cap);
        offer(&a, &second, cap);
        let admitted = a.admit();
        assert_eq!(admitted.len(), 1);
        let mut pending = admitted[0].run.clone();
        pending.status = RunStatus::Pending;
        pending.version += 1;
        let mut stopped = pending.clone();
        stopped.status = RunStatus::Stopped;
        stopped.version += 1;
        // The status worker's STOPPED is reported before the submit
        // worker's PENDING that the store took first.
        a.observe(&stopped);
        a.observe(&pending);
        let next = a.admit();
        assert_eq!(next.len(), 1, "the stopped run's slot is free");
        assert_eq!(next[0].run.run_id, second.run_id);
        // Nor does a store read taken before the stop bring it back.
        a.resync("c", std::slice::from_ref(&pending));
        let third = run("b", 0, None);
        offer(&a, &third, cap);
        assert!(a.admit().is_empty(), "1 of 1: the second run");
        let mut second_done = next[0].run.clone();
        second_done.status = RunStatus::Stopped;
        second_done.version += 5;
        a.observe(&second_done);
        assert_eq!(a.admit().len(), 1);
    }

    #[test]
    fn a_run_larger_than_the_cluster_runs_alone() {
        let a = Admission::default();
        let cap = Capacity {
            memory: Some(1000),
            ..Capacity::default()
        };
        let big = run("a", 0, Some(5000));
        let small = run("a", 0, Some(10));
        offer(&a, &big, cap);
        offer(&a, &small, cap);
        let admitted = a.admit();
        assert_eq!(admitted.len(), 1);
        assert_eq!(admitted[0].run.run_id, big.run_id);
    }
}
