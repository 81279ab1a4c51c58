//! In-memory `Store` and `Queue`: the embedded default and the test double
//! of every service that embeds flotilla.
//!
//! [`MemoryStore`] and [`MemoryQueue`] meet the same contracts as the
//! PostgreSQL and SQS backends (they pass the same [`crate::testkit`]
//! suites), are sized for a scheduler holding 100 000+ runs and pushing
//! 100 000 messages, and keep nothing after they are dropped.
//!
//! ```
//! # async fn demo() -> flotilla::Result<()> {
//! use std::time::Duration;
//! use flotilla::{Message, Queue};
//! use flotilla::memory::MemoryQueue;
//!
//! let queue = MemoryQueue::new();
//! queue.enqueue("default", &[Message::new("run-1", 1)]).await?;
//! let got = queue
//!     .receive(&["default".to_owned()], 10, Duration::from_secs(30), Duration::ZERO)
//!     .await?;
//! assert_eq!(got[0].message.run_id, "run-1");
//! queue.ack(&got).await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().expect("runtime").block_on(demo()).expect("demo");
//! ```

mod index;
mod queue;
mod store;
mod templates;

pub use queue::MemoryQueue;
pub use store::MemoryStore;
