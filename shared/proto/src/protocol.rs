//! The wire protocol between coordinator, workers and clients, and the REST API's JSON types.
//!
//! Only the types in this module (and the job spec and metric types they embed) are serialized
//! for the wire. Messages are `#[serde(tag = "type")]` enums. The first frame of every WebSocket
//! is a hello carrying [`PROTOCOL_VERSION`]; a mismatch closes the socket with a typed
//! [`CloseReason`]. Within a version, changes are additive only (new optional fields with
//! `#[serde(default)]`). Golden JSON tests in `protocol/tests.rs` pin every message.

use serde::{Deserialize, Serialize};

use crate::metric::Metric;
use crate::spec::{DeviceRequest, FieldError, JobSpec};

/// Bumped on any incompatible change to the messages below.
pub const PROTOCOL_VERSION: u32 = 1;

/// Coordinator-assigned job id.
pub type JobId = i64;

/// What a worker can run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Devices this worker offers (`cpu`, `wgpu`, `cuda`), best first.
    pub devices: Vec<DeviceRequest>,
    /// Human description of each device, same order.
    #[serde(default)]
    pub device_names: Vec<String>,
    pub memory_mb: u64,
    pub cores: u32,
    pub kiln_version: String,
    /// `HOST:PORT` where this worker accepts its data-parallel peers' connections. A worker
    /// without one (older, or started without peers) only takes one-worker attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_addr: Option<String>,
    /// A browser tab lent as a worker ("Lend this tab"): it offers `webgpu` (its GPU, or the
    /// CPU in wasm where the browser has no adapter; `device_names` says which) and takes
    /// only jobs that ask for `webgpu` — never `auto`, which means a machine's best device.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub browser: bool,
    /// Takes live control of its running job ([`CoordinatorMessage::Control`]: pause, resume,
    /// checkpoint now, a new learning rate). Absent from workers that predate it: the
    /// coordinator then refuses control of their jobs instead of sending what they cannot read.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub control: bool,
}

/// The ranks of a data-parallel attempt, as one of them is told at assignment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// This worker's rank, `0..world`. Rank 0 reports metrics and writes checkpoints and the
    /// final model.
    pub rank: u32,
    pub world: u32,
    /// Every rank's peer address, in rank order.
    pub peers: Vec<String>,
    /// Every rank's worker id, in rank order (for messages that name a rank's worker).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
    /// Per-attempt secret every ring connection presents (strays from other attempts are
    /// refused).
    pub secret: String,
}

/// One attempt of one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttemptRef {
    pub job_id: JobId,
    pub attempt: u32,
}

/// A log line from a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Milliseconds since the Unix epoch.
    pub ts_ms: i64,
    pub text: String,
}

/// A stored log line with its position in the job's log (`GET /api/jobs/{id}/logs?after=`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    /// Increases with every stored line (across jobs); pass the last one seen as `after`.
    pub seq: i64,
    #[serde(flatten)]
    pub line: LogLine,
}

/// How an attempt ended on the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Succeeded,
    Failed,
    Cancelled,
}

/// Worker → coordinator, over `/ws/worker`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerMessage {
    /// First frame. `running` lists attempts still running after a reconnect.
    Hello {
        protocol_version: u32,
        worker_id: String,
        name: String,
        capabilities: Capabilities,
        #[serde(default)]
        running: Vec<AttemptRef>,
    },
    Heartbeat {
        #[serde(default)]
        running: Vec<AttemptRef>,
    },
    /// The attempt's model is built and its loop starts.
    Started {
        #[serde(flatten)]
        attempt: AttemptRef,
        device: String,
        total_steps: u64,
        start_step: u64,
    },
    /// Metrics, batched (flushed at least every 100 ms while a job runs).
    Metrics {
        #[serde(flatten)]
        attempt: AttemptRef,
        points: Vec<Metric>,
    },
    Logs {
        #[serde(flatten)]
        attempt: AttemptRef,
        lines: Vec<LogLine>,
    },
    /// A [`ControlAction`] took effect after `step` steps (sent after the metrics up to it).
    Controlled {
        #[serde(flatten)]
        attempt: AttemptRef,
        step: u64,
        control: ControlAction,
    },
    /// A checkpoint was uploaded as artifact `artifact` (HTTP, before this message).
    Checkpoint {
        #[serde(flatten)]
        attempt: AttemptRef,
        step: u64,
        artifact: String,
    },
    Finished {
        #[serde(flatten)]
        attempt: AttemptRef,
        outcome: AttemptOutcome,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        steps: u64,
        /// For a failure: whether another attempt can end differently. `false` for what is
        /// the same every time (invalid data or spec, a diverging loss, out of memory): the
        /// job fails at once. Left out for successes and cancellations, and by workers older
        /// than this field: absent means `true` (a failed attempt is retried).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retryable: Option<bool>,
    },
}

/// Coordinator → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "a message is built once, moved into a channel and serialized; boxing its large variant would cost an allocation per message and save nothing"
)]
pub enum CoordinatorMessage {
    Welcome {
        protocol_version: u32,
        worker_id: String,
        heartbeat_interval_ms: u64,
    },
    /// Run this attempt; `resume` names a checkpoint artifact of the job to start from.
    Assign {
        #[serde(flatten)]
        attempt: AttemptRef,
        spec: JobSpec,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<String>,
        /// For an attempt of several workers: this worker's rank and its peers. Left out for
        /// one worker. Only workers that advertise a `peer_addr` are given one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<Group>,
        /// Start paused (the job was paused before this attempt; it waits for a resume).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        paused: bool,
        /// Learning rates set live on earlier attempts: a resume from a checkpoint before one
        /// of them makes the same change at the same step.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        lr_changes: Vec<LrChange>,
    },
    Cancel {
        #[serde(flatten)]
        attempt: AttemptRef,
    },
    /// Change the running attempt between two steps (only to workers that advertise
    /// [`Capabilities::control`]); the worker answers [`WorkerMessage::Controlled`].
    Control {
        #[serde(flatten)]
        attempt: AttemptRef,
        control: ControlAction,
    },
    /// Sent just before the coordinator closes the socket.
    Goodbye { reason: CloseReason },
}

/// Why a socket is closed. Also the WebSocket close frame's reason text (JSON), with
/// [`CloseReason::code`] as its code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CloseReason {
    ProtocolVersion {
        expected: u32,
        got: u32,
    },
    /// The first frame was not a hello, or a frame did not parse.
    BadMessage {
        message: String,
    },
    /// Another connection with the same worker id took over.
    Superseded,
    ShuttingDown,
    /// A frame was larger than the coordinator accepts.
    FrameTooLarge {
        max_bytes: u64,
    },
}

impl CloseReason {
    /// WebSocket close code: the application range 4000–4999, except `FrameTooLarge`, which
    /// uses the standard 1009 (message too big).
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::ProtocolVersion { .. } => 4001,
            CloseReason::BadMessage { .. } => 4002,
            CloseReason::Superseded => 4003,
            CloseReason::ShuttingDown => 4004,
            CloseReason::FrameTooLarge { .. } => 1009,
        }
    }
}

/// Client → coordinator, over `/ws/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    Hello {
        protocol_version: u32,
    },
    /// Receive this job's metrics and logs (job list changes always arrive).
    Subscribe {
        job_id: JobId,
    },
    Unsubscribe {
        job_id: JobId,
    },
}

/// Coordinator → client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[allow(
    clippy::large_enum_variant,
    reason = "a message is built once, moved into a channel and serialized; boxing its large variant would cost an allocation per message and save nothing"
)]
pub enum ServerEvent {
    Welcome {
        protocol_version: u32,
    },
    /// A job was created or changed state or progress.
    Job {
        job: JobInfo,
    },
    Metrics {
        job_id: JobId,
        points: Vec<MetricPoint>,
    },
    Logs {
        job_id: JobId,
        lines: Vec<LogLine>,
    },
    Worker {
        worker: WorkerInfo,
    },
    Goodbye {
        reason: CloseReason,
    },
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl std::str::FromStr for JobState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        JobState::ALL
            .into_iter()
            .find(|j| j.as_str() == s)
            .ok_or_else(|| {
                format!("unknown job state `{s}`; allowed: queued, running, succeeded, failed, cancelled")
            })
    }
}

/// A version number of a job or worker row, taken from one counter in the coordinator's
/// database: every change of a row gives it the next number. A client that merges fetched
/// snapshots with live events keeps the copy with the higher revision, whichever arrived
/// last (`kiln-web`'s `live` module).
pub type Revision = u64;

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    pub id: JobId,
    pub name: String,
    pub state: JobState,
    pub priority: i32,
    /// Sweep group, if the job was made by `kiln sweep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    pub created_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    pub step: u64,
    pub total_steps: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub spec: JobSpec,
    /// Free text about the run, set after submitting (`PATCH /api/jobs/{id}`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
    /// Labels to find and group runs by (`GET /api/jobs?tag=`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Coordinator-ordered version of this row: every change of the job takes a higher one
    /// (see [`Revision`]). 0 from a coordinator that predates revisions.
    #[serde(default)]
    pub revision: Revision,
    /// The stored dataset's name when the job was submitted with `kiln:NAME` (the spec's
    /// `dataset.path` is then pinned to `kiln:sha256:<digest>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_name: Option<String>,
    /// Paused by `POST /api/jobs/{id}/control` (the loop holds between two steps; a queued job
    /// starts paused).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
    /// Learning rates set live, in step order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lr_changes: Vec<LrChange>,
    /// The job and checkpoint this job was forked from (`POST /api/jobs/{id}/fork`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forked_from: Option<ForkOrigin>,
}

/// A live change to a running job: `POST /api/jobs/{id}/control`'s body, what the coordinator
/// asks the job's worker ([`CoordinatorMessage::Control`]) and what the worker reports done
/// ([`WorkerMessage::Controlled`]). Each takes effect between two steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum ControlAction {
    /// Hold the loop; the model and the optimizer stay in memory, so a resume goes on exactly
    /// as if there had been no pause.
    Pause,
    Resume,
    /// Write a checkpoint now (it can be forked from or resumed from).
    Checkpoint,
    /// Train on with this base learning rate (the spec's schedule still shapes it).
    SetLr {
        lr: f64,
    },
}

impl ControlAction {
    /// `lr` as the spec allows `optimizer.lr`; the error names the field.
    pub fn validate(&self) -> Result<(), FieldError> {
        match *self {
            ControlAction::SetLr { lr } if !(lr.is_finite() && lr > 0.0 && lr <= 10.0) => {
                Err(FieldError {
                    field: "lr".into(),
                    value: lr.to_string(),
                    allowed: "a number > 0 and <= 10".into(),
                })
            }
            _ => Ok(()),
        }
    }

    /// The job's log line once a worker did this after `step` steps (the coordinator writes
    /// it; [`controlled_step`] reads it back for the charts' marks).
    pub fn log_line(&self, step: u64) -> String {
        match self {
            ControlAction::Pause => format!("paused after step {step}"),
            ControlAction::Resume => format!("resumed after step {step}"),
            ControlAction::Checkpoint => format!("checkpoint at step {step}, as asked"),
            ControlAction::SetLr { lr } => format!("learning rate {lr} from step {}", step + 1),
        }
    }

    /// For logs and the CLI: `pause`, `resume`, `checkpoint`, `learning rate 0.01`.
    pub fn describe(&self) -> String {
        match self {
            ControlAction::Pause => "pause".into(),
            ControlAction::Resume => "resume".into(),
            ControlAction::Checkpoint => "checkpoint".into(),
            ControlAction::SetLr { lr } => format!("learning rate {lr}"),
        }
    }
}

/// The step after which a live control took effect, from its log line
/// ([`ControlAction::log_line`]); `None` for any other line.
pub fn controlled_step(line: &str) -> Option<u64> {
    let number = |s: &str| s.parse::<u64>().ok();
    if let Some(rest) = line.strip_prefix("paused after step ") {
        return number(rest);
    }
    if let Some(rest) = line.strip_prefix("resumed after step ") {
        return number(rest);
    }
    if let Some(rest) = line.strip_prefix("checkpoint at step ") {
        return number(rest.strip_suffix(", as asked")?);
    }
    let rest = line.strip_prefix("learning rate ")?;
    let (lr, from) = rest.split_once(" from step ")?;
    lr.parse::<f64>().ok()?;
    number(from)?.checked_sub(1)
}

/// A learning rate set live: the steps after the first `step` train with base rate `lr`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrChange {
    pub step: u64,
    pub lr: f64,
}

/// The base learning rate for the step after `step` steps: the last change at or before
/// `step`, else `spec_lr`.
pub fn lr_at(changes: &[LrChange], step: u64, spec_lr: f64) -> f64 {
    changes
        .iter()
        .filter(|c| c.step <= step)
        .max_by_key(|c| c.step)
        .map_or(spec_lr, |c| c.lr)
}

/// Where a forked job started: job `job_id`'s checkpoint after `step` steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForkOrigin {
    pub job_id: JobId,
    pub step: u64,
}

/// `POST /api/jobs/{id}/fork`: a new job that starts from one of the job's checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForkJob {
    /// The checkpoint's step; left out: the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
    /// The new job's spec (e.g. another learning rate, more steps); left out: the job's own.
    /// Its model and dataset must be the job's: the checkpoint holds that model's weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<JobSpec>,
    /// Checked like `JobPatch::tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// One attempt's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptInfo {
    pub job_id: JobId,
    pub attempt: u32,
    pub worker_id: String,
    pub state: JobState,
    pub started_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resumed_from_step: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The workers of the attempt by rank (data-parallel training); rank 0 is `worker_id`.
    /// Empty from a coordinator that predates ranks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ranks: Vec<AttemptRank>,
}

/// One worker of an attempt: replica `rank` of the attempt's world.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRank {
    pub rank: u32,
    pub worker_id: String,
}

/// A stored metric with the attempt that produced it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    pub attempt: u32,
    #[serde(flatten)]
    pub metric: Metric,
}

/// A connected (or recently seen) worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub name: String,
    pub capabilities: Capabilities,
    pub connected: bool,
    pub draining: bool,
    pub last_seen_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<AttemptRef>,
    /// Coordinator-ordered version of this row (see [`Revision`]); it also changes when the
    /// job it runs starts or stops.
    #[serde(default)]
    pub revision: Revision,
}

/// A stored file of a job: checkpoints (`checkpoint-<step>.ckpt`), the final model
/// (`model.bpk`, `model.safetensors`), the summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArtifactInfo {
    pub name: String,
    pub size: u64,
    pub created_ms: i64,
}

/// `POST /api/jobs` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitJob {
    pub spec: JobSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Tags to start with (checked like `JobPatch::tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// `POST /api/jobs/import`: a run trained outside the coordinator (the playground's tab), as
/// the first part (`run`, JSON) of a `multipart/form-data` body whose other parts are its files,
/// each named by its artifact name (`model.bpk`, `model.json`, `summary.json`,
/// `checkpoint-<step>.ckpt`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRun {
    pub spec: JobSpec,
    /// Checked like `JobPatch::tags`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// `succeeded` or `cancelled`: the run ended where it trained and is kept as it is.
    /// `queued`: continue it on a worker; the job's next attempt resumes from the
    /// checkpoint part, which is then required.
    pub state: JobState,
    /// The steps it trained, of `total_steps`.
    pub step: u64,
    pub total_steps: u64,
    /// Where it trained, shown as the worker of its attempt 1 (`browser tab (cpu)`).
    pub trained_on: String,
    /// When it started and stopped there, by that machine's clock (ms since the Unix epoch).
    pub started_ms: i64,
    pub finished_ms: i64,
    /// Its metrics; they become attempt 1's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub metrics: Vec<Metric>,
}

/// The multipart part of [`ImportRun`] itself.
pub const IMPORT_RUN_PART: &str = "run";
/// Most metrics one import may carry.
pub const MAX_IMPORT_METRICS: usize = 200_000;
/// Most files (artifacts) one import may carry.
pub const MAX_IMPORT_FILES: usize = 16;
/// Longest `trained_on`, in bytes.
pub const MAX_TRAINED_ON_LEN: usize = 64;

/// Most tags on one job.
pub const MAX_TAGS: usize = 16;
/// Longest tag, in bytes.
pub const MAX_TAG_LEN: usize = 32;
/// Longest notes, in bytes.
pub const MAX_NOTES_LEN: usize = 10_000;

/// `PATCH /api/jobs/{id}` body: a run's notes and tags. What is left out stays as it is;
/// `tags` replaces the whole list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<String>>,
}

impl JobPatch {
    /// The patch as stored: tags trimmed and without repeats (first kept), notes with trailing
    /// whitespace trimmed; or every problem, each naming its field and value.
    pub fn normalized(self) -> Result<JobPatch, Vec<FieldError>> {
        let mut errors = Vec::new();
        let notes = self.notes.map(|n| n.trim_end().to_string());
        if let Some(n) = &notes
            && n.len() > MAX_NOTES_LEN
        {
            errors.push(FieldError {
                field: "notes".into(),
                value: format!("{} bytes", n.len()),
                allowed: format!("at most {MAX_NOTES_LEN} bytes"),
            });
        }
        let tags = self.tags.map(|tags| {
            let mut out: Vec<String> = Vec::new();
            for (i, tag) in tags.iter().enumerate() {
                let tag = tag.trim();
                match check_tag(tag) {
                    Err(allowed) => errors.push(FieldError {
                        field: format!("tags[{i}]"),
                        value: tag.to_string(),
                        allowed,
                    }),
                    Ok(()) if !out.iter().any(|t| t == tag) => out.push(tag.to_string()),
                    Ok(()) => {}
                }
            }
            out
        });
        if let Some(t) = &tags
            && t.len() > MAX_TAGS
        {
            errors.push(FieldError {
                field: "tags".into(),
                value: format!("{} tags", t.len()),
                allowed: format!("at most {MAX_TAGS} tags"),
            });
        }
        if errors.is_empty() {
            Ok(JobPatch { notes, tags })
        } else {
            Err(errors)
        }
    }
}

/// Whether `tag` may be a tag; the error says what is allowed.
pub fn check_tag(tag: &str) -> Result<(), String> {
    let ok = !tag.is_empty()
        && tag.len() <= MAX_TAG_LEN
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "1 to {MAX_TAG_LEN} characters from A-Z a-z 0-9 - _ . : /"
        ))
    }
}

/// A page of jobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<JobInfo>,
    pub total: u64,
    /// The newest revision handed out when this page was read: a job shown elsewhere with a
    /// higher revision changed after this snapshot, one with a lower or equal revision that is
    /// missing from the page no longer belongs on it.
    #[serde(default)]
    pub revision: Revision,
}

/// A read-only share link of one run, as its owner sees it (`GET /api/jobs/{id}/shares`). The
/// token itself is never shown again after creation; `hint` is its last 6 characters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShareInfo {
    pub id: i64,
    pub job_id: JobId,
    pub hint: String,
    pub created_ms: i64,
    /// Set once the link is revoked; a revoked link answers 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_ms: Option<i64>,
    /// Whether the link also opens the run's stored training data (so that whoever holds it
    /// can re-run the run in a browser).
    #[serde(default)]
    pub with_data: bool,
}

/// `POST /api/jobs/{id}/shares` body (optional: no body is the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateShare {
    /// Share the run's stored training data too (off by default): the link's page can then
    /// re-run the run in the recipient's browser.
    #[serde(default)]
    pub with_data: bool,
}

/// `POST /api/jobs/{id}/shares` answer: the only time the token is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewShare {
    pub share: ShareInfo,
    /// 64 lowercase hex digits (256 random bits).
    pub token: String,
    /// `/s/<token>`: the dashboard's page of the shared run, relative to the coordinator URL.
    pub path: String,
}

/// `GET /api/share/{token}` answer (no login): the shared job, with `worker_id` removed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedRun {
    pub job: JobInfo,
    /// Whether the link opens the run's stored training data (`/api/share/{token}/dataset`).
    #[serde(default)]
    pub with_data: bool,
}

impl SharedRun {
    /// What a share link shows of `job`: the run, without the worker (host names stay
    /// private) and without the owner's notes and tags.
    pub fn new(job: JobInfo, with_data: bool) -> SharedRun {
        SharedRun {
            job: JobInfo {
                worker_id: None,
                notes: String::new(),
                tags: Vec::new(),
                ..job
            },
            with_data,
        }
    }
}

/// `GET /api/health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok`.
    pub status: String,
    /// Coordinator version.
    pub version: String,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub error: String,
    /// For an invalid spec: every problem, by field.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldError>,
}

#[cfg(test)]
mod tests;
