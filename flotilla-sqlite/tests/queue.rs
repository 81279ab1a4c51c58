//! `SqliteQueue` on real files: the core conformance suite, dedup, stale
//! receipts, bulk enqueue, wake-up from this process and from another open
//! of the same file.

mod support;

use std::time::Duration;

use flotilla::{Message, Queue};
use support::TempDb;

const LONG: Duration = Duration::from_secs(60);

fn q(name: &str) -> Vec<String> {
    vec![name.to_string()]
}

#[tokio::test]
async fn sqlite_queue_meets_the_queue_contract() {
    let db = TempDb::new();
    flotilla::testkit::queue_suite(&db.open().await.queue()).await;
}

#[tokio::test]
async fn pending_duplicates_are_dropped_and_stale_receipts_do_nothing() {
    let db = TempDb::new();
    let queue = db.open().await.queue();
    let m = Message::new("r1", 1);
    queue
        .enqueue("dq", std::slice::from_ref(&m))
        .await
        .expect("enqueue");
    queue
        .enqueue("dq", std::slice::from_ref(&m))
        .await
        .expect("enqueue again");
    assert_eq!(queue.depth("dq").await.expect("depth"), 1, "deduplicated");
    queue
        .enqueue("dq", &[Message::new("r1", 2)])
        .await
        .expect("enqueue attempt 2");
    assert_eq!(queue.depth("dq").await.expect("depth"), 2);
    let a2 = queue
        .receive(&q("dq"), 2, LONG, LONG)
        .await
        .expect("receive both");
    assert_eq!(a2.len(), 2);
    assert_eq!(a2[0].message, m, "FIFO");
    // A message leased is still pending: enqueuing it again is a no-op.
    queue
        .enqueue("dq", std::slice::from_ref(&m))
        .await
        .expect("enqueue leased");
    assert_eq!(queue.depth("dq").await.expect("depth"), 2);
    queue.ack(&a2).await.expect("ack both");
    assert_eq!(queue.depth("dq").await.expect("depth"), 0);
    queue
        .enqueue("dq", std::slice::from_ref(&m))
        .await
        .expect("enqueue after ack");
    let first = queue
        .receive(&q("dq"), 1, Duration::from_millis(200), LONG)
        .await
        .expect("receive");
    assert_eq!(first[0].delivery_count, 1, "a new message after the ack");
    let again = queue.receive(&q("dq"), 1, LONG, LONG).await.expect("again");
    assert_eq!(again[0].message, m);
    assert_eq!(again[0].delivery_count, 2);
    assert_ne!(again[0].receipt, first[0].receipt);
    // Acking or releasing through the stale receipt changes nothing.
    queue.ack(&first).await.expect("stale ack");
    queue
        .release(&first[0], Duration::ZERO)
        .await
        .expect("stale release");
    let none = queue
        .receive(&q("dq"), 10, LONG, Duration::from_millis(300))
        .await
        .expect("receive");
    assert!(
        none.is_empty(),
        "stale release made a leased message visible"
    );
    assert_eq!(queue.depth("dq").await.expect("depth"), 1);
    queue.ack(&again).await.expect("ack");
    assert_eq!(queue.depth("dq").await.expect("depth"), 0);
    // An acked message's id is never reused, so its receipt stays stale.
    queue
        .enqueue("dq", &[Message::new("r2", 1)])
        .await
        .expect("enqueue");
    queue.ack(&again).await.expect("stale ack after reuse");
    assert_eq!(queue.depth("dq").await.expect("depth"), 1);
    let mut bad = again[0].clone();
    bad.receipt = "1; DELETE FROM queue_messages".into();
    let e = queue.ack(&[bad]).await.expect_err("garbage receipt");
    assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn bulk_enqueue_keeps_order() {
    let db = TempDb::new();
    let queue = db.open().await.queue();
    let msgs: Vec<Message> = (0..2000)
        .map(|i| Message::new(format!("b{i:05}"), 1))
        .collect();
    queue.enqueue("bulk", &msgs).await.expect("bulk enqueue");
    assert_eq!(queue.depth("bulk").await.expect("depth"), 2000);
    let mut got = Vec::new();
    while got.len() < 2000 {
        let d = queue
            .receive(&q("bulk"), 500, LONG, Duration::from_secs(5))
            .await
            .expect("receive");
        assert!(!d.is_empty(), "messages missing after {}", got.len());
        queue.ack(&d).await.expect("ack");
        got.extend(d.into_iter().map(|d| d.message));
    }
    assert_eq!(got, msgs, "FIFO");
}

#[tokio::test]
async fn a_waiting_receiver_sees_enqueues_of_another_open_of_the_file() {
    let db = TempDb::new();
    let consumer = db.open().await.queue();
    // Another open of the file is another process as far as wake-ups go:
    // only the fallback re-check can see its writes.
    let producer = db.open().await.queue();
    let waiter = tokio::spawn({
        let consumer = consumer.clone();
        async move {
            consumer
                .receive(&q("wake"), 1, LONG, Duration::from_secs(600))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    producer
        .enqueue("wake", &[Message::new("w", 1)])
        .await
        .expect("enqueue");
    let got = tokio::time::timeout(Duration::from_secs(60), waiter)
        .await
        .expect("the receiver never looked again")
        .expect("join")
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, Message::new("w", 1));
}

#[tokio::test]
async fn an_enqueue_of_this_process_wakes_a_waiting_receiver() {
    let db = TempDb::new();
    // A fallback re-check of one hour: only the in-process wake-up can
    // deliver the message before the test's own deadline.
    let store = flotilla_sqlite::SqliteStore::open(
        db.path(),
        flotilla_sqlite::SqliteOptions {
            poll_interval: Duration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .expect("open");
    let queue = store.queue();
    for how in ["enqueue", "create_run_enqueued", "release"] {
        let name = format!("wake-{how}");
        let waiter = tokio::spawn({
            let queue = queue.clone();
            let name = name.clone();
            async move {
                queue
                    .receive(&q(&name), 1, LONG, Duration::from_secs(3600))
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        match how {
            "enqueue" => queue
                .enqueue(&name, &[Message::new("w", 1)])
                .await
                .expect("enqueue"),
            "create_run_enqueued" => {
                let def = flotilla::NewDefinition::new("wake", "img").into_definition();
                let run = flotilla::Run::queued(&def, &name, "local", "o");
                let ev = flotilla::RunEvent {
                    run_id: run.run_id.clone(),
                    at: flotilla::model::now(),
                    from: None,
                    to: run.status,
                    attempt: run.attempt,
                    reason: None,
                };
                flotilla::Store::create_run_enqueued(&store, &run, &ev, &name)
                    .await
                    .expect("create + enqueue")
            }
            _ => {
                queue
                    .enqueue(&name, &[Message::new("w", 1)])
                    .await
                    .expect("enqueue");
                // The waiter took it; hand it back later by release.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        let mut got = tokio::time::timeout(Duration::from_secs(60), waiter)
            .await
            .unwrap_or_else(|_| panic!("{how}: the receiver was not woken"))
            .expect("join")
            .expect("receive");
        assert_eq!(got.len(), 1, "{how}");
        if how == "release" {
            let waiter = tokio::spawn({
                let queue = queue.clone();
                let name = name.clone();
                async move {
                    queue
                        .receive(&q(&name), 1, LONG, Duration::from_secs(3600))
                        .await
                }
            });
            tokio::time::sleep(Duration::from_millis(300)).await;
            queue
                .release(&got[0], Duration::ZERO)
                .await
                .expect("release");
            got = tokio::time::timeout(Duration::from_secs(60), waiter)
                .await
                .expect("release: the receiver was not woken")
                .expect("join")
                .expect("receive");
            assert_eq!(got[0].delivery_count, 2);
        }
        queue.ack(&got).await.expect("ack");
    }
}
