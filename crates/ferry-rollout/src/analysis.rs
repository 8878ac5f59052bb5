//! Analysis runs: Argo Rollouts' `AnalysisTemplate` metrics measured on a schedule, judged by
//! `successCondition` / `failureCondition`, and kept as a durable state machine that a stage
//! can store in its context and resume after a restart.
//!
//! # What a user writes
//!
//! The `spec` of an Argo `AnalysisTemplate`, as JSON or YAML ([`parse_analysis`]):
//!
//! ```yaml
//! args:
//!   - name: service            # a value the caller does not give must have a default here
//!     value: shop
//! metrics:
//!   - name: success-rate
//!     interval: 30s            # Go durations: 500ms, 30s, 5m, 1h, 1m30s; a number is seconds
//!     initialDelay: 10s
//!     count: 5
//!     successCondition: result[0] >= 0.95
//!     failureLimit: 1
//!     provider:
//!       prometheus:
//!         query: sum(rate(lb_requests_total{group="{{args.canary}}",code!~"5.."}[1m]))
//!                / sum(rate(lb_requests_total{group="{{args.canary}}"}[1m]))
//! ```
//!
//! Every problem is reported with its path (`metrics[1].provider.web.url`), as everywhere in
//! Ferry. [`parse_analysis_lenient`] accepts `${...}` Ferry expressions in any field whose
//! value is only known once the stage's context is evaluated.
//!
//! # Metric fields and defaults
//!
//! | field | default | meaning |
//! |---|---|---|
//! | `interval` | none | time between measurements |
//! | `initialDelay` | 0 | wait before the first measurement |
//! | `count` | 1 without `interval`, unbounded with one | measurements (errors not counted) |
//! | `successCondition` | none | expression over `result`, true = Successful |
//! | `failureCondition` | none | expression over `result`, true = Failed |
//! | `failureLimit` | 0 | Failed measurements tolerated |
//! | `inconclusiveLimit` | 0 | Inconclusive measurements tolerated |
//! | `consecutiveErrorLimit` | 4 | Errors in a row tolerated |
//!
//! A metric needs at least one condition (the judge provider has defaults, see below).
//! Conditions are Ferry expressions ([`ferry_engine::expr::evaluate_result_condition`]) that
//! see only `result`: `result[0] >= 0.95`, `result.score >= 75`, or a `${...}` template.
//!
//! # Scheduling
//!
//! Measurement *k* (from 0) of a metric is due at `startedAt + initialDelay + k × interval`.
//! [`tick`] takes, for every metric, the measurement that is due at `now` (one per metric per
//! call, metrics one after the other) and returns how long until the next one is due, counted
//! from `now`. A slot missed because nobody called `tick` (the server was down) is skipped,
//! not caught up: the next measurement goes in the first slot after the last one taken, so a
//! restart never fires a burst of measurements. After an Error the measurement is retried
//! [`ERROR_RETRY_MS`] later, or at the next slot if that comes first (Argo's error retry).
//!
//! # Outcome of one measurement
//!
//! | what happened | measurement |
//! |---|---|
//! | the provider failed, or a condition could not be evaluated | Error |
//! | `failureCondition` true | Failed |
//! | `successCondition` true | Successful |
//! | `successCondition` false, no `failureCondition` | Failed |
//! | `successCondition` false, `failureCondition` false | Inconclusive |
//! | only `failureCondition`, and it is false | Successful |
//!
//! `consecutiveError` counts Errors in a row and goes back to 0 with any other outcome. `count`
//! is the number of measurements that were not Errors (Argo's meaning), so an Error does not
//! use up one of the `count` measurements. Only the last [`MAX_MEASUREMENTS`] measurements are
//! kept; the counters cover all of them.
//!
//! # Phase of a metric, then of the run
//!
//! A metric is, checked in this order: Failed when `failed > failureLimit`; Inconclusive when
//! `inconclusive > inconclusiveLimit`; Error when `consecutiveError > consecutiveErrorLimit`;
//! Successful once `count` measurements are taken; otherwise Pending (nothing measured yet)
//! or Running. A metric with an `interval` and no `count` never becomes Successful on its
//! own: it runs until [`terminate`] ends it (Argo's background analysis).
//!
//! The run is Failed if any metric is Failed; else Error if any is Error; else Inconclusive if
//! any is Inconclusive; else Successful when all are Successful; else Running. A run that has
//! reached one of those four end phases is final: [`tick`] does nothing more and returns
//! `None`, and metrics still running are not measured again.
//!
//! # Providers
//!
//! - **prometheus** `{query}`: an instant query against the server's Prometheus
//!   ([`InstantQuery`], implemented for [`ferry_canary::prometheus::PrometheusSource`]).
//!   `result` is the list of sample values, one per series (`result[0]`); NaN and ±Inf become
//!   `null`. A query that matches no series gives `[]`, and `result[0]` on an empty list is an
//!   evaluation error, so the measurement is an Error rather than a silent Failed or
//!   Successful (write `result.size() == 0 || result[0] >= 0.95` to accept no data).
//! - **web** `{url, method (GET|POST), headers: [{key, value}], body, jsonPath,
//!   timeoutSeconds (10)}`: an HTTP request through Ferry's URL guard
//!   ([`ferry_http::GuardedClient`]); a non-2xx answer is an Error naming the status; the
//!   body must be JSON. `jsonPath` (`{$.data.ok}`, `$.items[0].value`, `.data['x-y']`: a
//!   subset of Kubernetes JSONPath with keys and list indexes, braces and `$` optional) picks
//!   the `result`; without it the whole body is the result. A body without a `Content-Type`
//!   header is sent as `application/json`.
//! - **judge** (alias **kayenta**) `{canaryConfig, scoreThresholds: {pass (75), marginal
//!   (50)}, step (60 s), lookback}`: Ferry's canary judge compares the baseline
//!   `{{args.stable}}` with the canary `{{args.canary}}` over the window
//!   `[max(startedAt, now − lookback), now)` with samples every `step`, fetched through the
//!   canary services' metric sources, for the stored `CanaryConfig` named `canaryConfig`
//!   (its latest version at each measurement). `result` is `{"score", "classification"
//!   ("Pass" | "Marginal" | "Fail"), "reason", "configVersion"}`. With neither condition
//!   written the success condition is `result.score >= <pass>` and the failure condition
//!   `result.score < <marginal>`, so a marginal score is Inconclusive.
//!
//! # Arguments
//!
//! `{{args.NAME}}` is replaced, at each measurement, in Prometheus queries, web URLs, header
//! names and values and bodies, and the judge's `canaryConfig`. The value comes from the
//! map the caller passes ([`AnalysisEnv::args`]; the rollout stage gives at least `canary`
//! and `stable`, the server group names, and `canary-weight`), else from the arg's default in
//! `args`. A placeholder without a value makes that measurement an Error. Values go into URLs,
//! headers and bodies as they are (they are operator arguments, and the URL guard still
//! applies); in a Prometheus query a value containing `"`, `\` or a line break is refused
//! (Error) so that it cannot change the query's structure. `{{args.x}}` is Argo's syntax,
//! not a Ferry expression; `${...}` expressions are evaluated by the engine before the stage
//! runs.
//!
//! # Differences from Argo Rollouts
//!
//! - Providers: prometheus, web and judge/kayenta only; no `job`, `datadog`, `newRelic`,
//!   `wavefront`, `cloudWatch`, `graphite`, `influxdb`, `skywalking` or plugins. Prometheus
//!   has no `address`: the server's configured Prometheus is queried.
//! - Arguments are substituted in the fields listed above only, not in durations, counts,
//!   limits or conditions; `valueFrom` (secrets, field references) is not supported.
//! - No `dryRun`, `measurementRetention` (always the last [`MAX_MEASUREMENTS`]) or
//!   `jsonBody`; web methods are GET and POST.
//! - The schedule is slot-based (see above) instead of "interval after the last measurement
//!   finished", so a run resumed from storage keeps its cadence.
//! - The rollout treats a run that ends in Error like Failed (abort); Inconclusive pauses for a
//!   person, as in Argo.

mod measure;
mod parse;
#[cfg(test)]
mod tests;

pub use measure::{
    InstantQuery, JsonPathSegment, JudgeOutcome, JudgeRequest, MeasureError, json_path_select,
    judge_window, parse_json_path,
};
pub use parse::{parse_analysis, parse_analysis_lenient, parse_duration_ms};

use async_trait::async_trait;
use ferry_http::GuardedClient;
use measure::Measure;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

/// Measurements kept per metric (the oldest are dropped; the counters keep counting).
pub const MAX_MEASUREMENTS: usize = 10;

/// How soon a measurement that ended in Error is retried, at the latest (ms).
pub const ERROR_RETRY_MS: i64 = 10_000;

/// `consecutiveErrorLimit` when none is written.
pub const DEFAULT_CONSECUTIVE_ERROR_LIMIT: u32 = 4;

/// `timeoutSeconds` of the web provider when none is written.
pub const DEFAULT_WEB_TIMEOUT_SECONDS: u64 = 10;

/// The judge provider's `step` (seconds per sample) when none is written.
pub const DEFAULT_JUDGE_STEP_SECONDS: u64 = 60;

/// The judge provider's `scoreThresholds.pass` when none is written.
pub const DEFAULT_JUDGE_PASS: f64 = 75.0;

/// The judge provider's `scoreThresholds.marginal` when none is written.
pub const DEFAULT_JUDGE_MARGINAL: f64 = 50.0;

/// What a user wrote: Argo's `AnalysisTemplate` spec (`metrics`, optional `args`), validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisSpec {
    /// The metrics, in document order; names are unique.
    pub metrics: Vec<MetricSpec>,
    /// Declared arguments and their defaults.
    pub args: Vec<ArgSpec>,
}

/// One declared argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgSpec {
    /// The name used in `{{args.NAME}}`.
    pub name: String,
    /// The default, used when the caller gives no value.
    pub value: Option<String>,
}

/// One metric of an analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricSpec {
    /// Unique within the analysis.
    pub name: String,
    /// Time between measurements; `None` = a single measurement (unless `count` says more).
    pub interval_ms: Option<u64>,
    /// Wait before the first measurement.
    pub initial_delay_ms: u64,
    /// Measurements to take; `None` = 1 without an interval, unbounded with one.
    pub count: Option<u32>,
    /// True → Successful.
    pub success_condition: Option<String>,
    /// True → Failed.
    pub failure_condition: Option<String>,
    /// Failed measurements tolerated (default 0).
    pub failure_limit: u32,
    /// Inconclusive measurements tolerated (default 0).
    pub inconclusive_limit: u32,
    /// Errors in a row tolerated (default 4).
    pub consecutive_error_limit: u32,
    /// Where the measurement comes from.
    pub provider: ProviderSpec,
}

impl MetricSpec {
    /// How many measurements make the metric complete; `None` = unbounded.
    pub fn effective_count(&self) -> Option<u32> {
        match (self.count, self.interval_ms) {
            (Some(c), _) => Some(c),
            (None, None) => Some(1),
            (None, Some(_)) => None,
        }
    }

    /// The conditions that are evaluated: as written, or, for the judge provider with neither
    /// written, `result.score >= <pass>` and `result.score < <marginal>`.
    pub fn conditions(&self) -> (Option<String>, Option<String>) {
        match (
            &self.success_condition,
            &self.failure_condition,
            &self.provider,
        ) {
            (None, None, ProviderSpec::Judge { pass, marginal, .. }) => (
                Some(format!("result.score >= {pass}")),
                Some(format!("result.score < {marginal}")),
            ),
            (s, f, _) => (s.clone(), f.clone()),
        }
    }
}

/// The HTTP method of the web provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebMethod {
    /// `GET` (the default).
    Get,
    /// `POST`.
    Post,
}

/// Where a metric's measurement comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ProviderSpec {
    /// A PromQL instant query.
    Prometheus {
        /// The query, with `{{args.NAME}}` placeholders.
        query: String,
    },
    /// An HTTP endpoint answering JSON.
    Web {
        /// The URL, with placeholders.
        url: String,
        /// GET or POST.
        method: WebMethod,
        /// Headers `(name, value)`, with placeholders.
        headers: Vec<(String, String)>,
        /// The request body, with placeholders.
        body: Option<String>,
        /// Which part of the answer is the result; `None` = all of it.
        json_path: Option<String>,
        /// How long the request may take.
        timeout_seconds: u64,
    },
    /// Ferry's canary judge, baseline `{{args.stable}}` against canary `{{args.canary}}`.
    Judge {
        /// The stored `CanaryConfig`'s name, with placeholders.
        canary_config: String,
        /// Score at or above which the canary passes.
        pass: f64,
        /// Score below which the canary fails.
        marginal: f64,
        /// Seconds per sample.
        step_seconds: u64,
        /// Window length; `None` = from the start of the run.
        lookback_seconds: Option<u64>,
    },
}

/// The phase of a run, a metric or a measurement (Argo's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AnalysisPhase {
    /// Nothing measured yet.
    Pending,
    /// Measuring.
    Running,
    /// Passed.
    Successful,
    /// Failed: the rollout aborts.
    Failed,
    /// Too many errors in a row: the rollout treats it like Failed.
    Error,
    /// Neither passed nor failed: the rollout pauses for a person.
    Inconclusive,
}

impl AnalysisPhase {
    /// True for Successful, Failed, Error and Inconclusive: nothing more happens.
    pub fn is_terminal(self) -> bool {
        !matches!(self, AnalysisPhase::Pending | AnalysisPhase::Running)
    }

    /// The phase's name, as serialized.
    pub fn as_str(self) -> &'static str {
        match self {
            AnalysisPhase::Pending => "Pending",
            AnalysisPhase::Running => "Running",
            AnalysisPhase::Successful => "Successful",
            AnalysisPhase::Failed => "Failed",
            AnalysisPhase::Error => "Error",
            AnalysisPhase::Inconclusive => "Inconclusive",
        }
    }
}

/// One measurement of a metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Measurement {
    /// Successful, Failed, Inconclusive or Error.
    pub phase: AnalysisPhase,
    /// The `result` the conditions saw; `None` after a provider error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// Why (the error, or which condition decided).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When it was due and taken (the `now` passed to [`tick`]), unix ms.
    pub started_at: i64,
    /// When it finished, unix ms.
    pub finished_at: i64,
}

/// The state of one metric in a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MetricRun {
    /// The metric's name.
    pub name: String,
    /// Its phase.
    pub phase: AnalysisPhase,
    /// The last [`MAX_MEASUREMENTS`] measurements, oldest first.
    #[serde(default)]
    pub measurements: Vec<Measurement>,
    /// Measurements that were not Errors.
    #[serde(default)]
    pub count: u32,
    /// Successful measurements.
    #[serde(default)]
    pub successful: u32,
    /// Failed measurements.
    #[serde(default)]
    pub failed: u32,
    /// Inconclusive measurements.
    #[serde(default)]
    pub inconclusive: u32,
    /// Error measurements.
    #[serde(default)]
    pub error: u32,
    /// Errors since the last measurement that was not one.
    #[serde(default)]
    pub consecutive_error: u32,
    /// Why the metric ended (or the last error while running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl MetricRun {
    /// A metric with nothing measured.
    pub fn new(name: &str) -> MetricRun {
        MetricRun {
            name: name.to_string(),
            phase: AnalysisPhase::Pending,
            measurements: Vec::new(),
            count: 0,
            successful: 0,
            failed: 0,
            inconclusive: 0,
            error: 0,
            consecutive_error: 0,
            message: None,
        }
    }
}

/// The durable state of one analysis run; the caller stores it (JSON) between ticks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisRun {
    /// The run's phase.
    pub phase: AnalysisPhase,
    /// When the run started, unix ms; the schedule counts from here.
    pub started_at: i64,
    /// One per metric of the spec, in spec order.
    #[serde(default)]
    pub metrics: Vec<MetricRun>,
    /// Why the run ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl AnalysisRun {
    /// A run of `spec` starting at `now_ms`, every metric Pending.
    pub fn new(spec: &AnalysisSpec, now_ms: i64) -> AnalysisRun {
        AnalysisRun {
            phase: AnalysisPhase::Pending,
            started_at: now_ms,
            metrics: spec
                .metrics
                .iter()
                .map(|m| MetricRun::new(&m.name))
                .collect(),
            message: None,
        }
    }

    /// The state of the metric named `name`.
    pub fn metric(&self, name: &str) -> Option<&MetricRun> {
        self.metrics.iter().find(|m| m.name == name)
    }
}

/// What measurements need: the providers' clients and the arguments.
pub struct AnalysisEnv<'a> {
    /// The server's Prometheus; `None` makes prometheus measurements Errors.
    pub prometheus: Option<&'a dyn InstantQuery>,
    /// The guarded client web measurements go through (its policy decides what is reachable).
    pub http: &'a GuardedClient,
    /// Store and metric sources of the canary judge; `None` makes judge measurements Errors.
    pub canary: Option<&'a ferry_canary::CanaryServices>,
    /// Argument values (`canary`, `stable`, `canary-weight`, user args); they win over the
    /// spec's defaults.
    pub args: &'a BTreeMap<String, String>,
    /// Limits for evaluating conditions.
    pub limits: ferry_expr::Limits,
}

/// Takes every measurement that is due at `now_ms`, updates the run, and says when to call
/// again (counted from `now_ms`). `None` = the run is complete (its phase is terminal); a
/// complete run is left as it is.
pub async fn tick(
    spec: &AnalysisSpec,
    run: &mut AnalysisRun,
    env: &AnalysisEnv<'_>,
    now_ms: i64,
) -> Option<Duration> {
    tick_with(spec, run, env, env.limits, now_ms).await
}

/// [`tick`] with the measurements taken by `measurer` (tests script it).
async fn tick_with<M: Measure>(
    spec: &AnalysisSpec,
    run: &mut AnalysisRun,
    measurer: &M,
    limits: ferry_expr::Limits,
    now_ms: i64,
) -> Option<Duration> {
    if run.phase.is_terminal() {
        return None;
    }
    run.phase = AnalysisPhase::Running;
    for metric in &spec.metrics {
        if !run.metrics.iter().any(|m| m.name == metric.name) {
            run.metrics.push(MetricRun::new(&metric.name));
        }
    }
    let started_at = run.started_at;
    for metric in &spec.metrics {
        let Some(state) = run.metrics.iter_mut().find(|m| m.name == metric.name) else {
            continue;
        };
        if state.phase.is_terminal() || now_ms < next_due(metric, state, started_at) {
            continue;
        }
        let ctx = measure::MeasureCtx {
            args: &spec.args,
            run_started_at: started_at,
            now_ms,
        };
        let clock = tokio::time::Instant::now();
        let outcome = measurer.measure(metric, &ctx).await;
        let elapsed = i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX);
        let (phase, value, message) = match outcome {
            Ok(value) => {
                let (phase, message) = judge_result(metric, &value, limits);
                (phase, Some(value), message)
            }
            Err(e) => (AnalysisPhase::Error, None, Some(e.to_string())),
        };
        record(
            metric,
            state,
            Measurement {
                phase,
                value,
                message,
                started_at: now_ms,
                finished_at: now_ms.saturating_add(elapsed),
            },
        );
    }
    settle(spec, run);
    if run.phase.is_terminal() {
        return None;
    }
    let next = spec
        .metrics
        .iter()
        .filter_map(|metric| {
            let state = run.metrics.iter().find(|m| m.name == metric.name)?;
            (!state.phase.is_terminal()).then(|| next_due(metric, state, started_at))
        })
        .min()
        .unwrap_or(now_ms);
    Some(Duration::from_millis(
        u64::try_from(next.saturating_sub(now_ms)).unwrap_or(0),
    ))
}

/// Ends the run: every metric still Pending or Running becomes Successful (its counters are
/// within its limits, or it would have ended already), then the run's phase is worked out
/// again, so a run ends Successful unless a metric had already failed, errored or was
/// inconclusive. Argo does this for background analysis when the rollout completes. A run
/// that is already complete is left as it is.
pub fn terminate(run: &mut AnalysisRun) {
    if run.phase.is_terminal() {
        return;
    }
    for metric in &mut run.metrics {
        if !metric.phase.is_terminal() {
            metric.phase = AnalysisPhase::Successful;
            metric.message = Some(format!(
                "terminated after {} measurement(s)",
                metric.count + metric.error
            ));
        }
    }
    run.phase = run_phase(run.metrics.iter());
    run.message = Some(match run.phase {
        AnalysisPhase::Successful => "terminated; every metric was within its limits".into(),
        _ => run_message(run.metrics.iter()),
    });
}

/// When the next measurement of a metric is due, unix ms.
fn next_due(metric: &MetricSpec, state: &MetricRun, started_at: i64) -> i64 {
    let first = started_at.saturating_add(ms(metric.initial_delay_ms));
    let Some(last) = state.measurements.last() else {
        return first;
    };
    let retry = last.started_at.saturating_add(ERROR_RETRY_MS);
    let errored = last.phase == AnalysisPhase::Error;
    match metric.interval_ms.filter(|i| *i > 0) {
        Some(interval) => {
            let interval = ms(interval);
            let slot = if last.started_at < first {
                first
            } else {
                let k = (last.started_at - first) / interval + 1;
                first.saturating_add(k.saturating_mul(interval))
            };
            if errored { slot.min(retry) } else { slot }
        }
        None if errored => retry,
        None => last.finished_at,
    }
}

fn ms(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Applies the outcome table to one result: the measurement's phase and why.
fn judge_result(
    metric: &MetricSpec,
    result: &Value,
    limits: ferry_expr::Limits,
) -> (AnalysisPhase, Option<String>) {
    let (success, failure) = metric.conditions();
    let eval = |which: &str, source: &str| {
        ferry_engine::expr::evaluate_result_condition(source, result, limits).map_err(|reason| {
            MeasureError::Condition {
                which: which.to_string(),
                condition: source.to_string(),
                reason,
            }
            .to_string()
        })
    };
    let failed = match failure.as_deref() {
        Some(source) => match eval("failureCondition", source) {
            Ok(b) => Some(b),
            Err(message) => return (AnalysisPhase::Error, Some(message)),
        },
        None => None,
    };
    let fail_source = failure.as_deref().unwrap_or_default();
    if failed == Some(true) {
        return (
            AnalysisPhase::Failed,
            Some(format!("failureCondition `{fail_source}` is true")),
        );
    }
    match success.as_deref() {
        Some(source) => match eval("successCondition", source) {
            Err(message) => (AnalysisPhase::Error, Some(message)),
            Ok(true) => (AnalysisPhase::Successful, None),
            Ok(false) if failed.is_some() => (
                AnalysisPhase::Inconclusive,
                Some(format!(
                    "successCondition `{source}` and failureCondition `{fail_source}` are both false"
                )),
            ),
            Ok(false) => (
                AnalysisPhase::Failed,
                Some(format!("successCondition `{source}` is false")),
            ),
        },
        None if failed.is_some() => (AnalysisPhase::Successful, None),
        None => (
            AnalysisPhase::Error,
            Some("the metric needs successCondition or failureCondition".into()),
        ),
    }
}

/// Adds a measurement to a metric and works out the metric's phase.
fn record(metric: &MetricSpec, state: &mut MetricRun, m: Measurement) {
    match m.phase {
        AnalysisPhase::Error => {
            state.error = state.error.saturating_add(1);
            state.consecutive_error = state.consecutive_error.saturating_add(1);
            state.message.clone_from(&m.message);
        }
        phase => {
            state.consecutive_error = 0;
            state.count = state.count.saturating_add(1);
            let counter = match phase {
                AnalysisPhase::Successful => &mut state.successful,
                AnalysisPhase::Failed => &mut state.failed,
                _ => &mut state.inconclusive,
            };
            *counter = counter.saturating_add(1);
            state.message = None;
        }
    }
    let last_message = m.message.clone();
    state.measurements.push(m);
    if state.measurements.len() > MAX_MEASUREMENTS {
        let extra = state.measurements.len() - MAX_MEASUREMENTS;
        state.measurements.drain(..extra);
    }
    let with_last = |text: String| match &last_message {
        Some(last) => format!("{text}; last: {last}"),
        None => text,
    };
    if state.failed > metric.failure_limit {
        state.phase = AnalysisPhase::Failed;
        state.message = Some(with_last(format!(
            "{} failed measurement(s), more than failureLimit {}",
            state.failed, metric.failure_limit
        )));
    } else if state.inconclusive > metric.inconclusive_limit {
        state.phase = AnalysisPhase::Inconclusive;
        state.message = Some(with_last(format!(
            "{} inconclusive measurement(s), more than inconclusiveLimit {}",
            state.inconclusive, metric.inconclusive_limit
        )));
    } else if state.consecutive_error > metric.consecutive_error_limit {
        state.phase = AnalysisPhase::Error;
        state.message = Some(with_last(format!(
            "{} errors in a row, more than consecutiveErrorLimit {}",
            state.consecutive_error, metric.consecutive_error_limit
        )));
    } else if metric.effective_count().is_some_and(|c| state.count >= c) {
        state.phase = AnalysisPhase::Successful;
        state.message = Some(format!(
            "{} measurement(s): {} successful, {} failed, {} inconclusive",
            state.count, state.successful, state.failed, state.inconclusive
        ));
    } else {
        state.phase = AnalysisPhase::Running;
    }
}

/// Works out the run's phase (and message, once it is final) from its metrics.
fn settle(spec: &AnalysisSpec, run: &mut AnalysisRun) {
    let in_spec = || {
        run.metrics
            .iter()
            .filter(|m| spec.metrics.iter().any(|s| s.name == m.name))
    };
    let phase = run_phase(in_spec());
    let message = phase.is_terminal().then(|| run_message(in_spec()));
    run.phase = phase;
    run.message = message;
}

fn run_phase<'a>(metrics: impl Iterator<Item = &'a MetricRun> + Clone) -> AnalysisPhase {
    let any = |p: AnalysisPhase| metrics.clone().any(|m| m.phase == p);
    if any(AnalysisPhase::Failed) {
        AnalysisPhase::Failed
    } else if any(AnalysisPhase::Error) {
        AnalysisPhase::Error
    } else if any(AnalysisPhase::Inconclusive) {
        AnalysisPhase::Inconclusive
    } else if metrics
        .clone()
        .all(|m| m.phase == AnalysisPhase::Successful)
    {
        AnalysisPhase::Successful
    } else {
        AnalysisPhase::Running
    }
}

/// Names the metrics that decided a final phase.
fn run_message<'a>(metrics: impl Iterator<Item = &'a MetricRun> + Clone) -> String {
    let phase = run_phase(metrics.clone());
    if phase == AnalysisPhase::Successful {
        return "every metric was successful".into();
    }
    let deciding: Vec<String> = metrics
        .filter(|m| m.phase == phase)
        .map(|m| match &m.message {
            Some(why) => format!("metric \"{}\" {}: {why}", m.name, phase.as_str()),
            None => format!("metric \"{}\" {}", m.name, phase.as_str()),
        })
        .collect();
    deciding.join("; ")
}

#[async_trait]
impl Measure for AnalysisEnv<'_> {
    async fn measure(
        &self,
        metric: &MetricSpec,
        ctx: &measure::MeasureCtx<'_>,
    ) -> Result<Value, MeasureError> {
        measure::take(self, metric, ctx).await
    }
}
