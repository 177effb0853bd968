//! Relayed ring links: for data-parallel ranks that cannot reach each other directly (workers
//! behind NAT, separate networks), the coordinator pipes the bytes of one ring link between
//! two HTTP connections upgraded to raw streams.
//!
//! Link `r` of an attempt carries rank `r`'s bytes to rank `r + 1` (mod world). Rank `r`
//! opens it as `dial`, rank `r + 1` as `accept`, each with `GET /api/relay/{job}/{attempt}/{r}`
//! and `Upgrade: kiln-ring`; the first to arrive waits for the other (at most
//! [`RELAY_WAIT`]), then the two streams are joined byte for byte. The ranks' own handshake
//! (per-attempt secret, rank, world) runs end to end through the pipe, so the coordinator
//! checks only that the worker's token is valid and that the attempt is current and has that
//! link. Never the `/ws/worker` control socket: megabytes of gradients must not hold up a
//! heartbeat.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::Extension;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::sync::oneshot;
use tracing::{debug, info, warn};

use kiln_proto::protocol::{AttemptRef, JobId};

use crate::auth::{Caller, check_worker_acts_for_job};
use crate::error::ApiError;
use crate::openapi::ApiErrorDoc;
use crate::state::AppState;

/// How long the first side of a link waits for the other.
pub const RELAY_WAIT: Duration = Duration::from_secs(600);

/// The `Upgrade` protocol name of a relayed link.
pub const PROTOCOL: &str = "kiln-ring";

type Stream = TokioIo<hyper::upgrade::Upgraded>;
/// Link `link` of an attempt.
type LinkKey = (AttemptRef, u32);
/// One side waiting: which, and where to hand it the other side's stream.
type Waiting = (Side, oneshot::Sender<Stream>);

/// Which end of a link a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Rank `r`, sending to rank `r + 1`.
    Dial,
    /// Rank `r + 1`, receiving from rank `r`.
    Accept,
}

/// Links waiting for their other side.
#[derive(Debug, Default)]
pub struct Relay {
    waiting: Mutex<HashMap<LinkKey, Waiting>>,
}

impl Relay {
    /// Join `stream` with the other side of its link, or wait for it.
    async fn join(&self, attempt: AttemptRef, link: u32, side: Side, stream: Stream) {
        let key = (attempt, link);
        let mut stream = stream;
        loop {
            // Either hand the stream to a waiting other side, or wait with a fresh slot.
            let step = {
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                match waiting.remove(&key) {
                    Some((other, tx)) if other != side => Err(tx),
                    // Nobody, or the same side again (a retry, which replaces the older one).
                    _ => {
                        let (tx, rx) = oneshot::channel();
                        waiting.insert(key, (side, tx));
                        Ok(rx)
                    }
                }
            };
            match step {
                Ok(rx) => return self.wait(key, side, stream, rx).await,
                Err(tx) => match tx.send(stream) {
                    Ok(()) => return,
                    // The waiting side gave up in between: try again.
                    Err(back) => stream = back,
                },
            }
        }
    }

    async fn wait(
        &self,
        key: LinkKey,
        side: Side,
        mut stream: Stream,
        rx: oneshot::Receiver<Stream>,
    ) {
        let (attempt, link) = key;
        match tokio::time::timeout(RELAY_WAIT, rx).await {
            Ok(Ok(mut other)) => {
                info!(
                    job_id = attempt.job_id,
                    attempt = attempt.attempt,
                    link,
                    "relaying a ring link"
                );
                match tokio::io::copy_bidirectional(&mut stream, &mut other).await {
                    Ok((a, b)) => debug!(link, bytes = a + b, "relayed link closed"),
                    Err(e) => debug!(link, error = %e, "relayed link ended"),
                }
            }
            // Replaced by a newer connection of the same side.
            Ok(Err(_)) => {}
            Err(_) => {
                warn!(
                    job_id = attempt.job_id,
                    link,
                    ?side,
                    "no other side for a relayed link"
                );
                let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
                if waiting
                    .get(&key)
                    .is_some_and(|(s, tx)| *s == side && tx.is_closed())
                {
                    waiting.remove(&key);
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct RelayQuery {
    side: Side,
}

#[utoipa::path(
    get,
    path = "/api/relay/{job_id}/{attempt}/{link}",
    tag = "websocket",
    description = "A relayed ring link of a data-parallel attempt (worker token): link `r` carries rank r's bytes to rank r + 1. Rank r connects with `side=dial`, rank r + 1 with `side=accept`, both with `Upgrade: kiln-ring`; once both are there their streams are joined.",
    params(("job_id" = i64, Path), ("attempt" = u32, Path), ("link" = u32, Path),
        ("side" = String, Query, description = "dial or accept", pattern = "^(dial|accept)$"),
        ("Upgrade" = String, Header, description = "kiln-ring", pattern = "^kiln-ring$")),
    responses((status = 101, description = "Switching to the raw link"),
        (status = 404, body = ApiErrorDoc, description = "No such attempt running, or no such link"),
        (status = 403, body = ApiErrorDoc, description = "A worker token whose worker is not the rank at this end of the link"),
        (status = 400, body = ApiErrorDoc,
            description = "Not an upgrade to kiln-ring, or a malformed path or `side`")),
    security(("bearer" = []))
)]
pub async fn upgrade(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    path: Result<Path<(JobId, u32, u32)>, PathRejection>,
    query: Result<Query<RelayQuery>, QueryRejection>,
    mut req: Request,
) -> Result<Response, ApiError> {
    // axum's own rejections are plain text; every other 4xx of the API is an ApiErrorBody.
    let Path((job_id, attempt, link)) = path.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let wants_ring = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !wants_ring {
        return Err(ApiError::BadRequest(format!(
            "a relayed link needs `Upgrade: {PROTOCOL}`"
        )));
    }
    let attempt = AttemptRef { job_id, attempt };
    let world = state.store.attempt_workers(attempt).await?.len() as u32;
    if !state.store.is_current(attempt).await? || world < 2 || link >= world {
        return Err(ApiError::NotFound(format!(
            "job {job_id} attempt {} has no running link {link} (world {world})",
            attempt.attempt
        )));
    }
    // A worker token's worker must be the rank at this end of this link.
    let caller = caller.map(|Extension(c)| c);
    if let Some(acting) =
        check_worker_acts_for_job(&state, caller.as_ref(), req.headers(), job_id).await?
    {
        let ranks = state.store.attempt_workers(attempt).await?;
        let rank = ranks.iter().position(|w| *w == acting);
        let (end, wanted) = match query.side {
            Side::Dial => ("dials", link as usize),
            Side::Accept => ("accepts", (link as usize + 1) % ranks.len().max(1)),
        };
        if rank != Some(wanted) {
            return Err(ApiError::Forbidden(format!(
                "worker `{acting}` is not rank {wanted} of job {job_id} attempt {}, which {end} \
                 link {link}",
                attempt.attempt
            )));
        }
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    let relay = state.relay.clone();
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                relay
                    .join(attempt, link, query.side, TokioIo::new(upgraded))
                    .await
            }
            Err(e) => warn!(error = %e, "relay upgrade failed"),
        }
    });
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [(header::CONNECTION, "upgrade"), (header::UPGRADE, PROTOCOL)],
    )
        .into_response())
}
