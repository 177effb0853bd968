//! `/api/jobs/{id}/artifacts…`: list, download, upload (worker or admin token).

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::artifact::check_name;
use kiln_proto::protocol::ArtifactInfo;

use crate::artifact::WriteError;
use crate::auth::{Caller, check_worker_acts_for_job};
use crate::error::ApiError;
use crate::openapi::{ApiErrorDoc, ArtifactInfoDoc};
use crate::routes::jobs::job_id;
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(download, upload))
}

#[utoipa::path(get, path = "/api/jobs/{id}/artifacts", tag = "artifacts",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Vec<ArtifactInfoDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
) -> Result<Json<Vec<ArtifactInfo>>, ApiError> {
    let id = job_id(&id)?;
    check_worker_acts_for_job(&state, caller.as_deref(), &headers, id).await?;
    Ok(Json(state.store.artifacts(id).await?))
}

/// The job id of `/api/jobs/{id}/artifacts/{name}`, once the id parses, the name is allowed
/// and the job exists.
async fn existing_job(state: &AppState, id: &str, name: &str) -> Result<i64, ApiError> {
    let id = job_id(id)?;
    check_name(name).map_err(ApiError::BadRequest)?;
    state.store.job(id).await?;
    Ok(id)
}

#[utoipa::path(get, path = "/api/jobs/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = i64, Path, description = "Job id"),
        ("name" = String, Path, description = "Artifact name", pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, body = ApiErrorDoc), (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn download(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = existing_job(&state, &id, &name).await?;
    let caller = request.extensions().get::<Caller>().cloned();
    check_worker_acts_for_job(&state, caller.as_ref(), request.headers(), id).await?;
    if state.store.artifact(id, &name).await?.is_none() {
        return Err(ApiError::NotFound(format!(
            "job {id} has no artifact `{name}`"
        )));
    }
    let path = state.artifacts.path(id, &name);
    let mut response = ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(ApiError::internal)?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::internal(anyhow::anyhow!(
            "artifact `{name}` of job {id} is recorded but {} is missing",
            path.display()
        )));
    }
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(response.map(Body::new))
}

#[utoipa::path(put, path = "/api/jobs/{id}/artifacts/{name}", tag = "artifacts",
    params(("id" = i64, Path, description = "Job id"),
        ("name" = String, Path, description = "Artifact name: [A-Za-z0-9._-]{1,128}, not starting with '.'",
            pattern = "^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = ArtifactInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc), (status = 413, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
    request: Request,
) -> Result<Response, ApiError> {
    let id = existing_job(&state, &id, &name).await?;
    let caller = request.extensions().get::<Caller>().cloned();
    check_worker_acts_for_job(&state, caller.as_ref(), request.headers(), id).await?;
    let limit = state.config.artifact_max_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "artifact `{name}` is larger than the limit of {limit} bytes"
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = request.into_body().into_data_stream();
    let size = match state.artifacts.write(id, &name, body, limit).await {
        Ok(size) => size,
        Err(WriteError::TooLarge { .. }) => return Err(too_large()),
        Err(WriteError::Body(e)) => {
            return Err(ApiError::BadRequest(format!(
                "the upload was interrupted: {e}"
            )));
        }
        Err(e @ WriteError::Io { .. }) => return Err(ApiError::internal(e)),
    };
    let info = state.store.upsert_artifact(id, &name, size).await?;
    info!(job_id = id, artifact = %name, size, "artifact stored");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}
