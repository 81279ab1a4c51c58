//! The one writer: a task that owns the only writing connection and runs
//! every write, grouping the writes pending at the same moment into one
//! transaction (group commit).
//!
//! SQLite has one writer per file. Funnelling every write of the process
//! through one connection means writers never contend for the lock (no
//! `SQLITE_BUSY` between them), and batching means N concurrent writes cost
//! one `BEGIN IMMEDIATE … COMMIT` — one WAL sync — instead of N.
//!
//! Each write runs inside its own `SAVEPOINT`: a write that fails (a
//! conflict, a missing row) is rolled back alone and the others of the
//! batch still commit. A caller's reply is sent only after the `COMMIT`, so
//! a write that returned `Ok` is durable and visible to every reader.

use std::collections::VecDeque;

use flotilla::{Error, Result};
use futures::future::BoxFuture;
use sqlx::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{again, from_sqlx};

/// What a job leaves once it ran: whether it succeeded, and how to answer
/// its caller once the batch's fate is known.
struct Ran {
    ok: bool,
    /// Called with the commit's outcome.
    reply: Box<dyn FnOnce(Result<()>) + Send>,
}

/// A type-erased write and its caller.
trait Job: Send {
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Ran>;
    fn fail(self: Box<Self>, e: Error);
}

struct Typed<T, F> {
    f: F,
    tx: oneshot::Sender<Result<T>>,
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
{
    fn run<'c>(self: Box<Self>, conn: &'c mut SqliteConnection) -> BoxFuture<'c, Ran> {
        let Typed { f, tx } = *self;
        Box::pin(async move {
            let r = f(conn).await;
            let ok = r.is_ok();
            Ran {
                ok,
                reply: Box::new(move |commit: Result<()>| {
                    let _ = tx.send(commit.and(r));
                }),
            }
        })
    }

    fn fail(self: Box<Self>, e: Error) {
        let _ = self.tx.send(Err(e));
    }
}

/// What the writer task receives.
enum Msg {
    /// A write.
    Job(Box<dyn Job>),
    /// Finish what came before, refuse what comes after, close.
    Close,
}

/// The handle to the writer task; cheap to clone.
#[derive(Clone)]
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("closed", &self.tx.is_closed())
            .finish()
    }
}

/// Writes waiting beyond this many make callers wait (back-pressure).
const CHANNEL: usize = 4096;

impl Writer {
    /// Starts the writer task on `conn`; it ends, closing the connection,
    /// once every handle is dropped or [`Writer::close`] was called.
    pub(crate) fn start(conn: SqliteConnection, max_batch: usize) -> (Writer, WriterTask) {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let task = tokio::spawn(writer_loop(conn, rx, max_batch.max(1)));
        (Writer { tx }, WriterTask { task })
    }

    /// Runs `f` in the next batch and returns its result once committed.
    pub(crate) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Job(Box::new(Typed { f, tx })))
            .await
            .map_err(|_| Error::unavailable("database closed"))?;
        rx.await
            .map_err(|_| Error::unavailable("database writer stopped"))?
    }

    /// Asks the task to finish the writes sent so far and close its
    /// connection; later writes fail with `Unavailable`.
    pub(crate) async fn close(&self) {
        let _ = self.tx.send(Msg::Close).await;
    }
}

/// The writer task, to wait for when closing.
#[derive(Debug)]
pub(crate) struct WriterTask {
    task: tokio::task::JoinHandle<()>,
}

impl WriterTask {
    /// Waits until the task has ended (its connection closed).
    pub(crate) async fn join(self) {
        let _ = self.task.await;
    }
}

async fn writer_loop(mut conn: SqliteConnection, mut rx: mpsc::Receiver<Msg>, max_batch: usize) {
    let mut pending = Vec::with_capacity(max_batch);
    'run: while rx.recv_many(&mut pending, max_batch).await > 0 {
        let mut batch = Vec::with_capacity(pending.len());
        let mut closing = false;
        for m in pending.drain(..) {
            match m {
                Msg::Job(j) if !closing => batch.push(j),
                Msg::Job(j) => j.fail(Error::unavailable("database closed")),
                Msg::Close => closing = true,
            }
        }
        run_batch(&mut conn, batch).await;
        if closing {
            rx.close();
            while let Some(m) = rx.recv().await {
                if let Msg::Job(j) = m {
                    j.fail(Error::unavailable("database closed"));
                }
            }
            break 'run;
        }
    }
    if let Err(e) = sqlx::Connection::close(conn).await {
        tracing::warn!(error = %e, "sqlite writer connection did not close cleanly");
    }
}

async fn exec(conn: &mut SqliteConnection, sql: &'static str) -> Result<()> {
    sqlx::raw_sql(sql)
        .execute(&mut *conn)
        .await
        .map(|_| ())
        .map_err(from_sqlx)
}

/// Runs `jobs` in as few transactions as possible: one, unless the
/// transaction itself breaks, in which case the jobs that ran in it fail
/// and the rest go on in a new one.
async fn run_batch(conn: &mut SqliteConnection, jobs: Vec<Box<dyn Job>>) {
    let mut jobs: VecDeque<Box<dyn Job>> = jobs.into();
    while !jobs.is_empty() {
        if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
            let e = Error::unavailable(format!("database busy, retry: {}", e.message()));
            for j in jobs.drain(..) {
                j.fail(again(&e));
            }
            return;
        }
        let mut replies: Vec<Box<dyn FnOnce(Result<()>) + Send>> = Vec::new();
        let mut broken = None;
        while let Some(job) = jobs.pop_front() {
            if let Err(e) = exec(conn, "SAVEPOINT w").await {
                job.fail(again(&e));
                broken = Some(e);
                break;
            }
            let ran = job.run(conn).await;
            replies.push(ran.reply);
            let end = if ran.ok {
                exec(conn, "RELEASE w").await
            } else {
                match exec(conn, "ROLLBACK TO w").await {
                    Ok(()) => exec(conn, "RELEASE w").await,
                    Err(e) => Err(e),
                }
            };
            if let Err(e) = end {
                broken = Some(e);
                break;
            }
        }
        let outcome = match broken {
            None => exec(conn, "COMMIT").await,
            Some(e) => Err(e),
        };
        let outcome = match outcome {
            Ok(()) => Ok(()),
            Err(e) => {
                // The transaction may be gone already; make sure it is.
                let _ = exec(conn, "ROLLBACK").await;
                Err(Error::unavailable(format!(
                    "database write failed, nothing was stored, retry: {}",
                    e.message()
                )))
            }
        };
        for reply in replies {
            reply(match &outcome {
                Ok(()) => Ok(()),
                Err(e) => Err(again(e)),
            });
        }
    }
}
