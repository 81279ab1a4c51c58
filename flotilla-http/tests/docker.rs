//! The server wired to the Docker engine (`engines = ["docker"]`) on a real
//! dockerd. Needs `FLOTILLA_TEST_DOCKER` and `FLOTILLA_TEST_DOCKER_IMAGE`
//! (`eval "$(test-support/docker/start.sh)"`, then export both): without
//! them it fails under `CI` and prints a loud warning elsewhere.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use flotilla_docker::bollard::Docker;
use flotilla_docker::bollard::query_parameters::ListContainersOptions;
use flotilla_http::EngineKind;
use serde_json::json;

fn docker() -> Option<(String, String)> {
    let [host, image] = flotilla::testkit::service_env(
        &["FLOTILLA_TEST_DOCKER", "FLOTILLA_TEST_DOCKER_IMAGE"],
        "Docker server",
        "start dockerd with `eval \"$(test-support/docker/start.sh)\"` and export \
         FLOTILLA_TEST_DOCKER and FLOTILLA_TEST_DOCKER_IMAGE (it prints both)",
    )?
    .try_into()
    .ok()?;
    Some((host, image))
}

async fn containers(host: &str, prefix: &str) -> usize {
    let docker = Docker::connect_with_unix(
        host.trim_start_matches("unix://"),
        60,
        &flotilla_docker::bollard::ClientVersion {
            major_version: 1,
            minor_version: 41,
        },
    )
    .expect("docker client");
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{}={prefix}", flotilla_docker::MANAGED_LABEL)],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .expect("list containers")
        .len()
}

/// A server whose only engine is the Docker engine on `host`, naming its
/// containers with `prefix`.
async fn docker_server(host: &str, prefix: &str) -> common::TestServer {
    let (host, prefix) = (host.to_string(), prefix.to_string());
    common::start_with(move |c| {
        c.engines = vec![EngineKind::Docker];
        c.docker.host = host;
        c.docker.name_prefix = prefix;
    })
    .await
}

/// Waits until every container named with `prefix` is removed (their logs
/// are archived then: a container being removed refuses its log with a 409).
async fn all_removed(host: &str, prefix: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while containers(host, prefix).await > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "finished containers were never removed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_engine_runs_a_job_over_http_and_its_log_outlives_the_container() {
    let Some((host, image)) = docker() else {
        return;
    };
    let prefix = format!("fhttp{}", uuid::Uuid::now_v7().simple());
    let s = docker_server(&host, &prefix).await;
    let (code, def) = s
        .post(
            "/task",
            &json!({"alias": "hello-docker", "image": image, "group_name": "tests",
                    "memory": 64, "cpu": 250,
                    "command": "echo \"hello from $FLOTILLA_RUN_ID\"; exit 3"}),
        )
        .await;
    assert_eq!(code, 200, "define: {def}");
    let run = s.execute("hello-docker", "docker-tester").await;
    let run_id = run["run_id"].as_str().expect("run_id").to_string();
    assert_eq!(run["engine"], "docker", "{run}");
    let stopped = s.wait_stopped(&run_id).await;
    assert_eq!(stopped["exit_code"], 3, "{stopped}");
    assert_eq!(
        stopped["engine_ref"],
        format!("{prefix}-{run_id}-a1").as_str(),
        "{stopped}"
    );
    // The outcome is stored, so the engine archives the log and removes the
    // container; the log still reads through the API.
    all_removed(&host, &prefix).await;
    let text = s.log_text(&run_id).await;
    assert_eq!(text, format!("hello from {run_id}\n"));
    s.server.shutdown().await;
}

/// `(kind, seconds)` marks a job printed from the host kernel's
/// `/proc/uptime` (one clock for every container).
fn marks(log: &str) -> Vec<(char, f64)> {
    log.lines()
        .filter_map(|l| {
            let mut p = l.split_whitespace();
            let kind = p.next()?.chars().next()?;
            let at = p.next()?.parse().ok()?;
            Some((kind, at))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_8_runs_on_a_docker_cluster_of_2_never_has_more_than_2_containers_running() {
    let Some((host, image)) = docker() else {
        return;
    };
    let prefix = format!("fcap{}", uuid::Uuid::now_v7().simple());
    let s = docker_server(&host, &prefix).await;
    let (code, c) = s
        .put("/clusters/default", &json!({"capacity": {"runs": 2}}))
        .await;
    assert_eq!(code, 200, "{c}");
    let (code, def) = s
        .post(
            "/task",
            &json!({"alias": "burst-docker", "image": image, "group_name": "tests", "memory": 32,
                    "command": "read a b < /proc/uptime; echo \"S $a\"; sleep 1; read a b < /proc/uptime; echo \"E $a\""}),
        )
        .await;
    assert_eq!(code, 200, "define: {def}");
    let mut ids = Vec::new();
    for i in 0..8 {
        let run = s.execute("burst-docker", &format!("owner-{}", i % 2)).await;
        ids.push(run["run_id"].as_str().expect("run_id").to_string());
    }
    for id in &ids {
        let stopped = s.wait_stopped(id).await;
        assert_eq!(stopped["exit_code"], 0, "{stopped}");
    }
    all_removed(&host, &prefix).await;
    let mut all = Vec::new();
    for id in &ids {
        let text = s.log_text(id).await;
        let m = marks(&text);
        assert_eq!(m.len(), 2, "a start and an end from {id}: {text:?}");
        all.extend(m);
    }
    // At one instant (10 ms resolution) an end goes before a start.
    all.sort_by(|a, b| a.1.total_cmp(&b.1).then((a.0 != 'E').cmp(&(b.0 != 'E'))));
    let (mut now, mut most) = (0i32, 0i32);
    for (kind, _) in &all {
        now += if *kind == 'S' { 1 } else { -1 };
        most = most.max(now);
    }
    assert!(
        most <= 2,
        "{most} containers ran at once on a cluster of 2 runs: {all:?}"
    );
    assert_eq!(now, 0, "every start has its end");
    s.server.shutdown().await;
}
