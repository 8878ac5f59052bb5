//! The PostgreSQL backend: a connection pool, the same schema and the same semantics as SQLite.

use crate::config::{redact, redact_url, url_secrets};
use crate::core::Core;
use crate::migrations;
use ferry_core::{StoreError, StoreResult};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres};
use std::str::FromStr;
use std::time::Duration;

/// How long a call waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The store on a PostgreSQL database.
pub struct PostgresStore {
    pub(crate) core: Core<Postgres>,
    /// The URL's password (as written and decoded), removed from every error message.
    secrets: Vec<String>,
}

impl PostgresStore {
    /// Connects to `url` (`postgres://user:password@host:port/database?options`) with a pool of
    /// at most `max_connections` (at least 1) and applies pending migrations. Migrations take
    /// sqlx's advisory lock, so several servers may start at once.
    ///
    /// One connection is made first, outside the pool, so that an unreachable server fails at
    /// once with the driver's reason instead of a pool timeout. Messages never hold the password.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<PostgresStore> {
        let secrets = url_secrets(url);
        let fail = |e: sqlx::Error| {
            StoreError::Backend(redact(
                &format!("cannot connect to PostgreSQL at {}: {e}", redact_url(url)),
                &secrets,
            ))
        };
        let options = PgConnectOptions::from_str(url)
            .map_err(fail)?
            .application_name("ferry");
        options
            .connect()
            .await
            .map_err(fail)?
            .close()
            .await
            .map_err(fail)?;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(fail)?;
        migrations::migrator(migrations::POSTGRES)
            .run(&pool)
            .await
            .map_err(|e| migrations::error(e, &secrets))?;
        Ok(PostgresStore {
            core: Core::new(pool.clone(), pool),
            secrets,
        })
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.core.close().await;
    }

    /// Removes the password from an error's message.
    fn scrub(&self, e: StoreError) -> StoreError {
        if self.secrets.is_empty() {
            return e;
        }
        let s = |m: String| redact(&m, &self.secrets);
        match e {
            StoreError::Backend(m) => StoreError::Backend(s(m)),
            StoreError::Corrupt { what, message } => StoreError::Corrupt {
                what: s(what),
                message: s(message),
            },
            StoreError::Conflict(m) => StoreError::Conflict(s(m)),
            StoreError::Migration(m) => StoreError::Migration(s(m)),
        }
    }
}

crate::delegate_store!(PostgresStore, "postgres");

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit;
    use ferry_core::Store;
    use sqlx::{AssertSqlSafe, PgConnection};
    use std::future::Future;

    const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

    fn admin_url() -> String {
        std::env::var("FERRY_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
    }

    /// The same URL pointing at another database.
    fn with_database(url: &str, database: &str) -> String {
        let (scheme, rest) = url.split_once("://").unwrap();
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, format!("?{q}")),
            None => (rest, String::new()),
        };
        let authority = rest.split('/').next().unwrap();
        format!("{scheme}://{authority}/{database}{query}")
    }

    async fn admin() -> PgConnection {
        let url = admin_url();
        let options = PgConnectOptions::from_str(&url).unwrap();
        match options.connect().await {
            Ok(conn) => conn,
            Err(e) => panic!(
                "PostgreSQL is required for these tests and is not reachable at {} ({e}). \
                 Start it, or point FERRY_TEST_POSTGRES_URL at a server where the user may \
                 CREATE DATABASE.",
                redact_url(&url)
            ),
        }
    }

    /// Runs `test` against a fresh, empty database (`ferry_test_<random>`) created for it, then
    /// drops that database (best effort) whether the test passed or not.
    pub(crate) async fn with_fresh_database<F, Fut>(test: F)
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let name = format!(
            "ferry_test_{}",
            ferry_core::new_random_id().replace('-', "")
        );
        let mut conn = admin().await;
        sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
        let outcome = tokio::spawn(test(with_database(&admin_url(), &name))).await;
        let dropped = sqlx::query(AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await;
        if let Err(e) = dropped {
            eprintln!("warning: could not drop test database {name}: {e}");
        }
        let _ = conn.close().await;
        if let Err(e) = outcome {
            match e.try_into_panic() {
                Ok(panic) => std::panic::resume_unwind(panic),
                Err(e) => panic!("test task failed: {e}"),
            }
        }
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/test?sslmode=disable", "x"),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }

    #[tokio::test]
    async fn conformance() {
        with_fresh_database(|url| async move {
            let store = PostgresStore::connect(&url, 5).await.unwrap();
            assert_eq!(store.backend(), "postgres");
            testkit::run_all(&store).await.unwrap();
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn reconnect_keeps_data_and_migrates_once() {
        with_fresh_database(|url| async move {
            let e = testkit::sample_execution("app-durable", "p1", "01-durable", 1_000);
            let store = PostgresStore::connect(&url, 2).await.unwrap();
            store.create_execution(&e, None).await.unwrap();
            store.close().await;
            for _ in 0..2 {
                let store = crate::open(&crate::StoreConfig::Postgres {
                    url: url.clone(),
                    max_connections: 2,
                })
                .await
                .unwrap();
                assert_eq!(store.get_execution(&e.id).await.unwrap(), Some(e.clone()));
            }
            let store = PostgresStore::connect(&url, 1).await.unwrap();
            let applied: Vec<(i64, bool)> =
                sqlx::query_as("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                    .fetch_all(&store.core.reader)
                    .await
                    .unwrap();
            let want: Vec<(i64, bool)> = migrations::POSTGRES.iter().map(|m| (m.0, true)).collect();
            assert_eq!(applied, want);
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn concurrent_writers() {
        with_fresh_database(|url| async move {
            let store = std::sync::Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
            let mut tasks = Vec::new();
            for t in 0..8 {
                let store = std::sync::Arc::clone(&store);
                tasks.push(tokio::spawn(async move {
                    let mut e = testkit::sample_execution("app-conc", "p", &format!("pg-{t}"), t);
                    store.create_execution(&e, None).await?;
                    for round in 0..10 {
                        let idx = round % e.stages.len();
                        e.stages[idx].attempt += 1;
                        let ack = store.enqueue(&e.id, &serde_json::json!(round)).await?;
                        store.update_execution(&e, &[idx], Some(ack)).await?;
                    }
                    Ok::<_, StoreError>(e)
                }));
            }
            for task in tasks {
                let e = task.await.unwrap().unwrap();
                assert_eq!(store.get_execution(&e.id).await.unwrap(), Some(e));
            }
            assert!(store.pending_commands(100).await.unwrap().is_empty());
            store.close().await;
        })
        .await;
    }

    #[tokio::test]
    async fn unreachable_server_fails_clearly_without_the_password() {
        let err = PostgresStore::connect("postgres://ferry:topsecret@127.0.0.1:1/ferry", 1)
            .await
            .err()
            .unwrap();
        let msg = err.to_string();
        assert!(matches!(err, StoreError::Backend(_)), "{msg}");
        assert!(
            msg.contains("cannot connect to PostgreSQL at postgres://ferry:***@127.0.0.1:1/ferry"),
            "{msg}"
        );
        assert!(!msg.contains("topsecret"), "{msg}");
    }
}
