//! Service settings: clusters, limits, retry policy and worker tuning.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::RetryPolicy;

use crate::validate::Limits;

/// Serde helper: a `Duration` as whole milliseconds.
pub(crate) mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u128::from(u64::MAX)) as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

/// Environment variable carrying the run id, injected into every run.
pub const ENV_RUN_ID: &str = "FLOTILLA_RUN_ID";
/// Environment variable carrying the server mode, injected into every run.
pub const ENV_SERVER_MODE: &str = "FLOTILLA_SERVER_MODE";
/// Default variable carrying the owner, injected into every run.
pub const ENV_OWNER_ID: &str = "FLOTILLA_RUN_OWNER_ID";
/// A run whose env carries this variable is a child of the named run and is
/// terminated with it.
pub const ENV_PARENT_RUN_ID: &str = "PARENT_FLOTILLA_RUN_ID";

/// Which workers run on this replica.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EnabledWorkers {
    /// Receives queued runs and submits them.
    pub submit: bool,
    /// Follows active runs (singleton, by lease).
    pub status: bool,
    /// Queues NEEDS_RETRY runs again (singleton, by lease).
    pub retry: bool,
    /// Re-enqueues stale QUEUED runs (singleton, by lease).
    pub reconcile: bool,
}

impl Default for EnabledWorkers {
    fn default() -> Self {
        EnabledWorkers {
            submit: true,
            status: true,
            retry: true,
            reconcile: true,
        }
    }
}

/// Worker tuning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WorkerConfig {
    /// Which workers run here.
    pub enabled: EnabledWorkers,
    /// Deliveries received per call.
    pub submit_batch: usize,
    /// Submits in flight at once.
    pub submit_concurrency: usize,
    /// How long a received delivery is leased.
    #[serde(with = "duration_ms")]
    pub queue_lease: Duration,
    /// How long one receive waits for a message (long poll).
    #[serde(with = "duration_ms")]
    pub receive_wait: Duration,
    /// Safety-net poll of active runs (engines that push are followed on
    /// every event in between).
    #[serde(with = "duration_ms")]
    pub status_poll_interval: Duration,
    /// Runs per engine poll call.
    pub poll_batch: usize,
    /// Singleton lease time to live; renewed at a third of it.
    #[serde(with = "duration_ms")]
    pub lease_ttl: Duration,
    /// How often the reconcile worker looks.
    #[serde(with = "duration_ms")]
    pub reconcile_interval: Duration,
    /// A QUEUED run older than this is enqueued again by reconcile.
    #[serde(with = "duration_ms")]
    pub queued_stale_after: Duration,
    /// An active run the engine no longer knows for this long is lost.
    #[serde(with = "duration_ms")]
    pub missing_grace: Duration,
    /// While a cluster is in maintenance (its queue left unclaimed), how
    /// often the submit worker re-reads the stored clusters to see a change
    /// made through another replica; one made through this one is seen at
    /// once.
    #[serde(with = "duration_ms")]
    pub maintenance_delay: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            enabled: EnabledWorkers::default(),
            submit_batch: 50,
            submit_concurrency: 64,
            queue_lease: Duration::from_secs(60),
            receive_wait: Duration::from_secs(10),
            status_poll_interval: Duration::from_secs(10),
            poll_batch: 100,
            lease_ttl: Duration::from_secs(15),
            reconcile_interval: Duration::from_secs(30),
            queued_stale_after: Duration::from_secs(300),
            missing_grace: Duration::from_secs(60),
            maintenance_delay: Duration::from_secs(30),
        }
    }
}

/// Service settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceConfig {
    /// Cluster of runs that name none.
    pub default_cluster: String,
    /// Clusters always accepted even when not registered in the store.
    pub clusters: Vec<String>,
    /// Capacity per cluster name, for dimensions its stored record leaves
    /// unset (before the engine's default): how configured clusters get
    /// one without an API call.
    pub capacities: std::collections::BTreeMap<String, crate::model::Capacity>,
    /// Engine of runs whose cluster and request name none.
    pub default_engine: Option<String>,
    /// Injected as `FLOTILLA_SERVER_MODE`.
    pub mode: String,
    /// Variable that carries the owner into runs.
    pub owner_id_var: String,
    /// Input bounds.
    pub limits: Limits,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// Worker tuning.
    pub workers: WorkerConfig,
    /// This replica's name in leases; a fresh id when empty.
    pub replica_id: String,
    /// Engines that run commands on the server's own host (default:
    /// `local`). On a server that has other engines too, only admins may
    /// run on them: the host holds the server's credentials.
    pub host_engines: Vec<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            default_cluster: "default".into(),
            clusters: vec!["default".into()],
            capacities: Default::default(),
            default_engine: None,
            mode: "dev".into(),
            owner_id_var: ENV_OWNER_ID.into(),
            limits: Limits::default(),
            retry: RetryPolicy::default(),
            workers: WorkerConfig::default(),
            replica_id: String::new(),
            host_engines: vec!["local".into()],
        }
    }
}
