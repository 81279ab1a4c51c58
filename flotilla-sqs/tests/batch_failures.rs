//! SQS failure modes moto cannot produce, from a real local HTTP server
//! speaking SQS's JSON protocol: partial batch failures are retried entry by
//! entry, sender faults are refused, throttling is `RateLimited`.

use std::sync::{Arc, Mutex};

use flotilla::{ErrorKind, Message, Queue};
use flotilla_sqs::{SqsQueue, SqsSettings, StaticCredentials};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

type Responder = Arc<dyn Fn(&str, &serde_json::Value) -> (u16, serde_json::Value) + Send + Sync>;

/// Serves SQS JSON requests with `respond(target, body)`; returns the
/// endpoint and the log of `(target, body)` received.
async fn fake_sqs(respond: Responder) -> (String, Arc<Mutex<Vec<(String, serde_json::Value)>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let endpoint = format!("http://{}", listener.local_addr().expect("addr"));
    let log: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let seen = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let respond = respond.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
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
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let header = |name: &str| {
                        head.lines().find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
                        })
                    };
                    let len: usize = header("content-length")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        let mut chunk = [0u8; 4096];
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: serde_json::Value =
                        serde_json::from_slice(&buf[head_end..head_end + len]).unwrap_or_default();
                    buf.drain(..head_end + len);
                    let target = header("x-amz-target").unwrap_or_default();
                    if let Ok(mut l) = seen.lock() {
                        l.push((target.clone(), body.clone()));
                    }
                    let (status, out) = respond(&target, &body);
                    let out = out.to_string();
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\n\r\n{out}",
                        out.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (endpoint, log)
}

fn settings(endpoint: &str) -> SqsSettings {
    SqsSettings {
        region: "us-east-1".into(),
        endpoint_url: Some(endpoint.to_string()),
        credentials: Some(StaticCredentials::new("test", "test")),
        max_attempts: 2,
        ..SqsSettings::default()
    }
}

fn entry_ids(body: &serde_json::Value) -> Vec<String> {
    body["Entries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["Id"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn ok_entries(ids: &[String]) -> serde_json::Value {
    serde_json::Value::Array(
        ids.iter()
            .map(|i| serde_json::json!({"Id": i, "MessageId": format!("m-{i}"), "MD5OfMessageBody": "d41d8cd98f00b204e9800998ecf8427e"}))
            .collect(),
    )
}

#[tokio::test]
async fn partial_send_failures_are_retried_entry_by_entry() {
    let calls = Arc::new(Mutex::new(0u32));
    let c = calls.clone();
    let (endpoint, log) = fake_sqs(Arc::new(move |target, body| {
        if target.ends_with("GetQueueUrl") {
            return (200, serde_json::json!({"QueueUrl": "http://127.0.0.1/123456789012/flotilla-default"}));
        }
        let ids = entry_ids(body);
        let mut n = c.lock().expect("lock");
        *n += 1;
        if *n == 1 {
            // The first call: entry "1" fails on the server side.
            let ok: Vec<String> = ids.iter().filter(|i| *i != "1").cloned().collect();
            (200, serde_json::json!({
                "Successful": ok_entries(&ok),
                "Failed": [{"Id": "1", "SenderFault": false, "Code": "InternalError", "Message": "try again"}]
            }))
        } else {
            (200, serde_json::json!({"Successful": ok_entries(&ids), "Failed": []}))
        }
    }))
    .await;
    let queue = SqsQueue::new(settings(&endpoint)).await.expect("queue");
    let messages: Vec<Message> = (0..3).map(|i| Message::new(format!("r{i}"), 1)).collect();
    queue
        .enqueue("default", &messages)
        .await
        .expect("enqueue succeeds after the retry");
    let sends: Vec<Vec<String>> = log
        .lock()
        .expect("lock")
        .iter()
        .filter(|(t, _)| t.ends_with("SendMessageBatch"))
        .map(|(_, b)| entry_ids(b))
        .collect();
    assert_eq!(
        sends,
        vec![
            vec!["0".to_string(), "1".into(), "2".into()],
            vec!["1".to_string()]
        ]
    );
}

#[tokio::test]
async fn sender_faults_are_invalid_input() {
    let (endpoint, _log) = fake_sqs(Arc::new(|target, body| {
        if target.ends_with("GetQueueUrl") {
            return (200, serde_json::json!({"QueueUrl": "http://127.0.0.1/123456789012/flotilla-default"}));
        }
        let ids = entry_ids(body);
        (200, serde_json::json!({
            "Successful": ok_entries(&ids[1..]),
            "Failed": [{"Id": ids[0], "SenderFault": true, "Code": "InvalidParameterValue", "Message": "bad body"}]
        }))
    }))
    .await;
    let queue = SqsQueue::new(settings(&endpoint)).await.expect("queue");
    let e = queue
        .enqueue("default", &[Message::new("r", 1), Message::new("s", 1)])
        .await
        .expect_err("refused");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(e.message().contains("bad body"), "{e}");
}

#[tokio::test]
async fn throttling_is_rate_limited() {
    let (endpoint, log) = fake_sqs(Arc::new(|_, _| {
        (400, serde_json::json!({"__type": "com.amazonaws.sqs#RequestThrottled", "message": "slow down"}))
    }))
    .await;
    let queue = SqsQueue::new(settings(&endpoint)).await.expect("queue");
    let e = queue
        .enqueue("default", &[Message::new("r", 1)])
        .await
        .expect_err("throttled");
    assert_eq!(e.kind(), ErrorKind::RateLimited, "{e}");
    assert_eq!(
        log.lock().expect("lock").len(),
        2,
        "the SDK retried once (max_attempts 2)"
    );
}
