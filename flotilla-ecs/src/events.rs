//! Push: ECS "Task State Change" events routed by an EventBridge rule to an
//! SQS status queue, consumed into the engine's event stream.

use std::time::Duration;

use aws_sdk_eventbridge::types::Target;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use chrono::{DateTime, Utc};
use flotilla::{EngineEvent, Error, Result, StatusUpdate, TaskState};
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::classify::{StopFacts, classify_stop, task_state};
use flotilla_aws::map_sdk_error;

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
}

impl Default for EventSettings {
    fn default() -> Self {
        EventSettings {
            status_queue: "flotilla-ecs-status".into(),
            rule_name: "flotilla-ecs-task-state".into(),
            event_bus: "default".into(),
            install: true,
            wait_seconds: 20,
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
        Ok(())
    }
}

/// The status queue the engine consumes.
#[derive(Debug, Clone)]
pub(crate) struct EventRoute {
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) wait_seconds: u32,
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
    }
    Some(u)
}

/// Streams the updates arriving on the status queue; stops when the stream
/// is dropped.
pub(crate) fn stream(route: EventRoute) -> Option<BoxStream<'static, EngineEvent>> {
    let handle = tokio::runtime::Handle::try_current().ok()?;
    let (tx, rx) = mpsc::channel::<EngineEvent>(1024);
    handle.spawn(consume(route, tx));
    Some(Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (e, rx))
    })))
}

async fn consume(route: EventRoute, tx: mpsc::Sender<EngineEvent>) {
    let mut failures = 0u32;
    while !tx.is_closed() {
        let received = tokio::select! {
            r = route
                .sqs
                .receive_message()
                .queue_url(&route.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(route.wait_seconds as i32)
                .send() => r,
            _ = tx.closed() => return,
        };
        let out = match received {
            Ok(o) => {
                failures = 0;
                o
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(error = %map_sdk_error("ReceiveMessage", e), "status queue receive failed");
                let ms = 200u64.saturating_mul(1 << failures.min(6));
                tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
                continue;
            }
        };
        let mut done = Vec::new();
        for (i, m) in out.messages().iter().enumerate() {
            match m.body().and_then(|b| parse_event(b, &route.container_name)) {
                Some(u) => {
                    if tx.send(EngineEvent::Update(u)).await.is_err() {
                        // Not deleted: whoever consumes next gets it.
                        return;
                    }
                }
                None => tracing::debug!(
                    "status queue: a message that is not a flotilla task change was dropped"
                ),
            }
            if let Some(h) = m.receipt_handle()
                && let Ok(entry) = DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(h)
                    .build()
            {
                done.push(entry);
            }
        }
        if !done.is_empty()
            && let Err(e) = route
                .sqs
                .delete_message_batch()
                .queue_url(&route.queue_url)
                .set_entries(Some(done))
                .send()
                .await
        {
            // Delivered again later: updates are idempotent.
            tracing::warn!(error = %map_sdk_error("DeleteMessageBatch", e), "status queue delete failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
