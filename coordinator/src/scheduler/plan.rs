//! Which queued job goes to which free workers: a pure function, so the policy is tested
//! without a database or sockets.
//!
//! A job wants between `min` and `max` workers (1 and 1 today; a data-parallel gang more). Jobs
//! are taken in queue order (priority, then age):
//! - a job whose `min` eligible workers are free gets up to `max` of them, all at once — a gang
//!   is never half-assigned, so two gangs can never each hold part of the workers and wait for
//!   each other;
//! - a gang that cannot form yet does not hold anything back: smaller jobs behind it still run
//!   on the free workers ("backfill");
//! - but once a gang has waited longer than its `reserve_after_ms`, the free workers it can use
//!   are **reserved** for it (at most `min`, first the gang at the head of the queue): later jobs
//!   may not take them, so a steady stream of small jobs cannot starve it.

use std::collections::HashSet;

use kiln_proto::protocol::{Capabilities, JobId};
use kiln_proto::spec::DeviceRequest;

use super::can_run;

/// A queued job as the planner sees it.
#[derive(Debug, Clone)]
pub struct Want {
    pub job: JobId,
    pub device: DeviceRequest,
    /// Fewest workers it can start with (≥ 1).
    pub min: usize,
    /// Most workers it can use (≥ `min`).
    pub max: usize,
    /// How long it has waited in the queue.
    pub waited_ms: u64,
    /// After this long waiting, the workers it can use are held for it.
    pub reserve_after_ms: u64,
    /// Paused, or with learning rates set live: only a worker that takes live control
    /// (`Capabilities::control`) can start it as it is.
    pub needs_control: bool,
}

/// A connected, idle worker.
#[derive(Debug, Clone)]
pub struct Free {
    pub id: String,
    pub capabilities: Capabilities,
}

/// What one pass decides.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Jobs to assign now, each with its workers in rank order.
    pub assign: Vec<(JobId, Vec<String>)>,
    /// Free workers held for a waiting gang (not assigned to anything else this pass).
    pub reserved: Vec<(JobId, Vec<String>)>,
}

/// Decide one pass. `queue` is in queue order; `free` in the order workers should be used.
pub fn plan(queue: &[Want], free: &[Free]) -> Plan {
    let mut taken: HashSet<&str> = HashSet::new();
    let mut out = Plan::default();
    for want in queue {
        let eligible: Vec<&Free> = free
            .iter()
            .filter(|f| {
                !taken.contains(f.id.as_str())
                    && can_run(&f.capabilities, want.device)
                    // A gang's ranks dial each other: a worker without a peer address (an
                    // older one) only takes one-worker jobs.
                    && (want.max <= 1 || f.capabilities.peer_addr.is_some())
                    && (!want.needs_control || f.capabilities.control)
            })
            .collect();
        let min = want.min.max(1);
        if eligible.len() >= min {
            let workers: Vec<String> = eligible
                .iter()
                .take(want.max.max(min))
                .map(|f| f.id.clone())
                .collect();
            taken.extend(eligible.iter().take(workers.len()).map(|f| f.id.as_str()));
            out.assign.push((want.job, workers));
        } else if min > 1 && want.waited_ms >= want.reserve_after_ms && !eligible.is_empty() {
            let held: Vec<String> = eligible.iter().map(|f| f.id.clone()).collect();
            taken.extend(eligible.iter().map(|f| f.id.as_str()));
            out.reserved.push((want.job, held));
        }
        if taken.len() == free.len() {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free(ids: &[&str]) -> Vec<Free> {
        ids.iter()
            .map(|id| Free {
                id: (*id).to_string(),
                capabilities: Capabilities {
                    devices: vec![DeviceRequest::Cpu],
                    device_names: vec!["cpu".into()],
                    memory_mb: 1024,
                    cores: 2,
                    kiln_version: "test".into(),
                    peer_addr: Some(format!("{id}:7070")),
                    browser: false,
                    control: false,
                },
            })
            .collect()
    }

    fn job(job: JobId, min: usize, max: usize, waited_ms: u64) -> Want {
        Want {
            job,
            device: DeviceRequest::Cpu,
            min,
            max,
            waited_ms,
            reserve_after_ms: 30_000,
            needs_control: false,
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[test]
    fn one_worker_jobs_take_free_workers_in_queue_order() {
        let p = plan(
            &[job(1, 1, 1, 0), job(2, 1, 1, 0), job(3, 1, 1, 0)],
            &free(&["a", "b"]),
        );
        assert_eq!(p.assign, [(1, ids(&["a"])), (2, ids(&["b"]))]);
        assert!(p.reserved.is_empty());
    }

    #[test]
    fn a_gang_is_assigned_whole_or_not_at_all() {
        // 3 of 4 wanted, at least 2: it takes the 3.
        let p = plan(&[job(1, 2, 4, 0)], &free(&["a", "b", "c"]));
        assert_eq!(p.assign, [(1, ids(&["a", "b", "c"]))]);
        // Only 1 free, 2 needed: nothing is assigned, nothing half-held.
        let p = plan(&[job(1, 2, 2, 0)], &free(&["a"]));
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn two_gangs_never_split_the_workers_between_them() {
        // Two 2-worker gangs, 3 workers: one forms, the other waits whole.
        let p = plan(&[job(1, 2, 2, 0), job(2, 2, 2, 0)], &free(&["a", "b", "c"]));
        assert_eq!(p.assign, [(1, ids(&["a", "b"]))]);
        assert!(p.reserved.is_empty());
    }

    #[test]
    fn small_jobs_run_while_no_gang_can_form() {
        // The gang at the head needs 2, only 1 is free: the 1-worker job behind it runs.
        let p = plan(&[job(1, 2, 2, 1_000), job(2, 1, 1, 0)], &free(&["a"]));
        assert_eq!(p.assign, [(2, ids(&["a"]))]);
    }

    #[test]
    fn a_gang_that_waited_long_enough_holds_free_workers_against_small_jobs() {
        let p = plan(&[job(1, 2, 2, 31_000), job(2, 1, 1, 0)], &free(&["a"]));
        assert!(p.assign.is_empty(), "{p:?}");
        assert_eq!(p.reserved, [(1, ids(&["a"]))]);
        // Once the second worker is free too, the gang forms.
        let p = plan(&[job(1, 2, 2, 32_000), job(2, 1, 1, 0)], &free(&["a", "b"]));
        assert_eq!(p.assign, [(1, ids(&["a", "b"]))]);
    }

    #[test]
    fn workers_that_cannot_run_a_job_are_not_counted_for_it() {
        let mut workers = free(&["a", "b"]);
        workers[1].capabilities.devices = vec![DeviceRequest::Wgpu];
        let p = plan(&[job(1, 2, 2, 0)], &workers);
        assert_eq!(p, Plan::default());
        let p = plan(
            &[Want {
                device: DeviceRequest::Wgpu,
                ..job(2, 1, 1, 0)
            }],
            &workers,
        );
        assert_eq!(p.assign, [(2, ids(&["b"]))]);
    }

    #[test]
    fn workers_without_a_peer_address_only_take_one_worker_jobs() {
        let mut workers = free(&["a", "b", "c"]);
        workers[0].capabilities.peer_addr = None;
        let p = plan(&[job(1, 2, 2, 0), job(2, 1, 1, 0)], &workers);
        assert_eq!(p.assign, [(1, ids(&["b", "c"])), (2, ids(&["a"]))]);
    }
}
