//! The worker's side of `/ws/worker` as a state machine without I/O: inputs in, actions out.
//!
//! [`WorkerSession`] is everything a worker decides about its coordinator, across connections:
//! the hello (with capabilities and the attempt it still runs), heartbeats, the outbox that
//! keeps messages while the socket is down, metric batching, the upload-then-notify order of
//! checkpoints and final models, accepting or refusing assignments, cancels, which close
//! reasons end the worker for good, and the reconnect backoff. It reads no clock, opens no
//! socket and starts no thread, so the same code runs under tokio (`kiln worker`) and in a
//! browser tab, and its tests need no sockets.
//!
//! A driver owns the I/O and loops:
//! 1. perform every [`WorkerSession::poll_action`] (dial, start or cancel the job, upload,
//!    download the resume checkpoint, stop on a fatal close), feeding results back as inputs;
//! 2. while a socket is open, write every [`WorkerSession::poll_transmit`] message and report
//!    each write with [`Input::Sent`] (a failed write is a [`Input::Disconnected`]: the
//!    message stays first in line for the next connection);
//! 3. wait for a frame, a job event, an upload or download result, or the deadline of
//!    [`WorkerSession::poll_timeout`] (then [`Input::Tick`]), and hand it to
//!    [`WorkerSession::handle`] with the current time.
//!
//! Time is a monotonic millisecond count chosen by the driver (`now_ms`); wall-clock
//! timestamps (log lines) come in with the events that carry them.

use std::collections::VecDeque;
use std::fmt;

use crate::artifact::checkpoint_name;
use crate::metric::Metric;
use crate::protocol::{
    AttemptOutcome, AttemptRef, Capabilities, CloseReason, ControlAction, CoordinatorMessage,
    Group, LogLine, LrChange, PROTOCOL_VERSION, WorkerMessage,
};
use crate::spec::JobSpec;

/// Metrics are flushed at least this often while connected.
pub const FLUSH_EVERY_MS: u64 = 100;
/// The first wait before dialling again.
pub const MIN_BACKOFF_MS: u64 = 200;
/// The shortest heartbeat interval a worker accepts from a welcome.
pub const MIN_HEARTBEAT_MS: u64 = 10;

/// Who this worker is and how it reconnects.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionConfig {
    pub worker_id: String,
    pub name: String,
    pub capabilities: Capabilities,
    /// Longest wait between reconnect attempts, before jitter (up to twice this with it).
    pub max_backoff_ms: u64,
    /// Seed of the backoff jitter (any value; tests pick a fixed one).
    pub seed: u64,
}

/// A file of a job to store on the coordinator.
#[derive(Clone, PartialEq)]
pub struct Artifact {
    pub name: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Artifact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Artifact({:?}, {} bytes)", self.name, self.bytes.len())
    }
}

/// What a running job reports.
#[derive(Debug, Clone, PartialEq)]
pub enum JobEvent {
    /// The model is built and the loop starts.
    Started {
        device: String,
        total_steps: u64,
        start_step: u64,
    },
    Metric(Metric),
    Log(LogLine),
    /// A [`ControlAction`] took effect after `step` steps.
    Controlled {
        step: u64,
        control: ControlAction,
    },
    /// An encoded checkpoint of the loop at `step`.
    Checkpoint {
        step: u64,
        bytes: Vec<u8>,
    },
    /// The job's last event.
    Finished {
        outcome: AttemptOutcome,
        error: Option<String>,
        /// For a failure: whether another attempt can end differently (`None`: the
        /// coordinator assumes it can, as with workers that predate the field).
        retryable: Option<bool>,
        steps: u64,
        /// The final model and summary files, stored before the finish notice goes out.
        artifacts: Vec<Artifact>,
        /// When it ended (milliseconds since the Unix epoch), for the error's log line.
        ts_ms: i64,
    },
}

/// What happened, as the driver tells it.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per event, handled at once; boxing would only add an allocation"
)]
pub enum Input {
    /// The socket asked for by [`Action::Connect`] is open.
    Connected,
    /// Dialling failed.
    ConnectFailed,
    /// The message [`WorkerSession::poll_transmit`] returned was written.
    Sent,
    /// A frame from the coordinator.
    Frame(CoordinatorMessage),
    /// The socket closed or failed (a failed write included); `reason` is a close frame's
    /// reason where it parsed.
    Disconnected { reason: Option<CloseReason> },
    /// Nothing happened but time passed (the deadline of [`WorkerSession::poll_timeout`]).
    Tick,
    /// An event of the job started by [`Action::StartJob`].
    Job {
        attempt: AttemptRef,
        event: JobEvent,
    },
    /// [`Action::StartJob`] could not start the job; `error` is the whole message.
    StartFailed { attempt: AttemptRef, error: String },
    /// [`Action::DownloadResume`] succeeded.
    ResumeDownloaded { attempt: AttemptRef, bytes: Vec<u8> },
    /// [`Action::DownloadResume`] failed (after the driver's retries).
    ResumeFailed { attempt: AttemptRef, error: String },
    /// Every artifact of [`Action::Upload`] `id` is stored.
    Uploaded { id: u64 },
    /// Some artifact of [`Action::Upload`] `id` could not be stored (after retries).
    UploadFailed { id: u64 },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one value per event, handled at once; boxing would only add an allocation"
)]
pub enum Action {
    /// Dial the coordinator; answer with [`Input::Connected`] or [`Input::ConnectFailed`].
    Connect,
    /// Start the job; its events come back as [`Input::Job`], a failure to start as
    /// [`Input::StartFailed`].
    StartJob {
        attempt: AttemptRef,
        spec: JobSpec,
        /// The encoded checkpoint to resume from.
        resume: Option<Vec<u8>>,
        /// This worker's rank in a data-parallel attempt.
        group: Option<Group>,
        /// Learning rates set live on earlier attempts, to make again at their steps.
        lr_changes: Vec<LrChange>,
        /// Controls to apply before the first step, in order (a pause when the job was paused
        /// before this attempt, and any that came while the checkpoint downloaded).
        controls: Vec<ControlAction>,
    },
    /// Ask the running job to stop (it still finishes, with its own outcome).
    CancelJob { attempt: AttemptRef },
    /// Hand the running job a control; it answers with [`JobEvent::Controlled`].
    ControlJob {
        attempt: AttemptRef,
        control: ControlAction,
    },
    /// Download the job's checkpoint artifact `artifact` without blocking the socket; answer
    /// with [`Input::ResumeDownloaded`] or [`Input::ResumeFailed`].
    DownloadResume {
        attempt: AttemptRef,
        artifact: String,
    },
    /// The download is no longer wanted (its attempt was cancelled); its answer is ignored.
    AbortDownload { attempt: AttemptRef },
    /// Store these artifacts of the attempt's job, in the order of the `Upload` actions; answer
    /// with [`Input::Uploaded`] or [`Input::UploadFailed`].
    Upload {
        id: u64,
        attempt: AttemptRef,
        artifacts: Vec<Artifact>,
    },
    /// Worth a warning in the driver's log.
    Warn(String),
    /// Stop for good: retrying would be refused again.
    Fatal(Fatal),
}

/// Why a worker stops for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fatal {
    #[error(
        "the coordinator speaks protocol {expected}, this worker {got}: upgrade the older side"
    )]
    ProtocolVersion { expected: u32, got: u32 },
    #[error("another worker connected with the same id ({0})")]
    Superseded(String),
}

/// The socket, as far as the machine knows.
#[derive(Debug)]
enum Link {
    /// [`Action::Connect`] is out.
    Dialing,
    /// Open; the hello is sent or about to be, no welcome yet.
    Handshake { hello: Option<WorkerMessage> },
    /// Welcomed.
    Open {
        heartbeat_ms: u64,
        next_heartbeat_ms: u64,
        next_flush_ms: u64,
    },
    /// Down; dial again at `until_ms`.
    Waiting { until_ms: u64 },
    /// After a fatal close: nothing more happens.
    Stopped,
}

/// The one job slot.
#[derive(Debug)]
struct Slot {
    attempt: AttemptRef,
    /// The resume checkpoint being downloaded, with what to start once it is here.
    downloading: Option<Download>,
}

/// An assignment waiting for its resume checkpoint.
#[derive(Debug)]
struct Download {
    spec: JobSpec,
    group: Option<Group>,
    artifact: String,
    lr_changes: Vec<LrChange>,
    /// Controls that came before the job could start.
    controls: Vec<ControlAction>,
}

/// Messages to send once an upload is done.
#[derive(Debug)]
struct PendingUpload {
    id: u64,
    then: WorkerMessage,
    /// Set for an attempt's last message: the slot frees when it is queued.
    last: Option<AttemptRef>,
    /// `Some(ok)` once the driver answered.
    done: Option<bool>,
    /// No upload of its own: a message that waits for the uploads before it, and goes out
    /// only if the one just before it went out (a checkpoint asked for is reported done only
    /// once it is stored).
    after_previous: bool,
}

/// Exponential backoff with jitter (×2 per failure from [`MIN_BACKOFF_MS`] up to the maximum,
/// plus a random 0–100 % of it), reset by a welcomed connection.
#[derive(Debug)]
struct Backoff {
    max_ms: u64,
    current_ms: Option<u64>,
    rng: u64,
}

impl Backoff {
    fn next_ms(&mut self) -> u64 {
        let delay = match self.current_ms {
            None => MIN_BACKOFF_MS,
            Some(cur) => {
                let cur = if cur < self.max_ms {
                    cur.saturating_mul(2)
                } else {
                    cur
                };
                cur.min(self.max_ms)
            }
        };
        self.current_ms = Some(delay);
        delay.saturating_add((delay as f64 * self.random()) as u64)
    }

    fn reset(&mut self) {
        self.current_ms = None;
    }

    /// xorshift64*: a uniform value in [0, 1).
    fn random(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A worker's protocol state. See the module docs for the driver's loop.
#[derive(Debug)]
pub struct WorkerSession {
    config: SessionConfig,
    link: Link,
    backoff: Backoff,
    slot: Option<Slot>,
    /// Messages not yet written to a socket, oldest first.
    outbox: VecDeque<WorkerMessage>,
    /// Metrics waiting for the next flush.
    pending: Vec<Metric>,
    /// Uploads in the order they were asked for; their messages go out in that order.
    uploads: VecDeque<PendingUpload>,
    next_upload: u64,
    actions: VecDeque<Action>,
}

impl WorkerSession {
    /// A worker that has just started: its first action is [`Action::Connect`].
    pub fn new(config: SessionConfig) -> WorkerSession {
        let backoff = Backoff {
            max_ms: config.max_backoff_ms,
            current_ms: None,
            // xorshift must not start at 0.
            rng: config.seed | 1,
        };
        WorkerSession {
            config,
            link: Link::Dialing,
            backoff,
            slot: None,
            outbox: VecDeque::new(),
            pending: Vec::new(),
            uploads: VecDeque::new(),
            next_upload: 0,
            actions: VecDeque::from([Action::Connect]),
        }
    }

    /// The next thing to do, oldest first.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether [`WorkerSession::poll_action`] has something.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// The next message to write on the open socket, if any; report the write with
    /// [`Input::Sent`]. Before the welcome that is only the hello.
    pub fn poll_transmit(&self) -> Option<&WorkerMessage> {
        match &self.link {
            Link::Handshake { hello } => hello.as_ref(),
            Link::Open { .. } => self.outbox.front(),
            _ => None,
        }
    }

    /// When to call [`WorkerSession::handle`] with [`Input::Tick`] at the latest.
    pub fn poll_timeout(&self) -> Option<u64> {
        match &self.link {
            Link::Open {
                next_heartbeat_ms,
                next_flush_ms,
                ..
            } => Some((*next_heartbeat_ms).min(*next_flush_ms)),
            Link::Waiting { until_ms } => Some(*until_ms),
            _ => None,
        }
    }

    /// The attempt holding the job slot (downloading its checkpoint, running, or uploading its
    /// results), as hellos and heartbeats report it.
    pub fn running(&self) -> Option<AttemptRef> {
        self.slot.as_ref().map(|s| s.attempt)
    }

    /// Whether the coordinator welcomed the current socket.
    pub fn is_connected(&self) -> bool {
        matches!(self.link, Link::Open { .. })
    }

    /// Whether a fatal close stopped the worker.
    pub fn is_stopped(&self) -> bool {
        matches!(self.link, Link::Stopped)
    }

    /// Messages waiting for a socket.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Take in one input at time `now_ms`.
    pub fn handle(&mut self, now_ms: u64, input: Input) {
        if matches!(self.link, Link::Stopped) {
            return;
        }
        match input {
            Input::Connected => {
                if matches!(self.link, Link::Dialing) {
                    let hello = WorkerMessage::Hello {
                        protocol_version: PROTOCOL_VERSION,
                        worker_id: self.config.worker_id.clone(),
                        name: self.config.name.clone(),
                        capabilities: self.config.capabilities.clone(),
                        running: self.running_list(),
                    };
                    self.link = Link::Handshake { hello: Some(hello) };
                }
            }
            Input::ConnectFailed => self.link_down(now_ms),
            Input::Sent => match &mut self.link {
                Link::Handshake { hello } => *hello = None,
                Link::Open { .. } => {
                    self.outbox.pop_front();
                }
                _ => {}
            },
            Input::Frame(msg) => self.frame(now_ms, msg),
            Input::Disconnected { reason } => {
                // A typed close before the welcome means the coordinator refused this worker.
                if matches!(self.link, Link::Handshake { .. })
                    && let Some(reason) = reason
                {
                    self.fatal(reason);
                } else {
                    self.link_down(now_ms);
                }
            }
            Input::Tick => {}
            Input::Job { attempt, event } => self.job_event(attempt, event),
            Input::StartFailed { attempt, error } => {
                if self.holds(attempt) {
                    self.slot = None;
                    self.outbox.push_back(failed(attempt, error));
                }
            }
            Input::ResumeDownloaded { attempt, bytes } => {
                if let Some(slot) = self.slot.as_mut()
                    && slot.attempt == attempt
                    && let Some(d) = slot.downloading.take()
                {
                    self.actions.push_back(Action::StartJob {
                        attempt,
                        spec: d.spec,
                        resume: Some(bytes),
                        group: d.group,
                        lr_changes: d.lr_changes,
                        controls: d.controls,
                    });
                }
            }
            Input::ResumeFailed { attempt, error } => {
                if let Some(slot) = &self.slot
                    && slot.attempt == attempt
                    && let Some(d) = &slot.downloading
                {
                    let message = format!("cannot download checkpoint {}: {error}", d.artifact);
                    self.slot = None;
                    self.outbox.push_back(failed(attempt, message));
                }
            }
            Input::Uploaded { id } => self.upload_done(id, true),
            Input::UploadFailed { id } => self.upload_done(id, false),
        }
        self.timers(now_ms);
    }

    fn running_list(&self) -> Vec<AttemptRef> {
        self.running().into_iter().collect()
    }

    fn holds(&self, attempt: AttemptRef) -> bool {
        self.running() == Some(attempt)
    }

    /// The socket is gone (or never came): wait, then dial again. A welcomed connection
    /// resets the backoff.
    fn link_down(&mut self, now_ms: u64) {
        match self.link {
            Link::Open { .. } => self.backoff.reset(),
            Link::Dialing | Link::Handshake { .. } => {}
            Link::Waiting { .. } | Link::Stopped => return,
        }
        let wait = self.backoff.next_ms();
        self.link = Link::Waiting {
            until_ms: now_ms.saturating_add(wait),
        };
    }

    fn fatal(&mut self, reason: CloseReason) {
        let fatal = match reason {
            CloseReason::ProtocolVersion { expected, got } => {
                Fatal::ProtocolVersion { expected, got }
            }
            other => Fatal::Superseded(format!("{} ({other:?})", self.config.worker_id)),
        };
        self.link = Link::Stopped;
        self.actions.push_back(Action::Fatal(fatal));
    }

    /// Heartbeats and metric flushes while welcomed; the next dial after a backoff.
    fn timers(&mut self, now_ms: u64) {
        match &mut self.link {
            Link::Open {
                heartbeat_ms,
                next_heartbeat_ms,
                next_flush_ms,
            } => {
                let flush = now_ms >= *next_flush_ms;
                if flush {
                    *next_flush_ms = next_after(*next_flush_ms, FLUSH_EVERY_MS, now_ms);
                }
                let heartbeat = now_ms >= *next_heartbeat_ms;
                if heartbeat {
                    *next_heartbeat_ms = next_after(*next_heartbeat_ms, *heartbeat_ms, now_ms);
                }
                if flush {
                    self.flush_metrics();
                }
                if heartbeat {
                    let running = self.running_list();
                    self.outbox.push_back(WorkerMessage::Heartbeat { running });
                }
            }
            Link::Waiting { until_ms } if now_ms >= *until_ms => {
                self.link = Link::Dialing;
                self.actions.push_back(Action::Connect);
            }
            _ => {}
        }
    }

    fn frame(&mut self, now_ms: u64, msg: CoordinatorMessage) {
        match (&self.link, msg) {
            (
                Link::Handshake { .. },
                CoordinatorMessage::Welcome {
                    heartbeat_interval_ms,
                    ..
                },
            ) => {
                // Both fire at once: a heartbeat right after the welcome.
                self.link = Link::Open {
                    heartbeat_ms: heartbeat_interval_ms.max(MIN_HEARTBEAT_MS),
                    next_heartbeat_ms: now_ms,
                    next_flush_ms: now_ms,
                };
            }
            // Before the welcome a goodbye is a refusal (version, a bad hello, superseded).
            (Link::Handshake { .. }, CoordinatorMessage::Goodbye { reason }) => self.fatal(reason),
            // Nothing else is expected before the welcome.
            (Link::Handshake { .. }, _) => {}
            (Link::Open { .. }, msg) => self.message(msg),
            _ => {}
        }
    }

    fn message(&mut self, msg: CoordinatorMessage) {
        match msg {
            CoordinatorMessage::Assign {
                attempt,
                spec,
                resume,
                group,
                paused,
                lr_changes,
            } => {
                let controls = if paused {
                    vec![ControlAction::Pause]
                } else {
                    Vec::new()
                };
                self.assign(attempt, spec, resume, group, lr_changes, controls)
            }
            CoordinatorMessage::Control { attempt, control } => {
                let Some(slot) = self.slot.as_mut() else {
                    return;
                };
                if slot.attempt != attempt {
                    return;
                }
                match &mut slot.downloading {
                    Some(d) => d.controls.push(control),
                    None => self
                        .actions
                        .push_back(Action::ControlJob { attempt, control }),
                }
            }
            CoordinatorMessage::Cancel { attempt } => {
                let Some(slot) = &self.slot else { return };
                // By job: the coordinator cancels the job, whatever attempt it thinks we run.
                if slot.attempt.job_id != attempt.job_id {
                    return;
                }
                let running = slot.attempt;
                if slot.downloading.is_some() {
                    // Not started yet: stop here, the download is not needed any more.
                    self.slot = None;
                    self.actions
                        .push_back(Action::AbortDownload { attempt: running });
                    self.outbox.push_back(WorkerMessage::Finished {
                        attempt: running,
                        outcome: AttemptOutcome::Cancelled,
                        error: None,
                        steps: 0,
                        retryable: None,
                    });
                } else {
                    self.actions
                        .push_back(Action::CancelJob { attempt: running });
                }
            }
            CoordinatorMessage::Goodbye { reason } => match reason {
                // The socket closes next; reconnect as usual.
                CloseReason::ShuttingDown | CloseReason::BadMessage { .. } => {}
                other => self.fatal(other),
            },
            CoordinatorMessage::Welcome { .. } => {}
        }
    }

    fn assign(
        &mut self,
        attempt: AttemptRef,
        spec: JobSpec,
        resume: Option<String>,
        group: Option<Group>,
        lr_changes: Vec<LrChange>,
        controls: Vec<ControlAction>,
    ) {
        if let Some(running) = self.running() {
            if running == attempt {
                return; // already ours (re-sent after a reconnect)
            }
            self.actions.push_back(Action::Warn(format!(
                "assigned job {} attempt {} while busy with job {} attempt {}; refusing",
                attempt.job_id, attempt.attempt, running.job_id, running.attempt
            )));
            // Say what runs first, so the coordinator does not pick this worker again until
            // it is free.
            self.outbox.push_back(WorkerMessage::Heartbeat {
                running: vec![running],
            });
            self.outbox.push_back(failed(
                attempt,
                "worker is busy with another job".to_string(),
            ));
            return;
        }
        match resume {
            Some(artifact) => {
                self.slot = Some(Slot {
                    attempt,
                    downloading: Some(Download {
                        spec,
                        group,
                        artifact: artifact.clone(),
                        lr_changes,
                        controls,
                    }),
                });
                self.actions
                    .push_back(Action::DownloadResume { attempt, artifact });
            }
            None => {
                self.slot = Some(Slot {
                    attempt,
                    downloading: None,
                });
                self.actions.push_back(Action::StartJob {
                    attempt,
                    spec,
                    resume: None,
                    group,
                    lr_changes,
                    controls,
                });
            }
        }
    }

    fn job_event(&mut self, attempt: AttemptRef, event: JobEvent) {
        match event {
            JobEvent::Started {
                device,
                total_steps,
                start_step,
            } => self.outbox.push_back(WorkerMessage::Started {
                attempt,
                device,
                total_steps,
                start_step,
            }),
            JobEvent::Metric(m) => self.pending.push(m),
            JobEvent::Controlled { step, control } => {
                // After the metrics up to `step`, so the change lands on the curve in order,
                // and after the uploads asked for before it (the checkpoint it asked for).
                self.flush_metrics();
                let then = WorkerMessage::Controlled {
                    attempt,
                    step,
                    control,
                };
                if self.uploads.is_empty() {
                    self.outbox.push_back(then);
                } else {
                    let id = self.next_upload;
                    self.next_upload += 1;
                    self.uploads.push_back(PendingUpload {
                        id,
                        then,
                        last: None,
                        done: Some(true),
                        after_previous: control == ControlAction::Checkpoint,
                    });
                }
            }
            JobEvent::Log(line) => self.outbox.push_back(WorkerMessage::Logs {
                attempt,
                lines: vec![line],
            }),
            JobEvent::Checkpoint { step, bytes } => {
                // Metrics up to the checkpoint go out first, so none before it can be lost.
                self.flush_metrics();
                let name = checkpoint_name(step);
                self.upload(
                    attempt,
                    vec![Artifact {
                        name: name.clone(),
                        bytes,
                    }],
                    WorkerMessage::Checkpoint {
                        attempt,
                        step,
                        artifact: name,
                    },
                    false,
                );
            }
            JobEvent::Finished {
                outcome,
                error,
                retryable,
                steps,
                artifacts,
                ts_ms,
            } => {
                self.flush_metrics();
                if let Some(error) = &error {
                    self.outbox.push_back(WorkerMessage::Logs {
                        attempt,
                        lines: vec![LogLine {
                            ts_ms,
                            text: format!("error: {error}"),
                        }],
                    });
                }
                self.upload(
                    attempt,
                    artifacts,
                    WorkerMessage::Finished {
                        attempt,
                        outcome,
                        error,
                        steps,
                        retryable,
                    },
                    true,
                );
            }
        }
    }

    fn flush_metrics(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let points = std::mem::take(&mut self.pending);
        if let Some(attempt) = self.running() {
            self.outbox
                .push_back(WorkerMessage::Metrics { attempt, points });
        }
    }

    fn upload(
        &mut self,
        attempt: AttemptRef,
        artifacts: Vec<Artifact>,
        then: WorkerMessage,
        last: bool,
    ) {
        let id = self.next_upload;
        self.next_upload += 1;
        self.uploads.push_back(PendingUpload {
            id,
            then,
            last: last.then_some(attempt),
            done: None,
            after_previous: false,
        });
        self.actions.push_back(Action::Upload {
            id,
            attempt,
            artifacts,
        });
    }

    /// Queue the messages of finished uploads, in the order the uploads were asked for. A
    /// checkpoint notice only for a stored checkpoint; a finish notice always, and it frees the
    /// slot in the same step, so a new assignment never finds the worker still busy.
    fn upload_done(&mut self, id: u64, ok: bool) {
        if let Some(u) = self.uploads.iter_mut().find(|u| u.id == id) {
            u.done = Some(ok);
        }
        // Whether the entry just popped went out (for one that goes only after it).
        let mut previous_sent = true;
        while let Some(ok) = self.uploads.front().and_then(|u| u.done) {
            let Some(u) = self.uploads.pop_front() else {
                break;
            };
            if let Some(attempt) = u.last {
                if self.holds(attempt) {
                    self.slot = None;
                }
                self.outbox.push_back(u.then);
                previous_sent = true;
            } else if ok && (!u.after_previous || previous_sent) {
                self.outbox.push_back(u.then);
                previous_sent = true;
            } else {
                previous_sent = false;
            }
        }
    }
}

/// A `Finished` message for an attempt that failed before it started (busy, no checkpoint, no
/// job thread): this machine's trouble, so another attempt elsewhere can help.
fn failed(attempt: AttemptRef, error: String) -> WorkerMessage {
    WorkerMessage::Finished {
        attempt,
        outcome: AttemptOutcome::Failed,
        error: Some(error),
        steps: 0,
        retryable: Some(true),
    }
}

/// The next deadline of a periodic timer that fired at `now_ms`: one period after the last,
/// or, if the driver fell behind by more than a period, one period from now.
fn next_after(last_ms: u64, period_ms: u64, now_ms: u64) -> u64 {
    let next = last_ms.saturating_add(period_ms);
    if next > now_ms {
        next
    } else {
        now_ms.saturating_add(period_ms)
    }
}

#[cfg(test)]
mod tests;
