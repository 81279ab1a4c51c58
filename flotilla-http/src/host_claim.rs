//! The local engine runs on one replica of a store only.
//!
//! Its processes live on the host that started them, and only that host's
//! engine can observe them: a second replica on the same store would, as
//! status leader, answer `Missing` for the first one's processes and have
//! them declared lost and run again. So a server whose engines include
//! `local` on a store other processes can reach (SQLite, PostgreSQL) holds
//! the store lease [`LEASE`] for as long as it runs, and refuses to start
//! while another live replica holds it. A replica that died (SIGKILL) stops
//! renewing, and its claim expires after `workers.lease_ttl`: a restart waits
//! at most that long.

use std::sync::Arc;
use std::time::Duration;

use flotilla::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// The store lease of the local engine's replica.
pub const LEASE: &str = "host-engine:local";

/// A held claim, renewed in the background until [`HostClaim::release`].
#[derive(Debug)]
pub struct HostClaim {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

impl HostClaim {
    /// Takes the claim for `replica`, waiting (at most a little over `ttl`)
    /// for a dead holder's claim to expire; refuses when another replica
    /// keeps it.
    pub async fn take(store: Arc<dyn Store>, replica: &str, ttl: Duration) -> Result<HostClaim> {
        let deadline = tokio::time::Instant::now() + ttl + ttl / 2;
        let mut waited = false;
        loop {
            match store.try_lease(LEASE, replica, ttl).await {
                Ok(true) => break,
                Ok(false) if tokio::time::Instant::now() < deadline => {
                    if !waited {
                        tracing::info!(
                            lease = LEASE,
                            "another replica holds the local engine's claim; waiting for it to expire"
                        );
                        waited = true;
                    }
                    tokio::time::sleep(ttl / 10).await;
                }
                Ok(false) => {
                    return Err(Error::config(format!(
                        "engines: another live flotilla replica runs the local engine on this \
                         store (lease '{LEASE}'); the local engine runs on one replica only, since \
                         only the host that started a process can observe it. Run one replica, \
                         or use the ecs or eks engine for several"
                    )));
                }
                Err(e) => {
                    return Err(Error::config(format!(
                        "engines: cannot claim the local engine in the store: {e}"
                    )));
                }
            }
        }
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let holder = replica.to_string();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(ttl / 3);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {}
                }
                match store.try_lease(LEASE, &holder, ttl).await {
                    Ok(true) => {}
                    Ok(false) => tracing::error!(
                        lease = LEASE,
                        "another replica took the local engine's claim: two replicas now run \
                         the local engine on one store, and each one's processes look lost to the other"
                    ),
                    Err(e) => {
                        tracing::warn!(lease = LEASE, error = %e, "renewing the local engine's claim failed")
                    }
                }
            }
            if let Err(e) = store.release_lease(LEASE, &holder).await {
                tracing::warn!(lease = LEASE, error = %e, "releasing the local engine's claim failed");
            }
        });
        Ok(HostClaim { cancel, task })
    }

    /// Stops renewing and gives the claim up, so a restart needs no wait.
    pub async fn release(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}
