//! The worker's protocol without sockets: each test feeds inputs at chosen times and checks the
//! actions and the messages that would go on the wire.

use super::*;
use crate::metric::Split;
use crate::protocol::{ControlAction, LrChange};
use crate::spec::DeviceRequest;

const A: AttemptRef = AttemptRef {
    job_id: 1,
    attempt: 1,
};
const B: AttemptRef = AttemptRef {
    job_id: 2,
    attempt: 1,
};
const HB: u64 = 500;

fn spec() -> JobSpec {
    JobSpec::from_json_str(r#"{"name":"t","model":{"kind":"mlp"},"dataset":{"kind":"synthetic"}}"#)
        .expect("a valid spec")
}

fn capabilities() -> Capabilities {
    Capabilities {
        devices: vec![DeviceRequest::Cpu],
        device_names: vec!["cpu".into()],
        memory_mb: 1024,
        cores: 2,
        kiln_version: "test".into(),
        peer_addr: None,
        browser: false,
        control: false,
    }
}

fn metric(step: u64) -> Metric {
    Metric {
        step,
        epoch: 0.0,
        split: Split::Train,
        loss: 1.0 / (step as f64 + 1.0),
        accuracy: None,
        lr: None,
        samples_per_sec: None,
    }
}

fn assign(attempt: AttemptRef, resume: Option<&str>) -> Input {
    Input::Frame(CoordinatorMessage::Assign {
        attempt,
        spec: spec(),
        resume: resume.map(str::to_string),
        group: None,
        paused: false,
        lr_changes: Vec::new(),
    })
}

fn welcome(heartbeat_interval_ms: u64) -> Input {
    Input::Frame(CoordinatorMessage::Welcome {
        protocol_version: PROTOCOL_VERSION,
        worker_id: "w".into(),
        heartbeat_interval_ms,
    })
}

fn job(attempt: AttemptRef, event: JobEvent) -> Input {
    Input::Job { attempt, event }
}

fn finished(outcome: AttemptOutcome, error: Option<&str>, artifacts: Vec<Artifact>) -> JobEvent {
    JobEvent::Finished {
        outcome,
        // A failure of the training itself (bad data, divergence): another attempt won't help.
        retryable: error.map(|_| false),
        error: error.map(str::to_string),
        steps: 7,
        artifacts,
        ts_ms: 1234,
    }
}

/// A session and a clock.
struct Harness {
    s: WorkerSession,
    now: u64,
}

impl Harness {
    fn new() -> Harness {
        let mut h = Harness {
            s: WorkerSession::new(SessionConfig {
                worker_id: "w".into(),
                name: "worker w".into(),
                capabilities: capabilities(),
                max_backoff_ms: 1000,
                seed: 42,
            }),
            now: 0,
        };
        assert_eq!(
            h.actions(),
            vec![Action::Connect],
            "a new worker dials first"
        );
        h
    }

    fn input(&mut self, input: Input) {
        self.s.handle(self.now, input);
    }

    fn at(&mut self, now: u64, input: Input) {
        assert!(now >= self.now, "time goes forward");
        self.now = now;
        self.input(input);
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.s.poll_action()).collect()
    }

    /// Writes everything there is to write.
    fn sent(&mut self) -> Vec<WorkerMessage> {
        let mut out = Vec::new();
        while let Some(msg) = self.s.poll_transmit() {
            out.push(msg.clone());
            self.input(Input::Sent);
        }
        out
    }

    /// Connected and welcomed; returns the hello.
    fn connect(&mut self) -> WorkerMessage {
        self.input(Input::Connected);
        let sent = self.sent();
        assert_eq!(sent.len(), 1, "only the hello before the welcome: {sent:?}");
        self.input(welcome(HB));
        sent.into_iter().next().expect("a hello")
    }

    /// The messages after the welcome, without heartbeats.
    fn sent_no_heartbeats(&mut self) -> Vec<WorkerMessage> {
        self.sent()
            .into_iter()
            .filter(|m| !matches!(m, WorkerMessage::Heartbeat { .. }))
            .collect()
    }

    /// Drops the socket and dials again once the backoff is over.
    fn reconnect(&mut self) -> WorkerMessage {
        self.input(Input::Disconnected { reason: None });
        let until = self.s.poll_timeout().expect("a reconnect deadline");
        self.at(until, Input::Tick);
        assert_eq!(self.actions(), vec![Action::Connect]);
        self.connect()
    }

    /// Connected, then `A` assigned and started.
    fn running_a() -> Harness {
        let mut h = Harness::new();
        h.connect();
        h.sent();
        h.input(assign(A, None));
        let actions = h.actions();
        assert!(
            matches!(
                &actions[..],
                [Action::StartJob {
                    attempt: A,
                    resume: None,
                    ..
                }]
            ),
            "{actions:?}"
        );
        h
    }
}

fn heartbeat(running: Vec<AttemptRef>) -> WorkerMessage {
    WorkerMessage::Heartbeat { running }
}

#[test]
fn hello_carries_the_capabilities_and_waits_for_nothing_else() {
    let mut h = Harness::new();
    // Nothing is written before a socket exists.
    assert_eq!(h.s.poll_transmit(), None);
    h.input(Input::Connected);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Hello {
            protocol_version: PROTOCOL_VERSION,
            worker_id: "w".into(),
            name: "worker w".into(),
            capabilities: capabilities(),
            running: vec![],
        }]
    );
    assert!(!h.s.is_connected());
    // Before the welcome, an assignment is ignored and nothing else goes out.
    h.input(assign(A, None));
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.sent(), vec![]);
    h.input(welcome(HB));
    assert!(h.s.is_connected());
    assert_eq!(
        h.sent(),
        vec![heartbeat(vec![])],
        "a heartbeat right after the welcome"
    );
}

#[test]
fn heartbeats_follow_the_welcomes_interval() {
    let mut h = Harness::new();
    h.connect();
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
    // The flush timer wakes the driver every 100 ms; no heartbeat before the interval.
    assert_eq!(h.s.poll_timeout(), Some(FLUSH_EVERY_MS));
    for t in [100, 200, 300, 400, 499] {
        h.at(t, Input::Tick);
        assert_eq!(h.sent(), vec![], "at {t} ms");
    }
    h.at(500, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
    h.at(999, Input::Tick);
    assert_eq!(h.sent(), vec![]);
    h.at(1000, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
    // A driver that fell far behind gets one heartbeat, not a burst.
    h.at(5000, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
    h.at(5400, Input::Tick);
    assert_eq!(h.sent(), vec![]);
}

#[test]
fn a_tiny_heartbeat_interval_is_raised_to_the_minimum() {
    let mut h = Harness::new();
    h.input(Input::Connected);
    h.sent();
    h.input(welcome(0));
    h.sent();
    assert_eq!(h.s.poll_timeout(), Some(MIN_HEARTBEAT_MS));
    h.at(5, Input::Tick);
    assert_eq!(h.sent(), vec![]);
    h.at(MIN_HEARTBEAT_MS, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
}

#[test]
fn a_reconnect_re_attaches_the_running_attempt() {
    let mut h = Harness::running_a();
    assert_eq!(h.s.running(), Some(A));
    h.at(500, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![A])]);
    let hello = h.reconnect();
    let WorkerMessage::Hello { running, .. } = hello else {
        panic!("not a hello: {hello:?}");
    };
    assert_eq!(running, vec![A]);
    // The coordinator may re-send the assignment: the job is not started twice.
    h.input(assign(A, None));
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.sent(), vec![heartbeat(vec![A])]);
}

#[test]
fn the_outbox_keeps_messages_across_a_disconnect() {
    let mut h = Harness::running_a();
    let line = |text: &str| LogLine {
        ts_ms: 1,
        text: text.into(),
    };
    h.input(Input::Disconnected { reason: None });
    h.input(job(A, JobEvent::Log(line("one"))));
    h.input(job(A, JobEvent::Metric(metric(1))));
    h.input(job(A, JobEvent::Log(line("two"))));
    assert_eq!(h.s.poll_transmit(), None, "no socket, nothing to write");
    assert_eq!(h.s.outbox_len(), 2);
    // A write that fails keeps its message first in line.
    let until = h.s.poll_timeout().expect("a reconnect deadline");
    h.at(until, Input::Tick);
    assert_eq!(h.actions(), vec![Action::Connect]);
    h.connect();
    assert!(matches!(
        h.s.poll_transmit(),
        Some(WorkerMessage::Logs { .. })
    ));
    h.input(Input::Disconnected { reason: None });
    h.reconnect();
    assert_eq!(
        h.sent(),
        vec![
            WorkerMessage::Logs {
                attempt: A,
                lines: vec![line("one")]
            },
            WorkerMessage::Logs {
                attempt: A,
                lines: vec![line("two")]
            },
            // Metrics held while down go out in one batch at the first flush.
            WorkerMessage::Metrics {
                attempt: A,
                points: vec![metric(1)]
            },
            // One heartbeat per welcome.
            heartbeat(vec![A]),
            heartbeat(vec![A]),
        ]
    );
}

#[test]
fn metrics_are_batched_and_flushed_every_100_ms() {
    let mut h = Harness::running_a();
    h.sent();
    h.at(10, job(A, JobEvent::Metric(metric(1))));
    h.at(20, job(A, JobEvent::Metric(metric(2))));
    h.at(99, Input::Tick);
    assert_eq!(h.sent(), vec![]);
    h.at(100, Input::Tick);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Metrics {
            attempt: A,
            points: vec![metric(1), metric(2)]
        }]
    );
    h.at(200, Input::Tick);
    assert_eq!(h.sent(), vec![], "no empty batches");
}

#[test]
fn metrics_up_to_a_checkpoint_go_out_before_its_notice() {
    let mut h = Harness::running_a();
    h.sent();
    h.at(10, job(A, JobEvent::Metric(metric(1))));
    h.at(
        20,
        job(
            A,
            JobEvent::Checkpoint {
                step: 1,
                bytes: vec![7; 3],
            },
        ),
    );
    h.at(30, job(A, JobEvent::Metric(metric(2))));
    let name = checkpoint_name(1);
    let actions = h.actions();
    let [
        Action::Upload {
            id,
            attempt: A,
            artifacts,
        },
    ] = &actions[..]
    else {
        panic!("one upload: {actions:?}")
    };
    assert_eq!(
        artifacts,
        &vec![Artifact {
            name: name.clone(),
            bytes: vec![7; 3]
        }]
    );
    // The metrics before the checkpoint are queued at once, before the 100 ms flush.
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Metrics {
            attempt: A,
            points: vec![metric(1)]
        }]
    );
    // The notice waits for the upload.
    h.at(100, Input::Tick);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Metrics {
            attempt: A,
            points: vec![metric(2)]
        }]
    );
    h.at(150, Input::Uploaded { id: *id });
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Checkpoint {
            attempt: A,
            step: 1,
            artifact: name
        }]
    );
}

#[test]
fn a_checkpoint_that_was_not_stored_is_not_announced() {
    let mut h = Harness::running_a();
    h.sent();
    h.input(job(
        A,
        JobEvent::Checkpoint {
            step: 5,
            bytes: vec![1],
        },
    ));
    let Some(Action::Upload { id, .. }) = h.s.poll_action() else {
        panic!("an upload")
    };
    h.input(Input::UploadFailed { id });
    assert_eq!(h.sent(), vec![]);
}

#[test]
fn notices_follow_the_order_of_their_uploads() {
    let mut h = Harness::running_a();
    h.sent();
    for step in [1, 2] {
        h.input(job(
            A,
            JobEvent::Checkpoint {
                step,
                bytes: vec![],
            },
        ));
    }
    let ids: Vec<u64> = h
        .actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Upload { id, .. } => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    h.input(Input::Uploaded { id: ids[1] });
    assert_eq!(h.sent(), vec![], "the second waits for the first");
    h.input(Input::Uploaded { id: ids[0] });
    let steps: Vec<u64> = h
        .sent()
        .into_iter()
        .map(|m| match m {
            WorkerMessage::Checkpoint { step, .. } => step,
            other => panic!("not a checkpoint notice: {other:?}"),
        })
        .collect();
    assert_eq!(steps, vec![1, 2]);
}

#[test]
fn an_assignment_while_busy_is_refused_after_a_heartbeat() {
    let mut h = Harness::running_a();
    h.sent();
    h.input(assign(B, None));
    let actions = h.actions();
    assert!(
        matches!(&actions[..], [Action::Warn(_)]),
        "no job started: {actions:?}"
    );
    assert_eq!(
        h.sent(),
        vec![
            heartbeat(vec![A]),
            WorkerMessage::Finished {
                attempt: B,
                outcome: AttemptOutcome::Failed,
                error: Some("worker is busy with another job".into()),
                steps: 0,
                retryable: Some(true),
            },
        ]
    );
    assert_eq!(h.s.running(), Some(A));
}

#[test]
fn cancel_stops_the_running_attempt_and_only_its_job() {
    let mut h = Harness::running_a();
    h.input(Input::Frame(CoordinatorMessage::Cancel { attempt: B }));
    assert_eq!(h.actions(), vec![], "another job's cancel");
    h.input(Input::Frame(CoordinatorMessage::Cancel { attempt: A }));
    assert_eq!(h.actions(), vec![Action::CancelJob { attempt: A }]);
    // The job still reports its own end; the slot stays taken until then.
    assert_eq!(h.s.running(), Some(A));
}

#[test]
fn cancel_of_a_stale_attempt_stops_it_after_a_reconnect() {
    // The worker was cut off long enough for the coordinator to give up on A; on reconnect it
    // still runs A and the coordinator cancels it.
    let mut h = Harness::running_a();
    h.reconnect();
    h.sent();
    h.input(Input::Frame(CoordinatorMessage::Cancel { attempt: A }));
    assert_eq!(h.actions(), vec![Action::CancelJob { attempt: A }]);
    // A cancel for an attempt that is no longer here does nothing.
    h.input(job(A, finished(AttemptOutcome::Cancelled, None, vec![])));
    let Some(Action::Upload { id, .. }) = h.s.poll_action() else {
        panic!("an upload")
    };
    h.input(Input::Uploaded { id });
    assert_eq!(h.s.running(), None);
    h.input(Input::Frame(CoordinatorMessage::Cancel { attempt: A }));
    assert_eq!(h.actions(), vec![]);
}

#[test]
fn the_slot_frees_only_when_the_finish_notice_is_queued() {
    let mut h = Harness::running_a();
    h.sent();
    h.at(10, job(A, JobEvent::Metric(metric(3))));
    let model = Artifact {
        name: "model.bpk".into(),
        bytes: vec![1, 2],
    };
    h.at(
        20,
        job(
            A,
            finished(AttemptOutcome::Failed, Some("boom"), vec![model.clone()]),
        ),
    );
    let actions = h.actions();
    let [Action::Upload { id, artifacts, .. }] = &actions[..] else {
        panic!("one upload: {actions:?}")
    };
    assert_eq!(artifacts, &vec![model]);
    assert_eq!(
        h.sent(),
        vec![
            WorkerMessage::Metrics {
                attempt: A,
                points: vec![metric(3)]
            },
            WorkerMessage::Logs {
                attempt: A,
                lines: vec![LogLine {
                    ts_ms: 1234,
                    text: "error: boom".into()
                }]
            },
        ]
    );
    // Still busy while the model uploads: a new assignment is refused.
    assert_eq!(h.s.running(), Some(A));
    h.input(assign(B, None));
    assert!(
        !h.actions()
            .iter()
            .any(|a| matches!(a, Action::StartJob { .. }))
    );
    h.sent();
    h.input(Input::UploadFailed { id: *id });
    assert_eq!(h.s.running(), None);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("boom".into()),
            steps: 7,
            retryable: Some(false),
        }],
        "a finish notice goes out even when its upload failed"
    );
    h.at(500, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![])]);
    h.input(assign(B, None));
    let actions = h.actions();
    assert!(
        matches!(&actions[..], [Action::StartJob { attempt: B, .. }]),
        "{actions:?}"
    );
}

#[test]
fn the_resume_checkpoint_downloads_while_heartbeats_go_on() {
    let mut h = Harness::new();
    h.connect();
    h.sent();
    h.input(assign(A, Some("checkpoint-10.ckpt")));
    assert_eq!(
        h.actions(),
        vec![Action::DownloadResume {
            attempt: A,
            artifact: "checkpoint-10.ckpt".into()
        }]
    );
    // The socket keeps going and says the attempt is taken.
    h.at(500, Input::Tick);
    assert_eq!(h.sent(), vec![heartbeat(vec![A])]);
    h.input(assign(B, None));
    assert!(
        !h.actions()
            .iter()
            .any(|a| matches!(a, Action::StartJob { .. }))
    );
    h.sent();
    // A reconnect meanwhile re-attaches it.
    let WorkerMessage::Hello { running, .. } = h.reconnect() else {
        panic!("a hello")
    };
    assert_eq!(running, vec![A]);
    h.input(Input::ResumeDownloaded {
        attempt: A,
        bytes: vec![9; 4],
    });
    assert_eq!(
        h.actions(),
        vec![Action::StartJob {
            attempt: A,
            spec: spec(),
            resume: Some(vec![9; 4]),
            group: None,
            lr_changes: Vec::new(),
            controls: Vec::new(),
        }]
    );
}

#[test]
fn a_failed_resume_download_fails_the_attempt_and_frees_the_slot() {
    let mut h = Harness::new();
    h.connect();
    h.sent();
    h.input(assign(A, Some("checkpoint-10.ckpt")));
    h.actions();
    h.input(Input::ResumeFailed {
        attempt: A,
        error: "404".into(),
    });
    assert_eq!(h.actions(), vec![]);
    assert_eq!(h.s.running(), None);
    assert_eq!(
        h.sent_no_heartbeats(),
        vec![WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("cannot download checkpoint checkpoint-10.ckpt: 404".into()),
            steps: 0,
            retryable: Some(true),
        }]
    );
}

#[test]
fn a_cancel_during_the_download_ends_the_attempt_without_starting_it() {
    let mut h = Harness::new();
    h.connect();
    h.sent();
    h.input(assign(A, Some("checkpoint-10.ckpt")));
    h.actions();
    h.input(Input::Frame(CoordinatorMessage::Cancel { attempt: A }));
    assert_eq!(h.actions(), vec![Action::AbortDownload { attempt: A }]);
    assert_eq!(h.s.running(), None);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Cancelled,
            error: None,
            steps: 0,
            retryable: None,
        }]
    );
    // A download that completes anyway starts nothing.
    h.input(Input::ResumeDownloaded {
        attempt: A,
        bytes: vec![],
    });
    assert_eq!(h.actions(), vec![]);
}

#[test]
fn a_job_that_cannot_start_fails_and_frees_the_slot() {
    let mut h = Harness::running_a();
    h.sent();
    h.input(Input::StartFailed {
        attempt: A,
        error: "no thread".into(),
    });
    assert_eq!(h.s.running(), None);
    assert_eq!(
        h.sent(),
        vec![WorkerMessage::Finished {
            attempt: A,
            outcome: AttemptOutcome::Failed,
            error: Some("no thread".into()),
            steps: 0,
            retryable: Some(true),
        }]
    );
}

#[test]
fn a_version_mismatch_or_a_takeover_stops_the_worker() {
    for (reason, fatal) in [
        (
            CloseReason::ProtocolVersion {
                expected: 2,
                got: 1,
            },
            Fatal::ProtocolVersion {
                expected: 2,
                got: 1,
            },
        ),
        (
            CloseReason::Superseded,
            Fatal::Superseded("w (Superseded)".into()),
        ),
    ] {
        // As a goodbye on an open socket.
        let mut h = Harness::new();
        h.connect();
        h.input(Input::Frame(CoordinatorMessage::Goodbye {
            reason: reason.clone(),
        }));
        assert_eq!(h.actions(), vec![Action::Fatal(fatal.clone())]);
        assert!(h.s.is_stopped());
        // Nothing happens any more: no reconnect.
        h.input(Input::Disconnected { reason: None });
        h.at(60_000, Input::Tick);
        assert_eq!(h.actions(), vec![]);
        assert_eq!(h.s.poll_timeout(), None);

        // As the close frame that refuses a hello.
        let mut h = Harness::new();
        h.input(Input::Connected);
        h.sent();
        h.input(Input::Disconnected {
            reason: Some(reason),
        });
        assert_eq!(h.actions(), vec![Action::Fatal(fatal)]);
    }
}

#[test]
fn a_shutting_down_coordinator_is_reconnected_to() {
    let mut h = Harness::new();
    h.connect();
    h.input(Input::Frame(CoordinatorMessage::Goodbye {
        reason: CloseReason::ShuttingDown,
    }));
    assert_eq!(h.actions(), vec![]);
    h.input(Input::Disconnected {
        reason: Some(CloseReason::ShuttingDown),
    });
    assert!(!h.s.is_stopped());
    let until = h.s.poll_timeout().expect("a reconnect deadline");
    h.at(until, Input::Tick);
    assert_eq!(h.actions(), vec![Action::Connect]);
}

#[test]
fn the_backoff_grows_to_its_cap_and_a_welcome_resets_it() {
    let mut h = Harness::new();
    let mut waits = Vec::new();
    for _ in 0..6 {
        h.input(Input::ConnectFailed);
        let until = h.s.poll_timeout().expect("a reconnect deadline");
        waits.push(until - h.now);
        h.at(until - 1, Input::Tick);
        assert_eq!(h.actions(), vec![], "not before the deadline");
        h.at(until, Input::Tick);
        assert_eq!(h.actions(), vec![Action::Connect]);
    }
    // 200, 400, 800, then the cap of 1000; each plus up to 100 % jitter.
    for (wait, base) in waits.iter().zip([200, 400, 800, 1000, 1000, 1000]) {
        assert!(
            (base..2 * base).contains(wait),
            "{wait} ms for a base of {base}: {waits:?}"
        );
    }
    // A failed handshake does not reset it.
    h.input(Input::Connected);
    h.sent();
    h.input(Input::Disconnected { reason: None });
    let wait = h.s.poll_timeout().expect("deadline") - h.now;
    assert!((1000..2000).contains(&wait), "{wait}");
    h.at(h.now + wait, Input::Tick);
    h.actions();
    // A welcomed connection does.
    h.connect();
    h.input(Input::Disconnected { reason: None });
    let wait = h.s.poll_timeout().expect("deadline") - h.now;
    assert!((200..400).contains(&wait), "{wait}");
}

#[test]
fn a_ranks_group_reaches_the_job_also_after_the_resume_download() {
    let group = Group {
        rank: 1,
        world: 2,
        peers: vec!["127.0.0.1:1".into(), "127.0.0.1:2".into()],
        workers: vec!["a".into(), "b".into()],
        secret: "s".into(),
    };
    let ranked = |attempt, resume: Option<&str>| {
        Input::Frame(CoordinatorMessage::Assign {
            attempt,
            spec: spec(),
            resume: resume.map(str::to_string),
            group: Some(group.clone()),
            paused: false,
            lr_changes: Vec::new(),
        })
    };
    let mut h = Harness::new();
    h.connect();
    h.sent();
    h.input(ranked(A, None));
    let actions = h.actions();
    assert!(
        matches!(&actions[..], [Action::StartJob { group: Some(g), .. }] if *g == group),
        "{actions:?}"
    );
    let mut h = Harness::new();
    h.connect();
    h.sent();
    h.input(ranked(B, Some("checkpoint-10.ckpt")));
    h.actions();
    h.input(Input::ResumeDownloaded {
        attempt: B,
        bytes: vec![1],
    });
    let actions = h.actions();
    assert!(
        matches!(&actions[..], [Action::StartJob { attempt: B, group: Some(g), .. }] if *g == group),
        "{actions:?}"
    );
}

#[test]
fn controls_reach_the_running_job_and_only_its_attempt() {
    let mut h = Harness::running_a();
    let control = |attempt, control| Input::Frame(CoordinatorMessage::Control { attempt, control });
    h.input(control(A, ControlAction::Pause));
    h.input(control(B, ControlAction::Checkpoint));
    assert_eq!(
        h.actions(),
        vec![Action::ControlJob {
            attempt: A,
            control: ControlAction::Pause
        }],
        "a control for another attempt is not this job's"
    );
    // The answer goes out after the metrics up to its step, without waiting for a flush.
    h.input(job(A, JobEvent::Metric(metric(10))));
    h.input(job(
        A,
        JobEvent::Controlled {
            step: 10,
            control: ControlAction::Pause,
        },
    ));
    let sent = h.sent_no_heartbeats();
    assert!(
        matches!(
            &sent[..],
            [
                WorkerMessage::Metrics { points, .. },
                WorkerMessage::Controlled {
                    step: 10,
                    control: ControlAction::Pause,
                    ..
                }
            ] if points.len() == 1
        ),
        "{sent:?}"
    );
}

#[test]
fn a_paused_assignment_and_controls_during_the_download_start_with_the_job() {
    let mut h = Harness::new();
    h.connect();
    h.sent();
    let changes = vec![LrChange { step: 4, lr: 0.5 }];
    h.input(Input::Frame(CoordinatorMessage::Assign {
        attempt: A,
        spec: spec(),
        resume: Some("checkpoint-10.ckpt".into()),
        group: None,
        paused: true,
        lr_changes: changes.clone(),
    }));
    assert!(matches!(&h.actions()[..], [Action::DownloadResume { .. }]));
    for c in [ControlAction::Resume, ControlAction::SetLr { lr: 0.1 }] {
        h.input(Input::Frame(CoordinatorMessage::Control {
            attempt: A,
            control: c,
        }));
    }
    assert_eq!(h.actions(), vec![], "nothing runs yet to control");
    h.input(Input::ResumeDownloaded {
        attempt: A,
        bytes: vec![1],
    });
    assert_eq!(
        h.actions(),
        vec![Action::StartJob {
            attempt: A,
            spec: spec(),
            resume: Some(vec![1]),
            group: None,
            lr_changes: changes,
            controls: vec![
                ControlAction::Pause,
                ControlAction::Resume,
                ControlAction::SetLr { lr: 0.1 }
            ],
        }]
    );
}

/// A checkpoint asked for is reported done after its notice, once it is stored; never when
/// its upload fails. A pause waiting behind a failed upload still goes out.
#[test]
fn a_checkpoint_asked_for_is_reported_after_it_is_stored() {
    for stored in [true, false] {
        let mut h = Harness::running_a();
        h.input(job(
            A,
            JobEvent::Checkpoint {
                step: 7,
                bytes: vec![7],
            },
        ));
        let checkpoint = ControlAction::Checkpoint;
        for control in [checkpoint, ControlAction::Pause] {
            h.input(job(A, JobEvent::Controlled { step: 7, control }));
        }
        let Some(Action::Upload { id, .. }) = h.s.poll_action() else {
            panic!("expected the checkpoint's upload");
        };
        assert_eq!(
            h.sent_no_heartbeats(),
            vec![],
            "nothing before the upload is done"
        );
        h.input(if stored {
            Input::Uploaded { id }
        } else {
            Input::UploadFailed { id }
        });
        let sent = h.sent_no_heartbeats();
        let controls: Vec<ControlAction> = sent
            .iter()
            .filter_map(|m| match m {
                WorkerMessage::Controlled { control, .. } => Some(*control),
                _ => None,
            })
            .collect();
        let notices = sent
            .iter()
            .filter(|m| matches!(m, WorkerMessage::Checkpoint { step: 7, .. }))
            .count();
        if stored {
            assert!(
                matches!(sent[0], WorkerMessage::Checkpoint { .. }),
                "{sent:?}"
            );
            assert_eq!(controls, vec![checkpoint, ControlAction::Pause]);
        } else {
            assert_eq!(notices, 0);
            assert_eq!(controls, vec![ControlAction::Pause], "{sent:?}");
        }
    }
}
