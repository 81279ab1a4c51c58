//! The embeddable service: the operations the API exposes, and the workers
//! that move runs through their life cycle.

mod retry;
mod workers;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use retry::RetryPolicy;

use crate::engine::Engine;
use crate::error::{Error, ErrorKind, Result};
use crate::local::{LocalEngine, LocalLogSource};
use crate::logs::{LogChunk, LogSource};
use crate::memory::{MemoryQueue, MemoryStore};
use crate::model::{
    self, Cluster, ClusterStatus, Definition, DefinitionUpdate, EnvVar, ExecuteRequest,
    FailureCategory, NewDefinition, Run, RunEvent, RunStatus, StatusReport,
};
use crate::query::{DefinitionQuery, Page, RunQuery};
use crate::queue::{Message, Queue};
use crate::state::check_transition;
use crate::store::{Expected, Store};
use crate::validate::{self, Limits};

/// Serde helper: a `Duration` as whole milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Environment variable carrying the run id, injected into every run.
pub const ENV_RUN_ID: &str = "FLOTILLA_RUN_ID";
/// Environment variable carrying the server mode, injected into every run.
pub const ENV_SERVER_MODE: &str = "FLOTILLA_SERVER_MODE";
/// Default variable carrying the owner, injected into every run.
pub const ENV_OWNER_ID: &str = "FLOTILLA_RUN_OWNER_ID";
/// A run whose env carries this variable is a child of the named run and is
/// terminated with it.
pub const ENV_PARENT_RUN_ID: &str = "PARENT_FLOTILLA_RUN_ID";

/// Which workers run on this replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnabledWorkers {
    /// Receives queued runs and submits them.
    pub submit: bool,
    /// Follows active runs (singleton, by lease).
    pub status: bool,
    /// Queues NEEDS_RETRY runs again (singleton, by lease).
    pub retry: bool,
    /// Re-enqueues stale QUEUED runs (singleton, by lease).
    pub reconcile: bool,
}

impl Default for EnabledWorkers {
    fn default() -> Self {
        EnabledWorkers {
            submit: true,
            status: true,
            retry: true,
            reconcile: true,
        }
    }
}

/// Worker tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Which workers run here.
    pub enabled: EnabledWorkers,
    /// Deliveries received per call.
    pub submit_batch: usize,
    /// Submits in flight at once.
    pub submit_concurrency: usize,
    /// How long a received delivery is leased.
    #[serde(with = "duration_ms")]
    pub queue_lease: Duration,
    /// How long one receive waits for a message (long poll).
    #[serde(with = "duration_ms")]
    pub receive_wait: Duration,
    /// Safety-net poll of active runs (engines that push are followed on
    /// every event in between).
    #[serde(with = "duration_ms")]
    pub status_poll_interval: Duration,
    /// Runs per engine poll call.
    pub poll_batch: usize,
    /// Singleton lease time to live; renewed at a third of it.
    #[serde(with = "duration_ms")]
    pub lease_ttl: Duration,
    /// How often the reconcile worker looks.
    #[serde(with = "duration_ms")]
    pub reconcile_interval: Duration,
    /// A QUEUED run older than this is enqueued again by reconcile.
    #[serde(with = "duration_ms")]
    pub queued_stale_after: Duration,
    /// An active run the engine no longer knows for this long is lost.
    #[serde(with = "duration_ms")]
    pub missing_grace: Duration,
    /// How long a run waits in the queue while its cluster is in
    /// maintenance before it is looked at again.
    #[serde(with = "duration_ms")]
    pub maintenance_delay: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: EnabledWorkers::default(),
            submit_batch: 50,
            submit_concurrency: 64,
            queue_lease: Duration::from_secs(60),
            receive_wait: Duration::from_secs(10),
            status_poll_interval: Duration::from_secs(10),
            poll_batch: 100,
            lease_ttl: Duration::from_secs(15),
            reconcile_interval: Duration::from_secs(30),
            queued_stale_after: Duration::from_secs(300),
            missing_grace: Duration::from_secs(60),
            maintenance_delay: Duration::from_secs(30),
        }
    }
}

/// Service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Cluster of runs that name none.
    pub default_cluster: String,
    /// Clusters always accepted even when not registered in the store.
    pub clusters: Vec<String>,
    /// Engine of runs whose cluster and request name none.
    pub default_engine: Option<String>,
    /// Injected as `FLOTILLA_SERVER_MODE`.
    pub mode: String,
    /// Variable that carries the owner into runs.
    pub owner_id_var: String,
    /// Input bounds.
    pub limits: Limits,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Worker tuning.
    pub workers: WorkerConfig,
    /// This replica's name in leases; a fresh id when empty.
    pub replica_id: String,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            default_cluster: "default".into(),
            clusters: vec!["default".into()],
            default_engine: None,
            mode: "dev".into(),
            owner_id_var: ENV_OWNER_ID.into(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            workers: WorkerConfig::default(),
            replica_id: String::new(),
        }
    }
}

/// Builds a [`Flotilla`].
#[derive(Default)]
pub struct FlotillaBuilder {
    store: Option<Arc<dyn Store>>,
    queue: Option<Arc<dyn Queue>>,
    engines: Vec<Arc<dyn Engine>>,
    logs: Vec<(String, Arc<dyn LogSource>)>,
    config: ServiceConfig,
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

    /// Adds the local engine and its log source with data under `data_dir`,
    /// then builds: the zero-setup scheduler.
    pub fn build_local(self, data_dir: impl Into<std::path::PathBuf>) -> Result<Flotilla> {
        let engine = Arc::new(LocalEngine::new(data_dir.into())?);
        let logs = Arc::new(LocalLogSource::new(engine.clone()));
        self.engine(engine).log_source("local", logs).build()
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
            }),
        })
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) queue: Arc<dyn Queue>,
    pub(crate) engines: HashMap<String, Arc<dyn Engine>>,
    logs: HashMap<String, Arc<dyn LogSource>>,
    default_engine: String,
    pub(crate) config: ServiceConfig,
    /// Queues (clusters) the submit worker receives from.
    pub(crate) queues: RwLock<BTreeSet<String>>,
    /// Every run change this process made.
    changes: broadcast::Sender<Run>,
    /// Wakes the retry worker when a run enters NEEDS_RETRY.
    pub(crate) retry_wake: tokio::sync::Notify,
}

/// The embeddable scheduler: cheap to clone, safe to share.
#[derive(Clone)]
pub struct Flotilla {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Flotilla {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flotilla")
            .field("store", &self.inner.store)
            .field("queue", &self.inner.queue)
            .field("engines", &self.inner.engines.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Running workers; `shutdown` stops them gracefully.
#[derive(Debug)]
pub struct FlotillaHandle {
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl FlotillaHandle {
    /// Stops taking new work, lets in-flight submits and updates finish,
    /// gives leases up, and waits for every worker to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }

    /// A token cancelled when shutdown begins.
    pub fn cancellation(&self) -> CancellationToken {
        self.cancel.clone()
    }
}

impl Flotilla {
    /// A builder.
    pub fn builder() -> FlotillaBuilder {
        FlotillaBuilder::default()
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The queue.
    pub fn queue(&self) -> &Arc<dyn Queue> {
        &self.inner.queue
    }

    /// The settings in force.
    pub fn config(&self) -> &ServiceConfig {
        &self.inner.config
    }

    /// Names of the configured engines.
    pub fn engine_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.engines.keys().cloned().collect();
        v.sort();
        v
    }

    /// An engine by name.
    pub fn engine(&self, name: &str) -> Option<&Arc<dyn Engine>> {
        self.inner.engines.get(name)
    }

    /// Starts the workers enabled in the config.
    pub fn start(&self) -> FlotillaHandle {
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        workers::spawn_all(self, &cancel, &tracker);
        FlotillaHandle { cancel, tracker }
    }

    /// Every run change made by this process, as it happens. Changes made by
    /// other replicas are not seen here: re-read to follow those.
    pub fn subscribe(&self) -> broadcast::Receiver<Run> {
        self.inner.changes.subscribe()
    }

    fn limit(&self, requested: usize) -> usize {
        let max = self.inner.config.limits.max_page;
        if requested == 0 {
            max
        } else {
            requested.min(max)
        }
    }

    // ----- definitions -----

    /// Validates and stores a new definition.
    pub async fn define(&self, new: NewDefinition) -> Result<Definition> {
        validate::check_new_definition(&new, &self.inner.config.limits)?;
        let def = new.into_definition();
        self.inner.store.create_definition(&def).await?;
        Ok(def)
    }

    /// Applies a partial update.
    pub async fn update_definition(
        &self,
        definition_id: &str,
        update: DefinitionUpdate,
    ) -> Result<Definition> {
        validate::check_definition_update(&update, &self.inner.config.limits)?;
        let mut def = self.inner.store.get_definition(definition_id).await?;
        update.apply(&mut def);
        self.inner.store.update_definition(&def).await?;
        Ok(def)
    }

    /// Deletes a definition; its runs stay and queued ones still run.
    pub async fn delete_definition(&self, definition_id: &str) -> Result<()> {
        self.inner.store.delete_definition(definition_id).await
    }

    /// A definition by id.
    pub async fn get_definition(&self, definition_id: &str) -> Result<Definition> {
        self.inner.store.get_definition(definition_id).await
    }

    /// A definition by alias.
    pub async fn get_definition_by_alias(&self, alias: &str) -> Result<Definition> {
        self.inner.store.get_definition_by_alias(alias).await
    }

    /// Lists definitions; `limit` is capped by `limits.max_page`.
    pub async fn list_definitions(&self, mut query: DefinitionQuery) -> Result<Page<Definition>> {
        query.limit = self.limit(query.limit);
        self.inner.store.list_definitions(&query).await
    }

    /// Distinct groups.
    pub async fn list_groups(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        self.inner
            .store
            .list_groups(name_contains, self.limit(limit), offset)
            .await
    }

    /// Distinct tags.
    pub async fn list_tags(
        &self,
        name_contains: Option<&str>,
        limit: usize,
        offset: usize,
    ) -> Result<Page<String>> {
        self.inner
            .store
            .list_tags(name_contains, self.limit(limit), offset)
            .await
    }

    // ----- clusters -----

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

    // ----- runs -----

    /// Executes the definition with id `definition_id`.
    pub async fn execute(&self, definition_id: &str, request: ExecuteRequest) -> Result<Run> {
        validate::check_execute(&request, &self.inner.config.limits)?;
        let def = self.inner.store.get_definition(definition_id).await?;
        self.execute_definition(&def, request).await
    }

    /// Executes the definition with alias `alias`.
    pub async fn execute_alias(&self, alias: &str, request: ExecuteRequest) -> Result<Run> {
        validate::check_execute(&request, &self.inner.config.limits)?;
        let def = self.inner.store.get_definition_by_alias(alias).await?;
        self.execute_definition(&def, request).await
    }

    async fn execute_definition(&self, def: &Definition, request: ExecuteRequest) -> Result<Run> {
        let store = &self.inner.store;
        if let Some(key) = &request.idempotence_key
            && let Some(existing) = store.find_run_by_idempotence_key(key).await?
        {
            return Ok(existing);
        }
        let cluster_name = request
            .cluster
            .clone()
            .unwrap_or_else(|| self.inner.config.default_cluster.clone());
        let cluster = match self.get_cluster(&cluster_name).await {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "cluster: '{cluster_name}' is not a known cluster"
                )));
            }
            Err(e) => return Err(e),
        };
        if cluster.status == ClusterStatus::Offline {
            return Err(Error::invalid(format!(
                "cluster: '{cluster_name}' is offline{}",
                cluster
                    .status_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        let engine_name = request
            .engine
            .clone()
            .or_else(|| cluster.engine.clone())
            .unwrap_or_else(|| self.inner.default_engine.clone());
        let Some(engine) = self.inner.engines.get(&engine_name) else {
            return Err(Error::invalid(format!(
                "engine: '{engine_name}' is not a configured engine"
            )));
        };
        let gpu = request.gpu.or(def.gpu);
        if gpu.unwrap_or(0) > 0 && !engine.capabilities().gpu {
            return Err(Error::invalid(format!(
                "gpu: engine '{engine_name}' cannot run GPU jobs"
            )));
        }
        let tags = request.run_tags.clone().unwrap_or_default();
        let config = &self.inner.config;
        let mut run = Run::queued(
            def,
            cluster_name.clone(),
            engine_name,
            tags.owner_id.clone(),
        );
        let run_id = run.run_id.clone();
        let now = run.updated_at;
        let mut env: Vec<EnvVar> = def.env.clone();
        for var in request.env.iter().flatten() {
            match env.iter_mut().find(|e| e.name == var.name) {
                Some(existing) => existing.value = var.value.clone(),
                None => env.push(var.clone()),
            }
        }
        let injected = [
            (ENV_RUN_ID, run_id.clone()),
            (ENV_SERVER_MODE, config.mode.clone()),
            (config.owner_id_var.as_str(), tags.owner_id.clone()),
        ];
        for (name, value) in injected {
            env.retain(|e| e.name != name);
            env.push(EnvVar::new(name, value));
        }
        run.env = env;
        if let Some(command) = &request.command {
            run.command = Some(command.clone());
        }
        run.memory = request.memory.or(def.memory);
        run.cpu = request.cpu.or(def.cpu);
        run.gpu = gpu;
        run.run_tags = tags;
        run.max_attempts = def.max_attempts.unwrap_or(config.retry.max_attempts).max(1);
        run.idempotence_key = request.idempotence_key.clone();
        run.labels = request.labels.clone().unwrap_or_default();
        run.active_deadline_seconds = request.active_deadline_seconds;
        run.description = request.description.clone();
        let event = RunEvent {
            run_id: run_id.clone(),
            at: now,
            from: None,
            to: RunStatus::Queued,
            attempt: 1,
            reason: Some(format!("queued by {} on {}", run.owner, run.cluster)),
        };
        self.add_queue(&cluster_name);
        let message = Message::new(run_id.clone(), 1);
        let same_domain = match (
            store.transaction_domain(),
            self.inner.queue.transaction_domain(),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        let created = if same_domain {
            store.create_run_enqueued(&run, &event, &cluster_name).await
        } else {
            store.create_run(&run, &event).await
        };
        match created {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if let Some(key) = &request.idempotence_key
                    && let Some(existing) = store.find_run_by_idempotence_key(key).await?
                {
                    return Ok(existing);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if !same_domain
            && let Err(e) = self
                .inner
                .queue
                .enqueue(&cluster_name, std::slice::from_ref(&message))
                .await
        {
            // The run is stored; the reconcile worker enqueues it later.
            tracing::warn!(run_id = %run_id, error = %e, "enqueue failed; reconcile will retry");
        }
        metrics::counter!("flotilla_runs_executed_total").increment(1);
        self.publish(&run);
        Ok(run)
    }

    /// A run by id.
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        self.inner.store.get_run(run_id).await
    }

    /// Lists runs; `limit` is capped by `limits.max_page`.
    pub async fn list_runs(&self, mut query: RunQuery) -> Result<Page<Run>> {
        query.limit = self.limit(query.limit);
        self.inner.store.list_runs(&query).await
    }

    /// The run's timeline.
    pub async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        self.inner.store.get_run(run_id).await?;
        self.inner.store.run_events(run_id).await
    }

    /// Reads the run's log after `cursor`.
    pub async fn logs(
        &self,
        run_id: &str,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> Result<(Run, LogChunk)> {
        let run = self.inner.store.get_run(run_id).await?;
        let Some(source) = self.inner.logs.get(&run.engine) else {
            return Err(Error::unsupported(format!(
                "logs: no log source is configured for engine '{}'",
                run.engine
            )));
        };
        let chunk = source.read(&run, cursor, max_bytes).await?;
        Ok((run, chunk))
    }

    /// Waits until the run is STOPPED or `timeout` passes (`Unavailable`).
    pub async fn wait_for_stop(&self, run_id: &str, timeout: Duration) -> Result<Run> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.get_run(run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            // Woken by this process's changes; re-read now and then for
            // changes made by other replicas.
            let wake = async {
                loop {
                    match changes.recv().await {
                        Ok(r) if r.run_id == run_id => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::unavailable(format!(
                        "run {run_id} did not stop within {timeout:?}"
                    )));
                }
            }
        }
    }

    /// Terminates a run (and the runs whose env names it as
    /// `PARENT_FLOTILLA_RUN_ID`). `by` names who asked; it goes into the
    /// exit reason. Terminating a stopped run returns it unchanged.
    pub async fn terminate(&self, run_id: &str, by: &str) -> Result<Run> {
        let run = self.terminate_one(run_id, by).await?;
        self.terminate_children(run_id, by, 0).await?;
        Ok(run)
    }

    async fn terminate_children(&self, parent: &str, by: &str, depth: usize) -> Result<()> {
        if depth >= 8 {
            return Ok(());
        }
        let mut query = RunQuery::all(self.inner.config.limits.max_page).with_statuses(&[
            RunStatus::Queued,
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::NeedsRetry,
        ]);
        query.env = vec![EnvVar::new(ENV_PARENT_RUN_ID, parent)];
        let children = self.inner.store.list_runs(&query).await?;
        for child in children.items {
            self.terminate_one(&child.run_id, by).await?;
            Box::pin(self.terminate_children(&child.run_id, by, depth + 1)).await?;
        }
        Ok(())
    }

    async fn terminate_one(&self, run_id: &str, by: &str) -> Result<Run> {
        let reason = format!("terminated by {by}");
        for _ in 0..8 {
            let run = self.inner.store.get_run(run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            if run.status.is_active()
                && let Some(engine) = self.inner.engines.get(&run.engine)
            {
                engine.terminate(&run, &reason).await?;
            }
            let mut next = run.clone();
            next.status = RunStatus::Stopped;
            next.failure = Some(FailureCategory::Terminated);
            next.exit_reason = Some(reason.clone());
            next.finished_at = Some(model::now());
            match self.transition(&run, next, Some(reason.clone())).await {
                Ok(stored) => {
                    metrics::counter!("flotilla_runs_terminated_total").increment(1);
                    return Ok(stored);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "run {run_id} kept changing; terminate again"
        )))
    }

    /// Applies an external status report through the state machine.
    pub async fn update_status(&self, run_id: &str, report: StatusReport) -> Result<Run> {
        let limits = &self.inner.config.limits;
        if let Some(r) = &report.exit_reason
            && r.chars().count() > limits.max_text_len
        {
            return Err(Error::invalid(format!(
                "exit_reason: longer than {} characters",
                limits.max_text_len
            )));
        }
        let run = self.inner.store.get_run(run_id).await?;
        if run.status == report.status {
            return Ok(run);
        }
        check_transition(run.status, report.status)?;
        let mut next = run.clone();
        next.status = report.status;
        let now = model::now();
        match report.status {
            RunStatus::Running => next.started_at = Some(now),
            RunStatus::Stopped => {
                next.finished_at = Some(now);
                next.exit_code = report.exit_code;
                next.exit_reason = report.exit_reason.clone();
                next.failure = match report.exit_code {
                    Some(0) => None,
                    Some(_) => Some(FailureCategory::AppExit),
                    None => Some(FailureCategory::Unknown),
                };
            }
            RunStatus::NeedsRetry => {
                next.finished_at = Some(now);
                next.exit_code = report.exit_code;
                next.exit_reason = report.exit_reason.clone();
                next.failure = Some(FailureCategory::Unknown);
            }
            RunStatus::Queued => return self.requeue(&run).await,
            RunStatus::Pending => {}
        }
        let reason = Some(
            report
                .exit_reason
                .clone()
                .unwrap_or_else(|| "status reported by a client".into()),
        );
        let stored = self.transition(&run, next, reason).await?;
        if stored.status == RunStatus::NeedsRetry {
            self.inner.retry_wake.notify_one();
        }
        Ok(stored)
    }

    /// NEEDS_RETRY → QUEUED with the next attempt, then enqueue.
    pub(crate) async fn requeue(&self, run: &Run) -> Result<Run> {
        let mut next = run.clone();
        next.status = RunStatus::Queued;
        next.attempt = run.attempt + 1;
        if run.failure == Some(FailureCategory::Oom) && run.adaptive_resource_allocation {
            next.memory = Some(self.inner.config.retry.grown_memory(run.memory));
        }
        next.exit_code = None;
        next.exit_reason = None;
        next.failure = None;
        next.engine_ref = None;
        next.instance = None;
        next.started_at = None;
        next.finished_at = None;
        next.queued_at = Some(model::now());
        let reason = format!(
            "attempt {} queued after {}",
            next.attempt,
            run.failure.map(|f| f.as_str()).unwrap_or("a failure")
        );
        let stored = self.transition(run, next, Some(reason)).await?;
        self.add_queue(&stored.cluster);
        if let Err(e) = self
            .inner
            .queue
            .enqueue(
                &stored.cluster,
                &[Message::new(stored.run_id.clone(), stored.attempt)],
            )
            .await
        {
            tracing::warn!(run_id = %stored.run_id, error = %e, "enqueue failed; reconcile will retry");
        }
        Ok(stored)
    }

    /// Checks `run.status → next.status`, compare-and-sets it with an event
    /// and publishes the change.
    pub(crate) async fn transition(
        &self,
        run: &Run,
        mut next: Run,
        reason: Option<String>,
    ) -> Result<Run> {
        check_transition(run.status, next.status)?;
        let now = model::now();
        next.updated_at = now;
        let event = RunEvent {
            run_id: run.run_id.clone(),
            at: now,
            from: Some(run.status),
            to: next.status,
            attempt: next.attempt,
            reason,
        };
        let stored = self
            .inner
            .store
            .update_run(&next, Expected::of(run), Some(&event))
            .await?;
        metrics::counter!("flotilla_run_transitions_total", "to" => next.status.as_str())
            .increment(1);
        self.publish(&stored);
        Ok(stored)
    }

    fn publish(&self, run: &Run) {
        if self.inner.changes.receiver_count() > 0 {
            let _ = self.inner.changes.send(run.clone());
        }
    }
}
