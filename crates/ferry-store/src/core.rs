//! The store's logic, written once over sqlx's generic API and instantiated for SQLite and
//! PostgreSQL. Every statement is portable SQL with `$n` placeholders; what differs between the
//! backends (how a transaction begins, how catalog writes are serialized) is in [`Dialect`].

use crate::codec::{
    ExecutionSpec, application_from, canonical_json, execution_body, execution_from, from_json,
    status, to_json,
};
use ferry_core::{
    Application, DocumentRecord, Execution, ExecutionFilter, ExecutionSummary, ExecutionWrite,
    Pipeline, PipelineRecord, QueuedCommand, StageExecution, Status, StoreError, StoreResult,
};
use serde_json::Value;
use sqlx::{
    AssertSqlSafe, ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row,
    Transaction, Type,
};
use std::collections::HashMap;
use std::sync::Arc;

/// What differs between the backends.
pub(crate) trait Dialect: Database {
    /// Starts a write transaction. SQLite: `BEGIN IMMEDIATE`, which takes the write lock at once
    /// (a deferred transaction that reads first can fail with SQLITE_BUSY when it upgrades).
    const BEGIN_WRITE: &'static str;
    /// Starts a read transaction that sees one snapshot across several statements.
    const BEGIN_READ: &'static str;
    /// Run first in a transaction that writes applications or pipelines, to serialize those
    /// read-check-write sequences. `None` when the backend already has a single writer.
    const LOCK_CATALOG: Option<&'static str>;
    /// Rows changed by a statement.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

impl Dialect for sqlx::Sqlite {
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    const BEGIN_READ: &'static str = "BEGIN";
    const LOCK_CATALOG: Option<&'static str> = None;
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

impl Dialect for sqlx::Postgres {
    const BEGIN_WRITE: &'static str = "BEGIN";
    const BEGIN_READ: &'static str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
    /// A transaction-scoped advisory lock; the key is arbitrary but fixed ("ferry" in ASCII).
    const LOCK_CATALOG: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(112101114114121)");
    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }
}

/// Maps a driver error. Unique-key violations are user conflicts; decode failures mean a stored
/// row cannot be read; the rest are backend failures (messages only).
pub(crate) fn db_error(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Database(d) if d.is_unique_violation() => {
            StoreError::Conflict(format!("already exists ({})", d.message()))
        }
        sqlx::Error::ColumnDecode { index, source } => StoreError::Corrupt {
            what: format!("column {index}"),
            message: source.to_string(),
        },
        sqlx::Error::Decode(source) => StoreError::Corrupt {
            what: "row".into(),
            message: source.to_string(),
        },
        other => StoreError::Backend(other.to_string()),
    }
}

/// Statements whose text is built once at start-up (they embed the complete-status list, which
/// comes from [`Status::is_complete`], never from input).
struct Built {
    incomplete_headers: Arc<str>,
    incomplete_stages: Arc<str>,
    purge_stages: Arc<str>,
    purge_executions: Arc<str>,
}

impl Built {
    fn new() -> Built {
        let complete = Status::ALL
            .into_iter()
            .filter(|s| s.is_complete())
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ");
        Built {
            incomplete_headers: format!(
                "{EXECUTION_HEADER} WHERE status NOT IN ({complete}) ORDER BY build_time, id"
            )
            .into(),
            incomplete_stages: format!(
                "SELECT s.execution_id, s.idx, s.body FROM stages s \
                 WHERE s.execution_id IN \
                 (SELECT e.id FROM executions e WHERE e.status NOT IN ({complete})) \
                 ORDER BY s.execution_id, s.idx"
            )
            .into(),
            purge_stages: format!(
                "DELETE FROM stages WHERE execution_id IN \
                 (SELECT e.id FROM executions e WHERE e.status IN ({complete}) AND e.end_time < $1)"
            )
            .into(),
            purge_executions: format!(
                "DELETE FROM executions WHERE status IN ({complete}) AND end_time < $1"
            )
            .into(),
        }
    }
}

/// The columns [`Core::execution_from`] reads.
macro_rules! execution_header {
    () => {
        "SELECT id, spec, body FROM executions"
    };
}
const EXECUTION_HEADER: &str = execution_header!();

/// The columns [`Core::summary_from`] reads: no JSON, no stage rows.
const SUMMARY_COLUMNS: &str = "SELECT id, application, pipeline_config_id, name, status, \
     build_time, start_time, end_time, trigger_type, trigger_user FROM executions";

/// The columns [`Core::pipeline_from`] reads: each pipeline with its latest version.
macro_rules! pipeline_latest {
    () => {
        "SELECT p.id, p.application, p.name, v.version, v.spec, v.updated_by, v.updated_at \
         FROM pipelines p \
         JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version"
    };
}

/// What [`ExecutionFilter::limit`] 0 means.
const DEFAULT_LIST_LIMIT: usize = 100;

/// The shared implementation. `writer` takes every write; `reader` every read outside a write.
pub(crate) struct Core<DB: Database> {
    /// SQLite: a pool of exactly one connection (SQLite has one writer; queueing in the pool
    /// instead of in SQLite's lock avoids SQLITE_BUSY). PostgreSQL: the pool.
    pub writer: Pool<DB>,
    /// SQLite: a few query-only connections that read while the writer commits (WAL).
    /// PostgreSQL: the same pool as `writer`.
    pub reader: Pool<DB>,
    built: Built,
}

impl<DB> Core<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    usize: ColumnIndex<DB::Row>,
{
    pub fn new(writer: Pool<DB>, reader: Pool<DB>) -> Core<DB> {
        Core {
            writer,
            reader,
            built: Built::new(),
        }
    }

    /// Closes both pools, waiting for connections to be returned.
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }

    async fn begin_write(&self) -> StoreResult<Transaction<'static, DB>> {
        self.writer
            .begin_with(DB::BEGIN_WRITE)
            .await
            .map_err(db_error)
    }

    async fn begin_read(&self) -> StoreResult<Transaction<'static, DB>> {
        self.reader
            .begin_with(DB::BEGIN_READ)
            .await
            .map_err(db_error)
    }

    /// A write transaction that may touch applications and pipelines.
    async fn begin_catalog_write(&self) -> StoreResult<Transaction<'static, DB>> {
        let mut tx = self.begin_write().await?;
        if let Some(lock) = DB::LOCK_CATALOG {
            sqlx::query(lock)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
        }
        Ok(tx)
    }

    fn get<T>(row: &DB::Row, i: usize) -> StoreResult<T>
    where
        T: for<'r> Decode<'r, DB> + Type<DB>,
    {
        row.try_get::<T, usize>(i).map_err(db_error)
    }

    // ----- applications -------------------------------------------------------------------

    pub async fn put_application(&self, app: &Application) -> StoreResult<Application> {
        let body = to_json("application body", app)?;
        let now = ferry_core::now_millis();
        let mut tx = self.begin_catalog_write().await?;
        let row = sqlx::query(
            "INSERT INTO applications (name, body, created_at, updated_at) VALUES ($1, $2, $3, $3) \
             ON CONFLICT (name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at \
             RETURNING created_at, updated_at",
        )
        .bind(app.name.as_str())
        .bind(body)
        .bind(now)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(Application {
            created_at: Self::get(&row, 0)?,
            updated_at: Self::get(&row, 1)?,
            ..app.clone()
        })
    }

    fn application_from(row: &DB::Row) -> StoreResult<Application> {
        let name: String = Self::get(row, 0)?;
        let body: String = Self::get(row, 1)?;
        application_from(&body, Self::get(row, 2)?, Self::get(row, 3)?).map_err(|e| match e {
            StoreError::Corrupt { message, .. } => StoreError::Corrupt {
                what: format!("application {name}"),
                message,
            },
            other => other,
        })
    }

    pub async fn get_application(&self, name: &str) -> StoreResult<Option<Application>> {
        let row = sqlx::query(
            "SELECT name, body, created_at, updated_at FROM applications WHERE name = $1",
        )
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(Self::application_from).transpose()
    }

    pub async fn list_applications(&self) -> StoreResult<Vec<Application>> {
        let rows = sqlx::query("SELECT name, body, created_at, updated_at FROM applications")
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        let mut apps = rows
            .iter()
            .map(Self::application_from)
            .collect::<StoreResult<Vec<_>>>()?;
        // Sorted here, not in SQL: PostgreSQL's text order depends on the database's collation.
        apps.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(apps)
    }

    pub async fn delete_application(&self, name: &str) -> StoreResult<bool> {
        let mut tx = self.begin_catalog_write().await?;
        let row = sqlx::query("SELECT COUNT(*) FROM pipelines WHERE application = $1")
            .bind(name)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_error)?;
        let pipelines: i64 = Self::get(&row, 0)?;
        if pipelines > 0 {
            return Err(StoreError::Conflict(format!(
                "application \"{name}\" still has {pipelines} pipeline(s); delete them first"
            )));
        }
        let done = sqlx::query("DELETE FROM applications WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    // ----- documents ----------------------------------------------------------------------

    fn document_from(kind: &str, row: &DB::Row) -> StoreResult<DocumentRecord> {
        let name: String = Self::get(row, 0)?;
        let version: i64 = Self::get(row, 1)?;
        let text: String = Self::get(row, 2)?;
        let body = from_json(&text, || format!("{kind} {name} v{version}"))?;
        Ok(DocumentRecord {
            kind: kind.to_string(),
            name,
            version,
            body,
            updated_by: Self::get(row, 3)?,
            updated_at: Self::get(row, 4)?,
        })
    }

    pub async fn save_document(
        &self,
        kind: &str,
        name: &str,
        body: &Value,
        by: &str,
    ) -> StoreResult<DocumentRecord> {
        let text = to_json("document body", body)?;
        let mut tx = self.begin_catalog_write().await?;
        let latest = sqlx::query(
            "SELECT name, version, body, updated_by, updated_at FROM documents \
             WHERE kind = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
        )
        .bind(kind)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;
        let latest = latest
            .as_ref()
            .map(|row| Self::document_from(kind, row))
            .transpose()?;
        if let Some(latest) = latest
            .as_ref()
            .filter(|l| canonical_json(&l.body) == canonical_json(body))
        {
            return Ok(latest.clone());
        }
        let version = latest.map_or(1, |l| l.version + 1);
        let now = ferry_core::now_millis();
        sqlx::query(
            "INSERT INTO documents (kind, name, version, body, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(kind)
        .bind(name)
        .bind(version)
        .bind(text)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(DocumentRecord {
            kind: kind.to_string(),
            name: name.to_string(),
            version,
            body: body.clone(),
            updated_by: by.to_string(),
            updated_at: now,
        })
    }

    pub async fn get_document(
        &self,
        kind: &str,
        name: &str,
        version: Option<i64>,
    ) -> StoreResult<Option<DocumentRecord>> {
        let row = match version {
            Some(v) => sqlx::query(
                "SELECT name, version, body, updated_by, updated_at FROM documents \
                 WHERE kind = $1 AND name = $2 AND version = $3",
            )
            .bind(kind)
            .bind(name)
            .bind(v),
            None => sqlx::query(
                "SELECT name, version, body, updated_by, updated_at FROM documents \
                 WHERE kind = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(kind)
            .bind(name),
        }
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref()
            .map(|row| Self::document_from(kind, row))
            .transpose()
    }

    pub async fn list_documents(&self, kind: &str) -> StoreResult<Vec<DocumentRecord>> {
        let rows = sqlx::query(
            "SELECT d.name, d.version, d.body, d.updated_by, d.updated_at FROM documents d \
             WHERE d.kind = $1 AND d.version = \
               (SELECT MAX(l.version) FROM documents l WHERE l.kind = d.kind AND l.name = d.name)",
        )
        .bind(kind)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        let mut out = rows
            .iter()
            .map(|row| Self::document_from(kind, row))
            .collect::<StoreResult<Vec<_>>>()?;
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    pub async fn document_history(
        &self,
        kind: &str,
        name: &str,
    ) -> StoreResult<Vec<DocumentRecord>> {
        let rows = sqlx::query(
            "SELECT name, version, body, updated_by, updated_at FROM documents \
             WHERE kind = $1 AND name = $2 ORDER BY version DESC",
        )
        .bind(kind)
        .bind(name)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| Self::document_from(kind, row))
            .collect()
    }

    pub async fn delete_document(&self, kind: &str, name: &str) -> StoreResult<bool> {
        let mut tx = self.begin_catalog_write().await?;
        let done = sqlx::query("DELETE FROM documents WHERE kind = $1 AND name = $2")
            .bind(kind)
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    // ----- pipelines ----------------------------------------------------------------------

    pub async fn save_pipeline(
        &self,
        pipeline: &Pipeline,
        by: &str,
    ) -> StoreResult<PipelineRecord> {
        let (app, name) = (pipeline.application.as_str(), pipeline.name.as_str());
        let mut tx = self.begin_catalog_write().await?;

        let holder_of_name: Option<String> =
            match sqlx::query("SELECT id FROM pipelines WHERE application = $1 AND name = $2")
                .bind(app)
                .bind(name)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_error)?
            {
                Some(row) => Some(Self::get(&row, 0)?),
                None => None,
            };
        let id = if pipeline.id.is_empty() {
            holder_of_name
                .clone()
                .unwrap_or_else(ferry_core::new_random_id)
        } else {
            pipeline.id.clone()
        };
        if let Some(holder) = &holder_of_name
            && holder != &id
        {
            return Err(StoreError::Conflict(format!(
                "application \"{app}\" already has a pipeline named \"{name}\" (id {holder})"
            )));
        }

        let mut spec = pipeline.spec.clone();
        if let Value::Object(doc) = &mut spec {
            doc.insert("id".into(), Value::String(id.clone()));
        }
        let now = ferry_core::now_millis();

        let current = sqlx::query(
            "SELECT p.application, p.name, p.version, v.spec, v.updated_by, v.updated_at \
             FROM pipelines p \
             LEFT JOIN pipeline_versions v ON v.pipeline_id = p.id AND v.version = p.version \
             WHERE p.id = $1",
        )
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_error)?;

        let version = match &current {
            None => {
                sqlx::query(
                    "INSERT INTO pipelines (id, application, name, version, created_at, updated_at) \
                     VALUES ($1, $2, $3, 1, $4, $4)",
                )
                .bind(id.as_str())
                .bind(app)
                .bind(name)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                1
            }
            Some(row) => {
                let (old_app, old_name): (String, String) =
                    (Self::get(row, 0)?, Self::get(row, 1)?);
                let old_version: i64 = Self::get(row, 2)?;
                let old_spec: Option<String> = Self::get(row, 3)?;
                if let Some(old_text) = &old_spec {
                    let old: Value =
                        from_json(old_text, || format!("pipeline {id} v{old_version}"))?;
                    if old_app == app
                        && old_name == name
                        && canonical_json(&old) == canonical_json(&spec)
                    {
                        // Unchanged: no new version, return the stored one.
                        return Ok(PipelineRecord {
                            id,
                            application: old_app,
                            name: old_name,
                            version: old_version,
                            spec: old,
                            updated_by: Self::get(row, 4)?,
                            updated_at: Self::get(row, 5)?,
                        });
                    }
                }
                let version = old_version + 1;
                sqlx::query(
                    "UPDATE pipelines SET application = $2, name = $3, version = $4, updated_at = $5 \
                     WHERE id = $1",
                )
                .bind(id.as_str())
                .bind(app)
                .bind(name)
                .bind(version)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                version
            }
        };
        sqlx::query(
            "INSERT INTO pipeline_versions (pipeline_id, version, spec, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id.as_str())
        .bind(version)
        .bind(to_json("pipeline spec", &spec)?)
        .bind(by)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(PipelineRecord {
            id,
            application: app.to_string(),
            name: name.to_string(),
            version,
            spec,
            updated_by: by.to_string(),
            updated_at: now,
        })
    }

    /// A row of `pipeline_latest!()`.
    fn pipeline_from(row: &DB::Row) -> StoreResult<PipelineRecord> {
        let id: String = Self::get(row, 0)?;
        let version: i64 = Self::get(row, 3)?;
        let spec: String = Self::get(row, 4)?;
        Ok(PipelineRecord {
            spec: from_json(&spec, || format!("pipeline {id} v{version}"))?,
            application: Self::get(row, 1)?,
            name: Self::get(row, 2)?,
            version,
            updated_by: Self::get(row, 5)?,
            updated_at: Self::get(row, 6)?,
            id,
        })
    }

    pub async fn get_pipeline(&self, id: &str) -> StoreResult<Option<PipelineRecord>> {
        let row = sqlx::query(concat!(pipeline_latest!(), " WHERE p.id = $1"))
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(db_error)?;
        row.as_ref().map(Self::pipeline_from).transpose()
    }

    pub async fn find_pipeline(
        &self,
        application: &str,
        name: &str,
    ) -> StoreResult<Option<PipelineRecord>> {
        let row = sqlx::query(concat!(
            pipeline_latest!(),
            " WHERE p.application = $1 AND p.name = $2"
        ))
        .bind(application)
        .bind(name)
        .fetch_optional(&self.reader)
        .await
        .map_err(db_error)?;
        row.as_ref().map(Self::pipeline_from).transpose()
    }

    pub async fn list_pipelines(
        &self,
        application: Option<&str>,
    ) -> StoreResult<Vec<PipelineRecord>> {
        let rows = match application {
            Some(app) => {
                sqlx::query(concat!(pipeline_latest!(), " WHERE p.application = $1"))
                    .bind(app)
                    .fetch_all(&self.reader)
                    .await
            }
            None => {
                sqlx::query(pipeline_latest!())
                    .fetch_all(&self.reader)
                    .await
            }
        }
        .map_err(db_error)?;
        let mut records = rows
            .iter()
            .map(Self::pipeline_from)
            .collect::<StoreResult<Vec<_>>>()?;
        records.sort_by(|a, b| (&a.application, &a.name).cmp(&(&b.application, &b.name)));
        Ok(records)
    }

    pub async fn pipeline_history(&self, id: &str) -> StoreResult<Vec<PipelineRecord>> {
        let rows = sqlx::query(
            "SELECT v.version, v.spec, v.updated_by, v.updated_at, p.application, p.name \
             FROM pipeline_versions v JOIN pipelines p ON p.id = v.pipeline_id \
             WHERE v.pipeline_id = $1 ORDER BY v.version DESC",
        )
        .bind(id)
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let version: i64 = Self::get(row, 0)?;
                let spec_text: String = Self::get(row, 1)?;
                let spec: Value = from_json(&spec_text, || format!("pipeline {id} v{version}"))?;
                // A version keeps the application and name it was saved with (renames).
                let field = |key: &str, current: String| match spec.get(key) {
                    Some(Value::String(s)) => s.clone(),
                    _ => current,
                };
                Ok(PipelineRecord {
                    id: id.to_string(),
                    application: field("application", Self::get(row, 4)?),
                    name: field("name", Self::get(row, 5)?),
                    version,
                    updated_by: Self::get(row, 2)?,
                    updated_at: Self::get(row, 3)?,
                    spec,
                })
            })
            .collect()
    }

    pub async fn delete_pipeline(&self, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin_catalog_write().await?;
        sqlx::query("DELETE FROM pipeline_versions WHERE pipeline_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let done = sqlx::query("DELETE FROM pipelines WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(DB::rows_affected(&done) > 0)
    }

    // ----- executions ---------------------------------------------------------------------

    async fn write_stage(
        tx: &mut Transaction<'static, DB>,
        execution_id: &str,
        idx: usize,
        stage: &StageExecution,
    ) -> StoreResult<()> {
        let body = to_json("stage", stage)?;
        sqlx::query(
            "INSERT INTO stages (execution_id, idx, id, ref_id, status, body) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (execution_id, idx) DO UPDATE SET \
             id = excluded.id, ref_id = excluded.ref_id, status = excluded.status, body = excluded.body",
        )
        .bind(execution_id)
        .bind(idx as i64)
        .bind(stage.id.as_str())
        .bind(stage.ref_id.as_str())
        .bind(stage.status.as_str())
        .bind(body)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
        Ok(())
    }

    async fn ack_in(tx: &mut Transaction<'static, DB>, ack: Option<i64>) -> StoreResult<()> {
        if let Some(id) = ack {
            sqlx::query("DELETE FROM queue WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await
                .map_err(db_error)?;
        }
        Ok(())
    }

    pub async fn create_execution(&self, e: &Execution, ack: Option<i64>) -> StoreResult<()> {
        let acks: Vec<i64> = ack.into_iter().collect();
        let write = ExecutionWrite {
            execution: e,
            create: true,
            changed_stages: &[],
            acks: &acks,
        };
        self.write_executions(&[write]).await
    }

    pub async fn update_execution(
        &self,
        e: &Execution,
        changed_stages: &[usize],
        ack: Option<i64>,
    ) -> StoreResult<()> {
        let acks: Vec<i64> = ack.into_iter().collect();
        let write = ExecutionWrite {
            execution: e,
            create: false,
            changed_stages,
            acks: &acks,
        };
        self.write_executions(&[write]).await
    }

    /// Writes every change in one transaction (the engine's group commit).
    pub async fn write_executions(&self, writes: &[ExecutionWrite<'_>]) -> StoreResult<()> {
        // Encode everything before taking the write lock.
        let mut encoded = Vec::with_capacity(writes.len());
        for w in writes {
            let e = w.execution;
            let spec = if w.create {
                Some(to_json(
                    "execution spec",
                    &ExecutionSpec {
                        trigger: &e.trigger,
                        stage_defs: &e.stage_defs,
                    },
                )?)
            } else {
                None
            };
            let body = execution_body(e)?;
            let indexes: Vec<usize> = if w.create {
                (0..e.stages.len()).collect()
            } else {
                w.changed_stages.to_vec()
            };
            let mut stages = Vec::with_capacity(indexes.len());
            for idx in indexes {
                let stage = e.stages.get(idx).ok_or_else(|| {
                    StoreError::Conflict(format!(
                        "execution {} has {} stages; cannot write stage index {idx}",
                        e.id,
                        e.stages.len()
                    ))
                })?;
                stages.push((idx, stage));
            }
            encoded.push((w, spec, body, stages));
        }
        let mut tx = self.begin_write().await?;
        let now = ferry_core::now_millis();
        for (w, spec, body, stages) in encoded {
            let e = w.execution;
            if let Some(spec) = spec {
                sqlx::query(
                    "INSERT INTO executions (id, application, pipeline_config_id, name, status, build_time, \
                     start_time, end_time, trigger_type, trigger_user, spec, body, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(e.id.as_str())
                .bind(e.application.as_str())
                .bind(e.pipeline_config_id.as_str())
                .bind(e.name.as_str())
                .bind(e.status.as_str())
                .bind(e.build_time)
                .bind(e.start_time)
                .bind(e.end_time)
                .bind(e.trigger.trigger_type.as_str())
                .bind(e.trigger.user.as_str())
                .bind(spec)
                .bind(body)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(|err| match db_error(err) {
                    StoreError::Conflict(_) => {
                        StoreError::Conflict(format!("execution {} already exists", e.id))
                    }
                    other => other,
                })?;
            } else {
                let done = sqlx::query(
                    "UPDATE executions SET status = $2, start_time = $3, end_time = $4, body = $5, \
                     updated_at = $6 WHERE id = $1",
                )
                .bind(e.id.as_str())
                .bind(e.status.as_str())
                .bind(e.start_time)
                .bind(e.end_time)
                .bind(body)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(db_error)?;
                if DB::rows_affected(&done) == 0 {
                    // Dropping the transaction rolls it back: nothing in the batch is applied.
                    return Err(StoreError::Conflict(format!(
                        "execution {} does not exist",
                        e.id
                    )));
                }
            }
            for (idx, stage) in stages {
                Self::write_stage(&mut tx, &e.id, idx, stage).await?;
            }
            for &ack in w.acks {
                Self::ack_in(&mut tx, Some(ack)).await?;
            }
        }
        tx.commit().await.map_err(db_error)
    }

    /// An execution from a row of `execution_header!()` and its stages.
    fn execution_from(row: &DB::Row, stages: Vec<StageExecution>) -> StoreResult<Execution> {
        let id: String = Self::get(row, 0)?;
        let spec: String = Self::get(row, 1)?;
        let body: String = Self::get(row, 2)?;
        execution_from(&id, &body, &spec, stages)
    }

    /// A stage from `idx, body` starting at column `at`, checking that it sits at position
    /// `expected_idx`.
    fn stage_from(
        row: &DB::Row,
        at: usize,
        execution_id: &str,
        expected_idx: usize,
    ) -> StoreResult<StageExecution> {
        let idx: i64 = Self::get(row, at)?;
        let what = || format!("stage {execution_id}[{idx}]");
        if idx != expected_idx as i64 {
            return Err(StoreError::Corrupt {
                what: what(),
                message: format!("expected stage index {expected_idx}"),
            });
        }
        let body: String = Self::get(row, at + 1)?;
        from_json(&body, what)
    }

    pub async fn get_execution(&self, id: &str) -> StoreResult<Option<Execution>> {
        // One snapshot for the header and the stages.
        let mut tx = self.begin_read().await?;
        let Some(header) = sqlx::query(concat!(execution_header!(), " WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_error)?
        else {
            return Ok(None);
        };
        let rows = sqlx::query("SELECT idx, body FROM stages WHERE execution_id = $1 ORDER BY idx")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let stages = rows
            .iter()
            .enumerate()
            .map(|(i, row)| Self::stage_from(row, 0, id, i))
            .collect::<StoreResult<Vec<_>>>()?;
        Self::execution_from(&header, stages).map(Some)
    }

    fn summary_from(row: &DB::Row) -> StoreResult<ExecutionSummary> {
        let id: String = Self::get(row, 0)?;
        let status_text: String = Self::get(row, 4)?;
        let pipeline_config_id: String = Self::get(row, 2)?;
        Ok(ExecutionSummary {
            execution_type: Execution::type_for_pipeline_id(&pipeline_config_id).into(),
            status: status(&status_text, || format!("execution {id} status"))?,
            application: Self::get(row, 1)?,
            pipeline_config_id,
            name: Self::get(row, 3)?,
            build_time: Self::get(row, 5)?,
            start_time: Self::get(row, 6)?,
            end_time: Self::get(row, 7)?,
            trigger_type: Self::get(row, 8)?,
            user: Self::get(row, 9)?,
            id,
        })
    }

    pub async fn list_executions(
        &self,
        filter: &ExecutionFilter,
    ) -> StoreResult<Vec<ExecutionSummary>> {
        // Only placeholders are added to the text; every value is bound.
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.application.is_some() {
            conditions.push(format!("application = {}", next()));
        }
        if filter.pipeline_config_id.is_some() {
            conditions.push(format!("pipeline_config_id = {}", next()));
        }
        if !filter.statuses.is_empty() {
            let marks: Vec<String> = filter.statuses.iter().map(|_| next()).collect();
            conditions.push(format!("status IN ({})", marks.join(", ")));
        }
        let limit_mark = next();
        let mut sql = SUMMARY_COLUMNS.to_string();
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(" ORDER BY build_time DESC, id DESC LIMIT ");
        sql.push_str(&limit_mark);

        let mut query = sqlx::query(AssertSqlSafe(sql));
        if let Some(app) = &filter.application {
            query = query.bind(app.as_str());
        }
        if let Some(p) = &filter.pipeline_config_id {
            query = query.bind(p.as_str());
        }
        for s in &filter.statuses {
            query = query.bind(s.as_str());
        }
        let limit = if filter.limit == 0 {
            DEFAULT_LIST_LIMIT
        } else {
            filter.limit
        };
        let rows = query
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.reader)
            .await
            .map_err(db_error)?;
        rows.iter().map(Self::summary_from).collect()
    }

    pub async fn incomplete_executions(&self) -> StoreResult<Vec<Execution>> {
        let mut tx = self.begin_read().await?;
        let headers = sqlx::query(AssertSqlSafe(self.built.incomplete_headers.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        let stage_rows = sqlx::query(AssertSqlSafe(self.built.incomplete_stages.clone()))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        let mut stages: HashMap<String, Vec<StageExecution>> = HashMap::new();
        for row in &stage_rows {
            let execution_id: String = Self::get(row, 0)?;
            let list = stages.entry(execution_id.clone()).or_default();
            let stage = Self::stage_from(row, 1, &execution_id, list.len())?;
            list.push(stage);
        }
        headers
            .iter()
            .map(|row| {
                let id: String = Self::get(row, 0)?;
                Self::execution_from(row, stages.remove(&id).unwrap_or_default())
            })
            .collect()
    }

    pub async fn purge_executions(&self, before: i64) -> StoreResult<u64> {
        let mut tx = self.begin_write().await?;
        sqlx::query(AssertSqlSafe(self.built.purge_stages.clone()))
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        let done = sqlx::query(AssertSqlSafe(self.built.purge_executions.clone()))
            .bind(before)
            .execute(&mut *tx)
            .await
            .map_err(db_error)?;
        tx.commit().await.map_err(db_error)?;
        Ok(DB::rows_affected(&done))
    }

    // ----- queue and probe ----------------------------------------------------------------

    pub async fn enqueue(&self, execution_id: &str, payload: &Value) -> StoreResult<i64> {
        let row = sqlx::query(
            "INSERT INTO queue (execution_id, payload, created_at) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(execution_id)
        .bind(to_json("queued command", payload)?)
        .bind(ferry_core::now_millis())
        .fetch_one(&self.writer)
        .await
        .map_err(db_error)?;
        Self::get(&row, 0)
    }

    pub async fn pending_commands(&self, limit: usize) -> StoreResult<Vec<QueuedCommand>> {
        let rows = sqlx::query(
            "SELECT id, execution_id, payload, created_at FROM queue ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.reader)
        .await
        .map_err(db_error)?;
        rows.iter()
            .map(|row| {
                let id: i64 = Self::get(row, 0)?;
                let payload: String = Self::get(row, 2)?;
                Ok(QueuedCommand {
                    payload: from_json(&payload, || format!("queued command {id}"))?,
                    execution_id: Self::get(row, 1)?,
                    created_at: Self::get(row, 3)?,
                    id,
                })
            })
            .collect()
    }

    pub async fn ack(&self, id: i64) -> StoreResult<()> {
        sqlx::query("DELETE FROM queue WHERE id = $1")
            .bind(id)
            .execute(&self.writer)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    pub async fn probe_write(&self) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO probe (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = probe.n + 1",
        )
        .execute(&self.writer)
        .await
        .map_err(db_error)?;
        Ok(())
    }
}
