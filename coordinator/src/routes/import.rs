//! `POST /api/jobs/import`: a run trained outside the coordinator (the playground's tab) becomes
//! a job like any other — in the jobs list with its spec, metrics and files, shareable by link —
//! or, with `state = queued`, goes on training on a worker from its checkpoint.

use axum::Json;
use axum::extract::multipart::{Field, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use futures_util::StreamExt;
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::artifact::{check_name, checkpoint_name, checkpoint_step};
use kiln_proto::protocol::{
    IMPORT_RUN_PART, ImportRun, JobInfo, JobPatch, JobState, MAX_IMPORT_FILES, MAX_IMPORT_METRICS,
    MAX_TRAINED_ON_LEN,
};
use kiln_proto::spec::FieldError;

use crate::artifact::{WriteError, write_file};
use crate::error::ApiError;
use crate::openapi::{ApiErrorDoc, JobInfoDoc};
use crate::state::AppState;

/// Largest `run` part: its metrics are most of it (200 000 points of about 150 bytes).
const MAX_RUN_JSON: usize = 64 * 1024 * 1024;

/// Admin only. No body limit of its own: each part is bounded as it streams in.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(import))
        .layer(DefaultBodyLimit::disable())
}

fn field(field: &str, value: impl ToString, allowed: &str) -> FieldError {
    FieldError {
        field: field.into(),
        value: value.to_string(),
        allowed: allowed.into(),
    }
}

/// Everything wrong with `run` that does not need its files; its normalized tags otherwise.
fn check(run: &ImportRun) -> Result<Vec<String>, ApiError> {
    let mut spec_problems = run.spec.validate().err().unwrap_or_default();
    if run.state == JobState::Queued {
        spec_problems.extend(super::jobs::unservable(&run.spec));
    }
    if !spec_problems.is_empty() {
        return Err(ApiError::InvalidSpec(spec_problems));
    }
    let mut problems = Vec::new();
    if !matches!(
        run.state,
        JobState::Succeeded | JobState::Cancelled | JobState::Queued
    ) {
        problems.push(field(
            "state",
            run.state.as_str(),
            "succeeded or cancelled (the run ended where it trained), or queued (continue it on \
             a worker from its checkpoint)",
        ));
    }
    if run.step > run.total_steps {
        problems.push(field(
            "step",
            run.step,
            &format!("at most total_steps ({})", run.total_steps),
        ));
    }
    if run.trained_on.trim().is_empty()
        || run.trained_on.len() > MAX_TRAINED_ON_LEN
        || run.trained_on.chars().any(char::is_control)
    {
        problems.push(field(
            "trained_on",
            format!("{:?}", run.trained_on),
            &format!("1 to {MAX_TRAINED_ON_LEN} bytes of text, no control characters"),
        ));
    }
    if run.started_ms < 0 || run.finished_ms < run.started_ms {
        problems.push(field(
            "finished_ms",
            run.finished_ms,
            &format!("at least started_ms ({}), which is ≥ 0", run.started_ms),
        ));
    }
    if run.metrics.len() > MAX_IMPORT_METRICS {
        problems.push(field(
            "metrics",
            format!("{} points", run.metrics.len()),
            &format!("at most {MAX_IMPORT_METRICS} points"),
        ));
    }
    if let Some((i, m)) = run
        .metrics
        .iter()
        .enumerate()
        .find(|(_, m)| m.step > run.step)
    {
        problems.push(field(
            &format!("metrics[{i}].step"),
            m.step,
            &format!("at most the run's step ({})", run.step),
        ));
    }
    let tags = JobPatch {
        notes: None,
        tags: Some(run.tags.clone()),
    }
    .normalized();
    match tags {
        Ok(patch) if problems.is_empty() => Ok(patch.tags.unwrap_or_default()),
        Ok(_) => Err(ApiError::InvalidFields(problems)),
        Err(tag_problems) => {
            problems.extend(tag_problems);
            Err(ApiError::InvalidFields(problems))
        }
    }
}

fn multipart_error(e: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("invalid multipart body: {e}"))
}

/// The `run` part, whole (at most [`MAX_RUN_JSON`] bytes).
async fn read_run(mut part: Field<'_>) -> Result<ImportRun, ApiError> {
    let mut json = Vec::new();
    while let Some(chunk) = part.next().await {
        json.extend_from_slice(&chunk.map_err(multipart_error)?);
        if json.len() > MAX_RUN_JSON {
            return Err(ApiError::PayloadTooLarge(format!(
                "the `{IMPORT_RUN_PART}` part is larger than {MAX_RUN_JSON} bytes"
            )));
        }
    }
    serde_json::from_slice(&json)
        .map_err(|e| ApiError::BadRequest(format!("invalid `{IMPORT_RUN_PART}` part: {e}")))
}

#[utoipa::path(post, path = "/api/jobs/import", tag = "jobs",
    description = "A run trained elsewhere (the playground's browser tab). A multipart/form-data \
        body: first the part `run` (an `ImportRun` as JSON: spec, tags, state, step, total_steps, \
        trained_on, started_ms, finished_ms, metrics), then its files, each part named by its \
        artifact name (model.bpk, model.json, summary.json, checkpoint-<step>.ckpt; at most 16, \
        each within the artifact size limit). With state succeeded or cancelled the run is kept \
        as it ended; with state queued it is continued on a worker: its attempt 2 resumes from \
        the newest checkpoint part, which is then required.",
    request_body(content = String, content_type = "multipart/form-data"),
    responses((status = 201, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 413, body = ApiErrorDoc)),
    security(("bearer" = [])))]
pub async fn import(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let mut multipart = multipart.map_err(|e| {
        ApiError::BadRequest(format!(
            "expected a multipart/form-data body: {}",
            e.body_text()
        ))
    })?;
    let first = multipart.next_field().await.map_err(multipart_error)?;
    let run = match first {
        Some(part) if part.name() == Some(IMPORT_RUN_PART) => read_run(part).await?,
        Some(part) => {
            return Err(ApiError::BadRequest(format!(
                "the first part must be `{IMPORT_RUN_PART}` (the run as JSON), not `{}`",
                part.name().unwrap_or("")
            )));
        }
        None => {
            return Err(ApiError::BadRequest(format!(
                "the body has no parts: the first must be `{IMPORT_RUN_PART}` (the run as JSON)"
            )));
        }
    };
    let tags = check(&run)?;

    let limit = state.config.artifact_max_bytes as u64;
    let mut staging = state
        .artifacts
        .staging()
        .await
        .map_err(ApiError::internal)?;
    let mut files: Vec<(String, u64)> = Vec::new();
    while let Some(part) = multipart.next_field().await.map_err(multipart_error)? {
        let name = part.name().unwrap_or("").to_string();
        check_name(&name).map_err(|e| ApiError::BadRequest(format!("file part: {e}")))?;
        if files.iter().any(|(n, _)| *n == name) {
            return Err(ApiError::BadRequest(format!(
                "the file `{name}` comes twice"
            )));
        }
        if files.len() == MAX_IMPORT_FILES {
            return Err(ApiError::BadRequest(format!(
                "more than {MAX_IMPORT_FILES} files: `{name}` is one too many"
            )));
        }
        let size = match write_file(&staging.path(&name), part, limit, |_| {}).await {
            Ok(size) => size,
            Err(WriteError::TooLarge { limit }) => {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the file `{name}` is larger than the limit of {limit} bytes"
                )));
            }
            Err(WriteError::Body(e)) => return Err(multipart_error(e)),
            Err(e @ WriteError::Io { .. }) => return Err(ApiError::internal(e)),
        };
        files.push((name, size));
    }
    let checkpoints: Vec<u64> = files
        .iter()
        .filter_map(|(n, _)| checkpoint_step(n))
        .collect();
    if run.state == JobState::Queued && checkpoints.is_empty() {
        return Err(ApiError::InvalidFields(vec![field(
            "state",
            "queued",
            "succeeded or cancelled for a run sent without a checkpoint-<step>.ckpt file \
             (continuing on a worker resumes from one)",
        )]));
    }
    if let Some(step) = checkpoints.iter().find(|s| **s > run.step) {
        return Err(ApiError::InvalidFields(vec![field(
            "files",
            checkpoint_name(*step),
            &format!("checkpoints of steps up to the run's step ({})", run.step),
        )]));
    }

    let job = state
        .store
        .import_job(&run, &tags, &files, |id| staging.place(id))
        .await?;
    if job.state == JobState::Queued {
        state.telemetry.jobs_submitted.inc();
    }
    info!(
        job_id = job.id,
        name = %job.name,
        state = job.state.as_str(),
        trained_on = %run.trained_on,
        step = run.step,
        files = files.len(),
        "run imported"
    );
    state.job_changed(&job);
    Ok((StatusCode::CREATED, Json(job)))
}
