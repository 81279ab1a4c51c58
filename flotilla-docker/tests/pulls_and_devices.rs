//! What the engine asks of the daemon beyond a plain container: registry
//! credentials on pulls, GPUs as device requests.

mod common;

use std::sync::{Arc, Mutex};

use flotilla::{Engine, ErrorKind, FailureCategory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A registry on 127.0.0.1 that asks for Basic credentials and records the
/// `Authorization` headers it is sent; it has no images.
async fn registry() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.first() == Some(&0x16) {
                        return; // A TLS hello: this registry speaks plain HTTP.
                    }
                }
                let head = String::from_utf8_lossy(&buf).to_string();
                let auth = head.lines().find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("authorization")
                        .then(|| v.trim().to_string())
                });
                let reply = match auth {
                    None => "HTTP/1.1 401 Unauthorized\r\n\
                             WWW-Authenticate: Basic realm=\"flotilla-test\"\r\n\
                             Docker-Distribution-API-Version: registry/2.0\r\n\
                             Content-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string(),
                    Some(a) => {
                        record.lock().expect("lock").push(a);
                        let body =
                            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no such image"}]}"#;
                        format!(
                            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n\
                             Docker-Distribution-API-Version: registry/2.0\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                };
                let _ = sock.write_all(reply.as_bytes()).await;
            });
        }
    });
    (port, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_send_the_registry_credentials_of_the_docker_config() {
    let Some((host, _image)) = common::docker() else {
        return;
    };
    let (port, seen) = registry().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config_file = dir.path().join("config.json");
    // "puller:s3cret:x" — a password may hold a colon.
    std::fs::write(
        &config_file,
        format!(r#"{{"auths": {{"127.0.0.1:{port}": {{"auth": "cHVsbGVyOnMzY3JldDp4"}}}}}}"#),
    )
    .expect("write config");
    let prefix = format!("fcred{}", common::token());
    let engine = flotilla_docker::DockerEngine::connect(
        common::config(&host, dir.path(), &prefix).registry_config(Some(config_file)),
    )
    .await
    .expect("connect");
    let (run, def) = common::new_run(&format!("127.0.0.1:{port}/flotilla/private:1"), "true");
    engine.submit(&run, &def).await.expect("submit");
    let u = common::wait_stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::ImagePull), "{u:?}");
    let seen = seen.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|a| a == "Basic cHVsbGVyOnMzY3JldDp4"),
        "the daemon sent the configured credentials to the registry: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_device_requests_and_refused_without_them() {
    let Some((host, image)) = common::docker() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fgpu{}", common::token());
    // Without GPUs the engine says so and refuses the run before any
    // container exists.
    let plain = common::engine(&host, dir.path(), &prefix).await;
    assert!(!plain.capabilities().gpu);
    let (mut run, def) = common::new_run(&image, "true");
    run.gpu = Some(1);
    let err = plain.submit(&run, &def).await.expect_err("no GPUs here");
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert!(err.to_string().contains("gpu"), "{err}");
    assert_eq!(
        common::containers(plain.docker(), &prefix, &run.run_id, run.attempt)
            .await
            .expect("count"),
        0
    );
    // With GPUs configured the request reaches the daemon as a device
    // request; this daemon has no GPU runtime, so it cannot start it.
    let gpu = flotilla_docker::DockerEngine::connect(
        common::config(&host, dir.path(), &prefix).gpus(true, ""),
    )
    .await
    .expect("connect");
    assert!(gpu.capabilities().gpu);
    let (mut run, def) = common::new_run(&image, "true");
    run.gpu = Some(2);
    gpu.submit(&run, &def).await.expect("submit");
    let name = gpu.container_name(&run.run_id, run.attempt);
    let c = gpu
        .docker()
        .inspect_container(&name, None)
        .await
        .expect("inspect");
    let requests = c
        .host_config
        .and_then(|h| h.device_requests)
        .unwrap_or_default();
    assert_eq!(requests.len(), 1, "{requests:?}");
    assert_eq!(requests[0].count, Some(2));
    assert_eq!(
        requests[0].capabilities,
        Some(vec![vec!["gpu".to_string()]])
    );
    let u = common::wait_stopped(&gpu, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::ContainerStart), "{u:?}");
    common::remove_all(gpu.docker(), &prefix).await;
}
