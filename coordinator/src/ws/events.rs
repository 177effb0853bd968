//! `/ws/events`: live updates for dashboards and CLIs (admin token).
//!
//! Hello → Welcome → every job and worker change, plus metrics and logs of the jobs the client
//! subscribed to. Fan-out is a `tokio::sync::broadcast` channel: a client that falls behind
//! by more than its buffer is dropped (logged), never slowing ingest.

use std::collections::HashSet;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};

use kiln_proto::protocol::{ClientMessage, CloseReason, JobId, PROTOCOL_VERSION, ServerEvent};

use super::{ReadEnd, end_reason, goodbye, next_text, read_hello, send_json};
use crate::state::AppState;

#[utoipa::path(
    get,
    path = "/ws/events",
    tag = "websocket",
    description = "WebSocket of live events (admin token). First frame: ClientMessage::Hello.",
    responses((status = 101, description = "Switching to the events protocol"),
        (status = 400, content_type = "text/plain", body = String,
            description = "Not a WebSocket upgrade (axum's WebSocketUpgrade rejection)"),
        (status = 426, content_type = "text/plain", body = String,
            description = "The connection cannot be upgraded")),
    security(("bearer" = []))
)]
pub async fn upgrade(State(state): State<AppState>, ws: WebSocketUpgrade) -> Response {
    let max = state.config.max_frame_bytes;
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| {
            let (sink, stream) = socket.split();
            serve(state, sink, stream)
        })
}

fn goodbye_json(reason: &CloseReason) -> String {
    serde_json::to_string(&ServerEvent::Goodbye {
        reason: reason.clone(),
    })
    .unwrap_or_default()
}

/// Serve one events client until it ends.
pub async fn serve<S, R, E>(state: AppState, mut sink: S, mut stream: R)
where
    S: Sink<Message> + Unpin + Send,
    R: Stream<Item = Result<Message, E>> + Unpin + Send,
    E: std::error::Error + Send + 'static,
{
    let max_frame = state.config.max_frame_bytes;
    let hello =
        read_hello(&mut stream, max_frame).await.and_then(|text| {
            match serde_json::from_str::<ClientMessage>(&text) {
                Ok(ClientMessage::Hello { .. }) => Ok(()),
                Ok(_) => Err(Some(CloseReason::BadMessage {
                    message: "the first frame must be a hello".into(),
                })),
                Err(e) => Err(Some(CloseReason::BadMessage {
                    message: format!("bad hello: {e}"),
                })),
            }
        });
    if let Err(reason) = hello {
        if let Some(reason) = reason {
            info!(?reason, "refusing an events client");
            goodbye(&mut sink, goodbye_json(&reason), &reason).await;
        }
        return;
    }
    // Subscribe before Welcome, so nothing after the welcome is missed.
    let mut events = state.events.subscribe();
    if !send_json(
        &mut sink,
        &ServerEvent::Welcome {
            protocol_version: PROTOCOL_VERSION,
        },
    )
    .await
    {
        return;
    }
    let mut subscribed: HashSet<JobId> = HashSet::new();
    let mut shutdown = std::pin::pin!(crate::state::shutting_down(state.shutdown.clone()));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(event) => {
                    let wanted = match &event {
                        ServerEvent::Metrics { job_id, .. } | ServerEvent::Logs { job_id, .. } => {
                            subscribed.contains(job_id)
                        }
                        _ => true,
                    };
                    if wanted && !send_json(&mut sink, &event).await {
                        return;
                    }
                }
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "events client fell behind; dropping it");
                    let _ = sink.close().await;
                    return;
                }
                Err(RecvError::Closed) => return,
            },
            frame = next_text(&mut stream, || {}) => match frame {
                Ok(text) => match serde_json::from_str::<ClientMessage>(&text) {
                    Ok(ClientMessage::Subscribe { job_id }) => {
                        subscribed.insert(job_id);
                    }
                    Ok(ClientMessage::Unsubscribe { job_id }) => {
                        subscribed.remove(&job_id);
                    }
                    Ok(ClientMessage::Hello { .. }) => {
                        let reason = CloseReason::BadMessage {
                            message: "hello may only be the first frame".into(),
                        };
                        goodbye(&mut sink, goodbye_json(&reason), &reason).await;
                        return;
                    }
                    Err(e) => {
                        let reason = CloseReason::BadMessage {
                            message: format!("cannot parse the message: {e}"),
                        };
                        goodbye(&mut sink, goodbye_json(&reason), &reason).await;
                        return;
                    }
                },
                Err(end) => {
                    if let ReadEnd::Error(e) = &end {
                        debug!(error = %e, "events socket error");
                    }
                    if let Some(reason) = end_reason(end, max_frame) {
                        goodbye(&mut sink, goodbye_json(&reason), &reason).await;
                    }
                    return;
                }
            },
            _ = &mut shutdown => {
                let reason = CloseReason::ShuttingDown;
                goodbye(&mut sink, goodbye_json(&reason), &reason).await;
                return;
            }
        }
    }
}
