//! `MemoryStore::list_runs` cost per query shape.
//!
//! Fills a store with runs (default 100 000; `FLOTILLA_BENCH_RUNS=n` to
//! change) spread over statuses, clusters and env values, then prints p50
//! and p99 over repeated calls of each query shape the history API issues.

use std::time::{Duration, Instant};

use benches::{Latency, ms};
use flotilla::memory::MemoryStore;
use flotilla::model::{self, EnvVar, NewDefinition, Run, RunEvent, RunStatus};
use flotilla::{RunQuery, RunSortField, SortOrder, Store};

fn run(i: usize) -> Run {
    let t = model::now() - Duration::from_secs(i as u64);
    let status = match i % 20 {
        0 => RunStatus::Queued,
        1 => RunStatus::Pending,
        2 | 3 => RunStatus::Running,
        _ => RunStatus::Stopped,
    };
    let started = !matches!(status, RunStatus::Queued | RunStatus::Pending);
    let mut def = NewDefinition::new(format!("alias-{}", i % 50), "img")
        .command("true")
        .into_definition();
    def.definition_id = format!("d{}", i % 50);
    def.group_name = "g".into();
    let mut r = Run::queued(
        &def,
        format!("cluster-{}", i % 4),
        "local",
        format!("owner-{}", i % 7),
    );
    r.status = status;
    r.queued_at = Some(t);
    r.started_at = started.then(|| t + Duration::from_millis((i % 997) as u64));
    r.finished_at = (status == RunStatus::Stopped).then(|| t + Duration::from_secs(5));
    r.env = vec![
        EnvVar::new("TEAM", format!("team-{}", i % 10)),
        EnvVar::new("N", i.to_string()),
    ];
    r.updated_at = t;
    r
}

fn started_desc(limit: usize) -> RunQuery {
    RunQuery {
        sort_by: RunSortField::StartedAt,
        order: SortOrder::Desc,
        limit,
        ..Default::default()
    }
}

async fn time(store: &MemoryStore, q: &RunQuery, reps: usize) -> (Latency, u64) {
    let mut samples = Vec::with_capacity(reps);
    let mut total = 0;
    for _ in 0..reps {
        let t0 = Instant::now();
        let p = store.list_runs(q).await.expect("list");
        samples.push(t0.elapsed());
        total = p.total;
    }
    (Latency::of(samples).expect("samples"), total)
}

fn main() {
    let n: usize = std::env::var("FLOTILLA_BENCH_RUNS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100_000);
    let reps: usize = std::env::var("FLOTILLA_BENCH_REPS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = MemoryStore::new();
        let t0 = Instant::now();
        let mut creates = Vec::with_capacity(n);
        for i in 0..n {
            let r = run(i);
            let ev = RunEvent::created(&r);
            let c0 = Instant::now();
            store.create_run(&r, &ev).await.expect("create");
            creates.push(c0.elapsed());
        }
        let fill = t0.elapsed();
        let create = Latency::of(creates).expect("samples");
        println!(
            "MemoryStore::list_runs, {n} runs (filled in {}, {:.0} creates/s), {reps} calls each",
            ms(fill),
            n as f64 / fill.as_secs_f64().max(f64::EPSILON)
        );
        let second_page = {
            let p = store.list_runs(&started_desc(50)).await.expect("list");
            RunQuery {
                cursor: p.next_cursor,
                ..started_desc(50)
            }
        };
        let shapes: Vec<(&str, RunQuery)> = vec![
            ("started_at desc, limit 50", started_desc(50)),
            (
                "started_at desc, limit 50, offset 5000",
                RunQuery {
                    offset: 5000,
                    ..started_desc(50)
                },
            ),
            ("started_at desc, limit 50, cursor page 2", second_page),
            (
                "started_at desc, limit 50, env TEAM=team-3",
                RunQuery {
                    env: vec![EnvVar {
                        name: "TEAM".into(),
                        value: "team-3".into(),
                    }],
                    ..started_desc(50)
                },
            ),
            (
                "started_at desc, limit 50, status RUNNING",
                RunQuery {
                    statuses: vec![RunStatus::Running],
                    ..started_desc(50)
                },
            ),
            (
                "started_at desc, limit 50, status STOPPED",
                RunQuery {
                    statuses: vec![RunStatus::Stopped],
                    ..started_desc(50)
                },
            ),
            (
                "queued_at asc, limit 50, cluster-1",
                RunQuery {
                    sort_by: RunSortField::QueuedAt,
                    order: SortOrder::Asc,
                    clusters: vec!["cluster-1".into()],
                    limit: 50,
                    ..Default::default()
                },
            ),
            (
                "status asc, limit 50",
                RunQuery {
                    sort_by: RunSortField::Status,
                    order: SortOrder::Asc,
                    limit: 50,
                    ..Default::default()
                },
            ),
            ("run_id asc, limit 100 (worker scan)", RunQuery::all(100)),
            (
                "PENDING+RUNNING, run_id asc, limit 100 (status worker)",
                RunQuery::all(100).with_statuses(&[RunStatus::Pending, RunStatus::Running]),
            ),
        ];
        // The slowest create is the one that grew the run map.
        println!(
            "create_run p50 {}, p99 {}, max {}",
            ms(create.p50),
            ms(create.p99),
            ms(create.max)
        );
        println!("| query | total | p50 | p99 |");
        println!("|---|---|---|---|");
        for (name, q) in shapes {
            let (lat, total) = time(&store, &q, reps).await;
            println!("| {name} | {total} | {} | {} |", ms(lat.p50), ms(lat.p99));
        }
    });
}
