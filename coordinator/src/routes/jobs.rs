//! `/api/jobs…`: submit, list, inspect, cancel, retry; attempts, metrics and logs of a job.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use tracing::info;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::protocol::{
    AttemptInfo, CoordinatorMessage, JobId, JobInfo, JobPage, JobPatch, JobState, LogEntry,
    MetricPoint, SubmitJob,
};

use crate::error::{ApiError, ApiJson, parse_param};
use crate::openapi::{
    ApiErrorDoc, AttemptInfoDoc, JobInfoDoc, JobPageDoc, JobPatchDoc, LogEntryDoc, MetricPointDoc,
    SubmitJobDoc,
};
use crate::state::AppState;
use crate::store::{CancelOutcome, JobFilter, MetricRange, parse_split};
use kiln_proto::downsample::downsample;
use kiln_proto::spec::{DeviceRequest, FieldError, JobSpec};

const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;
const DEFAULT_MAX_POINTS: usize = 2000;
const MAX_MAX_POINTS: usize = 100_000;
const DEFAULT_LOG_LIMIT: u32 = 1000;
const MAX_LOG_LIMIT: u32 = 10_000;
const MAX_GROUP_LEN: usize = 128;

/// The routes and their OpenAPI operations, from each handler's `#[utoipa::path]`.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(submit, list))
        .routes(routes!(job, annotate))
        .routes(routes!(cancel))
        .routes(routes!(retry))
        .routes(routes!(attempts))
        .routes(routes!(metrics))
        .routes(routes!(logs))
}

/// A job id from the path; the error names it.
pub fn job_id(raw: &str) -> Result<JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid job id `{raw}`: expected an integer")))
}

/// What a valid spec may ask that no worker can give: browser tabs (the only `webgpu`
/// workers) train alone, so a `webgpu` job cannot be data-parallel. Not part of
/// `JobSpec::validate`, which the in-browser trainer runs on its own specs.
pub(crate) fn unservable(spec: &JobSpec) -> Option<FieldError> {
    (spec.device == DeviceRequest::Webgpu && spec.distributed.workers > 1).then(|| FieldError {
        field: "distributed.workers".into(),
        value: spec.distributed.workers.to_string(),
        allowed: "1 for a webgpu job (browser tabs train alone; data-parallel jobs run on \
                  machines: device auto, cpu, wgpu or cuda)"
            .into(),
    })
}

#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = SubmitJobDoc,
    responses((status = 201, body = JobInfoDoc), (status = 400, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let mut problems = body.spec.validate().err().unwrap_or_default();
    problems.extend(unservable(&body.spec));
    if !problems.is_empty() {
        return Err(ApiError::InvalidSpec(problems));
    }
    if let Some(group) = &body.group
        && (group.is_empty() || group.len() > MAX_GROUP_LEN)
    {
        return Err(ApiError::BadRequest(format!(
            "invalid `group`: must be 1 to {MAX_GROUP_LEN} bytes"
        )));
    }
    let tags = JobPatch {
        notes: None,
        tags: Some(body.tags),
    }
    .normalized()
    .map_err(ApiError::InvalidFields)?
    .tags
    .unwrap_or_default();
    let job = state
        .store
        .insert_job(&body.spec, body.group.as_deref(), &tags)
        .await?;
    state.telemetry.jobs_submitted.inc();
    info!(job_id = job.id, name = %job.name, "job submitted");
    state.job_changed(&job);
    Ok((StatusCode::CREATED, Json(job)))
}

/// `GET /api/jobs` query; every value is checked by hand so the error can name it.
//
// `parameter_in = Query`: the handlers take `Result<Query<_>, QueryRejection>`, which utoipa does
// not recognize, so without it every field is documented as a required *path* parameter. The
// fields stay strings (the handler names a bad one); `value_type` & co. document what is allowed.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// queued, running, succeeded, failed or cancelled.
    #[param(pattern = "^(queued|running|succeeded|failed|cancelled)$")]
    state: Option<String>,
    /// Sweep group, exact.
    group: Option<String>,
    /// Part of the job name.
    name: Option<String>,
    /// A tag the job has, exact.
    tag: Option<String>,
    /// 1 to 500 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
    /// Jobs to skip (default 0).
    #[param(value_type = Option<i64>, minimum = 0)]
    offset: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPageDoc), (status = 400, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<JobPage>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let job_state =
        match q.state.as_deref() {
            None => None,
            Some(s) => Some(s.parse::<JobState>().map_err(|e| {
                ApiError::BadRequest(format!("invalid query parameter `state`: {e}"))
            })?),
        };
    let limit = parse_param::<u32>("limit", q.limit.as_deref(), "an integer from 1 to 500")?
        .unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameter `limit`: got `{limit}`, allowed: an integer from 1 to {MAX_LIMIT}"
        )));
    }
    // At most i64::MAX: the database's integers are signed 64-bit.
    let offset = parse_param::<i64>(
        "offset",
        q.offset.as_deref(),
        "an integer from 0 to 2^63 - 1",
    )?
    .unwrap_or(0);
    let offset = u64::try_from(offset).map_err(|_| {
        ApiError::BadRequest(format!(
            "invalid query parameter `offset`: got `{offset}`, allowed: an integer from 0 to \
             2^63 - 1"
        ))
    })?;
    let filter = JobFilter {
        state: job_state,
        group: q.group,
        name: q.name,
        tag: q.tag,
        limit,
        offset,
    };
    Ok(Json(state.store.jobs(&filter).await?))
}

/// Set a run's notes and/or tags; what the body leaves out stays as it is.
#[utoipa::path(patch, path = "/api/jobs/{id}", tag = "jobs", request_body = JobPatchDoc,
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn annotate(
    State(state): State<AppState>,
    Path(raw): Path<String>,
    ApiJson(body): ApiJson<JobPatch>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&raw)?;
    let patch = body.normalized().map_err(ApiError::InvalidFields)?;
    let job = state.store.annotate_job(id, &patch).await?;
    state.job_changed(&job);
    Ok(Json(job))
}

#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn job(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    Ok(Json(state.store.job(job_id(&id)?).await?))
}

#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc),
        (status = 409, body = ApiErrorDoc, description = "The job already ended")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&id)?;
    let job = match state.store.cancel_job(id).await? {
        CancelOutcome::Cancelled(job) => job,
        CancelOutcome::Requested {
            job,
            attempt,
            worker_id,
        } => {
            let told = state
                .send_to_worker(&worker_id, CoordinatorMessage::Cancel { attempt })
                .await;
            // Every other rank of a data-parallel attempt stops too.
            let ranks = state.store.attempt_workers(attempt).await?;
            crate::scheduler::stop_other_ranks(&state, attempt, &ranks, &worker_id).await;
            if told {
                job
            } else {
                // Nobody to tell: the attempt ends here.
                state
                    .store
                    .finish_attempt(
                        attempt,
                        kiln_proto::protocol::AttemptOutcome::Cancelled,
                        Some("cancelled while its worker was disconnected"),
                        None,
                        true,
                    )
                    .await?
                    .unwrap_or(job)
            }
        }
    };
    info!(job_id = id, state = job.state.as_str(), "cancel requested");
    state.job_changed(&job);
    Ok(Json(job))
}

#[utoipa::path(post, path = "/api/jobs/{id}/retry", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc),
        (status = 409, body = ApiErrorDoc, description = "The job is not failed or cancelled")),
    security(("bearer" = [])))]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<JobInfo>, ApiError> {
    let job = state.store.retry_job(job_id(&id)?).await?;
    info!(job_id = job.id, "job re-queued");
    state.job_changed(&job);
    Ok(Json(job))
}

#[utoipa::path(get, path = "/api/jobs/{id}/attempts", tag = "jobs",
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = Vec<AttemptInfoDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<AttemptInfo>>, ApiError> {
    Ok(Json(state.store.attempts(job_id(&id)?).await?))
}

/// `GET /api/jobs/{id}/metrics` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// train, val or test (default: all).
    #[param(pattern = "^(train|val|test)$")]
    split: Option<String>,
    /// First step, inclusive.
    #[param(value_type = Option<u64>)]
    from_step: Option<String>,
    /// Last step, inclusive (not before `from_step`).
    #[param(value_type = Option<u64>)]
    to_step: Option<String>,
    /// 2 to 100000 (default 2000); more matching points are downsampled per split.
    #[param(value_type = Option<u32>, minimum = 2, maximum = 100000)]
    max_points: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs/{id}/metrics", tag = "jobs",
    params(("id" = i64, Path, description = "Job id"), MetricsQuery),
    responses((status = 200, body = Vec<MetricPointDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn metrics(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Json<Vec<MetricPoint>>, ApiError> {
    let id = job_id(&id)?;
    Ok(Json(metric_points(&state, id, query).await?))
}

/// The metrics of `job` for a [`MetricsQuery`]: checked, read and downsampled. Shared by
/// `GET /api/jobs/{id}/metrics` and the share link's `GET /api/share/{token}/metrics`.
pub async fn metric_points(
    state: &AppState,
    job: JobId,
    query: Result<Query<MetricsQuery>, QueryRejection>,
) -> Result<Vec<MetricPoint>, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let split =
        match q.split.as_deref() {
            None => None,
            Some(s) => Some(parse_split(s).map_err(|e| {
                ApiError::BadRequest(format!("invalid query parameter `split`: {e}"))
            })?),
        };
    let from_step = parse_param::<u64>("from_step", q.from_step.as_deref(), "an integer ≥ 0")?;
    let to_step = parse_param::<u64>("to_step", q.to_step.as_deref(), "an integer ≥ 0")?;
    if let (Some(from), Some(to)) = (from_step, to_step)
        && from > to
    {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameters: `from_step` ({from}) is after `to_step` ({to})"
        )));
    }
    let allowed = "an integer from 2 to 100000";
    let max_points = parse_param::<usize>("max_points", q.max_points.as_deref(), allowed)?
        .unwrap_or(DEFAULT_MAX_POINTS);
    if !(2..=MAX_MAX_POINTS).contains(&max_points) {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameter `max_points`: got `{max_points}`, allowed: {allowed}"
        )));
    }
    let range = MetricRange {
        split,
        from_step,
        to_step,
    };
    let points = state.store.metrics(job, range).await?;
    Ok(downsample(points, max_points))
}

/// `GET /api/jobs/{id}/logs` query.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Only lines with a larger `seq` (default 0: from the start).
    #[param(value_type = Option<i64>, minimum = 0)]
    after: Option<String>,
    /// 1 to 10000 (default 1000).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10000)]
    limit: Option<String>,
}

#[utoipa::path(get, path = "/api/jobs/{id}/logs", tag = "jobs",
    params(("id" = i64, Path, description = "Job id"), LogsQuery),
    responses((status = 200, body = Vec<LogEntryDoc>), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    query: Result<Query<LogsQuery>, QueryRejection>,
) -> Result<Json<Vec<LogEntry>>, ApiError> {
    let id = job_id(&id)?;
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let after = parse_param::<i64>("after", q.after.as_deref(), "an integer ≥ 0")?.unwrap_or(0);
    let allowed = "an integer from 1 to 10000";
    let limit =
        parse_param::<u32>("limit", q.limit.as_deref(), allowed)?.unwrap_or(DEFAULT_LOG_LIMIT);
    if !(1..=MAX_LOG_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "invalid query parameter `limit`: got `{limit}`, allowed: {allowed}"
        )));
    }
    Ok(Json(state.store.logs(id, after, limit).await?))
}
