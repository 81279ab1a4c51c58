//! Retry rules of a definition, in the shape of AWS Batch's
//! `retryStrategy`: an attempt limit and up to five `evaluate_on_exit`
//! rules that say, for a failed attempt, whether to try again.
//!
//! JSON names are snake_case like the rest of the model (`retry_strategy`,
//! `evaluate_on_exit`, `on_exit_code`, `on_reason`, `on_status_reason`);
//! AWS Batch's camelCase names (`retryStrategy`, `evaluateOnExit`,
//! `onExitCode`, `onReason`, `onStatusReason`) are accepted too, so a Batch
//! job definition's block can be pasted. Validation is
//! [`crate::validate::check_retry_strategy`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use super::FailureCategory;
use crate::error::{Error, Result};

/// How a definition's failed attempts are retried (AWS Batch's
/// `retryStrategy`).
///
/// - `attempts`, when set, is the run's attempt limit: it wins over the
///   definition's `max_attempts` when both are given (both are kept as
///   given; the run uses `attempts`).
/// - `evaluate_on_exit` is looked at, in order, for every failed attempt
///   (exit code other than 0, or a failure the engine reported); the first
///   rule whose conditions all match decides: `RETRY` gives another attempt
///   if attempts remain, `EXIT` stops the run whatever the failure. When
///   no rule matches, the default policy decides (see
///   [`crate::RetryPolicy`]).
/// - Attempts that failed `unknown` (their outcome may have been a
///   success), `terminated` (a user stopped them), `timeout` (as in AWS
///   Batch) or `submit_rejected` are final: no rule retries them (see
///   [`FailureCategory::rules_may_retry`]); an `EXIT` rule may still match
///   them. An attempt that exited 0 succeeded and is never looked at.
/// - An empty strategy (no `attempts`, no rules) is the same as none: a
///   definition stores it as none, and an update sending `{}` clears the
///   definition's rules.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryStrategy {
    /// Attempts in all, 1..=10 (AWS Batch's range); overrides the
    /// definition's `max_attempts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Up to 5 rules; the first that matches a failed attempt decides.
    #[serde(default, alias = "evaluateOnExit")]
    pub evaluate_on_exit: Vec<EvaluateOnExit>,
}

/// One rule of a [`RetryStrategy`]: conditions on a failed attempt and what
/// to do when all of them match.
///
/// Every condition is a pattern: text that must equal the value, or, when
/// it ends with `*`, a prefix of it (`*` alone matches any value present).
/// A value that is absent (no exit code, no reason) matches no pattern. A
/// rule needs at least one condition.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateOnExit {
    /// `RETRY` or `EXIT` (any case, as AWS Batch accepts).
    pub action: RetryAction,
    /// Matches the attempt's exit code as decimal text: digits, optionally
    /// ending with `*` (`"1*"` matches 1, 10, 137, ...).
    #[serde(default, alias = "onExitCode", skip_serializing_if = "Option::is_none")]
    pub on_exit_code: Option<String>,
    /// Matches the attempt's failure category as serialized: `image_pull`,
    /// `container_start`, `node_lost`, `oom`, `app_exit`, ... (so one rule
    /// means the same on every engine). AWS Batch matches the container's
    /// reason here; in flotilla that text is what `on_status_reason` sees.
    #[serde(default, alias = "onReason", skip_serializing_if = "Option::is_none")]
    pub on_reason: Option<String>,
    /// Matches the reason text the engine gave for the end of the attempt
    /// (the run's `exit_reason`): on ECS `stopCode: stoppedReason
    /// (container: reason)`, e.g. `EssentialContainerExited: Essential
    /// container in task exited`; on Kubernetes the pod's or container's
    /// reason (`Evicted`, `OOMKilled`, `Error`); on the local engine
    /// `exited with code 3`.
    #[serde(
        default,
        alias = "onStatusReason",
        skip_serializing_if = "Option::is_none"
    )]
    pub on_status_reason: Option<String>,
}

/// What a matching [`EvaluateOnExit`] rule does.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryAction {
    /// Another attempt, if attempts remain.
    Retry,
    /// No further attempt, whatever the failure.
    Exit,
}

impl RetryAction {
    /// `RETRY` or `EXIT`.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryAction::Retry => "RETRY",
            RetryAction::Exit => "EXIT",
        }
    }
}

impl fmt::Display for RetryAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RetryAction {
    type Err = Error;

    /// `RETRY` or `EXIT` in any case.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("RETRY") {
            Ok(RetryAction::Retry)
        } else if s.eq_ignore_ascii_case("EXIT") {
            Ok(RetryAction::Exit)
        } else {
            Err(Error::invalid(format!(
                "action: '{s}' is not RETRY or EXIT"
            )))
        }
    }
}

impl<'de> Deserialize<'de> for RetryAction {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

/// What a rule looks at: one failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FailedAttempt<'a> {
    /// How it failed.
    pub failure: FailureCategory,
    /// Its exit code, if it exited.
    pub exit_code: Option<i64>,
    /// The engine's reason text (the run's `exit_reason`), if any.
    pub reason: Option<&'a str>,
}

/// Whether `pattern` (exact, or a prefix when it ends with `*`) matches
/// `value`; an absent value matches nothing.
pub fn pattern_matches(pattern: &str, value: Option<&str>) -> bool {
    let Some(value) = value else {
        return false;
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => value == pattern,
    }
}

impl EvaluateOnExit {
    /// A rule with `action` and no conditions yet.
    pub fn new(action: RetryAction) -> Self {
        EvaluateOnExit {
            action,
            on_exit_code: None,
            on_reason: None,
            on_status_reason: None,
        }
    }

    /// Sets the exit-code pattern.
    pub fn on_exit_code(mut self, pattern: impl Into<String>) -> Self {
        self.on_exit_code = Some(pattern.into());
        self
    }

    /// Sets the failure-category pattern.
    pub fn on_reason(mut self, pattern: impl Into<String>) -> Self {
        self.on_reason = Some(pattern.into());
        self
    }

    /// Sets the reason-text pattern.
    pub fn on_status_reason(mut self, pattern: impl Into<String>) -> Self {
        self.on_status_reason = Some(pattern.into());
        self
    }

    /// Whether the rule has at least one condition.
    pub fn has_condition(&self) -> bool {
        self.on_exit_code.is_some() || self.on_reason.is_some() || self.on_status_reason.is_some()
    }

    /// Whether every condition given matches `attempt`; a rule without
    /// conditions matches nothing (validation refuses it).
    pub fn matches(&self, attempt: &FailedAttempt<'_>) -> bool {
        if !self.has_condition() {
            return false;
        }
        let code = attempt.exit_code.map(|c| c.to_string());
        let checks = [
            (self.on_exit_code.as_deref(), code.as_deref()),
            (self.on_reason.as_deref(), Some(attempt.failure.as_str())),
            (self.on_status_reason.as_deref(), attempt.reason),
        ];
        checks
            .iter()
            .all(|(pattern, value)| pattern.is_none_or(|p| pattern_matches(p, *value)))
    }
}

impl RetryStrategy {
    /// No `attempts` and no rules: the same as no strategy (an update
    /// sending it clears the definition's).
    pub fn is_empty(&self) -> bool {
        self.attempts.is_none() && self.evaluate_on_exit.is_empty()
    }

    /// The first rule matching `attempt`, with its index.
    pub fn rule_for(&self, attempt: &FailedAttempt<'_>) -> Option<(usize, &EvaluateOnExit)> {
        self.evaluate_on_exit
            .iter()
            .enumerate()
            .find(|(_, rule)| rule.matches(attempt))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn failed(
        failure: FailureCategory,
        exit_code: Option<i64>,
        reason: Option<&str>,
    ) -> FailedAttempt<'_> {
        FailedAttempt {
            failure,
            exit_code,
            reason,
        }
    }

    #[test]
    fn a_trailing_star_matches_a_prefix_and_nothing_else_is_a_glob() {
        assert!(pattern_matches("1*", Some("137")));
        assert!(pattern_matches("1*", Some("1")));
        assert!(!pattern_matches("1*", Some("21")));
        assert!(pattern_matches("*", Some("")));
        assert!(pattern_matches("137", Some("137")));
        assert!(!pattern_matches("13", Some("137")), "exact without a star");
        assert!(!pattern_matches("137", Some("13")));
        assert!(
            !pattern_matches("*", None),
            "an absent value matches nothing"
        );
        assert!(pattern_matches(
            "Essential container*",
            Some("Essential container in task exited")
        ));
        assert!(!pattern_matches(
            "essential container*",
            Some("Essential container in task exited")
        ));
    }

    #[test]
    fn every_condition_of_a_rule_must_match() {
        let rule = EvaluateOnExit::new(RetryAction::Retry)
            .on_exit_code("3")
            .on_reason("app_exit")
            .on_status_reason("exited*");
        let app = FailureCategory::AppExit;
        assert!(rule.matches(&failed(app, Some(3), Some("exited with code 3"))));
        assert!(!rule.matches(&failed(app, Some(4), Some("exited with code 4"))));
        assert!(!rule.matches(&failed(FailureCategory::Oom, Some(3), Some("exited"))));
        assert!(!rule.matches(&failed(app, Some(3), None)));
        assert!(!rule.matches(&failed(app, None, Some("exited"))));
        assert!(
            !EvaluateOnExit::new(RetryAction::Exit).matches(&failed(app, Some(1), None)),
            "a rule without conditions matches nothing"
        );
    }

    #[test]
    fn the_first_matching_rule_wins() {
        let s = RetryStrategy {
            attempts: Some(3),
            evaluate_on_exit: vec![
                EvaluateOnExit::new(RetryAction::Retry).on_exit_code("3"),
                EvaluateOnExit::new(RetryAction::Exit).on_exit_code("*"),
                EvaluateOnExit::new(RetryAction::Retry).on_exit_code("4"),
            ],
        };
        let app = FailureCategory::AppExit;
        let (i, r) = s.rule_for(&failed(app, Some(3), None)).expect("rule 0");
        assert_eq!((i, r.action), (0, RetryAction::Retry));
        let (i, r) = s.rule_for(&failed(app, Some(4), None)).expect("rule 1");
        assert_eq!((i, r.action), (1, RetryAction::Exit), "not the later RETRY");
        assert_eq!(
            s.rule_for(&failed(FailureCategory::NodeLost, None, None)),
            None,
            "no exit code: even '*' does not match"
        );
    }

    #[test]
    fn aws_batch_camel_case_and_any_case_actions_parse() {
        let batch = r#"{
            "attempts": 2,
            "evaluateOnExit": [
                {"onStatusReason": "Host EC2*", "action": "retry"},
                {"onReason": "oom", "onExitCode": "137", "action": "Exit"},
                {"on_exit_code": "*", "action": "EXIT"}
            ]
        }"#;
        let s: RetryStrategy = serde_json::from_str(batch).expect("batch block");
        assert_eq!(s.attempts, Some(2));
        assert_eq!(s.evaluate_on_exit[0].action, RetryAction::Retry);
        assert_eq!(
            s.evaluate_on_exit[0].on_status_reason.as_deref(),
            Some("Host EC2*")
        );
        assert_eq!(s.evaluate_on_exit[1].action, RetryAction::Exit);
        assert_eq!(s.evaluate_on_exit[1].on_reason.as_deref(), Some("oom"));
        assert_eq!(s.evaluate_on_exit[1].on_exit_code.as_deref(), Some("137"));
        let json = serde_json::to_value(&s).expect("serialize");
        assert_eq!(json["evaluate_on_exit"][0]["action"], "RETRY");
        assert_eq!(json["evaluate_on_exit"][0]["on_status_reason"], "Host EC2*");
        let back: RetryStrategy = serde_json::from_value(json).expect("round trip");
        assert_eq!(back, s);
        let bad = serde_json::from_str::<RetryStrategy>(
            r#"{"evaluate_on_exit": [{"action": "again", "on_exit_code": "1"}]}"#,
        )
        .expect_err("unknown action");
        assert!(bad.to_string().contains("not RETRY or EXIT"), "{bad}");
        let typo = serde_json::from_str::<RetryStrategy>(
            r#"{"evaluate_on_exit": [{"action": "EXIT", "on_exitcode": "1"}]}"#,
        )
        .expect_err("a misspelt condition is refused, not dropped");
        assert!(typo.to_string().contains("on_exitcode"), "{typo}");
    }

    proptest! {
        #[test]
        fn exact_codes_match_only_themselves(code in -1000i64..100_000, other in -1000i64..100_000) {
            let rule = EvaluateOnExit::new(RetryAction::Retry).on_exit_code(code.to_string());
            let app = FailureCategory::AppExit;
            prop_assert!(rule.matches(&failed(app, Some(code), None)));
            prop_assert_eq!(rule.matches(&failed(app, Some(other), None)), code == other);
        }

        #[test]
        fn a_star_pattern_matches_exactly_the_codes_it_prefixes(prefix in "[0-9]{1,3}", code in 0i64..100_000) {
            let rule = EvaluateOnExit::new(RetryAction::Exit).on_exit_code(format!("{prefix}*"));
            let hit = rule.matches(&failed(FailureCategory::AppExit, Some(code), None));
            prop_assert_eq!(hit, code.to_string().starts_with(&prefix));
        }
    }
}
