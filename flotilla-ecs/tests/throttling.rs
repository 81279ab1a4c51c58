//! AWS failure modes moto cannot produce, from a real local HTTP server that
//! answers every call with throttling or a 5xx: the SDK retries with
//! backoff, and the engine reports a retryable error kind (a run is never
//! failed because AWS throttled).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use flotilla::{Engine, ErrorKind, NewDefinition, Run};
use flotilla_ecs::{EcsEngine, EcsSettings, StaticCredentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `status` with an ECS (awsJson1_1) error body of `code` to every
/// request; counts requests.
async fn failing_server(status: u16, code: &'static str) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + len);
                    seen.fetch_add(1, Ordering::SeqCst);
                    let body = format!(r#"{{"__type":"{code}","message":"injected by the test"}}"#);
                    let resp = format!(
                        "HTTP/1.1 {status} Injected\r\nContent-Type: application/x-amz-json-1.1\r\nx-amzn-ErrorType: {code}\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}"), count)
}

fn settings(endpoint: String) -> EcsSettings {
    EcsSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint),
        credentials: Some(StaticCredentials::new("test", "test")),
        max_attempts: 2,
        ..EcsSettings::default()
    }
}

fn run_and_def() -> (Run, flotilla::Definition) {
    let mut n = NewDefinition::new("throttled", "busybox:latest").command("true");
    n.memory = Some(64);
    let def = n.into_definition();
    let mut run: Run = serde_json::from_value(serde_json::json!({
        "run_id": flotilla::model::new_id(), "definition_id": def.definition_id,
        "alias": def.alias, "image": def.image, "cluster": "default", "engine": "ecs",
        "status": "QUEUED", "attempt": 1, "max_attempts": 3,
        "updated_at": flotilla::model::now()
    }))
    .expect("run");
    run.engine_ref = Some("arn:aws:ecs:us-east-1:123456789012:task/default/abc".into());
    (run, def)
}

#[tokio::test]
async fn throttling_is_retried_then_rate_limited() {
    let (endpoint, count) = failing_server(400, "ThrottlingException").await;
    let engine = EcsEngine::new(settings(endpoint)).await.expect("engine");
    let (run, def) = run_and_def();

    let e = engine.submit(&run, &def).await.expect_err("throttled");
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(e.is_retryable(), "a throttled submit leaves the run queued");
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "the SDK tried twice (max_attempts 2)"
    );

    count.store(0, Ordering::SeqCst);
    let e = engine
        .poll(std::slice::from_ref(&run))
        .await
        .expect_err("throttled poll");
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert!(
        count.load(Ordering::SeqCst) > 2,
        "flotilla retries the batch call on top of the SDK: {} requests",
        count.load(Ordering::SeqCst)
    );

    let e = engine
        .terminate(&run, "by test")
        .await
        .expect_err("throttled stop");
    assert!(e.is_retryable(), "{e}");
}

#[tokio::test]
async fn server_errors_are_unavailable() {
    let (endpoint, count) = failing_server(500, "ServerException").await;
    let engine = EcsEngine::new(settings(endpoint)).await.expect("engine");
    let (run, def) = run_and_def();
    let e = engine.submit(&run, &def).await.expect_err("5xx");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert_eq!(count.load(Ordering::SeqCst), 2, "the SDK retried the 5xx");
}

#[tokio::test]
async fn invalid_parameters_are_permanent() {
    let (endpoint, _count) = failing_server(400, "InvalidParameterException").await;
    let engine = EcsEngine::new(settings(endpoint)).await.expect("engine");
    let (run, def) = run_and_def();
    let e = engine.submit(&run, &def).await.expect_err("invalid");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        e.message().contains("injected by the test"),
        "AWS's message is kept: {e}"
    );
}

#[tokio::test]
async fn refused_credentials_are_retried_with_backoff_then_transient() {
    // A session token expired mid-refresh, a signature from stale keys, a
    // permission being fixed, an auth code AWS adds later: none of them
    // rejects the run.
    for (status, code) in [
        (400, "ExpiredTokenException"),
        (400, "InvalidSignatureException"),
        (403, "AccessDeniedException"),
        (401, "SomeFutureAuthException"),
        (403, "SomeFutureAuthException"),
    ] {
        let (endpoint, count) = failing_server(status, code).await;
        let engine = EcsEngine::new(settings(endpoint)).await.expect("engine");
        let (run, def) = run_and_def();

        let e = engine.submit(&run, &def).await.expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{status} {code}: {e}");
        assert!(
            e.is_retryable(),
            "{status} {code}: the run stays queued, never submit_rejected"
        );
        assert_eq!(
            count.load(Ordering::SeqCst),
            flotilla_ecs::AUTH_ATTEMPTS as usize,
            "{status} {code}: the refused call was retried, a bounded number of times"
        );

        count.store(0, Ordering::SeqCst);
        let e = engine
            .poll(std::slice::from_ref(&run))
            .await
            .expect_err("refused poll");
        assert!(e.is_retryable(), "{status} {code}: {e}");
        assert!(
            count.load(Ordering::SeqCst) > 1,
            "{status} {code}: the poll's call was retried"
        );

        count.store(0, Ordering::SeqCst);
        let e = engine
            .terminate(&run, "by test")
            .await
            .expect_err("refused stop");
        assert!(e.is_retryable(), "{status} {code}: {e}");
        assert!(count.load(Ordering::SeqCst) > 1, "{status} {code}: retried");
    }
}
