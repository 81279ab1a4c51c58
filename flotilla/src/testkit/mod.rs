//! Conformance suites every backend runs against itself (feature `testkit`).
//!
//! Each suite is an async function taking the backend as a trait object and
//! panicking, with a message naming the broken rule, at the first check
//! that fails. Suites use fresh, unique names (aliases, clusters, queues,
//! lease names) for everything they create, so they run on a fresh empty
//! backend as well as on one shared with other tests; they never delete
//! what they did not create.
//!
//! ```no_run
//! # async fn demo() {
//! let store = flotilla::memory::MemoryStore::new();
//! flotilla::testkit::store_suite(&store).await;
//! let queue = flotilla::memory::MemoryQueue::new();
//! flotilla::testkit::queue_suite(&queue).await;
//! # }
//! ```

pub mod counting;
pub mod engine;
pub mod env;
pub mod faults;
pub mod logs;
pub mod queue;
pub mod store;
mod templates;

pub use counting::{CountingQueue, QueueCounts};
pub use engine::{EngineProbe, engine_suite};
pub use env::service_env;
pub use faults::{FaultCounts, FaultPlan, FaultyEngine};
pub use logs::log_source_suite;
pub use queue::{QueueSuiteOptions, queue_suite, queue_suite_with};
pub use store::store_suite;

use crate::error::{ErrorKind, Result};

/// A short random lowercase token for unique names.
pub(crate) fn token() -> String {
    format!("{:012x}", fastrand::u64(..) & 0xffff_ffff_ffff)
}

/// The value of `r`, or a panic naming `what` and the error.
#[track_caller]
pub(crate) fn must<T>(r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what}: unexpected error ({}): {e}", e.kind()),
    }
}

/// Panics unless `r` failed with `kind`.
#[track_caller]
pub(crate) fn must_fail<T: std::fmt::Debug>(r: Result<T>, kind: ErrorKind, what: &str) {
    match r {
        Err(e) if e.kind() == kind => {}
        Err(e) => panic!("{what}: expected a {kind} error, got {} ({e})", e.kind()),
        Ok(v) => panic!("{what}: expected a {kind} error, got Ok({v:?})"),
    }
}
