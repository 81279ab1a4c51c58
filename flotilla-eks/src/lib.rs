//! # flotilla-eks
//!
//! Runs flotilla runs as Kubernetes `batch/v1` Jobs ([`EksEngine`]), follows
//! them with watches, reads their output from the pod while it lives
//! ([`PodLogs`]) and from the S3 archive of the cluster's log shipper after
//! ([`S3Logs`], [`PodThenS3Logs`]). Several clusters are supported, routed by
//! the run's `cluster`.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use std::sync::Arc;
//! use flotilla_eks::{EksCluster, EksEngine, EksSettings, PodLogs};
//!
//! let settings = EksSettings {
//!     clusters: vec![EksCluster { name: "default".into(), ..Default::default() }],
//!     namespace: "batch".into(),
//!     ..Default::default()
//! };
//! let engine = EksEngine::new(settings).await?;
//! let logs = Arc::new(PodLogs::new(&engine));
//! let flotilla = flotilla::Flotilla::builder()
//!     .engine(Arc::new(engine))
//!     .log_source("eks", logs)
//!     .build()?;
//! # let _ = flotilla; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod engine;
pub mod error;
pub mod names;
pub mod observe;
pub mod podlogs;
pub mod s3logs;
pub mod settings;
pub mod spec;

pub use engine::{DEFAULT_JOB_RETENTION, EksEngine, JOB_TTL_FLOOR_SECONDS};
pub use podlogs::PodLogs;
pub use s3logs::{PodThenS3Logs, S3Logs};
pub use settings::{EksArtifacts, EksCluster, EksSettings, S3LogSettings};
