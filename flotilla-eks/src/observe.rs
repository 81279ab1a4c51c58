//! From a Job and its pods to a [`StatusUpdate`]: the status mapping.
//!
//! | what the cluster shows | update |
//! |---|---|
//! | pod Pending | `Pending` |
//! | pod Running | `Running`, node name in `instance` |
//! | pod Succeeded | `Stopped`, exit 0 |
//! | pod Failed, container terminated | `Stopped`, its exit code and reason (`app_exit`) |
//! | container killed by a signal (exit 128 + N) | `Stopped`, `app_exit` (a crash), the signal named in the reason |
//! | container `OOMKilled` | `Stopped`, `oom` |
//! | pod evicted, node lost or shut down | `Stopped`, `node_lost` |
//! | pod deleted under a running Job | `Stopped`, `node_lost` (after a grace, so the Job's own verdict can arrive) |
//! | image pull back-off beyond the threshold | `Stopped`, `image_pull` |
//! | container create errors beyond the threshold | `Stopped`, `container_start` |
//! | Job `DeadlineExceeded` | `Stopped`, `timeout` |
//! | Job deleted by flotilla | `Stopped`, `terminated` |
//! | Job gone longer than the vanished threshold | `Stopped`, `node_lost` |
//!
//! With artifacts ([`crate::spec`]), a pod is only terminal once its upload
//! sidecar stopped too (the kubelet stops sidecars after the job exited;
//! their exit codes do not count in the pod's phase). Its terminated state
//! says how the upload went:
//!
//! | upload step | update |
//! |---|---|
//! | exit 0, message = the attempt's output URL | `output_url` set (unless the attempt failed and the run says `skip_failed_output`) |
//! | exit 0, any other message (`empty`: nothing written) | no `output_url` |
//! | non-zero, or never terminated | a successful attempt fails with `artifact_upload`; a failed one keeps its failure, the upload's error added to its reason |
//! | the input's pull failed | `container_start`, the pull's message in the reason |
//! | the Job finished but its pod is not seen within a grace | Complete: `artifact_upload` (the output cannot be known); Failed: as without artifacts, noted |
//!
//! A `Stopped` update is final for its attempt: later changes (TTL deletion
//! of the Job) never change it.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use flotilla::{FailureCategory, Instance, StatusUpdate, TaskState};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ContainerStateTerminated, ContainerStatus, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Pod-level reasons that mean the node, not the program, failed.
const NODE_LOST_REASONS: [&str; 6] = [
    "Evicted",
    "NodeLost",
    "Shutdown",
    "NodeShutdown",
    "Terminated",
    "UnexpectedAdmissionError",
];
const PULL_REASONS: [&str; 4] = [
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const START_REASONS: [&str; 3] = [
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// How long a pod may be gone under a Job that has no verdict yet before
/// the run counts as `node_lost`.
pub const POD_GONE_GRACE: Duration = Duration::from_secs(2);

/// What the engine remembers about one run attempt (one Job).
#[derive(Debug, Clone)]
pub struct Track {
    /// The run.
    pub run_id: String,
    /// The attempt.
    pub attempt: u32,
    /// A pod was seen alive (not finished).
    pub pod_seen_alive: Option<String>,
    /// Since when the live pod is gone.
    pub pod_gone_since: Option<Instant>,
    /// Since when the container is in image pull or create back-off.
    pub backoff_since: Option<Instant>,
    /// The Job was seen.
    pub job_seen: bool,
    /// Since when the seen Job is gone.
    pub job_gone_since: Option<Instant>,
    /// flotilla deleted the Job, for this reason.
    pub terminated: Option<String>,
    /// The last update reported.
    pub last: Option<StatusUpdate>,
    /// When the final update was reported.
    pub final_at: Option<Instant>,
    /// The engine deleted the Job of a run that can never start.
    pub reaped: bool,
}

impl Track {
    /// A new track.
    pub fn new(run_id: String, attempt: u32) -> Self {
        Track {
            run_id,
            attempt,
            pod_seen_alive: None,
            pod_gone_since: None,
            backoff_since: None,
            job_seen: false,
            job_gone_since: None,
            terminated: None,
            last: None,
            final_at: None,
            reaped: false,
        }
    }

    /// Whether the update for this attempt is final.
    pub fn is_final(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|u| u.state == TaskState::Stopped)
    }

    /// Whether a timer may change the answer without any new event.
    pub fn has_timer(&self) -> bool {
        !self.is_final()
            && (self.pod_gone_since.is_some()
                || self.backoff_since.is_some()
                || self.job_gone_since.is_some())
    }
}

/// Thresholds of the mapping.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Image pull / container create back-off.
    pub backoff: Duration,
    /// A seen Job gone.
    pub vanished: Duration,
    /// A live pod gone.
    pub pod_gone: Duration,
}

fn to_chrono(t: &Time) -> Option<DateTime<Utc>> {
    let nanos = t.0.as_nanosecond();
    i64::try_from(nanos)
        .ok()
        .map(DateTime::from_timestamp_nanos)
}

fn condition<'a>(job: &'a Job, types: &[&str]) -> Option<(&'a str, String, String)> {
    let conds = job.status.as_ref()?.conditions.as_ref()?;
    conds
        .iter()
        .find(|c| types.contains(&c.type_.as_str()) && c.status == "True")
        .map(|c| {
            (
                c.type_.as_str(),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

fn init_container<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    let statuses = pod.status.as_ref()?.init_container_statuses.as_ref()?;
    statuses.iter().find(|c| c.name == name)
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Records the upload step's outcome on the final update of a pod that has
/// one (see the module's table).
fn apply_upload(pod: &Pod, u: &mut StatusUpdate) {
    let has_upload = pod
        .spec
        .as_ref()
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == crate::spec::UPLOAD_CONTAINER));
    let Some(url) = annotation(pod, crate::spec::ANNOTATION_OUTPUT_URL) else {
        return;
    };
    if !has_upload {
        return;
    }
    let failed = u.failure.is_some() || u.exit_code != Some(0);
    let skip = annotation(pod, crate::spec::ANNOTATION_SKIP_FAILED_OUTPUT) == Some("true");
    if failed && skip {
        // The step always runs (it cannot know the job's exit); its
        // output is not reported.
        return;
    }
    let end = init_container(pod, crate::spec::UPLOAD_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let message = end
        .and_then(|t| t.message.as_deref())
        .map(str::trim)
        .unwrap_or_default();
    match end {
        Some(t) if t.exit_code == 0 => {
            if message == url {
                u.output_url = Some(url.to_string());
            }
        }
        _ => {
            let detail = match end {
                Some(t) if !message.is_empty() => format!("exit code {}: {message}", t.exit_code),
                Some(t) => format!("exit code {}", t.exit_code),
                None => "the upload step never finished".to_string(),
            };
            let why = format!("uploading the output failed: {detail}");
            if failed {
                u.reason = Some(match u.reason.take() {
                    Some(r) => format!("{r}; {why}"),
                    None => why,
                });
            } else {
                u.failure = Some(FailureCategory::ArtifactUpload);
                u.reason = Some(why);
            }
        }
    }
}

/// Whether the Job's pods carry the upload step.
fn job_has_upload(job: &Job) -> bool {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.init_containers.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.name == crate::spec::UPLOAD_CONTAINER))
}

/// The input's pull, when it failed: its exit code and message.
fn pull_failure(pod: &Pod) -> Option<String> {
    let t = init_container(pod, crate::spec::PULL_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    if t.exit_code == 0 {
        return None;
    }
    let message = t.message.as_deref().map(str::trim).unwrap_or_default();
    Some(if message.is_empty() {
        format!("fetching the input failed: exit code {}", t.exit_code)
    } else {
        format!(
            "fetching the input failed: exit code {}: {message}",
            t.exit_code
        )
    })
}

fn main_container(pod: &Pod) -> Option<&ContainerStatus> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .find(|c| c.name == crate::spec::CONTAINER)
        .or_else(|| statuses.first())
}

fn join(a: &str, b: &str) -> String {
    match (a.is_empty(), b.is_empty()) {
        (false, false) => format!("{a}: {b}"),
        (false, true) => a.to_string(),
        (true, false) => b.to_string(),
        (true, true) => String::new(),
    }
}

fn stopped(
    track: &Track,
    exit_code: Option<i64>,
    reason: String,
    failure: Option<FailureCategory>,
) -> StatusUpdate {
    let mut u = StatusUpdate::new(track.run_id.clone(), track.attempt, TaskState::Stopped);
    u.exit_code = exit_code;
    u.reason = (!reason.is_empty()).then_some(reason);
    u.failure = failure;
    u
}

/// Exit code, reason and failure of a container that terminated in a
/// failed pod (`pod_reason`: the pod's own reason, not a node-lost one).
///
/// - `OOMKilled` (the kernel's OOM killer in the container's cgroup,
///   usually with exit code 137) → `oom`;
/// - killed by a signal (the `signal` field, or an exit code 128 + N) → an
///   application crash (no failure: `app_exit`), never `node_lost`; the
///   reason names the signal ("exit code 139: killed by SIGSEGV (signal
///   11)"), as the other engines do;
/// - any other non-zero code → `app_exit`; exit 0 in a failed pod →
///   `unknown`.
fn container_end(
    t: &ContainerStateTerminated,
    pod_reason: &str,
) -> (i64, String, Option<FailureCategory>) {
    let reason = t.reason.clone().unwrap_or_default();
    let message = t.message.clone().unwrap_or_default();
    let mut text = join(&reason, &message);
    let signal = t.signal.filter(|s| *s > 0).map(i64::from);
    let code = match (t.exit_code, signal) {
        (0, Some(sig)) => 128 + sig,
        (c, _) => i64::from(c),
    };
    if reason == "OOMKilled" || pod_reason == "OOMKilled" {
        return (code, text, Some(FailureCategory::Oom));
    }
    let named = signal
        .and_then(|sig| flotilla::signals::signal_name(sig).map(|n| (sig, n)))
        .or_else(|| flotilla::signals::signal_of_exit_code(code));
    if let Some((sig, name)) = named {
        let note = format!("exit code {code}: killed by {name} (signal {sig})");
        text = if text.is_empty() {
            note
        } else {
            format!("{text} ({note})")
        };
        return (code, text, None);
    }
    let failure = (code == 0).then_some(FailureCategory::Unknown);
    (code, text, failure)
}

/// The newest pod (by creation time, then name).
pub fn newest<'a>(pods: impl IntoIterator<Item = &'a Pod>) -> Option<&'a Pod> {
    pods.into_iter().max_by(|a, b| {
        let ka = (
            a.metadata.creation_timestamp.as_ref().map(|t| t.0),
            a.metadata.name.as_deref(),
        );
        let kb = (
            b.metadata.creation_timestamp.as_ref().map(|t| t.0),
            b.metadata.name.as_deref(),
        );
        ka.cmp(&kb)
    })
}

/// The update for one run attempt from its Job (if present) and newest pod
/// (if present), updating the track's timers. Returns the track's final
/// update unchanged once there is one.
pub fn observe(
    job_name: &str,
    job: Option<&Job>,
    pod: Option<&Pod>,
    track: &mut Track,
    th: Thresholds,
    now: Instant,
) -> StatusUpdate {
    if let Some(last) = &track.last
        && last.state == TaskState::Stopped
    {
        return last.clone();
    }
    let u = observe_inner(job_name, job, pod, track, th, now);
    let mut u = u;
    // Keep what was learned earlier (node, start time) when this
    // observation lacks it (pod gone).
    if let Some(last) = &track.last {
        if u.instance.is_none() {
            u.instance = last.instance.clone();
        }
        if u.started_at.is_none() {
            u.started_at = last.started_at;
        }
    }
    u
}

fn observe_inner(
    job_name: &str,
    job: Option<&Job>,
    pod: Option<&Pod>,
    track: &mut Track,
    th: Thresholds,
    now: Instant,
) -> StatusUpdate {
    if let Some(reason) = &track.terminated {
        return stopped(
            track,
            None,
            reason.clone(),
            Some(FailureCategory::Terminated),
        );
    }
    // The Job.
    match job {
        Some(_) => {
            track.job_seen = true;
            track.job_gone_since = None;
        }
        None if track.job_seen => {
            let since = *track.job_gone_since.get_or_insert(now);
            if now.duration_since(since) >= th.vanished {
                return stopped(
                    track,
                    None,
                    format!(
                        "Kubernetes Job {job_name} disappeared before it finished (deleted outside flotilla)"
                    ),
                    Some(FailureCategory::NodeLost),
                );
            }
        }
        None => {}
    }
    if let Some(job) = job
        && let Some((_, reason, message)) = condition(job, &["Failed", "FailureTarget"])
        && reason == "DeadlineExceeded"
    {
        return stopped(
            track,
            None,
            join(&reason, &message),
            Some(FailureCategory::Timeout),
        );
    }

    let Some(pod) = pod else {
        // A finished Job of an artifacts pod seen without its pod (the pod
        // watch lags the Job watch, or the pod is gone): the upload
        // step's outcome is on the pod; wait for it a grace, then say it
        // cannot be known.
        if let Some(j) = job.filter(|j| job_has_upload(j))
            && let Some((kind, reason, message)) = condition(j, &["Complete", "Failed"])
        {
            let since = *track.pod_gone_since.get_or_insert(now);
            if now.duration_since(since) < th.pod_gone {
                let state = track.last.as_ref().map_or(TaskState::Pending, |l| l.state);
                return StatusUpdate::new(track.run_id.clone(), track.attempt, state);
            }
            let unknown = "the pod is gone: the outcome of its upload step is unknown";
            return if kind == "Complete" {
                stopped(
                    track,
                    Some(0),
                    unknown.to_string(),
                    Some(FailureCategory::ArtifactUpload),
                )
            } else {
                let failure = if track.pod_seen_alive.is_some() {
                    FailureCategory::NodeLost
                } else {
                    FailureCategory::Unknown
                };
                stopped(
                    track,
                    None,
                    join(&join(&reason, &message), unknown),
                    Some(failure),
                )
            };
        }
        if job.is_none() && track.job_seen {
            // The Job itself is gone: the vanished threshold above decides.
            let state = track.last.as_ref().map_or(TaskState::Pending, |l| l.state);
            return StatusUpdate::new(track.run_id.clone(), track.attempt, state);
        }
        if let Some(pod_name) = track.pod_seen_alive.clone() {
            let lost =
                format!("pod {pod_name} was deleted while the Job ran (node lost or evicted)");
            match job.and_then(|j| condition(j, &["Complete", "Failed"])) {
                Some(("Complete", _, _)) => return stopped(track, Some(0), String::new(), None),
                Some(_) => return stopped(track, None, lost, Some(FailureCategory::NodeLost)),
                None => {}
            }
            let since = *track.pod_gone_since.get_or_insert(now);
            if now.duration_since(since) >= th.pod_gone {
                return stopped(track, None, lost, Some(FailureCategory::NodeLost));
            }
            let state = track.last.as_ref().map_or(TaskState::Running, |l| l.state);
            return StatusUpdate::new(track.run_id.clone(), track.attempt, state);
        }
        return match job.and_then(|j| condition(j, &["Complete", "Failed"])) {
            Some(("Complete", _, _)) => stopped(track, Some(0), String::new(), None),
            Some((_, reason, message)) => stopped(
                track,
                None,
                join(&reason, &message),
                Some(FailureCategory::Unknown),
            ),
            None => StatusUpdate::new(track.run_id.clone(), track.attempt, TaskState::Pending),
        };
    };

    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("Pending");
    let container = main_container(pod);
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let instance = node.map(|n| Instance {
        instance_id: n.clone(),
        dns_name: n,
    });
    let started_at = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
        })
        .and_then(to_chrono)
        .or_else(|| status.start_time.as_ref().and_then(to_chrono));
    let terminated = container
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let finished_at = terminated
        .and_then(|t| t.finished_at.as_ref())
        .and_then(to_chrono);

    let mut u = match phase {
        "Succeeded" => {
            let code = terminated.map(|t| i64::from(t.exit_code)).unwrap_or(0);
            let mut u = stopped(track, Some(code), String::new(), None);
            if code != 0 {
                u.failure = Some(FailureCategory::AppExit);
            }
            u
        }
        "Failed" => {
            let pod_reason = status.reason.clone().unwrap_or_default();
            let pod_message = status.message.clone().unwrap_or_default();
            if let Some(why) = pull_failure(pod) {
                stopped(track, None, why, Some(FailureCategory::ContainerStart))
            } else if NODE_LOST_REASONS.contains(&pod_reason.as_str()) {
                stopped(
                    track,
                    terminated.map(|t| i64::from(t.exit_code)),
                    join(&pod_reason, &pod_message),
                    Some(FailureCategory::NodeLost),
                )
            } else if let Some(t) = terminated {
                let (code, reason, failure) = container_end(t, &pod_reason);
                stopped(track, Some(code), reason, failure)
            } else {
                stopped(
                    track,
                    None,
                    join(&pod_reason, &pod_message),
                    Some(FailureCategory::Unknown),
                )
            }
        }
        "Running" => {
            track.pod_seen_alive = Some(pod_name);
            track.backoff_since = None;
            StatusUpdate::new(track.run_id.clone(), track.attempt, TaskState::Running)
        }
        _ => {
            track.pod_seen_alive = Some(pod_name);
            // The job container's wait, or a helper's that keeps it from
            // starting (its image cannot be pulled).
            let waiting_of = |c: &ContainerStatus| {
                c.state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .filter(|w| {
                        w.reason.as_deref().is_some_and(|r| {
                            PULL_REASONS.contains(&r) || START_REASONS.contains(&r)
                        })
                    })
                    .cloned()
            };
            let waiting = container.and_then(waiting_of).or_else(|| {
                status
                    .init_container_statuses
                    .iter()
                    .flatten()
                    .find_map(waiting_of)
            });
            let waiting = waiting.as_ref();
            let reason = waiting.and_then(|w| w.reason.clone()).unwrap_or_default();
            let message = waiting.and_then(|w| w.message.clone()).unwrap_or_default();
            let category = if PULL_REASONS.contains(&reason.as_str()) {
                Some(FailureCategory::ImagePull)
            } else if START_REASONS.contains(&reason.as_str()) {
                Some(FailureCategory::ContainerStart)
            } else {
                None
            };
            match category {
                Some(c) => {
                    let since = *track.backoff_since.get_or_insert(now);
                    if now.duration_since(since) >= th.backoff {
                        stopped(track, None, join(&reason, &message), Some(c))
                    } else {
                        StatusUpdate::new(track.run_id.clone(), track.attempt, TaskState::Pending)
                    }
                }
                None => {
                    track.backoff_since = None;
                    StatusUpdate::new(track.run_id.clone(), track.attempt, TaskState::Pending)
                }
            }
        }
    };
    if u.state == TaskState::Stopped {
        apply_upload(pod, &mut u);
    }
    track.pod_gone_since = None;
    u.instance = instance;
    u.started_at = started_at;
    if u.state == TaskState::Stopped {
        u.finished_at = finished_at;
    }
    u
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn th() -> Thresholds {
        Thresholds {
            backoff: Duration::from_secs(60),
            vanished: Duration::from_secs(60),
            pod_gone: Duration::from_secs(2),
        }
    }

    fn pod(status: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "j-abcde", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"nodeName": "ip-10-0-0-1", "containers": [{"name": "main"}]},
            "status": status,
        }))
        .expect("pod")
    }

    fn job(conditions: serde_json::Value) -> Job {
        serde_json::from_value(json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "j"},
            "spec": {"template": {"spec": {"containers": [{"name": "main"}]}}},
            "status": {"conditions": conditions},
        }))
        .expect("job")
    }

    fn terminated(code: i32, reason: &str) -> serde_json::Value {
        json!({"phase": if code == 0 {"Succeeded"} else {"Failed"},
            "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason}}}]})
    }

    fn see(job: Option<&Job>, pod: Option<&Pod>, track: &mut Track, now: Instant) -> StatusUpdate {
        let u = observe("j", job, pod, track, th(), now);
        track.last = Some(u.clone());
        u
    }

    #[test]
    fn phases_map_to_states() {
        let now = Instant::now();
        let j = job(json!([]));
        let mut t = Track::new("r".into(), 2);
        let u = see(
            Some(&j),
            Some(&pod(json!({"phase": "Pending"}))),
            &mut t,
            now,
        );
        assert_eq!((u.state, u.attempt), (TaskState::Pending, 2));
        let u = see(
            Some(&j),
            Some(&pod(
                json!({"phase": "Running", "containerStatuses": [{"name": "main", "image": "i",
                "imageID": "", "ready": true, "restartCount": 0,
                "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}}]}),
            )),
            &mut t,
            now,
        );
        assert_eq!(u.state, TaskState::Running);
        assert_eq!(
            u.instance.map(|i| i.dns_name).as_deref(),
            Some("ip-10-0-0-1")
        );
        assert!(u.started_at.is_some());
        let u = see(
            Some(&j),
            Some(&pod(terminated(0, "Completed"))),
            &mut t,
            now,
        );
        assert_eq!(
            (u.state, u.exit_code, u.failure),
            (TaskState::Stopped, Some(0), None)
        );
        // Final: later changes (TTL deletion) do not alter it.
        let u = see(None, None, &mut t, now + Duration::from_secs(3600));
        assert_eq!(u.exit_code, Some(0));
    }

    #[test]
    fn failures_are_classified() {
        let now = Instant::now();
        let j = job(json!([]));
        let mut t = Track::new("r".into(), 1);
        let u = see(Some(&j), Some(&pod(terminated(3, "Error"))), &mut t, now);
        assert_eq!((u.exit_code, u.failure), (Some(3), None));
        let mut t = Track::new("r".into(), 1);
        let u = see(
            Some(&j),
            Some(&pod(terminated(137, "OOMKilled"))),
            &mut t,
            now,
        );
        assert_eq!(u.failure, Some(FailureCategory::Oom));
        let mut t = Track::new("r".into(), 1);
        let evicted = pod(json!({"phase": "Failed", "reason": "Evicted", "message": "low memory"}));
        let u = see(Some(&j), Some(&evicted), &mut t, now);
        assert_eq!(u.failure, Some(FailureCategory::NodeLost));
        assert!(u.reason.as_deref().unwrap_or_default().contains("Evicted"));
        let mut t = Track::new("r".into(), 1);
        let late = job(
            json!([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
            "message": "Job was active longer than specified deadline"}]),
        );
        let u = see(Some(&late), None, &mut t, now);
        assert_eq!(u.failure, Some(FailureCategory::Timeout));
    }

    fn killed(code: i32, reason: &str, signal: Option<i32>) -> serde_json::Value {
        json!({"phase": "Failed",
            "containerStatuses": [{"name": "main", "image": "i", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": code, "reason": reason,
                "signal": signal}}}]})
    }

    #[test]
    fn a_container_killed_by_a_signal_is_a_crash_naming_it_and_an_oom_kill_is_oom() {
        let now = Instant::now();
        let j = job(json!([]));
        for (status, code, name, sig) in [
            (killed(139, "Error", None), 139, "SIGSEGV", 11),
            (killed(134, "Error", None), 134, "SIGABRT", 6),
            (killed(135, "Error", None), 135, "SIGBUS", 7),
            // SIGKILL without the OOM killer: someone killed the program.
            (killed(137, "Error", None), 137, "SIGKILL", 9),
            // The runtime reports the signal, not 128 + N.
            (killed(0, "Error", Some(11)), 139, "SIGSEGV", 11),
        ] {
            let mut t = Track::new("r".into(), 1);
            let u = see(Some(&j), Some(&pod(status)), &mut t, now);
            assert_eq!(u.state, TaskState::Stopped);
            assert_eq!(u.exit_code, Some(code), "{u:?}");
            assert_eq!(u.failure, None, "an application crash (app_exit): {u:?}");
            let reason = u.reason.unwrap_or_default();
            assert!(
                reason.contains(&format!("killed by {name} (signal {sig})")),
                "the signal is named: {reason}"
            );
        }
        for status in [
            killed(137, "OOMKilled", None),
            killed(0, "OOMKilled", Some(9)),
        ] {
            let mut t = Track::new("r".into(), 1);
            let u = see(Some(&j), Some(&pod(status)), &mut t, now);
            assert_eq!(u.failure, Some(FailureCategory::Oom), "{u:?}");
            assert_eq!(u.exit_code, Some(137), "{u:?}");
        }
        // A plain exit code is not a signal.
        let mut t = Track::new("r".into(), 1);
        let u = see(Some(&j), Some(&pod(killed(3, "Error", None))), &mut t, now);
        assert_eq!((u.exit_code, u.failure), (Some(3), None));
        assert_eq!(u.reason.as_deref(), Some("Error"));
    }

    #[test]
    fn back_off_and_disappearances_wait_for_their_thresholds() {
        let now = Instant::now();
        let j = job(json!([]));
        let pulling = pod(
            json!({"phase": "Pending", "containerStatuses": [{"name": "main",
            "image": "i", "imageID": "", "ready": false, "restartCount": 0,
            "state": {"waiting": {"reason": "ImagePullBackOff", "message": "no such image"}}}]}),
        );
        let mut t = Track::new("r".into(), 1);
        assert_eq!(
            see(Some(&j), Some(&pulling), &mut t, now).state,
            TaskState::Pending
        );
        assert!(t.has_timer());
        let u = see(
            Some(&j),
            Some(&pulling),
            &mut t,
            now + Duration::from_secs(61),
        );
        assert_eq!(u.failure, Some(FailureCategory::ImagePull));

        // A live pod deleted under a running Job: node_lost after the grace.
        let running = pod(json!({"phase": "Running"}));
        let mut t = Track::new("r".into(), 1);
        see(Some(&j), Some(&running), &mut t, now);
        assert_eq!(see(Some(&j), None, &mut t, now).state, TaskState::Running);
        let u = see(Some(&j), None, &mut t, now + Duration::from_secs(3));
        assert_eq!(u.failure, Some(FailureCategory::NodeLost));

        // A Job deleted outside flotilla: stopped after the threshold.
        let mut t = Track::new("r".into(), 1);
        see(Some(&j), Some(&running), &mut t, now);
        see(None, None, &mut t, now);
        assert_ne!(
            see(None, None, &mut t, now + Duration::from_secs(2)).state,
            TaskState::Stopped
        );
        let u = see(None, None, &mut t, now + Duration::from_secs(120));
        assert_eq!(u.failure, Some(FailureCategory::NodeLost));
        assert!(
            u.reason
                .as_deref()
                .unwrap_or_default()
                .contains("disappeared")
        );

        // Terminated by flotilla.
        let mut t = Track::new("r".into(), 1);
        t.terminated = Some("terminated by alice".into());
        let u = see(Some(&j), Some(&running), &mut t, now);
        assert_eq!(u.failure, Some(FailureCategory::Terminated));
    }

    fn with_upload(main: i32, upload: Option<(i32, &str)>, skip: bool) -> Pod {
        let mut status = terminated(main, if main == 0 { "Completed" } else { "Error" });
        if let Some((code, message)) = upload {
            status["initContainerStatuses"] = json!([{"name": "flotilla-upload", "image": "h",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": message}}}]);
        }
        let mut annotations =
            json!({"flotilla.io/output-url": "s3://b/runs/r/attempt-1/output.zip"});
        if skip {
            annotations["flotilla.io/skip-failed-output"] = json!("true");
        }
        serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "j-abcde", "annotations": annotations},
            "spec": {"containers": [{"name": "main"}],
                "initContainers": [{"name": "flotilla-upload", "restartPolicy": "Always"}]},
            "status": status,
        }))
        .expect("pod")
    }

    #[test]
    fn the_upload_step_decides_the_output_url_and_fails_a_success() {
        let now = Instant::now();
        let j = job(json!([]));
        let url = "s3://b/runs/r/attempt-1/output.zip";
        let end = |main, upload, skip| {
            let mut t = Track::new("r".into(), 1);
            see(
                Some(&j),
                Some(&with_upload(main, upload, skip)),
                &mut t,
                now,
            )
        };
        let u = end(0, Some((0, url)), false);
        assert_eq!((u.output_url.as_deref(), u.failure), (Some(url), None));
        let u = end(0, Some((0, "empty")), false);
        assert_eq!((u.output_url, u.failure), (None, None), "nothing written");
        let u = end(0, Some((1, "NoSuchBucket")), false);
        assert_eq!(u.failure, Some(FailureCategory::ArtifactUpload));
        assert_eq!(u.exit_code, Some(0));
        assert!(u.reason.unwrap_or_default().contains("NoSuchBucket"));
        let u = end(0, None, false);
        assert_eq!(
            u.failure,
            Some(FailureCategory::ArtifactUpload),
            "never finished"
        );
        let u = end(3, Some((0, url)), false);
        assert_eq!((u.exit_code, u.output_url.as_deref()), (Some(3), Some(url)));
        let u = end(3, Some((0, url)), true);
        assert_eq!(
            (u.exit_code, u.output_url),
            (Some(3), None),
            "skip_failed_output"
        );
        let u = end(3, Some((1, "denied")), false);
        assert_eq!(u.failure, None, "a failed attempt keeps its failure");
        assert!(u.reason.unwrap_or_default().contains("denied"));
    }
}
