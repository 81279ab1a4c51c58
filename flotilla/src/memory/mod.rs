//! In-memory `Store` and `Queue`: the embedded default and the test double
//! of every service that embeds flotilla.

mod queue;
mod store;

pub use queue::MemoryQueue;
pub use store::MemoryStore;
