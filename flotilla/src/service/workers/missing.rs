//! `Missing` is not an outcome: an engine's "no record of this run" counts
//! only when it persists, without a single sighting in between, for
//! `missing_grace` from its first observation and over at least
//! [`MIN_OBSERVATIONS`] observations. One blip of an engine's API or a cold
//! watch cache after a restart declares nothing lost.
//!
//! The record lives in the status worker's memory: a new leader starts
//! counting afresh, which only ever delays a verdict.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// Observations of absence needed before a run is lost.
pub(crate) const MIN_OBSERVATIONS: u32 = 2;

#[derive(Debug, Clone, Copy)]
struct Absence {
    first: Instant,
    count: u32,
}

/// Continuous absences, per run attempt.
#[derive(Debug, Default)]
pub(crate) struct MissingTracker {
    absent: Mutex<HashMap<(String, u32), Absence>>,
    /// The map's size, kept under the lock, so that [`present`](Self::present)
    /// (called for every observation) takes no lock while nothing is absent.
    tracked: AtomicUsize,
}

impl MissingTracker {
    /// Records one observation of absence; true once the attempt has been
    /// absent continuously for `grace` over [`MIN_OBSERVATIONS`] sightings.
    pub(crate) fn absent(&self, run_id: &str, attempt: u32, grace: Duration) -> bool {
        let Ok(mut map) = self.absent.lock() else {
            return false;
        };
        let now = Instant::now();
        let a = map.entry((run_id.to_string(), attempt)).or_insert(Absence {
            first: now,
            count: 0,
        });
        a.count += 1;
        let lost = a.count >= MIN_OBSERVATIONS && now.duration_since(a.first) >= grace;
        self.tracked.store(map.len(), Ordering::Release);
        lost
    }

    /// The engine knows the attempt: any absence so far is forgotten.
    pub(crate) fn present(&self, run_id: &str, attempt: u32) {
        if self.tracked.load(Ordering::Acquire) == 0 {
            return;
        }
        if let Ok(mut map) = self.absent.lock() {
            map.remove(&(run_id.to_string(), attempt));
            self.tracked.store(map.len(), Ordering::Release);
        }
    }

    /// Keeps only the attempts still active (after a full poll), so the
    /// record never outgrows the active runs.
    pub(crate) fn retain_active(&self, active: &HashSet<(String, u32)>) {
        if let Ok(mut map) = self.absent.lock() {
            map.retain(|k, _| active.contains(k));
            self.tracked.store(map.len(), Ordering::Release);
        }
    }

    /// How many attempts are currently unaccounted for.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.absent.lock().map(|m| m.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_absence_is_not_enough_even_after_the_grace() {
        let t = MissingTracker::default();
        assert!(!t.absent("r", 1, Duration::ZERO));
        assert!(t.absent("r", 1, Duration::ZERO));
    }

    #[test]
    fn a_sighting_restarts_the_count() {
        let t = MissingTracker::default();
        assert!(!t.absent("r", 1, Duration::ZERO));
        t.present("r", 1);
        assert!(!t.absent("r", 1, Duration::ZERO));
        assert!(t.absent("r", 1, Duration::ZERO));
    }

    #[test]
    fn the_grace_runs_from_the_first_absence() {
        let t = MissingTracker::default();
        let grace = Duration::from_secs(3600);
        for _ in 0..10 {
            assert!(!t.absent("r", 1, grace));
        }
    }

    #[test]
    fn attempts_are_counted_apart_and_pruned() {
        let t = MissingTracker::default();
        assert!(!t.absent("r", 1, Duration::ZERO));
        assert!(!t.absent("r", 2, Duration::ZERO));
        let keep: HashSet<(String, u32)> = [("r".to_string(), 2)].into_iter().collect();
        t.retain_active(&keep);
        assert_eq!(t.len(), 1);
        assert!(t.absent("r", 2, Duration::ZERO));
    }
}
