//! The CLI's one error type and the exit code each kind of failure maps to.
//!
//! Exit codes: 0 ok, 1 failure or invalid input, 2 usage (clap, bad `-p` values), 3 Ferry cannot
//! be reached. The `Display` of every variant is the whole message a person sees after `error: `,
//! including the API's problems, one per line.

use std::fmt;
use std::path::PathBuf;

/// One validation problem as the API (or offline validation) reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct ApiProblem {
    /// Path of the offending field, e.g. `documents[1].stages[0].type`; may be empty.
    #[serde(default)]
    pub path: String,
    /// What is wrong.
    #[serde(default)]
    pub message: String,
}

impl fmt::Display for ApiProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Everything that can go wrong in a `ferry` command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command line is wrong in a way clap cannot see (exit 2).
    #[error("{0}")]
    Usage(String),
    /// No connection to the server (exit 3).
    #[error("cannot reach Ferry at {url}: is `ferry server` running? ({detail})")]
    Connect {
        /// The server URL tried.
        url: String,
        /// The transport's reason.
        detail: String,
    },
    /// The request failed after connecting (timeout, broken response) (exit 1).
    #[error("request to {url} failed: {detail}")]
    Transport {
        /// The URL requested.
        url: String,
        /// The transport's reason.
        detail: String,
    },
    /// The server refused the credentials (401) (exit 1).
    #[error("{message}\n{hint}")]
    Unauthorized {
        /// The server's message.
        message: String,
        /// How to get a token.
        hint: String,
    },
    /// The server answered with an error body (exit 1).
    #[error("{}", api_message(.message, .problems))]
    Api {
        /// HTTP status.
        status: u16,
        /// The error code of the body (`invalid`, `not_found`, …).
        code: String,
        /// The message of the body.
        message: String,
        /// Every problem, for 422.
        problems: Vec<ApiProblem>,
    },
    /// Documents given with `-f` are invalid (exit 1); each line is `FILE: path: message`.
    #[error("{summary}\n{}", indent_lines(.lines))]
    Invalid {
        /// One line saying how many problems.
        summary: String,
        /// One line per problem.
        lines: Vec<String>,
    },
    /// A file could not be read (exit 1).
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not start or stopped with an error (exit 1).
    #[error("{0}")]
    Server(String),
    /// A pipeline run ended other than SUCCEEDED (exit 1); the outcome has been printed.
    #[error("execution {id} ended {status}")]
    RunFailed {
        /// Execution id.
        id: String,
        /// Its final status.
        status: String,
    },
    /// Anything else that makes the command fail (exit 1).
    #[error("{0}")]
    Failed(String),
}

fn api_message(message: &str, problems: &[ApiProblem]) -> String {
    if problems.is_empty() {
        message.to_string()
    } else {
        let lines: Vec<String> = problems.iter().map(ToString::to_string).collect();
        format!("{message}\n{}", indent_lines(&lines))
    }
}

fn indent_lines(lines: &[String]) -> String {
    lines
        .iter()
        .map(|l| format!("  {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) => 2,
            CliError::Connect { .. } => 3,
            _ => 1,
        }
    }

    /// Whether the message has already been shown to the user (a failed run prints its outcome
    /// as it follows it), so `main` should not print it again.
    pub fn already_reported(&self) -> bool {
        matches!(self, CliError::RunFailed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::Connect {
                url: "u".into(),
                detail: "d".into()
            }
            .exit_code(),
            3
        );
        assert_eq!(CliError::Failed("x".into()).exit_code(), 1);
    }

    #[test]
    fn api_errors_list_their_problems() {
        let e = CliError::Api {
            status: 422,
            code: "invalid".into(),
            message: "2 problem(s) found".into(),
            problems: vec![
                ApiProblem {
                    path: "stages[0].type".into(),
                    message: "unknown".into(),
                },
                ApiProblem {
                    path: String::new(),
                    message: "whole".into(),
                },
            ],
        };
        assert_eq!(
            e.to_string(),
            "2 problem(s) found\n  stages[0].type: unknown\n  whole"
        );
    }
}
