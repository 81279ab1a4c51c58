//! The engine and log-source conformance suites against the local engine,
//! with real processes.
#![cfg(feature = "testkit")]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flotilla::local::{LocalConfig, LocalEngine, LocalLogSource};
use flotilla::model::{self, EnvVar, NewDefinition};
use flotilla::testkit::engine::{RunSpec, TaskEnd};
use flotilla::testkit::{EngineProbe, engine_suite, log_source_suite};
use flotilla::{Definition, Error, Run, RunStatus};

/// The local probe: every run's command writes its output, records that it
/// started in `<probe>/<run_id>-<attempt>.starts`, then waits for
/// `<probe>/<run_id>-<attempt>.end` and exits with the code in it (or
/// SIGKILLs itself for a lost host).
fn local_probe(dir: PathBuf) -> EngineProbe {
    let quoted = dir.display().to_string().replace('\'', r"'\''");
    let file = move |dir: &Path, run: &Run, ext: &str| {
        dir.join(format!("{}-{}.{ext}", run.run_id, run.attempt))
    };
    let (d1, d2) = (dir.clone(), dir.clone());
    EngineProbe::new(
        move |spec: RunSpec| {
            let command = format!(
                "p='{quoted}'/\"$FLOTILLA_RUN_ID-$FLOTILLA_RUN_ATTEMPT\"\n\
                 echo started >> \"$p.starts\"\n\
                 printf '%s' \"$PROBE_OUTPUT\"\n\
                 while [ ! -f \"$p.end\" ]; do sleep 0.05; done\n\
                 end=$(cat \"$p.end\")\n\
                 if [ \"$end\" = lost ]; then kill -9 $$; fi\n\
                 exit \"$end\""
            );
            async move {
                let mut run = new_run(&command);
                run.0.env.push(EnvVar::new("PROBE_OUTPUT", spec.output));
                run.0.active_deadline_seconds = spec.active_deadline_seconds;
                Ok(run)
            }
        },
        move |run: Run, end: TaskEnd| {
            let path = file(&d1, &run, "end");
            async move {
                let body = match end {
                    TaskEnd::Exit(code) => code.to_string(),
                    TaskEnd::HostLost => "lost".to_string(),
                    other => return Err(Error::unsupported(format!("{other:?}"))),
                };
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, body).map_err(|e| Error::internal(e.to_string()))?;
                std::fs::rename(&tmp, &path).map_err(|e| Error::internal(e.to_string()))
            }
        },
        move |run: Run| {
            let path = file(&d2, &run, "starts");
            async move {
                Ok(std::fs::read_to_string(&path)
                    .map(|s| s.lines().count())
                    .unwrap_or(0))
            }
        },
    )
}

fn new_run(command: &str) -> (Run, Definition) {
    let def = NewDefinition::new("conformance", "ignored:latest")
        .command(command)
        .into_definition();
    let run_id = model::new_id();
    let run = Run {
        run_id: run_id.clone(),
        definition_id: def.definition_id.clone(),
        alias: def.alias.clone(),
        group_name: String::new(),
        image: def.image.clone(),
        cluster: "default".into(),
        engine: "local".into(),
        status: RunStatus::Queued,
        exit_code: None,
        exit_reason: None,
        queued_at: Some(model::now()),
        started_at: None,
        finished_at: None,
        env: vec![EnvVar::new("FLOTILLA_RUN_ID", run_id)],
        command: Some(command.to_string()),
        memory: None,
        cpu: None,
        gpu: None,
        owner: "conformance".into(),
        run_tags: Default::default(),
        attempt: 1,
        max_attempts: 3,
        engine_ref: None,
        instance: None,
        idempotence_key: None,
        labels: Default::default(),
        active_deadline_seconds: None,
        failure: None,
        description: None,
        adaptive_resource_allocation: false,
        retry_on_app_exit: false,
        version: 0,
        updated_at: model::now(),
    };
    (run, def)
}

fn setup() -> (tempfile::TempDir, Arc<LocalEngine>, EngineProbe) {
    let dir = tempfile::tempdir().expect("tempdir");
    let probe_dir = dir.path().join("probe");
    std::fs::create_dir_all(&probe_dir).expect("probe dir");
    let engine = LocalEngine::with_config(
        LocalConfig::new(dir.path().join("data")).terminate_grace(Duration::from_secs(2)),
    )
    .expect("engine");
    (dir, Arc::new(engine), local_probe(probe_dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_meets_the_engine_contract() {
    let (_dir, engine, probe) = setup();
    engine_suite(engine.as_ref(), &probe).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_log_source_meets_the_log_source_contract() {
    let (_dir, engine, probe) = setup();
    let source = LocalLogSource::new(engine.clone());
    log_source_suite(&source, engine.as_ref(), &probe).await;
}

#[tokio::test]
async fn local_engine_meets_the_contract_on_one_thread_too() {
    let (_dir, engine, probe) = setup();
    engine_suite(engine.as_ref(), &probe).await;
}

async fn wait_stopped(engine: &LocalEngine, run: &Run) {
    use flotilla::{Engine, TaskState};
    let give_up = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let u = engine.poll(std::slice::from_ref(run)).await.expect("poll");
        if u[0].state == TaskState::Stopped {
            return;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "never stopped: {u:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn log_cursor_of_an_earlier_attempt_continues_with_the_current_one() {
    use flotilla::{Engine, ErrorKind, LogSource};
    let (_dir, engine, _probe) = setup();
    let source = LocalLogSource::new(engine.clone());
    let (mut run, def) = new_run("echo \"attempt $FLOTILLA_RUN_ATTEMPT\"");
    engine.submit(&run, &def).await.expect("submit 1");
    wait_stopped(&engine, &run).await;
    run.status = RunStatus::Stopped;
    let first = source.read(&run, None, 1024).await.expect("read 1");
    assert_eq!(first.log, "attempt 1\n");
    assert!(first.complete);
    let cursor = first.cursor.expect("cursor");

    // Retried: attempt 2 runs; the old cursor continues at its start.
    run.attempt = 2;
    run.status = RunStatus::Running;
    let before = source
        .read(&run, Some(&cursor), 1024)
        .await
        .expect("read before start");
    assert_eq!(before.log, "");
    assert!(!before.complete);
    engine.submit(&run, &def).await.expect("submit 2");
    wait_stopped(&engine, &run).await;
    run.status = RunStatus::Stopped;
    let second = source
        .read(&run, Some(&cursor), 1024)
        .await
        .expect("read 2");
    assert_eq!(second.log, "attempt 2\n");
    assert!(second.complete);

    // A cursor of a later attempt, or past the end, is not this log's.
    for bad in ["3:0", "2:999"] {
        let e = source.read(&run, Some(bad), 10).await.expect_err(bad);
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("last_seen:"), "{}", e.message());
    }
}
