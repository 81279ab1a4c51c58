//! The one error type of this crate.
//!
//! Every failure — a bad configuration, a service error, a rejected request,
//! a client call that failed — is an [`Error`] with an [`ErrorKind`]. In the
//! server it becomes a response `{"error": "..."}` whose status follows the
//! kind: service kinds map as `NotFound` 404, `Conflict` 409,
//! `InvalidInput` 400, `Unavailable` 503, `RateLimited` 429,
//! `Unsupported` 501, `Forbidden` 403, `Internal` 500.

use std::fmt;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

/// What went wrong, as far as a caller needs to know to react.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A failure of the core service or a backend, with its kind.
    Service(flotilla::ErrorKind),
    /// The configuration is invalid; the message names the key.
    Config,
    /// No or an unknown credential (401).
    Unauthorized,
    /// The caller may not do this (403).
    Forbidden,
    /// The request body is larger than allowed (413).
    PayloadTooLarge,
    /// The request took longer than allowed (408).
    Timeout,
    /// Binding, reading or writing failed.
    Io,
    /// The server answered a client call with an error status.
    Remote(u16),
}

/// The error of every operation of this crate.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The result of every operation of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, for people.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A configuration error naming the key.
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// A request error naming the field (400).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Service(flotilla::ErrorKind::InvalidInput),
            message,
        )
    }

    /// A missing thing (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Service(flotilla::ErrorKind::NotFound), message)
    }

    /// An I/O failure.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, message)
    }

    /// The HTTP status the error is answered with.
    pub fn status(&self) -> StatusCode {
        match self.kind {
            ErrorKind::Service(k) => match k {
                flotilla::ErrorKind::NotFound => StatusCode::NOT_FOUND,
                flotilla::ErrorKind::Conflict => StatusCode::CONFLICT,
                flotilla::ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
                flotilla::ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
                flotilla::ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                flotilla::ErrorKind::Unsupported => StatusCode::NOT_IMPLEMENTED,
                flotilla::ErrorKind::Forbidden => StatusCode::FORBIDDEN,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ErrorKind::Config => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Timeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Io => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Remote(code) => {
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }
}

impl From<flotilla::Error> for Error {
    fn from(e: flotilla::Error) -> Self {
        Error::new(ErrorKind::Service(e.kind()), e.message())
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Service(k) => write!(f, "{k}"),
            ErrorKind::Config => f.write_str("config"),
            ErrorKind::Unauthorized => f.write_str("unauthorized"),
            ErrorKind::Forbidden => f.write_str("forbidden"),
            ErrorKind::PayloadTooLarge => f.write_str("payload_too_large"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Io => f.write_str("io"),
            ErrorKind::Remote(code) => write!(f, "remote_{code}"),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// What went wrong, naming the field or key.
    pub error: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(kind = %self.kind, error = %self.message, "request failed");
        }
        (
            status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_statuses() {
        let cases = [
            (flotilla::Error::not_found("x"), 404),
            (flotilla::Error::conflict("x"), 409),
            (flotilla::Error::invalid("x"), 400),
            (flotilla::Error::unavailable("x"), 503),
            (
                flotilla::Error::new(flotilla::ErrorKind::RateLimited, "x"),
                429,
            ),
            (flotilla::Error::unsupported("x"), 501),
            (flotilla::Error::internal("x"), 500),
        ];
        for (e, code) in cases {
            assert_eq!(Error::from(e).status().as_u16(), code);
        }
        assert_eq!(Error::new(ErrorKind::Forbidden, "no").status(), 403);
    }
}
