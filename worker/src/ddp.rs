//! Data-parallel training on this worker: the training core's [`GradientHook`] backed by the
//! TCP ring of [`crate::collective`].
//!
//! The job thread drives the training loop with `pollster`; the ring's sockets belong to the
//! worker's tokio runtime, so every collective call is run on it with `Handle::block_on` (the
//! job thread has nothing else to do meanwhile). The ring is joined on the first call: the
//! initial weights' broadcast for a fresh run, the first gradients for a resumed one (every
//! rank loads the same checkpoint, so there is nothing to broadcast).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kiln_proto::protocol::{AttemptRef, Group};
use kiln_train::train::{GradientHook, HookError, HookFuture, Replica};
use tokio::net::TcpListener;
use tokio::runtime::Handle;

use crate::collective::{Collective, CollectiveError, Handshake, Ring};

/// How long the ranks have to find each other (the slowest one may still be downloading the
/// dataset or the resume checkpoint).
pub const RENDEZVOUS: Duration = Duration::from_secs(300);
/// How long one step of a collective may wait for a peer before that peer counts as gone.
pub const STEP_DEADLINE: Duration = Duration::from_secs(8);

/// The gradient hook of one rank.
pub(crate) struct RingHook {
    runtime: Handle,
    listener: Arc<TcpListener>,
    me: Handshake,
    next: SocketAddr,
    ring: Option<Ring>,
    log: Box<dyn Fn(String) + Send>,
}

impl RingHook {
    /// The hook of `group`'s rank for `attempt`; `log` goes to the job's log.
    pub(crate) fn new(
        runtime: Handle,
        listener: Arc<TcpListener>,
        attempt: AttemptRef,
        group: &Group,
        log: Box<dyn Fn(String) + Send>,
    ) -> Result<RingHook, String> {
        let world = group.world as usize;
        if world < 2 || group.rank >= group.world || group.peers.len() != world {
            return Err(format!(
                "a malformed group: rank {} of {} with {} peer addresses",
                group.rank,
                group.world,
                group.peers.len()
            ));
        }
        let next_rank = (group.rank as usize + 1) % world;
        let next_text = &group.peers[next_rank];
        let next = next_text.parse().map_err(|e| {
            format!("rank {next_rank}'s peer address `{next_text}` is not HOST:PORT: {e}")
        })?;
        Ok(RingHook {
            runtime,
            listener,
            me: Handshake {
                secret: group.secret.clone(),
                job_id: attempt.job_id,
                attempt: attempt.attempt,
                rank: group.rank,
                world: group.world,
            },
            next,
            ring: None,
            log,
        })
    }

    /// The ring, joined on first use.
    fn ring(&mut self) -> Result<&mut Ring, HookError> {
        if self.ring.is_none() {
            (self.log)(format!(
                "rank {} of {}: joining the ring over direct TCP (next rank at {})",
                self.me.rank, self.me.world, self.next
            ));
            let started = std::time::Instant::now();
            let mut ring = self
                .runtime
                .block_on(Ring::connect(&self.me, &self.listener, self.next, RENDEZVOUS))
                .map_err(hook_error)?;
            ring.deadline = STEP_DEADLINE;
            (self.log)(format!(
                "rank {} of {}: ring joined in {:.1} s (transport: direct TCP)",
                self.me.rank,
                self.me.world,
                started.elapsed().as_secs_f64()
            ));
            self.ring = Some(ring);
        }
        Ok(self.ring.as_mut().expect("joined above"))
    }
}

fn hook_error(e: CollectiveError) -> HookError {
    HookError(e.to_string())
}

impl GradientHook for RingHook {
    fn sync_weights(&mut self, _replica: Replica, weights: Vec<u8>) -> HookFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let runtime = self.runtime.clone();
            let ring = self.ring()?;
            let mut weights = weights;
            runtime
                .block_on(ring.broadcast(&mut weights))
                .map_err(hook_error)?;
            Ok(weights)
        })
    }

    fn on_gradients<'a>(
        &'a mut self,
        _replica: Replica,
        _step: u64,
        gradients: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let runtime = self.runtime.clone();
            let ring = self.ring()?;
            let world = ring.world() as f32;
            runtime
                .block_on(ring.all_reduce_sum(gradients))
                .map_err(hook_error)?;
            // The mean: the same sum times the same factor, so every rank keeps the same bits.
            let scale = 1.0 / world;
            for g in gradients.iter_mut() {
                *g *= scale;
            }
            Ok(())
        })
    }

    fn on_parameters<'a>(
        &'a mut self,
        _replica: Replica,
        _step: u64,
        parameters: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let runtime = self.runtime.clone();
            let ring = self.ring()?;
            let world = ring.world() as f32;
            runtime
                .block_on(ring.all_reduce_sum(parameters))
                .map_err(hook_error)?;
            let scale = 1.0 / world;
            for p in parameters.iter_mut() {
                *p *= scale;
            }
            Ok(())
        })
    }

    fn reduce_sum<'a>(&'a mut self, _replica: Replica, values: &'a mut [f64]) -> HookFuture<'a, ()> {
        Box::pin(async move {
            let runtime = self.runtime.clone();
            let ring = self.ring()?;
            // Metrics and evaluation sums: f32 keeps 7 digits, plenty for a loss or a count.
            let mut buf: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            runtime
                .block_on(ring.all_reduce_sum(&mut buf))
                .map_err(hook_error)?;
            for (v, b) in values.iter_mut().zip(buf) {
                *v = f64::from(b);
            }
            Ok(())
        })
    }
}
