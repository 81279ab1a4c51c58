//! The cluster registry: configured and stored clusters, and their queues.

use std::collections::BTreeSet;

use super::Flotilla;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Actor, Cluster};
use crate::validate;

impl Flotilla {
    /// Creates or replaces a cluster; its queue is received from at once
    /// (or, in maintenance, left unclaimed at once).
    pub async fn put_cluster(&self, mut cluster: Cluster) -> Result<Cluster> {
        let limits = &self.inner.config.limits;
        validate::check_name("name", &cluster.name, limits)?;
        if let Some(engine) = &cluster.engine
            && !self.inner.engines.contains_key(engine)
        {
            return Err(Error::invalid(format!(
                "engine: '{engine}' is not a configured engine"
            )));
        }
        if cluster.engines.len() > limits.max_items {
            return Err(Error::invalid(format!(
                "engines: at most {} items",
                limits.max_items
            )));
        }
        for (i, e) in cluster.engines.iter().enumerate() {
            if !self.inner.engines.contains_key(e) {
                return Err(Error::invalid(format!(
                    "engines[{i}]: '{e}' is not a configured engine"
                )));
            }
        }
        if cluster.allowed_tiers.len() > limits.max_items {
            return Err(Error::invalid(format!(
                "allowed_tiers: at most {} items",
                limits.max_items
            )));
        }
        for (i, t) in cluster.allowed_tiers.iter().enumerate() {
            validate::check_name(&format!("allowed_tiers[{i}]"), t, limits)?;
        }
        if let Some(c) = &cluster.capacity {
            for (name, v) in [("cpu", c.cpu), ("memory", c.memory), ("gpu", c.gpu)] {
                if v.is_some_and(|v| v < 0) {
                    return Err(Error::invalid(format!(
                        "capacity.{name}: must not be negative"
                    )));
                }
            }
        }
        cluster.updated_at = model::now();
        self.inner.store.put_cluster(&cluster).await?;
        self.add_queue(&cluster.name);
        self.inner.holds.follow(&cluster.name, Some(&cluster));
        self.inner
            .admission
            .set_capacity(&cluster.name, self.effective_capacity(&cluster));
        Ok(cluster)
    }

    /// A cluster by name; configured clusters exist even when not stored.
    pub async fn get_cluster(&self, name: &str) -> Result<Cluster> {
        match self.inner.store.get_cluster(name).await {
            Err(e) if e.kind() == ErrorKind::NotFound && self.is_configured_cluster(name) => {
                Ok(Cluster::new(name))
            }
            other => other,
        }
    }

    /// Deletes a stored cluster.
    pub async fn delete_cluster(&self, name: &str) -> Result<()> {
        self.inner.store.delete_cluster(name).await?;
        self.inner.holds.follow(name, None);
        Ok(())
    }

    /// Stored clusters plus configured ones, by name.
    pub async fn list_clusters(&self) -> Result<Vec<Cluster>> {
        let mut stored = self.inner.store.list_clusters().await?;
        for name in self.configured_clusters() {
            if !stored.iter().any(|c| c.name == name) {
                stored.push(Cluster::new(name));
            }
        }
        stored.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(stored)
    }

    fn configured_clusters(&self) -> BTreeSet<String> {
        let c = &self.inner.config;
        let mut set: BTreeSet<String> = c.clusters.iter().cloned().collect();
        set.insert(c.default_cluster.clone());
        set
    }

    fn is_configured_cluster(&self, name: &str) -> bool {
        self.configured_clusters().contains(name)
    }

    pub(crate) fn add_queue(&self, name: &str) {
        let known = self
            .inner
            .queues
            .read()
            .map(|q| q.contains(name))
            .unwrap_or(false);
        if !known && let Ok(mut q) = self.inner.queues.write() {
            q.insert(name.to_string());
            drop(q);
            // A receive in progress takes the new queue at once.
            self.inner.holds.changed.notify_waiters();
        }
    }
}

/// The engine an execute runs on, and a note for the run's timeline when the
/// request's choice was set aside.
pub(crate) struct EngineChoice {
    pub(crate) engine: String,
    pub(crate) note: Option<String>,
}

impl Flotilla {
    /// **The cluster decides the engine.** A request's `engine` may only pick
    /// among the engines `cluster` allows (its `engines`, or else only its
    /// own engine). A request naming an engine this server does not have at
    /// all (flotilla-os clients always send `"eks"`) runs on the cluster's
    /// own engine, noted in its timeline; one naming a configured engine the
    /// cluster does not allow is refused. On a server that has other engines
    /// too, the host engines (`host_engines`, default `local`: a shell on the
    /// server) are for admins only.
    pub(crate) fn choose_engine(
        &self,
        cluster: &Cluster,
        requested: Option<&str>,
        actor: &Actor,
    ) -> Result<EngineChoice> {
        let own = cluster
            .engine
            .clone()
            .unwrap_or_else(|| self.inner.default_engine.clone());
        let allowed = |e: &str| {
            if cluster.engines.is_empty() {
                e == own
            } else {
                cluster.engines.iter().any(|a| a == e)
            }
        };
        let choice = match requested {
            None => EngineChoice {
                engine: own,
                note: None,
            },
            Some(e) if allowed(e) => EngineChoice {
                engine: e.to_string(),
                note: None,
            },
            Some(e) if !self.inner.engines.contains_key(e) => EngineChoice {
                note: Some(format!(
                    "requested engine '{e}' is not configured here; cluster '{}' runs it on '{own}'",
                    cluster.name
                )),
                engine: own,
            },
            Some(e) => {
                let list = if cluster.engines.is_empty() {
                    own
                } else {
                    cluster.engines.join(", ")
                };
                return Err(Error::invalid(format!(
                    "engine: '{e}' is not allowed on cluster '{}' (allowed: {list})",
                    cluster.name
                )));
            }
        };
        let host = &self.inner.config.host_engines;
        let others = self.inner.engines.keys().any(|e| !host.contains(e));
        if !actor.admin && others && host.contains(&choice.engine) {
            return Err(Error::forbidden(format!(
                "engine: '{}' runs commands on the server's own host; on this server only admins may use it",
                choice.engine
            )));
        }
        Ok(choice)
    }
}
