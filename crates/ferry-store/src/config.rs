//! Where the store lives: [`StoreConfig`], read from a database URL or a data directory, and the
//! redaction that keeps a URL's password out of every message.

use ferry_core::StoreError;
use std::fmt;
use std::path::{Path, PathBuf};

/// Default size of the PostgreSQL connection pool when the URL does not say otherwise.
pub const DEFAULT_POSTGRES_MAX_CONNECTIONS: u32 = 10;

/// File name of the SQLite database inside the data directory.
pub const SQLITE_FILE_NAME: &str = "ferry.db";

/// Which backend to open and where.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// A SQLite database file (the default: `<data dir>/ferry.db`).
    Sqlite {
        /// The database file; its parent directories are created on open.
        path: PathBuf,
    },
    /// A PostgreSQL database.
    Postgres {
        /// `postgres://user:password@host:port/database?options`. Never printed as is: `Debug`
        /// and every error message replace the password with `***`.
        url: String,
        /// Size of the connection pool.
        max_connections: u32,
    },
}

impl StoreConfig {
    /// Chooses the backend from an optional database URL:
    ///
    /// - `None` → SQLite at `data_dir/ferry.db`;
    /// - `postgres://…` or `postgresql://…` → PostgreSQL with a pool of
    ///   [`DEFAULT_POSTGRES_MAX_CONNECTIONS`];
    /// - `sqlite://path` (or `sqlite:path`) → that SQLite file (`sqlite:///abs/path` for an
    ///   absolute path);
    /// - anything else, an in-memory SQLite database or an empty path → an error saying what is
    ///   accepted.
    ///
    /// The error is a [`StoreError::Backend`]: the database cannot be reached with this URL.
    pub fn from_url_or_dir(
        database_url: Option<&str>,
        data_dir: &Path,
    ) -> Result<StoreConfig, StoreError> {
        let Some(raw) = database_url else {
            return Ok(StoreConfig::Sqlite {
                path: data_dir.join(SQLITE_FILE_NAME),
            });
        };
        let url = raw.trim();
        let lower = url.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            return Ok(StoreConfig::Postgres {
                url: url.to_string(),
                max_connections: DEFAULT_POSTGRES_MAX_CONNECTIONS,
            });
        }
        if lower.starts_with("sqlite:") {
            let rest = url.get("sqlite:".len()..).unwrap_or_default();
            let rest = rest.strip_prefix("//").unwrap_or(rest);
            if rest.contains('?') {
                return Err(invalid(url, "SQLite URL options (`?…`) are not supported"));
            }
            if rest.is_empty() || rest.starts_with(":memory:") || lower.contains("mode=memory") {
                return Err(invalid(
                    url,
                    "a SQLite database needs a file path (an in-memory database would not be durable)",
                ));
            }
            return Ok(StoreConfig::Sqlite {
                path: PathBuf::from(rest),
            });
        }
        Err(invalid(
            url,
            "expected postgres://…, postgresql://… or sqlite://path",
        ))
    }

    /// Which backend this configuration opens (`sqlite`, `postgres`).
    pub fn backend(&self) -> &'static str {
        match self {
            StoreConfig::Sqlite { .. } => "sqlite",
            StoreConfig::Postgres { .. } => "postgres",
        }
    }

    /// A printable description: the file path, or the URL with its password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreConfig::Sqlite { path } => format!("sqlite://{}", path.display()),
            StoreConfig::Postgres { url, .. } => redact_url(url),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreConfig::Sqlite { path } => f.debug_struct("Sqlite").field("path", path).finish(),
            StoreConfig::Postgres {
                url,
                max_connections,
            } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("max_connections", max_connections)
                .finish(),
        }
    }
}

fn invalid(url: &str, why: &str) -> StoreError {
    StoreError::Backend(format!(
        "invalid database URL \"{}\": {why}",
        redact_url(url)
    ))
}

/// The password of a `scheme://user:password@host/…` URL, as written and percent-decoded
/// (either form may show up in a driver's message). Empty when there is none.
pub(crate) fn url_secrets(url: &str) -> Vec<String> {
    let Some(password) = raw_password(url) else {
        return Vec::new();
    };
    let mut secrets = vec![password.to_string()];
    let decoded = percent_decode(password);
    if decoded != password {
        secrets.push(decoded);
    }
    secrets.retain(|s| !s.is_empty());
    secrets
}

/// The URL with its password replaced by `***`.
pub(crate) fn redact_url(url: &str) -> String {
    match raw_password(url) {
        Some(p) if !p.is_empty() => url.replacen(&format!(":{p}@"), ":***@", 1),
        _ => url.to_string(),
    }
}

/// Replaces every secret in `message` with `***`.
pub(crate) fn redact(message: &str, secrets: &[String]) -> String {
    secrets
        .iter()
        .fold(message.to_string(), |m, s| m.replace(s.as_str(), "***"))
}

/// The raw (still percent-encoded) password of the URL's authority, if any.
fn raw_password(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_url_means_sqlite_in_the_data_dir() {
        let c = StoreConfig::from_url_or_dir(None, Path::new("/var/lib/ferry")).unwrap();
        assert_eq!(
            c,
            StoreConfig::Sqlite {
                path: PathBuf::from("/var/lib/ferry/ferry.db")
            }
        );
        assert_eq!(c.backend(), "sqlite");
    }

    #[test]
    fn postgres_urls() {
        for url in [
            "postgres://u:p@db:5432/ferry",
            "postgresql://u@db/ferry?sslmode=require",
            "  POSTGRES://db/ferry ",
        ] {
            let c = StoreConfig::from_url_or_dir(Some(url), Path::new("/d")).unwrap();
            assert_eq!(
                c,
                StoreConfig::Postgres {
                    url: url.trim().to_string(),
                    max_connections: DEFAULT_POSTGRES_MAX_CONNECTIONS
                },
                "{url}"
            );
            assert_eq!(c.backend(), "postgres");
        }
    }

    #[test]
    fn sqlite_urls() {
        let cases = [
            ("sqlite://data/ferry.db", "data/ferry.db"),
            ("sqlite:///abs/ferry.db", "/abs/ferry.db"),
            ("sqlite:rel.db", "rel.db"),
        ];
        for (url, path) in cases {
            let c = StoreConfig::from_url_or_dir(Some(url), Path::new("/d")).unwrap();
            assert_eq!(
                c,
                StoreConfig::Sqlite {
                    path: PathBuf::from(path)
                },
                "{url}"
            );
        }
    }

    #[test]
    fn refuses_what_it_cannot_open() {
        let cases = [
            ("mysql://u:hunter2@db/x", "expected postgres://"),
            ("ferry.db", "expected postgres://"),
            ("sqlite::memory:", "needs a file path"),
            ("sqlite://", "needs a file path"),
            ("sqlite://x.db?mode=memory", "not supported"),
        ];
        for (url, want) in cases {
            let err = StoreConfig::from_url_or_dir(Some(url), Path::new("/d")).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(want), "{url}: {msg}");
            assert!(!msg.contains("hunter2"), "{msg}");
            assert!(matches!(err, StoreError::Backend(_)));
        }
    }

    #[test]
    fn passwords_never_show() {
        let c = StoreConfig::Postgres {
            url: "postgres://ferry:s%40cret@db:5432/ferry".into(),
            max_connections: 3,
        };
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("s%40cret"), "{dbg}");
        assert!(dbg.contains("postgres://ferry:***@db:5432/ferry"), "{dbg}");
        assert_eq!(c.redacted(), "postgres://ferry:***@db:5432/ferry");

        let secrets = url_secrets("postgres://ferry:s%40cret@db:5432/ferry");
        assert_eq!(secrets, vec!["s%40cret".to_string(), "s@cret".to_string()]);
        assert_eq!(
            redact("auth failed for s@cret and s%40cret", &secrets),
            "auth failed for *** and ***"
        );
        assert!(url_secrets("postgres://ferry@db/ferry").is_empty());
        assert!(url_secrets("postgres://db/ferry").is_empty());
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }
}
