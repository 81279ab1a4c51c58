//! Leases for the singleton workers, with fencing.
//!
//! A lease is taken in the store for `lease_ttl` and renewed at a third of
//! it. The holder knows a conservative end of its lease (measured from
//! *before* the store call, less a margin), and a loop asks
//! [`Lease::valid`] before each write and [`Lease::hold`] between pages: a
//! leader whose lease ran out mid-loop (a slow engine, a stalled store)
//! stops writing instead of running beside the new leader.

use std::time::Duration;

use tokio::time::Instant;

use crate::service::Flotilla;

/// A singleton lease, renewed at a third of its TTL.
pub(crate) struct Lease {
    f: Flotilla,
    name: &'static str,
    renew_at: Option<Instant>,
    /// The lease is ours until then, at the latest.
    valid_until: Option<Instant>,
}

impl Lease {
    pub(crate) fn new(f: &Flotilla, name: &'static str) -> Self {
        Lease {
            f: f.clone(),
            name,
            renew_at: None,
            valid_until: None,
        }
    }

    /// Takes or renews the lease when due; false when another replica holds
    /// it (or the store cannot say).
    pub(crate) async fn hold(&mut self) -> bool {
        if let Some(at) = self.renew_at
            && Instant::now() < at
            && self.valid()
        {
            return true;
        }
        let cfg = &self.f.inner.config;
        let ttl = cfg.workers.lease_ttl;
        let asked = Instant::now();
        match self
            .f
            .inner
            .store
            .try_lease(self.name, &cfg.replica_id, ttl)
            .await
        {
            Ok(true) => {
                if self.renew_at.is_none() {
                    tracing::info!(lease = self.name, replica = %cfg.replica_id, "lease taken");
                }
                self.renew_at = Some(Instant::now() + ttl / 3);
                self.valid_until = Some(asked + ttl - ttl / 10);
                true
            }
            Ok(false) => {
                if self.renew_at.is_some() {
                    tracing::warn!(lease = self.name, replica = %cfg.replica_id, "lease lost to another replica");
                }
                self.lost();
                false
            }
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "lease check failed");
                self.lost();
                false
            }
        }
    }

    /// Whether the lease is certainly still ours: checked before writes.
    pub(crate) fn valid(&self) -> bool {
        self.valid_until.is_some_and(|t| Instant::now() < t)
    }

    fn lost(&mut self) {
        self.renew_at = None;
        self.valid_until = None;
    }

    pub(crate) async fn release(&mut self) {
        if self.renew_at.take().is_some() {
            self.valid_until = None;
            let cfg = &self.f.inner.config;
            if let Err(e) = self
                .f
                .inner
                .store
                .release_lease(self.name, &cfg.replica_id)
                .await
            {
                tracing::warn!(lease = self.name, error = %e, "lease release failed");
            }
        }
    }

    pub(crate) fn wait(&self) -> Duration {
        self.f.inner.config.workers.lease_ttl / 3
    }

    /// How long until [`Lease::hold`] renews a held lease: a loop that
    /// waits for work longer than that wakes to renew it, so an idle
    /// leader keeps its lease.
    pub(crate) fn renew_in(&self) -> Duration {
        self.renew_at
            .map(|at| at.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|| self.wait())
    }
}
