//! Test support: the daemon from `FLOTILLA_TEST_DOCKER` (started by
//! `test-support/docker/start.sh`), engines on it, and the `EngineProbe`
//! the core suites drive containers with.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use flotilla::model::{EnvVar, NewDefinition};
use flotilla::testkit::EngineProbe;
use flotilla::testkit::engine::{RunSpec, TaskEnd};
use flotilla::{Definition, Engine, Error, Result, Run, StatusUpdate, TaskState};
use flotilla_docker::bollard::Docker;
use flotilla_docker::bollard::models::ExecConfig;
use flotilla_docker::bollard::query_parameters::{ListContainersOptions, RemoveContainerOptions};
use flotilla_docker::{ATTEMPT_LABEL, DockerConfig, DockerEngine, MANAGED_LABEL, RUN_LABEL};

/// The daemon and test image from `FLOTILLA_TEST_DOCKER` and
/// `FLOTILLA_TEST_DOCKER_IMAGE`. Without them: a failure under CI, a loud
/// warning and `None` elsewhere.
pub fn docker() -> Option<(String, String)> {
    let [host, image] = flotilla::testkit::service_env(
        &["FLOTILLA_TEST_DOCKER", "FLOTILLA_TEST_DOCKER_IMAGE"],
        "Docker",
        "start dockerd with `eval \"$(test-support/docker/start.sh)\"` and export \
         FLOTILLA_TEST_DOCKER and FLOTILLA_TEST_DOCKER_IMAGE (it prints both)",
    )?
    .try_into()
    .ok()?;
    Some((host, image))
}

/// A short unique token.
pub fn token() -> String {
    format!("{:010x}", fastrand::u64(..) & 0xff_ffff_ffff)
}

/// The test config: a fresh name prefix (so tests sharing the daemon never
/// see each other's containers), a short grace, data under `data`.
pub fn config(host: &str, data: &Path, prefix: &str) -> DockerConfig {
    DockerConfig::new(data)
        .host(host)
        .name_prefix(prefix)
        .stop_grace(Duration::from_secs(2))
}

/// An engine on the test daemon.
pub async fn engine(host: &str, data: &Path, prefix: &str) -> DockerEngine {
    DockerEngine::connect(config(host, data, prefix))
        .await
        .unwrap_or_else(|e| panic!("connect to {host}: {e}"))
}

/// The probe's command: writes `$PROBE_OUTPUT`, then waits for
/// `/tmp/flotilla-exit` (written by `finish` through `docker exec`) and
/// exits with the code in it; gives up after about two minutes.
pub const PROBE_COMMAND: &str = "printf '%s' \"$PROBE_OUTPUT\"\n\
     i=0\n\
     while [ ! -f /tmp/flotilla-exit ]; do\n\
       sleep 0.05; i=$((i+1))\n\
       if [ $i -gt 2400 ]; then echo 'probe: never finished' >&2; exit 124; fi\n\
     done\n\
     exit \"$(cat /tmp/flotilla-exit)\"";

/// A QUEUED run of `command` on `image`.
pub fn new_run(image: &str, command: &str) -> (Run, Definition) {
    let def = NewDefinition::new(format!("docker-{}", token()), image)
        .command(command)
        .into_definition();
    let mut run = Run::queued(&def, "docker-test", "docker", "conformance");
    run.env = vec![EnvVar::new("FLOTILLA_RUN_ID", run.run_id.clone())];
    (run, def)
}

/// Writes the exit code into the attempt's container.
pub async fn finish_container(docker: &Docker, name: &str, code: i64) -> Result<()> {
    let exec = docker
        .create_exec(
            name,
            ExecConfig {
                cmd: Some(vec![
                    "sh".into(),
                    "-c".into(),
                    format!("echo {code} > /tmp/flotilla-exit.tmp && mv /tmp/flotilla-exit.tmp /tmp/flotilla-exit"),
                ]),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::unavailable(format!("create exec in {name}: {e}")))?;
    docker
        .start_exec(
            &exec.id,
            Some(flotilla_docker::bollard::exec::StartExecOptions {
                detach: true,
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| Error::unavailable(format!("start exec in {name}: {e}")))?;
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let i = docker
            .inspect_exec(&exec.id)
            .await
            .map_err(|e| Error::unavailable(format!("inspect exec: {e}")))?;
        if i.running != Some(true) {
            return match i.exit_code {
                Some(0) => Ok(()),
                other => Err(Error::internal(format!("exec in {name} exited {other:?}"))),
            };
        }
        if tokio::time::Instant::now() > give_up {
            return Err(Error::internal("exec never ended"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How many containers carry the run's and attempt's labels (counted at
/// the daemon, not through the engine).
pub async fn containers(
    docker: &Docker,
    prefix: &str,
    run_id: &str,
    attempt: u32,
) -> Result<usize> {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![
            format!("{MANAGED_LABEL}={prefix}"),
            format!("{RUN_LABEL}={run_id}"),
            format!("{ATTEMPT_LABEL}={attempt}"),
        ],
    )]);
    let list = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .map_err(|e| Error::unavailable(format!("list containers: {e}")))?;
    Ok(list.len())
}

/// Removes every container of `prefix` (tests clean up what they made).
pub async fn remove_all(docker: &Docker, prefix: &str) {
    let filters = HashMap::from([(
        "label".to_string(),
        vec![format!("{MANAGED_LABEL}={prefix}")],
    )]);
    let Ok(list) = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
    else {
        return;
    };
    for c in list {
        if let Some(id) = c.id {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

/// The probe for the core suites on `engine` (its containers named with
/// `prefix`).
pub fn probe(engine: &DockerEngine, image: &str, prefix: &str) -> EngineProbe {
    let image = image.to_string();
    let (e1, e2) = (engine.clone(), engine.clone());
    let prefix = prefix.to_string();
    EngineProbe::new(
        move |spec: RunSpec| {
            let (mut run, def) = new_run(&image, PROBE_COMMAND);
            run.env.push(EnvVar::new("PROBE_OUTPUT", spec.output));
            run.active_deadline_seconds = spec.active_deadline_seconds;
            async move { Ok((run, def)) }
        },
        move |run: Run, end: TaskEnd| {
            let engine = e1.clone();
            async move {
                let code = match end {
                    TaskEnd::Exit(code) => code,
                    other => {
                        return Err(Error::unsupported(format!(
                            "a container on the engine's own daemon cannot end as {other:?}"
                        )));
                    }
                };
                let name = engine.container_name(&run.run_id, run.attempt);
                finish_container(engine.docker(), &name, code).await
            }
        },
        move |run: Run| {
            let engine = e2.clone();
            let prefix = prefix.clone();
            async move { containers(engine.docker(), &prefix, &run.run_id, run.attempt).await }
        },
    )
}

/// Polls `run` until `done` holds (30 s limit, never a timing assertion).
pub async fn wait_for(
    engine: &dyn Engine,
    run: &Run,
    what: &str,
    done: impl Fn(&StatusUpdate) -> bool,
) -> StatusUpdate {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let updates = engine
            .poll(std::slice::from_ref(run))
            .await
            .unwrap_or_else(|e| panic!("poll: {e}"));
        if let Some(u) = updates
            .into_iter()
            .find(|u| u.run_id == run.run_id && u.attempt == run.attempt)
        {
            if done(&u) {
                return u;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "run {}: waited for {what}; last update {u:?}",
                run.run_id
            );
        } else {
            assert!(
                tokio::time::Instant::now() < give_up,
                "run {}: no update while waiting for {what}",
                run.run_id
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the run stopped.
pub async fn wait_stopped(engine: &dyn Engine, run: &Run) -> StatusUpdate {
    wait_for(engine, run, "Stopped", |u| u.state == TaskState::Stopped).await
}

/// Waits until the run runs.
pub async fn wait_running(engine: &dyn Engine, run: &Run) -> StatusUpdate {
    wait_for(engine, run, "Running", |u| u.state == TaskState::Running).await
}
