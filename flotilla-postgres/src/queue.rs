//! `PgQueue`: the `Queue` trait on a PostgreSQL table.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flotilla::{Delivery, Error, Message, Queue, Result};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, OnceCell};

use crate::error::{check_text, from_sqlx};

/// The NOTIFY channel the insert trigger signals on.
pub(crate) const CHANNEL: &str = "flotilla_queue";

/// How often receivers look while the listener connection is down, or for
/// messages that become visible later (released with a delay, expired
/// leases) when nothing says when.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// At-least-once queues in the table `queue_messages`.
///
/// - `receive` claims visible rows with `FOR UPDATE SKIP LOCKED` and moves
///   their `visible_at` past the lease, in one short statement; it waits
///   for a NOTIFY (sent by a trigger on insert) or for the next row to
///   become visible, up to `wait`.
/// - Receipts are `"<row id>:<delivery number>"`: `ack` and `release` only
///   touch the row if it was not delivered again since.
/// - Enqueuing `(run_id, attempt)` already pending on that queue is a no-op.
///
/// Cheap to clone; clones share the listener.
#[derive(Clone)]
pub struct PgQueue {
    pool: PgPool,
    domain: Arc<str>,
    wake: Arc<Wake>,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("domain", &self.domain)
            .field("listening", &self.wake.up.load(Ordering::Relaxed))
            .finish()
    }
}

/// The listener's state, shared by clones.
#[derive(Default)]
struct Wake {
    /// Wakes waiting receivers.
    notify: Notify,
    /// Whether the LISTEN connection is up.
    up: AtomicBool,
    /// The listener task is started on first receive.
    started: OnceCell<()>,
    /// Ends the listener task when the last clone is dropped.
    stop: Arc<Notify>,
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.notify_one();
    }
}

impl PgQueue {
    /// A queue on `pool` with its own transaction domain (use
    /// [`crate::PgStore::queue`] for transactional execute).
    pub fn new(pool: PgPool) -> PgQueue {
        PgQueue::with_domain(
            pool,
            Arc::from(format!("postgres-queue:{}", uuid::Uuid::now_v7())),
        )
    }

    pub(crate) fn with_domain(pool: PgPool, domain: Arc<str>) -> PgQueue {
        PgQueue {
            pool,
            domain,
            wake: Arc::new(Wake::default()),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Whether the LISTEN connection is up (false before the first receive
    /// and while reconnecting).
    pub fn is_listening(&self) -> bool {
        self.wake.up.load(Ordering::Relaxed)
    }

    async fn ensure_listener(&self) {
        self.wake
            .started
            .get_or_init(|| async {
                let pool = self.pool.clone();
                let wake = Arc::downgrade(&self.wake);
                let stop = self.wake.stop.clone();
                tokio::spawn(listen_loop(pool, wake, stop));
            })
            .await;
    }

    async fn claim(&self, queues: &[String], max: usize, lease: Duration) -> Result<Vec<Delivery>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let rows = sqlx::query(
            "WITH c AS ( \
               SELECT m.id FROM unnest($1::text[]) AS q(name) \
               CROSS JOIN LATERAL ( \
                 SELECT id, visible_at FROM queue_messages \
                 WHERE queue = q.name AND visible_at <= now() \
                 ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED \
               ) AS m \
               ORDER BY m.visible_at, m.id LIMIT $2 \
             ) \
             UPDATE queue_messages AS t \
             SET visible_at = now() + make_interval(secs => $3), \
                 deliveries = t.deliveries + 1 \
             FROM c WHERE t.id = c.id \
             RETURNING t.id, t.queue, t.run_id, t.attempt, t.deliveries, t.enqueued_at",
        )
        .bind(queues)
        .bind(max)
        .bind(lease.as_secs_f64())
        .fetch_all(&self.pool)
        .await
        .map_err(from_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: i64 = r.try_get("id").map_err(from_sqlx)?;
            let n: i32 = r.try_get("deliveries").map_err(from_sqlx)?;
            let attempt: i32 = r.try_get("attempt").map_err(from_sqlx)?;
            out.push((
                id,
                Delivery {
                    queue: r.try_get("queue").map_err(from_sqlx)?,
                    message: Message::new(
                        r.try_get::<String, _>("run_id").map_err(from_sqlx)?,
                        u32::try_from(attempt).unwrap_or_default(),
                    ),
                    receipt: format!("{id}:{n}"),
                    delivery_count: u32::try_from(n).unwrap_or_default(),
                },
            ));
        }
        // FIFO across the queues asked for (UPDATE ... RETURNING has no order).
        out.sort_by_key(|(id, _)| *id);
        Ok(out.into_iter().map(|(_, d)| d).collect())
    }

    /// Seconds until the next message of `queues` becomes visible, if any.
    async fn next_visible(&self, queues: &[String]) -> Result<Option<f64>> {
        let secs: Option<f64> = sqlx::query_scalar(
            "SELECT EXTRACT(EPOCH FROM (min(visible_at) - clock_timestamp()))::float8 \
             FROM queue_messages WHERE queue = ANY($1::text[])",
        )
        .bind(queues)
        .fetch_one(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(secs)
    }
}

/// Parses a receipt `"<id>:<n>"`.
fn parse_receipt(receipt: &str) -> Result<(i64, i32)> {
    let bad = || {
        Error::invalid(format!(
            "receipt: '{receipt}' is not a PostgreSQL queue receipt"
        ))
    };
    let (id, n) = receipt.split_once(':').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        n.parse().map_err(|_| bad())?,
    ))
}

/// Inserts messages in one statement; pending duplicates are skipped.
pub(crate) async fn insert_messages<'e, E>(exec: E, queue: &str, messages: &[Message]) -> Result<()>
where
    E: sqlx::PgExecutor<'e>,
{
    check_text("queue", queue)?;
    if queue.is_empty() {
        return Err(Error::invalid("queue: must not be empty"));
    }
    let mut run_ids = Vec::with_capacity(messages.len());
    let mut attempts = Vec::with_capacity(messages.len());
    for m in messages {
        check_text("run_id", &m.run_id)?;
        run_ids.push(m.run_id.as_str());
        attempts
            .push(i32::try_from(m.attempt).map_err(|_| Error::invalid("attempt: out of range"))?);
    }
    sqlx::query(
        "INSERT INTO queue_messages (queue, run_id, attempt) \
         SELECT $1, r, a FROM unnest($2::text[], $3::int4[]) WITH ORDINALITY AS u(r, a, o) ORDER BY o \
         ON CONFLICT (queue, run_id, attempt) DO NOTHING",
    )
    .bind(queue)
    .bind(run_ids)
    .bind(attempts)
    .execute(exec)
    .await
    .map_err(from_sqlx)?;
    Ok(())
}

/// Keeps one LISTEN connection up while any clone of the queue lives, and
/// wakes every waiting receiver on each notification or reconnect.
async fn listen_loop(pool: PgPool, wake: std::sync::Weak<Wake>, stop: Arc<Notify>) {
    let signal = |up: Option<bool>| -> bool {
        let Some(w) = wake.upgrade() else {
            return false;
        };
        if let Some(up) = up {
            w.up.store(up, Ordering::Relaxed);
        }
        w.notify.notify_waiters();
        true
    };
    let mut backoff = Duration::from_millis(100);
    loop {
        let connected = async {
            let mut l = PgListener::connect_with(&pool).await?;
            l.listen(CHANNEL).await?;
            Ok::<PgListener, sqlx::Error>(l)
        };
        let connected = tokio::select! {
            r = connected => r,
            _ = stop.notified() => return,
        };
        let mut listener = match connected {
            Ok(l) => l,
            Err(e) => {
                if !signal(Some(false)) || pool.is_closed() {
                    return;
                }
                tracing::warn!(error = %e, "queue listener cannot connect; polling meanwhile");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.notified() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        // Notifications may have been missed while down: wake everyone.
        if !signal(Some(true)) {
            return;
        }
        loop {
            let got = tokio::select! {
                r = listener.try_recv() => r,
                _ = stop.notified() => return,
            };
            match got {
                Ok(Some(_)) => {
                    if !signal(None) {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    // Connection lost: receivers poll until reconnected.
                    if !signal(Some(false)) {
                        return;
                    }
                    tracing::warn!("queue listener lost its connection; reconnecting");
                    break;
                }
            }
        }
    }
}

#[async_trait]
impl Queue for PgQueue {
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()> {
        if messages.is_empty() {
            return Ok(());
        }
        insert_messages(&self.pool, queue, messages).await
    }

    async fn receive(
        &self,
        queues: &[String],
        max: usize,
        lease: Duration,
        wait: Duration,
    ) -> Result<Vec<Delivery>> {
        if queues.is_empty() || max == 0 {
            tokio::time::sleep(wait).await;
            return Ok(Vec::new());
        }
        for q in queues {
            check_text("queues", q)?;
        }
        self.ensure_listener().await;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so a NOTIFY between the
            // claim and the wait is not lost.
            let notified = self.wake.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let got = self.claim(queues, max, lease).await?;
            let now = tokio::time::Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            let mut sleep = deadline - now;
            if !self.is_listening() {
                sleep = sleep.min(FALLBACK_POLL);
            }
            if let Some(secs) = self.next_visible(queues).await?
                && secs.is_finite()
            {
                let until = Duration::from_secs_f64(secs.max(0.0)) + Duration::from_millis(1);
                sleep = sleep.min(until);
            }
            tokio::select! {
                _ = &mut notified => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }

    async fn ack(&self, deliveries: &[Delivery]) -> Result<()> {
        if deliveries.is_empty() {
            return Ok(());
        }
        let mut ids = Vec::with_capacity(deliveries.len());
        let mut ns = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let (id, n) = parse_receipt(&d.receipt)?;
            ids.push(id);
            ns.push(n);
        }
        sqlx::query(
            "DELETE FROM queue_messages AS m USING unnest($1::int8[], $2::int4[]) AS a(id, n) \
             WHERE m.id = a.id AND m.deliveries = a.n",
        )
        .bind(ids)
        .bind(ns)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let (id, n) = parse_receipt(&delivery.receipt)?;
        sqlx::query(
            "WITH u AS ( \
               UPDATE queue_messages SET visible_at = clock_timestamp() + make_interval(secs => $3) \
               WHERE id = $1 AND deliveries = $2 RETURNING queue \
             ) SELECT pg_notify($4, queue) FROM u",
        )
        .bind(id)
        .bind(n)
        .bind(delay.as_secs_f64())
        .bind(CHANNEL)
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        check_text("queue", queue)?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE queue = $1")
            .bind(queue)
            .fetch_one(&self.pool)
            .await
            .map_err(from_sqlx)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    fn transaction_domain(&self) -> Option<&str> {
        Some(&self.domain)
    }
}
