//! Run routes: execute, history, terminate, status, events, logs.

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::definitions::{env_filter_map, env_filters};
use super::{ApiPath, LogsBody, PodEventBody, RunBody, TAG_RUNS, is_v1, run_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::extract::{QueryPairs, from_value, read_json_value};

/// `{"terminated": true, "run": ...}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct TerminatedBody {
    /// Always true (a failure is an error reply).
    pub terminated: bool,
    /// The run after the engine stopped it.
    pub run: RunBody,
}

/// `{"updated": true, "run": ...}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct UpdatedBody {
    /// Always true (a refused report is an error reply).
    pub updated: bool,
    /// The run after the report.
    pub run: RunBody,
}

/// A run's status, cheap to poll.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct StatusBody {
    /// Run id.
    pub run_id: String,
    /// Definition id.
    pub definition_id: String,
    /// Alias.
    pub alias: String,
    /// Cluster.
    pub cluster: String,
    /// Engine.
    pub engine: String,
    /// Status.
    pub status: String,
    /// Exit code, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// Why it stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_reason: Option<String>,
    /// Failure category of the last failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Attempt, 1-based.
    pub attempt: u32,
    /// Attempt under flotilla-os's name.
    pub attempt_count: u32,
    /// The engine's handle (empty until submitted).
    pub task_arn: String,
    /// When queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub queued_at: Option<DateTime<Utc>>,
    /// When started.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<DateTime<Utc>>,
    /// When stopped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<DateTime<Utc>>,
    /// Last change.
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: DateTime<Utc>,
}

/// One status change of a run.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventBody {
    /// The run.
    pub run_id: String,
    /// When.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// Previous status; absent for the creation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// New status.
    pub to: String,
    /// Attempt.
    pub attempt: u32,
    /// Why, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The run's timeline: flotilla's status changes (`events`) and the same
/// in flotilla-os's `{total, pod_events}` shape.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct EventsBody {
    /// How many.
    pub total: usize,
    /// As flotilla-os pod events.
    pub pod_events: Vec<PodEventBody>,
    /// Status changes, oldest first.
    pub events: Vec<EventBody>,
}

/// One server-sent event of `GET /{run_id}/logs/stream`, as a client's
/// event-stream parser sees it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct LogStreamEvent {
    /// `status` (data: `{run_id, status, exit_code}`), `log` (data: log
    /// text, one `data:` line per line) or `end` (data: the run).
    pub event: String,
    /// The payload.
    pub data: String,
    /// On `log` events: the cursor to resume after (`Last-Event-ID`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Reconnection delay in milliseconds, if the server sets one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<u64>,
}

/// A page of runs, with the query echoed back as flotilla-os does.
#[derive(Debug, Default, serde::Serialize, utoipa::ToSchema)]
pub struct HistoryBody {
    /// Runs matching the filters (all pages), counted up to
    /// `http.history_count_limit`.
    pub total: u64,
    /// Present (true) when `total` is the count limit: at least that many
    /// runs match.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_capped: Option<bool>,
    /// This page: each run rendered once, when the byte budget measured it.
    #[schema(value_type = Vec<RunBody>)]
    pub history: Vec<Box<serde_json::value::RawValue>>,
    /// Page size.
    pub limit: usize,
    /// Rows skipped.
    pub offset: usize,
    /// Sort field.
    pub sort_by: String,
    /// `asc` or `desc`.
    pub order: String,
    /// The `env` filters as a map.
    pub env_filters: BTreeMap<String, String>,
    /// Keyset cursor of the next page (absent on the last page and on a
    /// page cut by the byte budget).
    pub next_cursor: Option<String>,
    /// Present (true) when the byte budget cut the page short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Offset to continue at after a cut page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<usize>,
    /// Echoed `status` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<Vec<String>>,
    /// Echoed `alias` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<Vec<String>>,
    /// Echoed `cluster_name` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_name: Option<Vec<String>>,
    /// Echoed `cluster` filter (the flotilla-os UI's name for it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Vec<String>>,
    /// Echoed `owner` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<Vec<String>>,
    /// Echoed `owner_id` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_id: Option<Vec<String>>,
    /// Echoed `engine` filter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<Vec<String>>,
    /// Echoed definition (path or filter).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition_id: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at_since: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued_at_until: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_since: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at_until: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_since: Option<Vec<String>>,
    /// Echoed time bound.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_until: Option<Vec<String>>,
}

/// Owner of runs executed through `/api/v1` without authentication, as in
/// flotilla-os.
pub const V1_OWNER: &str = "v1-unknown";

/// Query parameters of the history lists.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct HistoryParams {
    /// Page size (default 1024, capped by `limits.max_page`).
    limit: Option<usize>,
    /// Rows to skip.
    offset: Option<usize>,
    /// run_id | cluster_name | status | queued_at | started_at | finished_at | alias (default started_at).
    sort_by: Option<String>,
    /// asc | desc (default desc).
    order: Option<String>,
    /// Repeatable: QUEUED, PENDING, RUNNING, STOPPED, NEEDS_RETRY.
    status: Option<String>,
    /// Repeatable: alias equals.
    alias: Option<String>,
    /// Repeatable: cluster equals.
    cluster_name: Option<String>,
    /// Repeatable: cluster equals (the flotilla-os UI's runs list sends
    /// this name).
    cluster: Option<String>,
    /// Definition id.
    definition_id: Option<String>,
    /// Repeatable: owner equals (`owner_id` is accepted too).
    owner: Option<String>,
    /// Engine name.
    engine: Option<String>,
    /// `NAME|VALUE`, repeatable: every pair is in the run's env.
    env: Option<String>,
    /// RFC 3339 lower bound of `queued_at`.
    queued_at_since: Option<String>,
    /// RFC 3339 upper bound of `queued_at`.
    queued_at_until: Option<String>,
    /// RFC 3339 lower bound of `started_at`.
    started_at_since: Option<String>,
    /// RFC 3339 upper bound of `started_at`.
    started_at_until: Option<String>,
    /// RFC 3339 lower bound of `finished_at`.
    finished_at_since: Option<String>,
    /// RFC 3339 upper bound of `finished_at`.
    finished_at_until: Option<String>,
    /// Keyset cursor from a previous page's `next_cursor`.
    cursor: Option<String>,
}

const HISTORY_PARAMS: &[&str] = &[
    "limit",
    "offset",
    "sort_by",
    "order",
    "status",
    "alias",
    "cluster_name",
    "cluster",
    "definition_id",
    "owner",
    "owner_id",
    "engine",
    "env",
    "queued_at_since",
    "queued_at_until",
    "started_at_since",
    "started_at_until",
    "finished_at_since",
    "finished_at_until",
    "cursor",
];

/// Lowercases the keys flotilla-os clients send in any case
/// (`run_tags.OWNER_ID`, `Cluster`, `env[].Name`); label keys are kept.
pub(super) fn normalize_execute_body(body: &mut Value) {
    fn lower_keys(v: &mut Value) {
        if let Value::Object(map) = v {
            let old = std::mem::take(map);
            for (k, val) in old {
                let key = k.to_ascii_lowercase();
                if !(val.is_null() && map.contains_key(&key)) {
                    map.insert(key, val);
                }
            }
        }
    }
    lower_keys(body);
    if let Value::Object(map) = body {
        map.retain(|_, v| !v.is_null());
        if let Some(tags) = map.get_mut("run_tags") {
            lower_keys(tags);
            if let Value::Object(t) = tags {
                t.retain(|_, v| !v.is_null());
            }
        }
        if let Some(Value::Array(env)) = map.get_mut("env") {
            env.iter_mut().for_each(lower_keys);
        }
    }
}

pub(super) async fn execute_request(
    state: &AppState,
    caller: &Caller,
    uri: &OriginalUri,
    req: axum::extract::Request,
) -> Result<flotilla::ExecuteRequest, Error> {
    let mut body = read_json_value(req, state).await?;
    normalize_execute_body(&mut body);
    let mut request: flotilla::ExecuteRequest = from_value(body)?;
    own_request(&mut request, caller, uri);
    Ok(request)
}

/// With tokens the run's owner is the caller, whatever the body says;
/// under `/api/v1` it is `v1-unknown`; otherwise the body's
/// `run_tags.owner_id`.
pub(super) fn own_request(
    request: &mut flotilla::ExecuteRequest,
    caller: &Caller,
    uri: &OriginalUri,
) {
    if let Some(id) = &caller.0 {
        let mut tags = request.run_tags.take().unwrap_or_default();
        tags.owner_id = id.owner.clone();
        request.run_tags = Some(tags);
    } else if is_v1(uri) {
        let mut tags = request.run_tags.take().unwrap_or_default();
        tags.owner_id = V1_OWNER.into();
        request.run_tags = Some(tags);
    }
}

/// Executes a definition by id.
#[utoipa::path(put, path = "/task/{definition_id}/execute", tag = TAG_RUNS,
    params(("definition_id" = String, Path, description = "Definition id")),
    request_body(content = flotilla::ExecuteRequest, description = "`run_tags.owner_id` is required without authentication"),
    responses(
        (status = 200, description = "The queued run", body = RunBody),
        (status = 400, description = "Invalid body (e.g. `run_tags must exist in body and contain [owner_id]`), unknown or offline cluster", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown definition", body = crate::error::ErrorBody)
    ))]
pub async fn execute(
    State(state): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    ApiPath(id): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    let request = execute_request(&state, &caller, &uri, req).await?;
    let run = state
        .flotilla()
        .execute_as(&id, request, &caller.actor())
        .await?;
    Ok(Json(run_json(&run)).into_response())
}

/// Executes a definition by alias.
#[utoipa::path(put, path = "/task/alias/{alias}/execute", tag = TAG_RUNS,
    params(("alias" = String, Path, description = "Definition alias")),
    request_body(content = flotilla::ExecuteRequest, description = "As for execute by id"),
    responses(
        (status = 200, description = "The queued run", body = RunBody),
        (status = 400, description = "Invalid body", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown alias", body = crate::error::ErrorBody)
    ))]
pub async fn execute_alias(
    State(state): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    ApiPath(alias): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    let request = execute_request(&state, &caller, &uri, req).await?;
    let run = state
        .flotilla()
        .execute_alias_as(&alias, request, &caller.actor())
        .await?;
    Ok(Json(run_json(&run)).into_response())
}

fn parse_time(q: &QueryPairs, name: &str) -> Result<Option<DateTime<Utc>>, Error> {
    match q.last(name) {
        None | Some("") => Ok(None),
        Some(v) => DateTime::parse_from_rfc3339(v)
            .map(|t| Some(t.with_timezone(&Utc)))
            .map_err(|_| {
                Error::invalid(format!(
                    "{name}: '{v}' is not an RFC 3339 time like 2026-01-31T12:00:00Z"
                ))
            }),
    }
}

fn range(q: &QueryPairs, field: &str) -> Result<flotilla::TimeRange, Error> {
    Ok(flotilla::TimeRange {
        since: parse_time(q, &format!("{field}_since"))?,
        until: parse_time(q, &format!("{field}_until"))?,
    })
}

/// A page of `GET /history` restricted to `definition_id` (a definition's
/// or template version's runs) and to runs whose env holds `scope` (a
/// template name's runs), when given.
pub(super) async fn history(
    state: &AppState,
    q: QueryPairs,
    definition_id: Option<String>,
    scope: Option<flotilla::EnvVar>,
) -> Result<Response, Error> {
    q.check_known(HISTORY_PARAMS)?;
    let sort_by: flotilla::RunSortField = q.last("sort_by").unwrap_or("started_at").parse()?;
    let order: flotilla::SortOrder = q.last("order").unwrap_or("desc").parse()?;
    let max = state.flotilla().config().limits.max_page;
    let limit = q.usize_or("limit", 1024)?.clamp(1, max);
    let offset = q.usize_or("offset", 0)?;
    let statuses = q
        .all("status")
        .iter()
        .map(|s| s.parse::<flotilla::RunStatus>())
        .collect::<Result<Vec<_>, _>>()?;
    let env = env_filters(&q)?;
    let mut scoped = env.clone();
    scoped.extend(scope);
    let mut owners = q.all("owner");
    owners.extend(q.all("owner_id"));
    let definition_id = definition_id.or_else(|| q.last("definition_id").map(str::to_string));
    let mut clusters = q.all("cluster_name");
    clusters.extend(q.all("cluster"));
    let query = flotilla::RunQuery {
        statuses,
        aliases: q.all("alias"),
        definition_id: definition_id.clone(),
        clusters,
        owners,
        engine: q.last("engine").map(str::to_string),
        env: scoped,
        queued: range(&q, "queued_at")?,
        started: range(&q, "started_at")?,
        finished: range(&q, "finished_at")?,
        sort_by,
        order,
        limit,
        offset,
        cursor: q
            .last("cursor")
            .filter(|c| !c.is_empty())
            .map(str::to_string),
        // The history answers flotilla-os's `total`, counted up to
        // `http.history_count_limit`.
        skip_total: false,
        count_limit: match state.http().history_count_limit {
            0 => None,
            n => Some(n),
        },
    };
    let page = state.flotilla().list_runs(query.clone()).await?;
    let (runs, truncated) = within_budget(&page.items, state.http().history_page_bytes)?;
    let body = HistoryBody {
        total_capped: query.total_at_limit(page.total).then_some(true),
        total: page.total,
        // A page cut short continues at `next_offset` (the store's keyset
        // cursor names the last run of the full page, so it is left out).
        truncated: truncated.then_some(true),
        next_offset: truncated.then_some(offset + runs.len()),
        next_cursor: if truncated { None } else { page.next_cursor },
        history: runs,
        limit,
        offset,
        sort_by: sort_by.as_str().to_string(),
        order: order.as_str().to_string(),
        env_filters: env_filter_map(&env),
        status: q.echoed("status"),
        alias: q.echoed("alias"),
        cluster_name: q.echoed("cluster_name"),
        cluster: q.echoed("cluster"),
        owner: q.echoed("owner"),
        owner_id: q.echoed("owner_id"),
        engine: q.echoed("engine"),
        definition_id: definition_id.map(|d| vec![d]),
        queued_at_since: q.echoed("queued_at_since"),
        queued_at_until: q.echoed("queued_at_until"),
        started_at_since: q.echoed("started_at_since"),
        started_at_until: q.echoed("started_at_until"),
        finished_at_since: q.echoed("finished_at_since"),
        finished_at_until: q.echoed("finished_at_until"),
    };
    Ok(Json(body).into_response())
}

/// The runs as JSON, each rendered once, stopping once their size passes
/// `budget` bytes (always at least one run); `true` when some were left
/// out.
fn within_budget(
    runs: &[flotilla::Run],
    budget: usize,
) -> Result<(Vec<Box<serde_json::value::RawValue>>, bool), Error> {
    let mut out = Vec::with_capacity(runs.len());
    let mut bytes = 0usize;
    for run in runs {
        if !out.is_empty() && bytes >= budget {
            return Ok((out, true));
        }
        let rendered = serde_json::value::to_raw_value(&run_json(run)).map_err(|e| {
            flotilla::Error::internal(format!("run {}: cannot encode: {e}", run.run_id))
        })?;
        bytes += rendered.get().len() + 1;
        out.push(rendered);
    }
    Ok((out, false))
}

/// Lists runs.
#[utoipa::path(get, path = "/history", tag = TAG_RUNS, params(HistoryParams),
    responses(
        (status = 200, description = "`{total, history, limit, offset, sort_by, order, env_filters, next_cursor, <echoed filters as lists>}`; a page cut by `http.history_page_bytes` also has `truncated: true` and `next_offset`", body = HistoryBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody)
    ))]
pub async fn list_history(State(state): State<AppState>, q: QueryPairs) -> Result<Response, Error> {
    history(&state, q, None, None).await
}

/// Lists the runs of one definition.
#[utoipa::path(get, path = "/task/{definition_id}/history", tag = TAG_RUNS,
    params(("definition_id" = String, Path, description = "Definition id"), HistoryParams),
    responses(
        (status = 200, description = "As `GET /history`", body = HistoryBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody)
    ))]
pub async fn list_definition_history(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    q: QueryPairs,
) -> Result<Response, Error> {
    // An unknown definition is a 404, as flotilla-os's clients expect (not
    // an empty list).
    state.flotilla().get_definition(&id).await?;
    history(&state, q, Some(id), None).await
}

pub(super) async fn one_run(state: &AppState, run_id: &str) -> Result<Response, Error> {
    let run = state.flotilla().get_run(run_id).await?;
    Ok(Json(run_json(&run)).into_response())
}

/// A run by id.
#[utoipa::path(get, path = "/history/{run_id}", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_history_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Response, Error> {
    one_run(&state, &run_id).await
}

/// What a run was executed with beyond its definition (flotilla-os's
/// `execution_request_custom`): `{}` for a definition's run.
#[utoipa::path(get, path = "/history/{run_id}/payload", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run's execution_request_custom", body = super::bodies::RunPayloadBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_history_run_payload(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Json<super::bodies::RunPayloadBody>, Error> {
    let run = state.flotilla().get_run(&run_id).await?;
    Ok(Json(super::bodies::RunPayloadBody(
        super::run_json(&run).execution_request_custom,
    )))
}

/// A run by id (flotilla-os `task/history` spelling).
#[utoipa::path(get, path = "/task/history/{run_id}", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_task_history_run(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Response, Error> {
    one_run(&state, &run_id).await
}

pub(super) async fn run_of_definition(
    state: &AppState,
    definition_id: &str,
    run_id: &str,
) -> Result<flotilla::Run, Error> {
    let run = state.flotilla().get_run(run_id).await?;
    if run.definition_id != definition_id {
        return Err(Error::not_found(format!(
            "run {run_id} is not a run of definition {definition_id}"
        )));
    }
    Ok(run)
}

/// A run of a definition.
#[utoipa::path(get, path = "/task/{definition_id}/history/{run_id}", tag = TAG_RUNS,
    params(("definition_id" = String, Path, description = "Definition id"), ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The run", body = RunBody),
        (status = 404, description = "Unknown run, or not of this definition", body = crate::error::ErrorBody)
    ))]
pub async fn get_definition_run(
    State(state): State<AppState>,
    ApiPath((definition_id, run_id)): ApiPath<(String, String)>,
) -> Result<Response, Error> {
    let run = run_of_definition(&state, &definition_id, &run_id).await?;
    Ok(Json(run_json(&run)).into_response())
}

/// Terminates a run (and its children). Unknown runs are 404.
#[utoipa::path(delete, path = "/task/{definition_id}/history/{run_id}", tag = TAG_RUNS,
    params(("definition_id" = String, Path, description = "Definition id"), ("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "`{\"terminated\": true, \"run\": {...}}`", body = TerminatedBody),
        (status = 403, description = "Not the run's owner nor an admin", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn terminate_definition_run(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((definition_id, run_id)): ApiPath<(String, String)>,
) -> Result<Response, Error> {
    let run = run_of_definition(&state, &definition_id, &run_id).await?;
    caller.require_owner(&run.owner, "terminate this run")?;
    let run = state.flotilla().terminate(&run_id, caller.name()).await?;
    Ok(Json(TerminatedBody {
        terminated: true,
        run: run_json(&run),
    })
    .into_response())
}

fn etag_of(run: &flotilla::Run) -> String {
    format!("\"{}-{}\"", run.version, run.updated_at.timestamp_micros())
}

/// The run's status, cheap to poll: `ETag` and `If-None-Match` give 304
/// while nothing changed.
#[utoipa::path(get, path = "/{run_id}/status", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The status with an ETag", body = StatusBody),
        (status = 304, description = "Unchanged since the ETag sent in If-None-Match"),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_status(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, Error> {
    let run = state.flotilla().get_run(&run_id).await?;
    let etag = etag_of(&run);
    let matches = headers
        .get_all(IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*");
    let etag_value = HeaderValue::from_str(&etag)
        .map_err(|_| Error::new(crate::error::ErrorKind::Io, "etag: not a header value"))?;
    let cache = HeaderValue::from_static("no-cache");
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(ETAG, etag_value), (CACHE_CONTROL, cache)],
        )
            .into_response());
    }
    let body = StatusBody {
        run_id: run.run_id.clone(),
        definition_id: run.definition_id.clone(),
        alias: run.alias.clone(),
        cluster: run.cluster.clone(),
        engine: run.engine.clone(),
        status: run.status.as_str().to_string(),
        exit_code: run.exit_code,
        exit_reason: run.exit_reason.clone(),
        failure: run.failure.map(|f| f.as_str().to_string()),
        attempt: run.attempt,
        attempt_count: run.attempt,
        task_arn: run.engine_ref.clone().unwrap_or_default(),
        queued_at: run.queued_at,
        started_at: run.started_at,
        finished_at: run.finished_at,
        updated_at: run.updated_at,
    };
    Ok(([(ETAG, etag_value), (CACHE_CONTROL, cache)], Json(body)).into_response())
}

/// Reports a status change from outside: admins and `reporter` tokens
/// only, through the state machine and the report rules that keep one
/// container per attempt (`flotilla::service` reports: a queued run is
/// only stopped, an active run is never reported NEEDS_RETRY, an active
/// run reported STOPPED is terminated through its engine first).
#[utoipa::path(put, path = "/{run_id}/status", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    request_body(content = flotilla::StatusReport, description = "The reported status"),
    responses(
        (status = 200, description = "`{\"updated\": true, \"run\": {...}}`", body = UpdatedBody),
        (status = 400, description = "Invalid body", body = crate::error::ErrorBody),
        (status = 403, description = "Neither an admin nor a reporter token", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody),
        (status = 409, description = "Illegal transition, or one a report may not make (named)", body = crate::error::ErrorBody)
    ))]
pub async fn put_status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(run_id): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    let body = read_json_value(req, &state).await?;
    let report: flotilla::StatusReport = from_value(body)?;
    caller.require_reporter("report the status of a run")?;
    let run = state.flotilla().update_status(&run_id, report).await?;
    Ok(Json(UpdatedBody {
        updated: true,
        run: run_json(&run),
    })
    .into_response())
}

/// The run's timeline.
#[utoipa::path(get, path = "/{run_id}/events", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The timeline", body = EventsBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_events(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Response, Error> {
    let run = state.flotilla().get_run(&run_id).await?;
    let events = state.flotilla().run_events(&run_id).await?;
    Ok(Json(EventsBody {
        total: events.len(),
        pod_events: events
            .iter()
            .map(|e| PodEventBody::of_event(&run, e))
            .collect(),
        events: events
            .iter()
            .map(|e| EventBody {
                run_id: e.run_id.clone(),
                at: e.at,
                from: e.from.map(|f| f.as_str().to_string()),
                to: e.to.as_str().to_string(),
                attempt: e.attempt,
                reason: e.reason.clone(),
            })
            .collect(),
    })
    .into_response())
}

/// The run's log after `last_seen`.
#[utoipa::path(get, path = "/{run_id}/logs", tag = TAG_RUNS,
    params(
        ("run_id" = String, Path, description = "Run id"),
        ("last_seen" = Option<String>, Query, description = "Cursor from the previous response"),
        ("raw_text" = Option<bool>, Query, description = "true: the whole log after last_seen as text/plain, streamed")
    ),
    responses(
        (status = 200, description = "A page of the log, or the whole log as text/plain with `raw_text=true`", body = LogsBody),
        (status = 400, description = "Bad cursor", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody)
    ))]
pub async fn get_logs(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    q: QueryPairs,
) -> Result<Response, Error> {
    q.check_known(&["last_seen", "raw_text"])?;
    let raw = q.flag("raw_text")?;
    let mut cursor = q
        .last("last_seen")
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let page = state.log_page_bytes();
    if !raw {
        let (_, chunk) = state
            .flotilla()
            .logs(&run_id, cursor.as_deref(), page)
            .await?;
        let body = LogsBody {
            log: chunk.log,
            last_seen: chunk.cursor.or(cursor),
            complete: chunk.complete,
        };
        return Ok(Json(body).into_response());
    }
    // The whole log after the cursor, streamed page by page as it is read
    // (never buffered whole); the first page is read before answering so
    // an unknown run or a bad cursor is still a JSON error.
    let flotilla = state.flotilla().clone();
    let (_, first) = flotilla.logs(&run_id, cursor.as_deref(), page).await?;
    let more = !(first.log.is_empty() || first.complete);
    if first.cursor.is_some() {
        cursor = first.cursor.clone();
    }
    let head = futures::stream::once(async move { Ok::<_, std::io::Error>(first.log) });
    let rest = futures::stream::unfold(
        (flotilla, run_id, cursor, more),
        move |(flotilla, run_id, cursor, more)| async move {
            if !more {
                return None;
            }
            match flotilla.logs(&run_id, cursor.as_deref(), page).await {
                Err(e) => Some((
                    Err(std::io::Error::other(e.message().to_string())),
                    (flotilla, run_id, cursor, false),
                )),
                Ok((_, chunk)) => {
                    let more = !(chunk.log.is_empty() || chunk.complete);
                    let next = chunk.cursor.or(cursor);
                    Some((Ok(chunk.log), (flotilla, run_id, next, more)))
                }
            }
        },
    );
    let body = axum::body::Body::from_stream(futures::StreamExt::chain(head, rest));
    Ok((
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        )],
        body,
    )
        .into_response())
}

struct LogStream {
    state: AppState,
    run_id: String,
    cursor: Option<String>,
    last_status: Option<flotilla::RunStatus>,
    pending: VecDeque<Event>,
    done: bool,
    deadline: tokio::time::Instant,
    changes: broadcast::Receiver<flotilla::Run>,
    /// Idle reads in a row: the wait before the next read grows with it.
    idle: u32,
    _permit: crate::streams::StreamPermit,
}

impl LogStream {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let page = self.state.log_page_bytes();
            match self
                .state
                .flotilla()
                .logs(&self.run_id, self.cursor.as_deref(), page)
                .await
            {
                Err(e) => {
                    self.done = true;
                    return Some(Event::default().event("error").data(e.message()));
                }
                Ok((run, chunk)) => {
                    if self.last_status != Some(run.status) {
                        self.last_status = Some(run.status);
                        let data = json!({"run_id": run.run_id, "status": run.status, "exit_code": run.exit_code});
                        self.pending
                            .push_back(Event::default().event("status").data(data.to_string()));
                    }
                    if chunk.cursor.is_some() {
                        self.cursor = chunk.cursor.clone();
                    }
                    let empty = chunk.log.is_empty();
                    if !empty {
                        let mut ev = Event::default().event("log").data(chunk.log);
                        if let Some(c) = &self.cursor {
                            ev = ev.id(c.clone());
                        }
                        self.pending.push_back(ev);
                    }
                    if chunk.complete || (run.status.is_terminal() && empty) {
                        self.done = true;
                        self.pending.push_back(
                            Event::default()
                                .event("end")
                                .data(serde_json::to_string(&run_json(&run)).unwrap_or_default()),
                        );
                        continue;
                    }
                    if !empty || !self.pending.is_empty() {
                        self.idle = 0;
                        continue;
                    }
                    self.idle = self.idle.saturating_add(1);
                }
            }
            let poll = idle_wait(
                self.state.stream_poll(),
                self.state.stream_poll_max(),
                self.idle,
            );
            let run_id = self.run_id.clone();
            let changes = &mut self.changes;
            let changed = async move {
                loop {
                    match changes.recv().await {
                        Ok(r) if r.run_id == run_id => return,
                        Ok(_) => continue,
                        Err(broadcast::error::RecvError::Lagged(_)) => return,
                        Err(broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            };
            let deadline = self.deadline;
            let shutdown = self.state.shutdown_token().clone();
            let closed = tokio::select! {
                _ = changed => false,
                _ = tokio::time::sleep(poll) => false,
                _ = tokio::time::sleep_until(deadline) => true,
                _ = shutdown.cancelled() => true,
            };
            if closed {
                self.done = true;
                return Some(Event::default().event("closed").data(
                    "stream closed (time limit or server shutdown); reconnect with last_seen",
                ));
            }
        }
    }
}

/// The wait before the next read of a log that was idle `idle` reads in a
/// row: `base` doubling up to `max` (the retry policy's backoff, so there
/// is one copy of it). A change of the run wakes the stream earlier.
fn idle_wait(base: Duration, max: Duration, idle: u32) -> Duration {
    flotilla::RetryPolicy {
        base_backoff: base,
        max_backoff: max,
        ..flotilla::RetryPolicy::default()
    }
    .backoff_seeded(idle.max(1), 0)
}

/// Live log: server-sent events `status` (JSON), `log` (text; the event id
/// is the cursor, so `Last-Event-ID` resumes) and `end` (the stopped run)
/// until the run stops and its log is read.
#[utoipa::path(get, path = "/{run_id}/logs/stream", tag = TAG_RUNS,
    params(
        ("run_id" = String, Path, description = "Run id"),
        ("last_seen" = Option<String>, Query, description = "Resume after this cursor (or send Last-Event-ID)")
    ),
    responses(
        (status = 200, description = "text/event-stream of `status`, `log` and `end` events", content_type = "text/event-stream", body = LogStreamEvent),
        (status = 404, description = "Unknown run", body = crate::error::ErrorBody),
        (status = 429, description = "Too many open streams (per identity or in total)", body = crate::error::ErrorBody)
    ))]
pub async fn stream_logs(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(run_id): ApiPath<String>,
    q: QueryPairs,
    headers: HeaderMap,
) -> Result<Response, Error> {
    q.check_known(&["last_seen"])?;
    let changes = state.flotilla().subscribe();
    state.flotilla().get_run(&run_id).await?;
    let permit = state.streams().acquire(
        caller.name(),
        state.http().max_streams_per_caller,
        state.http().max_streams,
    )?;
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(q.last("last_seen"))
        .filter(|c| !c.is_empty())
        .map(str::to_string);
    let stream = LogStream {
        deadline: tokio::time::Instant::now() + state.stream_max(),
        state,
        run_id,
        cursor,
        last_status: None,
        pending: VecDeque::new(),
        done: false,
        changes,
        idle: 0,
        _permit: permit,
    };
    let events = futures::stream::unfold(stream, |mut s| async move {
        s.next_event()
            .await
            .map(|e| (Ok::<Event, Infallible>(e), s))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_log_streams_back_off_doubling_to_the_cap() {
        let ms = Duration::from_millis;
        let waits: Vec<Duration> = (1..=6).map(|i| idle_wait(ms(500), ms(4000), i)).collect();
        assert_eq!(
            waits,
            vec![ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)]
        );
        assert_eq!(idle_wait(ms(500), ms(4000), 0), ms(500));
    }
}
