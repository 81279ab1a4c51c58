//! Template routes (flotilla-os v7, under `/api/v7`): store versions, list
//! and read them, execute one with a payload, and the runs made from them.

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::{
    HistoryBody, HistoryParams, TerminatedBody, history, normalize_execute_body, own_request,
    run_of_definition,
};
use super::{ApiPath, EnvBody, RunBody, run_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::extract::{ApiJson, QueryPairs, from_value, read_json_value};

/// Tag of template routes.
pub const TAG_TEMPLATES: &str = "templates";

/// A template version, as flotilla-os emits it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateBody {
    /// Id of this version.
    pub template_id: String,
    /// Name shared by every version.
    pub template_name: String,
    /// Version, from 1.
    pub version: u32,
    /// JSON Schema of the payload.
    #[schema(value_type = Object)]
    pub schema: Map<String, Value>,
    /// Command, Go text/template syntax.
    pub command_template: String,
    /// Payload defaults.
    #[schema(value_type = Object)]
    pub defaults: Map<String, Value>,
    /// An image for people.
    pub avatar_uri: String,
    /// Container image.
    pub image: String,
    /// Memory in MiB.
    pub memory: Option<i64>,
    /// CPU in millicores.
    pub cpu: Option<i64>,
    /// GPUs.
    pub gpu: Option<i64>,
    /// Environment.
    pub env: Vec<EnvBody>,
    /// Retry `oom` with more memory.
    pub adaptive_resource_allocation: bool,
    /// Ports.
    pub ports: Vec<u16>,
    /// Tags.
    pub tags: Vec<String>,
    /// Who stored this version.
    pub owner: String,
    /// When this version was stored.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: DateTime<Utc>,
}

impl From<&flotilla::Template> for TemplateBody {
    fn from(t: &flotilla::Template) -> Self {
        TemplateBody {
            template_id: t.template_id.clone(),
            template_name: t.template_name.clone(),
            version: t.version,
            schema: t.schema.clone(),
            command_template: t.command_template.clone(),
            defaults: t.defaults.clone(),
            avatar_uri: t.avatar_uri.clone(),
            image: t.image.clone(),
            memory: t.memory,
            cpu: t.cpu,
            gpu: t.gpu,
            env: t.env.iter().map(EnvBody::from).collect(),
            adaptive_resource_allocation: t.adaptive_resource_allocation,
            ports: t.ports.clone(),
            tags: t.tags.clone(),
            owner: t.owner.clone(),
            created_at: t.created_at,
        }
    }
}

/// A page of templates (flotilla-os's `{total, templates}`), with the
/// query echoed back.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TemplateListBody {
    /// Versions matching (all pages).
    pub total: u64,
    /// This page.
    pub templates: Vec<TemplateBody>,
    /// Page size.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
    /// `template_name` or `version`.
    pub sort_by: String,
    /// `asc` or `desc`.
    pub order: String,
    /// Whether only the latest version of each name is listed.
    pub latest_only: bool,
}

/// The reply of `POST /template` (flotilla-os's `CreateTemplateResponse`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CreateTemplateBody {
    /// False when the content equals the latest version's (which is
    /// returned); true when a new version was stored.
    pub did_create: bool,
    /// The stored (or existing latest) version.
    pub template: TemplateBody,
}

/// The body of a template execute (flotilla-os's
/// `TemplateExecutionRequest`): the payload, and the fields of a
/// definition's execute (`run_tags.owner_id` or `owner_id` is required
/// without authentication).
#[derive(Debug, Deserialize, ToSchema)]
pub struct TemplateExecuteBody {
    /// The payload, deep-merged over the template's defaults, then checked
    /// against its schema (400 naming each wrong field).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub template_payload: Map<String, Value>,
    /// Return the run that would be made, storing and queueing nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The owner (flotilla-os v7 spelling of `run_tags.owner_id`).
    #[serde(default)]
    pub owner_id: Option<String>,
    /// The cluster (flotilla-os v7 spelling of `cluster`).
    #[serde(default)]
    pub cluster_name: Option<String>,
    /// Cluster, engine, env, resources, tags, labels, ... as for a
    /// definition's execute (a `command` is refused: the template renders
    /// it).
    #[serde(flatten)]
    pub execute: flotilla::ExecuteRequest,
}

/// Query parameters of `GET /template`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TemplateListParams {
    /// Page size (default 1024, capped by `limits.max_page`).
    limit: Option<usize>,
    /// Rows to skip.
    offset: Option<usize>,
    /// template_name | version (default template_name).
    sort_by: Option<String>,
    /// asc | desc (default asc).
    order: Option<String>,
    /// Only the latest version of each name (`true`/`false`).
    latest_only: Option<bool>,
    /// Every version of this name.
    template_name: Option<String>,
}

/// The template routes, relative to `/api/v7`.
pub fn v7_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_templates, create_template))
        .routes(routes!(get_template))
        .routes(routes!(execute_template))
        .routes(routes!(execute_template_by_name))
        .routes(routes!(template_history))
        .routes(routes!(template_name_history))
        .routes(routes!(get_template_run))
        .routes(routes!(get_run_of_template, terminate_run_of_template))
}

/// Lists template versions.
#[utoipa::path(get, path = "/template", tag = TAG_TEMPLATES, params(TemplateListParams),
    responses(
        (status = 200, description = "A page", body = TemplateListBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody)
    ))]
pub async fn list_templates(
    State(state): State<AppState>,
    q: QueryPairs,
) -> Result<Json<TemplateListBody>, Error> {
    q.check_known(&[
        "limit",
        "offset",
        "sort_by",
        "order",
        "latest_only",
        "template_name",
    ])?;
    let sort_by: flotilla::TemplateSortField =
        q.last("sort_by").unwrap_or("template_name").parse()?;
    let order: flotilla::SortOrder = q.last("order").unwrap_or("asc").parse()?;
    let (limit, offset) = super::definitions::page_params(&q, &state)?;
    let latest_only = q.flag("latest_only")?;
    let query = flotilla::TemplateQuery {
        latest_only,
        template_name: q
            .last("template_name")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        sort_by,
        order,
        limit,
        offset,
    };
    let page = state.flotilla().list_templates(query).await?;
    Ok(Json(TemplateListBody {
        total: page.total,
        templates: page.items.iter().map(TemplateBody::from).collect(),
        limit,
        offset,
        sort_by: sort_by.as_str().to_string(),
        order: order.as_str().to_string(),
        latest_only,
    }))
}

/// Stores a template version: a new name is version 1, the latest
/// version's content again returns it with `did_create: false`, changed
/// content is the next version.
#[utoipa::path(post, path = "/template", tag = TAG_TEMPLATES,
    request_body(content = flotilla::NewTemplate, description = "`template_name`, `schema`, `command_template` and `image` are required"),
    responses(
        (status = 200, description = "The stored or unchanged latest version", body = CreateTemplateBody),
        (status = 400, description = "Invalid body (a bad schema, a template that does not parse), field named", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody)
    ))]
pub async fn create_template(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut new): ApiJson<flotilla::NewTemplate>,
) -> Result<Json<CreateTemplateBody>, Error> {
    // With tokens the owner is the caller, whatever the body says.
    if let Some(id) = &caller.0 {
        new.owner = id.owner.clone();
    }
    let (did_create, template) = state.flotilla().create_template(new).await?;
    Ok(Json(CreateTemplateBody {
        did_create,
        template: TemplateBody::from(&template),
    }))
}

/// A template version by id.
#[utoipa::path(get, path = "/template/{template_id}", tag = TAG_TEMPLATES,
    params(("template_id" = String, Path, description = "Template version id")),
    responses(
        (status = 200, description = "The version", body = TemplateBody),
        (status = 404, description = "Unknown id", body = crate::error::ErrorBody)
    ))]
pub async fn get_template(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TemplateBody>, Error> {
    let t = state.flotilla().get_template(&id).await?;
    Ok(Json(TemplateBody::from(&t)))
}

/// Reads a template execute body: flotilla-os's v7 `owner_id` and
/// `cluster_name` fill `run_tags.owner_id` and `cluster` when those are
/// absent, then ownership is applied as for a definition's execute.
async fn execute_body(
    state: &AppState,
    caller: &Caller,
    uri: &OriginalUri,
    req: axum::extract::Request,
) -> Result<TemplateExecuteBody, Error> {
    let mut value = read_json_value(req, state).await?;
    normalize_execute_body(&mut value);
    let mut body: TemplateExecuteBody = from_value(value)?;
    let request = &mut body.execute;
    if let Some(owner) = body.owner_id.take() {
        let tags = request.run_tags.get_or_insert_with(Default::default);
        if tags.owner_id.is_empty() {
            tags.owner_id = owner;
        }
    }
    if let Some(cluster) = body.cluster_name.take() {
        request.cluster.get_or_insert(cluster);
    }
    own_request(request, caller, uri);
    Ok(body)
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    template: &flotilla::Template,
    body: TemplateExecuteBody,
) -> Result<Json<RunBody>, Error> {
    let run = state
        .flotilla()
        .execute_template_as(
            template,
            body.template_payload,
            body.execute,
            body.dry_run,
            &caller.actor(),
        )
        .await?;
    Ok(Json(run_json(&run)))
}

/// Executes a template version with a payload.
#[utoipa::path(put, path = "/template/{template_id}/execute", tag = TAG_TEMPLATES,
    params(("template_id" = String, Path, description = "Template version id")),
    request_body(content = TemplateExecuteBody, description = "The payload and the execute fields; `owner_id` (or `run_tags.owner_id`) is required without authentication"),
    responses(
        (status = 200, description = "The queued run (with `dry_run`, the run that would be queued)", body = RunBody),
        (status = 400, description = "The payload breaks the schema (each field named), a rendered command over the limits, a bad execute field", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown template", body = crate::error::ErrorBody)
    ))]
pub async fn execute_template(
    State(state): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    ApiPath(id): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Json<RunBody>, Error> {
    let template = state.flotilla().get_template(&id).await?;
    let body = execute_body(&state, &caller, &uri, req).await?;
    execute(&state, &caller, &template, body).await
}

/// The version a path names: a number, or the latest for anything else
/// (flotilla-os's `latest`).
fn version_of(version: &str) -> Option<u32> {
    version.parse().ok()
}

/// Executes version `version` of the template named `name` (a version
/// that is not a number means the latest).
#[utoipa::path(put, path = "/template/name/{name}/version/{version}/execute", tag = TAG_TEMPLATES,
    params(
        ("name" = String, Path, description = "Template name"),
        ("version" = String, Path, description = "Version number, or anything else (e.g. `latest`) for the latest")
    ),
    request_body(content = TemplateExecuteBody, description = "As for execute by id"),
    responses(
        (status = 200, description = "The queued run (with `dry_run`, the run that would be queued)", body = RunBody),
        (status = 400, description = "As for execute by id", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown name or version", body = crate::error::ErrorBody)
    ))]
pub async fn execute_template_by_name(
    State(state): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    ApiPath((name, version)): ApiPath<(String, String)>,
    req: axum::extract::Request,
) -> Result<Json<RunBody>, Error> {
    let template = state
        .flotilla()
        .get_template_by_name(&name, version_of(&version))
        .await?;
    let body = execute_body(&state, &caller, &uri, req).await?;
    execute(&state, &caller, &template, body).await
}

/// The runs of a template version.
#[utoipa::path(get, path = "/template/{template_id}/history", tag = TAG_TEMPLATES,
    params(("template_id" = String, Path, description = "Template version id"), HistoryParams),
    responses(
        (status = 200, description = "As `GET /api/v6/history`", body = HistoryBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown template", body = crate::error::ErrorBody)
    ))]
pub async fn template_history(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    q: QueryPairs,
) -> Result<Response, Error> {
    state.flotilla().get_template(&id).await?;
    history(&state, q, Some(id), None).await
}

/// The runs of every version of a template name (the route flotilla-os's
/// UI calls).
#[utoipa::path(get, path = "/template/name/{name}/history", tag = TAG_TEMPLATES,
    params(("name" = String, Path, description = "Template name"), HistoryParams),
    responses(
        (status = 200, description = "As `GET /api/v6/history`", body = HistoryBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown name", body = crate::error::ErrorBody)
    ))]
pub async fn template_name_history(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    q: QueryPairs,
) -> Result<Response, Error> {
    state.flotilla().get_template_by_name(&name, None).await?;
    let scope = flotilla::EnvVar::new(flotilla::service::ENV_TEMPLATE_NAME, name);
    history(&state, q, None, Some(scope)).await
}

/// A run made from a template.
#[utoipa::path(get, path = "/template/history/{run_id}", tag = TAG_TEMPLATES,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, description = "Unknown run, or not a template's", body = crate::error::ErrorBody)
    ))]
pub async fn get_template_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<RunBody>, Error> {
    let run = state.flotilla().get_run(&run_id).await?;
    if run.template.is_none() {
        return Err(Error::not_found(format!(
            "run {run_id} was not made from a template"
        )));
    }
    Ok(Json(run_json(&run)))
}

/// A run of a template version.
#[utoipa::path(get, path = "/template/{template_id}/history/{run_id}", tag = TAG_TEMPLATES,
    params(("template_id" = String, Path, description = "Template version id"), ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, description = "Unknown run, or not of this version", body = crate::error::ErrorBody)
    ))]
pub async fn get_run_of_template(
    State(state): State<AppState>,
    ApiPath((template_id, run_id)): ApiPath<(String, String)>,
) -> Result<Json<RunBody>, Error> {
    let run = run_of_definition(&state, &template_id, &run_id).await?;
    Ok(Json(run_json(&run)))
}

/// Terminates a run of a template version (and its children).
#[utoipa::path(delete, path = "/template/{template_id}/history/{run_id}", tag = TAG_TEMPLATES,
    params(("template_id" = String, Path, description = "Template version id"), ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "`{\"terminated\": true, \"run\": {...}}`", body = TerminatedBody),
        (status = 403, description = "Not the run's owner nor an admin", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown run, or not of this version", body = crate::error::ErrorBody)
    ))]
pub async fn terminate_run_of_template(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((template_id, run_id)): ApiPath<(String, String)>,
) -> Result<Json<TerminatedBody>, Error> {
    let run = run_of_definition(&state, &template_id, &run_id).await?;
    caller.require_owner(&run.owner, "terminate this run")?;
    let run = state.flotilla().terminate(&run_id, caller.name()).await?;
    Ok(Json(TerminatedBody {
        terminated: true,
        run: run_json(&run),
    }))
}
