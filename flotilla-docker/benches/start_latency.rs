//! Container start latency through the Docker engine: from `submit` to the
//! first `poll` that sees the container `Running`, one run at a time, and
//! runs/s for a batch submitted at once (submit to all `Stopped`).
//!
//! Needs `FLOTILLA_TEST_DOCKER` and `FLOTILLA_TEST_DOCKER_IMAGE`
//! (`eval "$(test-support/docker/start.sh)"`); under `CI` their absence
//! fails, elsewhere the bench warns and does nothing.
//!
//! `cargo bench -p flotilla-docker --bench start_latency [-- N]`

use std::time::{Duration, Instant};

use flotilla::model::NewDefinition;
use flotilla::{Engine, Run, TaskState};
use flotilla_docker::{DockerConfig, DockerEngine};

fn main() {
    let (Ok(host), Ok(image)) = (
        std::env::var("FLOTILLA_TEST_DOCKER"),
        std::env::var("FLOTILLA_TEST_DOCKER_IMAGE"),
    ) else {
        let how = "eval \"$(test-support/docker/start.sh)\" and export FLOTILLA_TEST_DOCKER FLOTILLA_TEST_DOCKER_IMAGE";
        if std::env::var_os("CI").is_some() {
            panic!("FLOTILLA_TEST_DOCKER is not set: {how}");
        }
        eprintln!("start_latency bench skipped: FLOTILLA_TEST_DOCKER is not set ({how})");
        return;
    };
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(host, image, n));
}

async fn run(host: String, image: String, n: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("fbench{:08x}", fastrand::u32(..));
    let engine = DockerEngine::connect(
        DockerConfig::new(dir.path())
            .host(host)
            .name_prefix(&prefix),
    )
    .await
    .expect("connect");
    let def = NewDefinition::new("bench", image.as_str())
        .command("sleep 0.2")
        .into_definition();

    // One at a time: submit -> Running.
    let mut lat = Vec::with_capacity(n);
    let mut runs = Vec::new();
    for _ in 0..n {
        let run = Run::queued(&def, "bench", "docker", "bench");
        let t = Instant::now();
        engine.submit(&run, &def).await.expect("submit");
        wait(&engine, &run, |s| {
            s != TaskState::Pending && s != TaskState::Missing
        })
        .await;
        lat.push(t.elapsed());
        runs.push(run);
    }
    for run in &runs {
        wait(&engine, run, |s| s == TaskState::Stopped).await;
        engine.finished(run).await.expect("finished");
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "docker start latency (submit -> Running seen by poll), n={n}: p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    );

    // A batch at once: submit all (8 at a time), poll until all stopped.
    let batch: Vec<Run> = (0..n)
        .map(|_| Run::queued(&def, "bench", "docker", "bench"))
        .collect();
    let t = Instant::now();
    for chunk in batch.chunks(8) {
        let subs = chunk.iter().map(|r| engine.submit(r, &def));
        for r in futures::future::join_all(subs).await {
            r.expect("submit");
        }
    }
    loop {
        let ups = engine.poll(&batch).await.expect("poll");
        if ups.iter().filter(|u| u.state == TaskState::Stopped).count() == batch.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "docker throughput: {n} runs (sleep 0.2) submitted and stopped in {secs:.2} s = {:.2} runs/s",
        n as f64 / secs
    );
    for run in &batch {
        engine.finished(run).await.expect("finished");
    }
}

async fn wait(engine: &DockerEngine, run: &Run, done: impl Fn(TaskState) -> bool) {
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let ups = engine.poll(std::slice::from_ref(run)).await.expect("poll");
        if ups.first().is_some_and(|u| done(u.state)) {
            return;
        }
        assert!(
            Instant::now() < give_up,
            "run {} never got there",
            run.run_id
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
