//! [`SqsQueue`]: flotilla's queue on Amazon SQS.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
    MessageSystemAttributeName, QueueAttributeName, SendMessageBatchRequestEntry,
};
use flotilla::hash::fnv1a;
use flotilla::{Delivery, Error, ErrorKind, Message, Queue, Result};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::settings::SqsSettings;
use flotilla_aws::{map_sdk_error, sdk_config};

/// SQS batch calls take at most ten entries.
const BATCH: usize = 10;
/// Longest visibility timeout SQS accepts (12 hours).
const MAX_VISIBILITY: u64 = 43_200;
/// Attempts at the failed entries of a batch call.
const BATCH_ATTEMPTS: u32 = 4;

/// The SQS queue name of flotilla queue `queue`: `<namespace>-<queue>`.
///
/// SQS names are 1 to 80 of `[A-Za-z0-9_-]`. A queue name that is not
/// (a cluster named `gpu.large`, say) has its other characters replaced by
/// `_` and a hash of the original appended, so two clusters never share an
/// SQS queue.
pub fn queue_name(namespace: &str, queue: &str) -> String {
    let plain = format!("{namespace}-{queue}");
    let valid = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if plain.len() <= 80 && plain.chars().all(valid) {
        return plain;
    }
    let cleaned: String = plain
        .chars()
        .map(|c| if valid(c) { c } else { '_' })
        .take(80 - 17)
        .collect();
    format!("{cleaned}-{:016x}", fnv1a(queue.as_bytes()))
}

fn secs_ceil(d: Duration) -> u64 {
    let s = d.as_secs();
    if d.subsec_nanos() > 0 { s + 1 } else { s }
}

fn visibility(d: Duration) -> i32 {
    // Bounded by MAX_VISIBILITY, so the cast cannot truncate.
    secs_ceil(d).min(MAX_VISIBILITY) as i32
}

/// How much earlier than SQS this side considers a lease ended: SQS starts
/// the visibility timeout a little before the response arrives here.
fn lease_margin(lease: Duration) -> Duration {
    (lease / 4).min(Duration::from_millis(500))
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis().min(u128::from(u64::MAX)) as u64)
        .unwrap_or(0)
}

/// A delivery's receipt: when its lease ends (Unix ms, conservatively) and
/// the SQS receipt handle, as `<ms>|<handle>`.
fn encode_receipt(lease_ends: SystemTime, handle: &str) -> String {
    format!("{}|{handle}", unix_ms(lease_ends))
}

/// The SQS receipt handle of a receipt, if its lease has not ended. SQS
/// accepts an old receipt handle of a message delivered again since, and
/// would delete or hide the newer delivery's message: a receipt whose lease
/// ended is therefore never used (the message comes back and is handled
/// then).
fn live_handle(receipt: &str) -> Result<Option<&str>> {
    let Some((ms, handle)) = receipt.split_once('|') else {
        return Err(Error::invalid("receipt: not a receipt of this queue"));
    };
    let ends: u64 = ms
        .parse()
        .map_err(|_| Error::invalid("receipt: not a receipt of this queue"))?;
    if unix_ms(SystemTime::now()) >= ends {
        Ok(None)
    } else {
        Ok(Some(handle))
    }
}

/// A delivery received by a poll that no `receive` call has taken yet.
struct Buffered {
    delivery: Delivery,
    received: Instant,
    lease: Duration,
}

#[derive(Default)]
struct Buffer {
    ready: VecDeque<Buffered>,
    /// Queues with a long poll in flight.
    polling: HashSet<String>,
    /// Failures of background polls not yet reported.
    errors: Vec<Error>,
    /// Queues whose last poll failed, and when: not polled again for a while.
    failed: HashMap<String, Instant>,
}

struct Shared {
    client: Client,
    settings: SqsSettings,
    /// flotilla queue name → SQS queue URL.
    urls: RwLock<HashMap<String, String>>,
    buffer: Mutex<Buffer>,
    arrived: Notify,
}

/// flotilla's [`Queue`] on Amazon SQS: one standard SQS queue per flotilla
/// queue (cluster).
///
/// # Behaviour
/// - Queues are created on first use (`GetQueueUrl`, else `CreateQueue`
///   with the configured retention and visibility timeout); URLs are cached.
/// - `receive` long-polls every named queue at once (`WaitTimeSeconds` up
///   to 20 s, ten messages per call) and returns as soon as any has
///   messages. A poll still in flight when `receive` returns is not
///   cancelled (cancelling would hide what SQS already picked for it until
///   its lease ends): what it brings is kept for the next `receive`, with
///   its lease renewed when handed out.
/// - The lease is the message's visibility timeout; `delivery_count` is
///   SQS's `ApproximateReceiveCount`.
/// - `ack` is `DeleteMessageBatch`, ten at a time; acking a stale receipt
///   does nothing. `release` is `ChangeMessageVisibility`.
/// - Bodies are `{"run_id": ..., "attempt": ...}`; anything else is logged
///   and deleted.
/// - Order is best effort (SQS standard queues).
#[derive(Clone)]
pub struct SqsQueue {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqsQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqsQueue")
            .field("namespace", &self.shared.settings.queue_namespace)
            .field("endpoint_url", &self.shared.settings.endpoint_url)
            .finish()
    }
}

impl SqsQueue {
    /// A queue with a client built from `settings` (region, endpoint,
    /// credentials, retries).
    pub async fn new(settings: SqsSettings) -> Result<Self> {
        settings.validate()?;
        let config = sdk_config(
            &settings.region,
            settings.endpoint_url.as_deref(),
            settings.credentials.as_ref(),
            settings.max_attempts,
        )
        .await;
        Self::from_client(Client::new(&config), settings)
    }

    /// A queue using an existing client; `settings` still name the queues.
    pub fn from_client(client: Client, settings: SqsSettings) -> Result<Self> {
        settings.validate()?;
        Ok(SqsQueue {
            shared: Arc::new(Shared {
                client,
                settings,
                urls: RwLock::new(HashMap::new()),
                buffer: Mutex::new(Buffer::default()),
                arrived: Notify::new(),
            }),
        })
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.shared.client
    }

    /// The SQS queue name used for flotilla queue `queue`.
    pub fn sqs_queue_name(&self, queue: &str) -> String {
        queue_name(&self.shared.settings.queue_namespace, queue)
    }

    /// The URL of `queue`'s SQS queue, creating the queue when `create`.
    /// `NotFound` when it does not exist and `create` is false.
    pub async fn queue_url(&self, queue: &str, create: bool) -> Result<String> {
        self.shared.queue_url(queue, create).await
    }
}

impl Shared {
    fn cached_url(&self, queue: &str) -> Option<String> {
        self.urls.read().ok().and_then(|m| m.get(queue).cloned())
    }

    async fn queue_url(&self, queue: &str, create: bool) -> Result<String> {
        if queue.is_empty() {
            return Err(Error::invalid("queue: must not be empty"));
        }
        if let Some(url) = self.cached_url(queue) {
            return Ok(url);
        }
        let name = queue_name(&self.settings.queue_namespace, queue);
        let found = self.client.get_queue_url().queue_name(&name).send().await;
        let url = match found {
            Ok(out) => out.queue_url().map(str::to_string),
            Err(e) => {
                let err = map_sdk_error("GetQueueUrl", e);
                if err.kind() != ErrorKind::NotFound {
                    return Err(err);
                }
                if !create {
                    return Err(Error::not_found(format!(
                        "queue: SQS queue '{name}' does not exist"
                    )));
                }
                let out = self
                    .client
                    .create_queue()
                    .queue_name(&name)
                    .attributes(
                        QueueAttributeName::MessageRetentionPeriod,
                        self.settings.retention_seconds.to_string(),
                    )
                    .attributes(
                        QueueAttributeName::VisibilityTimeout,
                        self.settings.visibility_timeout_seconds.to_string(),
                    )
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("CreateQueue", e))?;
                tracing::info!(queue = %queue, sqs_queue = %name, "created SQS queue");
                out.queue_url().map(str::to_string)
            }
        };
        let url =
            url.ok_or_else(|| Error::internal(format!("SQS returned no URL for '{name}'")))?;
        if let Ok(mut m) = self.urls.write() {
            m.insert(queue.to_string(), url.clone());
        }
        Ok(url)
    }

    /// One ReceiveMessage on `queue`.
    async fn poll(
        &self,
        queue: &str,
        max: usize,
        lease: Duration,
        wait_secs: u64,
    ) -> Result<Vec<Delivery>> {
        let url = self.queue_url(queue, true).await?;
        let out = self
            .client
            .receive_message()
            .queue_url(&url)
            .max_number_of_messages(max.clamp(1, BATCH) as i32)
            .visibility_timeout(visibility(lease))
            .wait_time_seconds(wait_secs.min(20) as i32)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .send()
            .await
            .map_err(|e| map_sdk_error("ReceiveMessage", e))?;
        let mut deliveries = Vec::new();
        for m in out.messages() {
            let Some(receipt) = m.receipt_handle() else {
                continue;
            };
            let body = m.body().unwrap_or("");
            match serde_json::from_str::<Message>(body) {
                Ok(message) if !message.run_id.is_empty() && message.attempt > 0 => {
                    let delivery_count = m
                        .attributes()
                        .and_then(|a| a.get(&MessageSystemAttributeName::ApproximateReceiveCount))
                        .and_then(|c| c.parse().ok())
                        .unwrap_or(1);
                    // The real receipt is set when the delivery is handed out.
                    deliveries.push(Delivery {
                        queue: queue.to_string(),
                        message,
                        receipt: receipt.to_string(),
                        delivery_count,
                        claimed: None,
                    });
                }
                _ => {
                    let shown: String = body.chars().take(200).collect();
                    tracing::warn!(queue = %queue, body = %shown, "malformed message deleted");
                    if let Err(e) = self
                        .client
                        .delete_message()
                        .queue_url(&url)
                        .receipt_handle(receipt)
                        .send()
                        .await
                    {
                        tracing::warn!(queue = %queue, error = %map_sdk_error("DeleteMessage", e), "deleting a malformed message failed");
                    }
                }
            }
        }
        Ok(deliveries)
    }

    fn store(&self, queue: &str, result: Result<Vec<Delivery>>, lease: Duration, at: Instant) {
        if let Ok(mut b) = self.buffer.lock() {
            b.polling.remove(queue);
            match result {
                Ok(ds) => {
                    b.failed.remove(queue);
                    b.ready.extend(ds.into_iter().map(|delivery| Buffered {
                        delivery,
                        received: at,
                        lease,
                    }));
                }
                Err(e) => {
                    b.failed.insert(queue.to_string(), Instant::now());
                    b.errors.push(e);
                }
            }
        }
        self.arrived.notify_waiters();
    }

    /// Takes up to `max` buffered deliveries of `queues` whose lease has
    /// not run out; drops those that did (SQS delivers them again).
    fn take(&self, queues: &[String], max: usize) -> Vec<Buffered> {
        let Ok(mut b) = self.buffer.lock() else {
            return Vec::new();
        };
        let mut taken = Vec::new();
        let mut kept = VecDeque::new();
        while let Some(item) = b.ready.pop_front() {
            let fresh = item.received.elapsed() + lease_margin(item.lease) < item.lease;
            if !fresh {
                continue;
            }
            if taken.len() < max && queues.contains(&item.delivery.queue) {
                taken.push(item);
            } else {
                kept.push_back(item);
            }
        }
        b.ready = kept;
        taken
    }

    fn take_error(&self) -> Option<Error> {
        self.buffer.lock().ok().and_then(|mut b| b.errors.pop())
    }

    /// Queues among `queues` to poll now: not polled already, and not
    /// failed within the last second. Marks them as polled.
    fn claim(&self, queues: &[String]) -> Vec<String> {
        let Ok(mut b) = self.buffer.lock() else {
            return Vec::new();
        };
        let mut claimed = Vec::new();
        for q in queues {
            let cooling = b
                .failed
                .get(q)
                .is_some_and(|at| at.elapsed() < Duration::from_secs(1));
            if !cooling && !b.polling.contains(q) {
                b.polling.insert(q.clone());
                claimed.push(q.clone());
            }
        }
        claimed
    }

    /// Renews the lease of deliveries that waited in the buffer, and turns
    /// them into deliveries whose receipts carry their lease's end.
    async fn hand_out(&self, taken: Vec<Buffered>, lease: Duration) -> Vec<Delivery> {
        let mut by_queue: HashMap<&str, Vec<&Buffered>> = HashMap::new();
        for b in &taken {
            if b.received.elapsed() >= Duration::from_secs(1) || b.lease != lease {
                by_queue
                    .entry(b.delivery.queue.as_str())
                    .or_default()
                    .push(b);
            }
        }
        let renewed_at = Instant::now();
        let mut renewed: HashSet<String> = HashSet::new();
        for (queue, items) in by_queue {
            let Some(url) = self.cached_url(queue) else {
                continue;
            };
            for chunk in items.chunks(BATCH) {
                let mut req = self
                    .client
                    .change_message_visibility_batch()
                    .queue_url(&url);
                for (i, b) in chunk.iter().enumerate() {
                    if let Ok(entry) = ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(&b.delivery.receipt)
                        .visibility_timeout(visibility(lease))
                        .build()
                    {
                        req = req.entries(entry);
                    }
                }
                match req.send().await {
                    Ok(out) => {
                        for ok in out.successful() {
                            if let Some(b) =
                                ok.id().parse::<usize>().ok().and_then(|i| chunk.get(i))
                            {
                                renewed.insert(b.delivery.receipt.clone());
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(queue = %queue, error = %map_sdk_error("ChangeMessageVisibilityBatch", e), "renewing leases failed");
                    }
                }
            }
        }
        let now_wall = SystemTime::now();
        taken
            .into_iter()
            .map(|b| {
                let (start, len) = if renewed.contains(&b.delivery.receipt) {
                    (renewed_at, lease)
                } else {
                    (b.received, b.lease)
                };
                let left = (start + len)
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(lease_margin(len));
                let mut d = b.delivery;
                d.receipt = encode_receipt(now_wall + left, &d.receipt);
                d
            })
            .collect()
    }
}

#[async_trait]
impl Queue for SqsQueue {
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        let s = &self.shared;
        let url = s.queue_url(queue, true).await?;
        for chunk in messages.chunks(BATCH) {
            let mut pending: Vec<(usize, String)> = Vec::with_capacity(chunk.len());
            for (i, m) in chunk.iter().enumerate() {
                let body = serde_json::to_string(m)
                    .map_err(|e| Error::internal(format!("message: {e}")))?;
                pending.push((i, body));
            }
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                let mut req = s.client.send_message_batch().queue_url(&url);
                for (i, body) in &pending {
                    let entry = SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .build()
                        .map_err(|e| Error::internal(format!("message: {e}")))?;
                    req = req.entries(entry);
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("SendMessageBatch", e))?;
                let failed: Vec<_> = out.failed().to_vec();
                if failed.is_empty() {
                    break;
                }
                if let Some(f) = failed.iter().find(|f| f.sender_fault()) {
                    return Err(Error::invalid(format!(
                        "message: SQS refused it: {}: {}",
                        f.code(),
                        f.message().unwrap_or("")
                    )));
                }
                if attempt >= BATCH_ATTEMPTS {
                    return Err(Error::unavailable(format!(
                        "SendMessageBatch: {} of {} messages failed on queue {queue}",
                        failed.len(),
                        chunk.len()
                    )));
                }
                let ids: HashSet<&str> = failed.iter().map(|f| f.id()).collect();
                pending.retain(|(i, _)| ids.contains(i.to_string().as_str()));
                tokio::time::sleep(backoff(attempt)).await;
            }
        }
        Ok(())
    }

    async fn receive(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if queues.is_empty() || max == 0 {
            return Ok(Vec::new());
        }
        let s = &self.shared;
        let deadline = Instant::now() + wait;
        let mut polled = false;
        loop {
            let notified = s.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let taken = s.take(queues, max);
            if !taken.is_empty() {
                return Ok(s.hand_out(taken, lease).await);
            }
            if let Some(e) = s.take_error() {
                return Err(e);
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < Duration::from_secs(1) {
                if polled {
                    return Ok(Vec::new());
                }
                // Short polls, awaited: the caller does not want to wait.
                polled = true;
                let claimed = s.claim(queues);
                let results =
                    futures::future::join_all(claimed.iter().map(|q| s.poll(q, max, lease, 0)))
                        .await;
                let at = Instant::now();
                for (q, r) in claimed.iter().zip(results) {
                    s.store(q, r, lease, at);
                }
                if claimed.is_empty() {
                    // Every queue is being long-polled already: wait for
                    // those or the deadline.
                    tokio::select! {
                        _ = notified => {}
                        _ = tokio::time::sleep_until(deadline) => {}
                    }
                }
                continue;
            }
            let wait_secs = secs_ceil(remaining).min(u64::from(s.settings.max_wait_seconds));
            for q in s.claim(queues) {
                polled = true;
                let shared = self.shared.clone();
                tokio::spawn(async move {
                    let r = shared.poll(&q, max, lease, wait_secs).await;
                    // A long poll returns as soon as messages are there: the
                    // lease started about now.
                    shared.store(&q, r, lease, Instant::now());
                });
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => {}
                // Queues cooling down after a failure are claimed again.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        let s = &self.shared;
        let mut by_queue: HashMap<&str, Vec<&str>> = HashMap::new();
        for d in deliveries {
            match live_handle(&d.receipt)? {
                Some(h) => by_queue.entry(d.queue.as_str()).or_default().push(h),
                None => tracing::debug!(
                    run_id = %d.message.run_id,
                    "ack after the lease ended ignored; the message comes back and is acked then"
                ),
            }
        }
        let mut first_error = None;
        for (queue, items) in by_queue {
            let url = match s.queue_url(queue, false).await {
                Ok(u) => u,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for chunk in items.chunks(BATCH) {
                let mut pending: Vec<(usize, &str)> = chunk.iter().copied().enumerate().collect();
                let mut attempt = 0;
                while !pending.is_empty() {
                    attempt += 1;
                    let mut req = s.client.delete_message_batch().queue_url(&url);
                    for (i, handle) in &pending {
                        let entry = DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(*handle)
                            .build()
                            .map_err(|e| Error::internal(format!("receipt: {e}")))?;
                        req = req.entries(entry);
                    }
                    let out = req
                        .send()
                        .await
                        .map_err(|e| map_sdk_error("DeleteMessageBatch", e))?;
                    // Sender faults are stale or unknown receipts: the
                    // message was delivered again, or is gone already.
                    let retry: HashSet<String> = out
                        .failed()
                        .iter()
                        .filter(|f| !f.sender_fault())
                        .map(|f| f.id().to_string())
                        .collect();
                    for f in out.failed().iter().filter(|f| f.sender_fault()) {
                        tracing::debug!(queue = %queue, code = %f.code(), "ack of a stale delivery ignored");
                    }
                    if retry.is_empty() {
                        break;
                    }
                    if attempt >= BATCH_ATTEMPTS {
                        first_error.get_or_insert(Error::unavailable(format!(
                            "DeleteMessageBatch: {} deletes failed on queue {queue}",
                            retry.len()
                        )));
                        break;
                    }
                    pending.retain(|(i, _)| retry.contains(&i.to_string()));
                    tokio::time::sleep(backoff(attempt)).await;
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let s = &self.shared;
        let Some(handle) = live_handle(&delivery.receipt)? else {
            // The lease ended: the message is visible again already.
            return Ok(());
        };
        let url = s.queue_url(&delivery.queue, false).await?;
        match s
            .client
            .change_message_visibility()
            .queue_url(&url)
            .receipt_handle(handle)
            .visibility_timeout(visibility(delay))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let code = e.code().unwrap_or("");
                if code.contains("MessageNotInflight") || code.contains("ReceiptHandleIsInvalid") {
                    // Already visible again or redelivered: nothing to do.
                    tracing::debug!(queue = %delivery.queue, code = %code, "release of a stale delivery ignored");
                    return Ok(());
                }
                Err(map_sdk_error("ChangeMessageVisibility", e))
            }
        }
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        let s = &self.shared;
        let url = match s.queue_url(queue, false).await {
            Ok(u) => u,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(e),
        };
        let out = s
            .client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
            .send()
            .await
            .map_err(|e| map_sdk_error("GetQueueAttributes", e))?;
        Ok(out
            .attributes()
            .map(|a| {
                a.values()
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .unwrap_or(0))
    }
}

/// The backoff before the failed entries of a batch call are sent again:
/// the project's one backoff ([`flotilla::RetryPolicy::backoff`]) from
/// 50 ms, capped at 3.2 s.
fn backoff(attempt: u32) -> Duration {
    flotilla::RetryPolicy {
        base_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(3_200),
        ..flotilla::RetryPolicy::default()
    }
    .backoff(attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_valid_and_distinct() {
        assert_eq!(queue_name("flotilla", "default"), "flotilla-default");
        let a = queue_name("flotilla", "gpu.large");
        let b = queue_name("flotilla", "gpu_large");
        assert_ne!(a, b);
        assert!(a.starts_with("flotilla-gpu_large-"), "{a}");
        // Pinned: existing queues must keep their names.
        assert_eq!(a, "flotilla-gpu_large-46e49ca8786c1f50");
        let long = queue_name("flotilla", &"x".repeat(200));
        assert!(long.len() <= 80, "{}", long.len());
        for n in [a, b, long] {
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            );
        }
    }

    #[test]
    fn visibility_rounds_up_and_is_capped() {
        assert_eq!(visibility(Duration::ZERO), 0);
        assert_eq!(visibility(Duration::from_millis(1)), 1);
        assert_eq!(visibility(Duration::from_secs(60)), 60);
        assert_eq!(visibility(Duration::from_secs(100_000)), 43_200);
    }
}
