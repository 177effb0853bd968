//! Human-readable values shared by the CLI and the dashboard.

/// How long ago `then_ms` was at `now_ms` (milliseconds since the Unix epoch), coarsely:
/// "12s", "5m", "3h", "2d". A time in the future reads "0s".
pub fn age(then_ms: i64, now_ms: i64) -> String {
    let secs = (now_ms.saturating_sub(then_ms) / 1000).max(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_well() {
        assert_eq!(age(0, 59_000), "59s");
        assert_eq!(age(0, 61_000), "1m");
        assert_eq!(age(0, 7_200_000), "2h");
        assert_eq!(age(0, 3 * 86_400_000), "3d");
        assert_eq!(age(10_000, 0), "0s");
    }
}
