//! `/api/jobs/{id}/control` and `/api/jobs/{id}/fork`: live control of a running job (pause,
//! resume, checkpoint now, a new learning rate) and new jobs from a stored checkpoint.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use tracing::info;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use kiln_proto::protocol::{
    ControlAction, CoordinatorMessage, ForkJob, JobInfo, JobPatch, JobState, LrChange,
};
use kiln_proto::spec::FieldError;

use crate::error::{ApiError, ApiJson};
use crate::openapi::{ApiErrorDoc, ControlActionDoc, ForkJobDoc, JobInfoDoc};
use crate::routes::jobs::{job_id, unservable};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(control))
        .routes(routes!(fork))
}

/// Tell the running attempt's workers, or say why it cannot be done now. A queued job takes
/// only pause and resume (its next attempt starts as the job is). An attempt of several
/// workers takes only a resume: a pause at one rank's step boundary would leave the others
/// waiting for it inside their all-reduce (ranks are held together only when an attempt
/// starts paused).
#[utoipa::path(post, path = "/api/jobs/{id}/control", tag = "jobs", request_body = ControlActionDoc,
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 200, body = JobInfoDoc, description = "Asked; the job's log says when it took effect"),
        (status = 400, body = ApiErrorDoc), (status = 404, body = ApiErrorDoc),
        (status = 409, body = ApiErrorDoc,
         description = "The job is not queued or running, or cannot take this control now")),
    security(("bearer" = [])))]
pub async fn control(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(action): ApiJson<ControlAction>,
) -> Result<Json<JobInfo>, ApiError> {
    let id = job_id(&id)?;
    action
        .validate()
        .map_err(|e| ApiError::InvalidFields(vec![e]))?;
    let target = state.store.control_target(id).await?;
    let what = action.describe();
    if target.attempt.is_some() {
        if target.ranks.len() > 1 && action != ControlAction::Resume {
            return Err(ApiError::Conflict(format!(
                "job {id} trains on {} workers together: {what} is live only for a job on one \
                 worker (a job paused while queued starts paused on all of them)",
                target.ranks.len()
            )));
        }
        for worker in &target.ranks {
            match state.worker_capabilities(worker).await {
                None => {
                    return Err(ApiError::Conflict(format!(
                        "job {id}'s worker {worker} is not connected; try again once it is"
                    )));
                }
                Some(caps) if !caps.control => {
                    return Err(ApiError::Conflict(format!(
                        "job {id}'s worker {worker} (kiln {}) cannot take live control; a newer \
                         worker can",
                        caps.kiln_version
                    )));
                }
                Some(_) => {}
            }
        }
    } else if matches!(
        action,
        ControlAction::Checkpoint | ControlAction::SetLr { .. }
    ) {
        return Err(ApiError::Conflict(format!(
            "job {id} is queued: {what} can be asked for once it runs (pause it to hold it at \
             its first step)"
        )));
    }
    let target = match action {
        ControlAction::Pause => state.store.set_paused(id, true).await?,
        ControlAction::Resume => state.store.set_paused(id, false).await?,
        ControlAction::Checkpoint | ControlAction::SetLr { .. } => target,
    };
    if let Some(attempt) = target.attempt {
        for worker in &target.ranks {
            state
                .send_to_worker(
                    worker,
                    CoordinatorMessage::Control {
                        attempt,
                        control: action,
                    },
                )
                .await;
        }
    }
    info!(
        job_id = id,
        state = target.job.state.as_str(),
        "control: {what}"
    );
    state.job_changed(&target.job);
    Ok(Json(target.job))
}

/// A new queued job that resumes from one of the job's checkpoints, with the job's spec or a
/// changed one (learning rate, optimizer, steps, schedule, batch size…); its model and
/// dataset stay the job's, since the checkpoint holds that model's weights.
#[utoipa::path(post, path = "/api/jobs/{id}/fork", tag = "jobs", request_body = ForkJobDoc,
    params(("id" = i64, Path, description = "Job id")),
    responses((status = 201, body = JobInfoDoc), (status = 400, body = ApiErrorDoc),
        (status = 404, body = ApiErrorDoc),
        (status = 409, body = ApiErrorDoc, description = "The job has no checkpoint")),
    security(("bearer" = [])))]
pub async fn fork(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ForkJob>,
) -> Result<(StatusCode, Json<JobInfo>), ApiError> {
    let id = job_id(&id)?;
    let from = state.store.job(id).await?;
    let checkpoints = state.store.checkpoints(id).await?;
    let Some(newest) = checkpoints.last() else {
        return Err(ApiError::Conflict(format!(
            "job {id} has no checkpoint to fork from (set training.checkpoint_every, or ask a \
             running job for one: POST /api/jobs/{id}/control {{\"action\":\"checkpoint\"}})"
        )));
    };
    let (artifact, step) = match body.step {
        None => newest.clone(),
        Some(step) => checkpoints
            .iter()
            .find(|(_, s)| *s == step)
            .cloned()
            .ok_or_else(|| {
                let steps: Vec<String> = checkpoints.iter().map(|(_, s)| s.to_string()).collect();
                ApiError::InvalidFields(vec![FieldError {
                    field: "step".into(),
                    value: step.to_string(),
                    allowed: format!("a step of job {id}'s checkpoints: {}", steps.join(", ")),
                }])
            })?,
    };
    let spec = body.spec.unwrap_or_else(|| from.spec.clone());
    let mut problems = spec.validate().err().unwrap_or_default();
    problems.extend(unservable(&spec));
    if spec.model != from.spec.model {
        problems.push(FieldError {
            field: "model".into(),
            value: spec.model.kind().to_string(),
            allowed: format!("job {id}'s model, unchanged: the checkpoint holds its weights"),
        });
    }
    if spec.dataset != from.spec.dataset {
        problems.push(FieldError {
            field: "dataset".into(),
            value: spec.dataset.path().unwrap_or("(synthetic)").to_string(),
            allowed: format!(
                "job {id}'s dataset, unchanged ({})",
                from.spec.dataset.path().unwrap_or("synthetic")
            ),
        });
    }
    if let Some(max) = spec.training.max_steps
        && max <= step
    {
        problems.push(FieldError {
            field: "training.max_steps".into(),
            value: max.to_string(),
            allowed: format!("more than the checkpoint's step {step}"),
        });
    }
    if !problems.is_empty() {
        return Err(ApiError::InvalidSpec(problems));
    }
    let tags = JobPatch {
        notes: None,
        tags: Some(body.tags),
    }
    .normalized()
    .map_err(ApiError::InvalidFields)?
    .tags
    .unwrap_or_default();
    // Learning rates the job set live up to the checkpoint carry over, unless the fork sets
    // its own optimizer.
    let lr_changes: Vec<LrChange> = if spec.optimizer == from.spec.optimizer {
        from.lr_changes
            .iter()
            .filter(|c| c.step <= step)
            .copied()
            .collect()
    } else {
        Vec::new()
    };
    let source = state.artifacts.path(id, &artifact);
    let size = tokio::fs::metadata(&source)
        .await
        .map_err(|e| {
            ApiError::Internal(anyhow::anyhow!(
                "checkpoint {} of job {id}: {e}",
                source.display()
            ))
        })?
        .len();
    let artifacts = &state.artifacts;
    let name = artifact.clone();
    let job = state
        .store
        .fork_job(
            id,
            step,
            &artifact,
            size,
            &spec,
            &tags,
            &lr_changes,
            |new| {
                let dest = artifacts.path(new, &name);
                let copied = dest
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::copy(&source, &dest));
                copied.map(|_| ()).map_err(|e| {
                    format!(
                        "cannot copy {} to {}: {e}",
                        source.display(),
                        dest.display()
                    )
                })
            },
        )
        .await?;
    debug_assert_eq!(job.state, JobState::Queued);
    state.telemetry.jobs_submitted.inc();
    info!(job_id = job.id, from = id, step, "job forked");
    state.job_changed(&job);
    Ok((StatusCode::CREATED, Json(job)))
}
