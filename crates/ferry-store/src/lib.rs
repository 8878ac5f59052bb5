//! Ferry's durable store: the [`ferry_core::Store`] trait on SQLite (the default, one file) and
//! PostgreSQL, with sqlx. Nothing else in Ferry knows SQL; everything else holds an
//! `Arc<dyn Store>` from [`open`].
//!
//! # Choosing a backend
//!
//! [`StoreConfig::from_url_or_dir`] reads an optional database URL: none means SQLite at
//! `<data dir>/ferry.db`, `sqlite://path` another SQLite file, `postgres://…` PostgreSQL.
//! [`open`] creates the file and its directories, connects, applies the migrations and returns
//! the store. The password of a PostgreSQL URL never appears in `Debug` output or in an error.
//!
//! # Schema
//!
//! The same logical schema on both backends (`migrations/sqlite`, `migrations/postgres`). JSON is
//! TEXT written by serde_json on both, so key order (`preserve_order`) and numbers come back as
//! written and an [`Execution`](ferry_core::Execution) read back is equal to the one written.
//! Times are epoch milliseconds.
//!
//! | table | key | columns | JSON |
//! |---|---|---|---|
//! | `documents` | `kind`, `name`, `version` | `updated_by`, `updated_at` | `body`: the document as written (canary configs, …) |
//! | `applications` | `name` | `created_at`, `updated_at` | `body`: the application (its times are read from the columns) |
//! | `pipelines` | `id`; unique (`application`, `name`) | `version` (latest), `created_at`, `updated_at` | — |
//! | `pipeline_versions` | (`pipeline_id`, `version`) | `updated_by`, `updated_at` | `spec`: the document, with `id` |
//! | `executions` | `id` | `application`, `pipeline_config_id`, `name`, `status`, `build_time`, `start_time`, `end_time`, `trigger_type`, `trigger_user`, `updated_at` | `spec`: trigger and stage definitions (written once, at creation); `body`: the execution without stages, stage definitions and trigger |
//! | `stages` | (`execution_id`, `idx`) | `id`, `ref_id`, `status` | `body`: the whole stage |
//! | `queue` | `id` (auto-increment, never reused) | `execution_id`, `created_at` | `payload` |
//! | `probe` | `id` | `n` | — |
//!
//! Reads rebuild executions and stages from the JSON; the columns next to it are copies written
//! in the same statement, there for filtering and ordering. So a field added to `Execution` or
//! `StageExecution` (with a serde default) is stored without a schema change.
//! Executions are indexed on (`application`, `build_time`), (`pipeline_config_id`,
//! `build_time`) and (`status`). Listings read only `executions` columns: no JSON is parsed and
//! no stage row is read. Migrations are embedded in the binary and applied at start-up through
//! sqlx's migrator (`_sqlx_migrations`: versioned, checksummed, each in its own transaction);
//! opening an up-to-date database applies nothing.
//!
//! # What is atomic
//!
//! Every [`Store`] method is one transaction (or one statement). In
//! particular:
//!
//! - `create_execution` writes the execution row, every stage row and removes the acknowledged
//!   queue entry together;
//! - `update_execution(execution, changed_stages, ack)` writes the header row, the stage rows at
//!   exactly the given indexes (nothing else) and removes `ack` from the queue together. This is
//!   the engine's hot path: one call per state transition, so a command is applied and
//!   forgotten in the same commit and a crash in between loses or repeats nothing. An update of
//!   an execution that does not exist fails with `Conflict` and acknowledges nothing;
//! - `save_pipeline` reads the current version, compares the canonical JSON (keys sorted) and
//!   writes the new version in one transaction; `delete_application` checks for pipelines and
//!   deletes in one. On PostgreSQL these catalog writes also take a transaction-scoped advisory
//!   lock so that concurrent saves cannot both take a version number or a name;
//! - reads of several tables (`get_execution`, `incomplete_executions`) run in one read
//!   transaction (SQLite's WAL snapshot; PostgreSQL `REPEATABLE READ READ ONLY`), so a header
//!   and its stages always come from the same commit.
//!
//! # Durability (SQLite)
//!
//! - `journal_mode = WAL`: readers never block the writer and the writer never blocks readers;
//!   a commit appends to the `-wal` file instead of rewriting pages.
//! - `synchronous = FULL`: the WAL is fsynced at every commit, so a committed transition survives
//!   a process kill **and** an OS crash or power loss. `NORMAL` would only sync at checkpoints:
//!   it survives a process kill but may lose the last commits on an OS crash, which for a
//!   deployment engine means re-running a step that already deployed. The cost is one fsync
//!   per commit, so the commit rate is bounded by the disk's sync latency
//!   ([`Store::probe_write`] measures it). On the 2-core development machine (release build)
//!   that was about 2,600–3,400 probe writes/s and 1,300–1,900 `update_execution`/s
//!   (0.5–0.8 ms each, one changed stage); the engine commits once per state transition.
//! - One writer connection (a pool of one): SQLite allows one writer at a time anyway, and
//!   queueing writers in the pool instead of in SQLite's lock means no SQLITE_BUSY inside the
//!   process. Write transactions start with `BEGIN IMMEDIATE`. `busy_timeout` (10 s) covers
//!   other processes on the same file. Readers are a small pool of `query_only` connections.
//! - `foreign_keys = ON`; a new database file is created with mode 0600 (the `-wal` and `-shm`
//!   files inherit it).
//!
//! # Conformance
//!
//! [`testkit`] holds the conformance suite every backend passes (this crate runs it on SQLite
//! and on a fresh PostgreSQL database); other crates may run it on their own stores or fakes.

mod codec;
mod config;
mod core;
mod migrations;
mod postgres;
mod sqlite;
pub mod testkit;

pub use config::{DEFAULT_POSTGRES_MAX_CONNECTIONS, SQLITE_FILE_NAME, StoreConfig};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

use ferry_core::{Store, StoreError};
use std::sync::Arc;

/// Opens the configured store: creates the SQLite file (and directories) or connects to
/// PostgreSQL, applies pending migrations, and returns it behind the trait.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>, StoreError> {
    let store: Arc<dyn Store> = match config {
        StoreConfig::Sqlite { path } => Arc::new(SqliteStore::open(path).await?),
        StoreConfig::Postgres {
            url,
            max_connections,
        } => Arc::new(PostgresStore::connect(url, *max_connections).await?),
    };
    tracing::info!(backend = store.backend(), location = %config.redacted(), "store opened");
    Ok(store)
}

/// Implements [`Store`] for a backend struct with a `core: Core<DB>` field and a
/// `scrub(&self, StoreError) -> StoreError` method, by delegating every call to the core.
macro_rules! delegate_store {
    ($ty:ty, $backend:literal) => {
        #[async_trait::async_trait]
        impl ferry_core::Store for $ty {
            fn backend(&self) -> &'static str {
                $backend
            }

            async fn put_application(
                &self,
                app: &ferry_core::Application,
            ) -> ferry_core::StoreResult<ferry_core::Application> {
                self.core
                    .put_application(app)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn get_application(
                &self,
                name: &str,
            ) -> ferry_core::StoreResult<Option<ferry_core::Application>> {
                self.core
                    .get_application(name)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn list_applications(
                &self,
            ) -> ferry_core::StoreResult<Vec<ferry_core::Application>> {
                self.core
                    .list_applications()
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn delete_application(&self, name: &str) -> ferry_core::StoreResult<bool> {
                self.core
                    .delete_application(name)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn save_document(
                &self,
                kind: &str,
                name: &str,
                body: &serde_json::Value,
                by: &str,
            ) -> ferry_core::StoreResult<ferry_core::DocumentRecord> {
                self.core
                    .save_document(kind, name, body, by)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn get_document(
                &self,
                kind: &str,
                name: &str,
                version: Option<i64>,
            ) -> ferry_core::StoreResult<Option<ferry_core::DocumentRecord>> {
                self.core
                    .get_document(kind, name, version)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn list_documents(
                &self,
                kind: &str,
            ) -> ferry_core::StoreResult<Vec<ferry_core::DocumentRecord>> {
                self.core
                    .list_documents(kind)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn document_history(
                &self,
                kind: &str,
                name: &str,
            ) -> ferry_core::StoreResult<Vec<ferry_core::DocumentRecord>> {
                self.core
                    .document_history(kind, name)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn delete_document(
                &self,
                kind: &str,
                name: &str,
            ) -> ferry_core::StoreResult<bool> {
                self.core
                    .delete_document(kind, name)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn save_pipeline(
                &self,
                pipeline: &ferry_core::Pipeline,
                by: &str,
            ) -> ferry_core::StoreResult<ferry_core::PipelineRecord> {
                self.core
                    .save_pipeline(pipeline, by)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn get_pipeline(
                &self,
                id: &str,
            ) -> ferry_core::StoreResult<Option<ferry_core::PipelineRecord>> {
                self.core.get_pipeline(id).await.map_err(|e| self.scrub(e))
            }

            async fn find_pipeline(
                &self,
                application: &str,
                name: &str,
            ) -> ferry_core::StoreResult<Option<ferry_core::PipelineRecord>> {
                self.core
                    .find_pipeline(application, name)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn list_pipelines(
                &self,
                application: Option<&str>,
            ) -> ferry_core::StoreResult<Vec<ferry_core::PipelineRecord>> {
                self.core
                    .list_pipelines(application)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn pipeline_history(
                &self,
                id: &str,
            ) -> ferry_core::StoreResult<Vec<ferry_core::PipelineRecord>> {
                self.core
                    .pipeline_history(id)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn delete_pipeline(&self, id: &str) -> ferry_core::StoreResult<bool> {
                self.core
                    .delete_pipeline(id)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn create_execution(
                &self,
                execution: &ferry_core::Execution,
                ack: Option<i64>,
            ) -> ferry_core::StoreResult<()> {
                self.core
                    .create_execution(execution, ack)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn update_execution(
                &self,
                execution: &ferry_core::Execution,
                changed_stages: &[usize],
                ack: Option<i64>,
            ) -> ferry_core::StoreResult<()> {
                self.core
                    .update_execution(execution, changed_stages, ack)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn write_executions(
                &self,
                writes: &[ferry_core::ExecutionWrite<'_>],
            ) -> ferry_core::StoreResult<()> {
                self.core
                    .write_executions(writes)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn get_execution(
                &self,
                id: &str,
            ) -> ferry_core::StoreResult<Option<ferry_core::Execution>> {
                self.core.get_execution(id).await.map_err(|e| self.scrub(e))
            }

            async fn list_executions(
                &self,
                filter: &ferry_core::ExecutionFilter,
            ) -> ferry_core::StoreResult<Vec<ferry_core::ExecutionSummary>> {
                self.core
                    .list_executions(filter)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn incomplete_executions(
                &self,
            ) -> ferry_core::StoreResult<Vec<ferry_core::Execution>> {
                self.core
                    .incomplete_executions()
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn purge_executions(&self, before: i64) -> ferry_core::StoreResult<u64> {
                self.core
                    .purge_executions(before)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn enqueue(
                &self,
                execution_id: &str,
                payload: &serde_json::Value,
            ) -> ferry_core::StoreResult<i64> {
                self.core
                    .enqueue(execution_id, payload)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn pending_commands(
                &self,
                limit: usize,
            ) -> ferry_core::StoreResult<Vec<ferry_core::QueuedCommand>> {
                self.core
                    .pending_commands(limit)
                    .await
                    .map_err(|e| self.scrub(e))
            }

            async fn ack(&self, id: i64) -> ferry_core::StoreResult<()> {
                self.core.ack(id).await.map_err(|e| self.scrub(e))
            }

            async fn probe_write(&self) -> ferry_core::StoreResult<()> {
                self.core.probe_write().await.map_err(|e| self.scrub(e))
            }
        }
    };
}
pub(crate) use delegate_store;
