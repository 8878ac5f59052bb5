//! `webhook`: calls a URL through Ferry's URL guard and, with `waitForCompletion`, polls a status
//! URL until it reports success, cancellation or failure (Spinnaker's webhook stage).
//!
//! # Life of a webhook stage
//! 1. **Mark.** The first step records `webhook.requestStartedAt` (and the attempt count) and
//!    returns `Running { poll_after: ZERO }`, so the marker is committed before anything is sent.
//! 2. **Send.** The next step sends the request. Connection failures, 5xx, 429 and
//!    `retryStatusCodes` are retried (at most [`MAX_SEND_ATTEMPTS`] attempts, with backoff via
//!    `Step::Running`, never by sleeping inside a step); `failFastStatusCodes` and other non-2xx
//!    statuses fail the stage at once. The response is recorded as `webhook.statusCode` and
//!    `webhook.body` (parsed JSON, or text).
//! 3. **Monitor** (only with `waitForCompletion`). The status URL (`statusEndpoint`) is resolved
//!    as `statusUrlResolution` says and recorded together with the response, before the first
//!    poll, so a restarted Ferry polls instead of sending again. Each poll records
//!    `webhook.monitor.body` and `webhook.monitor.progressMessage`; the value at
//!    `statusJsonPath` is compared with `successStatuses`, `canceledStatuses` and
//!    `terminalStatuses` (a number is a percentage; 100 means done).
//!
//! # Durability
//! If Ferry restarts after the marker was committed but before a response was recorded, the
//! request may or may not have been sent. It is sent again only when that is safe: the method is
//! idempotent (GET, HEAD, PUT, DELETE, OPTIONS) or the stage sets `resendOnRestart: true`.
//! Otherwise the stage fails with a message saying so. Every request carries
//! `X-Ferry-Idempotency-Key: <execution>:<stage>:<attempt>` so receivers can drop duplicates.
//!
//! # Secrets
//! `customHeaders` is a raw field: the engine does not evaluate it when the stage starts, so the
//! header values (which often carry tokens) are never written into the stage context. The stage
//! evaluates them in memory just before each request. Header values never appear in the
//! context, in errors or in logs; URLs in errors are redacted with [`ferry_http::redact_url`].
//!
//! # Guard
//! Every request (the call, each status poll, the cancel call) goes through
//! [`ferry_http::GuardedClient`]; a refusal (private address, host off the allow-list, redirect
//! off the policy) fails the stage with the guard's message, which names the rule.

use async_trait::async_trait;
use ferry_core::fields::{Fields, kind};
use ferry_core::{StageDef, looks_like_expression, now_millis};
use ferry_engine::{StageCtx, StageError, Step, TypedStage};
use ferry_http::{GuardError, GuardedClient, GuardedRequest, GuardedResponse, redact_url};
use http::Method;
use serde_json::{Map, Value, json};
use std::fmt;
use std::time::Duration;

/// Attempts at the initial call before the stage fails (the first try included).
pub const MAX_SEND_ATTEMPTS: u64 = 5;
/// Consecutive failed status polls (transport errors, 5xx, 429) before the stage fails.
pub const MAX_MONITOR_ERRORS: u64 = 10;
/// Largest response body stored in the context; larger bodies are stored as truncated text.
pub const MAX_STORED_BODY: usize = 256 * 1024;
/// The header that carries the idempotency key of the stage attempt.
pub const IDEMPOTENCY_HEADER: &str = "X-Ferry-Idempotency-Key";

/// Headers the HTTP client owns (or Ferry sets itself); a stage may not set them.
const RESERVED_HEADERS: &[&str] = &[
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
    "x-ferry-idempotency-key",
];

/// Where the stage state lives in the context (Spinnaker's `webhook` object).
const STATE_KEY: &str = "webhook";
/// The resolved status URL, recorded before polling starts (Spinnaker's name).
const STATUS_ENDPOINT_KEY: &str = "statusEndpoint";

/// The `webhook` stage.
pub struct Webhook {
    /// The URL guard every request goes through.
    pub http: GuardedClient,
}

/// How the status URL is found (`statusUrlResolution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusUrlResolution {
    /// `getMethod`: poll the stage's own `url` with GET.
    GetMethod,
    /// `locationHeader`: poll the URL in the response's `Location` header.
    LocationHeader,
    /// `webhookResponse`: poll the URL found in the response body at `statusUrlJsonPath`.
    WebhookResponse,
}

/// The `webhook` stage's configuration, read from the stage context.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `url` (required).
    pub url: String,
    /// `method`, default POST.
    pub method: Method,
    /// `payload`, sent as JSON.
    pub payload: Option<Value>,
    /// `customHeaders` as written (values may hold `${...}`; evaluated just before each request).
    pub custom_headers: Vec<(String, String)>,
    /// `waitForCompletion`.
    pub wait_for_completion: bool,
    /// `statusUrlResolution`, default `getMethod`.
    pub status_url_resolution: StatusUrlResolution,
    /// `statusUrlJsonPath` (for `webhookResponse`).
    pub status_url_json_path: Option<JsonPath>,
    /// `statusJsonPath` (required with `waitForCompletion`).
    pub status_json_path: Option<JsonPath>,
    /// `progressJsonPath`.
    pub progress_json_path: Option<JsonPath>,
    /// `successStatuses` (comma-separated or a list).
    pub success_statuses: Vec<String>,
    /// `canceledStatuses`.
    pub canceled_statuses: Vec<String>,
    /// `terminalStatuses`.
    pub terminal_statuses: Vec<String>,
    /// `retryStatusCodes`: retry the initial call on these.
    pub retry_status_codes: Vec<u16>,
    /// `failFastStatusCodes`: fail at once on these, even where a retry would otherwise happen.
    pub fail_fast_status_codes: Vec<u16>,
    /// `cancelEndpoint`: called when the stage is canceled or times out.
    pub cancel_endpoint: Option<String>,
    /// `cancelMethod`, default POST.
    pub cancel_method: Method,
    /// `cancelPayload`.
    pub cancel_payload: Option<Value>,
    /// `waitBeforeMonitor`: delay between the call and the first status poll.
    pub wait_before_monitor: Duration,
    /// `pollingIntervalSeconds`, default 10.
    pub polling_interval: Duration,
    /// `resendOnRestart`: send a non-idempotent request again after a restart interrupted it.
    pub resend_on_restart: bool,
}

const DEFAULT_SUCCESS: &[&str] = &["SUCCESS", "SUCCEEDED"];
const DEFAULT_CANCELED: &[&str] = &["CANCELED", "CANCELLED"];
const DEFAULT_TERMINAL: &[&str] = &["TERMINAL", "FAILED", "FAILURE", "ERROR"];
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

#[async_trait]
impl TypedStage for Webhook {
    type Config = WebhookConfig;
    const TYPE: &'static str = "webhook";
    const TASK: &'static str = "createWebhookTask";

    fn config(f: &mut Fields<'_>) -> Option<WebhookConfig> {
        let before = f.problems.len();
        let mut deferred = false;
        let url = f.required_str("url");
        deferred |= f.is_deferred("url");
        let method = read_method(f, "method", &mut deferred);
        let payload = f.get("payload").cloned();
        let custom_headers = read_headers(f);
        let wait_for_completion = f.bool_or("waitForCompletion", false);
        let status_url_resolution = read_resolution(f, &mut deferred);
        let status_url_json_path = read_json_path(f, "statusUrlJsonPath", &mut deferred);
        let status_json_path = read_json_path(f, "statusJsonPath", &mut deferred);
        let progress_json_path = read_json_path(f, "progressJsonPath", &mut deferred);
        let success_statuses = read_statuses(f, "successStatuses", DEFAULT_SUCCESS, &mut deferred);
        let canceled_statuses =
            read_statuses(f, "canceledStatuses", DEFAULT_CANCELED, &mut deferred);
        let terminal_statuses =
            read_statuses(f, "terminalStatuses", DEFAULT_TERMINAL, &mut deferred);
        let retry_status_codes = read_status_codes(f, "retryStatusCodes", &mut deferred);
        let fail_fast_status_codes = read_status_codes(f, "failFastStatusCodes", &mut deferred);
        let cancel_endpoint = if f.is_deferred("cancelEndpoint") {
            deferred = true;
            None
        } else {
            f.opt_str("cancelEndpoint").filter(|s| !s.trim().is_empty())
        };
        let cancel_method = read_method(f, "cancelMethod", &mut deferred);
        let cancel_payload = f.get("cancelPayload").cloned();
        let wait_before_monitor = read_seconds(f, "waitBeforeMonitor", 0.0, 0.0, &mut deferred);
        let polling_interval = read_seconds(f, "pollingIntervalSeconds", 10.0, 0.1, &mut deferred);
        let resend_on_restart = f.bool_or("resendOnRestart", false);

        if wait_for_completion && !deferred {
            if status_json_path.is_none() && f.get("statusJsonPath").is_none() {
                f.problem(
                    "statusJsonPath",
                    "is required when waitForCompletion is true (where the status is in the status response, e.g. $.status)",
                );
            }
            if status_url_resolution == Some(StatusUrlResolution::WebhookResponse)
                && status_url_json_path.is_none()
                && f.get("statusUrlJsonPath").is_none()
            {
                f.problem(
                    "statusUrlJsonPath",
                    "is required when statusUrlResolution is webhookResponse (where the status URL is in the response, e.g. $.statusUrl)",
                );
            }
        }
        if deferred || f.problems.len() > before {
            return None;
        }
        Some(WebhookConfig {
            url: url?,
            method: method?,
            payload,
            custom_headers,
            wait_for_completion,
            status_url_resolution: status_url_resolution?,
            status_url_json_path,
            status_json_path,
            progress_json_path,
            success_statuses,
            canceled_statuses,
            terminal_statuses,
            retry_status_codes,
            fail_fast_status_codes,
            cancel_endpoint,
            cancel_method: cancel_method?,
            cancel_payload,
            wait_before_monitor: wait_before_monitor?,
            polling_interval: polling_interval?,
            resend_on_restart,
        })
    }

    fn raw_fields(_def: &StageDef) -> Vec<String> {
        // Header values are evaluated by the step, in memory, so they never reach the context.
        vec!["customHeaders".into()]
    }

    async fn step(&self, c: &WebhookConfig, ctx: &mut StageCtx) -> Result<Step, StageError> {
        let mut state = State::load(&ctx.context);
        let result = self.advance(c, ctx, &mut state).await;
        if matches!(result, Ok(Step::Succeeded)) {
            ctx.outputs
                .insert(STATE_KEY.into(), Value::Object(state.map.clone()));
        }
        state.save(&mut ctx.context);
        result
    }

    async fn cancel(
        &self,
        c: Option<&WebhookConfig>,
        ctx: &mut StageCtx,
    ) -> Result<(), StageError> {
        let Some(c) = c else { return Ok(()) };
        let Some(endpoint) = &c.cancel_endpoint else {
            return Ok(());
        };
        let state = State::load(&ctx.context);
        if state.int("requestStartedAt").is_none() && state.int("statusCode").is_none() {
            tracing::debug!(stage = %ctx.stage_id(), "webhook was never sent; nothing to cancel");
            return Ok(());
        }
        let headers = request_headers(c, ctx).await.map_err(StageError::Fatal)?;
        let mut request = GuardedRequest::new(c.cancel_method.clone(), endpoint.clone());
        request.headers = headers;
        let request = with_payload(request, c.cancel_payload.as_ref());
        let shown = redact_url(endpoint);
        let mut last = String::new();
        for attempt in 1..=3u32 {
            match self.http.send(request.clone()).await {
                Ok(r) if r.is_success() => {
                    tracing::info!(stage = %ctx.stage_id(), url = %shown, status = r.status, "webhook cancel endpoint called");
                    return Ok(());
                }
                Ok(r) if r.status >= 500 || r.status == 429 => last = format!("HTTP {}", r.status),
                Ok(r) => {
                    return Err(StageError::Fatal(format!(
                        "the cancel endpoint {shown} answered HTTP {}",
                        r.status
                    )));
                }
                Err(e) if e.is_retryable() => last = e.to_string(),
                Err(e) => {
                    return Err(StageError::Fatal(format!(
                        "the cancel request to {shown} was refused by Ferry's URL policy: {e}"
                    )));
                }
            }
            // The cancel hook runs as its own task, so a short pause between tries is fine.
            tokio::time::sleep(Duration::from_secs(u64::from(attempt))).await;
        }
        Err(StageError::Fatal(format!(
            "the cancel request to {shown} failed: {last}"
        )))
    }
}

impl Webhook {
    /// One step of the state machine described in the module docs.
    async fn advance(
        &self,
        c: &WebhookConfig,
        ctx: &mut StageCtx,
        state: &mut State,
    ) -> Result<Step, StageError> {
        if state.int("statusCode").is_some() {
            if !c.wait_for_completion {
                return Ok(Step::Succeeded);
            }
            return match ctx.context.get(STATUS_ENDPOINT_KEY).and_then(Value::as_str) {
                Some(url) => {
                    let url = url.to_string();
                    Ok(self.monitor(c, ctx, state, &url).await)
                }
                None => Ok(Step::Failed {
                    error: "the webhook's response was recorded without a status URL; restart the stage".into(),
                }),
            };
        }
        if state.int("requestStartedAt").is_none() {
            // Commit the marker before anything is sent.
            state.set("requestStartedAt", json!(now_millis()));
            state.set("attempts", json!(state.int("attempts").unwrap_or(0) + 1));
            return Ok(Step::Running {
                poll_after: Duration::ZERO,
            });
        }
        if ctx.recovered
            && let Err(error) = resend_after_restart(&c.method, c.resend_on_restart, &c.url)
        {
            return Ok(Step::Failed { error });
        }
        Ok(self.send(c, ctx, state).await)
    }

    /// Sends the initial request and records its outcome.
    async fn send(&self, c: &WebhookConfig, ctx: &StageCtx, state: &mut State) -> Step {
        let headers = match request_headers(c, ctx).await {
            Ok(h) => h,
            Err(error) => return Step::Failed { error },
        };
        let mut request = GuardedRequest::new(c.method.clone(), c.url.clone());
        request.headers = headers;
        let request = with_payload(request, c.payload.as_ref());
        let attempts = state.int("attempts").unwrap_or(1).max(1) as u64;
        let shown = redact_url(&c.url);
        match self.http.send(request).await {
            Ok(response) if response.is_success() => {
                tracing::info!(stage = %ctx.stage_id(), url = %shown, status = response.status, attempts, "webhook sent");
                record_response(state, &response);
                if !c.wait_for_completion {
                    return Step::Succeeded;
                }
                match status_url(c, &response) {
                    Ok(url) => {
                        // Recorded with the response, so a restart polls instead of re-sending.
                        state.endpoint = Some(url);
                        Step::Running {
                            poll_after: c.wait_before_monitor,
                        }
                    }
                    Err(error) => Step::Failed { error },
                }
            }
            Ok(response) => {
                let code = response.status;
                match classify_status_code(code, c) {
                    SendVerdict::Retry if attempts < MAX_SEND_ATTEMPTS => {
                        let delay = retry_after(&response).unwrap_or_else(|| backoff(attempts));
                        schedule_retry(state, format!("HTTP {code}"), delay)
                    }
                    SendVerdict::Retry => {
                        record_response(state, &response);
                        Step::Failed {
                            error: format!(
                                "webhook request to {shown} failed: it answered HTTP {code} on each of {attempts} attempts"
                            ),
                        }
                    }
                    SendVerdict::FailFast | SendVerdict::Fail => {
                        record_response(state, &response);
                        let why = if classify_status_code(code, c) == SendVerdict::FailFast {
                            " (a failFastStatusCode)"
                        } else {
                            ""
                        };
                        Step::Failed {
                            error: format!(
                                "webhook request to {shown} failed: it answered HTTP {code}{why}{}",
                                body_excerpt(&response)
                            ),
                        }
                    }
                }
            }
            Err(e) if e.is_policy_refusal() => Step::Failed {
                error: format!("webhook request to {shown} was refused by Ferry's URL policy: {e}"),
            },
            Err(e)
                if may_retry_transport(&e, &c.method, c.resend_on_restart)
                    && attempts < MAX_SEND_ATTEMPTS =>
            {
                schedule_retry(state, e.to_string(), backoff(attempts))
            }
            Err(e) => Step::Failed {
                error: format!(
                    "webhook request to {shown} failed after {attempts} attempt(s): {e}"
                ),
            },
        }
    }

    /// One status poll.
    async fn monitor(
        &self,
        c: &WebhookConfig,
        ctx: &StageCtx,
        state: &mut State,
        url: &str,
    ) -> Step {
        let shown = redact_url(url);
        let Some(status_path) = &c.status_json_path else {
            return Step::Failed {
                error: "statusJsonPath is required to wait for completion".into(),
            };
        };
        let headers = match request_headers(c, ctx).await {
            Ok(h) => h,
            Err(error) => return Step::Failed { error },
        };
        let mut request = GuardedRequest::get(url);
        request.headers = headers;
        let mut monitor = state.object("monitor");
        let result = self.http.send(request).await;
        let transient = match result {
            Err(e) if e.is_policy_refusal() => {
                return Step::Failed {
                    error: format!("the status URL {shown} was refused by Ferry's URL policy: {e}"),
                };
            }
            Err(e) => e.to_string(),
            Ok(r) if !r.is_success() => {
                let code = r.status;
                if code >= 500 || code == 429 || c.retry_status_codes.contains(&code) {
                    format!("HTTP {code}")
                } else {
                    monitor.insert("statusCode".into(), json!(code));
                    monitor.insert("body".into(), stored_body(&r).0);
                    state.set("monitor", Value::Object(monitor));
                    return Step::Failed {
                        error: format!(
                            "the status URL {shown} answered HTTP {code}{}",
                            body_excerpt(&r)
                        ),
                    };
                }
            }
            Ok(r) => {
                monitor.insert("statusCode".into(), json!(r.status));
                monitor.insert("body".into(), stored_body(&r).0);
                monitor.remove("consecutiveErrors");
                monitor.remove("lastError");
                let step = judge_status(c, status_path, &r, &mut monitor, &shown);
                state.set("monitor", Value::Object(monitor));
                return step;
            }
        };
        let errors = monitor
            .get("consecutiveErrors")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            + 1;
        monitor.insert("consecutiveErrors".into(), json!(errors));
        monitor.insert("lastError".into(), json!(transient));
        state.set("monitor", Value::Object(monitor));
        if errors >= MAX_MONITOR_ERRORS {
            return Step::Failed {
                error: format!(
                    "polling the status URL {shown} failed {errors} times in a row; last error: {transient}"
                ),
            };
        }
        Step::Running {
            poll_after: c.polling_interval,
        }
    }
}

/// Reads the status (and progress) out of a status response and decides the step.
fn judge_status(
    c: &WebhookConfig,
    status_path: &JsonPath,
    response: &GuardedResponse,
    monitor: &mut Map<String, Value>,
    shown: &str,
) -> Step {
    let Ok(body) = serde_json::from_slice::<Value>(&response.body) else {
        return Step::Failed {
            error: format!(
                "the status response from {shown} is not JSON, so statusJsonPath {status_path} cannot be read"
            ),
        };
    };
    if let Some(progress) = c.progress_json_path.as_ref().and_then(|p| p.find(&body)) {
        monitor.insert("progressMessage".into(), Value::String(text_of(progress)));
    }
    let Some(status) = status_path.find(&body) else {
        return Step::Failed {
            error: format!(
                "statusJsonPath {status_path} was not found in the status response from {shown}"
            ),
        };
    };
    match classify_status(status, c) {
        Progress::Succeeded => Step::Succeeded,
        Progress::Canceled(s) => Step::Failed {
            error: format!("the webhook's status endpoint reported a canceled status \"{s}\""),
        },
        Progress::Terminal(s) => Step::Failed {
            error: format!("the webhook's status endpoint reported a terminal status \"{s}\""),
        },
        Progress::Percent(p) => {
            monitor.insert("percentComplete".into(), json!(p));
            if p >= 100.0 {
                Step::Succeeded
            } else {
                Step::Running {
                    poll_after: c.polling_interval,
                }
            }
        }
        Progress::Running => Step::Running {
            poll_after: c.polling_interval,
        },
    }
}

/// What a status value means.
#[derive(Debug, Clone, PartialEq)]
enum Progress {
    Succeeded,
    Canceled(String),
    Terminal(String),
    Percent(f64),
    Running,
}

fn classify_status(value: &Value, c: &WebhookConfig) -> Progress {
    let text = text_of(value);
    let is_in = |list: &[String]| list.iter().any(|s| s.eq_ignore_ascii_case(text.trim()));
    if is_in(&c.success_statuses) {
        Progress::Succeeded
    } else if is_in(&c.canceled_statuses) {
        Progress::Canceled(text)
    } else if is_in(&c.terminal_statuses) {
        Progress::Terminal(text)
    } else if let Some(n) = value.as_f64() {
        Progress::Percent(n)
    } else {
        Progress::Running
    }
}

/// What to do with a non-2xx answer to the initial call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendVerdict {
    /// Try again later.
    Retry,
    /// The code is in `failFastStatusCodes`.
    FailFast,
    /// Any other non-2xx code.
    Fail,
}

fn classify_status_code(code: u16, c: &WebhookConfig) -> SendVerdict {
    if c.fail_fast_status_codes.contains(&code) {
        SendVerdict::FailFast
    } else if c.retry_status_codes.contains(&code) || code >= 500 || code == 429 {
        SendVerdict::Retry
    } else {
        SendVerdict::Fail
    }
}

/// Whether a transport failure of the initial call may be retried. A connection that was never
/// made sent nothing; a timeout or a broken exchange may have delivered the request, so those are
/// retried only when sending twice is safe.
fn may_retry_transport(e: &GuardError, method: &Method, resend_on_restart: bool) -> bool {
    match e {
        GuardError::Connect { .. } | GuardError::Dns { .. } => true,
        other => other.is_retryable() && (is_idempotent(method) || resend_on_restart),
    }
}

/// Whether sending a request twice has the same effect as sending it once (RFC 9110).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::PUT | Method::DELETE | Method::OPTIONS
    )
}

/// Decides whether a request that a restart interrupted (marker committed, no response
/// recorded) may be sent again. `Err` holds the stage's failure message.
pub fn resend_after_restart(
    method: &Method,
    resend_on_restart: bool,
    url: &str,
) -> Result<(), String> {
    if is_idempotent(method) || resend_on_restart {
        return Ok(());
    }
    Err(format!(
        "Ferry restarted while this webhook's {method} request to {} was in flight, so it may or may \
         not have been received; {method} is not idempotent, so it was not sent again. Restart the \
         stage to send it, or set resendOnRestart: true if the receiver tolerates duplicates (it can \
         drop them by the {IDEMPOTENCY_HEADER} header)",
        redact_url(url)
    ))
}

/// Backoff before attempt `attempts + 1`: 1 s, 2 s, 4 s, … capped at 30 s.
fn backoff(attempts: u64) -> Duration {
    let exp = attempts.saturating_sub(1).min(5) as u32;
    Duration::from_secs((1u64 << exp).min(30))
}

/// A `Retry-After` given in seconds, capped at 5 minutes.
fn retry_after(response: &GuardedResponse) -> Option<Duration> {
    let secs = response.header("retry-after")?.trim().parse::<u64>().ok()?;
    Some(Duration::from_secs(secs.min(300)))
}

/// Clears the marker (the attempt is over) and asks to be stepped again after `delay`.
fn schedule_retry(state: &mut State, error: String, delay: Duration) -> Step {
    state.remove("requestStartedAt");
    state.set("lastError", Value::String(error));
    Step::Running { poll_after: delay }
}

fn record_response(state: &mut State, response: &GuardedResponse) {
    let (body, truncated) = stored_body(response);
    state.set("statusCode", json!(response.status));
    state.set("statusCodeValue", json!(response.status));
    state.set("body", body);
    if truncated {
        state.set("bodyTruncated", Value::Bool(true));
    }
    state.remove("lastError");
}

/// The body as stored: parsed JSON when it is JSON, else text; cut at [`MAX_STORED_BODY`].
fn stored_body(response: &GuardedResponse) -> (Value, bool) {
    let bytes = &response.body[..];
    if bytes.len() > MAX_STORED_BODY {
        let cut = String::from_utf8_lossy(&bytes[..MAX_STORED_BODY]).into_owned();
        return (Value::String(cut), true);
    }
    if bytes.is_empty() {
        return (Value::Null, false);
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v) => (v, false),
        Err(_) => (
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
            false,
        ),
    }
}

/// A short excerpt of an error body for a failure message.
fn body_excerpt(response: &GuardedResponse) -> String {
    let text = String::from_utf8_lossy(&response.body);
    let text = text.trim();
    if text.is_empty() {
        return String::new();
    }
    let cut: String = text.chars().take(300).collect();
    let more = if cut.len() < text.len() { "…" } else { "" };
    format!(": {cut}{more}")
}

/// A JSON value as text: strings as they are, anything else as JSON.
fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The status URL, as `statusUrlResolution` says.
fn status_url(c: &WebhookConfig, response: &GuardedResponse) -> Result<String, String> {
    let raw = match c.status_url_resolution {
        StatusUrlResolution::GetMethod => return Ok(c.url.clone()),
        StatusUrlResolution::LocationHeader => {
            response.header("location").map(str::to_string).ok_or(
                "statusUrlResolution is locationHeader, but the response has no Location header",
            )?
        }
        StatusUrlResolution::WebhookResponse => {
            let path = c.status_url_json_path.as_ref().ok_or(
                "statusUrlJsonPath is required when statusUrlResolution is webhookResponse",
            )?;
            let body: Value = serde_json::from_slice(&response.body).map_err(|_| {
                format!("the response is not JSON, so statusUrlJsonPath {path} cannot be read")
            })?;
            match path.find(&body) {
                Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
                Some(other) => {
                    return Err(format!(
                        "statusUrlJsonPath {path} holds {} in the response, not a URL",
                        kind(other)
                    ));
                }
                None => {
                    return Err(format!(
                        "statusUrlJsonPath {path} was not found in the response"
                    ));
                }
            }
        }
    };
    // Relative URLs resolve against the URL that answered.
    response
        .final_url
        .join(&raw)
        .map(|u| u.to_string())
        .map_err(|e| format!("the status URL in the response is not a valid URL: {e}"))
}

/// Adds the payload as a JSON body (and a JSON content type unless the stage set one).
fn with_payload(mut request: GuardedRequest, payload: Option<&Value>) -> GuardedRequest {
    let Some(payload) = payload else {
        return request;
    };
    let has_type = request
        .headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("content-type"));
    if !has_type {
        request
            .headers
            .push(("Content-Type".into(), "application/json".into()));
    }
    request.body = Some(payload.to_string().into_bytes());
    request
}

/// The headers of every request: the evaluated custom headers and the idempotency key.
/// Evaluation happens here, in memory; the values are never stored or shown.
async fn request_headers(
    c: &WebhookConfig,
    ctx: &StageCtx,
) -> Result<Vec<(String, String)>, String> {
    let mut headers = if c
        .custom_headers
        .iter()
        .any(|(_, v)| looks_like_expression(v))
    {
        let items = c
            .custom_headers
            .iter()
            .map(|(n, t)| (n.clone(), Value::String(t.clone())))
            .collect();
        let results = ferry_engine::expr::evaluate_for_stage(ctx, items, false)
            .await
            .map_err(|e| format!("customHeaders could not be evaluated: {e}"))?;
        header_values(results)?
    } else {
        c.custom_headers.clone()
    };
    headers.push((IDEMPOTENCY_HEADER.into(), ctx.idempotency_key()));
    Ok(headers)
}

/// Turns evaluated custom headers into text, refusing failed or non-text values without
/// showing them (they may be secrets).
fn header_values(
    results: Vec<(String, Value, Vec<ferry_expr::FieldError>)>,
) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::with_capacity(results.len());
    for (name, value, errors) in results {
        if let Some(e) = errors.first() {
            // The message names the problem; the value (a secret, perhaps) is not shown.
            return Err(format!(
                "customHeaders.{name}: the expression could not be evaluated: {}",
                e.message
            ));
        }
        match value {
            Value::String(s) => out.push((name.clone(), s)),
            Value::Number(_) | Value::Bool(_) => out.push((name.clone(), value.to_string())),
            other => {
                return Err(format!(
                    "customHeaders.{name}: the expression must produce text, not {}",
                    kind(&other)
                ));
            }
        }
    }
    Ok(out)
}

/// The stage's own state in the context (`webhook`), plus a status URL to record at the top
/// level (`statusEndpoint`, Spinnaker's key). Loaded at the start of a step, saved at its end.
struct State {
    map: Map<String, Value>,
    endpoint: Option<String>,
}

impl State {
    fn load(context: &Map<String, Value>) -> State {
        let map = context
            .get(STATE_KEY)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        State {
            map,
            endpoint: None,
        }
    }

    fn save(&mut self, context: &mut Map<String, Value>) {
        if let Some(url) = self.endpoint.take() {
            context.insert(STATUS_ENDPOINT_KEY.into(), Value::String(url));
        }
        context.insert(STATE_KEY.into(), Value::Object(self.map.clone()));
    }

    fn int(&self, key: &str) -> Option<i64> {
        self.map.get(key).and_then(Value::as_i64)
    }

    fn object(&self, key: &str) -> Map<String, Value> {
        self.map
            .get(key)
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    }

    fn set(&mut self, key: &str, value: Value) {
        self.map.insert(key.into(), value);
    }

    fn remove(&mut self, key: &str) {
        self.map.remove(key);
    }
}

// ----- configuration readers -----

fn read_method(f: &mut Fields<'_>, key: &str, deferred: &mut bool) -> Option<Method> {
    if f.is_deferred(key) {
        *deferred = true;
        return None;
    }
    let Some(raw) = f.opt_str(key) else {
        return Some(Method::POST);
    };
    let upper = raw.trim().to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        f.problem(
            key,
            format!("must be one of {}; found \"{raw}\"", METHODS.join(", ")),
        );
        return None;
    }
    match Method::from_bytes(upper.as_bytes()) {
        Ok(m) => Some(m),
        Err(_) => {
            f.problem(key, format!("\"{raw}\" is not an HTTP method"));
            None
        }
    }
}

fn read_resolution(f: &mut Fields<'_>, deferred: &mut bool) -> Option<StatusUrlResolution> {
    const KEY: &str = "statusUrlResolution";
    if f.is_deferred(KEY) {
        *deferred = true;
        return None;
    }
    match f.opt_str(KEY).as_deref().map(str::trim) {
        None | Some("") | Some("getMethod") => Some(StatusUrlResolution::GetMethod),
        Some("locationHeader") => Some(StatusUrlResolution::LocationHeader),
        Some("webhookResponse") => Some(StatusUrlResolution::WebhookResponse),
        Some(other) => {
            f.problem(
                KEY,
                format!(
                    "must be one of getMethod, locationHeader, webhookResponse; found \"{other}\""
                ),
            );
            None
        }
    }
}

fn read_json_path(f: &mut Fields<'_>, key: &str, deferred: &mut bool) -> Option<JsonPath> {
    if f.is_deferred(key) {
        *deferred = true;
        return None;
    }
    let raw = f.opt_str(key)?;
    if raw.trim().is_empty() {
        return None;
    }
    match JsonPath::parse(&raw) {
        Ok(p) => Some(p),
        Err(e) => {
            f.problem(key, format!("is not a supported JSON path: {e}"));
            None
        }
    }
}

fn read_statuses(
    f: &mut Fields<'_>,
    key: &str,
    default: &[&str],
    deferred: &mut bool,
) -> Vec<String> {
    if f.is_deferred(key) {
        *deferred = true;
        return Vec::new();
    }
    let list: Vec<String> = match f.get(key) {
        None => Vec::new(),
        Some(Value::String(s)) => s.split(',').map(|p| p.trim().to_string()).collect(),
        Some(Value::Array(_)) => f
            .string_list(key)
            .into_iter()
            .map(|s| s.trim().to_string())
            .collect(),
        Some(other) => {
            let msg = format!(
                "must be a comma-separated string or a list of strings, found {}",
                kind(other)
            );
            f.problem(key, msg);
            Vec::new()
        }
    };
    let list: Vec<String> = list.into_iter().filter(|s| !s.is_empty()).collect();
    if list.is_empty() {
        default.iter().map(|s| (*s).to_string()).collect()
    } else {
        list
    }
}

fn read_status_codes(f: &mut Fields<'_>, key: &str, deferred: &mut bool) -> Vec<u16> {
    if f.is_deferred(key) {
        *deferred = true;
        return Vec::new();
    }
    let Some(items) = f.opt_array(key) else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let code = match item {
            Value::Number(n) => n.as_u64(),
            Value::String(s) if f.is_lenient() && looks_like_expression(s) => {
                *deferred = true;
                continue;
            }
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match code {
            Some(c @ 100..=599) => out.push(c as u16),
            _ => {
                let found = match item {
                    Value::String(s) => format!("\"{s}\""),
                    other => other.to_string(),
                };
                f.problem(
                    &format!("{key}[{i}]"),
                    format!(
                        "must be an HTTP status code (an integer from 100 to 599), found {found}"
                    ),
                );
            }
        }
    }
    out
}

fn read_seconds(
    f: &mut Fields<'_>,
    key: &str,
    default: f64,
    min: f64,
    deferred: &mut bool,
) -> Option<Duration> {
    if f.is_deferred(key) {
        *deferred = true;
        return None;
    }
    let secs = f.opt_f64(key).unwrap_or(default);
    if secs < min || secs > 365.0 * 24.0 * 3600.0 {
        f.problem(
            key,
            format!("must be between {min} and 31536000 seconds, found {secs}"),
        );
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// Reads `customHeaders`: header name → a string or a list of strings. Names are checked;
/// values are checked without ever being echoed (they may be secrets).
fn read_headers(f: &mut Fields<'_>) -> Vec<(String, String)> {
    const KEY: &str = "customHeaders";
    let Some(raw) = f.get(KEY) else {
        return Vec::new();
    };
    let Value::Object(map) = raw else {
        let msg = format!(
            "must be an object of header names to values, found {}; put expressions in the values",
            kind(raw)
        );
        f.problem(KEY, msg);
        return Vec::new();
    };
    let mut out = Vec::new();
    for (name, value) in map {
        let path = format!("{KEY}.{name}");
        if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            f.problem(&path, "is not a valid HTTP header name");
            continue;
        }
        if RESERVED_HEADERS
            .iter()
            .any(|r| r.eq_ignore_ascii_case(name))
        {
            f.problem(&path, "is set by Ferry and cannot be set by a stage");
            continue;
        }
        let values: Vec<(String, &Value)> = match value {
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{path}[{i}]"), v))
                .collect(),
            other => vec![(path.clone(), other)],
        };
        for (p, v) in values {
            let text = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                other => {
                    f.problem(
                        &p,
                        format!(
                            "must be a string or a list of strings, found {}",
                            kind(other)
                        ),
                    );
                    continue;
                }
            };
            if looks_like_expression(&text) {
                for e in ferry_expr::check_tree(&Value::String(text.clone())) {
                    f.problem(&p, format!("invalid expression: {}", e.message));
                }
            } else if http::HeaderValue::from_str(&text).is_err() {
                f.problem(
                    &p,
                    "is not a valid header value (it holds control characters)",
                );
                continue;
            }
            out.push((name.clone(), text));
        }
    }
    out
}

// ----- JSON paths -----

/// A small JSONPath subset over `serde_json` values: `$`, `$.a.b`, `$.a[0].b`, `$['a']`,
/// `$["a b"]`, and Spinnaker's bare form `a.b[0]`. No wildcards, slices, filters or recursive
/// descent. A name step applied to a list takes a numeric name as an index (`$.items.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`", self.text)
    }
}

impl JsonPath {
    /// Parses a path, saying what is wrong and where.
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let chars: Vec<char> = text.trim().chars().collect();
        if chars.is_empty() {
            return Err("the path is empty".into());
        }
        let mut segments = Vec::new();
        let mut i = 0;
        if chars[0] == '$' {
            i = 1;
        } else if chars[0] != '[' {
            // Spinnaker's bare form: a leading name without `$.`.
            let (name, next) = read_name(&chars, 0);
            check_name(&name, 0)?;
            segments.push(Segment::Key(name));
            i = next;
        }
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let (name, next) = read_name(&chars, i + 1);
                    check_name(&name, i + 1)?;
                    segments.push(Segment::Key(name));
                    i = next;
                }
                '[' => {
                    i += 1;
                    match chars.get(i).copied() {
                        Some(q @ ('\'' | '"')) => {
                            i += 1;
                            let mut name = String::new();
                            loop {
                                match chars.get(i).copied() {
                                    None => return Err("a quoted name is not closed".into()),
                                    Some('\\') => match chars.get(i + 1) {
                                        Some(c) => {
                                            name.push(*c);
                                            i += 2;
                                        }
                                        None => return Err("a quoted name is not closed".into()),
                                    },
                                    Some(c) if c == q => {
                                        i += 1;
                                        break;
                                    }
                                    Some(c) => {
                                        name.push(c);
                                        i += 1;
                                    }
                                }
                            }
                            if chars.get(i) != Some(&']') {
                                return Err(format!("expected ']' at position {i}"));
                            }
                            i += 1;
                            segments.push(Segment::Key(name));
                        }
                        Some(c) if c.is_ascii_digit() => {
                            let start = i;
                            while chars.get(i).is_some_and(char::is_ascii_digit) {
                                i += 1;
                            }
                            if chars.get(i) != Some(&']') {
                                return Err(format!("expected ']' at position {i}"));
                            }
                            let digits: String = chars[start..i].iter().collect();
                            let n = digits
                                .parse::<usize>()
                                .map_err(|_| format!("index {digits} is too large"))?;
                            i += 1;
                            segments.push(Segment::Index(n));
                        }
                        _ => {
                            return Err(format!(
                                "unsupported selector at position {i}: only [n] and ['name'] are supported \
                                 (no wildcards, slices or filters)"
                            ));
                        }
                    }
                }
                c => return Err(format!("unexpected '{c}' at position {i}")),
            }
        }
        Ok(JsonPath {
            text: text.trim().to_string(),
            segments,
        })
    }

    /// The value at this path, if there is one.
    pub fn find<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        let mut cur = root;
        for s in &self.segments {
            cur = match (s, cur) {
                (Segment::Key(k), Value::Object(o)) => o.get(k)?,
                (Segment::Key(k), Value::Array(a)) => a.get(k.parse::<usize>().ok()?)?,
                (Segment::Index(n), Value::Array(a)) => a.get(*n)?,
                _ => return None,
            };
        }
        Some(cur)
    }
}

fn read_name(chars: &[char], start: usize) -> (String, usize) {
    let mut i = start;
    while i < chars.len() && chars[i] != '.' && chars[i] != '[' {
        i += 1;
    }
    (chars[start..i].iter().collect(), i)
}

fn check_name(name: &str, at: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!(
            "expected a name at position {at} (recursive descent `..` is not supported)"
        ));
    }
    if name == "*" {
        return Err(format!("wildcards are not supported (position {at})"));
    }
    Ok(())
}

#[cfg(test)]
// Tests may unwrap (house rule 2); the crate has no clippy.toml saying so yet.
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testutil;
    use crate::testutil::finished;
    use axum::body::Bytes;
    use axum::extract::State as AxState;
    use axum::http::{HeaderMap, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};
    use ferry_core::{Execution, Status};
    use ferry_engine::conformance::{Case, run, wait_for};
    use ferry_engine::{Command, Engine, EngineConfig, EngineHandle, RunRequest};
    use std::collections::HashMap;
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    // ----- a small webhook receiver -----

    #[derive(Debug, Clone)]
    struct Seen {
        method: String,
        path: String,
        headers: Vec<(String, String)>,
        body: String,
    }

    struct Job {
        created: Instant,
        duration: Duration,
        final_status: String,
    }

    #[derive(Default)]
    struct Receiver {
        base: String,
        next_job: u64,
        jobs: HashMap<String, Job>,
        hits: HashMap<String, u32>,
        seen: Vec<Seen>,
    }

    type Shared = Arc<Mutex<Receiver>>;

    impl Receiver {
        fn new_job(&mut self, name: Option<&str>, payload: &Value) -> String {
            self.next_job += 1;
            let id = name
                .map(str::to_string)
                .unwrap_or_else(|| self.next_job.to_string());
            let duration = Duration::from_millis(
                payload
                    .get("durationMs")
                    .and_then(Value::as_u64)
                    .unwrap_or(0),
            );
            let final_status = payload
                .get("finalStatus")
                .and_then(Value::as_str)
                .unwrap_or("SUCCESS")
                .to_string();
            self.jobs.insert(
                id.clone(),
                Job {
                    created: Instant::now(),
                    duration,
                    final_status,
                },
            );
            id
        }

        fn job_status(&self, id: &str) -> Response {
            match self.jobs.get(id) {
                None => (StatusCode::NOT_FOUND, "no such job").into_response(),
                Some(job) => {
                    let done = job.created.elapsed() >= job.duration;
                    let status = if done {
                        job.final_status.as_str()
                    } else {
                        "RUNNING"
                    };
                    let progress = if done { "all done" } else { "working" };
                    axum::Json(json!({"status": status, "progress": progress})).into_response()
                }
            }
        }
    }

    async fn receive(
        AxState(shared): AxState<Shared>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut r = shared.lock().unwrap();
        let path = uri.path().to_string();
        r.seen.push(Seen {
            method: method.to_string(),
            path: path.clone(),
            headers: headers
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("POST" | "PUT", ["hook"]) => {
                let id = r.new_job(None, &payload);
                let status_url = format!("{}/jobs/{id}", r.base);
                (
                    StatusCode::OK,
                    [("location", format!("/jobs/{id}"))],
                    axum::Json(json!({"id": id, "statusUrl": status_url})),
                )
                    .into_response()
            }
            ("GET", ["jobs", id]) => r.job_status(id),
            ("POST", ["same", name]) => {
                r.new_job(Some(name), &payload);
                (StatusCode::ACCEPTED, axum::Json(json!({"accepted": true}))).into_response()
            }
            ("GET", ["same", name]) => r.job_status(name),
            (_, ["flaky", name]) => {
                let fails: u32 = uri
                    .query()
                    .and_then(|q| q.strip_prefix("fails="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                let hits = r.hits.entry((*name).to_string()).or_default();
                *hits += 1;
                if *hits <= fails {
                    (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response()
                } else {
                    axum::Json(json!({"ok": true, "hits": *hits})).into_response()
                }
            }
            (_, ["status", code]) => {
                let code = code
                    .parse::<u16>()
                    .ok()
                    .and_then(|c| StatusCode::from_u16(c).ok())
                    .unwrap_or(StatusCode::IM_A_TEAPOT);
                (code, axum::Json(json!({"error": "nope"}))).into_response()
            }
            (_, ["redirect"]) => (
                StatusCode::FOUND,
                [("location", "http://169.254.169.254/latest/meta-data/")],
            )
                .into_response(),
            (_, ["cancel", _]) => axum::Json(json!({"canceled": true})).into_response(),
            _ => (StatusCode::NOT_FOUND, "unknown").into_response(),
        }
    }

    async fn receiver() -> (String, Shared) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shared: Shared = Arc::new(Mutex::new(Receiver {
            base: base.clone(),
            ..Receiver::default()
        }));
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (base, shared)
    }

    fn seen(shared: &Shared) -> Vec<Seen> {
        shared.lock().unwrap().seen.clone()
    }

    // ----- engine helpers -----

    async fn engine(work: &std::path::Path) -> (EngineHandle, tempfile::TempDir) {
        let (store, guard) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(work));
        let (engine, _join) = Engine::start(store, registry, EngineConfig::default())
            .await
            .unwrap();
        (engine, guard)
    }

    async fn start(engine: &EngineHandle, name: &str, stage: Value) -> String {
        let mut stage = stage;
        stage["refId"] = json!("1");
        stage["name"] = json!("call");
        let doc = json!({"application": "hooks", "name": name, "stages": [stage]});
        testutil::run_doc(engine, doc, "tester").await
    }

    fn error_of(e: &Execution) -> String {
        crate::testutil::error_at(e, 0)
    }

    fn waiting(url: &str, extra: Value) -> Value {
        let mut stage = json!({
            "type": "webhook",
            "url": url,
            "method": "POST",
            "waitForCompletion": true,
            "statusUrlResolution": "webhookResponse",
            "statusUrlJsonPath": "$.statusUrl",
            "statusJsonPath": "$.status",
            "progressJsonPath": "$.progress",
            "successStatuses": "SUCCESS",
            "terminalStatuses": "FAILED, ERROR",
            "pollingIntervalSeconds": 0.1,
        });
        for (k, v) in extra.as_object().unwrap() {
            stage[k] = v.clone();
        }
        stage
    }

    // ----- the conformance kit -----

    #[tokio::test]
    async fn webhook_conforms() {
        let dir = tempfile::tempdir().unwrap();
        let (base, _shared) = receiver().await;
        let (store, _g) = testutil::sqlite_store().await;
        let registry = crate::core_registry(&testutil::services(dir.path()));
        let url = format!("{base}/hook");
        run(
            registry,
            store,
            Case {
                succeeds: waiting(&url, json!({"payload": {"durationMs": 0}})),
                // RUNNING for 4 s per call: long enough for the cancel and timeout checks, short
                // enough to complete after the simulated crash.
                long_running: waiting(&url, json!({"payload": {"durationMs": 4000}, "resendOnRestart": true})),
                completing_input: None,
                invalid: vec![
                    (json!({"type": "webhook"}), "stages[0].url"),
                    (json!({"type": "webhook", "url": url, "method": "FETCH"}), "stages[0].method"),
                    (json!({"type": "webhook", "url": url, "statusUrlResolution": "magic"}), "stages[0].statusUrlResolution"),
                    (json!({"type": "webhook", "url": url, "retryStatusCodes": [503, "soon"]}), "stages[0].retryStatusCodes[1]"),
                    (json!({"type": "webhook", "url": url, "failFastStatusCodes": [true]}), "stages[0].failFastStatusCodes[0]"),
                    (json!({"type": "webhook", "url": url, "waitForCompletion": true}), "stages[0].statusJsonPath"),
                    (json!({"type": "webhook", "url": url, "statusJsonPath": "$..status"}), "stages[0].statusJsonPath"),
                    (json!({"type": "webhook", "url": url, "customHeaders": {"X-Token": {"a": 1}}}), "stages[0].customHeaders.X-Token"),
                    (json!({"type": "webhook", "url": url, "customHeaders": {"Host": "evil"}}), "stages[0].customHeaders.Host"),
                    (json!({"type": "webhook", "url": url, "customHeaders": {"X-Token": "${oops("}}), "stages[0].customHeaders.X-Token"),
                    (json!({"type": "webhook", "url": url, "pollingIntervalSeconds": 0}), "stages[0].pollingIntervalSeconds"),
                ],
            },
        )
        .await
        .unwrap();
    }

    // ----- status URL resolution -----

    #[tokio::test]
    async fn get_method_polls_the_same_url() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let url = format!("{base}/same/job-g");
        let stage = json!({
            "type": "webhook", "url": url, "payload": {"durationMs": 300},
            "waitForCompletion": true, "statusUrlResolution": "getMethod",
            "statusJsonPath": "status", "progressJsonPath": "$['progress']",
            "pollingIntervalSeconds": 0.1,
        });
        let id = start(&engine, "get-method", stage).await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        let ctx = &e.stages[0].context;
        assert_eq!(ctx["statusEndpoint"], json!(url));
        assert_eq!(ctx["webhook"]["statusCode"], json!(202));
        assert_eq!(
            ctx["webhook"]["monitor"]["progressMessage"],
            json!("all done")
        );
        assert_eq!(
            e.stages[0].outputs["webhook"]["monitor"]["body"]["status"],
            json!("SUCCESS")
        );
        let polls = seen(&shared)
            .iter()
            .filter(|s| s.method == "GET" && s.path == "/same/job-g")
            .count();
        assert!(polls >= 1, "the same URL was never polled with GET");
        engine.shutdown();
    }

    #[tokio::test]
    async fn location_header_gives_the_status_url() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let stage = json!({
            "type": "webhook", "url": format!("{base}/hook"), "payload": {"durationMs": 200},
            "waitForCompletion": true, "statusUrlResolution": "locationHeader",
            "statusJsonPath": "$.status", "pollingIntervalSeconds": 0.1,
        });
        let id = start(&engine, "location", stage).await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        // The relative Location `/jobs/1` is resolved against the URL that answered.
        assert_eq!(
            e.stages[0].context["statusEndpoint"],
            json!(format!("{base}/jobs/1"))
        );
        assert!(
            seen(&shared)
                .iter()
                .any(|s| s.method == "GET" && s.path == "/jobs/1")
        );
        engine.shutdown();
    }

    #[tokio::test]
    async fn webhook_response_gives_the_status_url_and_terminal_statuses_fail() {
        let dir = tempfile::tempdir().unwrap();
        let (base, _shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let url = format!("{base}/hook");
        let ok = start(
            &engine,
            "response-ok",
            waiting(&url, json!({"payload": {"durationMs": 200}})),
        )
        .await;
        let e = finished(&engine, &ok).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        assert_eq!(
            e.stages[0].context["statusEndpoint"],
            json!(format!("{base}/jobs/1"))
        );
        assert_eq!(e.stages[0].context["webhook"]["body"]["id"], json!("1"));

        let bad = start(
            &engine,
            "response-bad",
            waiting(&url, json!({"payload": {"finalStatus": "FAILED"}})),
        )
        .await;
        let e = finished(&engine, &bad).await;
        assert_eq!(e.status, Status::Terminal);
        assert!(
            error_of(&e).contains("terminal status \"FAILED\""),
            "{}",
            error_of(&e)
        );
        engine.shutdown();
    }

    // ----- retries and failures of the initial call -----

    #[tokio::test]
    async fn a_503_is_retried_then_succeeds() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let stage = json!({"type": "webhook", "url": format!("{base}/flaky/a?fails=1"), "method": "POST", "payload": {"x": 1}});
        let id = start(&engine, "flaky", stage).await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        let state = &e.stages[0].context["webhook"];
        assert_eq!(state["attempts"], json!(2));
        assert_eq!(state["statusCode"], json!(200));
        assert_eq!(state["body"]["hits"], json!(2));
        assert_eq!(
            seen(&shared)
                .iter()
                .filter(|s| s.path == "/flaky/a")
                .count(),
            2
        );
        engine.shutdown();
    }

    #[tokio::test]
    async fn fail_fast_codes_fail_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let bad_request = start(
            &engine,
            "fail-fast-400",
            json!({"type": "webhook", "url": format!("{base}/status/400"), "failFastStatusCodes": [400]}),
        )
        .await;
        // 503 would be retried by default; failFastStatusCodes wins.
        let unavailable = start(
            &engine,
            "fail-fast-503",
            json!({"type": "webhook", "url": format!("{base}/status/503"), "failFastStatusCodes": [503]}),
        )
        .await;
        for (id, code) in [(bad_request, 400), (unavailable, 503)] {
            let e = finished(&engine, &id).await;
            assert_eq!(e.status, Status::Terminal);
            let error = error_of(&e);
            assert!(
                error.contains(&format!("HTTP {code} (a failFastStatusCode)")),
                "{error}"
            );
            assert!(error.contains("nope"), "the error shows the body: {error}");
            assert_eq!(e.stages[0].context["webhook"]["statusCode"], json!(code));
            assert_eq!(e.stages[0].context["webhook"]["attempts"], json!(1));
            let path = format!("/status/{code}");
            assert_eq!(seen(&shared).iter().filter(|s| s.path == path).count(), 1);
        }
        engine.shutdown();
    }

    // ----- secrets -----

    #[tokio::test]
    async fn custom_header_values_reach_the_server_but_never_the_execution() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        // The value only exists once evaluated, so if it shows up in the stored execution the
        // stage (or the engine) wrote it there.
        let stage = json!({
            "type": "webhook", "url": format!("{base}/flaky/h?fails=0"), "method": "PUT",
            "customHeaders": {
                "X-Api-Key": "${'s3cr' + 'et-' + 'token-42'}",
                "X-Multi": ["one", "two"],
            },
        });
        let id = start(&engine, "headers", stage).await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
        let request = seen(&shared)
            .into_iter()
            .find(|s| s.path == "/flaky/h")
            .unwrap();
        let header = |name: &str| -> Vec<String> {
            request
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .collect()
        };
        assert_eq!(header("x-api-key"), vec!["s3cret-token-42".to_string()]);
        assert_eq!(
            header("x-multi"),
            vec!["one".to_string(), "two".to_string()]
        );
        let key = format!("{}:{}:1", e.id, e.stages[0].id);
        assert_eq!(header("x-ferry-idempotency-key"), vec![key]);

        let stored = engine.store().get_execution(&id).await.unwrap().unwrap();
        let text = serde_json::to_string(&stored).unwrap();
        assert!(
            !text.contains("s3cret-token-42"),
            "a header value was stored: {text}"
        );
        let live = serde_json::to_string(&e).unwrap();
        assert!(!live.contains("s3cret-token-42"));
        engine.shutdown();
    }

    // ----- the URL guard -----

    #[tokio::test]
    async fn metadata_address_is_refused_by_the_guard() {
        let dir = tempfile::tempdir().unwrap();
        let (engine, _g) = engine(dir.path()).await;
        let began = Instant::now();
        let id = start(
            &engine,
            "metadata",
            json!({"type": "webhook", "url": "http://169.254.169.254/latest/meta-data/iam/", "method": "GET"}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(error.contains("refused by Ferry's URL policy"), "{error}");
        assert!(
            error.contains("169.254.169.254") && error.contains("link-local"),
            "{error}"
        );
        // A policy refusal is final: no retry, and (the address being checked before any
        // connection) no waiting on a connect timeout either.
        assert_eq!(e.stages[0].context["webhook"]["attempts"], json!(1));
        assert!(e.stages[0].context["webhook"].get("statusCode").is_none());
        assert!(began.elapsed() < Duration::from_secs(10));
        engine.shutdown();
    }

    #[tokio::test]
    async fn a_redirect_off_the_policy_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let id = start(
            &engine,
            "redirect",
            json!({"type": "webhook", "url": format!("{base}/redirect")}),
        )
        .await;
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Terminal);
        let error = error_of(&e);
        assert!(error.contains("refused by Ferry's URL policy"), "{error}");
        assert!(
            error.contains("redirect to http://169.254.169.254/"),
            "{error}"
        );
        assert_eq!(
            seen(&shared)
                .iter()
                .filter(|s| s.path == "/redirect")
                .count(),
            1
        );
        engine.shutdown();
    }

    // ----- cancel -----

    #[tokio::test]
    async fn cancel_calls_the_cancel_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let stage = waiting(
            &format!("{base}/hook"),
            json!({
                "payload": {"durationMs": 600_000},
                "cancelEndpoint": format!("{base}/cancel/1"),
                "cancelMethod": "post",
                "cancelPayload": {"reason": "stop it"},
            }),
        );
        let id = start(&engine, "cancel", stage).await;
        wait_for(&engine, &id, Duration::from_secs(10), "polling", |e| {
            e.stages[0].context.contains_key("statusEndpoint")
        })
        .await
        .unwrap();
        engine
            .command(
                &id,
                Command::Cancel {
                    user: "me".into(),
                    reason: None,
                },
            )
            .await
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let call = loop {
            if let Some(s) = seen(&shared).into_iter().find(|s| s.path == "/cancel/1") {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "the cancel endpoint was not called"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(call.method, "POST");
        assert_eq!(
            serde_json::from_str::<Value>(&call.body).unwrap(),
            json!({"reason": "stop it"})
        );
        assert!(
            call.headers
                .iter()
                .any(|(n, _)| n == "x-ferry-idempotency-key")
        );
        let e = finished(&engine, &id).await;
        assert_eq!(e.status, Status::Canceled);
        engine.shutdown();
    }

    // ----- restarts -----

    #[test]
    fn only_idempotent_requests_are_resent_after_a_restart() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(
                resend_after_restart(&m, false, "https://example.com/").is_ok(),
                "{m}"
            );
        }
        for m in [Method::POST, Method::PATCH] {
            let error =
                resend_after_restart(&m, false, "https://user:pw@example.com/x").unwrap_err();
            assert!(
                error.contains("not idempotent") && error.contains("resendOnRestart"),
                "{error}"
            );
            assert!(!error.contains("pw@"), "credentials shown: {error}");
            assert!(resend_after_restart(&m, true, "https://example.com/").is_ok());
        }
    }

    /// A scratch execution to run steps against directly, as the engine would after a restart.
    async fn scratch(engine: &EngineHandle) -> Arc<Execution> {
        let doc = json!({"application": "hooks", "name": "scratch", "stages": [{"refId": "1", "type": "wait", "waitTime": 3600}]});
        let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
        let record = engine.store().save_pipeline(&p, "tester").await.unwrap();
        let id = engine
            .run_pipeline(&record, RunRequest::default())
            .await
            .unwrap();
        let e = wait_for(engine, &id, Duration::from_secs(5), "running", |e| {
            e.stages[0].status == Status::Running
        })
        .await
        .unwrap();
        Arc::new(e)
    }

    async fn recovered_step(
        engine: &EngineHandle,
        execution: Arc<Execution>,
        stage: Value,
    ) -> (Step, Map<String, Value>) {
        let mut context = stage.as_object().unwrap().clone();
        context.insert(
            "webhook".into(),
            json!({"requestStartedAt": 1, "attempts": 1}),
        );
        let value = Value::Object(context.clone());
        let mut problems = Vec::new();
        let config = Webhook::config(&mut Fields::new(&value, "", &mut problems)).unwrap();
        assert!(problems.is_empty(), "{problems:?}");
        let mut ctx = StageCtx {
            execution,
            stage_index: 0,
            context,
            outputs: Map::new(),
            recovered: true,
            cancel: tokio_util::sync::CancellationToken::new(),
            engine: engine.clone(),
        };
        let hook = Webhook {
            http: testutil::services(std::path::Path::new("/nonexistent")).http,
        };
        let step = hook.step(&config, &mut ctx).await.unwrap();
        (step, ctx.context)
    }

    #[tokio::test]
    async fn a_restart_after_sending_resends_get_but_not_post() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shared) = receiver().await;
        let (engine, _g) = engine(dir.path()).await;
        let execution = scratch(&engine).await;

        let post = json!({"type": "webhook", "url": format!("{base}/flaky/post?fails=0"), "method": "POST"});
        let (step, _) = recovered_step(&engine, execution.clone(), post).await;
        let error = match step {
            Step::Failed { error } => error,
            other => format!("POST was resent: {other:?}"),
        };
        assert!(error.contains("not idempotent"), "{error}");
        assert!(seen(&shared).iter().all(|s| s.path != "/flaky/post"));

        let get =
            json!({"type": "webhook", "url": format!("{base}/flaky/get?fails=0"), "method": "GET"});
        let (step, context) = recovered_step(&engine, execution.clone(), get).await;
        assert_eq!(step, Step::Succeeded);
        assert_eq!(context["webhook"]["statusCode"], json!(200));
        assert_eq!(
            seen(&shared)
                .iter()
                .filter(|s| s.path == "/flaky/get")
                .count(),
            1
        );

        let forced = json!({"type": "webhook", "url": format!("{base}/flaky/forced?fails=0"), "resendOnRestart": true});
        let (step, _) = recovered_step(&engine, execution, forced).await;
        assert_eq!(step, Step::Succeeded);
        assert_eq!(
            seen(&shared)
                .iter()
                .filter(|s| s.path == "/flaky/forced")
                .count(),
            1
        );
        engine.shutdown();
    }

    // ----- pieces -----

    #[test]
    fn json_paths() {
        let doc = json!({"a": {"b": [{"c": 1}, {"c": "two"}]}, "odd key": {"x.y": true}, "list": [10, 20]});
        let at = |p: &str| JsonPath::parse(p).unwrap().find(&doc).cloned();
        assert_eq!(at("$.a.b[1].c"), Some(json!("two")));
        assert_eq!(at("a.b[0].c"), Some(json!(1)));
        assert_eq!(at("$['odd key']['x.y']"), Some(json!(true)));
        assert_eq!(at("$[\"odd key\"]"), Some(json!({"x.y": true})));
        assert_eq!(at("$.list.1"), Some(json!(20)));
        assert_eq!(at("list[1]"), Some(json!(20)));
        assert_eq!(at("$"), Some(doc.clone()));
        assert_eq!(at("$.a.missing"), None);
        assert_eq!(at("$.list[5]"), None);
        assert_eq!(at("$.a.b.c"), None);
        for bad in [
            "",
            "$..a",
            "$.a[*]",
            "$.a[?(@.b)]",
            "$.a[0",
            "$['a'",
            "$.*",
            "$a",
        ] {
            assert!(JsonPath::parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn status_codes_and_statuses_are_classified() {
        let value = json!({"url": "http://x/", "retryStatusCodes": [404], "failFastStatusCodes": [502],
            "successStatuses": "done, OK", "canceledStatuses": ["aborted"]});
        let mut problems = Vec::new();
        let c = Webhook::config(&mut Fields::new(&value, "", &mut problems)).unwrap();
        assert_eq!(classify_status_code(404, &c), SendVerdict::Retry);
        assert_eq!(classify_status_code(503, &c), SendVerdict::Retry);
        assert_eq!(classify_status_code(429, &c), SendVerdict::Retry);
        assert_eq!(classify_status_code(502, &c), SendVerdict::FailFast);
        assert_eq!(classify_status_code(400, &c), SendVerdict::Fail);
        assert_eq!(classify_status(&json!("DONE"), &c), Progress::Succeeded);
        assert_eq!(
            classify_status(&json!("aborted"), &c),
            Progress::Canceled("aborted".into())
        );
        assert_eq!(
            classify_status(&json!("FAILED"), &c),
            Progress::Terminal("FAILED".into())
        );
        assert_eq!(classify_status(&json!(40), &c), Progress::Percent(40.0));
        assert_eq!(classify_status(&json!("working"), &c), Progress::Running);
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(4));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn expressions_are_accepted_before_evaluation() {
        let value = json!({"url": "${parameters.url}", "method": "${parameters.method}",
            "retryStatusCodes": ["${parameters.code}"], "customHeaders": {"Authorization": "Bearer ${parameters.token}"}});
        let mut problems = Vec::new();
        let config = Webhook::config(&mut Fields::lenient(&value, "stages[0]", &mut problems));
        assert!(config.is_none());
        assert!(problems.is_empty(), "{problems:?}");
    }
}
