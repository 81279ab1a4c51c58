//! The API's typed reply bodies other than runs ([`super::RunBody`]):
//! definitions, their lists, groups and tags, clusters, logs, health and
//! the `{"deleted": true}` acknowledgements.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::EnvBody;

/// A definition, as flotilla-os emits it (`env` always a list).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionBody {
    /// Id.
    pub definition_id: String,
    /// Unique alias.
    pub alias: String,
    /// Group.
    pub group_name: String,
    /// Image.
    pub image: String,
    /// Command.
    pub command: Option<String>,
    /// Memory in MiB.
    pub memory: Option<i64>,
    /// CPU in millicores.
    pub cpu: Option<i64>,
    /// GPUs.
    pub gpu: Option<i64>,
    /// Environment.
    pub env: Vec<EnvBody>,
    /// Tags.
    pub tags: Vec<String>,
    /// Ports.
    pub ports: Vec<u16>,
    /// Retry `oom` with more memory.
    pub adaptive_resource_allocation: bool,
    /// Attempts for retriable failures (the server's default when null).
    pub max_attempts: Option<u32>,
    /// Retry non-zero exits too.
    pub retry_on_app_exit: bool,
    /// Retry rules (AWS Batch's `retryStrategy` shape); null when none.
    /// Its `attempts` wins over `max_attempts`.
    pub retry_strategy: Option<flotilla::RetryStrategy>,
    /// Who created it.
    pub owner: String,
    /// Upload the output of successful runs only (default false: failed
    /// runs upload theirs too).
    pub skip_failed_output: bool,
    /// Created.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&flotilla::Definition> for DefinitionBody {
    fn from(d: &flotilla::Definition) -> Self {
        DefinitionBody {
            definition_id: d.definition_id.clone(),
            alias: d.alias.clone(),
            group_name: d.group_name.clone(),
            image: d.image.clone(),
            command: d.command.clone(),
            memory: d.memory,
            cpu: d.cpu,
            gpu: d.gpu,
            env: d.env.iter().map(EnvBody::from).collect(),
            tags: d.tags.clone(),
            ports: d.ports.clone(),
            adaptive_resource_allocation: d.adaptive_resource_allocation,
            max_attempts: d.max_attempts,
            retry_on_app_exit: d.retry_on_app_exit,
            retry_strategy: d.retry_strategy.clone(),
            owner: d.owner.clone(),
            skip_failed_output: d.skip_failed_output,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// A page of definitions, with the query echoed back as flotilla-os does.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionListBody {
    /// Definitions matching (all pages).
    pub total: u64,
    /// This page.
    pub definitions: Vec<DefinitionBody>,
    /// Page size.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
    /// Sort field.
    pub sort_by: String,
    /// `asc` or `desc`.
    pub order: String,
    /// The `env` filters as a map.
    pub env_filters: BTreeMap<String, String>,
    /// Echoed `alias` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<Vec<String>>,
    /// Echoed `group_name` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_name: Option<Vec<String>>,
    /// Echoed `image` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<Vec<String>>,
}

/// `GET /history/{run_id}/payload`: what the run was executed with beyond
/// its definition (flotilla-os's `execution_request_custom`); `{}` for a
/// definition's run, `{"template_payload": {...}}` for a template's.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(transparent)]
#[schema(value_type = Object)]
pub struct RunPayloadBody(pub serde_json::Map<String, serde_json::Value>);

/// `GET /groups`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct GroupsBody {
    /// Distinct groups (all pages).
    pub total: u64,
    /// This page.
    pub groups: Vec<String>,
    /// Page size.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
}

/// `GET /tags`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TagsBody {
    /// Distinct tags (all pages).
    pub total: u64,
    /// This page.
    pub tags: Vec<String>,
    /// Page size.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
}

/// A cluster.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterReply {
    /// Name (also its queue's).
    pub name: String,
    /// `active`, `maintenance` or `offline`.
    pub status: String,
    /// Why it is in that status.
    pub status_reason: Option<String>,
    /// Tiers allowed; empty means any.
    pub allowed_tiers: Vec<String>,
    /// Its engine (the server's default when null).
    pub engine: Option<String>,
    /// Engines a run's request may pick on it.
    pub engines: Vec<String>,
    /// Its capacity as set (absent: the engine's default throughout).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity: Option<flotilla::Capacity>,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

impl From<&flotilla::Cluster> for ClusterReply {
    fn from(c: &flotilla::Cluster) -> Self {
        ClusterReply {
            name: c.name.clone(),
            status: c.status.as_str().to_string(),
            status_reason: c.status_reason.clone(),
            allowed_tiers: c.allowed_tiers.clone(),
            engine: c.engine.clone(),
            engines: c.engines.clone(),
            capacity: c.capacity,
            updated_at: c.updated_at,
        }
    }
}

/// `GET /clusters`: flotilla-os's `{"clusters": [names]}` (its UI's
/// cluster select reads names), with each cluster in full beside them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ClusterListBody {
    /// How many.
    pub total: usize,
    /// The names of the clusters, stored and configured, sorted.
    pub clusters: Vec<String>,
    /// The same clusters in full, in the same order.
    pub cluster_details: Vec<ClusterReply>,
}

/// `{"deleted": true}`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletedBody {
    /// Always true (a failure is an error reply).
    pub deleted: bool,
}

impl DeletedBody {
    /// The acknowledgement.
    pub const YES: DeletedBody = DeletedBody { deleted: true };
}

/// A page of a run's log.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LogsBody {
    /// Log text after `last_seen`.
    pub log: String,
    /// Cursor to pass back as `last_seen` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// True once the run stopped and its whole log was read.
    pub complete: bool,
}

/// `GET /health`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthBody {
    /// `ok`.
    pub status: String,
    /// Server version.
    pub version: String,
    /// Engines configured.
    pub engines: Vec<String>,
}
