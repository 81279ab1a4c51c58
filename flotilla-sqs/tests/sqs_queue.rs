//! `SqsQueue` against moto: the core queue suite and SQS specifics.

mod common;

use std::time::Duration;

use aws_sdk_sqs::types::QueueAttributeName;
use flotilla::testkit::queue::{QueueSuiteOptions, queue_suite_with};
use flotilla::{Message, Queue};
use flotilla_sqs::SqsQueue;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_suite_passes_on_moto() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let queue = SqsQueue::new(common::settings(&endpoint, "suite"))
        .await
        .expect("queue");
    let opts = QueueSuiteOptions {
        // SQS standard queues do not keep order; visibility timeouts are
        // whole seconds.
        fifo: false,
        lease: Duration::from_secs(1),
        patience: Duration::from_secs(15),
    };
    queue_suite_with(&queue, &opts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_are_created_with_configured_attributes() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let mut settings = common::settings(&endpoint, "attrs");
    settings.retention_seconds = 3600;
    settings.visibility_timeout_seconds = 45;
    let namespace = settings.queue_namespace.clone();
    let queue = SqsQueue::new(settings).await.expect("queue");
    let err = queue
        .queue_url("gpu.large", false)
        .await
        .expect_err("not created before first use");
    assert_eq!(err.kind(), flotilla::ErrorKind::NotFound);
    queue
        .enqueue("gpu.large", &[Message::new("r1", 1)])
        .await
        .expect("enqueue creates the queue");
    let name = queue.sqs_queue_name("gpu.large");
    assert!(
        name.starts_with(&format!("{namespace}-gpu_large-")),
        "{name}"
    );
    let url = queue
        .queue_url("gpu.large", false)
        .await
        .expect("exists now");
    assert!(url.ends_with(&name), "{url} names {name}");
    let attrs = queue
        .client()
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::All)
        .send()
        .await
        .expect("attributes");
    let attrs = attrs.attributes().expect("some attributes");
    assert_eq!(
        attrs
            .get(&QueueAttributeName::MessageRetentionPeriod)
            .map(String::as_str),
        Some("3600")
    );
    assert_eq!(
        attrs
            .get(&QueueAttributeName::VisibilityTimeout)
            .map(String::as_str),
        Some("45")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_are_deleted_not_delivered() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let queue = SqsQueue::new(common::settings(&endpoint, "bad"))
        .await
        .expect("queue");
    let url = queue.queue_url("default", true).await.expect("url");
    for body in [
        "not json",
        r#"{"run_id": "", "attempt": 1}"#,
        r#"{"other": 1}"#,
    ] {
        queue
            .client()
            .send_message()
            .queue_url(&url)
            .message_body(body)
            .send()
            .await
            .expect("send a foreign message");
    }
    queue
        .enqueue("default", &[Message::new("good-run", 2)])
        .await
        .expect("enqueue");
    let qs = vec!["default".to_string()];
    let mut got = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(15);
    while got.is_empty() && tokio::time::Instant::now() < give_up {
        got = queue
            .receive(&qs, 10, Duration::from_secs(60), Duration::from_secs(2))
            .await
            .expect("receive never fails on foreign messages");
    }
    assert_eq!(
        got.len(),
        1,
        "only the well-formed message is delivered: {got:?}"
    );
    assert_eq!(got[0].message, Message::new("good-run", 2));
    queue.ack(&got).await.expect("ack");
    assert_eq!(
        queue.depth("default").await.expect("depth"),
        0,
        "malformed messages were deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_are_split_into_tens() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let queue = SqsQueue::new(common::settings(&endpoint, "batch"))
        .await
        .expect("queue");
    let messages: Vec<Message> = (0..35)
        .map(|i| Message::new(format!("run-{i}"), 1))
        .collect();
    queue
        .enqueue("default", &messages)
        .await
        .expect("enqueue 35");
    assert_eq!(queue.depth("default").await.expect("depth"), 35);
    let qs = vec!["default".to_string()];
    let mut got = Vec::new();
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.len() < 35 && tokio::time::Instant::now() < give_up {
        let batch = queue
            .receive(&qs, 50, Duration::from_secs(60), Duration::from_secs(1))
            .await
            .expect("receive");
        assert!(batch.len() <= 50);
        got.extend(batch);
    }
    assert_eq!(got.len(), 35, "every message arrives once");
    queue.ack(&got).await.expect("ack 35 in batches of ten");
    assert_eq!(queue.depth("default").await.expect("depth"), 0);
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable() {
    let mut settings = flotilla_sqs::SqsSettings {
        region: "us-east-1".into(),
        // Nothing listens on port 9 of loopback.
        endpoint_url: Some("http://127.0.0.1:9".into()),
        credentials: Some(flotilla_sqs::StaticCredentials::new("test", "test")),
        ..Default::default()
    };
    settings.max_attempts = 1;
    let queue = SqsQueue::new(settings).await.expect("queue");
    let err = queue
        .enqueue("default", &[Message::new("r", 1)])
        .await
        .expect_err("nothing listens");
    assert_eq!(err.kind(), flotilla::ErrorKind::Unavailable, "{err}");
}
