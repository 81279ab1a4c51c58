//! Runs: execute, read, logs, wait, terminate (with children), requeue.

use std::collections::HashSet;
use std::time::Duration;

use futures::StreamExt;

use tokio::sync::broadcast;

use super::{ENV_PARENT_RUN_ID, ENV_RUN_ID, ENV_SERVER_MODE, Flotilla};

use crate::error::{Error, ErrorKind, Result};
use crate::logs::LogChunk;
use crate::model::{
    self, Actor, ClusterStatus, Definition, EnvVar, ExecuteRequest, FailureCategory, Run, RunEvent,
    RunStatus, TemplateRun,
};
use crate::paging::run_pages;
use crate::query::{Page, RunQuery};
use crate::queue::Message;
use crate::validate::{self};

impl Flotilla {
    /// Executes the definition with id `definition_id` on behalf of the
    /// embedding program (trusted, as an admin); servers call
    /// [`Flotilla::execute_as`] with their caller.
    pub async fn execute(&self, definition_id: &str, request: ExecuteRequest) -> Result<Run> {
        self.execute_as(definition_id, request, &Actor::system())
            .await
    }

    /// Executes the definition with alias `alias` on behalf of the embedding
    /// program (trusted, as an admin).
    pub async fn execute_alias(&self, alias: &str, request: ExecuteRequest) -> Result<Run> {
        self.execute_alias_as(alias, request, &Actor::system())
            .await
    }

    /// Executes the definition with id `definition_id` for `actor`.
    ///
    /// The cluster decides the engine: the request's `engine` may only pick
    /// among the engines its cluster allows; an engine this server does not
    /// have is set aside for the cluster's own (flotilla-os clients always
    /// send `"eks"`); host engines (`local`) are for admins only on a server
    /// that has other engines. An `idempotence_key` returns the live run
    /// made with it for the same definition and owner (see
    /// [`IDEMPOTENCE_WINDOW`](super::IDEMPOTENCE_WINDOW)).
    pub async fn execute_as(
        &self,
        definition_id: &str,
        request: ExecuteRequest,
        actor: &Actor,
    ) -> Result<Run> {
        validate::check_execute(&request, &self.inner.config.limits)?;
        // The definition and the cluster are read at once: one round trip
        // of waiting instead of two.
        let cluster_name = self.request_cluster(&request);
        let (def, cluster) = tokio::join!(
            self.inner.store.get_definition(definition_id),
            self.get_cluster(&cluster_name)
        );
        self.execute_definition(&def?, request, actor, None, false, cluster)
            .await
    }

    /// Executes the definition with alias `alias` for `actor`; the rules of
    /// [`Flotilla::execute_as`].
    pub async fn execute_alias_as(
        &self,
        alias: &str,
        request: ExecuteRequest,
        actor: &Actor,
    ) -> Result<Run> {
        validate::check_execute(&request, &self.inner.config.limits)?;
        let cluster_name = self.request_cluster(&request);
        let (def, cluster) = tokio::join!(
            self.inner.store.get_definition_by_alias(alias),
            self.get_cluster(&cluster_name)
        );
        self.execute_definition(&def?, request, actor, None, false, cluster)
            .await
    }

    /// The cluster a request runs on: its own, or the default.
    pub(super) fn request_cluster(&self, request: &ExecuteRequest) -> String {
        request
            .cluster
            .clone()
            .unwrap_or_else(|| self.inner.config.default_cluster.clone())
    }

    /// Makes and queues the run of `def` (a stored definition, or a
    /// template's, see [`Flotilla::execute_template_as`]) carrying
    /// `template`; with `dry_run`, returns the run without storing or
    /// queueing anything. `cluster` is the answer of
    /// [`Flotilla::get_cluster`] for [`Flotilla::request_cluster`].
    pub(super) async fn execute_definition(
        &self,
        def: &Definition,
        request: ExecuteRequest,
        actor: &Actor,
        template: Option<TemplateRun>,
        dry_run: bool,
        cluster: Result<crate::model::Cluster>,
    ) -> Result<Run> {
        let store = &self.inner.store;
        let owner = request
            .run_tags
            .as_ref()
            .map(|t| t.owner_id.clone())
            .unwrap_or_default();
        if !dry_run
            && let Some(key) = &request.idempotence_key
            && let Some(existing) = self.run_for_key(key, def, &owner).await?
        {
            return Ok(existing);
        }
        let cluster_name = self.request_cluster(&request);
        let cluster = match cluster {
            Ok(c) => c,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::invalid(format!(
                    "cluster: '{cluster_name}' is not a known cluster"
                )));
            }
            Err(e) => return Err(e),
        };
        if cluster.status == ClusterStatus::Offline {
            return Err(Error::invalid(format!(
                "cluster: '{cluster_name}' is offline{}",
                cluster
                    .status_reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            )));
        }
        let choice = self.choose_engine(&cluster, request.engine.as_deref(), actor)?;
        let engine_name = choice.engine;
        let Some(engine) = self.inner.engines.get(&engine_name) else {
            return Err(Error::invalid(format!(
                "engine: '{engine_name}' is not a configured engine"
            )));
        };
        let gpu = request.gpu.or(def.gpu);
        if gpu.unwrap_or(0) > 0 && !engine.capabilities().gpu {
            return Err(Error::invalid(format!(
                "gpu: engine '{engine_name}' cannot run GPU jobs"
            )));
        }
        let tags = request.run_tags.clone().unwrap_or_default();
        let config = &self.inner.config;
        let mut run = Run::queued(
            def,
            cluster_name.clone(),
            engine_name,
            tags.owner_id.clone(),
        );
        let run_id = run.run_id.clone();
        let now = run.updated_at;
        let mut env: Vec<EnvVar> = def.env.clone();
        for var in request.env.iter().flatten() {
            match env.iter_mut().find(|e| e.name == var.name) {
                Some(existing) => existing.value = var.value.clone(),
                None => env.push(var.clone()),
            }
        }
        let injected = [
            (ENV_RUN_ID, run_id.clone()),
            (ENV_SERVER_MODE, config.mode.clone()),
            (config.owner_id_var.as_str(), tags.owner_id.clone()),
        ];
        for (name, value) in injected {
            env.retain(|e| e.name != name);
            env.push(EnvVar::new(name, value));
        }
        run.env = env;
        if let Some(command) = &request.command {
            run.command = Some(command.clone());
        }
        run.memory = request.memory.or(def.memory);
        run.cpu = request.cpu.or(def.cpu);
        run.gpu = gpu;
        run.run_tags = tags;
        run.max_attempts = def.attempts_or(config.retry.max_attempts);
        run.idempotence_key = request.idempotence_key.clone();
        run.labels = request.labels.clone().unwrap_or_default();
        run.active_deadline_seconds = request.active_deadline_seconds;
        run.description = request.description.clone();
        run.priority = request.priority.unwrap_or(0);
        run.template = template;
        if dry_run {
            return Ok(run);
        }
        let staged = self
            .stage_input(&mut run, &request, engine.capabilities().artifacts)
            .await?;
        let event = RunEvent {
            run_id: run_id.clone(),
            at: now,
            from: None,
            to: RunStatus::Queued,
            attempt: 1,
            reason: Some(format!(
                "queued by {} on {}{}{}",
                run.owner,
                run.cluster,
                choice
                    .note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                staged.map(|s| format!("; {s}")).unwrap_or_default()
            )),
        };
        self.add_queue(&cluster_name);
        let message = Message::new(run_id.clone(), 1);
        let same_domain = match (
            store.transaction_domain(),
            self.inner.queue.transaction_domain(),
        ) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        };
        let created = if same_domain {
            store.create_run_enqueued(&run, &event, &cluster_name).await
        } else {
            store.create_run(&run, &event).await
        };
        match created {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Conflict => {
                if let Some(key) = &request.idempotence_key
                    && let Some(existing) = self.run_for_key(key, def, &owner).await?
                {
                    return Ok(existing);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if !same_domain
            && let Err(e) = self
                .inner
                .queue
                .enqueue(&cluster_name, std::slice::from_ref(&message))
                .await
        {
            // The run is stored; the reconcile worker enqueues it later.
            tracing::warn!(run_id = %run_id, error = %e, "enqueue failed; reconcile will retry");
        }
        metrics::counter!("flotilla_runs_executed_total").increment(1);
        self.publish(&run);
        Ok(run)
    }

    /// A run by id; a QUEUED run held back by admission on this replica
    /// says why in `waiting`.
    pub async fn get_run(&self, run_id: &str) -> Result<Run> {
        let mut run = self.inner.store.get_run(run_id).await?;
        self.annotate_waiting(&mut run);
        Ok(run)
    }

    /// Lists runs; `limit` is capped by `limits.max_page`. Waiting runs say
    /// why, as in [`Flotilla::get_run`].
    pub async fn list_runs(&self, mut query: RunQuery) -> Result<Page<Run>> {
        query.limit = self.limit(query.limit);
        let mut page = self.inner.store.list_runs(&query).await?;
        for run in &mut page.items {
            self.annotate_waiting(run);
        }
        Ok(page)
    }

    /// The run's timeline.
    pub async fn run_events(&self, run_id: &str) -> Result<Vec<RunEvent>> {
        self.inner.store.get_run(run_id).await?;
        self.inner.store.run_events(run_id).await
    }

    /// Reads the run's log after `cursor`.
    pub async fn logs(
        &self,
        run_id: &str,
        cursor: Option<&str>,
        max_bytes: usize,
    ) -> Result<(Run, LogChunk)> {
        let run = self.inner.store.get_run(run_id).await?;
        let Some(source) = self.inner.logs.get(&run.engine) else {
            return Err(Error::unsupported(format!(
                "logs: no log source is configured for engine '{}'",
                run.engine
            )));
        };
        let chunk = source.read(&run, cursor, max_bytes).await?;
        Ok((run, chunk))
    }

    /// Waits until the run is STOPPED or `timeout` passes (`Unavailable`).
    pub async fn wait_for_stop(&self, run_id: &str, timeout: Duration) -> Result<Run> {
        let mut changes = self.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let run = self.get_run(run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            // Woken by this process's changes; re-read now and then for
            // changes made by other replicas.
            let wake = async {
                loop {
                    match changes.recv().await {
                        Ok(r) if r.run_id == run_id => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            tokio::select! {
                _ = wake => {}
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Error::unavailable(format!(
                        "run {run_id} did not stop within {timeout:?}"
                    )));
                }
            }
        }
    }

    /// Terminates a run (and the runs whose env names it as
    /// `PARENT_FLOTILLA_RUN_ID`). `by` names who asked; it goes into the
    /// exit reason. Terminating a stopped run returns it unchanged.
    pub async fn terminate(&self, run_id: &str, by: &str) -> Result<Run> {
        let run = self.terminate_one(run_id, by).await?;
        self.terminate_children(run_id, by).await?;
        Ok(run)
    }

    /// Terminates every live descendant of `root`, breadth first, through
    /// every page of children (no depth limit; a run is visited once, so an
    /// env naming an ancestor cannot loop).
    async fn terminate_children(&self, root: &str, by: &str) -> Result<()> {
        let mut visited: HashSet<String> = HashSet::from([root.to_string()]);
        let mut parents = vec![root.to_string()];
        while let Some(parent) = parents.pop() {
            let mut query = RunQuery::all(self.inner.config.limits.max_page).with_statuses(&[
                RunStatus::Queued,
                RunStatus::Pending,
                RunStatus::Running,
                RunStatus::NeedsRetry,
            ]);
            query.env = vec![EnvVar::new(ENV_PARENT_RUN_ID, &parent)];
            let mut children = Vec::new();
            let mut pages = run_pages(self.inner.store.as_ref(), query);
            while let Some(page) = pages.next().await {
                children.extend(page?.into_iter().map(|r| r.run_id));
            }
            drop(pages);
            for child in children {
                if visited.insert(child.clone()) {
                    self.terminate_one(&child, by).await?;
                    parents.push(child);
                }
            }
        }
        Ok(())
    }

    async fn terminate_one(&self, run_id: &str, by: &str) -> Result<Run> {
        let reason = format!("terminated by {by}");
        for _ in 0..8 {
            let run = self.inner.store.get_run(run_id).await?;
            if run.status.is_terminal() {
                return Ok(run);
            }
            if run.status.is_active()
                && let Some(engine) = self.inner.engines.get(&run.engine)
            {
                engine.terminate(&run, &reason).await?;
            }
            let mut next = run.clone();
            next.status = RunStatus::Stopped;
            next.failure = Some(FailureCategory::Terminated);
            next.exit_reason = Some(reason.clone());
            next.finished_at = Some(model::now());
            match self.transition(&run, next, Some(reason.clone())).await {
                Ok(stored) => {
                    metrics::counter!("flotilla_runs_terminated_total").increment(1);
                    return Ok(stored);
                }
                Err(e) if e.kind() == ErrorKind::Conflict => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::conflict(format!(
            "run {run_id} kept changing; terminate again"
        )))
    }

    /// NEEDS_RETRY → QUEUED with the next attempt, then enqueue.
    pub(crate) async fn requeue(&self, run: &Run) -> Result<Run> {
        let mut next = run.clone();
        next.status = RunStatus::Queued;
        next.attempt = run.attempt + 1;
        if run.failure == Some(FailureCategory::Oom) && run.adaptive_resource_allocation {
            next.memory = Some(self.inner.config.retry.grown_memory(run.memory));
        }
        next.exit_code = None;
        next.exit_reason = None;
        next.failure = None;
        next.engine_ref = None;
        next.instance = None;
        next.started_at = None;
        next.finished_at = None;
        next.queued_at = Some(model::now());
        let reason = format!(
            "attempt {} queued after {}",
            next.attempt,
            run.failure.map(|f| f.as_str()).unwrap_or("a failure")
        );
        let stored = self.transition(run, next, Some(reason)).await?;
        self.add_queue(&stored.cluster);
        if let Err(e) = self
            .inner
            .queue
            .enqueue(
                &stored.cluster,
                &[Message::new(stored.run_id.clone(), stored.attempt)],
            )
            .await
        {
            tracing::warn!(run_id = %stored.run_id, error = %e, "enqueue failed; reconcile will retry");
        }
        Ok(stored)
    }
}
