//! Start a coordinator in a temp dir; a fake worker over a real WebSocket.

use std::path::Path;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use kiln_client::Client;
use kiln_coordinator::{Coordinator, CoordinatorConfig};
use kiln_proto::JobSpec;
use kiln_proto::protocol::{
    AttemptRef, Capabilities, CoordinatorMessage, JobId, JobInfo, JobState, PROTOCOL_VERSION,
    SubmitJob, WorkerMessage,
};
use kiln_proto::spec::DeviceRequest;

pub const ADMIN: &str = "admin-secret-for-tests";
pub const MAX_BODY: usize = 64 * 1024;
pub const MAX_ARTIFACT: usize = 1024 * 1024;
pub const MAX_DATASET: u64 = 1024 * 1024;
pub const MAX_FRAME: usize = 64 * 1024;
const WAIT: Duration = Duration::from_secs(10);

pub async fn start(dir: &Path, heartbeat: Duration) -> Coordinator {
    Coordinator::start(CoordinatorConfig {
        addr: "127.0.0.1:0".parse().expect("literal address"),
        data_dir: dir.to_path_buf(),
        database: kiln_coordinator::testing::database_for(dir)
            .await
            .expect("test database"),
        admin_token: Some(ADMIN.into()),
        worker_token: None,
        heartbeat_interval: heartbeat,
        max_body_bytes: MAX_BODY,
        artifact_max_bytes: MAX_ARTIFACT,
        dataset_max_bytes: MAX_DATASET,
        max_frame_bytes: MAX_FRAME,
        static_dir: None,
    })
    .await
    .expect("coordinator starts")
}

pub fn admin(c: &Coordinator) -> Client {
    Client::new(&c.url(), Some(ADMIN.into())).expect("valid url")
}

/// The names of a job's artifacts, sorted.
pub async fn artifact_names(client: &Client, id: JobId) -> Vec<String> {
    client
        .artifacts(id)
        .await
        .expect("artifacts")
        .into_iter()
        .map(|a| a.name)
        .collect()
}

pub fn spec(name: &str) -> JobSpec {
    JobSpec::from_json_str(&format!(
        r#"{{"name":"{name}","model":{{"kind":"mlp"}},"dataset":{{"kind":"synthetic"}}}}"#
    ))
    .expect("valid spec")
}

pub async fn submit(client: &Client, name: &str) -> JobInfo {
    client
        .submit(&SubmitJob {
            spec: spec(name),
            group: None,
            tags: Vec::new(),
        })
        .await
        .expect("submit")
}

/// Poll until the job is in `state` (or panic after a while, showing the job).
pub async fn wait_state(client: &Client, id: JobId, state: JobState) -> JobInfo {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let job = client.job(id).await.expect("job");
        if job.state == state {
            return job;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "job {id} never became {state:?}: {job:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn caps(devices: Vec<DeviceRequest>) -> Capabilities {
    Capabilities {
        device_names: devices.iter().map(|d| d.to_string()).collect(),
        devices,
        memory_mb: 1024,
        cores: 2,
        kiln_version: "test".into(),
        peer_addr: None,
        browser: false,
        control: false,
    }
}

pub fn hello(id: &str, running: Vec<AttemptRef>) -> WorkerMessage {
    WorkerMessage::Hello {
        protocol_version: PROTOCOL_VERSION,
        worker_id: id.into(),
        name: format!("fake {id}"),
        capabilities: caps(vec![DeviceRequest::Cpu]),
        running,
    }
}

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Open a WebSocket at `path` with a bearer token.
pub async fn connect(c: &Coordinator, path: &str, token: &str) -> Ws {
    let url = format!("{}{path}", c.url().replacen("http://", "ws://", 1));
    let mut req = url.into_client_request().expect("valid ws url");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header value"),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket connects");
    ws
}

pub async fn send_json<T: serde::Serialize>(ws: &mut Ws, msg: &T) {
    let text = serde_json::to_string(msg).expect("serializes");
    ws.send(Message::Text(text.into())).await.expect("send");
}

/// The worker reports its attempt started on the CPU: `total_steps` steps from step 0.
pub async fn start_ok(ws: &mut Ws, attempt: AttemptRef, total_steps: u64) {
    send_json(
        ws,
        &WorkerMessage::Started {
            attempt,
            device: "cpu".into(),
            total_steps,
            start_step: 0,
        },
    )
    .await;
}

/// The worker reports its attempt finished successfully after `steps` steps.
pub async fn finish_ok(ws: &mut Ws, attempt: AttemptRef, steps: u64) {
    let msg = WorkerMessage::Finished {
        attempt,
        outcome: kiln_proto::protocol::AttemptOutcome::Succeeded,
        error: None,
        steps,
        retryable: None,
    };
    send_json(ws, &msg).await;
}

/// What came next on a socket.
#[derive(Debug)]
pub enum Next<T> {
    Msg(T),
    Close(Option<CloseFrame>),
}

/// The next message or close frame, parsed as `T`, within the wait limit. `heartbeat`: send a
/// worker heartbeat at this interval while waiting.
pub async fn next<T: serde::de::DeserializeOwned>(
    ws: &mut Ws,
    heartbeat: Option<Duration>,
) -> Next<T> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let period = heartbeat.unwrap_or(WAIT);
    loop {
        let frame = tokio::select! {
            frame = ws.next() => frame,
            _ = tokio::time::sleep(period), if heartbeat.is_some() => {
                send_json(ws, &WorkerMessage::Heartbeat { running: vec![] }).await;
                continue;
            }
            _ = tokio::time::sleep_until(deadline) => panic!("nothing arrived in time"),
        };
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Next::Msg(serde_json::from_str(&text).expect("a known message"));
            }
            Some(Ok(Message::Close(frame))) => return Next::Close(frame),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return Next::Close(None),
        }
    }
}

/// The next coordinator message (panics on a close).
pub async fn recv(ws: &mut Ws, heartbeat: Option<Duration>) -> CoordinatorMessage {
    match next::<CoordinatorMessage>(ws, heartbeat).await {
        Next::Msg(m) => m,
        Next::Close(frame) => panic!("socket closed: {frame:?}"),
    }
}

/// Hello, and expect Welcome.
pub async fn worker(c: &Coordinator, token: &str, id: &str, running: Vec<AttemptRef>) -> Ws {
    let mut ws = connect(c, "/ws/worker", token).await;
    send_json(&mut ws, &hello(id, running)).await;
    match recv(&mut ws, None).await {
        CoordinatorMessage::Welcome { worker_id, .. } => assert_eq!(worker_id, id),
        other => panic!("expected welcome, got {other:?}"),
    }
    ws
}

/// Expect an Assign (sending heartbeats meanwhile); returns the attempt and resume.
pub async fn expect_assign(ws: &mut Ws, heartbeat: Duration) -> (AttemptRef, Option<String>) {
    match recv(ws, Some(heartbeat)).await {
        CoordinatorMessage::Assign {
            attempt, resume, ..
        } => (attempt, resume),
        other => panic!("expected assign, got {other:?}"),
    }
}
