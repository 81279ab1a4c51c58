//! [`MemoryQueue`]: named FIFO queues with leases, on one mutex.
//!
//! Each queue keeps its visible messages in a `BTreeSet` of message ids
//! (ids grow with every enqueue, so the set is FIFO, and a redelivered
//! message takes its original place) and its invisible ones (leased or
//! delayed) in a min-heap by the time they become visible again. A receive
//! pops due heap entries, then takes from the front of the visible sets:
//! O(log n) per message, never a scan. Heap entries are invalidated lazily
//! by a per-delivery token, which also makes every receipt unique, so a
//! stale receipt can never ack a newer delivery.
//!
//! Receivers with nothing visible wait on a [`tokio::sync::Notify`] (woken
//! by enqueue and release) or until the earliest lease or delay ends, or
//! their `wait` ends — no polling.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::error::{Error, Result};
use crate::queue::{Delivery, Message, Queue};

/// In-memory [`Queue`]: the embedded default and a test double.
///
/// Queues are created on first use and are FIFO (a redelivered message goes
/// back to its original place). Enqueuing a message equal to one still
/// pending on the same queue (same run id and attempt, not yet acked) is a
/// no-op. `depth` counts visible, leased and delayed messages. Nothing is
/// persisted.
#[derive(Debug, Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct State {
    queues: HashMap<String, QueueState>,
    entries: HashMap<u64, Entry>,
    next_id: u64,
    next_token: u64,
    /// Rotates the queue a multi-queue receive starts with, so one busy
    /// queue cannot starve the others.
    rotation: usize,
}

#[derive(Debug, Default)]
struct QueueState {
    /// Visible message ids, oldest first.
    ready: BTreeSet<u64>,
    /// `(visible_at, id, token)` of leased or delayed messages.
    invisible: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    /// Pending messages, for deduplication.
    pending: HashMap<Message, u64>,
}

#[derive(Debug)]
struct Entry {
    queue: String,
    message: Message,
    delivery_count: u32,
    /// The current delivery's (or delay's) token; 0 while visible.
    token: u64,
}

impl MemoryQueue {
    /// An empty queue set.
    pub fn new() -> Self {
        MemoryQueue::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every critical section validates before it mutates; recover.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn receipt(id: u64, token: u64) -> String {
    format!("{id}.{token}")
}

fn parse_receipt(r: &str) -> Result<(u64, u64)> {
    let bad = || Error::invalid(format!("receipt: '{r}' is not a memory-queue receipt"));
    let (id, token) = r.split_once('.').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        token.parse().map_err(|_| bad())?,
    ))
}

impl State {
    /// Makes every due invisible message of `queue` visible again.
    fn promote(&mut self, queue: &str, now: Instant) {
        let State {
            queues, entries, ..
        } = self;
        let Some(q) = queues.get_mut(queue) else {
            return;
        };
        while let Some(Reverse((at, id, token))) = q.invisible.peek().copied() {
            let live = entries.get(&id).is_some_and(|e| e.token == token);
            if live && at > now {
                break;
            }
            q.invisible.pop();
            if live && let Some(e) = entries.get_mut(&id) {
                e.token = 0;
                q.ready.insert(id);
            }
        }
    }

    /// When the earliest live invisible message of `queue` becomes visible.
    fn next_visible(&mut self, queue: &str) -> Option<Instant> {
        let State {
            queues, entries, ..
        } = self;
        let q = queues.get_mut(queue)?;
        while let Some(Reverse((at, id, token))) = q.invisible.peek().copied() {
            if entries.get(&id).is_some_and(|e| e.token == token) {
                return Some(at);
            }
            q.invisible.pop();
        }
        None
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Leases up to `max` visible messages from `queues`, round-robin.
    fn take(&mut self, queues: &[String], max: usize, lease: Duration) -> Vec<Delivery> {
        let now = Instant::now();
        let until = now.checked_add(lease).unwrap_or(now);
        for q in queues {
            self.promote(q, now);
        }
        let mut out = Vec::new();
        let n = queues.len();
        let start = self.rotation % n.max(1);
        self.rotation = self.rotation.wrapping_add(1);
        let mut empty = vec![false; n];
        let mut left = n;
        let mut i = start;
        while out.len() < max && left > 0 {
            let idx = i % n;
            i += 1;
            if empty[idx] {
                continue;
            }
            let name = &queues[idx];
            let id = self.queues.get_mut(name).and_then(|q| q.ready.pop_first());
            let Some(id) = id else {
                empty[idx] = true;
                left -= 1;
                continue;
            };
            let token = self.token();
            let Some(e) = self.entries.get_mut(&id) else {
                continue;
            };
            e.token = token;
            e.delivery_count += 1;
            out.push(Delivery {
                queue: name.clone(),
                message: e.message.clone(),
                receipt: receipt(id, token),
                delivery_count: e.delivery_count,
            });
            if let Some(q) = self.queues.get_mut(name) {
                q.invisible.push(Reverse((until, id, token)));
            }
        }
        out
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        {
            let mut s = self.lock();
            let State {
                queues,
                entries,
                next_id,
                ..
            } = &mut *s;
            let q = queues.entry(queue.to_owned()).or_default();
            for m in messages {
                if q.pending.contains_key(m) {
                    continue;
                }
                *next_id += 1;
                let id = *next_id;
                q.pending.insert(m.clone(), id);
                q.ready.insert(id);
                entries.insert(
                    id,
                    Entry {
                        queue: queue.to_owned(),
                        message: m.clone(),
                        delivery_count: 0,
                        token: 0,
                    },
                );
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn receive(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let start = Instant::now();
        let deadline = start.checked_add(wait).unwrap_or(start);
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Register before looking, so an enqueue between the look and
            // the wait still wakes us.
            notified.as_mut().enable();
            let wake_at = {
                let mut s = self.lock();
                let got = s.take(queues, max, lease);
                if !got.is_empty() {
                    return Ok(got);
                }
                queues
                    .iter()
                    .filter_map(|q| s.next_visible(q))
                    .fold(deadline, Instant::min)
            };
            if Instant::now() >= deadline {
                return Ok(Vec::new());
            }
            tokio::select! {
                _ = &mut notified => {
                    if queues.is_empty() {
                        // Nothing to receive from: let the caller look at
                        // its (possibly grown) list of queues again.
                        return Ok(Vec::new());
                    }
                }
                _ = tokio::time::sleep_until(wake_at) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let parsed = deliveries
            .iter()
            .map(|d| parse_receipt(&d.receipt))
            .collect::<Result<Vec<_>>>()?;
        let mut s = self.lock();
        for (id, token) in parsed {
            if token == 0 || s.entries.get(&id).is_none_or(|e| e.token != token) {
                // Stale: redelivered or released since; the newer delivery
                // owns the message.
                continue;
            }
            if let Some(e) = s.entries.remove(&id)
                && let Some(q) = s.queues.get_mut(&e.queue)
            {
                q.pending.remove(&e.message);
                // Its heap entry is dropped lazily (the token no longer
                // matches an entry).
            }
        }
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let (id, token) = parse_receipt(&delivery.receipt)?;
        {
            let mut s = self.lock();
            if token == 0 || s.entries.get(&id).is_none_or(|e| e.token != token) {
                // Stale: the message was acked or delivered again since.
                return Ok(());
            }
            let now = Instant::now();
            let new_token = if delay.is_zero() { 0 } else { s.token() };
            let State {
                queues, entries, ..
            } = &mut *s;
            let Some(e) = entries.get_mut(&id) else {
                return Ok(());
            };
            e.token = new_token;
            let Some(q) = queues.get_mut(&e.queue) else {
                return Err(Error::internal(format!(
                    "memory queue: message {id} belongs to unknown queue '{}'",
                    e.queue
                )));
            };
            if delay.is_zero() {
                q.ready.insert(id);
            } else {
                let at = now.checked_add(delay).unwrap_or(now);
                q.invisible.push(Reverse((at, id, new_token)));
            }
        }
        self.notify.notify_waiters();
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        Ok(self
            .lock()
            .queues
            .get(queue)
            .map_or(0, |q| q.pending.len() as u64))
    }
}
