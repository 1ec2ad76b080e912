//! Durations written the way Go and Kubernetes users write them: `15s`, `90m`, `1h30m`, `168h`,
//! `500ms`. Used by `Lease.spec.duration` and the operator configuration.

use std::time::Duration;

/// Parse a duration such as `1h30m`, `15s` or `500ms`. A bare `0` is zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. 30s, 15m, 2h or 1h30m".to_string());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!(
                "invalid duration {text:?}: expected a number at {rest:?}; write e.g. 30s, 15m, 2h or 1h30m"
            ));
        }
        let number: f64 = rest[..digits]
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: {:?} is not a number", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds_per_unit = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(format!("invalid duration {text:?}: missing unit after {number}; use ms, s, m, h or d")),
            other => return Err(format!("invalid duration {text:?}: unknown unit {other:?}; use ms, s, m, h or d")),
        };
        let secs = number * seconds_per_unit;
        if !secs.is_finite() || secs > 1e12 {
            return Err(format!("invalid duration {text:?}: too large"));
        }
        total += Duration::from_secs_f64(secs);
    }
    Ok(total)
}

/// Format a duration compactly, the inverse of [`parse_duration`] for whole seconds.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return if d.as_millis() > 0 { format!("{}ms", d.as_millis()) } else { "0s".to_string() };
    }
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    let s = secs % 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 {
        out.push_str(&format!("{s}s"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_go_style_durations() {
        let cases = [
            ("15s", 15_000),
            ("90m", 5_400_000),
            ("1h30m", 5_400_000),
            ("168h", 604_800_000),
            ("500ms", 500),
            ("1.5h", 5_400_000),
            ("2d", 172_800_000),
            ("0", 0),
        ];
        for (text, ms) in cases {
            assert_eq!(parse_duration(text).unwrap().as_millis(), ms, "{text}");
        }
    }

    #[test]
    fn refuses_malformed_durations() {
        for text in ["", "h", "10", "10x", "1h-5m", "abc"] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains("duration"), "{text}: {err}");
        }
    }

    #[test]
    fn formats_round_trip() {
        for text in ["15s", "1h30m", "168h", "2h5m7s"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }
}
