//! Clusters whose queues the submit worker leaves alone: those in
//! `maintenance`. Their runs wait in the queue itself, unclaimed, instead
//! of being received and released again and again.
//!
//! A change made through this process ([`crate::Flotilla::put_cluster`],
//! [`crate::Flotilla::delete_cluster`]) takes effect at once and wakes the
//! submit worker, even in the middle of a long receive. A change made
//! through another replica is seen when this one next reads the stored
//! clusters: when a delivery of the cluster arrives, and, while any
//! cluster is held, every `workers.maintenance_delay` (the store has no
//! change events to wait on, so this bounded re-check is the one timer).

use std::collections::BTreeSet;
use std::sync::Mutex;

use tokio::sync::Notify;

use crate::model::{Cluster, ClusterStatus};

/// The held clusters of this replica, and a wake-up for their changes.
#[derive(Debug, Default)]
pub(crate) struct ClusterHolds {
    state: Mutex<State>,
    /// Signalled (to every waiter) when the set changes.
    pub(crate) changed: Notify,
}

#[derive(Debug, Default)]
struct State {
    held: BTreeSet<String>,
    /// Bumped by every change made through this process, so a read of the
    /// store that started before one does not undo it.
    version: u64,
}

/// Whether a cluster of this status keeps its queue unclaimed.
pub(crate) fn holds_queue(status: ClusterStatus) -> bool {
    status == ClusterStatus::Maintenance
}

impl ClusterHolds {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Option<T> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }

    /// Follows a cluster stored (or, `None`, deleted) through this process.
    pub(crate) fn follow(&self, name: &str, cluster: Option<&Cluster>) {
        let changed = self
            .with(|s| {
                s.version += 1;
                if cluster.is_some_and(|c| holds_queue(c.status)) {
                    s.held.insert(name.to_string())
                } else {
                    s.held.remove(name)
                }
            })
            .unwrap_or(false);
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Holds `name`, found in maintenance in the store just now.
    pub(crate) fn hold(&self, name: &str) {
        self.with(|s| s.held.insert(name.to_string()));
    }

    /// The version to pass to [`ClusterHolds::replace`] after reading the
    /// stored clusters.
    pub(crate) fn version(&self) -> u64 {
        self.with(|s| s.version).unwrap_or(0)
    }

    /// Replaces the set by the stored `clusters` read since `version`,
    /// unless this process changed a cluster in between (its change is
    /// newer than the read).
    pub(crate) fn replace(&self, clusters: &[Cluster], version: u64) {
        let changed = self
            .with(|s| {
                if s.version != version {
                    return false;
                }
                let held: BTreeSet<String> = clusters
                    .iter()
                    .filter(|c| holds_queue(c.status))
                    .map(|c| c.name.clone())
                    .collect();
                let changed = held != s.held;
                s.held = held;
                changed
            })
            .unwrap_or(false);
        if changed {
            self.changed.notify_waiters();
        }
    }

    /// Whether `name`'s queue is left alone.
    pub(crate) fn is_held(&self, name: &str) -> bool {
        self.with(|s| s.held.contains(name)).unwrap_or(false)
    }

    /// Whether any cluster is held.
    pub(crate) fn any(&self) -> bool {
        self.with(|s| !s.held.is_empty()).unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(name: &str, status: ClusterStatus) -> Cluster {
        let mut c = Cluster::new(name);
        c.status = status;
        c
    }

    #[test]
    fn a_store_read_older_than_a_local_change_does_not_undo_it() {
        let h = ClusterHolds::default();
        let before = h.version();
        h.follow("a", Some(&cluster("a", ClusterStatus::Maintenance)));
        h.replace(&[cluster("a", ClusterStatus::Active)], before);
        assert!(h.is_held("a"), "the read began before the local change");
        let now = h.version();
        h.replace(&[cluster("a", ClusterStatus::Active)], now);
        assert!(!h.is_held("a"));
        assert!(!h.any());
    }

    #[test]
    fn only_maintenance_holds_and_a_deleted_cluster_is_let_go() {
        let h = ClusterHolds::default();
        h.follow("off", Some(&cluster("off", ClusterStatus::Offline)));
        assert!(!h.is_held("off"), "offline runs are stopped, not held");
        h.follow("m", Some(&cluster("m", ClusterStatus::Maintenance)));
        assert!(h.is_held("m"));
        h.follow("m", None);
        assert!(!h.is_held("m"));
    }
}
