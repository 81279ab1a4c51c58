//! Amazon SQS [`Queue`](flotilla::Queue) for flotilla.
//!
//! [`SqsQueue`] keeps one SQS queue per flotilla queue (one per cluster),
//! named `<queue_namespace>-<cluster>` and created on first use with the
//! configured retention and visibility timeout. `receive` long-polls
//! (`WaitTimeSeconds`) and takes up to ten messages per call; `ack` is a
//! batched `DeleteMessage`; `release` is `ChangeMessageVisibility`. The
//! message body is JSON carrying the run id and attempt; bodies that are not
//! are logged and deleted, never handed to the worker.
//!
//! ```no_run
//! # async fn demo() -> flotilla::Result<()> {
//! use flotilla_sqs::{SqsQueue, SqsSettings};
//! let queue = SqsQueue::new(SqsSettings {
//!     queue_namespace: "flotilla-prod".into(),
//!     ..SqsSettings::default()
//! })
//! .await?;
//! # let _ = queue; Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod queue;
mod settings;

pub use flotilla_aws::{StaticCredentials, map_sdk_error};
pub use queue::{SqsQueue, queue_name};
pub use settings::SqsSettings;

/// The AWS SDK for SQS, re-exported for callers that build their own client.
pub use aws_sdk_sqs;
