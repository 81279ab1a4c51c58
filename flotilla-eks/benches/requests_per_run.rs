//! Kubernetes API requests per run, counted at the fake API server, for
//! `FLOTILLA_BENCH_RUNS` runs (default 1,000) through `flotilla::Flotilla`
//! with `EksEngine`: one Job create per attempt, and no per-run polling
//! while the watches are healthy. Printed next to the request pattern of
//! flotilla-os (a GET of the Job and a LIST of its pods per run per status
//! poll).
//!
//! `cargo bench -p flotilla-eks --bench requests_per_run`, or in a debug
//! build `cargo test -p flotilla-eks --bench requests_per_run` (counts do
//! not depend on the build).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flotilla::service::WorkerConfig;
use flotilla::{ExecuteRequest, Flotilla, NewDefinition, RunQuery, RunStatus, ServiceConfig};
use flotilla_eks::PodLogs;
use support::{FakeApiServer, engine_on, settings};

fn main() {
    let runs: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(bench(runs));
}

async fn bench(runs: usize) {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let poll = Duration::from_secs(1);
    let f = Flotilla::builder()
        .engine(Arc::new(engine.clone()))
        .log_source("eks", Arc::new(PodLogs::new(&engine)))
        .config(ServiceConfig {
            workers: WorkerConfig {
                status_poll_interval: poll,
                receive_wait: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        })
        .build()
        .expect("build");
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("bench", "busybox:1").command("echo hi"))
        .await
        .expect("define");

    // The fake kubelet: every new Job's pod runs a while, logs, and exits 0.
    let kubelet = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut seen: HashSet<String> = HashSet::new();
            let mut running: Vec<(String, Instant)> = Vec::new();
            loop {
                for j in server.jobs() {
                    let name = j["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if seen.insert(name.clone()) {
                        server.start_pod(&name);
                        server.append_log(&name, "hello from the bench");
                        running.push((name, Instant::now()));
                    }
                }
                let (done, still): (Vec<_>, Vec<_>) = running
                    .into_iter()
                    .partition(|(_, at)| at.elapsed() >= Duration::from_secs(2));
                running = still;
                for (name, _) in done {
                    server.finish_pod(&name, 0, "Completed");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };

    let started = Instant::now();
    let mut ids = Vec::with_capacity(runs);
    for _ in 0..runs {
        let r = f
            .execute(&def.definition_id, ExecuteRequest::owned_by("bench"))
            .await
            .expect("execute");
        ids.push(r.run_id);
    }
    loop {
        let page = f
            .list_runs(RunQuery::all(1).with_statuses(&[RunStatus::Stopped]))
            .await
            .expect("list");
        if page.total as usize >= runs {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "only {} of {runs} runs stopped in 10 minutes",
            page.total
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let elapsed = started.elapsed();
    kubelet.abort();
    let mut ok = 0;
    let mut lifetime = Duration::ZERO;
    for id in &ids {
        let r = f.get_run(id).await.expect("run");
        if r.succeeded() {
            ok += 1;
        }
        if let (Some(q), Some(e)) = (r.queued_at, r.finished_at) {
            lifetime += (e - q).to_std().unwrap_or_default();
        }
    }
    handle.shutdown().await;
    let counts = server.counts();
    let total: u64 = counts.values().sum();
    let n = runs as f64;
    let mean_life = lifetime.as_secs_f64() / n;
    println!(
        "flotilla-eks: Kubernetes API requests for {runs} runs ({ok} succeeded) in {elapsed:.1?}"
    );
    for (k, v) in &counts {
        println!("  {k:<14} {v:>8}  ({:.3} per run)", *v as f64 / n);
    }
    println!(
        "  {:<14} {total:>8}  ({:.3} per run)",
        "total",
        total as f64 / n
    );
    println!(
        "  status poll interval {poll:?}, mean run life {mean_life:.1} s: flotilla-os's per-run \
         GET Job + LIST pods each poll would be ~{:.1} requests per run (plus one create)",
        2.0 * mean_life / poll.as_secs_f64()
    );
    assert_eq!(ok, runs, "every run succeeds");
    assert_eq!(
        counts.get("create jobs").copied().unwrap_or(0),
        runs as u64,
        "one Job create per attempt"
    );
}
