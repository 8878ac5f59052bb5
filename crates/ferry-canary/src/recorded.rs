//! Judging recorded samples (no metric source): what `ferry canary judge` and
//! `POST /api/v1/canary/judge` run. Samples are JSON: metric name → array of numbers, where
//! `null` or the string `"NaN"` is a missing value (the metric's `nanStrategy` decides).

use ferry_core::{Problem, Problems};
use ferry_judge::judge::{MetricData, MetricSamples, Thresholds};
use serde_json::Value;
use std::collections::BTreeMap;

/// Reads one side's samples, recording a problem for every value that is not a number.
pub fn parse_samples(
    value: &Value,
    path: &str,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Vec<f64>> {
    let mut out = BTreeMap::new();
    let Some(obj) = value.as_object() else {
        problems.push(Problem::new(
            path,
            "must be an object: metric name → array of numbers",
        ));
        return out;
    };
    for (name, samples) in obj {
        let Some(items) = samples.as_array() else {
            problems.push(Problem::new(
                format!("{path}.{name}"),
                "must be an array of numbers",
            ));
            continue;
        };
        let mut values = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                Value::Number(n) => values.push(n.as_f64().unwrap_or(f64::NAN)),
                Value::Null => values.push(f64::NAN),
                Value::String(s) if s.eq_ignore_ascii_case("nan") => values.push(f64::NAN),
                _ => problems.push(Problem::new(
                    format!("{path}.{name}[{i}]"),
                    "must be a number (null or \"NaN\" for a missing value)",
                )),
            }
        }
        out.insert(name.clone(), values);
    }
    out
}

/// Judges `{config, baseline, canary, thresholds?: {pass, marginal}}` and returns the judge's
/// full result as JSON. Every problem in the request is reported, with its path. The config's
/// queries are not checked against metric sources: recorded samples need none.
pub fn judge_request(body: &Value) -> Result<Value, Problems> {
    let mut problems = Vec::new();
    let config = match body.get("config") {
        Some(doc) => match ferry_judge::config::parse_canary_config(doc) {
            Ok(c) => Some(c),
            Err(p) => {
                problems.extend(p.prefixed("config").0);
                None
            }
        },
        None => {
            problems.push(Problem::new("config", "is required: the canary config"));
            None
        }
    };
    let mut side = |key: &str| match body.get(key) {
        Some(v) => parse_samples(v, key, &mut problems),
        None => {
            problems.push(Problem::new(
                key,
                "is required: metric name → array of numbers",
            ));
            BTreeMap::new()
        }
    };
    let (mut baseline, mut canary) = (side("baseline"), side("canary"));
    let mut thresholds = Thresholds {
        pass: 75.0,
        marginal: 50.0,
    };
    if let Some(t) = body.get("thresholds") {
        for (key, slot) in [
            ("pass", &mut thresholds.pass),
            ("marginal", &mut thresholds.marginal),
        ] {
            match t.get(key) {
                None => {}
                Some(v) => match v.as_f64() {
                    Some(x) if (0.0..=100.0).contains(&x) => *slot = x,
                    _ => problems.push(Problem::new(
                        format!("thresholds.{key}"),
                        "must be a number from 0 to 100",
                    )),
                },
            }
        }
        if thresholds.marginal > thresholds.pass {
            problems.push(Problem::new(
                "thresholds.marginal",
                "must not be above pass",
            ));
        }
    }
    if let Some(config) = &config {
        for side_name in ["baseline", "canary"] {
            let names: Vec<&String> = match side_name {
                "baseline" => baseline.keys().collect(),
                _ => canary.keys().collect(),
            };
            for name in names {
                if !config.metrics.iter().any(|m| &m.name == name) {
                    problems.push(Problem::new(
                        format!("{side_name}.{name}"),
                        "is not a metric of the canary config",
                    ));
                }
            }
        }
    }
    let Some(config) = config.filter(|_| problems.is_empty()) else {
        return Err(Problems(problems));
    };
    let data: BTreeMap<String, MetricData> = config
        .metrics
        .iter()
        .map(|m| {
            let samples = MetricSamples {
                baseline: baseline.remove(&m.name).unwrap_or_default(),
                canary: canary.remove(&m.name).unwrap_or_default(),
            };
            (m.name.clone(), MetricData::Samples(samples))
        })
        .collect();
    let result = ferry_judge::judge::judge(&config, &data, thresholds);
    serde_json::to_value(&result).map_err(|e| {
        Problems(vec![Problem::new(
            "",
            format!("cannot encode the result: {e}"),
        )])
    })
}
