//! The `LogSource` trait: a run's output, read page by page.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::model::Run;

/// One page of log text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogChunk {
    /// New text since the cursor that was read from.
    pub log: String,
    /// Where to read next (the API's `last_seen`); `None` when nothing has
    /// been read yet.
    pub cursor: Option<String>,
    /// No more text will ever come: the run stopped and all was read.
    pub complete: bool,
}

/// A run's output.
///
/// # Contract
/// - `read(run, cursor, max_bytes)` returns text that follows `cursor`
///   (from the start when `None`), at most about `max_bytes` of it, and a
///   cursor to continue from. Reading from each returned cursor in turn
///   yields the whole log exactly once: no text repeated, none skipped,
///   never a UTF-8 character split between pages.
/// - Before the run has written anything (not started, stream not yet
///   created) the result is empty text, not an error.
/// - `complete` is true only once the run is STOPPED and the text up to the
///   returned cursor is all there is.
/// - Cursors are opaque to callers; a cursor that is not one of this
///   source's is `InvalidInput`.
#[async_trait]
pub trait LogSource: Send + Sync + std::fmt::Debug {
    /// Reads text after `cursor`.
    async fn read(&self, run: &Run, cursor: Option<&str>, max_bytes: usize) -> Result<LogChunk>;
}
