//! `prometheus`: canary samples from a Prometheus server, by PromQL over its HTTP API
//! (`/api/v1/query_range`, and `/api/v1/query` for instant analysis).
//!
//! # Query shapes
//!
//! A metric's `query` object takes one of two shapes (Kayenta's Prometheus metric-set query,
//! plus a Ferry default):
//!
//! - `{"type": "prometheus", "customInlineTemplate": "PROMQL:<promql>"}`: PromQL with the
//!   placeholders `${scope}`, `${location}` and `${step}` (the step as a duration, `10s`).
//!   The `PROMQL:` prefix Kayenta uses is optional. Any other `${…}` placeholder is a
//!   validation error.
//! - `{"type": "prometheus", "metricName": "lb_requests_total", "scopeLabel": "group"}`:
//!   becomes `lb_requests_total{group="<scope>"}`. `scopeLabel` defaults to `group`, the label
//!   Ferry's load balancer puts on its metrics. `"aggregation": "sum" | "avg" | "max" | "min"`
//!   wraps the selector (`sum(lb_requests_total{group="<scope>"})`). This shape does not use
//!   the location.
//!
//! Kayenta documents carry more keys: `serviceType`, `labelBindings`, `groupByFields` and
//! `resourceType` are accepted and ignored, so Kayenta canary configs load unchanged. Any
//! other key is a validation error, which catches typos such as `metricname`.
//!
//! # Escaping
//!
//! The scope and location are inserted into PromQL, so they are escaped as the contents of a
//! PromQL double-quoted string ([`promql_string_escape`]: backslash, double quote, newline and
//! carriage return) before [`fill_template`] puts them in. Written inside quotes, as in
//! `{group="${scope}"}`, no scope value can end the string and change the query's structure:
//! `x"} or vector(1) or {a="` stays one (non-matching) label value. In a regex matcher
//! (`=~"${scope}.*"`) the value is still a regex; a template that puts `${scope}` outside
//! quotes gets no protection, but templates come from canary configs, not from the scope.
//!
//! # The window
//!
//! [`MetricQuery`]'s window is `[start, end)` with one sample per `step`. It is asked of
//! Prometheus as `query_range` with `start=start`, `end=end - 1` and `step=<step>s`, so the
//! evaluation instants are `start, start + step, …` strictly before `end`: `(end - start) /
//! step` of them (rounded up), and consecutive windows neither overlap nor skip an instant.
//! The value at an instant is what PromQL gives there: a plain selector returns the latest
//! sample at or before it (within Prometheus's 5-minute lookback), and a range function such
//! as `rate(x[${step}])` covers the step that ends at the instant (in Prometheus 2.x a range
//! includes both of its ends, so a sample exactly on a step boundary counts in both adjacent
//! steps; Prometheus 3 leaves the older end out). Instants where the series
//! has no value are left out (Prometheus does not return them), so the result can be shorter
//! than the window; Prometheus refuses more than 11,000 instants per query.
//!
//! # Results and errors
//!
//! - No series: `Ok(vec![])`; the judge reports the metric as having no data.
//! - One series: its values, oldest first. Prometheus writes values as strings; `NaN`,
//!   `+Inf` and `-Inf` become the matching `f64` (NaN is kept for the judge's `nanStrategy`).
//! - More than one series: [`SourceError::Query`] asking for an aggregation (`sum(...)`).
//! - Prometheus's own error answer (`{"status":"error","errorType":…,"error":…}`, HTTP 400,
//!   422 or 503): [`SourceError::Query`] with `<errorType>: <error>`.
//! - Refused connection, DNS failure, timeout, or an HTTP 5xx that is not a Prometheus answer
//!   (a proxy's 502): [`SourceError::Unreachable`], naming the redacted URL.
//! - Anything else that is not a Prometheus answer of the expected shape:
//!   [`SourceError::BadResponse`].
//!
//! # The connection
//!
//! The base URL is set by an operator, not by pipeline authors, so the client is pinned to
//! that URL's host on any network (loopback and private addresses included): the guarded
//! client's allow-list holds only that host, so a redirect can never lead elsewhere. Requests
//! time out after [`TIMEOUT`] and answers are capped at [`MAX_RESPONSE_BYTES`]. `user:pass@`
//! in the URL is sent as HTTP basic authentication; URLs in messages and `Debug` output go
//! through [`redact_url`], so the credentials never show.

use crate::source::{MetricQuery, MetricSource, SourceError, fill_template};
use async_trait::async_trait;
use ferry_core::Problem;
use ferry_http::{GuardError, GuardedClient, GuardedRequest, UrlPolicy, redact_url};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use url::Url;

/// The `query.type` this source answers.
pub const QUERY_TYPE: &str = "prometheus";

/// How long one request to Prometheus may take, connect and body included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The largest answer read from Prometheus (16 MiB).
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The label `metricName` queries select the scope by unless `scopeLabel` says otherwise.
pub const DEFAULT_SCOPE_LABEL: &str = "group";

/// The aggregations a `metricName` query may ask for.
pub const AGGREGATIONS: [&str; 4] = ["sum", "avg", "max", "min"];

/// Kayenta query keys that are accepted and ignored.
pub const IGNORED_KAYENTA_KEYS: [&str; 4] = [
    "serviceType",
    "labelBindings",
    "groupByFields",
    "resourceType",
];

/// The keys this source reads.
const KNOWN_KEYS: [&str; 5] = [
    "type",
    "customInlineTemplate",
    "metricName",
    "scopeLabel",
    "aggregation",
];

/// The placeholders a `customInlineTemplate` may use.
const PLACEHOLDERS: [&str; 3] = ["scope", "location", "step"];

/// Canary samples from one Prometheus server.
#[derive(Clone)]
pub struct PrometheusSource {
    /// The client, pinned to the base URL's host.
    client: GuardedClient,
    /// The base URL without user-info; its path ends in `/`, API paths are joined onto it.
    base: Url,
    /// `Authorization` header value built from the URL's user-info. Never shown.
    authorization: Option<String>,
}

/// Shows the redacted base URL, and whether credentials are set, never the credentials.
impl fmt::Debug for PrometheusSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusSource")
            .field("base_url", &self.base_url())
            .field("basic_auth", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl PrometheusSource {
    /// A source for the Prometheus server at `base_url` (`http://127.0.0.1:9090`, or with a
    /// path prefix, `https://metrics.example.com/prometheus`). `user:pass@` in the URL is sent
    /// as basic authentication.
    ///
    /// # Errors
    ///
    /// [`SourceError::Config`] if the URL does not parse, is not http or https, has no host, a
    /// query or a fragment, or the HTTP client cannot be built. Messages show the URL redacted.
    pub fn new(base_url: &str) -> Result<Self, SourceError> {
        let shown = redact_url(base_url.trim());
        let bad = |why: String| SourceError::Config(format!("Prometheus URL {shown}: {why}"));
        let mut base = Url::parse(base_url.trim()).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad(format!(
                "scheme {} is not supported (use http or https)",
                base.scheme()
            )));
        }
        let Some(host) = base.host_str().map(str::to_owned) else {
            return Err(bad("the URL has no host".to_owned()));
        };
        if base.query().is_some() || base.fragment().is_some() {
            return Err(bad("the URL must not have a query or a fragment".to_owned()));
        }
        let authorization = basic_authorization(&base);
        base.set_password(None)
            .and_then(|()| base.set_username(""))
            .map_err(|()| bad("the URL cannot carry credentials".to_owned()))?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let any_network = |net: &str| {
            net.parse()
                .map_err(|_| bad(format!("internal error: {net} is not a network")))
        };
        let policy = UrlPolicy {
            allowed_hosts: Some(vec![host]),
            allowed_networks: vec![any_network("0.0.0.0/0")?, any_network("::/0")?],
            schemes: vec!["http".to_owned(), "https".to_owned()],
            max_response_bytes: MAX_RESPONSE_BYTES,
            timeout: TIMEOUT,
            ..UrlPolicy::public_internet()
        };
        policy
            .check(base.as_str())
            .map_err(|e| bad(e.to_string()))?;
        let client = GuardedClient::new(policy).map_err(|e| bad(e.to_string()))?;
        Ok(PrometheusSource {
            client,
            base,
            authorization,
        })
    }

    /// The base URL, without credentials, ending in `/`.
    pub fn base_url(&self) -> String {
        redact_url(self.base.as_str())
    }

    /// The values of the single series `promql` yields at the instants `start, start + step,
    /// …` before `end` (unix seconds, `end` exclusive), oldest first; empty when it yields no
    /// series. This is what [`MetricSource::fetch`] runs after filling in the template.
    ///
    /// # Errors
    ///
    /// [`SourceError::Config`] for a zero step or an empty window; otherwise as described in
    /// the module documentation.
    pub async fn query_range(
        &self,
        promql: &str,
        start: u64,
        end: u64,
        step: u64,
    ) -> Result<Vec<f64>, SourceError> {
        if step == 0 {
            return Err(SourceError::Config(
                "the step must be at least 1s".to_owned(),
            ));
        }
        if end <= start {
            return Err(SourceError::Config(format!(
                "the window is empty: end {end} is not after start {start}"
            )));
        }
        let last = (end - 1).to_string();
        let params = [
            ("query", promql.to_owned()),
            ("start", start.to_string()),
            ("end", last),
            ("step", format!("{step}s")),
        ];
        let data = self.call("api/v1/query_range", &params).await?;
        if data.result_type != "matrix" {
            return Err(SourceError::BadResponse(format!(
                "query_range answered a {} instead of a matrix",
                data.result_type
            )));
        }
        let series: Vec<RangeSeries> = serde_json::from_value(data.result)
            .map_err(|e| SourceError::BadResponse(format!("query_range result: {e}")))?;
        match series.as_slice() {
            [] => Ok(Vec::new()),
            [one] => one.samples(),
            many => Err(too_many_series(many.iter().map(|s| &s.metric))),
        }
    }

    /// Evaluates `promql` at one instant (`at`, unix seconds; now when `None`) and returns
    /// the sample values in the order Prometheus returned them: one per series of an instant
    /// vector, or the one value of a scalar. Meant for Argo-Rollouts-style analysis, where a
    /// condition such as `result[0] >= 0.95` is checked.
    ///
    /// # Errors
    ///
    /// [`SourceError::Query`] when Prometheus rejects the query or it yields a range vector or
    /// a string; otherwise as described in the module documentation.
    pub async fn query_instant(
        &self,
        promql: &str,
        at: Option<u64>,
    ) -> Result<Vec<f64>, SourceError> {
        let mut params = vec![("query", promql.to_owned())];
        if let Some(at) = at {
            params.push(("time", at.to_string()));
        }
        let data = self.call("api/v1/query", &params).await?;
        let shape = |e: serde_json::Error| SourceError::BadResponse(format!("query result: {e}"));
        match data.result_type.as_str() {
            "vector" => {
                let samples: Vec<InstantSample> =
                    serde_json::from_value(data.result).map_err(shape)?;
                samples
                    .into_iter()
                    .map(|s| match s.value {
                        Some((_, value)) => parse_value(&value),
                        None => Err(SourceError::BadResponse(
                            "a vector sample has no value (a native histogram?)".to_owned(),
                        )),
                    })
                    .collect()
            }
            "scalar" => {
                let (_, value): (f64, String) =
                    serde_json::from_value(data.result).map_err(shape)?;
                Ok(vec![parse_value(&value)?])
            }
            "matrix" => Err(SourceError::Query(
                "the query returned a range vector; an instant query needs an instant vector or \
                 a scalar (for example rate(x[5m]) instead of x[5m])"
                    .to_owned(),
            )),
            other => Err(SourceError::Query(format!(
                "the query returned a {other}; an instant query needs an instant vector or a scalar"
            ))),
        }
    }

    /// One API call: GET `{base}{path}?{params}`, the answer checked and its `data` returned.
    async fn call(&self, path: &str, params: &[(&str, String)]) -> Result<QueryData, SourceError> {
        let mut url = self
            .base
            .join(path)
            .map_err(|e| SourceError::Config(format!("{}{path}: {e}", self.base_url())))?;
        url.query_pairs_mut()
            .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())));
        let shown = format!("{}{path}", self.base_url());
        let mut request =
            GuardedRequest::get(url.as_str()).with_header("accept", "application/json");
        if let Some(value) = &self.authorization {
            request = request.with_header("authorization", value.as_str());
        }
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| transport_error(&shown, e))?;
        let answer: Answer = match serde_json::from_slice(&response.body) {
            Ok(answer) => answer,
            Err(e) => {
                let snippet = snippet(&response.body);
                return Err(if response.status >= 500 {
                    SourceError::Unreachable(format!(
                        "{shown} answered HTTP {}: {snippet}",
                        response.status
                    ))
                } else {
                    SourceError::BadResponse(format!(
                        "{shown} answered HTTP {} with something that is not a Prometheus API \
                         answer ({e}): {snippet}",
                        response.status
                    ))
                });
            }
        };
        if answer.status == "error" {
            return Err(SourceError::Query(format!(
                "{}: {}",
                answer.error_type.as_deref().unwrap_or("error"),
                answer.error.as_deref().unwrap_or("(no message)")
            )));
        }
        if answer.status != "success" || !response.is_success() {
            return Err(SourceError::BadResponse(format!(
                "{shown} answered HTTP {} with status \"{}\"",
                response.status, answer.status
            )));
        }
        for warning in &answer.warnings {
            tracing::warn!(url = %shown, %warning, "Prometheus warned about a query");
        }
        let data = answer
            .data
            .ok_or_else(|| SourceError::BadResponse(format!("{shown}: the answer has no data")))?;
        serde_json::from_value(data)
            .map_err(|e| SourceError::BadResponse(format!("{shown}: unexpected data: {e}")))
    }
}

#[async_trait]
impl MetricSource for PrometheusSource {
    fn query_type(&self) -> &'static str {
        QUERY_TYPE
    }

    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        validate_query(query, path, problems);
    }

    async fn fetch(&self, query: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        let promql = render_promql(query)?;
        self.query_range(&promql, query.start, query.end, query.step)
            .await
    }
}

/// Checks a `prometheus` query object as written, pushing every problem with its path (`path`
/// is the query's own path, e.g. `metrics[1].query`). This is [`MetricSource::validate`]
/// without a server, for checking documents offline.
pub fn validate_query(query: &Value, path: &str, problems: &mut Vec<Problem>) {
    let _ = parse_query(query, path, problems);
}

/// The PromQL a metric query asks for, with the scope and location escaped and inserted.
///
/// # Errors
///
/// [`SourceError::Config`] listing every problem when the query object is not valid.
pub fn render_promql(query: &MetricQuery<'_>) -> Result<String, SourceError> {
    let mut problems = Vec::new();
    let parsed = parse_query(query.query, "query", &mut problems);
    let parsed = match parsed {
        Some(parsed) if problems.is_empty() => parsed,
        _ => {
            let all: Vec<String> = problems.iter().map(ToString::to_string).collect();
            return Err(SourceError::Config(format!(
                "metric {}: {}",
                query.metric,
                all.join("; ")
            )));
        }
    };
    let scope = promql_string_escape(query.scope);
    Ok(match parsed {
        ParsedQuery::Template(template) => fill_template(
            template,
            &scope,
            &promql_string_escape(query.location),
            query.step,
        ),
        ParsedQuery::Metric {
            name,
            scope_label,
            aggregation,
        } => {
            let selector = format!("{name}{{{scope_label}=\"{scope}\"}}");
            match aggregation {
                Some(aggregation) => format!("{aggregation}({selector})"),
                None => selector,
            }
        }
    })
}

/// `value` escaped to be the contents of a PromQL double-quoted string: `\` → `\\`,
/// `"` → `\"`, newline → `\n`, carriage return → `\r`. Everything else (UTF-8 included) is
/// allowed in such a string as it is.
pub fn promql_string_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

/// A query object that passed validation.
enum ParsedQuery<'a> {
    /// `customInlineTemplate`, without its `PROMQL:` prefix.
    Template(&'a str),
    /// `metricName` with its scope label and optional aggregation.
    Metric {
        name: &'a str,
        scope_label: &'a str,
        aggregation: Option<&'a str>,
    },
}

/// Checks a query object, pushing every problem; returns the query when its main part
/// (template or metric name) is usable, which the caller trusts only if no problem was pushed.
fn parse_query<'a>(
    query: &'a Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<ParsedQuery<'a>> {
    let Some(object) = query.as_object() else {
        problems.push(Problem::new(path, "must be an object"));
        return None;
    };
    if let Some(kind) = object.get("type")
        && kind.as_str() != Some(QUERY_TYPE)
    {
        problems.push(Problem::new(
            format!("{path}.type"),
            format!("must be \"{QUERY_TYPE}\" for this source"),
        ));
    }
    for key in object.keys() {
        if !KNOWN_KEYS.contains(&key.as_str()) && !IGNORED_KAYENTA_KEYS.contains(&key.as_str()) {
            problems.push(Problem::new(
                format!("{path}.{key}"),
                "is not a prometheus query key; use customInlineTemplate, or metricName with \
                 optional scopeLabel and aggregation (serviceType, labelBindings, groupByFields \
                 and resourceType are accepted and ignored)",
            ));
        }
    }

    let string = |key: &str, problems: &mut Vec<Problem>| -> Option<&'a str> {
        let value = object.get(key)?;
        match value.as_str().map(str::trim) {
            Some(s) if !s.is_empty() => Some(s),
            Some(_) => {
                problems.push(Problem::new(format!("{path}.{key}"), "must not be empty"));
                None
            }
            None => {
                problems.push(Problem::new(format!("{path}.{key}"), "must be a string"));
                None
            }
        }
    };
    let template = string("customInlineTemplate", problems);
    let metric = string("metricName", problems);
    let scope_label = string("scopeLabel", problems);
    let aggregation = string("aggregation", problems);

    let has = |key: &str| object.contains_key(key);
    match (has("customInlineTemplate"), has("metricName")) {
        (true, true) => problems.push(Problem::new(
            path,
            "has both customInlineTemplate and metricName; give exactly one",
        )),
        (false, false) => problems.push(Problem::new(
            path,
            "needs customInlineTemplate (PromQL) or metricName",
        )),
        _ => {}
    }

    if let Some(label) = scope_label
        && !is_label_name(label)
    {
        problems.push(Problem::new(
            format!("{path}.scopeLabel"),
            format!("\"{label}\" is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"),
        ));
    }
    if let Some(aggregation) = aggregation
        && !AGGREGATIONS.contains(&aggregation)
    {
        problems.push(Problem::new(
            format!("{path}.aggregation"),
            format!(
                "\"{aggregation}\" is not supported; use one of {}",
                AGGREGATIONS.join(", ")
            ),
        ));
    }

    if has("customInlineTemplate") {
        for key in ["scopeLabel", "aggregation"] {
            if has(key) {
                problems.push(Problem::new(
                    format!("{path}.{key}"),
                    "only applies to metricName queries; write it into the template instead",
                ));
            }
        }
    }

    if let Some(template) = template {
        let promql = template
            .strip_prefix("PROMQL:")
            .map_or(template, str::trim_start);
        if promql.is_empty() {
            problems.push(Problem::new(
                format!("{path}.customInlineTemplate"),
                "has no PromQL after the PROMQL: prefix",
            ));
            return None;
        }
        for name in placeholders(promql) {
            if !PLACEHOLDERS.contains(&name) {
                problems.push(Problem::new(
                    format!("{path}.customInlineTemplate"),
                    format!(
                        "unknown placeholder ${{{name}}}; available: ${{scope}}, ${{location}}, \
                         ${{step}}"
                    ),
                ));
            }
        }
        return Some(ParsedQuery::Template(promql));
    }
    if let Some(name) = metric {
        if !is_metric_name(name) {
            problems.push(Problem::new(
                format!("{path}.metricName"),
                format!(
                    "\"{name}\" is not a Prometheus metric name ([a-zA-Z_:][a-zA-Z0-9_:]*); \
                     use customInlineTemplate for PromQL"
                ),
            ));
            return None;
        }
        return Some(ParsedQuery::Metric {
            name,
            scope_label: scope_label.unwrap_or(DEFAULT_SCOPE_LABEL),
            aggregation,
        });
    }
    None
}

/// The names of the `${…}` placeholders in a template.
fn placeholders(template: &str) -> Vec<&str> {
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find("${") {
        let after = &rest[open + 2..];
        match after.find('}') {
            Some(close) => {
                names.push(&after[..close]);
                rest = &after[close + 1..];
            }
            None => break,
        }
    }
    names
}

/// A Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A Prometheus metric name: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// A Prometheus sample value: a decimal number, `NaN`, `+Inf` or `-Inf`.
fn parse_value(value: &str) -> Result<f64, SourceError> {
    match value {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        other => other.parse().map_err(|_| {
            SourceError::BadResponse(format!("sample value \"{other}\" is not a number"))
        }),
    }
}

/// The error for a range query that yielded several series, naming a few of them.
fn too_many_series<'a>(
    labels: impl ExactSizeIterator<Item = &'a BTreeMap<String, String>>,
) -> SourceError {
    let count = labels.len();
    let first: Vec<String> = labels
        .take(3)
        .map(|metric| {
            let pairs: Vec<String> = metric.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
            format!("{{{}}}", pairs.join(", "))
        })
        .collect();
    SourceError::Query(format!(
        "the query returned {count} series; aggregate them to one (for example with sum(...)); \
         the first: {}",
        first.join(" ")
    ))
}

/// A guarded-client failure as a source error; `shown` is the redacted endpoint.
fn transport_error(shown: &str, error: GuardError) -> SourceError {
    match error {
        GuardError::Timeout { .. }
        | GuardError::Connect { .. }
        | GuardError::Dns { .. }
        | GuardError::Http(_) => SourceError::Unreachable(format!("{shown}: {error}")),
        GuardError::ResponseTooLarge { .. }
        | GuardError::Json { .. }
        | GuardError::TooManyRedirects { .. }
        | GuardError::RedirectNotAllowed { .. } => {
            SourceError::BadResponse(format!("{shown}: {error}"))
        }
        other => SourceError::Config(format!("{shown}: {other}")),
    }
}

/// The start of a body that is not a Prometheus answer, for messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None if text.is_empty() => "(empty body)".to_owned(),
        None => text.to_owned(),
    }
}

/// `Basic <base64(user:password)>` from a URL's percent-encoded user-info, if it has any.
fn basic_authorization(url: &Url) -> Option<String> {
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let user = percent_decode(url.username());
    let password = percent_decode(url.password().unwrap_or_default());
    Some(format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    ))
}

/// Decodes `%XX` escapes (as the `url` crate leaves them in user-info).
fn percent_decode(text: &str) -> String {
    fn hex(byte: u8) -> Option<u8> {
        char::from(byte)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escape = (bytes[i] == b'%')
            .then(|| Some((hex(*bytes.get(i + 1)?)?, hex(*bytes.get(i + 2)?)?)))
            .flatten();
        match escape {
            Some((high, low)) => {
                out.push(high << 4 | low);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 with padding (RFC 4648), for the basic-auth header.
fn base64_encode(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let byte = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let group = byte(0) << 16 | byte(1) << 8 | byte(2);
        for i in 0..4 {
            if i <= chunk.len() {
                let index = (group >> (18 - 6 * i)) & 63;
                out.push(char::from(ALPHABET[index as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The envelope of every Prometheus API answer.
#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Value>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    warnings: Vec<String>,
}

/// The `data` of a query answer.
#[derive(Deserialize)]
struct QueryData {
    #[serde(rename = "resultType")]
    result_type: String,
    result: Value,
}

/// One series of a matrix.
#[derive(Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<(f64, String)>,
    #[serde(default)]
    histograms: Option<Value>,
}

impl RangeSeries {
    /// The values, oldest first.
    fn samples(&self) -> Result<Vec<f64>, SourceError> {
        if self.values.is_empty() && self.histograms.is_some() {
            return Err(SourceError::Query(
                "the query returned native histograms; reduce them to numbers (for example with \
                 histogram_quantile)"
                    .to_owned(),
            ));
        }
        let mut timed = self
            .values
            .iter()
            .map(|(at, value)| Ok((*at, parse_value(value)?)))
            .collect::<Result<Vec<(f64, f64)>, SourceError>>()?;
        timed.sort_by(|a, b| a.0.total_cmp(&b.0));
        Ok(timed.into_iter().map(|(_, value)| value).collect())
    }
}

/// One sample of an instant vector.
#[derive(Deserialize)]
struct InstantSample {
    #[serde(default)]
    value: Option<(f64, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_testkit::prometheus::TestPrometheus;
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const BASELINE: &str = "shop-prod-v001";
    const CANARY: &str = "shop-prod-v002";
    const REGION: &str = "eu-west-1";
    /// A scope that tries to break out of its label value.
    const HOSTILE: &str = "x\"} or vector(1) or {a=\"";
    /// Samples per series: 10 minutes of 10-second samples.
    const N: usize = 60;

    /// A Prometheus with 10 minutes of data (an hour ago) for two server groups, and the
    /// numbers it holds.
    struct Fixture {
        prometheus: TestPrometheus,
        source: PrometheusSource,
        /// Time of the first sample; samples are at `t0 + 10·i`.
        t0: u64,
        /// `canary_error_ratio` of the baseline (~0.01) and the canary (~0.10).
        baseline: Vec<f64>,
        canary: Vec<f64>,
        /// `canary_requests` of the baseline's two instances.
        requests_a: Vec<f64>,
        requests_b: Vec<f64>,
    }

    /// Deterministic noise in [-1, 1].
    fn noise(i: usize, seed: usize) -> f64 {
        ((i * 7919 + seed * 104_729) % 1000) as f64 / 500.0 - 1.0
    }

    fn fixture() -> Fixture {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let t0 = (now - 3600) / 60 * 60;
        let at = |i: usize| t0 + 10 * i as u64;
        let baseline: Vec<f64> = (0..N).map(|i| 0.01 + 0.002 * noise(i, 1)).collect();
        let canary: Vec<f64> = (0..N).map(|i| 0.10 + 0.02 * noise(i, 2)).collect();
        let requests_a: Vec<f64> = (0..N).map(|i| (i * 10) as f64).collect();
        let requests_b: Vec<f64> = (0..N).map(|i| (i * 7) as f64 + 0.5).collect();
        let timed = |values: &[f64]| -> Vec<(u64, f64)> {
            values
                .iter()
                .enumerate()
                .map(|(i, v)| (at(i), *v))
                .collect()
        };
        let (b, c, ra, rb) = (
            timed(&baseline),
            timed(&canary),
            timed(&requests_a),
            timed(&requests_b),
        );
        let hostile = timed(&[7.0; N]);
        let special = [
            (at(0), 1.0),
            (at(1), f64::NAN),
            (at(2), f64::INFINITY),
            (at(3), f64::NEG_INFINITY),
        ];
        let prometheus = TestPrometheus::with_series(&[
            (
                "canary_error_ratio",
                &[("group", BASELINE), ("region", REGION)],
                &b,
            ),
            (
                "canary_error_ratio",
                &[("group", CANARY), ("region", REGION)],
                &c,
            ),
            ("canary_error_ratio", &[("group", HOSTILE)], &hostile),
            ("http_errors", &[("server_group", CANARY)], &c),
            (
                "canary_requests",
                &[("group", BASELINE), ("instance", "a")],
                &ra,
            ),
            (
                "canary_requests",
                &[("group", BASELINE), ("instance", "b")],
                &rb,
            ),
            ("special_values", &[("group", BASELINE)], &special),
        ]);
        let source = PrometheusSource::new(&prometheus.url()).unwrap();
        Fixture {
            prometheus,
            source,
            t0,
            baseline,
            canary,
            requests_a,
            requests_b,
        }
    }

    fn metric_query<'a>(
        query: &'a Value,
        scope: &'a str,
        start: u64,
        end: u64,
        step: u64,
    ) -> MetricQuery<'a> {
        MetricQuery {
            query,
            metric: "errors",
            scope,
            location: REGION,
            start,
            end,
            step,
        }
    }

    impl Fixture {
        /// Fetches the whole 10 minutes with step 10.
        async fn fetch_all(&self, query: &Value, scope: &str) -> Result<Vec<f64>, SourceError> {
            self.source
                .fetch(&metric_query(
                    query,
                    scope,
                    self.t0,
                    self.t0 + 10 * N as u64,
                    10,
                ))
                .await
        }
    }

    #[tokio::test]
    async fn prometheus_template_fetch_returns_the_backfilled_values() {
        let f = fixture();
        for template in [
            r#"PROMQL:canary_error_ratio{group="${scope}",region="${location}"}"#,
            r#"canary_error_ratio{group="${scope}", region="${location}"}"#,
            r#"PROMQL: last_over_time(canary_error_ratio{group="${scope}"}[${step}])"#,
        ] {
            let query = json!({"type": "prometheus", "customInlineTemplate": template});
            assert_eq!(
                f.fetch_all(&query, BASELINE).await.unwrap(),
                f.baseline,
                "{template}"
            );
            assert_eq!(
                f.fetch_all(&query, CANARY).await.unwrap(),
                f.canary,
                "{template}"
            );
        }
        // Prometheus 2.x range selectors include both ends: `[10s]` at a sample's instant also
        // holds the sample 10 s before it (Prometheus 3 leaves the older end out).
        let averaged = json!({
            "type": "prometheus",
            "customInlineTemplate": "avg_over_time(canary_error_ratio{group=\"${scope}\"}[${step}])",
        });
        let got = f.fetch_all(&averaged, BASELINE).await.unwrap();
        assert_eq!(got[0], f.baseline[0]);
        for (i, value) in got.iter().enumerate().skip(1) {
            let want = (f.baseline[i - 1] + f.baseline[i]) / 2.0;
            assert!((value - want).abs() < 1e-12, "{i}: {value} vs {want}");
        }
    }

    #[tokio::test]
    async fn prometheus_metric_name_fetch_returns_the_backfilled_values() {
        let f = fixture();
        let default_label = json!({"type": "prometheus", "metricName": "canary_error_ratio"});
        assert_eq!(
            f.fetch_all(&default_label, BASELINE).await.unwrap(),
            f.baseline
        );
        assert_eq!(f.fetch_all(&default_label, CANARY).await.unwrap(), f.canary);

        let own_label = json!({
            "type": "prometheus",
            "metricName": "http_errors",
            "scopeLabel": "server_group",
            // Kayenta keys, accepted and ignored.
            "serviceType": "prometheus",
            "labelBindings": [],
            "groupByFields": [],
            "resourceType": "gce_instance",
        });
        assert_eq!(f.fetch_all(&own_label, CANARY).await.unwrap(), f.canary);
        assert_eq!(
            f.fetch_all(&own_label, BASELINE).await.unwrap(),
            Vec::<f64>::new()
        );

        let summed =
            json!({"type": "prometheus", "metricName": "canary_requests", "aggregation": "sum"});
        let want: Vec<f64> = f
            .requests_a
            .iter()
            .zip(&f.requests_b)
            .map(|(a, b)| a + b)
            .collect();
        assert_eq!(f.fetch_all(&summed, BASELINE).await.unwrap(), want);
        let maxed =
            json!({"type": "prometheus", "metricName": "canary_requests", "aggregation": "max"});
        let want: Vec<f64> = f
            .requests_a
            .iter()
            .zip(&f.requests_b)
            .map(|(a, b)| a.max(*b))
            .collect();
        assert_eq!(f.fetch_all(&maxed, BASELINE).await.unwrap(), want);
    }

    #[tokio::test]
    async fn prometheus_window_is_start_inclusive_end_exclusive() {
        let f = fixture();
        let query = json!({"type": "prometheus", "metricName": "canary_error_ratio"});
        let fetch = |start: u64, end: u64, step: u64| {
            let query = &query;
            let source = &f.source;
            async move {
                source
                    .fetch(&metric_query(query, BASELINE, start, end, step))
                    .await
                    .unwrap()
            }
        };
        let t0 = f.t0;
        assert_eq!(fetch(t0 + 100, t0 + 200, 10).await, f.baseline[10..20]);
        let every_other: Vec<f64> = f.baseline[10..20].iter().step_by(2).copied().collect();
        assert_eq!(fetch(t0 + 100, t0 + 200, 20).await, every_other);
        assert_eq!(fetch(t0 + 100, t0 + 105, 10).await, f.baseline[10..11]);
        // Consecutive windows neither overlap nor skip a sample.
        let mut joined = fetch(t0, t0 + 300, 10).await;
        joined.extend(fetch(t0 + 300, t0 + 600, 10).await);
        assert_eq!(joined, f.baseline);

        let empty = f
            .source
            .fetch(&metric_query(&query, BASELINE, t0 + 100, t0 + 100, 10))
            .await;
        assert!(matches!(empty, Err(SourceError::Config(_))), "{empty:?}");
        let zero_step = f
            .source
            .fetch(&metric_query(&query, BASELINE, t0, t0 + 100, 0))
            .await;
        assert!(
            matches!(zero_step, Err(SourceError::Config(_))),
            "{zero_step:?}"
        );
    }

    #[tokio::test]
    async fn prometheus_window_without_data_is_empty() {
        let f = fixture();
        let query = json!({"type": "prometheus", "metricName": "canary_error_ratio"});
        let before = metric_query(&query, BASELINE, f.t0 - 1200, f.t0 - 600, 10);
        assert_eq!(f.source.fetch(&before).await, Ok(vec![]));
        let unknown = json!({"type": "prometheus", "metricName": "no_such_metric"});
        assert_eq!(f.fetch_all(&unknown, BASELINE).await, Ok(vec![]));
    }

    #[tokio::test]
    async fn prometheus_special_values_are_kept() {
        let f = fixture();
        let query = json!({"type": "prometheus", "metricName": "special_values"});
        let values = f
            .source
            .fetch(&metric_query(&query, BASELINE, f.t0, f.t0 + 40, 10))
            .await
            .unwrap();
        assert_eq!(values.len(), 4, "{values:?}");
        assert_eq!(values[0], 1.0);
        assert!(values[1].is_nan());
        assert_eq!(values[2], f64::INFINITY);
        assert_eq!(values[3], f64::NEG_INFINITY);
    }

    #[tokio::test]
    async fn prometheus_syntax_errors_come_back_as_query_errors() {
        let f = fixture();
        let query = json!({
            "type": "prometheus",
            "customInlineTemplate": "sum(rate(canary_error_ratio{group=\"${scope}\"}[1m])",
        });
        let Err(SourceError::Query(message)) = f.fetch_all(&query, BASELINE).await else {
            panic!("expected a query error");
        };
        assert!(message.starts_with("bad_data: "), "{message}");
        assert!(message.contains("parse error"), "{message}");
    }

    #[tokio::test]
    async fn prometheus_several_series_must_be_aggregated() {
        let f = fixture();
        let query = json!({"type": "prometheus", "metricName": "canary_requests"});
        let Err(SourceError::Query(message)) = f.fetch_all(&query, BASELINE).await else {
            panic!("expected a query error");
        };
        assert!(
            message.starts_with(
                "the query returned 2 series; aggregate them to one (for example with sum(...))"
            ),
            "{message}"
        );
        assert!(message.contains(r#"instance="a""#), "{message}");
    }

    #[tokio::test]
    async fn prometheus_hostile_scopes_stay_label_values() {
        let f = fixture();
        let by_name = json!({"type": "prometheus", "metricName": "canary_error_ratio"});
        let by_template = json!({
            "type": "prometheus",
            "customInlineTemplate": "canary_error_ratio{group=\"${scope}\"}",
        });
        for query in [&by_name, &by_template] {
            // The series whose label value is the hostile string itself is what it selects.
            assert_eq!(f.fetch_all(query, HOSTILE).await.unwrap(), vec![7.0; N]);
            for scope in [
                "x\"} or vector(1) or {a=\"y",
                "shop-prod-v001\"} or canary_error_ratio{group=\"shop-prod-v002",
                "shop-prod-v001\\\"} or canary_error_ratio{group=\\\"shop-prod-v002",
                "shop-prod-v001\"\n} or canary_error_ratio{group=\"shop-prod-v002",
                "shop-prod-v001\"}) or (canary_error_ratio{group=\"shop-prod-v002",
            ] {
                assert_eq!(f.fetch_all(query, scope).await, Ok(vec![]), "{scope}");
            }
        }
        let rendered = render_promql(&metric_query(&by_name, HOSTILE, 0, 10, 10)).unwrap();
        assert_eq!(
            rendered,
            r#"canary_error_ratio{group="x\"} or vector(1) or {a=\""}"#
        );
    }

    #[tokio::test]
    async fn prometheus_instant_queries_return_sample_values() {
        let f = fixture();
        let at = Some(f.t0 + 100);
        let sum = f
            .source
            .query_instant(r#"sum(canary_requests{group="shop-prod-v001"})"#, at)
            .await
            .unwrap();
        assert_eq!(sum, vec![f.requests_a[10] + f.requests_b[10]]);
        let ratio = f
            .source
            .query_instant(r#"canary_error_ratio{region="eu-west-1"}"#, at)
            .await
            .unwrap();
        let mut sorted = ratio.clone();
        sorted.sort_by(f64::total_cmp);
        assert_eq!(sorted, vec![f.baseline[10], f.canary[10]]);
        let scalar = f
            .source
            .query_instant(r#"scalar(canary_error_ratio{group="shop-prod-v002"})"#, at)
            .await
            .unwrap();
        assert_eq!(scalar, vec![f.canary[10]]);
        assert_eq!(
            f.source.query_instant("vector(0.97)", None).await,
            Ok(vec![0.97])
        );
        assert_eq!(
            f.source.query_instant("no_such_metric", None).await,
            Ok(vec![])
        );

        let range = f.source.query_instant("canary_error_ratio[1m]", at).await;
        assert!(
            matches!(&range, Err(SourceError::Query(m)) if m.contains("range vector")),
            "{range:?}"
        );
        let bad = f.source.query_instant("sum(", None).await;
        assert!(
            matches!(&bad, Err(SourceError::Query(m)) if m.starts_with("bad_data: ")),
            "{bad:?}"
        );
    }

    #[tokio::test]
    async fn prometheus_down_or_absent_is_unreachable() {
        let mut f = fixture();
        let url = f.prometheus.url();
        let with_password = url.replace("http://", "http://ferry:s3cret@");
        let source = PrometheusSource::new(&with_password).unwrap();
        f.prometheus.stop();
        let query = json!({"type": "prometheus", "metricName": "canary_error_ratio"});
        for source in [&f.source, &source] {
            let result = source
                .fetch(&metric_query(&query, BASELINE, f.t0, f.t0 + 100, 10))
                .await;
            let Err(SourceError::Unreachable(message)) = &result else {
                panic!("expected Unreachable, got {result:?}");
            };
            assert!(message.contains(&url), "{message}");
            assert!(!message.contains("s3cret"), "{message}");
            let instant = source.query_instant("vector(1)", None).await;
            assert!(
                matches!(instant, Err(SourceError::Unreachable(_))),
                "{instant:?}"
            );
        }

        // A port nobody listens on.
        let unused = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let source = PrometheusSource::new(&format!("http://{unused}")).unwrap();
        let result = source.query_instant("vector(1)", None).await;
        assert!(
            matches!(result, Err(SourceError::Unreachable(_))),
            "{result:?}"
        );
    }

    #[test]
    fn prometheus_validation_reports_every_problem_with_its_path() {
        let source = PrometheusSource::new("http://127.0.0.1:9090").unwrap();
        let check = |query: Value| {
            let mut problems = Vec::new();
            source.validate(&query, "metrics[1].query", &mut problems);
            problems
                .into_iter()
                .map(|p| (p.path, p.message))
                .collect::<Vec<_>>()
        };
        let paths = |query: Value| check(query).into_iter().map(|(p, _)| p).collect::<Vec<_>>();

        for good in [
            json!({"type": "prometheus", "customInlineTemplate": "PROMQL:up{g=\"${scope}\"}"}),
            json!({"type": "prometheus", "customInlineTemplate": "rate(x{r=\"${location}\"}[${step}])"}),
            json!({"type": "prometheus", "metricName": "lb_requests_total"}),
            json!({"type": "prometheus", "metricName": "a:b_c", "scopeLabel": "_g1", "aggregation": "avg"}),
            json!({
                "type": "prometheus", "metricName": "x", "serviceType": "prometheus",
                "labelBindings": ["a"], "groupByFields": ["b"], "resourceType": "k8s_pod",
            }),
        ] {
            assert_eq!(check(good.clone()), vec![], "{good}");
        }

        assert_eq!(
            paths(json!({
                "type": "prometheus",
                "customInlineTemplate": "x{g=\"${scope}\",e=\"${env}\"}",
                "metricName": "",
                "scopeLabel": "bad-label",
                "aggregation": "median",
                "customFilterTemplate": "x",
            })),
            vec![
                "metrics[1].query.customFilterTemplate",
                "metrics[1].query.metricName",
                "metrics[1].query",
                "metrics[1].query.scopeLabel",
                "metrics[1].query.aggregation",
                "metrics[1].query.scopeLabel",
                "metrics[1].query.aggregation",
                "metrics[1].query.customInlineTemplate",
            ]
        );
        assert_eq!(
            paths(
                json!({"type": "prometheus", "customInlineTemplate": "PROMQL:  ", "scopeLabel": 3})
            ),
            vec![
                "metrics[1].query.scopeLabel",
                "metrics[1].query.scopeLabel",
                "metrics[1].query.customInlineTemplate",
            ]
        );
        assert_eq!(
            paths(json!({"type": "prometheus", "metricName": "x or vector(1)"})),
            vec!["metrics[1].query.metricName"]
        );
        assert_eq!(
            paths(json!({"type": "prometheus"})),
            vec!["metrics[1].query"]
        );
        assert_eq!(
            paths(json!({"type": "ferry-lb", "customInlineTemplate": 5})),
            vec![
                "metrics[1].query.type",
                "metrics[1].query.customInlineTemplate"
            ]
        );
        assert_eq!(paths(json!("up")), vec!["metrics[1].query"]);

        let messages =
            check(json!({"type": "prometheus", "customInlineTemplate": "x{e=\"${env}\"}"}));
        assert!(
            messages[0].1.contains("unknown placeholder ${env}"),
            "{messages:?}"
        );
        let messages =
            check(json!({"type": "prometheus", "metricName": "x", "aggregation": "p99"}));
        assert!(messages[0].1.contains("sum, avg, max, min"), "{messages:?}");

        // fetch refuses what validate refuses, without asking Prometheus.
        let invalid = json!({"type": "prometheus"});
        let err = render_promql(&metric_query(&invalid, BASELINE, 0, 10, 10)).unwrap_err();
        assert!(
            matches!(&err, SourceError::Config(m) if m.contains("query: needs")),
            "{err:?}"
        );
    }

    #[test]
    fn prometheus_queries_render_with_escaped_values() {
        let render = |query: Value, scope: &str, location: &str| {
            let q = MetricQuery {
                query: &query,
                metric: "m",
                scope,
                location,
                start: 0,
                end: 60,
                step: 15,
            };
            render_promql(&q).unwrap()
        };
        assert_eq!(
            render(
                json!({"customInlineTemplate": "PROMQL:rate(x{g=\"${scope}\",r=\"${location}\"}[${step}])"}),
                "a\\b\"c\nd",
                "eu\r"
            ),
            r#"rate(x{g="a\\b\"c\nd",r="eu\r"}[15s])"#
        );
        assert_eq!(
            render(json!({"metricName": "lb_requests_total"}), "shop-v1", ""),
            r#"lb_requests_total{group="shop-v1"}"#
        );
        assert_eq!(
            render(
                json!({"metricName": "m", "scopeLabel": "sg", "aggregation": "sum"}),
                "s",
                ""
            ),
            r#"sum(m{sg="s"})"#
        );
        assert_eq!(promql_string_escape("plain-v001.x:y/z"), "plain-v001.x:y/z");
        assert_eq!(promql_string_escape("ü\t"), "ü\t");
    }

    #[test]
    fn prometheus_urls_are_checked_and_never_show_credentials() {
        for bad in [
            "not a url",
            "ftp://127.0.0.1/",
            "http://127.0.0.1:9090/?x=1",
            "http://127.0.0.1:9090/#f",
            "http://user:s3cret@bad_host.example.com/",
            "unix:/run/prometheus.sock",
        ] {
            let err = PrometheusSource::new(bad).unwrap_err();
            assert!(matches!(err, SourceError::Config(_)), "{bad}: {err:?}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
        let source =
            PrometheusSource::new("https://ferry:s%3Acret@metrics.example.com/prom").unwrap();
        assert_eq!(source.base_url(), "https://metrics.example.com/prom/");
        let shown = format!("{source:?}");
        assert!(!shown.contains("cret"), "{shown}");
        assert!(shown.contains("basic_auth: true"), "{shown}");
        assert_eq!(
            PrometheusSource::new("http://[::1]:9090")
                .unwrap()
                .base_url(),
            "http://[::1]:9090/"
        );
    }

    #[test]
    fn prometheus_basic_auth_encoding() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foob"), "Zm9vYg==");
        assert_eq!(
            base64_encode(b"Aladdin:open sesame"),
            "QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(percent_decode("a%3Ab%2fc%zz%4"), "a:b/c%zz%4");
        assert_eq!(percent_decode("%C3%BC"), "ü");
    }

    /// A fake HTTP server answering every request with `status` and `body`; returns its URL
    /// and the request heads it received.
    async fn fake_server(
        status: u16,
        body: &'static str,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
                let response = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
        });
        (url, rx)
    }

    #[tokio::test]
    async fn prometheus_requests_carry_prefix_window_and_basic_auth() {
        let (url, mut heads) = fake_server(
            200,
            r#"{"status":"success","data":{"resultType":"matrix","result":[
                {"metric":{},"values":[[120,"2"],[100,"0.5"],[110,"NaN"]]}]}}"#,
        )
        .await;
        let base = url.replace("http://", "http://ferry:s%40cret@") + "/prom";
        let source = PrometheusSource::new(&base).unwrap();
        let query = json!({"type": "prometheus", "metricName": "m"});
        let values = source
            .fetch(&metric_query(&query, "g\"1", 100, 130, 10))
            .await
            .unwrap();
        assert_eq!(values.len(), 3);
        assert_eq!((values[0], values[2]), (0.5, 2.0), "sorted by time");
        assert!(values[1].is_nan());
        let head = heads.recv().await.unwrap();
        let request_line = head.lines().next().unwrap();
        assert_eq!(
            request_line,
            "GET /prom/api/v1/query_range?query=m%7Bgroup%3D%22g%5C%221%22%7D&start=100&end=129&step=10s HTTP/1.1"
        );
        // base64("ferry:s@cret")
        assert!(
            head.to_ascii_lowercase().contains(
                "authorization: basic ZmVycnk6c0BjcmV0"
                    .to_ascii_lowercase()
                    .as_str()
            ),
            "{head}"
        );

        let instant = source.query_instant("up", Some(5)).await;
        let head = heads.recv().await.unwrap();
        assert!(
            head.starts_with("GET /prom/api/v1/query?query=up&time=5 HTTP/1.1"),
            "{head}"
        );
        assert!(
            matches!(&instant, Err(SourceError::Query(m)) if m.contains("range vector")),
            "{instant:?}"
        );
    }

    #[tokio::test]
    async fn prometheus_answers_map_to_errors() {
        let query = json!({"type": "prometheus", "metricName": "m"});
        let q = metric_query(&query, "g", 100, 130, 10);
        type Check = fn(&SourceError) -> bool;
        let cases: [(u16, &'static str, Check); 7] = [
            (
                422,
                r#"{"status":"error","errorType":"execution","error":"too many samples"}"#,
                |e| *e == SourceError::Query("execution: too many samples".into()),
            ),
            (
                503,
                r#"{"status":"error","errorType":"unavailable","error":"not ready"}"#,
                |e| *e == SourceError::Query("unavailable: not ready".into()),
            ),
            (
                502,
                "<html>Bad Gateway</html>",
                |e| matches!(e, SourceError::Unreachable(m) if m.contains("HTTP 502") && m.contains("Bad Gateway")),
            ),
            (
                200,
                "<html>login</html>",
                |e| matches!(e, SourceError::BadResponse(m) if m.contains("HTTP 200")),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
                |e| matches!(e, SourceError::BadResponse(m) if m.contains("vector")),
            ),
            (
                200,
                r#"{"status":"success","data":{"resultType":"matrix","result":[{"values":[[1,"x"]]}]}}"#,
                |e| matches!(e, SourceError::BadResponse(m) if m.contains("\"x\"")),
            ),
            (200, r#"{"status":"success"}"#, |e| {
                matches!(e, SourceError::BadResponse(_))
            }),
        ];
        for (status, body, want) in cases {
            let (url, _heads) = fake_server(status, body).await;
            let source = PrometheusSource::new(&url).unwrap();
            let err = source.fetch(&q).await.unwrap_err();
            assert!(want(&err), "{status} {body}: {err:?}");
        }
    }
}
