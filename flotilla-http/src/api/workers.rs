//! flotilla-os's v5 worker routes (`/api/v5/worker`): list, read and change
//! this replica's workers.
//!
//! A flotilla-os worker is `{worker_type, count_per_instance, engine}`: how
//! many loops of `retry`, `submit` or `status` each instance runs. Here they
//! map onto this replica's workers (`submit`, `status`, `retry` and this
//! server's `reconcile`) through [`flotilla::Flotilla::set_worker`]: a count
//! of 0 stops the worker on the replica that answers, 1 starts it. Every
//! worker is one loop per replica here (the submit worker's parallelism is
//! `workers.submit_concurrency`; the others are singletons by lease), so a
//! count above 1 is refused naming `count_per_instance`, never stored as if
//! it ran. The workers serve every engine: `engine` in a reply is the
//! server's default engine, and in a request it must be absent, `"eks"`
//! (what flotilla-os clients send) or a configured engine. A change is this
//! replica's and lasts until it restarts (behind a load balancer, each call
//! reaches one replica). Only admins may change workers.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use flotilla::{WorkerKind, WorkerState};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiPath, TAG_META};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::extract::{ApiJson, from_value, read_json};

/// The engine name flotilla-os clients send for its default engine.
const FLOTILLA_OS_ENGINE: &str = "eks";

/// A worker, as flotilla-os's `state.Worker`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerBody {
    /// `submit`, `status`, `retry` or `reconcile`.
    pub worker_type: String,
    /// Loops of it on the replica that answered: 0 (stopped) or 1.
    pub count_per_instance: u32,
    /// The server's default engine (the workers serve every engine).
    pub engine: String,
}

/// The body of a worker change.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerUpdate {
    /// Which worker: required in a batch; on `/worker/{worker_type}` it
    /// must match the URL when given.
    #[serde(default)]
    pub worker_type: Option<String>,
    /// 0 stops the worker on this replica, 1 starts it; more is refused.
    pub count_per_instance: i64,
    /// Absent, `eks` or a configured engine (the change applies to the
    /// worker for every engine).
    #[serde(default)]
    pub engine: Option<String>,
}

/// `GET /worker` and the batch change's reply.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WorkerListBody {
    /// How many.
    pub total: usize,
    /// This replica's workers.
    pub workers: Vec<WorkerBody>,
}

fn body(state: &AppState, w: &WorkerState) -> WorkerBody {
    WorkerBody {
        worker_type: w.kind.as_str().to_string(),
        count_per_instance: w.count,
        engine: state
            .flotilla()
            .config()
            .default_engine
            .clone()
            .unwrap_or_default(),
    }
}

fn list(state: &AppState) -> WorkerListBody {
    let workers: Vec<WorkerBody> = state
        .flotilla()
        .workers()
        .iter()
        .map(|w| body(state, w))
        .collect();
    WorkerListBody {
        total: workers.len(),
        workers,
    }
}

fn kind(field: &str, name: &str) -> Result<WorkerKind, Error> {
    name.parse().map_err(|_| {
        Error::invalid(format!(
            "{field}: '{name}' is not a worker type; valid types: submit, status, retry, reconcile"
        ))
    })
}

/// Checks one change; `prefix` names its place in a batch (`[0].`).
fn check(state: &AppState, prefix: &str, kind: WorkerKind, u: &WorkerUpdate) -> Result<u32, Error> {
    if let Some(e) = &u.engine
        && e != FLOTILLA_OS_ENGINE
        && state.flotilla().engine(e).is_none()
    {
        return Err(Error::invalid(format!(
            "{prefix}engine: '{e}' is not a configured engine (the workers serve every engine: {})",
            state.flotilla().engine_names().join(", ")
        )));
    }
    let max = flotilla::MAX_WORKER_COUNT;
    match u.count_per_instance {
        n if n < 0 => Err(Error::invalid(format!(
            "{prefix}count_per_instance: {n} is negative; 0 stops the worker on this replica, 1 starts it"
        ))),
        n if n > i64::from(max) => Err(Error::invalid(format!(
            "{prefix}count_per_instance: {n} is more than worker '{kind}' runs here: at most {max} per replica ({})",
            if kind.is_singleton() {
                "a singleton: one replica at a time does its work, by lease"
            } else {
                "its parallelism is workers.submit_concurrency"
            }
        ))),
        n => Ok(n as u32),
    }
}

/// This replica's workers.
#[utoipa::path(get, path = "/worker", tag = TAG_META,
    responses((status = 200, description = "The workers and their counts on the replica that answered", body = WorkerListBody)))]
pub async fn list_workers(State(state): State<AppState>) -> Response {
    Json(list(&state)).into_response()
}

/// One worker of this replica.
#[utoipa::path(get, path = "/worker/{worker_type}", tag = TAG_META,
    params(("worker_type" = String, Path, description = "submit, status, retry or reconcile")),
    responses(
        (status = 200, description = "The worker", body = WorkerBody),
        (status = 400, description = "Not a worker type (names `worker_type`)", body = crate::error::ErrorBody)
    ))]
pub async fn get_worker(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, Error> {
    let k = kind("worker_type", &name)?;
    let w = state
        .flotilla()
        .workers()
        .into_iter()
        .find(|w| w.kind == k)
        .ok_or_else(|| Error::not_found(format!("worker_type: '{name}' not found")))?;
    Ok(Json(body(&state, &w)).into_response())
}

/// Starts (`count_per_instance` 1) or stops (0) a worker on this replica
/// (admins only).
#[utoipa::path(put, path = "/worker/{worker_type}", tag = TAG_META,
    params(("worker_type" = String, Path, description = "submit, status, retry or reconcile")),
    request_body = WorkerUpdate,
    responses(
        (status = 200, description = "The worker as it now runs here", body = WorkerBody),
        (status = 400, description = "Invalid change, naming the field (e.g. `count_per_instance` above 1)", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody)
    ))]
pub async fn update_worker(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(u): ApiJson<WorkerUpdate>,
) -> Result<Response, Error> {
    caller.require_admin("change workers")?;
    let k = kind("worker_type", &name)?;
    if let Some(t) = &u.worker_type
        && t != &name
    {
        return Err(Error::invalid(format!(
            "worker_type: '{t}' does not match the worker in the URL '{name}'"
        )));
    }
    let count = check(&state, "", k, &u)?;
    let w = state.flotilla().set_worker(k, count).await?;
    Ok(Json(body(&state, &w)).into_response())
}

/// Changes several workers on this replica (admins only): every change is
/// checked before any is applied.
#[utoipa::path(put, path = "/worker", tag = TAG_META,
    request_body = Vec<WorkerUpdate>,
    responses(
        (status = 200, description = "All the workers of this replica after the change", body = WorkerListBody),
        (status = 400, description = "Invalid change, naming its place and field (e.g. `[1].worker_type`)", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody)
    ))]
pub async fn batch_update_workers(
    State(state): State<AppState>,
    caller: Caller,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    caller.require_admin("change workers")?;
    let updates: Vec<WorkerUpdate> = from_value(read_json(req, &state).await?)?;
    let mut changes = Vec::with_capacity(updates.len());
    for (i, u) in updates.iter().enumerate() {
        let prefix = format!("[{i}].");
        let Some(name) = &u.worker_type else {
            return Err(Error::invalid(format!("{prefix}worker_type: required")));
        };
        let k = kind(&format!("{prefix}worker_type"), name)?;
        changes.push((k, check(&state, &prefix, k, u)?));
    }
    for (k, count) in changes {
        state.flotilla().set_worker(k, count).await?;
    }
    Ok(Json(list(&state)).into_response())
}

/// The v5 routes.
pub fn v5_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_workers, batch_update_workers))
        .routes(routes!(get_worker, update_worker))
}
