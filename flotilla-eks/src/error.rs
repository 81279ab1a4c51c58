//! Mapping of Kubernetes and S3 failures onto [`flotilla::ErrorKind`].
//!
//! The crate's error type is [`flotilla::Error`]: every failure carries a
//! kind. API server answers map as: 409 (a conflict on a write) and 5xx and
//! connection failures → `Unavailable`, 429 → `RateLimited` (both retry
//! later); 422 (invalid object) and 400 → `InvalidInput` with the API
//! server's message; 404 → `NotFound`; 401/403 → `Internal` (a
//! configuration problem, not worth retrying).

use std::time::Duration;

use flotilla::{Error, ErrorKind};

/// Maps a kube client error, prefixing `context` to the message.
pub fn from_kube(context: &str, err: kube::Error) -> Error {
    let (kind, message) = match &err {
        kube::Error::Api(status) => {
            let kind = match status.code {
                409 => ErrorKind::Unavailable,
                429 => ErrorKind::RateLimited,
                404 => ErrorKind::NotFound,
                400 | 422 => ErrorKind::InvalidInput,
                500..=599 => ErrorKind::Unavailable,
                _ => ErrorKind::Internal,
            };
            let message = if status.message.is_empty() {
                format!("{} ({})", status.reason, status.code)
            } else {
                status.message.clone()
            };
            (kind, message)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            (ErrorKind::Unavailable, err.to_string())
        }
        _ => (ErrorKind::Internal, err.to_string()),
    };
    Error::new(kind, format!("{context}: {message}")).with_source(err)
}

/// The HTTP status of a kube API error.
pub fn api_code(err: &kube::Error) -> Option<u16> {
    match err {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

/// Whether a kube error may succeed if retried unchanged (`AlreadyExists`
/// never does: the object is there).
pub fn retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            (status.code == 409 && status.reason != "AlreadyExists")
                || matches!(status.code, 429 | 500..=599)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// Runs `op` up to `attempts` times while it fails retryably, with
/// exponential backoff from 50 ms.
pub async fn with_retry<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut tried = 0u32;
    loop {
        tried += 1;
        match op().await {
            Err(e) if tried < attempts.max(1) && retryable(&e) => {
                let delay = Duration::from_millis(50u64 << tried.min(6));
                tokio::time::sleep(delay).await;
            }
            other => return other,
        }
    }
}
