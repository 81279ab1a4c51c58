//! Every operation of the served OpenAPI document, streams included,
//! answers 401 without a token when `auth = "tokens"`; only the documented
//! public ones (health) answer without. Generated from the document, so a
//! new route is covered without editing this test.

mod common;

use common::start_with;
use flotilla_http::AuthMode;
use flotilla_http::config::TokenConfig;
use serde_json::Value;

/// Operations that are public on purpose.
fn public(path: &str) -> bool {
    path == "/api/v6/health" || path == "/api/v1/health"
}

/// `/api/v6/task/{definition_id}/history/{run_id}` with dummy values.
fn fill(path: &str) -> String {
    path.replace('{', "dummy-").replace('}', "")
}

#[tokio::test]
async fn every_operation_of_the_openapi_document_needs_a_token() {
    let s = start_with(|c| {
        c.auth = AuthMode::Tokens;
        c.tokens = vec![TokenConfig {
            token: "only-token-1".into(),
            owner: "someone".into(),
            ..Default::default()
        }];
    })
    .await;
    let (code, doc) = s
        .send(s.http.get(format!("{}/api/openapi.json", s.url)))
        .await;
    assert_eq!(code, 200);
    let paths = doc["paths"].as_object().expect("paths");
    let mut checked = 0;
    let mut streams = 0;
    for (path, item) in paths {
        for method in ["get", "put", "post", "delete", "patch"] {
            let Some(op) = item.get(method) else { continue };
            let url = format!("{}{}", s.url, fill(path));
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let resp = s
                .http
                .request(m, &url)
                .body("{}")
                .send()
                .await
                .expect("sent");
            let code = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if public(path) {
                assert_eq!(code, 200, "{method} {path} is public: {body}");
                continue;
            }
            assert_eq!(code, 401, "{method} {path} without a token: {body}");
            assert!(body["error"].is_string(), "{method} {path}: {body}");
            checked += 1;
            if op.to_string().contains("text/event-stream") {
                streams += 1;
            }
        }
    }
    // Both versions of every route: a document that lost its routes must
    // not pass.
    assert!(checked >= 40, "only {checked} operations in the document");
    assert!(streams >= 2, "the SSE routes are in the document");
    s.server.shutdown().await;
}
