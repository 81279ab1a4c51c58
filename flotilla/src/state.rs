//! The run life cycle: the one function every status change goes through.
//!
//! ```text
//! QUEUED ──submit──▶ PENDING ──start──▶ RUNNING ──exit──▶ STOPPED
//!    │                  │                  │                ▲
//!    │                  └──────┬───────────┘                │
//!    │                         ▼ (retriable failure)        │
//!    │                    NEEDS_RETRY ──retry worker──▶ QUEUED
//!    └──────────── terminate / permanent submit error ──────┘
//! ```

use crate::error::{Error, Result};
use crate::model::RunStatus;

/// Whether `from → to` is a legal transition. A queued run reaches RUNNING
/// only through PENDING: something must have submitted it to an engine.
pub fn is_allowed(from: RunStatus, to: RunStatus) -> bool {
    use RunStatus::*;
    matches!(
        (from, to),
        (Queued, Pending | Stopped)
            | (Pending, Running | Stopped | NeedsRetry)
            | (Running, Stopped | NeedsRetry)
            | (NeedsRetry, Queued | Stopped)
    )
}

/// Checks `from → to`; an illegal transition is a `Conflict` naming both.
pub fn check_transition(from: RunStatus, to: RunStatus) -> Result<()> {
    if is_allowed(from, to) {
        Ok(())
    } else {
        Err(Error::conflict(format!(
            "illegal status transition {from} → {to}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus::*;

    #[test]
    fn the_whole_table() {
        let allowed = [
            (Queued, Pending),
            (Queued, Stopped),
            (Pending, Running),
            (Pending, Stopped),
            (Pending, NeedsRetry),
            (Running, Stopped),
            (Running, NeedsRetry),
            (NeedsRetry, Queued),
            (NeedsRetry, Stopped),
        ];
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                let expect = allowed.contains(&(from, to));
                assert_eq!(is_allowed(from, to), expect, "{from} → {to}");
                assert_eq!(check_transition(from, to).is_ok(), expect, "{from} → {to}");
            }
        }
    }

    #[test]
    fn stopped_is_terminal_and_nothing_goes_back() {
        for to in RunStatus::ALL {
            assert!(!is_allowed(Stopped, to));
        }
        assert!(!is_allowed(Running, Pending));
        assert!(!is_allowed(Running, Queued));
        assert!(!is_allowed(Pending, Queued));
        assert!(
            !is_allowed(Queued, Running),
            "only a submit makes a run active"
        );
        let e = check_transition(Stopped, Running).expect_err("terminal");
        assert_eq!(e.kind(), crate::ErrorKind::Conflict);
        assert!(e.message().contains("STOPPED → RUNNING"));
    }
}
