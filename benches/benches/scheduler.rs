//! In-memory scheduler throughput and latency.
//!
//! Runs go execute → QUEUED → submit worker → PENDING → (instant engine
//! pushes exit 0) → status worker → STOPPED, through the real `Flotilla`
//! service with `MemoryStore` and `MemoryQueue`.
//!
//! Prints, for each size (default 10k and 100k; `FLOTILLA_BENCH_SIZES=1000,5000`
//! to change): runs/s from the first execute to the last STOPPED, and
//! execute→submit latency p50/p99; then the latency at a steady offered load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{InstantEngine, Latency, ms, peak_rss_mib};
use flotilla::service::{ServiceConfig, WorkerConfig};
use flotilla::{ExecuteRequest, Flotilla, NewDefinition, RunQuery, RunStatus};

fn service(engine: Arc<InstantEngine>) -> Flotilla {
    let config = ServiceConfig {
        workers: WorkerConfig {
            receive_wait: Duration::from_secs(1),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    Flotilla::builder()
        .engine(engine)
        .config(config)
        .build()
        .expect("build")
}

async fn stopped(f: &Flotilla) -> u64 {
    f.list_runs(RunQuery::all(1).with_statuses(&[RunStatus::Stopped]))
        .await
        .map(|p| p.total)
        .unwrap_or(0)
}

async fn burst(n: usize) {
    let engine = Arc::new(InstantEngine::default());
    let f = service(engine.clone());
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
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let t0 = Instant::now();
                let run = f
                    .execute(&def, ExecuteRequest::owned_by("bench"))
                    .await
                    .expect("execute");
                out.push((run.run_id, t0));
            }
            out
        });
    }
    let mut sent = Vec::with_capacity(n);
    while let Some(r) = clients.join_next().await {
        sent.extend(r.expect("client"));
    }
    let executed = started.elapsed();
    while stopped(&f).await < n as u64 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = started.elapsed();
    let last_submit = sent
        .iter()
        .filter_map(|(id, _)| engine.submitted_at(id))
        .max()
        .map(|t| t.duration_since(started))
        .unwrap_or(total);
    let lat = Latency::of(
        sent.iter()
            .filter_map(|(id, t0)| engine.submitted_at(id).map(|t| t.duration_since(*t0)))
            .collect(),
    )
    .expect("samples");
    assert_eq!(engine.submissions(), n, "every run submitted once");
    println!(
        "| {n:>7} | {:>9.0} | {:>11.0} | {:>9.0} | {:>10} | {:>10} | {:>8.0} |",
        n as f64 / executed.as_secs_f64(),
        n as f64 / last_submit.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        ms(lat.p50),
        ms(lat.p99),
        peak_rss_mib().unwrap_or(0.0),
    );
    handle.shutdown().await;
}

async fn steady(rate: u64, seconds: u64) {
    let engine = Arc::new(InstantEngine::default());
    let f = service(engine.clone());
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("steady", "img").command("true"))
        .await
        .expect("define")
        .definition_id;
    let n = rate * seconds;
    let begin = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let mut sent = Vec::with_capacity(n as usize);
    for _ in 0..n {
        tick.tick().await;
        let t0 = Instant::now();
        let run = f
            .execute(&def, ExecuteRequest::owned_by("bench"))
            .await
            .expect("execute");
        sent.push((run.run_id, t0));
    }
    while stopped(&f).await < n {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let samples: Vec<(Duration, Duration)> = sent
        .iter()
        .filter_map(|(id, t0)| {
            engine
                .submitted_at(id)
                .map(|t| (t0.duration_since(begin), t.duration_since(*t0)))
        })
        .collect();
    let lat = Latency::of(samples.iter().map(|(_, d)| *d).collect()).expect("samples");
    let over = |limit: Duration| samples.iter().filter(|(_, d)| *d > limit).count();
    // Where the worst sample sat in the run, to tell a start-up or one-off
    // stall from a periodic one.
    let worst_at = samples
        .iter()
        .max_by_key(|(_, d)| *d)
        .map(|(at, _)| *at)
        .unwrap_or_default();
    println!(
        "| {rate:>6}/s | {n:>6} | {:>10} | {:>10} | {:>10} | {:>5} | {:>6} | {:>7.2} s |",
        ms(lat.p50),
        ms(lat.p99),
        ms(lat.max),
        over(Duration::from_millis(10)),
        over(Duration::from_millis(100)),
        worst_at.as_secs_f64(),
    );
    handle.shutdown().await;
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FLOTILLA_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000, 100_000]);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        println!(
            "in-memory scheduler, instant engine ({} cores)",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        // First: a burst's teardown (hundreds of MB of runs freed at once)
        // leaves the allocator consolidating its free lists for the next
        // phase's first allocations, a stall of 10-400 ms that belongs to
        // the harness, not to the scheduler.
        println!("steady offered load, execute → submit latency");
        println!(
            "| rate     | runs   | p50        | p99        | max        | >10ms | >100ms | worst at  |"
        );
        println!(
            "|----------|--------|------------|------------|------------|-------|--------|-----------|"
        );
        steady(1000, 5).await;
        steady(5000, 2).await;
        println!();
        println!(
            "| runs    | execute/s | submitted/s | stopped/s | submit p50 | submit p99 | RSS MiB  |"
        );
        println!(
            "|---------|-----------|-------------|-----------|------------|------------|----------|"
        );
        for n in sizes {
            burst(n).await;
        }
    });
}
