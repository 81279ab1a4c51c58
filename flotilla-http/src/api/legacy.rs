//! The routes of flotilla-os's other API versions that its clients still
//! call: `PUT /api/v2/task/{id}/execute` (owner from `run_tags.owner_email`,
//! which it requires with `team_name`), `GET /api/v2/history/{run_id}` and
//! `PUT /api/v4/task/{id}/execute` (v6's execute by id: `run_tags.owner_id`
//! and the `command`, `memory`, `cpu`, `gpu` overrides).

use axum::Json;
use axum::extract::{OriginalUri, State};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::runs::execute_request;
use super::{ApiPath, RunBody, TAG_RUNS, run_json};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;

/// The message flotilla-os answers a v2 execute without its run tags.
const V2_TAGS: &str = "run_tags must exist in body and contain [owner_email] and [team_name]";

/// Executes a definition by id, v2: the owner is `run_tags.owner_email`
/// (the token's identity on servers with authentication).
#[utoipa::path(put, path = "/task/{definition_id}/execute", tag = TAG_RUNS,
    params(("definition_id" = String, Path, description = "Definition id")),
    request_body(content = flotilla::ExecuteRequest, description = "`run_tags` must carry `owner_email` and `team_name`"),
    responses(
        (status = 200, description = "The queued run", body = RunBody),
        (status = 400, description = "Invalid body (e.g. `run_tags must exist in body and contain [owner_email] and [team_name]`)", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown definition", body = crate::error::ErrorBody)
    ))]
pub async fn execute_v2(
    State(state): State<AppState>,
    caller: Caller,
    uri: OriginalUri,
    ApiPath(id): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    let mut request = execute_request(&state, &caller, &uri, req).await?;
    let mut tags = request.run_tags.take().unwrap_or_default();
    let email = tags.owner_email.clone().unwrap_or_default();
    let team = tags.team_name.clone().unwrap_or_default();
    if email.trim().is_empty() || team.trim().is_empty() {
        return Err(Error::invalid(V2_TAGS));
    }
    if caller.0.is_none() {
        tags.owner_id = email;
    }
    request.run_tags = Some(tags);
    let run = state
        .flotilla()
        .execute_as(&id, request, &caller.actor())
        .await?;
    Ok(Json(run_json(&run)).into_response())
}

/// The v2 routes: its execute, and v6's run by id.
pub fn v2_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(execute_v2))
        .routes(routes!(super::runs::get_history_run))
}

/// The v4 routes: v6's execute by id (the same body and rules).
pub fn v4_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(super::runs::execute))
}
