//! [`CountingQueue`]: a [`Queue`] that counts what is done through it, per
//! queue, so a test can check how often messages were claimed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;

use crate::error::Result;
use crate::queue::{Delivery, Message, Queue};

/// Counts of one queue's operations through a [`CountingQueue`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages enqueued.
    pub enqueued: u64,
    /// Deliveries handed out by `receive` (each one a claim).
    pub received: u64,
    /// Deliveries acked.
    pub acked: u64,
    /// Deliveries released.
    pub released: u64,
}

/// Wraps a queue and counts, per queue name, the messages enqueued and
/// the deliveries received, acked and released through it.
#[derive(Debug)]
pub struct CountingQueue<Q> {
    inner: Q,
    counts: Mutex<HashMap<String, QueueCounts>>,
}

impl<Q: Queue> CountingQueue<Q> {
    /// Wraps `inner`, all counts zero.
    pub fn new(inner: Q) -> Self {
        CountingQueue {
            inner,
            counts: Mutex::new(HashMap::new()),
        }
    }

    /// The counts of `queue` so far.
    pub fn counts(&self, queue: &str) -> QueueCounts {
        self.counts
            .lock()
            .map(|c| c.get(queue).copied().unwrap_or_default())
            .unwrap_or_default()
    }

    fn count<'a>(&self, queues: impl Iterator<Item = &'a str>, add: fn(&mut QueueCounts)) {
        if let Ok(mut c) = self.counts.lock() {
            for q in queues {
                add(c.entry(q.to_string()).or_default());
            }
        }
    }
}

#[async_trait]
impl<Q: Queue> Queue for CountingQueue<Q> {
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()> {
        self.inner.enqueue(queue, messages).await?;
        self.count(messages.iter().map(|_| queue), |c| c.enqueued += 1);
        Ok(())
    }

    async fn receive(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        let got = self.inner.receive(queues, max, lease, wait).await?;
        self.count(got.iter().map(|d| d.queue.as_str()), |c| c.received += 1);
        Ok(got)
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        self.inner.ack(deliveries).await?;
        self.count(deliveries.iter().map(|d| d.queue.as_str()), |c| {
            c.acked += 1
        });
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        self.inner.release(delivery, delay).await?;
        self.count(std::iter::once(delivery.queue.as_str()), |c| {
            c.released += 1
        });
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        self.inner.depth(queue).await
    }

    fn transaction_domain(&self) -> Option<&str> {
        self.inner.transaction_domain()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryQueue;

    #[tokio::test]
    async fn counts_each_operation_per_queue() {
        let q = CountingQueue::new(MemoryQueue::new());
        q.enqueue("a", &[Message::new("r1", 1), Message::new("r2", 1)])
            .await
            .expect("enqueue");
        let got = q
            .receive(
                &["a".to_string()],
                10,
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .await
            .expect("receive");
        assert_eq!(got.len(), 2);
        q.release(&got[0], Duration::ZERO).await.expect("release");
        q.ack(&got[1..]).await.expect("ack");
        let c = q.counts("a");
        assert_eq!((c.enqueued, c.received, c.acked, c.released), (2, 2, 1, 1));
        assert_eq!(q.counts("b"), QueueCounts::default());
    }
}
