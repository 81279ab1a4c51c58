//! The one error type of the core crate and every trait it defines.
//!
//! Every backend maps its own failures onto an [`ErrorKind`]; callers decide
//! what to do from the kind alone (retry later, report 404, ...), never by
//! parsing messages. The HTTP layer maps kinds to status codes:
//! `NotFound` → 404, `Conflict` → 409, `InvalidInput` → 400,
//! `Unavailable` → 503, `RateLimited` → 429, `Unsupported` → 501,
//! `Forbidden` → 403, `Internal` → 500.

use std::fmt;

/// What went wrong, as far as a caller needs to know to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named thing does not exist.
    NotFound,
    /// The request conflicts with the current state: a duplicate alias, a
    /// stale compare-and-set, an illegal status transition.
    Conflict,
    /// The caller's input is wrong; the message names the field.
    InvalidInput,
    /// A dependency is down or timed out: retry later.
    Unavailable,
    /// A dependency throttled the request: retry later, slower.
    RateLimited,
    /// The backend does not support this operation.
    Unsupported,
    /// The caller may not do this (not the owner, not an admin).
    Forbidden,
    /// A bug or an unexpected state.
    Internal,
}

impl ErrorKind {
    /// Whether an operation that failed with this kind may succeed if
    /// retried unchanged later.
    pub fn is_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable | ErrorKind::RateLimited)
    }

    /// A short stable name, used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
            ErrorKind::Forbidden => "forbidden",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every flotilla operation: a kind, a message for people and
/// an optional source.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// The kind, to decide how to react.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// `NotFound` with a message.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// `Conflict` with a message.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Conflict, message)
    }

    /// `InvalidInput` with a message that names the field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// `Unavailable` with a message.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// `Unsupported` with a message.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    /// `Forbidden` with a message naming who may.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }

    /// `Internal` with a message.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Whether the failed operation may succeed if retried later.
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }
}

/// The result of every flotilla operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_and_source_are_kept() {
        let io = std::io::Error::other("disk gone");
        let e = Error::unavailable("store unreachable").with_source(io);
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_retryable());
        assert_eq!(e.to_string(), "store unreachable");
        assert!(std::error::Error::source(&e).is_some());
        assert!(!Error::invalid("alias: required").is_retryable());
    }
}
