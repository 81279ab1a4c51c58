//! [`FlotillaBuilder`]: what is plugged in, checked before the service starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::{Flotilla, Inner, ServiceConfig};

use crate::artifacts::Artifacts;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::local::{LocalConfig, LocalEngine, LocalLogSource};
use crate::logs::LogSource;
use crate::memory::{MemoryQueue, MemoryStore};
use crate::model::{self};
use crate::queue::Queue;
use crate::store::Store;
use crate::validate::{self};

/// Builds a [`Flotilla`].
#[derive(Default)]
pub struct FlotillaBuilder {
    store: Option<Arc<dyn Store>>,
    queue: Option<Arc<dyn Queue>>,
    engines: Vec<Arc<dyn Engine>>,
    logs: Vec<(String, Arc<dyn LogSource>)>,
    config: ServiceConfig,
    artifacts: Option<Artifacts>,
}

impl FlotillaBuilder {
    /// The store (default: [`MemoryStore`]).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// The queue (default: [`MemoryQueue`]).
    pub fn queue(mut self, queue: Arc<dyn Queue>) -> Self {
        self.queue = Some(queue);
        self
    }

    /// Adds an engine, known by its `name()`. The first one added is the
    /// default unless the config names another.
    pub fn engine(mut self, engine: Arc<dyn Engine>) -> Self {
        self.engines.push(engine);
        self
    }

    /// Adds the log source for runs of engine `engine`.
    pub fn log_source(mut self, engine: impl Into<String>, source: Arc<dyn LogSource>) -> Self {
        self.logs.push((engine.into(), source));
        self
    }

    /// Settings.
    pub fn config(mut self, config: ServiceConfig) -> Self {
        self.config = config;
        self
    }

    /// The artifact stores where execute stages input zips and from which
    /// outputs are read (default: none, and runs may not carry inputs).
    pub fn artifacts(mut self, artifacts: Artifacts) -> Self {
        self.artifacts = Some(artifacts);
        self
    }

    /// Adds the local engine and its log source with data under `data_dir`
    /// and artifacts in `<data_dir>/artifacts` (unless set already), then
    /// builds: the zero-setup scheduler.
    pub fn build_local(mut self, data_dir: impl Into<std::path::PathBuf>) -> Result<Flotilla> {
        let data_dir = data_dir.into();
        let artifacts = match self.artifacts.take() {
            Some(a) => a,
            None => Artifacts::local(data_dir.join("artifacts"))?,
        };
        let config = LocalConfig::new(data_dir).artifacts(artifacts.clone());
        let engine = Arc::new(LocalEngine::with_config(config)?);
        let logs = Arc::new(LocalLogSource::new(engine.clone()));
        self.artifacts(artifacts)
            .engine(engine)
            .log_source("local", logs)
            .build()
    }

    /// Builds the service; fails when no engine is given or the default
    /// engine is unknown.
    pub fn build(self) -> Result<Flotilla> {
        let mut config = self.config;
        if self.engines.is_empty() {
            return Err(Error::invalid("engines: at least one engine is required"));
        }
        let mut engines = HashMap::new();
        for e in &self.engines {
            if engines.insert(e.name().to_string(), e.clone()).is_some() {
                return Err(Error::invalid(format!(
                    "engines: '{}' is configured twice",
                    e.name()
                )));
            }
        }
        let default_engine = match &config.default_engine {
            Some(name) if !engines.contains_key(name) => {
                return Err(Error::invalid(format!(
                    "default_engine: '{name}' is not a configured engine"
                )));
            }
            Some(name) => name.clone(),
            None => self.engines[0].name().to_string(),
        };
        config.default_engine = Some(default_engine.clone());
        if config.replica_id.is_empty() {
            config.replica_id = model::new_id();
        }
        validate::check_env_syntax("owner_id_var", &config.owner_id_var, &config.limits)?;
        let mut queues: BTreeSet<String> = config.clusters.iter().cloned().collect();
        queues.insert(config.default_cluster.clone());
        let (changes, _) = broadcast::channel(1024);
        let workers = super::workers::WorkerControl::new(&config.workers.enabled);
        // Every in-flight submit, every run of a poll page, can share one
        // batch.
        let submit_batch_max = config.workers.submit_concurrency.clamp(1, 1000);
        let status_batch_max = config.workers.poll_batch.clamp(1, 1000);
        Ok(Flotilla {
            inner: Arc::new(Inner {
                store: self.store.unwrap_or_else(|| Arc::new(MemoryStore::new())),
                queue: self.queue.unwrap_or_else(|| Arc::new(MemoryQueue::new())),
                engines,
                logs: self.logs.into_iter().collect(),
                default_engine,
                config,
                queues: RwLock::new(queues),
                changes,
                retry_wake: tokio::sync::Notify::new(),
                missing: Default::default(),
                workers,
                admission: Default::default(),
                holds: Default::default(),
                artifacts: self.artifacts,
                submit_writes: super::batch::Batcher::new(submit_batch_max),
                status_writes: super::batch::Batcher::new(status_batch_max),
                definition_reads: Default::default(),
            }),
        })
    }
}
