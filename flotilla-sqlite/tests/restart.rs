//! Closing and reopening the same file keeps everything: definitions,
//! runs with their versions and events, clusters, leases and queued
//! messages (leased ones come back once their lease ends).

mod support;

use std::time::Duration;

use flotilla::model::{self, Cluster, EnvVar};
use flotilla::{
    Expected, Message, NewDefinition, Queue, Run, RunEvent, RunQuery, RunStatus, Store,
};
use support::TempDb;

#[tokio::test]
async fn reopening_the_file_keeps_everything() {
    let db = TempDb::new();
    let store = db.open().await;
    let queue = store.queue();
    let mut def = NewDefinition::new("keep", "img")
        .command("echo hi")
        .into_definition();
    def.env = vec![EnvVar::new("K", "v")];
    def.tags = vec!["kept".into()];
    def.group_name = "grp".into();
    store.create_definition(&def).await.expect("define");
    let mut run = Run::queued(&def, "c1", "local", "alice");
    run.env = vec![EnvVar::new("K", "v")];
    let created = RunEvent {
        run_id: run.run_id.clone(),
        at: model::now(),
        from: None,
        to: RunStatus::Queued,
        attempt: 1,
        reason: Some("created".into()),
    };
    store
        .create_run_enqueued(&run, &created, "c1")
        .await
        .expect("create + enqueue");
    let mut pending = run.clone();
    pending.status = RunStatus::Pending;
    let moved = RunEvent {
        from: Some(RunStatus::Queued),
        to: RunStatus::Pending,
        at: model::now(),
        reason: Some("submitted".into()),
        ..created.clone()
    };
    let stored = store
        .update_run(&pending, Expected::of(&run), Some(&moved))
        .await
        .expect("update");
    let cluster = Cluster::new("c1");
    store.put_cluster(&cluster).await.expect("cluster");
    assert!(
        store
            .try_lease("status", "me", Duration::from_secs(600))
            .await
            .expect("lease")
    );
    queue
        .enqueue("later", &[Message::new("m1", 1), Message::new("m2", 1)])
        .await
        .expect("enqueue");
    // One message leased (and never acked) when the process goes away.
    let leased = queue
        .receive(
            &["later".into()],
            1,
            Duration::from_millis(500),
            Duration::from_secs(5),
        )
        .await
        .expect("receive");
    assert_eq!(leased.len(), 1);
    store.close().await;

    let store = db.open().await;
    let queue = store.queue();
    assert_eq!(
        store.get_definition(&def.definition_id).await.expect("def"),
        def
    );
    assert_eq!(
        store.get_definition_by_alias("keep").await.expect("alias"),
        def
    );
    assert_eq!(
        store.list_tags(None, 10, 0).await.expect("tags").items,
        ["kept"]
    );
    assert_eq!(
        store.list_groups(None, 10, 0).await.expect("groups").items,
        ["grp"]
    );
    let got = store.get_run(&run.run_id).await.expect("run");
    assert_eq!(got, stored, "the run and its version");
    assert_eq!(
        store.run_events(&run.run_id).await.expect("events"),
        vec![created, moved]
    );
    let by_env = store
        .list_runs(&RunQuery {
            env: vec![EnvVar::new("K", "v")],
            ..RunQuery::all(10)
        })
        .await
        .expect("env filter");
    assert_eq!(by_env.total, 1);
    assert_eq!(store.get_cluster("c1").await.expect("cluster"), cluster);
    assert!(
        !store
            .try_lease("status", "other", Duration::from_secs(1))
            .await
            .expect("lease"),
        "a lease survives the restart"
    );
    assert_eq!(queue.depth("c1").await.expect("depth"), 1);
    assert_eq!(queue.depth("later").await.expect("depth"), 2);
    let mut again = Vec::new();
    while again.len() < 2 {
        let d = queue
            .receive(
                &["later".into()],
                2,
                Duration::from_secs(60),
                Duration::from_secs(10),
            )
            .await
            .expect("receive after restart");
        assert!(!d.is_empty(), "a queued message was lost");
        again.extend(d);
    }
    let mut ids: Vec<_> = again.iter().map(|d| d.message.run_id.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["m1", "m2"]);
    let redelivered = again
        .iter()
        .find(|d| d.message == leased[0].message)
        .expect("the leased message");
    assert_eq!(redelivered.delivery_count, 2);
    // Acking through the receipt of before the restart does nothing.
    queue.ack(&leased).await.expect("stale ack");
    assert_eq!(queue.depth("later").await.expect("depth"), 2);
    queue.ack(&again).await.expect("ack");
    assert_eq!(queue.depth("later").await.expect("depth"), 0);
}
