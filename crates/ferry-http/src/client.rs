//! `GuardedClient`: the HTTP client that applies a [`UrlPolicy`] to every hop of every request.

use std::fmt;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{CONTENT_ENCODING, CONTENT_TYPE, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use url::Url;

use crate::error::GuardError;
use crate::policy::UrlPolicy;
use crate::redact::{redact_parsed, strip_credentials};
use crate::resolve::{GuardedResolver, Lookup, SystemLookup};

/// The `User-Agent` of every guarded request (unless the request sets its own).
pub const USER_AGENT: &str = concat!("ferry/", env!("CARGO_PKG_VERSION"));

/// Request headers a caller may not set: the guard (or the HTTP stack) owns them, and letting
/// a user set them would allow virtual-host tricks (`Host`) or request smuggling.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authorization",
];

/// Fragments of header names that mark credentials; such headers are dropped when a
/// redirect leaves the origin (scheme, host and port) they were meant for.
const SENSITIVE_HEADER_PARTS: &[&str] = &[
    "auth",
    "cookie",
    "token",
    "secret",
    "key",
    "password",
    "session",
    "signature",
    "credential",
];

/// An HTTP request to a user-given URL. Build it with the fields or the helpers.
#[derive(Clone)]
pub struct GuardedRequest {
    /// The method.
    pub method: Method,
    /// The URL as the user wrote it; checked by the policy before anything is sent.
    pub url: String,
    /// Headers, in order. Names and values must be valid HTTP; `Host`, `Content-Length`,
    /// `Transfer-Encoding` and other connection-level headers are refused.
    pub headers: Vec<(String, String)>,
    /// The body, if any.
    pub body: Option<Vec<u8>>,
}

impl GuardedRequest {
    /// A request with no headers and no body.
    #[must_use]
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self {
            method,
            url: url.into(),
            headers: Vec::new(),
            body: None,
        }
    }

    /// A `GET` request.
    #[must_use]
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::GET, url)
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sets the body.
    #[must_use]
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// Sets a JSON body and `Content-Type: application/json`.
    #[must_use]
    pub fn with_json(mut self, value: &serde_json::Value) -> Self {
        self.body = Some(value.to_string().into_bytes());
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case("content-type"));
        self.headers
            .push(("content-type".to_owned(), "application/json".to_owned()));
        self
    }
}

/// Shows the redacted URL and header names only: values may be credentials.
impl fmt::Debug for GuardedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedRequest")
            .field("method", &self.method)
            .field("url", &crate::redact_url(&self.url))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.as_ref().map(Vec::len))
            .finish()
    }
}

/// A complete response, body read within the policy's size cap.
#[derive(Clone)]
pub struct GuardedResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Headers in order, names lower-case; values that are not UTF-8 are converted lossily.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// The URL that answered, after redirects, with user-info removed.
    pub final_url: Url,
}

impl GuardedResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON.
    ///
    /// # Errors
    ///
    /// [`GuardError::Json`] if the body is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, GuardError> {
        serde_json::from_slice(&self.body).map_err(|e| GuardError::Json {
            reason: e.to_string(),
        })
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Shows header names only: values may be credentials (`Set-Cookie`).
impl fmt::Debug for GuardedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedResponse")
            .field("status", &self.status)
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("body_len", &self.body.len())
            .field("final_url", &redact_parsed(&self.final_url))
            .finish()
    }
}

/// The HTTP client for user-given URLs. Cheap to clone (one `Arc`); share one per policy.
#[derive(Clone)]
pub struct GuardedClient {
    inner: Arc<Inner>,
}

struct Inner {
    policy: UrlPolicy,
    http: reqwest::Client,
}

impl fmt::Debug for GuardedClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardedClient")
            .field("policy", &self.inner.policy)
            .finish_non_exhaustive()
    }
}

impl GuardedClient {
    /// Builds a client for `policy`, after [`UrlPolicy::validate`]. TLS uses rustls with the
    /// ring provider and the platform's trust store, configured here, so it does not depend
    /// on a process-wide crypto provider being installed.
    ///
    /// # Errors
    ///
    /// [`GuardError::InvalidPolicy`] if the policy is invalid; [`GuardError::Http`] if the
    /// TLS or HTTP stack cannot be set up.
    pub fn new(policy: UrlPolicy) -> Result<Self, GuardError> {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    /// [`new`](Self::new) with a custom DNS lookup (tests simulate hostile DNS with it).
    pub(crate) fn with_lookup(
        policy: UrlPolicy,
        lookup: Arc<dyn Lookup>,
    ) -> Result<Self, GuardError> {
        policy.validate()?;
        let resolver = GuardedResolver::new(&policy.allowed_networks, lookup);
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls_config()?)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(resolver)
            .user_agent(USER_AGENT)
            .connect_timeout(policy.timeout)
            .timeout(policy.timeout)
            .build()
            .map_err(|e| {
                GuardError::Http(format!(
                    "could not build the HTTP client: {}",
                    error_chain(&e)
                ))
            })?;
        Ok(Self {
            inner: Arc::new(Inner { policy, http }),
        })
    }

    /// The policy this client enforces.
    pub fn policy(&self) -> &UrlPolicy {
        &self.inner.policy
    }

    /// Sends `req`, following redirects by hand (each hop re-checked) and reading the body
    /// within the size cap, all within the policy's timeout.
    ///
    /// # Errors
    ///
    /// A policy refusal ([`GuardError::is_policy_refusal`]) for the URL, a header or any
    /// redirect hop ([`GuardError::RedirectNotAllowed`] wraps the hop's reason), or a
    /// transport failure ([`GuardError::is_retryable`]). Non-2xx statuses are not errors.
    pub async fn send(&self, req: GuardedRequest) -> Result<GuardedResponse, GuardError> {
        let after = self.inner.policy.timeout;
        tokio::time::timeout(after, self.send_inner(req))
            .await
            .unwrap_or(Err(GuardError::Timeout { after }))
    }

    async fn send_inner(&self, req: GuardedRequest) -> Result<GuardedResponse, GuardError> {
        let policy = &self.inner.policy;
        let mut headers = build_headers(&req.headers)?;
        let mut url = policy.check(&req.url)?;
        ensure_fetchable_scheme(&url)?;
        let mut method = req.method;
        let mut body = req.body;
        let mut redirects = 0usize;

        loop {
            let response = match self.execute(&method, &url, &headers, body.as_ref()).await {
                Ok(response) => response,
                // A hop the resolver refused is a refused redirect.
                Err(e) if redirects > 0 && e.is_policy_refusal() => {
                    return Err(GuardError::RedirectNotAllowed {
                        location: redact_parsed(&url),
                        reason: Box::new(e),
                    });
                }
                Err(e) => return Err(e),
            };

            let status = response.status();
            let location = match redirect_location(status, response.headers()) {
                Some(location) if policy.max_redirects > 0 => location,
                _ => return self.read_response(response, url).await,
            };
            if redirects >= policy.max_redirects {
                return Err(GuardError::TooManyRedirects {
                    max: policy.max_redirects,
                });
            }
            let next = self.next_hop(&url, &location)?;
            tracing::debug!(
                from = %redact_parsed(&url),
                to = %redact_parsed(&next),
                status = status.as_u16(),
                "following redirect"
            );

            // 303 always, and 301/302 after a POST (as browsers do), turn into a body-less GET;
            // 307 and 308 keep method and body.
            let becomes_get = match status {
                StatusCode::SEE_OTHER => method != Method::HEAD,
                StatusCode::MOVED_PERMANENTLY | StatusCode::FOUND => method == Method::POST,
                _ => false,
            };
            if becomes_get {
                method = Method::GET;
                body = None;
                headers.remove(CONTENT_TYPE);
                headers.remove(CONTENT_ENCODING);
            }
            if url.origin() != next.origin() {
                let sensitive: Vec<HeaderName> = headers
                    .keys()
                    .filter(|name| is_sensitive(name))
                    .cloned()
                    .collect();
                for name in sensitive {
                    headers.remove(name);
                }
            }
            url = next;
            redirects += 1;
        }
    }

    /// Resolves a `Location` against the current URL and runs every check on the result.
    fn next_hop(&self, current: &Url, location: &str) -> Result<Url, GuardError> {
        let next = current
            .join(location)
            .map_err(|e| GuardError::RedirectNotAllowed {
                location: "<invalid URL>".to_owned(),
                reason: Box::new(GuardError::BadUrl {
                    reason: e.to_string(),
                }),
            })?;
        self.inner
            .policy
            .check_url(&next)
            .and_then(|_| ensure_fetchable_scheme(&next))
            .map_err(|e| GuardError::RedirectNotAllowed {
                location: redact_parsed(&next),
                reason: Box::new(e),
            })?;
        Ok(next)
    }

    /// One HTTP exchange, no redirects. The URL has passed the policy.
    async fn execute(
        &self,
        method: &Method,
        url: &Url,
        headers: &HeaderMap,
        body: Option<&Vec<u8>>,
    ) -> Result<reqwest::Response, GuardError> {
        let mut builder = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .headers(headers.clone());
        if let Some(body) = body {
            builder = builder.body(body.clone());
        }
        builder
            .send()
            .await
            .map_err(|e| self.transport_error(e, url))
    }

    /// Reads the body within the cap, stopping as soon as it is exceeded.
    async fn read_response(
        &self,
        mut response: reqwest::Response,
        mut final_url: Url,
    ) -> Result<GuardedResponse, GuardError> {
        let limit = self.inner.policy.max_response_bytes;
        let too_large = GuardError::ResponseTooLarge { limit };
        if response
            .content_length()
            .is_some_and(|len| len > limit as u64)
        {
            return Err(too_large);
        }
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let initial = response
            .content_length()
            .map_or(8 * 1024, |len| usize::try_from(len).unwrap_or(limit))
            .min(limit)
            .min(64 * 1024);
        let mut body = BytesMut::with_capacity(initial);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(e, &final_url))?
        {
            if chunk.len() > limit - body.len() {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        strip_credentials(&mut final_url);
        Ok(GuardedResponse {
            status,
            headers,
            body: body.freeze(),
            final_url,
        })
    }

    /// Maps a reqwest error without leaking the URL: a refusal from the resolver comes back
    /// as itself, the rest by kind.
    fn transport_error(&self, err: reqwest::Error, url: &Url) -> GuardError {
        if let Some(guard) = find_guard_error(&err) {
            return guard;
        }
        let host = url.host_str().unwrap_or_default().to_owned();
        if err.is_timeout() {
            return GuardError::Timeout {
                after: self.inner.policy.timeout,
            };
        }
        let (is_dns, is_connect) = (err.is_dns(), err.is_connect());
        let reason = error_chain(&err.without_url());
        if is_dns {
            GuardError::Dns { host, reason }
        } else if is_connect {
            GuardError::Connect { host, reason }
        } else {
            GuardError::Http(reason)
        }
    }
}

/// The rustls configuration: ring, the platform verifier, HTTP/1.1.
fn tls_config() -> Result<rustls::ClientConfig, GuardError> {
    let setup = |e: rustls::Error| GuardError::Http(format!("could not set up TLS: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).map_err(setup)?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(setup)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The guarded client can only speak http and https, whatever else a policy allows
/// (other schemes are for callers that only use [`UrlPolicy::check`]).
fn ensure_fetchable_scheme(url: &Url) -> Result<(), GuardError> {
    match url.scheme() {
        "http" | "https" => Ok(()),
        other => Err(GuardError::SchemeNotAllowed {
            scheme: other.to_owned(),
            allowed: vec!["http".to_owned(), "https".to_owned()],
        }),
    }
}

/// Validates the caller's headers. Errors name the header, never its value.
fn build_headers(headers: &[(String, String)]) -> Result<HeaderMap, GuardError> {
    let mut map = HeaderMap::new();
    for (name, value) in headers {
        let refuse = |reason: &str| GuardError::ForbiddenHeader {
            name: name.clone(),
            reason: reason.to_owned(),
        };
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| refuse("not a valid header name"))?;
        if FORBIDDEN_HEADERS.contains(&header_name.as_str()) {
            return Err(refuse("set by Ferry itself, it cannot be given"));
        }
        let header_value = HeaderValue::from_str(value)
            .map_err(|_| refuse("the value contains characters not allowed in a header"))?;
        map.append(header_name, header_value);
    }
    Ok(map)
}

/// Whether a header probably carries credentials.
fn is_sensitive(name: &HeaderName) -> bool {
    let name = name.as_str();
    SENSITIVE_HEADER_PARTS
        .iter()
        .any(|part| name.contains(part))
}

/// The `Location` of a redirect response we follow (301, 302, 303, 307, 308), if any.
/// A redirect without `Location` is returned to the caller as it is.
fn redirect_location(status: StatusCode, headers: &HeaderMap) -> Option<String> {
    let follows = matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    );
    if !follows {
        return None;
    }
    let value = headers.get(LOCATION)?;
    Some(String::from_utf8_lossy(value.as_bytes()).into_owned())
}

/// The first `GuardError` in an error's source chain (the resolver's refusal).
fn find_guard_error(err: &(dyn std::error::Error + 'static)) -> Option<GuardError> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(guard) = e.downcast_ref::<GuardError>() {
            return Some(guard.clone());
        }
        current = e.source();
    }
    None
}

/// An error and its sources as one line, repeated messages skipped.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests;
