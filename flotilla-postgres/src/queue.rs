//! `PgQueue`: the `Queue` trait on a PostgreSQL table.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use async_trait::async_trait;
use flotilla::{Claimed, Definition, Delivery, Error, Message, Queue, Result};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Row};
use tokio::sync::{Notify, OnceCell};

use crate::error::{check_text, from_sqlx};
use crate::store::{def_from_column, run_from_columns};

/// The NOTIFY channel enqueues and immediate releases signal on.
pub(crate) const CHANNEL: &str = "flotilla_queue";

/// How often receivers look while the listener connection is down, or for
/// messages that become visible later (released with a delay, expired
/// leases) when nothing says when.
const FALLBACK_POLL: Duration = Duration::from_millis(500);

/// At-least-once queues in the table `queue_messages`.
///
/// - `receive` claims visible rows with `FOR UPDATE SKIP LOCKED` and moves
///   their `visible_at` past the lease, in one short statement that locks
///   at most `max` rows; it waits for a wake-up or for the next row to
///   become visible, up to `wait`.
/// - Wake-ups: after an enqueue commits, receivers of this process (clones,
///   and queues of the same [`crate::PgStore`]) are woken at once, and one
///   `NOTIFY` per queue is sent for other processes from a background task,
///   after the commit and outside the enqueuing transaction (so commits
///   that enqueue do not serialize on the server's notification lock);
///   enqueues made while a NOTIFY is in flight share the next one. A
///   release with a delay sends no NOTIFY: this process's receivers are
///   woken when the delay ends, others see the message when they next look
///   (`wait` at the latest). A crash between commit and NOTIFY delays other
///   processes' pickup by at most their `wait`; nothing is lost.
/// - Receipts are `"<row id>:<delivery number>"`: `ack` and `release` only
///   touch the row if it was not delivered again since.
/// - Enqueuing `(run_id, attempt)` already pending on that queue is a no-op.
/// - The store's own queue ([`crate::PgStore::queue`]) reads each claimed
///   message's run and definition in the claiming statement and attaches
///   them ([`flotilla::Claimed`]), so the submit worker reads neither.
///
/// Cheap to clone; clones share the listener.
#[derive(Clone)]
pub struct PgQueue {
    pool: PgPool,
    domain: Arc<str>,
    wake: Arc<Wake>,
    /// Whether claims also read the run and definition ([`Claimed`]): the
    /// store's own queue ([`crate::PgStore::queue`]).
    reads_runs: bool,
}

impl std::fmt::Debug for PgQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgQueue")
            .field("domain", &self.domain)
            .field("listening", &self.wake.up.load(Ordering::Relaxed))
            .finish()
    }
}

/// The listener's and the notifier's state, shared by clones (and by a
/// store and the queues made from it).
#[derive(Default)]
pub(crate) struct Wake {
    /// Wakes waiting receivers.
    notify: Notify,
    /// Whether the LISTEN connection is up.
    up: AtomicBool,
    /// The listener task is started on first receive.
    started: OnceCell<()>,
    /// Ends the listener task when the last clone is dropped.
    stop: Arc<Notify>,
    /// Queues enqueued to since the notifier last sent.
    dirty: Mutex<BTreeSet<String>>,
    /// Wakes the notifier task (and ends it once the `Wake` is gone).
    kick: Arc<Notify>,
    /// The notifier task is started on first enqueue.
    notifier: OnceLock<()>,
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.stop.notify_one();
        self.kick.notify_one();
    }
}

impl Wake {
    /// After a commit that enqueued on `queue`: wakes this process's
    /// receivers now and has the notifier send a NOTIFY for the others.
    pub(crate) fn enqueued(self: &Arc<Self>, pool: &PgPool, queue: &str) {
        self.notify.notify_waiters();
        if let Ok(mut d) = self.dirty.lock()
            && !d.contains(queue)
        {
            d.insert(queue.to_string());
        }
        self.notifier.get_or_init(|| {
            tokio::spawn(notify_loop(
                pool.clone(),
                Arc::downgrade(self),
                self.kick.clone(),
            ));
        });
        self.kick.notify_one();
    }

    /// Wakes this process's receivers once `delay` has passed.
    fn wake_after(self: &Arc<Self>, delay: Duration) {
        let wake = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(w) = wake.upgrade() {
                w.notify.notify_waiters();
            }
        });
    }
}

/// Sends one NOTIFY per dirty queue, one statement at a time: enqueues that
/// commit while it is in flight are sent together by the next one.
async fn notify_loop(pool: PgPool, wake: Weak<Wake>, kick: Arc<Notify>) {
    loop {
        kick.notified().await;
        let queues: Vec<String> = {
            let Some(w) = wake.upgrade() else { return };
            let Ok(mut d) = w.dirty.lock() else { return };
            std::mem::take(&mut *d).into_iter().collect()
        };
        if queues.is_empty() {
            continue;
        }
        // A wake-up, not data: its commit need not wait for the WAL flush.
        let sent = sqlx::query(
            "SELECT set_config('synchronous_commit', 'off', true), pg_notify($1, q) \
             FROM unnest($2::text[]) AS q",
        )
        .bind(CHANNEL)
        .bind(&queues)
        .execute(&pool)
        .await;
        if let Err(e) = sent {
            if pool.is_closed() {
                return;
            }
            // Other processes' receivers find the messages when their wait
            // ends; nothing is lost.
            tracing::warn!(error = %e, ?queues, "queue NOTIFY failed");
        }
    }
}

impl PgQueue {
    /// A queue on `pool` with its own transaction domain (use
    /// [`crate::PgStore::queue`] for transactional execute).
    pub fn new(pool: PgPool) -> PgQueue {
        PgQueue::with_domain(
            pool,
            Arc::from(format!("postgres-queue:{}", uuid::Uuid::now_v7())),
            Arc::new(Wake::default()),
        )
    }

    pub(crate) fn with_domain(pool: PgPool, domain: Arc<str>, wake: Arc<Wake>) -> PgQueue {
        PgQueue {
            pool,
            domain,
            wake,
            reads_runs: false,
        }
    }

    /// Claims read each message's run and definition in the same statement
    /// and attach them ([`Claimed`]).
    pub(crate) fn reading_runs(mut self) -> PgQueue {
        self.reads_runs = true;
        self
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
        // Locks at most `max` rows. One queue: the skip-locked scan of its
        // index range. Several: the oldest `max` visible ids over all of
        // them are picked without locking (a short index scan per queue),
        // then locked with SKIP LOCKED and re-checked; ids another receiver
        // took meanwhile are skipped, so a claim under contention may
        // return fewer than `max` (never a message twice).
        let sql = if queues.len() == 1 {
            "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)), \
             c AS ( \
               SELECT id FROM queue_messages \
               WHERE queue = ($1::text[])[1] AND visible_at <= now() \
               ORDER BY visible_at, id LIMIT $2 FOR UPDATE SKIP LOCKED \
             ), \
             claimed AS ( \
             UPDATE queue_messages AS t \
             SET visible_at = now() + make_interval(secs => $3), \
                 deliveries = t.deliveries + 1 \
             FROM c, lazy WHERE t.id = c.id \
             RETURNING t.id, t.queue, t.run_id, t.attempt, t.deliveries, t.enqueued_at \
             )"
        } else {
            "WITH lazy AS (SELECT set_config('synchronous_commit', 'off', true)), \
             pick AS ( \
               SELECT m.id FROM unnest($1::text[]) AS q(name) \
               CROSS JOIN LATERAL ( \
                 SELECT id, visible_at FROM queue_messages \
                 WHERE queue = q.name AND visible_at <= now() \
                 ORDER BY visible_at, id LIMIT $2 \
               ) AS m \
               ORDER BY m.visible_at, m.id LIMIT $2 \
             ), c AS ( \
               SELECT id FROM queue_messages \
               WHERE id IN (SELECT id FROM pick) AND visible_at <= now() \
               FOR UPDATE SKIP LOCKED \
             ), \
             claimed AS ( \
             UPDATE queue_messages AS t \
             SET visible_at = now() + make_interval(secs => $3), \
                 deliveries = t.deliveries + 1 \
             FROM c, lazy WHERE t.id = c.id \
             RETURNING t.id, t.queue, t.run_id, t.attempt, t.deliveries, t.enqueued_at \
             )"
        };
        // Then the claimed rows, with their runs and definitions when this
        // queue reads them (one snapshot: a message is only visible once
        // the transaction that made its run committed).
        let select = if self.reads_runs {
            " SELECT claimed.*, r.doc AS run_doc, r.version AS run_version, \
                     d.definition_id AS definition_id, d.doc AS definition_doc \
              FROM claimed \
              LEFT JOIN runs AS r ON r.run_id = claimed.run_id \
              LEFT JOIN definitions AS d ON d.definition_id = r.definition_id"
        } else {
            " SELECT * FROM claimed"
        };
        // Both parts are constants of this function.
        let sql = sqlx::AssertSqlSafe(format!("{sql}{select}"));
        let rows = sqlx::query(sql)
            .bind(queues)
            .bind(max)
            .bind(lease.as_secs_f64())
            .fetch_all(&self.pool)
            .await
            .map_err(from_sqlx)?;
        let mut out = Vec::with_capacity(rows.len());
        // A batch's runs mostly share a few definitions: each is decoded
        // once per claim and shared.
        let mut definitions = HashMap::new();
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
                    claimed: if self.reads_runs {
                        Some(Arc::new(claimed_with(&r, &mut definitions)?))
                    } else {
                        None
                    },
                },
            ));
        }
        // The claim commits without waiting for its WAL flush
        // (`synchronous_commit = off` for its transaction only, the `lazy`
        // CTE): a claim lost in a server crash makes its messages visible
        // again, which at-least-once delivery allows (submits are
        // idempotent per attempt); every later write that depends on it
        // (the run's PENDING transition) is flushed with it.
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

/// The run and definition a claim row carries (`NULL`: none stored); a
/// definition already in `definitions` (this claim's, by id) is not
/// decoded again.
fn claimed_with(
    row: &sqlx::postgres::PgRow,
    definitions: &mut HashMap<String, Arc<Definition>>,
) -> Result<Claimed> {
    let run = run_from_columns(row, "run_doc", "run_version")?;
    let id: Option<String> = row.try_get("definition_id").map_err(from_sqlx)?;
    let definition = match id {
        None => None,
        Some(id) => match definitions.get(&id) {
            Some(d) => Some(d.clone()),
            None => {
                let d = def_from_column(row, "definition_doc")?.map(Arc::new);
                if let Some(d) = &d {
                    definitions.insert(id, d.clone());
                }
                d
            }
        },
    };
    Ok(Claimed::now(run, definition))
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
/// Returns how many were inserted. Wakes nobody: the caller calls
/// [`Wake::enqueued`] once the insert is committed.
pub(crate) async fn insert_messages<'e, E>(
    exec: E,
    queue: &str,
    messages: &[Message],
) -> Result<u64>
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
    let done = sqlx::query(
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
    Ok(done.rows_affected())
}

/// Keeps one LISTEN connection up while any clone of the queue lives, and
/// wakes every waiting receiver on each notification or reconnect.
async fn listen_loop(pool: PgPool, wake: Weak<Wake>, stop: Arc<Notify>) {
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
        if insert_messages(&self.pool, queue, messages).await? > 0 {
            self.wake.enqueued(&self.pool, queue);
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
            // Without waiting for the WAL flush: an ack lost in a server
            // crash is a redelivery, which finds the attempt handled.
            "DELETE FROM queue_messages AS m \
             USING unnest($1::int8[], $2::int4[]) AS a(id, n), \
               (SELECT set_config('synchronous_commit', 'off', true)) AS lazy \
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
        let done = sqlx::query(
            "UPDATE queue_messages SET visible_at = clock_timestamp() + make_interval(secs => $3) \
             WHERE id = $1 AND deliveries = $2",
        )
        .bind(id)
        .bind(n)
        .bind(delay.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(from_sqlx)?;
        if done.rows_affected() > 0 {
            if delay.is_zero() {
                self.wake.enqueued(&self.pool, &delivery.queue);
            } else {
                self.wake.wake_after(delay);
            }
        }
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
