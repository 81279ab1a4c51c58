//! The data model: definitions, runs, their events and clusters.
//!
//! JSON field names follow flotilla-os so its clients keep working. Fields
//! flotilla adds (`attempt`, `failure`, `version`, ...) are extra keys that
//! such clients ignore.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

mod retry_strategy;
mod template;
mod usage;

pub use retry_strategy::{
    EvaluateOnExit, FailedAttempt, RetryAction, RetryStrategy, pattern_matches,
};
pub use template::{
    EXECUTABLE_TYPE_TEMPLATE, NewTemplate, Template, TemplateRun, merge_payload, new_template_id,
};
pub(crate) use usage::UsageRing;
pub use usage::{ClusterUsage, USAGE_BUCKET_SECS, USAGE_BUCKETS, UsageSample};

/// A new time-ordered opaque id (UUID v7), so inserts stay local in indexes.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Now, truncated to microseconds so it round-trips through every store
/// (PostgreSQL keeps microseconds).
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    let micros = t.timestamp_micros();
    DateTime::from_timestamp_micros(micros).unwrap_or(t)
}

/// One environment variable, `{"name": ..., "value": ...}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EnvVar {
    /// Variable name: `[A-Za-z_][A-Za-z0-9_]*`.
    pub name: String,
    /// Value, any text.
    pub value: String,
}

impl EnvVar {
    /// A variable from name and value.
    pub fn new(name: impl Into<String>, value: impl Into<String>) -> Self {
        EnvVar {
            name: name.into(),
            value: value.into(),
        }
    }
}

/// The status of a run. See the life cycle in DESIGN.md and
/// [`crate::state::check_transition`].
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunStatus {
    /// Accepted and waiting in its cluster's queue.
    Queued,
    /// Handed to the engine, not yet running.
    Pending,
    /// The container or process runs.
    Running,
    /// Finished (terminal): success is `exit_code == Some(0)`.
    Stopped,
    /// Failed for a retriable reason; the retry worker will queue it again.
    NeedsRetry,
}

impl RunStatus {
    /// All statuses, in life-cycle order.
    pub const ALL: [RunStatus; 5] = [
        RunStatus::Queued,
        RunStatus::Pending,
        RunStatus::Running,
        RunStatus::Stopped,
        RunStatus::NeedsRetry,
    ];

    /// The flotilla-os spelling: `QUEUED`, `PENDING`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "QUEUED",
            RunStatus::Pending => "PENDING",
            RunStatus::Running => "RUNNING",
            RunStatus::Stopped => "STOPPED",
            RunStatus::NeedsRetry => "NEEDS_RETRY",
        }
    }

    /// Whether the run is with an engine (PENDING or RUNNING), so the status
    /// worker follows it.
    pub fn is_active(self) -> bool {
        matches!(self, RunStatus::Pending | RunStatus::Running)
    }

    /// Whether the status is final.
    pub fn is_terminal(self) -> bool {
        self == RunStatus::Stopped
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for RunStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        RunStatus::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::invalid(format!(
                    "status: unknown status '{s}' (expected one of QUEUED, PENDING, RUNNING, STOPPED, NEEDS_RETRY)"
                ))
            })
    }
}

/// Why a run failed. Engines classify; the retry policy decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCategory {
    /// The image could not be pulled.
    ImagePull,
    /// The container could not be created or started.
    ContainerStart,
    /// The host went away: spot interruption, eviction, node failure.
    NodeLost,
    /// Killed for exceeding its memory.
    Oom,
    /// Exceeded `active_deadline_seconds`.
    Timeout,
    /// The program exited non-zero.
    AppExit,
    /// Terminated by a user.
    Terminated,
    /// The engine refused the submission permanently.
    SubmitRejected,
    /// The job's output could not be zipped or uploaded (tried twice).
    ArtifactUpload,
    /// Anything else.
    Unknown,
}

impl FailureCategory {
    /// All categories.
    pub const ALL: [FailureCategory; 10] = [
        FailureCategory::ImagePull,
        FailureCategory::ContainerStart,
        FailureCategory::NodeLost,
        FailureCategory::Oom,
        FailureCategory::Timeout,
        FailureCategory::AppExit,
        FailureCategory::Terminated,
        FailureCategory::SubmitRejected,
        FailureCategory::ArtifactUpload,
        FailureCategory::Unknown,
    ];

    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureCategory::ImagePull => "image_pull",
            FailureCategory::ContainerStart => "container_start",
            FailureCategory::NodeLost => "node_lost",
            FailureCategory::Oom => "oom",
            FailureCategory::Timeout => "timeout",
            FailureCategory::AppExit => "app_exit",
            FailureCategory::Terminated => "terminated",
            FailureCategory::SubmitRejected => "submit_rejected",
            FailureCategory::ArtifactUpload => "artifact_upload",
            FailureCategory::Unknown => "unknown",
        }
    }

    /// Infrastructure failures, which say nothing about the program and are
    /// worth another attempt.
    ///
    /// `unknown` is not one of them: a fate that cannot be known may have
    /// been a success, so it is never retried automatically.
    pub fn is_infrastructure(self) -> bool {
        matches!(
            self,
            FailureCategory::ImagePull
                | FailureCategory::ContainerStart
                | FailureCategory::NodeLost
        )
    }
}

impl FailureCategory {
    /// Whether a `RETRY` rule of a [`RetryStrategy`] may give an attempt
    /// that failed this way another one. Not `unknown` (the attempt may
    /// have succeeded: nothing finished runs again), `terminated` (a user
    /// stopped it), `timeout` (as in AWS Batch) nor `submit_rejected` (the
    /// engine refused it for good).
    pub fn rules_may_retry(self) -> bool {
        !matches!(
            self,
            FailureCategory::Unknown
                | FailureCategory::Terminated
                | FailureCategory::Timeout
                | FailureCategory::SubmitRejected
        )
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureCategory {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        FailureCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| Error::invalid(format!("failure: unknown category '{s}'")))
    }
}

/// Tags of a run; `owner_id` is required on execute.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTags {
    /// Who owns the run.
    #[serde(default)]
    pub owner_id: String,
    /// Owner e-mail, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_email: Option<String>,
    /// Team, if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
}

/// Where a run executes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// Host id: EC2 instance id, node name, or the local host name.
    #[serde(default)]
    pub instance_id: String,
    /// Host DNS name or node name.
    #[serde(default)]
    pub dns_name: String,
}

/// Who asks for a change, as the service's ownership checks see it.
///
/// Definitions record their owner; only that owner or an admin may update
/// or delete them ([`crate::Flotilla::update_definition`],
/// [`crate::Flotilla::delete_definition`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The caller's owner name (a token's `owner`).
    pub name: String,
    /// Admins may change everything.
    pub admin: bool,
}

impl Actor {
    /// The embedding program itself: trusted, an admin.
    pub fn system() -> Self {
        Actor::admin("system")
    }

    /// A caller who is `name`, not an admin.
    pub fn user(name: impl Into<String>) -> Self {
        Actor {
            name: name.into(),
            admin: false,
        }
    }

    /// An admin called `name`.
    pub fn admin(name: impl Into<String>) -> Self {
        Actor {
            name: name.into(),
            admin: true,
        }
    }

    /// Whether this caller may change something owned by `owner`: its
    /// owner or an admin. An empty owner (a definition stored before
    /// owners were recorded, or created without one) is changed by admins
    /// only.
    pub fn may_change(&self, owner: &str) -> bool {
        self.admin || (!owner.is_empty() && owner == self.name)
    }
}

/// A job definition: what to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Definition {
    /// Opaque id (UUID v7).
    pub definition_id: String,
    /// Unique human name, `[A-Za-z0-9_.-]{1,128}`.
    pub alias: String,
    /// Free grouping.
    #[serde(default)]
    pub group_name: String,
    /// Container image.
    pub image: String,
    /// Shell command; the image's default when absent.
    #[serde(default)]
    pub command: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Environment, always an array.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Container ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Retry `oom` failures with more memory.
    #[serde(default)]
    pub adaptive_resource_allocation: bool,
    /// Attempts before giving up on retriable failures (the service default
    /// when absent).
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Retry non-zero exits (`app_exit`) too.
    #[serde(default)]
    pub retry_on_app_exit: bool,
    /// Retry rules in the shape of AWS Batch's `retryStrategy`; its
    /// `attempts` wins over `max_attempts`. Runs take a copy at execute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    /// Who created it: only this owner or an admin may update or delete
    /// it. Empty for definitions stored before owners were recorded
    /// (admins only).
    #[serde(default)]
    pub owner: String,
    /// Upload the output of successful runs only (default: failed runs
    /// upload too, users debug from them).
    #[serde(default)]
    pub skip_failed_output: bool,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Last update time.
    pub updated_at: DateTime<Utc>,
}

impl Definition {
    /// The attempts a run of this definition gets: `retry_strategy.attempts`
    /// when set (it wins over `max_attempts`), else `max_attempts`, else
    /// `default`; at least 1.
    pub fn attempts_or(&self, default: u32) -> u32 {
        self.retry_strategy
            .as_ref()
            .and_then(|s| s.attempts)
            .or(self.max_attempts)
            .unwrap_or(default)
            .max(1)
    }
}

/// The body of a create: a definition without id and times.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NewDefinition {
    /// Unique alias (required).
    #[serde(default)]
    pub alias: String,
    /// Group.
    #[serde(default)]
    pub group_name: String,
    /// Image (required).
    #[serde(default)]
    pub image: String,
    /// Command.
    #[serde(default)]
    pub command: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Environment.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Retry `oom` with more memory.
    #[serde(default)]
    pub adaptive_resource_allocation: bool,
    /// Attempts for retriable failures.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// Retry non-zero exits too.
    #[serde(default)]
    pub retry_on_app_exit: bool,
    /// Retry rules (AWS Batch's `retryStrategy`, whose camelCase spelling
    /// is accepted too); its `attempts` wins over `max_attempts`. An empty
    /// strategy is stored as none.
    #[serde(default, alias = "retryStrategy")]
    pub retry_strategy: Option<RetryStrategy>,
    /// The owner to record (the HTTP layer sets the caller's identity).
    #[serde(default)]
    pub owner: String,
    /// Upload the output of successful runs only.
    #[serde(default)]
    pub skip_failed_output: bool,
}

impl NewDefinition {
    /// A definition with just alias, image and command.
    pub fn new(alias: impl Into<String>, image: impl Into<String>) -> Self {
        NewDefinition {
            alias: alias.into(),
            image: image.into(),
            ..Default::default()
        }
    }

    /// Sets the command.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Turns the body into a stored definition with a fresh id.
    pub fn into_definition(self) -> Definition {
        let t = now();
        Definition {
            definition_id: new_id(),
            alias: self.alias,
            group_name: self.group_name,
            image: self.image,
            command: self.command,
            memory: self.memory,
            cpu: self.cpu,
            gpu: self.gpu,
            env: self.env,
            tags: self.tags,
            ports: self.ports,
            adaptive_resource_allocation: self.adaptive_resource_allocation,
            max_attempts: self.max_attempts,
            retry_on_app_exit: self.retry_on_app_exit,
            retry_strategy: self.retry_strategy.filter(|s| !s.is_empty()),
            owner: self.owner,
            skip_failed_output: self.skip_failed_output,
            created_at: t,
            updated_at: t,
        }
    }
}

/// A partial update of a definition: present fields replace, absent fields
/// stay. The alias cannot change (it names the definition in URLs).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DefinitionUpdate {
    /// New group.
    #[serde(default)]
    pub group_name: Option<String>,
    /// New image.
    #[serde(default)]
    pub image: Option<String>,
    /// New command.
    #[serde(default)]
    pub command: Option<String>,
    /// New memory.
    #[serde(default)]
    pub memory: Option<i64>,
    /// New CPU.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// New GPU count.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// New environment (replaces the whole list).
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    /// New tags (replace the whole list).
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// New ports.
    #[serde(default)]
    pub ports: Option<Vec<u16>>,
    /// New adaptive flag.
    #[serde(default)]
    pub adaptive_resource_allocation: Option<bool>,
    /// New attempt limit.
    #[serde(default)]
    pub max_attempts: Option<u32>,
    /// New app-exit retry flag.
    #[serde(default)]
    pub retry_on_app_exit: Option<bool>,
    /// New retry rules, replacing the old ones whole; an empty strategy
    /// (`{}`: no `attempts`, no rules) clears them; absent (or `null`, which
    /// the HTTP API treats as absent) keeps them. `retryStrategy` is
    /// accepted too.
    #[serde(
        default,
        alias = "retryStrategy",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_strategy: Option<RetryStrategy>,
    /// Upload the output of successful runs only.
    #[serde(default)]
    pub skip_failed_output: Option<bool>,
}

impl DefinitionUpdate {
    /// Applies the update to `def`, bumping `updated_at`.
    pub fn apply(self, def: &mut Definition) {
        if let Some(v) = self.group_name {
            def.group_name = v;
        }
        if let Some(v) = self.image {
            def.image = v;
        }
        if let Some(v) = self.command {
            def.command = Some(v);
        }
        if let Some(v) = self.memory {
            def.memory = Some(v);
        }
        if let Some(v) = self.cpu {
            def.cpu = Some(v);
        }
        if let Some(v) = self.gpu {
            def.gpu = Some(v);
        }
        if let Some(v) = self.env {
            def.env = v;
        }
        if let Some(v) = self.tags {
            def.tags = v;
        }
        if let Some(v) = self.ports {
            def.ports = v;
        }
        if let Some(v) = self.adaptive_resource_allocation {
            def.adaptive_resource_allocation = v;
        }
        if let Some(v) = self.max_attempts {
            def.max_attempts = Some(v);
        }
        if let Some(v) = self.retry_on_app_exit {
            def.retry_on_app_exit = v;
        }
        if let Some(v) = self.retry_strategy {
            def.retry_strategy = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = self.skip_failed_output {
            def.skip_failed_output = v;
        }
        def.updated_at = now();
    }
}

/// One execution of a definition on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    /// Opaque id (UUID v7); kept across retries.
    pub run_id: String,
    /// The definition it runs.
    pub definition_id: String,
    /// The definition's alias.
    pub alias: String,
    /// The definition's group.
    #[serde(default)]
    pub group_name: String,
    /// Image.
    pub image: String,
    /// Cluster (and queue) name.
    pub cluster: String,
    /// Engine name (`local`, `ecs`, `eks`, ...).
    pub engine: String,
    /// Current status.
    pub status: RunStatus,
    /// Exit code once known.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Why it stopped, for people.
    #[serde(default)]
    pub exit_reason: Option<String>,
    /// When this attempt was queued.
    #[serde(default)]
    pub queued_at: Option<DateTime<Utc>>,
    /// When this attempt started running.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped.
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Full environment, injected `FLOTILLA_*` variables included.
    #[serde(default)]
    pub env: Vec<EnvVar>,
    /// Command.
    #[serde(default)]
    pub command: Option<String>,
    /// Memory in MiB.
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Owner, from `run_tags.owner_id`.
    #[serde(default)]
    pub owner: String,
    /// Run tags.
    #[serde(default)]
    pub run_tags: RunTags,
    /// Attempt number, 1-based.
    pub attempt: u32,
    /// Attempts allowed for retriable failures.
    pub max_attempts: u32,
    /// The engine's handle: task ARN, Job name, pid.
    #[serde(default)]
    pub engine_ref: Option<String>,
    /// Where it runs.
    #[serde(default)]
    pub instance: Option<Instance>,
    /// Caller's key: executing twice with one key returns the first run.
    #[serde(default)]
    pub idempotence_key: Option<String>,
    /// Free labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Deadline in seconds, enforced by the engine (`timeout`).
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// Failure category of the last failed attempt.
    #[serde(default)]
    pub failure: Option<FailureCategory>,
    /// Free description.
    #[serde(default)]
    pub description: Option<String>,
    /// Retry `oom` with more memory (from the definition).
    #[serde(default)]
    pub adaptive_resource_allocation: bool,
    /// Retry `app_exit` too (from the definition).
    #[serde(default)]
    pub retry_on_app_exit: bool,
    /// The definition's retry rules as they were at execute: editing the
    /// definition later does not change how this run is retried. Absent in
    /// runs stored before retry rules existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<RetryStrategy>,
    /// Admission priority within its owner's runs on its cluster: higher
    /// first, default 0. It never lets one owner pass another (fairness
    /// across owners comes first); see [`Capacity`].
    #[serde(default)]
    pub priority: i32,
    /// The template version and payload the run was made from; `None` for
    /// a definition's run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateRun>,
    /// The input zip, in a configured artifact store: unpacked where the
    /// job sees it (`/input`, `FLOTILLA_INPUT_DIR`) before it starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_url: Option<String>,
    /// The zip of what the last attempt left in `/output`, once uploaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Upload the output of successful attempts only (from the definition).
    #[serde(default)]
    pub skip_failed_output: bool,
    /// Why a QUEUED run is held back, computed on read from this replica's
    /// admission state (never stored).
    #[serde(skip)]
    pub waiting: Option<Waiting>,
    /// Compare-and-set version, bumped by the store on every update.
    #[serde(default)]
    pub version: u64,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// Why a QUEUED run has not been submitted yet.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiting {
    /// 1-based place in its cluster's admission order (1: admitted next).
    pub position: usize,
    /// For people, e.g. "waiting for capacity: 2 of 2 runs active on
    /// cluster default".
    pub reason: String,
}

/// Attempts a run gets when neither its definition nor the service says.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Run {
    /// A new QUEUED first attempt of `definition` on `cluster`, for `engine`
    /// and `owner`: a fresh id, queued now, with the definition's image,
    /// command, resources and retry settings, and no environment yet (the
    /// service merges and injects it on execute).
    pub fn queued(
        definition: &Definition,
        cluster: impl Into<String>,
        engine: impl Into<String>,
        owner: impl Into<String>,
    ) -> Run {
        let t = now();
        let owner = owner.into();
        Run {
            run_id: new_id(),
            definition_id: definition.definition_id.clone(),
            alias: definition.alias.clone(),
            group_name: definition.group_name.clone(),
            image: definition.image.clone(),
            cluster: cluster.into(),
            engine: engine.into(),
            status: RunStatus::Queued,
            exit_code: None,
            exit_reason: None,
            queued_at: Some(t),
            started_at: None,
            finished_at: None,
            env: Vec::new(),
            command: definition.command.clone(),
            memory: definition.memory,
            cpu: definition.cpu,
            gpu: definition.gpu,
            owner: owner.clone(),
            run_tags: RunTags {
                owner_id: owner,
                ..Default::default()
            },
            attempt: 1,
            max_attempts: definition.attempts_or(DEFAULT_MAX_ATTEMPTS),
            engine_ref: None,
            instance: None,
            idempotence_key: None,
            labels: BTreeMap::new(),
            active_deadline_seconds: None,
            failure: None,
            description: None,
            adaptive_resource_allocation: definition.adaptive_resource_allocation,
            retry_on_app_exit: definition.retry_on_app_exit,
            retry_strategy: definition.retry_strategy.clone(),
            priority: 0,
            template: None,
            input_url: None,
            output_url: None,
            skip_failed_output: definition.skip_failed_output,
            waiting: None,
            version: 0,
            updated_at: t,
        }
    }

    /// The value of environment variable `name`, if set.
    pub fn env_value(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .find(|e| e.name == name)
            .map(|e| e.value.as_str())
    }

    /// Whether the run stopped successfully.
    pub fn succeeded(&self) -> bool {
        self.status == RunStatus::Stopped && self.exit_code == Some(0)
    }

    /// A definition rebuilt from the run's snapshot, for engines when the
    /// definition was deleted after the run was queued.
    pub fn snapshot_definition(&self) -> Definition {
        Definition {
            definition_id: self.definition_id.clone(),
            alias: self.alias.clone(),
            group_name: self.group_name.clone(),
            image: self.image.clone(),
            command: self.command.clone(),
            memory: self.memory,
            cpu: self.cpu,
            gpu: self.gpu,
            env: Vec::new(),
            tags: Vec::new(),
            ports: Vec::new(),
            adaptive_resource_allocation: self.adaptive_resource_allocation,
            max_attempts: Some(self.max_attempts),
            retry_on_app_exit: self.retry_on_app_exit,
            retry_strategy: self.retry_strategy.clone(),
            owner: String::new(),
            skip_failed_output: self.skip_failed_output,
            created_at: self.updated_at,
            updated_at: self.updated_at,
        }
    }
}

/// One status change of a run: its timeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunEvent {
    /// The run.
    pub run_id: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Previous status; `None` for creation.
    pub from: Option<RunStatus>,
    /// New status.
    pub to: RunStatus,
    /// Attempt the change belongs to.
    pub attempt: u32,
    /// Why, for people.
    #[serde(default)]
    pub reason: Option<String>,
}

impl RunEvent {
    /// The first event of a run: its creation in its current status.
    pub fn created(run: &Run) -> RunEvent {
        RunEvent {
            run_id: run.run_id.clone(),
            at: run.updated_at,
            from: None,
            to: run.status,
            attempt: run.attempt,
            reason: None,
        }
    }
}

/// Whether a cluster takes runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ClusterStatus {
    /// Runs are queued and submitted.
    #[default]
    Active,
    /// Runs are accepted and wait in the queue.
    Maintenance,
    /// Runs are refused.
    Offline,
}

impl ClusterStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterStatus::Active => "active",
            ClusterStatus::Maintenance => "maintenance",
            ClusterStatus::Offline => "offline",
        }
    }
}

impl FromStr for ClusterStatus {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "active" => Ok(ClusterStatus::Active),
            "maintenance" => Ok(ClusterStatus::Maintenance),
            "offline" => Ok(ClusterStatus::Offline),
            other => Err(Error::invalid(format!(
                "status: unknown cluster status '{other}' (expected active, maintenance or offline)"
            ))),
        }
    }
}

/// A cluster runs can be sent to; each has its own queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// Name, also the queue name and the id in URLs.
    pub name: String,
    /// Whether it takes runs.
    #[serde(default)]
    pub status: ClusterStatus,
    /// Why it is in that status.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Tiers allowed on it; empty means any.
    #[serde(default)]
    pub allowed_tiers: Vec<String>,
    /// Engine that runs its work; the service default when absent.
    #[serde(default)]
    pub engine: Option<String>,
    /// Engines an execute request may pick by its `engine` field; empty
    /// means only the cluster's own engine. See
    /// [`Flotilla::execute_as`](crate::Flotilla::execute_as) for the rule.
    #[serde(default)]
    pub engines: Vec<String>,
    /// What the cluster holds at once. An unset dimension (or `None`) comes
    /// from `ServiceConfig::capacities` for this name, then from its
    /// engine's default ([`crate::Engine::default_capacity`]: the host's
    /// cores and memory for the local engine), else is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity: Option<Capacity>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// What a cluster holds at once: the sums of its PENDING and RUNNING runs'
/// `cpu`, `memory` and `gpu` (unset on a run counts 0) and their number.
/// An unset dimension is not limited.
///
/// The submit worker admits a QUEUED run only when it fits beside the
/// cluster's active runs; otherwise the run waits, in memory, until a run
/// on the cluster stops. A run larger than the capacity in some dimension
/// counts as the whole of it there: it is admitted alone, never refused.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// Millicores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<i64>,
    /// Runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<u32>,
}

impl Capacity {
    /// A capacity of `runs` runs at once.
    pub fn runs(runs: u32) -> Self {
        Capacity {
            runs: Some(runs),
            ..Capacity::default()
        }
    }

    /// This machine: its cores (`available_parallelism`) × 1000 millicores
    /// and its memory (`MemTotal` of `/proc/meminfo`, unset where that
    /// cannot be read); gpu and runs unset.
    pub fn host() -> Self {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            })
            .map(|kib| kib / 1024);
        Capacity {
            cpu: Some(
                i64::try_from(cores)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
            ),
            memory,
            gpu: None,
            runs: None,
        }
    }

    /// Each dimension of `self`, or `fallback`'s where `self` has none.
    pub fn or(self, fallback: Option<Capacity>) -> Capacity {
        let f = fallback.unwrap_or_default();
        Capacity {
            cpu: self.cpu.or(f.cpu),
            memory: self.memory.or(f.memory),
            gpu: self.gpu.or(f.gpu),
            runs: self.runs.or(f.runs),
        }
    }
}

impl Cluster {
    /// An active cluster named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Cluster {
            name: name.into(),
            status: ClusterStatus::Active,
            status_reason: None,
            allowed_tiers: Vec::new(),
            engine: None,
            engines: Vec::new(),
            capacity: None,
            updated_at: now(),
        }
    }
}

/// The body of an execute.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExecuteRequest {
    /// Cluster; the service default when absent.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Environment added to (and overriding) the definition's.
    #[serde(default)]
    pub env: Option<Vec<EnvVar>>,
    /// Tags; `owner_id` is required.
    #[serde(default)]
    pub run_tags: Option<RunTags>,
    /// Command override.
    #[serde(default)]
    pub command: Option<String>,
    /// Memory override (MiB).
    #[serde(default)]
    pub memory: Option<i64>,
    /// CPU override (millicores).
    #[serde(default)]
    pub cpu: Option<i64>,
    /// GPU override.
    #[serde(default)]
    pub gpu: Option<i64>,
    /// Engine; the cluster's or service default when absent.
    #[serde(default)]
    pub engine: Option<String>,
    /// Idempotence key: a second execute with it returns the first run.
    #[serde(default)]
    pub idempotence_key: Option<String>,
    /// Labels.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// Deadline in seconds.
    #[serde(default)]
    pub active_deadline_seconds: Option<i64>,
    /// Description.
    #[serde(default)]
    pub description: Option<String>,
    /// Admission priority among the owner's runs on the cluster: higher
    /// first, default 0 (see [`Run::priority`]).
    #[serde(default)]
    pub priority: Option<i32>,
    /// An input zip, base64: checked and stored in the artifact store on
    /// execute (bounded by the body limit and the zip limits).
    #[serde(default)]
    pub input_zip: Option<String>,
    /// An input zip already in a configured artifact store.
    #[serde(default)]
    pub input_url: Option<String>,
}

impl ExecuteRequest {
    /// A request owned by `owner` on the default cluster.
    pub fn owned_by(owner: impl Into<String>) -> Self {
        ExecuteRequest {
            run_tags: Some(RunTags {
                owner_id: owner.into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.env
            .get_or_insert_with(Vec::new)
            .push(EnvVar::new(name, value));
        self
    }

    /// Sets the cluster.
    pub fn cluster(mut self, cluster: impl Into<String>) -> Self {
        self.cluster = Some(cluster.into());
        self
    }

    /// Sets the command override.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }
}

/// An external status report (`PUT /{run_id}/status`).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// New status; must be a legal transition.
    pub status: RunStatus,
    /// Exit code, for STOPPED.
    #[serde(default)]
    pub exit_code: Option<i64>,
    /// Reason.
    #[serde(default)]
    pub exit_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for st in RunStatus::ALL {
            let json = serde_json::to_string(&st).expect("serialize");
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(st.as_str().parse::<RunStatus>().expect("parse"), st);
        }
        assert!("DONE".parse::<RunStatus>().is_err());
        assert_eq!(
            "running".parse::<RunStatus>().expect("parse"),
            RunStatus::Running
        );
    }

    #[test]
    fn failure_names_round_trip() {
        for c in FailureCategory::ALL {
            let json = serde_json::to_string(&c).expect("serialize");
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(c.as_str().parse::<FailureCategory>().expect("parse"), c);
        }
    }

    #[test]
    fn flotilla_os_definition_body_parses() {
        let body = r#"{
            "alias": "hello-flotilla",
            "group_name": "examples",
            "image": "ubuntu:latest",
            "memory": 512,
            "env": [{"name": "USERNAME", "value": "_fill_me_in_"}],
            "command": "echo \"hello ${USERNAME}\"",
            "tags": ["example"]
        }"#;
        let d: NewDefinition = serde_json::from_str(body).expect("parse");
        assert_eq!(d.alias, "hello-flotilla");
        assert_eq!(d.env[0].name, "USERNAME");
        let def = d.into_definition();
        assert_eq!(def.memory, Some(512));
        assert_eq!(def.definition_id.len(), 36);
    }

    #[test]
    fn documents_stored_before_retry_rules_still_load() {
        let def = NewDefinition::new("old", "img").into_definition();
        let mut json = serde_json::to_value(&def).expect("serialize");
        assert!(
            json.get("retry_strategy").is_none(),
            "no rules, no key: {json}"
        );
        json.as_object_mut()
            .expect("object")
            .remove("retry_strategy");
        let back: Definition = serde_json::from_value(json).expect("old definition");
        assert_eq!(back.retry_strategy, None);
        let run = Run::queued(&def, "default", "local", "me");
        let json = serde_json::to_value(&run).expect("serialize");
        assert!(json.get("retry_strategy").is_none(), "{json}");
        let back: Run = serde_json::from_value(json).expect("old run");
        assert_eq!(back.retry_strategy, None);
    }

    #[test]
    fn a_run_snapshots_the_rules_and_attempts_win_over_max_attempts() {
        let mut def = NewDefinition::new("a", "img").into_definition();
        assert_eq!(def.attempts_or(3), 3);
        def.max_attempts = Some(7);
        assert_eq!(def.attempts_or(3), 7);
        def.retry_strategy = Some(RetryStrategy {
            attempts: Some(2),
            evaluate_on_exit: vec![EvaluateOnExit::new(RetryAction::Exit).on_exit_code("1")],
        });
        assert_eq!(def.attempts_or(3), 2, "retry_strategy.attempts wins");
        let run = Run::queued(&def, "default", "local", "me");
        assert_eq!(run.max_attempts, 2);
        assert_eq!(run.retry_strategy, def.retry_strategy);
        assert_eq!(run.snapshot_definition().retry_strategy, def.retry_strategy);
    }

    #[test]
    fn an_update_keeps_clears_or_replaces_the_rules() {
        let mut def = NewDefinition::new("a", "img").into_definition();
        let rules = RetryStrategy {
            attempts: Some(4),
            evaluate_on_exit: vec![EvaluateOnExit::new(RetryAction::Retry).on_reason("oom")],
        };
        let set: DefinitionUpdate = serde_json::from_value(serde_json::json!({
            "retryStrategy": {"attempts": 4, "evaluateOnExit": [{"onReason": "oom", "action": "RETRY"}]}
        }))
        .expect("camelCase update");
        set.apply(&mut def);
        assert_eq!(def.retry_strategy.as_ref(), Some(&rules), "replaced");
        for keep in [
            serde_json::json!({"image": "other"}),
            serde_json::json!({"retry_strategy": null}),
        ] {
            let keep: DefinitionUpdate = serde_json::from_value(keep).expect("update");
            assert_eq!(keep.retry_strategy, None);
            keep.apply(&mut def);
            assert_eq!(def.retry_strategy.as_ref(), Some(&rules), "absent keeps");
        }
        let clear: DefinitionUpdate =
            serde_json::from_value(serde_json::json!({"retry_strategy": {}})).expect("update");
        clear.apply(&mut def);
        assert_eq!(def.retry_strategy, None, "an empty strategy clears");
        let mut new = NewDefinition::new("b", "img");
        new.retry_strategy = Some(RetryStrategy::default());
        assert_eq!(
            new.into_definition().retry_strategy,
            None,
            "and is stored as none"
        );
    }

    #[test]
    fn ids_are_time_ordered() {
        let a = new_id();
        let b = new_id();
        assert!(a < b, "{a} < {b}");
    }
}
