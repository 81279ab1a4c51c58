//! kubernetes-task-runner's API, so its clients can switch to flotilla:
//! `GET /batch/?status=…`, `GET /batch/{id}`, `POST /batch/`,
//! `DELETE /batch/{id}`, with its envelope `{result, msg, error, data}`.
//!
//! A batch job is a run of a definition in group `batch` (one per image,
//! alias `batch-<hash of the image>`, made on first use) on the default
//! cluster and engine; its `id` is the run id and its `name` a label.
//! Statuses map from run states: QUEUED and PENDING are `created`;
//! RUNNING and NEEDS_RETRY `running`; STOPPED is `succeeded` (exit 0),
//! `killed` (terminated) or `failed`. `cleaning` (kubernetes-task-runner's
//! output upload) is not observable here: flotilla uploads outputs before
//! the run stops, so no job is ever listed as `cleaning`.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiPath;
use super::quantity::{cpu_millicores, cpu_string, memory_mib};
use crate::AppState;
use crate::auth::Caller;
use crate::extract::{QueryPairs, read_json_value};

/// Tag of the kubernetes-task-runner routes.
pub const TAG_BATCH: &str = "batch";
/// Group of the definitions batch jobs run.
const GROUP: &str = "batch";
/// Label carrying a batch job's name.
const NAME_LABEL: &str = "batch_name";
/// Most jobs a list returns (the service caps it at its `max_page` too).
const MAX_LIST: usize = 1000;
/// Owner of batch jobs made without authentication.
const ANONYMOUS: &str = "kubernetes-task-runner";

/// A batch job's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BatchStatus {
    /// Queued, not started.
    Created,
    /// Running (or waiting for another attempt).
    Running,
    /// Stopped with a failure.
    Failed,
    /// Stopped by a user.
    Killed,
    /// Uploading its output (never reported by flotilla, see the module).
    Cleaning,
    /// Exited 0.
    Succeeded,
}

const STATUSES: [(&str, BatchStatus); 6] = [
    ("created", BatchStatus::Created),
    ("running", BatchStatus::Running),
    ("failed", BatchStatus::Failed),
    ("killed", BatchStatus::Killed),
    ("cleaning", BatchStatus::Cleaning),
    ("succeeded", BatchStatus::Succeeded),
];

impl BatchStatus {
    fn of(run: &flotilla::Run) -> BatchStatus {
        use flotilla::RunStatus::*;
        match run.status {
            Queued | Pending => BatchStatus::Created,
            Running | NeedsRetry => BatchStatus::Running,
            Stopped if run.succeeded() => BatchStatus::Succeeded,
            Stopped if run.failure == Some(flotilla::FailureCategory::Terminated) => {
                BatchStatus::Killed
            }
            Stopped => BatchStatus::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        STATUSES
            .iter()
            .find(|(_, s)| *s == self)
            .map_or("failed", |(n, _)| n)
    }

    fn run_statuses(self) -> &'static [flotilla::RunStatus] {
        use flotilla::RunStatus::*;
        match self {
            BatchStatus::Created => &[Queued, Pending],
            BatchStatus::Running => &[Running, NeedsRetry],
            BatchStatus::Cleaning => &[],
            BatchStatus::Failed | BatchStatus::Killed | BatchStatus::Succeeded => &[Stopped],
        }
    }
}

/// `cpu` and `memory` as Kubernetes quantities (`500m`, `128Mi`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Quantities {
    /// CPU, e.g. `500m` or `2`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// Memory, e.g. `128Mi` or `1G`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Kubernetes-style resources; flotilla gives the run the limits (the
/// requests when there are no limits).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<Quantities>,
    /// Requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<Quantities>,
}

/// What to run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobParameters {
    /// Image (required).
    pub docker_image: String,
    /// Environment.
    #[serde(default)]
    pub environment_variables: BTreeMap<String, String>,
    /// Resources.
    #[serde(default)]
    pub resources: Resources,
    /// Input zip, base64; unpacked at `/input` (`FLOTILLA_INPUT_DIR`).
    /// Responses carry its URL in the artifact store instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_zip: Option<String>,
    /// Command (a flotilla extension); the image's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
}

/// The body of `POST /batch/`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchJobRequest {
    /// Name, `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters;
    /// `<image slug>-<ms timestamp>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// What to run.
    pub job_parameters: JobParameters,
}

/// A batch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchJobBody {
    /// Id (the run id).
    pub id: String,
    /// Name.
    pub name: String,
    /// Status.
    pub status: BatchStatus,
    /// Created, milliseconds since the epoch.
    pub created: i64,
    /// Started, milliseconds since the epoch.
    pub start_time: Option<i64>,
    /// Stopped, milliseconds since the epoch.
    pub stop_time: Option<i64>,
    /// The output zip, once uploaded (`GET /api/v6/{id}/output` serves it).
    pub output_file_url: Option<String>,
    /// What it runs.
    pub job_parameters: JobParameters,
}

/// The envelope of one batch job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchJobReply {
    /// true.
    pub result: bool,
    /// For people.
    pub msg: String,
    /// Empty.
    pub error: String,
    /// The job.
    pub data: BatchJobBody,
}

/// The envelope of a list of batch jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchJobListReply {
    /// true.
    pub result: bool,
    /// Empty.
    pub msg: String,
    /// Empty.
    pub error: String,
    /// The jobs, oldest first.
    pub data: Vec<BatchJobBody>,
}

/// The envelope of an error: `error` is `InvalidParameters` (400, `data`
/// maps each bad field to what is wrong), `DoesNotExist` (404) or
/// `ClusterError` (the run could not be made or stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BatchErrorReply {
    /// false.
    pub result: bool,
    /// For people.
    pub msg: String,
    /// The kind.
    pub error: String,
    /// Field → problem.
    pub data: BTreeMap<String, String>,
}

fn fail(code: StatusCode, error: &str, msg: String, data: BTreeMap<String, String>) -> Response {
    let body = BatchErrorReply {
        result: false,
        msg,
        error: error.into(),
        data,
    };
    (code, Json(body)).into_response()
}

fn invalid(fields: BTreeMap<String, String>) -> Response {
    let msg = fields
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect::<Vec<_>>()
        .join("; ");
    fail(StatusCode::BAD_REQUEST, "InvalidParameters", msg, fields)
}

fn not_found(id: &str) -> Response {
    fail(
        StatusCode::NOT_FOUND,
        "DoesNotExist",
        format!("Batch job {id} not found."),
        BTreeMap::new(),
    )
}

/// A service error as this API reports it.
fn service_error(e: flotilla::Error) -> Response {
    use flotilla::ErrorKind as K;
    match e.kind() {
        K::InvalidInput => {
            // Service messages start with the field they are about.
            let (field, _) = e
                .message()
                .split_once(':')
                .unwrap_or(("job_parameters", ""));
            let field = field.trim();
            let head = field.split(['[', '.']).next().unwrap_or(field);
            let field = match head {
                "env" => "job_parameters.environment_variables",
                "input_zip" | "input zip" => "job_parameters.input_zip",
                "command" => "job_parameters.command",
                "memory" | "cpu" => "job_parameters.resources",
                "image" => "job_parameters.docker_image",
                _ => field,
            };
            invalid(BTreeMap::from([(
                field.to_string(),
                e.message().to_string(),
            )]))
        }
        K::NotFound => fail(
            StatusCode::NOT_FOUND,
            "DoesNotExist",
            e.message().into(),
            BTreeMap::new(),
        ),
        K::Forbidden => fail(
            StatusCode::FORBIDDEN,
            "Forbidden",
            e.message().into(),
            BTreeMap::new(),
        ),
        _ => {
            let msg = e.message().to_string();
            let status = crate::error::Error::from(e).status();
            fail(status, "ClusterError", msg, BTreeMap::new())
        }
    }
}

fn millis(t: Option<chrono::DateTime<chrono::Utc>>) -> Option<i64> {
    t.map(|t| t.timestamp_millis())
}

fn is_batch(run: &flotilla::Run) -> bool {
    run.group_name == GROUP && run.alias.starts_with("batch-")
}

fn body_of(run: &flotilla::Run) -> BatchJobBody {
    let limits = Quantities {
        cpu: run.cpu.map(cpu_string),
        memory: run.memory.map(|m| format!("{m}Mi")),
    };
    let resources = Resources {
        limits: (limits != Quantities::default()).then_some(limits),
        requests: None,
    };
    BatchJobBody {
        id: run.run_id.clone(),
        name: run.labels.get(NAME_LABEL).cloned().unwrap_or_default(),
        status: BatchStatus::of(run),
        created: run.queued_at.unwrap_or(run.updated_at).timestamp_millis(),
        start_time: millis(run.started_at),
        stop_time: millis(run.finished_at),
        output_file_url: run.output_url.clone(),
        job_parameters: JobParameters {
            docker_image: run.image.clone(),
            environment_variables: run
                .env
                .iter()
                .filter(|e| !e.name.starts_with("FLOTILLA_"))
                .map(|e| (e.name.clone(), e.value.clone()))
                .collect(),
            resources,
            input_zip: run.input_url.clone(),
            command: run.command.clone(),
        },
    }
}

fn ok(msg: String, run: &flotilla::Run) -> Response {
    Json(BatchJobReply {
        result: true,
        msg,
        error: String::new(),
        data: body_of(run),
    })
    .into_response()
}

/// The runs' batch definitions' aliases.
async fn batch_aliases(state: &AppState) -> Result<Vec<String>, flotilla::Error> {
    let query = flotilla::DefinitionQuery {
        group_name: Some(GROUP.into()),
        limit: MAX_LIST,
        ..Default::default()
    };
    let page = state.flotilla().list_definitions(query).await?;
    Ok(page
        .items
        .into_iter()
        .filter(|d| d.group_name == GROUP && d.alias.starts_with("batch-"))
        .map(|d| d.alias)
        .collect())
}

/// Lists batch jobs in one status (`running` when absent), oldest first,
/// at most the server's page limit.
#[utoipa::path(get, path = "/batch/", tag = TAG_BATCH,
    params(("status" = Option<BatchStatus>, Query, description = "created | running (default) | failed | killed | cleaning | succeeded")),
    responses(
        (status = 200, description = "The jobs", body = BatchJobListReply),
        (status = 400, description = "Unknown status", body = BatchErrorReply)
    ))]
pub async fn list_batch_jobs(State(state): State<AppState>, q: QueryPairs) -> Response {
    if let Err(e) = q.check_known(&["status"]) {
        return invalid(BTreeMap::from([(
            "query".to_string(),
            e.message().to_string(),
        )]));
    }
    let wanted = q.last("status").unwrap_or("running");
    let Some(status) = STATUSES.iter().find(|(n, _)| *n == wanted).map(|(_, s)| *s) else {
        let names: Vec<&str> = STATUSES.iter().map(|(n, _)| *n).collect();
        return invalid(BTreeMap::from([(
            "status".to_string(),
            format!("'{wanted}' is not one of {}", names.join(", ")),
        )]));
    };
    let mut data = Vec::new();
    if !status.run_statuses().is_empty() {
        let aliases = match batch_aliases(&state).await {
            Ok(a) => a,
            Err(e) => return service_error(e),
        };
        if !aliases.is_empty() {
            let query = flotilla::RunQuery {
                aliases,
                statuses: status.run_statuses().to_vec(),
                limit: MAX_LIST,
                sort_by: flotilla::RunSortField::QueuedAt,
                order: flotilla::SortOrder::Asc,
                ..Default::default()
            };
            match state.flotilla().list_runs(query).await {
                Ok(page) => data.extend(
                    page.items
                        .iter()
                        .filter(|r| is_batch(r) && BatchStatus::of(r) == status)
                        .map(body_of),
                ),
                Err(e) => return service_error(e),
            }
        }
    }
    Json(BatchJobListReply {
        result: true,
        msg: String::new(),
        error: String::new(),
        data,
    })
    .into_response()
}

async fn batch_run(state: &AppState, id: &str) -> Result<flotilla::Run, Response> {
    match state.flotilla().get_run(id).await {
        Ok(run) if is_batch(&run) => Ok(run),
        Ok(_) => Err(not_found(id)),
        Err(e) if e.kind() == flotilla::ErrorKind::NotFound => Err(not_found(id)),
        Err(e) => Err(service_error(e)),
    }
}

/// One batch job.
#[utoipa::path(get, path = "/batch/{id}", tag = TAG_BATCH,
    params(("id" = String, Path, description = "Batch job id")),
    responses(
        (status = 200, description = "The job", body = BatchJobReply),
        (status = 404, description = "DoesNotExist", body = BatchErrorReply)
    ))]
pub async fn get_batch_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match batch_run(&state, &id).await {
        Ok(run) => ok(String::new(), &run),
        Err(r) => r,
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

fn default_name(image: &str) -> String {
    let mut slug = String::new();
    for c in image.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-');
    let ms = flotilla::model::now().timestamp_millis();
    if slug.is_empty() {
        format!("job-{ms}")
    } else {
        format!("{slug}-{ms}")
    }
}

/// The field problems of a create body, in kubernetes-task-runner's terms.
fn check_body(body: &Value) -> BTreeMap<String, String> {
    let mut bad = BTreeMap::new();
    if let Some(name) = body.get("name")
        && !name.as_str().is_some_and(valid_name)
    {
        bad.insert(
            "name".into(),
            format!("{name} did not match validation regex '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' (at most 63 characters)"),
        );
    }
    let Some(params) = body.get("job_parameters") else {
        bad.insert("job_parameters".into(), "Field is required".into());
        return bad;
    };
    let Some(params) = params.as_object() else {
        bad.insert("job_parameters".into(), "must be an object".into());
        return bad;
    };
    match params.get("docker_image").map(Value::as_str) {
        Some(Some(s)) if !s.trim().is_empty() => {}
        None => {
            bad.insert(
                "job_parameters.docker_image".into(),
                "Field is required".into(),
            );
        }
        _ => {
            bad.insert(
                "job_parameters.docker_image".into(),
                "must be a non-empty string".into(),
            );
        }
    }
    if let Some(env) = params.get("environment_variables")
        && !env
            .as_object()
            .is_some_and(|m| m.values().all(Value::is_string))
    {
        bad.insert(
            "job_parameters.environment_variables".into(),
            "must be an object of string values".into(),
        );
    }
    for key in ["input_zip", "command"] {
        if let Some(v) = params.get(key)
            && !v.is_string()
            && !v.is_null()
        {
            bad.insert(format!("job_parameters.{key}"), "must be a string".into());
        }
    }
    for key in params.keys() {
        if ![
            "docker_image",
            "environment_variables",
            "resources",
            "input_zip",
            "command",
        ]
        .contains(&key.as_str())
        {
            bad.insert(format!("job_parameters.{key}"), "unknown field".into());
        }
    }
    if let Some(res) = params.get("resources") {
        check_resources(res, &mut bad);
    }
    bad
}

fn check_resources(res: &Value, bad: &mut BTreeMap<String, String>) {
    let Some(res) = res.as_object() else {
        bad.insert(
            "job_parameters.resources".into(),
            "must be an object".into(),
        );
        return;
    };
    for (kind, q) in res {
        let at = format!("job_parameters.resources.{kind}");
        if kind != "limits" && kind != "requests" {
            bad.insert(at, "Only 'requests' and 'limits' keys allowed".into());
            continue;
        }
        let Some(q) = q.as_object() else {
            bad.insert(at, "must be an object".into());
            continue;
        };
        for (name, v) in q {
            let at = format!("{at}.{name}");
            let parsed = match (name.as_str(), v.as_str()) {
                ("cpu", Some(s)) => cpu_millicores(s).map(|_| ()),
                ("memory", Some(s)) => memory_mib(s).map(|_| ()),
                ("cpu" | "memory", None) => Err("must be a string quantity".to_string()),
                _ => Err("can only specify 'cpu' or 'memory'".to_string()),
            };
            if let Err(e) = parsed {
                bad.insert(at, e);
            }
        }
    }
}

/// The definition batch jobs of `image` run, made on first use.
async fn definition_for(
    state: &AppState,
    image: &str,
    owner: &str,
) -> Result<flotilla::Definition, flotilla::Error> {
    let alias = format!(
        "batch-{:016x}",
        flotilla::hash::stable_hash(&[image.as_bytes()])
    );
    let f = state.flotilla();
    match f.get_definition_by_alias(&alias).await {
        Err(e) if e.kind() == flotilla::ErrorKind::NotFound => {}
        other => return other,
    }
    let mut new = flotilla::NewDefinition::new(alias.clone(), image);
    new.group_name = GROUP.into();
    new.owner = owner.into();
    match f.define(new).await {
        Err(e) if e.kind() == flotilla::ErrorKind::Conflict => {
            f.get_definition_by_alias(&alias).await
        }
        other => other,
    }
}

/// Creates a batch job and queues its run.
#[utoipa::path(post, path = "/batch/", tag = TAG_BATCH,
    request_body = BatchJobRequest,
    responses(
        (status = 200, description = "The job, queued", body = BatchJobReply),
        (status = 400, description = "InvalidParameters, with a map of the bad fields", body = BatchErrorReply)
    ))]
pub async fn create_batch_job(
    State(state): State<AppState>,
    caller: Caller,
    req: axum::extract::Request,
) -> Response {
    let body = match read_json_value(req, &state).await {
        Ok(b) => b,
        Err(e) => {
            return invalid(BTreeMap::from([(
                "body".to_string(),
                e.message().to_string(),
            )]));
        }
    };
    let bad = check_body(&body);
    if !bad.is_empty() {
        return invalid(bad);
    }
    let request: BatchJobRequest = match serde_json::from_value(body) {
        Ok(r) => r,
        Err(e) => return invalid(BTreeMap::from([("body".to_string(), e.to_string())])),
    };
    let params = request.job_parameters;
    let owner = caller
        .0
        .as_ref()
        .map_or_else(|| ANONYMOUS.to_string(), |id| id.owner.clone());
    let def = match definition_for(&state, params.docker_image.trim(), &owner).await {
        Ok(d) => d,
        Err(e) => return service_error(e),
    };
    let chosen = params
        .resources
        .limits
        .clone()
        .or(params.resources.requests.clone())
        .unwrap_or_default();
    let name = request
        .name
        .unwrap_or_else(|| default_name(&params.docker_image));
    let mut execute = flotilla::ExecuteRequest::owned_by(owner);
    execute.env = Some(
        params
            .environment_variables
            .into_iter()
            .map(|(k, v)| flotilla::EnvVar::new(k, v))
            .collect(),
    );
    execute.cpu = chosen.cpu.as_deref().and_then(|q| cpu_millicores(q).ok());
    execute.memory = chosen.memory.as_deref().and_then(|q| memory_mib(q).ok());
    execute.command = params.command;
    execute.input_zip = params.input_zip;
    execute.labels = Some(BTreeMap::from([(NAME_LABEL.to_string(), name.clone())]));
    match state
        .flotilla()
        .execute_as(&def.definition_id, execute, &caller.actor())
        .await
    {
        Ok(run) => ok(format!("Batch job {name} created."), &run),
        Err(e) => service_error(e),
    }
}

/// Stops a running batch job (400 when it is not running).
#[utoipa::path(delete, path = "/batch/{id}", tag = TAG_BATCH,
    params(("id" = String, Path, description = "Batch job id")),
    responses(
        (status = 200, description = "Stopping", body = BatchJobReply),
        (status = 400, description = "Not running", body = BatchErrorReply),
        (status = 404, description = "DoesNotExist", body = BatchErrorReply)
    ))]
pub async fn stop_batch_job(
    State(state): State<AppState>,
    caller: Caller,
    _uri: OriginalUri,
    ApiPath(id): ApiPath<String>,
) -> Response {
    let run = match batch_run(&state, &id).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let status = BatchStatus::of(&run);
    if !matches!(status, BatchStatus::Running | BatchStatus::Cleaning) {
        return fail(
            StatusCode::BAD_REQUEST,
            "InvalidParameters",
            format!("Can't stop batch job {id}. Status is: {}.", status.as_str()),
            BTreeMap::new(),
        );
    }
    if let Err(e) = caller.require_owner(&run.owner, "stop this batch job") {
        return fail(
            StatusCode::FORBIDDEN,
            "Forbidden",
            e.message().into(),
            BTreeMap::new(),
        );
    }
    match state.flotilla().terminate(&id, caller.name()).await {
        Ok(run) => ok(
            format!("Instance {id} was successfully deleted from the cluster."),
            &run,
        ),
        Err(e) => service_error(e),
    }
}

/// The kubernetes-task-runner routes, at the root (`/batch/...`).
pub fn batch_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_batch_jobs, create_batch_job))
        .routes(routes!(get_batch_job, stop_batch_job))
}
