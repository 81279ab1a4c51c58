//! Adaptive resource allocation end to end on a real dockerd: a job that
//! needs about 40 MiB, defined with 16, is OOM-killed, retried by the
//! service with more memory (factor and cap from the retry settings) and
//! succeeds — counted in containers the daemon ran, not only in flotilla's
//! records.

mod common;

use std::sync::Arc;
use std::time::Duration;

use flotilla::model::NewDefinition;
use flotilla::service::WorkerConfig;
use flotilla::{ExecuteRequest, Flotilla, RetryPolicy, RunStatus, ServiceConfig};

/// Needs about 40 MiB (a shell variable of 40 MiB).
const NEEDS_40_MIB: &str = "x=$(head -c 41943040 /dev/zero | tr '\\0' a); echo ${#x}";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_killed_job_is_retried_with_more_memory_and_succeeds() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fadapt{}", common::token());
    // Keep finished containers so the attempts the daemon ran are counted.
    let engine = flotilla_docker::DockerEngine::connect(
        common::config(&host, dir.path(), &prefix).remove_finished(false),
    )
    .await
    .expect("connect");
    let docker = engine.docker().clone();
    let cfg = ServiceConfig {
        retry: RetryPolicy {
            base_backoff: Duration::from_millis(50),
            oom_memory_factor: 8.0,
            oom_memory_cap_mib: 256,
            ..RetryPolicy::default()
        },
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(200),
            receive_wait: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let f = Flotilla::builder()
        .config(cfg)
        .engine(Arc::new(engine))
        .build()
        .expect("service");
    let workers = f.start();
    let mut new =
        NewDefinition::new(format!("adaptive-{}", common::token()), image).command(NEEDS_40_MIB);
    new.memory = Some(16);
    new.adaptive_resource_allocation = true;
    let def = f.define(new).await.expect("define");
    let run = f
        .execute(&def.definition_id, ExecuteRequest::owned_by("me"))
        .await
        .expect("execute");
    let done = f
        .wait_for_stop(&run.run_id, Duration::from_secs(120))
        .await
        .expect("stops");
    assert_eq!(done.status, RunStatus::Stopped);
    assert_eq!(done.exit_code, Some(0), "{done:?}");
    assert_eq!(done.attempt, 2, "one OOM kill, then success: {done:?}");
    assert_eq!(
        done.memory,
        Some(128),
        "16 MiB grown by 8, within the 256 MiB cap"
    );
    let events = f.run_events(&run.run_id).await.expect("events");
    assert!(
        events.iter().any(|e| e.to == RunStatus::NeedsRetry
            && e.attempt == 1
            && e.reason.as_deref().is_some_and(|r| r.contains("OOMKilled"))),
        "the first attempt ended oom: {events:?}"
    );
    // What the daemon ran: attempt 1 killed at 16 MiB, attempt 2 exited 0
    // with a 128 MiB limit; nothing else.
    for (attempt, limit_mib, code) in [(1, 16, 137), (2, 128, 0)] {
        let name = format!("{prefix}-{}-a{attempt}", run.run_id);
        let c = docker
            .inspect_container(&name, None)
            .await
            .expect("inspect");
        let limit = c.host_config.and_then(|h| h.memory).unwrap_or_default();
        assert_eq!(limit, limit_mib * 1024 * 1024, "{name}");
        assert_eq!(c.state.and_then(|s| s.exit_code), Some(code), "{name}");
    }
    assert_eq!(
        common::containers(&docker, &prefix, &run.run_id, 3)
            .await
            .expect("count"),
        0,
        "no third attempt"
    );
    workers.shutdown().await;
    common::remove_all(&docker, &prefix).await;
}
