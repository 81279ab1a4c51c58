//! The server on PostgreSQL: `store = "postgres"`, `queue = "postgres"`.
//!
//! Needs `FLOTILLA_TEST_DATABASE_URL` (a PostgreSQL the tests may write
//! to). Without it the test fails when `CI` is set, and says loudly that it
//! did not run otherwise.

mod common;

use serde_json::json;

#[tokio::test]
async fn quick_start_on_postgres() {
    let Some(url) = common::test_database_url("quick_start_on_postgres") else {
        return;
    };
    let (s, cluster) = common::start_on_postgres(url).await;
    let alias = format!("hello-{}", uuid::Uuid::now_v7().simple());
    let mut def: serde_json::Value =
        serde_json::from_str(&common::hello_world()).expect("hello-world.json");
    def["alias"] = json!(alias);
    let (code, d) = s.post("/task", &def).await;
    assert_eq!(code, 200, "{d}");
    let (code, run) = s
        .put(
            &format!("/task/alias/{alias}/execute"),
            &json!({"cluster": cluster, "env": [{"name": "USERNAME", "value": "me"}], "run_tags": {"owner_id": "me"}}),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let id = run["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    assert!(s.log_text(&id).await.contains("hello me"));
    let (code, h) = s
        .get(&format!("/history?cluster_name={cluster}&status=STOPPED"))
        .await;
    assert_eq!(code, 200);
    assert_eq!(h["total"], 1);
    let (code, _) = s
        .delete(&format!(
            "/task/{}",
            d["definition_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(code, 200);
    s.server.shutdown().await;
}
