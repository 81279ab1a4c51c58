//! `EksEngine`: each run attempt is a Kubernetes `batch/v1` Job, followed by
//! watches.
//!
//! Per cluster, two kube-runtime watchers (Jobs and Pods labelled
//! `app.kubernetes.io/managed-by=flotilla`) keep a local cache; every change
//! is mapped to a [`StatusUpdate`] (see [`crate::observe`]) and pushed on
//! [`Engine::events`] when it differs from the last one pushed. `poll`
//! answers from that cache without any API call while the watches are
//! healthy; while they are not (errors, initial list pending) and every
//! `safety_list_interval` it lists Jobs and Pods of the cluster once (two
//! requests per cluster, never one per run).
//!
//! Finished Jobs are deleted by flotilla, not forgotten by the cluster: once
//! the status worker has stored an attempt's outcome it calls
//! [`Engine::finished`], and the Job (with its pods, background propagation)
//! is deleted [`EksEngine::job_retention`] later (default
//! [`DEFAULT_JOB_RETENTION`], so pod logs stay readable meanwhile). The
//! Job's `ttlSecondsAfterFinished` is only a backstop for Jobs whose deletion
//! was lost (flotilla restarted within the retention): it is raised to at
//! least [`JOB_TTL_FLOOR_SECONDS`], so a flotilla that is down for hours
//! still finds every finished Job and records its real exit code.
//!
//! With [`crate::EksArtifacts`] the pods carry the input's pull and an
//! upload sidecar ([`crate::spec`]) and the final update their outcome
//! ([`crate::observe`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flotilla::{
    Capabilities, Definition, Engine, EngineEvent, Error, ErrorKind, FailureCategory, Result, Run,
    StatusUpdate, Submitted, TaskState,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Resource, ResourceExt};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::error::{api_code, from_kube, with_retry};
use crate::names::{self, ANNOTATION_ATTEMPT, ANNOTATION_RUN_ID, JOB_NAME_LABEL};
use crate::observe::{self, Thresholds, Track};
use crate::settings::{EksCluster, EksSettings};
use crate::spec;

/// The smallest `ttlSecondsAfterFinished` flotilla gives its Jobs (7 days):
/// a larger `ttl_seconds` setting is kept, a smaller one is raised to it.
/// The TTL is a backstop only: flotilla deletes each Job itself once it has
/// recorded the outcome, and a TTL shorter than an outage would make the
/// cluster forget outcomes flotilla has not seen.
pub const JOB_TTL_FLOOR_SECONDS: i32 = 7 * 24 * 3600;

/// How long a finished Job (and its pods, hence their logs) is kept after
/// flotilla recorded its outcome, unless [`EksEngine::set_job_retention`]
/// says otherwise.
pub const DEFAULT_JOB_RETENTION: Duration = Duration::from_secs(3600);

/// Deletions of a recorded Job tried before it is left to the TTL.
const REAP_ATTEMPTS: u32 = 5;

/// The cached view of one cluster.
#[derive(Default)]
pub(crate) struct ClusterState {
    jobs: HashMap<String, Job>,
    /// Pods by Job name, then pod name.
    pods: HashMap<String, HashMap<String, Pod>>,
    jobs_init: Option<HashMap<String, Job>>,
    pods_init: Option<Vec<Pod>>,
    jobs_synced: bool,
    pods_synced: bool,
    watch_error_at: Option<Instant>,
    last_list: Option<Instant>,
    /// Jobs and Pods were listed together once (by `list_cluster`).
    listed: bool,
    /// A list of this cluster is under way (see [`EksEngine::list`]).
    list_running: bool,
    /// The last list that ended failed (its error): until one succeeds
    /// the cache is only as good as the watches.
    list_failed: Option<String>,
    /// When the last list that succeeded ended.
    list_ok_at: Option<Instant>,
    tracks: HashMap<String, Track>,
    /// Jobs whose outcome flotilla recorded: when to delete them, and the
    /// deletions tried so far.
    reap_at: HashMap<String, (Instant, u32)>,
}

fn rv_of<K: Resource>(k: &K) -> Option<u64> {
    k.meta().resource_version.as_deref()?.parse().ok()
}

fn job_of_pod(pod: &Pod) -> Option<String> {
    let labels = pod.metadata.labels.as_ref()?;
    labels
        .get(JOB_NAME_LABEL)
        .or_else(|| labels.get("batch.kubernetes.io/job-name"))
        .cloned()
}

fn run_of<K: Resource>(k: &K) -> Option<(String, u32)> {
    let a = k.meta().annotations.as_ref()?;
    let run_id = a.get(ANNOTATION_RUN_ID)?.clone();
    let attempt = a.get(ANNOTATION_ATTEMPT)?.parse().ok()?;
    Some((run_id, attempt))
}

impl ClusterState {
    fn healthy(&self) -> bool {
        self.jobs_synced
            && self.pods_synced
            && self
                .watch_error_at
                .is_none_or(|t| t.elapsed() > Duration::from_secs(30))
    }

    /// Whether the cache holds both Jobs and Pods: until then a Job's
    /// verdict may lack its pod (the exit code), so nothing is reported.
    fn ready(&self) -> bool {
        self.listed || (self.jobs_synced && self.pods_synced)
    }

    /// Whether a list succeeded after the watches last failed, and none
    /// failed since: the cache is current without the watches.
    fn listed_since_watch_error(&self) -> bool {
        self.list_failed.is_none()
            && self
                .list_ok_at
                .is_some_and(|ok| self.watch_error_at.is_none_or(|e| ok > e))
    }

    /// Every tracked Job, for a first report once the cache is ready.
    fn all_tracked(&self) -> Vec<String> {
        self.tracks.keys().cloned().collect()
    }

    fn ensure_track<K: Resource>(&mut self, job_name: &str, obj: &K) {
        if !self.tracks.contains_key(job_name)
            && let Some((run_id, attempt)) = run_of(obj)
        {
            self.tracks
                .insert(job_name.to_string(), Track::new(run_id, attempt));
        }
    }

    fn apply_job(&mut self, job: Job) -> Option<String> {
        let name = job.name_any();
        if let Some(old) = self.jobs.get(&name)
            && let (Some(a), Some(b)) = (rv_of(old), rv_of(&job))
            && b < a
        {
            return None;
        }
        self.ensure_track(&name, &job);
        self.jobs.insert(name.clone(), job);
        Some(name)
    }

    fn delete_job(&mut self, job: &Job) -> String {
        let name = job.name_any();
        self.jobs.remove(&name);
        name
    }

    fn apply_pod(&mut self, pod: Pod) -> Option<String> {
        let job = job_of_pod(&pod)?;
        let name = pod.name_any();
        let pods = self.pods.entry(job.clone()).or_default();
        if let Some(old) = pods.get(&name)
            && let (Some(a), Some(b)) = (rv_of(old), rv_of(&pod))
            && b < a
        {
            return None;
        }
        pods.insert(name, pod.clone());
        self.ensure_track(&job, &pod);
        Some(job)
    }

    fn delete_pod(&mut self, pod: &Pod) -> Option<String> {
        let job = job_of_pod(pod)?;
        if let Some(pods) = self.pods.get_mut(&job) {
            pods.remove(&pod.name_any());
            if pods.is_empty() {
                self.pods.remove(&job);
            }
        }
        Some(job)
    }

    /// Recomputes the update of one Job's run attempt; returns it when it
    /// changed since the last one reported.
    fn recompute(&mut self, job_name: &str, th: Thresholds) -> Option<StatusUpdate> {
        let job = self.jobs.get(job_name);
        let pod = self
            .pods
            .get(job_name)
            .and_then(|p| observe::newest(p.values()));
        let track = self.tracks.get_mut(job_name)?;
        let was_final = track.is_final();
        let u = observe::observe(job_name, job, pod, track, th, Instant::now());
        if was_final {
            return None;
        }
        let changed = track.last.as_ref().is_none_or(|l| {
            l.state != u.state
                || l.exit_code != u.exit_code
                || l.failure != u.failure
                || l.instance != u.instance
        });
        if u.state == TaskState::Stopped {
            track.final_at = Some(Instant::now());
        }
        track.last = Some(u.clone());
        changed.then_some(u)
    }

    /// The pod of a Job, if cached.
    pub(crate) fn pod_of(&self, job_name: &str) -> Option<Pod> {
        self.pods
            .get(job_name)
            .and_then(|p| observe::newest(p.values()))
            .cloned()
    }
}

/// One configured cluster: its client, APIs and cache.
pub(crate) struct ClusterHandle {
    pub(crate) name: String,
    pub(crate) namespace: String,
    pub(crate) service_account: Option<String>,
    pub(crate) jobs: Api<Job>,
    pub(crate) pods: Api<Pod>,
    pub(crate) state: Mutex<ClusterState>,
    /// Counts the lists that ended, so a poll can wait for one.
    lists_done: tokio::sync::watch::Sender<u64>,
}

impl ClusterHandle {
    pub(crate) fn lock(&self) -> MutexGuard<'_, ClusterState> {
        match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

pub(crate) struct Inner {
    pub(crate) settings: EksSettings,
    pub(crate) clusters: HashMap<String, Arc<ClusterHandle>>,
    events: broadcast::Sender<EngineEvent>,
    cancel: CancellationToken,
    /// [`EksEngine::job_retention`], in milliseconds.
    job_retention_ms: Arc<AtomicU64>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Inner {
    fn thresholds(&self) -> Thresholds {
        Thresholds {
            backoff: Duration::from_secs(self.settings.image_pull_backoff_threshold),
            vanished: Duration::from_secs(self.settings.vanished_threshold),
            pod_gone: observe::POD_GONE_GRACE,
        }
    }

    pub(crate) fn cluster(&self, run: &Run) -> Result<&Arc<ClusterHandle>> {
        self.clusters.get(&run.cluster).ok_or_else(|| {
            let mut known: Vec<&str> = self.clusters.keys().map(String::as_str).collect();
            known.sort();
            Error::invalid(format!(
                "cluster: '{}' is not a Kubernetes cluster of engine '{}' (configured: {})",
                run.cluster,
                self.settings.engine_name,
                known.join(", ")
            ))
        })
    }
}

/// The Kubernetes Jobs engine; cheap to clone.
#[derive(Clone)]
pub struct EksEngine {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for EksEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut clusters: Vec<&String> = self.inner.clusters.keys().collect();
        clusters.sort();
        f.debug_struct("EksEngine")
            .field("name", &self.inner.settings.engine_name)
            .field("namespace", &self.inner.settings.namespace)
            .field("clusters", &clusters)
            .finish()
    }
}

async fn client_for(cluster: &EksCluster) -> Result<kube::Client> {
    let ctx = |e: &dyn std::fmt::Display| {
        Error::invalid(format!(
            "clusters[{}]: cannot build a Kubernetes client: {e}",
            cluster.name
        ))
    };
    let config = if let Some(url) = &cluster.api_url {
        let uri = url.parse().map_err(|e| ctx(&e))?;
        kube::Config::new(uri)
    } else {
        let options = kube::config::KubeConfigOptions {
            context: cluster.context.clone(),
            ..Default::default()
        };
        match &cluster.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| ctx(&e))?;
                kube::Config::from_custom_kubeconfig(kc, &options)
                    .await
                    .map_err(|e| ctx(&e))?
            }
            None if cluster.context.is_some() => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| ctx(&e))?,
            None => kube::Config::infer().await.map_err(|e| ctx(&e))?,
        }
    };
    kube::Client::try_from(config).map_err(|e| ctx(&e))
}

impl EksEngine {
    /// Builds one client per configured cluster (API URL, kubeconfig file
    /// and context, or the inferred/in-cluster configuration) and starts
    /// the watches. Must be called inside a Tokio runtime.
    pub async fn new(settings: EksSettings) -> Result<Self> {
        let mut clients = Vec::new();
        for c in &settings.clusters {
            clients.push((c.name.clone(), client_for(c).await?));
        }
        Self::with_clients(settings, clients)
    }

    /// An engine over ready clients, one per cluster name; a cluster's
    /// `namespace` and `service_account` overrides are taken from the
    /// `settings.clusters` entry of the same name, if any. Starts the
    /// watches; must be called inside a Tokio runtime.
    pub fn with_clients(
        mut settings: EksSettings,
        clients: impl IntoIterator<Item = (String, kube::Client)>,
    ) -> Result<Self> {
        if settings.namespace.is_empty() {
            return Err(Error::invalid("namespace: required"));
        }
        if settings.engine_name.is_empty() {
            return Err(Error::invalid("engine_name: required"));
        }
        if let Some(a) = &settings.artifacts {
            if a.helper_image.trim().is_empty() {
                return Err(Error::invalid("artifacts.helper_image: required"));
            }
            if !(a.store_url.starts_with("s3://") || a.store_url.starts_with("file:///")) {
                return Err(Error::invalid(format!(
                    "artifacts.store_url: {:?} is neither s3://bucket[/prefix] nor file:///dir",
                    a.store_url
                )));
            }
        }
        let mut clusters = HashMap::new();
        for (name, client) in clients {
            if name.is_empty() {
                return Err(Error::invalid("clusters: a cluster has no name"));
            }
            let configured = settings.clusters.iter().find(|c| c.name == name);
            let namespace = configured
                .and_then(|c| c.namespace.clone())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| settings.namespace.clone());
            let service_account = configured
                .and_then(|c| c.service_account.clone())
                .or_else(|| settings.service_account.clone());
            let handle = Arc::new(ClusterHandle {
                name: name.clone(),
                jobs: Api::namespaced(client.clone(), &namespace),
                pods: Api::namespaced(client, &namespace),
                namespace,
                service_account,
                state: Mutex::new(ClusterState::default()),
                lists_done: tokio::sync::watch::channel(0).0,
            });
            if clusters.insert(name.clone(), handle).is_some() {
                return Err(Error::invalid(format!(
                    "clusters: '{name}' is configured twice"
                )));
            }
        }
        if clusters.is_empty() {
            return Err(Error::invalid("clusters: at least one cluster is required"));
        }
        // A backstop only: see JOB_TTL_FLOOR_SECONDS.
        settings.ttl_seconds = settings.ttl_seconds.max(JOB_TTL_FLOOR_SECONDS);
        let (events, _) = broadcast::channel(16_384);
        let retention = u64::try_from(DEFAULT_JOB_RETENTION.as_millis()).unwrap_or(u64::MAX);
        let inner = Arc::new(Inner {
            settings,
            clusters,
            events,
            cancel: CancellationToken::new(),
            job_retention_ms: Arc::new(AtomicU64::new(retention)),
        });
        for handle in inner.clusters.values() {
            let th = inner.thresholds();
            tokio::spawn(watch_jobs(
                handle.clone(),
                inner.events.clone(),
                th,
                inner.cancel.clone(),
            ));
            tokio::spawn(watch_pods(
                handle.clone(),
                inner.events.clone(),
                th,
                inner.cancel.clone(),
            ));
            tokio::spawn(timers(
                handle.clone(),
                inner.events.clone(),
                th,
                Duration::from_secs(inner.settings.tombstone_ttl),
                inner.settings.api_attempts,
                inner.cancel.clone(),
            ));
        }
        Ok(EksEngine { inner })
    }

    /// The settings in force (`ttl_seconds` raised to at least
    /// [`JOB_TTL_FLOOR_SECONDS`]).
    pub fn settings(&self) -> &EksSettings {
        &self.inner.settings
    }

    /// How long a Job is kept after flotilla recorded its outcome before
    /// flotilla deletes it (its pods' logs are readable meanwhile).
    pub fn job_retention(&self) -> Duration {
        Duration::from_millis(self.inner.job_retention_ms.load(Ordering::Relaxed))
    }

    /// Sets [`job_retention`](Self::job_retention) for Jobs recorded from
    /// now on; zero deletes them as soon as their outcome is recorded.
    pub fn set_job_retention(&self, retention: Duration) {
        let ms = u64::try_from(retention.as_millis()).unwrap_or(u64::MAX);
        self.inner.job_retention_ms.store(ms, Ordering::Relaxed);
    }

    /// Names of the configured clusters.
    pub fn cluster_names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.inner.clusters.keys().cloned().collect();
        v.sort();
        v
    }

    /// Whether every cluster's watches have listed and are not failing.
    pub fn watches_healthy(&self) -> bool {
        self.inner.clusters.values().all(|c| c.lock().healthy())
    }
}

/// How long a poll waits for a cluster's list before it answers without
/// it: a slow or failing cluster delays the others' answers by this much at
/// most (the list goes on, and a later poll uses its result).
const LIST_WAIT: Duration = Duration::from_secs(2);

/// Starts a list of `handle` unless one is under way.
fn start_list(inner: &Arc<Inner>, handle: &Arc<ClusterHandle>) {
    {
        let mut st = handle.lock();
        if st.list_running {
            return;
        }
        st.list_running = true;
    }
    let (inner, handle) = (inner.clone(), handle.clone());
    tokio::spawn(async move {
        let result = list_cluster(&inner, &handle).await;
        {
            let mut st = handle.lock();
            st.list_running = false;
            st.list_failed = match result {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(cluster = %handle.name, error = %e, "listing the cluster failed; its runs are left out of polls until a list or its watches succeed");
                    Some(e.message().to_string())
                }
            };
        }
        handle.lists_done.send_modify(|n| *n += 1);
    });
}

/// Lists Jobs and Pods of `handle` and merges them into the cache.
async fn list_cluster(inner: &Inner, handle: &ClusterHandle) -> Result<()> {
    let lp = ListParams::default().labels(&names::managed_selector());
    let attempts = inner.settings.api_attempts;
    let jobs = with_retry(attempts, || handle.jobs.list(&lp))
        .await
        .map_err(|e| from_kube(&format!("listing Jobs in cluster {}", handle.name), e))?;
    let pods = with_retry(attempts, || handle.pods.list(&lp))
        .await
        .map_err(|e| from_kube(&format!("listing Pods in cluster {}", handle.name), e))?;
    let list_rv: Option<u64> = jobs
        .metadata
        .resource_version
        .as_deref()
        .and_then(|s| s.parse().ok());
    let th = inner.thresholds();
    let mut st = handle.lock();
    let mut touched = HashSet::new();
    let listed_jobs: HashSet<String> = jobs.items.iter().map(|j| j.name_any()).collect();
    for job in jobs.items {
        touched.extend(st.apply_job(job));
    }
    // Jobs the list no longer has (and the watch did not tell).
    let gone: Vec<Job> = st
        .jobs
        .iter()
        .filter(|(n, j)| {
            !listed_jobs.contains(*n) && list_rv.is_some_and(|l| rv_of(*j).is_none_or(|r| r <= l))
        })
        .map(|(_, j)| j.clone())
        .collect();
    for j in gone {
        touched.insert(st.delete_job(&j));
    }
    let listed_pods: HashSet<String> = pods.items.iter().map(|p| p.name_any()).collect();
    for pod in pods.items {
        touched.extend(st.apply_pod(pod));
    }
    let gone: Vec<Pod> = st
        .pods
        .values()
        .flat_map(|m| m.values())
        .filter(|p| {
            !listed_pods.contains(&p.name_any())
                && list_rv.is_some_and(|l| rv_of(*p).is_none_or(|r| r <= l))
        })
        .cloned()
        .collect();
    for p in gone {
        touched.extend(st.delete_pod(&p));
    }
    st.last_list = Some(Instant::now());
    st.list_ok_at = st.last_list;
    st.listed = true;
    for name in touched {
        if let Some(u) = st.recompute(&name, th) {
            let _ = inner.events.send(EngineEvent::Update(u));
        }
    }
    Ok(())
}

fn emit(
    st: &mut ClusterState,
    names: impl IntoIterator<Item = String>,
    th: Thresholds,
    tx: &broadcast::Sender<EngineEvent>,
) {
    if !st.ready() {
        return;
    }
    for name in names {
        if let Some(u) = st.recompute(&name, th) {
            let _ = tx.send(EngineEvent::Update(u));
        }
    }
}

fn watch_error(
    handle: &ClusterHandle,
    what: &str,
    e: &watcher::Error,
    tx: &broadcast::Sender<EngineEvent>,
) {
    let mut st = handle.lock();
    let first = st.watch_error_at.is_none();
    st.watch_error_at = Some(Instant::now());
    drop(st);
    tracing::warn!(cluster = %handle.name, error = %e, "{what} watch failed; it resumes with backoff and polls list meanwhile");
    if first {
        let _ = tx.send(EngineEvent::Resync);
    }
}

async fn watch_jobs(
    handle: Arc<ClusterHandle>,
    tx: broadcast::Sender<EngineEvent>,
    th: Thresholds,
    cancel: CancellationToken,
) {
    let config = watcher::Config::default().labels(&names::managed_selector());
    let stream = watcher::watcher(handle.jobs.clone(), config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(ev) => {
                let mut st = handle.lock();
                st.watch_error_at = None;
                match ev {
                    Event::Init => st.jobs_init = Some(HashMap::new()),
                    Event::InitApply(job) => {
                        if let Some(init) = st.jobs_init.as_mut() {
                            init.insert(job.name_any(), job);
                        }
                    }
                    Event::InitDone => {
                        let listed = st.jobs_init.take().unwrap_or_default();
                        let mut touched: Vec<String> = st.jobs.keys().cloned().collect();
                        touched.extend(listed.keys().cloned());
                        st.jobs.clear();
                        for (_, job) in listed {
                            st.apply_job(job);
                        }
                        let first = !st.ready();
                        st.jobs_synced = true;
                        // The watcher's list counts as the safety-net list.
                        st.last_list = Some(Instant::now());
                        if first {
                            touched.extend(st.all_tracked());
                        }
                        emit(&mut st, touched, th, &tx);
                    }
                    Event::Apply(job) => {
                        let touched = st.apply_job(job);
                        emit(&mut st, touched, th, &tx);
                    }
                    Event::Delete(job) => {
                        let name = st.delete_job(&job);
                        emit(&mut st, [name], th, &tx);
                    }
                }
            }
            Err(e) => watch_error(&handle, "Job", &e, &tx),
        }
    }
}

async fn watch_pods(
    handle: Arc<ClusterHandle>,
    tx: broadcast::Sender<EngineEvent>,
    th: Thresholds,
    cancel: CancellationToken,
) {
    let config = watcher::Config::default().labels(&names::managed_selector());
    let stream = watcher::watcher(handle.pods.clone(), config).default_backoff();
    futures::pin_mut!(stream);
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let Some(ev) = ev else { return };
        match ev {
            Ok(ev) => {
                let mut st = handle.lock();
                st.watch_error_at = None;
                match ev {
                    Event::Init => st.pods_init = Some(Vec::new()),
                    Event::InitApply(pod) => {
                        if let Some(init) = st.pods_init.as_mut() {
                            init.push(pod);
                        }
                    }
                    Event::InitDone => {
                        let listed = st.pods_init.take().unwrap_or_default();
                        let mut touched: Vec<String> = st.pods.keys().cloned().collect();
                        st.pods.clear();
                        for pod in listed {
                            touched.extend(st.apply_pod(pod));
                        }
                        let first = !st.ready();
                        st.pods_synced = true;
                        if first {
                            touched.extend(st.all_tracked());
                        }
                        emit(&mut st, touched, th, &tx);
                    }
                    Event::Apply(pod) => {
                        let touched = st.apply_pod(pod);
                        emit(&mut st, touched, th, &tx);
                    }
                    Event::Delete(pod) => {
                        let touched = st.delete_pod(&pod);
                        emit(&mut st, touched, th, &tx);
                    }
                }
            }
            Err(e) => watch_error(&handle, "Pod", &e, &tx),
        }
    }
}

/// Re-evaluates runs whose answer can change without an event (back-off,
/// pod or Job gone) and forgets final runs whose Job is long gone.
async fn timers(
    handle: Arc<ClusterHandle>,
    tx: broadcast::Sender<EngineEvent>,
    th: Thresholds,
    tombstone_ttl: Duration,
    api_attempts: u32,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut st = handle.lock();
        let due: Vec<String> = st
            .tracks
            .iter()
            .filter(|(_, t)| t.has_timer())
            .map(|(n, _)| n.clone())
            .collect();
        emit(&mut st, due, th, &tx);
        // A run that can never start (image pull or container create
        // back-off beyond the threshold) stopped: delete its Job so the pod
        // does not wait forever.
        let mut reap = Vec::new();
        for (name, t) in st.tracks.iter_mut() {
            let stuck = t.last.as_ref().is_some_and(|u| {
                u.state == TaskState::Stopped
                    && matches!(
                        u.failure,
                        Some(FailureCategory::ImagePull | FailureCategory::ContainerStart)
                    )
            });
            if stuck && !t.reaped {
                t.reaped = true;
                reap.push(name.clone());
            }
        }
        for name in reap {
            let handle = handle.clone();
            tokio::spawn(async move {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    ..Default::default()
                };
                if let Err(e) = handle.jobs.delete(&name, &dp).await
                    && api_code(&e) != Some(404)
                {
                    tracing::warn!(cluster = %handle.name, job = %name, error = %e, "deleting a Job that cannot start failed");
                }
            });
        }
        // Jobs whose outcome flotilla recorded and whose retention passed.
        let now = Instant::now();
        let due: Vec<(String, u32)> = st
            .reap_at
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(n, (_, tried))| (n.clone(), *tried))
            .collect();
        for (name, tried) in &due {
            if *tried + 1 >= REAP_ATTEMPTS {
                st.reap_at.remove(name);
            } else {
                // Tried again later unless the deletion below succeeds.
                st.reap_at
                    .insert(name.clone(), (now + Duration::from_secs(30), tried + 1));
            }
        }
        for (name, _) in due {
            let handle = handle.clone();
            tokio::spawn(async move {
                if delete_recorded(&handle, &name, api_attempts).await {
                    handle.lock().reap_at.remove(&name);
                }
            });
        }
        let ClusterState { tracks, jobs, .. } = &mut *st;
        tracks.retain(|name, t| {
            jobs.contains_key(name) || t.final_at.is_none_or(|at| at.elapsed() < tombstone_ttl)
        });
    }
}

/// Deletes the Job of a recorded outcome (background propagation: the
/// garbage collector deletes its pods); true when it is gone.
async fn delete_recorded(handle: &ClusterHandle, name: &str, attempts: u32) -> bool {
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Background),
        ..Default::default()
    };
    match with_retry(attempts, || handle.jobs.delete(name, &dp)).await {
        Ok(_) => true,
        Err(e) if api_code(&e) == Some(404) => true,
        Err(e) => {
            tracing::warn!(cluster = %handle.name, job = %name, error = %e, "deleting a recorded Job failed; tried again later, its TTL is the backstop");
            false
        }
    }
}

#[async_trait]
impl Engine for EksEngine {
    fn name(&self) -> &str {
        &self.inner.settings.engine_name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpu: true,
            ports: true,
            logs: true,
            deadline: true,
            push_events: true,
            images: true,
            artifacts: self.inner.settings.artifacts.is_some(),
        }
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted> {
        let handle = self.inner.cluster(run)?;
        let job = spec::job(
            run,
            definition,
            &self.inner.settings,
            &handle.namespace,
            handle.service_account.as_deref(),
        )?;
        let name = job.name_any();
        let attempts = self.inner.settings.api_attempts;
        let pp = PostParams::default();
        let created = with_retry(attempts, || handle.jobs.create(&pp, &job)).await;
        let job = match created {
            Ok(j) => j,
            Err(e) if api_code(&e) == Some(409) => {
                // Already submitted: the name is the run attempt's.
                let existing = with_retry(attempts, || handle.jobs.get(&name))
                    .await
                    .map_err(|e| from_kube(&format!("reading Job {name}"), e))?;
                match run_of(&existing) {
                    Some((id, attempt)) if id == run.run_id && attempt == run.attempt => existing,
                    _ => {
                        return Err(Error::conflict(format!(
                            "Job {name} exists in cluster {} but belongs to another run",
                            handle.name
                        )));
                    }
                }
            }
            Err(e) => {
                let err = from_kube(
                    &format!("creating Job {name} in cluster {}", handle.name),
                    e,
                );
                return Err(match err.kind() {
                    // 404 (namespace missing) and 400 are permanent too.
                    ErrorKind::NotFound => Error::invalid(err.message().to_string()),
                    _ => err,
                });
            }
        };
        let th = self.inner.thresholds();
        let mut st = handle.lock();
        let touched = st.apply_job(job);
        emit(&mut st, touched, th, &self.inner.events);
        Ok(Submitted {
            engine_ref: name,
            instance: None,
        })
    }

    /// Per cluster: a cluster whose watches are not healthy (or whose
    /// safety-net list is due) is listed first, every such cluster at once,
    /// each waited for at most [`LIST_WAIT`]. A cluster that can be
    /// observed neither by its watches nor by its last list (failing, or
    /// still under way without a good one before it) has its runs left out
    /// of the answer (no news, never `Missing`), while every other
    /// cluster's runs are answered. `Err` only when no cluster could be
    /// observed.
    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>> {
        let safety = Duration::from_secs(self.inner.settings.safety_list_interval);
        let mut by_cluster: BTreeMap<&str, Vec<&Run>> = BTreeMap::new();
        for r in runs {
            by_cluster.entry(r.cluster.as_str()).or_default().push(r);
        }
        let waits = by_cluster
            .keys()
            .filter_map(|c| self.inner.clusters.get(*c))
            .filter(|handle| {
                let st = handle.lock();
                !st.healthy() || st.last_list.is_none_or(|t| t.elapsed() >= safety)
            })
            .map(|handle| {
                let mut done = handle.lists_done.subscribe();
                done.mark_unchanged();
                start_list(&self.inner, handle);
                async move {
                    let _ = tokio::time::timeout(LIST_WAIT, done.changed()).await;
                }
            });
        futures::future::join_all(waits).await;
        let th = self.inner.thresholds();
        let mut out = Vec::with_capacity(runs.len());
        let mut observed = false;
        let mut unobservable = Vec::new();
        for (cluster, runs) in by_cluster {
            let Some(handle) = self.inner.clusters.get(cluster) else {
                observed = true;
                for r in runs {
                    let mut u = StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Missing);
                    u.reason = Some(format!("cluster '{cluster}' is not configured"));
                    out.push(u);
                }
                continue;
            };
            {
                let st = handle.lock();
                let observable = st.healthy() || st.listed_since_watch_error();
                if !observable {
                    let why = st
                        .list_failed
                        .clone()
                        .unwrap_or_else(|| "its list is still under way".into());
                    unobservable.push(format!("cluster {cluster}: {why}"));
                    continue;
                }
            }
            observed = true;
            let mut st = handle.lock();
            for r in runs {
                let name = r
                    .engine_ref
                    .clone()
                    .unwrap_or_else(|| names::job_name(&r.run_id, r.attempt));
                let known = st
                    .tracks
                    .get(&name)
                    .is_some_and(|t| t.run_id == r.run_id && t.attempt == r.attempt);
                if !known {
                    out.push(StatusUpdate::new(
                        r.run_id.clone(),
                        r.attempt,
                        TaskState::Missing,
                    ));
                    continue;
                }
                if let Some(u) = st.recompute(&name, th) {
                    let _ = self.inner.events.send(EngineEvent::Update(u));
                }
                let u = st
                    .tracks
                    .get(&name)
                    .and_then(|t| t.last.clone())
                    .unwrap_or_else(|| {
                        StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Pending)
                    });
                out.push(u);
            }
        }
        if !observed && !unobservable.is_empty() {
            return Err(Error::unavailable(format!(
                "no cluster could be observed: {}",
                unobservable.join("; ")
            )));
        }
        Ok(out)
    }

    async fn terminate(&self, run: &Run, reason: &str) -> Result<()> {
        let handle = self.inner.cluster(run)?;
        let name = run
            .engine_ref
            .clone()
            .unwrap_or_else(|| names::job_name(&run.run_id, run.attempt));
        {
            let mut st = handle.lock();
            st.tracks
                .entry(name.clone())
                .or_insert_with(|| Track::new(run.run_id.clone(), run.attempt))
                .terminated = Some(reason.to_string());
        }
        let dp = DeleteParams {
            propagation_policy: Some(PropagationPolicy::Background),
            ..Default::default()
        };
        match with_retry(self.inner.settings.api_attempts, || {
            handle.jobs.delete(&name, &dp)
        })
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e) == Some(404) => Ok(()),
            Err(e) => {
                let mut st = handle.lock();
                if let Some(t) = st.tracks.get_mut(&name)
                    && !t.is_final()
                {
                    t.terminated = None;
                }
                Err(from_kube(
                    &format!("deleting Job {name} in cluster {}", handle.name),
                    e,
                ))
            }
        }
    }

    /// The outcome is stored: the Job is deleted after
    /// [`EksEngine::job_retention`] (at once when zero).
    async fn finished(&self, run: &Run) -> Result<()> {
        let Some(handle) = self.inner.clusters.get(&run.cluster) else {
            return Ok(());
        };
        let name = run
            .engine_ref
            .clone()
            .unwrap_or_else(|| names::job_name(&run.run_id, run.attempt));
        let retention = self.job_retention();
        if retention.is_zero() {
            if !delete_recorded(handle, &name, self.inner.settings.api_attempts).await {
                handle
                    .lock()
                    .reap_at
                    .insert(name, (Instant::now() + Duration::from_secs(30), 1));
            }
        } else {
            handle
                .lock()
                .reap_at
                .insert(name, (Instant::now() + retention, 0));
        }
        Ok(())
    }

    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        let rx = self.inner.events.subscribe();
        let stream = tokio_stream::wrappers::BroadcastStream::new(rx).map(|item| match item {
            Ok(ev) => ev,
            Err(_) => EngineEvent::Resync,
        });
        Some(stream.boxed())
    }
}
