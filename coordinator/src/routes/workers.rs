//! `/api/workers…`: list workers, drain one.

use axum::Json;
use axum::extract::{Path, State};
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::protocol::WorkerInfo;

use crate::error::ApiError;
use crate::openapi::{ApiErrorDoc, WorkerInfoDoc};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(drain))
}

#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, body = Vec<WorkerInfoDoc>)), security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<WorkerInfo>>, ApiError> {
    Ok(Json(state.store.workers().await?))
}

#[utoipa::path(post, path = "/api/workers/{id}/drain", tag = "workers",
    description = "The worker finishes its current job and gets no new one (until it restarts).",
    params(("id" = String, Path, description = "Worker id")),
    responses((status = 200, body = WorkerInfoDoc), (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn drain(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WorkerInfo>, ApiError> {
    let worker = state.store.drain_worker(&id).await?;
    state.workers.set_draining(&id);
    info!(worker_id = %id, "worker draining");
    state.worker_changed(&worker);
    Ok(Json(worker))
}
