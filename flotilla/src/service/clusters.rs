//! The cluster registry: configured and stored clusters, and their queues.

use std::collections::BTreeSet;

use super::Flotilla;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Cluster};
use crate::validate::{self};

impl Flotilla {
    /// Creates or replaces a cluster; its queue is received from at once.
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
        if cluster.allowed_tiers.len() > limits.max_items {
            return Err(Error::invalid(format!(
                "allowed_tiers: at most {} items",
                limits.max_items
            )));
        }
        for (i, t) in cluster.allowed_tiers.iter().enumerate() {
            validate::check_name(&format!("allowed_tiers[{i}]"), t, limits)?;
        }
        cluster.updated_at = model::now();
        self.inner.store.put_cluster(&cluster).await?;
        self.add_queue(&cluster.name);
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
        self.inner.store.delete_cluster(name).await
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
        }
    }
}
