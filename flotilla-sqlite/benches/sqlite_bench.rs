//! SQLite benchmark: the in-memory scheduler harness of
//! `benches/benches/scheduler.rs` (execute → QUEUED → submit worker →
//! instant engine → status worker → STOPPED, through the real `Flotilla`
//! service) with `SqliteStore` and `SqliteQueue` on a file in a temp dir.
//!
//! Prints, for `FLOTILLA_BENCH_RUNS` runs (default 100000; small in CI):
//! 1. runs/s from the first execute to the last STOPPED, execute latency
//!    p50/p99 (8 concurrent clients);
//! 2. with those runs stored, the latency of history lists (`GET /history`
//!    shapes: newest first, by status, by env pair), p50/p99 over
//!    `FLOTILLA_BENCH_LISTS` calls each (default 200).
//!
//! `cargo bench -p flotilla-sqlite --bench sqlite_bench`. Nothing is asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{InstantEngine, Latency, ms, peak_rss_mib};
use flotilla::service::{ServiceConfig, WorkerConfig};
use flotilla::{
    EnvVar, ExecuteRequest, Flotilla, NewDefinition, RunQuery, RunSortField, RunStatus, SortOrder,
    Store,
};
use flotilla_sqlite::{SqliteOptions, SqliteStore};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn service(store: &SqliteStore, engine: Arc<InstantEngine>) -> Flotilla {
    let config = ServiceConfig {
        workers: WorkerConfig {
            receive_wait: Duration::from_secs(1),
            queued_stale_after: Duration::from_secs(3600),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    Flotilla::builder()
        .store(Arc::new(store.clone()))
        .queue(Arc::new(store.queue()))
        .engine(engine)
        .config(config)
        .build()
        .expect("build")
}

async fn stopped(store: &SqliteStore) -> u64 {
    store
        .list_runs(&RunQuery::all(1).with_statuses(&[RunStatus::Stopped]))
        .await
        .map(|p| p.total)
        .unwrap_or(0)
}

async fn burst(store: &SqliteStore, n: usize) {
    let engine = Arc::new(InstantEngine::default());
    let f = service(store, engine.clone());
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("bench", "img").command("true"))
        .await
        .expect("define")
        .definition_id;
    let started = Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    let per = n / 8;
    for c in 0..8 {
        let f = f.clone();
        let def = def.clone();
        let count = if c == 7 { n - per * 7 } else { per };
        clients.spawn(async move {
            let mut lat = Vec::with_capacity(count);
            for i in 0..count {
                let mut req = ExecuteRequest::owned_by("bench");
                req.env = Some(vec![EnvVar::new("I", (i % 100).to_string())]);
                let t0 = Instant::now();
                f.execute(&def, req).await.expect("execute");
                lat.push(t0.elapsed());
            }
            lat
        });
    }
    let mut lat = Vec::with_capacity(n);
    while let Some(r) = clients.join_next().await {
        lat.extend(r.expect("client"));
    }
    let executed = started.elapsed();
    while stopped(store).await < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    let lat = Latency::of(lat).expect("samples");
    assert_eq!(engine.submissions(), n, "every run submitted once");
    println!(
        "| {n:>7} | {:>9.0} | {:>9.0} | {:>11} | {:>11} | {:>8.0} |",
        n as f64 / executed.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        ms(lat.p50),
        ms(lat.p99),
        peak_rss_mib().unwrap_or(0.0),
    );
    handle.shutdown().await;
}

async fn lists(store: &SqliteStore, calls: usize) {
    let shapes = [
        (
            "newest first (GET /history)",
            RunQuery {
                sort_by: RunSortField::StartedAt,
                order: SortOrder::Desc,
                limit: 20,
                ..Default::default()
            },
        ),
        (
            "status=STOPPED, by run_id",
            RunQuery {
                limit: 20,
                sort_by: RunSortField::RunId,
                order: SortOrder::Desc,
                ..Default::default()
            }
            .with_statuses(&[RunStatus::Stopped]),
        ),
        (
            "env I=7, newest first",
            RunQuery {
                env: vec![EnvVar::new("I", "7")],
                sort_by: RunSortField::StartedAt,
                order: SortOrder::Desc,
                limit: 20,
                ..Default::default()
            },
        ),
    ];
    for (what, q) in shapes {
        let mut samples = Vec::with_capacity(calls);
        let mut total = 0;
        for _ in 0..calls {
            let t0 = Instant::now();
            let page = store.list_runs(&q).await.expect("list");
            samples.push(t0.elapsed());
            total = page.total;
        }
        let lat = Latency::of(samples).expect("samples");
        println!(
            "| {what:<28} | {total:>7} | {:>10} | {:>10} |",
            ms(lat.p50),
            ms(lat.p99)
        );
    }
}

fn main() {
    let n = env_usize("FLOTILLA_BENCH_RUNS", 100_000);
    let calls = env_usize("FLOTILLA_BENCH_LISTS", 200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("flotilla.db");
        let store = SqliteStore::open(&path, SqliteOptions::default())
            .await
            .expect("open");
        println!(
            "SQLite store and queue (WAL, synchronous=NORMAL, one batching writer, {} readers), instant engine ({} cores)",
            SqliteOptions::default().readers,
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        println!("| runs    | execute/s | stopped/s | execute p50 | execute p99 | RSS MiB  |");
        println!("|---------|-----------|-----------|-------------|-------------|----------|");
        burst(&store, n).await;
        println!();
        println!("history lists with {n} runs stored, {calls} calls each");
        println!("| query                        | matches | p50        | p99        |");
        println!("|------------------------------|---------|------------|------------|");
        lists(&store, calls).await;
        store.close().await;
    });
}
