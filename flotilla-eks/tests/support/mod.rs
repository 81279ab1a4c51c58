//! Test support: the fake API server and an `EngineProbe` driving it.
#![allow(dead_code)]

pub mod fake;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla::model::{self, NewDefinition};
use flotilla::testkit::EngineProbe;
use flotilla::testkit::engine::{RunSpec, TaskEnd};
use flotilla::{Definition, Run};
use flotilla_eks::names::job_name;
use flotilla_eks::{EksEngine, EksSettings};

pub use fake::FakeApiServer;

/// Settings for tests: namespace `flotilla`, quick thresholds.
pub fn settings() -> EksSettings {
    EksSettings {
        namespace: "flotilla".into(),
        image_pull_backoff_threshold: 0,
        vanished_threshold: 1,
        ..EksSettings::default()
    }
}

/// An engine over the given (cluster name, server) pairs.
pub fn engine_on(servers: &[(&str, &FakeApiServer)], settings: EksSettings) -> EksEngine {
    EksEngine::with_clients(
        settings,
        servers
            .iter()
            .map(|(name, server)| (name.to_string(), server.client())),
    )
    .expect("engine")
}

/// A queued run of `def` on `cluster`, as the service would make it.
pub fn new_run(def: &Definition, cluster: &str, deadline: Option<i64>) -> Run {
    let mut r = Run::queued(def, cluster, "eks", "suite");
    r.env = vec![flotilla::EnvVar::new("FLOTILLA_RUN_ID", r.run_id.clone())];
    r.memory = Some(256);
    r.cpu = Some(250);
    r.gpu = None;
    r.active_deadline_seconds = deadline;
    r
}

/// Called with each started run and the text its pod wrote, as the
/// cluster's log shipper.
pub type Shipper = Arc<
    dyn Fn(
            Run,
            Vec<(chrono::DateTime<chrono::Utc>, String)>,
        ) -> futures::future::BoxFuture<'static, ()>
        + Send
        + Sync,
>;

/// The probe: runs on `cluster` of `server`; the fake kubelet starts pods
/// and writes their output; `finish` exits or evicts them.
pub fn probe(server: &FakeApiServer, cluster: &str) -> EngineProbe {
    probe_with(server, cluster, None)
}

/// [`probe`] with a log shipper that archives each pod's output.
pub fn probe_with(server: &FakeApiServer, cluster: &str, shipper: Option<Shipper>) -> EngineProbe {
    let outputs: Arc<Mutex<HashMap<String, String>>> = Arc::default();
    let started: Arc<Mutex<HashSet<String>>> = Arc::default();
    let cluster = cluster.to_string();
    let (s1, s2, s3) = (server.clone(), server.clone(), server.clone());
    let outs = outputs.clone();
    EngineProbe::new(
        move |spec: RunSpec| {
            let cluster = cluster.clone();
            let outputs = outs.clone();
            async move {
                let def = NewDefinition::new(format!("suite-{}", model::new_id()), "busybox:1")
                    .command("cat /etc/motd; sleep 3600")
                    .into_definition();
                let run = new_run(&def, &cluster, spec.active_deadline_seconds);
                outputs
                    .lock()
                    .expect("outputs")
                    .insert(run.run_id.clone(), spec.output.clone());
                Ok((run, def))
            }
        },
        move |run: Run, end: TaskEnd| {
            let server = s1.clone();
            async move {
                let job = job_name(&run.run_id, run.attempt);
                match end {
                    TaskEnd::HostLost => server.evict(&job),
                    TaskEnd::Exit(0) => server.finish_pod(&job, 0, "Completed"),
                    TaskEnd::Exit(code) => {
                        server.finish_pod(&job, i32::try_from(code).unwrap_or(1), "Error")
                    }
                    other => {
                        return Err(flotilla::Error::unsupported(format!(
                            "the fake kubelet cannot end a pod as {other:?}"
                        )));
                    }
                }
                Ok(())
            }
        },
        move |run: Run| {
            let server = s2.clone();
            async move { Ok(server.pods_created(&job_name(&run.run_id, run.attempt))) }
        },
    )
    .with_start(move |run: Run| {
        let server = s3.clone();
        let outputs = outputs.clone();
        let started = started.clone();
        let shipper = shipper.clone();
        async move {
            let job = job_name(&run.run_id, run.attempt);
            server.wait_for_job(&job).await;
            if !started.lock().expect("started").insert(job.clone()) {
                return Ok(());
            }
            server.start_pod(&job);
            let text = outputs
                .lock()
                .expect("outputs")
                .get(&run.run_id)
                .cloned()
                .unwrap_or_default();
            let mut written = Vec::new();
            for line in text.split_inclusive('\n') {
                let line = line.strip_suffix('\n').unwrap_or(line);
                let at = chrono::Utc::now();
                server.append_log_at(&job, at, line);
                written.push((at, line.to_string()));
            }
            if let Some(ship) = shipper {
                ship(run.clone(), written).await;
            }
            Ok(())
        }
    })
}

/// Waits until `cond` holds for the run, polling the service.
pub async fn wait_run(
    f: &flotilla::Flotilla,
    run_id: &str,
    what: &str,
    cond: impl Fn(&Run) -> bool,
) -> Run {
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let run = f.get_run(run_id).await.expect("get_run");
        if cond(&run) {
            return run;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "run {run_id}: waited 30 s for {what}; run is {run:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The moto endpoint (`FLOTILLA_TEST_AWS_ENDPOINT`) for `what` (e.g. "the
/// S3 log tests"): unset fails under `CI`, and elsewhere warns loudly that
/// `what` did not run.
pub fn moto(what: &str) -> Option<String> {
    match std::env::var("FLOTILLA_TEST_AWS_ENDPOINT") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => panic!(
            "FLOTILLA_TEST_AWS_ENDPOINT is not set: start moto with \
             `eval \"$(test-support/moto/start.sh)\"` and export FLOTILLA_TEST_AWS_ENDPOINT"
        ),
        _ => {
            eprintln!(
                "\n!!! WARNING: FLOTILLA_TEST_AWS_ENDPOINT is not set; {what} did NOT run.\n\
                 !!! Start moto with `eval \"$(test-support/moto/start.sh)\"` and export it.\n"
            );
            None
        }
    }
}
