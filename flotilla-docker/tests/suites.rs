//! The core engine and log-source conformance suites on a real dockerd.

mod common;

use flotilla::testkit::{engine_suite, log_source_suite};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_meets_the_engine_contract() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fsuite{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;
    let probe = common::probe(&engine, &image, &prefix);
    engine_suite(&engine, &probe).await;
    common::remove_all(engine.docker(), &prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_logs_meet_the_log_source_contract() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("flogs{}", common::token());
    let engine = common::engine(&host, dir.path(), &prefix).await;
    let probe = common::probe(&engine, &image, &prefix);
    let logs = engine.log_source();
    log_source_suite(&logs, &engine, &probe).await;
    common::remove_all(engine.docker(), &prefix).await;
}
