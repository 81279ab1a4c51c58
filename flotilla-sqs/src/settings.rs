//! Settings of the SQS queue.

use serde::{Deserialize, Serialize};

use flotilla_aws::StaticCredentials;

/// How [`crate::SqsQueue`] reaches SQS and shapes its queues.
///
/// Every field has a default, so a configuration file names only what it
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsSettings {
    /// AWS region; the default chain's region when empty.
    pub region: String,
    /// Endpoint override (an AWS-compatible endpoint, moto in tests).
    pub endpoint_url: Option<String>,
    /// Static credentials; the default credential chain when absent.
    pub credentials: Option<StaticCredentials>,
    /// Prefix of queue names: `<queue_namespace>-<cluster>`.
    pub queue_namespace: String,
    /// `MessageRetentionPeriod` of created queues, in seconds (60..=1209600).
    pub retention_seconds: u32,
    /// `VisibilityTimeout` of created queues, in seconds (0..=43200): how
    /// long a received message stays hidden when the receiver names no lease.
    pub visibility_timeout_seconds: u32,
    /// Longest single long poll, in seconds (1..=20, the SQS maximum).
    pub max_wait_seconds: u32,
    /// Attempts of the SDK's own retry (throttling, 5xx, timeouts).
    pub max_attempts: u32,
}

impl Default for SqsSettings {
    fn default() -> Self {
        SqsSettings {
            region: String::new(),
            endpoint_url: None,
            credentials: None,
            queue_namespace: "flotilla".into(),
            retention_seconds: 1_209_600,
            visibility_timeout_seconds: 60,
            max_wait_seconds: 20,
            max_attempts: 5,
        }
    }
}

impl SqsSettings {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> flotilla::Result<()> {
        if self.queue_namespace.is_empty()
            || self.queue_namespace.len() > 40
            || !self
                .queue_namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(flotilla::Error::invalid(format!(
                "queue_namespace: '{}' must be 1 to 40 of [A-Za-z0-9_-]",
                self.queue_namespace
            )));
        }
        if !(60..=1_209_600).contains(&self.retention_seconds) {
            return Err(flotilla::Error::invalid(
                "retention_seconds: must be between 60 and 1209600",
            ));
        }
        if self.visibility_timeout_seconds > 43_200 {
            return Err(flotilla::Error::invalid(
                "visibility_timeout_seconds: must be at most 43200",
            ));
        }
        if !(1..=20).contains(&self.max_wait_seconds) {
            return Err(flotilla::Error::invalid(
                "max_wait_seconds: must be between 1 and 20",
            ));
        }
        if self.max_attempts == 0 {
            return Err(flotilla::Error::invalid("max_attempts: must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        SqsSettings::default()
            .validate()
            .expect("defaults are valid");
        let bad = SqsSettings {
            queue_namespace: "a b".into(),
            ..SqsSettings::default()
        };
        let e = bad.validate().expect_err("space is refused");
        assert!(e.message().starts_with("queue_namespace:"), "{e}");
        let bad = SqsSettings {
            max_wait_seconds: 21,
            ..SqsSettings::default()
        };
        let e = bad.validate().expect_err("21 s is refused");
        assert!(e.message().starts_with("max_wait_seconds:"), "{e}");
        let parsed: SqsSettings =
            serde_json::from_str(r#"{"queue_namespace": "prod", "region": "eu-west-1"}"#)
                .expect("partial settings parse");
        assert_eq!(parsed.retention_seconds, 1_209_600);
        assert_eq!(parsed.region, "eu-west-1");
    }
}
