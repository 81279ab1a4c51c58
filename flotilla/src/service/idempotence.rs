//! Idempotence keys, as flotilla-os matches them: an execute with a key
//! returns the run already made with it only while that run is live — it
//! has not finished, or it succeeded — and was queued within the last
//! [`IDEMPOTENCE_WINDOW`]. A failed or older run gives its key up, so the
//! same request can run the job again.
//!
//! A key is scoped to its definition and owner: a key already held by a
//! live run of another definition or owner is a conflict (409), never
//! someone else's run.

use super::Flotilla;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, Definition, Run, RunEvent};
use crate::store::Expected;

/// How long a successful or unfinished run holds its idempotence key.
pub const IDEMPOTENCE_WINDOW: chrono::TimeDelta = chrono::TimeDelta::days(7);

impl Flotilla {
    /// The live run holding `key` for `def` and `owner`, if any. A run that
    /// no longer holds it (failed, or queued before the window) gives it up
    /// here, recorded in its timeline; a live run of another definition or
    /// owner is a conflict.
    pub(crate) async fn run_for_key(
        &self,
        key: &str,
        def: &Definition,
        owner: &str,
    ) -> Result<Option<Run>> {
        let store = &self.inner.store;
        for _ in 0..4 {
            let Some(run) = store.find_run_by_idempotence_key(key).await? else {
                return Ok(None);
            };
            if holds_key(&run) {
                if run.definition_id != def.definition_id || run.owner != owner {
                    return Err(Error::conflict(format!(
                        "idempotence_key: '{key}' belongs to run {} of another definition or owner",
                        run.run_id
                    )));
                }
                return Ok(Some(run));
            }
            let mut released = run.clone();
            released.idempotence_key = None;
            released.updated_at = model::now();
            let event = RunEvent {
                run_id: run.run_id.clone(),
                at: released.updated_at,
                from: Some(run.status),
                to: run.status,
                attempt: run.attempt,
                reason: Some(format!(
                    "idempotence key '{key}' given up to a new run (this one {})",
                    if run.status.is_terminal() {
                        "failed"
                    } else {
                        "is older than the key's window"
                    }
                )),
            };
            match store
                .update_run(&released, Expected::of(&run), Some(&event))
                .await
            {
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "idempotence_key: '{key}' is changing hands; try again"
        )))
    }
}

/// Whether `run` still holds its key: queued within the window, and not
/// finished or finished successfully.
fn holds_key(run: &Run) -> bool {
    let recent = run
        .queued_at
        .is_none_or(|q| model::now() - q <= IDEMPOTENCE_WINDOW);
    let live = !run.status.is_terminal() || (run.exit_code == Some(0) && run.failure.is_none());
    recent && live
}
