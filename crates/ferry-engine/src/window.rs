//! `restrictedExecutionWindow`: when a stage may start. Days follow Spinnaker's Java calendar
//! (1 = Sunday … 7 = Saturday); times are UTC.

use ferry_core::pipeline::{ExecutionWindow, TimeRange};

const MINUTE_MS: i64 = 60_000;
const DAY_MS: i64 = 86_400_000;

/// Day of week (1 = Sunday … 7 = Saturday) of an epoch-millis instant, UTC.
fn weekday(ms: i64) -> u8 {
    // 1970-01-01 was a Thursday (5 in Spinnaker's numbering).
    let days = ms.div_euclid(DAY_MS);
    ((days + 4).rem_euclid(7) + 1) as u8
}

fn minute_of_day(ms: i64) -> i64 {
    ms.rem_euclid(DAY_MS) / MINUTE_MS
}

fn in_range(r: &TimeRange, minute: i64) -> bool {
    let start = i64::from(r.start_hour) * 60 + i64::from(r.start_min);
    let end = i64::from(r.end_hour) * 60 + i64::from(r.end_min);
    if start == end {
        true
    } else if start < end {
        minute >= start && minute < end
    } else {
        minute >= start || minute < end
    }
}

/// True when `now` is inside the window.
pub fn is_open(w: &ExecutionWindow, now: i64) -> bool {
    let day_ok = w.days.is_empty() || w.days.contains(&weekday(now));
    let time_ok =
        w.whitelist.is_empty() || w.whitelist.iter().any(|r| in_range(r, minute_of_day(now)));
    day_ok && time_ok
}

/// The first instant at or after `now` (to the minute) when the window is open; `None` when it
/// never opens (searched over 8 days).
pub fn next_open(w: &ExecutionWindow, now: i64) -> Option<i64> {
    if is_open(w, now) {
        return Some(now);
    }
    let mut t = now - now.rem_euclid(MINUTE_MS) + MINUTE_MS;
    let end = now + 8 * DAY_MS;
    while t <= end {
        if is_open(w, t) {
            return Some(t);
        }
        t += MINUTE_MS;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-23T10:30:00Z is a Monday (2).
    const MONDAY_1030: i64 = 1_795_429_800_000;

    fn window(days: &[u8], ranges: &[(u8, u8, u8, u8)]) -> ExecutionWindow {
        ExecutionWindow {
            days: days.to_vec(),
            whitelist: ranges
                .iter()
                .map(|&(a, b, c, d)| TimeRange {
                    start_hour: a,
                    start_min: b,
                    end_hour: c,
                    end_min: d,
                })
                .collect(),
            jitter: None,
        }
    }

    #[test]
    fn weekday_numbering_is_spinnakers() {
        assert_eq!(weekday(0), 5, "1970-01-01 is a Thursday");
        assert_eq!(weekday(MONDAY_1030), 2);
    }

    #[test]
    fn open_and_next_open() {
        let w = window(&[2], &[(9, 0, 17, 0)]);
        assert!(is_open(&w, MONDAY_1030));
        let w = window(&[3], &[(9, 0, 17, 0)]);
        assert!(!is_open(&w, MONDAY_1030));
        // Next Tuesday 09:00 is 22.5 hours later.
        assert_eq!(
            next_open(&w, MONDAY_1030),
            Some(MONDAY_1030 + 22 * 3_600_000 + 1_800_000)
        );
        // A range that wraps past midnight.
        let w = window(&[], &[(22, 0, 2, 0)]);
        assert!(!is_open(&w, MONDAY_1030));
        assert_eq!(
            next_open(&w, MONDAY_1030),
            Some(MONDAY_1030 + 11 * 3_600_000 + 1_800_000)
        );
        // Empty window: always open.
        assert!(is_open(&window(&[], &[]), MONDAY_1030));
    }
}
