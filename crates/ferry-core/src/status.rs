//! Execution and stage statuses, with Spinnaker's names and rules.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The status of an execution, a stage or a task. Names and meanings follow Spinnaker's
/// `ExecutionStatus` so that expressions such as `#stage('x').status == 'SUCCEEDED'` keep working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    /// Not started yet (also: an execution waiting behind `limitConcurrent`).
    NotStarted,
    /// Running.
    Running,
    /// Paused by a user; resumes where it was.
    Paused,
    /// Suspended (kept for compatibility; Ferry does not produce it).
    Suspended,
    /// Completed successfully.
    Succeeded,
    /// Failed, but the pipeline was told to continue (`continuePipeline`).
    FailedContinue,
    /// Failed and halted the pipeline (`failPipeline`).
    Terminal,
    /// Canceled by a user or by a superseding run.
    Canceled,
    /// Kept for compatibility with Spinnaker's redirect status; Ferry does not produce it.
    Redirect,
    /// Failed and halted its branch only.
    Stopped,
    /// Not run because `stageEnabled` evaluated to false.
    Skipped,
    /// Waiting to start behind another execution (Spinnaker's queued pipelines).
    Buffered,
}

impl Status {
    /// Every status, in declaration order.
    pub const ALL: [Status; 12] = [
        Status::NotStarted,
        Status::Running,
        Status::Paused,
        Status::Suspended,
        Status::Succeeded,
        Status::FailedContinue,
        Status::Terminal,
        Status::Canceled,
        Status::Redirect,
        Status::Stopped,
        Status::Skipped,
        Status::Buffered,
    ];

    /// True when nothing more will happen (the reference's "complete" column).
    pub fn is_complete(self) -> bool {
        matches!(
            self,
            Status::Succeeded
                | Status::FailedContinue
                | Status::Skipped
                | Status::Terminal
                | Status::Canceled
                | Status::Stopped
        )
    }

    /// True when a stage with this status stops the stages downstream of it from starting.
    pub fn halts_downstream(self) -> bool {
        matches!(self, Status::Terminal | Status::Canceled | Status::Stopped)
    }

    /// True for a completed stage whose downstream stages may start.
    pub fn allows_downstream(self) -> bool {
        matches!(
            self,
            Status::Succeeded | Status::FailedContinue | Status::Skipped
        )
    }

    /// The wire name, e.g. `FAILED_CONTINUE`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::NotStarted => "NOT_STARTED",
            Status::Running => "RUNNING",
            Status::Paused => "PAUSED",
            Status::Suspended => "SUSPENDED",
            Status::Succeeded => "SUCCEEDED",
            Status::FailedContinue => "FAILED_CONTINUE",
            Status::Terminal => "TERMINAL",
            Status::Canceled => "CANCELED",
            Status::Redirect => "REDIRECT",
            Status::Stopped => "STOPPED",
            Status::Skipped => "SKIPPED",
            Status::Buffered => "BUFFERED",
        }
    }

    /// Parses a wire name (case-insensitive).
    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
    }

    /// Precedence used when rolling several statuses up into one:
    /// TERMINAL > STOPPED > CANCELED > FAILED_CONTINUE > SUCCEEDED.
    fn failure_rank(self) -> u8 {
        match self {
            Status::Terminal => 5,
            Status::Stopped => 4,
            Status::Canceled => 3,
            Status::FailedContinue => 2,
            Status::Succeeded => 1,
            _ => 0,
        }
    }

    /// Rolls up completed statuses by the reference's precedence. Non-failure statuses
    /// (SKIPPED) count as SUCCEEDED. Returns SUCCEEDED for an empty input.
    pub fn roll_up(statuses: impl IntoIterator<Item = Status>) -> Status {
        statuses
            .into_iter()
            .map(|s| {
                if s == Status::Skipped {
                    Status::Succeeded
                } else {
                    s
                }
            })
            .max_by_key(|s| s.failure_rank())
            .unwrap_or(Status::Succeeded)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_reference() {
        // (status, complete, halts downstream) — the reference's status table.
        let table = [
            (Status::NotStarted, false, false),
            (Status::Running, false, false),
            (Status::Paused, false, false),
            (Status::Suspended, false, false),
            (Status::Redirect, false, false),
            (Status::Buffered, false, false),
            (Status::Succeeded, true, false),
            (Status::FailedContinue, true, false),
            (Status::Skipped, true, false),
            (Status::Terminal, true, true),
            (Status::Canceled, true, true),
            (Status::Stopped, true, true),
        ];
        for (s, complete, halts) in table {
            assert_eq!(s.is_complete(), complete, "{s}");
            assert_eq!(s.halts_downstream(), halts, "{s}");
        }
    }

    #[test]
    fn wire_names_round_trip() {
        for s in Status::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::from_str::<Status>(&json).unwrap(), s);
        }
        assert_eq!(
            Status::parse("failed_continue"),
            Some(Status::FailedContinue)
        );
        assert_eq!(Status::parse("nope"), None);
    }

    #[test]
    fn roll_up_precedence() {
        use Status::*;
        assert_eq!(Status::roll_up([Succeeded, Terminal, Stopped]), Terminal);
        assert_eq!(Status::roll_up([Succeeded, Canceled, Stopped]), Stopped);
        assert_eq!(Status::roll_up([Succeeded, Canceled]), Canceled);
        assert_eq!(Status::roll_up([FailedContinue, Succeeded]), FailedContinue);
        assert_eq!(Status::roll_up([Skipped]), Succeeded);
        assert_eq!(Status::roll_up([]), Succeeded);
    }
}
