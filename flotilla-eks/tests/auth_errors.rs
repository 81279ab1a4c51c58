//! 401 and 403 from the API server (credentials being refreshed, a quota
//! that frees) are transient: retried with backoff, then reported as a
//! retryable error, never a permanent rejection of the run.

mod support;

use std::sync::Arc;
use std::time::Duration;

use flotilla::service::WorkerConfig;
use flotilla::{
    Engine, ErrorKind, ExecuteRequest, Flotilla, NewDefinition, RetryPolicy, RunStatus,
    ServiceConfig,
};
use flotilla_eks::names::job_name;
use support::{FakeApiServer, engine_on, new_run, settings, wait_run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_retried_then_transient_never_permanent() {
    let server = FakeApiServer::start().await;
    let s = settings();
    let attempts = s.api_attempts;
    let engine = engine_on(&[("default", &server)], s);
    let def = NewDefinition::new("auth", "busybox:1").into_definition();
    let run = new_run(&def, "default", None);
    for code in [401u16, 403] {
        let before = server.count("create jobs");
        server.fail_next(
            "create jobs",
            &vec![code; usize::try_from(attempts).expect("small")],
        );
        let err = engine
            .submit(&run, &def)
            .await
            .expect_err("every attempt was refused");
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{code}: {err}");
        assert!(err.is_retryable(), "{code}: {err}");
        assert_eq!(
            server.count("create jobs") - before,
            u64::from(attempts),
            "{code}: retried up to api_attempts"
        );
    }
    assert!(server.job(&job_name(&run.run_id, 1)).is_none());
    // A refusal shorter than the retries is not even seen by the caller.
    server.fail_next("create jobs", &[401]);
    let ok = engine.submit(&run, &def).await.expect("retried past a 401");
    assert_eq!(server.pods_created(&ok.engine_ref), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_submitted_during_a_credential_refresh_starts_once() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let f = Flotilla::builder()
        .engine(Arc::new(engine.clone()))
        .config(ServiceConfig {
            retry: RetryPolicy {
                base_backoff: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            workers: WorkerConfig {
                status_poll_interval: Duration::from_millis(200),
                receive_wait: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        })
        .build()
        .expect("build");
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("refresh", "busybox:1").command("true"))
        .await
        .expect("define");
    // More refusals than one submit retries: the submit worker must come
    // back to it, not stop the run.
    server.fail_next("create jobs", &[401, 403, 401, 403, 401, 403, 401]);
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
    let events = f.run_events(&run.run_id).await.expect("events");
    assert!(done.succeeded(), "not rejected: {done:?} {events:#?}");
    assert_eq!(done.attempt, 1);
    assert_eq!(server.pods_created(&job), 1, "one pod");
    assert_eq!(server.count("create jobs"), 8, "seven refusals, one create");
    handle.shutdown().await;
}
