//! The SQLite backend (the default): one file, WAL journal, `synchronous = FULL`, one writer
//! connection and a few query-only readers.

use crate::core::{Core, db_error};
use crate::migrations;
use ferry_core::{StoreError, StoreResult};
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection waits for a lock held by another connection (another process on the
/// same file, or a checkpoint) before failing with SQLITE_BUSY.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Read connections. Reads never block the writer, nor the writer them (WAL).
const READERS: u32 = 4;

/// The store on a SQLite file. See the crate docs for the durability settings.
pub struct SqliteStore {
    pub(crate) core: Core<Sqlite>,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the database file at `path`
    /// and applies pending migrations. A new file is created with mode 0600 on Unix.
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        create_file(path).await?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // Only the writer sets the journal mode (a persistent property of the file); it must be
        // in WAL before the readers connect.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone().journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(|e| open_error(path, e))?;
        migrations::migrator(migrations::SQLITE)
            .run(&writer)
            .await
            .map_err(|e| migrations::error(e, &[]))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(base.pragma("query_only", "ON"))
            .await
            .map_err(|e| open_error(path, e))?;
        Ok(SqliteStore {
            core: Core::new(writer, reader),
            path: path.to_path_buf(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes every connection, waiting for those in use to be returned. Calls made after this
    /// fail with a backend error.
    pub async fn close(&self) {
        self.core.close().await;
    }

    /// Errors need no scrubbing: a file path is not a secret.
    fn scrub(&self, e: StoreError) -> StoreError {
        e
    }
}

fn open_error(path: &Path, e: sqlx::Error) -> StoreError {
    match db_error(e) {
        StoreError::Backend(m) => StoreError::Backend(format!(
            "cannot open SQLite database {}: {m}",
            path.display()
        )),
        other => other,
    }
}

/// Creates the parent directories and, when the file does not exist yet, an empty file readable
/// only by its owner. SQLite creates its `-wal` and `-shm` files with the same mode.
async fn create_file(path: &Path) -> StoreResult<()> {
    let io = |what: &str, p: &Path, e: std::io::Error| {
        StoreError::Backend(format!("cannot {what} {}: {e}", p.display()))
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io("create directory", parent, e))?;
    }
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    match options.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(io("create", path, e)),
    }
}

crate::delegate_store!(SqliteStore, "sqlite");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use ferry_core::Store;
    use std::sync::Arc;

    async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("nested/dir/ferry.db"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn conformance() {
        let (_dir, store) = temp_store().await;
        assert_eq!(store.backend(), "sqlite");
        testkit::run_all(&store).await.unwrap();
    }

    #[tokio::test]
    async fn settings_are_durable_ones() {
        let (_dir, store) = temp_store().await;
        let mut conn = store.core.writer.acquire().await.unwrap();
        let one = |sql: &'static str| sqlx::query_scalar::<_, String>(sql);
        let mode = one("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(sync, 2, "synchronous = FULL");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        drop(conn);
        let mut reader = store.core.reader.acquire().await.unwrap();
        let query_only: i64 = sqlx::query_scalar("PRAGMA query_only")
            .fetch_one(&mut *reader)
            .await
            .unwrap();
        assert_eq!(query_only, 1, "readers cannot write");
        assert_eq!(store.core.writer.options().get_max_connections(), 1);
    }

    #[cfg(unix)]
    #[tokio::test]
    async fn new_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = temp_store().await;
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let wal = store.path().with_extension("db-wal");
        let mode = std::fs::metadata(&wal).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", wal.display());
    }

    #[tokio::test]
    async fn survives_reopen_and_migrates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        let e = testkit::sample_execution("app-durable", "p1", "01-durable", 1_000);
        let store = SqliteStore::open(&path).await.unwrap();
        store.create_execution(&e, None).await.unwrap();
        let mut changed = e.clone();
        changed.status = ferry_core::Status::Running;
        changed.stages[2]
            .outputs
            .insert("k".into(), serde_json::json!([1, 2]));
        store.update_execution(&changed, &[2], None).await.unwrap();
        // No close: the process could die here; every commit is already on disk.
        drop(store);

        for _ in 0..2 {
            let store = SqliteStore::open(&path).await.unwrap();
            assert_eq!(
                store.get_execution(&e.id).await.unwrap(),
                Some(changed.clone())
            );
            let applied: Vec<(i64, bool)> =
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&store.core.reader)
                    .await
                    .unwrap();
            let want: Vec<(i64, bool)> = migrations::SQLITE.iter().map(|m| (m.0, true)).collect();
            assert_eq!(applied, want);
            store.close().await;
        }
    }

    /// A child process (this test binary, re-run with an environment variable) commits, says
    /// so, and is killed with SIGKILL without closing anything; every commit must be readable.
    #[tokio::test]
    async fn a_kill_loses_no_commit() {
        const DONE: &str = "FERRY_STORE_CHILD_DONE";
        if let Ok(path) = std::env::var("FERRY_STORE_KILL_CHILD") {
            let store = SqliteStore::open(Path::new(&path)).await.unwrap();
            for i in 0..20 {
                let e = testkit::sample_execution("app-kill", "p", &format!("kill-{i:02}"), i);
                store.create_execution(&e, None).await.unwrap();
            }
            println!("{DONE}");
            // Wait to be killed, connections open.
            tokio::time::sleep(Duration::from_secs(60)).await;
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "sqlite::tests::a_kill_loses_no_commit",
                "--nocapture",
            ])
            .env("FERRY_STORE_KILL_CHILD", &path)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let saw_done = tokio::task::spawn_blocking(move || {
            use std::io::BufRead;
            std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .any(|line| line.contains(DONE))
        })
        .await
        .unwrap();
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert!(saw_done, "the child did not finish writing ({status})");
        assert!(!status.success(), "the child must have been killed");
        let store = SqliteStore::open(&path).await.unwrap();
        for i in 0..20 {
            let want = testkit::sample_execution("app-kill", "p", &format!("kill-{i:02}"), i);
            assert_eq!(store.get_execution(&want.id).await.unwrap(), Some(want));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writers_never_see_busy() {
        let (_dir, store) = temp_store().await;
        let store = Arc::new(store);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut e = testkit::sample_execution("app-conc", "p", &format!("conc-{t}"), t);
                store.create_execution(&e, None).await?;
                for round in 0..25 {
                    let idx = round % e.stages.len();
                    e.stages[idx].attempt += 1;
                    e.stages[idx].context.insert("round".into(), round.into());
                    let ack = store
                        .enqueue(&e.id, &serde_json::json!({"round": round}))
                        .await?;
                    store.update_execution(&e, &[idx], Some(ack)).await?;
                    // Readers run alongside the writer.
                    let read = store.get_execution(&e.id).await?;
                    assert_eq!(read.as_ref(), Some(&e));
                }
                Ok::<_, StoreError>(e)
            }));
        }
        for task in tasks {
            let e = task
                .await
                .unwrap()
                .unwrap_or_else(|err| panic!("writer failed: {err}"));
            assert_eq!(store.get_execution(&e.id).await.unwrap(), Some(e));
        }
        assert!(store.pending_commands(1000).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn open_through_config() {
        let dir = tempfile::tempdir().unwrap();
        let config = crate::StoreConfig::from_url_or_dir(None, dir.path()).unwrap();
        let store = crate::open(&config).await.unwrap();
        assert_eq!(store.backend(), "sqlite");
        store.probe_write().await.unwrap();
        assert!(dir.path().join("ferry.db").exists());
    }
}
