//! How ECS task states, stop codes and reasons map onto flotilla's task
//! states and failure categories.

use flotilla::{FailureCategory, TaskState};

/// Prefix of the stop reason flotilla gives a task it stops because the
/// run's `active_deadline_seconds` passed; such a stop is a `timeout`.
pub const DEADLINE_REASON: &str = "flotilla: active_deadline_seconds exceeded";

/// The flotilla state of an ECS `lastStatus`.
///
/// PROVISIONING, PENDING and ACTIVATING are `Pending`; RUNNING and the
/// stopping states (DEACTIVATING, STOPPING, DEPROVISIONING: the container
/// is on its way out but the task has not stopped) are `Running`; STOPPED
/// (and DELETED) is `Stopped`.
pub fn task_state(last_status: &str) -> TaskState {
    match last_status {
        "STOPPED" | "DELETED" => TaskState::Stopped,
        "RUNNING" | "DEACTIVATING" | "STOPPING" | "DEPROVISIONING" => TaskState::Running,
        _ => TaskState::Pending,
    }
}

/// What a stopped task tells about how it ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopFacts<'a> {
    /// The task's `stopCode`.
    pub stop_code: Option<&'a str>,
    /// The task's `stoppedReason`.
    pub stopped_reason: Option<&'a str>,
    /// The run container's `reason`.
    pub container_reason: Option<&'a str>,
    /// The run container's `exitCode`.
    pub exit_code: Option<i64>,
}

/// The failure category of a stopped task (`None`: success) and the reason
/// shown to people.
///
/// - stop code `UserInitiated` → `terminated` (a flotilla deadline stop →
///   `timeout`);
/// - `CannotPullContainerError` → `image_pull`;
/// - `CannotStartContainerError`, `CannotCreateContainerError`,
///   `CannotInspectContainerError`, `ResourceInitializationError`, or
///   `TaskFailedToStart` without a known cause → `container_start`;
/// - `OutOfMemoryError`, or exit 137 with an OOM reason → `oom`;
/// - `SpotInterruption`, `TerminationNotice`, `ServiceSchedulerInitiated`,
///   or a reason naming the host instance's termination → `node_lost`;
/// - otherwise exit 0 → success, another exit code → `app_exit`, no exit
///   code → `unknown`. An exit code above 128 is the program's death by
///   signal code − 128 (a crash: SIGSEGV, SIGABRT, SIGBUS, ...): still
///   `app_exit`, never `node_lost`, and the reason names the signal. A
///   SIGKILL (137) without an out-of-memory reason is `app_exit` too: ECS
///   says `OutOfMemoryError` when it was the memory limit.
pub fn classify_stop(f: &StopFacts<'_>) -> (Option<FailureCategory>, String) {
    let mut reason = reason_text(f);
    let texts = [f.stopped_reason, f.container_reason];
    let any = |needle: &str| texts.iter().flatten().any(|t| t.contains(needle));
    let code = f.stop_code.unwrap_or("");
    let category = if any(DEADLINE_REASON) {
        Some(FailureCategory::Timeout)
    } else if code == "UserInitiated" {
        Some(FailureCategory::Terminated)
    } else if any("CannotPullContainerError") || any("PullImageError") {
        Some(FailureCategory::ImagePull)
    } else if any("OutOfMemoryError")
        || (f.exit_code == Some(137) && (any("OutOfMemory") || any("OOM")))
    {
        Some(FailureCategory::Oom)
    } else if any("CannotStartContainerError")
        || any("CannotCreateContainerError")
        || any("CannotInspectContainerError")
        || any("ResourceInitializationError")
    {
        Some(FailureCategory::ContainerStart)
    } else if matches!(
        code,
        "SpotInterruption" | "TerminationNotice" | "ServiceSchedulerInitiated"
    ) || any("Host EC2")
        || any("instance termination")
        || any("was terminated")
    {
        Some(FailureCategory::NodeLost)
    } else if code == "TaskFailedToStart" && f.exit_code.is_none() {
        Some(FailureCategory::ContainerStart)
    } else {
        match f.exit_code {
            Some(0) => None,
            Some(_) => Some(FailureCategory::AppExit),
            None => Some(FailureCategory::Unknown),
        }
    };
    if category == Some(FailureCategory::AppExit)
        && let Some(code) = f.exit_code
        && let Some((sig, name)) = flotilla::signals::signal_of_exit_code(code)
        && !reason.contains(name)
    {
        let note = format!("exit code {code}: killed by {name} (signal {sig})");
        reason = if reason.is_empty() {
            note
        } else {
            format!("{reason} ({note})")
        };
    }
    (category, reason)
}

/// `stopCode: stoppedReason (container: reason)`, leaving out what is
/// missing or repeated.
fn reason_text(f: &StopFacts<'_>) -> String {
    let mut parts = Vec::new();
    if let Some(c) = f.stop_code.filter(|c| !c.is_empty()) {
        parts.push(c.to_string());
    }
    if let Some(r) = f.stopped_reason.filter(|r| !r.is_empty()) {
        parts.push(r.to_string());
    }
    let mut text = parts.join(": ");
    if let Some(c) = f.container_reason.filter(|c| !c.is_empty())
        && f.stopped_reason != Some(c)
    {
        if text.is_empty() {
            text = c.to_string();
        } else {
            text.push_str(&format!(" (container: {c})"));
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(
        code: &'a str,
        reason: &'a str,
        container: &'a str,
        exit: Option<i64>,
    ) -> StopFacts<'a> {
        let some = |s: &'a str| (!s.is_empty()).then_some(s);
        StopFacts {
            stop_code: some(code),
            stopped_reason: some(reason),
            container_reason: some(container),
            exit_code: exit,
        }
    }

    #[test]
    fn states_map() {
        for s in ["PROVISIONING", "PENDING", "ACTIVATING"] {
            assert_eq!(task_state(s), TaskState::Pending, "{s}");
        }
        for s in ["RUNNING", "DEACTIVATING", "STOPPING", "DEPROVISIONING"] {
            assert_eq!(task_state(s), TaskState::Running, "{s}");
        }
        assert_eq!(task_state("STOPPED"), TaskState::Stopped);
    }

    #[test]
    fn stops_are_classified() {
        use FailureCategory::*;
        let cases = [
            (
                facts(
                    "EssentialContainerExited",
                    "Essential container in task exited",
                    "",
                    Some(0),
                ),
                None,
            ),
            (
                facts(
                    "EssentialContainerExited",
                    "Essential container in task exited",
                    "",
                    Some(3),
                ),
                Some(AppExit),
            ),
            (
                facts(
                    "TaskFailedToStart",
                    "CannotPullContainerError: pull access denied",
                    "",
                    None,
                ),
                Some(ImagePull),
            ),
            (
                facts(
                    "TaskFailedToStart",
                    "",
                    "CannotPullContainerError: not found",
                    None,
                ),
                Some(ImagePull),
            ),
            (
                facts(
                    "TaskFailedToStart",
                    "CannotStartContainerError: oci runtime",
                    "",
                    None,
                ),
                Some(ContainerStart),
            ),
            (
                facts(
                    "TaskFailedToStart",
                    "ResourceInitializationError: unable to pull secrets",
                    "",
                    None,
                ),
                Some(ContainerStart),
            ),
            (
                facts("TaskFailedToStart", "", "", None),
                Some(ContainerStart),
            ),
            (
                facts(
                    "EssentialContainerExited",
                    "",
                    "OutOfMemoryError: Container killed due to memory usage",
                    Some(137),
                ),
                Some(Oom),
            ),
            (
                facts(
                    "SpotInterruption",
                    "Your Spot Task was interrupted.",
                    "",
                    None,
                ),
                Some(NodeLost),
            ),
            (
                facts(
                    "ServiceSchedulerInitiated",
                    "Host EC2 (instance i-1) terminated.",
                    "",
                    Some(143),
                ),
                Some(NodeLost),
            ),
            (
                facts("UserInitiated", "terminated by alice", "", Some(143)),
                Some(Terminated),
            ),
            (
                facts(
                    "UserInitiated",
                    "flotilla: active_deadline_seconds exceeded (60 s)",
                    "",
                    Some(143),
                ),
                Some(Timeout),
            ),
            (facts("", "", "", None), Some(Unknown)),
        ];
        for (f, want) in cases {
            assert_eq!(classify_stop(&f).0, want, "{f:?}");
        }
    }

    #[test]
    fn crashes_are_app_exits_naming_the_signal() {
        for (code, name) in [
            (139, "SIGSEGV"),
            (134, "SIGABRT"),
            (135, "SIGBUS"),
            (136, "SIGFPE"),
            (132, "SIGILL"),
            (137, "SIGKILL"),
        ] {
            let (category, reason) = classify_stop(&facts(
                "EssentialContainerExited",
                "Essential container in task exited",
                "",
                Some(code),
            ));
            assert_eq!(category, Some(FailureCategory::AppExit), "{code}");
            assert_eq!(
                reason,
                format!(
                    "EssentialContainerExited: Essential container in task exited (exit code {code}: killed by {name} (signal {}))",
                    code - 128
                )
            );
        }
        // Out of memory, as ECS tells it, is oom (exit code or not).
        for exit in [Some(137), None] {
            let (category, reason) = classify_stop(&facts(
                "EssentialContainerExited",
                "Essential container in task exited",
                "OutOfMemoryError: Container killed due to memory usage",
                exit,
            ));
            assert_eq!(category, Some(FailureCategory::Oom), "{exit:?}");
            assert!(reason.contains("OutOfMemoryError"), "{reason}");
        }
        let (category, _) = classify_stop(&facts(
            "",
            "OutOfMemoryError: Container killed due to memory usage",
            "",
            None,
        ));
        assert_eq!(category, Some(FailureCategory::Oom));
        // flotilla's own stops keep their category whatever the signal.
        let (category, _) =
            classify_stop(&facts("UserInitiated", "terminated by bob", "", Some(137)));
        assert_eq!(category, Some(FailureCategory::Terminated));
        let (category, _) = classify_stop(&facts(
            "UserInitiated",
            "flotilla: active_deadline_seconds exceeded (5 s)",
            "",
            Some(143),
        ));
        assert_eq!(category, Some(FailureCategory::Timeout));
    }

    #[test]
    fn reasons_read_well() {
        let (_, r) = classify_stop(&facts(
            "TaskFailedToStart",
            "CannotPullContainerError: x",
            "CannotPullContainerError: x",
            None,
        ));
        assert_eq!(r, "TaskFailedToStart: CannotPullContainerError: x");
        let (_, r) = classify_stop(&facts(
            "EssentialContainerExited",
            "Essential container in task exited",
            "OutOfMemoryError",
            Some(137),
        ));
        assert_eq!(
            r,
            "EssentialContainerExited: Essential container in task exited (container: OutOfMemoryError)"
        );
    }
}
