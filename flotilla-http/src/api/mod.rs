//! The flotilla-os compatible REST API, mounted under `/api/v6` and
//! `/api/v1` (same handlers; v1's execute owns runs as `v1-unknown`), with
//! the v2 and v4 routes flotilla-os still serves ([`legacy`]) and its v5
//! worker routes ([`workers`]).
//!
//! Every handler carries its OpenAPI description (`#[utoipa::path]`), and
//! the router is assembled with `utoipa_axum`, so `/api/openapi.json` lists
//! exactly the routes served.

mod artifacts;
pub mod batch;
mod bodies;
mod clusters;
mod definitions;
mod legacy;
mod quantity;
mod run_body;
mod runs;
mod templates;
mod workers;

pub use bodies::{
    ClusterListBody, ClusterReply, DefinitionBody, DefinitionListBody, DeletedBody, GroupsBody,
    HealthBody, LogsBody, TagsBody,
};
pub use run_body::{
    CloudTrailNotificationsBody, CloudTrailRecordBody, EnvBody, InstanceBody, PodEventBody,
    RunBody, RunTagsBody,
};
pub use templates::{CreateTemplateBody, TemplateBody, TemplateExecuteBody, TemplateListBody};
pub use workers::{WorkerBody, WorkerListBody, WorkerUpdate};

use axum::extract::{FromRequestParts, OriginalUri, State};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::{Json, middleware};
use serde::de::DeserializeOwned;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{Error, ErrorKind};

/// Tag of definition routes.
pub const TAG_DEFINITIONS: &str = "definitions";
/// Tag of run routes.
pub const TAG_RUNS: &str = "runs";
/// Tag of cluster, group, tag and health routes.
pub const TAG_META: &str = "meta";

/// A path parameter whose rejection is a JSON 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| Error::invalid(format!("path: {}", e.body_text())))
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            Error::new(
                ErrorKind::Service(flotilla::ErrorKind::Internal),
                "authentication layer missing",
            )
        })
    }
}

/// Whether the request came in under `/api/v1`.
pub(crate) fn is_v1(uri: &OriginalUri) -> bool {
    uri.0.path().starts_with("/api/v1/")
}

/// A run as the API serves it.
pub fn run_json(run: &flotilla::Run) -> RunBody {
    RunBody::from(run)
}

/// A definition as the API serves it.
pub fn definition_json(def: &flotilla::Definition) -> DefinitionBody {
    DefinitionBody::from(def)
}

/// `GET /health`: the store answers.
#[utoipa::path(get, path = "/health", tag = TAG_META,
    responses(
        (status = 200, description = "The server and its store work", body = HealthBody),
        (status = 503, description = "The store does not answer", body = crate::error::ErrorBody)
    ))]
pub async fn health(State(state): State<AppState>) -> Response {
    match state.flotilla().list_clusters().await {
        Ok(_) => Json(HealthBody {
            status: "ok".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            engines: state.flotilla().engine_names(),
        })
        .into_response(),
        Err(e) => Error::new(
            ErrorKind::Service(flotilla::ErrorKind::Unavailable),
            format!("store: {}", e.message()),
        )
        .into_response(),
    }
}

/// The API routes, relative to `/api/v6` (or `/api/v1`), with their
/// OpenAPI description. Log streaming is in [`stream_routes`] because it
/// is exempt from the request timeout.
pub fn api_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(
            definitions::list_definitions,
            definitions::create_definition
        ))
        .routes(routes!(
            definitions::get_definition,
            definitions::update_definition,
            definitions::delete_definition
        ))
        .routes(routes!(definitions::get_definition_by_alias))
        .routes(routes!(runs::execute))
        .routes(routes!(runs::execute_alias))
        .routes(routes!(runs::list_history))
        .routes(routes!(runs::list_definition_history))
        .routes(routes!(runs::get_history_run))
        .routes(routes!(runs::get_history_run_payload))
        .routes(routes!(runs::get_task_history_run))
        .routes(routes!(
            runs::get_definition_run,
            runs::terminate_definition_run
        ))
        .routes(routes!(runs::get_status, runs::put_status))
        .routes(routes!(runs::get_events))
        .routes(routes!(runs::get_logs))
        .routes(routes!(definitions::list_groups))
        .routes(routes!(definitions::list_tags))
        .routes(routes!(clusters::list_clusters, clusters::create_cluster))
        .routes(routes!(
            clusters::get_cluster,
            clusters::put_cluster,
            clusters::delete_cluster
        ))
        .routes(routes!(clusters::get_cluster_usage))
}

/// The routes served without authentication: `health` (what load
/// balancers probe, public in flotilla-os too).
pub fn public_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(health))
}

/// The streaming routes (no request timeout): log streams, output zips.
pub fn stream_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(runs::stream_logs))
        .routes(routes!(artifacts::get_output))
}

/// The API versions (v6 and v1 in full, v2's and v4's execute routes, v5's
/// worker routes, v7's template routes),
/// authenticated but for [`public_routes`], with the request timeout on
/// everything but streams, and the OpenAPI document of them.
pub fn versioned(state: &AppState) -> OpenApiRouter<AppState> {
    let one = || {
        api_routes()
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::write_timeout,
            ))
            .merge(stream_routes())
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::authenticate,
            ))
            .merge(public_routes().layer(middleware::from_fn_with_state(
                state.clone(),
                crate::write_timeout,
            )))
    };
    let legacy = |routes: OpenApiRouter<AppState>| {
        routes
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::write_timeout,
            ))
            .layer(middleware::from_fn_with_state(
                state.clone(),
                crate::auth::authenticate,
            ))
    };
    OpenApiRouter::new()
        .nest("/api/v6", one())
        .nest("/api/v1", one())
        .nest("/api/v2", legacy(legacy::v2_routes()))
        .nest("/api/v4", legacy(legacy::v4_routes()))
        .nest("/api/v5", legacy(workers::v5_routes()))
        .nest("/api/v7", legacy(templates::v7_routes()))
        .merge(legacy(batch::batch_routes()))
}

/// Finishes the generated document: title, unique operation ids for the
/// two versions, the bearer scheme.
pub fn finish_openapi(mut doc: OpenApi) -> OpenApi {
    doc.info.title = "flotilla".into();
    doc.info.version = env!("CARGO_PKG_VERSION").into();
    doc.info.description = Some(
        "flotilla-os compatible API: definitions, runs, logs, clusters. /api/v1 mirrors /api/v6."
            .into(),
    );
    use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    // Needed only when the server runs with `auth = "tokens"`; the empty
    // requirement says anonymous calls are accepted otherwise.
    doc.security = Some(vec![
        SecurityRequirement::new("bearer", Vec::<String>::new()),
        SecurityRequirement::default(),
    ]);
    for (path, item) in doc.paths.paths.iter_mut() {
        let prefix = ["v1", "v2", "v4", "v5", "v7"]
            .into_iter()
            .find(|v| path.starts_with(&format!("/api/{v}/")))
            .map_or_else(|| "v6_".to_string(), |v| format!("{v}_"));
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
        ]
        .into_iter()
        .flatten()
        {
            if let Some(id) = &op.operation_id {
                op.operation_id = Some(format!("{prefix}{id}"));
            }
            if path.ends_with("/health") {
                op.security = Some(vec![SecurityRequirement::default()]);
            }
        }
    }
    doc
}

/// `GET /api/openapi.json`.
pub async fn openapi_json(State(state): State<AppState>) -> Response {
    Json(state.openapi().clone()).into_response()
}
