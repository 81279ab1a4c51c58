//! Runs wait until their cluster has room: capacity (`runs`, `memory`),
//! fair order across owners, priority within an owner, and usage that
//! survives a restart — on the local engine with real processes.
//!
//! Every job appends `S <run_id> <ns>` when it starts and `E <run_id> <ns>`
//! just before it exits to one shared file; the checks read how many really
//! ran at once, and in which order they started, from that file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use flotilla::local::LocalEngine;
use flotilla::memory::{MemoryQueue, MemoryStore};
use flotilla::model::ClusterStatus;
use flotilla::service::WorkerConfig;
use flotilla::testkit::CountingQueue;
use flotilla::{
    Capacity, Cluster, Definition, ExecuteRequest, Flotilla, FlotillaHandle, NewDefinition, Queue,
    Run, RunStatus, ServiceConfig, Store,
};

const WAIT: Duration = Duration::from_secs(120);

fn config() -> ServiceConfig {
    ServiceConfig {
        clusters: vec!["default".into()],
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(100),
            receive_wait: Duration::from_millis(500),
            lease_ttl: Duration::from_secs(2),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    }
}

struct Env {
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    store: Arc<MemoryStore>,
    queue: Arc<CountingQueue<MemoryQueue>>,
    config: ServiceConfig,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Env {
    async fn new(capacity: Capacity) -> Env {
        Env::with_config(capacity, config()).await
    }

    async fn with_config(capacity: Capacity, config: ServiceConfig) -> Env {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(MemoryStore::new());
        let queue = Arc::new(CountingQueue::new(MemoryQueue::new()));
        let flotilla = build(&dir, &store, &queue, &config);
        let mut cluster = Cluster::new("default");
        cluster.capacity = Some(capacity);
        flotilla.put_cluster(cluster).await.expect("cluster");
        let handle = Some(flotilla.start());
        let log = dir.path().join("starts.log");
        Env {
            flotilla,
            handle,
            store,
            queue,
            config,
            log,
            dir,
        }
    }

    /// Stops this service and starts another over the same store, queue
    /// and local engine directory (the processes keep running).
    async fn restart(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
        self.flotilla = build(&self.dir, &self.store, &self.queue, &self.config);
        self.handle = Some(self.flotilla.start());
    }

    /// A job that marks its start, sleeps `secs` and marks its end.
    async fn define(&self, alias: &str, secs: f64) -> Definition {
        let log = self.log.display();
        let command = format!(
            "echo \"S $FLOTILLA_RUN_ID $(date +%s%N)\" >> {log}; sleep {secs}; echo \"E $FLOTILLA_RUN_ID $(date +%s%N)\" >> {log}"
        );
        self.flotilla
            .define(NewDefinition::new(alias, "ubuntu:latest").command(command))
            .await
            .expect("define")
    }

    /// A job that marks its start and waits (at most a minute) until
    /// [`Env::open_gate`]: it holds its slot while the test queues more.
    async fn define_blocker(&self) -> Definition {
        let log = self.log.display();
        let gate = self.dir.path().join("gate");
        let gate = gate.display();
        let command = format!(
            "echo \"S $FLOTILLA_RUN_ID $(date +%s%N)\" >> {log}; i=0; while [ ! -e {gate} ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done; echo \"E $FLOTILLA_RUN_ID $(date +%s%N)\" >> {log}"
        );
        self.flotilla
            .define(NewDefinition::new("blocker", "ubuntu:latest").command(command))
            .await
            .expect("define")
    }

    fn open_gate(&self) {
        std::fs::write(self.dir.path().join("gate"), b"").expect("gate");
    }

    async fn execute(&self, def: &Definition, request: ExecuteRequest) -> Run {
        self.flotilla
            .execute(&def.definition_id, request)
            .await
            .expect("execute")
    }

    async fn all_stop(&self, runs: &[Run]) -> Vec<Run> {
        let mut out = Vec::new();
        for r in runs {
            out.push(
                self.flotilla
                    .wait_for_stop(&r.run_id, WAIT)
                    .await
                    .expect("run stops"),
            );
        }
        out
    }

    /// `(kind, run_id, ns)` lines of the shared file, in time order.
    fn marks(&self) -> Vec<(char, String, u128)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut v: Vec<(char, String, u128)> = text
            .lines()
            .filter_map(|l| {
                let mut p = l.split_whitespace();
                let kind = p.next()?.chars().next()?;
                let id = p.next()?.to_string();
                let ns = p.next()?.parse().ok()?;
                Some((kind, id, ns))
            })
            .collect();
        // At one instant an end goes before a start.
        v.sort_by_key(|(k, _, ns)| (*ns, *k != 'E'));
        v
    }

    /// The most jobs that ran at once, from their own marks.
    fn most_at_once(&self) -> usize {
        let (mut now, mut most) = (0i64, 0i64);
        for (k, _, _) in self.marks() {
            now += if k == 'S' { 1 } else { -1 };
            most = most.max(now);
        }
        usize::try_from(most).unwrap_or(0)
    }

    /// Run ids in the order their jobs started.
    fn start_order(&self) -> Vec<String> {
        self.marks()
            .into_iter()
            .filter(|(k, _, _)| *k == 'S')
            .map(|(_, id, _)| id)
            .collect()
    }

    /// Waits until `n` jobs have started.
    async fn started(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.start_order().len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} jobs never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until admission holds `run` back (it reports `waiting`).
    async fn held(&self, run: &Run) -> flotilla::Waiting {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let now = self.flotilla.get_run(&run.run_id).await.expect("run");
            if let Some(w) = now.waiting {
                return w;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "run never held: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

fn build(
    dir: &tempfile::TempDir,
    store: &Arc<MemoryStore>,
    queue: &Arc<CountingQueue<MemoryQueue>>,
    config: &ServiceConfig,
) -> Flotilla {
    let engine = LocalEngine::new(dir.path().join("data")).expect("local engine");
    let store: Arc<dyn Store> = store.clone();
    let queue: Arc<dyn Queue> = queue.clone();
    Flotilla::builder()
        .store(store)
        .queue(queue)
        .engine(Arc::new(engine))
        .config(config.clone())
        .build()
        .expect("build")
}

fn by(owner: &str) -> ExecuteRequest {
    ExecuteRequest::owned_by(owner)
}

fn all_succeeded(runs: &[Run]) {
    for r in runs {
        assert!(r.succeeded(), "every run finishes: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_20_runs_on_a_cluster_of_2_never_runs_more_than_2_at_once() {
    let env = Env::new(Capacity::runs(2)).await;
    let def = env.define("burst", 0.3).await;
    let mut runs = Vec::new();
    for _ in 0..20 {
        runs.push(env.execute(&def, by("a")).await);
    }
    let stopped = env.all_stop(&runs).await;
    all_succeeded(&stopped);
    assert_eq!(env.start_order().len(), 20, "every job really ran once");
    let most = env.most_at_once();
    assert!(most <= 2, "{most} jobs ran at once on a cluster of 2 runs");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_of_400_mib_on_a_cluster_of_1024_mib_never_run_more_than_2_at_once() {
    let env = Env::new(Capacity {
        memory: Some(1024),
        ..Capacity::default()
    })
    .await;
    let def = env.define("memory", 0.3).await;
    let mut runs = Vec::new();
    for _ in 0..8 {
        let mut req = by("a");
        req.memory = Some(400);
        runs.push(env.execute(&def, req).await);
    }
    let stopped = env.all_stop(&runs).await;
    all_succeeded(&stopped);
    assert_eq!(env.start_order().len(), 8, "every job really ran once");
    let most = env.most_at_once();
    assert!(most <= 2, "{most} runs of 400 MiB ran at once in 1024 MiB");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owners_single_run_starts_within_3_admissions_of_anothers_burst_of_1000() {
    let env = Env::new(Capacity::runs(1)).await;
    let blocker = env.define_blocker().await;
    let def = env.define("fair", 0.1).await;
    let first = env.execute(&blocker, by("a")).await;
    env.started(1).await;
    let mut burst = Vec::new();
    for _ in 0..1000 {
        burst.push(env.execute(&def, by("a")).await);
    }
    for r in &burst {
        env.held(r).await;
    }
    let single = env.execute(&def, by("b")).await;
    let waiting = env.held(&single).await;
    assert!(
        waiting
            .reason
            .contains("1 of 1 runs active on cluster default"),
        "{waiting:?}"
    );
    env.open_gate();
    let single = env
        .flotilla
        .wait_for_stop(&single.run_id, WAIT)
        .await
        .expect("stops");
    assert!(single.succeeded(), "{single:?}");
    let order = env.start_order();
    assert_eq!(order.first(), Some(&first.run_id));
    let at = order
        .iter()
        .position(|id| *id == single.run_id)
        .expect("the single run started");
    assert!(
        at <= 3,
        "owner b's run was admission {at} after it was queued, behind {} of a's burst",
        at - 1
    );
    for r in &burst {
        env.flotilla
            .terminate(&r.run_id, "test")
            .await
            .expect("terminate");
    }
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_priority_10_run_queued_after_10_runs_of_priority_0_starts_next() {
    let env = Env::new(Capacity::runs(1)).await;
    let blocker = env.define_blocker().await;
    let def = env.define("priority", 0.1).await;
    let first = env.execute(&blocker, by("a")).await;
    env.started(1).await;
    let mut low = Vec::new();
    for _ in 0..10 {
        low.push(env.execute(&def, by("a")).await);
    }
    for r in &low {
        env.held(r).await;
    }
    let mut req = by("a");
    req.priority = Some(10);
    let high = env.execute(&def, req).await;
    let waiting = env.held(&high).await;
    assert_eq!(waiting.position, 1, "admitted next: {waiting:?}");
    assert_eq!(
        env.held(&low[0]).await.position,
        2,
        "the oldest priority-0 run comes after it"
    );
    env.open_gate();
    let mut all = low.clone();
    all.push(high.clone());
    let stopped = env.all_stop(&all).await;
    all_succeeded(&stopped);
    let order = env.start_order();
    assert_eq!(order.len(), 12, "every job ran once");
    assert_eq!(order[0], first.run_id);
    assert_eq!(
        order[1], high.run_id,
        "the priority-10 run started next after the one running: {order:?}"
    );
    let low_ids: Vec<&String> = low.iter().map(|r| &r.run_id).collect();
    let low_order: Vec<&String> = order[2..].iter().collect();
    assert_eq!(low_order, low_ids, "equal priorities keep queue order");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_service_counts_the_runs_still_running() {
    let mut env = Env::new(Capacity::runs(2)).await;
    let long = env.define("long", 3.0).await;
    let short = env.define("short", 0.2).await;
    let first = vec![
        env.execute(&long, by("a")).await,
        env.execute(&long, by("a")).await,
    ];
    env.started(2).await;
    env.restart().await;
    for r in &first {
        let now = env.flotilla.get_run(&r.run_id).await.expect("run");
        assert!(
            now.status.is_active(),
            "still running across the restart: {now:?}"
        );
    }
    let mut after = Vec::new();
    for _ in 0..4 {
        after.push(env.execute(&short, by("b")).await);
    }
    let stopped = env.all_stop(&after).await;
    all_succeeded(&stopped);
    let stopped = env.all_stop(&first).await;
    all_succeeded(&stopped);
    assert_eq!(env.start_order().len(), 6);
    let most = env.most_at_once();
    assert!(
        most <= 2,
        "{most} jobs ran at once after a restart with 2 of 2 still running"
    );
    let last = env.flotilla.get_run(&after[3].run_id).await.expect("run");
    assert_eq!(last.status, RunStatus::Stopped);
    env.shutdown().await;
}

/// Puts cluster `default` (of `capacity`) in `status`.
async fn set_status(env: &Env, capacity: Capacity, status: ClusterStatus) {
    let mut cluster = Cluster::new("default");
    cluster.capacity = Some(capacity);
    cluster.status = status;
    env.flotilla.put_cluster(cluster).await.expect("cluster");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_in_maintenance_leaves_its_queued_runs_unclaimed() {
    // A short maintenance delay: a worker that claimed and released the
    // messages of a held cluster would claim each one many times here; a
    // reconcile that took the waiting runs for lost ones would enqueue
    // them again every interval.
    let mut cfg = config();
    cfg.workers.maintenance_delay = Duration::from_millis(100);
    cfg.workers.queued_stale_after = Duration::ZERO;
    cfg.workers.reconcile_interval = Duration::from_millis(100);
    let capacity = Capacity::runs(2);
    let env = Env::with_config(capacity, cfg).await;
    let def = env.define("held", 0.1).await;
    set_status(&env, capacity, ClusterStatus::Maintenance).await;
    let mut runs = Vec::new();
    for _ in 0..5 {
        runs.push(env.execute(&def, by("a")).await);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let counts = env.queue.counts("default");
    assert_eq!(counts.enqueued, 5, "enqueued once each, never again");
    assert!(
        counts.received <= 5,
        "queued runs of a cluster in maintenance were claimed {} times in 3 s ({} releases)",
        counts.received,
        counts.released
    );
    for r in &runs {
        let now = env.flotilla.get_run(&r.run_id).await.expect("run");
        assert_eq!(now.status, RunStatus::Queued, "held: {now:?}");
    }
    assert!(env.start_order().is_empty(), "nothing ran in maintenance");
    set_status(&env, capacity, ClusterStatus::Active).await;
    all_succeeded(&env.all_stop(&runs).await);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn putting_a_cluster_back_to_active_admits_its_runs_without_waiting_for_a_timer() {
    // Every timer that could also resume the queue is an hour: only the
    // cluster change itself can get these runs going within the test.
    let mut cfg = config();
    cfg.workers.maintenance_delay = Duration::from_secs(3600);
    cfg.workers.receive_wait = Duration::from_secs(3600);
    let capacity = Capacity::runs(2);
    let env = Env::with_config(capacity, cfg).await;
    let def = env.define("resumed", 0.1).await;
    set_status(&env, capacity, ClusterStatus::Maintenance).await;
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(env.execute(&def, by("a")).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.start_order().is_empty(), "nothing ran in maintenance");
    set_status(&env, capacity, ClusterStatus::Active).await;
    all_succeeded(&env.all_stop(&runs).await);
    assert!(env.most_at_once() <= 2);
    env.shutdown().await;
}
