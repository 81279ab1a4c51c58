//! External status reports: a client telling the service what a run did.
//!
//! Reports go through the state machine, and on top of it through rules
//! that keep **one container per attempt**, since a report is a claim the
//! engine has not confirmed:
//!
//! - a queued run is moved only by the submit worker (which hands it to
//!   the engine) or stopped; a report may not claim it PENDING or RUNNING;
//! - an active run (PENDING, RUNNING) may not be reported NEEDS_RETRY: the
//!   attempt may still be running, and a retry would start a second
//!   container beside it;
//! - an active run reported STOPPED is first terminated through its engine
//!   (a no-op for a container that already ended), then stored with the
//!   reported exit code and reason, so no container outlives its run;
//! - PENDING → RUNNING, NEEDS_RETRY → QUEUED (the next attempt, as the
//!   retry worker would) and NEEDS_RETRY / QUEUED → STOPPED are applied as
//!   reported.
//!
//! Refusals are `Conflict` errors naming the rule.

use super::Flotilla;

use crate::error::{Error, ErrorKind, Result};
use crate::model::{self, FailureCategory, Run, RunStatus, StatusReport};
use crate::state::check_transition;

/// `Conflict` naming the rule when `from → to` may not be reported.
pub fn check_report(from: RunStatus, to: RunStatus) -> Result<()> {
    use RunStatus::*;
    match (from, to) {
        (Queued, Pending | Running) => Err(Error::conflict(format!(
            "status report {from} → {to} refused: only the submit worker moves a queued run \
             (it hands the run to its engine); a report may only stop it"
        ))),
        (Pending | Running, NeedsRetry) => Err(Error::conflict(format!(
            "status report {from} → {to} refused: the attempt may still be running and a retry \
             would start a second container; report STOPPED (the engine stops the container \
             first) or let the engine's status decide"
        ))),
        _ => check_transition(from, to),
    }
}

impl Flotilla {
    /// Applies an external status report through the state machine and
    /// the report rules of this module.
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
        check_report(run.status, report.status)?;
        let reason = report
            .exit_reason
            .clone()
            .unwrap_or_else(|| "status reported by a client".into());
        if report.status == RunStatus::Stopped && run.status.is_active() {
            return self.stop_reported(run, &report, reason).await;
        }
        let mut next = run.clone();
        next.status = report.status;
        let now = model::now();
        match report.status {
            RunStatus::Running => next.started_at = Some(now),
            RunStatus::Stopped => apply_outcome(&mut next, &report),
            RunStatus::Queued => return self.requeue(&run).await,
            // Refused by `check_report` from every status they could
            // come from.
            RunStatus::NeedsRetry | RunStatus::Pending => {}
        }
        self.transition(&run, next, Some(reason)).await
    }

    /// An active run reported STOPPED: the engine stops the attempt first,
    /// then the reported outcome is stored.
    async fn stop_reported(&self, run: Run, report: &StatusReport, reason: String) -> Result<Run> {
        let engine = self.inner.engines.get(&run.engine).cloned();
        let mut run = run;
        for _ in 0..8 {
            if let Some(engine) = &engine {
                engine
                    .terminate(&run, &format!("status reported STOPPED: {reason}"))
                    .await?;
            }
            let mut next = run.clone();
            next.status = RunStatus::Stopped;
            apply_outcome(&mut next, report);
            match self.transition(&run, next, Some(reason.clone())).await {
                Ok(stored) => {
                    if let Some(engine) = &engine
                        && let Err(e) = engine.finished(&stored).await
                    {
                        tracing::warn!(run_id = %stored.run_id, error = %e,
                            "engine cleanup after a reported stop failed");
                    }
                    return Ok(stored);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    // The run moved meanwhile (the engine saw it stop):
                    // keep the engine's outcome once it is final.
                    run = self.inner.store.get_run(&run.run_id).await?;
                    if run.status.is_terminal() {
                        return Ok(run);
                    }
                    if !run.status.is_active() {
                        check_report(run.status, RunStatus::Stopped)?;
                        let mut next = run.clone();
                        next.status = RunStatus::Stopped;
                        apply_outcome(&mut next, report);
                        return self.transition(&run, next, Some(reason)).await;
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "run {} kept changing; report again",
            run.run_id
        )))
    }
}

fn apply_outcome(next: &mut Run, report: &StatusReport) {
    next.finished_at = Some(model::now());
    next.exit_code = report.exit_code;
    next.exit_reason = report.exit_reason.clone();
    next.failure = match report.exit_code {
        Some(0) => None,
        Some(_) => Some(FailureCategory::AppExit),
        None => Some(FailureCategory::Unknown),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use RunStatus::*;

    #[test]
    fn reports_keep_one_container_per_attempt() {
        let reportable = [
            (Queued, Stopped),
            (Pending, Running),
            (Pending, Stopped),
            (Running, Stopped),
            (NeedsRetry, Queued),
            (NeedsRetry, Stopped),
        ];
        for from in RunStatus::ALL {
            for to in RunStatus::ALL {
                let expect = reportable.contains(&(from, to));
                assert_eq!(check_report(from, to).is_ok(), expect, "{from} → {to}");
            }
        }
        let e = check_report(Running, NeedsRetry).expect_err("refused");
        assert_eq!(e.kind(), ErrorKind::Conflict);
        assert!(e.message().contains("second container"), "{e}");
    }
}
