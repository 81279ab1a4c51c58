//! The run as the API serves it: flotilla-os's `Run` JSON (its
//! `state/models.go` marshalling) plus flotilla's own fields.
//!
//! flotilla-os omits `exit_code`, the times and the optional numbers while
//! they are unknown (never `null`), and always emits `instance`,
//! `pod_events`, `cloudtrail_notifications` (`{"Records": []}`) and
//! `execution_request_custom`; clients read them without checks, so this
//! body does the same.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

/// One environment variable.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EnvBody {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

impl From<&flotilla::EnvVar> for EnvBody {
    fn from(e: &flotilla::EnvVar) -> Self {
        EnvBody {
            name: e.name.clone(),
            value: e.value.clone(),
        }
    }
}

/// Where the run executes (empty strings until an engine says).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct InstanceBody {
    /// EC2 instance id, node name or local host name.
    pub instance_id: String,
    /// Its DNS name.
    pub dns_name: String,
}

/// A Kubernetes-style event of the run (flotilla-os `PodEvent`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PodEventBody {
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub timestamp: DateTime<Utc>,
    /// `Normal` or `Warning`.
    pub event_type: String,
    /// Short reason (here: the status the run moved to).
    pub reason: String,
    /// The object it concerns (the engine's handle, else the run id).
    pub source_object: String,
    /// Text for people.
    pub message: String,
}

/// AWS CloudTrail records attached to a run (flotilla-os collects them
/// from an SQS feed; flotilla records none, so the list is empty).
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct CloudTrailNotificationsBody {
    /// The records.
    #[serde(rename = "Records")]
    pub records: Vec<CloudTrailRecordBody>,
}

/// One CloudTrail record.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CloudTrailRecordBody {
    /// Who acted (`{"arn": ...}`).
    #[serde(rename = "userIdentity")]
    pub user_identity: BTreeMap<String, String>,
    /// The AWS service.
    #[serde(rename = "eventSource")]
    pub event_source: String,
    /// The API call.
    #[serde(rename = "eventName")]
    pub event_name: String,
}

/// Who owns the run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunTagsBody {
    /// Owner id.
    pub owner_id: String,
    /// Owner e-mail, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_email: Option<String>,
    /// Team, if given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_name: Option<String>,
}

/// A run.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunBody {
    /// Run id (kept across retries).
    pub run_id: String,
    /// The definition it runs.
    pub definition_id: String,
    /// The definition's alias.
    pub alias: String,
    /// The definition's group.
    pub group_name: String,
    /// Image.
    pub image: String,
    /// Cluster.
    pub cluster: String,
    /// Cluster again, under the name the history filter uses.
    pub cluster_name: String,
    /// Engine (`local`, `ecs`, `eks`, ...).
    pub engine: String,
    /// QUEUED, PENDING, RUNNING, STOPPED or NEEDS_RETRY.
    pub status: String,
    /// Exit code, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it stopped, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Failure category of the last failed attempt (`oom`, `app_exit`, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// When this attempt was queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub queued_at: Option<DateTime<Utc>>,
    /// When it started running.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
    /// When it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Environment, injected `FLOTILLA_*` variables included.
    pub env: Vec<EnvBody>,
    /// Command.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Memory in MiB.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    /// CPU in millicores.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    /// GPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gpu: Option<i64>,
    /// Owner.
    pub owner: String,
    /// Owner under flotilla-os's name.
    pub user: String,
    /// Run tags.
    pub run_tags: RunTagsBody,
    /// Attempt, 1-based.
    pub attempt: u32,
    /// Attempt under flotilla-os's name.
    pub attempt_count: u32,
    /// Attempts allowed for retriable failures.
    pub max_attempts: u32,
    /// The engine's handle (task ARN, Job name, pid), once submitted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_ref: Option<String>,
    /// The engine's handle under flotilla-os's name (empty until submitted).
    pub task_arn: String,
    /// Where it runs.
    pub instance: InstanceBody,
    /// Events of the run, as flotilla-os's pod events (in `GET
    /// /{run_id}/events`; empty here, as flotilla-os's list replies).
    pub pod_events: Vec<PodEventBody>,
    /// CloudTrail records (none).
    pub cloudtrail_notifications: CloudTrailNotificationsBody,
    /// What was executed: the definition id, or the template version's id.
    pub executable_id: String,
    /// `task_definition` or `template`.
    pub executable_type: String,
    /// Custom parts of the execute request: `{}` for a definition's run,
    /// `{"template_payload": {...}}` (merged over the defaults) for a
    /// template's.
    #[schema(value_type = Object)]
    pub execution_request_custom: serde_json::Map<String, serde_json::Value>,
    /// Caller's idempotence key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotence_key: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Deadline in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_deadline_seconds: Option<i64>,
    /// Description (the alias when none was given, as flotilla-os).
    pub description: String,
    /// Whether an `oom` retry gets more memory.
    pub adaptive_resource_allocation: bool,
    /// Whether `app_exit` is retried too.
    pub retry_on_app_exit: bool,
    /// The definition's retry rules as they were at execute (later edits of
    /// the definition do not change them); absent when none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_strategy: Option<flotilla::RetryStrategy>,
    /// The input zip (in a configured artifact store), when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_url: Option<String>,
    /// The output zip of the last attempt that uploaded one; download it
    /// from `GET /api/v6/{run_id}/output`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_url: Option<String>,
    /// Admission priority among its owner's runs on the cluster (higher
    /// first; owners are served fairly before priority counts).
    pub priority: i32,
    /// While QUEUED and held back by admission: its place in the cluster's
    /// admission order and why it waits (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting: Option<flotilla::Waiting>,
    /// Compare-and-set version.
    pub version: u64,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&flotilla::Run> for RunBody {
    fn from(run: &flotilla::Run) -> Self {
        RunBody {
            run_id: run.run_id.clone(),
            definition_id: run.definition_id.clone(),
            alias: run.alias.clone(),
            group_name: run.group_name.clone(),
            image: run.image.clone(),
            cluster: run.cluster.clone(),
            cluster_name: run.cluster.clone(),
            engine: run.engine.clone(),
            status: run.status.as_str().to_string(),
            exit_code: run.exit_code,
            exit_reason: run.exit_reason.clone(),
            failure: run.failure.map(|f| f.as_str().to_string()),
            queued_at: run.queued_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            env: run.env.iter().map(EnvBody::from).collect(),
            command: run.command.clone(),
            memory: run.memory,
            cpu: run.cpu,
            gpu: run.gpu,
            owner: run.owner.clone(),
            user: run.owner.clone(),
            run_tags: RunTagsBody {
                owner_id: run.run_tags.owner_id.clone(),
                owner_email: run.run_tags.owner_email.clone(),
                team_name: run.run_tags.team_name.clone(),
            },
            attempt: run.attempt,
            attempt_count: run.attempt,
            max_attempts: run.max_attempts,
            engine_ref: run.engine_ref.clone(),
            task_arn: run.engine_ref.clone().unwrap_or_default(),
            instance: run
                .instance
                .as_ref()
                .map(|i| InstanceBody {
                    instance_id: i.instance_id.clone(),
                    dns_name: i.dns_name.clone(),
                })
                .unwrap_or_default(),
            pod_events: Vec::new(),
            cloudtrail_notifications: CloudTrailNotificationsBody::default(),
            executable_id: run
                .template
                .as_ref()
                .map_or_else(|| run.definition_id.clone(), |t| t.template_id.clone()),
            executable_type: match run.template {
                Some(_) => flotilla::model::EXECUTABLE_TYPE_TEMPLATE.into(),
                None => "task_definition".into(),
            },
            execution_request_custom: run
                .template
                .as_ref()
                .map(|t| {
                    let mut custom = serde_json::Map::new();
                    custom.insert(
                        "template_payload".into(),
                        serde_json::Value::Object(t.payload.clone()),
                    );
                    custom
                })
                .unwrap_or_default(),
            idempotence_key: run.idempotence_key.clone(),
            labels: run.labels.clone(),
            active_deadline_seconds: run.active_deadline_seconds,
            description: run.description.clone().unwrap_or_else(|| run.alias.clone()),
            adaptive_resource_allocation: run.adaptive_resource_allocation,
            retry_on_app_exit: run.retry_on_app_exit,
            retry_strategy: run.retry_strategy.clone(),
            input_url: run.input_url.clone(),
            output_url: run.output_url.clone(),
            priority: run.priority,
            waiting: run.waiting.clone(),
            version: run.version,
            updated_at: run.updated_at,
        }
    }
}

impl PodEventBody {
    /// A status change of `run` in flotilla-os's pod-event shape.
    pub fn of_event(run: &flotilla::Run, e: &flotilla::RunEvent) -> Self {
        let warning = matches!(e.to, flotilla::RunStatus::NeedsRetry)
            || (e.to == flotilla::RunStatus::Stopped && run.exit_code.is_some_and(|c| c != 0));
        PodEventBody {
            timestamp: e.at,
            event_type: if warning { "Warning" } else { "Normal" }.into(),
            reason: e.to.as_str().to_string(),
            source_object: run.engine_ref.clone().unwrap_or_else(|| run.run_id.clone()),
            message: e.reason.clone().unwrap_or_else(|| match e.from {
                Some(from) => format!(
                    "{} → {} (attempt {})",
                    from.as_str(),
                    e.to.as_str(),
                    e.attempt
                ),
                None => format!("created {} (attempt {})", e.to.as_str(), e.attempt),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run() -> flotilla::Run {
        let def = flotilla::NewDefinition::new("a", "img")
            .command("echo hi")
            .into_definition();
        flotilla::Run::queued(&def, "default", "local", "ada")
    }

    #[test]
    fn unknown_numbers_and_times_are_left_out_and_the_flotilla_os_objects_are_always_there() {
        let v = serde_json::to_value(RunBody::from(&run())).expect("json");
        for absent in [
            "exit_code",
            "started_at",
            "finished_at",
            "memory",
            "cpu",
            "gpu",
        ] {
            assert!(v.get(absent).is_none(), "{absent} should be left out: {v}");
        }
        assert_eq!(
            v["instance"],
            serde_json::json!({"instance_id": "", "dns_name": ""})
        );
        assert_eq!(v["pod_events"], serde_json::json!([]));
        assert_eq!(
            v["cloudtrail_notifications"],
            serde_json::json!({"Records": []})
        );
        assert_eq!(v["user"], "ada");
        assert_eq!(v["description"], "a");
        assert_eq!(v["task_arn"], "");
        assert_eq!(v["status"], "QUEUED");
    }
}
