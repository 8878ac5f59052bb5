//! Durations as Argo Rollouts and Flagger write them: `30s`, `5m`, `1h`, `500ms`, `1m30s`, or a
//! plain number of seconds.

use serde_json::Value;
use std::time::Duration;

/// Parses `30s`, `1m30s`, `500ms`, `2h` or `45` (seconds), with the analysis parser's rules.
pub fn parse(text: &str) -> Option<Duration> {
    crate::analysis::parse_duration_ms(text)
        .ok()
        .map(Duration::from_millis)
}

/// A JSON value holding a duration: a string as [`parse`] reads it, or a number of seconds.
pub fn parse_value(value: &Value) -> Option<Duration> {
    match value {
        Value::Number(n) => n
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64),
        Value::String(s) => parse(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_durations() {
        assert_eq!(parse("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse("45"), Some(Duration::from_secs(45)));
        for bad in ["", "s", "5x", "-1", "m5"] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(
            parse_value(&serde_json::json!(2)),
            Some(Duration::from_secs(2))
        );
        assert_eq!(parse_value(&serde_json::json!(true)), None);
    }
}
