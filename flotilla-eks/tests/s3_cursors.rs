//! `S3Logs` and `PodThenS3Logs` refuse or confine cursors a client forged,
//! against moto (S3): a cursor naming another run's object never reads it,
//! and offsets inside characters or out of range never panic.
//!
//! Needs `FLOTILLA_TEST_AWS_ENDPOINT` (start moto with
//! `test-support/moto/start.sh`); without it the tests fail when `CI` is
//! set and warn loudly otherwise.

mod support;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use flotilla::testkit::logs::{
    assert_bad_cursor, cursor_variants, forged_cursors_are_refused_or_confined,
};
use flotilla::{LogSource, Run, RunStatus};
use flotilla_eks::s3logs::S3LogPosition;
use flotilla_eks::{PodLogs, PodThenS3Logs, S3LogSettings, S3Logs};
use support::{FakeApiServer, engine_on, settings};

async fn archive() -> Option<(Client, S3LogSettings)> {
    let url = support::moto("the S3 cursor tests")?;
    let creds = flotilla_aws::StaticCredentials::new("test", "test");
    let shared = flotilla_aws::sdk_config("us-east-1", Some(&url), Some(&creds), 3).await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    let client = Client::from_conf(conf);
    let bucket = format!("flotilla-cursors-{}", flotilla::model::new_id());
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    let s = S3LogSettings {
        bucket,
        prefix: "archive/eks".into(),
        complete_after_seconds: 0,
        ..S3LogSettings::default()
    };
    Some((client, s))
}

/// A stopped run whose archive holds `text` (plain lines, in two objects).
async fn archived_run(client: &Client, s: &S3LogSettings, text: &str) -> Run {
    let def = flotilla::NewDefinition::new("cursors", "busybox:1").into_definition();
    let mut run = support::new_run(&def, "default", None);
    run.status = RunStatus::Stopped;
    run.finished_at = Some(flotilla::model::now());
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let (a, b) = lines.split_at(lines.len() / 2);
    for (name, part) in [("0001.log", a.concat()), ("0002.log", b.concat())] {
        client
            .put_object()
            .bucket(&s.bucket)
            .key(format!("{}/{}/{name}", s.prefix, run.run_id))
            .body(ByteStream::from(part.into_bytes()))
            .send()
            .await
            .expect("put object");
    }
    run
}

fn text_of(who: &str) -> String {
    (0..8)
        .map(|i| format!("{who} line {i}: grüße 日本語 🦀\n"))
        .collect()
}

/// Reads all of `run`'s log in pages of `max`; returns the text and every
/// cursor seen.
async fn read_all(source: &dyn LogSource, run: &Run, max: usize) -> (String, Vec<String>) {
    let mut cursors = Vec::new();
    let mut cursor: Option<String> = None;
    let mut got = String::new();
    for _ in 0..1000 {
        let c = source
            .read(run, cursor.as_deref(), max)
            .await
            .expect("read");
        got.push_str(&c.log);
        cursors.extend(c.cursor.clone());
        cursor = c.cursor.or(cursor);
        if c.complete {
            return (got, cursors);
        }
    }
    panic!("the log never became complete: {got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_naming_another_runs_archive_is_refused() {
    let Some((client, s)) = archive().await else {
        return;
    };
    let logs = S3Logs::from_client(client.clone(), &s).expect("source");
    let alice = archived_run(&client, &s, &text_of("alice")).await;
    let bob_text = text_of("bob");
    let bob = archived_run(&client, &s, &bob_text).await;
    let (got, _) = read_all(&logs, &bob, 1 << 16).await;
    assert_eq!(got, bob_text);

    // Alice crafts a cursor naming Bob's object and reads her own run.
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let composite = PodThenS3Logs::new(PodLogs::new(&engine), logs.clone());
    for key in [
        format!("{}/{}/0001.log", s.prefix, bob.run_id),
        format!("{}/{}/../{}/0001.log", s.prefix, alice.run_id, bob.run_id),
    ] {
        let forged = S3LogPosition {
            key,
            line_start: 0,
            msg_off: 0,
        }
        .encode();
        for source in [&logs as &dyn LogSource, &composite] {
            match source.read(&alice, Some(&forged), 1 << 16).await {
                Err(e) => assert_bad_cursor(&forged, &e),
                Ok(c) => panic!("cursor {forged:?} read {:?} for alice", c.log),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_s3_cursors_are_refused_or_stay_in_the_run() {
    let Some((client, s)) = archive().await else {
        return;
    };
    let logs = S3Logs::from_client(client.clone(), &s).expect("source");
    let text = text_of("alice");
    let alice = archived_run(&client, &s, &text).await;
    let _bob = archived_run(&client, &s, &text_of("bob")).await;
    let (got, cursors) = read_all(&logs, &alice, 11).await;
    assert_eq!(got, text, "the honest read");
    let forged: Vec<String> = cursors
        .iter()
        .step_by(4)
        .flat_map(|c| cursor_variants(c))
        .collect();
    assert!(forged.len() > 100, "{} forged cursors", forged.len());
    // A cursor moved inside a line reads the run's own archived bytes from
    // there, never another run's text.
    forged_cursors_are_refused_or_confined(&logs, &alice, &forged, 9, &|page: &str| {
        !page.contains("bob")
    })
    .await;
}
