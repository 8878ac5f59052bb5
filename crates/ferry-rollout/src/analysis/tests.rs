//! Tests of analysis runs: parsing, the state machine with scripted measurements, and the
//! providers against a real HTTP server, a real Prometheus and the real judge with a SQLite
//! store.

use super::measure::{Measure, MeasureCtx};
use super::*;
use ferry_canary::{CanaryServices, MetricQuery, MetricSource, SourceError, Sources};
use ferry_core::{Problem, Store};
use ferry_expr::Limits;
use ferry_http::UrlPolicy;
use ferry_testkit::prometheus::TestPrometheus;
use serde_json::json;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

const T0: i64 = 1_700_000_000_000;
const SEC: i64 = 1000;

fn spec(doc: Value) -> AnalysisSpec {
    let mut problems = Vec::new();
    parse_analysis(&doc, "analysis", &mut problems)
        .unwrap_or_else(|| panic!("{doc} should parse: {problems:#?}"))
}

fn problems_of(doc: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    assert!(parse_analysis(doc, "analysis", &mut problems).is_none());
    problems
}

// ---------------------------------------------------------------- parsing

#[test]
fn argo_style_documents_parse() {
    let doc = json!({
        "args": [{"name": "service-name"}, {"name": "threshold", "value": "0.95"}],
        "metrics": [{
            "name": "success-rate",
            "interval": "5m",
            "successCondition": "result[0] >= 0.95",
            "failureLimit": 3,
            "provider": {"prometheus": {"query":
                "sum(rate(lb_requests_total{group=\"{{args.service-name}}\",code!~\"5..\"}[5m])) / sum(rate(lb_requests_total{group=\"{{args.service-name}}\"}[5m]))"}}
        }, {
            "name": "webmetric",
            "interval": "1m30s",
            "initialDelay": 30,
            "count": "3",
            "successCondition": "result == true",
            "provider": {"web": {
                "url": "https://status.example.com/api/v1/health?service={{ args.service-name }}",
                "headers": [{"key": "Authorization", "value": "Bearer {{args.api-token}}"}],
                "timeoutSeconds": 20,
                "jsonPath": "{$.data.ok}"
            }}
        }, {
            "name": "canary-score",
            "interval": "10m",
            "count": 3,
            "provider": {"kayenta": {
                "address": "https://kayenta.example.com",
                "application": "guestbook",
                "canaryConfigName": "my-canary-config",
                "metricsAccountName": "prometheus-prod",
                "configurationAccountName": "kayenta",
                "storageAccountName": "kayenta",
                "threshold": {"pass": 90, "marginal": 75}
            }}
        }, {
            "name": "error-budget",
            "failureCondition": "result.errors > 10",
            "inconclusiveLimit": 1,
            "consecutiveErrorLimit": 2,
            "provider": {"web": {
                "url": "http://budget.example.com/v1/{{args.service-name}}",
                "method": "post",
                "body": "{\"window\": \"1h\"}",
                "jsonPath": "$.budget"
            }}
        }, {
            "name": "judge-defaults",
            "provider": {"judge": {"canaryConfig": "checkout", "lookback": "15m", "step": "30s"}}
        }]
    });
    let parsed = spec(doc);
    let metric =
        |name: &str, interval_ms, initial_delay_ms, count, s: Option<&str>, f: Option<&str>| {
            MetricSpec {
                name: name.into(),
                interval_ms,
                initial_delay_ms,
                count,
                success_condition: s.map(String::from),
                failure_condition: f.map(String::from),
                failure_limit: 0,
                inconclusive_limit: 0,
                consecutive_error_limit: 4,
                provider: ProviderSpec::Prometheus {
                    query: String::new(),
                },
            }
        };
    let expected = AnalysisSpec {
        args: vec![
            ArgSpec { name: "service-name".into(), value: None },
            ArgSpec { name: "threshold".into(), value: Some("0.95".into()) },
        ],
        metrics: vec![
            MetricSpec {
                failure_limit: 3,
                provider: ProviderSpec::Prometheus {
                    query: "sum(rate(lb_requests_total{group=\"{{args.service-name}}\",code!~\"5..\"}[5m])) / sum(rate(lb_requests_total{group=\"{{args.service-name}}\"}[5m]))".into(),
                },
                ..metric("success-rate", Some(300_000), 0, None, Some("result[0] >= 0.95"), None)
            },
            MetricSpec {
                provider: ProviderSpec::Web {
                    url: "https://status.example.com/api/v1/health?service={{ args.service-name }}".into(),
                    method: WebMethod::Get,
                    headers: vec![("Authorization".into(), "Bearer {{args.api-token}}".into())],
                    body: None,
                    json_path: Some("{$.data.ok}".into()),
                    timeout_seconds: 20,
                },
                ..metric("webmetric", Some(90_000), 30_000, Some(3), Some("result == true"), None)
            },
            MetricSpec {
                provider: ProviderSpec::Judge {
                    canary_config: "my-canary-config".into(),
                    pass: 90.0,
                    marginal: 75.0,
                    step_seconds: 60,
                    lookback_seconds: None,
                },
                ..metric("canary-score", Some(600_000), 0, Some(3), None, None)
            },
            MetricSpec {
                inconclusive_limit: 1,
                consecutive_error_limit: 2,
                provider: ProviderSpec::Web {
                    url: "http://budget.example.com/v1/{{args.service-name}}".into(),
                    method: WebMethod::Post,
                    headers: vec![],
                    body: Some("{\"window\": \"1h\"}".into()),
                    json_path: Some("$.budget".into()),
                    timeout_seconds: 10,
                },
                ..metric("error-budget", None, 0, None, None, Some("result.errors > 10"))
            },
            MetricSpec {
                provider: ProviderSpec::Judge {
                    canary_config: "checkout".into(),
                    pass: 75.0,
                    marginal: 50.0,
                    step_seconds: 30,
                    lookback_seconds: Some(900),
                },
                ..metric("judge-defaults", None, 0, None, None, None)
            },
        ],
    };
    assert_eq!(parsed, expected);
    // Counts: 1 without an interval, unbounded with one and no count.
    assert_eq!(parsed.metrics[0].effective_count(), None);
    assert_eq!(parsed.metrics[1].effective_count(), Some(3));
    assert_eq!(parsed.metrics[3].effective_count(), Some(1));
    // The judge's default conditions.
    assert_eq!(
        parsed.metrics[4].conditions(),
        (
            Some("result.score >= 75".to_string()),
            Some("result.score < 50".to_string())
        )
    );
}

#[test]
fn a_document_with_many_mistakes_reports_each_with_its_path() {
    let doc = json!({
        "args": [{"name": "canary"}, {"name": "canary"}, {"name": "x", "valueFrom": {"secretKeyRef": {}}}],
        "dryRun": [],
        "metrics": [
            {"name": "a", "interval": "5 minutes", "successCondition": "result[0] >=",
             "provider": {"prometheus": {"query": "up", "address": "http://prometheus:9090"}}},
            {"name": "a", "count": 0, "interval": "1m", "successCondition": "true",
             "provider": {"datadog": {"query": "x"}}},
            {"name": "c", "provider": {"web": {"url": "ftp://files.example.com/x", "method": "PUT", "jsonPath": "$.items[*]"}}},
            {"name": "d", "successCondition": "true", "provider": {}},
            {"name": "e", "successCondition": "true", "provider": {"prometheus": {"query": "x"}, "web": {"url": "http://x.example.com"}}},
            {"name": "f", "failureCondition": "result[0] > 1", "count": 3,
             "provider": {"prometheus": {"query": "up{a=\"{{ args.x }}\", b=\"{{secrets.y}}\"}"}}},
            {"name": "g", "provider": {"judge": {"scoreThresholds": {"pass": 40, "marginal": 60}, "lookback": "10x", "scopes": []}}},
            {"name": "h", "successCondition": "true", "initialDelay": -5, "sucessCondition": "x", "provider": {"prometheus": {}}},
            {"name": "i", "successCondition": "true", "provider": {"nope": {}}},
            {"name": "j", "successCondition": "result > {{args.threshold}}", "provider": {"web": {"url": "http://x.example.com/{{args.y", "body": "{}"}}}
        ]
    });
    let problems = problems_of(&doc);
    let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    paths.sort_unstable();
    let mut expected = vec![
        "analysis.args[1].name",
        "analysis.args[2].valueFrom",
        "analysis.dryRun",
        "analysis.metrics[0].interval",
        "analysis.metrics[0].successCondition",
        "analysis.metrics[0].provider.prometheus.address",
        "analysis.metrics[1].name",
        "analysis.metrics[1].count",
        "analysis.metrics[1].provider.datadog",
        "analysis.metrics[2]",
        "analysis.metrics[2].provider.web.url",
        "analysis.metrics[2].provider.web.method",
        "analysis.metrics[2].provider.web.jsonPath",
        "analysis.metrics[3].provider",
        "analysis.metrics[4].provider",
        "analysis.metrics[5].count",
        "analysis.metrics[5].provider.prometheus.query",
        "analysis.metrics[6].provider.judge.canaryConfig",
        "analysis.metrics[6].provider.judge.scoreThresholds.marginal",
        "analysis.metrics[6].provider.judge.lookback",
        "analysis.metrics[6].provider.judge.scopes",
        "analysis.metrics[7].initialDelay",
        "analysis.metrics[7].sucessCondition",
        "analysis.metrics[7].provider.prometheus.query",
        "analysis.metrics[8].provider.nope",
        "analysis.metrics[9].successCondition",
        "analysis.metrics[9].provider.web.url",
        "analysis.metrics[9].provider.web.body",
    ];
    expected.sort_unstable();
    assert_eq!(paths, expected, "{problems:#?}");
    let message = |path: &str| {
        problems
            .iter()
            .find(|p| p.path == path)
            .map(|p| p.message.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        message("analysis.metrics[2]"),
        "needs successCondition or failureCondition"
    );
    assert!(message("analysis.metrics[1].name").contains("given twice"));
    assert!(message("analysis.metrics[1].provider.datadog").contains("not supported"));
    assert!(message("analysis.metrics[4].provider").contains("2 providers"));
    assert!(message("analysis.metrics[3].provider").contains("needs one provider"));
    assert!(message("analysis.metrics[5].count").contains("needs an interval"));
    assert!(message("analysis.metrics[5].provider.prometheus.query").contains("{{secrets.y}}"));
    assert!(message("analysis.metrics[6].provider.judge.lookback").contains("unknown unit"));
    assert!(message("analysis.metrics[8].provider.nope").contains("unknown provider"));
    assert!(message("analysis.metrics[9].successCondition").contains("not filled in conditions"));
    assert!(message("analysis.metrics[9].provider.web.url").contains("never closed"));
    assert!(message("analysis.metrics[9].provider.web.body").contains("needs method POST"));
    assert!(message("analysis.metrics[2].provider.web.jsonPath").contains("[*]"));
}

#[test]
fn the_top_level_must_be_an_object_with_metrics() {
    let problems = problems_of(&json!([]));
    assert_eq!(problems[0].path, "analysis");
    let problems = problems_of(&json!({"metrics": []}));
    assert_eq!(
        problems,
        vec![Problem::new(
            "analysis.metrics",
            "needs at least one metric"
        )]
    );
    let problems = problems_of(&json!({}));
    assert_eq!(problems[0].path, "analysis.metrics");
}

#[test]
fn lenient_parsing_accepts_ferry_expressions_and_strict_parsing_does_not() {
    let doc = json!({"metrics": [{
        "name": "m",
        "interval": "${parameters.interval}",
        "count": "${parameters.count}",
        "successCondition": "${result[0] >= 0.9}",
        "provider": {"prometheus": {"query": "up{group=\"${parameters.group}\", g2=\"{{args.canary}}\"}"}}
    }]});
    let mut problems = Vec::new();
    assert!(parse_analysis_lenient(&doc, "a", &mut problems).is_none());
    assert_eq!(problems, vec![], "lenient mode defers expressions");
    let mut problems = Vec::new();
    assert!(parse_analysis(&doc, "a", &mut problems).is_none());
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(paths, ["a.metrics[0].interval", "a.metrics[0].count"]);

    // Nothing deferred: lenient parsing gives the spec, `${...}` in text is kept as text.
    let doc = json!({"metrics": [{
        "name": "m", "successCondition": "${result[0] >= 0.9}",
        "provider": {"prometheus": {"query": "up{group=\"${parameters.group}\"}"}}
    }]});
    let mut problems = Vec::new();
    let lenient = parse_analysis_lenient(&doc, "a", &mut problems);
    assert_eq!(problems, vec![]);
    assert_eq!(lenient, Some(spec(doc)));

    // A deferred provider: no complaint about missing conditions either.
    let doc = json!({"metrics": [{"name": "m", "provider": "${parameters.provider}"}]});
    let mut problems = Vec::new();
    assert!(parse_analysis_lenient(&doc, "a", &mut problems).is_none());
    assert_eq!(problems, vec![]);
}

#[test]
fn go_durations_parse() {
    for (text, ms) in [
        ("30s", 30_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("500ms", 500),
        ("1m30s", 90_000),
        ("1h2m3s4ms", 3_723_004),
        ("1.5h", 5_400_000),
        ("2500us", 3),
        ("90", 90_000),
        ("0", 0),
        (" 10s ", 10_000),
    ] {
        assert_eq!(parse_duration_ms(text), Ok(ms), "{text}");
    }
    for text in ["", "s", "-5s", "5 m", "10x", "1d", "m5", "1..5s", "-1"] {
        assert!(parse_duration_ms(text).is_err(), "{text} should not parse");
    }
}

#[test]
fn json_paths_pick_keys_and_indexes() {
    let body = json!({"data": {"ok": true, "items": [{"v": 1}, {"v": 2}], "a-b": {"c.d": 5}}});
    let pick = |p: &str| {
        let path = parse_json_path(p).unwrap();
        json_path_select(&body, &path).cloned()
    };
    assert_eq!(pick("{$.data.ok}"), Some(json!(true)));
    assert_eq!(pick("{.data.ok}"), Some(json!(true)));
    assert_eq!(pick("$.data.items[1].v"), Some(json!(2)));
    assert_eq!(pick("data.items[0]"), Some(json!({"v": 1})));
    assert_eq!(pick("$.data['a-b'][\"c.d\"]"), Some(json!(5)));
    assert_eq!(pick("$.data.a-b"), Some(json!({"c.d": 5})));
    assert_eq!(pick("$"), Some(body.clone()));
    assert_eq!(pick("{}"), Some(body.clone()));
    assert_eq!(pick("$.data.items[5]"), None);
    assert_eq!(pick("$.data.ok.more"), None);
    for bad in [
        "$.items[*]",
        "$..x",
        "$.a[1:2]",
        "{$.a",
        "$.a[0",
        "$.",
        "$.*",
        "$x[0]]",
    ] {
        assert!(parse_json_path(bad).is_err(), "{bad} should be refused");
    }
}

// ---------------------------------------------------------------- the state machine

/// Measurements scripted per metric; every call is recorded with its time.
struct Script {
    answers: Mutex<BTreeMap<String, VecDeque<Result<Value, String>>>>,
    calls: Mutex<Vec<(String, i64)>>,
}

impl Script {
    fn new(answers: &[(&str, Vec<Result<Value, String>>)]) -> Script {
        Script {
            answers: Mutex::new(
                answers
                    .iter()
                    .map(|(name, list)| (name.to_string(), list.iter().cloned().collect()))
                    .collect(),
            ),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// The times (seconds after T0) metric `name` was measured.
    fn times(&self, name: &str) -> Vec<i64> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, at)| (at - T0) / SEC)
            .collect()
    }
}

#[async_trait]
impl Measure for Script {
    async fn measure(
        &self,
        metric: &MetricSpec,
        ctx: &MeasureCtx<'_>,
    ) -> Result<Value, MeasureError> {
        self.calls
            .lock()
            .unwrap()
            .push((metric.name.clone(), ctx.now_ms));
        let next = self
            .answers
            .lock()
            .unwrap()
            .get_mut(&metric.name)
            .and_then(VecDeque::pop_front);
        match next {
            Some(Ok(v)) => Ok(v),
            Some(Err(e)) => Err(MeasureError::Prometheus(e)),
            None => Err(MeasureError::Prometheus("the script ran out".into())),
        }
    }
}

fn v(x: f64) -> Result<Value, String> {
    Ok(json!([x]))
}

fn err(message: &str) -> Result<Value, String> {
    Err(message.to_string())
}

/// Ticks as the caller would: at `start`, then whenever told, at most `max` times. Returns
/// the tick times in seconds after T0.
async fn drive(
    spec: &AnalysisSpec,
    run: &mut AnalysisRun,
    script: &Script,
    start: i64,
    max: usize,
) -> Vec<i64> {
    let mut now = start;
    let mut ticks = Vec::new();
    for _ in 0..max {
        ticks.push((now - T0) / SEC);
        match tick_with(spec, run, script, Limits::default(), now).await {
            Some(after) => now += i64::try_from(after.as_millis()).unwrap(),
            None => break,
        }
    }
    ticks
}

fn one_metric(extra: Value) -> AnalysisSpec {
    let mut metric = json!({
        "name": "m",
        "successCondition": "result[0] >= 0.95",
        "provider": {"prometheus": {"query": "x"}}
    });
    for (k, val) in extra.as_object().unwrap() {
        metric[k] = val.clone();
    }
    spec(json!({"metrics": [metric]}))
}

#[tokio::test(start_paused = true)]
async fn measurements_follow_initial_delay_interval_and_count() {
    let spec = one_metric(json!({"interval": "30s", "initialDelay": "10s", "count": 3}));
    let script = Script::new(&[("m", vec![v(0.99), v(0.97), v(0.96)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(run.phase, AnalysisPhase::Pending);
    let ticks = drive(&spec, &mut run, &script, T0, 20).await;
    assert_eq!(ticks, [0, 10, 40, 70]);
    assert_eq!(script.times("m"), [10, 40, 70]);
    assert_eq!(run.phase, AnalysisPhase::Successful);
    let m = &run.metrics[0];
    assert_eq!(
        (m.phase, m.count, m.successful, m.failed),
        (AnalysisPhase::Successful, 3, 3, 0)
    );
    assert_eq!(m.measurements[1].value, Some(json!([0.97])));
    assert_eq!(m.measurements[1].started_at, T0 + 40 * SEC);
    assert_eq!(run.message.as_deref(), Some("every metric was successful"));
    // A complete run is left alone.
    let before = run.clone();
    assert_eq!(
        tick_with(&spec, &mut run, &script, Limits::default(), T0 + 999 * SEC).await,
        None
    );
    assert_eq!(run, before);
    assert_eq!(script.times("m").len(), 3);
}

#[tokio::test(start_paused = true)]
async fn without_an_interval_one_measurement_decides() {
    let spec = one_metric(json!({}));
    let script = Script::new(&[("m", vec![v(0.5)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(drive(&spec, &mut run, &script, T0, 5).await, [0]);
    assert_eq!(run.phase, AnalysisPhase::Failed);
    let m = &run.metrics[0];
    assert_eq!(m.measurements[0].phase, AnalysisPhase::Failed);
    assert_eq!(
        m.measurements[0].message.as_deref(),
        Some("successCondition `result[0] >= 0.95` is false")
    );
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .contains("metric \"m\" Failed"),
        "{:?}",
        run.message
    );
}

#[tokio::test(start_paused = true)]
async fn failure_limit_tolerates_that_many_failures() {
    let spec = one_metric(json!({"interval": "10s", "count": 5, "failureLimit": 1}));
    let script = Script::new(&[("m", vec![v(0.5), v(0.99), v(0.4), v(0.99), v(0.99)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 20).await;
    assert_eq!(script.times("m"), [0, 10, 20]);
    assert_eq!(run.phase, AnalysisPhase::Failed);
    let m = &run.metrics[0];
    assert_eq!((m.count, m.failed, m.successful), (3, 2, 1));
    assert!(
        m.message
            .as_deref()
            .unwrap()
            .contains("more than failureLimit 1")
    );

    // Within the limit the metric completes Successful.
    let script = Script::new(&[("m", vec![v(0.5), v(0.99), v(0.99), v(0.99), v(0.99)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 20).await;
    assert_eq!(run.phase, AnalysisPhase::Successful);
    assert_eq!((run.metrics[0].count, run.metrics[0].failed), (5, 1));
}

#[tokio::test(start_paused = true)]
async fn inconclusive_limit_tolerates_that_many_inconclusive_measurements() {
    let spec = one_metric(json!({
        "interval": "10s", "count": 4, "inconclusiveLimit": 1,
        "failureCondition": "result[0] < 0.5"
    }));
    let script = Script::new(&[("m", vec![v(0.7), v(0.99), v(0.8), v(0.99)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 20).await;
    assert_eq!(script.times("m"), [0, 10, 20]);
    assert_eq!(run.phase, AnalysisPhase::Inconclusive);
    let m = &run.metrics[0];
    assert_eq!(
        (m.inconclusive, m.successful, m.phase),
        (2, 1, AnalysisPhase::Inconclusive)
    );
    assert!(
        m.measurements[0]
            .message
            .as_deref()
            .unwrap()
            .contains("both false")
    );
}

#[tokio::test(start_paused = true)]
async fn consecutive_errors_are_retried_sooner_and_limited() {
    let spec = one_metric(json!({"interval": "60s", "count": 3, "consecutiveErrorLimit": 2}));
    let script = Script::new(&[(
        "m",
        vec![
            err("down"),
            err("down"),
            v(0.99),
            err("down"),
            err("down"),
            err("still down"),
        ],
    )]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 20).await;
    // An error is retried after 10 s; after a good one the 60 s cadence resumes.
    assert_eq!(script.times("m"), [0, 10, 20, 60, 70, 80]);
    assert_eq!(run.phase, AnalysisPhase::Error);
    let m = &run.metrics[0];
    assert_eq!((m.count, m.error, m.consecutive_error), (1, 5, 3));
    let message = m.message.as_deref().unwrap();
    assert!(
        message.contains("3 errors in a row, more than consecutiveErrorLimit 2"),
        "{message}"
    );
    assert!(message.contains("Prometheus: still down"), "{message}");
    assert_eq!(m.measurements.last().unwrap().value, None);
}

#[tokio::test(start_paused = true)]
async fn errors_do_not_use_up_the_count() {
    let spec = one_metric(json!({"interval": "60s", "count": 2}));
    let script = Script::new(&[("m", vec![v(0.99), err("blip"), v(0.99)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 20).await;
    assert_eq!(script.times("m"), [0, 60, 70]);
    assert_eq!(run.phase, AnalysisPhase::Successful);
    assert_eq!((run.metrics[0].count, run.metrics[0].error), (2, 1));
    // Without an interval an error is retried 10 s later, too.
    let spec = one_metric(json!({}));
    let script = Script::new(&[("m", vec![err("blip"), v(0.99)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(drive(&spec, &mut run, &script, T0, 20).await, [0, 10]);
    assert_eq!(run.phase, AnalysisPhase::Successful);
}

#[tokio::test(start_paused = true)]
async fn missed_slots_are_skipped_not_caught_up() {
    let spec = one_metric(json!({"interval": "10s", "count": 10}));
    let script = Script::new(&[("m", vec![v(0.99); 10])]);
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(
        tick_with(&spec, &mut run, &script, Limits::default(), T0).await,
        Some(Duration::from_secs(10))
    );
    // Nobody called for 55 s (the server was down): one measurement, then the next slot.
    assert_eq!(
        tick_with(&spec, &mut run, &script, Limits::default(), T0 + 55 * SEC).await,
        Some(Duration::from_secs(5))
    );
    // Called early: nothing is due yet.
    assert_eq!(
        tick_with(&spec, &mut run, &script, Limits::default(), T0 + 58 * SEC).await,
        Some(Duration::from_secs(2))
    );
    assert_eq!(script.times("m"), [0, 55]);
}

#[tokio::test(start_paused = true)]
async fn unbounded_metrics_run_until_terminated() {
    let spec = one_metric(json!({"interval": "10s", "failureLimit": 2}));
    let mut answers = vec![v(0.99); 30];
    answers[3] = v(0.1);
    let script = Script::new(&[("m", answers)]);
    let mut run = AnalysisRun::new(&spec, T0);
    let ticks = drive(&spec, &mut run, &script, T0, 25).await;
    assert_eq!(ticks.len(), 25);
    assert_eq!(run.phase, AnalysisPhase::Running);
    let m = &run.metrics[0];
    assert_eq!((m.count, m.failed), (25, 1));
    // Only the last 10 measurements are kept.
    assert_eq!(m.measurements.len(), MAX_MEASUREMENTS);
    assert_eq!(m.measurements[0].started_at, T0 + 150 * SEC);
    terminate(&mut run);
    assert_eq!(run.phase, AnalysisPhase::Successful);
    assert_eq!(run.metrics[0].phase, AnalysisPhase::Successful);
    assert!(
        run.metrics[0]
            .message
            .as_deref()
            .unwrap()
            .contains("terminated after 25")
    );
    assert_eq!(
        tick_with(&spec, &mut run, &script, Limits::default(), T0 + 999 * SEC).await,
        None
    );
    assert_eq!(script.times("m").len(), 25);

    // Terminating a finished run changes nothing.
    let spec = one_metric(json!({}));
    let script = Script::new(&[("m", vec![v(0.1)])]);
    let mut run = AnalysisRun::new(&spec, T0);
    drive(&spec, &mut run, &script, T0, 5).await;
    let before = run.clone();
    terminate(&mut run);
    assert_eq!(run, before);
    assert_eq!(run.phase, AnalysisPhase::Failed);
}

#[tokio::test(start_paused = true)]
async fn the_run_takes_the_worst_metric_phase_and_the_earliest_next_time() {
    let doc = |b_answer: &str| {
        json!({"metrics": [
            {"name": "a", "interval": "10s", "count": 3, "successCondition": "result[0] >= 0.95",
             "provider": {"prometheus": {"query": "a"}}},
            {"name": "b", "interval": "25s", "count": 2, "initialDelay": "5s",
             "successCondition": b_answer, "provider": {"prometheus": {"query": "b"}}}
        ]})
    };
    let spec_ok = spec(doc("result[0] >= 0.95"));
    let script = Script::new(&[("a", vec![v(0.99); 3]), ("b", vec![v(0.99); 2])]);
    let mut run = AnalysisRun::new(&spec_ok, T0);
    let ticks = drive(&spec_ok, &mut run, &script, T0, 20).await;
    assert_eq!(ticks, [0, 5, 10, 20, 30]);
    assert_eq!(script.times("a"), [0, 10, 20]);
    assert_eq!(script.times("b"), [5, 30]);
    assert_eq!(run.phase, AnalysisPhase::Successful);

    // b fails at its first measurement: the run is Failed at once, a is not measured again.
    let spec_bad = spec(doc("result[0] >= 2"));
    let script = Script::new(&[("a", vec![v(0.99); 3]), ("b", vec![v(0.99); 2])]);
    let mut run = AnalysisRun::new(&spec_bad, T0);
    let ticks = drive(&spec_bad, &mut run, &script, T0, 20).await;
    assert_eq!(ticks, [0, 5]);
    assert_eq!(run.phase, AnalysisPhase::Failed);
    assert_eq!(run.metric("a").unwrap().phase, AnalysisPhase::Running);
    assert!(
        run.message
            .as_deref()
            .unwrap()
            .starts_with("metric \"b\" Failed")
    );

    // Error outranks Inconclusive, Failed outranks Error.
    let phases = |list: &[AnalysisPhase]| {
        let metrics: Vec<MetricRun> = list
            .iter()
            .map(|p| MetricRun {
                phase: *p,
                ..MetricRun::new("x")
            })
            .collect();
        run_phase(metrics.iter())
    };
    use AnalysisPhase::*;
    assert_eq!(phases(&[Inconclusive, Error, Successful]), Error);
    assert_eq!(phases(&[Inconclusive, Error, Failed]), Failed);
    assert_eq!(phases(&[Inconclusive, Running]), Inconclusive);
    assert_eq!(phases(&[Successful, Running]), Running);
    assert_eq!(phases(&[Successful, Pending]), Running);
    assert_eq!(phases(&[Successful, Successful]), Successful);
}

#[test]
fn the_outcome_table() {
    let limits = Limits::default();
    let outcome = |success: Option<&str>, failure: Option<&str>, result: Value| {
        let mut metric = one_metric(json!({})).metrics.remove(0);
        metric.success_condition = success.map(String::from);
        metric.failure_condition = failure.map(String::from);
        judge_result(&metric, &result, limits).0
    };
    use AnalysisPhase::*;
    let (s, f) = (Some("result[0] >= 0.95"), Some("result[0] < 0.5"));
    assert_eq!(outcome(s, None, json!([0.99])), Successful);
    assert_eq!(outcome(s, None, json!([0.9])), Failed);
    assert_eq!(outcome(None, f, json!([0.9])), Successful);
    assert_eq!(outcome(None, f, json!([0.1])), Failed);
    assert_eq!(outcome(s, f, json!([0.99])), Successful);
    assert_eq!(outcome(s, f, json!([0.7])), Inconclusive);
    assert_eq!(outcome(s, f, json!([0.1])), Failed);
    // Failure wins when both are true.
    assert_eq!(outcome(Some("true"), Some("true"), json!([])), Failed);
    // No data: `result[0]` on [] cannot be evaluated, so the measurement is an Error...
    assert_eq!(outcome(s, None, json!([])), Error);
    assert_eq!(outcome(None, f, json!([])), Error);
    // ...unless the condition accepts no data, as the module documentation suggests.
    assert_eq!(
        outcome(
            Some("result.size() == 0 || result[0] >= 0.95"),
            None,
            json!([])
        ),
        Successful
    );
    // Not a boolean, or neither condition: Error.
    assert_eq!(outcome(Some("result[0]"), None, json!([1])), Error);
    assert_eq!(outcome(None, None, json!([1])), Error);
    // The judge's defaults: pass 75, marginal 50.
    let mut judge =
        spec(json!({"metrics": [{"name": "j", "provider": {"judge": {"canaryConfig": "c"}}}]}))
            .metrics
            .remove(0);
    for (score, phase) in [
        (80.0, Successful),
        (75.0, Successful),
        (60.0, Inconclusive),
        (40.0, Failed),
    ] {
        assert_eq!(
            judge_result(&judge, &json!({"score": score}), limits).0,
            phase,
            "{score}"
        );
    }
    judge.success_condition = Some("result.score >= 90".into());
    assert_eq!(
        judge_result(&judge, &json!({"score": 80}), limits).0,
        Failed
    );
}

#[tokio::test(start_paused = true)]
async fn a_run_stored_as_json_mid_way_continues_to_the_same_end() {
    let spec = spec(json!({"metrics": [
        {"name": "rate", "interval": "10s", "count": 4, "failureLimit": 1,
         "successCondition": "result[0] >= 0.95", "provider": {"prometheus": {"query": "r"}}},
        {"name": "latency", "interval": "15s", "count": 3, "initialDelay": "3s",
         "failureCondition": "result[0] > 0.5", "provider": {"prometheus": {"query": "l"}}}
    ]}));
    let answers = || {
        Script::new(&[
            ("rate", vec![v(0.99), err("blip"), v(0.2), v(0.99), v(0.98)]),
            ("latency", vec![v(0.1), v(0.2), err("blip"), v(0.3)]),
        ])
    };
    let straight_script = answers();
    let mut straight = AnalysisRun::new(&spec, T0);
    let straight_ticks = drive(&spec, &mut straight, &straight_script, T0, 50).await;
    assert_eq!(straight.phase, AnalysisPhase::Successful);

    let script = answers();
    let mut run = AnalysisRun::new(&spec, T0);
    let mut now = T0;
    let mut ticks = Vec::new();
    for _ in 0..4 {
        ticks.push((now - T0) / SEC);
        let after = tick_with(&spec, &mut run, &script, Limits::default(), now)
            .await
            .unwrap();
        now += i64::try_from(after.as_millis()).unwrap();
    }
    let stored = serde_json::to_string(&run).unwrap();
    let shape: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(shape["phase"], "Running");
    assert_eq!(shape["startedAt"], T0);
    assert_eq!(shape["metrics"][0]["name"], "rate");
    assert_eq!(shape["metrics"][0]["consecutiveError"], 1);
    assert_eq!(shape["metrics"][0]["measurements"][1]["phase"], "Error");
    assert_eq!(
        shape["metrics"][0]["measurements"][1]["startedAt"],
        T0 + 10 * SEC
    );
    assert!(shape["metrics"][0]["measurements"][1]["message"].is_string());
    let mut resumed: AnalysisRun = serde_json::from_str(&stored).unwrap();
    assert_eq!(resumed, run);
    ticks.extend(drive(&spec, &mut resumed, &script, now, 50).await);
    assert_eq!(ticks, straight_ticks);
    assert_eq!(resumed, straight);
    assert_eq!(
        *script.calls.lock().unwrap(),
        *straight_script.calls.lock().unwrap()
    );
}

#[tokio::test(start_paused = true)]
async fn a_metric_added_to_the_spec_joins_a_stored_run() {
    let spec_one = one_metric(json!({"interval": "10s", "count": 2}));
    let mut spec_two = spec_one.clone();
    let mut extra = spec_one.metrics[0].clone();
    extra.name = "n".into();
    spec_two.metrics.push(extra);
    let script = Script::new(&[("m", vec![v(0.99); 2]), ("n", vec![v(0.99); 2])]);
    let mut run = AnalysisRun::new(&spec_one, T0);
    drive(&spec_two, &mut run, &script, T0, 10).await;
    assert_eq!(run.phase, AnalysisPhase::Successful);
    assert_eq!(run.metrics.len(), 2);
    assert_eq!(script.times("n"), [0, 10]);
}

// ---------------------------------------------------------------- arguments

/// Records the PromQL it is asked and answers `[1]`: for checking substitution only (the
/// real Prometheus is tested below).
struct Recorder(Mutex<Vec<String>>);

#[async_trait]
impl InstantQuery for Recorder {
    async fn query(&self, promql: &str) -> Result<Vec<f64>, String> {
        self.0.lock().unwrap().push(promql.to_string());
        Ok(vec![1.0])
    }
}

fn loopback_client() -> GuardedClient {
    GuardedClient::new(UrlPolicy {
        allowed_networks: vec!["127.0.0.0/8".parse().unwrap()],
        ..UrlPolicy::public_internet()
    })
    .unwrap()
}

#[tokio::test]
async fn arguments_come_from_the_caller_then_the_defaults() {
    let spec = spec(json!({
        "args": [{"name": "canary", "value": "ignored-default"}, {"name": "window", "value": "5m"}, {"name": "unset"}],
        "metrics": [
            {"name": "ok", "successCondition": "result[0] == 1",
             "provider": {"prometheus": {"query": "rate(x{group=\"{{args.canary}}\"}[{{ args.window }}]) {{args.canary}}"}}},
            {"name": "missing", "successCondition": "true", "consecutiveErrorLimit": 0,
             "provider": {"prometheus": {"query": "x{a=\"{{args.unset}}\"}"}}},
            {"name": "undeclared", "successCondition": "true", "consecutiveErrorLimit": 0,
             "provider": {"prometheus": {"query": "x{a=\"{{args.nobody}}\"}"}}},
            {"name": "unsafe", "successCondition": "true", "consecutiveErrorLimit": 0,
             "provider": {"prometheus": {"query": "x{a=\"{{args.evil}}\"}"}}}
        ]
    }));
    let recorder = Recorder(Mutex::new(Vec::new()));
    let http = loopback_client();
    let args: BTreeMap<String, String> = [
        ("canary", "shop-v002"),
        ("evil", "x\"} or vector(1) or {a=\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let env = AnalysisEnv {
        prometheus: Some(&recorder),
        http: &http,
        canary: None,
        args: &args,
        limits: Limits::default(),
    };
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(tick(&spec, &mut run, &env, T0).await, None);
    assert_eq!(
        *recorder.0.lock().unwrap(),
        ["rate(x{group=\"shop-v002\"}[5m]) shop-v002"]
    );
    let message = |name: &str| {
        let m = run.metric(name).unwrap();
        assert_eq!(m.measurements[0].phase, AnalysisPhase::Error, "{name}");
        m.measurements[0].message.clone().unwrap()
    };
    assert!(message("missing").contains("argument \"unset\" has no value"));
    assert!(message("undeclared").contains("argument \"nobody\" has no value"));
    assert!(message("unsafe").contains("argument \"evil\" cannot go into a Prometheus query"));
    assert_eq!(run.metric("ok").unwrap().phase, AnalysisPhase::Successful);
    assert_eq!(run.phase, AnalysisPhase::Error);

    // Providers this server lacks are Errors, not panics.
    let env = AnalysisEnv {
        prometheus: None,
        ..env
    };
    let mut run = AnalysisRun::new(&spec, T0);
    tick(&spec, &mut run, &env, T0).await;
    assert!(message_of(&run, "ok").contains("no Prometheus is configured"));
}

fn message_of(run: &AnalysisRun, metric: &str) -> String {
    run.metric(metric)
        .and_then(|m| m.measurements.last())
        .and_then(|m| m.message.clone())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- web provider

/// A small HTTP server on 127.0.0.1: `/health` (JSON), `/down` (503), `/text` (not JSON),
/// `POST /echo` (the body, the authorization and content-type headers as JSON).
async fn web_server() -> String {
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::{get, post};
    let app = axum::Router::new()
        .route(
            "/health",
            get(|| async { Json(json!({"data": {"ok": true, "rate": 0.99, "items": [3, 4]}})) }),
        )
        .route(
            "/down",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "maintenance until 5pm") }),
        )
        .route("/text", get(|| async { "plain words" }))
        .route(
            "/echo",
            post(|headers: HeaderMap, body: String| async move {
                let header = |name: &str| {
                    headers
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                Json(json!({
                    "body": serde_json::from_str::<Value>(&body).unwrap_or(Value::Null),
                    "auth": header("authorization"),
                    "contentType": header("content-type"),
                }))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn web_metrics_against_a_real_server() {
    let base = web_server().await;
    let web = |name: &str, path: &str, extra: Value, condition: &str| {
        let mut provider = json!({"url": format!("{base}{path}")});
        for (k, val) in extra.as_object().unwrap() {
            provider[k] = val.clone();
        }
        json!({"name": name, "successCondition": condition, "consecutiveErrorLimit": 0,
               "provider": {"web": provider}})
    };
    let spec = spec(json!({"metrics": [
        web("ok", "/health", json!({"jsonPath": "{$.data.ok}"}), "result == true"),
        web("rate", "/health", json!({"jsonPath": "$.data.items[1]"}), "result == 4"),
        web("whole", "/health", json!({}), "result.data.rate >= 0.95"),
        web("low", "/health", json!({"jsonPath": "$.data.rate"}), "result >= 0.999"),
        web("down", "/down", json!({}), "true"),
        web("text", "/text", json!({}), "true"),
        web("nothing", "/health", json!({"jsonPath": "$.data.missing"}), "true"),
        web("post", "/echo?group={{args.canary}}", json!({
            "method": "POST",
            "headers": [{"key": "Authorization", "value": "Bearer {{args.token}}"}],
            "body": "{\"group\": \"{{args.canary}}\"}",
            "jsonPath": "$"
        }), "result.body.group == 'shop-v002' && result.auth == 'Bearer t0k3n' && result.contentType == 'application/json'")
    ]}));
    let http = loopback_client();
    let args: BTreeMap<String, String> = [("canary", "shop-v002"), ("token", "t0k3n")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let env = AnalysisEnv {
        prometheus: None,
        http: &http,
        canary: None,
        args: &args,
        limits: Limits::default(),
    };
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(tick(&spec, &mut run, &env, T0).await, None);
    let phase = |name: &str| run.metric(name).unwrap().phase;
    assert_eq!(phase("ok"), AnalysisPhase::Successful);
    assert_eq!(
        run.metric("ok").unwrap().measurements[0].value,
        Some(json!(true))
    );
    assert_eq!(phase("rate"), AnalysisPhase::Successful);
    assert_eq!(phase("whole"), AnalysisPhase::Successful);
    assert_eq!(phase("low"), AnalysisPhase::Failed);
    assert_eq!(
        run.metric("low").unwrap().measurements[0].value,
        Some(json!(0.99))
    );
    assert_eq!(
        phase("post"),
        AnalysisPhase::Successful,
        "{:?}",
        run.metric("post")
    );
    for name in ["down", "text", "nothing"] {
        assert_eq!(phase(name), AnalysisPhase::Error, "{name}");
    }
    let down = message_of(&run, "down");
    assert!(
        down.contains("answered HTTP 503: maintenance until 5pm"),
        "{down}"
    );
    assert!(message_of(&run, "text").contains("did not answer JSON"));
    assert!(message_of(&run, "nothing").contains("matched nothing"));
    assert_eq!(run.phase, AnalysisPhase::Failed);

    // The URL guard applies: the default policy refuses loopback addresses.
    let public = GuardedClient::new(UrlPolicy::public_internet()).unwrap();
    let env = AnalysisEnv {
        http: &public,
        ..env
    };
    let mut run = AnalysisRun::new(&spec, T0);
    tick(&spec, &mut run, &env, T0).await;
    assert_eq!(run.metric("ok").unwrap().phase, AnalysisPhase::Error);
    assert!(
        message_of(&run, "ok").contains(&base[7..]),
        "{}",
        message_of(&run, "ok")
    );
}

// ---------------------------------------------------------------- prometheus provider

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn prometheus_metrics_against_a_real_prometheus() {
    let now = unix_now();
    let recent = [(now - 90, 0.97), (now - 60, 0.98), (now - 30, 0.99)];
    let poor = [(now - 90, 0.91), (now - 60, 0.85), (now - 30, 0.80)];
    let prometheus = tokio::task::spawn_blocking(move || {
        TestPrometheus::with_series(&[
            ("analysis_success_rate", &[("group", "shop-v002")], &recent),
            ("analysis_success_rate", &[("group", "shop-v003")], &poor),
        ])
    })
    .await
    .unwrap();
    let source = ferry_canary::prometheus::PrometheusSource::new(&prometheus.url()).unwrap();
    let metric = |name: &str, query: &str| {
        json!({"name": name, "successCondition": "result[0] >= 0.95", "consecutiveErrorLimit": 0,
               "provider": {"prometheus": {"query": query}}})
    };
    let spec = spec(json!({"metrics": [
        metric("good", "analysis_success_rate{group=\"{{args.canary}}\"}"),
        metric("poor", "analysis_success_rate{group=\"shop-v003\"}"),
        metric("both", "sort_desc(analysis_success_rate)"),
        metric("no-data", "analysis_success_rate{group=\"nobody\"}"),
        metric("bad-query", "sum(analysis_success_rate"),
        metric("unsafe", "analysis_success_rate{group=\"{{args.evil}}\"}"),
    ]}));
    let http = loopback_client();
    let args: BTreeMap<String, String> = [
        ("canary", "shop-v002"),
        ("evil", "x\"} or vector(1) or {a=\""),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let env = AnalysisEnv {
        prometheus: Some(&source),
        http: &http,
        canary: None,
        args: &args,
        limits: Limits::default(),
    };
    let mut run = AnalysisRun::new(&spec, T0);
    assert_eq!(tick(&spec, &mut run, &env, T0).await, None);
    let m = |name: &str| run.metric(name).unwrap().clone();
    assert_eq!(
        m("good").phase,
        AnalysisPhase::Successful,
        "{:?}",
        m("good")
    );
    assert_eq!(m("good").measurements[0].value, Some(json!([0.99])));
    assert_eq!(m("poor").phase, AnalysisPhase::Failed, "{:?}", m("poor"));
    assert_eq!(m("poor").measurements[0].value, Some(json!([0.8])));
    assert_eq!(m("both").measurements[0].value, Some(json!([0.99, 0.8])));
    assert_eq!(m("both").phase, AnalysisPhase::Successful);
    assert_eq!(m("no-data").phase, AnalysisPhase::Error);
    // The value is kept; the condition could not be evaluated on it.
    assert_eq!(m("no-data").measurements[0].value, Some(json!([])));
    let no_data = message_of(&run, "no-data");
    assert!(
        no_data.contains("successCondition `result[0] >= 0.95` could not be evaluated"),
        "{no_data}"
    );
    assert_eq!(m("bad-query").phase, AnalysisPhase::Error);
    let bad = message_of(&run, "bad-query");
    assert!(
        bad.starts_with("Prometheus: query failed: bad_data"),
        "{bad}"
    );
    assert_eq!(m("unsafe").phase, AnalysisPhase::Error);
    assert_eq!(run.phase, AnalysisPhase::Failed);
}

// ---------------------------------------------------------------- judge provider

/// Answers with the series the canary config lists per scope, and records every window.
struct ScopeSeries(Mutex<Vec<(String, u64, u64, u64)>>);

#[async_trait]
impl MetricSource for ScopeSeries {
    fn query_type(&self) -> &'static str {
        "scripted"
    }
    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        if query.get("series").is_none() {
            problems.push(Problem::new(format!("{path}.series"), "is required"));
        }
    }
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        self.0
            .lock()
            .unwrap()
            .push((q.scope.to_string(), q.start, q.end, q.step));
        match q.query["series"].get(q.scope).and_then(Value::as_array) {
            Some(values) => Ok(values.iter().filter_map(Value::as_f64).collect()),
            None => Err(SourceError::Unreachable(format!(
                "no series for {}",
                q.scope
            ))),
        }
    }
}

fn canary_config() -> Value {
    let baseline: Vec<f64> = (0..30).map(|i| 0.01 + f64::from(i % 5) * 0.001).collect();
    let good: Vec<f64> = (0..30)
        .map(|i| 0.01 + f64::from((i + 2) % 5) * 0.001)
        .collect();
    let bad: Vec<f64> = (0..30).map(|i| 0.10 + f64::from(i % 7) * 0.002).collect();
    json!({
        "name": "checkout",
        "metrics": [{
            "name": "error-rate",
            "query": {"type": "scripted", "series": {"shop-v001": baseline, "shop-v002": good, "shop-v003": bad}},
            "groups": ["errors"],
            "analysisConfigurations": {"canary": {"direction": "increase", "critical": true}}
        }]
    })
}

#[tokio::test]
async fn judge_metrics_with_a_real_store_and_judge() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = ferry_store::open(&ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    })
    .await
    .unwrap();
    store
        .save_document(ferry_canary::KIND, "checkout", &canary_config(), "test")
        .await
        .unwrap();
    let source = Arc::new(ScopeSeries(Mutex::new(Vec::new())));
    let services = CanaryServices {
        store,
        sources: Sources::new().with(source.clone()),
    };
    let spec = spec(json!({"metrics": [
        {"name": "canary-score", "provider": {"judge": {"canaryConfig": "{{args.config}}", "step": 10, "lookback": "5m"}}},
        {"name": "whole-run", "consecutiveErrorLimit": 0,
         "provider": {"kayenta": {"canaryConfigName": "checkout", "threshold": {"pass": 90, "marginal": 60}}}},
        {"name": "missing-config", "consecutiveErrorLimit": 0,
         "provider": {"judge": {"canaryConfig": "nope"}}}
    ]}));
    let http = loopback_client();
    let args = |canary: &str| -> BTreeMap<String, String> {
        [
            ("stable", "shop-v001"),
            ("canary", canary),
            ("config", "checkout"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    };
    let started = T0 - 600 * SEC;

    let good_args = args("shop-v002");
    let env = AnalysisEnv {
        prometheus: None,
        http: &http,
        canary: Some(&services),
        args: &good_args,
        limits: Limits::default(),
    };
    let mut run = AnalysisRun::new(&spec, started);
    assert_eq!(tick(&spec, &mut run, &env, T0).await, None);
    let score = run.metric("canary-score").unwrap();
    assert_eq!(score.phase, AnalysisPhase::Successful, "{score:?}");
    let value = score.measurements[0].value.clone().unwrap();
    assert_eq!(value["classification"], "Pass");
    assert_eq!(value["configVersion"], 1);
    assert!(value["score"].as_f64().unwrap() >= 75.0);
    assert_eq!(
        run.metric("whole-run").unwrap().phase,
        AnalysisPhase::Successful
    );
    let missing = message_of(&run, "missing-config");
    assert!(
        missing.contains("canary config \"nope\" not found"),
        "{missing}"
    );
    assert_eq!(run.phase, AnalysisPhase::Error);
    // Windows: the lookback limits the first metric, the second covers the whole run.
    let (t0_s, started_s) = (
        u64::try_from(T0 / SEC).unwrap(),
        u64::try_from(started / SEC).unwrap(),
    );
    let windows = source.0.lock().unwrap().clone();
    assert!(
        windows.contains(&("shop-v001".into(), t0_s - 300, t0_s, 10)),
        "{windows:?}"
    );
    assert!(
        windows.contains(&("shop-v002".into(), t0_s - 300, t0_s, 10)),
        "{windows:?}"
    );
    assert!(
        windows.contains(&("shop-v002".into(), started_s, t0_s, 60)),
        "{windows:?}"
    );

    let bad_args = args("shop-v003");
    let env = AnalysisEnv {
        args: &bad_args,
        ..env
    };
    let mut run = AnalysisRun::new(&spec, started);
    assert_eq!(tick(&spec, &mut run, &env, T0).await, None);
    let score = run.metric("canary-score").unwrap();
    assert_eq!(score.phase, AnalysisPhase::Failed, "{score:?}");
    assert_eq!(
        score.measurements[0].value.as_ref().unwrap()["classification"],
        "Fail"
    );
    assert_eq!(run.phase, AnalysisPhase::Failed);

    // A canary the sources know nothing about: every fetch fails, so the measurement is an
    // Error, not a judgment of no data.
    let unknown_args = args("shop-v999");
    let env = AnalysisEnv {
        args: &unknown_args,
        ..env
    };
    let mut run = AnalysisRun::new(&spec, started);
    tick(&spec, &mut run, &env, T0).await;
    let message = message_of(&run, "whole-run");
    assert!(message.contains("no metric could be fetched"), "{message}");

    // No canary services on this server.
    let env = AnalysisEnv {
        canary: None,
        ..env
    };
    let mut run = AnalysisRun::new(&spec, started);
    tick(&spec, &mut run, &env, T0).await;
    assert!(message_of(&run, "whole-run").contains("canary judge is not available"));
}
