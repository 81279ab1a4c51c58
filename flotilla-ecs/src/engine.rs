//! [`EcsEngine`]: runs as ECS tasks.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use aws_sdk_ecs::Client;
use aws_sdk_ecs::operation::run_task::RunTaskError;
use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, CapacityProviderStrategyItem, ContainerOverride,
    DesiredStatus, KeyValuePair, NetworkConfiguration, Tag, Task, TaskDefinitionField,
    TaskDefinitionStatus, TaskField, TaskOverride,
};
use chrono::{DateTime, Utc};
use flotilla::{
    Capabilities, Definition, Engine, Error, ErrorKind, FailureCategory, Instance, Result, Run,
    StatusUpdate, Submitted, TaskState,
};
use futures::StreamExt;

use crate::artifacts::{ContainerEnd, HelperSpec, OUTPUT_CONTAINER, apply_helper_ends, pushed_url};
use crate::classify::{DEADLINE_REASON, StopFacts, classify_stop, task_state};
use crate::events::{self, EventRoute};
use crate::settings::EcsSettings;
use crate::taskdef::{
    DEFINITION_TAG, HASH_TAG, TaskSpec, cpu_units, family, fargate_cpu, gpu_requirement,
    shell_command, tag_value,
};
use flotilla::hash::fnv1a;
use flotilla_aws::{call_backoff, map_sdk_error, sdk_config, with_auth_retry};

/// Tag carrying the run id on every task flotilla starts.
pub const RUN_TAG: &str = "flotilla:run-id";
/// Tag carrying the attempt on every task flotilla starts.
pub const ATTEMPT_TAG: &str = "flotilla:attempt";
/// `startedBy` of every task flotilla starts is `flotilla-<attempt>`.
pub const STARTED_BY: &str = "flotilla";
/// DescribeTasks takes at most this many tasks per call.
pub const DESCRIBE_BATCH: usize = 100;
/// Attempts of flotilla's own retry around batch calls, on top of the SDK's.
const CALL_ATTEMPTS: u32 = 3;

/// The RunTask `clientToken` of a run attempt: `<run_id>-<attempt>`, or a
/// hash of it when that is longer than ECS's 64 characters. Unique per
/// attempt, so a redelivered submit returns the task already started and
/// a retry starts a new one.
pub fn client_token(run: &Run) -> String {
    let plain = format!("{}-{}", run.run_id, run.attempt);
    if plain.len() <= 64
        && plain
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        plain
    } else {
        format!(
            "{:016x}{:016x}-{}",
            fnv1a(run.run_id.as_bytes()),
            fnv1a(format!("flotilla:{}", run.run_id).as_bytes()),
            run.attempt
        )
    }
}

/// The task id (last segment) of a task ARN.
pub fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or(arn)
}

fn to_chrono(t: Option<&aws_smithy_types::DateTime>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.secs(), t.subsec_nanos())
}

/// Whether `task` carries the run id and attempt tags of `run`.
fn is_attempt_of(task: &Task, run: &Run) -> bool {
    let tag = |k: &str| {
        task.tags()
            .iter()
            .find(|t| t.key() == Some(k))
            .and_then(|t| t.value())
    };
    let attempt = run.attempt.to_string();
    tag(RUN_TAG) == Some(tag_value(&run.run_id).as_str())
        && tag(ATTEMPT_TAG) == Some(attempt.as_str())
}

/// flotilla's [`Engine`] on Amazon ECS.
///
/// - **Task definitions are pinned to the run**: family
///   `<family_prefix>-<definition id>`, content taken from the run's own
///   snapshot (image, memory; the definition's ports; log and network
///   settings), one revision per content hash (kept in a tag), with the
///   `awslogs` driver writing to the configured group and stream prefix.
///   Command, cpu, gpu and env travel in the overrides, built from the run
///   too, so a redelivered submit of an attempt sends the same parameters
///   whatever was edited since.
/// - **Token conflicts**: a `ConflictException` (the attempt's clientToken
///   used with other parameters, e.g. after a ports edit) adopts the task
///   the token started (its `resourceIds`, else found by `startedBy` and
///   the run/attempt tags) instead of rejecting the run.
/// - **Submit** is RunTask on the run's cluster with container overrides
///   (command, the run's full env including `FLOTILLA_*`, memory, cpu,
///   gpu), tags carrying run id and attempt, `clientToken`
///   `<run_id>-<attempt>` (idempotent per attempt), the launch type or
///   capacity provider strategy and the awsvpc network configuration.
///   Placement failures (`RESOURCE:*`, `AGENT`, no container instance) are
///   `Unavailable` (the run stays queued); invalid parameters are
///   `InvalidInput` with AWS's message (the run stops).
/// - **Poll** is DescribeTasks, 100 tasks per call per cluster, clusters
///   concurrently. A cluster (or a call) that fails leaves its runs out of
///   the answer — no news, never `Missing` — while the other clusters are
///   observed; the poll is `Err` only when nothing could be observed.
///   States and failures are mapped by
///   [`crate::classify`]. Container instances are looked up once each
///   (DescribeContainerInstances) for the EC2 instance id.
/// - **Deadline**: a running task past the run's `active_deadline_seconds`
///   is stopped by the poll with a reason classified as `timeout`.
/// - **Artifacts** (optional, [`crate::EcsSettings::artifacts`]): task
///   volumes and two helper containers stage the run's input at `/input`
///   and upload `/output` after the job (see [`crate::artifacts`]); the
///   helpers' exit codes decide `output_url` and the `artifact_upload`
///   failure.
/// - **Terminate** is StopTask with the given reason.
/// - **Push** (optional, [`crate::EventSettings`]): an EventBridge rule sends
///   "ECS Task State Change" events of the engine's clusters to an SQS
///   status queue; `events()` streams them (run id from the task's
///   `FLOTILLA_RUN_ID` override, attempt from `startedBy`) as durable
///   events: the queue is read only while the stream is polled (by the
///   status worker's lease holder alone, so replicas never take each
///   other's events) and a message is deleted only once its update is
///   applied; one received but not applied is delivered again after the
///   queue's visibility timeout.
/// - Throttling and 5xx are retried by the SDK (jittered backoff) and by
///   flotilla around batch calls; a throttled call never fails a run.
/// - Credentials or permissions refused (401, 403, expired tokens: a
///   credential refresh, a role being fixed) are retried a bounded number
///   of times with backoff ([`flotilla_aws::with_auth_retry`]), then
///   `Unavailable`: the run stays queued, or unobserved, until they work
///   again — never rejected for it.
#[derive(Debug)]
pub struct EcsEngine {
    client: Client,
    settings: EcsSettings,
    region: String,
    /// (family, content hash) → task definition ARN.
    taskdefs: tokio::sync::Mutex<HashMap<(String, String), String>>,
    /// container instance ARN → instance.
    instances: Mutex<HashMap<String, Instance>>,
    /// The status queue of the push path, when enabled.
    route: Option<EventRoute>,
}

impl EcsEngine {
    /// An engine with a client built from `settings`.
    pub async fn new(settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        let config = sdk_config(
            &settings.region,
            settings.endpoint_url.as_deref(),
            settings.credentials.as_ref(),
            settings.max_attempts,
        )
        .await;
        let engine = Self::from_client(Client::new(&config), settings)?;
        if engine.settings.events.is_some() {
            engine.enable_events(&config).await
        } else {
            Ok(engine)
        }
    }

    /// Turns the push path of `settings.events` on, with SQS and
    /// EventBridge clients from `config`: installs the rule, queue and target
    /// when `install`, then `events()` streams the queue.
    pub async fn enable_events(mut self, config: &aws_config::SdkConfig) -> Result<Self> {
        let Some(ev) = self.settings.events.clone() else {
            return Err(Error::invalid("events: not configured"));
        };
        let sqs = aws_sdk_sqs::Client::new(config);
        let queue_url = if ev.install {
            let mut arns = Vec::new();
            if !self.settings.clusters.is_empty() {
                let out = self
                    .client
                    .describe_clusters()
                    .set_clusters(Some(self.settings.clusters.clone()))
                    .send()
                    .await
                    .map_err(|e| map_sdk_error("DescribeClusters", e))?;
                arns = out
                    .clusters()
                    .iter()
                    .filter_map(|c| c.cluster_arn().map(str::to_string))
                    .collect();
                if arns.is_empty() {
                    return Err(Error::invalid(
                        "clusters: none of the configured clusters exists",
                    ));
                }
            }
            let eventbridge = aws_sdk_eventbridge::Client::new(config);
            events::install(&sqs, &eventbridge, &ev, &arns).await?
        } else {
            sqs.get_queue_url()
                .queue_name(&ev.status_queue)
                .send()
                .await
                .map_err(|e| map_sdk_error("GetQueueUrl", e))?
                .queue_url()
                .ok_or_else(|| Error::internal("GetQueueUrl returned no URL"))?
                .to_string()
        };
        self.route = Some(EventRoute {
            sqs,
            queue_url,
            wait_seconds: ev.wait_seconds,
            visibility_timeout: ev.visibility_timeout,
            container_name: self.settings.container_name.clone(),
        });
        Ok(self)
    }

    /// An engine using an existing client (for instance one with an
    /// interceptor); `settings` still shape the tasks.
    pub fn from_client(client: Client, settings: EcsSettings) -> Result<Self> {
        settings.validate()?;
        let region = client
            .config()
            .region()
            .map(|r| r.to_string())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| settings.region.clone());
        if region.is_empty() {
            return Err(Error::invalid(
                "region: no region configured and none found in the environment",
            ));
        }
        Ok(EcsEngine {
            client,
            settings,
            region,
            taskdefs: tokio::sync::Mutex::new(HashMap::new()),
            instances: Mutex::new(HashMap::new()),
            route: None,
        })
    }

    /// The SDK client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The settings.
    pub fn settings(&self) -> &EcsSettings {
        &self.settings
    }

    /// The region tasks log to.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The ARN of an ACTIVE task definition for `run` of `def`, registering
    /// a new revision when none matches its content.
    pub async fn ensure_task_definition(&self, run: &Run, def: &Definition) -> Result<String> {
        let spec = TaskSpec::new(&self.settings, &self.region, run, def)?;
        let hash = spec.content_hash();
        // One registration at a time: concurrent submits of a new definition
        // register it once.
        let mut cache = self.taskdefs.lock().await;
        let key = (spec.family.clone(), hash.clone());
        if let Some(arn) = cache.get(&key) {
            return Ok(arn.clone());
        }
        let describe = self
            .client
            .describe_task_definition()
            .task_definition(&spec.family)
            .include(TaskDefinitionField::Tags);
        let described = with_auth_retry("DescribeTaskDefinition", || describe.clone().send()).await;
        match described {
            Ok(out) => {
                let same = out
                    .tags()
                    .iter()
                    .any(|t| t.key() == Some(HASH_TAG) && t.value() == Some(hash.as_str()));
                if let Some(td) = out.task_definition()
                    && same
                    && td.status() != Some(&TaskDefinitionStatus::Inactive)
                    && let Some(arn) = td.task_definition_arn()
                {
                    cache.insert(key, arn.to_string());
                    return Ok(arn.to_string());
                }
            }
            Err(e) => {
                let err = map_sdk_error("DescribeTaskDefinition", e);
                if !matches!(err.kind(), ErrorKind::NotFound | ErrorKind::InvalidInput) {
                    return Err(err);
                }
            }
        }
        let register = spec.register(&self.client, &hash, &def.definition_id)?;
        let out = with_auth_retry("RegisterTaskDefinition", || register.clone().send())
            .await
            .map_err(|e| map_sdk_error("RegisterTaskDefinition", e))?;
        let arn = out
            .task_definition()
            .and_then(|t| t.task_definition_arn())
            .ok_or_else(|| Error::internal("RegisterTaskDefinition returned no ARN"))?
            .to_string();
        tracing::info!(family = %spec.family, arn = %arn, "registered task definition");
        if cache.len() > 10_000 {
            cache.clear();
        }
        cache.insert(key, arn.clone());
        Ok(arn)
    }

    /// Deregisters every ACTIVE revision of `definition_id`'s task
    /// definition family (when the definition is deleted); returns how
    /// many. Running tasks are not affected.
    pub async fn deregister_definition(&self, definition_id: &str) -> Result<usize> {
        let fam = family(&self.settings, definition_id);
        self.taskdefs.lock().await.retain(|(f, _), _| *f != fam);
        let mut arns = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let out = self
                .client
                .list_task_definitions()
                .family_prefix(&fam)
                .status(TaskDefinitionStatus::Active)
                .set_next_token(token.take())
                .send()
                .await
                .map_err(|e| map_sdk_error("ListTaskDefinitions", e))?;
            arns.extend(
                out.task_definition_arns()
                    .iter()
                    // family_prefix matches prefixes: keep this family only.
                    .filter(|a| {
                        a.rsplit('/')
                            .next()
                            .and_then(|fr| fr.rsplit_once(':'))
                            .is_some_and(|(f, _)| f == fam)
                    })
                    .cloned(),
            );
            match out.next_token() {
                Some(t) if !t.is_empty() => token = Some(t.to_string()),
                _ => break,
            }
        }
        for arn in &arns {
            self.client
                .deregister_task_definition()
                .task_definition(arn)
                .send()
                .await
                .map_err(|e| map_sdk_error("DeregisterTaskDefinition", e))?;
        }
        Ok(arns.len())
    }

    fn overrides(&self, run: &Run) -> Result<TaskOverride> {
        let s = &self.settings;
        let mut c = ContainerOverride::builder().name(&s.container_name);
        for e in &run.env {
            c = c.environment(
                KeyValuePair::builder()
                    .name(&e.name)
                    .value(&e.value)
                    .build(),
            );
        }
        if let Some(cmd) = &run.command {
            c = c.set_command(Some(shell_command(s, cmd)));
        }
        if let Some(m) = run.memory {
            c = c.memory(m.clamp(4, i64::from(i32::MAX)) as i32);
        }
        if let Some(cpu) = run.cpu {
            c = c.cpu(cpu_units(cpu));
        }
        if let Some(g) = run.gpu.filter(|g| *g > 0) {
            c = c.resource_requirements(gpu_requirement(g)?);
        }
        let mut t = TaskOverride::builder().container_overrides(c.build());
        let mut helpers_memory = 0;
        if let Some(a) = &s.artifacts {
            let output = crate::artifacts::output_url(&a.store_url, &run.run_id, run.attempt);
            for o in HelperSpec::overrides(run.input_url.as_deref(), &output) {
                t = t.container_overrides(o);
            }
            helpers_memory = 2 * a.helper_memory_reservation;
        }
        if s.uses_fargate() {
            t = t
                .cpu(fargate_cpu(run.cpu.map(cpu_units)).to_string())
                .memory((run.memory.unwrap_or(s.default_memory) + helpers_memory).to_string());
        }
        Ok(t.build())
    }

    async fn describe(&self, cluster: &str, arns: &[String]) -> Result<Vec<Task>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let r = self
                .client
                .describe_tasks()
                .cluster(cluster)
                .set_tasks(Some(arns.to_vec()))
                .include(TaskField::Tags)
                .send()
                .await;
            match r {
                Ok(out) => return Ok(out.tasks().to_vec()),
                Err(e) => {
                    let err = map_sdk_error("DescribeTasks", e);
                    if err.is_retryable() && attempt < CALL_ATTEMPTS {
                        tokio::time::sleep(call_backoff(attempt)).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// EC2 instances of container instances, looked up once each.
    async fn instances_of(&self, cluster: &str, tasks: &[Task]) -> HashMap<String, Instance> {
        let wanted: Vec<String> = tasks
            .iter()
            .filter_map(|t| t.container_instance_arn())
            .map(str::to_string)
            .collect();
        let mut missing: Vec<String> = match self.instances.lock() {
            Ok(known) => wanted
                .iter()
                .filter(|a| !known.contains_key(*a))
                .cloned()
                .collect(),
            Err(_) => Vec::new(),
        };
        missing.sort();
        missing.dedup();
        for chunk in missing.chunks(DESCRIBE_BATCH) {
            match self
                .client
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(chunk.to_vec()))
                .send()
                .await
            {
                Ok(out) => {
                    if let Ok(mut m) = self.instances.lock() {
                        if m.len() > 10_000 {
                            m.clear();
                        }
                        for ci in out.container_instances() {
                            if let (Some(arn), Some(id)) =
                                (ci.container_instance_arn(), ci.ec2_instance_id())
                            {
                                m.insert(
                                    arn.to_string(),
                                    Instance {
                                        instance_id: id.to_string(),
                                        dns_name: String::new(),
                                    },
                                );
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!(cluster = %cluster, error = %map_sdk_error("DescribeContainerInstances", e), "container instance lookup failed");
                }
            }
        }
        match self.instances.lock() {
            Ok(known) => wanted
                .into_iter()
                .filter_map(|a| known.get(&a).cloned().map(|i| (a, i)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }

    /// The update for `run` from its task.
    async fn update_of(
        &self,
        run: &Run,
        task: &Task,
        instances: &HashMap<String, Instance>,
    ) -> StatusUpdate {
        let attempt = task
            .tags()
            .iter()
            .find(|t| t.key() == Some(ATTEMPT_TAG))
            .and_then(|t| t.value())
            .and_then(|v| v.parse().ok())
            .unwrap_or(run.attempt);
        let state = task_state(task.last_status().unwrap_or("PENDING"));
        let mut u = StatusUpdate::new(run.run_id.clone(), attempt, state);
        u.instance = task
            .container_instance_arn()
            .and_then(|a| instances.get(a).cloned());
        u.started_at = to_chrono(task.started_at());
        let container = task
            .containers()
            .iter()
            .find(|c| c.name() == Some(self.settings.container_name.as_str()))
            .or_else(|| task.containers().first());
        match state {
            TaskState::Stopped => {
                let facts = StopFacts {
                    stop_code: task.stop_code().map(|c| c.as_str()),
                    stopped_reason: task.stopped_reason(),
                    container_reason: container.and_then(|c| c.reason()),
                    exit_code: container.and_then(|c| c.exit_code()).map(i64::from),
                };
                let (failure, reason) = classify_stop(&facts);
                u.exit_code = facts.exit_code;
                u.failure = failure;
                u.reason = (!reason.is_empty()).then_some(reason);
                u.finished_at =
                    to_chrono(task.stopped_at()).or_else(|| to_chrono(task.execution_stopped_at()));
                let ends: Vec<ContainerEnd<'_>> = task
                    .containers()
                    .iter()
                    .map(|c| ContainerEnd {
                        name: c.name().unwrap_or(""),
                        exit_code: c.exit_code().map(i64::from),
                        reason: c.reason(),
                    })
                    .collect();
                let pushed = task
                    .overrides()
                    .into_iter()
                    .flat_map(|o| o.container_overrides())
                    .find(|o| o.name() == Some(OUTPUT_CONTAINER))
                    .and_then(|o| pushed_url(o.command()));
                apply_helper_ends(&mut u, &ends, pushed);
            }
            TaskState::Running => {
                if let Some(limit) = run.active_deadline_seconds.filter(|d| *d > 0)
                    && attempt == run.attempt
                {
                    let since = u.started_at.or(run.started_at);
                    let over = since.is_some_and(|s| {
                        (Utc::now() - s).num_milliseconds() > limit.saturating_mul(1000)
                    });
                    if over {
                        let reason = format!("{DEADLINE_REASON} ({limit} s)");
                        match self.stop(run, &reason).await {
                            Ok(()) => {
                                u.state = TaskState::Stopped;
                                u.failure = Some(FailureCategory::Timeout);
                                u.reason = Some(format!("UserInitiated: {reason}"));
                                u.finished_at = Some(Utc::now());
                            }
                            Err(e) => {
                                tracing::warn!(run_id = %run.run_id, error = %e, "stopping an overdue task failed; the next poll retries");
                            }
                        }
                    }
                }
            }
            TaskState::Pending | TaskState::Missing => {}
        }
        u
    }

    /// The clientToken of `run`'s attempt is in use with other parameters
    /// (ECS `ConflictException`): the attempt was started already, so its
    /// task (one of `ids`, else found by `startedBy` and tags) is adopted.
    async fn adopt(&self, run: &Run, ids: &[String], conflict: &Error) -> Result<Submitted> {
        let mut candidates: Vec<String> = ids.to_vec();
        if candidates.is_empty() {
            candidates = self.list_started(run).await?;
        }
        for chunk in candidates.chunks(DESCRIBE_BATCH) {
            let tasks = self.describe(&run.cluster, chunk).await?;
            if let Some(arn) = tasks
                .iter()
                .find(|t| is_attempt_of(t, run))
                .and_then(|t| t.task_arn())
            {
                tracing::info!(run_id = %run.run_id, attempt = run.attempt, task = %arn, "clientToken in use with other parameters: adopted the attempt's task");
                return Ok(Submitted {
                    engine_ref: arn.to_string(),
                    instance: None,
                });
            }
        }
        Err(Error::unavailable(format!(
            "{}; no task of attempt {} was found yet",
            conflict.message(),
            run.attempt
        )))
    }

    /// Tasks on the run's cluster started by flotilla for the run's attempt
    /// number (any run), running or stopped.
    async fn list_started(&self, run: &Run) -> Result<Vec<String>> {
        let mut arns = Vec::new();
        for desired in [DesiredStatus::Running, DesiredStatus::Stopped] {
            let mut token: Option<String> = None;
            loop {
                let list = self
                    .client
                    .list_tasks()
                    .cluster(&run.cluster)
                    .started_by(format!("{STARTED_BY}-{}", run.attempt))
                    .desired_status(desired.clone())
                    .set_next_token(token.take());
                let out = with_auth_retry("ListTasks", || list.clone().send())
                    .await
                    .map_err(|e| map_sdk_error("ListTasks", e))?;
                arns.extend(out.task_arns().iter().cloned());
                match out.next_token() {
                    Some(t) if !t.is_empty() => token = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(arns)
    }

    async fn stop(&self, run: &Run, reason: &str) -> Result<()> {
        let Some(arn) = run.engine_ref.as_deref() else {
            return Ok(());
        };
        let reason: String = reason.chars().take(255).collect();
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .client
                .stop_task()
                .cluster(&run.cluster)
                .task(arn)
                .reason(&reason)
                .send()
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    let err = map_sdk_error("StopTask", e);
                    let gone = err.kind() == ErrorKind::NotFound
                        || (err.kind() == ErrorKind::InvalidInput
                            && err.message().to_ascii_lowercase().contains("not found"));
                    if gone {
                        return Ok(());
                    }
                    if err.is_retryable() && attempt < CALL_ATTEMPTS {
                        tokio::time::sleep(call_backoff(attempt)).await;
                        continue;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// Updates of `runs` (all on `cluster`), 100 per DescribeTasks call. A
    /// call that fails leaves its runs out (no news, never `Missing`) and
    /// the other calls go on; `Err` only when no call succeeded.
    async fn poll_cluster(&self, cluster: String, runs: Vec<Run>) -> Result<Vec<StatusUpdate>> {
        let cluster = cluster.as_str();
        let mut updates = Vec::with_capacity(runs.len());
        let mut failed: Option<Error> = None;
        let mut observed = false;
        for chunk in runs.chunks(DESCRIBE_BATCH) {
            let arns: Vec<String> = chunk.iter().filter_map(|r| r.engine_ref.clone()).collect();
            let tasks = match self.describe(cluster, &arns).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(cluster = %cluster, runs = chunk.len(), error = %e, "DescribeTasks failed; these runs are left unobserved until the next poll");
                    failed.get_or_insert(e);
                    continue;
                }
            };
            observed = true;
            let instances = self.instances_of(cluster, &tasks).await;
            let by_id: HashMap<&str, &Task> = tasks
                .iter()
                .filter_map(|t| t.task_arn().map(|a| (task_id(a), t)))
                .collect();
            for run in chunk {
                let id = run.engine_ref.as_deref().map(task_id).unwrap_or("");
                match by_id.get(id) {
                    Some(task) => updates.push(self.update_of(run, task, &instances).await),
                    None => {
                        let mut u =
                            StatusUpdate::new(run.run_id.clone(), run.attempt, TaskState::Missing);
                        u.reason = Some(format!("ECS has no task {id} on cluster {cluster}"));
                        updates.push(u);
                    }
                }
            }
        }
        match failed {
            Some(e) if !observed => Err(e),
            _ => Ok(updates),
        }
    }
}

#[async_trait]
impl Engine for EcsEngine {
    fn name(&self) -> &str {
        &self.settings.name
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            gpu: !self.settings.uses_fargate(),
            ports: true,
            logs: true,
            deadline: true,
            push_events: self.route.is_some(),
            images: true,
            artifacts: self.settings.artifacts.is_some(),
        }
    }

    async fn submit(&self, run: &Run, definition: &Definition) -> Result<Submitted> {
        let s = &self.settings;
        if !s.clusters.is_empty() && !s.clusters.contains(&run.cluster) {
            return Err(Error::invalid(format!(
                "cluster: '{}' is not one of the ECS engine's clusters",
                run.cluster
            )));
        }
        if run.input_url.is_some() && s.artifacts.is_none() {
            return Err(Error::invalid(
                "input_url: the ECS engine has no artifacts helper configured (ecs.artifacts)",
            ));
        }
        let task_definition = self.ensure_task_definition(run, definition).await?;
        let mut req = self
            .client
            .run_task()
            .cluster(&run.cluster)
            .task_definition(&task_definition)
            .count(1)
            .client_token(client_token(run))
            .started_by(format!("{STARTED_BY}-{}", run.attempt))
            .overrides(self.overrides(run)?)
            .tags(
                Tag::builder()
                    .key(RUN_TAG)
                    .value(tag_value(&run.run_id))
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key(ATTEMPT_TAG)
                    .value(run.attempt.to_string())
                    .build(),
            )
            .tags(
                Tag::builder()
                    .key(DEFINITION_TAG)
                    .value(tag_value(&run.definition_id))
                    .build(),
            );
        if s.capacity_provider_strategy.is_empty() {
            req = req.launch_type(aws_sdk_ecs::types::LaunchType::from(s.launch_type.as_str()));
        } else {
            for c in &s.capacity_provider_strategy {
                let item = CapacityProviderStrategyItem::builder()
                    .capacity_provider(&c.capacity_provider)
                    .weight(c.weight)
                    .base(c.base)
                    .build()
                    .map_err(|e| Error::invalid(format!("capacity_provider_strategy: {e}")))?;
                req = req.capacity_provider_strategy(item);
            }
        }
        if s.network_mode() == "awsvpc" {
            let vpc = AwsVpcConfiguration::builder()
                .set_subnets(Some(s.subnets.clone()))
                .set_security_groups(
                    (!s.security_groups.is_empty()).then(|| s.security_groups.clone()),
                )
                .assign_public_ip(if s.assign_public_ip {
                    AssignPublicIp::Enabled
                } else {
                    AssignPublicIp::Disabled
                })
                .build()
                .map_err(|e| Error::invalid(format!("subnets: {e}")))?;
            req = req.network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(vpc)
                    .build(),
            );
        }
        if s.uses_fargate()
            && let Some(p) = &s.platform_version
        {
            req = req.platform_version(p);
        }
        // Idempotent by its clientToken, so a refused call may be repeated.
        let out = match with_auth_retry("RunTask", || req.clone().send()).await {
            Ok(out) => out,
            Err(e) => {
                let conflict = e.as_service_error().and_then(|s| match s {
                    RunTaskError::ConflictException(c) => Some(c.resource_ids().to_vec()),
                    _ => None,
                });
                let err = map_sdk_error("RunTask", e);
                return match conflict {
                    Some(ids) => self.adopt(run, &ids, &err).await,
                    None => Err(err),
                };
            }
        };
        if let Some(task) = out.tasks().first()
            && let Some(arn) = task.task_arn()
        {
            return Ok(Submitted {
                engine_ref: arn.to_string(),
                instance: None,
            });
        }
        let reasons: Vec<String> = out
            .failures()
            .iter()
            .map(|f| {
                format!(
                    "{}{}",
                    f.reason().unwrap_or("unknown"),
                    f.detail().map(|d| format!(" ({d})")).unwrap_or_default()
                )
            })
            .collect();
        let placement = out.failures().is_empty()
            || out.failures().iter().any(|f| {
                let r = f.reason().unwrap_or("");
                r.starts_with("RESOURCE")
                    || r.starts_with("AGENT")
                    || r.starts_with("LOCATION")
                    || r.contains("CAPACITY")
                    || r.contains("capacity")
            });
        let message = if reasons.is_empty() {
            format!(
                "RunTask: no container instance of cluster {} could place the task",
                run.cluster
            )
        } else {
            format!("RunTask: {}", reasons.join("; "))
        };
        if placement {
            Err(Error::unavailable(message))
        } else {
            Err(Error::invalid(message))
        }
    }

    async fn poll(&self, runs: &[Run]) -> Result<Vec<StatusUpdate>> {
        let mut missing = Vec::new();
        let mut by_cluster: HashMap<String, Vec<Run>> = HashMap::new();
        for run in runs {
            if run.engine_ref.as_deref().is_some_and(|r| !r.is_empty()) {
                by_cluster
                    .entry(run.cluster.clone())
                    .or_default()
                    .push(run.clone());
            } else {
                let mut u = StatusUpdate::new(run.run_id.clone(), run.attempt, TaskState::Missing);
                u.reason = Some("not submitted to ECS".into());
                missing.push(u);
            }
        }
        let results: Vec<Result<Vec<StatusUpdate>>> = futures::stream::iter(by_cluster)
            .map(|(cluster, runs)| self.poll_cluster(cluster, runs))
            .buffer_unordered(self.settings.poll_concurrency.max(1))
            .collect()
            .await;
        // One cluster failing (deleted, unreachable, credentials refused)
        // must not hide the others: its runs are left out, unobserved.
        let mut updates = missing;
        let mut observed = !updates.is_empty();
        let mut failed: Option<Error> = None;
        for r in results {
            match r {
                Ok(u) => {
                    observed = true;
                    updates.extend(u);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        match failed {
            Some(e) if !observed => Err(e),
            _ => Ok(updates),
        }
    }

    async fn terminate(&self, run: &Run, reason: &str) -> Result<()> {
        self.stop(run, reason).await
    }

    fn events(&self) -> Option<futures::stream::BoxStream<'static, flotilla::EngineEvent>> {
        self.route.clone().and_then(events::stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_tokens_are_per_attempt_and_short() {
        let mut run: Run = serde_json::from_value(serde_json::json!({
            "run_id": "0190f0c2-7d4e-7b1a-9c53-1f2e3d4c5b6a", "definition_id": "d", "alias": "a",
            "image": "i", "cluster": "c", "engine": "ecs", "status": "QUEUED",
            "attempt": 1, "max_attempts": 3, "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("run");
        let t1 = client_token(&run);
        assert_eq!(t1, "0190f0c2-7d4e-7b1a-9c53-1f2e3d4c5b6a-1");
        run.attempt = 2;
        assert_ne!(client_token(&run), t1);
        run.run_id = "x".repeat(100);
        let long = client_token(&run);
        assert!(long.len() <= 64, "{long}");
        // Pinned: tokens of attempts already started must never change.
        assert_eq!(long, "052c9e7cec411035a21a2ec47dc75990-2");
        assert_eq!(task_id("arn:aws:ecs:us-east-1:1:task/c/abc"), "abc");
    }
}
