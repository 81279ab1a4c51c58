//! Push: ECS "Task State Change" events routed by an EventBridge rule to an
//! SQS status queue, consumed into the engine's event stream.

use std::collections::VecDeque;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use chrono::{DateTime, Utc};
use flotilla::{EngineEvent, Error, EventAck, Result, StatusUpdate, TaskState};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::artifacts::{ContainerEnd, OUTPUT_CONTAINER, apply_helper_ends, pushed_url};
use crate::classify::{StopFacts, classify_stop, task_state};
use flotilla_aws::{call_backoff, map_sdk_error};

/// Settings of the push path. When present in
/// [`crate::EcsSettings::events`], the engine installs (when `install`) an
/// EventBridge rule for "ECS Task State Change" events of its clusters
/// targeting the SQS queue `status_queue`, and `Engine::events` streams what
/// arrives there. Polling stays as the safety net.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventSettings {
    /// SQS queue the rule targets.
    pub status_queue: String,
    /// EventBridge rule name.
    pub rule_name: String,
    /// Event bus of the rule (`default`: where AWS services publish).
    pub event_bus: String,
    /// Create the queue, its policy, the rule and the target at start.
    pub install: bool,
    /// Long poll of the status queue, in seconds (1..=20).
    pub wait_seconds: u32,
    /// How long a received message stays hidden from other receivers
    /// before it is delivered again unless deleted (applied), in seconds
    /// (1..=43200). A receive whose answer never arrives (a replica killed
    /// or shut down mid-poll) hides its messages for this long: keep the
    /// service's `missing_grace` above `visibility_timeout + wait_seconds`,
    /// so an outcome ECS has already forgotten is still read from the
    /// queue before the run is declared lost.
    pub visibility_timeout: u32,
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            status_queue: "flotilla-ecs-status".into(),
            rule_name: "flotilla-ecs-task-state".into(),
            event_bus: "default".into(),
            install: true,
            wait_seconds: 20,
            visibility_timeout: 30,
        }
    }
}

impl EventSettings {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !ok(&self.status_queue, 80) || self.status_queue.contains('.') {
            return Err(Error::invalid(
                "events.status_queue: must be 1 to 80 of [A-Za-z0-9_-]",
            ));
        }
        if !ok(&self.rule_name, 64) {
            return Err(Error::invalid(
                "events.rule_name: must be 1 to 64 of [A-Za-z0-9._-]",
            ));
        }
        if self.event_bus.is_empty() {
            return Err(Error::invalid("events.event_bus: must not be empty"));
        }
        if !(1..=20).contains(&self.wait_seconds) {
            return Err(Error::invalid(
                "events.wait_seconds: must be between 1 and 20",
            ));
        }
        if !(1..=43_200).contains(&self.visibility_timeout) {
            return Err(Error::invalid(
                "events.visibility_timeout: must be between 1 and 43200",
            ));
        }
        Ok(())
    }
}

/// The status queue the engine consumes.
#[derive(Debug, Clone)]
pub(crate) struct EventRoute {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) wait_seconds: u32,
    pub(crate) visibility_timeout: u32,
    pub(crate) container_name: String,
}

/// Creates the status queue (with a policy letting EventBridge send to
/// it), the rule for "ECS Task State Change" events of `cluster_arns`
/// (every cluster when empty) and the rule's target.
pub(crate) async fn install(
    sqs: &aws_sdk_sqs::Client,
    eventbridge: &aws_sdk_eventbridge::Client,
    settings: &EventSettings,
    cluster_arns: &[String],
) -> Result<String> {
    let queue = sqs
        .create_queue()
        .queue_name(&settings.status_queue)
        .attributes(QueueAttributeName::MessageRetentionPeriod, "86400")
        .send()
        .await
        .map_err(|e| map_sdk_error("CreateQueue", e))?;
    let url = queue
        .queue_url()
        .ok_or_else(|| Error::internal("CreateQueue returned no URL"))?
        .to_string();
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| map_sdk_error("GetQueueAttributes", e))?;
    let queue_arn = attrs
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .ok_or_else(|| Error::internal("the status queue has no ARN"))?;
    let mut pattern = serde_json::json!({
        "source": ["aws.ecs"],
        "detail-type": ["ECS Task State Change"],
    });
    if !cluster_arns.is_empty() {
        pattern["detail"] = serde_json::json!({ "clusterArn": cluster_arns });
    }
    let rule = eventbridge
        .put_rule()
        .name(&settings.rule_name)
        .event_bus_name(&settings.event_bus)
        .event_pattern(pattern.to_string())
        .description("flotilla: ECS task state changes to the status queue")
        .send()
        .await
        .map_err(|e| map_sdk_error("PutRule", e))?;
    let policy = serde_json::json!({
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "flotilla-eventbridge",
            "Effect": "Allow",
            "Principal": {"Service": "events.amazonaws.com"},
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": {"ArnEquals": {"aws:SourceArn": rule.rule_arn().unwrap_or("*")}},
        }],
    });
    sqs.set_queue_attributes()
        .queue_url(&url)
        .attributes(QueueAttributeName::Policy, policy.to_string())
        .send()
        .await
        .map_err(|e| map_sdk_error("SetQueueAttributes", e))?;
    let target = Target::builder()
        .id("flotilla-status-queue")
        .arn(&queue_arn)
        .build()
        .map_err(|e| Error::internal(format!("target: {e}")))?;
    let out = eventbridge
        .put_targets()
        .rule(&settings.rule_name)
        .event_bus_name(&settings.event_bus)
        .targets(target)
        .send()
        .await
        .map_err(|e| map_sdk_error("PutTargets", e))?;
    if out.failed_entry_count() > 0 {
        return Err(Error::unavailable(format!(
            "PutTargets: {} targets failed",
            out.failed_entry_count()
        )));
    }
    Ok(url)
}

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type", default)]
    detail_type: String,
    #[serde(default)]
    detail: Option<Detail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Detail {
    last_status: String,
    started_by: String,
    stop_code: Option<String>,
    stopped_reason: Option<String>,
    started_at: Option<String>,
    stopped_at: Option<String>,
    overrides: Overrides,
    containers: Vec<ContainerDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct Overrides {
    container_overrides: Vec<ContainerOverrideDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ContainerOverrideDetail {
    name: String,
    command: Vec<String>,
    environment: Vec<NameValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NameValue {
    name: String,
    value: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ContainerDetail {
    name: String,
    exit_code: Option<i64>,
    reason: Option<String>,
}

fn time(s: &Option<String>) -> Option<DateTime<Utc>> {
    s.as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// The update an EventBridge message carries, or `None` when it is not an
/// ECS task state change of a flotilla task.
pub(crate) fn parse_event(body: &str, container_name: &str) -> Option<StatusUpdate> {
    let env: Envelope = serde_json::from_str(body).ok()?;
    if env.detail_type != "ECS Task State Change" {
        return None;
    }
    let d = env.detail?;
    let attempt: u32 = d
        .started_by
        .strip_prefix(crate::engine::STARTED_BY)?
        .strip_prefix('-')?
        .parse()
        .ok()?;
    let run_id = d
        .overrides
        .container_overrides
        .iter()
        .flat_map(|c| c.environment.iter())
        .find(|e| e.name == flotilla::service::ENV_RUN_ID)
        .map(|e| e.value.clone())?;
    let state = task_state(&d.last_status);
    let mut u = StatusUpdate::new(run_id, attempt, state);
    u.started_at = time(&d.started_at);
    if state == TaskState::Stopped {
        let container = d
            .containers
            .iter()
            .find(|c| c.name == container_name)
            .or_else(|| d.containers.first());
        let facts = StopFacts {
            stop_code: d.stop_code.as_deref(),
            stopped_reason: d.stopped_reason.as_deref(),
            container_reason: container.and_then(|c| c.reason.as_deref()),
            exit_code: container.and_then(|c| c.exit_code),
        };
        let (failure, reason) = classify_stop(&facts);
        u.exit_code = facts.exit_code;
        u.failure = failure;
        u.reason = (!reason.is_empty()).then_some(reason);
        u.finished_at = time(&d.stopped_at);
        let ends: Vec<ContainerEnd<'_>> = d
            .containers
            .iter()
            .map(|c| ContainerEnd {
                name: &c.name,
                exit_code: c.exit_code,
                reason: c.reason.as_deref(),
            })
            .collect();
        let pushed = d
            .overrides
            .container_overrides
            .iter()
            .find(|o| o.name == OUTPUT_CONTAINER)
            .and_then(|o| pushed_url(&o.command));
        apply_helper_ends(&mut u, &ends, pushed);
    }
    Some(u)
}

/// The most receipt handles one DeleteMessageBatch takes.
const DELETE_BATCH: usize = 10;

/// The pull side of the status queue: messages are received only while the
/// stream is polled (by the status worker's lease holder), and each one is
/// deleted only once its update is applied.
struct Pull {
    route: EventRoute,
    /// Received, not yet handed out.
    buffer: VecDeque<EngineEvent>,
    /// Consecutive receive failures.
    failures: u32,
    /// Receipt handles to delete (applied updates, foreign messages).
    delete: mpsc::UnboundedSender<String>,
}

impl Pull {
    /// One ReceiveMessage (a long poll): flotilla's task changes go to the
    /// buffer as durable events whose ack deletes the message; anything
    /// else is deleted at once.
    async fn receive(&mut self) {
        let received = self
            .route
            .sqs
            .receive_message()
            .queue_url(&self.route.queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(self.route.wait_seconds as i32)
            .visibility_timeout(self.route.visibility_timeout as i32)
            .send()
            .await;
        let out = match received {
            Ok(o) => {
                self.failures = 0;
                o
            }
            Err(e) => {
                self.failures += 1;
                tracing::warn!(error = %map_sdk_error("ReceiveMessage", e), "status queue receive failed");
                tokio::time::sleep(call_backoff(self.failures)).await;
                return;
            }
        };
        for m in out.messages() {
            let Some(handle) = m.receipt_handle().map(str::to_string) else {
                continue;
            };
            match m
                .body()
                .and_then(|b| parse_event(b, &self.route.container_name))
            {
                Some(update) => {
                    let delete = self.delete.clone();
                    let ack = EventAck::new(move || {
                        // Nobody to delete it only when the stream is gone:
                        // then it is delivered again, and updates are
                        // idempotent.
                        let _ = delete.send(handle);
                    });
                    self.buffer.push_back(EngineEvent::Durable { update, ack });
                }
                None => {
                    tracing::debug!(
                        "status queue: a message that is not a flotilla task change was dropped"
                    );
                    let _ = self.delete.send(handle);
                }
            }
        }
    }
}

/// Streams the updates arriving on the status queue. Nothing is received
/// while the stream is not polled (a replica that does not hold the status
/// lease leaves the queue to the one that does), and a message is deleted
/// only once the service acknowledges its update as applied
/// ([`EngineEvent::Durable`]): a message received but never applied (the
/// receiver lost its lease, crashed, or failed to store it) becomes visible
/// again after the queue's visibility timeout and is delivered again.
pub(crate) fn stream(route: EventRoute) -> Option<BoxStream<'static, EngineEvent>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (delete, deletions) = mpsc::unbounded_channel::<String>();
    handle.spawn(delete_applied(route.clone(), deletions));
    let pull = Pull {
        route,
        buffer: VecDeque::new(),
        failures: 0,
        delete,
    };
    Some(Box::pin(futures::stream::unfold(
        pull,
        |mut pull| async move {
            loop {
                if let Some(ev) = pull.buffer.pop_front() {
                    return Some((ev, pull));
                }
                pull.receive().await;
            }
        },
    )))
}

/// Deletes the messages whose receipt handles arrive, up to ten per call;
/// ends once the stream and every unacknowledged event are gone.
async fn delete_applied(route: EventRoute, mut handles: mpsc::UnboundedReceiver<String>) {
    while let Some(first) = handles.recv().await {
        let mut batch = vec![first];
        while batch.len() < DELETE_BATCH {
            match handles.try_recv() {
                Ok(h) => batch.push(h),
                Err(_) => break,
            }
        }
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .build()
                    .ok()
            })
            .collect();
        match route
            .sqs
            .delete_message_batch()
            .queue_url(&route.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => {
                for f in out.failed() {
                    tracing::warn!(id = %f.id(), code = %f.code(), "status queue delete failed; the message comes again (updates are idempotent)");
                }
            }
            Err(e) => {
                // Delivered again later: updates are idempotent.
                tracing::warn!(error = %map_sdk_error("DeleteMessageBatch", e), "status queue delete failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_of_an_artifacts_task_carries_the_upload() {
        let body = |push_exit: i64| {
            format!(
                r#"{{"detail-type":"ECS Task State Change","detail":{{"lastStatus":"STOPPED",
                "startedBy":"flotilla-1","stopCode":"EssentialContainerExited",
                "overrides":{{"containerOverrides":[
                  {{"name":"main","environment":[{{"name":"FLOTILLA_RUN_ID","value":"run-1"}}]}},
                  {{"name":"flotilla-output","command":["artifacts","push","/output","s3://b/runs/run-1/attempt-1/output.zip"]}}]}},
                "containers":[{{"name":"flotilla-input","exitCode":0}},{{"name":"main","exitCode":0}},
                  {{"name":"flotilla-output","exitCode":{push_exit}}}]}}}}"#
            )
        };
        let u = parse_event(&body(0), "main").expect("an update");
        assert_eq!(
            (u.exit_code, u.failure, u.output_url.as_deref()),
            (
                Some(0),
                None,
                Some("s3://b/runs/run-1/attempt-1/output.zip")
            )
        );
        let u = parse_event(&body(2), "main").expect("an update");
        assert_eq!(
            (u.failure, u.output_url),
            (Some(flotilla::FailureCategory::ArtifactUpload), None)
        );
    }

    #[test]
    fn ecs_events_parse() {
        let body = r#"{"version":"0","detail-type":"ECS Task State Change","source":"aws.ecs",
          "detail":{"taskArn":"arn:aws:ecs:us-east-1:1:task/c/abc","lastStatus":"STOPPED",
            "startedBy":"flotilla-2","stopCode":"EssentialContainerExited",
            "stoppedReason":"Essential container in task exited",
            "stoppedAt":"2026-11-22T16:18:25.922Z",
            "overrides":{"containerOverrides":[{"name":"main","environment":[{"name":"FLOTILLA_RUN_ID","value":"run-1"}]}]},
            "containers":[{"name":"main","exitCode":3,"lastStatus":"STOPPED"}]}}"#;
        let u = parse_event(body, "main").expect("an update");
        assert_eq!(u.run_id, "run-1");
        assert_eq!(u.attempt, 2);
        assert_eq!(u.state, TaskState::Stopped);
        assert_eq!(u.exit_code, Some(3));
        assert!(u.finished_at.is_some());
        assert!(parse_event(r#"{"detail-type":"Other"}"#, "main").is_none());
        assert!(parse_event("not json", "main").is_none());
        let foreign = body.replace("flotilla-2", "someone-else");
        assert!(parse_event(&foreign, "main").is_none());
    }
}
