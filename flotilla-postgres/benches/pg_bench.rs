//! PostgreSQL benchmark: prints, against a throwaway cluster on this
//! machine, in one run:
//! 1. dispatch throughput: `FLOTILLA_BENCH_RUNS` runs (default 100000)
//!    pre-inserted and queued, drained to STOPPED by the `Flotilla` service
//!    with an instant engine;
//! 2. pickup latency: execute → engine submit, p50/p99, at a steady offered
//!    load (`FLOTILLA_BENCH_RATE` runs/s, default 200);
//! 3. bulk enqueue, messages/s;
//! 4. the physical reference: `pgbench -S` and simple-update TPS, the
//!    latency of one simple update at (2)'s rate from one client, and the
//!    commits (`pg_stat_database.xact_commit`), statements
//!    (`pg_stat_statements` calls) and WAL bytes (`pg_current_wal_lsn()`)
//!    per run of (1), and the `runs` table's HOT updates (`n_tup_hot_upd`
//!    of `n_tup_upd`) during (1);
//! 5. the raw queue drain: the bulk-enqueued messages claimed and acked by
//!    4 receivers taking 500 at a time, messages/s.
//!
//! `FLOTILLA_BENCH_STATEMENTS=N` also prints the N statements with the most
//! server time during (1), with their calls per run.
//!
//! `cargo bench -p flotilla-postgres --bench pg_bench`. Timings are only
//! printed; the run fails (exit status 1) when exactly one submit per
//! attempt does not hold: a `(run_id, attempt)` submitted twice, or a run
//! never submitted.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::model;
use flotilla::{
    ExecuteRequest, Flotilla, Message, NewDefinition, Queue, Run, RunEvent, RunStatus, Store,
};
use flotilla_postgres::{PgOptions, PgStore};
use futures::StreamExt;
use support::{CountingEngine, Counts, PgCluster};

/// Settings of the benchmark cluster, printed with the figures.
/// `shared_buffers` holds the `runs` table and its indexes at 100,000 runs
/// (with 256 MB, commits waited for dirty pages to be evicted: (2)'s p99
/// was 88 ms at 100,000 runs, 11 ms with 2 GB).
const SETTINGS: [&str; 6] = [
    "shared_preload_libraries=pg_stat_statements",
    "shared_buffers=2GB",
    "max_wal_size=4GB",
    "checkpoint_timeout=30min",
    "synchronous_commit=on",
    "fsync=on",
];

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn new_run(def_id: &str, alias: &str, i: usize) -> Run {
    let mut def = NewDefinition::new(alias, "img")
        .command("true")
        .into_definition();
    def.definition_id = def_id.into();
    let mut r = Run::queued(&def, "default", "counting", "bench");
    r.env = vec![flotilla::EnvVar::new("I", i.to_string())];
    r
}

/// The service with the default worker settings (leases, reconcile and
/// retry intervals as in production) except what an instant, poll-only
/// engine needs to move many runs: larger batches and a 50 ms status poll.
fn service(store: &PgStore, counts: &Counts) -> Flotilla {
    let mut cfg = flotilla::ServiceConfig {
        replica_id: "bench".to_string(),
        ..Default::default()
    };
    cfg.workers.submit_batch = 100;
    cfg.workers.submit_concurrency = 128;
    cfg.workers.poll_batch = 1000;
    cfg.workers.status_poll_interval = Duration::from_millis(50);
    cfg.workers.queued_stale_after = Duration::from_secs(3600);
    Flotilla::builder()
        .store(Arc::new(store.clone()))
        .queue(Arc::new(store.queue()))
        .engine(Arc::new(CountingEngine::new(counts.clone())))
        .config(cfg)
        .build()
        .expect("build the service")
}

/// Runs not yet STOPPED (through the small index of unfinished runs, so
/// the bench's own polling costs little beside what it measures).
async fn unfinished(store: &PgStore) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM runs WHERE active")
        .fetch_one(store.pool())
        .await
        .expect("count")
}

/// Cumulative counters of the database and of the `runs` table. Backends
/// flush their statistics when they exit, so read these once the pools that
/// did the work are closed.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    commits: f64,
    statements: f64,
    runs_upd: f64,
    runs_hot_upd: f64,
}

async fn counters(store: &PgStore) -> Counters {
    let (commits, statements, runs_upd, runs_hot_upd): (f64, f64, f64, f64) = sqlx::query_as(
        "SELECT (SELECT xact_commit::float8 FROM pg_stat_database WHERE datname = current_database()), \
                (SELECT coalesce(sum(calls), 0)::float8 FROM pg_stat_statements \
                  WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())), \
                (SELECT n_tup_upd::float8 FROM pg_stat_user_tables WHERE relname = 'runs'), \
                (SELECT n_tup_hot_upd::float8 FROM pg_stat_user_tables WHERE relname = 'runs')",
    )
    .fetch_one(store.pool())
    .await
    .expect("counters");
    Counters {
        commits,
        statements,
        runs_upd,
        runs_hot_upd,
    }
}

/// The statements with the most server time since the last reset.
async fn top_statements(store: &PgStore, n: usize) -> Vec<(f64, f64, String)> {
    sqlx::query_as(
        "SELECT calls::float8, total_exec_time, left(regexp_replace(query, '\\s+', ' ', 'g'), 160) \
         FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         ORDER BY total_exec_time DESC LIMIT $1",
    )
    .bind(i64::try_from(n).unwrap_or(i64::MAX))
    .fetch_all(store.pool())
    .await
    .expect("top statements")
}

async fn wal_lsn(store: &PgStore) -> String {
    sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
        .fetch_one(store.pool())
        .await
        .expect("wal lsn")
}

async fn wal_bytes_since(store: &PgStore, lsn: &str) -> f64 {
    sqlx::query_scalar("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
        .bind(lsn)
        .fetch_one(store.pool())
        .await
        .expect("wal diff")
}

/// Runs pgbench and returns its TPS.
fn pgbench(cluster: &PgCluster, args: &[&str]) -> f64 {
    let out = support_pg(cluster, "pgbench")
        .args(args)
        .arg("pgbench")
        .output()
        .expect("run pgbench");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.trim_start_matches("tps = ").split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            panic!(
                "pgbench {args:?} failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// pgbench's single-row update at `rate` transactions/s from one client for
/// `secs`: the latency of each transaction (from its per-transaction log),
/// sorted — the reference for (2)'s latency: one durable commit at the
/// same offered load on the same cluster.
fn pgbench_latencies(cluster: &PgCluster, rate: usize, secs: &str) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("log dir");
    let prefix = dir.path().join("lat");
    let out = support_pg(cluster, "pgbench")
        .args(["-N", "-c", "1", "-R", &rate.to_string(), "-T", secs, "-l"])
        .arg(format!("--log-prefix={}", prefix.display()))
        .arg("pgbench")
        .output()
        .expect("run pgbench -R");
    assert!(
        out.status.success(),
        "pgbench -R failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Each line: client, transaction, latency in µs, ...
    let mut lat = Vec::new();
    for entry in std::fs::read_dir(dir.path())
        .expect("read log dir")
        .flatten()
    {
        let log = std::fs::read_to_string(entry.path()).expect("read pgbench log");
        lat.extend(
            log.lines()
                .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                .map(Duration::from_micros),
        );
    }
    lat.sort();
    lat
}

/// The cluster's `tool` (createdb, pgbench), connected to it as postgres.
fn support_pg(cluster: &PgCluster, tool: &str) -> std::process::Command {
    let mut command = std::process::Command::new(cluster.bin.join(tool));
    command.args([
        "-h",
        "127.0.0.1",
        "-p",
        &cluster.port.to_string(),
        "-U",
        "postgres",
    ]);
    command
}

/// Receivers and messages per receive of the raw queue drain.
const RAW_RECEIVERS: usize = 4;
const RAW_BATCH: usize = 500;

/// (5) the raw queue: `RAW_RECEIVERS` receivers claim `RAW_BATCH` messages
/// at a time from `queue` and ack each batch at once, until `n` messages are
/// acked; the seconds it took. Every message must come out exactly once
/// (leases outlast the drain), or the bench fails.
async fn raw_drain(queue: &flotilla_postgres::PgQueue, name: &str, n: usize) -> f64 {
    // The messages acked so far.
    let seen = Arc::new(std::sync::Mutex::new(
        std::collections::HashSet::with_capacity(n),
    ));
    let acked = |seen: &std::sync::Mutex<std::collections::HashSet<String>>| {
        seen.lock().expect("seen").len()
    };
    let t = Instant::now();
    let mut receivers = tokio::task::JoinSet::new();
    for _ in 0..RAW_RECEIVERS {
        let (queue, seen) = (queue.clone(), seen.clone());
        let queues = vec![name.to_string()];
        receivers.spawn(async move {
            while acked(&seen) < n {
                let got = queue
                    .receive(
                        &queues,
                        RAW_BATCH,
                        Duration::from_secs(600),
                        Duration::from_millis(50),
                    )
                    .await
                    .expect("raw receive");
                if got.is_empty() {
                    continue;
                }
                queue.ack(&got).await.expect("raw ack");
                let mut seen = seen.lock().expect("seen");
                for d in &got {
                    assert!(
                        seen.insert(d.message.run_id.clone()),
                        "raw drain: {} delivered twice",
                        d.message.run_id
                    );
                }
            }
        });
    }
    while let Some(r) = receivers.join_next().await {
        r.expect("raw receiver");
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(acked(&seen), n, "raw drain: every message exactly once");
    secs
}

/// "p50 … ms, p99 … ms" of sorted latencies.
fn p50_p99(sorted: &[Duration]) -> String {
    format!(
        "p50 {:.1} ms, p99 {:.1} ms",
        percentile(sorted, 0.50).as_secs_f64() * 1000.0,
        percentile(sorted, 0.99).as_secs_f64() * 1000.0
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench());
}

async fn bench() {
    let runs = env_usize("FLOTILLA_BENCH_RUNS", 100_000);
    let rate = env_usize("FLOTILLA_BENCH_RATE", 200).max(1);
    let latency_runs = (runs / 10).clamp(100, 3000);
    let pgbench_secs = if runs >= 20_000 { 15 } else { 3 };
    let Some(cluster) = support::private_cluster("pg_bench", &SETTINGS) else {
        return;
    };
    let db = support::create_database(&cluster.url("postgres")).await;
    let store = db
        .store_with(PgOptions {
            max_connections: 16,
            ..Default::default()
        })
        .await;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(store.pool())
        .await
        .expect("pg_stat_statements");
    let def = NewDefinition::new("bench", "img")
        .command("true")
        .into_definition();
    store.create_definition(&def).await.expect("define");

    // (3) bulk enqueue.
    let queue = store.queue();
    let msgs: Vec<Message> = (0..runs)
        .map(|i| Message::new(format!("bulk-{i}"), 1))
        .collect();
    let t = Instant::now();
    for chunk in msgs.chunks(5000) {
        queue.enqueue("bulk", chunk).await.expect("bulk enqueue");
    }
    let bulk_secs = t.elapsed().as_secs_f64();
    let raw_drain_secs = raw_drain(&queue, "bulk", runs).await;

    // (1) dispatch: pre-insert and enqueue, then drain.
    let t = Instant::now();
    let mut ids = Vec::with_capacity(runs);
    let created: Vec<String> = futures::stream::iter(0..runs)
        .map(|i| {
            let store = store.clone();
            let run = new_run(&def.definition_id, &def.alias, i);
            async move {
                let ev = RunEvent {
                    run_id: run.run_id.clone(),
                    at: model::now(),
                    from: None,
                    to: RunStatus::Queued,
                    attempt: 1,
                    reason: None,
                };
                store.create_run(&run, &ev).await.expect("insert run");
                run.run_id
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    ids.extend(created);
    for chunk in ids.chunks(5000) {
        let m: Vec<Message> = chunk.iter().map(|id| Message::new(id.clone(), 1)).collect();
        queue.enqueue("default", &m).await.expect("enqueue");
    }
    let insert_secs = t.elapsed().as_secs_f64();
    sqlx::query("VACUUM ANALYZE")
        .execute(store.pool())
        .await
        .expect("vacuum");
    sqlx::query("SELECT pg_stat_statements_reset()")
        .execute(store.pool())
        .await
        .expect("reset statements");
    // The drain runs on its own pool: closing it afterwards makes its
    // backends flush their statistics, so the counters cover all of (1).
    let drain_store = db
        .store_with(PgOptions {
            max_connections: 16,
            migrate: false,
            ..Default::default()
        })
        .await;
    let lsn = wal_lsn(&store).await;
    let before = counters(&store).await;
    let counts = Counts::default();
    let f = service(&drain_store, &counts);
    let t = Instant::now();
    let handle = f.start();
    // Until every run is submitted, the engine's own count tells progress:
    // a `count(*)` of the unfinished runs every 100 ms would walk the whole
    // queued backlog and compete with what is measured.
    while counts.submitted() < runs {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    while unfinished(&store).await > 0 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_secs = t.elapsed().as_secs_f64();
    handle.shutdown().await;
    drain_store.pool().close().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let wal = wal_bytes_since(&store, &lsn).await;
    let after = counters(&store).await;
    let top = top_statements(&store, env_usize("FLOTILLA_BENCH_STATEMENTS", 0)).await;
    let per_run = |a: f64, b: f64| (a - b) / runs as f64;
    let commits_per_run = per_run(after.commits, before.commits);
    let statements_per_run = per_run(after.statements, before.statements);
    let runs_upd = after.runs_upd - before.runs_upd;
    let runs_hot = after.runs_hot_upd - before.runs_hot_upd;

    // (2) starts, as (1) did, on a vacuumed table: what it measures is a
    // steady load, not autovacuum catching up with (1)'s burst.
    sqlx::query("VACUUM ANALYZE")
        .execute(store.pool())
        .await
        .expect("vacuum");
    // (2) runs on a service of its own on the first pool.
    let f = service(&store, &counts);
    let handle = f.start();

    // (2) pickup latency at a steady offered load, workers running.
    let mut expected_submits = runs;
    let mut executed = Vec::with_capacity(latency_runs);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut pending = Vec::new();
    for _ in 0..latency_runs {
        tick.tick().await;
        let f = f.clone();
        let def_id = def.definition_id.clone();
        pending.push(tokio::spawn(async move {
            let at = Instant::now();
            let run = f
                .execute(&def_id, ExecuteRequest::owned_by("bench"))
                .await
                .expect("execute");
            (run.run_id, at, at.elapsed())
        }));
    }
    let mut execute_lat = Vec::with_capacity(latency_runs);
    for p in pending {
        let (id, at, took) = p.await.expect("join");
        executed.push((id, at));
        execute_lat.push(took);
    }
    execute_lat.sort();
    expected_submits += executed.len();
    let mut lat = Vec::with_capacity(executed.len());
    for (id, at) in &executed {
        loop {
            if let Some(s) = counts.submitted_at(id) {
                lat.push(s.saturating_duration_since(*at));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    lat.sort();
    handle.shutdown().await;
    // Exactly one submit per attempt, over (1) and (2): no attempt twice,
    // none missing.
    let submits = counts.snapshot();
    let twice = submits.values().filter(|c| **c != 1).count();
    let missing = expected_submits.saturating_sub(submits.len());
    let submits_ok = twice == 0 && missing == 0;

    // (4) the physical reference.
    let out = support_pg(&cluster, "createdb")
        .arg("pgbench")
        .output()
        .expect("createdb");
    assert!(out.status.success(), "createdb pgbench failed");
    let out = support_pg(&cluster, "pgbench")
        .args(["-i", "-q", "-s", "10", "pgbench"])
        .output()
        .expect("pgbench -i");
    assert!(
        out.status.success(),
        "pgbench -i failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = pgbench_secs.to_string();
    let select_tps = pgbench(&cluster, &["-S", "-c", "8", "-j", "2", "-T", &secs]);
    let update_tps = pgbench(&cluster, &["-N", "-c", "8", "-j", "2", "-T", &secs]);
    let update_lat = pgbench_latencies(&cluster, rate, &secs);

    println!();
    println!(
        "flotilla-postgres benchmark ({runs} runs, 2-core machine, PostgreSQL throwaway cluster)"
    );
    println!("settings: {}", SETTINGS.join(", "));
    println!("| measure | value |");
    println!("|---|---|");
    println!(
        "| pre-insert {runs} runs (create_run x16 concurrent + bulk enqueue) | {:.0} runs/s |",
        runs as f64 / insert_secs
    );
    println!(
        "| (1) dispatch: drain {runs} queued runs to STOPPED (instant engine) | {:.0} runs/s ({drain_secs:.1} s) |",
        runs as f64 / drain_secs
    );
    println!(
        "| (1)+(2) exactly one submit per attempt | {} |",
        if submits_ok {
            "yes".to_string()
        } else {
            format!("NO: {twice} attempts submitted more than once, {missing} runs never submitted")
        }
    );
    println!(
        "| (2) pickup latency execute → submit at {rate} runs/s ({} runs) | {} |",
        lat.len(),
        p50_p99(&lat)
    );
    println!(
        "| (2) of which execute itself (returns once QUEUED is committed) | {} |",
        p50_p99(&execute_lat)
    );
    println!(
        "| (4) pgbench -N at {rate} TPS, 1 client ({} transactions): latency of one durable update | {} |",
        update_lat.len(),
        p50_p99(&update_lat)
    );
    println!(
        "| (3) bulk enqueue (5000 per statement) | {:.0} messages/s |",
        runs as f64 / bulk_secs
    );
    println!(
        "| (5) raw queue drain: {runs} messages, {RAW_RECEIVERS} receivers × {RAW_BATCH}, claim + ack (goal ≥ 50,000/s) | {:.0} messages/s |",
        runs as f64 / raw_drain_secs
    );
    println!("| (4) pgbench -S (select only, 8 clients, {pgbench_secs} s) | {select_tps:.0} TPS |");
    println!(
        "| (4) pgbench -N (simple update, 8 clients, {pgbench_secs} s) | {update_tps:.0} TPS |"
    );
    let drain_rate = runs as f64 / drain_secs;
    println!(
        "| (1) ÷ (4) life cycle runs/s ÷ pgbench -N TPS (goal ≥ 1.2) | {:.2}× |",
        if update_tps > 0.0 {
            drain_rate / update_tps
        } else {
            0.0
        }
    );
    println!("| (4) commits per run during (1) | {commits_per_run:.2} |");
    println!("| (4) statements per run during (1) | {statements_per_run:.2} |");
    println!(
        "| (4) WAL bytes per run during (1) | {:.0} |",
        wal / runs as f64
    );
    println!(
        "| (4) `runs` updates during (1): HOT / all | {runs_hot:.0} / {runs_upd:.0} ({:.0}%) |",
        if runs_upd > 0.0 {
            100.0 * runs_hot / runs_upd
        } else {
            0.0
        }
    );
    if !top.is_empty() {
        println!();
        println!("statements with the most server time during (1):");
        println!("| calls per run | total ms | statement |");
        println!("|---|---|---|");
        for (calls, ms, text) in &top {
            println!(
                "| {:.2} | {ms:.0} | `{}` |",
                calls / runs as f64,
                text.replace('|', "\\|")
            );
        }
    }
    drop(cluster);
    if !submits_ok {
        eprintln!(
            "pg_bench: FAILED: exactly one submit per attempt does not hold \
             ({twice} attempts submitted more than once, {missing} runs never submitted)"
        );
        std::process::exit(1);
    }
}
