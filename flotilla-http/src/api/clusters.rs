//! Cluster routes.

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{ApiPath, ClusterListBody, ClusterReply, DeletedBody, TAG_META};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::extract::ApiJson;

/// The body of a cluster create or replace.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterBody {
    /// Name (required on create; must match the URL on replace).
    #[serde(default)]
    pub name: Option<String>,
    /// active | maintenance | offline (default active).
    #[serde(default)]
    pub status: Option<String>,
    /// Why it is in that status.
    #[serde(default)]
    pub status_reason: Option<String>,
    /// Tiers allowed; empty means any.
    #[serde(default)]
    pub allowed_tiers: Vec<String>,
    /// Engine; the service default when absent.
    #[serde(default)]
    pub engine: Option<String>,
    /// Engines a run's request may pick on this cluster; empty: only
    /// `engine`.
    #[serde(default)]
    pub engines: Vec<String>,
    /// What it holds at once (`cpu` millicores, `memory` MiB, `gpu`,
    /// `runs`); an unset dimension is the engine's default (the host's
    /// cores and memory for `local`), else unlimited.
    #[serde(default)]
    pub capacity: Option<flotilla::Capacity>,
    /// Ignored (set by the server).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub updated_at: Option<serde::de::IgnoredAny>,
}

impl ClusterBody {
    fn into_cluster(self, name: String) -> Result<flotilla::Cluster, Error> {
        let _server_set = self.updated_at;
        let mut c = flotilla::Cluster::new(name);
        if let Some(s) = self.status {
            c.status = s.parse()?;
        }
        c.status_reason = self.status_reason;
        c.allowed_tiers = self.allowed_tiers;
        c.engine = self.engine;
        c.engines = self.engines;
        c.capacity = self.capacity;
        Ok(c)
    }
}

/// Lists clusters (stored and configured).
#[utoipa::path(get, path = "/clusters", tag = TAG_META,
    responses((status = 200, description = "The clusters", body = ClusterListBody)))]
pub async fn list_clusters(State(state): State<AppState>) -> Result<Response, Error> {
    let clusters = state.flotilla().list_clusters().await?;
    Ok(Json(ClusterListBody {
        total: clusters.len(),
        clusters: clusters.iter().map(|c| c.name.clone()).collect(),
        cluster_details: clusters.iter().map(ClusterReply::from).collect(),
    })
    .into_response())
}

/// Registers a cluster (admins only with token auth).
#[utoipa::path(post, path = "/clusters", tag = TAG_META, request_body = ClusterBody,
    responses(
        (status = 200, description = "The cluster", body = ClusterReply),
        (status = 400, description = "Invalid body", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody),
        (status = 409, description = "Name taken", body = crate::error::ErrorBody)
    ))]
pub async fn create_cluster(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<ClusterBody>,
) -> Result<Response, Error> {
    caller.require_admin("manage clusters")?;
    let Some(name) = body.name.clone() else {
        return Err(Error::invalid("name: required"));
    };
    if state.flotilla().store().get_cluster(&name).await.is_ok() {
        return Err(flotilla::Error::conflict(format!(
            "name: cluster '{name}' already exists; PUT /clusters/{name} replaces it"
        ))
        .into());
    }
    let cluster = state
        .flotilla()
        .put_cluster(body.into_cluster(name)?)
        .await?;
    Ok(Json(ClusterReply::from(&cluster)).into_response())
}

/// A cluster by name.
#[utoipa::path(get, path = "/clusters/{cluster_id}", tag = TAG_META,
    params(("cluster_id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster", body = ClusterReply),
        (status = 404, description = "Unknown cluster", body = crate::error::ErrorBody)
    ))]
pub async fn get_cluster(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, Error> {
    let c = state.flotilla().get_cluster(&name).await?;
    Ok(Json(ClusterReply::from(&c)).into_response())
}

/// Creates or replaces a cluster (admins only with token auth).
#[utoipa::path(put, path = "/clusters/{cluster_id}", tag = TAG_META,
    params(("cluster_id" = String, Path, description = "Cluster name")),
    request_body = ClusterBody,
    responses(
        (status = 200, description = "The cluster", body = ClusterReply),
        (status = 400, description = "Invalid body", body = crate::error::ErrorBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody)
    ))]
pub async fn put_cluster(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<ClusterBody>,
) -> Result<Response, Error> {
    caller.require_admin("manage clusters")?;
    if let Some(n) = &body.name
        && n != &name
    {
        return Err(Error::invalid(format!(
            "name: '{n}' does not match the cluster in the URL '{name}'"
        )));
    }
    let cluster = state
        .flotilla()
        .put_cluster(body.into_cluster(name)?)
        .await?;
    Ok(Json(ClusterReply::from(&cluster)).into_response())
}

/// Deletes a registered cluster (admins only with token auth).
#[utoipa::path(delete, path = "/clusters/{cluster_id}", tag = TAG_META,
    params(("cluster_id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "Deleted", body = DeletedBody),
        (status = 403, description = "Not an admin", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown cluster", body = crate::error::ErrorBody)
    ))]
pub async fn delete_cluster(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, Error> {
    caller.require_admin("manage clusters")?;
    state.flotilla().delete_cluster(&name).await?;
    Ok(Json(DeletedBody::YES).into_response())
}

/// A cluster's capacity and usage: runs waiting for capacity and runs
/// active, now and over the last hour (one sample per 10 s, each the most
/// seen in it), as the replica that answers sees them.
#[utoipa::path(get, path = "/clusters/{cluster_id}/usage", tag = TAG_META,
    params(("cluster_id" = String, Path, description = "Cluster name")),
    responses(
        (status = 200, description = "The cluster's usage", body = flotilla::ClusterUsage),
        (status = 404, description = "Unknown cluster", body = crate::error::ErrorBody)
    ))]
pub async fn get_cluster_usage(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Response, Error> {
    let usage = state.flotilla().cluster_usage(&name).await?;
    Ok(Json(usage).into_response())
}
