//! Settings of the ECS engine and the CloudWatch Logs log source.

use serde::{Deserialize, Serialize};

use crate::events::EventSettings;
use flotilla_aws::StaticCredentials;

/// How tasks are placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LaunchType {
    /// On the cluster's EC2 container instances (bridge networking by
    /// default).
    #[default]
    Ec2,
    /// On Fargate (awsvpc networking; subnets and security groups needed).
    Fargate,
}

impl LaunchType {
    /// The ECS spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            LaunchType::Ec2 => "EC2",
            LaunchType::Fargate => "FARGATE",
        }
    }
}

/// One entry of a capacity provider strategy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapacityProviderItem {
    /// Capacity provider name (`FARGATE`, `FARGATE_SPOT`, or an
    /// Auto Scaling group provider).
    pub capacity_provider: String,
    /// Relative weight.
    #[serde(default)]
    pub weight: i32,
    /// Tasks placed on this provider first.
    #[serde(default)]
    pub base: i32,
}

/// How [`crate::EcsEngine`] and [`crate::CloudWatchLogs`] reach AWS and shape
/// tasks. Both read the log settings, so the log source finds the streams
/// the task definitions' `awslogs` driver writes.
///
/// Every field has a default, so a configuration file names only what it
/// changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcsSettings {
    /// The engine's name, as in `Run::engine`.
    pub name: String,
    /// AWS region; the default chain's region when empty.
    pub region: String,
    /// Endpoint override (an AWS-compatible endpoint, moto in tests).
    pub endpoint_url: Option<String>,
    /// Static credentials; the default credential chain when absent.
    pub credentials: Option<StaticCredentials>,
    /// Attempts of the SDK's own retry (throttling, 5xx, timeouts).
    pub max_attempts: u32,
    /// ECS clusters this engine runs on (a run's cluster is the ECS
    /// cluster's name); empty means any.
    pub clusters: Vec<String>,
    /// Launch type, used when no capacity provider strategy is given.
    pub launch_type: LaunchType,
    /// Capacity provider strategy; replaces the launch type when not empty.
    pub capacity_provider_strategy: Vec<CapacityProviderItem>,
    /// Task network mode (`bridge`, `awsvpc`, `host`, `none`); `bridge` for
    /// EC2 and `awsvpc` for Fargate when absent.
    pub network_mode: Option<String>,
    /// Subnets for awsvpc networking.
    pub subnets: Vec<String>,
    /// Security groups for awsvpc networking.
    pub security_groups: Vec<String>,
    /// Give awsvpc tasks a public IP.
    pub assign_public_ip: bool,
    /// Fargate platform version (`LATEST` when absent).
    pub platform_version: Option<String>,
    /// CloudWatch Logs group of the `awslogs` driver.
    pub log_group: String,
    /// `awslogs-stream-prefix`: streams are `<prefix>/<container>/<task id>`.
    pub log_stream_prefix: String,
    /// Retention of the log group when flotilla creates it, in days.
    pub log_retention_days: Option<i32>,
    /// A stopped run's log is complete this many seconds after it stopped
    /// (the driver's last lines may still be on their way before that).
    pub log_settle_seconds: u64,
    /// Name of the run's container in its task definition.
    pub container_name: String,
    /// Prefix of task definition families: `<prefix>-<definition id>`.
    pub family_prefix: String,
    /// Task execution role (image pulls from ECR, logs), if any.
    pub execution_role_arn: Option<String>,
    /// Role the task's code runs as, if any.
    pub task_role_arn: Option<String>,
    /// How a run's command is started: `[shell..., command]`.
    pub shell: Vec<String>,
    /// Memory (MiB) of runs that set none; ECS needs one.
    pub default_memory: i64,
    /// Clusters polled at once.
    pub poll_concurrency: usize,
    /// Push of task state changes through EventBridge and SQS; polling
    /// only when absent.
    pub events: Option<EventSettings>,
    /// Run artifacts (an input zip in, `/output` zipped and uploaded) through
    /// helper containers beside the run's; runs take no input and upload
    /// nothing when absent.
    pub artifacts: Option<EcsArtifactSettings>,
}

/// The helper containers that stage a run's artifacts on ECS (see
/// [`crate::artifacts`]): `flotilla artifacts pull` before the job, `flotilla
/// artifacts push` after it, in the helper image. Only non-secret store
/// settings travel to them, as environment of the task definition; the
/// helpers authenticate as the task role (`task_role_arn`, which needs
/// `s3:GetObject` on inputs and `s3:PutObject` on outputs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcsArtifactSettings {
    /// The image of the helpers: it must hold `sh` and `flotilla` on its
    /// `PATH` (the repository's `Dockerfile` builds one).
    pub helper_image: String,
    /// The artifact store the helpers reach: `s3://bucket[/prefix]`, the
    /// server's `[artifacts] url` (a `file://` store only works where the
    /// helpers see the same directory, as in tests). Given to the helpers as
    /// `FLOTILLA_ARTIFACTS__URL`.
    pub store_url: String,
    /// The store's S3 region (`FLOTILLA_ARTIFACTS__REGION`), if any.
    pub region: Option<String>,
    /// An S3-compatible endpoint (`FLOTILLA_ARTIFACTS__ENDPOINT`), if any.
    pub endpoint: Option<String>,
    /// Memory reserved for each helper container, MiB (a soft limit: a pull
    /// holds the whole zip in memory while it unpacks).
    pub helper_memory_reservation: i64,
}

impl Default for EcsArtifactSettings {
    fn default() -> Self {
        EcsArtifactSettings {
            helper_image: String::new(),
            store_url: String::new(),
            region: None,
            endpoint: None,
            helper_memory_reservation: 256,
        }
    }
}

impl EcsArtifactSettings {
    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> flotilla::Result<()> {
        let invalid = |m: &str| Err(flotilla::Error::invalid(m.to_string()));
        if self.helper_image.trim().is_empty() {
            return invalid(
                "artifacts.helper_image: must name the helper image (the flotilla image)",
            );
        }
        if !(self.store_url.starts_with("s3://") || self.store_url.starts_with("file://")) {
            return invalid("artifacts.store_url: must be s3://bucket[/prefix] (or file:///dir)");
        }
        if self.helper_memory_reservation < 4 {
            return invalid("artifacts.helper_memory_reservation: must be at least 4 MiB");
        }
        Ok(())
    }
}

impl Default for EcsSettings {
    fn default() -> Self {
        EcsSettings {
            name: "ecs".into(),
            region: String::new(),
            endpoint_url: None,
            credentials: None,
            max_attempts: 5,
            clusters: Vec::new(),
            launch_type: LaunchType::Ec2,
            capacity_provider_strategy: Vec::new(),
            network_mode: None,
            subnets: Vec::new(),
            security_groups: Vec::new(),
            assign_public_ip: false,
            platform_version: None,
            log_group: "flotilla".into(),
            log_stream_prefix: "flotilla".into(),
            log_retention_days: None,
            log_settle_seconds: 10,
            container_name: "main".into(),
            family_prefix: "flotilla".into(),
            execution_role_arn: None,
            task_role_arn: None,
            shell: vec!["sh".into(), "-c".into()],
            default_memory: 512,
            poll_concurrency: 4,
            events: None,
            artifacts: None,
        }
    }
}

impl EcsSettings {
    /// The network mode in force.
    pub fn network_mode(&self) -> &str {
        match (&self.network_mode, self.uses_fargate()) {
            (Some(m), _) => m.as_str(),
            (None, true) => "awsvpc",
            (None, false) => "bridge",
        }
    }

    /// Whether tasks run on Fargate (launch type or strategy).
    pub fn uses_fargate(&self) -> bool {
        if self.capacity_provider_strategy.is_empty() {
            self.launch_type == LaunchType::Fargate
        } else {
            self.capacity_provider_strategy
                .iter()
                .any(|c| c.capacity_provider.starts_with("FARGATE"))
        }
    }

    /// Checks every bound; the error names the field.
    pub fn validate(&self) -> flotilla::Result<()> {
        let invalid = |m: String| Err(flotilla::Error::invalid(m));
        if self.name.is_empty() {
            return invalid("name: must not be empty".into());
        }
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
        };
        if !name_ok(&self.family_prefix, 200) {
            return invalid(format!(
                "family_prefix: '{}' must be 1 to 200 of [A-Za-z0-9_-]",
                self.family_prefix
            ));
        }
        if !name_ok(&self.container_name, 255) {
            return invalid(format!(
                "container_name: '{}' must be 1 to 255 of [A-Za-z0-9_-]",
                self.container_name
            ));
        }
        if self.log_group.is_empty() || self.log_group.len() > 512 {
            return invalid("log_group: must be 1 to 512 characters".into());
        }
        if self.log_stream_prefix.is_empty() || self.log_stream_prefix.contains([':', '*']) {
            return invalid("log_stream_prefix: must be non-empty without ':' or '*'".into());
        }
        if !matches!(self.network_mode(), "bridge" | "awsvpc" | "host" | "none") {
            return invalid(format!(
                "network_mode: '{}' is not one of bridge, awsvpc, host, none",
                self.network_mode()
            ));
        }
        if self.network_mode() == "awsvpc" && self.subnets.is_empty() {
            return invalid("subnets: awsvpc networking needs at least one subnet".into());
        }
        if self.uses_fargate() && self.network_mode() != "awsvpc" {
            return invalid("network_mode: Fargate tasks need awsvpc".into());
        }
        if self.shell.is_empty() {
            return invalid("shell: must name a program, e.g. [\"sh\", \"-c\"]".into());
        }
        if self.default_memory < 4 {
            return invalid("default_memory: must be at least 4 MiB".into());
        }
        if self.max_attempts == 0 {
            return invalid("max_attempts: must be at least 1".into());
        }
        if self.poll_concurrency == 0 {
            return invalid("poll_concurrency: must be at least 1".into());
        }
        if let Some(e) = &self.events {
            e.validate()?;
        }
        if let Some(a) = &self.artifacts {
            a.validate()?;
            if crate::artifacts::HELPERS.contains(&self.container_name.as_str()) {
                return invalid(format!(
                    "container_name: '{}' is the name of an artifacts helper container",
                    self.container_name
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_errors_name_the_field() {
        EcsSettings::default()
            .validate()
            .expect("defaults are valid");
        let fargate = EcsSettings {
            launch_type: LaunchType::Fargate,
            ..EcsSettings::default()
        };
        assert_eq!(fargate.network_mode(), "awsvpc");
        let e = fargate.validate().expect_err("no subnets");
        assert!(e.message().starts_with("subnets:"), "{e}");
        let bad = EcsSettings {
            container_name: "a b".into(),
            ..EcsSettings::default()
        };
        let e = bad.validate().expect_err("space");
        assert!(e.message().starts_with("container_name:"), "{e}");
        let parsed: EcsSettings = serde_json::from_str(
            r#"{"launch_type": "FARGATE", "subnets": ["subnet-1"], "clusters": ["a"],
                "capacity_provider_strategy": [{"capacity_provider": "FARGATE_SPOT", "weight": 1}]}"#,
        )
        .expect("parse");
        assert!(parsed.uses_fargate());
        parsed.validate().expect("valid");
        assert!(serde_json::from_str::<EcsSettings>(r#"{"launch_type": "MOON"}"#).is_err());
    }
}
