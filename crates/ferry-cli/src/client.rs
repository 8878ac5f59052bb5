//! The API client the commands use: JSON requests with the bearer token, and the translation
//! of every failure into a [`CliError`] a person can act on (the API's one error body shape,
//! "cannot reach Ferry", how to get a token on 401).

use crate::error::{ApiProblem, CliError};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an ordinary request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a read may wait for the next bytes; the event stream sends a keep-alive every
/// 15 s, so this only fires on a dead connection.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the token came from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token` or `FERRY_TOKEN`.
    Given,
    /// Read from this file.
    File(PathBuf),
    /// None was found; this file was looked for.
    Missing(PathBuf),
}

/// The token: `--token`/`FERRY_TOKEN` when given, else the local admin token file of the data
/// directory (what `ferry server` writes at first start).
pub fn resolve_token(given: Option<&str>, data_dir: &Path) -> (Option<String>, TokenSource) {
    if let Some(t) = given.map(str::trim).filter(|t| !t.is_empty()) {
        return (Some(t.to_string()), TokenSource::Given);
    }
    let path = data_dir.join(ferry_server::auth::TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => (Some(t.trim().to_string()), TokenSource::File(path)),
        _ => (None, TokenSource::Missing(path)),
    }
}

/// What to tell a person whose request got 401.
fn unauthorized_hint(source: &TokenSource) -> String {
    match source {
        TokenSource::Given => {
            "the token given with --token or FERRY_TOKEN was refused; the server's token is in \
             admin.token in its data directory"
                .into()
        }
        TokenSource::File(p) => format!(
            "the token in {} was refused: is the server using another data directory? Pass --data-dir \
             (FERRY_DATA_DIR) to point at the server's, or give the token with --token (FERRY_TOKEN)",
            p.display()
        ),
        TokenSource::Missing(p) => format!(
            "no token: {} does not exist. `ferry server` writes its token to admin.token in its data \
             directory at first start; on the same machine point --data-dir (FERRY_DATA_DIR) at that \
             directory, or give the token with --token (FERRY_TOKEN)",
            p.display()
        ),
    }
}

/// A client for one Ferry server.
#[derive(Clone)]
pub struct ApiClient {
    base: reqwest::Url,
    token: Option<String>,
    token_source: TokenSource,
    http: reqwest::Client,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ApiClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Makes reqwest's rustls use the ring provider (the workspace builds reqwest without one).
fn install_crypto_provider() {
    // Fails only when a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl ApiClient {
    /// A client for `server` (`http://host:port`, optionally with a path prefix).
    pub fn new(
        server: &str,
        token: Option<String>,
        token_source: TokenSource,
    ) -> Result<Self, CliError> {
        let mut base = reqwest::Url::parse(server.trim())
            .map_err(|e| CliError::Usage(format!("--server \"{server}\" is not a URL: {e}")))?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CliError::Usage(format!(
                "--server \"{server}\" must be an http:// or https:// URL"
            )));
        }
        base.set_query(None);
        base.set_fragment(None);
        install_crypto_provider();
        let http = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .read_timeout(READ_TIMEOUT)
            .user_agent(concat!("ferry-cli/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                CliError::Failed(format!("cannot set up the HTTP client: {}", chain(&e)))
            })?;
        Ok(ApiClient {
            base,
            token,
            token_source,
            http,
        })
    }

    /// The server URL, for messages.
    pub fn server(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// The URL of `segments` (each percent-encoded as one path segment) under the base, with
    /// the query pairs whose value is not empty.
    pub fn url(&self, segments: &[&str], query: &[(&str, String)]) -> reqwest::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty();
            path.extend(segments);
        }
        let pairs: Vec<&(&str, String)> = query.iter().filter(|(_, v)| !v.is_empty()).collect();
        if !pairs.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
        }
        url
    }

    fn request(&self, method: reqwest::Method, url: reqwest::Url) -> reqwest::RequestBuilder {
        let req = self.http.request(method, url);
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `GET` a JSON document.
    pub async fn get(
        &self,
        segments: &[&str],
        query: &[(&str, String)],
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        let res = self
            .request(reqwest::Method::GET, url.clone())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        self.json(url, res).await
    }

    /// `POST` a JSON body; returns the response's JSON (`null` for an empty body).
    pub async fn post(&self, segments: &[&str], body: &Value) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let res = self
            .request(reqwest::Method::POST, url.clone())
            .timeout(REQUEST_TIMEOUT)
            .json(body)
            .send()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        self.json(url, res).await
    }

    /// `DELETE`; returns the response's JSON (`null` for an empty body).
    pub async fn delete(&self, segments: &[&str]) -> Result<Value, CliError> {
        let url = self.url(segments, &[]);
        let res = self
            .request(reqwest::Method::DELETE, url.clone())
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        self.json(url, res).await
    }

    /// `POST` (with `body`) or `DELETE` with query pairs; returns the response's JSON.
    pub async fn send(
        &self,
        method: reqwest::Method,
        segments: &[&str],
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CliError> {
        let url = self.url(segments, query);
        let mut req = self.request(method, url.clone()).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await.map_err(|e| self.transport(&url, &e))?;
        self.json(url, res).await
    }

    /// Opens a server-sent-events stream; the caller reads the body.
    pub async fn events(&self, segments: &[&str]) -> Result<reqwest::Response, CliError> {
        let url = self.url(segments, &[]);
        let res = self
            .request(reqwest::Method::GET, url.clone())
            .header(reqwest::header::ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(|e| self.transport(&url, &e))?;
        if res.status().is_success() {
            Ok(res)
        } else {
            let status = res.status().as_u16();
            let bytes = res.bytes().await.unwrap_or_default();
            Err(self.api_error(status, &bytes))
        }
    }

    async fn json(&self, url: reqwest::Url, res: reqwest::Response) -> Result<Value, CliError> {
        let status = res.status().as_u16();
        let bytes = res.bytes().await.map_err(|e| self.transport(&url, &e))?;
        if !(200..300).contains(&status) {
            return Err(self.api_error(status, &bytes));
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| CliError::Transport {
            url: url.to_string(),
            detail: format!("the answer is not JSON: {e}"),
        })
    }

    /// A transport failure: cannot connect (exit 3) or broke afterwards.
    pub fn transport(&self, url: &reqwest::Url, e: &reqwest::Error) -> CliError {
        if e.is_connect() {
            CliError::Connect {
                url: self.server().to_string(),
                detail: innermost(e),
            }
        } else {
            CliError::Transport {
                url: url.to_string(),
                detail: chain(e),
            }
        }
    }

    /// An error answer, from the API's error body when it has one.
    pub fn api_error(&self, status: u16, body: &[u8]) -> CliError {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let (code, message, problems) = match parsed {
            Some(b) => {
                // An error about an orchestration the request started names its execution.
                let message = match b.error.execution_id {
                    Some(id) if !b.error.message.contains(&id) => {
                        format!("{} (execution {id})", b.error.message)
                    }
                    _ => b.error.message,
                };
                (b.error.code, message, b.error.problems)
            }
            None => {
                let text = String::from_utf8_lossy(body);
                let text: String = text.trim().chars().take(300).collect();
                let message = if text.is_empty() {
                    format!("HTTP {status}")
                } else {
                    format!("HTTP {status}: {text}")
                };
                (String::new(), message, Vec::new())
            }
        };
        if status == 401 {
            return CliError::Unauthorized {
                message,
                hint: unauthorized_hint(&self.token_source),
            };
        }
        CliError::Api {
            status,
            code,
            message,
            problems,
        }
    }
}

#[derive(serde::Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(serde::Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    problems: Vec<ApiProblem>,
    #[serde(default, rename = "executionId")]
    execution_id: Option<String>,
}

/// Every message of an error's source chain, joined.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let m = s.to_string();
        if !parts.iter().any(|p| p.contains(&m)) {
            parts.push(m);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// The innermost cause (e.g. "Connection refused (os error 111)").
fn innermost(e: &dyn std::error::Error) -> String {
    let mut last = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        last = s.to_string();
        cur = s.source();
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(server: &str) -> ApiClient {
        ApiClient::new(server, None, TokenSource::Missing("/x/admin.token".into())).unwrap()
    }

    #[test]
    fn urls_encode_segments_and_skip_empty_query_values() {
        let c = client("http://127.0.0.1:8084");
        let u = c.url(
            &[
                "api",
                "v1",
                "applications",
                "a b",
                "pipelines",
                "x/y",
                "run",
            ],
            &[],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8084/api/v1/applications/a%20b/pipelines/x%2Fy/run"
        );
        let u = c.url(
            &["api", "v1", "executions"],
            &[("application", "shop".into()), ("status", String::new())],
        );
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:8084/api/v1/executions?application=shop"
        );
        let c = client("https://ci.example.com/ferry/");
        assert_eq!(
            c.url(&["healthz"], &[]).as_str(),
            "https://ci.example.com/ferry/healthz"
        );
        assert_eq!(c.server(), "https://ci.example.com/ferry");
    }

    #[test]
    fn bad_server_urls_are_usage_errors() {
        for s in ["127.0.0.1:8084", "ftp://x", "nope"] {
            let e = ApiClient::new(s, None, TokenSource::Given).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{s}: {e}");
        }
    }

    #[test]
    fn error_bodies_are_read() {
        let c = client("http://127.0.0.1:1");
        let body = br#"{"error": {"code": "invalid", "message": "1 problem(s) found", "problems": [{"path": "documents[0].name", "message": "bad"}]}}"#;
        match c.api_error(422, body) {
            CliError::Api {
                status,
                code,
                problems,
                ..
            } => {
                assert_eq!((status, code.as_str()), (422, "invalid"));
                assert_eq!(problems[0].path, "documents[0].name");
            }
            other => panic!("{other:?}"),
        }
        // An error about an orchestration names its execution.
        let e = c.api_error(
            409,
            br#"{"error": {"code": "operation_failed", "message": "could not disable x", "problems": [], "executionId": "01HX"}}"#,
        );
        assert_eq!(e.to_string(), "could not disable x (execution 01HX)");
        let e = c.api_error(502, b"<html>bad gateway</html>");
        assert_eq!(e.to_string(), "HTTP 502: <html>bad gateway</html>");
        let e = c.api_error(
            401,
            br#"{"error": {"code": "unauthenticated", "message": "missing credentials"}}"#,
        );
        let text = e.to_string();
        assert!(
            text.starts_with("missing credentials\nno token: /x/admin.token does not exist"),
            "{text}"
        );
        assert_eq!(e.exit_code(), 1);
    }

    #[test]
    fn tokens_come_from_the_flag_or_the_data_dir() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_token(Some(" abc "), dir.path()),
            (Some("abc".into()), TokenSource::Given)
        );
        let (t, s) = resolve_token(None, dir.path());
        assert_eq!(
            (t, s),
            (None, TokenSource::Missing(dir.path().join("admin.token")))
        );
        std::fs::write(dir.path().join("admin.token"), "secret\n").unwrap();
        let (t, s) = resolve_token(Some(""), dir.path());
        assert_eq!(
            (t, s),
            (
                Some("secret".into()),
                TokenSource::File(dir.path().join("admin.token"))
            )
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        let c = ApiClient::new("http://h", Some("sekrit".into()), TokenSource::Given).unwrap();
        assert!(!format!("{c:?}").contains("sekrit"));
    }
}
