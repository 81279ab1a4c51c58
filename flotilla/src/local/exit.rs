//! How the end of a local attempt is classified (`exit.json`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::model::{self, FailureCategory};

/// What `exit.json` holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ExitRecord {
    pub(super) exit_code: Option<i64>,
    pub(super) signal: Option<i32>,
    pub(super) failure: Option<FailureCategory>,
    pub(super) reason: Option<String>,
    pub(super) finished_at: DateTime<Utc>,
    /// Where the output zip was uploaded.
    #[serde(default)]
    pub(super) output_url: Option<String>,
}

/// Why flotilla stopped a process (`stop.json`, so that whichever engine
/// object watches the process classifies its end right).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum StopCause {
    /// [`crate::Engine::terminate`], with its reason.
    Terminated(String),
    /// The run's deadline passed.
    Timeout(String),
}

/// What is known of how an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ended {
    /// The supervisor recorded the command's `$?`: its exit code, or 128 +
    /// the signal that killed it (the shell does not tell the two apart).
    Status(i64),
    /// The supervisor itself died of this signal before recording anything
    /// (the whole process group was killed).
    Signal(i32),
    /// Nothing is known; the text says why.
    Unknown(String),
}

fn signal_name(signal: i32) -> String {
    crate::signals::signal_name(i64::from(signal))
        .map_or_else(|| format!("signal {signal}"), str::to_string)
}

/// How an end is reported.
///
/// - Stopped by flotilla: `terminated` (terminate) or `timeout` (deadline),
///   whatever the exit status.
/// - An exit status recorded by the supervisor: 0 is success; another code
///   has no failure (`app_exit`), and a code above 128 names the signal it
///   stands for, since a crash (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL,
///   ...) is the program's fault, not the host's.
/// - A signal no one in flotilla sent that killed the whole group:
///   `app_exit` naming the signal. It may have been the kernel's OOM killer,
///   but this engine puts runs in no cgroup of their own, so it cannot know
///   (no `memory.events` to read); it says so instead of guessing `oom`,
///   and never calls it `node_lost`: the host is this machine, still up.
/// - Nothing known: `unknown`, with the reason.
pub(super) fn classify(ended: Ended, cause: Option<StopCause>) -> ExitRecord {
    let (exit_code, signal) = match &ended {
        Ended::Status(c) => (Some(*c), None),
        Ended::Signal(s) => (Some(128 + i64::from(*s)), Some(*s)),
        Ended::Unknown(_) => (None, None),
    };
    let (failure, reason) = match (cause, ended) {
        (Some(StopCause::Terminated(r)), _) => (Some(FailureCategory::Terminated), Some(r)),
        (Some(StopCause::Timeout(r)), _) => (Some(FailureCategory::Timeout), Some(r)),
        (None, Ended::Status(0)) => (None, None),
        (None, Ended::Status(c)) => match crate::signals::signal_of_exit_code(c) {
            Some((sig, name)) => (
                None,
                Some(format!(
                    "exited with code {c}: killed by {name} (signal {sig}), or exited with that code"
                )),
            ),
            None => (None, Some(format!("exited with code {c}"))),
        },
        (None, Ended::Signal(s)) => (
            Some(FailureCategory::AppExit),
            Some(format!(
                "killed by {} (signal {s}), not sent by flotilla: another process or the kernel (an out-of-memory kill cannot be told apart here)",
                signal_name(s)
            )),
        ),
        (None, Ended::Unknown(why)) => (Some(FailureCategory::Unknown), Some(why)),
    };
    ExitRecord {
        exit_code,
        signal,
        failure,
        reason,
        finished_at: model::now(),
        output_url: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crashes_are_app_exits_naming_the_signal() {
        for (sig, name) in [
            (11, "SIGSEGV"),
            (6, "SIGABRT"),
            (7, "SIGBUS"),
            (8, "SIGFPE"),
            (4, "SIGILL"),
        ] {
            let e = classify(Ended::Status(128 + sig), None);
            assert_eq!(e.failure, None, "app_exit: {e:?}");
            assert_eq!(e.exit_code, Some(128 + sig));
            let reason = e.reason.unwrap_or_default();
            assert!(reason.contains(name), "{reason}");
            let e = classify(Ended::Signal(i32::try_from(sig).expect("small")), None);
            assert_eq!(e.failure, Some(FailureCategory::AppExit), "{e:?}");
            assert!(e.reason.unwrap_or_default().contains(name));
        }
        let e = classify(Ended::Signal(9), None);
        assert_eq!(e.failure, Some(FailureCategory::AppExit));
        assert_eq!(e.exit_code, Some(137));
        assert!(e.reason.unwrap_or_default().contains("SIGKILL"));
    }

    #[test]
    fn flotillas_own_stops_keep_their_cause() {
        let t = classify(
            Ended::Signal(9),
            Some(StopCause::Terminated("by alice".into())),
        );
        assert_eq!(t.failure, Some(FailureCategory::Terminated));
        assert_eq!(t.reason.as_deref(), Some("by alice"));
        assert_eq!(t.exit_code, Some(137));
        let d = classify(
            Ended::Status(143),
            Some(StopCause::Timeout("deadline".into())),
        );
        assert_eq!(d.failure, Some(FailureCategory::Timeout));
        assert_eq!(d.exit_code, Some(143));
    }

    #[test]
    fn plain_exits_and_the_unknown() {
        let ok = classify(Ended::Status(0), None);
        assert_eq!((ok.failure, ok.reason, ok.exit_code), (None, None, Some(0)));
        let three = classify(Ended::Status(3), None);
        assert_eq!(three.failure, None);
        assert_eq!(three.reason.as_deref(), Some("exited with code 3"));
        let u = classify(Ended::Unknown("gone".into()), None);
        assert_eq!(u.failure, Some(FailureCategory::Unknown));
        assert_eq!((u.exit_code, u.reason.as_deref()), (None, Some("gone")));
    }
}
