//! # flotilla-postgres
//!
//! A durable [`flotilla::Store`] ([`PgStore`]) and [`flotilla::Queue`]
//! ([`PgQueue`]) on PostgreSQL, so PostgreSQL alone is enough to run
//! flotilla with several server replicas sharing one database.
//!
//! - The schema is managed by embedded migrations ([`migrate`]), run by
//!   [`PgStore::connect`] when [`PgOptions::migrate`] is set.
//! - Run updates are compare-and-set (`WHERE run_id = $1 AND status = $2 AND
//!   version = $3`) with the event appended in the same transaction.
//! - The queue claims with `FOR UPDATE SKIP LOCKED` in batches (locking at
//!   most the rows it takes), deletes on ack, and wakes receivers through
//!   `LISTEN/NOTIFY`, sent after the enqueue commits and coalesced (see
//!   [`PgQueue`]); while the listener connection is down, receivers fall
//!   back to a slow poll and the listener reconnects.
//! - A store and the queue made from it with [`PgStore::queue`] share a
//!   transaction domain, so the service inserts a run and enqueues it in one
//!   transaction ([`flotilla::Store::create_run_enqueued`]).
//! - Leases for singleton workers use the database clock, so replicas with
//!   skewed clocks still agree.
//!
//! ## Vacuum
//!
//! The queue table churns (insert, update on claim, delete on ack) but no
//! transaction stays open: every claim, ack and release is one short
//! autocommit statement. The migration sets, for `queue_messages`,
//! `autovacuum_vacuum_scale_factor = 0.01`, `autovacuum_vacuum_threshold =
//! 1000`, `autovacuum_vacuum_insert_scale_factor = 0.05` and
//! `fillfactor = 70`, so dead rows are reclaimed after ~1% churn instead of
//! the default 20%. Keep `idle_in_transaction_session_timeout` set on
//! servers shared with other applications: a forgotten open transaction
//! elsewhere stops vacuum from reclaiming the queue's dead rows.
//!
//! `runs` has `fillfactor = 50` and no index on `status`: unfinished and
//! stopped runs are found through partial indexes on `active` (a column
//! generated from `status <> 'STOPPED'`), so a transition that changes no
//! other indexed column (QUEUED → PENDING) is a HOT update. The runs in
//! flight (PENDING, RUNNING) are also kept in `runs_in_flight`, written by
//! the same statements: a list of in-flight statuses reads only them, not a
//! queued backlog.
//!
//! Every error is a [`flotilla::Error`]: unique violations are `Conflict`,
//! lost connections, pool time-outs and serialization failures are
//! `Unavailable` (retry later), bad values are `InvalidInput`.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use std::sync::Arc;
//! use flotilla_postgres::{PgOptions, PgStore};
//!
//! let store = PgStore::connect("postgres://flotilla@127.0.0.1/flotilla", PgOptions::default()).await?;
//! let queue = store.queue();
//! let service = flotilla::Flotilla::builder()
//!     .store(Arc::new(store))
//!     .queue(Arc::new(queue))
//!     .build_local("/tmp/flotilla-data")?;
//! # let _ = service; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod doc;
mod error;
mod queue;
mod store;
mod templates;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

pub use queue::PgQueue;
pub use store::PgStore;

/// How [`PgStore::connect`] builds its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgOptions {
    /// Pool size, at least 2: a [`PgQueue`] made from the store keeps one
    /// connection of the pool for `LISTEN` once it has received.
    pub max_connections: u32,
    /// Run the embedded migrations at connect.
    pub migrate: bool,
    /// Connections kept open when idle.
    pub min_connections: u32,
    /// How long an operation waits for a pooled connection before failing
    /// with `Unavailable`.
    pub acquire_timeout: Duration,
    /// `application_name` reported to the server.
    pub application_name: String,
    /// `statement_timeout` of every pooled connection (`None`: the server's
    /// setting). A statement cancelled by it fails with `Unavailable`.
    /// Migrations are not subject to it (they run on a connection of their
    /// own with no timeout).
    pub statement_timeout: Option<Duration>,
    /// Whether the server may JIT-compile flotilla's statements (`jit`).
    /// Off by default: every statement is short, and on a large `runs`
    /// table the planner's cost estimates can trigger a JIT compile of tens
    /// of milliseconds for a query that runs in one.
    pub jit: bool,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            migrate: true,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(10),
            application_name: "flotilla".into(),
            statement_timeout: Some(Duration::from_secs(30)),
            jit: false,
        }
    }
}

/// Runs the embedded migrations (idempotent; concurrent callers serialize
/// on an advisory lock). They run on a connection taken out of the pool,
/// with `statement_timeout` off (an index build on a large table, or the
/// wait for another replica's migration, may take longer than a pool's
/// timeout); the connection is closed afterwards.
pub async fn migrate(pool: &sqlx::PgPool) -> flotilla::Result<()> {
    use sqlx::Connection;
    let mut conn = pool.acquire().await.map_err(error::from_sqlx)?.detach();
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut conn)
        .await
        .map_err(error::from_sqlx)?;
    let done = sqlx::migrate!("./migrations")
        .run(&mut conn)
        .await
        .map_err(error::from_migrate);
    let _ = conn.close().await;
    done
}

/// The `SET` statement run on every new pooled connection.
fn session_settings(opts: &PgOptions) -> String {
    // Whole milliseconds (0 would mean "no timeout": at least 1 ms).
    let timeout = opts
        .statement_timeout
        .map(|t| {
            format!(
                "SET statement_timeout = {}; ",
                t.as_millis().clamp(1, i32::MAX as u128)
            )
        })
        .unwrap_or_default();
    let jit = if opts.jit { "on" } else { "off" };
    format!("{timeout}SET jit = {jit}")
}

/// Builds a pool from a URL and options, without migrating.
pub(crate) async fn connect_pool(url: &str, opts: &PgOptions) -> flotilla::Result<sqlx::PgPool> {
    if opts.max_connections < 2 {
        return Err(flotilla::Error::invalid(
            "max_connections: must be at least 2 (the queue's LISTEN connection holds one)",
        ));
    }
    let connect: PgConnectOptions = url.parse().map_err(|e: sqlx::Error| {
        flotilla::Error::invalid(format!("database_url: not a PostgreSQL URL: {e}"))
    })?;
    let connect = connect.application_name(&opts.application_name);
    // Numbers and keywords only, made here: no caller text in the SQL.
    let settings: std::sync::Arc<str> = session_settings(opts).into();
    PgPoolOptions::new()
        .after_connect(move |conn, _meta| {
            let settings = settings.clone();
            Box::pin(async move {
                sqlx::raw_sql(sqlx::AssertSqlSafe(settings.to_string()))
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .max_connections(opts.max_connections)
        .min_connections(opts.min_connections.min(opts.max_connections))
        .acquire_timeout(opts.acquire_timeout)
        .connect_with(connect)
        .await
        .map_err(error::from_sqlx)
}
