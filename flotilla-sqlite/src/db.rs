//! The open database: the writer, the read pool and the queue's wake-up,
//! shared by a store and the queues made from it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use flotilla::{Error, Result};
use sqlx::ConnectOptions;
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tokio::sync::Notify;

use crate::error::{from_migrate, from_sqlx};
use crate::writer::{Writer, WriterTask};
use crate::{Durability, SqliteOptions};

/// One open file.
pub(crate) struct Db {
    pub(crate) writer: Writer,
    pub(crate) read: SqlitePool,
    /// Wakes the queue's waiting receivers after this process enqueued.
    pub(crate) wake: Notify,
    pub(crate) path: PathBuf,
    /// See [`SqliteOptions::poll_interval`].
    pub(crate) poll_interval: std::time::Duration,
    task: Mutex<Option<WriterTask>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db")
            .field("path", &self.path)
            .field("readers", &self.read.size())
            .finish()
    }
}

impl Db {
    /// Opens (creating when missing) the file at `path` and its parent
    /// directory, migrates, starts the writer.
    pub(crate) async fn open(path: &Path, opts: &SqliteOptions) -> Result<Db> {
        if opts.readers == 0 {
            return Err(Error::invalid("readers: must be at least 1"));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::invalid(format!("path: cannot create {}: {e}", dir.display()))
            })?;
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(match opts.durability {
                Durability::Normal => SqliteSynchronous::Normal,
                Durability::Full => SqliteSynchronous::Full,
            })
            .busy_timeout(opts.busy_timeout);
        let mut conn = connect.connect().await.map_err(|e| {
            let err = from_sqlx(e);
            Error::new(
                err.kind(),
                format!("path: cannot open {}: {}", path.display(), err.message()),
            )
        })?;
        if opts.migrate {
            sqlx::migrate!("./migrations")
                .run(&mut conn)
                .await
                .map_err(from_migrate)?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(opts.readers)
            .min_connections(1)
            .connect_with(connect.pragma("query_only", "ON"))
            .await
            .map_err(from_sqlx)?;
        let (writer, task) = Writer::start(conn, opts.max_batch);
        Ok(Db {
            writer,
            read,
            wake: Notify::new(),
            path: path.to_path_buf(),
            poll_interval: opts.poll_interval.max(std::time::Duration::from_millis(1)),
            task: Mutex::new(Some(task)),
        })
    }

    /// Finishes pending writes and closes every connection; later calls
    /// fail with `Unavailable`.
    pub(crate) async fn close(&self) {
        self.writer.close().await;
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            task.join().await;
        }
        self.read.close().await;
        self.wake.notify_waiters();
    }
}
