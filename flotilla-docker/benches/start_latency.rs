//! Container start latency through the Docker engine: from `submit` to the
//! `Running` pushed by the engine's event stream, one run at a time, and
//! runs/s for a batch submitted at once (submit to all `Stopped`, pushed);
//! beside the same work done directly on the daemon in the same process
//! (create + start, and create + start + wait), the reference.
//!
//! Needs `FLOTILLA_TEST_DOCKER` and `FLOTILLA_TEST_DOCKER_IMAGE`
//! (`eval "$(test-support/docker/start.sh)"`); under `CI` their absence
//! fails, elsewhere the bench warns and does nothing.
//!
//! `cargo bench -p flotilla-docker --bench start_latency [-- N]`

use std::collections::HashSet;
use std::time::{Duration, Instant};

use flotilla::model::NewDefinition;
use flotilla::{Engine, EngineEvent, Run, TaskState};
use flotilla_docker::bollard::Docker;
use flotilla_docker::bollard::models::{ContainerCreateBody, HostConfig};
use flotilla_docker::bollard::query_parameters::{
    CreateContainerOptions, RemoveContainerOptions, WaitContainerOptions,
};
use flotilla_docker::{DockerConfig, DockerEngine};
use futures::StreamExt;

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

    let docker = engine.docker().clone();
    let mut pushed = Pushed {
        stream: engine.events().expect("the docker engine pushes changes"),
        seen: HashSet::new(),
    };

    // Reference: the daemon alone, create + start of the same container.
    let mut reference = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("{prefix}-ref-{i}");
        let t = Instant::now();
        direct_start(&docker, &name, &image).await;
        reference.push(t.elapsed());
    }

    // flotilla, one at a time: submit -> Running pushed.
    let mut lat = Vec::with_capacity(n);
    let mut runs = Vec::new();
    for _ in 0..n {
        let run = Run::queued(&def, "bench", "docker", "bench");
        let t = Instant::now();
        engine.submit(&run, &def).await.expect("submit");
        pushed
            .wait(std::slice::from_ref(&run), TaskState::Running)
            .await;
        lat.push(t.elapsed());
        runs.push(run);
    }
    pushed.wait(&runs, TaskState::Stopped).await;
    for run in &runs {
        engine.finished(run).await.expect("finished");
    }
    println!(
        "docker start latency, n={n}: flotilla (submit -> Running pushed) {}; reference (create + start on the daemon) {}",
        summary(&mut lat),
        summary(&mut reference)
    );

    // Reference batch: create + start + wait, 8 at a time.
    let t = Instant::now();
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}-refb-{i}")).collect();
    for chunk in names.chunks(8) {
        futures::future::join_all(chunk.iter().map(|name| async {
            direct_start(&docker, name, &image).await;
        }))
        .await;
    }
    for name in &names {
        let mut w = docker.wait_container(name, None::<WaitContainerOptions>);
        while let Some(r) = w.next().await {
            r.expect("wait");
        }
    }
    let ref_secs = t.elapsed().as_secs_f64();

    // flotilla batch: submit all (8 at a time), until all stopped (pushed).
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
    pushed.wait(&batch, TaskState::Stopped).await;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "docker throughput, {n} runs (sleep 0.2): flotilla {:.2} runs/s ({secs:.2} s); reference (create + start + wait on the daemon) {:.2} runs/s ({ref_secs:.2} s); ratio {:.2}",
        n as f64 / secs,
        n as f64 / ref_secs,
        ref_secs / secs
    );
    for run in &batch {
        engine.finished(run).await.expect("finished");
    }
    for name in reference_names(&prefix, n) {
        let opts = RemoveContainerOptions {
            force: true,
            ..Default::default()
        };
        let _ = docker.remove_container(&name, Some(opts)).await;
    }
}

fn reference_names(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .flat_map(|i| [format!("{prefix}-ref-{i}"), format!("{prefix}-refb-{i}")])
        .collect()
}

/// Creates and starts `sleep 0.2` in `image`, as the engine would.
async fn direct_start(docker: &Docker, name: &str, image: &str) {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["sh".into(), "-c".into(), "sleep 0.2".into()]),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let opts = CreateContainerOptions {
        name: Some(name.to_string()),
        platform: String::new(),
    };
    docker
        .create_container(Some(opts), body)
        .await
        .expect("create");
    docker.start_container(name, None).await.expect("start");
}

fn summary(lat: &mut [Duration]) -> String {
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:?}, p99 {:?}, max {:?}",
        pct(0.5),
        pct(0.99),
        lat[lat.len() - 1]
    )
}

/// The engine's push stream, remembering every state pushed per run.
struct Pushed {
    stream: futures::stream::BoxStream<'static, EngineEvent>,
    seen: HashSet<(String, String)>,
}

impl Pushed {
    /// Waits until every run in `runs` was pushed in `state`.
    async fn wait(&mut self, runs: &[Run], state: TaskState) {
        let give_up = Duration::from_secs(120);
        loop {
            if runs.iter().all(|r| {
                self.seen
                    .contains(&(r.run_id.clone(), format!("{state:?}")))
            }) {
                return;
            }
            match tokio::time::timeout(give_up, self.stream.next()).await {
                Ok(Some(EngineEvent::Update(u))) => {
                    self.seen.insert((u.run_id, format!("{:?}", u.state)));
                }
                Ok(Some(_)) => {}
                Ok(None) => panic!("the push stream ended"),
                Err(_) => panic!("nothing pushed for {give_up:?} while waiting for {state:?}"),
            }
        }
    }
}
