//! The checks behind Kiln's fuzz targets: one function per target, from raw bytes to the
//! parser under test and the properties its output must have. Each must never panic on any
//! input; a panic is a bug (in the parser, or in a property stated here).
//!
//! The fuzz targets (`fuzz/fuzz_targets/*.rs`, nightly, libFuzzer) call these, and so does
//! `shared/proto/tests/fuzz_corpus.rs` (stable, in CI), which includes this file as a module
//! and replays the committed corpora (`fuzz/corpus/<target>/`). So this file uses only
//! kiln-proto and the crates kiln-proto itself depends on (serde, serde_json, toml).

use std::fmt::Debug;
use std::str::FromStr;

use kiln_proto::JobSpec;
use kiln_proto::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, ClientMessage, CloseReason, CoordinatorMessage,
    ImportRun, JobPatch, JobState, LogLine, ServerEvent, SubmitJob, WorkerMessage,
};
use kiln_proto::spec::DeviceRequest;
use kiln_proto::worker_session::{Action, Artifact, Input, JobEvent, SessionConfig, WorkerSession};
use kiln_proto::{artifact, dataset, sweep, token};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The base spec of [`sweep_grid`]: a real example, so axes can hit real fields.
const SWEEP_BASE: &str = include_str!("../../examples/synthetic.toml");

/// `a == a`: false only for values holding a NaN, whose round trips can't compare equal.
#[allow(clippy::eq_op, reason = "the point is reflexivity, which NaN breaks")]
fn reflexive<T: PartialEq>(a: &T) -> bool {
    a == a
}

/// Parse `text` as `T`; if it parses, its JSON must parse back to an equal value.
fn json_round_trip<T>(text: &str) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + Debug,
{
    let value: T = serde_json::from_str(text).ok()?;
    let json = serde_json::to_string(&value).expect("a parsed message serializes to JSON");
    let again: T = serde_json::from_str(&json).unwrap_or_else(|e| {
        panic!("a serialized message does not parse again: {e}\n  json: {json}\n  value: {value:?}")
    });
    if reflexive(&value) {
        assert_eq!(value, again, "round trip through {json}");
    }
    Some(value)
}

/// Target `protocol_worker`: one WebSocket text frame or REST body, tried as every message
/// type the coordinator and workers read from a socket.
pub fn protocol(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    json_round_trip::<WorkerMessage>(text);
    json_round_trip::<CoordinatorMessage>(text);
    json_round_trip::<ClientMessage>(text);
    json_round_trip::<ServerEvent>(text);
    json_round_trip::<CloseReason>(text);
    json_round_trip::<SubmitJob>(text);
    json_round_trip::<ImportRun>(text);
    if let Some(patch) = json_round_trip::<JobPatch>(text)
        && let Ok(normal) = patch.normalized()
    {
        // What is stored is already normal.
        assert_eq!(normal.clone().normalized(), Ok(normal));
    }
}

/// A validated spec's TOML must parse and validate again, to the same spec.
fn toml_round_trip(spec: &JobSpec) {
    let toml = spec.to_toml_string();
    let again = JobSpec::from_toml_str(&toml).unwrap_or_else(|e| {
        panic!("a valid spec's TOML does not load again: {e}\n--- toml:\n{toml}")
    });
    assert_eq!(toml, again.to_toml_string(), "TOML is not a fixed point");
    if reflexive(spec) {
        assert_eq!(spec, &again, "round trip through TOML:\n{toml}");
    }
}

/// Target `spec_toml`: a job spec file (`kiln submit spec.toml`).
pub fn spec_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = JobSpec::from_toml_str(text) {
        toml_round_trip(&spec);
    }
}

/// Target `spec_json`: a job spec as JSON (`POST /api/jobs`, the dashboard).
pub fn spec_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = JobSpec::from_json_str(text) {
        let json = serde_json::to_string(&spec).expect("a spec serializes to JSON");
        let again = JobSpec::from_json_str(&json).unwrap_or_else(|e| {
            panic!("a valid spec's JSON does not load again: {e}\n  json: {json}")
        });
        assert_eq!(spec, again, "round trip through {json}");
        // The coordinator keeps and shows specs as TOML too.
        toml_round_trip(&spec);
    }
}

/// Target `proto_strings`: the small string parsers behind CLI flags, URL path segments and
/// spec fields (dataset references and names, artifact names, durations, tags, scopes).
pub fn strings(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(digest) = dataset::Digest::parse(text) {
        assert_eq!(digest.hex().len(), 64);
        assert_eq!(dataset::Digest::parse(digest.hex()), Ok(digest.clone()));
        assert!(digest.hex().starts_with(digest.short()));
        let _ = digest.reference();
    }
    if let Ok(dataset::DatasetRef::Named(name)) = dataset::DatasetRef::parse(text) {
        assert_eq!(dataset::check_name(&name), Ok(()));
    }
    let from_file = dataset::name_from_file(text);
    assert_eq!(
        dataset::check_name(&from_file),
        Ok(()),
        "name_from_file({text:?}) = {from_file:?}"
    );
    if dataset::check_name(text).is_ok() {
        assert_eq!(artifact::check_name(text), Ok(()));
    }
    if let Some(step) = artifact::checkpoint_step(text) {
        assert_eq!(
            artifact::checkpoint_step(&artifact::checkpoint_name(step)),
            Some(step)
        );
    }
    let _ = token::parse_duration_s(text);
    let _ = kiln_proto::protocol::check_tag(text);
    if let Ok(state) = JobState::from_str(text) {
        assert_eq!(state.as_str(), text);
    }
    if let Ok(scope) = token::TokenScope::from_str(text) {
        assert_eq!(scope.as_str(), text);
    }
    if let Ok(axis) = sweep::Axis::from_str(text) {
        assert!(!axis.key.is_empty() && !axis.values.is_empty());
    }
}

/// Target `sweep_grid`: `kiln sweep --grid` axes, one per line, over a real example spec.
/// Every spec a sweep makes must be valid.
pub fn sweep_grid(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let base = JobSpec::from_toml_str(SWEEP_BASE).expect("the example spec is valid");
    let Ok(axes) = text
        .lines()
        .map(sweep::Axis::from_str)
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    if let Ok(specs) = sweep::expand(&base, &axes) {
        assert!(specs.len() <= sweep::MAX_COMBINATIONS);
        for spec in specs {
            assert_eq!(spec.validate(), Ok(()));
        }
    }
}

fn session_config() -> SessionConfig {
    SessionConfig {
        worker_id: "w".into(),
        name: "fuzz".into(),
        capabilities: Capabilities {
            devices: vec![DeviceRequest::Cpu],
            device_names: vec!["cpu".into()],
            memory_mb: 1024,
            cores: 2,
            kiln_version: "fuzz".into(),
            peer_addr: None,
            browser: false,
            control: false,
        },
        max_backoff_ms: 1000,
        seed: 7,
    }
}

/// Target `worker_session`: the worker's protocol state machine driven by a script, one input
/// per line. A line that starts with `{` is a frame from the coordinator (JSON, as read off
/// the socket; frames that do not parse are dropped, as the worker does); `D` and a close
/// reason (JSON, or nothing) is a disconnect; other letters are the driver's inputs: `c`
/// connected, `x` connect failed, `s` sent, `t` tick, `S` the running job started, `M` a
/// metric, `L` a log line, `K` a checkpoint, `F`/`f` the job finished (succeeded/failed),
/// `E` it failed to start, `R`/`r` the resume download succeeded/failed, `U`/`u` the oldest
/// upload succeeded/failed. Time moves on by 37 ms per line.
pub fn worker_session(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut session = WorkerSession::new(session_config());
    let mut now_ms = 0u64;
    // What the driver knows from the actions it performed.
    let mut started: Option<AttemptRef> = None;
    let mut downloading: Option<AttemptRef> = None;
    let mut uploads: std::collections::VecDeque<u64> = Default::default();
    let mut step = 0u64;
    for line in text.lines().take(256) {
        now_ms += 37;
        let attempt = started.unwrap_or(AttemptRef {
            job_id: 1,
            attempt: 1,
        });
        let job = |event| Input::Job { attempt, event };
        let input = match line.as_bytes().first() {
            Some(b'{') => match serde_json::from_str::<CoordinatorMessage>(line) {
                Ok(msg) => Input::Frame(msg),
                Err(_) => continue,
            },
            Some(b'D') => Input::Disconnected {
                reason: serde_json::from_str::<CloseReason>(&line[1..]).ok(),
            },
            Some(b'c') => Input::Connected,
            Some(b'x') => Input::ConnectFailed,
            Some(b's') => Input::Sent,
            Some(b't') => Input::Tick,
            Some(b'S') => job(JobEvent::Started {
                device: "cpu".into(),
                total_steps: 100,
                start_step: 0,
            }),
            Some(b'M') => {
                step += 1;
                job(JobEvent::Metric(kiln_proto::metric::Metric {
                    step,
                    epoch: 0.0,
                    split: kiln_proto::metric::Split::Train,
                    loss: 1.0,
                    accuracy: None,
                    lr: None,
                    samples_per_sec: None,
                }))
            }
            Some(b'L') => job(JobEvent::Log(LogLine {
                ts_ms: 0,
                text: line[1..].to_string(),
            })),
            Some(b'K') => job(JobEvent::Checkpoint {
                step,
                bytes: vec![1, 2, 3],
            }),
            Some(&b) if b == b'F' || b == b'f' => job(JobEvent::Finished {
                outcome: if b == b'F' {
                    AttemptOutcome::Succeeded
                } else {
                    AttemptOutcome::Failed
                },
                error: (b == b'f').then(|| "boom".into()),
                retryable: None,
                steps: step,
                artifacts: vec![Artifact {
                    name: "model.bpk".into(),
                    bytes: vec![0],
                }],
                ts_ms: 0,
            }),
            Some(b'E') => Input::StartFailed {
                attempt,
                error: "no".into(),
            },
            Some(&b) if b == b'R' || b == b'r' => {
                let attempt = downloading.take().unwrap_or(attempt);
                if b == b'R' {
                    Input::ResumeDownloaded {
                        attempt,
                        bytes: vec![1],
                    }
                } else {
                    Input::ResumeFailed {
                        attempt,
                        error: "gone".into(),
                    }
                }
            }
            Some(&b) if b == b'U' || b == b'u' => {
                let id = uploads.pop_front().unwrap_or(0);
                if b == b'U' {
                    Input::Uploaded { id }
                } else {
                    Input::UploadFailed { id }
                }
            }
            _ => continue,
        };
        session.handle(now_ms, input);
        while let Some(action) = session.poll_action() {
            match action {
                Action::StartJob { attempt, .. } => started = Some(attempt),
                Action::DownloadResume { attempt, .. } => downloading = Some(attempt),
                Action::Upload { id, .. } => uploads.push_back(id),
                _ => {}
            }
        }
        // Whatever the session sends must be a message the coordinator can read back.
        if let Some(msg) = session.poll_transmit() {
            let json = serde_json::to_string(msg).expect("a worker message serializes");
            let again: WorkerMessage = serde_json::from_str(&json)
                .unwrap_or_else(|e| panic!("the coordinator can't read {json}: {e}"));
            if reflexive(msg) {
                assert_eq!(msg, &again);
            }
        }
        let _ = (
            session.poll_timeout(),
            session.running(),
            session.is_connected(),
            session.outbox_len(),
        );
        if session.is_stopped() {
            break;
        }
    }
}
