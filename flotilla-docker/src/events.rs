//! The daemon's event stream: status changes pushed as they happen, and the
//! OOM kills the daemon reports (its `oom` events are the record that does
//! not race with the exit; `State.OOMKilled` can be missed when the OOM
//! notification is handled after the exit).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};

use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use chrono::Utc;
use flotilla::{EngineEvent, RetryPolicy, TaskState};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

use crate::engine::{ATTEMPT_LABEL, MANAGED_LABEL, RUN_LABEL, Shared};

/// Most container names remembered as OOM-killed before the oldest are
/// forgotten (an engine forgets each one when its attempt is finished; this
/// bounds what containers finished outside flotilla leave behind).
const OOM_MEMORY: usize = 10_000;

/// Container names the daemon reported OOM-killed, oldest first.
#[derive(Debug, Default)]
pub(crate) struct OomSeen {
    names: Mutex<(HashSet<String>, std::collections::VecDeque<String>)>,
}

impl OomSeen {
    /// Records that `name` was OOM-killed.
    pub fn note(&self, name: &str) {
        let mut g = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if set.insert(name.to_string()) {
            order.push_back(name.to_string());
            while order.len() > OOM_MEMORY {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }

    /// Whether `name` was reported OOM-killed.
    pub fn contains(&self, name: &str) -> bool {
        let g = self.names.lock().unwrap_or_else(|p| p.into_inner());
        g.0.contains(name)
    }

    /// Forgets `name` (its attempt's outcome is stored).
    pub fn forget(&self, name: &str) {
        let mut g = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let (set, order) = &mut *g;
        if set.remove(name) {
            order.retain(|n| n != name);
        }
    }
}

/// The background task following the daemon's events; aborted on drop.
#[derive(Debug)]
pub(crate) struct Watch(JoinHandle<()>);

impl Drop for Watch {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts following the daemon's container events for the engine's
/// containers: `start` pushes Running, `die` pushes the classified stop (a
/// fresh SIGKILL exit is looked at again once the OOM settle time passed),
/// `oom` is remembered and, for an exited container, re-pushes its stop.
/// A broken stream is re-opened from the last event seen, with backoff, and
/// a [`EngineEvent::Resync`] tells the service to poll what it may have
/// missed.
pub(crate) fn watch(shared: Weak<Shared>, tx: broadcast::Sender<EngineEvent>) -> Watch {
    Watch(tokio::spawn(follow(shared, tx)))
}

async fn follow(shared: Weak<Shared>, tx: broadcast::Sender<EngineEvent>) {
    // Polls cover the gap meanwhile; a daemon back after a restart is
    // followed again within half a minute.
    let backoff = RetryPolicy {
        max_backoff: std::time::Duration::from_secs(30),
        ..RetryPolicy::default()
    };
    let mut failures = 0u32;
    // Replays what the daemon still holds from just before the engine
    // started, so an OOM reported during a restart is not missed.
    let mut since = Utc::now().timestamp() - 60;
    loop {
        let Some(s) = shared.upgrade() else { return };
        let filters = HashMap::from([
            ("type", vec!["container".to_string()]),
            (
                "label",
                vec![format!("{MANAGED_LABEL}={}", s.config.name_prefix)],
            ),
            (
                "event",
                vec!["start".to_string(), "die".to_string(), "oom".to_string()],
            ),
        ]);
        let opts = EventsOptionsBuilder::new()
            .since(&since.to_string())
            .filters(&filters)
            .build();
        let mut stream = s.docker.events(Some(opts));
        drop(s);
        if failures > 0 {
            let _ = tx.send(EngineEvent::Resync);
        }
        loop {
            match stream.next().await {
                Some(Ok(ev)) => {
                    failures = 0;
                    if let Some(t) = ev.time {
                        since = since.max(t);
                    }
                    let Some(s) = shared.upgrade() else { return };
                    handle(&s, &tx, &ev);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "docker event stream failed; re-opening it");
                    break;
                }
                None => break,
            }
        }
        failures = failures.saturating_add(1);
        tokio::time::sleep(backoff.backoff(failures)).await;
    }
}

fn handle(s: &Arc<Shared>, tx: &broadcast::Sender<EngineEvent>, ev: &EventMessage) {
    let Some(actor) = ev.actor.as_ref() else {
        return;
    };
    let attrs = actor.attributes.clone().unwrap_or_default();
    let (Some(name), Some(run_id), Some(attempt)) = (
        attrs.get("name"),
        attrs.get(RUN_LABEL),
        attrs.get(ATTEMPT_LABEL).and_then(|a| a.parse::<u32>().ok()),
    ) else {
        return;
    };
    if s.container_name(run_id, attempt) != *name {
        return;
    }
    match ev.action.as_deref() {
        Some("start") => {
            let _ = tx.send(EngineEvent::Update(s.update(
                run_id,
                attempt,
                TaskState::Running,
            )));
        }
        Some("oom") => {
            s.oom_seen.note(name);
            push_stop(s.clone(), tx.clone(), run_id.clone(), attempt);
        }
        Some("die") => push_stop(s.clone(), tx.clone(), run_id.clone(), attempt),
        _ => {}
    }
}

/// Inspects an attempt that ended and pushes its classified stop; a fresh
/// SIGKILL not marked OOM is pushed only after the settle time (an `oom`
/// event meanwhile pushes it at once, as `oom`).
fn push_stop(s: Arc<Shared>, tx: broadcast::Sender<EngineEvent>, run_id: String, attempt: u32) {
    tokio::spawn(async move {
        for _ in 0..2 {
            match s.settled_outcome(&run_id, attempt).await {
                Ok(Some(Ok(u))) => {
                    let _ = tx.send(EngineEvent::Update(u));
                    return;
                }
                Ok(Some(Err(wait))) => tokio::time::sleep(wait).await,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(run_id = %run_id, attempt, error = %e, "inspecting a container that ended failed; the poll will see it");
                    return;
                }
            }
        }
    });
}
