//! Load bench of the reference server over loopback.
//!
//! Starts the real server in-process on 127.0.0.1:0 with an instant engine
//! (every submitted run reports STOPPED, exit 0, at once through its push
//! stream) on the store and queue `FLOTILLA_BENCH_STORE` names (`memory`,
//! the default; `sqlite`, in a temporary directory; `postgres`, on
//! `FLOTILLA_TEST_DATABASE_URL`), then, with a bounded number of
//! concurrent clients for a bounded time:
//! 1. executes runs (`PUT /api/v6/task/alias/{alias}/execute`): requests/s
//!    and latency, then the time until every one of them is STOPPED (runs/s
//!    to STOPPED);
//! 2. stores `FLOTILLA_BENCH_RUNS` runs (default 100000) and reads
//!    `GET /api/v6/history` in a few query shapes: p50/p99 (on PostgreSQL
//!    after a `VACUUM (ANALYZE) runs`, as autovacuum leaves a history built
//!    over time).
//!
//! Knobs: `FLOTILLA_BENCH_CLIENTS` (default 32), `FLOTILLA_BENCH_SECS`
//! (seconds per phase, default 10), `FLOTILLA_BENCH_RUNS`,
//! `FLOTILLA_BENCH_STORE`, `FLOTILLA_BENCH_COUNT_LIMIT`
//! (`http.history_count_limit`, default 10000; 0 counts every match).
//! Run: `cargo bench -p flotilla-http --bench http_bench`.
#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flotilla::{
    Capabilities, Definition, Engine, EngineEvent, Run, RunEvent, RunStatus, StatusUpdate,
    Submitted, TaskState,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;

/// An engine that finishes every run at once.
#[derive(Debug)]
struct InstantEngine {
    tx: broadcast::Sender<EngineEvent>,
}

fn stopped(run: &Run) -> StatusUpdate {
    let mut u = StatusUpdate::new(run.run_id.clone(), run.attempt, TaskState::Stopped);
    u.exit_code = Some(0);
    u.finished_at = Some(chrono::Utc::now());
    u
}

#[async_trait]
impl Engine for InstantEngine {
    fn name(&self) -> &str {
        "instant"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            push_events: true,
            ..Capabilities::default()
        }
    }
    async fn submit(&self, run: &Run, _definition: &Definition) -> flotilla::Result<Submitted> {
        let _ = self.tx.send(EngineEvent::Update(stopped(run)));
        Ok(Submitted {
            engine_ref: format!("instant:{}", run.run_id),
            instance: None,
        })
    }
    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        Ok(runs.iter().map(stopped).collect())
    }
    async fn terminate(&self, _run: &Run, _reason: &str) -> flotilla::Result<()> {
        Ok(())
    }
    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        let rx = self.tx.subscribe();
        Some(
            tokio_stream::wrappers::BroadcastStream::new(rx)
                .map(|r| r.unwrap_or(EngineEvent::Resync))
                .boxed(),
        )
    }
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Stats {
    ok: usize,
    errors: usize,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i].as_secs_f64() * 1000.0
    }
}

/// Builds the `i`-th request.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, usize) -> reqwest::RequestBuilder + Send + Sync>;

/// `clients` loops sending `make(i)` for `secs`.
async fn drive(clients: usize, secs: u64, make: MakeRequest) -> Stats {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()
        .unwrap_or_default();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let http = http.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let (mut ok, mut err) = (0, 0);
            let mut i = c;
            while Instant::now() < end {
                let t = Instant::now();
                match make(&http, i).send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        ok += 1;
                        lat.push(t.elapsed());
                    }
                    _ => err += 1,
                }
                i += clients;
            }
            (ok, err, lat)
        }));
    }
    let mut stats = Stats {
        ok: 0,
        errors: 0,
        latencies: Vec::new(),
        elapsed: Duration::ZERO,
    };
    for t in tasks {
        if let Ok((ok, err, lat)) = t.await {
            stats.ok += ok;
            stats.errors += err;
            stats.latencies.extend(lat);
        }
    }
    stats.elapsed = start.elapsed();
    stats.latencies.sort();
    stats
}

async fn bench() -> Result<(), Box<dyn std::error::Error>> {
    flotilla_http::install_crypto_provider();
    let clients = env_usize("FLOTILLA_BENCH_CLIENTS", 32);
    let secs = env_usize("FLOTILLA_BENCH_SECS", 10) as u64;
    let n_runs = env_usize("FLOTILLA_BENCH_RUNS", 100_000);

    let mut config = flotilla_http::Config::default();
    config.workers.receive_wait = Duration::from_millis(200);
    if let Ok(n) = std::env::var("FLOTILLA_BENCH_COUNT_LIMIT") {
        config.http.history_count_limit = n.parse()?;
    }
    let (tx, _) = broadcast::channel(65_536);
    let backend = std::env::var("FLOTILLA_BENCH_STORE").unwrap_or_else(|_| "memory".into());
    let dir = tempfile::tempdir()?;
    // PostgreSQL: vacuumed after the history is stored (below).
    let mut pg_pool = None;
    let mut builder = flotilla::Flotilla::builder()
        .config(config.service_config())
        .engine(Arc::new(InstantEngine { tx }));
    match backend.as_str() {
        "memory" => {}
        "sqlite" => {
            let store = flotilla_sqlite::SqliteStore::open(
                &dir.path().join("flotilla.db"),
                flotilla_sqlite::SqliteOptions::default(),
            )
            .await?;
            builder = builder
                .queue(Arc::new(store.queue()))
                .store(Arc::new(store));
        }
        "postgres" => {
            let url = std::env::var("FLOTILLA_TEST_DATABASE_URL")
                .map_err(|_| "FLOTILLA_BENCH_STORE=postgres needs FLOTILLA_TEST_DATABASE_URL")?;
            let store =
                flotilla_postgres::PgStore::connect(&url, flotilla_postgres::PgOptions::default())
                    .await?;
            pg_pool = Some(store.pool().clone());
            builder = builder
                .queue(Arc::new(store.queue()))
                .store(Arc::new(store));
        }
        other => return Err(format!("FLOTILLA_BENCH_STORE: unknown store '{other}'").into()),
    }
    let flotilla = builder.build()?;
    // A cluster of its own: a shared database's other runs are not counted.
    let cluster = format!("bench-{}", flotilla::model::new_id().replace('-', ""));
    flotilla
        .put_cluster(flotilla::Cluster::new(cluster.clone()))
        .await?;
    let addr: SocketAddr = "127.0.0.1:0".parse()?;
    let server = flotilla_http::spawn_with(flotilla.clone(), &config, addr).await?;
    let base = server.url();
    flotilla
        .define(flotilla::NewDefinition::new(cluster.clone(), "busybox").command("true"))
        .await?;

    println!(
        "flotilla-http load bench: {backend} store and queue, {clients} clients, {secs} s per phase, loopback, history totals counted up to {}",
        config.http.history_count_limit
    );
    println!();
    println!("| phase | requests | errors | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let url = format!("{base}/api/v6/task/alias/{cluster}/execute");
    let body: &'static str = Box::leak(
        format!(r#"{{"cluster":"{cluster}","run_tags":{{"owner_id":"bench"}}}}"#).into_boxed_str(),
    );
    let started = Instant::now();
    let exec = drive(clients, secs, Arc::new(move |h, _| h.put(&url).body(body))).await;
    row("PUT execute", &exec);
    let mut stopped_query = flotilla::RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
    stopped_query.clusters = vec![cluster.clone()];
    let drain_limit = Instant::now() + Duration::from_secs(600);
    let stopped = loop {
        let n = flotilla.list_runs(stopped_query.clone()).await?.total;
        if n >= exec.ok as u64 || Instant::now() > drain_limit {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let to_stopped = started.elapsed().as_secs_f64();
    println!();
    println!(
        "{stopped} of {} executed runs STOPPED {to_stopped:.1} s after the first execute: {:.0} runs/s to STOPPED",
        exec.ok,
        stopped as f64 / to_stopped
    );

    // Pre-store runs straight into the store.
    let template = flotilla
        .execute_alias(&cluster, flotilla::ExecuteRequest::owned_by("bench"))
        .await?;
    let store = flotilla.store().clone();
    let statuses = [
        RunStatus::Stopped,
        RunStatus::Stopped,
        RunStatus::Stopped,
        RunStatus::Running,
        RunStatus::Queued,
    ];
    let fill = Instant::now();
    // Written 64 at a time, as concurrent clients would (the SQLite writer
    // batches them; PostgreSQL commits them in parallel).
    let created: Vec<flotilla::Result<()>> = futures::stream::iter(0..n_runs)
        .map(|i| {
            let mut run = template.clone();
            run.run_id = flotilla::model::new_id();
            run.status = statuses[i % statuses.len()];
            run.cluster = format!("{cluster}-c{}", i % 8);
            run.idempotence_key = None;
            run.env
                .push(flotilla::EnvVar::new("K", format!("v{}", i % 100)));
            let event = RunEvent::created(&run);
            let store = store.clone();
            async move { store.create_run(&run, &event).await }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    created.into_iter().collect::<flotilla::Result<Vec<()>>>()?;
    let total = flotilla.list_runs(flotilla::RunQuery::all(1)).await?.total;
    println!();
    println!(
        "stored {n_runs} runs in {:.1} s ({total} in the store)",
        fill.elapsed().as_secs_f64()
    );
    if let Some(pool) = &pg_pool {
        // A history this size built up over months, and autovacuum has
        // seen it: its visibility map lets counts read indexes alone, and
        // the planner has its statistics. Stored in one burst, it would be
        // read before autovacuum's first pass.
        let vacuum = Instant::now();
        sqlx::query("VACUUM (ANALYZE) runs").execute(pool).await?;
        println!(
            "VACUUM (ANALYZE) runs: {:.1} s",
            vacuum.elapsed().as_secs_f64()
        );
    }
    println!();
    println!("| GET /api/v6/history query | requests | errors | req/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let shapes = [
        "limit=50",
        "status=RUNNING&status=QUEUED&limit=50",
        "cluster_name={cluster}-c3&sort_by=queued_at&order=desc&limit=50",
        "env=K%7Cv7&status=STOPPED&limit=50",
        "alias={cluster}&sort_by=run_id&order=asc&offset=5000&limit=100",
    ];
    for q in shapes {
        let q = q.replace("{cluster}", &cluster);
        let url = format!("{base}/api/v6/history?{q}");
        let stats = drive(
            clients,
            (secs / 2).max(1),
            Arc::new(move |h, _| h.get(&url)),
        )
        .await;
        row(&q, &stats);
    }
    server.shutdown().await;
    Ok(())
}

fn row(name: &str, s: &Stats) {
    println!(
        "| {name} | {} | {} | {:.0} | {:.2} | {:.2} |",
        s.ok,
        s.errors,
        s.ok as f64 / s.elapsed.as_secs_f64(),
        s.pct(0.5),
        s.pct(0.99)
    );
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(bench()) {
        eprintln!("bench failed: {e}");
        std::process::exit(1);
    }
}
