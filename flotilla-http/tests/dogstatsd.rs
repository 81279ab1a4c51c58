//! `[metrics.dogstatsd]` (flotilla-os's `metrics.dogstatsd.address` and
//! `.namespace`): the server pushes its metrics over UDP to a DogStatsD
//! agent, here a socket the test reads, while `/metrics` keeps serving
//! Prometheus. Its own test binary: the recorder is process-wide.

mod common;

use std::time::Duration;

#[tokio::test]
async fn metrics_reach_a_dogstatsd_agent_over_udp_beside_prometheus() {
    let agent = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("udp socket");
    let address = agent.local_addr().expect("addr").to_string();
    let s = common::start_with(|c| {
        c.metrics.dogstatsd.address = Some(address.clone());
        c.metrics.dogstatsd.namespace = Some("flotilla_os".into());
        c.metrics.dogstatsd.flush_ms = Some(100);
    })
    .await;
    s.define("dd", "echo dd").await;
    let run = s.execute("dd", "ada").await;
    s.wait_stopped(run["run_id"].as_str().expect("id")).await;
    let mut seen = String::new();
    let mut buf = vec![0u8; 65_536];
    let wanted = "flotilla_os.flotilla_runs_executed_total:";
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let (n, _) = agent.recv_from(&mut buf).await.expect("recv");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            seen.push_str(&text);
            if let Some(line) = text.lines().find(|l| l.starts_with(wanted)) {
                return line.to_string();
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {wanted} packet; received: {seen}"));
    assert!(found.contains("|c"), "a counter: {found}");
    // Prometheus still serves the same series.
    let text = s
        .http
        .get(format!("{}/metrics", s.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(text.contains("flotilla_runs_executed_total"), "{text}");
    s.server.shutdown().await;
}
