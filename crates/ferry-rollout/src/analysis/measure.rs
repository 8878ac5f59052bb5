//! Taking one measurement: the prometheus, web and judge providers, `{{args.NAME}}`
//! substitution, and the JSON-path subset the web provider picks its result with.

use super::{AnalysisEnv, ArgSpec, MetricSpec, ProviderSpec, WebMethod};
use async_trait::async_trait;
use ferry_canary::{CanaryServices, compare};
use ferry_http::{GuardedRequest, redact_url};
use ferry_judge::judge::{JudgeResult, MetricData, SummaryClassification, Thresholds};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// Why a measurement (or a condition over it) could not be taken: the measurement is an Error
/// and this is its message.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MeasureError {
    /// A `{{args.NAME}}` placeholder has neither a value from the caller nor a default.
    #[error(
        "argument \"{0}\" has no value: pass it to the analysis or give it a default in `args`"
    )]
    MissingArg(String),
    /// An argument's value would change the structure of a Prometheus query.
    #[error(
        "argument \"{name}\" cannot go into a Prometheus query: its value contains {what}; \
         double quotes, backslashes and line breaks are refused so that an argument cannot \
         change the query"
    )]
    UnsafeArg {
        /// The argument.
        name: String,
        /// What it contains.
        what: &'static str,
    },
    /// The metric uses Prometheus but this server has none configured.
    #[error("no Prometheus is configured on this server")]
    NoPrometheus,
    /// Prometheus refused the query or could not be reached.
    #[error("Prometheus: {0}")]
    Prometheus(String),
    /// The web request could not be sent or got no answer.
    #[error("{url}: {reason}")]
    Request {
        /// The URL, redacted.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The web endpoint answered with a status outside 200–299.
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        /// The URL, redacted.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the answer's body.
        body: String,
    },
    /// The web endpoint's answer is not JSON.
    #[error("{url} did not answer JSON: {reason}")]
    NotJson {
        /// The URL, redacted.
        url: String,
        /// The parser's message.
        reason: String,
    },
    /// `jsonPath` is not in the supported subset.
    #[error("jsonPath `{path}`: {reason}")]
    BadJsonPath {
        /// The path as written.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `jsonPath` selects nothing in the answer.
    #[error("jsonPath `{path}` matched nothing in the answer: {body}")]
    NoMatch {
        /// The path as written.
        path: String,
        /// The start of the answer.
        body: String,
    },
    /// The metric uses the canary judge but this server has no canary services.
    #[error("the canary judge is not available on this server")]
    NoJudge,
    /// The canary judge could not judge (config missing or invalid, no data, empty window).
    #[error("canary judge: {0}")]
    Judge(String),
    /// A condition could not be evaluated on the result (for example `result[0]` on `[]`).
    #[error("{which} `{condition}` could not be evaluated: {reason}")]
    Condition {
        /// `successCondition` or `failureCondition`.
        which: String,
        /// The condition as written.
        condition: String,
        /// The evaluator's message.
        reason: String,
    },
}

/// A Prometheus instant query: what the prometheus provider needs from a Prometheus client.
#[async_trait]
pub trait InstantQuery: Send + Sync {
    /// The sample values `promql` yields now, one per series (or the one value of a scalar).
    async fn query(&self, promql: &str) -> Result<Vec<f64>, String>;
}

#[async_trait]
impl InstantQuery for ferry_canary::prometheus::PrometheusSource {
    async fn query(&self, promql: &str) -> Result<Vec<f64>, String> {
        self.query_instant(promql, None)
            .await
            .map_err(|e| e.to_string())
    }
}

/// What a measurement knows besides its metric.
pub(crate) struct MeasureCtx<'a> {
    /// The spec's declared args (defaults).
    pub(crate) args: &'a [ArgSpec],
    /// When the run started, unix ms.
    pub(crate) run_started_at: i64,
    /// Now, unix ms.
    pub(crate) now_ms: i64,
}

/// Takes measurements: [`AnalysisEnv`] in production, a script in tests.
#[async_trait]
pub(crate) trait Measure: Sync {
    /// The `result` of one measurement of `metric`.
    async fn measure(
        &self,
        metric: &MetricSpec,
        ctx: &MeasureCtx<'_>,
    ) -> Result<Value, MeasureError>;
}

/// Argument values: the caller's first, then the spec's defaults.
struct Args<'a> {
    given: &'a BTreeMap<String, String>,
    defaults: &'a [ArgSpec],
}

impl Args<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.given.get(name).map(String::as_str).or_else(|| {
            self.defaults
                .iter()
                .find(|a| a.name == name)
                .and_then(|a| a.value.as_deref())
        })
    }

    /// `text` with every `{{args.NAME}}` replaced; `check` may refuse a value.
    fn fill(
        &self,
        text: &str,
        check: impl Fn(&str, &str) -> Result<(), MeasureError>,
    ) -> Result<String, MeasureError> {
        let mut out = String::with_capacity(text.len());
        let mut rest = 0;
        for p in scan_placeholders(text).into_iter().flatten() {
            let Some(name) = p.arg else { continue };
            let value = self
                .get(name)
                .ok_or_else(|| MeasureError::MissingArg(name.to_string()))?;
            check(name, value)?;
            out.push_str(&text[rest..p.start]);
            out.push_str(value);
            rest = p.end;
        }
        out.push_str(&text[rest..]);
        Ok(out)
    }

    fn fill_plain(&self, text: &str) -> Result<String, MeasureError> {
        self.fill(text, |_, _| Ok(()))
    }
}

/// One `{{...}}` placeholder in a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placeholder<'a> {
    /// Byte offset of `{{`.
    pub(crate) start: usize,
    /// Byte offset just after `}}`.
    pub(crate) end: usize,
    /// What is between the braces, trimmed.
    pub(crate) inner: &'a str,
    /// The argument name when `inner` is `args.NAME`.
    pub(crate) arg: Option<&'a str>,
}

/// The `{{...}}` placeholders of `text`, in order; an `Err` holds the offset of a `{{` that is
/// never closed (scanning stops there).
pub(crate) fn scan_placeholders(text: &str) -> Vec<Result<Placeholder<'_>, usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("{{").map(|i| from + i) {
        let Some(close) = text[open + 2..].find("}}").map(|i| open + 2 + i) else {
            found.push(Err(open));
            break;
        };
        let inner = text[open + 2..close].trim();
        let arg = inner
            .strip_prefix("args.")
            .filter(|n| !n.is_empty() && !n.contains(char::is_whitespace));
        found.push(Ok(Placeholder {
            start: open,
            end: close + 2,
            inner,
            arg,
        }));
        from = close + 2;
    }
    found
}

/// Refuses argument values that could change a PromQL query's structure.
fn promql_safe(name: &str, value: &str) -> Result<(), MeasureError> {
    let what = if value.contains('"') {
        "a double quote"
    } else if value.contains('\\') {
        "a backslash"
    } else if value.contains(['\n', '\r']) {
        "a line break"
    } else {
        return Ok(());
    };
    Err(MeasureError::UnsafeArg {
        name: name.to_string(),
        what,
    })
}

/// Takes one measurement of `metric` with the providers of `env`.
pub(crate) async fn take(
    env: &AnalysisEnv<'_>,
    metric: &MetricSpec,
    ctx: &MeasureCtx<'_>,
) -> Result<Value, MeasureError> {
    let args = Args {
        given: env.args,
        defaults: ctx.args,
    };
    match &metric.provider {
        ProviderSpec::Prometheus { query } => {
            let prometheus = env.prometheus.ok_or(MeasureError::NoPrometheus)?;
            let promql = args.fill(query, promql_safe)?;
            let values = prometheus
                .query(&promql)
                .await
                .map_err(MeasureError::Prometheus)?;
            Ok(Value::Array(
                values
                    .into_iter()
                    .map(|v| serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
                    .collect(),
            ))
        }
        ProviderSpec::Web {
            url,
            method,
            headers,
            body,
            json_path,
            timeout_seconds,
        } => {
            let url = args.fill_plain(url)?;
            let shown = redact_url(&url);
            let mut request = GuardedRequest::get(url).with_header("accept", "application/json");
            if *method == WebMethod::Post {
                request.method = "POST".parse().map_err(|e| MeasureError::Request {
                    url: shown.clone(),
                    reason: format!("{e}"),
                })?;
            }
            for (name, value) in headers {
                request = request.with_header(args.fill_plain(name)?, args.fill_plain(value)?);
            }
            if let Some(body) = body {
                if !headers
                    .iter()
                    .any(|(n, _)| n.eq_ignore_ascii_case("content-type"))
                {
                    request = request.with_header("content-type", "application/json");
                }
                request = request.with_body(args.fill_plain(body)?.into_bytes());
            }
            let path = match json_path {
                Some(p) => {
                    Some(
                        parse_json_path(p).map_err(|reason| MeasureError::BadJsonPath {
                            path: p.clone(),
                            reason,
                        })?,
                    )
                }
                None => None,
            };
            let after = Duration::from_secs(*timeout_seconds);
            let response = match tokio::time::timeout(after, env.http.send(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(e)) => {
                    return Err(MeasureError::Request {
                        url: shown,
                        reason: e.to_string(),
                    });
                }
                Err(_) => {
                    return Err(MeasureError::Request {
                        url: shown,
                        reason: format!("no answer within timeoutSeconds {timeout_seconds}"),
                    });
                }
            };
            if !response.is_success() {
                return Err(MeasureError::Status {
                    url: shown,
                    status: response.status,
                    body: snippet(&String::from_utf8_lossy(&response.body)),
                });
            }
            let answer: Value =
                serde_json::from_slice(&response.body).map_err(|e| MeasureError::NotJson {
                    url: shown,
                    reason: e.to_string(),
                })?;
            match (path, json_path) {
                (Some(segments), Some(written)) => json_path_select(&answer, &segments)
                    .cloned()
                    .ok_or_else(|| MeasureError::NoMatch {
                        path: written.clone(),
                        body: snippet(&answer.to_string()),
                    }),
                _ => Ok(answer),
            }
        }
        ProviderSpec::Judge {
            canary_config,
            pass,
            marginal,
            step_seconds,
            lookback_seconds,
        } => {
            let services = env.canary.ok_or(MeasureError::NoJudge)?;
            let config_name = args.fill_plain(canary_config)?;
            let baseline = args.fill_plain("{{args.stable}}")?;
            let canary = args.fill_plain("{{args.canary}}")?;
            let from = match lookback_seconds {
                Some(secs) => {
                    let lookback = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
                    ctx.run_started_at.max(ctx.now_ms.saturating_sub(lookback))
                }
                None => ctx.run_started_at,
            };
            let secs = |ms: i64| u64::try_from(ms.max(0) / 1000).unwrap_or(0);
            let outcome = judge_window(
                services,
                &JudgeRequest {
                    config_name: &config_name,
                    baseline: &baseline,
                    canary: &canary,
                    start: secs(from),
                    end: secs(ctx.now_ms),
                    step: *step_seconds,
                    thresholds: Thresholds {
                        pass: *pass,
                        marginal: *marginal,
                    },
                },
            )
            .await?;
            let summary = &outcome.result.summary;
            let classification = match summary.classification {
                SummaryClassification::Pass => "Pass",
                SummaryClassification::Marginal => "Marginal",
                SummaryClassification::Fail => "Fail",
            };
            Ok(json!({
                "score": summary.score,
                "classification": classification,
                "reason": summary.reason,
                "configVersion": outcome.config_version,
            }))
        }
    }
}

/// The first 200 characters of a text, for messages.
fn snippet(text: &str) -> String {
    let mut out: String = text.chars().take(200).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

/// One judgment of a canary against its baseline.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeRequest<'a> {
    /// The stored `CanaryConfig`'s name.
    pub config_name: &'a str,
    /// The baseline's scope (the stable server group).
    pub baseline: &'a str,
    /// The canary's scope (the canary server group).
    pub canary: &'a str,
    /// Window start, unix seconds, inclusive.
    pub start: u64,
    /// Window end, unix seconds, exclusive.
    pub end: u64,
    /// Seconds per sample.
    pub step: u64,
    /// Pass and marginal scores.
    pub thresholds: Thresholds,
}

/// A judgment and the config version it used.
#[derive(Debug, Clone, PartialEq)]
pub struct JudgeOutcome {
    /// The judge's full result.
    pub result: JudgeResult,
    /// The version of the canary config that was read.
    pub config_version: i64,
}

/// Reads the latest version of the canary config, fetches every metric for both scopes over
/// the window through the canary services' sources (metrics in parallel, both sides at once),
/// and judges them off the async runtime — what the `kayentaCanary` stage does for one
/// interval, with one scope pair for every metric and no baseline offset. A metric whose
/// fetch fails goes to the judge as an error (it decides, as in the stage), unless every
/// fetch failed, which is a [`MeasureError::Judge`] naming the first failure.
///
/// # Errors
///
/// [`MeasureError::Judge`] when the config cannot be read, is missing or invalid, the window
/// is empty, no metric could be fetched, or a task stopped.
pub async fn judge_window(
    services: &CanaryServices,
    request: &JudgeRequest<'_>,
) -> Result<JudgeOutcome, MeasureError> {
    let name = request.config_name;
    if request.end <= request.start {
        return Err(MeasureError::Judge(format!(
            "the analysis window [{}, {}) is empty; wait at least a second after the run starts",
            request.start, request.end
        )));
    }
    if request.step == 0 {
        return Err(MeasureError::Judge(
            "the step must be at least 1 second".into(),
        ));
    }
    let (config, config_version) = compare::load_config(services, name, None)
        .await
        .map_err(MeasureError::Judge)?;
    let side = |scope: &str| compare::Side {
        scope: scope.to_string(),
        location: String::new(),
        start: request.start,
        end: request.end,
    };
    let data = compare::fetch_metrics(&services.sources, &config, |_| {
        Ok(compare::Pair {
            baseline: side(request.baseline),
            canary: side(request.canary),
            step: request.step,
        })
    })
    .await
    .map_err(MeasureError::Judge)?;
    let first_error = data.iter().find_map(|(metric_name, d)| match d {
        MetricData::Error(e) => Some(format!("metric \"{metric_name}\": {e}")),
        MetricData::Samples(_) => None,
    });
    if let Some(first) = first_error
        && data.values().all(|d| matches!(d, MetricData::Error(_)))
    {
        return Err(MeasureError::Judge(format!(
            "no metric could be fetched; {first}"
        )));
    }
    let result = compare::judge(config, data, request.thresholds)
        .await
        .map_err(MeasureError::Judge)?;
    Ok(JudgeOutcome {
        result,
        config_version,
    })
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JsonPathSegment {
    /// An object key (`.key`, `['key']`).
    Key(String),
    /// A list position (`[0]`).
    Index(usize),
}

/// Parses the JSON-path subset of the web provider: optional `{...}` braces (Kubernetes
/// JSONPath style), an optional `$`, then `.key`, `['key']` / `["key"]` and `[N]` steps. A
/// key runs until the next `.` or `[`. Wildcards, slices, filters and recursive descent are
/// refused. `$` (or an empty path) selects the whole document.
///
/// # Errors
///
/// What is wrong, in a sentence.
pub fn parse_json_path(text: &str) -> Result<Vec<JsonPathSegment>, String> {
    let mut path = text.trim();
    if let Some(inner) = path.strip_prefix('{') {
        path = inner
            .strip_suffix('}')
            .ok_or("a path that starts with `{` must end with `}`")?
            .trim();
    }
    let mut rest = path.strip_prefix('$').unwrap_or(path);
    let mut segments = Vec::new();
    let mut first = true;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']').ok_or("`[` without a matching `]`")?;
            let inside = after[..close].trim();
            let quoted = ['\'', '"']
                .iter()
                .find_map(|q| inside.strip_prefix(*q).and_then(|s| s.strip_suffix(*q)));
            if let Some(key) = quoted {
                segments.push(JsonPathSegment::Key(key.to_string()));
            } else {
                let index = inside.parse::<usize>().map_err(|_| {
                    format!("`[{inside}]` is not supported; use [N] for a list position or ['key']")
                })?;
                segments.push(JsonPathSegment::Index(index));
            }
            rest = &after[close + 1..];
        } else {
            let body = match rest.strip_prefix('.') {
                Some(body) => body,
                None if first => rest,
                None => return Err(format!("expected `.` or `[` at `{rest}`")),
            };
            if body.starts_with('.') {
                return Err("recursive descent (`..`) is not supported".into());
            }
            let end = body.find(['.', '[']).unwrap_or(body.len());
            let key = body[..end].trim();
            if key.is_empty() {
                return Err("an empty key after `.`".into());
            }
            if key == "*" {
                return Err("wildcards (`*`) are not supported".into());
            }
            segments.push(JsonPathSegment::Key(key.to_string()));
            rest = &body[end..];
        }
        first = false;
    }
    Ok(segments)
}

/// The part of `value` a parsed JSON path selects, if any.
pub fn json_path_select<'v>(value: &'v Value, path: &[JsonPathSegment]) -> Option<&'v Value> {
    path.iter().try_fold(value, |v, segment| match segment {
        JsonPathSegment::Key(k) => v.as_object()?.get(k),
        JsonPathSegment::Index(i) => v.as_array()?.get(*i),
    })
}
