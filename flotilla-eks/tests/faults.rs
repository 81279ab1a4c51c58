//! `FaultyEngine` (a deterministic schedule of `Missing` blips,
//! `Unavailable` calls, lost answers and slow calls) around `EksEngine` on
//! the fake API server, through the whole service: every run executes
//! exactly once — counted by the pods the fake's Job controller created per
//! attempt, not by flotilla's own records —, none is lost, and none is
//! declared lost (a retry or `node_lost`/`unknown`) on blips shorter than
//! `missing_grace`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla::service::WorkerConfig;
use flotilla::testkit::{FaultPlan, FaultyEngine};
use flotilla::{
    ExecuteRequest, Flotilla, NewDefinition, RetryPolicy, RunQuery, RunStatus, ServiceConfig,
};
use flotilla_eks::names::{ANNOTATION_RUN_ID, job_name};
use support::{FakeApiServer, engine_on, settings};
use tokio_util::sync::CancellationToken;

const RUNS: usize = 1_000;

/// The fake kubelet: every tick, pending pods start and running pods exit 0
/// (one step per tick, so each run is seen pending, running and stopped).
fn kubelet(server: FakeApiServer, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
            let running = server.jobs_with_pod_in("Running");
            for job in server.jobs_with_pod_in("Pending") {
                server.start_pod(&job);
            }
            for job in running {
                server.finish_pod(&job, 0, "Completed");
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_runs_through_injected_faults_each_run_one_pod() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let faulty = Arc::new(FaultyEngine::new(engine, FaultPlan::spread(11, 10)));
    let f = Flotilla::builder()
        .engine(faulty.clone())
        .config(ServiceConfig {
            retry: RetryPolicy {
                base_backoff: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            workers: WorkerConfig {
                status_poll_interval: Duration::from_millis(200),
                receive_wait: Duration::from_millis(200),
                missing_grace: Duration::from_secs(3),
                submit_concurrency: 32,
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        })
        .build()
        .expect("build");
    let workers = f.start();
    let stop = CancellationToken::new();
    let kubelet = kubelet(server.clone(), stop.clone());
    let def = f
        .define(NewDefinition::new("counted", "busybox:1").command("true"))
        .await
        .expect("define");
    let mut ids = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let run = f
            .execute(&def.definition_id, ExecuteRequest::owned_by("faults"))
            .await
            .expect("execute");
        ids.push(run.run_id);
    }
    let stopped = RunQuery::all(1).with_statuses(&[RunStatus::Stopped]);
    let give_up = tokio::time::Instant::now() + Duration::from_secs(240);
    loop {
        let n = f.list_runs(stopped.clone()).await.expect("list").total;
        if n >= RUNS as u64 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "lost runs: only {n} of {RUNS} stopped; fake API server: {:?}",
            server.counts()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    kubelet.await.expect("kubelet");
    // Every Job the fake holds, by the run it carries (whatever its name).
    let mut jobs_of_run: HashMap<String, usize> = HashMap::new();
    for job in server.jobs() {
        let id = job["metadata"]["annotations"][ANNOTATION_RUN_ID]
            .as_str()
            .unwrap_or_default()
            .to_string();
        *jobs_of_run.entry(id).or_default() += 1;
    }
    for id in &ids {
        let run = f.get_run(id).await.expect("run");
        let events = f.run_events(id).await.expect("events");
        assert_eq!(
            (run.status, run.exit_code, run.attempt, run.failure),
            (RunStatus::Stopped, Some(0), 1, None),
            "declared lost or retried under faults: {run:?} {events:#?}"
        );
        assert_eq!(jobs_of_run.get(id), Some(&1), "run {id}: one Job");
        let job = job_name(id, 1);
        assert_eq!(server.pods_created(&job), 1, "run {id}: attempt 1's pods");
        assert_eq!(
            server.pods_created(&job_name(id, 2)),
            0,
            "run {id}: no second attempt"
        );
    }
    assert_eq!(server.jobs().len(), RUNS, "one Job per run");
    let counts = faulty.counts();
    assert!(
        counts.missing > 0 && counts.lost_submits > 0 && counts.unavailable > 0,
        "the schedule injected every kind of fault: {counts:?}"
    );
    eprintln!("faults injected over {RUNS} runs: {counts:?}");
    workers.shutdown().await;
}
