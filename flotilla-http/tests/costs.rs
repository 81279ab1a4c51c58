//! What one caller can cost the server: log streams are capped, metrics
//! are cached (and may need a token), history pages have a byte budget,
//! raw logs are streamed whole.

mod common;

use common::start_with;
use flotilla_http::config::TokenConfig;
use flotilla_http::{AuthMode, Config};
use serde_json::{Value, json};

fn tokens(c: &mut Config) {
    c.auth = AuthMode::Tokens;
    c.tokens = vec![
        TokenConfig {
            token: "alice-secret".into(),
            owner: "alice".into(),
            ..Default::default()
        },
        TokenConfig {
            token: "bob-secret-1".into(),
            owner: "bob".into(),
            ..Default::default()
        },
        TokenConfig {
            token: "root-secret1".into(),
            owner: "root".into(),
            admin: true,
            ..Default::default()
        },
    ];
}

#[tokio::test]
async fn log_streams_are_capped_per_identity_and_in_total() {
    let s = start_with(|c| {
        tokens(c);
        c.http.max_streams_per_caller = 2;
        c.http.max_streams = 3;
    })
    .await;
    let as_ = |token: &str, req: reqwest::RequestBuilder| req.bearer_auth(token);
    let (code, def) = s
        .send(
            as_("alice-secret", s.http.post(s.api("/task")))
                .body(json!({"alias": "slow", "image": "x", "command": "sleep 60"}).to_string()),
        )
        .await;
    assert_eq!(code, 200, "{def}");
    let (code, run) = s
        .send(
            as_(
                "alice-secret",
                s.http.put(s.api("/task/alias/slow/execute")),
            )
            .body("{}"),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let id = run["run_id"].as_str().expect("id").to_string();
    let stream_url = s.api(&format!("/{id}/logs/stream"));
    let open = |token: &'static str| {
        let req = as_(token, s.http.get(&stream_url));
        async move { req.send().await.expect("stream request") }
    };
    let a1 = open("alice-secret").await;
    let a2 = open("alice-secret").await;
    assert_eq!(a1.status().as_u16(), 200);
    assert_eq!(a2.status().as_u16(), 200);
    let a3 = open("alice-secret").await;
    assert_eq!(a3.status().as_u16(), 429);
    let body: Value = a3.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("msg")
            .contains("max_streams_per_caller"),
        "{body}"
    );
    let b1 = open("bob-secret-1").await;
    assert_eq!(b1.status().as_u16(), 200);
    let b2 = open("bob-secret-1").await;
    assert_eq!(b2.status().as_u16(), 429, "over the total");
    let body: Value = b2.json().await.expect("json");
    assert!(
        body["error"]
            .as_str()
            .expect("msg")
            .contains("http.max_streams ="),
        "{body}"
    );
    // the streams end when the run stops, and free their places
    let def_id = def["definition_id"].as_str().expect("id");
    let (code, _) = s
        .send(as_(
            "alice-secret",
            s.http
                .delete(s.api(&format!("/task/{def_id}/history/{id}"))),
        ))
        .await;
    assert_eq!(code, 200);
    for resp in [a1, a2, b1] {
        let text = resp.text().await.expect("stream ends");
        assert!(text.contains("event: end"), "{text}");
    }
    let again = open("bob-secret-1").await;
    assert_eq!(again.status().as_u16(), 200, "places were freed");
    drop(again);
    s.server.shutdown().await;
}

fn gauge(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn metrics_are_cached_between_refreshes_and_may_need_a_token() {
    let s = start_with(|c| {
        tokens(c);
        c.http.metrics_auth = true;
        c.http.metrics_refresh_ms = 3_600_000;
    })
    .await;
    let metrics = format!("{}/metrics", s.url);
    let resp = s.http.get(&metrics).send().await.expect("metrics");
    assert_eq!(resp.status().as_u16(), 401, "metrics_auth needs a token");
    let scrape = || async {
        let resp = s
            .http
            .get(&metrics)
            .bearer_auth("bob-secret-1")
            .send()
            .await
            .expect("metrics");
        assert_eq!(resp.status().as_u16(), 200);
        resp.text().await.expect("text")
    };
    let series = "flotilla_runs{status=\"QUEUED\"}";
    let before = gauge(&scrape().await, series).expect("gauge");
    // a run that stays queued
    let (code, _) = s
        .send(
            s.http
                .post(s.api("/clusters"))
                .bearer_auth("root-secret1")
                .body(r#"{"name":"hold","status":"maintenance"}"#),
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .send(
            s.http
                .post(s.api("/task"))
                .bearer_auth("bob-secret-1")
                .body(json!({"alias": "q", "image": "x", "command": "true"}).to_string()),
        )
        .await;
    assert_eq!(code, 200);
    let (code, run) = s
        .send(
            s.http
                .put(s.api("/task/alias/q/execute"))
                .bearer_auth("bob-secret-1")
                .body(r#"{"cluster":"hold"}"#),
        )
        .await;
    assert_eq!(code, 200, "{run}");
    let after = gauge(&scrape().await, series).expect("gauge");
    assert_eq!(
        after, before,
        "the scrape counted in the store again instead of reusing its counts"
    );
    s.server.shutdown().await;
}

/// Defines `alias` and queues three runs of it on a cluster in
/// maintenance, where they stay QUEUED.
async fn three_held_runs(s: &common::TestServer, alias: &str) {
    let (code, _) = s
        .post(
            "/clusters",
            &json!({"name": "hold", "status": "maintenance"}),
        )
        .await;
    assert_eq!(code, 200);
    s.define(alias, "true").await;
    for _ in 0..3 {
        let (code, run) = s
            .put(
                &format!("/task/alias/{alias}/execute"),
                &json!({"cluster": "hold", "run_tags": {"owner_id": "me"}}),
            )
            .await;
        assert_eq!(code, 200, "{run}");
    }
}

#[tokio::test]
async fn history_pages_stop_at_their_byte_budget_and_say_where_to_continue() {
    let s = start_with(|c| c.http.history_page_bytes = 1).await;
    three_held_runs(&s, "paged").await;
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let (code, page) = s.get(&format!("/history?limit=10&offset={offset}")).await;
        assert_eq!(code, 200, "{page}");
        assert_eq!(page["total"], 3);
        let runs = page["history"].as_array().expect("history");
        assert_eq!(
            runs.len(),
            1,
            "a page past its budget holds one run: {page}"
        );
        seen.extend(runs.iter().map(|r| r["run_id"].to_string()));
        if seen.len() == 3 {
            assert!(page.get("truncated").is_none(), "{page}");
            break;
        }
        assert_eq!(page["truncated"], true, "{page}");
        assert!(page["next_cursor"].is_null(), "{page}");
        offset = page["next_offset"].as_u64().expect("next_offset") as usize;
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 3);
    s.server.shutdown().await;
}

/// The history counts matches up to `http.history_count_limit`: past it,
/// `total` is the limit with `total_capped: true`, and the pages still
/// reach every run; below it, and with the limit off, `total` is the count.
#[tokio::test]
async fn history_totals_stop_counting_at_the_limit_and_say_so() {
    for (count_limit, total, capped) in [(2, 2, true), (3, 3, true), (4, 3, false), (0, 3, false)] {
        let s = start_with(|c| c.http.history_count_limit = count_limit).await;
        three_held_runs(&s, "counted").await;
        let mut seen = Vec::new();
        let mut cursor = String::new();
        loop {
            let (code, page) = s
                .get(&format!("/history?alias=counted&limit=1&cursor={cursor}"))
                .await;
            assert_eq!(code, 200, "{page}");
            if seen.is_empty() {
                assert_eq!(page["total"], total, "limit {count_limit}: {page}");
                assert_eq!(
                    page.get("total_capped").is_some(),
                    capped,
                    "limit {count_limit}: {page}"
                );
                if capped {
                    assert_eq!(page["total_capped"], true, "{page}");
                }
            }
            seen.extend(
                page["history"]
                    .as_array()
                    .expect("history")
                    .iter()
                    .map(|r| r["run_id"].to_string()),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => break,
            }
        }
        seen.sort();
        seen.dedup();
        assert_eq!(
            seen.len(),
            3,
            "limit {count_limit}: the pages reach every run"
        );
        s.server.shutdown().await;
    }
}

#[tokio::test]
async fn raw_text_logs_are_streamed_whole() {
    // 1 KiB pages: the old buffered answer stopped at 64 pages.
    let s = start_with(|c| c.http.log_page_bytes = 1024).await;
    s.define("big", "yes 0123456789abcdef | head -c 300000")
        .await;
    let run = s.execute("big", "me").await;
    let id = run["run_id"].as_str().expect("id").to_string();
    let done = s.wait_stopped(&id).await;
    assert_eq!(done["exit_code"], 0, "{done}");
    let resp = s
        .http
        .get(s.api(&format!("/{id}/logs?raw_text=true")))
        .send()
        .await
        .expect("raw");
    assert_eq!(resp.status().as_u16(), 200);
    let text = resp.text().await.expect("text");
    assert_eq!(text.len(), 300_000);
    assert!(text.starts_with("0123456789abcdef\n"));
    s.server.shutdown().await;
}
