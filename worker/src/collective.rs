//! The collective of data-parallel training: ranks of one attempt exchange gradients and
//! weights directly over TCP, in a ring.
//!
//! - **Rendezvous**: every rank listens; rank `r` dials rank `r + 1` (mod world) and sends a
//!   [`Handshake`] (per-attempt secret, job, attempt, rank, world). The listener accepts only
//!   the handshake of its ring predecessor for the same attempt: strays (another attempt, a
//!   stale rank, a wrong secret) are refused with a reason and the listener waits on.
//! - **All-reduce** ([`Ring::all_reduce_sum`]): reduce-scatter then all-gather (world − 1
//!   steps each), the buffer cut into `world` chunks and every chunk into segments of at most
//!   [`SEGMENT_BYTES`] that stream while the previous ones are added, sending and receiving at
//!   once so neither side's socket buffer can fill up and stall the ring. Each chunk is summed
//!   by one rank in a fixed order (the ring order starting after its owner) and then copied to
//!   all others, so **every rank ends with bitwise-identical values**, run after run.
//! - **Broadcast** ([`Ring::broadcast`]) of rank 0's bytes (the initial weights) along the ring.
//! - **Failure**: every step has a deadline ([`Ring::deadline`]); a closed socket fails at once.
//!   Either way the error names the rank that did not answer, so a dead rank never hangs the
//!   others.
//!
//! The trait [`Collective`] is what the training loop's gradient hook uses, so a GPU-native
//! path (NCCL) can be added beside this one.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The receiving half of a link from the previous rank (a TCP stream, or one relayed by the
/// coordinator).
pub type Reader = Box<dyn AsyncRead + Unpin + Send>;
/// The sending half of a link to the next rank.
pub type Writer = Box<dyn AsyncWrite + Unpin + Send>;

/// Largest piece of a chunk sent at once (a few hundred KiB keeps the pipe full on loopback
/// without holding much memory).
pub const SEGMENT_BYTES: usize = 256 * 1024;
const MAGIC: &[u8; 8] = b"KILNRNG1";
const MAX_SECRET: usize = 256;

/// Why a collective operation failed; the training loop stops with it.
#[derive(Debug, thiserror::Error)]
pub enum CollectiveError {
    #[error("rank {peer} did not answer within {secs} s (during {what})")]
    Timeout {
        peer: usize,
        secs: u64,
        what: &'static str,
    },
    #[error("the connection with rank {peer} failed during {what}: {source}")]
    Io {
        peer: usize,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("rank {peer} refused the handshake: {reason}")]
    Refused { peer: usize, reason: String },
    #[error("buffers differ between ranks: {0}")]
    Mismatch(String),
}

/// Who a connection claims to be, checked by the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handshake {
    /// Per-attempt secret handed to every rank by the coordinator.
    pub secret: String,
    pub job_id: i64,
    pub attempt: u32,
    pub rank: u32,
    pub world: u32,
}

impl Handshake {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 2 + self.secret.len() + 20);
        out.extend_from_slice(MAGIC);
        let secret = self.secret.as_bytes();
        out.extend_from_slice(&(secret.len().min(MAX_SECRET) as u16).to_le_bytes());
        out.extend_from_slice(&secret[..secret.len().min(MAX_SECRET)]);
        out.extend_from_slice(&self.job_id.to_le_bytes());
        out.extend_from_slice(&self.attempt.to_le_bytes());
        out.extend_from_slice(&self.rank.to_le_bytes());
        out.extend_from_slice(&self.world.to_le_bytes());
        out
    }

    async fn read<S: AsyncRead + Unpin>(
        stream: &mut S,
    ) -> std::io::Result<Result<Handshake, String>> {
        let mut magic = [0u8; 8];
        stream.read_exact(&mut magic).await?;
        if &magic != MAGIC {
            return Ok(Err("not a Kiln ring connection".into()));
        }
        let len = usize::from(stream.read_u16_le().await?);
        if len > MAX_SECRET {
            return Ok(Err("the secret is too long".into()));
        }
        let mut secret = vec![0u8; len];
        stream.read_exact(&mut secret).await?;
        let Ok(secret) = String::from_utf8(secret) else {
            return Ok(Err("the secret is not UTF-8".into()));
        };
        Ok(Ok(Handshake {
            secret,
            job_id: stream.read_i64_le().await?,
            attempt: stream.read_u32_le().await?,
            rank: stream.read_u32_le().await?,
            world: stream.read_u32_le().await?,
        }))
    }
}

/// What the training loop needs from a collective.
#[allow(async_fn_in_trait)]
pub trait Collective {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Replace `buf` on every rank by the element-wise sum over all ranks; every rank ends
    /// with the same bits.
    async fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError>;
    /// Give every rank rank 0's `bytes` (their length may differ before the call).
    async fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError>;
}

/// This rank's place in a ring over TCP.
pub struct Ring {
    rank: usize,
    world: usize,
    /// To rank + 1.
    next: Option<Writer>,
    /// From rank − 1.
    prev: Option<Reader>,
    /// Per step: a peer that takes longer counts as gone.
    pub deadline: Duration,
    recv: Vec<f32>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field("rank", &self.rank)
            .field("world", &self.world)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

fn io(peer: usize, what: &'static str) -> impl FnOnce(std::io::Error) -> CollectiveError {
    move |source| CollectiveError::Io { peer, what, source }
}

async fn within<T>(
    deadline: Duration,
    peer: usize,
    what: &'static str,
    work: impl Future<Output = Result<T, CollectiveError>>,
) -> Result<T, CollectiveError> {
    tokio::time::timeout(deadline, work)
        .await
        .unwrap_or(Err(CollectiveError::Timeout {
            peer,
            secs: deadline.as_secs(),
            what,
        }))
}

/// The dialing side of a link to rank `peer`: present `me` and wait for the verdict.
pub async fn offer<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &Handshake,
    peer: usize,
) -> Result<(), CollectiveError> {
    stream
        .write_all(&me.encode())
        .await
        .map_err(io(peer, "rendezvous"))?;
    stream.flush().await.map_err(io(peer, "rendezvous"))?;
    // One byte back: 1 = accepted; else a reason follows.
    let verdict = stream.read_u8().await.map_err(io(peer, "rendezvous"))?;
    if verdict != 1 {
        let mut reason = String::new();
        let _ = stream.read_to_string(&mut reason).await;
        return Err(CollectiveError::Refused { peer, reason });
    }
    Ok(())
}

/// The accepting side of a link from the previous rank: read its handshake and accept it
/// (`Ok(true)`) only if it is rank `me.rank − 1` of the same attempt with the same secret;
/// strays are told why and refused (`Ok(false)`).
pub async fn check<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    me: &Handshake,
) -> std::io::Result<bool> {
    let world = me.world as usize;
    let prev_rank = (me.rank as usize + world - 1) % world.max(1);
    let claim = Handshake::read(stream).await?;
    let expected = Handshake {
        rank: prev_rank as u32,
        ..me.clone()
    };
    let refusal = match claim {
        Err(reason) => Some(reason),
        Ok(h) if h.secret != me.secret => Some("wrong secret".to_string()),
        Ok(h) if (h.job_id, h.attempt) != (me.job_id, me.attempt) => Some(format!(
            "this ring is job {} attempt {}, not job {} attempt {}",
            me.job_id, me.attempt, h.job_id, h.attempt
        )),
        Ok(h) if h != expected => Some(format!(
            "rank {} expects rank {prev_rank} of {world}, got rank {} of {}",
            me.rank, h.rank, h.world
        )),
        Ok(_) => None,
    };
    match refusal {
        Some(reason) => {
            tracing::warn!(%reason, "refused a ring connection");
            stream.write_u8(0).await?;
            stream.write_all(reason.as_bytes()).await?;
            stream.flush().await?;
            Ok(false)
        }
        None => {
            stream.write_u8(1).await?;
            stream.flush().await?;
            Ok(true)
        }
    }
}

impl Ring {
    /// A ring over links already made (see [`offer`] and [`check`]): `next` to rank + 1,
    /// `prev` from rank − 1.
    pub fn from_links(
        rank: usize,
        world: usize,
        next: Writer,
        prev: Reader,
        deadline: Duration,
    ) -> Ring {
        Ring {
            rank,
            world,
            next: Some(next),
            prev: Some(prev),
            deadline,
            recv: Vec::new(),
        }
    }

    /// Join the ring as `me.rank` of `me.world` over direct TCP: accept the predecessor on
    /// `listener` and dial the successor at `next_addr`, both within `deadline`. A world of 1
    /// needs no peers.
    pub async fn connect(
        me: &Handshake,
        listener: &TcpListener,
        next_addr: SocketAddr,
        deadline: Duration,
    ) -> Result<Ring, CollectiveError> {
        let rank = me.rank as usize;
        let world = me.world as usize;
        if world <= 1 {
            return Ok(Ring {
                rank,
                world,
                next: None,
                prev: None,
                deadline,
                recv: Vec::new(),
            });
        }
        let next_rank = (rank + 1) % world;
        let prev_rank = (rank + world - 1) % world;
        let dial = within(deadline, next_rank, "rendezvous", async {
            // The successor may not listen yet: retry until the deadline.
            let mut stream = loop {
                match TcpStream::connect(next_addr).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                }
            };
            stream
                .set_nodelay(true)
                .map_err(io(next_rank, "rendezvous"))?;
            offer(&mut stream, me, next_rank).await?;
            Ok(stream.into_split().1)
        });
        let accept = within(deadline, prev_rank, "rendezvous", async {
            loop {
                let (mut stream, _) = listener
                    .accept()
                    .await
                    .map_err(io(prev_rank, "rendezvous"))?;
                if let Ok(true) = check(&mut stream, me).await {
                    stream
                        .set_nodelay(true)
                        .map_err(io(prev_rank, "rendezvous"))?;
                    return Ok(stream.into_split().0);
                }
            }
        });
        let (next, prev) = tokio::try_join!(dial, accept)?;
        Ok(Ring::from_links(
            rank,
            world,
            Box::new(next),
            Box::new(prev),
            deadline,
        ))
    }

    fn next_rank(&self) -> usize {
        (self.rank + 1) % self.world
    }

    fn prev_rank(&self) -> usize {
        (self.rank + self.world - 1) % self.world
    }

    /// `[start, end)` of chunk `c` of a buffer of `len` values cut into `world` chunks.
    fn chunk(&self, len: usize, c: usize) -> std::ops::Range<usize> {
        let base = len / self.world;
        let extra = len % self.world;
        let start = c * base + c.min(extra);
        start..start + base + usize::from(c < extra)
    }

    /// One ring step: send `out` to the next rank while receiving as many values from the
    /// previous one; each received segment goes to `land(offset, values)` as it arrives.
    async fn step(
        &mut self,
        out: &[f32],
        incoming: usize,
        what: &'static str,
        mut land: impl FnMut(usize, &[f32]),
    ) -> Result<(), CollectiveError> {
        let (next_rank, prev_rank) = (self.next_rank(), self.prev_rank());
        let deadline = self.deadline;
        let (Some(next), Some(prev)) = (self.next.as_mut(), self.prev.as_mut()) else {
            return Ok(());
        };
        let segment = SEGMENT_BYTES / 4;
        self.recv.resize(segment.min(incoming.max(1)), 0.0);
        let recv = &mut self.recv;
        let send = within(deadline, next_rank, what, async {
            for piece in out.chunks(segment) {
                next.write_all(bytemuck::cast_slice(piece))
                    .await
                    .map_err(io(next_rank, what))?;
            }
            Ok(())
        });
        let receive = within(deadline, prev_rank, what, async {
            let mut offset = 0;
            while offset < incoming {
                let n = segment.min(incoming - offset);
                let buf = &mut recv[..n];
                prev.read_exact(bytemuck::cast_slice_mut(buf))
                    .await
                    .map_err(io(prev_rank, what))?;
                land(offset, buf);
                offset += n;
            }
            Ok(())
        });
        tokio::try_join!(send, receive)?;
        Ok(())
    }
}

/// Two disjoint ranges of `buf`: the one to send (read) and the one to receive into.
fn split(
    buf: &mut [f32],
    send: std::ops::Range<usize>,
    recv: std::ops::Range<usize>,
) -> (&[f32], &mut [f32]) {
    if send.start < recv.start {
        let (head, tail) = buf.split_at_mut(recv.start);
        (&head[send], &mut tail[..recv.len()])
    } else {
        let (head, tail) = buf.split_at_mut(send.start);
        (&tail[..send.len()], &mut head[recv])
    }
}

impl Collective for Ring {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    async fn all_reduce_sum(&mut self, buf: &mut [f32]) -> Result<(), CollectiveError> {
        let world = self.world;
        if world <= 1 {
            return Ok(());
        }
        let len = buf.len();
        // Reduce-scatter: at step s, send chunk (rank − s) and add the received values into
        // chunk (rank − s − 1). After world − 1 steps this rank holds chunk (rank + 1) summed.
        for s in 0..world - 1 {
            let send_c = (self.rank + world - s) % world;
            let recv_c = (self.rank + 2 * world - s - 1) % world;
            let (out, target) = split(buf, self.chunk(len, send_c), self.chunk(len, recv_c));
            let incoming = target.len();
            self.step(out, incoming, "all-reduce", |offset, values| {
                for (t, v) in target[offset..offset + values.len()].iter_mut().zip(values) {
                    *t += v;
                }
            })
            .await?;
        }
        // All-gather: pass the summed chunks on; each rank copies what it receives.
        for s in 0..world - 1 {
            let send_c = (self.rank + 1 + world - s) % world;
            let recv_c = (self.rank + world - s) % world;
            let (out, target) = split(buf, self.chunk(len, send_c), self.chunk(len, recv_c));
            let incoming = target.len();
            self.step(out, incoming, "all-reduce", |offset, values| {
                target[offset..offset + values.len()].copy_from_slice(values);
            })
            .await?;
        }
        Ok(())
    }

    async fn broadcast(&mut self, bytes: &mut Vec<u8>) -> Result<(), CollectiveError> {
        let world = self.world;
        if world <= 1 {
            return Ok(());
        }
        let (next_rank, prev_rank, deadline) = (self.next_rank(), self.prev_rank(), self.deadline);
        // Rank 0 sends; every other rank receives from its predecessor and, unless it is the
        // last, passes the bytes on.
        if self.rank != 0 {
            let prev = self
                .prev
                .as_mut()
                .ok_or_else(|| CollectiveError::Mismatch("no predecessor".into()))?;
            let received = within(deadline, prev_rank, "broadcast", async {
                let len = prev
                    .read_u64_le()
                    .await
                    .map_err(io(prev_rank, "broadcast"))?;
                let len = usize::try_from(len).map_err(|_| {
                    CollectiveError::Mismatch(format!("a broadcast of {len} bytes"))
                })?;
                let mut data = vec![0u8; len];
                prev.read_exact(&mut data)
                    .await
                    .map_err(io(prev_rank, "broadcast"))?;
                Ok(data)
            })
            .await?;
            *bytes = received;
        }
        if next_rank != 0 {
            let next = self
                .next
                .as_mut()
                .ok_or_else(|| CollectiveError::Mismatch("no successor".into()))?;
            within(deadline, next_rank, "broadcast", async {
                next.write_u64_le(bytes.len() as u64)
                    .await
                    .map_err(io(next_rank, "broadcast"))?;
                next.write_all(bytes)
                    .await
                    .map_err(io(next_rank, "broadcast"))
            })
            .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef";

    fn me(rank: usize, world: usize) -> Handshake {
        Handshake {
            secret: SECRET.into(),
            job_id: 7,
            attempt: 2,
            rank: rank as u32,
            world: world as u32,
        }
    }

    /// `world` ranks on loopback, each with its own listener; returns the rings.
    async fn rings(world: usize, deadline: Duration) -> Vec<Ring> {
        let mut listeners = Vec::new();
        for _ in 0..world {
            listeners.push(TcpListener::bind("127.0.0.1:0").await.unwrap());
        }
        let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let tasks: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(rank, listener)| {
                let next = addrs[(rank + 1) % world];
                tokio::spawn(async move {
                    Ring::connect(&me(rank, world), &listener, next, deadline)
                        .await
                        .unwrap()
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    }

    /// Values whose sums depend on the order of addition (so bit-identity is a real check).
    fn values(rank: usize, len: usize) -> Vec<f32> {
        let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ (rank as u64) << 32;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    * 10f32.powi((state % 7) as i32 - 3)
            })
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_rank_ends_with_the_same_bits_and_the_sum() {
        for world in [2usize, 3, 4] {
            // Lengths below, at and above the world size, and several segments long.
            for len in [1usize, world, 1001, SEGMENT_BYTES / 4 * 2 + 17] {
                let rings = rings(world, Duration::from_secs(10)).await;
                let tasks: Vec<_> = rings
                    .into_iter()
                    .map(|mut ring| {
                        tokio::spawn(async move {
                            let mut buf = values(ring.rank(), len);
                            ring.all_reduce_sum(&mut buf).await.unwrap();
                            buf
                        })
                    })
                    .collect();
                let mut results = Vec::new();
                for t in tasks {
                    results.push(t.await.unwrap());
                }
                for r in &results[1..] {
                    assert!(
                        r.iter()
                            .zip(&results[0])
                            .all(|(a, b)| a.to_bits() == b.to_bits()),
                        "world {world}, len {len}: ranks differ"
                    );
                }
                let inputs: Vec<Vec<f32>> = (0..world).map(|r| values(r, len)).collect();
                for (i, got) in results[0].iter().enumerate() {
                    let want: f64 = inputs.iter().map(|v| f64::from(v[i])).sum();
                    // f32 rounding: relative to the terms' size (sums may cancel).
                    let scale: f64 = inputs.iter().map(|v| f64::from(v[i]).abs()).sum();
                    assert!(
                        (f64::from(*got) - want).abs() <= 1e-6 * scale,
                        "world {world}, len {len}, [{i}]: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn broadcast_gives_everyone_rank_zeros_bytes() {
        let rings = rings(3, Duration::from_secs(10)).await;
        let tasks: Vec<_> = rings
            .into_iter()
            .map(|mut ring| {
                tokio::spawn(async move {
                    let mut bytes = vec![ring.rank() as u8; 10 + ring.rank()];
                    if ring.rank() == 0 {
                        bytes = (0..300_000u32).map(|i| (i % 251) as u8).collect();
                    }
                    ring.broadcast(&mut bytes).await.unwrap();
                    bytes
                })
            })
            .collect();
        let want: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), want);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn strays_are_refused_and_the_ring_still_forms() {
        let l0 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let l1 = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a0, a1) = (l0.local_addr().unwrap(), l1.local_addr().unwrap());
        // Before the ring forms, a stale rank of an old attempt and a wrong secret knock.
        let stray = |h: Handshake| async move {
            let mut s = TcpStream::connect(a1).await.unwrap();
            s.write_all(&h.encode()).await.unwrap();
            let verdict = s.read_u8().await.unwrap();
            let mut reason = String::new();
            let _ = s.read_to_string(&mut reason).await;
            (verdict, reason)
        };
        let ring1 = tokio::spawn(async move {
            Ring::connect(&me(1, 2), &l1, a0, Duration::from_secs(10)).await
        });
        let (v, reason) = stray(Handshake {
            attempt: 1,
            ..me(0, 2)
        })
        .await;
        assert_eq!(v, 0);
        assert!(reason.contains("not job 7 attempt 1"), "{reason}");
        let (v, reason) = stray(Handshake {
            secret: "nope".into(),
            ..me(0, 2)
        })
        .await;
        assert_eq!(v, 0);
        assert_eq!(reason, "wrong secret");
        let ring0 = Ring::connect(&me(0, 2), &l0, a1, Duration::from_secs(10))
            .await
            .unwrap();
        let ring1 = ring1.await.unwrap().unwrap();
        assert_eq!((ring0.rank(), ring1.rank()), (0, 1));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_rank_fails_the_others_fast_instead_of_hanging() {
        let mut rings = rings(3, Duration::from_secs(5)).await;
        drop(rings.pop()); // rank 2 dies: its sockets close.
        let started = std::time::Instant::now();
        let tasks: Vec<_> = rings
            .into_iter()
            .map(|mut ring| {
                tokio::spawn(async move {
                    let mut buf = values(ring.rank(), 100_000);
                    ring.all_reduce_sum(&mut buf).await
                })
            })
            .collect();
        for t in tasks {
            let err = t.await.unwrap().expect_err("a rank is gone");
            assert!(err.to_string().contains("rank"), "{err}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(6),
            "{:?}",
            started.elapsed()
        );
    }
}
