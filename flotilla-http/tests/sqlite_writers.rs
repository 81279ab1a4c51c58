//! 32 HTTP clients writing at once for 10 s to the default SQLite backend
//! see no error: every write goes through the one batching writer, so no
//! client ever meets `SQLITE_BUSY` or a 500.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flotilla_http::config::WorkerName;
use flotilla_http::{QueueKind, StoreKind};
use serde_json::json;

const WRITERS: usize = 32;
const FOR: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_http_writers_for_ten_seconds_see_no_error() {
    let s = Arc::new(
        common::start_with(|c| {
            assert_eq!((c.store, c.queue), (StoreKind::Sqlite, QueueKind::Sqlite));
            // Runs stay QUEUED (no thousands of local processes); the other
            // workers keep writing alongside the clients.
            c.enabled_workers = vec![WorkerName::Status, WorkerName::Retry, WorkerName::Reconcile];
        })
        .await,
    );
    let base = s.define("w-base", "true").await;
    let base_id = base["definition_id"].as_str().expect("id").to_string();
    let writes = Arc::new(AtomicU64::new(0));
    let deadline = tokio::time::Instant::now() + FOR;
    let mut clients = tokio::task::JoinSet::new();
    for w in 0..WRITERS {
        let s = s.clone();
        let writes = writes.clone();
        let base_id = base_id.clone();
        clients.spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0u64;
            while tokio::time::Instant::now() < deadline {
                i += 1;
                let (code, body) = match i % 4 {
                    // A new definition, then an update of it.
                    0 => {
                        let alias = format!("w{w}-{i}");
                        let (code, def) = s
                            .post(
                                "/task",
                                &json!({"alias": alias, "image": "img", "command": "true",
                                        "env": [{"name": "W", "value": w.to_string()}]}),
                            )
                            .await;
                        if code != 200 {
                            (code, def)
                        } else {
                            let id = def["definition_id"].as_str().unwrap_or("").to_string();
                            s.put(
                                &format!("/task/{id}"),
                                &json!({"image": "img2", "command": "true"}),
                            )
                            .await
                        }
                    }
                    // A read among the writes.
                    1 => {
                        s.get("/history?limit=20&sort_by=started_at&order=desc")
                            .await
                    }
                    // Runs, each a run row, an event and a queue row.
                    _ => {
                        s.put(
                            &format!("/task/{base_id}/execute"),
                            &json!({"run_tags": {"owner_id": format!("o{w}")},
                                    "env": [{"name": "I", "value": i.to_string()}]}),
                        )
                        .await
                    }
                };
                if code == 200 {
                    writes.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.push(format!("{code}: {body}"));
                }
            }
            errors
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = clients.join_next().await {
        errors.extend(r.expect("client"));
    }
    assert!(
        errors.is_empty(),
        "{} errors, first: {:?}",
        errors.len(),
        errors.first()
    );
    let done = writes.load(Ordering::Relaxed);
    assert!(done > 0, "no request completed");
    // Everything acknowledged is there.
    let (code, history) = s.get("/history?limit=1").await;
    assert_eq!(code, 200);
    let runs = history["total"].as_u64().expect("total");
    assert!(runs > 0, "{history}");
    eprintln!(
        "{WRITERS} writers, {} s: {done} requests, {runs} runs",
        FOR.as_secs()
    );
}
