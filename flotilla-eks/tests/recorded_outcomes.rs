//! The cluster may forget a finished Job only after flotilla recorded its
//! outcome: flotilla deletes recorded Jobs itself, and the Jobs' TTL (run by
//! the fake API server's TTL-after-finished controller) is a long backstop,
//! so a flotilla that is down for longer than the old one-hour TTL still
//! records the real exit code and runs nothing again.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla::memory::{MemoryQueue, MemoryStore};
use flotilla::service::WorkerConfig;
use flotilla::{
    ExecuteRequest, FailureCategory, Flotilla, NewDefinition, Queue, RetryPolicy, RunStatus,
    ServiceConfig, Store,
};
use flotilla_eks::names::job_name;
use flotilla_eks::{EksEngine, JOB_TTL_FLOOR_SECONDS};
use support::{FakeApiServer, engine_on, settings, wait_run};

fn config() -> ServiceConfig {
    ServiceConfig {
        default_cluster: "default".into(),
        clusters: vec!["default".into()],
        retry: RetryPolicy {
            base_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        },
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(200),
            receive_wait: Duration::from_millis(200),
            // A run the engine does not know is lost quickly: the old
            // behaviour (TTL forgot the Job) shows as a retry at once.
            missing_grace: Duration::from_millis(300),
            lease_ttl: Duration::from_secs(2),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    }
}

fn service(store: &Arc<MemoryStore>, queue: &Arc<MemoryQueue>, engine: &EksEngine) -> Flotilla {
    Flotilla::builder()
        .store(store.clone() as Arc<dyn Store>)
        .queue(queue.clone() as Arc<dyn Queue>)
        .engine(Arc::new(engine.clone()))
        .config(config())
        .build()
        .expect("build")
}

/// Requests flotilla made (the TTL controller's own deletions left out).
fn requests(server: &FakeApiServer) -> BTreeMap<String, u64> {
    let mut counts = server.counts();
    counts.remove("ttl-delete jobs");
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_finished_while_flotilla_was_down_for_hours_keeps_its_exit_code() {
    let server = FakeApiServer::start().await;
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let first = engine_on(&[("default", &server)], settings());
    let f = service(&store, &queue, &first);
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("down-for-hours", "busybox:1").command("exit 3"))
        .await
        .expect("define");
    let run = f
        .execute(&def.definition_id, ExecuteRequest::owned_by("e2e"))
        .await
        .expect("execute");
    let job = job_name(&run.run_id, 1);
    server.wait_for_job(&job).await;
    server.start_pod(&job);
    wait_run(&f, &run.run_id, "RUNNING", |r| {
        r.status == RunStatus::Running
    })
    .await;
    let ttl = server.job(&job).expect("job")["spec"]["ttlSecondsAfterFinished"]
        .as_i64()
        .expect("a TTL");
    assert!(ttl >= i64::from(JOB_TTL_FLOOR_SECONDS), "TTL {ttl}");

    // flotilla goes down (nothing watches or polls the cluster); the job
    // ends; two hours pass on the cluster.
    handle.shutdown().await;
    drop(f);
    drop(first);
    server.wait_unwatched().await;
    let asked = requests(&server);
    server.finish_pod(&job, 3, "Error");
    server.advance_clock(Duration::from_secs(2 * 3600));
    assert!(
        server.job(&job).is_some(),
        "the TTL forgot the Job before flotilla recorded it"
    );
    assert_eq!(
        requests(&server),
        asked,
        "flotilla asked nothing while down"
    );

    // flotilla comes back with a fresh engine (an empty cache).
    let second = engine_on(&[("default", &server)], settings());
    let f = service(&store, &queue, &second);
    let handle = f.start();
    let done = wait_run(&f, &run.run_id, "STOPPED or a new attempt", |r| {
        r.status == RunStatus::Stopped || r.attempt > 1
    })
    .await;
    let events = f.run_events(&run.run_id).await.expect("events");
    assert_eq!(done.attempt, 1, "nothing runs again: {events:#?}");
    assert_eq!(done.status, RunStatus::Stopped);
    assert_eq!(done.exit_code, Some(3), "the real exit code: {done:?}");
    assert_eq!(done.failure, Some(FailureCategory::AppExit));
    assert_eq!(server.pods_created(&job_name(&run.run_id, 2)), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_job_is_deleted_by_flotilla_not_left_to_its_ttl() {
    let server = FakeApiServer::start().await;
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let engine = engine_on(&[("default", &server)], settings());
    engine.set_job_retention(Duration::ZERO);
    let f = service(&store, &queue, &engine);
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("deleted-after", "busybox:1").command("true"))
        .await
        .expect("define");
    let run = f
        .execute(&def.definition_id, ExecuteRequest::owned_by("e2e"))
        .await
        .expect("execute");
    let job = job_name(&run.run_id, 1);
    server.wait_for_job(&job).await;
    server.start_pod(&job);
    server.finish_pod(&job, 0, "Completed");
    let done = wait_run(&f, &run.run_id, "STOPPED", |r| {
        r.status == RunStatus::Stopped
    })
    .await;
    assert!(done.succeeded(), "{done:?}");
    let give_up = tokio::time::Instant::now() + Duration::from_secs(10);
    while server.job(&job).is_some() {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the recorded Job was never deleted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(server.pods_of(&job).is_empty(), "its pods go with it");
    assert_eq!(server.count("delete jobs"), 1);
    assert_eq!(server.count("ttl-delete jobs"), 0);
    // The deletion changes nothing that was recorded.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = f.get_run(&run.run_id).await.expect("run");
    assert_eq!(after.status, RunStatus::Stopped);
    assert_eq!(after.exit_code, Some(0));
    assert_eq!(after.failure, None);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fake_ttl_controller_deletes_finished_jobs_like_the_real_one() {
    let server = FakeApiServer::start().await;
    let client = server.client();
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(client, "flotilla");
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "ttl-probe", "labels": {"app.kubernetes.io/managed-by": "flotilla"}},
        "spec": {"ttlSecondsAfterFinished": 60, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox:1"}]}}}
    }))
    .expect("job");
    jobs.create(&Default::default(), &job)
        .await
        .expect("create");
    server.start_pod("ttl-probe");
    server.advance_clock(Duration::from_secs(3600));
    assert!(
        server.job("ttl-probe").is_some(),
        "a running Job has no TTL"
    );
    server.finish_pod("ttl-probe", 0, "Completed");
    server.advance_clock(Duration::from_secs(59));
    assert!(server.job("ttl-probe").is_some(), "not yet");
    server.advance_clock(Duration::from_secs(1));
    assert!(server.job("ttl-probe").is_none(), "deleted after its TTL");
    assert!(server.pods_of("ttl-probe").is_empty(), "with its pods");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flotilla_down_longer_than_the_job_ttl_keeps_final_states_and_runs_nothing_again() {
    let server = FakeApiServer::start().await;
    let store = Arc::new(MemoryStore::new());
    let queue = Arc::new(MemoryQueue::new());
    let first = engine_on(&[("default", &server)], settings());
    let f = service(&store, &queue, &first);
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("down-for-a-week", "busybox:1").command("work"))
        .await
        .expect("define");
    let mut runs = Vec::new();
    for _ in 0..3 {
        let run = f
            .execute(&def.definition_id, ExecuteRequest::owned_by("e2e"))
            .await
            .expect("execute");
        let job = job_name(&run.run_id, 1);
        server.wait_for_job(&job).await;
        server.start_pod(&job);
        wait_run(&f, &run.run_id, "RUNNING", |r| {
            r.status == RunStatus::Running
        })
        .await;
        runs.push((run.run_id, job));
    }
    let [
        (recorded, recorded_job),
        (finished, finished_job),
        (running, running_job),
    ] = <[(String, String); 3]>::try_from(runs).expect("three runs");
    // One outcome is recorded before the outage.
    server.finish_pod(&recorded_job, 3, "Error");
    wait_run(&f, &recorded, "STOPPED", |r| r.status == RunStatus::Stopped).await;

    // flotilla goes down: no watch, no poll, no request of any kind.
    handle.shutdown().await;
    drop(f);
    drop(first);
    server.wait_unwatched().await;
    let asked = requests(&server);
    // A run finishes during the outage, which lasts longer than the Jobs'
    // TTL: the cluster deletes both finished Jobs, one of them unrecorded.
    server.finish_pod(&finished_job, 0, "Completed");
    server.advance_clock(Duration::from_secs(
        u64::from(JOB_TTL_FLOOR_SECONDS.unsigned_abs()) + 86_400,
    ));
    assert!(server.job(&recorded_job).is_none(), "TTL-deleted");
    assert!(server.job(&finished_job).is_none(), "TTL-deleted");
    assert!(
        server.job(&running_job).is_some(),
        "a running Job has no TTL"
    );
    assert_eq!(server.count("ttl-delete jobs"), 2);
    assert_eq!(
        requests(&server),
        asked,
        "flotilla asked nothing while down"
    );

    // flotilla comes back with a fresh engine (an empty cache).
    let second = engine_on(&[("default", &server)], settings());
    let f = service(&store, &queue, &second);
    let handle = f.start();
    let lost = wait_run(&f, &finished, "STOPPED or a new attempt", |r| {
        r.status == RunStatus::Stopped || r.attempt > 1
    })
    .await;
    let events = f.run_events(&finished).await.expect("events");
    assert_eq!(lost.attempt, 1, "nothing runs again: {events:#?}");
    assert_eq!(lost.status, RunStatus::Stopped);
    assert_eq!(
        lost.failure,
        Some(FailureCategory::Unknown),
        "a fate the cluster forgot is unknown, not a failure to retry: {lost:?}"
    );
    // The running one carries on and ends with its real exit code.
    server.finish_pod(&running_job, 0, "Completed");
    let done = wait_run(&f, &running, "STOPPED", |r| r.status == RunStatus::Stopped).await;
    assert_eq!((done.attempt, done.exit_code), (1, Some(0)), "{done:?}");
    // The outcome recorded before the outage is kept.
    let kept = f.get_run(&recorded).await.expect("run");
    assert_eq!(
        (kept.status, kept.attempt, kept.exit_code, kept.failure),
        (
            RunStatus::Stopped,
            1,
            Some(3),
            Some(FailureCategory::AppExit)
        ),
        "{kept:?}"
    );
    for (id, job) in [
        (&recorded, &recorded_job),
        (&finished, &finished_job),
        (&running, &running_job),
    ] {
        assert_eq!(server.pods_created(job), 1, "{id}: one pod");
        assert_eq!(server.pods_created(&job_name(id, 2)), 0, "{id}: no retry");
    }
    handle.shutdown().await;
}
