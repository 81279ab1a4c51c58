//! Crash safety on a real PostgreSQL:
//! (a) a process that claims deliveries is SIGKILLed before acking: its runs
//!     are delivered again after the lease and each is submitted once;
//! (b) three `Flotilla` instances sharing one database run 5,000 runs to
//!     STOPPED with no double submission, no lost run, and singleton leases
//!     that never overlap;
//! (c) the database restarted mid-load: the service reconnects and every
//!     run still reaches STOPPED.
//!
//! The child process of (a) is this test binary run again with
//! `FLOTILLA_CLAIMER_URL` set, selecting the [`claimer_child`] entry point
//! (which does nothing when that variable is not set).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use flotilla::{ExecuteRequest, Flotilla, NewDefinition, Queue};
use flotilla_postgres::{PgOptions, PgStore};
use futures::StreamExt;
use support::{CountingEngine, Counts, fast_config};
use tokio::io::AsyncBufReadExt;

const CLAIMER_URL: &str = "FLOTILLA_CLAIMER_URL";
const CLAIMER_COUNT: &str = "FLOTILLA_CLAIMER_COUNT";

macro_rules! db {
    ($name:expr) => {
        match support::fresh_db($name).await {
            Some(db) => db,
            None => return,
        }
    };
}

fn service(store: &PgStore, counts: &Counts, replica: &str) -> Flotilla {
    Flotilla::builder()
        .store(Arc::new(store.clone()))
        .queue(Arc::new(store.queue()))
        .engine(Arc::new(CountingEngine::new(counts.clone())))
        .config(fast_config(replica))
        .build()
        .expect("build the service")
}

/// Counts runs by status, straight from the table.
async fn statuses(store: &PgStore) -> HashMap<String, i64> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM runs GROUP BY status")
            .fetch_all(store.pool())
            .await
            .expect("count statuses");
    rows.into_iter().collect()
}

/// Waits until `n` runs are STOPPED; panics with the status counts after
/// `limit` (a safety net, not a timing assertion).
async fn wait_stopped(store: &PgStore, n: i64, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let s = tokio::time::timeout(Duration::from_secs(10), statuses(store))
            .await
            .unwrap_or_default();
        if s.get("STOPPED").copied().unwrap_or(0) >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs did not all reach STOPPED: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every run STOPPED with exit 0 and submitted exactly once per attempt.
async fn assert_exactly_once(store: &PgStore, counts: &Counts, n: usize) {
    let rows: Vec<(String, String, i32)> =
        sqlx::query_as("SELECT run_id, status, (doc->>'attempt')::int FROM runs")
            .fetch_all(store.pool())
            .await
            .expect("read runs");
    assert_eq!(rows.len(), n, "lost or extra runs");
    let submitted = counts.snapshot();
    for (run_id, status, attempt) in &rows {
        assert_eq!(status, "STOPPED", "run {run_id}");
        let c = submitted
            .get(&(run_id.clone(), u32::try_from(*attempt).unwrap_or(0)))
            .copied()
            .unwrap_or(0);
        assert_eq!(c, 1, "run {run_id} attempt {attempt} submitted {c} times");
    }
    assert_eq!(submitted.len(), n, "submits for unknown runs");
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE (doc->>'exit_code')::bigint IS DISTINCT FROM 0",
    )
    .fetch_one(store.pool())
    .await
    .expect("count failures");
    assert_eq!(failed, 0, "runs that did not exit 0");
}

/// Entry point of the child process of `killed_claimer_loses_nothing`:
/// claims deliveries, reports them on stdout, and waits to be killed.
#[tokio::test]
async fn claimer_child() {
    let Ok(url) = std::env::var(CLAIMER_URL) else {
        return;
    };
    let want: usize = std::env::var(CLAIMER_COUNT)
        .ok()
        .and_then(|v| v.parse().ok())
        .expect("claimer count");
    let store = PgStore::connect(&url, PgOptions::default())
        .await
        .expect("child connects");
    // The child also holds the status lease when it dies: the parent's
    // status worker can only finish the runs after taking it over.
    assert!(
        flotilla::Store::try_lease(&store, "status", "claimer-child", Duration::from_secs(3))
            .await
            .expect("child takes the status lease"),
        "the status lease was taken"
    );
    let queue = store.queue();
    let mut claimed = Vec::new();
    while claimed.len() < want {
        let d = queue
            .receive(
                &["default".to_string()],
                want - claimed.len(),
                Duration::from_secs(8),
                Duration::from_secs(5),
            )
            .await
            .expect("child receives");
        claimed.extend(d.into_iter().map(|d| d.message.run_id));
    }
    println!("\nCLAIMED {}", claimed.join(","));
    tokio::time::sleep(Duration::from_secs(600)).await;
    panic!("the claimer child was not killed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_claimer_loses_nothing() {
    support::init_tracing();
    let db = db!("killed_claimer_loses_nothing");
    let store = db.store().await;
    let counts = Counts::default();
    let f = service(&store, &counts, "parent");
    let def = f
        .define(NewDefinition::new("crash-a", "img").command("true"))
        .await
        .expect("define");
    let n = 40;
    let mut ids = Vec::new();
    for _ in 0..n {
        let r = f
            .execute(&def.definition_id, ExecuteRequest::owned_by("a"))
            .await
            .expect("execute");
        ids.push(r.run_id);
    }
    assert_eq!(store.queue().depth("default").await.expect("depth"), n);

    let exe = std::env::current_exe().expect("current exe");
    let mut child = tokio::process::Command::new(exe)
        .args([
            "--exact",
            "claimer_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CLAIMER_URL, &db.url)
        .env(CLAIMER_COUNT, n.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the claimer child");
    let stdout = child.stdout.take().expect("child stdout");
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut claimed = None;
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read child") {
            // The harness may print "test claimer_child ... " first on
            // the same line.
            if let Some((_, rest)) = line.split_once("CLAIMED ") {
                claimed = Some(rest.split(',').map(str::to_string).collect::<Vec<_>>());
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the child never reported its claims");
    let mut claimed = claimed.expect("the child exited without claiming");
    // SIGKILL before any ack.
    child.start_kill().expect("SIGKILL the child");
    let status = child.wait().await.expect("reap the child");
    assert!(!status.success(), "the child was not killed: {status}");
    claimed.sort();
    ids.sort();
    assert_eq!(claimed, ids, "the child claimed every run");
    // Every message is still there, claimed once, leased to the dead child.
    let (left, once): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE deliveries = 1) FROM queue_messages",
    )
    .fetch_one(store.pool())
    .await
    .expect("queue state");
    assert_eq!((left, once), (n as i64, n as i64));
    assert!(counts.snapshot().is_empty(), "nothing was submitted yet");

    let holder: Option<String> =
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'status'")
            .fetch_optional(store.pool())
            .await
            .expect("status lease");
    assert_eq!(holder.as_deref(), Some("claimer-child"));

    // The service picks them up once the child's queue lease ends, and
    // finishes them once its status lease has expired and was taken over.
    let handle = f.start();
    wait_stopped(&store, n as i64, Duration::from_secs(120)).await;
    let holder: Option<String> =
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'status'")
            .fetch_optional(store.pool())
            .await
            .expect("status lease");
    assert_eq!(
        holder.as_deref(),
        Some("parent"),
        "the parent took the lease over"
    );
    handle.shutdown().await;
    assert_exactly_once(&store, &counts, n as usize).await;
    assert_eq!(store.queue().depth("default").await.expect("depth"), 0);
}

/// Records every lease change so overlaps can be checked afterwards.
async fn audit_leases(store: &PgStore) {
    for sql in [
        "CREATE TABLE lease_audit (seq bigserial, name text, holder text, at timestamptz, expires_at timestamptz)",
        "CREATE FUNCTION audit_lease() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF TG_OP = 'DELETE' THEN \
             INSERT INTO lease_audit (name, holder, at, expires_at) VALUES (OLD.name, OLD.holder, clock_timestamp(), clock_timestamp()); \
             RETURN OLD; \
           END IF; \
           INSERT INTO lease_audit (name, holder, at, expires_at) VALUES (NEW.name, NEW.holder, clock_timestamp(), NEW.expires_at); \
           RETURN NEW; END $$",
        "CREATE TRIGGER lease_audit AFTER INSERT OR UPDATE OR DELETE ON leases \
           FOR EACH ROW EXECUTE FUNCTION audit_lease()",
    ] {
        sqlx::query(sql)
            .execute(store.pool())
            .await
            .expect("install the lease audit");
    }
}

/// No holder took a lease before the previous holder's lease had ended.
async fn assert_leases_never_overlapped(store: &PgStore) -> HashMap<String, Vec<String>> {
    let rows: Vec<(
        String,
        String,
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as("SELECT name, holder, at, expires_at FROM lease_audit ORDER BY seq")
        .fetch_all(store.pool())
        .await
        .expect("read the lease audit");
    let mut last: HashMap<String, (String, chrono::DateTime<chrono::Utc>)> = HashMap::new();
    let mut holders: HashMap<String, Vec<String>> = HashMap::new();
    for (name, holder, at, expires) in rows {
        if let Some((prev, prev_expires)) = last.get(&name)
            && *prev != holder
        {
            assert!(
                at >= *prev_expires,
                "lease {name}: {holder} took it at {at} while {prev} held it until {prev_expires}"
            );
        }
        let h = holders.entry(name.clone()).or_default();
        if h.last() != Some(&holder) {
            h.push(holder.clone());
        }
        last.insert(name, (holder, expires));
    }
    holders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_5000_runs_exactly_once() {
    support::init_tracing();
    let db = db!("three_replicas_run_5000_runs_exactly_once");
    let n: usize = std::env::var("FLOTILLA_CRASH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let counts = Counts::default();
    let mut stores = Vec::new();
    let mut services = Vec::new();
    for i in 0..3 {
        let store = db
            .store_with(PgOptions {
                max_connections: 8,
                ..Default::default()
            })
            .await;
        services.push(service(&store, &counts, &format!("replica-{i}")));
        stores.push(store);
    }
    audit_leases(&stores[0]).await;
    let mut handles: Vec<Option<_>> = services.iter().map(|f| Some(f.start())).collect();
    let def = services[0]
        .define(NewDefinition::new("crash-b", "img").command("true"))
        .await
        .expect("define");
    // Executes spread over the replicas, while they dispatch.
    let executed: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let f = services[i % 3].clone();
            let def_id = def.definition_id.clone();
            async move { f.execute(&def_id, ExecuteRequest::owned_by("b")).await }
        })
        .buffer_unordered(24)
        .collect()
        .await;
    for r in &executed {
        r.as_ref().expect("execute");
    }
    // Halfway through the drain, the status lease holder goes away; another
    // replica takes over.
    let holder: Option<String> =
        sqlx::query_scalar("SELECT holder FROM leases WHERE name = 'status'")
            .fetch_optional(stores[0].pool())
            .await
            .expect("status lease holder");
    if let Some(h) = holder
        && let Some(i) = (0..3).find(|i| h == format!("replica-{i}"))
        && let Some(handle) = handles[i].take()
    {
        handle.shutdown().await;
    }
    wait_stopped(&stores[0], n as i64, Duration::from_secs(240)).await;
    for h in handles.iter_mut() {
        if let Some(h) = h.take() {
            h.shutdown().await;
        }
    }
    assert_exactly_once(&stores[0], &counts, n).await;
    let holders = assert_leases_never_overlapped(&stores[0]).await;
    assert!(
        holders.get("status").is_some_and(|h| !h.is_empty()),
        "the status lease was never taken: {holders:?}"
    );
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages")
        .fetch_one(stores[0].pool())
        .await
        .expect("queue depth");
    assert_eq!(left, 0, "messages left in the queue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_restart_mid_load_loses_nothing() {
    support::init_tracing();
    // `-m immediate` is a crash: commits must be flushed before they are
    // acknowledged (synchronous_commit=on), as in production.
    let Some(cluster) = support::private_cluster(
        "database_restart_mid_load_loses_nothing",
        &["synchronous_commit=on"],
    ) else {
        return;
    };
    let db = support::create_database(&cluster.url("postgres")).await;
    let store = db
        .store_with(PgOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            ..Default::default()
        })
        .await;
    let counts = Counts::default();
    let f = service(&store, &counts, "restart");
    let handle = f.start();
    let def = f
        .define(NewDefinition::new("crash-c", "img").command("true"))
        .await
        .expect("define");
    let n = 600usize;
    let restart_after = n / 3;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let mut tx = Some(tx);
    let restarter = tokio::task::spawn_blocking(move || {
        if rx.blocking_recv().is_ok() {
            cluster.restart();
        }
        cluster
    });
    let mut done = 0usize;
    let mut retried = 0usize;
    let results: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let f = f.clone();
            let def_id = def.definition_id.clone();
            async move {
                // A client retries transient failures with the same
                // idempotence key, so a retry never makes a second run.
                let mut tries = 0;
                loop {
                    let mut req = ExecuteRequest::owned_by("c");
                    req.idempotence_key = Some(format!("restart-{i}"));
                    match f.execute(&def_id, req).await {
                        Ok(r) => return Ok((r, tries)),
                        Err(e) if e.is_retryable() && tries < 200 => {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        })
        .buffer_unordered(8)
        .inspect(|_| {
            done += 1;
            if done == restart_after
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(());
            }
        })
        .collect()
        .await;
    let cluster = restarter.await.expect("restart");
    for r in results {
        let (_, tries) = r.expect("execute");
        retried += tries;
    }
    wait_stopped(&store, n as i64, Duration::from_secs(120)).await;
    handle.shutdown().await;
    let rows: Vec<(String, i32)> =
        sqlx::query_as("SELECT run_id, (doc->>'attempt')::int FROM runs")
            .fetch_all(store.pool())
            .await
            .expect("read runs");
    assert_eq!(rows.len(), n, "one run per idempotence key");
    let submitted = counts.snapshot();
    for (run_id, attempt) in rows {
        let c = submitted
            .get(&(run_id.clone(), u32::try_from(attempt).unwrap_or(0)))
            .copied()
            .unwrap_or(0);
        // A submit whose PENDING write died with the server is submitted
        // again (engines are idempotent per attempt); none is skipped.
        assert!(c >= 1, "run {run_id} was never submitted");
    }
    let s = statuses(&store).await;
    assert_eq!(s.get("STOPPED").copied(), Some(n as i64), "{s:?}");
    eprintln!("restart test: {retried} execute retries during the restart");
    drop(cluster);
}
