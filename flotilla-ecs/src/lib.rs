//! Amazon ECS [`Engine`](flotilla::Engine) and CloudWatch Logs
//! [`LogSource`](flotilla::LogSource) for flotilla.
//!
//! - [`EcsEngine`] runs each run attempt as an ECS task (EC2 or Fargate),
//!   registering task definitions from flotilla definitions, submitting
//!   idempotently with a per-attempt `clientToken`, polling with batched
//!   DescribeTasks and classifying how tasks end; optionally it pushes task
//!   state changes routed by an EventBridge rule to an SQS status queue.
//!   With [`EcsSettings::artifacts`], runs take an input zip and upload
//!   their output through helper containers ([`artifacts`]).
//! - [`CloudWatchLogs`] reads the stream the task's `awslogs` driver writes.
//! - [`ApiCallCounter`] counts SDK calls per operation (an interceptor), for
//!   measuring how many AWS calls a run costs.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use std::sync::Arc;
//! use flotilla_ecs::{CloudWatchLogs, EcsEngine, EcsSettings};
//! let settings = EcsSettings { clusters: vec!["default".into()], ..EcsSettings::default() };
//! let engine = Arc::new(EcsEngine::new(settings.clone()).await?);
//! let logs = Arc::new(CloudWatchLogs::new(settings).await?);
//! let flotilla = flotilla::Flotilla::builder()
//!     .engine(engine)
//!     .log_source("ecs", logs)
//!     .build()?;
//! # let _ = flotilla; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artifacts;
pub mod classify;
mod counter;
mod engine;
mod events;
mod logs;
mod settings;
pub mod taskdef;

pub use counter::ApiCallCounter;
pub use engine::{
    ATTEMPT_TAG, DESCRIBE_BATCH, EcsEngine, RUN_TAG, STARTED_BY, client_token, task_id,
};
pub use events::EventSettings;
pub use flotilla_aws::{AUTH_ATTEMPTS, StaticCredentials, map_sdk_error, sdk_config};
pub use logs::CloudWatchLogs;
pub use settings::{CapacityProviderItem, EcsArtifactSettings, EcsSettings, LaunchType};

/// The AWS SDK for CloudWatch Logs, re-exported likewise.
pub use aws_sdk_cloudwatchlogs;
/// The AWS SDK for ECS, re-exported for callers that build their own client.
pub use aws_sdk_ecs;
/// The AWS SDK for EventBridge, re-exported likewise.
pub use aws_sdk_eventbridge;
