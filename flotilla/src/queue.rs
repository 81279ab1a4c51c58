//! The `Queue` trait: at-least-once delivery of run ids on named queues.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::{Definition, Run};

/// What is queued: one attempt of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// The run.
    pub run_id: String,
    /// The attempt this message asks to submit.
    pub attempt: u32,
}

impl Message {
    /// A message for `run_id`'s `attempt`.
    pub fn new(run_id: impl Into<String>, attempt: u32) -> Self {
        Message {
            run_id: run_id.into(),
            attempt,
        }
    }
}

/// One delivery of a message, leased to the receiver.
///
/// Two deliveries are equal when their queue, message, receipt and count
/// are: [`Delivery::claimed`] is what was read with it, not part of it.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The queue it came from.
    pub queue: String,
    /// The message.
    pub message: Message,
    /// Backend handle for `ack`/`release` (receipt handle, row id, ...).
    pub receipt: String,
    /// How many times this message has been delivered, this one included.
    pub delivery_count: u32,
    /// The run and its definition as read by the claim itself, from a
    /// queue that shares the store's database (see [`Claimed`]); `None`
    /// from every other queue.
    pub claimed: Option<Arc<Claimed>>,
}

impl PartialEq for Delivery {
    fn eq(&self, other: &Self) -> bool {
        self.queue == other.queue
            && self.message == other.message
            && self.receipt == other.receipt
            && self.delivery_count == other.delivery_count
    }
}

impl Eq for Delivery {}

/// What a queue in the store's own database read in the statement that
/// claimed a message: the message's run and that run's definition, as
/// committed when the claim ran. It saves the submit worker its own reads
/// of both (two round trips per batch). It is a snapshot like any read:
/// every write that follows is still a compare-and-set on the run's
/// version, and the worker reads the definition again when the run waited
/// for capacity longer than [`Claimed::FRESH`].
#[derive(Debug, Clone)]
pub struct Claimed {
    /// The run; `None` when the store has no such run (or once the
    /// submit worker has taken it).
    pub run: Option<Run>,
    /// The run's definition; `None` when it is not stored (deleted).
    /// Deliveries of one claim share each definition.
    pub definition: Option<Arc<Definition>>,
    /// When the claim read them.
    pub at: Instant,
}

impl Claimed {
    /// How long after the claim its definition stands for a fresh read.
    pub const FRESH: Duration = Duration::from_secs(1);

    /// What was read with a claim just now.
    pub fn now(run: Option<Run>, definition: Option<Arc<Definition>>) -> Self {
        Claimed {
            run,
            definition,
            at: Instant::now(),
        }
    }

    /// The definition, while it is fresh and is `run`'s.
    pub fn fresh_definition(&self, definition_id: &str) -> Option<&Definition> {
        self.definition
            .as_deref()
            .filter(|d| d.definition_id == definition_id && self.at.elapsed() < Self::FRESH)
    }
}

/// At-least-once queues, one per cluster.
///
/// # Contract
/// - `enqueue` appends messages to the named queue (created on first use).
///   Per queue, messages are delivered in enqueue order as far as the
///   backend can (FIFO for memory and PostgreSQL; best-effort for SQS).
///   Enqueuing a message equal to one still pending may be deduplicated.
/// - `receive` returns at most `max` deliveries from any of `queues`,
///   leased for `lease`: none of them is delivered again before the lease
///   ends. It waits up to `wait` for the first message and returns early as
///   soon as one is available — backends that can wake waiters on enqueue
///   (notify, LISTEN/NOTIFY, long poll) do, so dispatch is event-driven. An
///   empty result after `wait` is normal.
/// - `ack` removes delivered messages for good. Acking a delivery whose lease
///   has ended and that was delivered again since may fail or do nothing,
///   never remove the newer delivery's message twice.
/// - `release` makes a delivery visible again after `delay` (zero: now).
/// - A delivery neither acked nor released is delivered again once its lease
///   ends, with `delivery_count` increased.
/// - Transient failures are `Unavailable`; callers retry.
/// - A queue in the store's own database may fill [`Delivery::claimed`]
///   with the run and definition read in the claiming statement; the run
///   must be the store's committed run, exactly as `Store::get_runs` would
///   have answered at that moment. Every other queue leaves it `None`.
#[async_trait]
pub trait Queue: Send + Sync + std::fmt::Debug {
    /// Appends messages to `queue`.
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()>;
    /// Leases up to `max` deliveries, waiting up to `wait` for the first.
    async fn receive(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>>;
    /// Removes delivered messages.
    async fn ack(&self, deliveries: &[Delivery]) -> Result<()>;
    /// Returns a delivery to its queue, visible after `delay`.
    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()>;
    /// Messages waiting (visible or leased) in `queue`, for metrics.
    async fn depth(&self, queue: &str) -> Result<u64>;

    /// See [`crate::Store::transaction_domain`].
    fn transaction_domain(&self) -> Option<&str> {
        None
    }
}
