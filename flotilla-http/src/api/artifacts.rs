//! `GET /{run_id}/output`: a run's output zip, streamed.

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::{ApiPath, TAG_RUNS};
use crate::AppState;
use crate::error::Error;

/// The output zip of the run's last attempt that uploaded one: what the
/// job left in `/output` (`FLOTILLA_OUTPUT_DIR`). Authorized like the
/// run's logs.
#[utoipa::path(get, path = "/{run_id}/output", tag = TAG_RUNS,
    params(("run_id" = String, Path, description = "Run id")),
    responses(
        (status = 200, description = "The zip, streamed", content_type = "application/zip", body = Vec<u8>),
        (status = 404, description = "Unknown run, or no output (yet)", body = crate::error::ErrorBody),
        (status = 503, description = "The artifact store does not answer", body = crate::error::ErrorBody)
    ))]
pub async fn get_output(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
) -> Result<Response, Error> {
    let (size, stream) = state.flotilla().open_output(&run_id).await?;
    let body = Body::from_stream(
        stream.map(|chunk| chunk.map_err(|e| std::io::Error::other(e.message().to_string()))),
    );
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/zip"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(size));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{run_id}-output.zip\"")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    Ok(response)
}
