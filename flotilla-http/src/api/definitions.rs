//! Definition routes, groups and tags.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

use super::{
    ApiPath, DefinitionBody, DefinitionListBody, DeletedBody, GroupsBody, TAG_DEFINITIONS,
    TAG_META, TagsBody, definition_json,
};
use crate::AppState;
use crate::auth::Caller;
use crate::error::Error;
use crate::extract::{ApiJson, QueryPairs, from_value};

/// Query parameters of `GET /task`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct DefinitionListParams {
    /// Page size (default 1024, capped by `limits.max_page`).
    limit: Option<usize>,
    /// Rows to skip.
    offset: Option<usize>,
    /// alias | image | group_name | memory (default alias).
    sort_by: Option<String>,
    /// asc | desc (default asc).
    order: Option<String>,
    /// Alias contains (case-insensitive).
    alias: Option<String>,
    /// Group equals.
    group_name: Option<String>,
    /// Image contains (case-insensitive).
    image: Option<String>,
    /// `NAME|VALUE`, repeatable: every pair is in the definition's env.
    env: Option<String>,
}

/// Query parameters of `GET /groups` and `GET /tags`.
#[derive(Debug, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct NameListParams {
    /// Page size.
    limit: Option<usize>,
    /// Rows to skip.
    offset: Option<usize>,
    /// Name contains.
    name: Option<String>,
}

/// Parses `env=NAME|VALUE` filters.
pub(crate) fn env_filters(q: &QueryPairs) -> Result<Vec<flotilla::EnvVar>, Error> {
    q.all("env")
        .into_iter()
        .map(|kv| match kv.split_once('|') {
            Some((n, v)) if !n.is_empty() => Ok(flotilla::EnvVar::new(n, v)),
            _ => Err(Error::invalid(format!(
                "env: '{kv}' is not a NAME|VALUE filter"
            ))),
        })
        .collect()
}

/// The `env` filters as the `{name: value}` map list replies echo.
pub(crate) fn env_filter_map(env: &[flotilla::EnvVar]) -> BTreeMap<String, String> {
    env.iter()
        .map(|e| (e.name.clone(), e.value.clone()))
        .collect()
}

/// Lists definitions.
#[utoipa::path(get, path = "/task", tag = TAG_DEFINITIONS, params(DefinitionListParams),
    responses(
        (status = 200, description = "A page, with the filters echoed", body = DefinitionListBody),
        (status = 400, description = "A bad parameter, named", body = crate::error::ErrorBody)
    ))]
pub async fn list_definitions(
    State(state): State<AppState>,
    q: QueryPairs,
) -> Result<Response, Error> {
    q.check_known(&[
        "limit",
        "offset",
        "sort_by",
        "order",
        "alias",
        "group_name",
        "image",
        "env",
    ])?;
    let sort_by: flotilla::DefinitionSortField = q.last("sort_by").unwrap_or("alias").parse()?;
    let order: flotilla::SortOrder = q.last("order").unwrap_or("asc").parse()?;
    let (limit, offset) = page_params(&q, &state)?;
    let env = env_filters(&q)?;
    let query = flotilla::DefinitionQuery {
        alias: q.last("alias").map(str::to_string),
        group_name: q.last("group_name").map(str::to_string),
        image: q.last("image").map(str::to_string),
        env: env.clone(),
        sort_by,
        order,
        limit,
        offset,
    };
    let page = state.flotilla().list_definitions(query).await?;
    let body = DefinitionListBody {
        total: page.total,
        definitions: page.items.iter().map(definition_json).collect(),
        limit,
        offset,
        sort_by: sort_by.as_str().to_string(),
        order: order.as_str().to_string(),
        env_filters: env_filter_map(&env),
        alias: q.echoed("alias"),
        group_name: q.echoed("group_name"),
        image: q.echoed("image"),
    };
    Ok(Json(body).into_response())
}

/// Creates a definition (flotilla-os body).
#[utoipa::path(post, path = "/task", tag = TAG_DEFINITIONS,
    request_body(content = flotilla::NewDefinition, description = "`alias` and `image` are required"),
    responses(
        (status = 200, description = "The stored definition", body = DefinitionBody),
        (status = 400, description = "Invalid body, field named", body = crate::error::ErrorBody),
        (status = 409, description = "Alias taken", body = crate::error::ErrorBody),
        (status = 413, description = "Body too large", body = crate::error::ErrorBody)
    ))]
pub async fn create_definition(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(mut new): ApiJson<flotilla::NewDefinition>,
) -> Result<Response, Error> {
    // With tokens the owner is the caller, whatever the body says; without
    // authentication it is the body's `owner` (asserted, like flotilla-os's
    // `run_tags.owner_id`), empty when absent.
    if let Some(id) = &caller.0 {
        new.owner = id.owner.clone();
    }
    let def = state.flotilla().define(new).await?;
    Ok(Json(definition_json(&def)).into_response())
}

/// A definition by id.
#[utoipa::path(get, path = "/task/{definition_id}", tag = TAG_DEFINITIONS,
    params(("definition_id" = String, Path, description = "Definition id")),
    responses(
        (status = 200, description = "The definition", body = DefinitionBody),
        (status = 404, description = "Unknown id", body = crate::error::ErrorBody)
    ))]
pub async fn get_definition(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    let def = state.flotilla().get_definition(&id).await?;
    Ok(Json(definition_json(&def)).into_response())
}

/// Updates a definition: present fields replace; the alias cannot change.
#[utoipa::path(put, path = "/task/{definition_id}", tag = TAG_DEFINITIONS,
    params(("definition_id" = String, Path, description = "Definition id")),
    request_body(content = flotilla::DefinitionUpdate, description = "Fields to replace; `alias`, `owner` and `definition_id` may be sent back unchanged (flotilla-os PUTs the whole definition)"),
    responses(
        (status = 200, description = "The updated definition", body = DefinitionBody),
        (status = 400, description = "Invalid body, field named", body = crate::error::ErrorBody),
        (status = 403, description = "Not the definition's owner nor an admin", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown id", body = crate::error::ErrorBody)
    ))]
pub async fn update_definition(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    let mut body = crate::extract::read_json_value(req, &state).await?;
    let current = state.flotilla().get_definition(&id).await?;
    if let Some(obj) = body.as_object_mut() {
        if let Some(alias) = obj.remove("alias")
            && alias.as_str() != Some(current.alias.as_str())
        {
            return Err(Error::invalid(
                "alias: cannot be changed (it names the definition)",
            ));
        }
        if let Some(owner) = obj.remove("owner")
            && owner.as_str() != Some(current.owner.as_str())
        {
            return Err(Error::invalid(
                "owner: cannot be changed (it is who created the definition)",
            ));
        }
        obj.remove("definition_id");
    }
    let update: flotilla::DefinitionUpdate = from_value(body)?;
    let def = state
        .flotilla()
        .update_definition(&id, update, &caller.actor())
        .await?;
    Ok(Json(definition_json(&def)).into_response())
}

/// Deletes a definition; its runs stay.
#[utoipa::path(delete, path = "/task/{definition_id}", tag = TAG_DEFINITIONS,
    params(("definition_id" = String, Path, description = "Definition id")),
    responses(
        (status = 200, description = "Deleted", body = DeletedBody),
        (status = 403, description = "Not the definition's owner nor an admin", body = crate::error::ErrorBody),
        (status = 404, description = "Unknown id", body = crate::error::ErrorBody)
    ))]
pub async fn delete_definition(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, Error> {
    state
        .flotilla()
        .delete_definition(&id, &caller.actor())
        .await?;
    Ok(Json(DeletedBody::YES).into_response())
}

/// A definition by alias.
#[utoipa::path(get, path = "/task/alias/{alias}", tag = TAG_DEFINITIONS,
    params(("alias" = String, Path, description = "Definition alias")),
    responses(
        (status = 200, description = "The definition", body = DefinitionBody),
        (status = 404, description = "Unknown alias", body = crate::error::ErrorBody)
    ))]
pub async fn get_definition_by_alias(
    State(state): State<AppState>,
    ApiPath(alias): ApiPath<String>,
) -> Result<Response, Error> {
    let def = state.flotilla().get_definition_by_alias(&alias).await?;
    Ok(Json(definition_json(&def)).into_response())
}

/// `limit` (default 1024, at least 1, at most `limits.max_page`) and
/// `offset` (default 0) of a list request.
pub(super) fn page_params(q: &QueryPairs, state: &AppState) -> Result<(usize, usize), Error> {
    let max = state.flotilla().config().limits.max_page;
    Ok((
        q.usize_or("limit", 1024)?.clamp(1, max),
        q.usize_or("offset", 0)?,
    ))
}

fn name_list_params(q: &QueryPairs, state: &AppState) -> Result<(usize, usize), Error> {
    q.check_known(&["limit", "offset", "name"])?;
    page_params(q, state)
}

/// Distinct definition groups.
#[utoipa::path(get, path = "/groups", tag = TAG_META, params(NameListParams),
    responses(
        (status = 200, description = "A page of group names", body = GroupsBody),
        (status = 400, description = "A bad parameter", body = crate::error::ErrorBody)
    ))]
pub async fn list_groups(State(state): State<AppState>, q: QueryPairs) -> Result<Response, Error> {
    let (limit, offset) = name_list_params(&q, &state)?;
    let page = state
        .flotilla()
        .list_groups(q.last("name").filter(|s| !s.is_empty()), limit, offset)
        .await?;
    Ok(Json(GroupsBody {
        total: page.total,
        groups: page.items,
        limit,
        offset,
    })
    .into_response())
}

/// Distinct definition tags.
#[utoipa::path(get, path = "/tags", tag = TAG_META, params(NameListParams),
    responses(
        (status = 200, description = "A page of tags", body = TagsBody),
        (status = 400, description = "A bad parameter", body = crate::error::ErrorBody)
    ))]
pub async fn list_tags(State(state): State<AppState>, q: QueryPairs) -> Result<Response, Error> {
    let (limit, offset) = name_list_params(&q, &state)?;
    let page = state
        .flotilla()
        .list_tags(q.last("name").filter(|s| !s.is_empty()), limit, offset)
        .await?;
    Ok(Json(TagsBody {
        total: page.total,
        tags: page.items,
        limit,
        offset,
    })
    .into_response())
}
