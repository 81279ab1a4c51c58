//! Run artifacts on ECS: an input zip unpacked at `/input` before the job
//! starts, what the job leaves in `/output` zipped and uploaded after it
//! exits — with task volumes and two helper containers beside the run's.
//!
//! With [`crate::EcsSettings::artifacts`] set, every task definition the
//! engine registers has
//!
//! - two task **volumes**, `flotilla-input` and `flotilla-output`, without a
//!   host path: task-scoped storage the agent makes and removes with the
//!   task (EC2 and Fargate alike);
//! - the **input helper** `flotilla-input` (helper image, `essential:
//!   false`, user 0): makes `/output` writable for any user of the job's
//!   image, then runs `flotilla artifacts pull <input_url> /input` (the URL
//!   in the run's container overrides; without an input its command stays
//!   the task definition's no-op `--version`);
//! - the **job container** (`essential: false`, so the task outlives it),
//!   `/input` mounted read-only and `/output` writable,
//!   `FLOTILLA_INPUT_DIR=/input`, `FLOTILLA_OUTPUT_DIR=/output`, started once
//!   the input helper exited 0 (`dependsOn` `SUCCESS`);
//! - the **output helper** `flotilla-output` (helper image, `essential:
//!   true`, user 0): `flotilla artifacts push /output <output_url>` (the
//!   attempt's URL, in the overrides), once the job exited (`dependsOn`
//!   `COMPLETE`) — or only once it exited 0 (`SUCCESS`) when the run's
//!   definition says `skip_failed_output`: then the agent never starts it
//!   after a failure. An empty `/output` uploads nothing: the helper exits
//!   [`NOTHING_TO_UPLOAD`] and the attempt has no `output_url`.
//!
//! Per-run values travel in the RunTask overrides, so one task definition
//! revision serves every run of a definition. How a task ended is read per
//! container by name ([`apply_helper_ends`]): the job's exit code is the
//! run's; an input helper that failed means the job never ran
//! (`container_start`: retried, nothing ran twice); the output helper's exit
//! code is the upload's result (0 → `output_url`; otherwise a successful
//! attempt fails with `artifact_upload`, a failed one keeps its failure and
//! its reason says the output was not uploaded).

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    ContainerCondition, ContainerDefinition, ContainerDependency, ContainerOverride, KeyValuePair,
    LogConfiguration, MountPoint, Volume,
};
use flotilla::{Error, FailureCategory, Result, StatusUpdate};
use serde::Serialize;

use crate::settings::EcsArtifactSettings;

/// Name of the input helper container (and of its volume).
pub const INPUT_CONTAINER: &str = "flotilla-input";
/// Name of the output helper container (and of its volume).
pub const OUTPUT_CONTAINER: &str = "flotilla-output";
/// The helper containers' names, which the run's container may not take.
pub const HELPERS: [&str; 2] = [INPUT_CONTAINER, OUTPUT_CONTAINER];
/// The task volume holding the unpacked input.
pub const INPUT_VOLUME: &str = "flotilla-input";
/// The task volume the job writes its output to.
pub const OUTPUT_VOLUME: &str = "flotilla-output";
/// Where containers see the input.
pub const INPUT_PATH: &str = "/input";
/// Where containers see the output.
pub const OUTPUT_PATH: &str = "/output";
/// The helpers' command when nothing is to be done (a run without input):
/// `flotilla --version`, which exits 0.
pub const NO_OP: &str = "--version";
/// The output helper's exit code when `/output` is empty: nothing was
/// uploaded, and the attempt has no `output_url` (as on the local and
/// Docker engines). `flotilla` itself exits 0 or 2.
pub const NOTHING_TO_UPLOAD: i64 = 3;

/// The command (arguments of `flotilla`) of an input helper pulling `url`.
pub fn pull_command(url: &str) -> Vec<String> {
    vec![
        "artifacts".into(),
        "pull".into(),
        url.into(),
        INPUT_PATH.into(),
    ]
}

/// The command (arguments of `flotilla`) of an output helper pushing to
/// `url`.
pub fn push_command(url: &str) -> Vec<String> {
    vec![
        "artifacts".into(),
        "push".into(),
        OUTPUT_PATH.into(),
        url.into(),
    ]
}

/// The URL a [`push_command`] uploads to, if `command` is one.
pub fn pushed_url(command: &[String]) -> Option<&str> {
    match command {
        [a, p, _, url] if a == "artifacts" && p == "push" => Some(url.as_str()),
        _ => None,
    }
}

/// The URL of attempt `attempt`'s output of `run_id` in the store at
/// `store_url` (the key of [`flotilla::artifacts::output_key`]).
pub fn output_url(store_url: &str, run_id: &str, attempt: u32) -> String {
    format!(
        "{}/{}",
        store_url.trim_end_matches('/'),
        flotilla::artifacts::output_key(run_id, attempt)
    )
}

/// The helper part of a task definition; hashed with the rest of the
/// [`crate::taskdef::TaskSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HelperSpec {
    /// The helper image.
    pub image: String,
    /// The helpers' environment: the store's non-secret settings.
    pub env: BTreeMap<String, String>,
    /// Memory reserved per helper, MiB.
    pub memory_reservation: i64,
    /// Whether the output helper runs after a failed job too (`COMPLETE`),
    /// or only after a successful one (`SUCCESS`: `skip_failed_output`).
    pub upload_failed: bool,
}

impl HelperSpec {
    /// The helpers of `settings` for a run whose definition does (or does
    /// not) `skip_failed_output`.
    pub fn new(settings: &EcsArtifactSettings, skip_failed_output: bool) -> Self {
        let mut env = BTreeMap::new();
        env.insert(
            "FLOTILLA_ARTIFACTS__URL".to_string(),
            settings.store_url.trim_end_matches('/').to_string(),
        );
        if let Some(r) = &settings.region {
            env.insert("FLOTILLA_ARTIFACTS__REGION".to_string(), r.clone());
        }
        if let Some(e) = &settings.endpoint {
            env.insert("FLOTILLA_ARTIFACTS__ENDPOINT".to_string(), e.clone());
        }
        HelperSpec {
            image: settings.helper_image.clone(),
            env,
            memory_reservation: settings.helper_memory_reservation,
            upload_failed: !skip_failed_output,
        }
    }

    /// The task volumes.
    pub fn volumes(&self) -> Vec<Volume> {
        [INPUT_VOLUME, OUTPUT_VOLUME]
            .into_iter()
            .map(|n| Volume::builder().name(n).build())
            .collect()
    }

    /// What the job container gains: mounts, environment, the dependency on
    /// the input helper, and `essential: false`.
    pub fn job_container(
        &self,
        job: aws_sdk_ecs::types::builders::ContainerDefinitionBuilder,
    ) -> Result<aws_sdk_ecs::types::builders::ContainerDefinitionBuilder> {
        Ok(job
            .essential(false)
            .mount_points(mount(INPUT_VOLUME, INPUT_PATH, true))
            .mount_points(mount(OUTPUT_VOLUME, OUTPUT_PATH, false))
            .environment(env_var(flotilla::local::ENV_INPUT_DIR, INPUT_PATH))
            .environment(env_var(flotilla::local::ENV_OUTPUT_DIR, OUTPUT_PATH))
            .depends_on(dependency(INPUT_CONTAINER, ContainerCondition::Success)?))
    }

    /// The two helper containers, logging like the job (`log`), for the job
    /// container named `job`.
    pub fn helpers(&self, job: &str, log: &LogConfiguration) -> Result<Vec<ContainerDefinition>> {
        let base = |name: &str| {
            let mut c = ContainerDefinition::builder()
                .name(name)
                .image(&self.image)
                .user("0")
                .memory_reservation(i32::try_from(self.memory_reservation).unwrap_or(i32::MAX))
                .log_configuration(log.clone())
                .command(NO_OP);
            for (k, v) in &self.env {
                c = c.environment(env_var(k, v));
            }
            c
        };
        // The volumes are root's 0755: the input helper opens /output to the
        // job's user, whoever it is, before it pulls.
        let input = base(INPUT_CONTAINER)
            .essential(false)
            .entry_point("sh")
            .entry_point("-c")
            .entry_point(format!("chmod 0777 {OUTPUT_PATH} && exec flotilla \"$@\""))
            .entry_point(INPUT_CONTAINER)
            .mount_points(mount(INPUT_VOLUME, INPUT_PATH, false))
            .mount_points(mount(OUTPUT_VOLUME, OUTPUT_PATH, false))
            .build();
        let condition = if self.upload_failed {
            ContainerCondition::Complete
        } else {
            ContainerCondition::Success
        };
        let output = base(OUTPUT_CONTAINER)
            .essential(true)
            .entry_point("sh")
            .entry_point("-c")
            .entry_point(format!(
                "if [ -z \"$(ls -A {OUTPUT_PATH})\" ]; then echo \"{OUTPUT_PATH} is empty: nothing to upload\"; exit {NOTHING_TO_UPLOAD}; fi; exec flotilla \"$@\""
            ))
            .entry_point(OUTPUT_CONTAINER)
            .mount_points(mount(OUTPUT_VOLUME, OUTPUT_PATH, true))
            .depends_on(dependency(job, condition)?)
            .build();
        Ok(vec![input, output])
    }

    /// The helpers' container overrides of one attempt: the pull of
    /// `input_url` (none without an input: the no-op stays) and the push to
    /// `output_url`.
    pub fn overrides(input_url: Option<&str>, output_url: &str) -> Vec<ContainerOverride> {
        let mut out = Vec::with_capacity(2);
        if let Some(url) = input_url {
            out.push(
                ContainerOverride::builder()
                    .name(INPUT_CONTAINER)
                    .set_command(Some(pull_command(url)))
                    .build(),
            );
        }
        out.push(
            ContainerOverride::builder()
                .name(OUTPUT_CONTAINER)
                .set_command(Some(push_command(output_url)))
                .build(),
        );
        out
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> MountPoint {
    MountPoint::builder()
        .source_volume(volume)
        .container_path(path)
        .read_only(read_only)
        .build()
}

fn env_var(name: &str, value: &str) -> KeyValuePair {
    KeyValuePair::builder().name(name).value(value).build()
}

fn dependency(container: &str, condition: ContainerCondition) -> Result<ContainerDependency> {
    ContainerDependency::builder()
        .container_name(container)
        .condition(condition)
        .build()
        .map_err(|e| Error::internal(format!("container dependency: {e}")))
}

/// How one container of a stopped task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerEnd<'a> {
    /// Container name.
    pub name: &'a str,
    /// Its exit code, if it ran and exited.
    pub exit_code: Option<i64>,
    /// The agent's reason, if any.
    pub reason: Option<&'a str>,
}

fn describe(c: &ContainerEnd<'_>) -> String {
    let code = c
        .exit_code
        .map_or_else(|| "no exit code".to_string(), |e| format!("exit code {e}"));
    match c.reason.filter(|r| !r.is_empty()) {
        Some(r) => format!("{} ended with {code}: {r}", c.name),
        None => format!("{} ended with {code}", c.name),
    }
}

/// Applies what the helper containers say to the update of a stopped task
/// already classified by its job container (see the module): the input
/// helper's failure, the upload's result. `pushed` is the URL the task's
/// output helper was given (its override). Tasks without helpers are left
/// as they are.
pub fn apply_helper_ends(
    u: &mut StatusUpdate,
    containers: &[ContainerEnd<'_>],
    pushed: Option<&str>,
) {
    let find = |name: &str| containers.iter().find(|c| c.name == name);
    let user_stop = matches!(
        u.failure,
        Some(FailureCategory::Terminated | FailureCategory::Timeout)
    );
    if let Some(input) = find(INPUT_CONTAINER)
        && input.exit_code.is_some_and(|c| c != 0)
        && !user_stop
    {
        // The job never started: its exit code (143, from the agent
        // stopping it) is not the job's.
        let why = format!(
            "staging the input failed ({}); the job did not run",
            describe(input)
        );
        u.reason = Some(match u.reason.take() {
            Some(r) => format!("{why}; {r}"),
            None => why,
        });
        u.failure = Some(FailureCategory::ContainerStart);
        u.exit_code = None;
        return;
    }
    let Some(output) = find(OUTPUT_CONTAINER) else {
        return;
    };
    let succeeded = u.failure.is_none() && u.exit_code == Some(0);
    if output.exit_code == Some(NOTHING_TO_UPLOAD) {
        return;
    }
    if output.exit_code == Some(0) {
        u.output_url = pushed.map(str::to_string);
        return;
    }
    if succeeded {
        u.failure = Some(FailureCategory::ArtifactUpload);
        u.reason = Some(format!(
            "uploading the output failed ({})",
            describe(output)
        ));
    } else {
        let why = format!("output not uploaded ({})", describe(output));
        u.reason = Some(match u.reason.take() {
            Some(r) => format!("{r}; {why}"),
            None => why,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla::TaskState;

    fn end(name: &str, exit_code: Option<i64>) -> ContainerEnd<'_> {
        ContainerEnd {
            name,
            exit_code,
            reason: None,
        }
    }

    fn stopped(exit: Option<i64>, failure: Option<FailureCategory>) -> StatusUpdate {
        let mut u = StatusUpdate::new("r", 1, TaskState::Stopped);
        u.exit_code = exit;
        u.failure = failure;
        u
    }

    #[test]
    fn the_upload_decides_the_output_url_and_a_failed_upload_fails_a_success() {
        let url = "s3://b/runs/r/attempt-1/output.zip";
        let mut u = stopped(Some(0), None);
        apply_helper_ends(
            &mut u,
            &[
                end(INPUT_CONTAINER, Some(0)),
                end("main", Some(0)),
                end(OUTPUT_CONTAINER, Some(0)),
            ],
            Some(url),
        );
        assert_eq!((u.failure, u.output_url.as_deref()), (None, Some(url)));

        let mut u = stopped(Some(0), None);
        apply_helper_ends(
            &mut u,
            &[end("main", Some(0)), end(OUTPUT_CONTAINER, Some(2))],
            Some(url),
        );
        assert_eq!(u.failure, Some(FailureCategory::ArtifactUpload));
        assert_eq!(u.output_url, None);
        assert!(
            u.reason
                .as_deref()
                .is_some_and(|r| r.contains("exit code 2")),
            "{u:?}"
        );

        // Nothing in /output: no upload, no URL, no failure.
        let mut u = stopped(Some(0), None);
        apply_helper_ends(
            &mut u,
            &[
                end("main", Some(0)),
                end(OUTPUT_CONTAINER, Some(NOTHING_TO_UPLOAD)),
            ],
            Some(url),
        );
        assert_eq!((u.failure, u.output_url, u.reason), (None, None, None));

        // A failed job keeps its failure; its output uploads by default.
        let mut u = stopped(Some(3), Some(FailureCategory::AppExit));
        apply_helper_ends(&mut u, &[end(OUTPUT_CONTAINER, Some(0))], Some(url));
        assert_eq!(
            (u.failure, u.output_url.as_deref()),
            (Some(FailureCategory::AppExit), Some(url))
        );
        let mut u = stopped(Some(3), Some(FailureCategory::AppExit));
        apply_helper_ends(&mut u, &[end(OUTPUT_CONTAINER, Some(143))], Some(url));
        assert_eq!(u.failure, Some(FailureCategory::AppExit));
        assert!(u.reason.is_some_and(|r| r.contains("output not uploaded")));
    }

    #[test]
    fn a_failed_pull_means_the_job_never_ran() {
        let mut u = stopped(Some(143), Some(FailureCategory::ContainerStart));
        apply_helper_ends(
            &mut u,
            &[
                end(INPUT_CONTAINER, Some(2)),
                end("main", Some(143)),
                end(OUTPUT_CONTAINER, Some(0)),
            ],
            Some("s3://b/x"),
        );
        assert_eq!(u.failure, Some(FailureCategory::ContainerStart));
        assert_eq!((u.exit_code, u.output_url), (None, None));
        // A user's stop stays a stop.
        let mut u = stopped(Some(143), Some(FailureCategory::Terminated));
        apply_helper_ends(&mut u, &[end(INPUT_CONTAINER, Some(143))], None);
        assert_eq!(u.failure, Some(FailureCategory::Terminated));
    }

    #[test]
    fn commands_round_trip() {
        let push = push_command("s3://b/k");
        assert_eq!(pushed_url(&push), Some("s3://b/k"));
        assert_eq!(pushed_url(&pull_command("s3://b/k")), None);
        assert_eq!(
            output_url("s3://b/p/", "r", 2),
            "s3://b/p/runs/r/attempt-2/output.zip"
        );
    }
}
