//! Data-parallel training on this worker: the training core's [`GradientHook`] backed by the
//! ring of [`crate::collective`].
//!
//! The job thread drives the training loop with `pollster`; the ring's sockets belong to the
//! worker's tokio runtime, so every collective call is run on it with `Handle::block_on` (the
//! job thread has nothing else to do meanwhile), raced against the job's cancel token so that
//! a cancel never waits behind a stuck peer. The ring is joined on the first call: the initial
//! weights' broadcast for a fresh run, the first gradients for a resumed one (every rank loads
//! the same checkpoint, so there is nothing to broadcast).
//!
//! **Links.** Rank `r` dials rank `r + 1` directly over TCP; where that fails within
//! [`DIRECT_TRY`] (no route, a firewall, NAT), the link goes through the coordinator's relay
//! instead. The accepting side takes whichever arrives with a valid handshake: a direct
//! connection on its peer listener, or (after [`DIRECT_TRY`]) the relayed one. The job's log
//! says which transport each link uses.
//!
//! **Deadlines.** Joining may take [`RENDEZVOUS`] (a rank may still be downloading its data);
//! the first collective as long (the first step warms up); after that a step waits at most
//! [`STEP_DEADLINE`] or four times the longest exchange seen so far, whichever is longer, so
//! a rank that is slow (a CPU beside a GPU) is not taken for a dead one, and a dead one is
//! found in seconds. A killed peer's socket closes at once and fails the step sooner still.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kiln_proto::protocol::{AttemptRef, Group};
use kiln_train::train::{CancelToken, GradientHook, HookError, HookFuture, Replica};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;

use crate::collective::{self, Collective, CollectiveError, Handshake, Reader, Ring, Writer};
use crate::relay::{self, Side};

/// How long the ranks have to find each other (the slowest one may still be downloading the
/// dataset or the resume checkpoint). A cancel (the attempt failed elsewhere) ends the wait.
pub const RENDEZVOUS: Duration = Duration::from_secs(1800);
/// How long a direct connection to the next rank is tried before the relay.
pub const DIRECT_TRY: Duration = Duration::from_secs(3);
/// The shortest a collective step waits for a peer, once the first step is done.
pub const STEP_DEADLINE: Duration = Duration::from_secs(8);

/// Where the coordinator is, for relayed links.
#[derive(Debug, Clone)]
pub(crate) struct Coordinator {
    pub server: String,
    pub token: String,
    /// This worker's id: a worker token opens only its own rank's ends of relayed links.
    pub worker_id: String,
}

/// How a link is carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Direct,
    Relay,
}

impl Transport {
    fn describe(self) -> &'static str {
        match self {
            Transport::Direct => "direct TCP",
            Transport::Relay => "relayed through the coordinator",
        }
    }
}

/// The gradient hook of one rank.
pub(crate) struct RingHook {
    runtime: Handle,
    listener: Arc<TcpListener>,
    coordinator: Coordinator,
    attempt: AttemptRef,
    me: Handshake,
    /// Rank + 1's peer address, `IP:PORT` or `HOST:PORT` (resolved when dialing).
    next: String,
    cancel: CancelToken,
    ring: Option<Ring>,
    /// The longest exchange so far (sets the step deadline).
    slowest: Duration,
    /// Every rank's worker id, rank order (may be empty: an older coordinator).
    workers: Vec<String>,
    log: Box<dyn Fn(String) + Send>,
}

impl RingHook {
    /// The hook of `group`'s rank for `attempt`; `log` goes to the job's log.
    pub(crate) fn new(
        runtime: Handle,
        listener: Arc<TcpListener>,
        coordinator: Coordinator,
        attempt: AttemptRef,
        group: &Group,
        cancel: CancelToken,
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
        let next = group.peers[next_rank].clone();
        if next
            .rsplit_once(':')
            .is_none_or(|(_, port)| port.parse::<u16>().is_err())
        {
            return Err(format!(
                "rank {next_rank}'s peer address `{next}` is not HOST:PORT"
            ));
        }
        Ok(RingHook {
            runtime,
            listener,
            coordinator,
            attempt,
            me: Handshake {
                secret: group.secret.clone(),
                job_id: attempt.job_id,
                attempt: attempt.attempt,
                rank: group.rank,
                world: group.world,
            },
            next,
            cancel,
            ring: None,
            slowest: Duration::ZERO,
            workers: group.workers.clone(),
            log,
        })
    }

    /// Run `work` on the runtime until it ends or the job is cancelled.
    fn run<T>(
        runtime: &Handle,
        cancel: &CancelToken,
        work: impl Future<Output = Result<T, CollectiveError>>,
    ) -> Result<T, HookError> {
        runtime.block_on(async {
            tokio::select! {
                done = work => done.map_err(|e| HookError(e.to_string())),
                () = cancelled(cancel) => Err(HookError("cancelled while waiting for the other ranks".into())),
            }
        })
    }

    /// The ring, joined on first use.
    fn ring(&mut self) -> Result<&mut Ring, HookError> {
        if self.ring.is_none() {
            let (rank, world) = (self.me.rank, self.me.world);
            (self.log)(format!(
                "rank {rank} of {world}: joining the ring (next rank at {})",
                self.next
            ));
            let started = Instant::now();
            let join = join(
                &self.me,
                &self.listener,
                &self.next,
                &self.coordinator,
                self.attempt,
            );
            let (ring, to_next, from_prev) = Self::run(&self.runtime, &self.cancel, join)?;
            let transport = if to_next == from_prev {
                to_next.describe().to_string()
            } else {
                format!(
                    "{} to rank {}, {} from rank {}",
                    to_next.describe(),
                    (rank + 1) % world,
                    from_prev.describe(),
                    (rank + world - 1) % world
                )
            };
            (self.log)(format!(
                "rank {rank} of {world}: ring joined in {:.1} s (transport: {transport})",
                started.elapsed().as_secs_f64()
            ));
            self.ring = Some(ring);
        }
        Ok(self.ring.as_mut().expect("joined above"))
    }

    /// Sum `values` over the ranks; the step deadline follows the slowest exchange seen.
    fn all_reduce(&mut self, values: &mut [f32]) -> Result<(), HookError> {
        let started = Instant::now();
        let (runtime, cancel) = (self.runtime.clone(), self.cancel.clone());
        let ring = self.ring()?;
        Self::run(&runtime, &cancel, ring.all_reduce_sum(values))?;
        self.slowest = self.slowest.max(started.elapsed());
        if let Some(ring) = self.ring.as_mut() {
            ring.deadline = STEP_DEADLINE.max(self.slowest * 4);
        }
        Ok(())
    }

    /// Replace `values` by their mean over the ranks (the same bits on every rank: the same
    /// sum times the same factor).
    fn mean(&mut self, values: &mut [f32]) -> Result<(), HookError> {
        self.all_reduce(values)?;
        let scale = 1.0 / self.me.world as f32;
        for v in values.iter_mut() {
            *v *= scale;
        }
        Ok(())
    }
}

async fn cancelled(cancel: &CancelToken) {
    while !cancel.is_cancelled() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Make both links of this rank: to the next rank (direct, else relayed) and from the previous
/// one (whichever arrives first with a valid handshake).
async fn join(
    me: &Handshake,
    listener: &TcpListener,
    next: &str,
    coordinator: &Coordinator,
    attempt: AttemptRef,
) -> Result<(Ring, Transport, Transport), CollectiveError> {
    let (rank, world) = (me.rank as usize, me.world as usize);
    let (next_rank, prev_rank) = ((rank + 1) % world, (rank + world - 1) % world);
    let io = |peer: usize| {
        move |source| CollectiveError::Io {
            peer,
            what: "rendezvous",
            source,
        }
    };
    let dial = async {
        if let Some(mut stream) = dial_direct(next).await {
            collective::offer(&mut stream, me, next_rank).await?;
            return Ok((Box::new(stream.into_split().1) as Writer, Transport::Direct));
        }
        let mut stream = relay::open(
            &coordinator.server,
            &coordinator.token,
            &coordinator.worker_id,
            attempt,
            rank,
            Side::Dial,
        )
        .await
        .map_err(io(next_rank))?;
        collective::offer(&mut stream, me, next_rank).await?;
        Ok((Box::new(stream.into_split().1) as Writer, Transport::Relay))
    };
    let accept = async {
        let direct = async {
            loop {
                let (mut stream, _) = listener.accept().await.map_err(io(prev_rank))?;
                if let Ok(true) = collective::check(&mut stream, me).await {
                    let _ = stream.set_nodelay(true);
                    return Ok::<_, CollectiveError>(stream);
                }
            }
        };
        let relayed = async {
            tokio::time::sleep(DIRECT_TRY).await;
            loop {
                let mut stream = relay::open(
                    &coordinator.server,
                    &coordinator.token,
                    &coordinator.worker_id,
                    attempt,
                    prev_rank,
                    Side::Accept,
                )
                .await
                .map_err(io(prev_rank))?;
                if let Ok(true) = collective::check(&mut stream, me).await {
                    return Ok::<_, CollectiveError>(stream);
                }
            }
        };
        tokio::select! {
            s = direct => Ok((Box::new(s?.into_split().0) as Reader, Transport::Direct)),
            s = relayed => Ok((Box::new(s?.into_split().0) as Reader, Transport::Relay)),
        }
    };
    let (to_next, from_prev) = tokio::try_join!(
        within_rendezvous(next_rank, dial),
        within_rendezvous(prev_rank, accept),
    )?;
    // The first collective may wait as long as the rendezvous (the first step warms up);
    // `RingHook::all_reduce` tightens it after.
    let ring = Ring::from_links(rank, world, to_next.0, from_prev.0, RENDEZVOUS);
    Ok((ring, to_next.1, from_prev.1))
}

async fn within_rendezvous<T>(
    peer: usize,
    work: impl Future<Output = Result<T, CollectiveError>>,
) -> Result<T, CollectiveError> {
    tokio::time::timeout(RENDEZVOUS, work)
        .await
        .unwrap_or(Err(CollectiveError::Timeout {
            peer,
            secs: RENDEZVOUS.as_secs(),
            what: "rendezvous",
        }))
}

/// A direct connection to `next`, tried for [`DIRECT_TRY`]; `None` if it cannot be made.
async fn dial_direct(next: &str) -> Option<TcpStream> {
    let deadline = Instant::now() + DIRECT_TRY;
    while Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, TcpStream::connect(next)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some(stream);
            }
            Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(_) => return None,
        }
    }
    None
}

impl GradientHook for RingHook {
    fn sync_weights(&mut self, _replica: Replica, weights: Vec<u8>) -> HookFuture<'_, Vec<u8>> {
        Box::pin(async move {
            let (runtime, cancel) = (self.runtime.clone(), self.cancel.clone());
            let ring = self.ring()?;
            let mut weights = weights;
            Self::run(&runtime, &cancel, ring.broadcast(&mut weights))?;
            Ok(weights)
        })
    }

    fn on_gradients<'a>(
        &'a mut self,
        _replica: Replica,
        _step: u64,
        gradients: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move { self.mean(gradients) })
    }

    fn on_parameters<'a>(
        &'a mut self,
        _replica: Replica,
        _step: u64,
        parameters: &'a mut [f32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move { self.mean(parameters) })
    }

    fn check_same<'a>(
        &'a mut self,
        _replica: Replica,
        what: &'a str,
        digest: [u8; 32],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            // Rank 0's digest to all; each rank says whether its own differs; all learn who.
            let (runtime, cancel) = (self.runtime.clone(), self.cancel.clone());
            let ring = self.ring()?;
            let mut first = digest.to_vec();
            Self::run(&runtime, &cancel, ring.broadcast(&mut first))?;
            let world = self.me.world as usize;
            let mut differs = vec![0.0f32; world];
            differs[self.me.rank as usize] = if first == digest { 0.0 } else { 1.0 };
            self.all_reduce(&mut differs)?;
            let name = |rank: usize| match self.workers.get(rank) {
                Some(w) => format!("rank {rank} (worker {w})"),
                None => format!("rank {rank}"),
            };
            let odd: Vec<String> = (0..world).filter(|&r| differs[r] > 0.0).map(name).collect();
            if odd.is_empty() {
                return Ok(());
            }
            Err(HookError(format!(
                "the ranks do not train on the same {what}: {} {} from {} (check the \
                 dataset path on each worker, or push the data with `kiln data push` so that \
                 every worker fetches the same bytes)",
                odd.join(", "),
                if odd.len() == 1 { "differs" } else { "differ" },
                name(0)
            )))
        })
    }

    fn reduce_sum<'a>(
        &'a mut self,
        _replica: Replica,
        values: &'a mut [f64],
    ) -> HookFuture<'a, ()> {
        Box::pin(async move {
            // Metrics and evaluation sums: f32 keeps 7 digits, plenty for a loss or a count.
            let mut buf: Vec<f32> = values.iter().map(|&v| v as f32).collect();
            self.all_reduce(&mut buf)?;
            for (v, b) in values.iter_mut().zip(buf) {
                *v = f64::from(b);
            }
            Ok(())
        })
    }
}
