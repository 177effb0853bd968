//! The scheduler: hands queued jobs to free workers and fails attempts whose worker is lost.
//!
//! One task; it runs a pass whenever woken (a job queued or ended, a worker connected or
//! freed) and on a tick of half a heartbeat interval (for lost-worker detection). Order:
//! priority (higher first), then FIFO. One job per worker. Which job gets which workers is
//! decided by [`plan`] (pure; gangs of several workers are planned whole).

pub mod plan;

use std::collections::HashSet;
use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use kiln_proto::protocol::{AttemptOutcome, Capabilities, CoordinatorMessage};
use kiln_proto::spec::DeviceRequest;

use crate::registry::Outbound;
use crate::state::AppState;

/// Error text of an attempt whose worker went away.
pub const WORKER_LOST: &str = "worker lost";

/// Whether a worker offering `caps` can run a job that asks for `want`.
pub fn can_run(caps: &Capabilities, want: DeviceRequest) -> bool {
    match want {
        DeviceRequest::Auto => true,
        // A browser tab's WebGPU; native workers never offer it.
        DeviceRequest::Webgpu => false,
        device => caps.devices.contains(&device),
    }
}

/// Run until shutdown.
pub async fn run(state: AppState) {
    let tick = (state.config.heartbeat_interval / 2).max(Duration::from_millis(20));
    let mut shutdown = std::pin::pin!(crate::state::shutting_down(state.shutdown.clone()));
    loop {
        if let Err(e) = pass(&state).await {
            warn!(error = format!("{e:#}"), "scheduler pass failed");
        }
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            _ = &mut shutdown => break,
        }
    }
}

/// One pass: reap lost workers, then assign.
pub async fn pass(state: &AppState) -> anyhow::Result<()> {
    reap_lost(state).await?;
    assign(state).await
}

async fn reap_lost(state: &AppState) -> anyhow::Result<()> {
    let timeout = state.lost_timeout();
    for id in state.workers.drop_silent(timeout) {
        warn!(worker_id = %id, "worker missed 3 heartbeats; disconnecting it");
        state.store.set_worker_connected(&id, false).await?;
        state.publish_worker(&id).await;
    }
    for running in state.store.running_attempts().await? {
        let last_seen = match state.workers.seen(&running.worker_id) {
            Some((true, _)) => continue,
            Some((false, at)) => at.max(state.started),
            // Not seen since this coordinator started: it has one lost-timeout to come back.
            None => state.started,
        };
        if last_seen.elapsed() <= timeout {
            continue;
        }
        let span =
            info_span!("lost", job_id = running.attempt.job_id, worker_id = %running.worker_id);
        async {
            let job = state
                .store
                .finish_attempt(
                    running.attempt,
                    AttemptOutcome::Failed,
                    Some(WORKER_LOST),
                    None,
                    true,
                )
                .await?;
            if let Some(job) = job {
                info!(
                    attempt = running.attempt.attempt,
                    state = job.state.as_str(),
                    "attempt lost"
                );
                state.job_changed(&job);
            }
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}

async fn assign(state: &AppState) -> anyhow::Result<()> {
    let mut candidates = state.workers.candidates();
    if candidates.is_empty() {
        return Ok(());
    }
    let busy: HashSet<String> = state
        .store
        .running_attempts()
        .await?
        .into_iter()
        .map(|r| r.worker_id)
        .collect();
    candidates.retain(|c| !busy.contains(&c.id));
    if candidates.is_empty() {
        return Ok(());
    }
    // Every job wants one worker today; data-parallel gangs will want more.
    let queue: Vec<plan::Want> = state
        .store
        .queued_jobs()
        .await?
        .into_iter()
        .map(|job| plan::Want {
            job: job.id,
            device: job.device,
            min: 1,
            max: 1,
            waited_ms: 0,
            reserve_after_ms: u64::MAX,
        })
        .collect();
    let free: Vec<plan::Free> = candidates
        .into_iter()
        .map(|c| plan::Free {
            id: c.id,
            capabilities: c.capabilities,
        })
        .collect();
    for (job_id, workers) in plan::plan(&queue, &free).assign {
        let Some(worker_id) = workers.into_iter().next() else {
            continue;
        };
        let span = info_span!("assign", job_id, worker_id = %worker_id);
        async {
            let Some(assignment) = state.store.assign(job_id, &worker_id).await? else {
                return anyhow::Ok(());
            };
            info!(
                attempt = assignment.attempt.attempt,
                resume = assignment.resume.as_deref().unwrap_or("-"),
                "assigned"
            );
            let sent = state.workers.send(
                &worker_id,
                Outbound::Message(CoordinatorMessage::Assign {
                    attempt: assignment.attempt,
                    spec: assignment.spec,
                    resume: assignment.resume,
                }),
            );
            if !sent {
                // It disconnected in between; the lost-worker check requeues the job.
                warn!("worker went away before its assignment was sent");
            }
            state.job_changed(&assignment.job);
            state.publish_worker(&worker_id).await;
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}
