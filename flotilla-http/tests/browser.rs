//! Browser attacks on a server without authentication: cross-site
//! requests, DNS rebinding (a foreign `Host`), `*` CORS.

mod common;

use common::start_with;
use flotilla_http::{AuthMode, Config, ErrorKind};
use serde_json::json;

fn definition(alias: &str) -> String {
    json!({"alias": alias, "image": "x", "command": "touch /tmp/pwned"}).to_string()
}

#[tokio::test]
async fn a_cross_site_post_is_refused_while_a_curl_style_post_works() {
    let s = start_with(|c| c.http.cors_origins = vec!["https://ui.example.com".into()]).await;
    let form = "application/x-www-form-urlencoded";
    // what a plain HTML form on another site sends
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("content-type", form)
                .header("origin", "https://evil.example")
                .header("sec-fetch-site", "cross-site")
                .body(definition("evil1")),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body["error"].as_str().expect("msg").contains("cross-site"),
        "{body}"
    );
    // without Origin, but marked cross-site by the browser
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("content-type", form)
                .header("sec-fetch-site", "cross-site")
                .body(definition("evil2")),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    // sandboxed frames send Origin: null
    let (code, _) = s
        .send(
            s.http
                .put(s.api("/task/alias/anything/execute"))
                .header("origin", "null")
                .body("{}"),
        )
        .await;
    assert_eq!(code, 403);
    let (_, list) = s.get("/task").await;
    assert_eq!(
        list["total"], 0,
        "a refused request defined something: {list}"
    );
    // curl --data (flotilla-os's quick start): no Origin, form content type
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("content-type", form)
                .body(definition("curl")),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    // the server's own pages (same origin) and a configured origin work
    let own = s.url.clone();
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("origin", own.as_str())
                .header("sec-fetch-site", "same-origin")
                .body(definition("ui")),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("origin", "https://ui.example.com")
                .header("sec-fetch-site", "cross-site")
                .body(definition("allowed")),
        )
        .await;
    assert_eq!(code, 200, "{body}");
    s.server.shutdown().await;
}

#[tokio::test]
async fn a_foreign_host_is_refused_on_loopback() {
    let s = start_with(|c| c.http.allowed_hosts = vec!["flotilla.internal".into()]).await;
    let port = s.server.addr().port();
    // DNS rebinding: the attacker's name resolves to 127.0.0.1
    for path in ["/api/v6/task", "/", "/metrics"] {
        let (code, body) = s
            .send(
                s.http
                    .get(format!("{}{path}", s.url))
                    .header("host", format!("evil.example:{port}")),
            )
            .await;
        assert_eq!(code, 403, "{path}: {body}");
    }
    let (code, body) = s
        .send(
            s.http
                .post(s.api("/task"))
                .header("host", format!("evil.example:{port}"))
                .header("origin", format!("http://evil.example:{port}"))
                .body(definition("rebound")),
        )
        .await;
    assert_eq!(code, 403, "{body}");
    assert!(body["error"].as_str().expect("msg").contains("host"));
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        format!("flotilla.internal:{port}"),
    ] {
        let (code, body) = s
            .send(s.http.get(s.api("/task")).header("host", host.as_str()))
            .await;
        assert_eq!(code, 200, "{host}: {body}");
    }
    s.server.shutdown().await;
}

#[test]
fn wildcard_cors_needs_authentication() {
    let e = Config::from_toml("[http]\ncors_origins = [\"*\"]").expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().starts_with("http.cors_origins"), "{e}");
    let c = Config::from_toml(
        "auth = \"tokens\"\n[[tokens]]\ntoken = \"abcdefgh1\"\nowner = \"a\"\n[http]\ncors_origins = [\"*\"]",
    )
    .expect("allowed with tokens");
    assert_eq!(c.auth, AuthMode::Tokens);
}

#[tokio::test]
async fn responses_carry_a_content_security_policy_and_tokens_stay_out_of_urls() {
    let s = start_with(|c| {
        c.auth = AuthMode::Tokens;
        c.tokens = vec![flotilla_http::config::TokenConfig {
            token: "ui-token-123".into(),
            owner: "ui".into(),
            ..Default::default()
        }];
    })
    .await;
    for path in ["/", "/runs", "/ui/app.js", "/api/v6/task", "/health"] {
        let resp = s
            .http
            .get(format!("{}{path}", s.url))
            .send()
            .await
            .expect("get");
        let h = resp.headers();
        let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        let csp = get("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("style-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{path}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{path}");
    }
    // the UI's script never builds a URL with a token in it
    let script = s
        .http
        .get(format!("{}/ui/app.js", s.url))
        .send()
        .await
        .expect("script")
        .text()
        .await
        .expect("text");
    for needle in ["token=", "access_token", "new EventSource"] {
        assert!(!script.contains(needle), "app.js contains {needle}");
    }
    // and the server does not take one from the query string
    let (code, body) = s
        .send(
            s.http
                .get(s.api("/task"))
                .query(&[("token", "ui-token-123")]),
        )
        .await;
    assert_eq!(code, 401, "{body}");
    s.server.shutdown().await;
}
