//! Finding the AWS-compatible test endpoint (moto).

use flotilla_sqs::{SqsSettings, StaticCredentials};

/// The endpoint from `FLOTILLA_TEST_AWS_ENDPOINT`. Without it: a failure
/// under CI, a loud warning and `None` elsewhere.
pub fn endpoint() -> Option<String> {
    let [endpoint] = flotilla::testkit::service_env(
        &["FLOTILLA_TEST_AWS_ENDPOINT"],
        "SQS",
        "start moto with `eval \"$(test-support/moto/start.sh)\"` and export \
         FLOTILLA_TEST_AWS_ENDPOINT (it prints FLOTILLA_TEST_AWS_ENDPOINT=http://127.0.0.1:PORT)",
    )?
    .try_into()
    .ok()?;
    Some(endpoint.trim_end_matches('/').to_string())
}

/// Settings for moto at `endpoint` with a namespace unique to this test.
pub fn settings(endpoint: &str, what: &str) -> SqsSettings {
    SqsSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(StaticCredentials::new("test", "test")),
        queue_namespace: format!("t{}-{what}", &uuid_like()[..8]),
        ..SqsSettings::default()
    }
}

fn uuid_like() -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{:016x}{:08x}",
        n as u64 ^ (std::process::id() as u64) << 32,
        fastrand::u32(..)
    )
}
