//! # flotilla
//!
//! Define containerized batch jobs and run them on AWS ECS, Kubernetes or
//! local processes, then follow their status, exit codes and logs.
//!
//! This crate is the core: the [`model`], the run [life cycle](state),
//! the backend traits ([`Store`], [`Queue`], [`Engine`], [`LogSource`]),
//! in-memory backends ([`memory`]), a local-process engine ([`local`]) and
//! the embeddable [`Flotilla`] service with its workers. `cargo add flotilla`
//! alone gives a working scheduler; backend crates (`flotilla-postgres`,
//! `flotilla-sqs`, `flotilla-ecs`, `flotilla-eks`) plug into the same traits.
//!
//! ```no_run
//! use std::sync::Arc;
//! use flotilla::{Flotilla, ExecuteRequest, NewDefinition};
//!
//! # async fn demo() -> flotilla::Result<()> {
//! let flotilla = Flotilla::builder().build_local("/tmp/flotilla-data")?;
//! let handle = flotilla.start();
//! let def = flotilla
//!     .define(NewDefinition::new("hello", "ubuntu:latest").command("echo hello"))
//!     .await?;
//! let run = flotilla
//!     .execute(&def.definition_id, ExecuteRequest::owned_by("me"))
//!     .await?;
//! let done = flotilla.wait_for_stop(&run.run_id, std::time::Duration::from_secs(30)).await?;
//! assert_eq!(done.exit_code, Some(0));
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artifacts;
pub mod engine;
pub mod error;
pub mod hash;
pub mod local;
pub mod logs;
pub mod memory;
pub mod model;
pub mod paging;
pub mod query;
pub mod queue;
pub mod render;
pub mod service;
pub mod signals;
pub mod state;
pub mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod validate;

pub use engine::{Capabilities, Engine, EngineEvent, EventAck, StatusUpdate, Submitted, TaskState};
pub use error::{Error, ErrorKind, Result};
pub use logs::{LogChunk, LogSource};
pub use model::{
    Actor, Capacity, Cluster, ClusterStatus, Definition, DefinitionUpdate, EnvVar, EvaluateOnExit,
    ExecuteRequest, FailureCategory, Instance, NewDefinition, NewTemplate, RetryAction,
    RetryStrategy, Run, RunEvent, RunStatus, RunTags, StatusReport, Template, TemplateRun, Waiting,
};
pub use model::{ClusterUsage, UsageSample};
pub use query::{
    Cursor, DefinitionQuery, DefinitionSortField, Page, RunQuery, RunSortField, SortOrder,
    SortValue, TemplateQuery, TemplateSortField, TimeRange,
};
pub use queue::{Claimed, Delivery, Message, Queue};
pub use service::{
    Flotilla, FlotillaBuilder, FlotillaHandle, MAX_WORKER_COUNT, RetryPolicy, ServiceConfig,
    WorkerKind, WorkerState,
};
pub use store::{Expected, RunUpdate, Store};
pub use validate::Limits;
