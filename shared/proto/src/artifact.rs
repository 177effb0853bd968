//! Artifact names: what a job's stored files may be called, and the names of checkpoints.
//! The coordinator checks every upload against [`check_name`]; workers name checkpoints with
//! [`checkpoint_name`] and the coordinator finds the newest one with [`checkpoint_step`].

const MAX_NAME_LEN: usize = 128;
const CHECKPOINT_PREFIX: &str = "checkpoint-";
const CHECKPOINT_SUFFIX: &str = ".ckpt";

/// What a valid artifact name looks like, for error messages.
pub const NAME_RULE: &str =
    "1 to 128 characters from letters, digits, '.', '_' and '-', not starting with '.'";

/// Check an artifact name: `[A-Za-z0-9._-]{1,128}`, not starting with `.` (so no `..`, no
/// path separators, no hidden or temporary files).
pub fn check_name(name: &str) -> Result<(), String> {
    if is_plain_name(name, MAX_NAME_LEN) {
        Ok(())
    } else {
        Err(format!(
            "invalid artifact name `{name}`: allowed are {NAME_RULE}"
        ))
    }
}

/// `[A-Za-z0-9._-]{1,max}`, not starting with `.`: safe as one path segment and as a file name
/// (no separators, no `..`, no hidden or temporary files). Dataset names follow it too.
pub(crate) fn is_plain_name(name: &str, max: usize) -> bool {
    !name.is_empty()
        && name.len() <= max
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `checkpoint-<step, zero-padded to 10>.ckpt`.
pub fn checkpoint_name(step: u64) -> String {
    format!("{CHECKPOINT_PREFIX}{step:010}{CHECKPOINT_SUFFIX}")
}

/// The step of a checkpoint artifact name, `None` for any other name.
pub fn checkpoint_step(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(CHECKPOINT_PREFIX)?
        .strip_suffix(CHECKPOINT_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        let check = |name: &str, ok: bool| assert_eq!(check_name(name).is_ok(), ok, "{name}");
        check("model.bpk", true);
        check("checkpoint-0000000010.ckpt", true);
        check("A_b-c.9", true);
        check(&"x".repeat(128), true);
        check(&"x".repeat(129), false);
        check("", false);
        check(".hidden", false);
        check("..", false);
        check("../x", false);
        check("a/b", false);
        check("a\\b", false);
        check("%2e%2e", false);
        check("naïve", false);
        check("a b", false);
    }

    #[test]
    fn checkpoints() {
        assert_eq!(checkpoint_name(42), "checkpoint-0000000042.ckpt");
        assert_eq!(checkpoint_step("checkpoint-0000000042.ckpt"), Some(42));
        assert_eq!(checkpoint_step("checkpoint-.ckpt"), None);
        assert_eq!(checkpoint_step("checkpoint-12a.ckpt"), None);
        assert_eq!(checkpoint_step("model.bpk"), None);
    }
}
