//! [`StepEngine`]: runs keep running until the benchmark finishes them, so
//! it can time what happens after a run stops.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Instant;

use async_trait::async_trait;
use flotilla::{
    Capabilities, Definition, Engine, EngineEvent, Run, StatusUpdate, Submitted, TaskState,
};
use futures::stream::BoxStream;
use tokio::sync::{broadcast, mpsc};

/// An engine whose runs run until [`StepEngine::finish`]; it reports each
/// submit, with its time, on the channel [`StepEngine::new`] returns, and
/// pushes each finish through `events()`.
#[derive(Debug)]
pub struct StepEngine {
    submits: mpsc::UnboundedSender<(Run, Instant)>,
    finished: Mutex<HashSet<String>>,
    tx: broadcast::Sender<StatusUpdate>,
}

impl StepEngine {
    /// The engine and the receiver of its submits.
    pub fn new() -> (StepEngine, mpsc::UnboundedReceiver<(Run, Instant)>) {
        let (submits, rx) = mpsc::unbounded_channel();
        let engine = StepEngine {
            submits,
            finished: Mutex::new(HashSet::new()),
            tx: broadcast::channel(1 << 12).0,
        };
        (engine, rx)
    }

    /// Ends `run` with exit code 0, pushed to the status worker at once.
    pub fn finish(&self, run: &Run) {
        if let Ok(mut f) = self.finished.lock() {
            f.insert(run.run_id.clone());
        }
        let _ = self.tx.send(Self::update(run, true));
    }

    fn update(run: &Run, finished: bool) -> StatusUpdate {
        if finished {
            crate::exited_0(run)
        } else {
            StatusUpdate::new(run.run_id.clone(), run.attempt, TaskState::Running)
        }
    }
}

#[async_trait]
impl Engine for StepEngine {
    fn name(&self) -> &str {
        "step"
    }

    fn capabilities(&self) -> Capabilities {
        crate::pushing()
    }

    async fn submit(&self, run: &Run, _definition: &Definition) -> flotilla::Result<Submitted> {
        let _ = self.submits.send((run.clone(), Instant::now()));
        Ok(Submitted {
            engine_ref: format!("step-{}", run.run_id),
            instance: None,
        })
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let finished = self
            .finished
            .lock()
            .map_err(|_| flotilla::Error::internal("poisoned"))?;
        Ok(runs
            .iter()
            .map(|r| Self::update(r, finished.contains(&r.run_id)))
            .collect())
    }

    async fn terminate(&self, run: &Run, _reason: &str) -> flotilla::Result<()> {
        self.finish(run);
        Ok(())
    }

    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        Some(crate::update_events(&self.tx))
    }
}
