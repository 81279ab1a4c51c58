//! The retry policy: which failures get another attempt, and when.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{FailedAttempt, FailureCategory, RetryAction, Run};

/// Which failures are retried, how often and how late.
///
/// A run's own retry rules ([`crate::RetryStrategy`], copied from its
/// definition at execute) come first: the first `evaluate_on_exit` rule
/// matching the failed attempt decides, `RETRY` for another attempt while
/// attempts remain, `EXIT` for none. Without a matching rule the default
/// decides: infrastructure failures (`image_pull`, `container_start`,
/// `node_lost`) go to NEEDS_RETRY while attempts remain; `oom` only when
/// the run asks for adaptive resource allocation (and then with more
/// memory); `app_exit` only when the definition asks for it; `unknown`,
/// `timeout`, `terminated` and `submit_rejected` never, whatever the rules.
/// A `RETRY` rule matching an `oom` gives another attempt; whether its
/// memory grows is still up to adaptive resource allocation.
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

/// What [`RetryPolicy::decide`] decided for a failed attempt, and by which
/// rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDecision {
    /// Whether the run gets another attempt.
    pub retry: bool,
    /// The run's rule that decided (its index in `evaluate_on_exit` and its
    /// action), or `None` when the default policy did.
    pub rule: Option<(usize, RetryAction)>,
}

impl RetryDecision {
    /// The deciding rule for people, e.g.
    /// `retry_strategy.evaluate_on_exit[1] (EXIT)`.
    pub fn rule_text(&self) -> Option<String> {
        self.rule
            .map(|(i, action)| format!("retry_strategy.evaluate_on_exit[{i}] ({action})"))
    }
}

impl RetryPolicy {
    /// Whether `run`, whose current attempt failed with `failure` (exit
    /// code and reason unknown), gets another attempt: [`Self::decide`]
    /// with only the category.
    pub fn should_retry(&self, run: &Run, failure: FailureCategory) -> bool {
        let attempt = FailedAttempt {
            failure,
            exit_code: None,
            reason: None,
        };
        self.decide(run, &attempt).retry
    }

    /// Whether `run`, whose current attempt failed as `attempt` says, gets
    /// another attempt: the first of the run's `evaluate_on_exit` rules
    /// that matches decides (`RETRY` while attempts remain, unless the
    /// category is never retried; `EXIT` never), else the default for the
    /// category.
    pub fn decide(&self, run: &Run, attempt: &FailedAttempt<'_>) -> RetryDecision {
        let left = run.attempt < run.max_attempts;
        let rule = run
            .retry_strategy
            .as_ref()
            .and_then(|s| s.rule_for(attempt));
        if let Some((index, rule)) = rule {
            let retry =
                rule.action == RetryAction::Retry && attempt.failure.rules_may_retry() && left;
            return RetryDecision {
                retry,
                rule: Some((index, rule.action)),
            };
        }
        let failure = attempt.failure;
        let retriable = failure.is_infrastructure()
            || (failure == FailureCategory::Oom && run.adaptive_resource_allocation)
            || (failure == FailureCategory::AppExit && run.retry_on_app_exit);
        RetryDecision {
            retry: retriable && left,
            rule: None,
        }
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
    use crate::model::{EvaluateOnExit, NewDefinition, RetryStrategy, RunStatus};

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

    fn with_rules(mut r: Run, rules: Vec<EvaluateOnExit>) -> Run {
        r.retry_strategy = Some(RetryStrategy {
            attempts: None,
            evaluate_on_exit: rules,
        });
        r
    }

    fn failed(failure: FailureCategory, exit_code: Option<i64>) -> FailedAttempt<'static> {
        FailedAttempt {
            failure,
            exit_code,
            reason: None,
        }
    }

    #[test]
    fn an_exit_rule_beats_the_default_retry_of_infrastructure_failures() {
        let p = RetryPolicy::default();
        let r = with_rules(
            run(1, 3),
            vec![EvaluateOnExit::new(RetryAction::Exit).on_reason("node_lost")],
        );
        let d = p.decide(&r, &failed(FailureCategory::NodeLost, None));
        assert_eq!(
            d,
            RetryDecision {
                retry: false,
                rule: Some((0, RetryAction::Exit))
            }
        );
        assert_eq!(
            d.rule_text().as_deref(),
            Some("retry_strategy.evaluate_on_exit[0] (EXIT)")
        );
        assert!(
            p.decide(&r, &failed(FailureCategory::ImagePull, None))
                .retry,
            "no rule matches image_pull: the default retries it"
        );
        let star = with_rules(
            run(1, 3),
            vec![EvaluateOnExit::new(RetryAction::Exit).on_reason("*")],
        );
        assert!(!p.should_retry(&star, FailureCategory::ContainerStart));
    }

    #[test]
    fn a_retry_rule_retries_app_exit_without_retry_on_app_exit() {
        let p = RetryPolicy::default();
        let r = with_rules(
            run(1, 3),
            vec![
                EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3"),
                EvaluateOnExit::new(RetryAction::Exit).on_exit_code("*"),
            ],
        );
        assert!(!r.retry_on_app_exit);
        let d = p.decide(&r, &failed(FailureCategory::AppExit, Some(3)));
        assert_eq!(d.rule, Some((0, RetryAction::Retry)));
        assert!(d.retry);
        let d = p.decide(&r, &failed(FailureCategory::AppExit, Some(4)));
        assert_eq!(d.rule, Some((1, RetryAction::Exit)));
        assert!(!d.retry);
        let d = p.decide(&r, &failed(FailureCategory::NodeLost, None));
        assert_eq!(
            d,
            RetryDecision {
                retry: true,
                rule: None
            },
            "no exit code: neither rule matches, the default retries node_lost"
        );
        let mut oom = with_rules(
            run(1, 3),
            vec![EvaluateOnExit::new(RetryAction::Retry).on_reason("oom")],
        );
        assert!(
            p.should_retry(&oom, FailureCategory::Oom),
            "oom without adaptive allocation"
        );
        oom.retry_strategy = None;
        assert!(!p.should_retry(&oom, FailureCategory::Oom));
    }

    #[test]
    fn a_retry_rule_is_capped_by_the_attempts() {
        let p = RetryPolicy::default();
        let rules = vec![EvaluateOnExit::new(RetryAction::Retry).on_exit_code("*")];
        let app = failed(FailureCategory::AppExit, Some(1));
        assert!(p.decide(&with_rules(run(1, 2), rules.clone()), &app).retry);
        let spent = p.decide(&with_rules(run(2, 2), rules.clone()), &app);
        assert_eq!(
            spent,
            RetryDecision {
                retry: false,
                rule: Some((0, RetryAction::Retry))
            }
        );
        let mut def = NewDefinition::new("a", "img").into_definition();
        def.max_attempts = Some(5);
        def.retry_strategy = Some(RetryStrategy {
            attempts: Some(2),
            evaluate_on_exit: rules,
        });
        let mut r = Run::queued(&def, "default", "local", "me");
        assert_eq!(r.max_attempts, 2, "attempts wins over max_attempts");
        assert!(p.decide(&r, &app).retry);
        r.attempt = 2;
        assert!(!p.decide(&r, &app).retry, "attempt 2 of 2 is the last");
    }

    #[test]
    fn no_rule_retries_what_is_final() {
        let p = RetryPolicy::default();
        let r = with_rules(
            run(1, 3),
            vec![EvaluateOnExit::new(RetryAction::Retry).on_reason("*")],
        );
        for c in FailureCategory::ALL {
            assert_eq!(
                p.should_retry(&r, c),
                c.rules_may_retry(),
                "{c} under a RETRY-everything rule"
            );
        }
        assert!(!p.should_retry(&r, FailureCategory::Unknown));
        assert!(!p.should_retry(&r, FailureCategory::Timeout));
        assert!(!p.should_retry(&r, FailureCategory::Terminated));
    }

    #[test]
    fn a_status_reason_rule_matches_the_engines_text() {
        let p = RetryPolicy::default();
        let r = with_rules(
            run(1, 3),
            vec![EvaluateOnExit::new(RetryAction::Retry).on_status_reason("Host EC2*")],
        );
        let spot = FailedAttempt {
            failure: FailureCategory::AppExit,
            exit_code: Some(143),
            reason: Some("Host EC2 (instance i-1) terminated."),
        };
        assert!(p.decide(&r, &spot).retry);
        let other = FailedAttempt {
            reason: Some("Essential container in task exited"),
            ..spot
        };
        assert_eq!(p.decide(&r, &other).rule, None);
        assert!(!p.decide(&r, &other).retry);
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
