//! `SqliteStore` on real files: the core conformance suite, keyset
//! pagination, transactional execute, leases across two opens of one file,
//! open errors.

mod support;

use std::time::Duration;

use flotilla::model::{self, EnvVar};
use flotilla::{
    ErrorKind, Message, NewDefinition, Queue, Run, RunEvent, RunQuery, RunSortField, RunStatus,
    SortOrder, Store,
};
use flotilla_sqlite::{SqliteOptions, SqliteStore};
use support::TempDb;

fn run(alias: &str, cluster: &str, owner: &str, n: i64) -> Run {
    let mut def = NewDefinition::new(alias, "img").into_definition();
    def.definition_id = format!("def-{alias}");
    let mut r = Run::queued(&def, cluster, "counting", owner);
    let t = r.updated_at;
    r.queued_at = Some(t + chrono::Duration::seconds(n));
    r.started_at = if n % 3 == 0 {
        None
    } else {
        Some(t + chrono::Duration::seconds(100 - n))
    };
    r.env = vec![
        EnvVar::new("N", n.to_string()),
        EnvVar::new("PARITY", if n % 2 == 0 { "even" } else { "odd" }),
    ];
    r
}

fn created(run: &Run) -> RunEvent {
    RunEvent {
        run_id: run.run_id.clone(),
        at: model::now(),
        from: None,
        to: run.status,
        attempt: run.attempt,
        reason: None,
    }
}

#[tokio::test]
async fn sqlite_store_meets_the_store_contract() {
    let db = TempDb::new();
    flotilla::testkit::store_suite(&db.open().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_backends_meet_the_contracts_on_several_threads() {
    let db = TempDb::new();
    let store = db.open().await;
    let queue = store.queue();
    tokio::join!(
        flotilla::testkit::store_suite(&store),
        flotilla::testkit::store_suite(&store),
        flotilla::testkit::queue_suite(&queue)
    );
}

#[tokio::test]
async fn keyset_pages_agree_with_offset_pages() {
    let db = TempDb::new();
    let store = db.open().await;
    let aliases = ["b", "a", "c", "a"];
    for n in 0..23 {
        let mut r = run(aliases[n as usize % 4], "kc", "owner", n);
        if n % 5 == 0 {
            r.status = RunStatus::Stopped;
        }
        store.create_run(&r, &created(&r)).await.expect("create");
    }
    for sort_by in RunSortField::ALL {
        for order in [SortOrder::Asc, SortOrder::Desc] {
            let base = RunQuery {
                clusters: vec!["kc".into()],
                sort_by,
                order,
                limit: 0,
                ..Default::default()
            };
            let all = store.list_runs(&base).await.expect("list all");
            assert_eq!(all.total, 23);
            assert_eq!(all.items.len(), 23, "limit 0 lists everything");
            let mut by_cursor = Vec::new();
            let mut by_offset = Vec::new();
            let mut cursor = None;
            let mut pages = 0;
            loop {
                let q = RunQuery {
                    limit: 5,
                    cursor: cursor.clone(),
                    ..base.clone()
                };
                let page = store.list_runs(&q).await.expect("cursor page");
                assert_eq!(page.total, 23);
                by_cursor.extend(page.items.iter().map(|r| r.run_id.clone()));
                let q = RunQuery {
                    limit: 5,
                    offset: pages * 5,
                    ..base.clone()
                };
                let page2 = store.list_runs(&q).await.expect("offset page");
                by_offset.extend(page2.items.iter().map(|r| r.run_id.clone()));
                pages += 1;
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
                assert!(pages < 10, "cursor paging does not end");
            }
            let expected: Vec<String> = all.items.iter().map(|r| r.run_id.clone()).collect();
            assert_eq!(by_cursor, expected, "{sort_by:?} {order:?} by cursor");
            assert_eq!(by_offset, expected, "{sort_by:?} {order:?} by offset");
        }
    }
    // The env filter: every pair must match.
    let even = store
        .list_runs(&RunQuery {
            env: vec![EnvVar::new("PARITY", "even")],
            ..RunQuery::all(100)
        })
        .await
        .expect("env filter");
    assert_eq!(even.total, 12);
    let one = store
        .list_runs(&RunQuery {
            env: vec![EnvVar::new("PARITY", "even"), EnvVar::new("N", "4")],
            ..RunQuery::all(100)
        })
        .await
        .expect("env filter");
    assert_eq!(one.total, 1);
    let none = store
        .list_runs(&RunQuery {
            env: vec![EnvVar::new("PARITY", "even"), EnvVar::new("N", "5")],
            ..RunQuery::all(100)
        })
        .await
        .expect("env filter");
    assert_eq!(none.total, 0);
}

#[tokio::test]
async fn list_filters_are_index_lookups() {
    let db = TempDb::new();
    let store = db.open().await;
    // The shapes list_runs builds for the env filter and the history sort:
    // SQLite answers them from indexes, never by scanning runs.
    let plan = |sql: &'static str| {
        let pool = store.read_pool().clone();
        async move {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(sqlx::AssertSqlSafe(format!("EXPLAIN QUERY PLAN {sql}")))
                    .fetch_all(&pool)
                    .await
                    .expect("plan");
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("; ")
        }
    };
    let env = plan(
        "SELECT doc, version FROM runs WHERE 1 AND run_id IN \
         (SELECT run_id FROM run_env WHERE name = 'A' AND value = 'b') \
         ORDER BY started_at DESC, run_id DESC LIMIT 21",
    )
    .await;
    assert!(env.contains("run_env_pair_idx"), "env filter plan: {env}");
    let sorted = plan(
        "SELECT doc, version FROM runs WHERE 1 ORDER BY started_at DESC, run_id DESC LIMIT 21",
    )
    .await;
    assert!(
        sorted.contains("runs_started_at_idx") && !sorted.contains("TEMP B-TREE"),
        "history sort plan: {sorted}"
    );
    let status = plan(
        "SELECT doc, version FROM runs WHERE 1 AND status IN ('PENDING', 'RUNNING') ORDER BY run_id ASC LIMIT 501",
    )
    .await;
    assert!(status.contains("runs_status_idx"), "status plan: {status}");
}

#[tokio::test]
async fn create_run_enqueued_is_atomic() {
    let db = TempDb::new();
    let store = db.open().await;
    let queue = store.queue();
    assert_eq!(
        Store::transaction_domain(&store),
        Queue::transaction_domain(&queue),
        "a store and its queue share a transaction domain"
    );
    let other = db.open().await;
    assert_ne!(
        Store::transaction_domain(&other),
        Queue::transaction_domain(&queue),
        "another open of the file is another domain"
    );
    let r = run("tx", "txq", "o", 1);
    store
        .create_run_enqueued(&r, &created(&r), "txq")
        .await
        .expect("create + enqueue");
    assert_eq!(queue.depth("txq").await.expect("depth"), 1);
    // A duplicate run id fails and enqueues nothing.
    let e = store
        .create_run_enqueued(&r, &created(&r), "txq2")
        .await
        .expect_err("duplicate accepted");
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert_eq!(queue.depth("txq2").await.expect("depth"), 0);
    let d = queue
        .receive(
            &["txq".to_string()],
            10,
            Duration::from_secs(30),
            Duration::from_secs(5),
        )
        .await
        .expect("receive");
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].message, Message::new(r.run_id.clone(), 1));
    assert_eq!(store.run_events(&r.run_id).await.expect("events").len(), 1);
}

#[tokio::test]
async fn leases_are_exclusive_across_two_opens_of_one_file() {
    let db = TempDb::new();
    let a = db.open().await;
    let b = db.open().await;
    let ttl = Duration::from_millis(600);
    assert!(a.try_lease("status", "A", ttl).await.expect("lease"));
    assert!(!b.try_lease("status", "B", ttl).await.expect("lease"));
    assert!(a.try_lease("status", "A", ttl).await.expect("renew"));
    let mut took = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if b.try_lease("status", "B", ttl).await.expect("lease") {
            took = true;
            break;
        }
    }
    assert!(took, "B never took the expired lease");
    assert!(!a.try_lease("status", "A", ttl).await.expect("lease"));
    b.release_lease("status", "B").await.expect("release");
    assert!(a.try_lease("status", "A", ttl).await.expect("lease"));
}

#[tokio::test]
async fn concurrent_writers_on_two_opens_never_fail() {
    let db = TempDb::new();
    let a = db.open().await;
    let b = db.open().await;
    // Two writers on one file (as two processes would be): the busy
    // timeout makes each wait for the other's lock instead of failing.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.spawn(async move {
            let r = run("two", "two", "o", i);
            store.create_run(&r, &created(&r)).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("join").expect("a write failed");
    }
    let page = a
        .list_runs(&RunQuery {
            clusters: vec!["two".into()],
            ..RunQuery::all(0)
        })
        .await
        .expect("list");
    assert_eq!(page.total, 64);
}

#[tokio::test]
async fn open_errors_name_the_path_and_closed_stores_are_unavailable() {
    let db = TempDb::new();
    let not_db = db.dir.path().join("not-a-db");
    std::fs::write(
        &not_db,
        "this is not an SQLite database, not even close.......",
    )
    .expect("write");
    let e = SqliteStore::open(&not_db, SqliteOptions::default())
        .await
        .expect_err("a text file opened as a database");
    assert!(
        e.message().contains("migration") || e.message().contains("path"),
        "{e}"
    );
    let blocker = db.dir.path().join("file");
    std::fs::write(&blocker, "x").expect("write");
    let e = SqliteStore::open(blocker.join("sub").join("f.db"), SqliteOptions::default())
        .await
        .expect_err("a file as directory accepted");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("path"), "{e}");
    let e = SqliteStore::open(
        db.path(),
        SqliteOptions {
            readers: 0,
            ..Default::default()
        },
    )
    .await
    .expect_err("no readers accepted");
    assert!(e.message().contains("readers"), "{e}");
    let store = db.open().await;
    store.close().await;
    let r = run("closed", "c", "o", 1);
    let e = store
        .create_run(&r, &created(&r))
        .await
        .expect_err("closed store wrote");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let e = store.get_run("x").await.expect_err("closed store read");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone_in_its_batch() {
    let db = TempDb::new();
    let store = db.open().await;
    let taken: Vec<Run> = (0..16).map(|i| run("dup", "dup", "o", i)).collect();
    for r in &taken {
        store.create_run(r, &created(r)).await.expect("create");
    }
    // Duplicates and new runs written at once share batches: each
    // duplicate fails with Conflict, every new run is stored.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..64 {
        let store = store.clone();
        let r = if i % 2 == 0 {
            taken[i / 4].clone()
        } else {
            run("dup", "dup", "o", 100 + i as i64)
        };
        tasks.spawn(async move { (i % 2 == 0, store.create_run(&r, &created(&r)).await) });
    }
    while let Some(r) = tasks.join_next().await {
        match r.expect("join") {
            (true, res) => assert_eq!(
                res.expect_err("duplicate stored").kind(),
                ErrorKind::Conflict
            ),
            (false, res) => res.expect("a new run failed with its batch"),
        }
    }
    let page = store
        .list_runs(&RunQuery {
            clusters: vec!["dup".into()],
            ..RunQuery::all(0)
        })
        .await
        .expect("list");
    assert_eq!(page.total, 16 + 32);
    for r in &taken {
        assert_eq!(store.run_events(&r.run_id).await.expect("events").len(), 1);
    }
}
