//! The retry policy: which failures get another attempt, and when.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{FailureCategory, Run};

/// Which failures are retried, how often and how late.
///
/// Infrastructure failures (`image_pull`, `container_start`, `node_lost`,
/// `unknown`) go to NEEDS_RETRY while attempts remain; `oom` only when the
/// run asks for adaptive resource allocation (and then with more memory);
/// `app_exit` only when the definition asks for it; `timeout`,
/// `terminated` and `submit_rejected` never.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RetryPolicy {
    /// Attempts per run unless the definition says otherwise.
    pub max_attempts: u32,
    /// Delay before the second attempt; doubles each attempt.
    #[serde(with = "crate::service::duration_ms")]
    pub base_backoff: Duration,
    /// Longest delay.
    #[serde(with = "crate::service::duration_ms")]
    pub max_backoff: Duration,
    /// Memory multiplier for an `oom` retry with adaptive allocation.
    pub oom_memory_factor: f64,
    /// Memory cap (MiB) for adaptive allocation.
    pub oom_memory_cap_mib: i64,
    /// Memory assumed (MiB) when a run that had none set is retried for `oom`.
    pub default_memory_mib: i64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: crate::model::DEFAULT_MAX_ATTEMPTS,
            base_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(300),
            oom_memory_factor: 2.0,
            oom_memory_cap_mib: 64 * 1024,
            default_memory_mib: 512,
        }
    }
}

impl RetryPolicy {
    /// Whether `run`, whose current attempt failed with `failure`, gets
    /// another attempt.
    pub fn should_retry(&self, run: &Run, failure: FailureCategory) -> bool {
        let retriable = failure.is_infrastructure()
            || (failure == FailureCategory::Oom && run.adaptive_resource_allocation)
            || (failure == FailureCategory::AppExit && run.retry_on_app_exit);
        retriable && run.attempt < run.max_attempts
    }

    /// Delay before attempt `attempt + 1`, after attempt `attempt` failed:
    /// exponential from `base_backoff`, capped, with up to 20% jitter so
    /// many runs failing together do not come back together.
    pub fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_seeded(attempt, fastrand::u64(..))
    }

    /// [`RetryPolicy::backoff`] with the jitter taken from `seed`, so the
    /// same run attempt always gets the same delay.
    pub fn backoff_seeded(&self, attempt: u32, seed: u64) -> Duration {
        let exp = attempt.saturating_sub(1).min(20);
        let base = self.base_backoff.saturating_mul(1u32 << exp);
        let capped = base.min(self.max_backoff);
        let fraction = (seed % 1000) as f64 / 1000.0;
        capped.saturating_sub(capped.mul_f64(fraction * 0.2))
    }

    /// Memory for the next attempt of an `oom` failure with adaptive
    /// allocation: grown by the factor, capped.
    pub fn grown_memory(&self, current: Option<i64>) -> i64 {
        let cur = current.unwrap_or(self.default_memory_mib).max(1);
        let grown = (cur as f64 * self.oom_memory_factor).ceil() as i64;
        grown.clamp(cur, self.oom_memory_cap_mib.max(cur))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{NewDefinition, RunStatus};

    fn run(attempt: u32, max: u32) -> Run {
        let mut def = NewDefinition::new("a", "img").into_definition();
        def.memory = Some(1000);
        let mut r = Run::queued(&def, "default", "local", "me");
        r.status = RunStatus::Running;
        r.attempt = attempt;
        r.max_attempts = max;
        r
    }

    #[test]
    fn categories_decide() {
        let p = RetryPolicy::default();
        let r = run(1, 3);
        assert!(p.should_retry(&r, FailureCategory::NodeLost));
        assert!(p.should_retry(&r, FailureCategory::ImagePull));
        assert!(!p.should_retry(&r, FailureCategory::AppExit));
        assert!(!p.should_retry(&r, FailureCategory::Timeout));
        assert!(!p.should_retry(&r, FailureCategory::Terminated));
        assert!(!p.should_retry(&r, FailureCategory::Oom));
        let mut adaptive = run(1, 3);
        adaptive.adaptive_resource_allocation = true;
        assert!(p.should_retry(&adaptive, FailureCategory::Oom));
        assert!(!p.should_retry(&run(3, 3), FailureCategory::NodeLost));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy::default();
        assert!(p.backoff(1) <= Duration::from_secs(1));
        assert!(p.backoff(1) >= Duration::from_millis(800));
        assert!(p.backoff(3) >= Duration::from_millis(3200));
        assert!(p.backoff(30) <= Duration::from_secs(300));
    }

    #[test]
    fn memory_grows_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.grown_memory(Some(1000)), 2000);
        assert_eq!(p.grown_memory(None), 1024);
        assert_eq!(p.grown_memory(Some(60 * 1024)), 64 * 1024);
    }
}
