//! `PodLogs` refuses or confines cursors a client forged, over the fake API
//! server on a real 127.0.0.1 socket: offsets inside UTF-8 characters, out
//! of range numbers and garbage never panic and never read text that is not
//! the run's.

mod support;

use flotilla::testkit::logs::{cursor_variants, forged_cursors_are_refused_or_confined};
use flotilla::{Engine, LogSource, RunStatus};
use support::{FakeApiServer, engine_on, settings};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_pod_log_cursors_are_refused_or_stay_in_the_run() {
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let logs = flotilla_eks::PodLogs::new(&engine);
    let def = flotilla::NewDefinition::new("cursors", "busybox:1").into_definition();
    let mut run = support::new_run(&def, "default", None);
    let s = engine.submit(&run, &def).await.expect("submit");
    run.engine_ref = Some(s.engine_ref.clone());
    run.status = RunStatus::Running;
    server.start_pod(&s.engine_ref);
    let mut text = String::new();
    for i in 0..6 {
        let line = format!("{i}: grüße 日本語 🦀🚀");
        server.append_log(&s.engine_ref, &line);
        text.push_str(&line);
        text.push('\n');
    }
    server.finish_pod(&s.engine_ref, 0, "Completed");
    run.status = RunStatus::Stopped;

    // Every cursor a reader sees, in pages that end inside lines.
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    let mut got = String::new();
    for _ in 0..200 {
        let c = logs.read(&run, cursor.as_deref(), 9).await.expect("read");
        got.push_str(&c.log);
        if let Some(next) = &c.cursor {
            cursors.push(next.clone());
        }
        cursor = c.cursor.or(cursor);
        if c.complete {
            break;
        }
    }
    assert_eq!(got, text, "the honest read");

    let forged: Vec<String> = cursors
        .iter()
        .step_by(3)
        .flat_map(|c| cursor_variants(c))
        .collect();
    assert!(forged.len() > 100, "{} forged cursors", forged.len());
    forged_cursors_are_refused_or_confined(&logs, &run, &forged, 7, &|page: &str| {
        text.contains(page)
    })
    .await;
}
