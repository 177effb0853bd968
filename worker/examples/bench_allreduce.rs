//! All-reduce benchmark: WORLD ranks (default 2) of `kiln_worker::collective::Ring` on
//! loopback in one process, sum of f32 buffers of 0.4 MB (W1's gradients), 4.8 MB (W2's) and
//! 64 MB, median of REPS (default 20; 5 for 64 MB) after one warm-up. Prints, like
//! `../shared/bench/peers/bench_torch_ddp.py allreduce`:
//!   kiln allreduce <bytes> <median_ms> <algbw_GBps> <busbw_GBps>
//! busbw = algbw * 2 (world - 1) / world (the NCCL-tests convention).

use std::time::{Duration, Instant};

use kiln_worker::collective::{Collective, Handshake, Ring};
use tokio::net::TcpListener;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let world = env("WORLD", 2);
    let mut listeners = Vec::new();
    for _ in 0..world {
        listeners.push(TcpListener::bind("127.0.0.1:0").await?);
    }
    let addrs: Vec<_> = listeners
        .iter()
        .map(|l| l.local_addr())
        .collect::<Result<_, _>>()?;
    let mut joins = Vec::new();
    for (rank, listener) in listeners.into_iter().enumerate() {
        let me = Handshake {
            secret: "bench".into(),
            job_id: 1,
            attempt: 1,
            rank: rank as u32,
            world: world as u32,
        };
        let next = addrs[(rank + 1) % world];
        joins.push(tokio::spawn(async move {
            Ring::connect(&me, &listener, next, Duration::from_secs(10)).await
        }));
    }
    let mut rings = Vec::new();
    for j in joins {
        rings.push(j.await??);
    }
    for bytes in [400_000usize, 4_800_000, 64_000_000] {
        let reps = if bytes > 10_000_000 {
            env("REPS", 5).min(5)
        } else {
            env("REPS", 20)
        };
        let mut times = Vec::new();
        // Buffers are made outside the timed region, as in the gloo benchmark.
        let mut bufs: Vec<Vec<f32>> = (0..world)
            .map(|r| vec![r as f32 + 0.5; bytes / 4])
            .collect();
        for rep in 0..=reps {
            let started = Instant::now();
            let tasks: Vec<_> = rings
                .drain(..)
                .zip(bufs.drain(..))
                .map(|(mut ring, mut buf)| {
                    tokio::spawn(async move {
                        ring.all_reduce_sum(&mut buf).await.map(|()| (ring, buf))
                    })
                })
                .collect();
            for t in tasks {
                let (ring, buf) = t.await??;
                rings.push(ring);
                bufs.push(buf);
            }
            if rep > 0 {
                times.push(started.elapsed().as_secs_f64());
            }
        }
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let algbw = bytes as f64 / median / 1e9;
        let busbw = algbw * 2.0 * (world as f64 - 1.0) / world as f64;
        println!(
            "kiln allreduce {bytes} {:.2} {algbw:.2} {busbw:.2}",
            median * 1e3
        );
    }
    Ok(())
}
