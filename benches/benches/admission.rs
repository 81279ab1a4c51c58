//! Admission: how fast the submit worker decides which waiting run goes
//! next, and how soon a run is submitted once capacity frees.
//!
//! 1. **Decisions** on flotilla's own admission state
//!    (`flotilla::service::Admission`): `FLOTILLA_BENCH_SIZES` queued runs
//!    (default 100,000) across `FLOTILLA_BENCH_OWNERS` owners (default 100),
//!    priorities 0–2, on a cluster of 10 runs; each decision is one run
//!    stopping (`observe`) and the next one admitted (`admit`), in the fair
//!    order. Beside it, in the same process and on the same runs, two
//!    yardsticks: the same fair order by re-sorting the whole queue per
//!    decision (naive), and a plain `BinaryHeap` pop (priority only, no
//!    fairness: the cheapest possible order).
//! 2. **Freed → submitted** on the real service (in-memory store and queue,
//!    an in-process engine whose runs run until the benchmark ends them):
//!    `FLOTILLA_BENCH_RUNS` runs (default 2,000) across the owners on a
//!    cluster of 1 and of 8 runs; the time from a run's stop being pushed by
//!    its engine to the next run's submit reaching the engine.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{Latency, StepEngine, ms, peak_rss_mib, us};
use flotilla::service::{Admission, ServiceConfig, WorkerConfig};
use flotilla::{
    Capacity, Cluster, Definition, Delivery, ExecuteRequest, Flotilla, Message, NewDefinition, Run,
    RunStatus,
};

/// Runs at once on the cluster of the decision benchmark.
const SLOTS: u32 = 10;
/// Decisions timed for the naive re-sort (each one sorts the whole queue).
const NAIVE_DECISIONS: usize = 200;

fn env_list(name: &str, default: &[usize]) -> Vec<usize> {
    std::env::var(name)
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| default.to_vec())
}

fn owner(i: usize, owners: usize) -> String {
    format!("owner-{:03}", i % owners.max(1))
}

fn queued(def: &Definition, n: usize, owners: usize) -> Vec<Run> {
    (0..n)
        .map(|i| {
            let mut r = Run::queued(def, "bench", "step", owner(i, owners));
            r.priority = (i % 3) as i32;
            r
        })
        .collect()
}

fn delivery(r: &Run) -> Delivery {
    Delivery {
        queue: r.cluster.clone(),
        message: Message::new(r.run_id.clone(), 1),
        receipt: r.run_id.clone(),
        delivery_count: 1,
        claimed: None,
    }
}

fn stopped(mut r: Run) -> Run {
    r.status = RunStatus::Stopped;
    r
}

/// flotilla's admission: decisions per second and per-decision latency.
fn decisions(runs: &[Run]) -> (f64, Latency, usize) {
    let a = Admission::default();
    let t0 = Instant::now();
    for r in runs {
        a.offer(r.clone(), delivery(r), Capacity::runs(SLOTS));
    }
    let offered = t0.elapsed();
    println!(
        "  offer: {} runs held in {} ({:.0}/s), peak RSS {:.0} MiB",
        runs.len(),
        ms(offered),
        runs.len() as f64 / offered.as_secs_f64(),
        peak_rss_mib().unwrap_or(0.0)
    );
    let probe = &runs[runs.len() - 1];
    let t = Instant::now();
    let position = a.waiting(probe).map(|w| w.position).unwrap_or(0);
    println!(
        "  position of the last queued run ({position} of {}): {}",
        runs.len(),
        ms(t.elapsed())
    );
    let mut active: VecDeque<Run> = a.admit().into_iter().map(|x| x.run).collect();
    let mut samples = Vec::with_capacity(runs.len());
    let start = Instant::now();
    while let Some(done) = active.pop_front() {
        let t = Instant::now();
        a.observe(&stopped(done));
        let next = a.admit();
        samples.push(t.elapsed());
        active.extend(next.into_iter().map(|x| x.run));
    }
    let total = start.elapsed();
    let n = samples.len();
    let lat = Latency::of(samples).unwrap_or(Latency {
        p50: Duration::ZERO,
        p99: Duration::ZERO,
        max: Duration::ZERO,
    });
    (n as f64 / total.as_secs_f64(), lat, n)
}

/// The same fair order (fewest active per owner, then served longest ago,
/// then priority and queue order) by sorting the whole queue per decision.
fn naive(runs: &[Run]) -> f64 {
    let mut queue: Vec<(&str, i32, usize)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.owner.as_str(), r.priority, i))
        .collect();
    let mut active: HashMap<&str, u32> = HashMap::new();
    let mut served: HashMap<&str, u64> = HashMap::new();
    let mut running: VecDeque<&str> = VecDeque::new();
    let mut tick = 0u64;
    let start = Instant::now();
    let mut n = 0;
    while n < NAIVE_DECISIONS.min(runs.len()) {
        if running.len() >= SLOTS as usize
            && let Some(o) = running.pop_front()
            && let Some(c) = active.get_mut(o)
        {
            *c -= 1;
        }
        queue.sort_by_cached_key(|(o, p, i)| {
            (
                active.get(o).copied().unwrap_or(0),
                served.get(o).copied().unwrap_or(0),
                *o,
                Reverse(*p),
                *i,
            )
        });
        let (o, _, _) = queue.remove(0);
        tick += 1;
        *active.entry(o).or_default() += 1;
        served.insert(o, tick);
        running.push_back(o);
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Priority and queue order only, from one heap: no fairness at all.
fn heap(runs: &[Run]) -> f64 {
    let mut heap: BinaryHeap<(i32, Reverse<usize>)> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.priority, Reverse(i)))
        .collect();
    let start = Instant::now();
    let mut n = 0usize;
    while heap.pop().is_some() {
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn definition() -> Definition {
    Flotilla::builder()
        .engine(Arc::new(StepEngine::new().0))
        .build()
        .expect("build")
        .define(NewDefinition::new("bench", "img").command("true"))
        .await
        .expect("define")
}

/// Runs `n` runs (across `owners`) on a cluster of `slots`, ending one at a
/// time: the latency from each end to the next submit.
async fn freed_to_submitted(n: usize, owners: usize, slots: u32) -> Latency {
    let (engine, mut submits) = StepEngine::new();
    let engine = Arc::new(engine);
    let config = ServiceConfig {
        default_cluster: "bench".into(),
        workers: WorkerConfig {
            receive_wait: Duration::from_secs(1),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let f = Flotilla::builder()
        .engine(engine.clone())
        .config(config)
        .build()
        .expect("build");
    let mut cluster = Cluster::new("bench");
    cluster.capacity = Some(Capacity::runs(slots));
    f.put_cluster(cluster).await.expect("cluster");
    let def = f
        .define(NewDefinition::new("freed", "img").command("true"))
        .await
        .expect("define");
    for i in 0..n {
        f.execute(
            &def.definition_id,
            ExecuteRequest::owned_by(owner(i, owners)),
        )
        .await
        .expect("execute");
    }
    let handle = f.start();
    let mut running: VecDeque<Run> = VecDeque::new();
    let mut samples = Vec::with_capacity(n);
    let mut freed_at: Option<Instant> = None;
    let mut seen = 0;
    while seen < n {
        let (run, at) = submits.recv().await.expect("engine alive");
        seen += 1;
        if let Some(t) = freed_at.take() {
            samples.push(at.duration_since(t));
        }
        running.push_back(run);
        if running.len() >= slots as usize || seen == n {
            // Full (or the last submitted): free one slot.
            if let Some(done) = running.pop_front() {
                freed_at = Some(Instant::now());
                engine.finish(&done);
            }
        }
    }
    for r in running {
        engine.finish(&r);
    }
    handle.shutdown().await;
    Latency::of(samples).expect("samples")
}

fn main() {
    let sizes = env_list("FLOTILLA_BENCH_SIZES", &[100_000]);
    let owners = env_list("FLOTILLA_BENCH_OWNERS", &[100])[0];
    let freed_runs = env_list("FLOTILLA_BENCH_RUNS", &[2_000])[0];
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let def = rt.block_on(definition());
    println!(
        "admission decisions, {owners} owners, cluster of {SLOTS} runs ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    for n in sizes {
        let runs = queued(&def, n, owners);
        println!("{n} queued runs:");
        let (rate, lat, count) = decisions(&runs);
        let naive = naive(&runs);
        let heap = heap(&runs);
        println!("| order                           | decisions/s | p50        | p99        |");
        println!("|---------------------------------|-------------|------------|------------|");
        println!(
            "| flotilla (fair, {count:>6} decisions) | {rate:>11.0} | {:>10} | {:>10} |",
            us(lat.p50),
            us(lat.p99)
        );
        println!("| naive re-sort per decision      | {naive:>11.0} |            |            |");
        println!("| BinaryHeap pop (no fairness)    | {heap:>11.0} |            |            |");
        println!("  peak RSS {:.0} MiB", peak_rss_mib().unwrap_or(0.0));
    }
    println!();
    println!(
        "freed → submitted on the service (in-memory store and queue), {freed_runs} runs, {owners} owners"
    );
    println!("| cluster | p50        | p99        | max        |");
    println!("|---------|------------|------------|------------|");
    for slots in [1, 8] {
        let lat = rt.block_on(freed_to_submitted(freed_runs, owners, slots));
        println!(
            "| {slots:>2} runs | {:>10} | {:>10} | {:>10} |",
            ms(lat.p50),
            ms(lat.p99),
            ms(lat.max)
        );
    }
}
