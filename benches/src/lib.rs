//! Shared pieces of the benchmark harnesses: an engine that finishes every
//! run the moment it is submitted, and latency statistics.
//!
//! Run the in-memory scheduler benchmark with
//! `cargo bench -p benches --bench scheduler`.

mod step;

/// Every benchmark allocates with mimalloc, as the `flotilla` binary does:
/// under glibc's allocator a burst of 100,000 runs spent a quarter of its
/// samples in malloc and free (`malloc_consolidate` alone 6.6%).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

pub use step::StepEngine;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use flotilla::{
    Capabilities, Definition, Engine, EngineEvent, Run, StatusUpdate, Submitted, TaskState,
};
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::broadcast;
use tokio_stream::wrappers::BroadcastStream;

/// An engine whose runs exit 0 as soon as they are submitted; it pushes the
/// stop through `events()` and remembers when each run was submitted.
#[derive(Debug)]
pub struct InstantEngine {
    submitted: Mutex<HashMap<String, Instant>>,
    tx: broadcast::Sender<StatusUpdate>,
}

impl Default for InstantEngine {
    fn default() -> Self {
        InstantEngine {
            submitted: Mutex::new(HashMap::new()),
            tx: broadcast::channel(1 << 16).0,
        }
    }
}

impl InstantEngine {
    /// When `run_id` was first submitted.
    pub fn submitted_at(&self, run_id: &str) -> Option<Instant> {
        self.submitted.lock().ok()?.get(run_id).copied()
    }

    /// How many distinct runs were submitted.
    pub fn submissions(&self) -> usize {
        self.submitted.lock().map(|m| m.len()).unwrap_or(0)
    }

    fn stopped(run: &Run) -> StatusUpdate {
        exited_0(run)
    }
}

/// `run`'s attempt stopped with exit code 0.
pub fn exited_0(run: &Run) -> StatusUpdate {
    let mut u = StatusUpdate::new(run.run_id.clone(), run.attempt, TaskState::Stopped);
    u.exit_code = Some(0);
    u
}

/// What an engine that pushes its updates says it can do.
pub fn pushing() -> Capabilities {
    Capabilities {
        push_events: true,
        ..Capabilities::default()
    }
}

/// The engine events of the updates sent on `tx` (a lagging receiver asks
/// for a resync).
pub fn update_events(tx: &broadcast::Sender<StatusUpdate>) -> BoxStream<'static, EngineEvent> {
    BroadcastStream::new(tx.subscribe())
        .map(|r| match r {
            Ok(u) => EngineEvent::Update(u),
            Err(_) => EngineEvent::Resync,
        })
        .boxed()
}

#[async_trait]
impl Engine for InstantEngine {
    fn name(&self) -> &str {
        "instant"
    }

    fn capabilities(&self) -> Capabilities {
        pushing()
    }

    async fn submit(&self, run: &Run, _definition: &Definition) -> flotilla::Result<Submitted> {
        if let Ok(mut m) = self.submitted.lock() {
            m.entry(run.run_id.clone()).or_insert_with(Instant::now);
        }
        let _ = self.tx.send(Self::stopped(run));
        Ok(Submitted {
            engine_ref: format!("instant-{}", run.run_id),
            instance: None,
        })
    }

    async fn poll(&self, runs: &[Run]) -> flotilla::Result<Vec<StatusUpdate>> {
        let known = self
            .submitted
            .lock()
            .map_err(|_| flotilla::Error::internal("poisoned"))?;
        Ok(runs
            .iter()
            .map(|r| {
                if known.contains_key(&r.run_id) {
                    Self::stopped(r)
                } else {
                    StatusUpdate::new(r.run_id.clone(), r.attempt, TaskState::Missing)
                }
            })
            .collect())
    }

    async fn terminate(&self, _run: &Run, _reason: &str) -> flotilla::Result<()> {
        Ok(())
    }

    fn events(&self) -> Option<BoxStream<'static, EngineEvent>> {
        Some(update_events(&self.tx))
    }
}

/// Percentiles of a set of durations.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
}

impl Latency {
    /// Computes percentiles; `None` for an empty set.
    pub fn of(mut samples: Vec<Duration>) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
        Some(Latency {
            p50: at(0.50),
            p99: at(0.99),
            max: at(1.0),
        })
    }
}

/// Peak resident memory of this process in MiB (Linux `VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// Formats a duration in milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Formats a duration in microseconds with one decimal.
pub fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}
