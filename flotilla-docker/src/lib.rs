//! Docker [`Engine`](flotilla::Engine) and [`LogSource`](flotilla::LogSource)
//! for flotilla: real containers on one machine, through the Docker API
//! (bollard, over the daemon's unix socket).
//!
//! - [`DockerEngine`] runs each run attempt as one container, named from
//!   `(run_id, attempt)` and labelled with the run, the attempt and the
//!   cluster, so a submit is idempotent and a restarted server re-adopts the
//!   containers it started (running ones are followed, finished ones report
//!   their real exit code; nothing runs again).
//! - [`DockerLogs`] reads a container's standard output and error from the
//!   Docker API, and the copy archived in the data dir once the container is
//!   removed.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use std::sync::Arc;
//! use flotilla_docker::{DockerConfig, DockerEngine};
//! let engine = DockerEngine::connect(DockerConfig::new("/var/lib/flotilla/docker")).await?;
//! let logs = Arc::new(engine.log_source());
//! let flotilla = flotilla::Flotilla::builder()
//!     .engine(Arc::new(engine))
//!     .log_source("docker", logs)
//!     .build()?;
//! # let _ = flotilla; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod config;
mod credentials;
mod engine;
mod error;
mod events;
mod logs;
mod store;

pub use config::DockerConfig;
pub use engine::{ATTEMPT_LABEL, CLUSTER_LABEL, DockerEngine, MANAGED_LABEL, RUN_LABEL};
pub use error::{DockerError, DockerErrorKind};
pub use logs::DockerLogs;

/// bollard, re-exported for callers that talk to the daemon themselves.
pub use bollard;
