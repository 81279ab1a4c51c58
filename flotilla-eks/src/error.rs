//! Mapping of Kubernetes and S3 failures onto [`flotilla::ErrorKind`].
//!
//! The crate's error type is [`flotilla::Error`]: every failure carries a
//! kind. API server answers map as: 409 (a conflict on a write) and 5xx and
//! connection failures → `Unavailable`, 429 → `RateLimited` (both retry
//! later); 422 (invalid object) and 400 → `InvalidInput` with the API
//! server's message; 404 → `NotFound`. 401 and 403 → `Unavailable` too:
//! credentials expire and are refreshed (an EKS token lives 15 minutes, an
//! IAM role's session rotates), and a namespace's ResourceQuota answers 403
//! until capacity frees, so a run is never rejected for them; they are
//! retried ([`with_retry`]) and then left to the caller's later retry.

use std::time::Duration;

use flotilla::{Error, ErrorKind, RetryPolicy};

/// Maps a kube client error, prefixing `context` to the message.
pub fn from_kube(context: &str, err: kube::Error) -> Error {
    let (kind, message) = match &err {
        kube::Error::Api(status) => {
            let kind = match status.code {
                409 => ErrorKind::Unavailable,
                429 => ErrorKind::RateLimited,
                401 | 403 => ErrorKind::Unavailable,
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
/// never does: the object is there). 401 and 403 may: credentials being
/// refreshed, a quota that frees.
pub fn retryable(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => {
            (status.code == 409 && status.reason != "AlreadyExists")
                || matches!(status.code, 401 | 403 | 429 | 500..=599)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => true,
        _ => false,
    }
}

/// The delays between attempts of one API call: flotilla's one backoff
/// ([`RetryPolicy::backoff`], jittered), from 100 ms up to 3.2 s.
fn call_backoff() -> RetryPolicy {
    RetryPolicy {
        base_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_millis(3200),
        ..RetryPolicy::default()
    }
}

/// Runs `op` up to `attempts` times while it fails retryably, with
/// jittered exponential backoff between the attempts.
pub async fn with_retry<T, F, Fut>(attempts: u32, mut op: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let backoff = call_backoff();
    let mut tried = 0u32;
    loop {
        tried += 1;
        match op().await {
            Err(e) if tried < attempts.max(1) && retryable(&e) => {
                tokio::time::sleep(backoff.backoff(tried)).await;
            }
            other => return other,
        }
    }
}
