//! Durations in the format Flux's APIs expect (Go's `time.Duration` string, e.g. `10m0s`).

/// Formats whole seconds the way Go prints a `time.Duration`: `0s`, `45s`, `10m0s`, `1h30m0s`.
pub fn go_duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds % 3600) / 60, seconds % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Like [`go_duration`] but never uses hours: Flux's source `timeout` fields only accept
/// `ms`, `s` and `m` units (`^([0-9]+(\.[0-9]+)?(ms|s|m))+$`).
pub fn go_duration_minutes(seconds: u64) -> String {
    let (m, s) = (seconds / 60, seconds % 60);
    if m == 0 {
        format!("{s}s")
    } else {
        format!("{m}m{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        for (secs, want) in [
            (0, "0s"),
            (45, "45s"),
            (60, "1m0s"),
            (600, "10m0s"),
            (3599, "59m59s"),
            (3600, "1h0m0s"),
            (5400, "1h30m0s"),
            (90061, "25h1m1s"),
        ] {
            assert_eq!(go_duration(secs), want, "{secs}s");
        }
    }

    #[test]
    fn source_timeouts_avoid_hours() {
        assert_eq!(go_duration_minutes(3600), "60m0s");
        assert_eq!(go_duration_minutes(59), "59s");
        assert_eq!(go_duration_minutes(600), "10m0s");
    }
}
