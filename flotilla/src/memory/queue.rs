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
use std::sync::{Arc, Mutex, MutexGuard};
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
    /// The queue's name, shared by its entries.
    name: Arc<str>,
    /// Visible message ids, oldest first.
    ready: BTreeSet<u64>,
    /// `(visible_at, id, token)` of leased or delayed messages.
    invisible: BinaryHeap<Reverse<(Instant, u64, u64)>>,
    /// Pending messages, for deduplication.
    pending: HashMap<Message, u64>,
}

#[derive(Debug)]
struct Entry {
    queue: Arc<str>,
    message: Message,
    delivery_count: u32,
    /// The token of the current delivery (or delay); 0 before the first
    /// delivery and after a release without delay. Receipts carry it, so
    /// only the latest delivery's receipt acks or releases the message.
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

/// `t + d`, saturating at about a century for durations too large to add.
fn later(t: Instant, d: Duration) -> Instant {
    const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    t.checked_add(d.min(CENTURY))
        .or_else(|| t.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(t)
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
            if live {
                // The token stays: until the message is delivered again,
                // the late receiver may still ack or release it.
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
        let until = later(now, lease);
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
                claimed: None,
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
            if !queues.contains_key(queue) {
                let q = QueueState {
                    name: Arc::from(queue),
                    ..Default::default()
                };
                queues.insert(queue.to_owned(), q);
            }
            let Some(q) = queues.get_mut(queue) else {
                return Err(Error::internal("memory queue: a queue vanished"));
            };
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
                        queue: Arc::clone(&q.name),
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
        let deadline = later(start, wait);
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
                && let Some(q) = s.queues.get_mut(&*e.queue)
            {
                q.pending.remove(&e.message);
                // Visible again if its lease ended before this ack.
                q.ready.remove(&id);
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
            let Some(q) = queues.get_mut(&*e.queue) else {
                return Err(Error::internal(format!(
                    "memory queue: message {id} belongs to unknown queue '{}'",
                    e.queue
                )));
            };
            // Visible already if its lease ended before this release.
            q.ready.remove(&id);
            if delay.is_zero() {
                q.ready.insert(id);
            } else {
                let at = later(now, delay);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn qs(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    const LONG: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn equal_pending_messages_are_deduplicated() {
        let q = MemoryQueue::new();
        let m = Message::new("r1", 1);
        q.enqueue("a", &[m.clone(), m.clone()])
            .await
            .expect("enqueue");
        q.enqueue("a", std::slice::from_ref(&m))
            .await
            .expect("enqueue");
        assert_eq!(q.depth("a").await.expect("depth"), 1);
        // Another attempt, or another queue, is another message.
        q.enqueue("a", &[Message::new("r1", 2)])
            .await
            .expect("enqueue");
        q.enqueue("b", std::slice::from_ref(&m))
            .await
            .expect("enqueue");
        assert_eq!(q.depth("a").await.expect("depth"), 2);
        assert_eq!(q.depth("b").await.expect("depth"), 1);
        // Leased is still pending: deduplicated.
        let d = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(d[0].message, m);
        q.enqueue("a", std::slice::from_ref(&m))
            .await
            .expect("enqueue");
        assert_eq!(q.depth("a").await.expect("depth"), 2);
        // Acked: a new enqueue is a new message.
        q.ack(&d).await.expect("ack");
        q.enqueue("a", std::slice::from_ref(&m))
            .await
            .expect("enqueue");
        assert_eq!(q.depth("a").await.expect("depth"), 2);
    }

    #[tokio::test]
    async fn a_late_ack_before_redelivery_still_removes_the_message() {
        let q = MemoryQueue::new();
        q.enqueue("a", &[Message::new("r1", 1)])
            .await
            .expect("enqueue");
        let d = q
            .receive(&qs(&["a"]), 1, Duration::from_millis(20), Duration::ZERO)
            .await
            .expect("receive");
        tokio::time::sleep(Duration::from_millis(60)).await;
        // A receive on another queue leaves "a" alone: the expired lease is
        // not yet turned into a visible message.
        let none = q
            .receive(&qs(&["b"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert!(none.is_empty());
        q.ack(&d).await.expect("ack");
        assert_eq!(q.depth("a").await.expect("depth"), 0);
        let again = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert!(again.is_empty(), "acked before being delivered again");
    }

    #[tokio::test]
    async fn a_late_ack_after_promotion_but_before_redelivery_removes_it() {
        let q = MemoryQueue::new();
        q.enqueue("a", &[Message::new("r1", 1), Message::new("r2", 1)])
            .await
            .expect("enqueue");
        let d = q
            .receive(&qs(&["a"]), 1, Duration::from_millis(20), Duration::ZERO)
            .await
            .expect("receive");
        tokio::time::sleep(Duration::from_millis(60)).await;
        // Receiving r2 promotes the expired r1 to visible without taking it.
        let d2 = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(
            d2[0].message.run_id, "r1",
            "FIFO: the expired r1 comes first"
        );
        assert_eq!(d2[0].delivery_count, 2);
        // Stale now: the ack does nothing.
        q.ack(&d).await.expect("ack");
        assert_eq!(q.depth("a").await.expect("depth"), 2);
        q.ack(&d2).await.expect("ack");
        assert_eq!(q.depth("a").await.expect("depth"), 1);
    }

    #[tokio::test]
    async fn released_then_stale_receipts_do_nothing() {
        let q = MemoryQueue::new();
        q.enqueue("a", &[Message::new("r1", 1)])
            .await
            .expect("enqueue");
        let d = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        q.release(&d[0], Duration::from_secs(60))
            .await
            .expect("release");
        // The released receipt can neither ack nor release again.
        q.ack(&d).await.expect("ack");
        q.release(&d[0], Duration::ZERO).await.expect("release");
        assert_eq!(q.depth("a").await.expect("depth"), 1);
        let none = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert!(none.is_empty(), "still delayed");
    }

    #[tokio::test]
    async fn foreign_receipts_are_invalid_input() {
        let q = MemoryQueue::new();
        let d = Delivery {
            queue: "a".into(),
            message: Message::new("r1", 1),
            receipt: "arn:aws:sqs:receipt".into(),
            delivery_count: 1,
            claimed: None,
        };
        let e = q.ack(std::slice::from_ref(&d)).await.expect_err("bad");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
        assert!(e.message().contains("receipt"), "names the field");
        let e = q.release(&d, Duration::ZERO).await.expect_err("bad");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn several_queues_are_served_in_turn() {
        let q = MemoryQueue::new();
        for name in ["a", "b"] {
            let ms: Vec<Message> = (0..10)
                .map(|i| Message::new(format!("{name}{i}"), 1))
                .collect();
            q.enqueue(name, &ms).await.expect("enqueue");
        }
        let mut from = std::collections::HashMap::<String, usize>::new();
        for _ in 0..6 {
            for d in q
                .receive(&qs(&["a", "b"]), 1, LONG, Duration::ZERO)
                .await
                .expect("receive")
            {
                *from.entry(d.queue).or_default() += 1;
            }
        }
        assert_eq!(from.get("a"), Some(&3), "{from:?}");
        assert_eq!(from.get("b"), Some(&3), "{from:?}");
        let batch = q
            .receive(&qs(&["a", "b"]), 4, LONG, Duration::ZERO)
            .await
            .expect("receive");
        let a = batch.iter().filter(|d| d.queue == "a").count();
        assert_eq!(a, 2, "a batch takes from both queues");
    }

    #[tokio::test]
    async fn receive_with_no_queues_returns_when_woken_or_after_wait() {
        let q = MemoryQueue::new();
        let none = q
            .receive(&[], 10, LONG, Duration::from_millis(10))
            .await
            .expect("receive");
        assert!(none.is_empty());
        let (got, _) = tokio::join!(q.receive(&[], 10, LONG, Duration::from_secs(60)), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q.enqueue("a", &[Message::new("r", 1)]).await
        });
        assert!(got.expect("receive").is_empty(), "woken, to look again");
        let none = q
            .receive(&qs(&["a"]), 0, LONG, Duration::from_secs(60))
            .await
            .expect("receive");
        assert!(none.is_empty(), "max 0 returns at once");
    }

    #[tokio::test]
    async fn a_waiting_receive_wakes_when_a_lease_ends() {
        let q = MemoryQueue::new();
        q.enqueue("a", &[Message::new("r1", 1)])
            .await
            .expect("enqueue");
        let d = q
            .receive(&qs(&["a"]), 1, Duration::from_millis(50), Duration::ZERO)
            .await
            .expect("receive");
        assert_eq!(d.len(), 1);
        // Nobody enqueues or releases: only the lease expiry can end this
        // wait early, and the timeout fails the test if it does not.
        let again = tokio::time::timeout(
            Duration::from_secs(30),
            q.receive(&qs(&["a"]), 1, LONG, Duration::from_secs(120)),
        )
        .await
        .expect("woken by the lease expiry")
        .expect("receive");
        assert_eq!(again[0].delivery_count, 2);
    }

    #[tokio::test]
    async fn huge_durations_mean_forever_not_zero() {
        let q = MemoryQueue::new();
        q.enqueue("a", &[Message::new("r1", 1)])
            .await
            .expect("enqueue");
        let d = q
            .receive(&qs(&["a"]), 1, Duration::MAX, Duration::MAX)
            .await
            .expect("receive");
        assert_eq!(d.len(), 1);
        let none = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert!(
            none.is_empty(),
            "a Duration::MAX lease does not end at once"
        );
        q.release(&d[0], Duration::MAX).await.expect("release");
        let none = q
            .receive(&qs(&["a"]), 1, LONG, Duration::ZERO)
            .await
            .expect("receive");
        assert!(
            none.is_empty(),
            "a Duration::MAX delay does not end at once"
        );
        let b = qs(&["b"]);
        let (got, _) = tokio::join!(q.receive(&b, 1, LONG, Duration::MAX), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            q.enqueue("b", &[Message::new("r2", 1)]).await
        });
        assert_eq!(got.expect("receive").len(), 1, "a Duration::MAX wait waits");
    }

    #[tokio::test]
    async fn many_messages_flow_through() {
        let q = MemoryQueue::new();
        let n = 100_000;
        let ms: Vec<Message> = (0..n).map(|i| Message::new(format!("r{i}"), 1)).collect();
        for chunk in ms.chunks(1000) {
            q.enqueue("a", chunk).await.expect("enqueue");
        }
        assert_eq!(q.depth("a").await.expect("depth"), n as u64);
        let mut seen = 0;
        let mut last: Option<usize> = None;
        loop {
            let ds = q
                .receive(&qs(&["a"]), 500, LONG, Duration::ZERO)
                .await
                .expect("receive");
            if ds.is_empty() {
                break;
            }
            for d in &ds {
                let i: usize = d.message.run_id[1..].parse().expect("index");
                assert!(last.is_none_or(|l| i == l + 1), "FIFO");
                last = Some(i);
            }
            seen += ds.len();
            q.ack(&ds).await.expect("ack");
        }
        assert_eq!(seen, n);
        assert_eq!(q.depth("a").await.expect("depth"), 0);
    }
}
