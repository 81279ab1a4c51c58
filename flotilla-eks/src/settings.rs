//! Settings of the Kubernetes engine and the S3 log archive.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One Kubernetes cluster runs can be sent to; a run goes to the cluster
/// whose `name` equals the run's `cluster`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EksCluster {
    /// The flotilla cluster name (the run's `cluster`).
    pub name: String,
    /// Kubeconfig file; the default kubeconfig (`KUBECONFIG`, `~/.kube/config`)
    /// or the in-cluster service account when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context; the file's current context when absent.
    pub context: Option<String>,
    /// API server URL without authentication (tests, `kubectl proxy`);
    /// takes precedence over `kubeconfig`.
    pub api_url: Option<String>,
    /// Namespace of this cluster's Jobs; [`EksSettings::namespace`] when
    /// absent.
    pub namespace: Option<String>,
    /// Default service account on this cluster;
    /// [`EksSettings::service_account`] when absent.
    pub service_account: Option<String>,
    /// Service accounts a run's label `service-account` may choose on this
    /// cluster, besides the default one (which is always allowed). Empty
    /// (the default): only the default service account; a run naming
    /// another is refused at submit.
    pub allowed_service_accounts: Vec<String>,
}

/// Settings of [`crate::EksEngine`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EksSettings {
    /// The engine's name (`Run::engine`), default `eks`.
    pub engine_name: String,
    /// The clusters, routed by the run's `cluster`.
    pub clusters: Vec<EksCluster>,
    /// Namespace of the Jobs (unless a cluster overrides it).
    pub namespace: String,
    /// Service account of the pods unless the cluster names another; the
    /// namespace default when absent. A run's label `service-account` may
    /// only choose one of the cluster's
    /// [`EksCluster::allowed_service_accounts`].
    pub service_account: Option<String>,
    /// `ttlSecondsAfterFinished` of the Jobs.
    pub ttl_seconds: i32,
    /// Node label that selects spot or on-demand capacity.
    pub capacity_type_label: String,
    /// Capacity type (`spot`, `on-demand`) of runs whose label
    /// `capacity-type` names none; no node selection when absent.
    pub default_capacity_type: Option<String>,
    /// Scheduler of the pods, if not the default one.
    pub scheduler_name: Option<String>,
    /// Seconds a container may stay in image pull back-off before the run
    /// stops with `image_pull`.
    pub image_pull_backoff_threshold: u64,
    /// Seconds a Job that was seen may be absent (deleted outside flotilla)
    /// before its run stops.
    pub vanished_threshold: u64,
    /// Seconds between safety-net lists of Jobs and Pods while the watch is
    /// healthy (polls list at once while it is not).
    pub safety_list_interval: u64,
    /// Seconds a finished Job's final status is remembered after the Job
    /// is gone.
    pub tombstone_ttl: u64,
    /// Attempts per API call for retriable failures (409 conflicts, 429,
    /// 5xx, connection errors), with exponential backoff.
    pub api_attempts: u32,
    /// Input and output artifacts through helper containers; none (the
    /// engine refuses runs with an input) when absent.
    pub artifacts: Option<EksArtifacts>,
}

/// How runs on the Kubernetes engine get their input and output
/// ([`crate::spec`]): helper containers running the flotilla image
/// (`flotilla artifacts pull|push`) beside the job, talking to the artifact
/// store themselves with the pod's identity (its service account's IAM
/// role). Only the store's location is given to them, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EksArtifacts {
    /// The helper image: a flotilla image (the repository's `Dockerfile`),
    /// whose `flotilla` binary has `artifacts pull|push --on-sigterm`.
    pub helper_image: String,
    /// The artifact store's URL (`s3://bucket[/prefix]`; `file:///dir`
    /// only where that directory is shared with the nodes): the same store
    /// the service stages inputs in. Outputs are written at
    /// `<store_url>/runs/<run_id>/attempt-<n>/output.zip`.
    pub store_url: String,
    /// The store's region (S3), given to the helpers.
    pub region: Option<String>,
    /// The store's endpoint (an S3-compatible server), given to the
    /// helpers.
    pub endpoint: Option<String>,
    /// Limits on a zip's uncompressed size, entries and compression ratio
    /// given to the helpers; the helper's defaults when absent.
    pub max_total_bytes: Option<u64>,
    /// See `max_total_bytes`.
    pub max_entries: Option<usize>,
    /// See `max_total_bytes`.
    pub max_ratio: Option<u64>,
    /// The pod's `terminationGracePeriodSeconds`: how long the upload step
    /// may pack and upload after the job exited (and how long a terminated
    /// job's pod may take to stop).
    pub upload_grace_seconds: i64,
}

impl Default for EksArtifacts {
    fn default() -> Self {
        EksArtifacts {
            helper_image: String::new(),
            store_url: String::new(),
            region: None,
            endpoint: None,
            max_total_bytes: None,
            max_entries: None,
            max_ratio: None,
            upload_grace_seconds: 300,
        }
    }
}

impl EksArtifacts {
    /// The URL of the output zip of one run attempt.
    pub fn output_url(&self, run_id: &str, attempt: u32) -> String {
        format!(
            "{}/{}",
            self.store_url.trim_end_matches('/'),
            flotilla::artifacts::output_key(run_id, attempt)
        )
    }
}

impl Default for EksSettings {
    fn default() -> Self {
        EksSettings {
            engine_name: "eks".into(),
            clusters: Vec::new(),
            namespace: "default".into(),
            service_account: None,
            ttl_seconds: 3600,
            capacity_type_label: "karpenter.sh/capacity-type".into(),
            default_capacity_type: None,
            scheduler_name: None,
            image_pull_backoff_threshold: 300,
            vanished_threshold: 60,
            safety_list_interval: 300,
            tombstone_ttl: 3600,
            api_attempts: 3,
            artifacts: None,
        }
    }
}

/// Settings of [`crate::S3Logs`]: where the cluster's log shipper archives
/// container logs, as `s3://<bucket>/<prefix>/<run_id>/...`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct S3LogSettings {
    /// Bucket.
    pub bucket: String,
    /// Key prefix (no leading or trailing `/` needed).
    pub prefix: String,
    /// Region; the default provider chain's when absent.
    pub region: Option<String>,
    /// Endpoint URL (moto, MinIO); path-style addressing is used with it.
    pub endpoint_url: Option<String>,
    /// Seconds after a run stopped when its archive counts as complete (the
    /// shipper's upload delay).
    pub complete_after_seconds: u64,
}

impl Default for S3LogSettings {
    fn default() -> Self {
        S3LogSettings {
            bucket: String::new(),
            prefix: "flotilla".into(),
            region: None,
            endpoint_url: None,
            complete_after_seconds: 30,
        }
    }
}
