//! The [`Queue`] conformance suite.
//!
//! [`queue_suite`] checks the [`Queue`] contract through the trait alone, on
//! fresh uniquely named queues, so it runs on an empty backend and on one
//! shared with other tests alike. It never asserts durations: where
//! something must arrive it waits up to [`QueueSuiteOptions::patience`],
//! and receive calls return as soon as a message is there.

use std::collections::BTreeSet;
use std::time::Duration;

use super::{must, token};
use crate::model;
use crate::queue::{Delivery, Message, Queue};

/// Knobs for backends whose guarantees are coarser than the memory queue's.
#[derive(Debug, Clone)]
pub struct QueueSuiteOptions {
    /// Whether each queue delivers in enqueue order (memory, PostgreSQL).
    /// When false, order checks compare sets instead.
    pub fifo: bool,
    /// The short lease used to check redelivery after expiry, and the base
    /// of the release delay. A backend with whole-second visibility
    /// timeouts (SQS) sets at least one second.
    pub lease: Duration,
    /// The longest the suite waits for a message that must arrive.
    pub patience: Duration,
}

impl Default for QueueSuiteOptions {
    fn default() -> Self {
        QueueSuiteOptions {
            fifo: true,
            lease: Duration::from_millis(400),
            patience: Duration::from_secs(10),
        }
    }
}

/// A lease no check outlives.
const LONG: Duration = Duration::from_secs(120);

/// Runs every check of the [`Queue`] contract against `queue`, expecting
/// FIFO queues and 400 ms leases ([`QueueSuiteOptions::default`]).
///
/// Panics with a message naming the broken rule at the first failure.
pub async fn queue_suite(queue: &dyn Queue) {
    queue_suite_with(queue, &QueueSuiteOptions::default()).await;
}

/// [`queue_suite`] with options for coarser backends.
pub async fn queue_suite_with(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    enqueue_receive_ack(queue, opts).await;
    fifo_order(queue, opts).await;
    max_is_respected(queue, opts).await;
    receive_across_queues(queue, opts).await;
    unused_queue(queue).await;
    lease_is_exclusive(queue, opts).await;
    redelivery_after_lease(queue, opts).await;
    release_with_delay(queue, opts).await;
    stale_ack(queue, opts).await;
    receive_wakes_on_enqueue(queue, opts).await;
    depth(queue, opts).await;
}

fn queue_name(what: &str) -> String {
    format!("suite-{}-{what}", token())
}

fn messages(n: usize) -> Vec<Message> {
    (0..n)
        .map(|i| Message::new(model::new_id(), (i % 3 + 1) as u32))
        .collect()
}

/// Receives until `n` deliveries arrived or `opts.patience` passed; a
/// backend may hand out fewer than asked per call.
async fn receive_n(
    queue: &dyn Queue,
    queues: &[String],
    n: usize,
    lease: Duration,
    opts: &QueueSuiteOptions,
) -> Vec<Delivery> {
    let give_up = tokio::time::Instant::now() + opts.patience;
    let mut got = Vec::new();
    while got.len() < n {
        let now = tokio::time::Instant::now();
        if now >= give_up {
            break;
        }
        let wait = give_up - now;
        got.extend(must(
            queue.receive(queues, n - got.len(), lease, wait).await,
            "receive",
        ));
    }
    got
}

fn message_list(ds: &[Delivery]) -> Vec<Message> {
    ds.iter().map(|d| d.message.clone()).collect()
}

fn message_set(ms: &[Message]) -> BTreeSet<(String, u32)> {
    ms.iter().map(|m| (m.run_id.clone(), m.attempt)).collect()
}

async fn enqueue_receive_ack(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("basic");
    let qs = vec![q.clone()];
    let ms = messages(3);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    must(queue.enqueue(&q, &[]).await, "enqueue of nothing");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        3,
        "depth counts enqueued messages"
    );
    let ds = receive_n(queue, &qs, 3, LONG, opts).await;
    assert_eq!(ds.len(), 3, "every enqueued message is received");
    assert_eq!(
        message_set(&message_list(&ds)),
        message_set(&ms),
        "receive returns the enqueued messages"
    );
    for d in &ds {
        assert_eq!(d.queue, q, "a delivery names its queue");
        assert_eq!(d.delivery_count, 1, "a first delivery has delivery_count 1");
    }
    let receipts: BTreeSet<&str> = ds.iter().map(|d| d.receipt.as_str()).collect();
    assert_eq!(receipts.len(), 3, "every delivery has its own receipt");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        3,
        "depth counts leased messages"
    );
    let again = must(
        queue.receive(&qs, 10, LONG, Duration::ZERO).await,
        "receive",
    );
    assert!(
        again.is_empty(),
        "leased messages are not delivered again during their lease"
    );
    must(queue.ack(&ds).await, "ack");
    must(queue.ack(&[]).await, "ack of nothing");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "acked messages are gone"
    );
    let after = must(
        queue.receive(&qs, 10, LONG, opts.lease).await,
        "receive after ack",
    );
    assert!(after.is_empty(), "acked messages are never delivered again");
}

async fn fifo_order(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("fifo");
    let qs = vec![q.clone()];
    let ms = messages(5);
    must(queue.enqueue(&q, &ms[..2]).await, "enqueue");
    must(queue.enqueue(&q, &ms[2..]).await, "enqueue");
    let mut got = Vec::new();
    for _ in 0..ms.len() {
        let ds = receive_n(queue, &qs, 1, LONG, opts).await;
        assert_eq!(ds.len(), 1, "receive with max 1 returns one delivery");
        got.extend(ds);
    }
    if opts.fifo {
        assert_eq!(message_list(&got), ms, "a queue delivers in enqueue order");
    } else {
        assert_eq!(
            message_set(&message_list(&got)),
            message_set(&ms),
            "every message is delivered"
        );
    }
    must(queue.ack(&got).await, "ack");
}

async fn max_is_respected(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("max");
    let qs = vec![q.clone()];
    let ms = messages(5);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    let first = must(
        queue.receive(&qs, 2, LONG, opts.patience).await,
        "receive max 2",
    );
    assert!(!first.is_empty(), "receive returns waiting messages");
    assert!(
        first.len() <= 2,
        "receive returns at most max deliveries (got {})",
        first.len()
    );
    let rest = receive_n(queue, &qs, 5 - first.len(), LONG, opts).await;
    let mut all = first;
    all.extend(rest);
    assert_eq!(all.len(), 5, "the remaining messages are received");
    assert_eq!(
        message_set(&message_list(&all)),
        message_set(&ms),
        "each message is delivered once"
    );
    must(queue.ack(&all).await, "ack");
}

async fn receive_across_queues(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let (qa, qb, qc) = (queue_name("a"), queue_name("b"), queue_name("c"));
    let qs = vec![qa.clone(), qb.clone(), qc.clone()];
    let ms = messages(2);
    must(queue.enqueue(&qa, &ms[..1]).await, "enqueue a");
    must(queue.enqueue(&qb, &ms[1..]).await, "enqueue b");
    let ds = receive_n(queue, &qs, 2, LONG, opts).await;
    assert_eq!(ds.len(), 2, "receive takes from every listed queue");
    for d in &ds {
        let want = if d.message == ms[0] { &qa } else { &qb };
        assert_eq!(
            &d.queue, want,
            "a delivery names the queue its message was enqueued on"
        );
    }
    assert_eq!(
        message_set(&message_list(&ds)),
        message_set(&ms),
        "receive across queues"
    );
    let only_b = must(
        queue
            .receive(std::slice::from_ref(&qb), 10, LONG, Duration::ZERO)
            .await,
        "receive",
    );
    assert!(only_b.is_empty(), "nothing left on queue b");
    must(queue.ack(&ds).await, "ack");
    assert_eq!(
        must(queue.depth(&qa).await, "depth"),
        0,
        "queue a is empty after ack"
    );
    assert_eq!(
        must(queue.depth(&qb).await, "depth"),
        0,
        "queue b is empty after ack"
    );
}

async fn unused_queue(queue: &dyn Queue) {
    let q = queue_name("unused");
    let ds = must(
        queue
            .receive(std::slice::from_ref(&q), 10, LONG, Duration::ZERO)
            .await,
        "receive from a queue never used",
    );
    assert!(ds.is_empty(), "a queue never used is empty");
    assert_eq!(
        must(queue.depth(&q).await, "depth of a queue never used"),
        0,
        "a queue never used has depth 0"
    );
}

async fn lease_is_exclusive(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("lease");
    let qs = vec![q.clone()];
    let ms = messages(1);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    // Two receivers at once: the message goes to one of them only.
    let (a, b) = tokio::join!(
        queue.receive(&qs, 10, LONG, opts.lease),
        queue.receive(&qs, 10, LONG, opts.lease)
    );
    let mut got = must(a, "receive");
    got.extend(must(b, "receive"));
    if got.is_empty() {
        got = receive_n(queue, &qs, 1, LONG, opts).await;
    }
    assert_eq!(got.len(), 1, "concurrent receivers get one message once");
    let d1 = got.remove(0);
    let during = must(
        queue.receive(&qs, 10, LONG, opts.lease).await,
        "receive during lease",
    );
    assert!(
        during.is_empty(),
        "a leased message is not delivered again during its lease"
    );
    must(queue.release(&d1, Duration::ZERO).await, "release now");
    let d2 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(
        d2.len(),
        1,
        "a message released with no delay is delivered again"
    );
    assert_eq!(d2[0].message, ms[0], "the released message comes back");
    assert_eq!(
        d2[0].delivery_count, 2,
        "a released message's next delivery counts 2"
    );
    must(queue.ack(&d2).await, "ack");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "acked after release"
    );
}

async fn redelivery_after_lease(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("redeliver");
    let qs = vec![q.clone()];
    let ms = messages(1);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    let d1 = receive_n(queue, &qs, 1, opts.lease, opts).await;
    assert_eq!(d1.len(), 1, "receive");
    // Neither acked nor released: delivered again once the lease ends.
    let d2 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(
        d2.len(),
        1,
        "a delivery not acked is delivered again after its lease"
    );
    assert_eq!(d2[0].message, ms[0], "the same message is redelivered");
    assert_eq!(d2[0].delivery_count, 2, "a redelivery has delivery_count 2");
    assert_ne!(
        d2[0].receipt, d1[0].receipt,
        "a redelivery has a new receipt"
    );
    must(queue.ack(&d2).await, "ack");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "acked after redelivery"
    );
}

async fn release_with_delay(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("delay");
    let qs = vec![q.clone()];
    let ms = messages(1);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    let d1 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(d1.len(), 1, "receive");
    let delay = (opts.lease * 3).max(Duration::from_secs(2));
    must(queue.release(&d1[0], delay).await, "release with delay");
    let early = must(
        queue.receive(&qs, 10, LONG, Duration::ZERO).await,
        "receive before the delay",
    );
    assert!(
        early.is_empty(),
        "a message released with a delay is not visible before it ends"
    );
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        1,
        "depth counts delayed messages"
    );
    let d2 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(
        d2.len(),
        1,
        "a message released with a delay is delivered after it"
    );
    assert_eq!(d2[0].message, ms[0], "the delayed message comes back");
    assert_eq!(
        d2[0].delivery_count, 2,
        "the delivery after a release counts 2"
    );
    must(queue.ack(&d2).await, "ack");
}

async fn stale_ack(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("stale");
    let qs = vec![q.clone()];
    let ms = messages(1);
    must(queue.enqueue(&q, &ms).await, "enqueue");
    let d1 = receive_n(queue, &qs, 1, opts.lease, opts).await;
    assert_eq!(d1.len(), 1, "receive");
    let d2 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(d2.len(), 1, "redelivered after the lease");
    // The stale ack may fail or do nothing; it must not remove the message.
    let _ = queue.ack(&d1).await;
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        1,
        "a stale ack does not remove a message delivered again since"
    );
    must(
        queue.release(&d2[0], Duration::ZERO).await,
        "release of the current delivery",
    );
    let d3 = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(d3.len(), 1, "the message survives a stale ack");
    assert_eq!(d3[0].message, ms[0], "the same message");
    assert_eq!(d3[0].delivery_count, 3, "third delivery");
    must(queue.ack(&d3).await, "ack");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "acked by its current receipt"
    );
}

async fn receive_wakes_on_enqueue(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("wake");
    let qs = vec![q.clone()];
    let ms = messages(1);
    // The receive may wait far longer than the suite's patience; a backend
    // that wakes waiters returns once the message is enqueued, long before.
    let wait = opts.patience * 6;
    let receive = tokio::time::timeout(opts.patience, queue.receive(&qs, 1, LONG, wait));
    let (received, enqueued) = tokio::join!(receive, async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        queue.enqueue(&q, &ms).await
    });
    must(enqueued, "enqueue while a receiver waits");
    let Ok(received) = received else {
        panic!(
            "a receive waiting up to {wait:?} was not woken by an enqueue from another task \
             within {:?}: receivers must return as soon as a message is available",
            opts.patience
        );
    };
    let ds = must(received, "receive while waiting");
    assert_eq!(
        message_list(&ds),
        ms,
        "a waiting receive returns a message enqueued by another task"
    );
    must(queue.ack(&ds).await, "ack");
}

async fn depth(queue: &dyn Queue, opts: &QueueSuiteOptions) {
    let q = queue_name("depth");
    let qs = vec![q.clone()];
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "a new queue has depth 0"
    );
    must(queue.enqueue(&q, &messages(2)).await, "enqueue");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        2,
        "depth after enqueue"
    );
    let d = receive_n(queue, &qs, 1, LONG, opts).await;
    assert_eq!(d.len(), 1, "receive");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        2,
        "depth counts leased messages"
    );
    must(queue.ack(&d).await, "ack");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        1,
        "depth after one ack"
    );
    let d = receive_n(queue, &qs, 1, LONG, opts).await;
    must(queue.ack(&d).await, "ack");
    assert_eq!(
        must(queue.depth(&q).await, "depth"),
        0,
        "depth after every ack"
    );
}
