//! `PgQueue` on a real PostgreSQL: the core conformance suite, dedup,
//! stale receipts, bulk enqueue, LISTEN/NOTIFY wake-up and reconnection.

mod support;

use std::time::Duration;

use flotilla::{Message, Queue};
use flotilla_postgres::PgQueue;

macro_rules! db {
    ($name:expr) => {
        match support::fresh_db($name).await {
            Some(db) => db,
            None => return,
        }
    };
}

const LONG: Duration = Duration::from_secs(60);

fn q(name: &str) -> Vec<String> {
    vec![name.to_string()]
}

#[tokio::test]
async fn conformance_suite() {
    let db = db!("conformance_suite");
    let store = db.store().await;
    flotilla::testkit::queue_suite(&store.queue()).await;
}

#[tokio::test]
async fn standalone_queue_passes_the_suite_too() {
    let db = db!("standalone_queue_passes_the_suite_too");
    let store = db.store().await;
    let queue = PgQueue::new(store.pool().clone());
    flotilla::testkit::queue_suite(&queue).await;
}

#[tokio::test]
async fn pending_duplicates_are_dropped_and_stale_receipts_do_nothing() {
    let db = db!("pending_duplicates_are_dropped_and_stale_receipts_do_nothing");
    let queue = db.store().await.queue();
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
    // Another attempt of the same run is another message.
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
    assert_eq!(a2[1].message, Message::new("r1", 2));
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
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].message, m);
    assert_eq!(first[0].delivery_count, 1, "a new message after the ack");
    // The lease ends; the message comes again with a new receipt.
    let second = queue
        .receive(&q("dq"), 1, LONG, LONG)
        .await
        .expect("receive again");
    assert_eq!(second.len(), 1);
    let again = second;
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
        none.iter().all(|d| d.message != m),
        "stale release made a leased message visible"
    );
    assert!(queue.depth("dq").await.expect("depth") >= 1);
    queue.ack(&again).await.expect("ack");
    queue.ack(&none).await.expect("ack");
    assert_eq!(queue.depth("dq").await.expect("depth"), 0);
    // A garbage receipt is bad input.
    let mut bad = again[0].clone();
    bad.receipt = "1; DELETE FROM queue_messages".into();
    let e = queue.ack(&[bad]).await.expect_err("garbage receipt");
    assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput);
}

#[tokio::test]
async fn bulk_enqueue_keeps_order() {
    let db = db!("bulk_enqueue_keeps_order");
    let queue = db.store().await.queue();
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
    assert_eq!(queue.depth("bulk").await.expect("depth"), 0);
}

#[tokio::test]
async fn a_waiting_receiver_wakes_on_notify_from_another_pool() {
    let db = db!("a_waiting_receiver_wakes_on_notify_from_another_pool");
    let consumer = db.store().await.queue();
    let producer = db.store().await.queue();
    // Start the listener, then wait far longer than the test may take.
    let _ = consumer
        .receive(&q("wake"), 1, LONG, Duration::from_millis(10))
        .await
        .expect("warm up");
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
        .expect("the receiver was not woken by NOTIFY")
        .expect("join")
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].message, Message::new("w", 1));
}

#[tokio::test]
async fn listener_loss_falls_back_to_polling_and_reconnects() {
    let db = db!("listener_loss_falls_back_to_polling_and_reconnects");
    let store = db.store().await;
    let queue = store.queue();
    let _ = queue
        .receive(&q("lost"), 1, LONG, Duration::from_millis(10))
        .await
        .expect("warm up");
    for _ in 0..100 {
        if queue.is_listening() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(queue.is_listening(), "the listener never came up");
    // Kill the LISTEN connection from the server side.
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(store.pool())
    .await
    .expect("terminate listener");
    assert!(!killed.is_empty(), "no LISTEN connection found");
    // Messages still arrive (fallback poll or the new listener).
    for i in 0..3 {
        let producer = queue.clone();
        let m = Message::new(format!("lost{i}"), 1);
        let send = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            producer.enqueue("lost", &[m]).await
        });
        let got = queue
            .receive(&q("lost"), 1, LONG, Duration::from_secs(30))
            .await
            .expect("receive");
        send.await.expect("join").expect("enqueue");
        assert_eq!(got.len(), 1, "message {i} lost while the listener was down");
        queue.ack(&got).await.expect("ack");
    }
    let mut up = false;
    for _ in 0..200 {
        if queue.is_listening() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the listener did not reconnect");
}

/// The next notification on the queue channel within `within`, if any.
async fn next_notification(l: &mut sqlx::postgres::PgListener, within: Duration) -> Option<String> {
    match tokio::time::timeout(within, l.recv()).await {
        Ok(Ok(n)) => Some(n.payload().to_string()),
        Ok(Err(e)) => panic!("listener failed: {e}"),
        Err(_) => None,
    }
}

#[tokio::test]
async fn notify_is_sent_after_commit_and_never_for_a_delayed_release() {
    let db = db!("notify_is_sent_after_commit_and_never_for_a_delayed_release");
    let store = db.store().await;
    let queue = store.queue();
    let mut l = sqlx::postgres::PgListener::connect(&db.url)
        .await
        .expect("listener");
    l.listen("flotilla_queue").await.expect("listen");
    // No trigger is left to notify inside the enqueuing transaction.
    let triggers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'queue_messages'::regclass AND NOT tgisinternal",
    )
    .fetch_one(store.pool())
    .await
    .expect("triggers");
    assert_eq!(triggers, 0);
    queue
        .enqueue("n1", &[Message::new("a", 1), Message::new("b", 1)])
        .await
        .expect("enqueue");
    assert_eq!(
        next_notification(&mut l, Duration::from_secs(10)).await,
        Some("n1".to_string())
    );
    // A duplicate enqueue inserts nothing and notifies nobody.
    queue
        .enqueue("n1", &[Message::new("a", 1)])
        .await
        .expect("enqueue again");
    assert_eq!(
        next_notification(&mut l, Duration::from_millis(500)).await,
        None
    );
    let got = queue
        .receive(&q("n1"), 2, LONG, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 2);
    // Delayed: no NOTIFY; this process's waiting receiver still gets it
    // when the delay ends.
    let waiter = tokio::spawn({
        let queue = queue.clone();
        async move {
            queue
                .receive(&q("n1"), 1, LONG, Duration::from_secs(600))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    queue
        .release(&got[0], Duration::from_millis(700))
        .await
        .expect("release later");
    assert_eq!(
        next_notification(&mut l, Duration::from_millis(500)).await,
        None,
        "a delayed release notified"
    );
    let again = tokio::time::timeout(Duration::from_secs(30), waiter)
        .await
        .expect("the local receiver was not woken when the delay ended")
        .expect("join")
        .expect("receive");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].message, got[0].message);
    // Immediate: visible now, so other processes are told.
    queue
        .release(&got[1], Duration::ZERO)
        .await
        .expect("release now");
    assert_eq!(
        next_notification(&mut l, Duration::from_secs(10)).await,
        Some("n1".to_string())
    );
}

#[tokio::test]
async fn transactional_execute_wakes_receivers_here_and_elsewhere() {
    let db = db!("transactional_execute_wakes_receivers_here_and_elsewhere");
    let store = db.store().await;
    let local = store.queue();
    let remote = db.store().await.queue();
    for queue in [&local, &remote] {
        let _ = queue
            .receive(&q("tx"), 1, LONG, Duration::from_millis(10))
            .await
            .expect("warm up");
    }
    let wait = |queue: &PgQueue| {
        let queue = queue.clone();
        tokio::spawn(async move {
            queue
                .receive(&q("tx"), 1, LONG, Duration::from_secs(600))
                .await
        })
    };
    let (a, b) = (wait(&local), wait(&remote));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let def = flotilla::NewDefinition::new("tx", "img").into_definition();
    for _ in 0..2 {
        let run = flotilla::Run::queued(&def, "tx", "counting", "me");
        let ev = flotilla::RunEvent::created(&run);
        flotilla::Store::create_run_enqueued(&store, &run, &ev, "tx")
            .await
            .expect("create enqueued");
    }
    for w in [a, b] {
        let got = tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a receiver was not woken")
            .expect("join")
            .expect("receive");
        assert_eq!(got.len(), 1);
    }
}

/// The store's queue reads each claimed message's run and definition in
/// the claiming statement, as the store has them; a standalone queue reads
/// neither, and a message whose run is not stored says so.
#[tokio::test]
async fn a_claim_carries_its_run_and_definition() {
    use flotilla::Store;
    let db = db!("a_claim_carries_its_run_and_definition");
    let store = db.store().await;
    let mut defs = Vec::new();
    for alias in ["carried-a", "carried-b"] {
        let def = flotilla::NewDefinition::new(alias, "img")
            .command("true")
            .into_definition();
        store.create_definition(&def).await.expect("define");
        defs.push(def);
    }
    let mut runs = Vec::new();
    for i in 0..6 {
        let run = flotilla::Run::queued(&defs[i % 2], "carried", "counting", "me");
        store
            .create_run_enqueued(&run, &flotilla::RunEvent::created(&run), "carried")
            .await
            .expect("create enqueued");
        runs.push(run);
    }
    store
        .queue()
        .enqueue("carried", &[Message::new("no-such-run", 1)])
        .await
        .expect("enqueue");
    let got = store
        .queue()
        .receive(&q("carried"), 10, LONG, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 7);
    for d in &got {
        let claimed = d.claimed.as_ref().expect("the store's queue reads the run");
        if d.message.run_id == "no-such-run" {
            assert!(claimed.run.is_none() && claimed.definition.is_none());
            continue;
        }
        let stored = store.get_run(&d.message.run_id).await.expect("get");
        let run = claimed.run.as_ref().expect("a stored run is read");
        assert_eq!(run, &stored, "the claimed run is the stored one");
        let def = claimed.definition.as_deref().expect("its definition");
        assert_eq!(def.definition_id, stored.definition_id);
        assert_eq!(
            def,
            &store
                .get_definition(&stored.definition_id)
                .await
                .expect("def")
        );
        assert!(claimed.fresh_definition(&stored.definition_id).is_some());
    }
    // Deliveries of one claim share each definition, decoded once.
    let shared = |alias: &str| {
        got.iter()
            .filter_map(|d| d.claimed.as_ref()?.definition.clone())
            .filter(|def| def.alias == alias)
            .collect::<Vec<_>>()
    };
    for alias in ["carried-a", "carried-b"] {
        let defs = shared(alias);
        assert_eq!(defs.len(), 3, "{alias}");
        assert!(
            defs.iter().all(|d| std::sync::Arc::ptr_eq(d, &defs[0])),
            "{alias}: one decoded definition shared by its deliveries"
        );
    }

    let standalone = PgQueue::new(store.pool().clone());
    let run = flotilla::Run::queued(&defs[0], "standalone", "counting", "me");
    standalone
        .enqueue("standalone", &[Message::new(run.run_id.clone(), 1)])
        .await
        .expect("enqueue");
    let got = standalone
        .receive(&q("standalone"), 10, LONG, Duration::from_secs(5))
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert!(got[0].claimed.is_none(), "a standalone queue reads no runs");
}
