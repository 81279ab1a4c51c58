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
//! store = "memory"          # memory | postgres
//! queue = "memory"          # memory | postgres | sqs
//! engines = ["local"]       # local | ecs | eks
//! auth = "tokens"           # none | tokens
//! [[tokens]]
//! token = "s3cret"
//! owner = "alice"
//! admin = true
//! [http]
//! body_limit_bytes = 1048576
//! cors_origins = ["https://flotilla.example.com"]
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
];

/// Which store keeps definitions and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In this process's memory (lost at exit).
    #[default]
    Memory,
    /// PostgreSQL at `database_url`.
    Postgres,
}

/// Which queue carries runs to the submit worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    /// In this process's memory.
    #[default]
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
}

impl EngineKind {
    /// The engine's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EngineKind::Local => "local",
            EngineKind::Ecs => "ecs",
            EngineKind::Eks => "eks",
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

/// A bearer token and the identity it stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The secret.
    pub token: String,
    /// The owner runs executed with it get.
    pub owner: String,
    /// Admins may terminate any run and manage clusters.
    #[serde(default)]
    pub admin: bool,
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
    /// How often a log stream looks for new text, in milliseconds.
    pub stream_poll_ms: u64,
    /// Largest log page one `GET /{run_id}/logs` returns, in bytes.
    pub log_page_bytes: usize,
    /// Origins allowed by CORS; `["*"]` for any; empty for no CORS headers.
    pub cors_origins: Vec<String>,
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
            log_page_bytes: 1024 * 1024,
            cors_origins: Vec::new(),
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

/// Amazon SQS queue settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SqsConfig {
    /// AWS region.
    pub region: Option<String>,
    /// Endpoint override (moto, LocalStack).
    pub endpoint_url: Option<String>,
    /// Prefix of queue names.
    pub namespace: String,
    /// Message retention in seconds.
    pub retention_seconds: u32,
    /// Visibility timeout (time to process a message) in seconds.
    pub process_time_seconds: u32,
}

impl Default for SqsConfig {
    fn default() -> Self {
        SqsConfig {
            region: None,
            endpoint_url: None,
            namespace: "flotilla".into(),
            retention_seconds: 4 * 24 * 3600,
            process_time_seconds: 60,
        }
    }
}

/// AWS ECS engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EcsConfig {
    /// AWS region.
    pub region: Option<String>,
    /// Endpoint override (moto).
    pub endpoint_url: Option<String>,
    /// ECS clusters runs may be sent to.
    pub clusters: Vec<String>,
    /// `EC2` or `FARGATE`.
    pub launch_type: String,
    /// Subnets for awsvpc networking.
    pub subnets: Vec<String>,
    /// Security groups for awsvpc networking.
    pub security_groups: Vec<String>,
    /// CloudWatch Logs group of task output.
    pub log_group: String,
    /// Prefix of task definition families.
    pub namespace: String,
}

impl Default for EcsConfig {
    fn default() -> Self {
        EcsConfig {
            region: None,
            endpoint_url: None,
            clusters: Vec::new(),
            launch_type: "EC2".into(),
            subnets: Vec::new(),
            security_groups: Vec::new(),
            log_group: "flotilla".into(),
            namespace: "flotilla".into(),
        }
    }
}

/// One Kubernetes cluster of the EKS engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct EksClusterConfig {
    /// Cluster name (the flotilla cluster runs name).
    pub name: String,
    /// Kubeconfig file; in-cluster config when absent.
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    pub context: Option<String>,
    /// Namespace of Jobs.
    pub namespace: Option<String>,
    /// Service account of Jobs.
    pub service_account: Option<String>,
}

/// Kubernetes / EKS engine settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EksConfig {
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
    /// S3 bucket where finished pods' logs are archived.
    pub s3_bucket: Option<String>,
    /// Key prefix in that bucket.
    pub s3_prefix: String,
    /// AWS region (S3).
    pub region: Option<String>,
    /// S3 endpoint override (moto).
    pub endpoint_url: Option<String>,
}

impl Default for EksConfig {
    fn default() -> Self {
        EksConfig {
            clusters: Vec::new(),
            namespace: "flotilla".into(),
            service_account: None,
            ttl_seconds_after_finished: 3600,
            capacity_type_label: "eks.amazonaws.com/capacityType".into(),
            s3_bucket: None,
            s3_prefix: "logs/".into(),
            region: None,
            endpoint_url: None,
        }
    }
}

/// The whole configuration. Every field has a default, so an empty file
/// (or none) gives the zero-setup server: `127.0.0.1:3000`, memory store
/// and queue, the local engine with data under `./.flotilla-data`.
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
    /// `memory` or `postgres`.
    pub store: StoreKind,
    /// `memory`, `postgres` or `sqs`.
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
    /// SQS.
    pub sqs: SqsConfig,
    /// ECS.
    pub ecs: EcsConfig,
    /// EKS.
    pub eks: EksConfig,
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
            store: StoreKind::Memory,
            queue: QueueKind::Memory,
            database_url: None,
            engines: vec![EngineKind::Local],
            default_engine: None,
            default_cluster: service.default_cluster,
            clusters: service.clusters,
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
            sqs: SqsConfig::default(),
            ecs: EcsConfig::default(),
            eks: EksConfig::default(),
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
            fig = if yaml {
                fig.merge(Yaml::file_exact(path))
            } else {
                fig.merge(Toml::file_exact(path))
            };
        }
        fig = fig.merge(Env::raw().only(&["DATABASE_URL"])).merge(
            Env::prefixed("FLOTILLA_").split("__").filter(|key| {
                let first = key.as_str().split('.').next().unwrap_or("");
                KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
            }),
        );
        Self::from_figment(fig)
    }

    /// Parses a TOML document (no environment), and validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        Self::from_figment(
            Figment::from(Serialized::defaults(Config::default())).merge(Toml::string(text)),
        )
    }

    fn from_figment(fig: Figment) -> Result<Config> {
        let config: Config = fig
            .extract()
            .map_err(|e| Error::config(format!("invalid configuration: {e}")))?;
        config.validate()?;
        Ok(config)
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
        if self.limits.max_page == 0 {
            return Err(Error::config("limits.max_page: must be positive"));
        }
        if self.store == StoreKind::Postgres && self.database_url.is_none() {
            return Err(Error::config(
                "database_url: required when store = \"postgres\" (or set DATABASE_URL)",
            ));
        }
        if self.queue == QueueKind::Postgres && self.store != StoreKind::Postgres {
            return Err(Error::config(
                "queue: \"postgres\" needs store = \"postgres\" (it shares the store's database)",
            ));
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
            default_engine: self.default_engine.clone(),
            mode: self.mode.clone(),
            owner_id_var: self.owner_id_var.clone(),
            limits: self.limits.clone(),
            retry: self.retry.clone(),
            workers,
            replica_id: String::new(),
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
        assert_eq!(c.store, StoreKind::Memory);
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
    fn backend_sections_parse() {
        let c = Config::from_toml(
            r#"
            queue = "sqs"
            engines = ["ecs", "eks"]
            enabled_workers = ["submit"]
            [sqs]
            region = "us-east-1"
            namespace = "prod"
            retention_seconds = 3600
            process_time_seconds = 30
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
        assert_eq!(
            c.workers.status_poll_interval,
            std::time::Duration::from_millis(250)
        );
        assert!(!c.service_config().workers.enabled.status);
    }
}
