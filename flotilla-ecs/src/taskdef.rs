//! Task definitions: what flotilla registers for a run, and the content
//! hash that says when to register a new revision.
//!
//! A task definition is derived from the run's own snapshot, never from the
//! definition's current state: the image is the run's, and everything a
//! run may change (command, memory, cpu, gpu, env) travels in the RunTask
//! overrides, built from the run too. So every submit of one attempt sends
//! the same parameters, whatever was edited since, and a reused
//! `clientToken` never meets different parameters (ECS would answer
//! `ConflictException`). Only the ports and the engine's settings come from
//! elsewhere (ECS cannot override them per task).

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    Compatibility, ContainerDefinition, KeyValuePair, LogConfiguration, LogDriver, NetworkMode,
    PortMapping, ResourceRequirement, ResourceType, Tag, TransportProtocol,
};
use flotilla::hash::fnv1a;
use flotilla::{Definition, Error, Result, Run};
use serde::Serialize;

use crate::artifacts::HelperSpec;
use crate::settings::EcsSettings;

/// Tag holding the content hash on registered task definitions.
pub const HASH_TAG: &str = "flotilla:content-hash";
/// Tag holding the definition id on registered task definitions.
pub const DEFINITION_TAG: &str = "flotilla:definition-id";

/// The task definition family of a definition: `<prefix>-<definition id>`
/// (ids are UUIDs; anything outside `[A-Za-z0-9_-]` becomes `_`).
pub fn family(settings: &EcsSettings, definition_id: &str) -> String {
    let id: String = definition_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut f = format!("{}-{id}", settings.family_prefix);
    f.truncate(255);
    f
}

/// CPU units (1024 per vCPU) of millicores.
pub fn cpu_units(millicores: i64) -> i32 {
    (millicores.saturating_mul(1024) / 1000).clamp(0, 10 * 1024 * 1024) as i32
}

fn clamp_i32(v: i64) -> i32 {
    v.clamp(0, i64::from(i32::MAX)) as i32
}

/// Everything that goes into a task definition; hashed to detect changes.
#[derive(Debug, Clone, Serialize)]
pub struct TaskSpec {
    /// Family.
    pub family: String,
    /// Image.
    pub image: String,
    /// Command (the shell and the definition's command).
    pub command: Option<Vec<String>>,
    /// Memory, MiB.
    pub memory: i64,
    /// CPU units.
    pub cpu: Option<i32>,
    /// GPUs.
    pub gpu: Option<i64>,
    /// Definition environment.
    pub env: BTreeMap<String, String>,
    /// Container ports.
    pub ports: Vec<u16>,
    /// Network mode.
    pub network_mode: String,
    /// Fargate compatibility.
    pub fargate: bool,
    /// Container name.
    pub container_name: String,
    /// awslogs options.
    pub log_options: BTreeMap<String, String>,
    /// Execution role.
    pub execution_role_arn: Option<String>,
    /// Task role.
    pub task_role_arn: Option<String>,
    /// The artifacts helpers (volumes, input and output containers), when
    /// the engine has them; left out of the hash's JSON when absent, so
    /// task definitions without artifacts keep their revisions.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<HelperSpec>,
}

impl TaskSpec {
    /// The spec for `run` of `def`: image and memory are the run's (ECS
    /// cannot override the image per task, and places tasks by the task
    /// definition's memory); command, cpu, gpu and env are left to the
    /// run's overrides (so one revision serves every run of the same image
    /// and memory); only the ports are the definition's.
    pub fn new(settings: &EcsSettings, region: &str, run: &Run, def: &Definition) -> Result<Self> {
        if run.image.is_empty() {
            return Err(Error::invalid("image: must not be empty"));
        }
        let mut log_options = BTreeMap::new();
        log_options.insert("awslogs-group".to_string(), settings.log_group.clone());
        log_options.insert("awslogs-region".to_string(), region.to_string());
        log_options.insert(
            "awslogs-stream-prefix".to_string(),
            settings.log_stream_prefix.clone(),
        );
        Ok(TaskSpec {
            family: family(settings, &run.definition_id),
            image: run.image.clone(),
            command: None,
            memory: run.memory.unwrap_or(settings.default_memory).max(4),
            cpu: None,
            gpu: None,
            env: BTreeMap::new(),
            ports: def.ports.clone(),
            network_mode: settings.network_mode().to_string(),
            fargate: settings.uses_fargate(),
            container_name: settings.container_name.clone(),
            log_options,
            execution_role_arn: settings.execution_role_arn.clone(),
            task_role_arn: settings.task_role_arn.clone(),
            artifacts: settings
                .artifacts
                .as_ref()
                .map(|a| HelperSpec::new(a, run.skip_failed_output)),
        })
    }

    /// Task memory (MiB) on Fargate: the run's and what the helpers reserve.
    pub fn task_memory(&self) -> i64 {
        self.memory
            + self
                .artifacts
                .as_ref()
                .map_or(0, |a| 2 * a.memory_reservation)
    }

    /// A stable hash of the spec (FNV-1a over its JSON), as hex.
    pub fn content_hash(&self) -> String {
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{:016x}", fnv1a(json.as_bytes()))
    }

    fn log_configuration(&self) -> Result<LogConfiguration> {
        let mut log = LogConfiguration::builder().log_driver(LogDriver::Awslogs);
        for (k, v) in &self.log_options {
            log = log.options(k, v);
        }
        log.build()
            .map_err(|e| Error::internal(format!("log configuration: {e}")))
    }

    /// Every container definition: the run's, then the artifacts helpers
    /// (if any).
    pub fn containers(&self) -> Result<Vec<ContainerDefinition>> {
        let mut out = vec![self.container()?];
        if let Some(a) = &self.artifacts {
            out.extend(a.helpers(&self.container_name, &self.log_configuration()?)?);
        }
        Ok(out)
    }

    /// The run's container definition.
    pub fn container(&self) -> Result<ContainerDefinition> {
        let log = self.log_configuration()?;
        let mut c = ContainerDefinition::builder()
            .name(&self.container_name)
            .image(&self.image)
            .essential(true)
            .memory(clamp_i32(self.memory))
            .log_configuration(log);
        if let Some(cmd) = &self.command {
            c = c.set_command(Some(cmd.clone()));
        }
        if let Some(cpu) = self.cpu {
            c = c.cpu(cpu);
        }
        if let Some(gpu) = self.gpu {
            c = c.resource_requirements(gpu_requirement(gpu)?);
        }
        for (k, v) in &self.env {
            c = c.environment(KeyValuePair::builder().name(k).value(v).build());
        }
        for p in &self.ports {
            let mut m = PortMapping::builder()
                .container_port(i32::from(*p))
                .protocol(TransportProtocol::Tcp);
            if self.network_mode == "awsvpc" || self.network_mode == "host" {
                m = m.host_port(i32::from(*p));
            }
            c = c.port_mappings(m.build());
        }
        if let Some(a) = &self.artifacts {
            c = a.job_container(c)?;
        }
        Ok(c.build())
    }

    /// Fields of RegisterTaskDefinition besides the container.
    pub fn register(
        &self,
        client: &aws_sdk_ecs::Client,
        hash: &str,
        definition_id: &str,
    ) -> Result<aws_sdk_ecs::operation::register_task_definition::builders::RegisterTaskDefinitionFluentBuilder>
    {
        let mut req = client
            .register_task_definition()
            .family(&self.family)
            .set_container_definitions(Some(self.containers()?))
            .network_mode(NetworkMode::from(self.network_mode.as_str()))
            .tags(Tag::builder().key(HASH_TAG).value(hash).build())
            .tags(
                Tag::builder()
                    .key(DEFINITION_TAG)
                    .value(tag_value(definition_id))
                    .build(),
            );
        if self.fargate {
            req = req
                .requires_compatibilities(Compatibility::Fargate)
                .cpu(fargate_cpu(self.cpu).to_string())
                .memory(self.task_memory().to_string());
        }
        if let Some(a) = &self.artifacts {
            req = req.set_volumes(Some(a.volumes()));
        }
        if let Some(r) = &self.execution_role_arn {
            req = req.execution_role_arn(r);
        }
        if let Some(r) = &self.task_role_arn {
            req = req.task_role_arn(r);
        }
        Ok(req)
    }
}

/// Fargate task CPU: the smallest valid size covering the container's.
pub fn fargate_cpu(units: Option<i32>) -> i32 {
    let want = units.unwrap_or(256);
    [256, 512, 1024, 2048, 4096, 8192, 16384]
        .into_iter()
        .find(|c| *c >= want)
        .unwrap_or(16384)
}

/// The `[shell..., command]` a run's command becomes.
pub fn shell_command(settings: &EcsSettings, command: &str) -> Vec<String> {
    let mut v = settings.shell.clone();
    v.push(command.to_string());
    v
}

/// A GPU resource requirement.
pub fn gpu_requirement(gpu: i64) -> Result<ResourceRequirement> {
    ResourceRequirement::builder()
        .r#type(ResourceType::Gpu)
        .value(gpu.to_string())
        .build()
        .map_err(|e| Error::internal(format!("gpu: {e}")))
}

/// A tag value with the characters ECS refuses replaced by `_`.
pub fn tag_value(v: &str) -> String {
    v.chars()
        .map(|c| {
            if c.is_alphanumeric() || " _.:/=+-@".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(256)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla::NewDefinition;

    /// FNV-1a of the spec JSON of `pinned_run` as the task definitions
    /// before artifacts serialized it (computed independently).
    const PINNED_HASH: &str = "d2cecbecf2823f8c";

    fn run_of(def: &Definition) -> Run {
        let mut r: Run = serde_json::from_value(serde_json::json!({
            "run_id": "r", "definition_id": def.definition_id, "alias": def.alias,
            "image": def.image, "cluster": "c", "engine": "ecs", "status": "QUEUED",
            "attempt": 1, "max_attempts": 3, "updated_at": "2026-01-01T00:00:00Z"
        }))
        .expect("run");
        r.command = def.command.clone();
        r
    }

    #[test]
    fn the_spec_is_the_runs_not_the_current_definitions() {
        let s = EcsSettings::default();
        let mut n = NewDefinition::new("a", "busybox").command("echo hi");
        n.memory = Some(256);
        let def = n.into_definition();
        let run = run_of(&def);
        let a = TaskSpec::new(&s, "us-east-1", &run, &def).expect("spec");
        let b = TaskSpec::new(&s, "us-east-1", &run, &def).expect("spec");
        assert_eq!(a.content_hash(), b.content_hash());
        // Editing the definition changes nothing of the run's task.
        let mut edited = def.clone();
        edited.command = Some("echo bye".into());
        edited.memory = Some(1024);
        edited.image = "alpine".into();
        edited.env = vec![flotilla::EnvVar::new("A", "1")];
        let c = TaskSpec::new(&s, "us-east-1", &run, &edited).expect("spec");
        assert_eq!(a.content_hash(), c.content_hash());
        assert_eq!(c.image, "busybox");
        // Another image is another revision.
        let mut other = run.clone();
        other.image = "alpine".into();
        let d = TaskSpec::new(&s, "us-east-1", &other, &def).expect("spec");
        assert_ne!(a.content_hash(), d.content_hash());
        assert_eq!(a.family, format!("flotilla-{}", def.definition_id));
        assert_eq!(a.command, None, "the command travels in the overrides");
        let container = a.container().expect("container");
        assert_eq!(
            container.memory(),
            Some(512),
            "the run's memory (none: the default)"
        );
    }

    fn pinned_run() -> (Run, Definition) {
        let mut n = NewDefinition::new("pinned", "busybox:1").command("echo hi");
        n.memory = Some(256);
        n.ports = vec![8080];
        let mut def = n.into_definition();
        def.definition_id = "0190f0c2-7d4e-7b1a-9c53-1f2e3d4c5b6a".into();
        let run = run_of(&def);
        (run, def)
    }

    #[test]
    fn task_definitions_without_artifacts_keep_their_hash() {
        let (run, def) = pinned_run();
        let spec = TaskSpec::new(&EcsSettings::default(), "us-east-1", &run, &def).expect("spec");
        // Pinned before artifacts existed: an upgrade registers no new
        // revision for engines without artifacts.
        assert_eq!(spec.content_hash(), PINNED_HASH);
        assert_eq!(spec.containers().expect("containers").len(), 1);
    }

    #[test]
    fn artifacts_add_helpers_and_change_the_hash_with_skip_failed_output() {
        let (mut run, def) = pinned_run();
        let s = EcsSettings {
            artifacts: Some(crate::settings::EcsArtifactSettings {
                helper_image: "flotilla:1".into(),
                store_url: "s3://bucket/p".into(),
                ..Default::default()
            }),
            ..EcsSettings::default()
        };
        let a = TaskSpec::new(&s, "us-east-1", &run, &def).expect("spec");
        assert_ne!(a.content_hash(), PINNED_HASH);
        let names: Vec<String> = a
            .containers()
            .expect("containers")
            .iter()
            .filter_map(|c| c.name().map(str::to_string))
            .collect();
        assert_eq!(names, ["main", "flotilla-input", "flotilla-output"]);
        run.skip_failed_output = true;
        let b = TaskSpec::new(&s, "us-east-1", &run, &def).expect("spec");
        assert_ne!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn units_and_tags() {
        assert_eq!(cpu_units(1000), 1024);
        assert_eq!(cpu_units(250), 256);
        assert_eq!(fargate_cpu(Some(300)), 512);
        assert_eq!(fargate_cpu(None), 256);
        assert_eq!(tag_value("a b#c"), "a b_c");
    }
}
