//! Checkpoints: one self-describing file with the loop state (JSON), the model weights and the
//! optimizer state (both burnpack). Everything needed to resume bit-exactly on the CPU device.
//!
//! Layout: `KILNCKPT` · u32 format version · three length-prefixed (u64 LE) sections:
//! state JSON, model burnpack, optimizer burnpack.

use serde::{Deserialize, Serialize};

use crate::model::ModelConfig;
use kiln_proto::spec::JobSpec;

const MAGIC: &[u8; 8] = b"KILNCKPT";
pub const CHECKPOINT_FORMAT: u32 = 1;

/// Where the loop stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    pub spec: JobSpec,
    pub model: ModelConfig,
    /// Optimizer steps taken.
    pub step: u64,
    /// Epoch in progress (0-based) and batches of it already taken: with the seed this fixes
    /// the data order.
    pub epoch: u64,
    pub batch_in_epoch: u64,
    /// Training examples seen so far (all ranks).
    pub samples: u64,
    pub rank: usize,
    pub world: usize,
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
        "checkpoint format {found} is not supported (this Kiln reads format {CHECKPOINT_FORMAT})"
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
        if found != CHECKPOINT_FORMAT {
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
        let state = serde_json::from_slice(&sections.pop().unwrap_or_default())
            .map_err(|e| CheckpointError::State(e.to_string()))?;
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
