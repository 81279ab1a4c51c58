//! # flotilla-http
//!
//! The flotilla reference server: the flotilla-os compatible REST API
//! (`/api/v6`, `/api/v1`), live log streaming, token authentication,
//! Prometheus metrics, an OpenAPI document, configuration and wiring of the
//! backends, and the `flotilla` command line client.
//!
//! Mount the API in your own service with [`router`]:
//!
//! ```no_run
//! # async fn demo() -> flotilla_http::Result<()> {
//! let flotilla = flotilla::Flotilla::builder().build_local("/tmp/flotilla-data")?;
//! let workers = flotilla.start();
//! let app = flotilla_http::router(flotilla_http::AppState::new(flotilla));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await
//!     .map_err(|e| flotilla_http::Error::io(e.to_string()))?;
//! axum::serve(listener, app).await.map_err(|e| flotilla_http::Error::io(e.to_string()))?;
//! workers.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! or run everything from a [`Config`] with [`serve`] / [`spawn`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod api;
pub mod auth;
pub mod browser;
pub mod cli;
pub mod client;
pub mod config;
pub mod error;
pub mod extract;
pub mod flotilla_os_config;
pub mod headers;
pub mod host_claim;
pub mod metrics;
pub mod streams;
pub mod ui;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::trace::TraceLayer;

pub use auth::{Auth, Caller, Identity};
pub use config::{AuthMode, Config, EngineKind, HttpConfig, QueueKind, StoreKind};
pub use error::{Error, ErrorKind, Result};

struct StateInner {
    flotilla: flotilla::Flotilla,
    auth: Auth,
    http: HttpConfig,
    metrics: Option<PrometheusHandle>,
    openapi: OnceLock<utoipa::openapi::OpenApi>,
    shutdown: CancellationToken,
    listen: OnceLock<SocketAddr>,
    streams: streams::StreamLimiter,
    gauges_at: tokio::sync::Mutex<Option<tokio::time::Instant>>,
}

/// What every handler shares: the service, authentication, HTTP limits and
/// the metrics handle. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("flotilla", &self.0.flotilla)
            .field("auth", &self.0.auth.mode())
            .finish()
    }
}

impl AppState {
    /// State with no authentication and default HTTP limits.
    pub fn new(flotilla: flotilla::Flotilla) -> Self {
        Self::with(flotilla, Auth::none(), HttpConfig::default())
    }

    /// State with the given authentication and HTTP settings.
    pub fn with(flotilla: flotilla::Flotilla, auth: Auth, http: HttpConfig) -> Self {
        AppState(Arc::new(StateInner {
            flotilla,
            auth,
            http,
            metrics: metrics::prometheus(),
            openapi: OnceLock::new(),
            shutdown: CancellationToken::new(),
            listen: OnceLock::new(),
            streams: streams::StreamLimiter::default(),
            gauges_at: tokio::sync::Mutex::new(None),
        }))
    }

    /// The service.
    pub fn flotilla(&self) -> &flotilla::Flotilla {
        &self.0.flotilla
    }

    /// Authentication.
    pub fn auth(&self) -> &Auth {
        &self.0.auth
    }

    /// HTTP settings.
    pub fn http(&self) -> &HttpConfig {
        &self.0.http
    }

    /// The Prometheus handle, if this process's recorder is ours.
    pub fn metrics(&self) -> Option<&PrometheusHandle> {
        self.0.metrics.as_ref()
    }

    /// The OpenAPI document of the router built from this state.
    pub fn openapi(&self) -> &utoipa::openapi::OpenApi {
        self.0
            .openapi
            .get_or_init(|| api::finish_openapi(api::versioned(self).split_for_parts().1))
    }

    /// Records the address the router is served on; on a loopback address
    /// the `Host` header must then name the loopback (see [`browser`]).
    /// The first call wins.
    pub fn set_listen_addr(&self, addr: SocketAddr) {
        let _ = self.0.listen.set(addr);
    }

    /// The address recorded by [`AppState::set_listen_addr`].
    pub fn listen_addr(&self) -> Option<SocketAddr> {
        self.0.listen.get().copied()
    }

    /// Cancelled when the server shuts down (ends log streams).
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    pub(crate) fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.0.http.read_timeout_ms)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.0.http.write_timeout_ms)
    }

    pub(crate) fn body_limit(&self) -> usize {
        self.0.http.body_limit_bytes
    }

    pub(crate) fn log_page_bytes(&self) -> usize {
        self.0.http.log_page_bytes
    }

    pub(crate) fn stream_poll(&self) -> Duration {
        Duration::from_millis(self.0.http.stream_poll_ms)
    }

    pub(crate) fn stream_poll_max(&self) -> Duration {
        Duration::from_millis(
            self.0
                .http
                .stream_poll_max_ms
                .max(self.0.http.stream_poll_ms),
        )
    }

    /// The open log streams.
    pub fn streams(&self) -> &streams::StreamLimiter {
        &self.0.streams
    }

    /// When `/metrics` last counted in the store.
    pub(crate) fn gauges_at(&self) -> &tokio::sync::Mutex<Option<tokio::time::Instant>> {
        &self.0.gauges_at
    }

    pub(crate) fn stream_max(&self) -> Duration {
        Duration::from_millis(self.0.http.stream_max_ms)
    }
}

/// Middleware: answers 408 when the handler (body read included) takes
/// longer than `http.write_timeout_ms`.
pub(crate) async fn write_timeout(
    State(state): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let limit = state.write_timeout();
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => Error::new(
            ErrorKind::Timeout,
            format!("request: no response within {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

async fn not_found(req: Request) -> Response {
    Error::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ))
    .into_response()
}

async fn method_not_allowed(req: Request) -> Response {
    let mut resp = Error::invalid(format!(
        "method {} is not allowed on {}",
        req.method(),
        req.uri().path()
    ))
    .into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}

fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers(Any)
        .expose_headers(Any);
    if origins.iter().any(|o| o == "*") {
        return Some(base.allow_origin(Any));
    }
    let list: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    Some(base.allow_origin(AllowOrigin::list(list)))
}

/// The whole HTTP application: the API under `/api/v6` and `/api/v1`,
/// `/api/openapi.json`, `/health`, `/metrics` and the UI at `/`.
pub fn router(state: AppState) -> Router {
    let (api, doc) = api::versioned(&state).split_for_parts();
    let _ = state.0.openapi.set(api::finish_openapi(doc));
    let mut app = Router::new()
        .merge(api)
        .route("/api/openapi.json", get(api::openapi_json))
        .route("/health", get(api::health))
        .route("/metrics", get(metrics::render))
        .merge(ui::routes())
        .route_layer(middleware::from_fn(metrics::track))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.body_limit()))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            browser::guard,
        ));
    if let Some(c) = cors(&state.http().cors_origins) {
        app = app.layer(c);
    }
    app.layer(middleware::map_response(headers::security_headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Builds the service from the configuration: store, queue, engines and
/// log sources. Each engine's log source is registered under the engine's
/// name: `local` → `LocalLogSource`, `ecs` → `CloudWatchLogs` (the log group
/// is created when missing and allowed), `eks` → `PodLogs`, or
/// `PodThenS3Logs` when `eks.s3_bucket` is set, `docker` → `DockerLogs`
/// (containers' output, archived under `docker.data_dir`). A backend that cannot start
/// fails with a configuration error naming its section or key.
pub async fn build_service(config: &Config) -> Result<flotilla::Flotilla> {
    config.validate()?;
    let artifacts = config.artifacts.artifacts(&config.data_dir)?;
    let mut builder = flotilla::Flotilla::builder()
        .config(config.service_config())
        .artifacts(artifacts.clone());
    let mut pg_queue = None;
    let mut sqlite_queue = None;
    match config.store {
        StoreKind::Memory => {}
        StoreKind::Sqlite => {
            let path = config.data_dir.join("flotilla.db");
            let store = flotilla_sqlite::SqliteStore::open(
                &path,
                flotilla_sqlite::SqliteOptions::default(),
            )
            .await
            .map_err(|e| Error::config(format!("data_dir: {}: {e}", path.display())))?;
            sqlite_queue = Some(store.queue());
            builder = builder.store(Arc::new(store));
        }
        StoreKind::Postgres => {
            let url = config
                .database_url
                .as_deref()
                .ok_or_else(|| Error::config("database_url: required when store = \"postgres\""))?;
            let opts = flotilla_postgres::PgOptions {
                max_connections: config.postgres.max_connections.max(2),
                migrate: config.postgres.migrate,
                ..flotilla_postgres::PgOptions::default()
            };
            let store = flotilla_postgres::PgStore::connect(url, opts)
                .await
                .map_err(|e| Error::config(format!("database_url: {e}")))?;
            pg_queue = Some(store.queue());
            builder = builder.store(Arc::new(store));
        }
    }
    match config.queue {
        QueueKind::Memory => {}
        QueueKind::Sqlite => {
            let Some(queue) = sqlite_queue else {
                return Err(Error::config("queue: \"sqlite\" needs store = \"sqlite\""));
            };
            builder = builder.queue(Arc::new(queue));
        }
        QueueKind::Postgres => {
            let Some(queue) = pg_queue else {
                return Err(Error::config(
                    "queue: \"postgres\" needs store = \"postgres\"",
                ));
            };
            builder = builder.queue(Arc::new(queue));
        }
        QueueKind::Sqs => {
            let queue = flotilla_sqs::SqsQueue::new(config.sqs.clone())
                .await
                .map_err(|e| backend_error("sqs", &e))?;
            builder = builder.queue(Arc::new(queue));
        }
    }
    for kind in &config.engines {
        match kind {
            EngineKind::Local => {
                let dir = config
                    .local
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.clone());
                std::fs::create_dir_all(&dir).map_err(|e| {
                    Error::config(format!("data_dir: cannot create {}: {e}", dir.display()))
                })?;
                let engine = Arc::new(flotilla::local::LocalEngine::with_config(
                    flotilla::local::LocalConfig::new(dir).artifacts(artifacts.clone()),
                )?);
                let logs = Arc::new(flotilla::local::LocalLogSource::new(engine.clone()));
                builder = builder.engine(engine).log_source("local", logs);
            }
            EngineKind::Ecs => {
                let settings = config.ecs.clone();
                let engine = flotilla_ecs::EcsEngine::new(settings.clone())
                    .await
                    .map_err(|e| backend_error("ecs", &e))?;
                let logs = flotilla_ecs::CloudWatchLogs::new(settings)
                    .await
                    .map_err(|e| backend_error("ecs", &e))?;
                if let Err(e) = logs.ensure_log_group().await {
                    // The group may be managed elsewhere (and this role may
                    // not be allowed to create it): tasks fail visibly if it
                    // is really missing.
                    tracing::warn!(
                        log_group = %config.ecs.log_group,
                        "ecs.log_group: cannot ensure the log group exists: {e}"
                    );
                }
                let name = flotilla::Engine::name(&engine).to_string();
                builder = builder
                    .engine(Arc::new(engine))
                    .log_source(name, Arc::new(logs));
            }
            EngineKind::Eks => {
                let engine = flotilla_eks::EksEngine::new(
                    config.eks.engine_settings_with(&config.artifacts),
                )
                .await
                .map_err(|e| backend_error("eks", &e))?;
                let name = flotilla::Engine::name(&engine).to_string();
                let pods = flotilla_eks::PodLogs::new(&engine);
                let logs: Arc<dyn flotilla::LogSource> = match config.eks.s3_settings() {
                    Some(s3) => {
                        let s3 = flotilla_eks::S3Logs::new(&s3)
                            .await
                            .map_err(|e| backend_error("eks", &e))?;
                        Arc::new(flotilla_eks::PodThenS3Logs::new(pods, s3))
                    }
                    None => Arc::new(pods),
                };
                builder = builder.engine(Arc::new(engine)).log_source(name, logs);
            }
            EngineKind::Docker => {
                let docker = config
                    .docker
                    .engine_config(&config.data_dir)
                    .artifacts(artifacts.clone());
                std::fs::create_dir_all(&docker.data_dir).map_err(|e| {
                    Error::config(format!(
                        "docker.data_dir: cannot create {}: {e}",
                        docker.data_dir.display()
                    ))
                })?;
                let engine = flotilla_docker::DockerEngine::connect(docker)
                    .await
                    .map_err(|e| backend_error("docker", &e))?;
                let name = flotilla::Engine::name(&engine).to_string();
                let logs = Arc::new(engine.log_source());
                builder = builder.engine(Arc::new(engine)).log_source(name, logs);
            }
        }
    }
    Ok(builder.build()?)
}

/// A backend's start failure as a configuration error naming its section:
/// `<section>.<field>: ...` when the backend names a field, else
/// `<section>: ...`.
fn backend_error(section: &str, e: &flotilla::Error) -> Error {
    let message = e.message();
    let names_field = message.split_once(": ").is_some_and(|(head, _)| {
        !head.is_empty()
            && head
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.[]".contains(c))
    });
    if names_field {
        Error::config(format!("{section}.{message}"))
    } else {
        Error::config(format!("{section}: {message}"))
    }
}

/// Makes ring the process's rustls crypto provider (the only one linked);
/// call before building a `reqwest` client. Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A server started by [`spawn`].
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    workers: flotilla::FlotillaHandle,
    host_claim: Option<host_claim::HostClaim>,
    grace: Duration,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The shared state (the service, for tests and embedding).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Graceful stop: stop accepting, let in-flight requests finish (up to
    /// `http.shutdown_grace_ms`), end log streams, then drain the workers.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.state.shutdown_token().cancel();
        if tokio::time::timeout(self.grace, &mut self.server)
            .await
            .is_err()
        {
            tracing::warn!("in-flight requests did not finish in time; closing them");
            self.server.abort();
        }
        self.workers.shutdown().await;
        if let Some(claim) = self.host_claim {
            claim.release().await;
        }
    }
}

/// Whether `addr` may be listened on with this configuration: a
/// non-loopback address needs authentication or `insecure_listen`.
pub fn check_listen(config: &Config) -> Result<SocketAddr> {
    let addr = config.listen_addr()?;
    if !addr.ip().is_loopback() && config.auth == AuthMode::None && !config.insecure_listen {
        return Err(Error::config(format!(
            "listen: refusing to serve {addr} without authentication; set auth = \"tokens\" \
             or pass --insecure-listen (insecure_listen = true)"
        )));
    }
    Ok(addr)
}

/// Builds the service from `config`, starts its workers and serves the API
/// in the background. Listening on port 0 picks a free port.
pub async fn spawn(config: Config) -> Result<RunningServer> {
    let addr = check_listen(&config)?;
    metrics::install(&config.metrics.dogstatsd)?;
    let flotilla = build_service(&config).await?;
    spawn_with(flotilla, &config, addr).await
}

/// Serves an already built service with the HTTP settings of `config`.
pub async fn spawn_with(
    flotilla: flotilla::Flotilla,
    config: &Config,
    addr: SocketAddr,
) -> Result<RunningServer> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io(format!("listen: cannot bind {addr}: {e}")))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io(format!("listen: {e}")))?;
    // The local engine's processes are observable from their host only:
    // on a store other processes share, one replica runs it.
    let host_claim =
        if config.engines.contains(&EngineKind::Local) && config.store != StoreKind::Memory {
            Some(
                host_claim::HostClaim::take(
                    flotilla.store().clone(),
                    &flotilla.config().replica_id,
                    config.workers.lease_ttl,
                )
                .await?,
            )
        } else {
            None
        };
    let workers = flotilla.start();
    let state = AppState::with(
        flotilla,
        Auth::new(config.auth, &config.tokens),
        config.http.clone(),
    );
    state.set_listen_addr(addr);
    let app = router(state.clone());
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
    });
    tracing::info!(%addr, "flotilla listening");
    Ok(RunningServer {
        addr,
        state,
        cancel,
        server,
        workers,
        host_claim,
        grace: Duration::from_millis(config.http.shutdown_grace_ms),
    })
}

/// Runs the server until SIGTERM or SIGINT, then shuts down gracefully.
pub async fn serve(config: Config) -> Result<()> {
    let server = spawn(config).await?;
    eprintln!("flotilla serving on {}", server.url());
    shutdown_signal().await;
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
