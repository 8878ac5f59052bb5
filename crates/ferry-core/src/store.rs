//! The store: the one trait through which everything durable is read and written.
//! Implementations live in `ferry-store` (SQLite and PostgreSQL); nothing else knows SQL.

use crate::application::Application;
use crate::execution::{Execution, ExecutionSummary};
use crate::pipeline::Pipeline;
use crate::status::Status;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors from a store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or could not be reached. Usually retryable.
    #[error("database error: {0}")]
    Backend(String),
    /// A stored row could not be decoded: the database holds something this version cannot read.
    #[error("stored {what} could not be read: {message}")]
    Corrupt {
        /// What was being read.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// The write conflicts with what is stored (for example a pipeline name taken by another id).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Applying the schema migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
}

impl StoreError {
    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Backend(_))
    }
}

/// Shorthand for store results.
pub type StoreResult<T> = Result<T, StoreError>;

/// One saved version of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineRecord {
    /// Pipeline id.
    pub id: String,
    /// Application.
    pub application: String,
    /// Name.
    pub name: String,
    /// Version, from 1, incremented on every change.
    pub version: i64,
    /// The document as written (with `id`).
    pub spec: Value,
    /// Who saved this version.
    pub updated_by: String,
    /// When, epoch millis.
    pub updated_at: i64,
}

/// One stored version of a document of another kind (a canary config, …), kept by kind and name.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentRecord {
    /// The kind, e.g. `CanaryConfig`.
    pub kind: String,
    /// The name, unique within the kind.
    pub name: String,
    /// Version, from 1, one more on every change.
    pub version: i64,
    /// The document as written.
    pub body: Value,
    /// Who saved this version.
    pub updated_by: String,
    /// When, epoch millis.
    pub updated_at: i64,
}

/// What to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecutionFilter {
    /// Only this application.
    pub application: Option<String>,
    /// Only this pipeline id.
    pub pipeline_config_id: Option<String>,
    /// Only these statuses (empty = any).
    pub statuses: Vec<Status>,
    /// At most this many, newest first (0 = a default of 100).
    pub limit: usize,
}

/// One execution's changes inside a batch written by [`Store::write_executions`].
#[derive(Debug, Clone, Copy)]
pub struct ExecutionWrite<'a> {
    /// The execution as it is now.
    pub execution: &'a Execution,
    /// True to insert it (with every stage) instead of updating it.
    pub create: bool,
    /// Indexes of the stages to write (ignored when `create`).
    pub changed_stages: &'a [usize],
    /// Queued commands to remove in the same transaction.
    pub acks: &'a [i64],
}

/// A durable command for the engine (start, cancel, judge, …), written before it is applied and
/// removed in the same transaction that applies it, so a crash in between loses nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedCommand {
    /// Queue id; order of arrival.
    pub id: i64,
    /// Execution the command is for.
    pub execution_id: String,
    /// The command, as the engine encoded it.
    pub payload: Value,
    /// When it was queued, epoch millis.
    pub created_at: i64,
}

/// Everything durable. Implementations must make each method atomic.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Which backend this is (`sqlite`, `postgres`), for logs and benchmarks.
    fn backend(&self) -> &'static str;

    /// Creates or updates an application; returns it with timestamps set.
    async fn put_application(&self, app: &Application) -> StoreResult<Application>;
    /// One application.
    async fn get_application(&self, name: &str) -> StoreResult<Option<Application>>;
    /// Every application, by name.
    async fn list_applications(&self) -> StoreResult<Vec<Application>>;
    /// Deletes an application. Refuses (Conflict) while it still has pipelines.
    async fn delete_application(&self, name: &str) -> StoreResult<bool>;

    /// Saves a pipeline. An empty `id` takes the id of the pipeline with the same application
    /// and name, or a new one. A new version is written only when the document changed.
    async fn save_pipeline(&self, pipeline: &Pipeline, by: &str) -> StoreResult<PipelineRecord>;
    /// Saves a document of `kind` under `name`: a new version when the body differs from the
    /// latest (key order alone is no change), else the latest is returned as it is.
    async fn save_document(
        &self,
        kind: &str,
        name: &str,
        body: &Value,
        by: &str,
    ) -> StoreResult<DocumentRecord>;
    /// The latest version of a document, or the given version.
    async fn get_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<DocumentRecord>>;
    /// The latest version of every document of `kind`, sorted by name.
    async fn list_documents(&self, kind: &str) -> StoreResult<Vec<DocumentRecord>>;
    /// Every version of a document, newest first.
    async fn document_history(&self, kind: &str, name: &str) -> StoreResult<Vec<DocumentRecord>>;
    /// Deletes every version of a document; false when there was none.
    async fn delete_document(&self, kind: &str, name: &str) -> StoreResult<bool>;
    /// The latest version of a pipeline.
    async fn get_pipeline(&self, id: &str) -> StoreResult<Option<PipelineRecord>>;
    /// The latest version of the pipeline with this application and name.
    async fn find_pipeline(
        &self,
        application: &str,
        name: &str,
    ) -> StoreResult<Option<PipelineRecord>>;
    /// Latest versions, by application then name.
    async fn list_pipelines(&self, application: Option<&str>) -> StoreResult<Vec<PipelineRecord>>;
    /// Every version of one pipeline, newest first.
    async fn pipeline_history(&self, id: &str) -> StoreResult<Vec<PipelineRecord>>;
    /// Deletes a pipeline and its history (executions stay).
    async fn delete_pipeline(&self, id: &str) -> StoreResult<bool>;

    /// Writes a new execution with all its stages; removes `ack` from the queue in the same
    /// transaction.
    async fn create_execution(&self, execution: &Execution, ack: Option<i64>) -> StoreResult<()>;
    /// Writes the execution's header and the stages at `changed_stages`; removes `ack` from the
    /// queue in the same transaction.
    async fn update_execution(
        &self,
        execution: &Execution,
        changed_stages: &[usize],
        ack: Option<i64>,
    ) -> StoreResult<()>;
    /// Writes several executions' changes in ONE transaction (group commit): all or none.
    async fn write_executions(&self, writes: &[ExecutionWrite<'_>]) -> StoreResult<()>;
    /// One execution with its stages.
    async fn get_execution(&self, id: &str) -> StoreResult<Option<Execution>>;
    /// Listing rows, newest first.
    async fn list_executions(&self, filter: &ExecutionFilter)
    -> StoreResult<Vec<ExecutionSummary>>;
    /// Every execution that is not complete, oldest first (for recovery after a restart).
    async fn incomplete_executions(&self) -> StoreResult<Vec<Execution>>;
    /// Deletes completed executions that ended before `before` (epoch millis); returns how many.
    async fn purge_executions(&self, before: i64) -> StoreResult<u64>;

    /// Queues a command; returns its id.
    async fn enqueue(&self, execution_id: &str, payload: &Value) -> StoreResult<i64>;
    /// Commands not yet applied, oldest first.
    async fn pending_commands(&self, limit: usize) -> StoreResult<Vec<QueuedCommand>>;
    /// Removes a command without applying it (it was refused).
    async fn ack(&self, id: i64) -> StoreResult<()>;

    /// One minimal durable write (a one-row update in its own transaction). The benchmark uses it
    /// to measure the raw commit rate of the backend.
    async fn probe_write(&self) -> StoreResult<()>;
}
