//! Read-only share links of one run.
//!
//! The owner (admin token) creates, lists and revokes links under `/api/jobs/{id}/shares` and
//! `/api/shares/{share_id}`. A link is `/s/<token>` (a dashboard page); the page reads the
//! public endpoints `/api/share/{token}`, `/api/share/{token}/metrics` and
//! `/api/share/{token}/dataset`, which need no bearer token and show that one job (without its
//! worker), its metrics and — only for a link created `with_data` — the stored dataset it
//! trained on (so the link can re-run in the recipient's browser), nothing else. Tokens are
//! 256 random bits as hex, stored only as SHA-256 (like API tokens). An unknown, malformed or
//! revoked token gets the same 404, so the answer does not say which links ever existed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::dataset::DatasetRef;
use kiln_proto::protocol::{CreateShare, JobId, MetricPoint, NewShare, ShareInfo, SharedRun};

use crate::auth::{generate_share_token, hash_token, is_share_token};
use crate::error::ApiError;
use crate::openapi::{
    ApiErrorDoc, CreateShareDoc, MetricPointDoc, NewShareDoc, ShareInfoDoc, SharedRunDoc,
};
use crate::routes::jobs::{MetricsQuery, job_id, metric_points};
use crate::state::AppState;

/// Characters of the token kept in clear as `hint`.
const HINT_LEN: usize = 6;

/// The one answer for a token that does not resolve to an active link.
const NO_SUCH_LINK: &str = "this share link does not exist or was revoked";

/// Admin routes: create, list, revoke.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(revoke))
}

/// Public routes: no bearer token; a share token in the path.
pub fn public_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(shared_run))
        .routes(routes!(shared_metrics))
        .routes(routes!(shared_dataset))
}

/// The link's path on the dashboard.
pub fn share_path(token: &str) -> String {
    format!("/s/{token}")
}

#[utoipa::path(post, path = "/api/jobs/{id}/shares", tag = "shares",
    description = "Create a read-only link to the job. The token is shown only in this answer. \
        An optional body `{\"with_data\": true}` lets the link open the run's stored training data \
        too (`/api/share/{token}/dataset`), so whoever holds it can re-run the run in a browser; \
        without it, the data stays private.",
    params(("id" = i64, Path, description = "Job id")),
    request_body(content = Option<CreateShareDoc>, content_type = "application/json"),
    responses((status = 201, body = NewShareDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<NewShare>), ApiError> {
    let id = job_id(&id)?;
    // No body (the CLI's and older clients' request) or `null` (the document's `oneOf: [null,
    // CreateShare]`) is the default: no data. Anything else must be an object: serde would
    // also read `[true]` as `{"with_data": true}`.
    let body = body.trim_ascii();
    let options: CreateShare = if body.is_empty() || body == b"null" {
        CreateShare::default()
    } else if body.first() != Some(&b'{') {
        return Err(ApiError::BadRequest(
            "invalid body: expected nothing, null or {\"with_data\": true or false}".into(),
        ));
    } else {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::BadRequest(format!(
                "invalid body: {e} (expected {{\"with_data\": true or false}})"
            ))
        })?
    };
    let token = generate_share_token().map_err(ApiError::internal)?;
    let hint = &token[token.len() - HINT_LEN..];
    let share = state
        .store
        .create_share(id, &hash_token(&token), hint, options.with_data)
        .await?;
    info!(
        job_id = id,
        share_id = share.id,
        hint,
        with_data = options.with_data,
        "share link created"
    );
    let path = share_path(&token);
    Ok((StatusCode::CREATED, Json(NewShare { share, token, path })))
}

#[utoipa::path(get, path = "/api/jobs/{id}/shares", tag = "shares",
    description = "The job's share links, newest first, revoked ones included.",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Vec<ShareInfoDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ShareInfo>>, ApiError> {
    Ok(Json(state.store.shares(job_id(&id)?).await?))
}

#[utoipa::path(delete, path = "/api/shares/{share_id}", tag = "shares",
    description = "Revoke a share link. Idempotent: a second revoke keeps the first time.",
    params(("share_id" = i64, Path, description = "Share link id")),
    responses((status = 200, body = ShareInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    Path(share_id): Path<String>,
) -> Result<Json<ShareInfo>, ApiError> {
    let id: i64 = share_id.parse().map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid share id `{share_id}`: expected an integer"
        ))
    })?;
    let share = state.store.revoke_share(id).await?;
    info!(share_id = id, job_id = share.job_id, "share link revoked");
    Ok(Json(share))
}

/// The job an active link shows; every kind of miss is the same 404.
/// The job a link shows and whether it shares the job's data.
async fn resolve(
    state: &AppState,
    token: Result<Path<String>, PathRejection>,
) -> Result<(JobId, bool), ApiError> {
    let not_found = || ApiError::NotFound(NO_SUCH_LINK.into());
    let Ok(Path(token)) = token else {
        return Err(not_found());
    };
    if !is_share_token(&token) {
        return Err(not_found());
    }
    state
        .store
        .shared_job(&hash_token(&token))
        .await?
        .ok_or_else(not_found)
}

#[utoipa::path(get, path = "/api/share/{token}", tag = "shares",
    description = "The shared job (no login; its worker is not shown).",
    params(("token" = String, Path, description = "Share token: 64 hex digits")),
    responses((status = 200, body = SharedRunDoc),
        (status = 404, body = ApiErrorDoc, description = "Unknown, malformed or revoked link")))]
pub async fn shared_run(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
) -> Result<Json<SharedRun>, ApiError> {
    let (id, with_data) = resolve(&state, token).await?;
    Ok(Json(SharedRun::new(state.store.job(id).await?, with_data)))
}

#[utoipa::path(get, path = "/api/share/{token}/metrics", tag = "shares",
    description = "The shared job's metrics (no login); the same query as `/api/jobs/{id}/metrics`.",
    params(("token" = String, Path, description = "Share token: 64 hex digits"), MetricsQuery),
    responses((status = 200, body = Vec<MetricPointDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc, description = "Unknown, malformed or revoked link")))]
pub async fn shared_metrics(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Vec<MetricPoint>>, ApiError> {
    let (id, _) = resolve(&state, token).await?;
    Ok(Json(metric_points(&state, id, query).await?))
}

#[utoipa::path(get, path = "/api/share/{token}/dataset", tag = "shares",
    description = "The stored dataset the shared job trained on (no login), so the link can \
        re-run in a browser — only for a link created with `with_data`.",
    params(("token" = String, Path, description = "Share token: 64 hex digits")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = ApiErrorDoc, description = "The link was created without its data"),
        (status = 404, body = ApiErrorDoc,
            description = "Unknown, malformed or revoked link, or a run whose data is not stored")))]
pub async fn shared_dataset(
    State(state): State<AppState>,
    token: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, ApiError> {
    let (id, with_data) = resolve(&state, token).await?;
    if !with_data {
        return Err(ApiError::Forbidden(
            "this link was shared without the run's data (its owner can create one with it)".into(),
        ));
    }
    let job = state.store.job(id).await?;
    match DatasetRef::of(&job.spec.dataset) {
        Some(Ok(DatasetRef::Pinned(digest))) => {
            crate::routes::datasets::serve_content(&state, &digest, request).await
        }
        _ => Err(ApiError::NotFound(
            "this run's data is not stored on the coordinator (synthetic data, or a path on \
             its worker)"
                .into(),
        )),
    }
}
