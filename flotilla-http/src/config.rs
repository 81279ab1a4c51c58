//! Server configuration: a TOML or YAML file plus `FLOTILLA_` environment
//! overrides, loaded with figment.
//!
//! Sources, later ones winning: built-in defaults, the file
//! (`flotilla.toml`, `.yaml`/`.yml` read as YAML), `DATABASE_URL`, then
//! `FLOTILLA_<KEY>` variables. Nested keys use `__`:
//! `FLOTILLA_HTTP__BODY_LIMIT_BYTES=2097152`,
//! `FLOTILLA_WORKERS__STATUS_POLL_INTERVAL=500`. Lists are written
//! `FLOTILLA_CLUSTERS=[default,gpu]`. Only variables whose first key is a
//! configuration key are read, so `FLOTILLA_SERVER`, `FLOTILLA_TOKEN` (used
//! by the CLI) and `FLOTILLA_RUN_ID` (injected into runs) are ignored.
//!
//! Unknown keys and wrong types fail at start with a message naming the key.
//!
//! ```toml
//! listen = "127.0.0.1:3000"
//! store = "sqlite"          # sqlite (<data_dir>/flotilla.db) | memory | postgres
//! queue = "sqlite"          # sqlite | memory | postgres | sqs
//! engines = ["local"]       # local | ecs | eks | docker
//! auth = "tokens"           # none | tokens
//! [[tokens]]
//! token = "s3cret"
//! owner = "alice"
//! role = "admin"            # user (default) | reporter | admin
//! [http]
//! body_limit_bytes = 1048576
//! cors_origins = ["https://flotilla.example.com"]
//! ```
//!
//! The AWS and Kubernetes backends read their own sections; every key has
//! a default, so a file names only what it changes. `[sqs]` takes the keys
//! of [`flotilla_sqs::SqsSettings`], `[ecs]` those of
//! [`flotilla_ecs::EcsSettings`] (the CloudWatch Logs source reads the same
//! section), `[eks]` those of [`EksConfig`]. Static credentials are for
//! AWS-compatible endpoints; leave them out to use the default chain.
//!
//! ```toml
//! queue = "sqs"
//! engines = ["ecs", "eks", "local"]
//! default_engine = "ecs"
//! [sqs]
//! region = "us-east-1"
//! queue_namespace = "flotilla"       # queues are <queue_namespace>-<cluster>
//! [ecs]
//! region = "us-east-1"
//! clusters = ["default"]
//! launch_type = "EC2"                # EC2 | FARGATE
//! log_group = "flotilla"
//! family_prefix = "flotilla"
//! # [ecs.events]                     # EventBridge push of task state changes
//! # [ecs.artifacts]                  # input/output artifacts through helper containers
//! # helper_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/flotilla:1"
//! #                                  # store_url, region, endpoint: [artifacts]'s when absent
//! [eks]
//! namespace = "flotilla"
//! capacity_type_label = "karpenter.sh/capacity-type"
//! s3_bucket = "my-log-archive"       # pod logs, then this archive
//! # artifacts_helper_image = "registry.example.com/flotilla:1"  # /input, /output
//! #                                  # via helper containers; needs [artifacts] url
//! [[eks.clusters]]
//! name = "k8s"
//! kubeconfig = "/etc/flotilla/kubeconfig"
//! context = "prod"
//! ```
//!
//! `[docker]` ([`DockerSection`]) configures the Docker engine
//! (`engines = ["docker"]`): one container per run attempt on a local
//! dockerd.
//!
//! ```toml
//! engines = ["docker"]
//! [docker]
//! host = "unix:///var/run/docker.sock"
//! network_mode = "none"              # none | bridge | host | a network name
//! data_dir = "/var/lib/flotilla/docker"  # archived logs; <data_dir>/docker when absent
//! stop_grace_seconds = 10
//! remove_finished = true
//! gpus = false                       # true: runs' `gpu` become device requests
//! gpu_driver = ""                    # "" (the daemon's default) or e.g. "nvidia"
//! registry_config = "/root/.docker/config.json"  # pull credentials; default $DOCKER_CONFIG or ~/.docker
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml, Yaml};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Top-level keys; only `FLOTILLA_` variables starting with one of these are
/// read.
const KEYS: &[&str] = &[
    "listen",
    "metrics",
    "insecure_listen",
    "mode",
    "owner_id_var",
    "data_dir",
    "store",
    "queue",
    "database_url",
    "engines",
    "default_engine",
    "default_cluster",
    "clusters",
    "capacities",
    "enabled_workers",
    "auth",
    "tokens",
    "http",
    "workers",
    "limits",
    "retry",
    "local",
    "postgres",
    "sqs",
    "ecs",
    "eks",
    "docker",
    "artifacts",
];

/// Which store keeps definitions and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The SQLite file `<data_dir>/flotilla.db` (kept across restarts).
    #[default]
    Sqlite,
    /// In this process's memory (lost at exit).
    Memory,
    /// PostgreSQL at `database_url`.
    Postgres,
}

/// Which queue carries runs to the submit worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// The SQLite file of the store (needs `store = "sqlite"`).
    #[default]
    Sqlite,
    /// In this process's memory.
    Memory,
    /// PostgreSQL, in the store's database.
    Postgres,
    /// Amazon SQS (settings in `[sqs]`).
    Sqs,
}

/// An engine to configure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    /// Local processes under `data_dir`.
    Local,
    /// AWS ECS (settings in `[ecs]`).
    Ecs,
    /// Kubernetes / EKS (settings in `[eks]`).
    Eks,
    /// Docker containers on one daemon (settings in `[docker]`).
    Docker,
}

impl EngineKind {
    /// The engine's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Ecs => "ecs",
            EngineKind::Eks => "eks",
            EngineKind::Docker => "docker",
        }
    }
}

/// A worker that can be enabled on a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerName {
    /// Submits queued runs.
    Submit,
    /// Follows active runs.
    Status,
    /// Queues failed runs again.
    Retry,
    /// Re-enqueues stale runs.
    Reconcile,
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone may call; owners come from `run_tags.owner_id`. The server
    /// refuses to listen on a non-loopback address in this mode unless
    /// `insecure_listen` is set.
    #[default]
    None,
    /// `Authorization: Bearer <token>` with a token from `tokens`.
    Tokens,
}

/// What a token may do beyond its own definitions and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Defines, executes and changes what it owns.
    #[default]
    User,
    /// A user that may also report the status of any run
    /// (`PUT /{run_id}/status`): for the system that watches containers
    /// outside flotilla's engines.
    Reporter,
    /// Changes and stops anything, reports statuses, manages clusters.
    Admin,
}

/// A bearer token and the identity it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret.
    pub token: String,
    /// The owner runs executed with it get.
    pub owner: String,
    /// Shorthand for `role = "admin"`.
    #[serde(default)]
    pub admin: bool,
    /// `user` (default), `reporter` or `admin`.
    #[serde(default)]
    pub role: TokenRole,
}

impl TokenConfig {
    /// The role in force (`admin = true` means `admin`).
    pub fn effective_role(&self) -> TokenRole {
        if self.admin {
            TokenRole::Admin
        } else {
            self.role
        }
    }
}

/// HTTP settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest request body in bytes (413 above).
    pub body_limit_bytes: usize,
    /// Longest time to receive a request body, in milliseconds (408).
    pub read_timeout_ms: u64,
    /// Longest time to produce a response, body read included, in
    /// milliseconds (408). Log streams are exempt: see `stream_max_ms`.
    pub write_timeout_ms: u64,
    /// Longest life of one log stream (SSE), in milliseconds.
    pub stream_max_ms: u64,
    /// How soon a log stream looks for new text again after reading
    /// some, in milliseconds; the wait doubles while the log stays idle, up
    /// to `stream_poll_max_ms` (a change of the run wakes it at once).
    pub stream_poll_ms: u64,
    /// Longest wait of an idle log stream between reads, in milliseconds.
    pub stream_poll_max_ms: u64,
    /// Open log streams allowed on this server (429 beyond).
    pub max_streams: usize,
    /// Open log streams allowed per identity (429 beyond).
    pub max_streams_per_caller: usize,
    /// Longest serialized `history` page, in bytes: a page stops adding
    /// runs once past it and says `truncated` with `next_offset`.
    pub history_page_bytes: usize,
    /// The history's `total` counts at most this many matching runs: past
    /// it, a page answers this number with `total_capped: true` instead of
    /// counting every match (a count over a million runs read them all on
    /// every page). 0 counts every match, as flotilla-os does.
    pub history_count_limit: u64,
    /// How long `/metrics` reuses its store counts, in milliseconds.
    pub metrics_refresh_ms: u64,
    /// With `auth = "tokens"`, `/metrics` needs a token too.
    pub metrics_auth: bool,
    /// Largest log page one `GET /{run_id}/logs` returns, in bytes.
    pub log_page_bytes: usize,
    /// Origins allowed by CORS and for state-changing browser requests
    /// (`https://ui.example.com`); `["*"]` for any, only with
    /// `auth = "tokens"`; empty for no CORS headers.
    pub cors_origins: Vec<String>,
    /// Host names (`Host` header) the server answers to besides the
    /// loopback names on a loopback listener; when set, enforced on any
    /// listener. Behind a proxy that rewrites `Host`, list the public name.
    pub allowed_hosts: Vec<String>,
    /// How long shutdown waits for in-flight requests, in milliseconds.
    pub shutdown_grace_ms: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            body_limit_bytes: 1024 * 1024,
            read_timeout_ms: 30_000,
            write_timeout_ms: 60_000,
            stream_max_ms: 6 * 3600 * 1000,
            stream_poll_ms: 500,
            stream_poll_max_ms: 4000,
            max_streams: 512,
            max_streams_per_caller: 32,
            history_page_bytes: 16 * 1024 * 1024,
            history_count_limit: 10_000,
            metrics_refresh_ms: 5000,
            metrics_auth: false,
            log_page_bytes: 1024 * 1024,
            cors_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            shutdown_grace_ms: 30_000,
        }
    }
}

/// Local engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSection {
    /// Run directories; `data_dir` when absent.
    pub data_dir: Option<PathBuf>,
}

/// Artifact store settings (`[artifacts]`): where run inputs are staged and
/// outputs uploaded. Only this store is reachable by `input_url`.
///
/// ```toml
/// [artifacts]
/// url = "s3://my-bucket/flotilla"    # or gs://bucket, az://container, file:///dir;
///                                    # default: file://<data_dir>/artifacts
/// endpoint = "http://127.0.0.1:9000" # S3-compatible, GCS or Azure blob endpoint;
///                                    # the cloud's own when absent
/// region = "us-east-1"               # S3
/// # gcs_service_account_path = "/etc/flotilla/gcs.json"
/// # azure_account = "myaccount"      # with azure_access_key, or the environment
/// max_total_bytes = 1073741824       # uncompressed size of a zip
/// max_entries = 10000
/// max_ratio = 200                    # uncompressed:compressed (zip bombs)
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ArtifactsSection {
    /// `s3://bucket[/prefix]`, `gs://bucket[/prefix]`,
    /// `az://container[/prefix]` or `file:///dir`; `<data_dir>/artifacts`
    /// when absent.
    pub url: Option<String>,
    /// The store's endpoint: an S3-compatible server, a GCS base URL or an
    /// Azure blob endpoint including the account; the cloud's own when
    /// absent.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: Option<String>,
    /// Static S3 credentials (for S3-compatible endpoints); the default
    /// chain (environment) when absent.
    pub access_key_id: Option<String>,
    /// Secret of `access_key_id`.
    pub secret_access_key: Option<String>,
    /// GCS service account key file; the environment's credentials when
    /// absent.
    pub gcs_service_account_path: Option<String>,
    /// Azure storage account; `AZURE_STORAGE_ACCOUNT_NAME` when absent.
    pub azure_account: Option<String>,
    /// Azure account access key; the environment's credentials when absent.
    pub azure_access_key: Option<String>,
    /// Limit on a zip's uncompressed size.
    pub max_total_bytes: Option<u64>,
    /// Limit on a zip's files and directories.
    pub max_entries: Option<usize>,
    /// Limit on a zip's compression ratio.
    pub max_ratio: Option<u64>,
}

impl ArtifactsSection {
    /// The configured stores and limits.
    pub fn artifacts(&self, data_dir: &Path) -> Result<flotilla::artifacts::Artifacts> {
        use flotilla::artifacts::{
            ArtifactStore, Artifacts, AzureOptions, GcsOptions, S3Options, ZipLimits,
        };
        let store = match self.url.as_deref() {
            None => ArtifactStore::local(data_dir.join("artifacts")),
            Some(url) if url.starts_with("file://") => {
                ArtifactStore::local(url.trim_start_matches("file://"))
            }
            Some(url) if url.starts_with("s3://") => ArtifactStore::s3(
                url,
                S3Options {
                    endpoint: self.endpoint.clone(),
                    region: self.region.clone(),
                    credentials: self
                        .access_key_id
                        .clone()
                        .zip(self.secret_access_key.clone()),
                },
            ),
            Some(url) if url.starts_with("gs://") => ArtifactStore::gcs(
                url,
                GcsOptions {
                    endpoint: self.endpoint.clone(),
                    service_account_path: self.gcs_service_account_path.clone(),
                },
            ),
            Some(url) if url.starts_with("az://") => ArtifactStore::azure(
                url,
                AzureOptions {
                    account: self.azure_account.clone(),
                    access_key: self.azure_access_key.clone(),
                    endpoint: self.endpoint.clone(),
                },
            ),
            Some(url) => {
                return Err(Error::config(format!(
                    "artifacts.url: {url:?} is none of s3://, gs://, az:// or file://"
                )));
            }
        }
        .map_err(|e| Error::config(format!("artifacts.url: {}", e.message())))?;
        let d = ZipLimits::default();
        Ok(Artifacts::new(store).with_limits(ZipLimits {
            max_total_bytes: self.max_total_bytes.unwrap_or(d.max_total_bytes),
            max_entries: self.max_entries.unwrap_or(d.max_entries),
            max_ratio: self.max_ratio.unwrap_or(d.max_ratio),
        }))
    }
}

/// Docker engine settings (`[docker]`), mapped onto
/// [`flotilla_docker::DockerConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerSection {
    /// The daemon's socket, `unix:///path` (default
    /// `unix:///var/run/docker.sock`).
    pub host: String,
    /// The containers' network mode (default `none`: no network; `bridge`
    /// needs a daemon with a bridge).
    pub network_mode: String,
    /// Archived logs, outcomes and stop requests; `<data_dir>/docker` when
    /// absent.
    pub data_dir: Option<PathBuf>,
    /// Prefix of container names and the engine's label value (distinct per
    /// server sharing a daemon).
    pub name_prefix: String,
    /// Seconds between SIGTERM and SIGKILL on terminate.
    pub stop_grace_seconds: u64,
    /// Remove a container once its outcome is stored (its log archived first).
    pub remove_finished: bool,
    /// The daemon can give containers GPUs (e.g. the NVIDIA container
    /// toolkit is installed); default false: runs with `gpu` are refused.
    pub gpus: bool,
    /// Device-request driver for GPUs (`""`: the daemon's default).
    pub gpu_driver: String,
    /// Docker client configuration with registry credentials; default
    /// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
    pub registry_config: Option<PathBuf>,
}

impl Default for DockerSection {
    fn default() -> Self {
        let d = flotilla_docker::DockerConfig::new("");
        DockerSection {
            host: d.host,
            network_mode: d.network_mode,
            data_dir: None,
            name_prefix: d.name_prefix,
            stop_grace_seconds: d.stop_grace.as_secs(),
            remove_finished: d.remove_finished,
            gpus: d.gpus,
            gpu_driver: d.gpu_driver,
            registry_config: None,
        }
    }
}

impl DockerSection {
    /// The engine's settings, with `default_dir` as the data dir when
    /// `data_dir` is absent.
    pub fn engine_config(&self, default_dir: &Path) -> flotilla_docker::DockerConfig {
        let dir = self
            .data_dir
            .clone()
            .unwrap_or_else(|| default_dir.join("docker"));
        let defaults = flotilla_docker::DockerConfig::new(&dir);
        flotilla_docker::DockerConfig::new(dir)
            .host(self.host.clone())
            .network_mode(self.network_mode.clone())
            .name_prefix(self.name_prefix.clone())
            .stop_grace(std::time::Duration::from_secs(self.stop_grace_seconds))
            .remove_finished(self.remove_finished)
            .gpus(self.gpus, self.gpu_driver.clone())
            .registry_config(self.registry_config.clone().or(defaults.registry_config))
    }

    /// Checks the section.
    pub fn validate(&self) -> Result<()> {
        if !self.host.starts_with("unix://") || self.host.len() <= "unix://".len() {
            return Err(Error::config(
                "docker.host: must be unix:///path/to/docker.sock",
            ));
        }
        if self.network_mode.is_empty() {
            return Err(Error::config("docker.network_mode: must not be empty"));
        }
        let prefix_ok = self
            .name_prefix
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
            && self
                .name_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !prefix_ok {
            return Err(Error::config(
                "docker.name_prefix: use A-Z a-z 0-9 . _ -, starting with a letter or digit",
            ));
        }
        Ok(())
    }
}

/// PostgreSQL settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Pool size.
    pub max_connections: u32,
    /// Apply migrations at start.
    pub migrate: bool,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            max_connections: 10,
            migrate: true,
        }
    }
}

/// One Kubernetes cluster of the EKS engine (`[[eks.clusters]]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EksClusterConfig {
    /// Cluster name (the flotilla cluster runs name).
    pub name: String,
    /// Kubeconfig file; the default kubeconfig (`KUBECONFIG`,
    /// `~/.kube/config`) or the in-cluster service account when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// API server URL without authentication (`kubectl proxy`, tests);
    /// takes precedence over `kubeconfig`.
    pub api_url: Option<String>,
    /// Namespace of Jobs on this cluster; `eks.namespace` when absent.
    pub namespace: Option<String>,
    /// Service account of Jobs on this cluster; `eks.service_account` when
    /// absent.
    pub service_account: Option<String>,
    /// Service accounts a run's label `service-account` may choose here
    /// besides the default (default: none, only the default account).
    pub allowed_service_accounts: Vec<String>,
}

/// Kubernetes / EKS engine settings (`[eks]`), mapped onto
/// [`flotilla_eks::EksSettings`] and, when `s3_bucket` is set,
/// [`flotilla_eks::S3LogSettings`]. Defaults are the engine's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EksConfig {
    /// The engine's name (`Run::engine`).
    pub name: String,
    /// The clusters.
    pub clusters: Vec<EksClusterConfig>,
    /// Default namespace of Jobs.
    pub namespace: String,
    /// Default service account of Jobs.
    pub service_account: Option<String>,
    /// `ttlSecondsAfterFinished` of Jobs.
    pub ttl_seconds_after_finished: i32,
    /// Node label that carries the capacity type (spot / on-demand).
    pub capacity_type_label: String,
    /// Capacity type of runs whose label `capacity-type` names none.
    pub default_capacity_type: Option<String>,
    /// Scheduler of the pods, if not the default one.
    pub scheduler_name: Option<String>,
    /// Seconds in image pull back-off before a run stops (`image_pull`).
    pub image_pull_backoff_threshold: u64,
    /// Seconds a seen Job may be absent before its run stops.
    pub vanished_threshold: u64,
    /// Seconds between safety-net lists while the watch is healthy.
    pub safety_list_interval: u64,
    /// Seconds a finished Job's status is remembered after it is gone.
    pub tombstone_ttl: u64,
    /// Attempts per Kubernetes API call for retriable failures.
    pub api_attempts: u32,
    /// S3 bucket where finished pods' logs are archived; pod logs only when
    /// absent.
    pub s3_bucket: Option<String>,
    /// Key prefix in that bucket.
    pub s3_prefix: String,
    /// Seconds after a run stopped when its archive counts as complete.
    pub s3_complete_after_seconds: u64,
    /// AWS region (S3).
    pub region: Option<String>,
    /// S3 endpoint override (moto, MinIO).
    pub endpoint_url: Option<String>,
    /// The flotilla image whose `flotilla artifacts pull|push` run beside
    /// each job as its input and upload steps; runs on this engine take no
    /// input and upload nothing when absent. Needs an explicit
    /// `[artifacts] url` the pods can reach (their service account's IAM
    /// role is their credential: static `[artifacts]` keys are not passed
    /// to them) and Kubernetes >= 1.29 (native sidecars).
    pub artifacts_helper_image: Option<String>,
    /// `terminationGracePeriodSeconds` of pods with artifacts: how long the
    /// upload step may take after the job exited.
    pub artifacts_upload_grace_seconds: i64,
}

impl Default for EksConfig {
    fn default() -> Self {
        let e = flotilla_eks::EksSettings::default();
        let s3 = flotilla_eks::S3LogSettings::default();
        EksConfig {
            name: e.engine_name,
            clusters: Vec::new(),
            namespace: e.namespace,
            service_account: e.service_account,
            ttl_seconds_after_finished: e.ttl_seconds,
            capacity_type_label: e.capacity_type_label,
            default_capacity_type: e.default_capacity_type,
            scheduler_name: e.scheduler_name,
            image_pull_backoff_threshold: e.image_pull_backoff_threshold,
            vanished_threshold: e.vanished_threshold,
            safety_list_interval: e.safety_list_interval,
            tombstone_ttl: e.tombstone_ttl,
            api_attempts: e.api_attempts,
            s3_bucket: None,
            s3_prefix: s3.prefix,
            s3_complete_after_seconds: s3.complete_after_seconds,
            region: s3.region,
            endpoint_url: s3.endpoint_url,
            artifacts_helper_image: None,
            artifacts_upload_grace_seconds: flotilla_eks::EksArtifacts::default()
                .upload_grace_seconds,
        }
    }
}

impl EksConfig {
    /// The engine settings this section implies.
    pub fn engine_settings(&self) -> flotilla_eks::EksSettings {
        flotilla_eks::EksSettings {
            engine_name: self.name.clone(),
            clusters: self
                .clusters
                .iter()
                .map(|c| flotilla_eks::EksCluster {
                    name: c.name.clone(),
                    kubeconfig: c.kubeconfig.clone(),
                    context: c.context.clone(),
                    api_url: c.api_url.clone(),
                    namespace: c.namespace.clone(),
                    service_account: c.service_account.clone(),
                    allowed_service_accounts: c.allowed_service_accounts.clone(),
                })
                .collect(),
            namespace: self.namespace.clone(),
            service_account: self.service_account.clone(),
            ttl_seconds: self.ttl_seconds_after_finished,
            capacity_type_label: self.capacity_type_label.clone(),
            default_capacity_type: self.default_capacity_type.clone(),
            scheduler_name: self.scheduler_name.clone(),
            image_pull_backoff_threshold: self.image_pull_backoff_threshold,
            vanished_threshold: self.vanished_threshold,
            safety_list_interval: self.safety_list_interval,
            tombstone_ttl: self.tombstone_ttl,
            api_attempts: self.api_attempts,
            artifacts: None,
        }
    }

    /// [`EksConfig::engine_settings`] with the artifact helpers, when
    /// `artifacts_helper_image` is set: they reach the `[artifacts]` store
    /// (its URL, region, endpoint and limits; never its static keys).
    pub fn engine_settings_with(&self, artifacts: &ArtifactsSection) -> flotilla_eks::EksSettings {
        let mut settings = self.engine_settings();
        settings.artifacts =
            self.artifacts_helper_image
                .as_ref()
                .map(|image| flotilla_eks::EksArtifacts {
                    helper_image: image.clone(),
                    store_url: artifacts.url.clone().unwrap_or_default(),
                    region: artifacts.region.clone(),
                    endpoint: artifacts.endpoint.clone(),
                    max_total_bytes: artifacts.max_total_bytes,
                    max_entries: artifacts.max_entries,
                    max_ratio: artifacts.max_ratio,
                    upload_grace_seconds: self.artifacts_upload_grace_seconds,
                });
        settings
    }

    /// The S3 log archive settings, when `s3_bucket` is set.
    pub fn s3_settings(&self) -> Option<flotilla_eks::S3LogSettings> {
        self.s3_bucket
            .as_ref()
            .map(|bucket| flotilla_eks::S3LogSettings {
                bucket: bucket.clone(),
                prefix: self.s3_prefix.clone(),
                region: self.region.clone(),
                endpoint_url: self.endpoint_url.clone(),
                complete_after_seconds: self.s3_complete_after_seconds,
            })
    }

    /// Checks what types alone cannot; the error names the key.
    pub fn validate(&self) -> Result<()> {
        if self.name.trim().is_empty() {
            return Err(Error::config("eks.name: must not be empty"));
        }
        if self.clusters.is_empty() {
            return Err(Error::config(
                "eks.clusters: engines = [\"eks\"] needs at least one [[eks.clusters]] entry",
            ));
        }
        for (i, c) in self.clusters.iter().enumerate() {
            if c.name.trim().is_empty() {
                return Err(Error::config(format!("eks.clusters[{i}].name: required")));
            }
            if self.clusters[..i].iter().any(|o| o.name == c.name) {
                return Err(Error::config(format!(
                    "eks.clusters[{i}].name: '{}' appears twice",
                    c.name
                )));
            }
        }
        if self.ttl_seconds_after_finished < 0 {
            return Err(Error::config(
                "eks.ttl_seconds_after_finished: must not be negative",
            ));
        }
        if self.capacity_type_label.trim().is_empty() {
            return Err(Error::config("eks.capacity_type_label: must not be empty"));
        }
        if self.api_attempts == 0 {
            return Err(Error::config("eks.api_attempts: must be at least 1"));
        }
        if self
            .s3_bucket
            .as_deref()
            .is_some_and(|b| b.trim().is_empty())
        {
            return Err(Error::config("eks.s3_bucket: must not be empty when set"));
        }
        Ok(())
    }
}

/// The whole configuration. Every field has a default, so an empty file
/// (or none) gives the zero-setup server: `127.0.0.1:3000`, the SQLite
/// store and queue in `./.flotilla-data/flotilla.db`, the local engine with
/// data under `./.flotilla-data`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub listen: String,
    /// Allow a non-loopback `listen` with `auth = "none"`.
    pub insecure_listen: bool,
    /// Injected into runs as `FLOTILLA_SERVER_MODE`.
    pub mode: String,
    /// Variable that carries the owner into runs.
    pub owner_id_var: String,
    /// Where local data (run directories, logs) goes.
    pub data_dir: PathBuf,
    /// `sqlite` (the default), `memory` or `postgres`.
    pub store: StoreKind,
    /// `sqlite` (the default), `memory`, `postgres` or `sqs`.
    pub queue: QueueKind,
    /// PostgreSQL URL (also read from `DATABASE_URL`).
    pub database_url: Option<String>,
    /// Engines to configure; the first is the default unless
    /// `default_engine` says otherwise.
    pub engines: Vec<EngineKind>,
    /// Engine of runs that name none.
    pub default_engine: Option<String>,
    /// Cluster of runs that name none.
    pub default_cluster: String,
    /// Clusters accepted without being registered through the API.
    pub clusters: Vec<String>,
    /// Capacity per cluster (`[capacities.default] runs = 2`), for the
    /// dimensions its record (`PUT /clusters/{name}`) leaves unset; the
    /// engine's default (host cores and memory for `local`) after that.
    pub capacities: std::collections::BTreeMap<String, flotilla::Capacity>,
    /// Workers that run on this replica.
    pub enabled_workers: Vec<WorkerName>,
    /// `none` or `tokens`.
    pub auth: AuthMode,
    /// Bearer tokens, for `auth = "tokens"`.
    pub tokens: Vec<TokenConfig>,
    /// HTTP settings.
    pub http: HttpConfig,
    /// Worker intervals and batch sizes (durations in milliseconds).
    pub workers: flotilla::service::WorkerConfig,
    /// Input bounds (`max_page` caps list limits).
    pub limits: flotilla::Limits,
    /// Retry policy.
    pub retry: flotilla::RetryPolicy,
    /// Local engine.
    pub local: LocalSection,
    /// PostgreSQL.
    pub postgres: PostgresConfig,
    /// SQS queue, for `queue = "sqs"` (keys of [`flotilla_sqs::SqsSettings`]).
    pub sqs: flotilla_sqs::SqsSettings,
    /// ECS engine and CloudWatch Logs, for `engines = ["ecs"]` (keys of
    /// [`flotilla_ecs::EcsSettings`]).
    pub ecs: flotilla_ecs::EcsSettings,
    /// Kubernetes / EKS engine, pod logs and S3 log archive, for
    /// `engines = ["eks"]`.
    pub eks: EksConfig,
    /// Docker engine, for `engines = ["docker"]`.
    pub docker: DockerSection,
    /// Artifact store of run inputs and outputs.
    pub artifacts: ArtifactsSection,
    /// Metrics exporters besides `/metrics` (flotilla-os's `metrics.*`).
    pub metrics: MetricsConfig,
}

/// `[metrics]`: exporters besides Prometheus's `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `[metrics.dogstatsd]`: push every metric to a DogStatsD agent.
    pub dogstatsd: DogStatsdConfig,
}

/// `[metrics.dogstatsd]`, flotilla-os's `metrics.dogstatsd.address` and
/// `.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DogStatsdConfig {
    /// Agent address, `host:port` over UDP (or `unixgram:///path`); none:
    /// off.
    pub address: Option<String>,
    /// Prefix of every metric name (`namespace.flotilla_runs_executed_total`).
    pub namespace: Option<String>,
    /// Flush interval in milliseconds (default 1000).
    pub flush_ms: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        let service = flotilla::ServiceConfig::default();
        Config {
            listen: "127.0.0.1:3000".into(),
            insecure_listen: false,
            mode: service.mode,
            owner_id_var: service.owner_id_var,
            data_dir: PathBuf::from(".flotilla-data"),
            store: StoreKind::Sqlite,
            queue: QueueKind::Sqlite,
            database_url: None,
            engines: vec![EngineKind::Local],
            default_engine: None,
            default_cluster: service.default_cluster,
            clusters: service.clusters,
            capacities: service.capacities,
            enabled_workers: vec![
                WorkerName::Submit,
                WorkerName::Status,
                WorkerName::Retry,
                WorkerName::Reconcile,
            ],
            auth: AuthMode::None,
            tokens: Vec::new(),
            http: HttpConfig::default(),
            workers: service.workers,
            limits: service.limits,
            retry: service.retry,
            local: LocalSection::default(),
            postgres: PostgresConfig::default(),
            sqs: flotilla_sqs::SqsSettings::default(),
            ecs: flotilla_ecs::EcsSettings::default(),
            eks: EksConfig::default(),
            docker: DockerSection::default(),
            artifacts: ArtifactsSection::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Config {
    /// Loads defaults, then `file` (when given), then the environment, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(Error::config(format!(
                    "config file {}: not found",
                    path.display()
                )));
            }
            let yaml = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            let file = if yaml {
                Figment::from(Yaml::file_exact(path))
            } else {
                Figment::from(Toml::file_exact(path))
            };
            let mut dict: figment::value::Dict = file
                .extract()
                .map_err(|e| Error::config(format!("config file {}: {e}", path.display())))?;
            // A flotilla-os configuration file's keys, as this server's,
            // under the file's own keys.
            let flotilla_os = crate::flotilla_os_config::translate_file(&mut dict)?;
            fig = fig
                .merge(Serialized::defaults(flotilla_os))
                .merge(Serialized::defaults(dict));
        }
        fig = fig
            .merge(Serialized::defaults(crate::flotilla_os_config::from_env()?))
            .merge(Env::raw().only(&["DATABASE_URL"]))
            .merge(Env::prefixed("FLOTILLA_").split("__").filter(|key| {
                let first = key.as_str().split('.').next().unwrap_or("");
                KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
            }));
        Self::from_figment(fig)
    }

    /// Parses a TOML document (no environment), and validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(fig: Figment) -> Result<Config> {
        let mut config: Config = fig
            .extract()
            .map_err(|e| Error::config(format!("invalid configuration: {e}")))?;
        config.ecs_artifacts_from_store();
        config.validate()?;
        Ok(config)
    }

    /// `[ecs.artifacts]` reaches the server's own store (`[artifacts]`'s
    /// url, region and endpoint) unless it names one: the helpers must
    /// read the inputs the server stages.
    fn ecs_artifacts_from_store(&mut self) {
        let store = &self.artifacts;
        if let Some(a) = self.ecs.artifacts.as_mut() {
            if a.store_url.is_empty()
                && let Some(url) = &store.url
            {
                a.store_url = url.clone();
            }
            if a.region.is_none() {
                a.region = store.region.clone();
            }
            if a.endpoint.is_none() {
                a.endpoint = store.endpoint.clone();
            }
        }
    }

    /// The listen address, parsed.
    pub fn listen_addr(&self) -> Result<SocketAddr> {
        self.listen.parse().map_err(|_| {
            Error::config(format!(
                "listen: '{}' is not an address like 127.0.0.1:3000",
                self.listen
            ))
        })
    }

    /// Checks what types alone cannot.
    pub fn validate(&self) -> Result<()> {
        self.listen_addr()?;
        if self.engines.is_empty() {
            return Err(Error::config("engines: at least one engine is required"));
        }
        if self.auth == AuthMode::Tokens && self.tokens.is_empty() {
            return Err(Error::config(
                "tokens: auth = \"tokens\" needs at least one [[tokens]] entry",
            ));
        }
        for (i, t) in self.tokens.iter().enumerate() {
            if t.token.len() < 8 {
                return Err(Error::config(format!(
                    "tokens[{i}].token: at least 8 characters"
                )));
            }
            if t.owner.trim().is_empty() {
                return Err(Error::config(format!("tokens[{i}].owner: required")));
            }
            if t.admin && t.role == TokenRole::Reporter {
                return Err(Error::config(format!(
                    "tokens[{i}].role: admin = true contradicts role = \"reporter\""
                )));
            }
        }
        if self.auth == AuthMode::None && self.http.cors_origins.iter().any(|o| o == "*") {
            return Err(Error::config(
                "http.cors_origins: \"*\" lets any web page call the API; it needs                  auth = \"tokens\" (or list the allowed origins)",
            ));
        }
        if self.http.body_limit_bytes == 0 {
            return Err(Error::config("http.body_limit_bytes: must be positive"));
        }
        if self.http.read_timeout_ms == 0 || self.http.write_timeout_ms == 0 {
            return Err(Error::config(
                "http.read_timeout_ms / http.write_timeout_ms: must be positive",
            ));
        }
        if self.http.stream_poll_ms == 0 || self.http.log_page_bytes == 0 {
            return Err(Error::config(
                "http.stream_poll_ms / http.log_page_bytes: must be positive",
            ));
        }
        if self.http.max_streams == 0
            || self.http.max_streams_per_caller == 0
            || self.http.history_page_bytes == 0
        {
            return Err(Error::config(
                "http.max_streams / http.max_streams_per_caller / http.history_page_bytes: \
                 must be positive",
            ));
        }
        if self.limits.max_page == 0 {
            return Err(Error::config("limits.max_page: must be positive"));
        }
        if self.store == StoreKind::Postgres && self.database_url.is_none() {
            return Err(Error::config(
                "database_url: required when store = \"postgres\" (or set DATABASE_URL)",
            ));
        }
        if self.queue == QueueKind::Sqlite && self.store != StoreKind::Sqlite {
            return Err(Error::config(
                "queue: \"sqlite\" (the default) needs store = \"sqlite\" (it shares the store's file); \
                 set queue = \"memory\", \"postgres\" or \"sqs\" with this store",
            ));
        }
        if self.queue == QueueKind::Postgres && self.store != StoreKind::Postgres {
            return Err(Error::config(
                "queue: \"postgres\" needs store = \"postgres\" (it shares the store's database)",
            ));
        }
        for (i, kind) in self.engines.iter().enumerate() {
            if self.engines[..i].contains(kind) {
                return Err(Error::config(format!(
                    "engines: \"{}\" appears twice",
                    kind.as_str()
                )));
            }
        }
        if self.queue == QueueKind::Sqs {
            self.sqs
                .validate()
                .map_err(|e| Error::config(format!("sqs.{}", e.message())))?;
        }
        if self.engines.contains(&EngineKind::Ecs) {
            self.ecs
                .validate()
                .map_err(|e| Error::config(format!("ecs.{}", e.message())))?;
        }
        if self.engines.contains(&EngineKind::Eks) {
            self.eks.validate()?;
            if let Some(image) = &self.eks.artifacts_helper_image {
                if image.trim().is_empty() {
                    return Err(Error::config(
                        "eks.artifacts_helper_image: must not be empty when set",
                    ));
                }
                match self.artifacts.url.as_deref() {
                    Some(u) if u.starts_with("s3://") || u.starts_with("file:///") => {}
                    _ => {
                        return Err(Error::config(
                            "artifacts.url: eks.artifacts_helper_image needs an explicit s3:// \
                             (or shared file:///) store the pods can reach",
                        ));
                    }
                }
                if self.eks.artifacts_upload_grace_seconds < 1 {
                    return Err(Error::config(
                        "eks.artifacts_upload_grace_seconds: must be at least 1",
                    ));
                }
            }
        }
        if self.engines.contains(&EngineKind::Docker) {
            self.docker.validate()?;
        }
        Ok(())
    }

    /// The core service settings this configuration implies.
    pub fn service_config(&self) -> flotilla::ServiceConfig {
        let mut workers = self.workers.clone();
        workers.enabled = flotilla::service::EnabledWorkers {
            submit: self.enabled_workers.contains(&WorkerName::Submit),
            status: self.enabled_workers.contains(&WorkerName::Status),
            retry: self.enabled_workers.contains(&WorkerName::Retry),
            reconcile: self.enabled_workers.contains(&WorkerName::Reconcile),
        };
        flotilla::ServiceConfig {
            default_cluster: self.default_cluster.clone(),
            clusters: self.clusters.clone(),
            capacities: self.capacities.clone(),
            default_engine: self.default_engine.clone(),
            mode: self.mode.clone(),
            owner_id_var: self.owner_id_var.clone(),
            limits: self.limits.clone(),
            retry: self.retry.clone(),
            workers,
            replica_id: String::new(),
            host_engines: flotilla::ServiceConfig::default().host_engines,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_zero_setup_server() {
        let c = Config::from_toml("").expect("defaults");
        assert_eq!(c.listen, "127.0.0.1:3000");
        assert_eq!(c.store, StoreKind::Sqlite);
        assert_eq!(c.queue, QueueKind::Sqlite);
        let c = Config::from_toml("store = \"memory\"\nqueue = \"memory\"").expect("memory");
        assert_eq!((c.store, c.queue), (StoreKind::Memory, QueueKind::Memory));
        let e = Config::from_toml("store = \"memory\"").expect_err("sqlite queue, memory store");
        assert!(e.to_string().contains("queue"), "{e}");
        assert_eq!(c.engines, vec![EngineKind::Local]);
        assert!(c.service_config().workers.enabled.submit);
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Config::from_toml("[http]\nbody_limit_bytes = \"big\"").expect_err("type");
        assert!(e.to_string().contains("body_limit_bytes"), "{e}");
        let e = Config::from_toml("lisen = \"x\"").expect_err("unknown");
        assert!(e.to_string().contains("lisen"), "{e}");
        let e = Config::from_toml("listen = \"nowhere\"").expect_err("addr");
        assert!(e.to_string().contains("listen"), "{e}");
        let e = Config::from_toml("store = \"mongo\"").expect_err("store");
        assert!(e.to_string().contains("store"), "{e}");
        let e = Config::from_toml("auth = \"tokens\"").expect_err("tokens");
        assert!(e.to_string().contains("tokens"), "{e}");
        let e = Config::from_toml(
            "auth = \"tokens\"\n[[tokens]]\ntoken = \"abcdefgh1\"\nowner = \"w\"\nadmin = true\nrole = \"reporter\"",
        )
        .expect_err("role");
        assert!(e.to_string().contains("tokens[0].role"), "{e}");
        let e = Config::from_toml("store = \"postgres\"").expect_err("url");
        assert!(e.to_string().contains("database_url"), "{e}");
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn environment_overrides_the_file() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "f.toml",
                "listen = \"127.0.0.1:4000\"\n[http]\nbody_limit_bytes = 10\n",
            )?;
            jail.set_env("FLOTILLA_LISTEN", "127.0.0.1:5000");
            jail.set_env("FLOTILLA_HTTP__BODY_LIMIT_BYTES", "20");
            jail.set_env("FLOTILLA_CLUSTERS", "[default,gpu]");
            jail.set_env("FLOTILLA_SERVER", "http://elsewhere");
            jail.set_env("FLOTILLA_RUN_ID", "ignored");
            jail.set_env("DATABASE_URL", "postgres://x/y");
            let c = Config::load(Some(Path::new("f.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:5000");
            assert_eq!(c.http.body_limit_bytes, 20);
            assert_eq!(c.clusters, vec!["default".to_string(), "gpu".to_string()]);
            assert_eq!(c.database_url.as_deref(), Some("postgres://x/y"));
            jail.set_env("FLOTILLA_HTTP__BODY_LIMIT_BYTES", "many");
            let e = Config::load(Some(Path::new("f.toml"))).expect_err("bad env");
            assert!(
                e.to_string()
                    .to_lowercase()
                    .contains("http.body_limit_bytes"),
                "{e}"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn flotilla_os_settings_carry_over() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "flotilla-os.yml",
                "flotilla_mode: prod\n\
                 database_url: postgres://u@127.0.0.1/db\n\
                 state_manager: postgres\n\
                 queue_manager: postgres\n\
                 http:\n  server:\n    listen_address: \"127.0.0.1:3999\"\n\
                 worker:\n  submit_interval: 500ms\n  status_interval: 5s\n  retry_interval: 1m30s\n\
                 enabled_workers: [submit, status]\n\
                 owner_id_var: FLOTILLA_RUN_OWNER_ID\n\
                 metrics:\n  dogstatsd:\n    address: 127.0.0.1:8125\n    namespace: flotilla\n",
            )?;
            let c = Config::load(Some(Path::new("flotilla-os.yml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.mode, "prod");
            assert_eq!(c.store, StoreKind::Postgres);
            assert_eq!(c.queue, QueueKind::Postgres);
            assert_eq!(c.listen, "127.0.0.1:3999");
            assert_eq!(
                c.workers.receive_wait,
                std::time::Duration::from_millis(500)
            );
            assert_eq!(
                c.workers.status_poll_interval,
                std::time::Duration::from_secs(5)
            );
            assert_eq!(
                c.workers.reconcile_interval,
                std::time::Duration::from_secs(90)
            );
            assert_eq!(
                c.enabled_workers,
                vec![WorkerName::Submit, WorkerName::Status]
            );
            assert_eq!(c.owner_id_var, "FLOTILLA_RUN_OWNER_ID");
            assert_eq!(
                c.metrics.dogstatsd.address.as_deref(),
                Some("127.0.0.1:8125")
            );
            assert_eq!(c.metrics.dogstatsd.namespace.as_deref(), Some("flotilla"));
            // In one file, this server's own keys win over flotilla-os's,
            // and the rest of a shared section stays.
            jail.create_file(
                "both.yml",
                "listen: 127.0.0.1:4001\nhttp:\n  body_limit_bytes: 77\n  server:\n    listen_address: 127.0.0.1:4002\n",
            )?;
            let c = Config::load(Some(Path::new("both.yml"))).map_err(|e| e.to_string())?;
            assert_eq!(
                (c.listen.as_str(), c.http.body_limit_bytes),
                ("127.0.0.1:4001", 77)
            );
            // flotilla-os's environment variables, under this server's own.
            jail.set_env("HTTP_SERVER_LISTEN_ADDRESS", ":3000");
            jail.set_env("WORKER_STATUS_INTERVAL", "2s");
            jail.set_env("ENABLED_WORKERS", "retry, submit");
            jail.set_env("METRICS_DOGSTATSD_NAMESPACE", "from_env");
            jail.set_env("FLOTILLA_MODE", "dev");
            let c = Config::load(Some(Path::new("flotilla-os.yml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "0.0.0.0:3000", "Go's :3000 is every interface");
            assert_eq!(
                c.workers.status_poll_interval,
                std::time::Duration::from_secs(2)
            );
            assert_eq!(
                c.enabled_workers,
                vec![WorkerName::Retry, WorkerName::Submit]
            );
            assert_eq!(c.metrics.dogstatsd.namespace.as_deref(), Some("from_env"));
            assert_eq!(c.mode, "dev");
            jail.set_env("FLOTILLA_LISTEN", "127.0.0.1:4444");
            let c = Config::load(Some(Path::new("flotilla-os.yml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:4444", "this server's own names win");
            // Bad values name the flotilla-os key.
            jail.set_env("WORKER_STATUS_INTERVAL", "soon");
            let e = Config::load(None).expect_err("bad duration");
            assert!(e.to_string().contains("worker.status_interval"), "{e}");
            jail.set_env("WORKER_STATUS_INTERVAL", "2s");
            jail.create_file("bad.yml", "state_manager: mysql\n")?;
            let e = Config::load(Some(Path::new("bad.yml"))).expect_err("bad manager");
            assert!(e.to_string().contains("state_manager"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn yaml_files_are_read_by_extension() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "f.yaml",
                "listen: 127.0.0.1:4001\nauth: tokens\ntokens:\n  - token: abcdefgh1\n    owner: ann\n    admin: true\n",
            )?;
            let c = Config::load(Some(Path::new("f.yaml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.listen, "127.0.0.1:4001");
            assert_eq!(c.auth, AuthMode::Tokens);
            assert!(c.tokens[0].admin);
            let e = Config::load(Some(Path::new("missing.toml"))).expect_err("missing");
            assert!(e.to_string().contains("not found"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn capacities_are_read_per_cluster_and_reach_the_service() {
        let c =
            Config::from_toml("[capacities.default]\nruns = 2\nmemory = 1024\n").expect("config");
        let want = flotilla::Capacity {
            memory: Some(1024),
            ..flotilla::Capacity::runs(2)
        };
        assert_eq!(c.service_config().capacities.get("default"), Some(&want));
    }

    #[test]
    fn ecs_artifacts_helpers_reach_the_servers_store() {
        let c = Config::from_toml(
            r#"
            engines = ["ecs"]
            [artifacts]
            url = "s3://bucket/flotilla"
            region = "eu-west-1"
            [ecs.artifacts]
            helper_image = "flotilla:1"
            "#,
        )
        .expect("config");
        let a = c.ecs.artifacts.expect("ecs.artifacts");
        assert_eq!(a.store_url, "s3://bucket/flotilla");
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        // The local default store is out of the helpers' reach.
        let e = Config::from_toml("engines = [\"ecs\"]\n[ecs.artifacts]\nhelper_image = \"f\"\n")
            .expect_err("no store");
        assert!(e.to_string().contains("ecs.artifacts.store_url"), "{e}");
    }

    #[test]
    fn backend_section_typos_name_the_key() {
        let e = Config::from_toml("[sqs]\nnamespace = \"x\"").expect_err("old key");
        assert!(e.to_string().contains("namespace"), "{e}");
        let e = Config::from_toml("[ecs]\nlaunch_type = \"EC3\"").expect_err("launch type");
        assert!(e.to_string().contains("launch_type"), "{e}");
        let e = Config::from_toml("[eks]\nttl = 5").expect_err("eks key");
        assert!(e.to_string().contains("ttl"), "{e}");
        let e = Config::from_toml("[[eks.clusters]]\nnam = \"k\"").expect_err("cluster key");
        assert!(e.to_string().contains("nam"), "{e}");
    }

    #[test]
    fn backend_sections_parse() {
        let c = Config::from_toml(
            r#"
            queue = "sqs"
            engines = ["ecs", "eks"]
            enabled_workers = ["submit"]
            [sqs]
            region = "us-east-1"
            queue_namespace = "prod"
            retention_seconds = 3600
            visibility_timeout_seconds = 30
            [sqs.credentials]
            access_key_id = "AKID"
            secret_access_key = "secret"
            [ecs]
            clusters = ["c1"]
            launch_type = "FARGATE"
            subnets = ["subnet-1"]
            security_groups = ["sg-1"]
            log_group = "lg"
            [eks]
            ttl_seconds_after_finished = 60
            s3_bucket = "logs"
            [[eks.clusters]]
            name = "k1"
            kubeconfig = "/tmp/kc"
            context = "ctx"
            namespace = "jobs"
            service_account = "runner"
            [workers]
            status_poll_interval = 250
            "#,
        )
        .expect("parse");
        assert_eq!(c.queue, QueueKind::Sqs);
        assert_eq!(c.eks.clusters[0].name, "k1");
        assert_eq!(c.sqs.queue_namespace, "prod");
        assert_eq!(
            c.sqs.credentials.as_ref().map(|k| k.access_key_id.as_str()),
            Some("AKID")
        );
        assert_eq!(c.ecs.launch_type, flotilla_ecs::LaunchType::Fargate);
        let eks = c.eks.engine_settings();
        assert_eq!(eks.ttl_seconds, 60);
        assert_eq!(eks.clusters[0].namespace.as_deref(), Some("jobs"));
        assert_eq!(eks.capacity_type_label, "karpenter.sh/capacity-type");
        let s3 = c.eks.s3_settings().expect("s3 archive configured");
        assert_eq!(s3.bucket, "logs");
        assert_eq!(
            c.workers.status_poll_interval,
            std::time::Duration::from_millis(250)
        );
        assert!(!c.service_config().workers.enabled.status);
    }

    #[test]
    fn eks_artifact_helpers_reach_the_artifacts_store_without_its_keys() {
        let text = |url: &str| {
            format!(
                r#"
                engines = ["eks"]
                [artifacts]
                {url}
                region = "eu-west-1"
                access_key_id = "AKID"
                secret_access_key = "secret"
                [eks]
                artifacts_helper_image = "flotilla:1"
                [[eks.clusters]]
                name = "k1"
                "#
            )
        };
        let c = Config::from_toml(&text(r#"url = "s3://bucket/art""#)).expect("parse");
        c.validate().expect("valid");
        let a = c
            .eks
            .engine_settings_with(&c.artifacts)
            .artifacts
            .expect("helpers");
        assert_eq!(a.helper_image, "flotilla:1");
        assert_eq!(a.store_url, "s3://bucket/art");
        assert_eq!(a.region.as_deref(), Some("eu-west-1"));
        assert_eq!(a.upload_grace_seconds, 300);
        assert!(c.eks.engine_settings().artifacts.is_none());
        // The default store is the server's own directory: no pod reaches it.
        let e = Config::from_toml(&text("")).expect_err("no store the pods reach");
        assert!(e.to_string().contains("artifacts.url"), "{e}");
    }
}
