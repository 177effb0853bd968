//! WebSocket endpoints: `/ws/worker` (workers) and `/ws/events` (dashboards, CLIs).
//!
//! Handlers are generic over a `Sink` of frames and a `Stream` of frames, so tests can drive
//! them with channels; the routes split a real socket and pass the halves.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

use kiln_proto::protocol::{CloseReason, PROTOCOL_VERSION};

pub mod events;
pub mod worker;

/// How long a peer has to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

/// A close frame's reason must fit 123 bytes.
const MAX_CLOSE_REASON: usize = 123;

/// The close frame for `reason`: its code, and its JSON as text (shortened to fit a control
/// frame; the Goodbye message before it carries the full text).
/// Send one message as a JSON text frame; `false` when the socket is gone.
pub async fn send_json<S, T>(sink: &mut S, msg: &T) -> bool
where
    S: Sink<Message> + Unpin,
    T: serde::Serialize,
{
    match serde_json::to_string(msg) {
        Ok(text) => sink.send(Message::Text(text.into())).await.is_ok(),
        Err(_) => false,
    }
}

pub fn close_frame(reason: &CloseReason) -> Message {
    let mut text = serde_json::to_string(reason).unwrap_or_default();
    if text.len() > MAX_CLOSE_REASON
        && let CloseReason::BadMessage { message } = reason
    {
        let mut short: String = message.clone();
        while !short.is_empty() {
            short.pop();
            let candidate = serde_json::to_string(&CloseReason::BadMessage {
                message: format!("{short}…"),
            })
            .unwrap_or_default();
            if candidate.len() <= MAX_CLOSE_REASON {
                text = candidate;
                break;
            }
        }
    }
    if text.len() > MAX_CLOSE_REASON {
        text.clear();
    }
    Message::Close(Some(CloseFrame {
        code: reason.code(),
        reason: text.into(),
    }))
}

/// Send a goodbye message (already serialized), then the close frame. Errors are ignored:
/// the peer may already be gone.
pub async fn goodbye<S>(sink: &mut S, goodbye_json: String, reason: &CloseReason)
where
    S: Sink<Message> + Unpin,
{
    let _ = sink.send(Message::Text(goodbye_json.into())).await;
    let _ = sink.send(close_frame(reason)).await;
    let _ = sink.flush().await;
}

/// Whether a read error is tungstenite refusing a frame over the size limit.
pub fn is_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(WsError::Capacity(_)) = e.downcast_ref::<WsError>() {
            return true;
        }
        current = e.source();
    }
    false
}

/// What ended a read.
pub enum ReadEnd {
    /// The peer closed or the stream ended.
    Closed,
    /// A frame was too large.
    TooLarge,
    /// A binary frame that is not UTF-8 (the protocol is JSON, in text or binary frames).
    NotUtf8(std::str::Utf8Error),
    /// Any other transport error (logged by the caller).
    Error(String),
}

/// The next message's text; pings and pongs are skipped (but reported through `on_any`).
/// A binary frame counts as text when it holds UTF-8 (some clients send JSON that way), so
/// both kinds of frame are parsed alike.
pub async fn next_text<R, E>(stream: &mut R, mut on_any: impl FnMut()) -> Result<String, ReadEnd>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    loop {
        match stream.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(ReadEnd::Closed),
            Some(Err(e)) if is_too_large(&e) => return Err(ReadEnd::TooLarge),
            Some(Err(e)) => return Err(ReadEnd::Error(e.to_string())),
            Some(Ok(Message::Text(text))) => {
                on_any();
                return Ok(text.as_str().to_owned());
            }
            Some(Ok(Message::Binary(bytes))) => {
                on_any();
                return match std::str::from_utf8(&bytes) {
                    Ok(text) => Ok(text.to_owned()),
                    Err(e) => Err(ReadEnd::NotUtf8(e)),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => on_any(),
        }
    }
}

/// Check that a first frame is a hello of our protocol version, before parsing it fully (a
/// hello of another version may not parse).
pub fn check_hello(text: &str) -> Result<(), CloseReason> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| CloseReason::BadMessage {
            message: format!("the first frame must be a JSON hello: {e}"),
        })?;
    if value.get("type").and_then(|t| t.as_str()) != Some("hello") {
        return Err(CloseReason::BadMessage {
            message: "the first frame must be a message of type `hello`".into(),
        });
    }
    match value.get("protocol_version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => Ok(()),
        Some(v) => Err(CloseReason::ProtocolVersion {
            expected: PROTOCOL_VERSION,
            got: u32::try_from(v).unwrap_or(u32::MAX),
        }),
        None => Err(CloseReason::BadMessage {
            message: "the hello has no numeric `protocol_version`".into(),
        }),
    }
}

/// The reason for a read that ended; `None` when there is nobody left to tell.
pub fn end_reason(end: ReadEnd, max_frame_bytes: usize) -> Option<CloseReason> {
    match end {
        ReadEnd::Closed | ReadEnd::Error(_) => None,
        ReadEnd::TooLarge => Some(CloseReason::FrameTooLarge {
            max_bytes: max_frame_bytes as u64,
        }),
        ReadEnd::NotUtf8(e) => Some(CloseReason::BadMessage {
            message: format!("a binary frame must hold UTF-8 JSON: {e}"),
        }),
    }
}

/// The first frame, within [`HELLO_TIMEOUT`], checked by [`check_hello`].
pub async fn read_hello<R, E>(
    stream: &mut R,
    max_frame_bytes: usize,
) -> Result<String, Option<CloseReason>>
where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::error::Error + 'static,
{
    let text = match tokio::time::timeout(HELLO_TIMEOUT, next_text(stream, || {})).await {
        Err(_) => {
            return Err(Some(CloseReason::BadMessage {
                message: format!("no hello within {} s", HELLO_TIMEOUT.as_secs()),
            }));
        }
        Ok(Err(end)) => return Err(end_reason(end, max_frame_bytes)),
        Ok(Ok(text)) => text,
    };
    check_hello(&text)?;
    Ok(text)
}

#[cfg(test)]
mod tests;
