//! The core engine and log source suites against `EcsEngine` and
//! `CloudWatchLogs` on moto.

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_suite_passes_on_moto() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, logs) = common::backend(&endpoint).await;
    let probe = common::probe(&endpoint, engine.clone(), logs);
    flotilla::testkit::engine_suite(engine.as_ref(), &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_source_suite_passes_on_moto() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, logs) = common::backend(&endpoint).await;
    let probe = common::probe(&endpoint, engine.clone(), logs.clone());
    flotilla::testkit::log_source_suite(logs.as_ref(), engine.as_ref(), &probe).await;
}
