//! `PgStore` on a real PostgreSQL: the core conformance suite, keyset
//! pagination, SQL injection, transactional execute, leases across pools.

mod support;

use std::time::Duration;

use flotilla::model::{self, EnvVar};
use flotilla::{
    DefinitionQuery, DefinitionSortField, ErrorKind, Expected, Message, NewDefinition, Queue, Run,
    RunEvent, RunQuery, RunSortField, RunStatus, RunUpdate, SortOrder, Store, TimeRange,
};
use flotilla_postgres::{PgOptions, PgStore};

macro_rules! db {
    ($name:expr) => {
        match support::fresh_db($name).await {
            Some(db) => db,
            None => return,
        }
    };
}

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
async fn conformance_suite() {
    let db = db!("conformance_suite");
    let store = db.store().await;
    flotilla::testkit::store_suite(&store).await;
}

#[tokio::test]
async fn keyset_pages_agree_with_offset_pages() {
    let db = db!("keyset_pages_agree_with_offset_pages");
    let store = db.store().await;
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
}

#[tokio::test]
async fn sql_injection_matches_nothing_and_never_errors() {
    let db = db!("sql_injection_matches_nothing_and_never_errors");
    let store = db.store().await;
    let mut def = NewDefinition::new("inj-def", "img").into_definition();
    def.group_name = "g".into();
    def.tags = vec!["t".into()];
    def.env = vec![EnvVar::new("A", "1")];
    store.create_definition(&def).await.expect("define");
    for n in 0..5 {
        let r = run("inj", "injc", "alice", n);
        store.create_run(&r, &created(&r)).await.expect("create");
    }
    let hostile = [
        "'",
        "''",
        "\"",
        "%",
        "_",
        "\\",
        "' OR '1'='1",
        "x' OR 1=1 --",
        "'; DROP TABLE runs; --",
        "inj' UNION SELECT doc, version FROM runs --",
        "$1",
        "%' OR alias LIKE '%",
        "{\"name\":\"N\"}",
        ")) OR TRUE --",
    ];
    for h in hostile {
        let queries = [
            RunQuery {
                aliases: vec![h.into()],
                ..RunQuery::all(100)
            },
            RunQuery {
                clusters: vec![h.into()],
                ..RunQuery::all(100)
            },
            RunQuery {
                owners: vec![h.into()],
                ..RunQuery::all(100)
            },
            RunQuery {
                definition_id: Some(h.into()),
                ..RunQuery::all(100)
            },
            RunQuery {
                engine: Some(h.into()),
                ..RunQuery::all(100)
            },
            RunQuery {
                env: vec![EnvVar::new(h, "1")],
                ..RunQuery::all(100)
            },
            RunQuery {
                env: vec![EnvVar::new("N", h)],
                ..RunQuery::all(100)
            },
        ];
        for q in queries {
            let page = store
                .list_runs(&q)
                .await
                .unwrap_or_else(|e| panic!("filter {h:?} errored: {e}"));
            assert_eq!(page.total, 0, "filter {h:?} matched rows: {q:?}");
            assert!(page.items.is_empty());
        }
        let dq = [
            DefinitionQuery {
                alias: Some(h.into()),
                limit: 100,
                ..Default::default()
            },
            DefinitionQuery {
                image: Some(h.into()),
                limit: 100,
                ..Default::default()
            },
            DefinitionQuery {
                group_name: Some(h.into()),
                limit: 100,
                ..Default::default()
            },
            DefinitionQuery {
                env: vec![EnvVar::new("A", h)],
                limit: 100,
                ..Default::default()
            },
        ];
        for q in dq {
            let page = store
                .list_definitions(&q)
                .await
                .unwrap_or_else(|e| panic!("definition filter {h:?} errored: {e}"));
            assert_eq!(page.total, 0, "definition filter {h:?} matched: {q:?}");
        }
        for page in [
            store.list_groups(Some(h), 10, 0).await,
            store.list_tags(Some(h), 10, 0).await,
        ] {
            let page = page.unwrap_or_else(|e| panic!("groups/tags {h:?} errored: {e}"));
            assert_eq!(page.total, 0, "groups/tags {h:?} matched");
        }
        for f in [
            store.get_run(h).await.map(|_| ()),
            store.get_definition(h).await.map(|_| ()),
            store.get_definition_by_alias(h).await.map(|_| ()),
            store.get_cluster(h).await.map(|_| ()),
        ] {
            let e = f.expect_err("hostile id found something");
            assert_eq!(e.kind(), ErrorKind::NotFound, "{h:?}: {e}");
        }
        // Sort parameters come from a whitelist: anything else is 400.
        let e = h
            .parse::<RunSortField>()
            .expect_err("hostile sort accepted");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        let e = h.parse::<SortOrder>().expect_err("hostile order accepted");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        // A forged cursor is 400, never a database error.
        let e = store
            .list_runs(&RunQuery {
                cursor: Some(h.into()),
                ..RunQuery::all(10)
            })
            .await
            .expect_err("hostile cursor accepted");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{h:?}: {e}");
        let forged = flotilla::Cursor {
            sort_by: RunSortField::QueuedAt,
            order: SortOrder::Asc,
            value: Some(h.into()),
            id: h.into(),
        };
        let e = store
            .list_runs(&RunQuery {
                sort_by: RunSortField::QueuedAt,
                cursor: Some(forged.encode()),
                ..RunQuery::all(10)
            })
            .await
            .expect_err("forged time cursor accepted");
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{h:?}: {e}");
        let forged = flotilla::Cursor {
            sort_by: RunSortField::Alias,
            order: SortOrder::Asc,
            value: Some(h.into()),
            id: h.into(),
        };
        let page = store
            .list_runs(&RunQuery {
                sort_by: RunSortField::Alias,
                aliases: vec!["inj".into()],
                cursor: Some(forged.encode()),
                ..RunQuery::all(10)
            })
            .await
            .unwrap_or_else(|e| panic!("text cursor {h:?} errored: {e}"));
        assert!(page.items.len() <= 5, "cursor {h:?} returned extra rows");
    }
    // NUL cannot be stored in PostgreSQL text: a 400 naming the field.
    let e = store
        .list_runs(&RunQuery {
            aliases: vec!["a\0b".into()],
            ..RunQuery::all(10)
        })
        .await
        .expect_err("NUL accepted");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("alias"), "{e}");
    // The tables are intact and nothing leaked.
    let all = store
        .list_runs(&RunQuery {
            aliases: vec!["inj".into()],
            ..RunQuery::all(100)
        })
        .await
        .expect("list");
    assert_eq!(all.total, 5);
    let f = store
        .list_runs(&RunQuery {
            env: vec![EnvVar::new("PARITY", "even")],
            ..RunQuery::all(100)
        })
        .await
        .expect("env filter");
    assert_eq!(f.total, 3, "env containment filter");
}

#[tokio::test]
async fn filters_and_time_ranges() {
    let db = db!("filters_and_time_ranges");
    let store = db.store().await;
    let mut runs = Vec::new();
    for n in 0..6 {
        let r = run(
            if n < 3 { "fa" } else { "fb" },
            "fc",
            if n % 2 == 0 { "o1" } else { "o2" },
            n,
        );
        store.create_run(&r, &created(&r)).await.expect("create");
        runs.push(r);
    }
    let q = RunQuery {
        aliases: vec!["fa".into()],
        owners: vec!["o1".into()],
        ..RunQuery::all(10)
    };
    assert_eq!(store.list_runs(&q).await.expect("list").total, 2);
    let q = RunQuery {
        clusters: vec!["fc".into()],
        queued: TimeRange {
            since: runs[2].queued_at,
            until: runs[4].queued_at,
        },
        ..RunQuery::all(10)
    };
    assert_eq!(store.list_runs(&q).await.expect("list").total, 3);
    let q = RunQuery {
        clusters: vec!["fc".into()],
        started: TimeRange {
            since: Some(model::now() - chrono::Duration::days(1)),
            until: None,
        },
        ..RunQuery::all(10)
    };
    // n = 0 and 3 have no start time and fall outside a bounded range.
    assert_eq!(store.list_runs(&q).await.expect("list").total, 4);
    let q = RunQuery {
        clusters: vec!["fc".into()],
        ..RunQuery::all(10)
    }
    .with_statuses(&[RunStatus::Pending, RunStatus::Running]);
    assert_eq!(store.list_runs(&q).await.expect("list").total, 0);
    let mut defs = Vec::new();
    for (i, alias) in ["Zeta", "alpha", "Beta-x"].iter().enumerate() {
        let mut d = NewDefinition::new(*alias, format!("repo/img{i}")).into_definition();
        d.memory = if i == 1 { None } else { Some(i as i64 * 100) };
        store.create_definition(&d).await.expect("define");
        defs.push(d);
    }
    let page = store
        .list_definitions(&DefinitionQuery {
            alias: Some("BETA".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("defs");
    assert_eq!(page.total, 1, "alias contains, case-insensitive");
    let page = store
        .list_definitions(&DefinitionQuery {
            sort_by: DefinitionSortField::Memory,
            order: SortOrder::Asc,
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("defs");
    let aliases: Vec<&str> = page.items.iter().map(|d| d.alias.as_str()).collect();
    assert_eq!(
        aliases,
        ["Zeta", "Beta-x", "alpha"],
        "memory asc, missing last"
    );
}

#[tokio::test]
async fn create_run_enqueued_is_atomic() {
    let db = db!("create_run_enqueued_is_atomic");
    let store = db.store().await;
    let queue = store.queue();
    assert_eq!(
        Store::transaction_domain(&store),
        Queue::transaction_domain(&queue),
        "a store and its queue share a transaction domain"
    );
    let other = PgStore::from_pool(store.pool().clone());
    assert_ne!(
        Store::transaction_domain(&other),
        Queue::transaction_domain(&queue)
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
async fn leases_are_exclusive_across_pools() {
    let db = db!("leases_are_exclusive_across_pools");
    let a = db.store().await;
    let b = db
        .store_with(PgOptions {
            migrate: true,
            max_connections: 2,
            ..Default::default()
        })
        .await;
    let ttl = Duration::from_millis(600);
    assert!(a.try_lease("status", "A", ttl).await.expect("lease"));
    assert!(!b.try_lease("status", "B", ttl).await.expect("lease"));
    assert!(a.try_lease("status", "A", ttl).await.expect("renew"));
    // B takes over once A stops renewing.
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
async fn migrations_are_idempotent_and_errors_map_to_kinds() {
    let db = db!("migrations_are_idempotent_and_errors_map_to_kinds");
    let (a, b) = tokio::join!(db.store(), db.store());
    flotilla_postgres::migrate(a.pool())
        .await
        .expect("migrate again");
    drop(b);
    let e = PgStore::connect(
        &db.url,
        PgOptions {
            max_connections: 1,
            ..Default::default()
        },
    )
    .await
    .expect_err("a pool of one accepted");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert!(e.message().contains("max_connections"), "{e}");
    let e = PgStore::connect("not a url", PgOptions::default())
        .await
        .expect_err("bad url accepted");
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    // Nothing listens on port 1.
    let e = PgStore::connect(
        "postgres://postgres@127.0.0.1:1/x",
        PgOptions {
            acquire_timeout: Duration::from_secs(2),
            ..Default::default()
        },
    )
    .await
    .expect_err("unreachable server accepted");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    a.pool().close().await;
    let e = a.get_run("x").await.expect_err("closed pool answered");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
}

#[tokio::test]
async fn pooled_connections_have_jit_off_and_the_statement_timeout() {
    let db = db!("pooled_connections_have_jit_off_and_the_statement_timeout");
    let store = db
        .store_with(PgOptions {
            statement_timeout: Some(Duration::from_millis(300)),
            ..Default::default()
        })
        .await;
    let (jit, timeout): (String, String) =
        sqlx::query_as("SELECT current_setting('jit'), current_setting('statement_timeout')")
            .fetch_one(store.pool())
            .await
            .expect("settings");
    assert_eq!((jit.as_str(), timeout.as_str()), ("off", "300ms"));
    let e = sqlx::query("SELECT pg_sleep(2)")
        .execute(store.pool())
        .await
        .expect_err("a statement outlived the timeout");
    let code = e
        .as_database_error()
        .and_then(|d| d.code().map(|c| c.to_string()));
    assert_eq!(code.as_deref(), Some("57014"), "{e}");
    // No timeout asked: the server's (0 here).
    let store = db
        .store_with(PgOptions {
            statement_timeout: None,
            jit: true,
            ..Default::default()
        })
        .await;
    let (jit, timeout): (String, String) =
        sqlx::query_as("SELECT current_setting('jit'), current_setting('statement_timeout')")
            .fetch_one(store.pool())
            .await
            .expect("settings");
    assert_eq!((jit.as_str(), timeout.as_str()), ("on", "0"));
}

/// The ids in `runs_in_flight` and the ids of the PENDING and RUNNING runs,
/// both sorted.
async fn in_flight_sets(store: &PgStore) -> (Vec<String>, Vec<String>) {
    let kept: Vec<String> = sqlx::query_scalar("SELECT run_id FROM runs_in_flight ORDER BY run_id")
        .fetch_all(store.pool())
        .await
        .expect("runs_in_flight");
    let found: Vec<String> = sqlx::query_scalar(
        "SELECT run_id FROM runs WHERE status IN ('PENDING', 'RUNNING') ORDER BY run_id",
    )
    .fetch_all(store.pool())
    .await
    .expect("runs");
    (kept, found)
}

fn moved(run: &Run, to: RunStatus) -> (Run, Expected, RunEvent) {
    let mut next = run.clone();
    next.status = to;
    let event = RunEvent {
        run_id: run.run_id.clone(),
        at: model::now(),
        from: Some(run.status),
        to,
        attempt: run.attempt,
        reason: None,
    };
    (next, Expected::of(run), event)
}

/// One batch item per run, moving it to `to`.
fn all_moved(runs: &[Run], to: RunStatus) -> Vec<RunUpdate> {
    runs.iter()
        .map(|r| {
            let (next, expected, ev) = moved(r, to);
            RunUpdate::new(next, expected, Some(ev))
        })
        .collect()
}

/// Applies a batch every item of which must apply.
async fn apply_all(store: &PgStore, items: &[RunUpdate]) -> Vec<Run> {
    store
        .update_runs(items)
        .await
        .expect("batch")
        .into_iter()
        .map(|r| r.expect("item"))
        .collect()
}

/// `runs_in_flight` holds exactly the PENDING and RUNNING runs after every
/// kind of write (single and batched updates, conflicting ones, a run
/// created in flight), and lists of in-flight statuses, which read it,
/// find every such run.
#[tokio::test]
async fn runs_in_flight_holds_exactly_the_pending_and_running_runs() {
    let db = db!("runs_in_flight_holds_exactly_the_pending_and_running_runs");
    let store = db.store().await;
    let mut runs = Vec::new();
    for n in 0..12 {
        let r = run("flight", "c1", "ana", n);
        store.create_run(&r, &created(&r)).await.expect("create");
        runs.push(store.get_run(&r.run_id).await.expect("get"));
    }
    // Created in flight (adopted from an engine, say).
    let mut adopted = run("flight", "c1", "ana", 99);
    adopted.status = RunStatus::Running;
    store
        .create_run(&adopted, &created(&adopted))
        .await
        .expect("create running");

    let check = |what: &'static str| {
        let store = store.clone();
        async move {
            let (kept, found) = in_flight_sets(&store).await;
            assert_eq!(kept, found, "after {what}");
            let mut listed: Vec<String> = store
                .list_runs(
                    &RunQuery::all(100).with_statuses(&[RunStatus::Pending, RunStatus::Running]),
                )
                .await
                .expect("list")
                .items
                .into_iter()
                .map(|r| r.run_id)
                .collect();
            listed.sort();
            assert_eq!(listed, found, "listed after {what}");
            found.len()
        }
    };
    assert_eq!(check("create").await, 1);

    // One at a time: QUEUED -> PENDING -> RUNNING -> STOPPED.
    let mut r0 = runs[0].clone();
    for to in [RunStatus::Pending, RunStatus::Running, RunStatus::Stopped] {
        let (next, expected, ev) = moved(&r0, to);
        r0 = store
            .update_run(&next, expected, Some(&ev))
            .await
            .expect("update");
    }
    assert_eq!(check("single updates").await, 1);

    // Batched: 10 runs to PENDING, then half of them to RUNNING, two of
    // those to NEEDS_RETRY and back to QUEUED, one stale item that must
    // change nothing.
    let pending = apply_all(&store, &all_moved(&runs[1..11], RunStatus::Pending)).await;
    assert_eq!(check("a batch to PENDING").await, 11);

    let mut items = all_moved(&pending[..5], RunStatus::Running);
    // Stale: runs[11] is QUEUED version 0, this expects PENDING.
    let (mut stale, _, ev) = moved(&runs[11], RunStatus::Running);
    stale.status = RunStatus::Running;
    items.push(RunUpdate::new(
        stale,
        Expected {
            status: RunStatus::Pending,
            version: 0,
        },
        Some(ev),
    ));
    let answers = store.update_runs(&items).await.expect("batch");
    assert_eq!(
        answers.last().map(|a| a.as_ref().map_err(|e| e.kind())),
        Some(Err(ErrorKind::Conflict))
    );
    let running: Vec<Run> = answers
        .into_iter()
        .take(5)
        .map(|r| r.expect("item"))
        .collect();
    assert_eq!(check("a batch to RUNNING with a stale item").await, 11);

    let retrying = apply_all(&store, &all_moved(&running[..2], RunStatus::NeedsRetry)).await;
    assert_eq!(check("a batch to NEEDS_RETRY").await, 9);
    for r in &retrying {
        let (next, expected, ev) = moved(r, RunStatus::Queued);
        store
            .update_run(&next, expected, Some(&ev))
            .await
            .expect("requeue");
    }
    assert_eq!(check("back to QUEUED").await, 9);

    // Everything stops.
    let all = store
        .list_runs(&RunQuery::all(100).with_statuses(&[RunStatus::Pending, RunStatus::Running]))
        .await
        .expect("list")
        .items;
    apply_all(&store, &all_moved(&all, RunStatus::Stopped)).await;
    assert_eq!(check("a batch to STOPPED").await, 0);
}
