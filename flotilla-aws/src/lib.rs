//! Shared AWS SDK plumbing of flotilla's AWS backends (`flotilla-sqs`,
//! `flotilla-ecs`, `flotilla-eks`'s S3 log archive): SDK configuration
//! (rustls with ring, region, endpoint override, credentials, retry) and the
//! mapping of SDK errors onto flotilla's error kinds.
//!
//! This is support code, not a backend: backends depend on it, never on each
//! other.
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_credential_types::Credentials;
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response as HttpResponse;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use flotilla::{Error, ErrorKind, RetryPolicy};
use serde::{Deserialize, Serialize};

/// Fixed credentials, for tests and AWS-compatible endpoints. The secret is
/// never printed by `Debug`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token, for temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl StaticCredentials {
    /// Credentials from key id and secret.
    pub fn new(access_key_id: impl Into<String>, secret_access_key: impl Into<String>) -> Self {
        StaticCredentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        }
    }
}

impl fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .finish()
    }
}

/// Shared SDK configuration: rustls with ring, the region, the endpoint
/// override, static credentials when given (else the default chain), and
/// the SDK's standard retry (jittered exponential backoff on throttling,
/// 5xx and timeouts) with `max_attempts`.
pub async fn sdk_config(
    region: &str,
    endpoint_url: Option<&str>,
    credentials: Option<&StaticCredentials>,
    max_attempts: u32,
) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http)
        .retry_config(RetryConfig::standard().with_max_attempts(max_attempts.max(1)));
    if !region.is_empty() {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(url) = endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some(c) = credentials {
        loader = loader.credentials_provider(Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            c.session_token.clone(),
            None,
            "flotilla-settings",
        ));
    }
    loader.load().await
}

/// Error codes AWS uses for throttling.
const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "AWS.SimpleQueueService.RequestThrottled",
    "RequestThrottledException",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Error codes AWS answers when credentials or permissions are refused:
/// expired or not yet refreshed session tokens, signatures made with stale
/// keys, missing permissions. Fixable without touching the run, so never a
/// permanent rejection of it.
const AUTH: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "AuthFailure",
    "ExpiredToken",
    "ExpiredTokenException",
    "IncompleteSignature",
    "IncompleteSignatureException",
    "InvalidAccessKeyId",
    "InvalidClientTokenId",
    "InvalidSignatureException",
    "InvalidToken",
    "MissingAuthenticationToken",
    "MissingAuthenticationTokenException",
    "NotAuthorized",
    "RequestExpired",
    "SignatureDoesNotMatch",
    "TokenRefreshRequired",
    "UnrecognizedClientException",
];

/// Attempts of a call refused for credentials or permissions (see
/// [`with_auth_retry`]); the SDK's own retry does not retry those.
pub const AUTH_ATTEMPTS: u32 = 3;

/// The backoff between flotilla's own attempts of an AWS call: the
/// project's one backoff ([`RetryPolicy::backoff`]: exponential, capped,
/// jittered) from 200 ms, capped at 2 s.
pub fn call_backoff(attempt: u32) -> Duration {
    RetryPolicy {
        base_backoff: Duration::from_millis(200),
        max_backoff: Duration::from_secs(2),
        ..RetryPolicy::default()
    }
    .backoff(attempt)
}

/// Whether `err` is AWS refusing the call's credentials or permissions
/// (401, 403 other than throttling, or an [`AUTH`] code): transient (a
/// credential refresh, a role being fixed), and not retried by the SDK.
pub fn is_auth_failure<E>(err: &SdkError<E, HttpResponse>) -> bool
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown");
            let status = s.raw().status().as_u16();
            auth_code(code, status)
        }
        _ => false,
    }
}

/// Runs the SDK call `call` up to [`AUTH_ATTEMPTS`] times while AWS refuses
/// its credentials or permissions ([`is_auth_failure`]), with
/// [`call_backoff`] between attempts; returns the last result, whose error
/// [`map_sdk_error`] maps to `Unavailable` (retry later, never a permanent
/// rejection of the run). Other errors return at once: throttling and 5xx
/// are already retried by the SDK. Only for calls safe to repeat (reads,
/// or calls idempotent by a client token).
pub async fn with_auth_retry<T, E, F, Fut>(
    op: &str,
    mut call: F,
) -> Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SdkError<E, HttpResponse>>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match call().await {
            Err(e) if attempt < AUTH_ATTEMPTS && is_auth_failure(&e) => {
                let wait = call_backoff(attempt);
                tracing::debug!(
                    op,
                    attempt,
                    ?wait,
                    "credentials or permissions refused; retrying"
                );
                tokio::time::sleep(wait).await;
            }
            other => return other,
        }
    }
}

fn auth_code(code: &str, status: u16) -> bool {
    let code = code.rsplit('#').next().unwrap_or(code);
    let code = code.split(':').next().unwrap_or(code);
    !THROTTLING.contains(&code) && (status == 401 || status == 403 || AUTH.contains(&code))
}

/// Maps an SDK error of operation `op` onto a flotilla error: throttling is
/// `RateLimited`; timeouts, connection failures, 5xx and credential or
/// permission refusals (401, 403, expired tokens) are `Unavailable` (retry
/// later); `*NotFoundException` and a
/// missing SQS queue, S3's `NoSuch*` and any 404 are `NotFound`; other 4xx (`InvalidParameterException`,
/// `ClientException`) are `InvalidInput` with AWS's message.
pub fn map_sdk_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let (kind, message) = match &err {
        SdkError::TimeoutError(_) => (ErrorKind::Unavailable, format!("{op}: timed out")),
        SdkError::DispatchFailure(d) => (
            ErrorKind::Unavailable,
            format!("{op}: request failed: {:?}", d.as_connector_error()),
        ),
        SdkError::ResponseError(_) => {
            (ErrorKind::Unavailable, format!("{op}: unreadable response"))
        }
        SdkError::ConstructionFailure(_) => (
            ErrorKind::Internal,
            format!("{op}: request not built: {err}"),
        ),
        SdkError::ServiceError(s) => {
            let code = s.err().code().unwrap_or("Unknown");
            let msg = s.err().message().unwrap_or("");
            let status = s.raw().status().as_u16();
            let kind = classify(code, status);
            (kind, format!("{op}: {code}: {msg}"))
        }
        _ => (ErrorKind::Internal, format!("{op}: {err}")),
    };
    Error::new(kind, message).with_source(err)
}

fn classify(code: &str, status: u16) -> ErrorKind {
    // `com.amazonaws.sqs#QueueDoesNotExist:http://...` → `QueueDoesNotExist`.
    let code = code.rsplit('#').next().unwrap_or(code);
    let code = code.split(':').next().unwrap_or(code);
    if THROTTLING.contains(&code) || status == 429 {
        ErrorKind::RateLimited
    } else if status >= 500 || code == "ServiceUnavailable" || code == "InternalError" {
        ErrorKind::Unavailable
    } else if status == 404
        || code.starts_with("NoSuch")
        || code.contains("NonExistentQueue")
        || code.contains("QueueDoesNotExist")
        || code.ends_with("NotFoundException")
        || code.ends_with("NotFound")
    {
        ErrorKind::NotFound
    } else if auth_code(code, status) {
        // Credentials or permissions: fixable without touching the run.
        ErrorKind::Unavailable
    } else {
        ErrorKind::InvalidInput
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_kinds() {
        assert_eq!(classify("ThrottlingException", 400), ErrorKind::RateLimited);
        assert_eq!(classify("InternalFailure", 500), ErrorKind::Unavailable);
        assert_eq!(
            classify("ClusterNotFoundException", 400),
            ErrorKind::NotFound
        );
        assert_eq!(
            classify("ResourceNotFoundException", 400),
            ErrorKind::NotFound
        );
        assert_eq!(classify("ClientException", 400), ErrorKind::InvalidInput);
        assert_eq!(classify("ServerException", 500), ErrorKind::Unavailable);
        assert_eq!(
            classify("InvalidParameterValue", 400),
            ErrorKind::InvalidInput
        );
        assert_eq!(classify("ExpiredToken", 403), ErrorKind::Unavailable);
        assert_eq!(
            classify("com.amazonaws.sqs#RequestThrottled", 400),
            ErrorKind::RateLimited
        );
        assert_eq!(
            classify("AWS.SimpleQueueService.RequestThrottled", 403),
            ErrorKind::RateLimited
        );
        assert_eq!(
            classify("AWS.SimpleQueueService.NonExistentQueue", 400),
            ErrorKind::NotFound
        );
        assert_eq!(classify("QueueDoesNotExist", 400), ErrorKind::NotFound);
        assert_eq!(classify("NoSuchKey", 404), ErrorKind::NotFound);
        assert_eq!(classify("NoSuchBucket", 404), ErrorKind::NotFound);
        assert_eq!(classify("SlowDown", 503), ErrorKind::RateLimited);
        // Credentials and permissions, whatever the code: transient.
        assert_eq!(classify("SomethingNew", 401), ErrorKind::Unavailable);
        assert_eq!(classify("SomethingNew", 403), ErrorKind::Unavailable);
        assert_eq!(
            classify("InvalidSignatureException", 400),
            ErrorKind::Unavailable
        );
        assert_eq!(
            classify("MissingAuthenticationTokenException", 400),
            ErrorKind::Unavailable
        );
        assert_eq!(classify("ThrottlingException", 403), ErrorKind::RateLimited);
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = StaticCredentials::new("AKID", "very-secret");
        let shown = format!("{c:?}");
        assert!(shown.contains("AKID"));
        assert!(!shown.contains("very-secret"));
    }
}
