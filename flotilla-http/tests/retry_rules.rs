//! Retry rules over real HTTP: a definition takes `retry_strategy` in
//! snake_case or as a pasted AWS Batch `retryStrategy` block, returns it,
//! refuses bad rules with the field path named, replaces it on update and
//! clears it with `{}`, and a run executed with it is retried by it (local
//! engine, real processes). The OpenAPI document describes it.

mod common;

use common::start;
use serde_json::json;

#[tokio::test]
async fn definitions_take_return_replace_and_clear_retry_rules() {
    let s = start().await;
    // An AWS Batch job definition's block, pasted as is.
    let (code, def) = s
        .post(
            "/task",
            &json!({
                "alias": "batch-rules",
                "image": "ubuntu:latest",
                "command": "if [ \"$FLOTILLA_RUN_ATTEMPT\" = 1 ]; then exit 3; fi; echo second",
                "retryStrategy": {
                    "attempts": 2,
                    "evaluateOnExit": [
                        {"onExitCode": "3", "action": "retry"},
                        {"onExitCode": "*", "action": "EXIT"}
                    ]
                }
            }),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    assert_eq!(
        def["retry_strategy"],
        json!({
            "attempts": 2,
            "evaluate_on_exit": [
                {"on_exit_code": "3", "action": "RETRY"},
                {"on_exit_code": "*", "action": "EXIT"}
            ]
        }),
        "returned in this API's snake_case"
    );
    let id = def["definition_id"].as_str().expect("id").to_string();

    // A run executed with the rules carries them and is retried by them.
    let run = s.execute("batch-rules", "me").await;
    assert_eq!(run["retry_strategy"], def["retry_strategy"], "{run}");
    assert_eq!(run["max_attempts"], 2, "attempts is the run's limit");
    let done = s
        .wait_stopped(run["run_id"].as_str().expect("run_id"))
        .await;
    assert_eq!(
        (done["exit_code"].clone(), done["attempt"].clone()),
        (json!(0), json!(2)),
        "{done}"
    );

    // Bad rules: 400 naming the field path, on create and on update.
    let bad = json!({"evaluate_on_exit": [
        {"on_exit_code": "3", "action": "RETRY"},
        {"on_exit_code": "3x", "action": "EXIT"}
    ]});
    let (code, body) = s
        .post(
            "/task",
            &json!({"alias": "bad-rules", "image": "ubuntu", "retry_strategy": bad}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    let msg = body["error"].as_str().expect("error").to_string();
    assert!(
        msg.starts_with("retry_strategy.evaluate_on_exit[1].on_exit_code:"),
        "{msg}"
    );
    let (code, body) = s
        .put(&format!("/task/{id}"), &json!({"retry_strategy": bad}))
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("retry_strategy.evaluate_on_exit[1].on_exit_code:"),
        "{body}"
    );
    let (code, body) = s
        .put(
            &format!("/task/{id}"),
            &json!({"retry_strategy": {"evaluate_on_exit": [{"action": "EXIT"}]}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .starts_with("retry_strategy.evaluate_on_exit[0]: needs at least one of"),
        "{body}"
    );
    let (code, body) = s
        .put(
            &format!("/task/{id}"),
            &json!({"retry_strategy": {"attempts": 11}}),
        )
        .await;
    assert_eq!(code, 400, "{body}");

    // Absent keeps, an object replaces, `{}` clears.
    let (code, kept) = s.put(&format!("/task/{id}"), &json!({"memory": 256})).await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(
        kept["retry_strategy"], def["retry_strategy"],
        "absent keeps"
    );
    let (code, replaced) = s
        .put(
            &format!("/task/{id}"),
            &json!({"retry_strategy": {"evaluate_on_exit": [{"on_reason": "node_lost", "action": "EXIT"}]}}),
        )
        .await;
    assert_eq!(code, 200, "{replaced}");
    assert_eq!(
        replaced["retry_strategy"],
        json!({"evaluate_on_exit": [{"on_reason": "node_lost", "action": "EXIT"}]})
    );
    let (_, got) = s.get(&format!("/task/{id}")).await;
    assert_eq!(got["retry_strategy"], replaced["retry_strategy"], "stored");
    // flotilla-os PUTs back the whole definition it read: nothing changes.
    let (code, same) = s.put(&format!("/task/{id}"), &got).await;
    assert_eq!(code, 200, "{same}");
    assert_eq!(same["retry_strategy"], replaced["retry_strategy"]);
    // null is absent, as for every field of this API: it keeps.
    let (code, kept) = s
        .put(&format!("/task/{id}"), &json!({"retry_strategy": null}))
        .await;
    assert_eq!(code, 200, "{kept}");
    assert_eq!(
        kept["retry_strategy"], replaced["retry_strategy"],
        "null keeps"
    );
    let (code, cleared) = s
        .put(&format!("/task/{id}"), &json!({"retry_strategy": {}}))
        .await;
    assert_eq!(code, 200, "{cleared}");
    assert_eq!(
        cleared["retry_strategy"],
        json!(null),
        "an empty strategy clears"
    );
    let (_, got) = s.get(&format!("/task/{id}")).await;
    assert_eq!(got["retry_strategy"], json!(null));
    s.server.shutdown().await;
}

#[tokio::test]
async fn openapi_describes_retry_rules() {
    let s = start().await;
    let (code, doc) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    assert_eq!(code, 200);
    let schemas = &doc["components"]["schemas"];
    for name in ["NewDefinition", "DefinitionUpdate", "DefinitionBody"] {
        assert!(
            schemas[name]["properties"].get("retry_strategy").is_some(),
            "{name} documents retry_strategy: {}",
            schemas[name]
        );
    }
    let rule = &schemas["EvaluateOnExit"]["properties"];
    for field in ["action", "on_exit_code", "on_reason", "on_status_reason"] {
        assert!(rule.get(field).is_some(), "EvaluateOnExit.{field}: {rule}");
    }
    assert!(
        schemas["RetryStrategy"]["properties"]
            .get("evaluate_on_exit")
            .is_some(),
        "{}",
        schemas["RetryStrategy"]
    );
    assert_eq!(schemas["RetryAction"]["enum"], json!(["RETRY", "EXIT"]));
    s.server.shutdown().await;
}
