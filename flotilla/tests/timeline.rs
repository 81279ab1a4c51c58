//! A run's timeline keeps every transition its container went through,
//! even when the engine is first asked only after the container stopped
//! (a fast job, or a gap in the engine's watch), and invents none for a
//! container that never started.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use flotilla::engine::{Capabilities, Engine, StatusUpdate, Submitted, TaskState};
use flotilla::service::WorkerConfig;
use flotilla::{
    Definition, ExecuteRequest, Flotilla, NewDefinition, Run, RunStatus, ServiceConfig,
};

/// An engine whose attempts are over before it is first asked: each one
/// stopped with exit 0, and started (at submit) unless its command says
/// `never-started`.
#[derive(Debug, Default)]
struct DoneEngine {
    started: Mutex<HashMap<String, Option<DateTime<Utc>>>>,
}

#[async_trait]
impl Engine for DoneEngine {
    fn name(&self) -> &str {
        "done"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }

    async fn submit(&self, run: &Run, _def: &Definition) -> flotilla::Result<Submitted> {
        let started = (run.command.as_deref() != Some("never-started")).then(Utc::now);
        self.started
            .lock()
            .expect("lock")
            .entry(run.run_id.clone())
            .or_insert(started);
        Ok(Submitted {
            engine_ref: run.run_id.clone(),
            instance: None,
        })
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let started = self.started.lock().expect("lock");
        Ok(runs
            .iter()
            .filter_map(|r| {
                let at = started.get(&r.run_id)?;
                let mut u = StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Stopped);
                u.exit_code = Some(0);
                u.started_at = *at;
                u.finished_at = Some(Utc::now());
                Some(u)
            })
            .collect())
    }

    async fn terminate(&self, _run: &Run, _reason: &str) -> flotilla::Result<()> {
        Ok(())
    }
}

async fn path_of(f: &Flotilla, command: &str) -> Vec<RunStatus> {
    let def = f
        .define(NewDefinition::new(command, "busybox").command(command))
        .await
        .expect("define");
    let run = f
        .execute(&def.definition_id, ExecuteRequest::owned_by("me"))
        .await
        .expect("execute");
    let done = f
        .wait_for_stop(&run.run_id, Duration::from_secs(60))
        .await
        .expect("stops");
    assert_eq!(done.exit_code, Some(0));
    f.run_events(&run.run_id)
        .await
        .expect("events")
        .iter()
        .map(|e| e.to)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_seen_only_after_it_stopped_still_shows_running() {
    let cfg = ServiceConfig {
        workers: WorkerConfig {
            status_poll_interval: Duration::from_millis(100),
            receive_wait: Duration::from_millis(200),
            ..WorkerConfig::default()
        },
        ..ServiceConfig::default()
    };
    let f = Flotilla::builder()
        .config(cfg)
        .engine(Arc::new(DoneEngine::default()))
        .build()
        .expect("service");
    let workers = f.start();
    assert_eq!(
        path_of(&f, "echo-fast").await,
        [
            RunStatus::Queued,
            RunStatus::Pending,
            RunStatus::Running,
            RunStatus::Stopped
        ],
        "the container ran: RUNNING is in the timeline"
    );
    assert_eq!(
        path_of(&f, "never-started").await,
        [RunStatus::Queued, RunStatus::Pending, RunStatus::Stopped],
        "no start time from the engine: no RUNNING made up"
    );
    workers.shutdown().await;
}
