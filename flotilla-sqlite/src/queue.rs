//! `SqliteQueue`: the `Queue` trait on an SQLite table.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flotilla::{Delivery, Error, Message, Queue, Result};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};

use crate::db::Db;
use crate::error::{check_text, from_sqlx};
use crate::time::{after, now_nanos};

/// At-least-once queues in the table `queue_messages`.
///
/// - `receive` claims visible rows and moves their `visible_at` past the
///   lease, in one write; it waits for an enqueue of this process (an
///   in-process notification), for the next row to become visible, or at
///   most [`crate::SqliteOptions::poll_interval`] (writes of other processes), up to `wait`. Waiting costs
///   reads only: the writer is asked to claim only once a row is visible.
/// - Receipts are `"<row id>:<delivery number>"`: `ack` and `release` only
///   touch the row if it was not delivered again since.
/// - Enqueuing `(run_id, attempt)` already pending on that queue is a no-op.
///
/// Made by [`crate::SqliteStore::queue`]; cheap to clone.
#[derive(Clone)]
pub struct SqliteQueue {
    db: Arc<Db>,
    domain: Arc<str>,
}

impl std::fmt::Debug for SqliteQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteQueue")
            .field("domain", &self.domain)
            .field("db", &self.db)
            .finish()
    }
}

/// A queue name must be non-empty text without NUL.
pub(crate) fn check_queue(queue: &str) -> Result<()> {
    check_text("queue", queue)?;
    if queue.is_empty() {
        return Err(Error::invalid("queue: must not be empty"));
    }
    Ok(())
}

/// Inserts messages in enqueue order; pending duplicates are skipped.
/// Part of the writer's transaction; the caller checked the names.
pub(crate) async fn insert_messages(
    conn: &mut SqliteConnection,
    queue: &str,
    messages: &[Message],
    now: i64,
) -> Result<()> {
    for m in messages {
        sqlx::query(
            "INSERT INTO queue_messages (queue, run_id, attempt, visible_at, deliveries, enqueued_at) \
             VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT (queue, run_id, attempt) DO NOTHING",
        )
        .bind(queue)
        .bind(&m.run_id)
        .bind(i64::from(m.attempt))
        .bind(now)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(from_sqlx)?;
    }
    Ok(())
}

/// Parses a receipt `"<id>:<n>"`.
fn parse_receipt(receipt: &str) -> Result<(i64, i64)> {
    let bad = || {
        Error::invalid(format!(
            "receipt: '{receipt}' is not an SQLite queue receipt"
        ))
    };
    let (id, n) = receipt.split_once(':').ok_or_else(bad)?;
    Ok((
        id.parse().map_err(|_| bad())?,
        n.parse().map_err(|_| bad())?,
    ))
}

fn push_queue_list(qb: &mut QueryBuilder<Sqlite>, queues: &[String]) {
    qb.push("queue IN (");
    let mut list = qb.separated(", ");
    for q in queues {
        list.push_bind(q.clone());
    }
    list.push_unseparated(")");
}

impl SqliteQueue {
    pub(crate) fn new(db: Arc<Db>, domain: Arc<str>) -> SqliteQueue {
        SqliteQueue { db, domain }
    }

    /// Claims up to `max` visible messages of `queues`, oldest first.
    async fn claim(&self, queues: &[String], max: usize, lease: Duration) -> Result<Vec<Delivery>> {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        let queues = queues.to_vec();
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    let now = now_nanos();
                    let mut qb = QueryBuilder::<Sqlite>::new(
                        "UPDATE queue_messages SET visible_at = ",
                    );
                    qb.push_bind(after(now, lease))
                        .push(", deliveries = deliveries + 1 WHERE id IN (SELECT id FROM queue_messages WHERE ");
                    push_queue_list(&mut qb, &queues);
                    qb.push(" AND visible_at <= ")
                        .push_bind(now)
                        .push(" ORDER BY visible_at, id LIMIT ")
                        .push_bind(max)
                        .push(") RETURNING id, queue, run_id, attempt, deliveries");
                    let rows = qb.build().fetch_all(&mut *c).await.map_err(from_sqlx)?;
                    let mut out = Vec::with_capacity(rows.len());
                    for r in rows {
                        let id: i64 = r.try_get("id").map_err(from_sqlx)?;
                        let n: i64 = r.try_get("deliveries").map_err(from_sqlx)?;
                        let attempt: i64 = r.try_get("attempt").map_err(from_sqlx)?;
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
                                claimed: None,
                            },
                        ));
                    }
                    // FIFO across the queues asked for (RETURNING has no order).
                    out.sort_by_key(|(id, _)| *id);
                    Ok(out.into_iter().map(|(_, d)| d).collect())
                })
            })
            .await
    }

    /// When the next message of `queues` is (or was) visible, in
    /// nanoseconds; a read, not a write.
    async fn next_visible(&self, queues: &[String]) -> Result<Option<i64>> {
        let mut qb =
            QueryBuilder::<Sqlite>::new("SELECT min(visible_at) FROM queue_messages WHERE ");
        push_queue_list(&mut qb, queues);
        let next: Option<i64> = qb
            .build_query_scalar()
            .fetch_one(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        Ok(next)
    }
}

#[async_trait]
impl Queue for SqliteQueue {
    async fn enqueue(&self, queue: &str, messages: &[Message]) -> Result<()> {
        check_queue(queue)?;
        if messages.is_empty() {
            return Ok(());
        }
        for m in messages {
            check_text("run_id", &m.run_id)?;
        }
        let queue = queue.to_string();
        let messages = messages.to_vec();
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move { insert_messages(c, &queue, &messages, now_nanos()).await })
            })
            .await?;
        self.db.wake.notify_waiters();
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
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Register for wake-ups before looking, so an enqueue between
            // the look and the wait is not lost.
            let notified = self.db.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = self.next_visible(queues).await?;
            let now = now_nanos();
            if next.is_some_and(|v| v <= now) {
                let got = self.claim(queues, max, lease).await?;
                if !got.is_empty() {
                    return Ok(got);
                }
                // Another receiver was first; look again.
                continue;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            let mut sleep = left.min(self.db.poll_interval);
            if let Some(v) = next {
                let until = u64::try_from(v.saturating_sub(now)).unwrap_or(0);
                sleep = sleep.min(Duration::from_nanos(until) + Duration::from_millis(1));
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
        let receipts = deliveries
            .iter()
            .map(|d| parse_receipt(&d.receipt))
            .collect::<Result<Vec<_>>>()?;
        self.db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    for (id, n) in receipts {
                        sqlx::query("DELETE FROM queue_messages WHERE id = ? AND deliveries = ?")
                            .bind(id)
                            .bind(n)
                            .execute(&mut *c)
                            .await
                            .map_err(from_sqlx)?;
                    }
                    Ok(())
                })
            })
            .await
    }

    async fn release(&self, delivery: &Delivery, delay: Duration) -> Result<()> {
        let (id, n) = parse_receipt(&delivery.receipt)?;
        let released = self
            .db
            .writer
            .write(move |c| {
                Box::pin(async move {
                    let done = sqlx::query(
                        "UPDATE queue_messages SET visible_at = ? WHERE id = ? AND deliveries = ?",
                    )
                    .bind(after(now_nanos(), delay))
                    .bind(id)
                    .bind(n)
                    .execute(&mut *c)
                    .await
                    .map_err(from_sqlx)?;
                    Ok(done.rows_affected() > 0)
                })
            })
            .await?;
        if released {
            self.db.wake.notify_waiters();
        }
        Ok(())
    }

    async fn depth(&self, queue: &str) -> Result<u64> {
        check_text("queue", queue)?;
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE queue = ?")
            .bind(queue)
            .fetch_one(&self.db.read)
            .await
            .map_err(from_sqlx)?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    fn transaction_domain(&self) -> Option<&str> {
        Some(&self.domain)
    }
}
