//! Artifacts on ECS (moto), at the user's level: `Flotilla` executes a run
//! with an input zip on an `EcsEngine` with an artifacts helper; the test
//! reads the registered task definition and the started task back from
//! ECS, then plays the container agent for real — it runs the helpers'
//! commands (`flotilla artifacts pull|push`, through `flotilla::artifacts`
//! with the arguments and store settings the task carries), writes the
//! job's output, and stops the task with each container's exit code through
//! moto's control endpoint. S3 on moto and the local filesystem store.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, Task, TaskDefinition, TaskField,
};
use base64::Engine as _;
use flotilla::artifacts::{ArtifactStore, Artifacts, S3Options, ZipLimits, zip};
use flotilla::memory::{MemoryQueue, MemoryStore};
use flotilla::service::WorkerConfig;
use flotilla::{
    Engine, ErrorKind, ExecuteRequest, FailureCategory, Flotilla, FlotillaHandle, NewDefinition,
    Run, RunStatus, ServiceConfig,
};
use flotilla_ecs::artifacts::{INPUT_CONTAINER, NOTHING_TO_UPLOAD, OUTPUT_CONTAINER};
use flotilla_ecs::{CloudWatchLogs, EcsArtifactSettings, EcsEngine};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HELPER_IMAGE: &str = "flotilla:test";

/// Where the run's artifacts live.
#[derive(Debug, Clone, Copy)]
enum StoreKind {
    S3,
    Local,
}

struct Env {
    endpoint: String,
    flotilla: Flotilla,
    handle: Option<FlotillaHandle>,
    engine: Arc<EcsEngine>,
    store_url: String,
    _dir: tempfile::TempDir,
}

/// A request without a body (S3 CreateBucket, DeleteBucket on moto); the
/// status line must be `2xx`.
async fn bare_request(endpoint: &str, method: &str, path: &str) {
    let hostport = endpoint.strip_prefix("http://").expect("http endpoint");
    let mut s = tokio::net::TcpStream::connect(hostport)
        .await
        .expect("connect");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {hostport}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.expect("read");
    let text = String::from_utf8_lossy(&resp);
    assert!(text.starts_with("HTTP/1.1 2"), "{method} {path}: {text}");
}

/// The S3 options the helpers get from the task (endpoint and region from
/// its environment; credentials stand for the task role's).
fn s3_options(endpoint: Option<String>, region: Option<String>) -> S3Options {
    S3Options {
        endpoint,
        region,
        credentials: Some(("test".into(), "test".into())),
    }
}

impl Env {
    async fn start(endpoint: &str, kind: StoreKind) -> Env {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, region, store_endpoint) = match kind {
            StoreKind::S3 => {
                let bucket = format!("flotilla-ecs-art-{}", common::token());
                bare_request(endpoint, "PUT", &format!("/{bucket}")).await;
                let url = format!("s3://{bucket}/jobs");
                let store = ArtifactStore::s3(
                    &url,
                    s3_options(Some(endpoint.to_string()), Some("us-east-1".into())),
                )
                .expect("s3 store");
                (
                    store,
                    Some("us-east-1".to_string()),
                    Some(endpoint.to_string()),
                )
            }
            StoreKind::Local => (
                ArtifactStore::local(dir.path().join("artifacts")).expect("local store"),
                None,
                None,
            ),
        };
        let store_url = store.url().to_string();
        let mut settings = common::settings(endpoint);
        settings.artifacts = Some(EcsArtifactSettings {
            helper_image: HELPER_IMAGE.into(),
            store_url: store_url.clone(),
            region,
            endpoint: store_endpoint,
            ..EcsArtifactSettings::default()
        });
        let engine = Arc::new(EcsEngine::new(settings.clone()).await.expect("engine"));
        let logs = Arc::new(CloudWatchLogs::new(settings).await.expect("logs"));
        common::prepare(endpoint, &engine, &logs, true).await;
        let cluster = common::cluster(engine.settings());
        let config = ServiceConfig {
            default_cluster: cluster.clone(),
            clusters: vec![cluster],
            mode: "test".into(),
            workers: WorkerConfig {
                status_poll_interval: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        };
        let flotilla = Flotilla::builder()
            .store(Arc::new(MemoryStore::new()))
            .queue(Arc::new(MemoryQueue::new()))
            .engine(engine.clone())
            .log_source("ecs", logs)
            .artifacts(Artifacts::new(store))
            .config(config)
            .build()
            .expect("flotilla");
        let handle = Some(flotilla.start());
        Env {
            endpoint: endpoint.to_string(),
            flotilla,
            handle,
            engine,
            store_url,
            _dir: dir,
        }
    }

    async fn define(&self, skip_failed_output: bool) -> flotilla::Definition {
        let mut n = NewDefinition::new(format!("art-{}", common::token()), "busybox:latest")
            .command("cp /input/in.txt /output/copy.txt && echo done > /output/result.txt");
        n.memory = Some(128);
        n.max_attempts = Some(1);
        n.skip_failed_output = skip_failed_output;
        self.flotilla.define(n).await.expect("define")
    }

    /// Executes `def`, with `input` (a zip) when given, and waits until its
    /// task is started.
    async fn execute(&self, def: &flotilla::Definition, input: Option<Vec<u8>>) -> Run {
        let mut req = ExecuteRequest::owned_by("tester");
        req.input_zip = input.map(|z| base64::engine::general_purpose::STANDARD.encode(z));
        let run = self
            .flotilla
            .execute(&def.definition_id, req)
            .await
            .expect("execute");
        let give_up = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.flotilla.get_run(&run.run_id).await.expect("get run");
            if r.engine_ref.is_some() && r.status == RunStatus::Running {
                return r;
            }
            assert!(
                tokio::time::Instant::now() < give_up,
                "never started: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The started task of `run` and its task definition, as ECS has them.
    async fn task(&self, run: &Run) -> (Task, TaskDefinition) {
        let client = self.engine.client();
        let tasks = client
            .describe_tasks()
            .cluster(&run.cluster)
            .tasks(run.engine_ref.clone().expect("engine_ref"))
            .include(TaskField::Tags)
            .send()
            .await
            .expect("describe tasks");
        let task = tasks.tasks().first().expect("the task").clone();
        let td = client
            .describe_task_definition()
            .task_definition(task.task_definition_arn().expect("arn"))
            .send()
            .await
            .expect("describe task definition")
            .task_definition()
            .expect("task definition")
            .clone();
        (task, td)
    }

    /// Stops `run`'s task with these containers' exit codes (and reasons)
    /// and waits for the run to stop.
    async fn finish(&self, run: &Run, containers: serde_json::Value) -> Run {
        common::control(
            &self.endpoint,
            "/_flotilla/ecs/finish-task",
            Some(serde_json::json!({
                "cluster": run.cluster, "task": run.engine_ref, "exit_code": null,
                "stop_code": "EssentialContainerExited",
                "stopped_reason": "Essential container in task exited",
                "containers": containers,
            })),
        )
        .await
        .expect("finish task");
        self.flotilla
            .wait_for_stop(&run.run_id, Duration::from_secs(60))
            .await
            .expect("stops")
    }

    async fn stop(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown().await;
        }
    }
}

fn container<'a>(td: &'a TaskDefinition, name: &str) -> &'a ContainerDefinition {
    td.container_definitions()
        .iter()
        .find(|c| c.name() == Some(name))
        .unwrap_or_else(|| panic!("no container {name} in {td:?}"))
}

/// `(volume, path, read only)` of a container's mount points.
fn mounts(c: &ContainerDefinition) -> Vec<(String, String, bool)> {
    c.mount_points()
        .iter()
        .map(|m| {
            (
                m.source_volume().unwrap_or("").to_string(),
                m.container_path().unwrap_or("").to_string(),
                m.read_only().unwrap_or(false),
            )
        })
        .collect()
}

/// `(container, condition)` of a container's dependencies.
fn depends(c: &ContainerDefinition) -> Vec<(String, ContainerCondition)> {
    c.depends_on()
        .iter()
        .map(|d| (d.container_name().to_string(), d.condition().clone()))
        .collect()
}

fn env_of(c: &ContainerDefinition, name: &str) -> Option<String> {
    c.environment()
        .iter()
        .find(|e| e.name() == Some(name))
        .and_then(|e| e.value().map(str::to_string))
}

/// The command the task's overrides give `name`, if any.
fn override_command(task: &Task, name: &str) -> Option<Vec<String>> {
    task.overrides()?
        .container_overrides()
        .iter()
        .find(|o| o.name() == Some(name))
        .map(|o| o.command().to_vec())
        .filter(|c| !c.is_empty())
}

/// The artifact store a helper container of `td` reaches: from its
/// environment, as `flotilla artifacts` reads its `[artifacts]` section.
fn helper_store(td: &TaskDefinition, name: &str) -> Artifacts {
    let c = container(td, name);
    let url = env_of(c, "FLOTILLA_ARTIFACTS__URL").expect("FLOTILLA_ARTIFACTS__URL");
    let store = match url.strip_prefix("file://") {
        Some(dir) => ArtifactStore::local(dir),
        None => ArtifactStore::s3(
            &url,
            s3_options(
                env_of(c, "FLOTILLA_ARTIFACTS__ENDPOINT"),
                env_of(c, "FLOTILLA_ARTIFACTS__REGION"),
            ),
        ),
    }
    .expect("the helper's store");
    Artifacts::new(store)
}

/// Runs a helper's `flotilla` command as its container would (`artifacts
/// pull URL DIR`, `artifacts push DIR URL`, `--version`), its container
/// paths under `root` (the task's volumes); its exit code: 0, 2 as the
/// binary on an error, or the output helper's [`NOTHING_TO_UPLOAD`] for an
/// empty `/output` (its entry point checks before it runs `flotilla`).
async fn run_helper(artifacts: &Artifacts, command: &[String], root: &Path) -> i64 {
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let result = match command {
        [v] if v == "--version" => Ok(()),
        [a, p, url, dir] if a == "artifacts" && p == "pull" => {
            artifacts.fetch_input(url, &at(dir)).await.map(|_| ())
        }
        [a, p, dir, url] if a == "artifacts" && p == "push" => {
            let dir = at(dir);
            if std::fs::read_dir(&dir).map_or(true, |mut d| d.next().is_none()) {
                return NOTHING_TO_UPLOAD;
            }
            match zip::pack(&dir, artifacts.limits()) {
                Ok(zip) => artifacts.put_url(url, zip).await.map(|_| ()),
                Err(e) => Err(e),
            }
        }
        other => panic!("not a helper command: {other:?}"),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("helper {command:?}: error: {e}");
            2
        }
    }
}

fn input_zip() -> Vec<u8> {
    let src = tempfile::tempdir().expect("tempdir");
    std::fs::write(src.path().join("in.txt"), "from the input zip\n").expect("write");
    zip::pack(src.path(), &ZipLimits::default()).expect("pack")
}

async fn an_input_goes_in_and_the_output_comes_back(kind: StoreKind) {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint, kind).await;
    assert!(env.engine.capabilities().artifacts);
    let def = env.define(false).await;
    let run = env.execute(&def, Some(input_zip())).await;
    let input_url = run.input_url.clone().expect("input_url");
    assert!(input_url.starts_with(&env.store_url), "{input_url}");
    let (task, td) = env.task(&run).await;

    // The task definition: volumes, mounts, dependencies, essential flags.
    let volumes: Vec<(&str, bool)> = td
        .volumes()
        .iter()
        .map(|v| (v.name().unwrap_or(""), v.host().is_none()))
        .collect();
    assert_eq!(
        volumes,
        [("flotilla-input", true), ("flotilla-output", true)],
        "task-scoped volumes without a host path"
    );
    let job = container(&td, "main");
    assert_eq!(job.essential(), Some(false), "the task outlives the job");
    assert_eq!(
        mounts(job),
        [
            ("flotilla-input".into(), "/input".into(), true),
            ("flotilla-output".into(), "/output".into(), false)
        ]
    );
    assert_eq!(
        depends(job),
        [(INPUT_CONTAINER.into(), ContainerCondition::Success)]
    );
    assert_eq!(env_of(job, "FLOTILLA_INPUT_DIR").as_deref(), Some("/input"));
    assert_eq!(
        env_of(job, "FLOTILLA_OUTPUT_DIR").as_deref(),
        Some("/output")
    );
    let pull = container(&td, INPUT_CONTAINER);
    assert_eq!(pull.image(), Some(HELPER_IMAGE));
    assert_eq!(pull.essential(), Some(false));
    assert!(depends(pull).is_empty());
    assert_eq!(
        mounts(pull),
        [
            ("flotilla-input".into(), "/input".into(), false),
            ("flotilla-output".into(), "/output".into(), false)
        ]
    );
    let push = container(&td, OUTPUT_CONTAINER);
    assert_eq!(push.image(), Some(HELPER_IMAGE));
    assert_eq!(push.essential(), Some(true), "its exit stops the task");
    assert_eq!(
        depends(push),
        [("main".into(), ContainerCondition::Complete)]
    );
    assert_eq!(
        mounts(push),
        [("flotilla-output".into(), "/output".into(), true)]
    );
    assert_eq!(
        env_of(push, "FLOTILLA_ARTIFACTS__URL").as_deref(),
        Some(env.store_url.as_str())
    );

    // The run's own values are in the task's overrides.
    let output_url = format!("{}/runs/{}/attempt-1/output.zip", env.store_url, run.run_id);
    let pull_cmd = override_command(&task, INPUT_CONTAINER).expect("pull override");
    assert_eq!(pull_cmd, ["artifacts", "pull", &input_url, "/input"]);
    let push_cmd = override_command(&task, OUTPUT_CONTAINER).expect("push override");
    assert_eq!(push_cmd, ["artifacts", "push", "/output", &output_url]);

    // The agent: pull, the job, push — for real, on the task's volumes.
    let volumes = tempfile::tempdir().expect("tempdir");
    let pulled = run_helper(
        &helper_store(&td, INPUT_CONTAINER),
        &pull_cmd,
        volumes.path(),
    )
    .await;
    assert_eq!(pulled, 0, "pull");
    let input = volumes.path().join("input");
    let output = volumes.path().join("output");
    std::fs::create_dir_all(&output).expect("mkdir");
    let read = std::fs::read_to_string(input.join("in.txt")).expect("the input, unpacked");
    std::fs::write(output.join("copy.txt"), &read).expect("the job's output");
    std::fs::write(output.join("result.txt"), "done\n").expect("the job's output");
    let pushed = run_helper(
        &helper_store(&td, OUTPUT_CONTAINER),
        &push_cmd,
        volumes.path(),
    )
    .await;
    assert_eq!(pushed, 0, "push");
    let done = env
        .finish(
            &run,
            serde_json::json!({
                INPUT_CONTAINER: {"exit_code": pulled}, "main": {"exit_code": 0},
                OUTPUT_CONTAINER: {"exit_code": pushed},
            }),
        )
        .await;
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.failure, None, "{done:?}");
    assert_eq!(done.output_url.as_deref(), Some(output_url.as_str()));
    let body = env
        .flotilla
        .artifacts()
        .expect("artifacts")
        .get(&output_url, 1 << 20)
        .await
        .expect("the output zip");
    let back = tempfile::tempdir().expect("tempdir");
    zip::unpack(&body, back.path(), &ZipLimits::default()).expect("a zip");
    assert_eq!(
        std::fs::read_to_string(back.path().join("copy.txt")).expect("copy.txt"),
        "from the input zip\n"
    );
    assert_eq!(
        std::fs::read_to_string(back.path().join("result.txt")).expect("result.txt"),
        "done\n"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_zip_goes_in_and_the_output_comes_back_through_s3() {
    an_input_goes_in_and_the_output_comes_back(StoreKind::S3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_input_zip_goes_in_and_the_output_comes_back_through_local_files() {
    an_input_goes_in_and_the_output_comes_back(StoreKind::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_fails_a_successful_run_with_artifact_upload() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint, StoreKind::S3).await;
    let def = env.define(false).await;
    // Without an input: the pull helper keeps its no-op.
    let run = env.execute(&def, None).await;
    assert_eq!(run.input_url, None);
    let (task, td) = env.task(&run).await;
    assert_eq!(override_command(&task, INPUT_CONTAINER), None);
    assert_eq!(container(&td, INPUT_CONTAINER).command(), ["--version"]);
    let push_cmd = override_command(&task, OUTPUT_CONTAINER).expect("push override");
    // The bucket is gone when the job has run: the real push fails, and
    // the helper would exit non-zero.
    let bucket = env
        .store_url
        .strip_prefix("s3://")
        .and_then(|r| r.split('/').next())
        .expect("bucket")
        .to_string();
    bare_request(&endpoint, "DELETE", &format!("/{bucket}")).await;
    let volumes = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(volumes.path().join("output")).expect("mkdir");
    std::fs::write(volumes.path().join("output/result.txt"), "x").expect("write");
    let pushed = run_helper(
        &helper_store(&td, OUTPUT_CONTAINER),
        &push_cmd,
        volumes.path(),
    )
    .await;
    assert_eq!(pushed, 2, "no bucket, no upload");
    let done = env
        .finish(
            &run,
            serde_json::json!({
                INPUT_CONTAINER: {"exit_code": 0}, "main": {"exit_code": 0},
                OUTPUT_CONTAINER: {"exit_code": pushed},
            }),
        )
        .await;
    assert_eq!(done.exit_code, Some(0), "the job's own exit code");
    assert_eq!(
        done.failure,
        Some(FailureCategory::ArtifactUpload),
        "{done:?}"
    );
    assert_eq!(done.output_url, None);
    assert!(
        done.exit_reason
            .as_deref()
            .is_some_and(|r| r.contains("uploading the output failed")),
        "{done:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_that_writes_nothing_has_no_output() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint, StoreKind::Local).await;
    let def = env.define(false).await;
    let run = env.execute(&def, None).await;
    let (task, td) = env.task(&run).await;
    let volumes = tempfile::tempdir().expect("tempdir");
    let pull_cmd = override_command(&task, INPUT_CONTAINER)
        .unwrap_or_else(|| container(&td, INPUT_CONTAINER).command().to_vec());
    let pulled = run_helper(
        &helper_store(&td, INPUT_CONTAINER),
        &pull_cmd,
        volumes.path(),
    )
    .await;
    assert_eq!(pulled, 0, "the no-op");
    std::fs::create_dir_all(volumes.path().join("output")).expect("an empty /output");
    let push_cmd = override_command(&task, OUTPUT_CONTAINER).expect("push override");
    let pushed = run_helper(
        &helper_store(&td, OUTPUT_CONTAINER),
        &push_cmd,
        volumes.path(),
    )
    .await;
    assert_eq!(pushed, NOTHING_TO_UPLOAD);
    let done = env
        .finish(
            &run,
            serde_json::json!({
                INPUT_CONTAINER: {"exit_code": pulled}, "main": {"exit_code": 0},
                OUTPUT_CONTAINER: {"exit_code": pushed},
            }),
        )
        .await;
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(
        done.failure, None,
        "an empty output is no failure: {done:?}"
    );
    assert_eq!(done.output_url, None, "nothing was uploaded");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_stops_the_run_before_its_job_and_skip_failed_output_waits_for_success() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let env = Env::start(&endpoint, StoreKind::Local).await;
    let def = env.define(true).await;
    let run = env.execute(&def, Some(input_zip())).await;
    let (_, td) = env.task(&run).await;
    assert_eq!(
        depends(container(&td, OUTPUT_CONTAINER)),
        [("main".into(), ContainerCondition::Success)],
        "skip_failed_output: no push after a failed job"
    );
    // The pull fails: the agent never starts the job (exit 143 and a
    // dependency reason, as ECS reports it), nor then the push.
    let dependency = "CannotStartContainerError: dependency graph: failed to resolve container ordering dependency";
    let done = env
        .finish(
            &run,
            serde_json::json!({
                INPUT_CONTAINER: {"exit_code": 2},
                "main": {"exit_code": 143, "reason": dependency},
                OUTPUT_CONTAINER: {"exit_code": 143, "reason": dependency},
            }),
        )
        .await;
    assert_eq!(
        done.failure,
        Some(FailureCategory::ContainerStart),
        "{done:?}"
    );
    assert_eq!((done.exit_code, done.output_url.clone()), (None, None));
    assert!(
        done.exit_reason
            .as_deref()
            .is_some_and(|r| r.contains("staging the input failed")),
        "{done:?}"
    );
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_without_artifacts_registers_the_job_alone_and_refuses_inputs() {
    let Some(endpoint) = common::endpoint() else {
        return;
    };
    let (engine, _logs) = common::backend(&endpoint).await;
    assert!(!engine.capabilities().artifacts);
    let mut n = NewDefinition::new(format!("plain-{}", common::token()), "busybox:latest")
        .command("echo hi");
    n.memory = Some(128);
    let def = n.into_definition();
    let cluster = common::cluster(engine.settings());
    let mut run = common::run_of(&def, &cluster, "ecs");
    run.input_url = Some("s3://bucket/runs/x/input.zip".into());
    let e = engine.submit(&run, &def).await.expect_err("no helper");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    run.input_url = None;
    let submitted = engine.submit(&run, &def).await.expect("submit");
    let task = engine
        .client()
        .describe_tasks()
        .cluster(&cluster)
        .tasks(&submitted.engine_ref)
        .send()
        .await
        .expect("describe tasks");
    let task = task.tasks().first().expect("task");
    let td = engine
        .client()
        .describe_task_definition()
        .task_definition(task.task_definition_arn().expect("arn"))
        .send()
        .await
        .expect("describe task definition");
    let td = td.task_definition().expect("td");
    assert!(td.volumes().is_empty(), "{td:?}");
    assert_eq!(td.container_definitions().len(), 1);
    let job = &td.container_definitions()[0];
    assert_eq!(job.essential(), Some(true));
    assert!(job.mount_points().is_empty() && job.depends_on().is_empty());
    assert_eq!(env_of(job, "FLOTILLA_OUTPUT_DIR"), None);
    let names: Vec<&str> = task
        .overrides()
        .map(|o| {
            o.container_overrides()
                .iter()
                .filter_map(|c| c.name())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(names, ["main"]);
}
