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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_logs_page_through_a_long_log_sharing_one_timestamp() {
    use flotilla::LogSource;
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let logs = flotilla_eks::PodLogs::new(&engine);
    let def = flotilla::NewDefinition::new("long", "busybox:1").into_definition();
    let mut run = support::new_run(&def, "default", None);
    let s = flotilla::Engine::submit(&engine, &run, &def)
        .await
        .expect("submit");
    run.engine_ref = Some(s.engine_ref.clone());
    run.status = flotilla::RunStatus::Running;
    server.start_pod(&s.engine_ref);
    let at = chrono::Utc::now();
    let mut text = String::new();
    for i in 0..2000 {
        // Multi-byte characters so byte-limited fetches cut inside one.
        let line = format!("{i:05} ü 🦀 the same instant, over and over");
        server.append_log_at(&s.engine_ref, at, &line);
        text.push_str(&line);
        text.push('\n');
    }
    server.finish_pod(&s.engine_ref, 0, "Completed");
    run.status = flotilla::RunStatus::Stopped;
    let mut cursor: Option<String> = None;
    let mut got = String::new();
    for _ in 0..1000 {
        let c = logs
            .read(&run, cursor.as_deref(), 4000)
            .await
            .expect("read");
        assert!(c.log.len() <= 4000, "page of {}", c.log.len());
        got.push_str(&c.log);
        cursor = c.cursor.or(cursor);
        if c.complete {
            break;
        }
    }
    assert_eq!(got.len(), text.len());
    assert!(got == text, "every line exactly once");
}
