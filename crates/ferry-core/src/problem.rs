//! Validation problems: every problem found in a document, each with the path of the field.

use serde::Serialize;
use std::fmt;

/// One thing wrong with a document, at a JSON path such as `stages[2].requisiteStageRefIds[0]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Path of the offending field; empty for the document itself.
    pub path: String,
    /// What is wrong, in a sentence a user can act on.
    pub message: String,
}

impl Problem {
    /// A problem at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one document. Never empty when returned as an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{} problem(s): {}", .0.len(), join(.0))]
pub struct Problems(pub Vec<Problem>);

fn join(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Problems {
    /// Turns a list into `Ok(value)` when it is empty, else into `Err(Problems)`.
    pub fn into_result<T>(problems: Vec<Problem>, value: T) -> Result<T, Problems> {
        if problems.is_empty() {
            Ok(value)
        } else {
            Err(Problems(problems))
        }
    }

    /// Prefixes every path with `prefix` (e.g. `documents[1]`).
    pub fn prefixed(self, prefix: &str) -> Problems {
        Problems(
            self.0
                .into_iter()
                .map(|p| Problem {
                    path: join_path(prefix, &p.path),
                    message: p.message,
                })
                .collect(),
        )
    }
}

/// Joins a parent path and a child path: `a` + `b` = `a.b`, `a` + `[0]` = `a[0]`.
pub fn join_path(parent: &str, child: &str) -> String {
    if parent.is_empty() {
        child.to_string()
    } else if child.is_empty() {
        parent.to_string()
    } else if child.starts_with('[') {
        format!("{parent}{child}")
    } else {
        format!("{parent}.{child}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_join() {
        assert_eq!(join_path("", "stages"), "stages");
        assert_eq!(join_path("stages", "[2]"), "stages[2]");
        assert_eq!(join_path("stages[2]", "refId"), "stages[2].refId");
        assert_eq!(join_path("a", ""), "a");
    }

    #[test]
    fn display_lists_every_problem() {
        let p = Problems(vec![Problem::new("a", "bad"), Problem::new("", "worse")]);
        assert_eq!(p.to_string(), "2 problem(s): a: bad; worse");
        let p = p.prefixed("documents[1]");
        assert_eq!(p.0[0].path, "documents[1].a");
        assert_eq!(p.0[1].path, "documents[1]");
    }
}
