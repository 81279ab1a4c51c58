//! The real `flotilla` binary on the Docker engine (`engines = ["docker"]`,
//! default SQLite store), killed with SIGKILL while its containers run and
//! restarted: every job runs exactly once and reports its real exit code,
//! (a) when the containers finished during the outage, (b) when they still
//! run at restart. Executions are counted at the daemon — the containers
//! of each run and the `started` lines in their output — not in flotilla's
//! records. Needs `FLOTILLA_TEST_DOCKER` and `FLOTILLA_TEST_DOCKER_IMAGE`
//! (a failure under `CI`).
#![cfg(unix)]

mod binary;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use binary::{Server, toml_string};
use flotilla_docker::bollard::Docker;
use flotilla_docker::bollard::query_parameters::{
    InspectContainerOptions, ListContainersOptions, LogsOptions, RemoveContainerOptions,
};
use futures::StreamExt;
use serde_json::json;

struct Site {
    dir: tempfile::TempDir,
    host: String,
    image: String,
    prefix: String,
    docker: Docker,
}

impl Site {
    fn new() -> Option<Site> {
        let [host, image]: [String; 2] = flotilla::testkit::service_env(
            &["FLOTILLA_TEST_DOCKER", "FLOTILLA_TEST_DOCKER_IMAGE"],
            "Docker server",
            "start dockerd with `eval \"$(test-support/docker/start.sh)\"` and export \
             FLOTILLA_TEST_DOCKER and FLOTILLA_TEST_DOCKER_IMAGE (it prints both)",
        )?
        .try_into()
        .ok()?;
        let docker = Docker::connect_with_unix(
            host.trim_start_matches("unix://"),
            60,
            flotilla_docker::bollard::API_DEFAULT_VERSION,
        )
        .expect("docker client");
        Some(Site {
            dir: tempfile::tempdir().expect("dir"),
            host,
            image,
            prefix: format!("fkill{}", uuid::Uuid::now_v7().simple()),
            docker,
        })
    }

    /// Docker engine, finished containers kept (so they can be counted),
    /// a short `missing_grace` so a restart that took adopted work for lost
    /// would retry it within the test and be caught.
    fn config(&self) -> PathBuf {
        let text = format!(
            "data_dir = {data}\nengines = [\"docker\"]\n\n[docker]\nhost = {host}\n\
             name_prefix = \"{p}\"\nremove_finished = false\n\n[workers]\nqueue_lease = 3000\n\
             receive_wait = 200\nstatus_poll_interval = 300\nlease_ttl = 3000\n\
             reconcile_interval = 1000\nmissing_grace = 2000\n",
            data = toml_string(&self.dir.path().join("data").to_string_lossy()),
            host = toml_string(&self.host),
            p = self.prefix,
        );
        let path = self.dir.path().join("flotilla.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    async fn start(&self) -> Server {
        Server::start_with(self.dir.path(), Some(&self.config()), &[]).await
    }

    async fn execute(&self, s: &Server, n: usize, nap: u32) -> Vec<(String, i64)> {
        let mut runs = Vec::new();
        for i in 0..n {
            let code = [0, 3, 42][i % 3];
            let run = s
                .put(
                    "/task/alias/docker-crash/execute",
                    &json!({
                        "cluster": "default",
                        "env": [{"name": "NAP", "value": nap.to_string()},
                                {"name": "CODE", "value": code.to_string()}],
                        "run_tags": {"owner_id": "crash"},
                    }),
                )
                .await;
            runs.push((run["run_id"].as_str().expect("run id").to_string(), code));
        }
        runs
    }

    /// The containers the daemon has for `run_id`.
    async fn containers_of(&self, run_id: &str) -> Vec<String> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{}={run_id}", flotilla_docker::RUN_LABEL)],
        )]);
        self.docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("list containers")
            .into_iter()
            .filter_map(|c| c.id)
            .collect()
    }

    /// What a container printed.
    async fn output(&self, id: &str) -> String {
        let mut logs = self.docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(chunk) = logs.next().await {
            out.push_str(&chunk.expect("logs").to_string());
        }
        out
    }

    async fn running(&self, id: &str) -> bool {
        self.docker
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
            .expect("inspect")
            .state
            .and_then(|s| s.running)
            .unwrap_or(false)
    }

    /// Waits until every run's container has exited.
    async fn wait_containers_exited(&self, runs: &[(String, i64)]) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (id, _) in runs {
            loop {
                let cs = self.containers_of(id).await;
                let mut alive = false;
                for c in &cs {
                    alive |= self.running(c).await;
                }
                if !cs.is_empty() && !alive {
                    break;
                }
                assert!(tokio::time::Instant::now() < deadline, "{id} never exited");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Every run ends STOPPED with its job's exit code, in attempt 1, and
    /// the daemon ran exactly one container for it, which started the job
    /// once.
    async fn assert_each_ran_once(&self, s: &Server, runs: &[(String, i64)], what: &str) {
        for (id, code) in runs {
            let run = s
                .wait_run(id, Duration::from_secs(90), |r| r["status"] == "STOPPED")
                .await;
            assert_eq!(run["exit_code"], json!(code), "{what}: exit code of {run}");
            assert_eq!(run["attempt"], 1, "{what}: attempt of {run}");
            let cs = self.containers_of(id).await;
            assert_eq!(cs.len(), 1, "{what}: containers of {id}");
            let out = self.output(&cs[0]).await;
            assert_eq!(
                out.lines().filter(|l| *l == "started").count(),
                1,
                "{what}: executions of {id}: {out:?}"
            );
        }
    }

    async fn clean_up(&self) {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!(
                "{}={}",
                flotilla_docker::MANAGED_LABEL,
                self.prefix
            )],
        )]);
        let list = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .unwrap_or_default();
        for c in list.into_iter().filter_map(|c| c.id) {
            let _ = self
                .docker
                .remove_container(
                    &c,
                    Some(RemoveContainerOptions {
                        force: true,
                        ..Default::default()
                    }),
                )
                .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_docker_server_runs_each_container_once() {
    let Some(site) = Site::new() else {
        return;
    };
    let s = site.start().await;
    s.post(
        "/task",
        &json!({
            "alias": "docker-crash", "group_name": "crash", "image": site.image,
            "memory": 64,
            "command": "echo started; sleep \"$NAP\"; echo finished; exit \"$CODE\"",
        }),
    )
    .await;

    // (a) Killed while RUNNING; the containers finish while it is down.
    let a = site.execute(&s, 4, 1).await;
    for (id, _) in &a {
        s.wait_run(id, Duration::from_secs(60), |r| r["status"] == "RUNNING")
            .await;
    }
    s.kill().await;
    site.wait_containers_exited(&a).await;
    let s = site.start().await;
    site.assert_each_ran_once(&s, &a, "(a) finished during the outage")
        .await;

    // (b) Killed while RUNNING; still running at restart.
    let b = site.execute(&s, 4, 6).await;
    for (id, _) in &b {
        s.wait_run(id, Duration::from_secs(60), |r| r["status"] == "RUNNING")
            .await;
    }
    s.kill().await;
    let s = site.start().await;
    let mut alive = false;
    for (id, _) in &b {
        for c in site.containers_of(id).await {
            alive |= site.running(&c).await;
        }
    }
    assert!(alive, "(b) needs containers alive at restart");
    site.assert_each_ran_once(&s, &b, "(b) running at restart")
        .await;
    s.stop().await;
    site.clean_up().await;
}
