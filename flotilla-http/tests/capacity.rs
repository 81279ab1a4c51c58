//! Capacity over real HTTP: a cluster takes and returns `capacity`, a run
//! takes `priority`, and a run held back by admission says why in
//! `waiting` (local engine, real processes).

mod common;

use std::time::Duration;

use common::start;
use serde_json::json;

#[tokio::test]
async fn a_cluster_of_one_run_holds_the_second_and_says_why() {
    let s = start().await;
    let (code, c) = s
        .put(
            "/clusters/default",
            &json!({"capacity": {"runs": 1, "memory": 2048}}),
        )
        .await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["capacity"], json!({"runs": 1, "memory": 2048}), "{c}");
    let (code, listed) = s.get("/clusters/default").await;
    assert_eq!(
        (code, listed["capacity"].clone()),
        (200, c["capacity"].clone())
    );
    let (code, bad) = s
        .put("/clusters/default", &json!({"capacity": {"memory": -1}}))
        .await;
    assert_eq!(code, 400, "{bad}");

    s.define("hold", "sleep 2").await;
    s.define("quick", "true").await;
    let first = s.execute("hold", "me").await;
    let first_id = first["run_id"].as_str().expect("run_id").to_string();
    s.wait_running(&first_id).await;
    let (code, second) = s
        .put(
            "/task/alias/quick/execute",
            &json!({"run_tags": {"owner_id": "you"}, "priority": 5}),
        )
        .await;
    assert_eq!(code, 200, "{second}");
    assert_eq!(second["priority"], 5, "{second}");
    let id = second["run_id"].as_str().expect("run_id").to_string();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let waiting = loop {
        let (_, run) = s.get(&format!("/history/{id}")).await;
        if !run["waiting"].is_null() {
            break run["waiting"].clone();
        }
        assert_eq!(run["status"], "QUEUED", "held, not run: {run}");
        assert!(tokio::time::Instant::now() < deadline, "never held: {run}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        waiting,
        json!({"position": 1, "reason": "waiting for capacity: 1 of 1 runs active on cluster default"})
    );
    let done = s.wait_stopped(&id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert!(done.get("waiting").is_none(), "{done}");
    let (_, first) = s.get(&format!("/history/{first_id}")).await;
    assert_eq!(first["status"], "STOPPED", "the second ran after the first");

    // The usage history saw one run active and one waiting.
    let (code, usage) = s.get("/clusters/default/usage").await;
    assert_eq!(code, 200, "{usage}");
    assert_eq!(usage["capacity"]["runs"], 1, "{usage}");
    assert_eq!(
        (usage["running"].clone(), usage["waiting"].clone()),
        (json!(0), json!(0))
    );
    assert_eq!(usage["bucket_seconds"], 10);
    let samples = usage["samples"].as_array().expect("samples");
    assert_eq!(samples.len(), 360, "one hour of 10 s buckets");
    let most = |key: &str| samples.iter().filter_map(|x| x[key].as_u64()).max();
    assert_eq!(most("running"), Some(1), "one run ran in the hour");
    assert_eq!(most("waiting"), Some(1), "one run waited in the hour");
    let (code, missing) = s.get("/clusters/nowhere/usage").await;
    assert_eq!(code, 404, "{missing}");
    assert!(
        missing["error"]
            .as_str()
            .is_some_and(|e| e.contains("nowhere")),
        "{missing}"
    );
}
