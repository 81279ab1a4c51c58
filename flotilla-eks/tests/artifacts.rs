//! Input and output artifacts on the Kubernetes engine: the Job spec's
//! volumes, mounts, env, pull init container and upload sidecar, then the
//! kubelet played for real — the helper containers' commands run as
//! processes of the built `flotilla` binary (pull, then push waiting for
//! SIGTERM), the job's work done in between — against the local
//! filesystem store and S3 on moto.
//!
//! The binary is `FLOTILLA_BIN` when set, else `<target>/<profile>/flotilla`
//! when it has `artifacts push --on-sigterm` (a workspace test build made
//! it), else built here with `cargo build -p flotilla-http --bin flotilla`
//! into the same target directory. The S3 tests need `FLOTILLA_TEST_AWS_ENDPOINT` (start moto
//! with `test-support/moto/start.sh`); without it they fail when `CI` is
//! set and warn loudly otherwise.

mod support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use flotilla::artifacts::{Artifacts, ZipLimits, zip};
use flotilla::service::WorkerConfig;
use flotilla::{
    Engine, ExecuteRequest, FailureCategory, Flotilla, NewDefinition, RetryPolicy, Run, RunStatus,
    ServiceConfig, TaskState,
};
use flotilla_eks::names::job_name;
use flotilla_eks::spec::{
    INPUT_PATH, INPUT_VOLUME, OUTPUT_PATH, OUTPUT_VOLUME, PULL_CONTAINER, TERMINATION_LOG,
    UPLOAD_CONTAINER,
};
use flotilla_eks::{EksArtifacts, EksEngine, EksSettings, PodLogs};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use support::{FakeApiServer, engine_on, new_run, settings};

const HELPER: &str = "registry.example.com/flotilla:test";
const GRACE: i64 = 120;

// ---------------------------------------------------------------- helpers

/// The built `flotilla` binary (see the module's doc).
fn flotilla_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("FLOTILLA_BIN") {
            return PathBuf::from(p);
        }
        // <target>/<profile>/deps/<this test> -> <target>/<profile>/flotilla
        let exe = std::env::current_exe().expect("current exe");
        let profile = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps")
            .to_path_buf();
        let bin = profile.join("flotilla");
        // A workspace test build (CI) built it already: use it when it
        // has the upload step's flag.
        let has_flag = std::process::Command::new(&bin)
            .args(["artifacts", "push", "--help"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("--on-sigterm"));
        if has_flag {
            return bin;
        }
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut c = std::process::Command::new(cargo);
        // Not this test's CARGO_* variables: they would make the build
        // differ from a plain one (and rebuild the graph).
        c.env_clear();
        for k in [
            "PATH",
            "HOME",
            "USER",
            "TMPDIR",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "RUSTUP_HOME",
            "RUSTUP_TOOLCHAIN",
        ] {
            if let Some(v) = std::env::var_os(k) {
                c.env(k, v);
            }
        }
        c.args(["build", "-p", "flotilla-http", "--bin", "flotilla"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile.file_name().is_some_and(|n| n == "release") {
            c.arg("--release");
        }
        let status = c.status().expect("running cargo build");
        assert!(status.success(), "building the flotilla binary failed");
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

fn with_artifacts(store_url: &str, endpoint: Option<&str>) -> EksSettings {
    EksSettings {
        artifacts: Some(EksArtifacts {
            helper_image: HELPER.into(),
            store_url: store_url.into(),
            region: endpoint.map(|_| "us-east-1".to_string()),
            endpoint: endpoint.map(String::from),
            upload_grace_seconds: GRACE,
            ..EksArtifacts::default()
        }),
        ..settings()
    }
}

fn input_zip(dir: &Path) -> Vec<u8> {
    let src = dir.join("src");
    std::fs::create_dir_all(src.join("data")).expect("mkdir");
    std::fs::write(src.join("data/numbers.txt"), "1\n2\n3\n").expect("write");
    zip::pack(&src, &ZipLimits::default()).expect("pack")
}

/// The Job as the fake API server stored it, typed.
async fn created_job(server: &FakeApiServer, name: &str) -> Job {
    serde_json::from_value(server.wait_for_job(name).await).expect("a batch/v1 Job")
}

fn pod_spec(job: &Job) -> &PodSpec {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn env_of(c: &Container) -> Vec<(String, String)> {
    c.env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

/// Asserts the artifact parts of the Job's pod; returns its init
/// containers (the pull, if `input_url`, then the upload step).
fn assert_artifact_spec(
    job: &Job,
    store_url: &str,
    input_url: Option<&str>,
    output_url: &str,
) -> Vec<Container> {
    let pod = pod_spec(job);
    let volumes: Vec<(&str, bool)> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| (v.name.as_str(), v.empty_dir.is_some()))
        .collect();
    assert_eq!(
        volumes,
        [(INPUT_VOLUME, true), (OUTPUT_VOLUME, true)],
        "two emptyDir volumes"
    );
    assert_eq!(pod.termination_grace_period_seconds, Some(GRACE));
    let main = &pod.containers[0];
    let mounts: Vec<(&str, &str, bool)> = main
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| {
            (
                m.name.as_str(),
                m.mount_path.as_str(),
                m.read_only.unwrap_or(false),
            )
        })
        .collect();
    assert_eq!(
        mounts,
        [
            (INPUT_VOLUME, "/input", true),
            (OUTPUT_VOLUME, "/output", false)
        ]
    );
    let env = env_of(main);
    assert!(env.contains(&("FLOTILLA_INPUT_DIR".into(), "/input".into())));
    assert!(env.contains(&("FLOTILLA_OUTPUT_DIR".into(), "/output".into())));

    let inits = pod.init_containers.clone().unwrap_or_default();
    let names: Vec<&str> = inits.iter().map(|c| c.name.as_str()).collect();
    match input_url {
        Some(_) => assert_eq!(names, [PULL_CONTAINER, UPLOAD_CONTAINER]),
        None => assert_eq!(names, [UPLOAD_CONTAINER], "no pull without an input"),
    }
    for c in &inits {
        assert_eq!(c.image.as_deref(), Some(HELPER));
        assert_eq!(c.command.as_deref(), Some(&["flotilla".to_string()][..]));
        let env = env_of(c);
        assert!(
            env.contains(&("FLOTILLA_ARTIFACTS__URL".into(), store_url.into())),
            "{env:?}"
        );
        assert!(
            env.iter()
                .all(|(n, _)| !n.contains("SECRET") && !n.contains("ACCESS_KEY")),
            "no secrets for the helpers: {env:?}"
        );
    }
    if let Some(url) = input_url {
        let pull = &inits[0];
        assert_eq!(pull.restart_policy, None, "a plain init container");
        assert_eq!(
            pull.args.as_deref().expect("args"),
            ["artifacts", "pull", url, INPUT_PATH]
        );
        let m = &pull.volume_mounts.as_ref().expect("mounts")[0];
        assert_eq!(
            (m.name.as_str(), m.mount_path.as_str()),
            (INPUT_VOLUME, "/input")
        );
    }
    let upload = inits.last().expect("upload step");
    assert_eq!(
        upload.restart_policy.as_deref(),
        Some("Always"),
        "a native sidecar"
    );
    assert_eq!(
        upload.args.as_deref().expect("args"),
        [
            "artifacts",
            "push",
            OUTPUT_PATH,
            output_url,
            "--on-sigterm",
            "--result-file",
            TERMINATION_LOG
        ]
    );
    let m = &upload.volume_mounts.as_ref().expect("mounts")[0];
    assert_eq!(
        (m.name.as_str(), m.mount_path.as_str(), m.read_only),
        (OUTPUT_VOLUME, "/output", Some(true))
    );
    inits
}

/// One pod's volumes on this host: the kubelet's emptyDirs and the
/// termination message file of the upload step.
struct Kubelet {
    root: tempfile::TempDir,
    /// The pod's identity (what IRSA would give it): extra env.
    identity: Vec<(String, String)>,
}

impl Kubelet {
    fn new(identity: &[(&str, &str)]) -> Self {
        let root = tempfile::tempdir().expect("tempdir");
        for d in ["input", "output"] {
            std::fs::create_dir_all(root.path().join(d)).expect("mkdir");
        }
        Kubelet {
            root,
            identity: identity
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn input(&self) -> PathBuf {
        self.root.path().join("input")
    }

    fn output(&self) -> PathBuf {
        self.root.path().join("output")
    }

    fn termination_log(&self) -> PathBuf {
        self.root.path().join("termination-log")
    }

    /// The container's command on this host: `flotilla` is the built
    /// binary, the mount paths are the emptyDirs here; its env only (no
    /// `FLOTILLA_*` of this process) plus the pod's identity.
    fn command(&self, c: &Container) -> tokio::process::Command {
        assert_eq!(c.command.as_deref(), Some(&["flotilla".to_string()][..]));
        let args: Vec<String> = c
            .args
            .iter()
            .flatten()
            .map(|a| match a.as_str() {
                INPUT_PATH => self.input().display().to_string(),
                OUTPUT_PATH => self.output().display().to_string(),
                TERMINATION_LOG => self.termination_log().display().to_string(),
                other => other.to_string(),
            })
            .collect();
        let mut cmd = tokio::process::Command::new(flotilla_bin());
        cmd.args(&args).current_dir(self.root.path());
        for (k, _) in std::env::vars() {
            if k.starts_with("FLOTILLA_") || k.starts_with("AWS_") {
                cmd.env_remove(k);
            }
        }
        cmd.envs(env_of(c)).envs(self.identity.clone());
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        cmd
    }

    /// Runs an init container to its end: its exit code and output.
    async fn run_init(&self, c: &Container) -> (i32, String) {
        let out = self.command(c).output().await.expect("run helper");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Starts the upload sidecar and waits until it waits for SIGTERM.
    async fn start_sidecar(&self, c: &Container) -> Sidecar {
        use tokio::io::AsyncBufReadExt;
        let mut cmd = self.command(c);
        cmd.stderr(std::process::Stdio::inherit());
        let mut child = cmd.spawn().expect("start sidecar");
        let stdout = child.stdout.take().expect("stdout");
        let (ready_tx, ready) = tokio::sync::oneshot::channel();
        // Reads its output to the end (a closed pipe would fail its
        // last words).
        let output = tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(stdout).lines();
            let mut ready_tx = Some(ready_tx);
            let mut all = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("waiting for SIGTERM")
                    && let Some(tx) = ready_tx.take()
                {
                    let _ = tx.send(());
                }
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        tokio::time::timeout(Duration::from_secs(30), ready)
            .await
            .expect("the sidecar got ready in time")
            .expect("the sidecar waits for SIGTERM");
        Sidecar { child, output }
    }

    /// The kubelet stops the sidecar: SIGTERM, then its exit code and
    /// termination message.
    async fn stop_sidecar(&self, mut sidecar: Sidecar) -> (i32, String) {
        let pid = sidecar.child.id().expect("pid");
        let killed = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(killed.success());
        let status = tokio::time::timeout(Duration::from_secs(60), sidecar.child.wait())
            .await
            .expect("the sidecar stopped within its grace")
            .expect("wait");
        let said = sidecar.output.await.expect("output");
        eprintln!("upload step said: {said}");
        let message = std::fs::read_to_string(self.termination_log()).unwrap_or_default();
        (status.code().unwrap_or(-1), message)
    }

    /// The job: reads its input, writes its output.
    fn job_works(&self) {
        let numbers =
            std::fs::read_to_string(self.input().join("data/numbers.txt")).expect("the input");
        let sum: i64 = numbers.lines().map(|l| l.parse::<i64>().expect("n")).sum();
        std::fs::create_dir_all(self.output().join("report")).expect("mkdir");
        std::fs::write(self.output().join("report/sum.txt"), format!("{sum}\n")).expect("write");
    }
}

struct Sidecar {
    child: tokio::process::Child,
    output: tokio::task::JoinHandle<String>,
}

/// Plays the whole pod for real: the pull (if any), the upload sidecar,
/// the job (reads its input, writes its output), its exit `code`, the
/// SIGTERM to the sidecar, then tells the fake API server each step.
async fn play_pod(
    server: &FakeApiServer,
    job: &str,
    inits: &[Container],
    kubelet: &Kubelet,
    code: i32,
) {
    for c in inits.iter().filter(|c| c.restart_policy.is_none()) {
        let (exit, text) = kubelet.run_init(c).await;
        assert_eq!(exit, 0, "{} failed: {text}", c.name);
    }
    let upload = inits.last().expect("upload step");
    let sidecar = kubelet.start_sidecar(upload).await;
    server.start_pod(job);
    kubelet.job_works();
    server.exit_main(job, code, if code == 0 { "Completed" } else { "Error" });
    let pod = &server.pods_of(job)[0];
    assert_eq!(
        pod["status"]["phase"], "Running",
        "the pod waits for its sidecar"
    );
    let (exit, message) = kubelet.stop_sidecar(sidecar).await;
    server.stop_sidecar(job, UPLOAD_CONTAINER, exit, &message);
}

fn unpack_sum(body: &[u8]) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    zip::unpack(body, dir.path(), &ZipLimits::default()).expect("the output is a good zip");
    std::fs::read_to_string(dir.path().join("report/sum.txt")).expect("the job's file")
}

fn service(engine: &EksEngine, artifacts: Artifacts) -> (Flotilla, flotilla::FlotillaHandle) {
    let f = Flotilla::builder()
        .engine(Arc::new(engine.clone()))
        .log_source("eks", Arc::new(PodLogs::new(engine)))
        .artifacts(artifacts)
        .config(ServiceConfig {
            default_cluster: "default".into(),
            clusters: vec!["default".into()],
            retry: RetryPolicy {
                base_backoff: Duration::from_millis(50),
                ..RetryPolicy::default()
            },
            workers: WorkerConfig {
                status_poll_interval: Duration::from_secs(2),
                receive_wait: Duration::from_millis(200),
                ..WorkerConfig::default()
            },
            ..ServiceConfig::default()
        })
        .build()
        .expect("build");
    let handle = f.start();
    (f, handle)
}

async fn define(f: &Flotilla, skip_failed_output: bool) -> String {
    let mut d = NewDefinition::new(format!("art-{}", flotilla::model::new_id()), "busybox:1")
        .command("sum-numbers");
    d.skip_failed_output = skip_failed_output;
    f.define(d).await.expect("define").definition_id
}

async fn execute_with_zip(f: &Flotilla, def: &str, zip: &[u8]) -> Run {
    let mut req = ExecuteRequest::owned_by("data-science");
    req.input_zip = Some(base64::engine::general_purpose::STANDARD.encode(zip));
    f.execute(def, req).await.expect("execute")
}

async fn read_output(f: &Flotilla, run_id: &str) -> Vec<u8> {
    use futures::StreamExt;
    let (_, mut stream) = f.open_output(run_id).await.expect("output");
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        body.extend_from_slice(&chunk.expect("chunk"));
    }
    body
}

async fn s3(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = flotilla_aws::StaticCredentials::new("test", "test");
    let shared = flotilla_aws::sdk_config("us-east-1", Some(endpoint), Some(&creds), 3).await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Polls the engine alone until the attempt stopped.
async fn stopped(engine: &EksEngine, run: &Run) -> flotilla::StatusUpdate {
    for _ in 0..1500 {
        let u = engine.poll(std::slice::from_ref(run)).await.expect("poll");
        if let Some(u) = u.into_iter().find(|u| u.state == TaskState::Stopped) {
            return u;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("run {} never stopped", run.run_id);
}

// ------------------------------------------------------------------ tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_an_input_zip_gets_its_output_zip_back_through_the_helper_containers_on_a_local_store()
 {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("store");
    let store_url = artifacts.default_store().url().to_string();
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], with_artifacts(&store_url, None));
    assert!(engine.capabilities().artifacts);
    let (f, handle) = service(&engine, artifacts);
    let def = define(&f, false).await;
    let run = execute_with_zip(&f, &def, &input_zip(dir.path())).await;
    let input_url = run.input_url.clone().expect("the input was staged");
    let name = job_name(&run.run_id, 1);
    let output_url = format!("{store_url}/runs/{}/attempt-1/output.zip", run.run_id);

    let job = created_job(&server, &name).await;
    let inits = assert_artifact_spec(&job, &store_url, Some(&input_url), &output_url);
    let kubelet = Kubelet::new(&[]);
    play_pod(&server, &name, &inits, &kubelet, 0).await;

    let done = f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert!(done.succeeded(), "{done:?}");
    assert_eq!(done.output_url.as_deref(), Some(output_url.as_str()));
    assert_eq!(unpack_sum(&read_output(&f, &run.run_id).await), "6\n");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_with_an_input_on_s3_gets_its_output_zip_back_through_the_helper_containers() {
    let Some(endpoint) = support::moto("the S3 artifact tests") else {
        return;
    };
    let s3 = s3(&endpoint).await;
    let bucket = format!("flotilla-art-{}", flotilla::model::new_id());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let store_url = format!("s3://{bucket}/flotilla");
    let dir = tempfile::tempdir().expect("tempdir");
    s3.put_object()
        .bucket(&bucket)
        .key("flotilla/uploads/features.zip")
        .body(input_zip(dir.path()).into())
        .send()
        .await
        .expect("put input");
    let input_url = format!("{store_url}/uploads/features.zip");

    let server = FakeApiServer::start().await;
    let engine = engine_on(
        &[("default", &server)],
        with_artifacts(&store_url, Some(&endpoint)),
    );
    let def = NewDefinition::new("s3-art", "busybox:1").into_definition();
    let mut run = new_run(&def, "default", None);
    run.input_url = Some(input_url.clone());
    engine.submit(&run, &def).await.expect("submit");
    let name = job_name(&run.run_id, 1);
    let output_url = format!("{store_url}/runs/{}/attempt-1/output.zip", run.run_id);
    let job = created_job(&server, &name).await;
    let inits = assert_artifact_spec(&job, &store_url, Some(&input_url), &output_url);
    assert!(
        env_of(&inits[0]).contains(&("FLOTILLA_ARTIFACTS__ENDPOINT".into(), endpoint.clone())),
        "the helpers reach the configured endpoint"
    );

    // The pod's identity: what IRSA gives the service account's pods.
    let kubelet = Kubelet::new(&[
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]);
    play_pod(&server, &name, &inits, &kubelet, 0).await;
    let u = stopped(&engine, &run).await;
    assert_eq!((u.exit_code, u.failure), (Some(0), None), "{u:?}");
    assert_eq!(u.output_url.as_deref(), Some(output_url.as_str()));
    let key = format!("flotilla/runs/{}/attempt-1/output.zip", run.run_id);
    let body = s3
        .get_object()
        .bucket(&bucket)
        .key(&key)
        .send()
        .await
        .expect("the output is in the bucket")
        .body
        .collect()
        .await
        .expect("body")
        .into_bytes();
    assert_eq!(unpack_sum(&body), "6\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_fails_after_the_job_fails_the_attempt_with_artifact_upload() {
    let Some(endpoint) = support::moto("the S3 artifact tests") else {
        return;
    };
    let s3 = s3(&endpoint).await;
    let bucket = format!("flotilla-art-{}", flotilla::model::new_id());
    s3.create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("bucket");
    let store_url = format!("s3://{bucket}");
    let server = FakeApiServer::start().await;
    let engine = engine_on(
        &[("default", &server)],
        with_artifacts(&store_url, Some(&endpoint)),
    );
    let def = NewDefinition::new("s3-fail", "busybox:1").into_definition();
    let run = new_run(&def, "default", None);
    engine.submit(&run, &def).await.expect("submit");
    let name = job_name(&run.run_id, 1);
    let output_url = format!("{store_url}/runs/{}/attempt-1/output.zip", run.run_id);
    let job = created_job(&server, &name).await;
    let inits = assert_artifact_spec(&job, &store_url, None, &output_url);

    let kubelet = Kubelet::new(&[
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
    ]);
    let sidecar = kubelet.start_sidecar(&inits[0]).await;
    server.start_pod(&name);
    std::fs::write(kubelet.output().join("model.bin"), b"weights").expect("write");
    server.exit_main(&name, 0, "Completed");
    // The bucket goes away while the job ran: the upload cannot succeed.
    s3.delete_bucket()
        .bucket(&bucket)
        .send()
        .await
        .expect("delete bucket");
    let (exit, message) = kubelet.stop_sidecar(sidecar).await;
    assert_ne!(exit, 0, "a failed upload exits non-zero: {message}");
    server.stop_sidecar(&name, UPLOAD_CONTAINER, exit, &message);

    let u = stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::ArtifactUpload), "{u:?}");
    assert_eq!(u.output_url, None);
    let reason = u.reason.unwrap_or_default();
    assert!(
        reason.starts_with("uploading the output failed: exit code"),
        "{reason}"
    );
    assert!(
        reason.contains("NoSuchBucket") || reason.contains("bucket"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_upload_step_fails_a_successful_run_with_artifact_upload_for_good() {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("store");
    let store_url = artifacts.default_store().url().to_string();
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], with_artifacts(&store_url, None));
    let (f, handle) = service(&engine, artifacts);
    let def = define(&f, false).await;
    let run = execute_with_zip(&f, &def, &input_zip(dir.path())).await;
    let name = job_name(&run.run_id, 1);
    server.wait_for_job(&name).await;
    server.start_pod(&name);
    server.exit_main(&name, 0, "Completed");
    server.stop_sidecar(
        &name,
        UPLOAD_CONTAINER,
        1,
        "artifacts: uploading failed: connection refused",
    );
    let done = f
        .wait_for_stop(&run.run_id, Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(done.status, RunStatus::Stopped);
    assert_eq!(
        done.failure,
        Some(FailureCategory::ArtifactUpload),
        "{done:?}"
    );
    assert_eq!(done.output_url, None);
    assert!(
        done.exit_reason
            .as_deref()
            .unwrap_or_default()
            .contains("connection refused"),
        "{done:?}"
    );
    assert_eq!(done.attempt, 1, "the helper tried twice already");
    assert_eq!(server.pods_created(&job_name(&run.run_id, 2)), 0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_input_has_no_pull_container_and_an_engine_without_helpers_none_at_all() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store_url = format!("file://{}", dir.path().display());
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], with_artifacts(&store_url, None));
    let def = NewDefinition::new("no-input", "busybox:1").into_definition();
    let run = new_run(&def, "default", None);
    engine.submit(&run, &def).await.expect("submit");
    let job = created_job(&server, &job_name(&run.run_id, 1)).await;
    let output_url = format!("{store_url}/runs/{}/attempt-1/output.zip", run.run_id);
    assert_artifact_spec(&job, &store_url, None, &output_url);

    // An input outside the helpers' store is refused at submit.
    let mut outside = new_run(&def, "default", None);
    outside.input_url = Some("s3://elsewhere/x.zip".into());
    let e = engine.submit(&outside, &def).await.expect_err("outside");
    assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput, "{e}");

    // Without helpers: no artifacts, nothing added, inputs refused.
    let plain = engine_on(&[("default", &server)], settings());
    assert!(!plain.capabilities().artifacts);
    let run = new_run(&def, "default", None);
    plain.submit(&run, &def).await.expect("submit");
    let job = created_job(&server, &job_name(&run.run_id, 1)).await;
    let pod = pod_spec(&job);
    assert!(pod.init_containers.is_none() && pod.volumes.is_none());
    assert!(pod.termination_grace_period_seconds.is_none());
    assert!(
        env_of(&pod.containers[0])
            .iter()
            .all(|(n, _)| n != "FLOTILLA_OUTPUT_DIR")
    );
    let mut with_input = new_run(&def, "default", None);
    with_input.input_url = Some(format!("{store_url}/x.zip"));
    let e = plain
        .submit(&with_input, &def)
        .await
        .expect_err("no helpers");
    assert_eq!(e.kind(), flotilla::ErrorKind::InvalidInput, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_pull_is_container_start_naming_the_pull_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("store");
    let store_url = artifacts.default_store().url().to_string();
    let server = FakeApiServer::start().await;
    let engine = engine_on(&[("default", &server)], with_artifacts(&store_url, None));
    let def = NewDefinition::new("bad-input", "busybox:1").into_definition();
    let mut run = new_run(&def, "default", None);
    // Not a zip: the real pull refuses it.
    let url = artifacts
        .put("uploads/bad.zip", b"not a zip".to_vec())
        .await
        .expect("put");
    run.input_url = Some(url);
    engine.submit(&run, &def).await.expect("submit");
    let name = job_name(&run.run_id, 1);
    let job = created_job(&server, &name).await;
    let inits = pod_spec(&job).init_containers.clone().expect("inits");
    let kubelet = Kubelet::new(&[]);
    let (exit, text) = kubelet.run_init(&inits[0]).await;
    assert_ne!(exit, 0, "the pull refuses it: {text}");
    server.fail_init(&name, PULL_CONTAINER, exit, text.trim());
    let u = stopped(&engine, &run).await;
    assert_eq!(u.failure, Some(FailureCategory::ContainerStart), "{u:?}");
    let reason = u.reason.unwrap_or_default();
    assert!(reason.starts_with("fetching the input failed"), "{reason}");
    assert!(
        reason.contains("not a zip"),
        "the pull's error is named: {reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attempt_uploads_unless_its_definition_skips_failed_output() {
    for skip in [false, true] {
        let dir = tempfile::tempdir().expect("tempdir");
        let artifacts = Artifacts::local(dir.path().join("artifacts")).expect("store");
        let store_url = artifacts.default_store().url().to_string();
        let server = FakeApiServer::start().await;
        let engine = engine_on(&[("default", &server)], with_artifacts(&store_url, None));
        let (f, handle) = service(&engine, artifacts);
        let def = define(&f, skip).await;
        let run = execute_with_zip(&f, &def, &input_zip(dir.path())).await;
        let name = job_name(&run.run_id, 1);
        let job = created_job(&server, &name).await;
        let inits = pod_spec(&job).init_containers.clone().expect("inits");
        let kubelet = Kubelet::new(&[]);
        play_pod(&server, &name, &inits, &kubelet, 3).await;
        let done = f
            .wait_for_stop(&run.run_id, Duration::from_secs(30))
            .await
            .expect("stop");
        assert_eq!(done.exit_code, Some(3), "{done:?}");
        assert_eq!(done.failure, Some(FailureCategory::AppExit), "{done:?}");
        if skip {
            assert_eq!(done.output_url, None, "skip_failed_output: {done:?}");
        } else {
            let url = done.output_url.clone().expect("a failed run's output");
            assert!(url.ends_with("/attempt-1/output.zip"), "{url}");
            assert_eq!(unpack_sum(&read_output(&f, &run.run_id).await), "6\n");
        }
        handle.shutdown().await;
    }
}
