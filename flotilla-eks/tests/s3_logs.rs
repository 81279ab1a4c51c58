//! `S3Logs` and `PodThenS3Logs` against moto (S3) and the fake API server.
//!
//! Needs `FLOTILLA_TEST_AWS_ENDPOINT` (start moto with
//! `test-support/moto/start.sh`); without it the tests fail when `CI` is
//! set and warn loudly otherwise.

mod support;

use std::sync::Arc;

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use chrono::{DateTime, SecondsFormat, Utc};
use flotilla::{LogSource, Run, RunStatus};
use flotilla_eks::names::job_name;
use flotilla_eks::{PodLogs, PodThenS3Logs, S3LogSettings, S3Logs};
use support::{FakeApiServer, Shipper, engine_on, probe_with, settings};

async fn client(url: &str) -> Client {
    let creds = flotilla_aws::StaticCredentials::new("test", "test");
    let shared = flotilla_aws::sdk_config("us-east-1", Some(url), Some(&creds), 3).await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    Client::from_conf(conf)
}

async fn bucket(client: &Client) -> S3LogSettings {
    let bucket = format!("flotilla-logs-{}", flotilla::model::new_id());
    client
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("create bucket");
    S3LogSettings {
        bucket,
        prefix: "archive/eks".into(),
        complete_after_seconds: 0,
        ..S3LogSettings::default()
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Archives lines as a shipper would: the first half as containerd text
/// (with `split_one`, one line split into a partial and a final record),
/// the rest as Docker
/// JSON in a second object.
async fn ship(
    client: &Client,
    s: &S3LogSettings,
    run_id: &str,
    lines: &[(DateTime<Utc>, String)],
    split_one: bool,
) {
    let half = lines.len() / 2;
    let mut cri = String::new();
    for (i, (t, line)) in lines[..half].iter().enumerate() {
        if split_one && i == 1 && line.len() > 4 {
            let cut = line.char_indices().nth(2).map_or(0, |(i, _)| i);
            cri.push_str(&format!("{} stdout P {}\n", stamp(*t), &line[..cut]));
            cri.push_str(&format!("{} stdout F {}\n", stamp(*t), &line[cut..]));
        } else {
            cri.push_str(&format!("{} stdout F {}\n", stamp(*t), line));
        }
    }
    let mut docker = String::new();
    for (t, line) in &lines[half..] {
        docker.push_str(
            &serde_json::json!({"log": format!("{line}\n"), "stream": "stdout", "time": stamp(*t)})
                .to_string(),
        );
        docker.push('\n');
    }
    for (name, body) in [("0001-containerd.log", cri), ("0002-docker.log", docker)] {
        client
            .put_object()
            .bucket(&s.bucket)
            .key(format!("{}/{run_id}/{name}", s.prefix))
            .body(ByteStream::from(body.into_bytes()))
            .send()
            .await
            .expect("put object");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_logs_pass_the_log_source_suite() {
    let Some(url) = support::moto("the S3 log tests") else {
        return;
    };
    let c = client(&url).await;
    let s = bucket(&c).await;
    let logs = S3Logs::from_client(c.clone(), &s).expect("source");
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let shipper: Shipper = {
        let c = c.clone();
        let s = s.clone();
        Arc::new(move |run: Run, lines| {
            let c = c.clone();
            let s = s.clone();
            Box::pin(async move { ship(&c, &s, &run.run_id, &lines, true).await })
        })
    };
    let probe = probe_with(&server, "default", Some(shipper));
    flotilla::testkit::log_source_suite(&logs, &engine, &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_settings_build_a_working_client() {
    let Some(url) = support::moto("the S3 log tests") else {
        return;
    };
    let c = client(&url).await;
    let mut s = bucket(&c).await;
    s.endpoint_url = Some(url);
    s.region = Some("us-east-1".into());
    // The default credential chain finds nothing here; the SDK then fails
    // the request, which maps to a retryable kind, never a panic.
    let logs = S3Logs::new(&s).await.expect("source");
    assert_eq!(logs.run_prefix("r1"), "archive/eks/r1/");
    let err = S3Logs::from_client(c, &S3LogSettings::default()).expect_err("no bucket");
    assert!(err.message().contains("bucket"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_composite_moves_from_the_pod_to_s3_without_repeats_or_gaps() {
    let Some(url) = support::moto("the S3 log tests") else {
        return;
    };
    let c = client(&url).await;
    let s = bucket(&c).await;
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], settings());
    let source = PodThenS3Logs::new(
        PodLogs::new(&engine),
        S3Logs::from_client(c.clone(), &s).expect("source"),
    );
    let def = flotilla::NewDefinition::new("composite", "busybox:1").into_definition();
    let mut run = support::new_run(&def, "default", None);
    let submitted = flotilla::Engine::submit(&engine, &run, &def)
        .await
        .expect("submit");
    run.engine_ref = Some(submitted.engine_ref);
    run.status = RunStatus::Running;
    let job = job_name(&run.run_id, 1);
    server.start_pod(&job);
    // Lines, several sharing one timestamp.
    let base = Utc::now();
    let mut lines = Vec::new();
    for i in 0..12 {
        let t = base + chrono::Duration::milliseconds(i / 3);
        let line = format!("line {i:02} grüße 🦀");
        server.append_log_at(&job, t, &line);
        lines.push((t, line));
    }
    let text: String = lines.iter().map(|(_, l)| format!("{l}\n")).collect();
    ship(&c, &s, &run.run_id, &lines, false).await;

    // Part of it from the pod.
    let first = source.read(&run, None, 50).await.expect("read pod");
    assert!(!first.log.is_empty());
    assert!(
        first
            .cursor
            .as_deref()
            .is_some_and(|c| c.starts_with("p1."))
    );
    let mut got = first.log.clone();
    let mut cursor = first.cursor;

    // The pod goes away (TTL); the rest comes from S3.
    server.finish_pod(&job, 0, "Completed");
    server.delete_pods(&job);
    run.status = RunStatus::Stopped;
    run.finished_at = Some(flotilla::model::now());
    for _ in 0..1000 {
        let c = source
            .read(&run, cursor.as_deref(), 37)
            .await
            .expect("read s3");
        got.push_str(&c.log);
        cursor = c.cursor.or(cursor);
        if c.complete {
            break;
        }
    }
    assert_eq!(got, text, "pod then archive: every line once");
    assert!(cursor.as_deref().is_some_and(|c| c.starts_with("s1.")));
}
