//! The schema migrations, embedded in the binary: one list per backend, same versions and the
//! same logical schema. They run through sqlx's migrator, which records applied versions (with a
//! checksum) in `_sqlx_migrations`, applies each pending one in its own transaction and refuses
//! to start when an applied migration was edited afterwards.

use ferry_core::StoreError;
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// One migration: version, description, SQL. Versions increase by one from 1.
type Embedded = (i64, &'static str, &'static str);

/// `migrations/sqlite/`.
pub(crate) const SQLITE: &[Embedded] = &[
    (
        1,
        "initial",
        include_str!("../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "documents",
        include_str!("../migrations/sqlite/0002_documents.sql"),
    ),
];

/// `migrations/postgres/`.
pub(crate) const POSTGRES: &[Embedded] = &[
    (
        1,
        "initial",
        include_str!("../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "documents",
        include_str!("../migrations/postgres/0002_documents.sql"),
    ),
];

/// A migrator for one backend's list.
pub(crate) fn migrator(list: &[Embedded]) -> Migrator {
    Migrator::with_migrations(
        list.iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Maps a migrator failure.
pub(crate) fn error(e: sqlx::migrate::MigrateError, secrets: &[String]) -> StoreError {
    StoreError::Migration(crate::config::redact(&e.to_string(), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// The files on disk and the embedded lists agree: every file is embedded under the version
    /// and description its name gives, and both backends have the same versions.
    #[test]
    fn embedded_lists_match_the_folders() {
        for (dir, list) in [("sqlite", SQLITE), ("postgres", POSTGRES)] {
            let folder = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dir);
            let mut files: Vec<String> = std::fs::read_dir(&folder)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            files.sort();
            let expected: Vec<String> = list
                .iter()
                .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
                .collect();
            assert_eq!(files, expected, "{dir}");
            for ((v, _, sql), file) in list.iter().zip(&files) {
                let on_disk = std::fs::read_to_string(folder.join(file)).unwrap();
                assert_eq!(&on_disk, sql, "{dir} v{v}");
            }
            let versions: Vec<i64> = list.iter().map(|(v, _, _)| *v).collect();
            assert_eq!(
                versions,
                (1..=list.len() as i64).collect::<Vec<_>>(),
                "{dir}"
            );
        }
        let v = |l: &[Embedded]| l.iter().map(|(v, d, _)| (*v, *d)).collect::<Vec<_>>();
        assert_eq!(v(SQLITE), v(POSTGRES));
    }

    /// Both schemas create the same tables with the same columns, in the same order.
    #[test]
    fn both_backends_have_the_same_tables_and_columns() {
        fn shape(sql: &str) -> Vec<(String, Vec<String>)> {
            let mut tables = Vec::new();
            let mut current: Option<(String, Vec<String>)> = None;
            for line in sql.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                    let name = rest.split_whitespace().next().unwrap().to_string();
                    current = Some((name, Vec::new()));
                } else if line.starts_with(");") {
                    tables.extend(current.take());
                } else if let Some((_, cols)) = current.as_mut() {
                    let word = line.split_whitespace().next().unwrap_or("");
                    if !word.is_empty()
                        && !word.starts_with("--")
                        && !["UNIQUE", "PRIMARY"].contains(&word)
                    {
                        cols.push(word.to_string());
                    }
                }
            }
            tables
        }
        let sqlite = shape(SQLITE[0].2);
        assert_eq!(sqlite.len(), 7, "{sqlite:?}");
        assert_eq!(sqlite, shape(POSTGRES[0].2));
    }
}
