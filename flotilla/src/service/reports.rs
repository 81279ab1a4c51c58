//! External status reports: a client telling the service what a run did.

use super::Flotilla;

use crate::error::{Error, Result};
use crate::model::{self, FailureCategory, Run, RunStatus, StatusReport};
use crate::state::check_transition;

impl Flotilla {
    /// Applies an external status report through the state machine.
    pub async fn update_status(&self, run_id: &str, report: StatusReport) -> Result<Run> {
        let limits = &self.inner.config.limits;
        if let Some(r) = &report.exit_reason
            && r.chars().count() > limits.max_text_len
        {
            return Err(Error::invalid(format!(
                "exit_reason: longer than {} characters",
                limits.max_text_len
            )));
        }
        let run = self.inner.store.get_run(run_id).await?;
        if run.status == report.status {
            return Ok(run);
        }
        check_transition(run.status, report.status)?;
        let mut next = run.clone();
        next.status = report.status;
        let now = model::now();
        match report.status {
            RunStatus::Running => next.started_at = Some(now),
            RunStatus::Stopped => {
                next.finished_at = Some(now);
                next.exit_code = report.exit_code;
                next.exit_reason = report.exit_reason.clone();
                next.failure = match report.exit_code {
                    Some(0) => None,
                    Some(_) => Some(FailureCategory::AppExit),
                    None => Some(FailureCategory::Unknown),
                };
            }
            RunStatus::NeedsRetry => {
                next.finished_at = Some(now);
                next.exit_code = report.exit_code;
                next.exit_reason = report.exit_reason.clone();
                next.failure = Some(FailureCategory::Unknown);
            }
            RunStatus::Queued => return self.requeue(&run).await,
            RunStatus::Pending => {}
        }
        let reason = Some(
            report
                .exit_reason
                .clone()
                .unwrap_or_else(|| "status reported by a client".into()),
        );
        let stored = self.transition(&run, next, reason).await?;
        if stored.status == RunStatus::NeedsRetry {
            self.inner.retry_wake.notify_one();
        }
        Ok(stored)
    }
}
