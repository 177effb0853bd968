//! Checkpoints: one self-describing file with the loop state (JSON), the model weights and the
//! optimizer state (both burnpack). Everything needed to resume bit-exactly on the CPU device.
//!
//! Layout: `KILNCKPT` · u32 format version · three length-prefixed (u64 LE) sections:
//! state JSON, model burnpack, optimizer burnpack. The optimizer section is empty in a
//! checkpoint written on WebGPU (Burn reads optimizer state only synchronously, which WebGPU
//! cannot do); resuming from one starts the optimizer afresh from the weights, and says so.
//!
//! Format 2 adds `samples_in_epoch` to the state (where the epoch stands, for any world size);
//! format 1 files still load and derive it from `batch_in_epoch`.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use kiln_proto::spec::JobSpec;

const MAGIC: &[u8; 8] = b"KILNCKPT";
pub const CHECKPOINT_FORMAT: u32 = 2;
/// The oldest format this Kiln still reads.
const OLDEST_FORMAT: u32 = 1;

/// Where the loop stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub spec: JobSpec,
    pub model: ModelConfig,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch in progress (0-based) and steps of it taken (by the world that wrote this).
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Training examples seen so far (all ranks).
    pub samples: u64,
    /// The writer's rank and world.
    pub rank: usize,
    pub world: usize,
    /// Examples of the epoch's order consumed by all ranks together: with the seed this fixes
    /// where the epoch stands, whatever the world size (see `data::replica_batch`). `None` in
    /// format 1; [`TrainState::samples_in_epoch`] derives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples_in_epoch: Option<u64>,
    /// Where the learning-rate schedule stands, in steps of `schedule_world` (see
    /// `ScheduleClock`). Absent in older checkpoints: the step, at the writer's world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_step: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_world: Option<usize>,
}

/// The largest count a loop state may hold (2⁴⁸: a million steps a second for nine years). A
/// larger one is a corrupt file, and the loop's arithmetic on it would overflow.
pub const MAX_COUNT: u64 = 1 << 48;

impl TrainState {
    /// Examples of the current epoch consumed, for an epoch of `n` examples. A format-1 state
    /// has only steps: each took `batch × world` examples (the last one of an epoch the rest).
    pub fn samples_in_epoch(&self, n: usize) -> u64 {
        self.samples_in_epoch.unwrap_or_else(|| {
            let per_step = self.spec.training.batch_size as u64 * self.world.max(1) as u64;
            self.batch_in_epoch.saturating_mul(per_step).min(n as u64)
        })
    }

    /// Every count within [`MAX_COUNT`]; the error names the first that is not.
    pub fn check(&self) -> Result<(), String> {
        let counts = [
            ("step", Some(self.step)),
            ("epoch", Some(self.epoch)),
            ("batch_in_epoch", Some(self.batch_in_epoch)),
            ("samples", Some(self.samples)),
            ("samples_in_epoch", self.samples_in_epoch),
            ("world", Some(self.world as u64)),
            ("schedule_world", self.schedule_world.map(|w| w as u64)),
        ];
        for (name, value) in counts {
            if let Some(v) = value
                && v > MAX_COUNT
            {
                return Err(format!(
                    "`{name}` is {v}, more than any run counts to (at most {MAX_COUNT}): the \
                     file is corrupt"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    pub model: Vec<u8>,
    pub optimizer: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("not a Kiln checkpoint (the file does not start with KILNCKPT)")]
    Magic,
    #[error(
        "checkpoint format {found} is not supported (this Kiln reads formats {OLDEST_FORMAT} to {CHECKPOINT_FORMAT})"
    )]
    Version { found: u32 },
    #[error("checkpoint is truncated: the {section} section needs {need} bytes, {have} are left")]
    Truncated {
        section: &'static str,
        need: u64,
        have: u64,
    },
    #[error("checkpoint state is not valid: {0}")]
    State(String),
    #[error("checkpoint has {0} unexpected trailing bytes")]
    Trailing(usize),
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let state = serde_json::to_vec(&self.state).expect("TrainState always serializes");
        let mut out =
            Vec::with_capacity(8 + 4 + 24 + state.len() + self.model.len() + self.optimizer.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&CHECKPOINT_FORMAT.to_le_bytes());
        for section in [&state, &self.model, &self.optimizer] {
            out.extend_from_slice(&(section.len() as u64).to_le_bytes());
            out.extend_from_slice(section);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        let rest = bytes.strip_prefix(MAGIC).ok_or(CheckpointError::Magic)?;
        let (version, mut rest) = take(rest, 4, "version")?;
        let found = u32::from_le_bytes(version.try_into().expect("4 bytes"));
        if !(OLDEST_FORMAT..=CHECKPOINT_FORMAT).contains(&found) {
            return Err(CheckpointError::Version { found });
        }
        let mut sections = Vec::with_capacity(3);
        for name in ["state", "model", "optimizer"] {
            let (len, after) = take(rest, 8, name)?;
            let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
            let (body, after) = take(after, len, name)?;
            sections.push(body.to_vec());
            rest = after;
        }
        if !rest.is_empty() {
            return Err(CheckpointError::Trailing(rest.len()));
        }
        let optimizer = sections.pop().unwrap_or_default();
        let model = sections.pop().unwrap_or_default();
        let state: TrainState = serde_json::from_slice(&sections.pop().unwrap_or_default())
            .map_err(|e| CheckpointError::State(e.to_string()))?;
        state.check().map_err(CheckpointError::State)?;
        Ok(Checkpoint {
            state,
            model,
            optimizer,
        })
    }
}

fn take<'a>(
    bytes: &'a [u8],
    n: u64,
    section: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CheckpointError> {
    if (bytes.len() as u64) < n {
        return Err(CheckpointError::Truncated {
            section,
            need: n,
            have: bytes.len() as u64,
        });
    }
    Ok(bytes.split_at(n as usize))
}
