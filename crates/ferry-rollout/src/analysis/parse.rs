//! Reading an analysis spec (Argo's `AnalysisTemplate` spec) from JSON into an
//! [`AnalysisSpec`], collecting every problem with its path.

use super::measure::{parse_json_path, scan_placeholders};
use super::{
    AnalysisSpec, ArgSpec, DEFAULT_CONSECUTIVE_ERROR_LIMIT, DEFAULT_JUDGE_MARGINAL,
    DEFAULT_JUDGE_PASS, DEFAULT_JUDGE_STEP_SECONDS, DEFAULT_WEB_TIMEOUT_SECONDS, MetricSpec,
    ProviderSpec, WebMethod,
};
use ferry_core::Problem;
use ferry_core::fields::{Fields, kind};
use serde_json::Value;
use std::collections::BTreeSet;

/// The provider keys Ferry reads (`kayenta` is an alias of `judge`).
const PROVIDERS: [&str; 4] = ["prometheus", "web", "judge", "kayenta"];

/// Argo providers Ferry does not have.
const ARGO_ONLY_PROVIDERS: [&str; 10] = [
    "job",
    "datadog",
    "newRelic",
    "wavefront",
    "cloudWatch",
    "graphite",
    "influxdb",
    "skywalking",
    "plugin",
    "apm",
];

/// Reads an analysis spec (`{args, metrics}`) at `path`, pushing every problem with its path.
/// `None` when there was a problem.
pub fn parse_analysis(
    value: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<AnalysisSpec> {
    Reader {
        lenient: false,
        deferred: false,
    }
    .spec(value, path, problems)
}

/// [`parse_analysis`] for pre-run validation: a `${...}` Ferry expression is accepted in any
/// field (its value is only known after the stage's context is evaluated). `None` when there
/// was a problem or some field is such an expression.
pub fn parse_analysis_lenient(
    value: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<AnalysisSpec> {
    Reader {
        lenient: true,
        deferred: false,
    }
    .spec(value, path, problems)
}

/// Parses a Go-style duration into milliseconds: `500ms`, `30s`, `5m`, `1h`, `1m30s`, `1.5h`,
/// also `ns`, `us` / `µs`; a bare number (`"30"`) is seconds. Fractions of a millisecond are
/// rounded to the nearest.
///
/// # Errors
///
/// What is wrong, in a sentence.
pub fn parse_duration_ms(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let bad = || format!("\"{text}\" is not a duration such as 30s, 5m, 1h or 1m30s");
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return seconds_to_ms(secs).ok_or_else(bad);
    }
    let mut total_ms = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ns" => 1e-6,
            "us" | "µs" | "μs" => 1e-3,
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("\"{text}\": a number needs a unit (ms, s, m, h)")),
            unit => {
                return Err(format!(
                    "\"{text}\": unknown unit \"{unit}\"; use ms, s, m or h"
                ));
            }
        };
        total_ms += number * factor;
        rest = &rest[unit_len..];
    }
    to_ms(total_ms).ok_or_else(bad)
}

fn seconds_to_ms(secs: f64) -> Option<u64> {
    to_ms(secs * 1000.0)
}

fn to_ms(ms: f64) -> Option<u64> {
    // u64::MAX is not exactly representable; a bound far beyond any useful duration.
    (ms.is_finite() && (0.0..1e15).contains(&ms)).then(|| ms.round() as u64)
}

/// Parse state: the mode, and whether a deferred (`${...}`) field was met.
struct Reader {
    lenient: bool,
    deferred: bool,
}

impl Reader {
    fn fields<'a>(
        &self,
        value: &'a Value,
        path: &str,
        problems: &'a mut Vec<Problem>,
    ) -> Fields<'a> {
        if self.lenient {
            Fields::lenient(value, path, problems)
        } else {
            Fields::new(value, path, problems)
        }
    }

    /// True (and noted) when a field holds an expression only known at run time.
    fn deferred(&mut self, f: &Fields<'_>, key: &str) -> bool {
        let d = f.is_deferred(key);
        self.deferred |= d;
        d
    }

    fn spec(
        mut self,
        value: &Value,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<AnalysisSpec> {
        let before = problems.len();
        check_keys(
            value,
            path,
            &["metrics", "args"],
            &[
                ("dryRun", "dryRun is not supported by Ferry"),
                (
                    "measurementRetention",
                    "measurementRetention is not supported; Ferry keeps the last 10 measurements of each metric",
                ),
            ],
            problems,
        );
        let mut f = self.fields(value, path, problems);
        let args = self.args(&mut f);
        let mut metrics = Vec::new();
        if !self.deferred(&f, "metrics") {
            match f.opt_array("metrics") {
                None if f.get("metrics").is_none() => {
                    f.problem("metrics", "is required: the metrics to measure");
                }
                None => {}
                Some(items) if items.is_empty() => {
                    f.problem("metrics", "needs at least one metric");
                }
                Some(items) => {
                    let base = f.path_of("metrics");
                    let mut names = BTreeSet::new();
                    for (i, item) in items.iter().enumerate() {
                        let item_path = format!("{base}[{i}]");
                        let name = item.get("name").and_then(Value::as_str);
                        if let Some(name) = name
                            && !names.insert(name)
                        {
                            f.problems.push(Problem::new(
                                format!("{item_path}.name"),
                                format!("metric \"{name}\" is given twice"),
                            ));
                        }
                        if let Some(metric) = self.metric(item, &item_path, f.problems) {
                            metrics.push(metric);
                        }
                    }
                }
            }
        }
        if problems.len() > before || self.deferred {
            return None;
        }
        Some(AnalysisSpec { metrics, args })
    }

    fn args(&mut self, f: &mut Fields<'_>) -> Vec<ArgSpec> {
        let mut args = Vec::new();
        if self.deferred(f, "args") {
            return args;
        }
        let Some(items) = f.opt_array("args") else {
            return args;
        };
        let base = f.path_of("args");
        let mut names = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            check_keys(
                item,
                &path,
                &["name", "value"],
                &[(
                    "valueFrom",
                    "valueFrom (secrets, field references) is not supported; give a value, or pass the argument to the analysis",
                )],
                f.problems,
            );
            let mut a = self.fields(item, &path, f.problems);
            let Some(name) = required_text(&mut a, "name") else {
                continue;
            };
            if !names.insert(name.clone()) {
                a.problem("name", format!("argument \"{name}\" is given twice"));
            }
            if name.contains(char::is_whitespace) || name.contains("}}") {
                a.problem("name", "must not contain spaces or `}}`");
            }
            let value = a.opt_str("value");
            args.push(ArgSpec { name, value });
        }
        args
    }

    fn metric(
        &mut self,
        item: &Value,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<MetricSpec> {
        let before = problems.len();
        check_keys(
            item,
            path,
            &[
                "name",
                "interval",
                "initialDelay",
                "count",
                "successCondition",
                "failureCondition",
                "failureLimit",
                "inconclusiveLimit",
                "consecutiveErrorLimit",
                "provider",
            ],
            &[],
            problems,
        );
        let mut f = self.fields(item, path, problems);
        let name = required_text(&mut f, "name");
        let interval_ms = self.duration(&mut f, "interval");
        if interval_ms == Some(0) {
            f.problem("interval", "must be longer than 0");
        }
        let initial_delay_ms = self.duration(&mut f, "initialDelay").unwrap_or(0);
        let count = self.limit(&mut f, "count");
        if count == Some(0) {
            f.problem(
                "count",
                "must be at least 1 (leave it out, with an interval, to measure until the rollout ends)",
            );
        }
        if count.is_some_and(|c| c > 1) && f.get("interval").is_none() {
            f.problem("count", "more than one measurement needs an interval");
        }
        let success_condition = self.condition(&mut f, "successCondition");
        let failure_condition = self.condition(&mut f, "failureCondition");
        let failure_limit = self.limit(&mut f, "failureLimit").unwrap_or(0);
        let inconclusive_limit = self.limit(&mut f, "inconclusiveLimit").unwrap_or(0);
        let consecutive_error_limit = self
            .limit(&mut f, "consecutiveErrorLimit")
            .unwrap_or(DEFAULT_CONSECUTIVE_ERROR_LIMIT);
        let provider_deferred = f.is_deferred("provider");
        let is_judge = f
            .get("provider")
            .and_then(Value::as_object)
            .is_some_and(|o| o.contains_key("judge") || o.contains_key("kayenta"));
        let provider = self.provider(&mut f);
        let has_condition = ["successCondition", "failureCondition"]
            .iter()
            .any(|k| f.get(k).is_some());
        if !has_condition && !is_judge && !provider_deferred {
            f.problems.push(Problem::new(
                path,
                "needs successCondition or failureCondition",
            ));
        }
        if problems.len() > before {
            return None;
        }
        Some(MetricSpec {
            name: name?,
            interval_ms,
            initial_delay_ms,
            count,
            success_condition,
            failure_condition,
            failure_limit,
            inconclusive_limit,
            consecutive_error_limit,
            provider: provider?,
        })
    }

    /// An optional duration: a Go duration string or a number of seconds.
    fn duration(&mut self, f: &mut Fields<'_>, key: &str) -> Option<u64> {
        if self.deferred(f, key) {
            return None;
        }
        match f.get(key)? {
            Value::Number(n) => match n.as_f64().and_then(seconds_to_ms) {
                Some(ms) => Some(ms),
                None => {
                    f.problem(
                        key,
                        "must be a non-negative number of seconds or a duration such as 30s",
                    );
                    None
                }
            },
            Value::String(s) => match parse_duration_ms(s) {
                Ok(ms) => Some(ms),
                Err(message) => {
                    f.problem(key, message);
                    None
                }
            },
            other => {
                let message = format!("must be a duration such as 30s, found {}", kind(other));
                f.problem(key, message);
                None
            }
        }
    }

    /// An optional count or limit (a non-negative integer that fits 32 bits).
    fn limit(&mut self, f: &mut Fields<'_>, key: &str) -> Option<u32> {
        if self.deferred(f, key) {
            return None;
        }
        let n = f.opt_u64(key)?;
        match u32::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                f.problem(key, format!("{n} is too large"));
                None
            }
        }
    }

    /// An optional condition, checked to parse.
    fn condition(&mut self, f: &mut Fields<'_>, key: &str) -> Option<String> {
        let source = f.opt_str(key)?;
        if source.trim().is_empty() {
            f.problem(key, "must not be empty");
            return None;
        }
        if scan_placeholders(&source)
            .iter()
            .any(|p| p.as_ref().is_ok_and(|p| p.arg.is_some()))
        {
            f.problem(
                key,
                "{{args.NAME}} placeholders are not filled in conditions; write the value",
            );
            return None;
        }
        if let Err(e) =
            ferry_engine::expr::check_result_condition(&source, &ferry_expr::Limits::default())
        {
            f.problem(key, format!("does not parse: {e}"));
            return None;
        }
        Some(source)
    }

    fn provider(&mut self, f: &mut Fields<'_>) -> Option<ProviderSpec> {
        if self.deferred(f, "provider") {
            return None;
        }
        let path = f.path_of("provider");
        let Some(value) = f.get("provider") else {
            f.problem("provider", "is required: one of prometheus, web or judge");
            return None;
        };
        let Some(obj) = value.as_object() else {
            f.problem(
                "provider",
                format!("must be an object, found {}", kind(value)),
            );
            return None;
        };
        let problems = &mut *f.problems;
        if obj.is_empty() {
            problems.push(Problem::new(
                &path,
                "needs one provider: prometheus, web or judge",
            ));
            return None;
        }
        if obj.len() > 1 {
            let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
            problems.push(Problem::new(
                &path,
                format!(
                    "has {} providers ({}); a metric uses exactly one",
                    keys.len(),
                    keys.join(", ")
                ),
            ));
        }
        let mut found = None;
        for (key, body) in obj {
            let body_path = format!("{path}.{key}");
            let parsed = match key.as_str() {
                "prometheus" => self.prometheus(body, &body_path, problems),
                "web" => self.web(body, &body_path, problems),
                "judge" | "kayenta" => self.judge(body, &body_path, problems),
                other => {
                    let message = if ARGO_ONLY_PROVIDERS.contains(&other) {
                        format!(
                            "the {other} provider is not supported by Ferry; use {}",
                            PROVIDERS.join(", ")
                        )
                    } else {
                        format!("unknown provider \"{other}\"; use {}", PROVIDERS.join(", "))
                    };
                    problems.push(Problem::new(&body_path, message));
                    None
                }
            };
            found = found.or(parsed);
        }
        if obj.len() > 1 { None } else { found }
    }

    fn prometheus(
        &mut self,
        body: &Value,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<ProviderSpec> {
        check_keys(
            body,
            path,
            &["query"],
            &[
                (
                    "address",
                    "address is not supported: Ferry queries the Prometheus the server is configured with; remove it",
                ),
                (
                    "authentication",
                    "authentication is set on the server's Prometheus, not here",
                ),
                (
                    "headers",
                    "headers are set on the server's Prometheus, not here",
                ),
            ],
            problems,
        );
        let mut f = self.fields(body, path, problems);
        let query = required_text(&mut f, "query")?;
        check_placeholders(&query, &f.path_of("query"), f.problems);
        Some(ProviderSpec::Prometheus { query })
    }

    fn web(
        &mut self,
        body: &Value,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<ProviderSpec> {
        let before = problems.len();
        check_keys(
            body,
            path,
            &[
                "url",
                "method",
                "headers",
                "body",
                "jsonPath",
                "timeoutSeconds",
            ],
            &[
                (
                    "jsonBody",
                    "jsonBody is not supported; write the body as a string in `body`",
                ),
                (
                    "insecure",
                    "insecure is not supported: TLS certificates are always checked",
                ),
            ],
            problems,
        );
        let mut f = self.fields(body, path, problems);
        let url = required_text(&mut f, "url");
        if let Some(url) = &url {
            check_placeholders(url, &f.path_of("url"), f.problems);
            let fixed = !url.contains("{{") && !ferry_core::looks_like_expression(url);
            if fixed {
                match url::Url::parse(url) {
                    Ok(u) if matches!(u.scheme(), "http" | "https") => {}
                    Ok(u) => f.problem(
                        "url",
                        format!("scheme {} is not supported; use http or https", u.scheme()),
                    ),
                    Err(e) => f.problem("url", format!("is not a URL: {e}")),
                }
            }
        }
        let method = if self.deferred(&f, "method") {
            None
        } else {
            match f.opt_str("method") {
                None => Some(WebMethod::Get),
                Some(m) if m.eq_ignore_ascii_case("GET") => Some(WebMethod::Get),
                Some(m) if m.eq_ignore_ascii_case("POST") => Some(WebMethod::Post),
                Some(m) => {
                    f.problem(
                        "method",
                        format!("\"{m}\" is not supported; use GET or POST"),
                    );
                    None
                }
            }
        };
        let headers = self.headers(&mut f);
        let body_text = f.opt_str("body");
        if let Some(text) = &body_text {
            check_placeholders(text, &f.path_of("body"), f.problems);
            if method == Some(WebMethod::Get) {
                f.problem("body", "a body needs method POST");
            }
        }
        let json_path = f.opt_str("jsonPath");
        if let Some(p) = &json_path
            && let Err(why) = parse_json_path(p)
        {
            f.problem("jsonPath", why);
        }
        let timeout_seconds = if self.deferred(&f, "timeoutSeconds") {
            None
        } else {
            let t = f
                .opt_u64("timeoutSeconds")
                .unwrap_or(DEFAULT_WEB_TIMEOUT_SECONDS);
            if t == 0 {
                f.problem("timeoutSeconds", "must be at least 1");
            }
            Some(t)
        };
        if problems.len() > before {
            return None;
        }
        Some(ProviderSpec::Web {
            url: url?,
            method: method?,
            headers: headers?,
            body: body_text,
            json_path,
            timeout_seconds: timeout_seconds?,
        })
    }

    fn headers(&mut self, f: &mut Fields<'_>) -> Option<Vec<(String, String)>> {
        if self.deferred(f, "headers") {
            return None;
        }
        let mut headers = Vec::new();
        let Some(items) = f.opt_array("headers") else {
            return Some(headers);
        };
        let base = f.path_of("headers");
        for (i, item) in items.iter().enumerate() {
            let path = format!("{base}[{i}]");
            check_keys(item, &path, &["key", "value"], &[], f.problems);
            let mut h = self.fields(item, &path, f.problems);
            let key = required_text(&mut h, "key");
            let value = h.opt_str("value").unwrap_or_default();
            if let Some(key) = key {
                check_placeholders(&key, &h.path_of("key"), h.problems);
                check_placeholders(&value, &h.path_of("value"), h.problems);
                headers.push((key, value));
            }
        }
        Some(headers)
    }

    fn judge(
        &mut self,
        body: &Value,
        path: &str,
        problems: &mut Vec<Problem>,
    ) -> Option<ProviderSpec> {
        let before = problems.len();
        check_keys(
            body,
            path,
            &[
                "canaryConfig",
                "canaryConfigName",
                "scoreThresholds",
                "threshold",
                "step",
                "lookback",
                // Kayenta's own settings: accepted so that Argo's kayenta provider loads, and
                // not needed, because Ferry's judge runs in the server.
                "address",
                "application",
                "metricsAccountName",
                "configurationAccountName",
                "storageAccountName",
            ],
            &[(
                "scopes",
                "scopes are not supported: the judge compares {{args.stable}} (baseline) with {{args.canary}} (canary)",
            )],
            problems,
        );
        let mut f = self.fields(body, path, problems);
        let config_key = if f.get("canaryConfig").is_some() || f.get("canaryConfigName").is_none() {
            "canaryConfig"
        } else {
            "canaryConfigName"
        };
        let canary_config = required_text(&mut f, config_key);
        if let Some(name) = &canary_config {
            check_placeholders(name, &f.path_of(config_key), f.problems);
        }
        let (mut pass, mut marginal) = (DEFAULT_JUDGE_PASS, DEFAULT_JUDGE_MARGINAL);
        let thresholds_key = if f.get("threshold").is_some() && f.get("scoreThresholds").is_none() {
            "threshold"
        } else {
            "scoreThresholds"
        };
        if !self.deferred(&f, thresholds_key)
            && let Some(mut t) = f.child(thresholds_key)
        {
            let lenient_pass = t.is_deferred("pass") || t.is_deferred("marginal");
            self.deferred |= lenient_pass;
            if let Some(p) = t.opt_f64("pass") {
                pass = p;
            }
            if let Some(m) = t.opt_f64("marginal") {
                marginal = m;
            }
            for (key, v) in [("pass", pass), ("marginal", marginal)] {
                if !(0.0..=100.0).contains(&v) {
                    t.problem(key, "must be between 0 and 100");
                }
            }
            if marginal > pass {
                t.problem("marginal", "must not be above pass");
            }
        }
        let step_seconds = match self.duration(&mut f, "step") {
            None => DEFAULT_JUDGE_STEP_SECONDS,
            Some(ms) if ms >= 1000 && ms % 1000 == 0 => ms / 1000,
            Some(_) => {
                f.problem("step", "must be a whole number of seconds, at least 1");
                DEFAULT_JUDGE_STEP_SECONDS
            }
        };
        let lookback_seconds = match self.duration(&mut f, "lookback") {
            Some(ms) if ms < 1000 => {
                f.problem("lookback", "must be at least 1s");
                None
            }
            other => other.map(|ms| ms / 1000),
        };
        if problems.len() > before {
            return None;
        }
        Some(ProviderSpec::Judge {
            canary_config: canary_config?,
            pass,
            marginal,
            step_seconds,
            lookback_seconds,
        })
    }
}

/// A required, non-empty string (numbers are turned into strings). Unlike
/// [`Fields::required_str`] it keeps a `${...}` expression as text in lenient mode: these
/// fields are text either way.
fn required_text(f: &mut Fields<'_>, key: &str) -> Option<String> {
    if f.get(key).is_none() {
        f.problem(key, "is required");
        return None;
    }
    let text = f.opt_str(key)?;
    if text.trim().is_empty() {
        f.problem(key, "must not be empty");
        return None;
    }
    Some(text)
}

/// Reports keys of an object outside `known`; `hints` explain keys that are known to be
/// unsupported.
fn check_keys(
    value: &Value,
    path: &str,
    known: &[&str],
    hints: &[(&str, &str)],
    problems: &mut Vec<Problem>,
) {
    let Some(obj) = value.as_object() else {
        return;
    };
    for key in obj.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let key_path = ferry_core::problem::join_path(path, key);
        let message = match hints.iter().find(|(k, _)| k == key) {
            Some((_, hint)) => (*hint).to_string(),
            None => format!("unknown field; expected one of: {}", known.join(", ")),
        };
        problems.push(Problem::new(key_path, message));
    }
}

/// Reports `{{...}}` placeholders other than `{{args.NAME}}`, and unclosed ones.
fn check_placeholders(text: &str, path: &str, problems: &mut Vec<Problem>) {
    for p in scan_placeholders(text) {
        match p {
            Err(at) => problems.push(Problem::new(
                path,
                format!("`{{{{` at offset {at} is never closed with `}}}}`"),
            )),
            Ok(p) if p.arg.is_none() => problems.push(Problem::new(
                path,
                format!(
                    "`{{{{{}}}}}` is not a placeholder Ferry fills; write {{{{args.NAME}}}}",
                    p.inner
                ),
            )),
            Ok(_) => {}
        }
    }
}
