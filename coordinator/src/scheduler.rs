//! The scheduler: hands queued jobs to free workers and fails attempts whose worker is lost.
//!
//! One task; it runs a pass whenever woken (a job queued or ended, a worker connected or
//! freed) and on a tick of half a heartbeat interval (for lost-worker detection). Order:
//! priority (higher first), then FIFO. One job per worker. Which job gets which workers is
//! decided by [`plan`] (pure; gangs of several workers are planned whole).
//!
//! With several coordinators on one PostgreSQL database (`crate::cluster`), every one runs
//! this task: each watches its own workers' sockets, and only the one holding the scheduling
//! lease assigns jobs (to workers connected anywhere) and judges lost workers.

pub mod plan;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{Instrument, debug, info, info_span, warn};

use kiln_proto::protocol::{AttemptOutcome, Capabilities, CoordinatorMessage, Group};
use kiln_proto::spec::DeviceRequest;

use crate::state::AppState;

/// Error text of an attempt whose worker went away.
pub const WORKER_LOST: &str = "worker lost";

/// Whether a worker offering `caps` can run a job that asks for `want`. A browser tab takes
/// only `webgpu` jobs (`auto` means a machine's best device, and a tab's CPU is no machine's);
/// native workers never offer `webgpu`.
pub fn can_run(caps: &Capabilities, want: DeviceRequest) -> bool {
    match want {
        DeviceRequest::Webgpu => caps.browser && caps.devices.contains(&want),
        _ if caps.browser => false,
        DeviceRequest::Auto => true,
        device => caps.devices.contains(&device),
    }
}

/// Run until shutdown.
pub async fn run(state: AppState) {
    let tick = (state.config.heartbeat_interval / 2).max(Duration::from_millis(20));
    let mut shutdown = std::pin::pin!(crate::state::shutting_down(state.shutdown.clone()));
    loop {
        if let Some(cluster) = &state.cluster
            && cluster.due(tick)
            && cluster.tick(&state).await
            && let Err(e) = sweep_nodes(&state).await
        {
            warn!(
                error = format!("{e:#}"),
                "cannot check the other coordinators"
            );
        }
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

/// One pass: disconnect silent workers here; then, where this coordinator schedules, reap
/// lost workers and assign.
pub async fn pass(state: &AppState) -> anyhow::Result<()> {
    let timeout = state.lost_timeout();
    for id in state.workers.drop_silent(timeout) {
        warn!(worker_id = %id, "worker missed 3 heartbeats; disconnecting it");
        state.store.worker_disconnected(&id, &state.node).await?;
        state.publish_worker(&id).await;
    }
    if !state.schedules() {
        return Ok(());
    }
    let elsewhere = remote_workers(state).await?;
    reap_lost(state, &elsewhere).await?;
    assign(state, &elsewhere).await
}

/// The scheduling coordinator's upkeep, once a tick: disconnect the workers of coordinators
/// silent for a lost timeout (they died with their sockets), forget old bus messages.
async fn sweep_nodes(state: &AppState) -> anyhow::Result<()> {
    let since = crate::store::now_ms()
        - i64::try_from(state.lost_timeout().as_millis()).unwrap_or(i64::MAX);
    for id in state.store.disconnect_orphans(since).await? {
        warn!(worker_id = %id, "worker's coordinator is gone; disconnecting it");
        state.publish_worker(&id).await;
    }
    state
        .store
        .sweep_bus(crate::store::now_ms() - 60_000)
        .await?;
    Ok(())
}

/// Workers connected to other coordinators that are alive (empty on SQLite).
async fn remote_workers(state: &AppState) -> anyhow::Result<HashSet<String>> {
    if state.cluster.is_none() {
        return Ok(HashSet::new());
    }
    // A coordinator writes its heartbeat twice an interval: one that missed two is not
    // trusted with a new assignment (a message to a coordinator that died is lost; its
    // worker would reconnect elsewhere without it, and the attempt would be failed there).
    let fresh = crate::store::now_ms()
        - i64::try_from(state.config.heartbeat_interval.as_millis()).unwrap_or(i64::MAX);
    let alive: HashSet<String> = state.store.alive_nodes(fresh).await?.into_iter().collect();
    Ok(state
        .store
        .worker_nodes()
        .await?
        .into_iter()
        .filter(|(_, node)| {
            node.as_ref()
                .is_some_and(|n| *n != state.node && alive.contains(n))
        })
        .map(|(id, _)| id)
        .collect())
}

/// When worker `id`, connected to no coordinator, was last heard from: its row's
/// `last_seen_ms` (another coordinator's socket, a heartbeat) as an instant here.
fn last_seen_in_store(last_seen_ms: i64) -> Instant {
    let ago = u64::try_from(crate::store::now_ms().saturating_sub(last_seen_ms)).unwrap_or(0);
    Instant::now()
        .checked_sub(Duration::from_millis(ago))
        .unwrap_or_else(Instant::now)
}

async fn reap_lost(state: &AppState, elsewhere: &HashSet<String>) -> anyhow::Result<()> {
    let timeout = state.lost_timeout();
    // With other coordinators, a worker may have been heard from there.
    let stored: HashMap<String, i64> = if state.cluster.is_some() {
        state
            .store
            .workers()
            .await?
            .into_iter()
            .map(|w| (w.id, w.last_seen_ms))
            .collect()
    } else {
        HashMap::new()
    };
    for running in state.store.running_attempts().await? {
        if elsewhere.contains(&running.worker_id) {
            continue;
        }
        let last_seen = match state.workers.seen(&running.worker_id) {
            Some((true, _)) => continue,
            Some((false, at)) => at.max(state.started),
            // Not seen since this coordinator started: it has one lost-timeout to come back.
            None => state.started,
        };
        let last_seen = match stored.get(&running.worker_id) {
            Some(&ms) => last_seen.max(last_seen_in_store(ms)),
            None => last_seen,
        };
        if last_seen.elapsed() <= timeout {
            continue;
        }
        let span =
            info_span!("lost", job_id = running.attempt.job_id, worker_id = %running.worker_id);
        async {
            let workers = state.store.attempt_workers(running.attempt).await?;
            let error = if workers.len() > 1 {
                format!(
                    "{WORKER_LOST}: rank {} ({}) of {}",
                    running.rank,
                    running.worker_id,
                    workers.len()
                )
            } else {
                WORKER_LOST.to_string()
            };
            let job = state
                .store
                .finish_attempt(
                    running.attempt,
                    AttemptOutcome::Failed,
                    Some(&error),
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
                stop_other_ranks(state, running.attempt, &workers, &running.worker_id).await;
            }
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}

/// An attempt of several workers ended (one rank finished, failed or was lost): tell the other
/// ranks to stop. They are not waited for: a rank still running is no scheduling candidate
/// until it says it is free (see `Registry::candidates`).
pub async fn stop_other_ranks(
    state: &AppState,
    attempt: kiln_proto::protocol::AttemptRef,
    workers: &[String],
    except: &str,
) {
    for worker_id in workers.iter().filter(|w| w.as_str() != except) {
        state
            .send_to_worker(worker_id, CoordinatorMessage::Cancel { attempt })
            .await;
    }
}

/// What each rank of an attempt on `workers` is told: nothing for one worker; else its rank,
/// the world, every rank's peer address and a fresh per-attempt secret.
fn groups(workers: &[String], free: &[plan::Free]) -> anyhow::Result<Vec<Option<Group>>> {
    if workers.len() <= 1 {
        return Ok(vec![None; workers.len()]);
    }
    let peers: Vec<String> = workers
        .iter()
        .map(|id| {
            free.iter()
                .find(|f| &f.id == id)
                .and_then(|f| f.capabilities.peer_addr.clone())
                .unwrap_or_default()
        })
        .collect();
    let secret = crate::auth::random_hex()?;
    let world = workers.len() as u32;
    Ok((0..world)
        .map(|rank| {
            Some(Group {
                rank,
                world,
                peers: peers.clone(),
                workers: workers.to_vec(),
                secret: secret.clone(),
            })
        })
        .collect())
}

async fn assign(state: &AppState, elsewhere: &HashSet<String>) -> anyhow::Result<()> {
    let mut candidates = state.workers.candidates();
    if !elsewhere.is_empty() {
        // Workers on other coordinators: ready there, not draining (their rows say).
        for w in state.store.workers().await? {
            if elsewhere.contains(&w.id) && !w.draining && w.running.is_none() {
                candidates.push(crate::registry::Candidate {
                    id: w.id,
                    capabilities: w.capabilities,
                });
            }
        }
    }
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
    let now = crate::store::now_ms();
    let queue: Vec<plan::Want> = state
        .store
        .queued_jobs()
        .await?
        .into_iter()
        .map(|job| plan::Want {
            job: job.id,
            device: job.device,
            min: job.min_workers as usize,
            max: job.max_workers as usize,
            waited_ms: u64::try_from(now.saturating_sub(job.created_ms)).unwrap_or(0),
            reserve_after_ms: job.gang_wait_ms,
            needs_control: job.needs_control,
        })
        .collect();
    let free: Vec<plan::Free> = candidates
        .into_iter()
        .map(|c| plan::Free {
            id: c.id,
            capabilities: c.capabilities,
        })
        .collect();
    let plan = plan::plan(&queue, &free);
    for (job_id, held) in &plan.reserved {
        debug!(job_id, workers = ?held, "free workers held for a waiting gang");
    }
    for (job_id, workers) in plan.assign {
        let span = info_span!("assign", job_id, workers = ?workers);
        async {
            let Some(assignment) = state.store.assign_ranks(job_id, &workers).await? else {
                return anyhow::Ok(());
            };
            info!(
                attempt = assignment.attempt.attempt,
                resume = assignment.resume.as_deref().unwrap_or("-"),
                world = workers.len(),
                "assigned"
            );
            let groups = groups(&workers, &free)?;
            for (worker_id, group) in workers.iter().zip(groups) {
                let sent = state
                    .send_to_worker(
                        worker_id,
                        CoordinatorMessage::Assign {
                            attempt: assignment.attempt,
                            spec: assignment.spec.clone(),
                            resume: assignment.resume.clone(),
                            group,
                            paused: assignment.job.paused,
                            lr_changes: assignment.job.lr_changes.clone(),
                        },
                    )
                    .await;
                if !sent {
                    // It disconnected in between; the lost-worker check fails the attempt.
                    warn!(%worker_id, "worker went away before its assignment was sent");
                }
            }
            state.job_changed(&assignment.job);
            for worker_id in &workers {
                state.publish_worker(worker_id).await;
            }
            anyhow::Ok(())
        }
        .instrument(span)
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(devices: &[DeviceRequest], browser: bool) -> Capabilities {
        Capabilities {
            devices: devices.to_vec(),
            device_names: Vec::new(),
            memory_mb: 1024,
            cores: 2,
            kiln_version: "test".into(),
            peer_addr: None,
            browser,
            control: false,
        }
    }

    #[test]
    fn tabs_take_webgpu_jobs_only_and_machines_never_do() {
        use DeviceRequest::*;
        let tab = caps(&[Webgpu], true);
        let machine = caps(&[Wgpu, Cpu], false);
        let expected = [
            (Auto, false, true),
            (Cpu, false, true),
            (Wgpu, false, true),
            (Cuda, false, false),
            (Webgpu, true, false),
        ];
        for (want, on_tab, on_machine) in expected {
            assert_eq!(can_run(&tab, want), on_tab, "{want} on a tab");
            assert_eq!(can_run(&machine, want), on_machine, "{want} on a machine");
        }
        // A machine cannot claim webgpu by listing it.
        assert!(!can_run(&caps(&[Webgpu, Cpu], false), Webgpu));
    }
}
