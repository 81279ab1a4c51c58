//! # flotilla-sqlite
//!
//! A durable [`flotilla::Store`] ([`SqliteStore`]) and [`flotilla::Queue`]
//! ([`SqliteQueue`]) in one embedded SQLite file: the zero-setup default of
//! the reference server, which keeps definitions, runs, events, clusters
//! and the queue across restarts without a database server.
//!
//! - The schema is managed by embedded migrations, run by
//!   [`SqliteStore::open`] when [`SqliteOptions::migrate`] is set.
//! - WAL mode: readers never block the writer nor each other. Reads go to a
//!   pool of [`SqliteOptions::readers`] connections.
//! - One writer: every write of the process runs on one connection owned by
//!   a task; writes pending at the same moment share one transaction
//!   (group commit, each in its own savepoint), so concurrent callers never
//!   see `SQLITE_BUSY` and N writes cost one WAL sync. Other processes on
//!   the same file are waited for up to [`SqliteOptions::busy_timeout`].
//! - Run updates are compare-and-set on `(status, version)` with the event
//!   appended in the same transaction.
//! - A store and the queue made from it with [`SqliteStore::queue`] share a
//!   transaction domain: the service inserts a run, its event and its queue
//!   row in one transaction ([`flotilla::Store::create_run_enqueued`]).
//! - Receivers wake on an in-process notification when this process
//!   enqueues (SQLite has no `LISTEN`), and re-check at least every
//!   [`SqliteOptions::poll_interval`] (500 ms) for messages written by
//!   other processes on the same file.
//!
//! One file serves one server (or several processes on one machine). For
//! several replicas on several machines, use PostgreSQL
//! (`flotilla-postgres`): SQLite over a network file system is not safe.
//!
//! Every error is a [`flotilla::Error`]: unique violations are `Conflict`,
//! a locked or full database is `Unavailable` (retry later), bad values are
//! `InvalidInput`.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use std::sync::Arc;
//! use flotilla_sqlite::{SqliteOptions, SqliteStore};
//!
//! let store = SqliteStore::open(".flotilla-data/flotilla.db", SqliteOptions::default()).await?;
//! let queue = store.queue();
//! let service = flotilla::Flotilla::builder()
//!     .store(Arc::new(store))
//!     .queue(Arc::new(queue))
//!     .build_local(".flotilla-data")?;
//! # let _ = service; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod db;
mod error;
mod queue;
mod store;
mod templates;
mod time;
mod writer;

use std::time::Duration;

pub use queue::SqliteQueue;
pub use store::SqliteStore;

/// How durable a commit is (SQLite's `synchronous` in WAL mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// A commit survives the process being killed; the last commits before
    /// a power loss or OS crash may be lost (never corrupted). SQLite's
    /// recommended setting for WAL.
    #[default]
    Normal,
    /// Every commit is synced to disk before it returns.
    Full,
}

/// How [`SqliteStore::open`] opens the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqliteOptions {
    /// Run the embedded migrations at open.
    pub migrate: bool,
    /// Reading connections (at least 1).
    pub readers: u32,
    /// How long a write waits for another process holding the file's write
    /// lock before failing with `Unavailable`.
    pub busy_timeout: Duration,
    /// Most writes grouped into one transaction.
    pub max_batch: usize,
    /// Commit durability.
    pub durability: Durability,
    /// The longest a waiting queue receiver goes without looking again:
    /// enqueues of this process wake receivers at once, those of other
    /// processes on the same file are seen within this bound.
    pub poll_interval: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            migrate: true,
            readers: 4,
            busy_timeout: Duration::from_secs(5),
            max_batch: 256,
            durability: Durability::Normal,
            poll_interval: Duration::from_millis(500),
        }
    }
}
