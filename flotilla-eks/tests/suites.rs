//! The core conformance suites against `EksEngine` and `PodLogs`, over the
//! fake API server on a real 127.0.0.1 socket.

mod support;

use support::{FakeApiServer, engine_on, probe, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_suite_passes() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let probe = probe(&server, "default");
    flotilla::testkit::engine_suite(&engine, &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_pass_the_log_source_suite() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let logs = flotilla_eks::PodLogs::new(&engine);
    let probe = probe(&server, "default");
    flotilla::testkit::log_source_suite(&logs, &engine, &probe).await;
}
