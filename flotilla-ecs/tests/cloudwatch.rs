//! CloudWatch Logs on moto, whose wrapper answers time gaps in a stream with
//! empty pages as AWS does (`test-support/moto/moto_server.py`).

mod common;

use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use flotilla::{LogSource, NewDefinition, Run, RunStatus};
use flotilla_ecs::CloudWatchLogs;

/// A STOPPED run, settled long ago, whose stream is `task`'s.
fn stopped_run(logs: &CloudWatchLogs, task: &str) -> Run {
    let mut n = NewDefinition::new(format!("cw-{}", common::token()), "busybox:latest");
    n.memory = Some(64);
    let def = n.into_definition();
    let mut run = common::run_of(&def, "c", "ecs");
    run.status = RunStatus::Stopped;
    run.engine_ref = Some(format!("arn:aws:ecs:us-east-1:123456789012:task/c/{task}"));
    run.finished_at = Some(chrono::Utc::now() - chrono::Duration::hours(1));
    assert!(logs.stream_of(&run).is_some());
    run
}

/// Writes one event per `(timestamp ms, message)` into the run's stream.
async fn write_events(logs: &CloudWatchLogs, run: &Run, events: &[(i64, String)]) {
    let (group, stream) = logs.stream_of(run).expect("stream");
    logs.client()
        .create_log_stream()
        .log_group_name(&group)
        .log_stream_name(&stream)
        .send()
        .await
        .expect("create stream");
    let mut req = logs
        .client()
        .put_log_events()
        .log_group_name(&group)
        .log_stream_name(&stream);
    for (ts, msg) in events {
        req = req.log_events(
            InputLogEvent::builder()
                .timestamp(*ts)
                .message(msg)
                .build()
                .expect("event"),
        );
    }
    req.send().await.expect("put events");
}

/// Reads from the head until `complete` (at most `reads` reads): the text
/// and how many reads it took.
async fn read_all(logs: &CloudWatchLogs, run: &Run, max: usize, reads: usize) -> (String, bool) {
    let mut text = String::new();
    let mut cursor: Option<String> = None;
    for _ in 0..reads {
        let chunk = logs.read(run, cursor.as_deref(), max).await.expect("read");
        text.push_str(&chunk.log);
        if chunk.complete {
            return (text, true);
        }
        cursor = chunk.cursor;
    }
    (text, false)
}

#[tokio::test]
async fn cloudwatch_empty_pages_mid_stream_are_not_the_end_of_the_log() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let settings = common::settings(&endpoint);
    let logs = CloudWatchLogs::new(settings).await.expect("logs");
    logs.ensure_log_group().await.expect("log group");
    let run = stopped_run(&logs, &common::token());
    // Three bursts an hour apart: AWS (and the wrapper) answer each gap
    // with empty pages before the events after it.
    let t0 = chrono::Utc::now().timestamp_millis() - 3 * 3_600_000;
    let mut events = Vec::new();
    let mut expected = String::new();
    for burst in 0..3i64 {
        for i in 0..4i64 {
            let msg = format!("burst {burst} line {i} é🦀");
            expected.push_str(&msg);
            expected.push('\n');
            events.push((t0 + burst * 3_600_000 + i, msg));
        }
    }
    write_events(&logs, &run, &events).await;

    for max in [1_000_000, 7] {
        let (text, complete) = read_all(&logs, &run, max, 500).await;
        assert!(
            complete,
            "the log of a settled run ends complete (pages of {max})"
        );
        assert_eq!(
            text, expected,
            "every event after a time gap is read before the log is complete (pages of {max})"
        );
    }
}

#[tokio::test]
async fn cloudwatch_cursors_of_another_run_are_refused_and_forged_ones_stay_in_the_run() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let settings = common::settings(&endpoint);
    let logs = CloudWatchLogs::new(settings).await.expect("logs");
    logs.ensure_log_group().await.expect("log group");
    let theirs = stopped_run(&logs, &common::token());
    let mine = stopped_run(&logs, &common::token());
    let now = chrono::Utc::now().timestamp_millis();
    let lines = |who: &str| -> Vec<(i64, String)> {
        (0..6)
            .map(|i| (now + i, format!("{who} line {i} 🦀")))
            .collect()
    };
    write_events(&logs, &theirs, &lines("theirs")).await;
    write_events(&logs, &mine, &lines("mine")).await;
    let my_text: String = lines("mine")
        .into_iter()
        .map(|(_, m)| format!("{m}\n"))
        .collect();

    // A cursor some way into the other run's log (a token and an offset).
    let mut cursor: Option<String> = None;
    for _ in 0..3 {
        cursor = logs
            .read(&theirs, cursor.as_deref(), 7)
            .await
            .expect("read theirs")
            .cursor;
    }
    let foreign = cursor.expect("a cursor");
    let e = logs
        .read(&mine, Some(&foreign), 1024)
        .await
        .expect_err("a cursor of another run is refused");
    flotilla::testkit::logs::assert_bad_cursor(&foreign, &e);

    // Forged variants of a cursor of this run: refused, or reading this
    // run's text only.
    let own = logs
        .read(&mine, None, 9)
        .await
        .expect("read mine")
        .cursor
        .expect("a cursor");
    let variants = flotilla::testkit::logs::cursor_variants(&own);
    flotilla::testkit::logs::forged_cursors_are_refused_or_confined(
        &logs,
        &mine,
        &variants,
        9,
        &|text| my_text.contains(text),
    )
    .await;
}
