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
/// `<probe>/<run_id>-<attempt>.end` and exits with the code in it. A lost
/// host does not apply (the processes run on the engine's own host: a
/// signal no one in flotilla sent is the program's end, `app_exit`). A task
/// never finished gives up after about a minute, so a failed test leaves no
/// process behind for long.
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
                 i=0\n\
                 while [ ! -f \"$p.end\" ]; do\n\
                   sleep 0.05; i=$((i+1))\n\
                   if [ $i -gt 1200 ]; then echo 'probe: never finished' >&2; exit 124; fi\n\
                 done\n\
                 exit \"$(cat \"$p.end\")\""
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
                    other => {
                        return Err(Error::unsupported(format!(
                            "a local process cannot end as {other:?}"
                        )));
                    }
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
    let mut run = Run::queued(&def, "default", "local", "conformance");
    run.env = vec![EnvVar::new("FLOTILLA_RUN_ID", run.run_id.clone())];
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

/// Kills every process group the engine started under `data` (a failed
/// suite leaves tasks waiting to be finished).
fn kill_all(data: &Path) {
    let Ok(runs) = std::fs::read_dir(data.join("runs")) else {
        return;
    };
    for run in runs.flatten() {
        for attempt in std::fs::read_dir(run.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(body) = std::fs::read(attempt.path().join("spawned.json")) else {
                continue;
            };
            let pid = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["pid"].as_i64())
                .and_then(|p| i32::try_from(p).ok());
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

// The suites must be able to fail: each wrapper below breaks one rule and
// the suite must panic on it.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Defect {
    UnknownIsPending,
    PollDropsMissing,
    StopLosesExitCode,
    FreshRefEverySubmit,
}

#[derive(Debug)]
struct Broken {
    inner: Arc<LocalEngine>,
    defect: Defect,
}

#[async_trait::async_trait]
impl flotilla::Engine for Broken {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn capabilities(&self) -> flotilla::Capabilities {
        self.inner.capabilities()
    }
    async fn submit(&self, run: &Run, def: &Definition) -> flotilla::Result<flotilla::Submitted> {
        let mut s = self.inner.submit(run, def).await?;
        if self.defect == Defect::FreshRefEverySubmit {
            s.engine_ref = model::new_id();
        }
        Ok(s)
    }
    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<flotilla::StatusUpdate>> {
        use flotilla::{FailureCategory, TaskState};
        let mut out = self.inner.poll(runs).await?;
        match self.defect {
            Defect::UnknownIsPending => {
                for u in &mut out {
                    if u.state == TaskState::Missing {
                        u.state = TaskState::Pending;
                    }
                }
            }
            Defect::PollDropsMissing => out.retain(|u| u.state != TaskState::Missing),
            Defect::StopLosesExitCode => {
                for u in &mut out {
                    if u.state == TaskState::Stopped && u.exit_code != Some(0) {
                        u.failure = Some(FailureCategory::Unknown);
                        u.exit_code = None;
                    }
                }
            }
            Defect::FreshRefEverySubmit => {}
        }
        Ok(out)
    }
    async fn terminate(&self, run: &Run, reason: &str) -> flotilla::Result<()> {
        self.inner.terminate(run, reason).await
    }
    fn events(&self) -> Option<futures::stream::BoxStream<'static, flotilla::EngineEvent>> {
        self.inner.events()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_suite_catches_broken_engines() {
    for defect in [
        Defect::UnknownIsPending,
        Defect::PollDropsMissing,
        Defect::StopLosesExitCode,
        Defect::FreshRefEverySubmit,
    ] {
        let (dir, engine, probe) = setup();
        let broken = Broken {
            inner: engine,
            defect,
        };
        let outcome = tokio::spawn(async move {
            engine_suite(&broken, &probe).await;
        })
        .await;
        kill_all(&dir.path().join("data"));
        assert!(
            outcome.is_err_and(|e| e.is_panic()),
            "the engine suite accepted an engine with defect {defect:?}"
        );
    }
}

/// A log source that claims every page is the last.
#[derive(Debug)]
struct AlwaysComplete(LocalLogSource);

#[async_trait::async_trait]
impl flotilla::LogSource for AlwaysComplete {
    async fn read(
        &self,
        run: &Run,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> flotilla::Result<flotilla::LogChunk> {
        let mut c = self.0.read(run, cursor, max_bytes).await?;
        c.complete = true;
        Ok(c)
    }
}

/// A log source that hands out each page's last byte again.
#[derive(Debug)]
struct Repeats(LocalLogSource);

#[async_trait::async_trait]
impl flotilla::LogSource for Repeats {
    async fn read(
        &self,
        run: &Run,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> flotilla::Result<flotilla::LogChunk> {
        let mut c = self.0.read(run, cursor, max_bytes).await?;
        if let Some((a, o)) = c.cursor.as_deref().and_then(|s| s.split_once(':'))
            && let Ok(o) = o.parse::<u64>()
            && o > 0
            && c.log.len() > 1
            && c.log.is_char_boundary(c.log.len() - 1)
        {
            c.cursor = Some(format!("{a}:{}", o - 1));
        }
        Ok(c)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_suite_catches_broken_sources() {
    for which in ["always-complete", "repeats"] {
        let (dir, engine, probe) = setup();
        let outcome = tokio::spawn(async move {
            let inner = LocalLogSource::new(engine.clone());
            if which == "repeats" {
                log_source_suite(&Repeats(inner), engine.as_ref(), &probe).await;
            } else {
                log_source_suite(&AlwaysComplete(inner), engine.as_ref(), &probe).await;
            }
        })
        .await;
        kill_all(&dir.path().join("data"));
        assert!(
            outcome.is_err_and(|e| e.is_panic()),
            "the log suite accepted the {which} source"
        );
    }
}
