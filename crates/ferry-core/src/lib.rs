//! Ferry's domain model: pipelines in Spinnaker's shape, executions and their statuses,
//! applications, validation problems and the [`Store`] trait.
//!
//! This crate does no I/O and knows nothing of SQL, HTTP, the expression language or stage
//! implementations. Parsing follows one rule: read the whole document and report every problem
//! with its path (`stages[2].requisiteStageRefIds[0]`), never just the first.

pub mod application;
pub mod execution;
pub mod fields;
pub mod pipeline;
pub mod problem;
pub mod status;
pub mod store;

pub use application::Application;
pub use execution::{
    Execution, ExecutionSummary, PausedDetails, RestartDetails, StageExecution, TaskExecution,
    Trigger,
};
pub use pipeline::{FailurePolicy, ParameterConfig, Pipeline, StageDef, parse_pipeline};
pub use problem::{Problem, Problems};
pub use status::Status;
pub use store::{
    DocumentRecord, ExecutionFilter, ExecutionWrite, PipelineRecord, QueuedCommand, Store,
    StoreError, StoreResult,
};

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A new time-ordered id (UUIDv7), used for executions.
pub fn new_time_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A new random id (UUIDv4), used for pipelines.
pub fn new_random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// True when a string holds a `${` expression (cheap check; the parser lives in `ferry-expr`).
pub fn looks_like_expression(s: &str) -> bool {
    s.contains("${")
}
