//! Tests of the `kayentaCanary` stage on a real engine and store, with a scripted metric source.

use super::*;
use crate::{KIND, MetricQuery, MetricSource, SourceError, Sources};
use ferry_core::{Problem, Status, Store};
use ferry_engine::conformance::{Case, run, wait_for};
use ferry_engine::{Engine, EngineConfig, EngineHandle, Registry, RunRequest};
use serde_json::json;
use std::sync::Arc;

/// Answers with the series the query itself lists per scope: `{"type": "scripted",
/// "series": {"<scope>": [..]}}`, or fails with `{"fail": "message"}`.
struct Scripted;

#[async_trait]
impl MetricSource for Scripted {
    fn query_type(&self) -> &'static str {
        "scripted"
    }
    fn validate(&self, query: &Value, path: &str, problems: &mut Vec<Problem>) {
        if query.get("series").is_none() && query.get("fail").is_none() {
            problems.push(Problem::new(format!("{path}.series"), "is required"));
        }
    }
    async fn fetch(&self, q: &MetricQuery<'_>) -> Result<Vec<f64>, SourceError> {
        if let Some(message) = q.query.get("fail").and_then(Value::as_str) {
            return Err(SourceError::Unreachable(message.to_string()));
        }
        Ok(q.query["series"][q.scope]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default())
    }
}

fn registry(store: &Arc<dyn Store>) -> Registry {
    let mut r = Registry::new();
    crate::register(
        &mut r,
        crate::CanaryServices {
            store: store.clone(),
            sources: Sources::new().with(Arc::new(Scripted)),
        },
    );
    r
}

async fn sqlite_store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = ferry_store::StoreConfig::Sqlite {
        path: dir.path().join("ferry.db"),
    };
    (ferry_store::open(&cfg).await.unwrap(), dir)
}

/// Baseline: errors around 1 %; the canary's series is given.
fn errors_config(name: &str, canary: &[f64], critical: bool) -> Value {
    let baseline: Vec<f64> = (0..30).map(|i| 0.01 + (i % 5) as f64 * 0.001).collect();
    json!({
        "name": name,
        "metrics": [{
            "name": "error-rate",
            "query": {"type": "scripted", "series": {"shop-prod-v001": baseline, "shop-prod-v002": canary}},
            "groups": ["errors"],
            "analysisConfigurations": {"canary": {"direction": "increase", "critical": critical}}
        }, {
            "name": "throughput",
            "query": {"type": "scripted", "series": {"shop-prod-v001": [5.0, 6.0, 5.5, 6.5, 5.2], "shop-prod-v002": [5.1, 6.1, 5.4, 6.4, 5.3]}},
            "groups": ["traffic"]
        }],
        "classifier": {"groupWeights": {"errors": 60, "traffic": 40}}
    })
}

fn good_canary() -> Vec<f64> {
    (0..30)
        .map(|i| 0.0102 + ((i + 2) % 5) as f64 * 0.001)
        .collect()
}

fn bad_canary() -> Vec<f64> {
    (0..30).map(|i| 0.10 + (i % 7) as f64 * 0.002).collect()
}

fn stage(config: &str, lifetime: &str, interval_mins: f64) -> Value {
    json!({
        "type": "kayentaCanary",
        "canaryConfig": {
            "canaryConfigId": config,
            "scopes": [{"scopeName": "default", "controlScope": "shop-prod-v001", "experimentScope": "shop-prod-v002", "step": 10}],
            "scoreThresholds": {"pass": "75", "marginal": "50"},
            "lifetimeDuration": lifetime,
            "canaryAnalysisIntervalMins": interval_mins,
            "beginCanaryAnalysisAfterMins": "0",
            "lookbackMins": 0,
            "baselineAnalysisOffsetInMins": ""
        }
    })
}

async fn start(store: &Arc<dyn Store>) -> EngineHandle {
    Engine::start(store.clone(), registry(store), EngineConfig::default())
        .await
        .unwrap()
        .0
}

async fn run_stage(engine: &EngineHandle, stage: Value) -> ferry_core::Execution {
    let mut s = stage.as_object().cloned().unwrap();
    s.insert("refId".into(), json!("1"));
    s.insert("name".into(), json!("Canary"));
    let doc = json!({"application": "shop", "name": "canary", "stages": [Value::Object(s)]});
    let p = ferry_engine::validate_pipeline(&doc, engine.registry()).unwrap();
    let record = engine.store().save_pipeline(&p, "tester").await.unwrap();
    let id = engine
        .run_pipeline(
            &record,
            RunRequest {
                user: "tester".into(),
                ..RunRequest::default()
            },
        )
        .await
        .unwrap();
    wait_for(
        engine,
        &id,
        std::time::Duration::from_secs(30),
        "completion",
        |e| e.status.is_complete(),
    )
    .await
    .unwrap()
}

fn error_of(e: &ferry_core::Execution) -> String {
    e.stages[0].context["exception"]["details"]["error"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn kayenta_canary_conforms() {
    let (store, _g) = sqlite_store().await;
    store
        .save_document(
            KIND,
            "steady",
            &errors_config("steady", &good_canary(), false),
            "t",
        )
        .await
        .unwrap();
    run(
        registry(&store),
        store.clone(),
        Case {
            succeeds: stage("steady", "PT1S", 0.0),
            long_running: stage("steady", "PT6S", 0.05),
            completing_input: None,
            invalid: vec![
                (json!({"type": "kayentaCanary"}), "stages[0].canaryConfigId"),
                (
                    json!({"type": "kayentaCanary", "canaryConfig": {"canaryConfigId": "x", "scopes": [{"controlScope": "a"}], "lifetimeDuration": "PT1M"}}),
                    "stages[0].canaryConfig.scopes[0].experimentScope",
                ),
                (
                    json!({"type": "kayentaCanary", "canaryConfigId": "x", "scopes": [{"controlScope": "a", "experimentScope": "b"}], "lifetimeDuration": "soon"}),
                    "stages[0].lifetimeDuration",
                ),
                (
                    json!({"type": "kayentaCanary", "canaryConfigId": "x", "scopes": [{"controlScope": "a", "experimentScope": "b"}], "lifetimeDuration": "PT1M", "scoreThresholds": {"pass": 40, "marginal": 60}}),
                    "stages[0].scoreThresholds.marginal",
                ),
            ],
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_canary_like_its_baseline_passes_every_interval() {
    let (store, _g) = sqlite_store().await;
    store
        .save_document(
            KIND,
            "errors",
            &errors_config("errors", &good_canary(), true),
            "t",
        )
        .await
        .unwrap();
    let engine = start(&store).await;
    // Three intervals of 0.6 s.
    let e = run_stage(&engine, stage("errors", "PT1.8S", 0.01)).await;
    assert_eq!(e.status, Status::Succeeded, "{}", error_of(&e));
    let out = &e.stages[0].outputs;
    assert_eq!(out["canaryScores"], json!([100.0, 100.0, 100.0]));
    assert_eq!(out["overallScore"], json!(100.0));
    assert_eq!(out["overallResult"], json!("success"));
    assert_eq!(out["canaryConfigVersion"], json!(1));
    let intervals = out["intervals"].as_array().unwrap();
    assert_eq!(intervals.len(), 3);
    assert_eq!(intervals[2]["interval"], json!(3));
    let metric = &intervals[0]["metrics"][0];
    assert_eq!(metric["name"], json!("error-rate"));
    assert_eq!(metric["classification"], json!("Pass"));
    assert!(metric["pValue"].as_f64().is_some(), "{metric}");
}

#[tokio::test]
async fn a_canary_with_ten_times_the_errors_fails_at_the_first_interval() {
    let (store, _g) = sqlite_store().await;
    store
        .save_document(
            KIND,
            "errors",
            &errors_config("errors", &bad_canary(), false),
            "t",
        )
        .await
        .unwrap();
    let engine = start(&store).await;
    let started = std::time::Instant::now();
    // Ten intervals of 0.6 s: the first one must end it.
    let e = run_stage(&engine, stage("errors", "PT6S", 0.01)).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    let out = &e.stages[0].outputs;
    assert_eq!(
        out["canaryScores"],
        json!([40.0]),
        "errors (60 %) High, traffic passes"
    );
    assert_eq!(out["overallResult"], json!("failure"));
    let error = error_of(&e);
    assert!(error.contains("interval 1 of 10 scored 40"), "{error}");
    assert_eq!(
        out["intervals"][0]["metrics"][0]["classification"],
        json!("High")
    );
}

#[tokio::test]
async fn a_critical_metric_failing_fails_the_analysis() {
    let (store, _g) = sqlite_store().await;
    store
        .save_document(
            KIND,
            "errors",
            &errors_config("errors", &bad_canary(), true),
            "t",
        )
        .await
        .unwrap();
    let engine = start(&store).await;
    let e = run_stage(&engine, stage("errors", "PT1S", 0.0)).await;
    assert_eq!(e.status, Status::Terminal);
    assert_eq!(e.stages[0].outputs["overallScore"], json!(0.0));
}

#[tokio::test]
async fn a_source_that_is_down_is_judged_not_crashed() {
    let (store, _g) = sqlite_store().await;
    let mut doc = errors_config("down", &good_canary(), false);
    doc["metrics"][1]["query"] = json!({"type": "scripted", "fail": "connection refused"});
    store.save_document(KIND, "down", &doc, "t").await.unwrap();
    let engine = start(&store).await;
    let e = run_stage(&engine, stage("down", "PT1S", 0.0)).await;
    let metric = &e.stages[0].outputs["intervals"][0]["metrics"][1];
    assert_eq!(metric["classification"], json!("Error"), "{metric}");
    assert!(
        metric["classificationReason"]
            .as_str()
            .unwrap_or_default()
            .contains("connection refused"),
        "{metric}"
    );
    // One metric of two errored: the analysis completes with a score instead of crashing.
    assert!(e.status.is_complete());
    assert!(e.stages[0].outputs["overallScore"].as_f64().is_some());
}

#[tokio::test]
async fn missing_and_invalid_configs_are_clear_stage_errors() {
    let (store, _g) = sqlite_store().await;
    let mut bad = errors_config("bad", &good_canary(), false);
    bad["classifier"]["groupWeights"] = json!({"errors": 80, "latency": 40});
    store.save_document(KIND, "bad", &bad, "t").await.unwrap();
    let engine = start(&store).await;

    let e = run_stage(&engine, stage("nope", "PT1S", 0.0)).await;
    assert_eq!(e.status, Status::Terminal);
    assert!(
        error_of(&e).contains("canary config \"nope\" not found"),
        "{}",
        error_of(&e)
    );

    let e = run_stage(&engine, stage("bad", "PT1S", 0.0)).await;
    assert_eq!(e.status, Status::Terminal);
    let error = error_of(&e);
    assert!(error.contains("classifier.groupWeights"), "{error}");
}

#[test]
fn iso_durations() {
    assert_eq!(parse_iso_duration("PT30M"), Some(1_800_000));
    assert_eq!(parse_iso_duration("PT0H5M"), Some(300_000));
    assert_eq!(parse_iso_duration("PT1H30M15S"), Some(5_415_000));
    assert_eq!(parse_iso_duration("P1DT2H"), Some(93_600_000));
    assert_eq!(parse_iso_duration("PT1.5S"), Some(1_500));
    for bad in ["", "P", "PT", "30M", "PT5X", "PT5", "P1H"] {
        assert_eq!(parse_iso_duration(bad), None, "{bad}");
    }
}

#[test]
fn windows_are_cumulative_unless_a_lookback_is_set() {
    let c = CanaryStageConfig {
        config_name: "x".into(),
        scopes: Vec::new(),
        thresholds: Thresholds {
            pass: 75.0,
            marginal: 50.0,
        },
        lifetime_ms: 3_600_000,
        warmup_ms: 600_000,
        interval_ms: 900_000,
        lookback_ms: 0,
        baseline_offset_ms: 0,
    };
    assert_eq!(c.intervals(), 4);
    assert_eq!(c.window_ms(1), (600_000, 1_500_000));
    assert_eq!(c.window_ms(3), (600_000, 3_300_000));
    let c = CanaryStageConfig {
        lookback_ms: 300_000,
        ..c
    };
    assert_eq!(c.window_ms(3), (3_000_000, 3_300_000));
}
