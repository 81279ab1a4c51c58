//! The body of the execute routes, as flotilla-os's clients send it (keys
//! in any case are lowercased before it is read; `null`s count as absent).

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::ToSchema;

/// One environment variable of a request.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct EnvInput {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Who the run is for.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct RunTagsInput {
    /// Owner id (required by v1, v4 and v6 without authentication; the
    /// token's identity wins on servers with authentication).
    #[serde(default)]
    pub owner_id: String,
    /// Owner e-mail (required, with `team_name`, by v2).
    #[serde(default)]
    pub owner_email: Option<String>,
    /// Team.
    #[serde(default)]
    pub team_name: Option<String>,
}

/// `PUT .../execute`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct ExecuteBody {
    /// Cluster; the server's default when absent.
    #[serde(default)]
    pub cluster: Option<String>,
    /// Environment added to (and overriding) the definition's.
    #[serde(default)]
    pub env: Option<Vec<EnvInput>>,
    /// Tags.
    #[serde(default)]
    pub run_tags: Option<RunTagsInput>,
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
    /// Engine, among those the cluster allows (flotilla-os clients send
    /// `eks`: see the README's rule).
    #[serde(default)]
    pub engine: Option<String>,
    /// Idempotence key.
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
}

impl From<ExecuteBody> for flotilla::ExecuteRequest {
    fn from(b: ExecuteBody) -> Self {
        flotilla::ExecuteRequest {
            cluster: b.cluster,
            env: b.env.map(|env| {
                env.into_iter()
                    .map(|e| flotilla::EnvVar::new(e.name, e.value))
                    .collect()
            }),
            run_tags: b.run_tags.map(|t| flotilla::RunTags {
                owner_id: t.owner_id,
                owner_email: t.owner_email,
                team_name: t.team_name,
            }),
            command: b.command,
            memory: b.memory,
            cpu: b.cpu,
            gpu: b.gpu,
            engine: b.engine,
            idempotence_key: b.idempotence_key,
            labels: b.labels,
            active_deadline_seconds: b.active_deadline_seconds,
            description: b.description,
        }
    }
}
