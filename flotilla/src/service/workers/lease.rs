//! Leases for the singleton workers: taken, renewed at a third of their TTL,
//! given up on shutdown.

use std::time::Duration;

use tokio::time::Instant;

use crate::service::Flotilla;

/// A singleton lease, renewed at a third of its TTL.
pub(crate) struct Lease {
    f: Flotilla,
    name: &'static str,
    renew_at: Option<Instant>,
}

impl Lease {
    pub(crate) fn new(f: &Flotilla, name: &'static str) -> Self {
        Lease {
            f: f.clone(),
            name,
            renew_at: None,
        }
    }

    pub(crate) async fn hold(&mut self) -> bool {
        if let Some(at) = self.renew_at
            && Instant::now() < at
        {
            return true;
        }
        let cfg = &self.f.inner.config;
        let ttl = cfg.workers.lease_ttl;
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
                true
            }
            Ok(false) => {
                self.renew_at = None;
                false
            }
            Err(e) => {
                tracing::warn!(lease = self.name, error = %e, "lease check failed");
                self.renew_at = None;
                false
            }
        }
    }

    pub(crate) async fn release(&mut self) {
        if self.renew_at.take().is_some() {
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
}
