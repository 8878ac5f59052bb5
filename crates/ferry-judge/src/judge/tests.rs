//! Unit tests of the judge's rules: every classification path, critical and muted metrics,
//! group weights, the no-data rule and the result's JSON shape.

use super::*;
use crate::config::parse_canary_config;
use serde_json::{Value, json};

/// A metric document with an optional `analysisConfigurations.canary`.
fn metric(name: &str, groups: &[&str], canary: Value) -> Value {
    json!({
        "name": name,
        "query": {"type": "test"},
        "groups": groups,
        "analysisConfigurations": {"canary": canary},
    })
}

fn config(metrics: Vec<Value>, weights: Value) -> CanaryConfig {
    parse_canary_config(&json!({
        "name": "test-config",
        "metrics": metrics,
        "classifier": {"groupWeights": weights},
    }))
    .unwrap()
}

fn samples(baseline: &[f64], canary: &[f64]) -> MetricData {
    MetricData::Samples(MetricSamples {
        baseline: baseline.to_vec(),
        canary: canary.to_vec(),
    })
}

fn data(entries: Vec<(&str, MetricData)>) -> BTreeMap<String, MetricData> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

/// Judges one metric with the given analysis settings.
fn one(canary_cfg: Value, d: Option<MetricData>) -> (MetricResult, Summary) {
    let c = config(vec![metric("m", &["g"], canary_cfg)], json!({}));
    let map = d.map(|d| data(vec![("m", d)])).unwrap_or_default();
    let r = judge(&c, &map, Thresholds::default());
    (r.metrics[0].clone(), r.summary)
}

const LOW: [f64; 4] = [1.0, 2.0, 3.0, 4.0];
const HIGH: [f64; 4] = [10.0, 20.0, 30.0, 40.0];

/// Ten points around `center` with a little spread.
fn around(center: f64) -> Vec<f64> {
    (0..10).map(|i| center + (i as f64 - 4.5) * 0.1).collect()
}

#[test]
fn kayenta_vector_is_high() {
    let (m, s) = one(json!({}), Some(samples(&LOW, &HIGH)));
    assert_eq!(m.classification, MetricClassification::High);
    assert_eq!(m.estimate, Some(22.5));
    assert_eq!(
        m.confidence_interval,
        Some(ConfidenceInterval {
            lower: 6.0,
            upper: 39.0
        })
    );
    assert_eq!(m.tolerance_band, Some(22.5 * 0.25));
    assert_eq!(m.deviation, Some(10.0));
    assert_eq!(m.effect_size.map(|e| e.value), Some(10.0));
    assert_eq!(m.baseline.count, 4);
    assert_eq!(m.baseline.mean, Some(2.5));
    assert_eq!(m.canary.max, Some(40.0));
    assert!((m.baseline.stdev.unwrap() - 1.290_994_448_735_805_6).abs() < 1e-12);
    assert_eq!(s.score, 0.0);
    assert_eq!(s.classification, SummaryClassification::Fail);
}

#[test]
fn low_and_pass_paths() {
    let (m, s) = one(json!({}), Some(samples(&HIGH, &LOW)));
    assert_eq!(m.classification, MetricClassification::Low);
    assert_eq!(s.score, 0.0);
    let (m, s) = one(json!({}), Some(samples(&around(5.0), &around(5.05))));
    assert_eq!(m.classification, MetricClassification::Pass);
    assert!(m.p_value.unwrap() > 0.5);
    assert_eq!(s.score, 100.0);
    assert_eq!(s.classification, SummaryClassification::Pass);
}

#[test]
fn direction_limits_what_fails() {
    let (m, _) = one(json!({"direction": "increase"}), Some(samples(&HIGH, &LOW)));
    assert_eq!(m.classification, MetricClassification::Pass);
    let (m, _) = one(json!({"direction": "decrease"}), Some(samples(&LOW, &HIGH)));
    assert_eq!(m.classification, MetricClassification::Pass);
    let (m, _) = one(json!({"direction": "decrease"}), Some(samples(&HIGH, &LOW)));
    assert_eq!(m.classification, MetricClassification::Low);
}

#[test]
fn effect_size_gates() {
    // meanRatio 10 is below an allowed increase of 20: not High.
    let (m, _) = one(
        json!({"effectSize": {"allowedIncrease": 20}}),
        Some(samples(&LOW, &HIGH)),
    );
    assert_eq!(m.classification, MetricClassification::Pass);
    // cles is 1.0 for complete separation.
    let (m, _) = one(
        json!({"effectSize": {"measure": "cles"}}),
        Some(samples(&LOW, &HIGH)),
    );
    assert_eq!(m.classification, MetricClassification::High);
    assert_eq!(
        m.effect_size,
        Some(EffectSizeValue {
            measure: EffectSizeMeasure::Cles,
            value: 1.0
        })
    );
    let (m, _) = one(
        json!({"effectSize": {"measure": "cles", "allowedDecrease": 0.0}}),
        Some(samples(&HIGH, &LOW)),
    );
    assert_eq!(m.classification, MetricClassification::Low, "0 ≤ 0");
    // A baseline mean of 0 makes meanRatio NaN, which skips the gate.
    let baseline = [-2.0, -1.0, 0.0, 1.0, 2.0];
    let (m, _) = one(
        json!({"effectSize": {"allowedIncrease": 1000}}),
        Some(samples(&baseline, &[50.0, 60.0, 70.0, 80.0, 90.0])),
    );
    assert!(m.deviation.unwrap().is_nan());
    assert_eq!(m.classification, MetricClassification::High);
}

#[test]
fn no_data_rules() {
    // Absent from the map: both sides empty.
    let (m, s) = one(json!({}), None);
    assert_eq!(m.classification, MetricClassification::Nodata);
    assert_eq!(m.classification_reason, "no baseline or canary data");
    assert_eq!(s.score, 0.0, "1 of 1 metrics has no data");
    let (m, _) = one(json!({"mustHaveData": true}), Some(samples(&[1.0], &[])));
    assert_eq!(m.classification, MetricClassification::NodataFailMetric);
    // NaN only, removed: empty.
    let (m, _) = one(json!({}), Some(samples(&[f64::NAN, f64::NAN], &[1.0])));
    assert_eq!(m.classification, MetricClassification::Nodata);
    assert_eq!(m.baseline.count, 0);
    // Critical beats mustHaveData: Nodata, and the analysis fails.
    let (m, s) = one(
        json!({"mustHaveData": true, "critical": true}),
        Some(samples(&[], &[])),
    );
    assert_eq!(m.classification, MetricClassification::Nodata);
    assert!(m.critical_failure);
    assert!(s.reason.starts_with("critical metric failed: m (Nodata)"));
    // replace: NaN become 0 and an empty side passes.
    let (m, _) = one(
        json!({"nanStrategy": "replace"}),
        Some(samples(&[], &[1.0])),
    );
    assert_eq!(m.classification, MetricClassification::Pass);
    let (m, _) = one(
        json!({"nanStrategy": "replace"}),
        Some(samples(&[f64::NAN, 1.0], &[1.0, 0.0])),
    );
    assert_eq!(m.classification, MetricClassification::Pass);
    assert_eq!(
        m.classification_reason,
        "baseline and canary data are identical"
    );
    assert_eq!(m.baseline.min, Some(0.0));
}

#[test]
fn identical_and_single_value_pass_without_a_test() {
    let (m, _) = one(json!({}), Some(samples(&[3.0, 1.0, 2.0], &[1.0, 2.0, 3.0])));
    assert_eq!(m.classification, MetricClassification::Pass);
    assert_eq!(m.p_value, None);
    let (m, _) = one(json!({}), Some(samples(&[4.0, 4.0], &[4.0])));
    assert_eq!(m.classification, MetricClassification::Pass);
    assert_eq!(
        m.classification_reason,
        "every baseline and canary sample has the same value"
    );
}

#[test]
fn constant_sides_get_noise_and_a_verdict() {
    let (m, _) = one(json!({}), Some(samples(&[5.0; 60], &[7.0; 60])));
    assert_eq!(m.classification, MetricClassification::High);
    let est = m.estimate.unwrap();
    assert!((est - 2.0).abs() < 1e-6, "{est}");
    let (m, _) = one(json!({}), Some(samples(&[0.0; 5], &[-3.0; 8])));
    assert_eq!(m.classification, MetricClassification::Low);
    assert_eq!(
        m.canary.stdev,
        Some(0.0),
        "summaries are of the data, not the noise"
    );
    // Deterministic: the same input gives the same numbers.
    let (again, _) = one(json!({}), Some(samples(&[0.0; 5], &[-3.0; 8])));
    // (NaN ≠ NaN, so compare the printed form.)
    assert_eq!(format!("{again:?}"), format!("{m:?}"));
}

#[test]
fn errors_count_as_failures_and_fail_critical_metrics() {
    let c = config(
        vec![
            metric("ok", &["g"], json!({})),
            metric("broken", &["g"], json!({})),
        ],
        json!({}),
    );
    let d = data(vec![
        ("ok", samples(&around(1.0), &around(1.0))),
        ("broken", MetricData::Error("timeout".into())),
    ]);
    let r = judge(&c, &d, Thresholds::default());
    assert_eq!(r.metrics[1].classification, MetricClassification::Error);
    assert_eq!(
        r.metrics[1].classification_reason,
        "the metric query failed: timeout"
    );
    assert_eq!(r.groups[0].score, 50.0);
    assert_eq!(r.summary.score, 50.0);
    assert_eq!(r.summary.classification, SummaryClassification::Marginal);

    let (m, s) = one(
        json!({"critical": true}),
        Some(MetricData::Error("x".into())),
    );
    assert!(m.critical_failure);
    assert_eq!(s.score, 0.0);
}

#[test]
fn critical_thresholds() {
    // meanRatio 10: High. criticalIncrease 20 keeps the failure local.
    let (m, s) = one(
        json!({"critical": true, "effectSize": {"criticalIncrease": 20}}),
        Some(samples(&LOW, &HIGH)),
    );
    assert_eq!(m.classification, MetricClassification::High);
    assert!(!m.critical_failure);
    assert_eq!(s.score, 0.0, "the only metric is High");
    assert!(s.reason.starts_with("score 0 is below"));

    let c = config(
        vec![
            metric("cpu", &["g"], json!({"critical": true})),
            metric("mem", &["g"], json!({})),
        ],
        json!({}),
    );
    let d = data(vec![
        ("cpu", samples(&LOW, &HIGH)),
        ("mem", samples(&around(1.0), &around(1.0))),
    ]);
    let r = judge(&c, &d, Thresholds::default());
    assert!(r.metrics[0].critical_failure);
    assert_eq!(r.groups[0].score, 50.0);
    assert_eq!(r.summary.score, 0.0);
    assert_eq!(r.summary.reason, "critical metric failed: cpu (High)");
}

#[test]
fn muted_metrics_do_not_count() {
    let c = config(
        vec![
            metric("loud", &["g"], json!({})),
            metric("quiet", &["g"], json!({"muted": true, "critical": true})),
        ],
        json!({}),
    );
    let d = data(vec![
        ("loud", samples(&around(1.0), &around(1.0))),
        ("quiet", samples(&LOW, &HIGH)),
    ]);
    let r = judge(&c, &d, Thresholds::default());
    assert_eq!(r.metrics[1].classification, MetricClassification::High);
    assert!(!r.metrics[1].critical_failure);
    assert_eq!(r.summary.score, 100.0);
}

#[test]
fn group_weights_and_shares() {
    // Group a: explicit 50; b and c share the other 50.
    let c = config(
        vec![
            metric("a1", &["a"], json!({})),
            metric("a2", &["a"], json!({})),
            metric("b1", &["b"], json!({})),
            metric("c1", &["c"], json!({})),
            metric("c2", &["c"], json!({})),
            metric("c3", &["c"], json!({})),
        ],
        json!({"a": 50}),
    );
    let pass = || samples(&around(1.0), &around(1.0));
    let d = data(vec![
        ("a1", pass()),
        ("a2", samples(&LOW, &HIGH)),
        ("b1", pass()),
        ("c1", pass()),
        ("c2", pass()),
        ("c3", samples(&HIGH, &LOW)),
    ]);
    let r = judge(&c, &d, Thresholds::default());
    let g: Vec<(&str, f64, f64)> = r
        .groups
        .iter()
        .map(|g| (g.name.as_str(), g.score, g.weight))
        .collect();
    assert_eq!(
        g,
        [
            ("a", 50.0, 50.0),
            ("b", 100.0, 25.0),
            ("c", 2.0 / 3.0 * 100.0, 25.0)
        ]
    );
    // 25 + 25 + 16.666… = 66.67 after rounding.
    assert_eq!(r.summary.score, 66.67);
    assert_eq!(r.summary.classification, SummaryClassification::Marginal);
    let strict = Thresholds {
        pass: 90.0,
        marginal: 70.0,
    };
    let r = judge(&c, &d, strict);
    assert_eq!(r.summary.classification, SummaryClassification::Fail);
}

#[test]
fn nodata_groups_score_100_and_half_nodata_scores_0() {
    let c = config(
        vec![
            metric("m1", &["x"], json!({})),
            metric("m2", &["y"], json!({})),
            metric("m3", &["y"], json!({})),
        ],
        json!({}),
    );
    // One of three without data: group x scores 100.
    let d = data(vec![
        ("m2", samples(&around(1.0), &around(1.0))),
        ("m3", samples(&around(1.0), &around(1.0))),
    ]);
    let r = judge(&c, &d, Thresholds::default());
    assert_eq!(r.groups[0].score, 100.0);
    assert_eq!(r.summary.score, 100.0);
    // Two of three: 0.
    let d = data(vec![("m2", samples(&around(1.0), &around(1.0)))]);
    let r = judge(&c, &d, Thresholds::default());
    assert_eq!(r.summary.score, 0.0);
    assert_eq!(
        r.summary.reason,
        "2 of 3 metrics have no data (50 % or more)"
    );
}

#[test]
fn outliers_are_removed_per_side() {
    let mut base: Vec<f64> = (0..100).map(|i| 10.0 + f64::from(i % 10) * 0.1).collect();
    base.push(1e6);
    let canary: Vec<f64> = (0..100).map(|i| 10.0 + f64::from(i % 10) * 0.1).collect();
    let (kept, _) = one(json!({}), Some(samples(&base, &canary)));
    assert_eq!(kept.baseline.count, 101);
    let (m, _) = one(
        json!({"outliers": {"strategy": "remove"}}),
        Some(samples(&base, &canary)),
    );
    assert_eq!(m.baseline.count, 100);
    assert_eq!(m.baseline.max, Some(10.9));
    assert_eq!(m.canary.count, 100);
}

#[test]
fn percentiles_are_type_7() {
    let v = [1.0, 2.0, 3.0, 4.0, 10.0];
    assert_eq!(percentile(&v, 0.25), 2.0);
    assert_eq!(percentile(&v, 0.5), 3.0);
    assert_eq!(percentile(&v, 0.99), 9.76);
    assert_eq!(percentile(&[7.0], 0.01), 7.0);
    // R: quantile(c(1,2,3,4,10), 0.1) = 1.4
    assert!((percentile(&v, 0.1) - 1.4).abs() < 1e-12);
}

#[test]
fn result_serialises_in_camel_case_with_nulls() {
    let c = config(
        vec![
            metric("lat", &["perf"], json!({})),
            metric("gone", &["perf"], json!({})),
        ],
        json!({}),
    );
    let d = data(vec![("lat", samples(&LOW, &HIGH))]);
    let v = serde_json::to_value(judge(&c, &d, Thresholds::default())).unwrap();
    assert_eq!(v["summary"]["classification"], "Fail");
    let lat = &v["metrics"][0];
    assert_eq!(lat["classification"], "High");
    assert_eq!(
        lat["confidenceInterval"],
        json!({"lower": 6.0, "upper": 39.0})
    );
    assert_eq!(
        lat["effectSize"],
        json!({"measure": "meanRatio", "value": 10.0})
    );
    assert_eq!(lat["baseline"]["count"], 4);
    assert!(lat.get("classificationReason").is_some());
    assert!(lat.get("pValue").is_some() && lat.get("toleranceBand").is_some());
    let gone = &v["metrics"][1];
    assert_eq!(gone["classification"], "Nodata");
    assert_eq!(gone["pValue"], Value::Null);
    assert_eq!(gone["baseline"]["mean"], Value::Null);
    assert_eq!(
        v["groups"][0],
        json!({"name": "perf", "score": 0.0, "weight": 100.0})
    );
}

#[test]
fn parallel_and_sequential_judgments_agree() {
    let metrics: Vec<Value> = (0..8)
        .map(|i| metric(&format!("m{i}"), &["g"], json!({})))
        .collect();
    let c = config(metrics, json!({}));
    let big = |shift: f64| -> Vec<f64> {
        (0..8000)
            .map(|i| shift + f64::from((i * 7919) % 1000) / 100.0)
            .collect()
    };
    let d: BTreeMap<String, MetricData> = (0..8)
        .map(|i| {
            let s = samples(&big(0.0), &big(f64::from(i) * 0.5));
            (format!("m{i}"), s)
        })
        .collect();
    let parallel = judge_with_threads(&c, &d, Thresholds::default(), 3);
    let sequential = judge_with_threads(&c, &d, Thresholds::default(), 1);
    assert_eq!(parallel, sequential);
    assert_eq!(
        parallel.metrics[0].classification,
        MetricClassification::Pass
    );
    assert_eq!(
        parallel.metrics[7].classification,
        MetricClassification::High
    );
}
