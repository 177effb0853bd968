//! `/api/datasets…`: list, inspect, upload, name, delete (admin); download (worker or admin).

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use tracing::info;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::dataset::{DatasetInfo, DatasetKind, Digest, NameDataset, check_name};

use crate::dataset::UploadError;
use crate::error::{ApiError, ApiJson};
use crate::openapi::{ApiErrorDoc, DatasetInfoDoc, NameDatasetDoc};
use crate::state::AppState;
use crate::store::NewBlob;

/// Admin routes with small bodies.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(show, delete))
        .routes(routes!(versions, name_version))
}

/// The upload (admin), outside the small-body limit: it has its own, checked as it streams.
pub fn upload_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(upload))
}

/// The bytes (worker or admin).
pub fn content_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(content))
}

fn name(raw: &str) -> Result<&str, ApiError> {
    check_name(raw).map_err(ApiError::BadRequest)?;
    Ok(raw)
}

#[utoipa::path(get, path = "/api/datasets", tag = "datasets",
    description = "The newest version of every dataset name, newest first.",
    responses((status = 200, body = Vec<DatasetInfoDoc>)),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<DatasetInfo>>, ApiError> {
    Ok(Json(state.store.datasets().await?))
}

#[utoipa::path(get, path = "/api/datasets/{dataset}", tag = "datasets",
    params(("dataset" = String, Path, description = "A name (its newest version) or `sha256:<hex>`")),
    responses((status = 200, body = DatasetInfoDoc), (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn show(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<Json<DatasetInfo>, ApiError> {
    Ok(Json(state.store.dataset(&dataset).await?))
}

#[utoipa::path(get, path = "/api/datasets/{dataset}/versions", tag = "datasets",
    params(("dataset" = String, Path, description = "Dataset name", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    responses((status = 200, body = Vec<DatasetInfoDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn versions(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<Json<Vec<DatasetInfo>>, ApiError> {
    Ok(Json(state.store.dataset_versions(name(&dataset)?).await?))
}

#[utoipa::path(post, path = "/api/datasets/{dataset}/versions", tag = "datasets",
    description = "Give an already-stored dataset (by digest) this name, as its newest version; \
        nothing is uploaded. A no-op if it is the newest version already.",
    params(("dataset" = String, Path, description = "Dataset name", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    request_body = NameDatasetDoc,
    responses((status = 200, body = DatasetInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn name_version(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    ApiJson(body): ApiJson<NameDataset>,
) -> Result<Json<DatasetInfo>, ApiError> {
    let info = state
        .store
        .name_dataset(name(&dataset)?, &body.digest)
        .await?;
    info!(dataset = %info.name, digest = %info.digest, version = info.version, "dataset named");
    Ok(Json(info))
}

/// `PUT /api/datasets/{name}` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// idx (a tar of an IDX folder), csv or text.
    #[param(pattern = "^(idx|csv|text)$")]
    kind: String,
    /// The SHA-256 of the body, 64 hex digits: checked before anything is stored.
    #[param(pattern = "^[0-9A-Fa-f]{64}$")]
    sha256: String,
}

#[utoipa::path(put, path = "/api/datasets/{dataset}", tag = "datasets",
    description = "Upload a dataset's bytes as the newest version of `dataset`. The body streams \
        to disk, is checked against `sha256` and read for a preview; only then is it stored \
        (content-addressed: bytes stored before are kept once). 201 when the bytes are new, 200 \
        when they were stored already.",
    params(("dataset" = String, Path, description = "Dataset name", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$"),
        UploadQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = DatasetInfoDoc), (status = 200, body = DatasetInfoDoc),
        (status = 400, body = ApiErrorDoc), (status = 409, body = ApiErrorDoc),
        (status = 413, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn upload(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    query: Result<Query<UploadQuery>, QueryRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let name = name(&dataset)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let kind: DatasetKind = q
        .kind
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameter `kind`: {e}")))?;
    let digest = Digest::parse(&q.sha256)
        .map_err(|e| ApiError::BadRequest(format!("invalid query parameter `sha256`: {e}")))?;
    let limit = state.config.dataset_max_bytes;
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "dataset `{name}` is larger than this coordinator's limit of {limit} bytes \
             (kiln serve --dataset-max-bytes)"
        ))
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let upload_error = |e: UploadError| match e {
        UploadError::TooLarge { .. } => too_large(),
        e @ (UploadError::Body(_)
        | UploadError::DigestMismatch { .. }
        | UploadError::Content { .. }) => ApiError::BadRequest(e.to_string()),
        e @ UploadError::Io { .. } => ApiError::internal(e),
    };
    let body = request.into_body().into_data_stream();
    let received = state
        .datasets
        .receive(body, &digest, limit)
        .await
        .map_err(upload_error)?;
    let size = received.size;
    let _guard = state.datasets.lock.lock().await;
    if state.store.dataset_blob_kind(&digest).await?.is_some() {
        state.datasets.discard(received).await;
        let info = state
            .store
            .add_dataset(
                name,
                &NewBlob {
                    digest: digest.clone(),
                    kind,
                    size,
                    // Not used: the stored blob keeps its preview.
                    preview: kiln_proto::dataset::DatasetPreview::Text {
                        head: String::new(),
                    },
                },
            )
            .await?;
        return Ok((StatusCode::OK, Json(info)).into_response());
    }
    let preview = state
        .datasets
        .preview(&received, kind)
        .await
        .map_err(upload_error)?;
    state
        .datasets
        .commit(received, &digest)
        .await
        .map_err(upload_error)?;
    let blob = NewBlob {
        digest: digest.clone(),
        kind,
        size,
        preview,
    };
    let info = match state.store.add_dataset(name, &blob).await {
        Ok(info) => info,
        Err(e) => {
            state.datasets.remove(&digest).await;
            return Err(e.into());
        }
    };
    info!(dataset = %name, %digest, size, kind = kind.as_str(), "dataset stored");
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

#[utoipa::path(delete, path = "/api/datasets/{dataset}", tag = "datasets",
    description = "Delete every version of a name; bytes no other name uses are removed. \
        Refused (409, naming the jobs) while a queued or running job trains on them.",
    params(("dataset" = String, Path, description = "Dataset name", pattern = "^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")),
    responses((status = 204), (status = 400, body = ApiErrorDoc), (status = 404, body = ApiErrorDoc),
        (status = 409, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name = name(&dataset)?;
    let _guard = state.datasets.lock.lock().await;
    let gone = state.store.delete_dataset(name).await?;
    for digest in &gone {
        state.datasets.remove(digest).await;
    }
    info!(dataset = %name, removed = gone.len(), "dataset deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/datasets/{dataset}/content", tag = "datasets",
    description = "The bytes (Range requests supported). Workers fetch by `sha256:<hex>`.",
    params(("dataset" = String, Path, description = "A name (its newest version) or `sha256:<hex>`")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn content(
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    request: Request,
) -> Result<Response, ApiError> {
    let info = state.store.dataset(&dataset).await?;
    serve_content(&state, &info.digest, request).await
}

/// A stored dataset's bytes as an answer to `request` (Range requests, an ETag of the digest).
pub async fn serve_content(
    state: &AppState,
    digest: &Digest,
    request: Request,
) -> Result<Response, ApiError> {
    let path = state.datasets.path(digest);
    let mut response = ServeFile::new(&path)
        .oneshot(request)
        .await
        .map_err(ApiError::internal)?;
    if response.status() == StatusCode::NOT_FOUND {
        return Err(ApiError::internal(anyhow::anyhow!(
            "dataset {} is recorded but {} is missing",
            digest,
            path.display()
        )));
    }
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", digest.hex())) {
        headers.insert(header::ETAG, v);
    }
    Ok(response.map(Body::new))
}
